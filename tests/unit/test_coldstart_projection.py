"""The cold-start projection onto more cores: the queueing model, its
calibration on a run, and the section it adds to an autoscale bench.json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host import cli
from pyxen.lab.host.coldstart_projection import (add_projection, calibrate, mean_cold_start,
                                                 project, project_variant)


def test_an_idle_host_answers_in_the_service_time() -> None:
    assert mean_cold_start(2.0, 0.3, 2, 0.0) == pytest.approx(2.0)


def test_a_fully_serial_create_saturates_whatever_the_cores() -> None:
    # lam * S = 1: the one serial point is always busy.
    assert math.isinf(mean_cold_start(1.0, 1.0, 64, 1.0))
    assert math.isfinite(mean_cold_start(1.0, 1.0, 64, 0.9))


def test_more_load_is_never_faster() -> None:
    assert mean_cold_start(1.0, 0.5, 2, 0.5) > mean_cold_start(1.0, 0.5, 2, 0.1)


@given(service=st.floats(0.01, 10), serial=st.floats(0, 1), cores=st.integers(1, 64),
       load=st.floats(0, 0.95))
def test_calibration_inverts_the_model(service: float, serial: float, cores: int,
                                       load: float) -> None:
    # A rate below saturation of both stages.
    rate = load / (service * max(serial, (1 - serial) / cores, 1e-9))
    mean = mean_cold_start(service, serial, cores, rate)
    assert calibrate(mean, serial, cores, rate) == pytest.approx(service, rel=1e-6)


@given(mean=st.floats(0.1, 100), count=st.integers(1, 500), span=st.floats(10, 5000))
def test_a_perfectly_parallel_create_projects_to_what_was_measured(
        mean: float, count: int, span: float) -> None:
    """With no serial part and the load per pCPU kept, more cores change nothing."""
    v = project_variant(mean, count, span, 2, 0.0, (16, 64))
    if v["saturated_16_cores"]:          # only if the run itself was at saturation
        assert count / span * v["service_s"] / 2 == pytest.approx(1, rel=1e-3)
    else:
        assert v["mean_cold_start_16_cores_s"] == pytest.approx(mean, rel=1e-6)
        assert v["mean_cold_start_64_cores_s"] == pytest.approx(mean, rel=1e-6)


def test_a_serial_part_grows_with_the_host_until_it_saturates() -> None:
    v = project_variant(1.0, 60, 600.0, 2, 0.5, (4, 16, 64))
    assert v["mean_cold_start_4_cores_s"] > 1.0
    assert v["mean_cold_start_16_cores_s"] > v["mean_cold_start_4_cores_s"]
    assert v["saturated_64_cores"] and v["mean_cold_start_64_cores_s"] is None


def test_the_same_trace_on_more_cores_is_bounded_by_its_serial_part() -> None:
    """With the load kept, more cores only shrink the parallel part: a fully
    serial create gains nothing, a parallel one approaches e*S/(1-lam*e*S)."""
    serial = project_variant(10.0, 60, 600.0, 2, 1.0, (16, 64))
    assert serial["same_trace_mean_cold_start_16_cores_s"] == pytest.approx(10.0)
    assert serial["same_trace_mean_cold_start_64_cores_s"] == pytest.approx(10.0)
    half = project_variant(10.0, 60, 600.0, 2, 0.5, (16, 64))
    s, lam = half["service_s"], 0.1
    floor = 0.5 * s / (1 - lam * 0.5 * s)
    assert floor < half["same_trace_mean_cold_start_64_cores_s"] \
        < half["same_trace_mean_cold_start_16_cores_s"] < 10.0


def test_a_serial_fraction_above_one_is_used_as_one_and_recorded_as_measured() -> None:
    v = project_variant(1.0, 10, 600.0, 2, 3.09, (16,))
    assert v["serial_fraction"] == 3.09 and v["serial_fraction_used"] == 1.0


def autoscale_doc() -> dict[str, Any]:
    return {"kind": "autoscale", "vm": {"cpus": 2},
            "trace": {"after": {"span_s": 600.0}},
            "autoscale": {
                "stock": {"cold_start_each_s": [2.0, 3.0, 4.0]},
                "patched": {"cold_start_each_s": [1.0, 1.0]},
                "patched+cache": {"cold_start_each_s": [1.5]},
                "other": {"cold_start_each_s": [1.0]},
                "empty": {"cold_start_each_s": []}}}


def test_each_variant_uses_its_builds_serial_fraction() -> None:
    proj = project(autoscale_doc(), {"stock": 1.0, "patched": 0.2, "empty": 0.1}, "storm")
    assert set(proj["variants"]) == {"stock", "patched", "patched+cache"}
    assert proj["variants"]["patched+cache"]["serial_fraction"] == 0.2
    assert proj["variants"]["stock"]["measured_mean_cold_start_s"] == pytest.approx(3.0)
    assert proj["variants"]["stock"]["cold_starts_per_s"] == pytest.approx(3 / 600)
    assert "projection" in proj["assumptions"] and proj["pcpus_measured"] == 2


def test_a_pooled_section_spreads_its_cold_starts_over_every_replay() -> None:
    """Three replays of the 600 s trace, one of which did not run: the rate
    is the two that ran's cold starts over twice the span."""
    doc = autoscale_doc()
    doc["autoscale"]["patched"] = {
        "cold_start_each_s": [1.0, 1.0, 2.0, 2.0],
        "replays": [{"cold_start_each_s": [1.0, 1.0]}, {"failed_to_run": True},
                    {"cold_start_each_s": [2.0, 2.0]}]}
    proj = project(doc, {"patched": 0.2}, "storm")["variants"]["patched"]
    assert proj["cold_starts_per_s"] == pytest.approx(4 / 1200)
    assert proj["measured_mean_cold_start_s"] == pytest.approx(1.5)


def test_only_an_autoscale_run_is_projected() -> None:
    with pytest.raises(LabError, match="not an autoscale"):
        project({"kind": "storm"}, {}, "storm")


def storm_doc() -> dict[str, Any]:
    return {"runs": [{"project_commit": "0123456789abcdef"}],
            "projection": {"stock": {"serial_fraction": 0.9},
                           "patched": {"serial_fraction": 0.3}}}


def test_the_projection_is_added_and_the_measurement_kept(tmp_path: Path) -> None:
    bench, storm = tmp_path / "bench.json", tmp_path / "storm.json"
    doc = autoscale_doc() | {"projection": {"old": True}}
    bench.write_text(json.dumps(doc))
    storm.write_text(json.dumps(storm_doc()))
    proj = add_projection(bench, storm)
    saved = json.loads(bench.read_text())
    assert saved["projection"] == proj and "old" not in proj
    assert saved["autoscale"] == doc["autoscale"]
    assert "0123456789ab" in proj["serial_fractions_from"]
    assert not (tmp_path / "bench.json.tmp").exists()


def test_a_storm_without_serial_fractions_is_named(tmp_path: Path) -> None:
    bench, storm = tmp_path / "bench.json", tmp_path / "storm.json"
    bench.write_text(json.dumps(autoscale_doc()))
    storm.write_text(json.dumps({"runs": []}))
    with pytest.raises(LabError, match=f"{storm} has no serial fractions"):
        add_projection(bench, storm)
    with pytest.raises(LabError, match="cannot read the boot storm's results"):
        add_projection(bench, tmp_path / "missing.json")


def test_the_command_prints_the_projection(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bench, storm = tmp_path / "bench.json", tmp_path / "storm.json"
    bench.write_text(json.dumps(autoscale_doc()))
    storm.write_text(json.dumps(storm_doc()))
    assert cli.main(["project", str(bench), "--serial-from", str(storm),
                     "--cores", "16"]) == 0
    out = capsys.readouterr().out
    assert "PROJECTED" in out and "16 cores" in out
    assert "mean_cold_start_16_cores_s" in json.loads(bench.read_text())["projection"][
        "variants"]["stock"]


@pytest.mark.parametrize("content,message", [
    (b"[]", "is not a JSON object"),
    (b"\xff\xfe", "not UTF-8 text"),
    (json.dumps({"kind": "autoscale", "trace": {"after": {"span_s": 10}},
                 "autoscale": {}}).encode(), "has no vm"),
    (json.dumps({"kind": "autoscale", "vm": {"cpus": 2}, "trace": {"after": {"span_s": 10}},
                 "autoscale": {"stock": {"cold_start_each_s": ["x"]}}}).encode(),
     "a cold start of stock is 'x', not a number"),
    (json.dumps({"kind": "autoscale", "vm": {"cpus": 2}, "trace": {},
                 "autoscale": {}}).encode(), "has no trace.after"),
])
def test_a_malformed_autoscale_run_is_named(tmp_path: Path, content: bytes,
                                            message: str) -> None:
    bench, storm = tmp_path / "bench.json", tmp_path / "storm.json"
    bench.write_bytes(content)
    storm.write_text(json.dumps(storm_doc()))
    with pytest.raises(LabError) as err:
        add_projection(bench, storm)
    assert str(bench) in str(err.value) and message in str(err.value)
    assert bench.read_bytes() == content


def test_a_storm_whose_serial_fraction_is_no_number_is_named(tmp_path: Path) -> None:
    bench, storm = tmp_path / "bench.json", tmp_path / "storm.json"
    bench.write_text(json.dumps(autoscale_doc()))
    storm.write_text(json.dumps({"projection": {"stock": {}}}))
    with pytest.raises(LabError, match=f"{storm} has no stock.serial_fraction"):
        add_projection(bench, storm)
