"""bench.json's format: what ``bench`` writes, and what ``load_bench`` (used
by ``plot`` and ``scrubbench``) reads -- older formats upgraded, newer ones
refused with both formats named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host import cli, scrubbench
from pyxen.lab.host.bench import replot
from pyxen.lab.host.benchfile import BENCH_FORMAT, load_bench

#: A real run saved in format 1 (no "format" key), kept in the repository.
SAVED = Path(__file__).resolve().parents[2] / "results" / "4.22-storm16" / "bench.json"


def test_the_saved_format_1_run_loads_as_the_current_format() -> None:
    raw = json.loads(SAVED.read_text())
    assert "format" not in raw                       # it is a format-1 file
    doc = load_bench(SAVED)
    assert doc["format"] == BENCH_FORMAT == 2
    assert len(doc["runs"]) == len(raw["runs"]) == 24
    assert doc["runs"] == raw["runs"]               # they had "repeat" already
    assert doc["repeat"] == raw["repeat"]


def test_the_saved_format_1_run_replots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = replot(SAVED, tmp_path / "replot.png")
    assert png.stat().st_size > 10_000
    assert "stock" in capsys.readouterr().out


def test_format_1_runs_without_a_repetition_are_repetition_0(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"runs": [{"variant": "stock"}, {"variant": "patched"}],
                                "notes": []}))
    doc = load_bench(path)
    assert doc["format"] == 2 and doc["repeat"] == 1
    assert [r["repeat"] for r in doc["runs"]] == [0, 0]


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_newer_format_fails_naming_the_file_and_both_formats(tmp_path: Path) -> None:
    path = write(tmp_path, {"format": 99, "runs": [{"variant": "stock"}]})
    with pytest.raises(LabError) as info:
        load_bench(path)
    message = str(info.value)
    assert str(path) in message
    assert "format 99" in message and "formats up to 2" in message


def test_plot_of_a_newer_format_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"format": 99, "runs": [{"variant": "stock"}]})
    assert cli.main(["plot", str(path)]) == 2
    assert "format 99; this pyxen reads formats up to 2" in capsys.readouterr().err


@pytest.mark.parametrize("doc,message", [
    ({"format": "2", "runs": [{}]}, "\"format\" must be a positive integer, got '2'"),
    ({"format": 0, "runs": [{}]}, "\"format\" must be a positive integer, got 0"),
    ({"format": True, "runs": [{}]}, "\"format\" must be a positive integer, got True"),
    ([{"variant": "stock"}], "is not a JSON object"),
    ({"format": 2, "vm": {}}, "holds no benchmark runs"),
    ({"runs": []}, "holds no benchmark runs"),
])
def test_what_is_not_a_bench_json_this_pyxen_reads_is_named(tmp_path: Path, doc: Any,
                                                            message: str) -> None:
    with pytest.raises(LabError) as info:
        load_bench(write(tmp_path, doc))
    assert message in str(info.value)


def test_a_file_that_is_not_json_or_not_there(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text("{not json")
    for p in (path, tmp_path / "missing.json"):
        with pytest.raises(LabError, match="cannot read benchmark results"):
            load_bench(p)


def test_a_scrub_only_document_loads_without_runs(tmp_path: Path) -> None:
    doc = load_bench(write(tmp_path, {"birth_after_death": {"runs": []}}), require_runs=False)
    assert doc == {"format": 2, "birth_after_death": {"runs": []}}


def scrub_run(variant: Any, staged: Any, options: Any, params: Any) -> dict[str, Any]:
    return {"variant": variant, "gaps": [], "sizes": [], "gap_runs": [], "errors": [],
            "clean_timeout_s": params.clean_timeout}


@pytest.fixture(autouse=True)
def no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scrubbench, "build", lambda variant: variant)


def test_scrubbench_extends_a_format_1_file_and_writes_the_current_format(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(SAVED, tmp_path / "bench.json")
    monkeypatch.setattr(scrubbench, "run_variant", scrub_run)
    monkeypatch.setattr(scrubbench, "plot", lambda runs, path: None)
    doc = scrubbench.run_scrub_bench(["stock"], scrubbench.ScrubParams(),  # type: ignore[list-item]
                                     scrubbench.SCRUB_VM, tmp_path)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved == doc
    assert saved["format"] == 2
    assert saved["runs"] == json.loads(SAVED.read_text())["runs"]
    assert [r["variant"] for r in saved["birth_after_death"]["runs"]] == ["stock"]


def test_scrubbench_writes_a_new_file_in_the_current_format(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scrubbench, "run_variant", scrub_run)
    monkeypatch.setattr(scrubbench, "plot", lambda runs, path: None)
    scrubbench.run_scrub_bench(["stock"], scrubbench.ScrubParams(),  # type: ignore[list-item]
                               scrubbench.SCRUB_VM, tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "bench.json").read_text())
    assert saved["format"] == 2 and "birth_after_death" in saved


def test_scrubbench_refuses_a_newer_file_before_any_run(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, {"format": 99, "runs": []})
    ran: list[Any] = []
    monkeypatch.setattr(scrubbench, "run_variant", lambda *a: ran.append(a))
    with pytest.raises(LabError, match="format 99"):
        scrubbench.run_scrub_bench(["stock"], scrubbench.ScrubParams(),  # type: ignore[list-item]
                                   scrubbench.SCRUB_VM, tmp_path)
    assert ran == [] and json.loads(path.read_text())["format"] == 99
