"""The birth-after-death benchmark when a variant's run fails (no VM): the
others' runs are kept and compared, the failure is saved with what it
measured and reported after the file is written, and a run in which every
variant failed leaves a saved bench.json alone."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host import scrubbench
from pyxen.lab.host.vm import Dom0Result


def gap_run(gap: float, create: float, pages: int) -> dict[str, Any]:
    return {"gap_s": gap, "guest_mib": 512, "create_s": create, "destroy_s": 2.0,
            "create_dom0_cpu_s": 1.0 + pages * 1e-5, "destroy_dom0_cpu_s": 1.0,
            "spin_cpus_busy_during_gap": 3.5 if gap else None,
            "spin_cpus_busy_during_create": 3.0, "dirty_pages_at_create": pages,
            "dirty_pages_after_create": 0, "scrub_during_create": None}


def result(create: float, errors: list[str] | None = None,
           left: list[int] | None = None, pages: int = 100) -> dict[str, Any]:
    """What scrub_dom0 hands back: a size run and two gap runs, whose
    creates scrubbed ``pages`` dirty pages."""
    return {"size_runs": [{"guest_mib": 64, "destroy_s": 1.0, "dirty_pages_left": 0,
                           "time_to_clean_s": 2.0, "scrub": None}],
            "gap_runs": [gap_run(0.0, create, pages), gap_run(2.0, create, pages)],
            "errors": errors or [], "leftover_domains": left or [],
            "clean_timeout_s": 60.0}


class Boots:
    """Dom0 of VMs that are not booted: each boot hands back the next of
    ``outcomes``, a (exit code, result.json) pair or a LabError to raise."""

    def __init__(self, tmp: Path, outcomes: list[tuple[int, dict[str, Any]] | LabError]) -> None:
        self.tmp, self.outcomes = tmp, list(outcomes)
        self.booted: list[str] = []
        self.serial_log = tmp / "serial.log"
        self.serial_log.write_text("")

    def __call__(self, staged: Any, options: Any) -> Boots:
        self.booted.append(staged)
        return self

    def __enter__(self) -> Boots:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def ram_backing(self) -> None:
        return None

    def run(self, argv: list[str], timeout: float, **kw: Any) -> Dom0Result:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, LabError):
            raise outcome
        code, doc = outcome
        files = self.tmp / f"files{len(self.booted)}"
        files.mkdir()
        (files / "result.json").write_text(json.dumps(doc))
        return Dom0Result(argv, code, "", "error: destroy failed\n", files, 0.0)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No builds, no plot, a tiny guest: the runs are the Boots' outcomes."""
    guest = tmp_path / "tinyguest"
    guest.write_bytes(b"\x7fELF")
    monkeypatch.setenv("PYXEN_TINYGUEST", str(guest))
    monkeypatch.setattr(scrubbench, "build", lambda variant: variant.name)
    monkeypatch.setattr(scrubbench, "describe_build", lambda staged: {"build": staged})
    monkeypatch.setattr(scrubbench, "plot", lambda runs, path: path.write_text("png"))
    return tmp_path


def variants(*names: str) -> list[Any]:
    return [SimpleNamespace(name=n) for n in names]


def run(lab: Path, monkeypatch: pytest.MonkeyPatch,
        outcomes: list[tuple[int, dict[str, Any]] | LabError],
        names: tuple[str, ...] = ("stock", "patched", "patched@b")) -> Boots:
    boots = Boots(lab, outcomes)
    monkeypatch.setattr(scrubbench, "Dom0", boots)
    scrubbench.run_scrub_bench(variants(*names), scrubbench.ScrubParams(),
                               scrubbench.SCRUB_VM, lab / "out")
    return boots


def test_a_failed_clean_up_keeps_every_run_and_reports_the_failure_after_writing(
        lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LabError, match=r"patched: destroy bad \(7\): still dying.*"
                                       r"every run is in .*bench.json"):
        run(lab, monkeypatch, [(0, result(4.0)),
                               (1, result(2.0, ["destroy bad (7): still dying"], [7])),
                               (0, result(1.0))])
    section = json.loads((lab / "out" / "bench.json").read_text())["birth_after_death"]
    assert [r["variant"] for r in section["runs"]] == ["stock", "patched@b"]
    (failed,) = section["failed_runs"]
    assert failed["variant"] == "patched" and failed["leftover_domains"] == [7]
    assert [g["create_s"] for g in failed["gap_runs"]] == [2.0, 2.0]   # what it measured
    assert [r["variant"] for r in section["ratios"]] == ["patched@b", "patched@b"]
    assert section["ratios"][0]["create_vs_stock"] == pytest.approx(0.25)
    assert (lab / "out" / "birth_after_death.png").exists()


def test_a_boot_that_fails_does_not_stop_the_next_variant(
        lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LabError, match="stock: dom0 never came up"):
        run(lab, monkeypatch, [LabError("dom0 never came up"), (0, result(1.0))],
                    names=("stock", "patched"))
    section = json.loads((lab / "out" / "bench.json").read_text())["birth_after_death"]
    assert [r["variant"] for r in section["runs"]] == ["patched"]
    assert section["failed_runs"][0]["errors"] == ["dom0 never came up"]
    assert section["ratios"] == [] and section["scrub_bound"] is None


def test_every_variant_failing_keeps_the_saved_file(
        lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = lab / "out"
    out.mkdir()
    saved = {"format": 2, "birth_after_death": {"runs": [{"variant": "earlier"}]}}
    (out / "bench.json").write_text(json.dumps(saved))
    with pytest.raises(LabError, match=r"bench.failed.json"):
        run(lab, monkeypatch, [(1, result(4.0, ["boom"])), (2, {"errors": ["x"]})],
            names=("stock", "patched"))
    assert json.loads((out / "bench.json").read_text()) == saved
    failed = json.loads((out / "bench.failed.json").read_text())["birth_after_death"]
    assert failed["runs"] == []
    assert [r["variant"] for r in failed["failed_runs"]] == ["stock", "patched"]
    assert "failed in dom0 (2)" in failed["failed_runs"][1]["errors"][0]


def test_every_build_is_made_before_the_first_boot(
        lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def build(variant: Any) -> str:
        if variant.name == "patched":
            raise LabError("patched does not build")
        return str(variant.name)
    monkeypatch.setattr(scrubbench, "build", build)
    boots = Boots(lab, [(0, result(1.0))])
    monkeypatch.setattr(scrubbench, "Dom0", boots)
    with pytest.raises(LabError, match="does not build"):
        scrubbench.run_scrub_bench(variants("stock", "patched"), scrubbench.ScrubParams(),
                                   scrubbench.SCRUB_VM, lab / "out")
    assert boots.booted == []


def test_a_good_run_is_summarised_and_printed(
        lab: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run(lab, monkeypatch, [(0, result(4.0, pages=10000)), (0, result(2.0, pages=0))],
        names=("stock", "patched"))
    section = json.loads((lab / "out" / "bench.json").read_text())["birth_after_death"]
    assert section["failed_runs"] == []
    assert [g["gap_s"] for g in section["runs"][1]["gaps"]] == [0.0, 2.0]
    assert section["runs"][1]["sizes"][0]["guest_mib"] == 64
    assert section["scrub_bound"]["us_per_page"] == pytest.approx(10.0)
    lines = scrubbench.report_lines(section["runs"], section)
    for start in ("stock: scrub policy", "patched G=2.0s: create 0.50x stock",
                  "stock G=0.0s: create 4.00 s (n=1), dirty pages met 10000",
                  "all creates: 10.00 us a dirty page",
                  "patched 64 MiB: destroy 1.00 s (n=1), clean after 2.0 s"):
        assert any(line.startswith(start) for line in lines), start
    assert "patched G=2.0s: create 0.50x stock" in capsys.readouterr().err


def test_a_result_file_cut_short_is_that_variants_failure(
        lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boots = Boots(lab, [(0, result(4.0)), (0, result(2.0))])
    real_run = boots.run

    def cut_short(argv: list[str], timeout: float, **kw: Any) -> Dom0Result:
        res = real_run(argv, timeout, **kw)
        if len(boots.booted) == 2:
            (res.files / "result.json").write_text('{"size_runs": [')
        return res

    monkeypatch.setattr(boots, "run", cut_short)
    monkeypatch.setattr(scrubbench, "Dom0", boots)
    with pytest.raises(LabError, match="patched: .*cannot read result.json"):
        scrubbench.run_scrub_bench(variants("stock", "patched"), scrubbench.ScrubParams(),
                                   scrubbench.SCRUB_VM, lab / "out")
    section = json.loads((lab / "out" / "bench.json").read_text())["birth_after_death"]
    assert [r["variant"] for r in section["runs"]] == ["stock"]
    assert [r["variant"] for r in section["failed_runs"]] == ["patched"]
