"""What the lab's dom0 benchmarks read of the caching proxy without asking
it: its process ID, from the ready file it writes once its watch is up."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyxen.lab.dom0.proxystats import ProxyCounter


def test_the_pid_is_the_ready_file_s(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    ready.write_text("4242\n")
    assert ProxyCounter.pid(ready) == 4242


@pytest.mark.parametrize("content,message", [
    (None, "no xenstore-cache ready file"),
    ("", "holds no process ID"),
    ("up", "holds no process ID: 'up'"),
])
def test_a_missing_or_wrong_ready_file_is_an_error(tmp_path: Path, content: str | None,
                                                   message: str) -> None:
    ready = tmp_path / "ready"
    if content is not None:
        ready.write_text(content)
    with pytest.raises(RuntimeError, match=message):
        ProxyCounter.pid(ready)


def test_without_the_lab_s_variable_there_is_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyxen.lab.contract import protocol
    monkeypatch.delenv(protocol.ENV_XS_CACHE_CONTROL, raising=False)
    assert ProxyCounter.from_env() is None
    monkeypatch.setenv(protocol.ENV_XS_CACHE_CONTROL, "/run/ctl")
    counter = ProxyCounter.from_env()
    assert counter is not None and counter.control == Path("/run/ctl")
