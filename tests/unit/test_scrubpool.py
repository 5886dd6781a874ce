"""Pooling birth-after-death runs over boots (``scrubpool``), without Xen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host.cli import main
from pyxen.lab.host.scrubpool import (Invocation, load_invocations, pool, pooled_lines,
                                      write_pooled)

VM = {"cpus": 2, "memory_mib": 6144, "numa_nodes": 2}


def gap_run(create: float, destroy: float, *, gap: float = 15.0, mib: int = 2048,
            policy: str | None = None) -> dict[str, Any]:
    return {"gap_s": gap, "guest_mib": mib, "create_s": create, "destroy_s": destroy,
            "spin_cpus_busy_during_gap": 1.9, "dirty_pages_at_create": 0,
            "scrub_policy": policy}


def variant_run(name: str, gaps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    run = {"variant": name, "hypervisor_key": f"hv-{name}", "tools_key": f"tl-{name}",
           "pcpus": 2, "spinners": 4, "spinner_weight": 1, "fill": "node",
           "scrub_policy": None, "scrub_alternated": False, "gap_runs": gaps}
    run.update(extra)
    return run


def invocation(source: str, stock: list[float], patched: list[float],
               vm: dict[str, Any] = VM) -> Invocation:
    return Invocation(source, {"vm": vm, "runs": [
        variant_run("stock", [gap_run(c, 1.0) for c in stock]),
        variant_run("patched", [gap_run(c, 1.1) for c in patched])]})


def test_pooling_takes_every_boots_runs_as_one() -> None:
    pooled = pool([invocation("a", [1.0, 1.2], [0.4, 0.6]),
                   invocation("b", [0.8], [0.5])])
    by = {r["variant"]: r for r in pooled["runs"]}
    assert by["stock"]["boots"] == 2 and by["stock"]["gaps"][0]["n"] == 3
    # medians over all three runs, not a median of the boots' medians
    assert by["stock"]["gaps"][0]["create_s"] == pytest.approx(1.0)
    assert by["patched"]["gaps"][0]["create_s"] == pytest.approx(0.5)
    (r,) = pooled["ratios"]
    assert r["create_vs_stock"] == pytest.approx(0.5)
    assert r["destroy_vs_stock"] == pytest.approx(1.1)
    assert pooled["sources"] == ["a", "b"]
    lines = pooled_lines(pooled)
    assert lines[0] == ("stock G=15.0s: 2 boots, n=3, create 1.00 s, destroy 1.00 s, "
                        "dirty pages met 0")
    assert lines[-1].startswith("patched G=15.0s: create 0.50x stock")


def test_alternated_runs_give_workers_on_against_off() -> None:
    gaps = [gap_run(0.5, 1.0, policy="eager"), gap_run(1.0, 1.0, policy="idle")]
    inv = Invocation("a", {"vm": VM, "runs": [
        variant_run("stock", [gap_run(1.0, 1.0)]),
        variant_run("patched", gaps, scrub_alternated=True)]})
    pooled = pool([inv, inv])
    (on_off,) = pooled["workers_on_vs_off"]
    assert on_off["create_vs_off"] == pytest.approx(0.5)
    assert {r["scrub_policy"] for r in pooled["ratios"]} == {"eager", "idle"}
    lines = pooled_lines(pooled)
    # an alternated run's lines name the policy, as scrubbench's own do
    assert any(line.startswith("patched (eager) G=15.0s: 2 boots, n=2, create 0.50 s")
               for line in lines)
    assert any(line.startswith("patched (eager) G=15.0s: create 0.50x stock") for line in lines)


def test_a_run_that_did_not_alternate_is_named_as_scrubbench_names_it() -> None:
    inv = Invocation("a", {"vm": VM, "runs": [
        variant_run("stock", [gap_run(1.0, 1.0)]),
        variant_run("patched", [gap_run(0.5, 1.0, policy="eager")], scrub_policy="eager")]})
    lines = pooled_lines(pool([inv]))
    assert lines[1].startswith("patched G=15.0s: 1 boots, n=1, create 0.50 s")
    assert lines[2].startswith("patched G=15.0s: create 0.50x stock")


@pytest.mark.parametrize("damage, named", [
    (lambda run: run.pop("variant"), "a run without a variant name"),
    (lambda run: run.pop("gap_runs"), "patched has no gap_runs list"),
    (lambda run: run["gap_runs"][0].pop("guest_mib"), "patched's gap run 0 lacks guest_mib"),
    (lambda run: run["gap_runs"].__setitem__(0, 3), "patched's gap run 0 lacks gap_s, guest_mib"),
])
def test_a_hand_edited_run_missing_its_fields_is_named(damage: Any, named: str) -> None:
    inv = invocation("b", [1.0], [0.5])
    damage(inv.section["runs"][1])
    with pytest.raises(ValueError, match=f"^b: {named}"):
        pool([invocation("a", [1.0], [0.5]), inv])


@pytest.mark.parametrize("change, named", [
    ({"hypervisor_key": "another build"}, "hypervisor_key"),
    ({"spinner_weight": None}, "spinner_weight"),
    ({"pcpus": 4}, "pcpus"),
])
def test_a_run_that_measured_something_else_is_refused(change: dict[str, Any],
                                                       named: str) -> None:
    other = invocation("b", [1.0], [0.5])
    other.section["runs"][1].update(change)
    with pytest.raises(ValueError, match=f"b: patched differs from its first run in {named}"):
        pool([invocation("a", [1.0], [0.5]), other])


def test_other_vm_gaps_or_a_repeated_variant_are_refused() -> None:
    with pytest.raises(ValueError, match="b: another VM"):
        pool([invocation("a", [1.0], [0.5]), invocation("b", [1.0], [0.5], {**VM, "cpus": 4})])
    other_gap = invocation("b", [1.0], [0.5])
    other_gap.section["runs"][0]["gap_runs"] = [gap_run(1.0, 1.0, gap=5.0)]
    with pytest.raises(ValueError, match="b: stock ran other gaps or guest sizes"):
        pool([invocation("a", [1.0], [0.5]), other_gap])
    twice = invocation("a", [1.0], [0.5])
    twice.section["runs"].append(twice.section["runs"][0])
    with pytest.raises(ValueError, match="a: variant stock ran twice"):
        pool([twice])
    with pytest.raises(ValueError, match="nothing to pool"):
        pool([])


def save(d: Path, inv: Invocation) -> Path:
    d.mkdir()
    (d / "bench.json").write_text(json.dumps({"format": 2, "birth_after_death": inv.section}))
    return d


def test_directories_are_read_and_a_storm_run_is_refused(tmp_path: Path) -> None:
    a = save(tmp_path / "a", invocation("x", [1.0], [0.5]))
    (loaded,) = load_invocations([a])
    assert loaded.source == str(a) and loaded.section["runs"][0]["variant"] == "stock"
    storm = tmp_path / "storm"
    storm.mkdir()
    (storm / "bench.json").write_text(json.dumps({"format": 2, "runs": [{"variant": "x"}]}))
    with pytest.raises(LabError, match="no birth_after_death section"):
        load_invocations([storm])


def test_the_command_prints_and_saves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = save(tmp_path / "a", invocation("x", [1.0], [0.4]))
    b = save(tmp_path / "b", invocation("y", [1.0], [0.6]))
    out = tmp_path / "pooled" / "pooled.json"
    assert main(["scrubpool", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "patched G=15.0s: create 0.50x stock" in printed
    assert json.loads(out.read_text())["sources"] == [str(a), str(b)]
    bad = save(tmp_path / "c", invocation("z", [1.0], [0.5], {**VM, "cpus": 4}))
    with pytest.raises(SystemExit) as exc:
        main(["scrubpool", str(a), str(bad)])
    assert exc.value.code == 2
    assert "another VM" in capsys.readouterr().err


def test_write_pooled_is_plain_json(tmp_path: Path) -> None:
    pooled = pool([invocation("a", [1.0], [0.5])])
    write_pooled(pooled, tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["runs"][0]["boots"] == 1


def test_fields_of_another_type_are_errors_naming_them(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    listed = invocation("x", [1.0], [0.4])
    listed.section["runs"][0]["gap_runs"][0]["gap_s"] = [1]    # was: unhashable type
    with pytest.raises(ValueError, match=r"gap run 0 has gap_s \[1\], not numbers"):
        pool([listed])
    text = invocation("y", [1.0], [0.4])
    text.section["runs"][0]["gap_runs"][0]["create_s"] = "a"   # read deep in the pooling
    a = save(tmp_path / "a", text)
    assert main(["scrubpool", str(a)]) == 2
    err = capsys.readouterr().err
    assert f"cannot pool the runs in {a}: TypeError" in err and "Traceback" not in err


def test_with_v_the_pooling_error_keeps_its_traceback(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    text = invocation("y", [1.0], [0.4])
    text.section["runs"][0]["gap_runs"][0]["create_s"] = "a"
    a = save(tmp_path / "a", text)
    with caplog.at_level("DEBUG", logger="pyxen.lab"):
        assert main(["-v", "scrubpool", str(a)]) == 2
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1].__cause__, TypeError)   # the pooling's own error
