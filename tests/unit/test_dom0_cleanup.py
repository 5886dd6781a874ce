"""scrub_dom0's cleanup and result without Xen: every guest of the run is
destroyed whatever became of the others, a failure is an error (and a guest
left), the run's own exception is not masked by the cleanup's, and a
result.json with an ``errors`` list is written however the run ended."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pyxen.lab.contract import protocol
from pyxen.lab.contract.requests import ScrubRequest
from pyxen.lab.dom0 import scrub_dom0


class FakeDomain:
    def __init__(self, host: FakeHost, name: str, domid: int) -> None:
        self.host, self.name, self.domid = host, name, domid

    def wait_death(self, timeout: float = 60.0) -> bool:
        self.host.waited.append(self.domid)
        return self.domid not in self.host.immortal and self.domid not in self.host.alive


class FakeHost:
    """Domains by ID; ``xl destroy`` of an ID in ``refuse`` fails (the domain
    stays), of one in ``hang`` times out, of one in ``immortal`` succeeds
    but the domain never dies."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = dict(names)
        self.alive = set(names)
        self.refuse: set[int] = set()
        self.hang: set[int] = set()
        self.immortal: set[int] = set()
        self.waited: list[int] = []
        self.xl_calls: list[tuple[list[str], float | None]] = []
        self.fail_start: Exception | None = None
        self.xc = SimpleNamespace(domain_info=lambda d: object() if d in self.alive else None)

    def __enter__(self) -> FakeHost:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def domains(self) -> list[FakeDomain]:
        return [FakeDomain(self, self.names[d], d) for d in sorted(self.alive)]

    def physinfo(self) -> Any:
        if self.fail_start is not None:
            raise self.fail_start
        return SimpleNamespace(nr_cpus=2)

    def xl_run(self, argv: list[str], **kw: Any) -> Any:
        self.xl_calls.append((argv, kw.get("timeout")))
        domid = int(argv[-1])
        if domid in self.hang:
            raise subprocess.TimeoutExpired(argv, kw.get("timeout") or 0)
        if domid in self.refuse:
            return SimpleNamespace(returncode=1, stderr=f"libxl: cannot destroy {domid}")
        self.alive.discard(domid)
        return SimpleNamespace(returncode=0, stderr="")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    host = FakeHost({0: "Domain-0", 5: "bad-spin0", 6: "bad-spin1", 7: "bad-g1", 8: "other"})
    monkeypatch.setattr(scrub_dom0.subprocess, "run", host.xl_run)
    monkeypatch.setattr(scrub_dom0.time, "sleep", lambda s: None)
    monkeypatch.setattr(scrub_dom0, "DirtyPages", lambda h: SimpleNamespace(counters=False))
    monkeypatch.setattr(scrub_dom0, "Profiler", lambda: None)
    monkeypatch.setattr(scrub_dom0, "Host", lambda: host)
    monkeypatch.setattr(scrub_dom0, "xs_trace_off", contextlib.nullcontext)
    return host


def bench(host: FakeHost) -> scrub_dom0.Bench:
    return scrub_dom0.Bench(host, Path("/guest"), "bad-", 1.0)   # type: ignore[arg-type]


def test_cleanup_destroys_every_guest_past_one_that_fails(fake: FakeHost) -> None:
    fake.refuse = {5}
    errors, left = bench(fake).cleanup()
    assert left == [5] and fake.alive == {0, 5, 8}          # 6 and 7 destroyed all the same
    assert len(errors) == 1 and errors[0].startswith("destroy bad-spin0 (5): RuntimeError: ")
    assert "cannot destroy 5" in errors[0]


def test_cleanup_counts_a_guest_that_does_not_die_and_bounds_xl(fake: FakeHost) -> None:
    fake.immortal, fake.hang = {6}, {7}
    errors, left = bench(fake).cleanup()
    assert left == [6, 7]
    assert any("bad-spin1 (6)" in e and "still dying" in e for e in errors)
    assert any("bad-g1 (7)" in e and "still running after" in e for e in errors)
    assert all(timeout == scrub_dom0.XL_DESTROY_S for _, timeout in fake.xl_calls)


def run_main(fake: FakeHost, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[int, Any]:
    monkeypatch.setenv(protocol.ENV_OUT, str(tmp_path))
    req = ScrubRequest(kernel=Path("/guest"))
    rc = scrub_dom0.main(["--request", req.to_json()])
    return rc, json.loads((tmp_path / "result.json").read_text())


def test_a_failed_run_still_writes_its_error_and_the_cleanups(
        fake: FakeHost, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake.fail_start = OSError("physinfo: permission denied")
    fake.refuse = {6}
    rc, result = run_main(fake, monkeypatch, tmp_path)
    assert rc == 1
    # The run's own error first, unmasked by the cleanup's.
    assert result["errors"][0] == "OSError: physinfo: permission denied"
    assert len(result["errors"]) == 2 and "bad-spin1 (6)" in result["errors"][1]
    assert result["leftover_domains"] == [6]
    assert fake.alive == {0, 6, 8}


def test_a_cleanup_that_fails_makes_the_exit_status_non_zero(
        fake: FakeHost, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_spinners(self: scrub_dom0.Bench, count: int, weight: int | None = None) -> None:
        raise KeyError("stop here")            # anything, after the guests were made
    monkeypatch.setattr(scrub_dom0.Bench, "start_spinners", no_spinners)
    rc, result = run_main(fake, monkeypatch, tmp_path)
    assert rc == 1 and result["errors"] == ["KeyError: 'stop here'"]
    assert result["leftover_domains"] == [] and fake.alive == {0, 8}
    assert result["destroy_retries"] == 0
