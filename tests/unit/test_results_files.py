"""Where the benchmarks write their results: no run replaces what another
command wrote (the storm's bench.json, scrubbench's section of it, an
autoscale run's bench.json), a run in which every variant failed keeps the
earlier results, files are replaced whole, and ``--out`` is checked before
any build."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host import bench, benchfile, cli, each_variant, variants, xsbench
from pyxen.lab.host.benchfile import (AUTOSCALE_OUT, BENCH_JSON, DEFAULT_OUT, prepare_out,
                                      write_json)
from pyxen.lab.host.variants import RunVariant
from pyxen.lab.host.vm_options import VMOptions


def no_build(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("built before --out was checked")


def storm_run(variant: str) -> dict[str, Any]:
    return {"variant": variant, "driver": "pyxen", "concurrency": 1, "guests": 1,
            "makespan_s": 1.0, "destroy_makespan_s": 0.5, "create_s": [0.5],
            "running_before_create": [0], "console_ok": 1, "xs_requests_per_create": None,
            "repeat": 0}


def fake_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_bench without builds, boots or a plot."""
    monkeypatch.setattr(variants, "resolve", lambda name, *a, **kw: name)
    monkeypatch.setattr(bench, "build", lambda name: SimpleNamespace(
        name=name, hypervisor_key=name, tools_key=name))
    monkeypatch.setattr(bench, "run_variant", lambda staged, *a, name, repeat, **kw:
                        [storm_run(name)])
    monkeypatch.setattr(bench, "plot", lambda runs, path: None)
    monkeypatch.setattr(bench, "print_summary", lambda *a: None)


def run_bench(out: Path) -> dict[str, Any]:
    return bench.run_bench([RunVariant("stock")], bench.BenchParams(1, (1,)), VMOptions(), out)


def test_bench_keeps_the_birth_after_death_section_scrubbench_added(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bench(monkeypatch)
    section = {"runs": [{"variant": "stock"}], "ratios": []}
    (tmp_path / BENCH_JSON).write_text(json.dumps(
        {"format": 2, "runs": [storm_run("old")], "notes": ["old"],
         "birth_after_death": section}))
    run_bench(tmp_path)
    saved = json.loads((tmp_path / BENCH_JSON).read_text())
    assert saved["birth_after_death"] == section            # kept
    assert [r["variant"] for r in saved["runs"]] == ["stock"]  # the storm's own: new
    assert saved["notes"] == []


def test_a_bench_json_replaced_during_the_run_does_not_lose_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another command writing to the same --out while the storms ran: the
    storm's results go beside the file, and the error says where."""
    fake_bench(monkeypatch)
    other = json.dumps({"format": 2, "kind": "autoscale", "autoscale": {"stock": {}}})

    def meanwhile(staged: Any, *a: Any, name: str, repeat: int, **kw: Any) -> list[dict[str, Any]]:
        (tmp_path / BENCH_JSON).write_text(other)
        return [storm_run(name)]

    monkeypatch.setattr(bench, "run_variant", meanwhile)
    with pytest.raises(LabError) as err:
        run_bench(tmp_path)
    assert (tmp_path / BENCH_JSON).read_text() == other              # not replaced
    (aside,) = [p for p in tmp_path.glob("bench.*.json")]
    assert str(aside) in str(err.value) and "'autoscale' results" in str(err.value)
    assert [r["variant"] for r in json.loads(aside.read_text())["runs"]] == ["stock"]


def autoscale_doc() -> dict[str, Any]:
    return {"format": 2, "kind": "autoscale", "autoscale": {"stock": {}}}


def test_bench_refuses_an_autoscale_bench_json_before_any_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bench(monkeypatch)
    monkeypatch.setattr(bench, "build", no_build)
    saved = json.dumps(autoscale_doc())
    (tmp_path / BENCH_JSON).write_text(saved)
    with pytest.raises(LabError) as err:
        run_bench(tmp_path)
    assert str(tmp_path / BENCH_JSON) in str(err.value)
    assert "'autoscale' results" in str(err.value) and "choose another --out" in str(err.value)
    assert (tmp_path / BENCH_JSON).read_text() == saved


def test_autoscale_refuses_a_storm_bench_json_before_any_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "_build_variants", no_build)
    (tmp_path / BENCH_JSON).write_text(json.dumps({"format": 2, "runs": [storm_run("s")]}))
    assert cli.main(["autoscale", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / BENCH_JSON} holds boot-storm" in err
    assert "choose another --out" in err


def test_autoscale_has_its_own_default_out() -> None:
    ap = cli.build_parser()
    assert ap.parse_args(["autoscale"]).out == AUTOSCALE_OUT != DEFAULT_OUT
    for cmd in ("bench", "scrubbench", "xsbench", "domctlbench"):
        assert ap.parse_args([cmd]).out == DEFAULT_OUT


@pytest.mark.parametrize("cmd", ["bench", "scrubbench", "xsbench", "domctlbench", "autoscale"])
def test_an_out_that_cannot_be_a_directory_fails_before_any_build(
        cmd: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for module, name in ((cli, "_build_variants"), (cli.hostdeps, "check"),
                         (bench, "build")):
        monkeypatch.setattr(module, name, no_build)
    afile = tmp_path / "file.txt"
    afile.write_text("")
    for out in (afile, afile / "out"):
        assert cli.main([cmd, "--variants", "stock", "--out", str(out)]) == 2
        assert f"--out {out}: cannot write results there" in capsys.readouterr().err


def test_prepare_out_refuses_a_results_file_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "xsbench.json").write_text("{trunc")
    with pytest.raises(LabError, match="this run would replace it: choose another --out"):
        prepare_out(tmp_path, "xsbench.json", "xsbench")
    assert prepare_out(tmp_path / "new", "xsbench.json", "xsbench") is None
    assert (tmp_path / "new").is_dir()


def test_a_results_file_is_replaced_whole_or_not_at_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "xsbench.json"
    path.write_text('{"old": 1}')

    def replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(benchfile.os, "replace", replace)
    with pytest.raises(OSError):
        write_json(path, {"new": 2})
    assert path.read_text() == '{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["xsbench.json"]   # no temporary left


class _BrokenDom0:
    def __init__(self, staged: Any, options: Any) -> None:
        pass

    def __enter__(self) -> _BrokenDom0:
        raise LabError("dom0 did not come up within 600 s")

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_run_in_which_every_variant_failed_keeps_the_earlier_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(each_variant, "Dom0", _BrokenDom0)
    monkeypatch.setattr(each_variant, "describe_build", lambda staged: {})
    monkeypatch.setattr(xsbench, "plot", no_build)
    good = json.dumps({"format": 1, "kind": "xsbench", "runs": [{"variant": "stock"}]})
    (tmp_path / "xsbench.json").write_text(good)
    builds = [(RunVariant(n), SimpleNamespace(variant=SimpleNamespace(name=n)))
              for n in ("stock", "patched")]
    with pytest.raises(LabError) as err:
        xsbench.run_xs_bench(builds, xsbench.XsParams(idle=(0,), reads=10, rounds=1,
                                                      syscall_reads=0),
                             VMOptions(), tmp_path)
    assert (tmp_path / "xsbench.json").read_text() == good
    failed = json.loads((tmp_path / "xsbench.failed.json").read_text())
    assert [(r["variant"], r["errors"]) for r in failed["runs"]] == [
        ("stock", ["dom0 did not come up within 600 s"]),
        ("patched", ["dom0 did not come up within 600 s"])]
    assert f"every run is in {tmp_path / 'xsbench.failed.json'}" in str(err.value)
    assert capsys.readouterr().err == (f"no variant succeeded: wrote the failures to "
                                       f"{tmp_path / 'xsbench.failed.json'} "
                                       f"({tmp_path / 'xsbench.json'} is kept)\n")


def test_a_rerun_keeps_the_results_it_replaces(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bench(monkeypatch)
    earlier = {"format": 2, "runs": [storm_run("old")], "notes": ["old"]}
    (tmp_path / BENCH_JSON).write_text(json.dumps(earlier))
    run_bench(tmp_path)
    (aside,) = tmp_path.glob("bench.*.json")
    assert json.loads(aside.read_text()) == earlier
    assert [r["variant"] for r in json.loads((tmp_path / BENCH_JSON).read_text())["runs"]] == [
        "stock"]


def test_every_benchmark_file_replaced_is_kept_under_its_own_name(tmp_path: Path) -> None:
    from rich.table import Table
    drawn: list[Path] = []
    for n in range(3):
        benchfile.write_results(tmp_path, "xsbench.json", {"n": n}, drawn.append, "xsbench.png",
                                Table())
    # the two files replaced, each under its own name (same second: numbered)
    kept = sorted(p for p in tmp_path.glob("xsbench.*.json"))
    assert len(kept) == 2 and sorted(json.loads(p.read_text())["n"] for p in kept) == [0, 1]
    assert json.loads((tmp_path / "xsbench.json").read_text()) == {"n": 2}
    assert benchfile.keep_previous(tmp_path / "none.json") == []


def test_results_that_cannot_keep_the_file_they_replace_go_beside_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plot cannot be moved aside once the results file has been: both
    are back where they were, and the run's results and plot go beside
    them."""
    fake_bench(monkeypatch)
    drawn: list[Path] = []
    monkeypatch.setattr(bench, "plot", lambda runs, path: drawn.append(path))
    earlier = json.dumps({"format": 2, "runs": [storm_run("old")], "notes": []})
    (tmp_path / BENCH_JSON).write_text(earlier)
    (tmp_path / "bench.png").write_bytes(b"old plot")
    rename = os.rename

    def no_png(src: Any, dst: Any) -> None:
        if str(src).endswith(".png"):
            raise OSError(13, "Permission denied")
        rename(src, dst)

    monkeypatch.setattr(benchfile.os, "rename", no_png)
    run_bench(tmp_path)
    assert (tmp_path / BENCH_JSON).read_text() == earlier       # left as it was
    assert (tmp_path / "bench.png").read_bytes() == b"old plot"
    (new,) = tmp_path.glob("bench.*.json")
    assert [r["variant"] for r in json.loads(new.read_text())["runs"]] == ["stock"]
    assert drawn == [new.with_suffix(".png")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([BENCH_JSON, "bench.png", new.name])


def test_a_rerun_keeps_the_plot_beside_the_results_under_one_stamp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bench(monkeypatch)
    monkeypatch.setattr(bench, "plot", lambda runs, path: path.write_bytes(b"new plot"))
    (tmp_path / BENCH_JSON).write_text(json.dumps({"format": 2, "runs": [storm_run("old")]}))
    (tmp_path / "bench.png").write_bytes(b"old plot")
    run_bench(tmp_path)
    (kept,) = tmp_path.glob("bench.*.json")
    assert kept.with_suffix(".png").read_bytes() == b"old plot"
    assert (tmp_path / "bench.png").read_bytes() == b"new plot"
    assert [r["variant"] for r in json.loads(kept.read_text())["runs"]] == ["old"]
