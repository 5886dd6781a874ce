"""Host to dom0 driver, end to end without a VM: the command line the host
side runs in dom0 is one ``--request JSON`` that the dom0 driver reads back
as the request the host meant."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pyxen.lab.contract import protocol
from pyxen.lab.contract.requests import ScrubRequest, StormRequest
from pyxen.lab.dom0 import dom0bench
from pyxen.lab.host import bench, cli, scrubbench
from pyxen.lab.host.vm import Dom0Result
from pyxen.lab.host.vm_options import VMOptions


class FakeDom0:
    """Dom0 of a VM that is not booted: records the commands, hands back ``result``."""

    def __init__(self, tmp: Path, result: dict[str, Any], serial: str = "") -> None:
        self.tmp, self.result = tmp, result
        self.argvs: list[list[str]] = []
        self.serial_log = tmp / "serial.log"
        self.serial_log.write_text(serial)

    def __call__(self, staged: Any, options: VMOptions) -> FakeDom0:
        return self

    def __enter__(self) -> FakeDom0:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def ram_backing(self) -> dict[str, float] | None:
        return {"rss_mib": 8000.0, "huge_mib": 7990.0, "huge_fraction": 0.9988}

    def run(self, argv: list[str], timeout: float, **kw: Any) -> Dom0Result:
        self.argvs.append(argv)
        files = self.tmp / f"files{len(self.argvs)}"
        files.mkdir()
        (files / "result.json").write_text(json.dumps(self.result))
        return Dom0Result(argv, 0, "", "", files, 0.0)


def driver_args(argv: list[str], module: str) -> list[str]:
    """The driver's own arguments in a command the host runs in dom0."""
    assert argv[argv.index("-m") + 1] == module
    args = argv[argv.index("-m") + 2:]
    assert args[0] == "--request" and len(args) == 2, args
    return args


@pytest.fixture
def guest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tinyguest"
    path.write_bytes(b"\x7fELF")
    monkeypatch.setenv("PYXEN_TINYGUEST", str(path))
    return path


def test_a_storm_reaches_dom0bench_as_the_host_asked(tmp_path: Path, guest: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    dom0 = FakeDom0(tmp_path, {"errors": [], "leftover_domains": []})
    monkeypatch.setattr(bench, "Dom0", dom0)
    monkeypatch.setattr(bench, "describe_build", lambda staged: {})
    staged = SimpleNamespace(variant=SimpleNamespace(name="stock", profile=False))
    progress = SimpleNamespace(add_task=lambda *a, **kw: 0, update=lambda *a, **kw: None)
    params = bench.BenchParams(guests=6, concurrency=(1, 3), memory_mib=32, driver="xl",
                               running=5, trace_timed=True)
    records = bench.run_variant(staged, params, VMOptions(), progress)  # type: ignore[arg-type]
    assert [r["repeat"] for r in records] == [0, 0]

    # dom0's side of each command: the driver's main, its storm stubbed
    seen: list[tuple[Any, ...]] = []
    monkeypatch.setattr(dom0bench, "run", lambda *a, **kw: seen.append(a + (kw,)) or {
        "errors": [], "leftover_domains": []})
    monkeypatch.setattr(dom0bench, "DRIVERS", {"xl": lambda: "xl driver"})
    monkeypatch.setenv(protocol.ENV_OUT, str(tmp_path))
    for argv in dom0.argvs:
        assert dom0bench.main(driver_args(argv, "pyxen.lab.dom0.dom0bench")) == 0
    assert [a[:5] + a[7:] for a in seen] == [
        (6, c, guest, 32, f"bench-c{c}-", "xl driver", {"running": 5, "trace_timed": True})
        for c in (1, 3)]
    assert StormRequest.from_json(driver_args(dom0.argvs[1], "pyxen.lab.dom0.dom0bench")[1]) \
        == StormRequest(6, 3, guest, 32, "xl", "bench-c3-", running=5, trace_timed=True)


def test_a_scrub_run_reaches_scrub_dom0_as_the_host_asked(tmp_path: Path, guest: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    dom0 = FakeDom0(tmp_path, {"size_runs": [], "gap_runs": [], "errors": []},
                    serial="(XEN) Domain heap initialised DMA width 29 bits\n")
    monkeypatch.setattr(scrubbench, "Dom0", dom0)
    monkeypatch.setattr(scrubbench, "describe_build", lambda staged: {})
    params = scrubbench.ScrubParams(gaps=(0.0, 2.5), guest_mib=256, sizes=(64, 128),
                                    clean_timeout=30.0, reps=3, size_reps=2, fill="node",
                                    spinner_weight=1)
    run = scrubbench.run_variant(SimpleNamespace(name="patched"),  # type: ignore[arg-type]
                                 None, scrubbench.SCRUB_VM, params)  # type: ignore[arg-type]
    assert run["variant"] == "patched"
    assert run["qemu_ram_backing"]["huge_fraction"] == 0.9988
    (argv,) = dom0.argvs
    text = driver_args(argv, "pyxen.lab.dom0.scrub_dom0")[1]
    assert ScrubRequest.from_json(text) == ScrubRequest(
        guest, gaps=(0.0, 2.5), guest_mib=256, sizes=(64, 128), clean_timeout=30.0,
        fill="node", dma_bits=29, reps=3, size_reps=2, spinner_weight=1)


def test_the_scrubbench_command_parses_its_lists_once_into_params(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(scrubbench, "run_scrub_bench", lambda *a: calls.append(a))
    monkeypatch.setattr(cli.hostdeps, "check", lambda: None)
    monkeypatch.setattr(cli, "_source", lambda args: None)
    monkeypatch.setattr(cli.variants, "resolve", lambda name, *a, **kw: name)
    assert cli.main(["scrubbench", "--gaps", "0, 1.5,30", "--sizes", "64,128",
                     "--reps", "2", "--fill", "node", "--spinner-weight", "1",
                     "--out", str(tmp_path)]) == 0
    ((resolved, params, options, out),) = calls
    assert resolved == ["stock", "patched"] and out == tmp_path
    assert params == scrubbench.ScrubParams(gaps=(0.0, 1.5, 30.0), sizes=(64, 128), reps=2,
                                            fill="node", spinner_weight=1)
    assert options == scrubbench.SCRUB_VM


@pytest.mark.parametrize("argv,msg", [
    (["--gaps", "0,700"], "--gaps must be one or more seconds, each 0..600, "
                          "got (0.0, 700.0)"),
    (["--gaps", "0,soon"], "not a comma-separated list of numbers: '0,soon'"),
    (["--clean-timeout", "0"], "--clean-timeout must be > 0 s, got 0.0"),
    (["--guest-memory", "2"], "--guest-memory must be >= 4, got 2"),
    (["--sizes", "64,2"], "--sizes must be one or more MiB, each >= 4"),
])
def test_bad_scrubbench_values_fail_before_any_work(argv: list[str], msg: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["scrubbench", *argv])
    assert info.value.code == 2
    assert msg in capsys.readouterr().err


def test_bench_params_leave_memory_and_driver_to_the_storm_request() -> None:
    with pytest.raises(ValueError, match="StormRequest.memory_mib must be >= 4, got 3"):
        bench.BenchParams(4, (1,), memory_mib=3).validate()
    with pytest.raises(ValueError, match="StormRequest.driver must be one of"):
        bench.BenchParams(4, (1,), driver="virsh").validate()
