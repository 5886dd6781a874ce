"""How dom0's side of the lab fails: an ``xl`` that hangs, a malformed
request to the agent, a counter reset that fails; each must end in an error
the host sees.  (A storm's failures: test_storm_phases.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import LabError
from pyxen.lab.dom0 import agent, dom0bench, xenprof, xl


# xl.xl: a timeout is an XlError (a LabError), which the drivers catch.

def test_an_xl_that_times_out_is_an_xl_error(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "xl"
    fake.write_text("#!/bin/sh\nsleep 5\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(xl.XlError, match=r"xl create -q x\.cfg exited -1: "
                                         r"timed out after 0\.3 s") as info:
        xl.xl("create", "-q", "x.cfg", timeout=0.3)
    assert isinstance(info.value, LabError)
    assert (info.value.xl_args, info.value.returncode) == (["create", "-q", "x.cfg"], -1)


# The agent: a malformed request is refused, and the agent goes on serving.

@pytest.mark.parametrize("request_text,reason", [
    ('{"args": ["true"]}', "argv must be a non-empty list, got None"),
    ('{"argv": []}', "argv must be a non-empty list, got []"),
    ('{"argv": ["tru', "not a request: "),
    (b"\xff\xfe{}", "not a request: 'utf-8' codec can't decode"),
    ('{"argv": ["true"], "timeout": 1' + "0" * 400 + "}", "not a request: int too large"),
    ('["true"]', "a request is a JSON object, not list"),
    ('{"argv": ["true"], "timeout": 0}', "timeout must be a positive finite number"),
    ('{"argv": ["true"], "timeout": -1}', "timeout must be a positive finite number"),
    ('{"argv": ["true"], "timeout": "60"}', "timeout must be a positive finite number"),
    ('{"argv": ["true"], "timeout": Infinity}', "timeout must be a positive finite number"),
    ('{"argv": ["true"], "timeout": true}', "timeout must be a positive finite number"),
    ('{"argv": ["true"], "env": ["A=1"]}', "env must be an object"),
])
def test_the_agent_refuses_a_malformed_request_and_keeps_serving(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request_text: str | bytes,
        reason: str) -> None:
    monkeypatch.setattr(agent, "_log", lambda xchg, msg: None)
    for d in (protocol.REQ_DIR, protocol.RSP_DIR, protocol.OUT_DIR):
        (tmp_path / d).mkdir()
    req = tmp_path / protocol.REQ_DIR
    (req / "000001.json").write_bytes(request_text if isinstance(request_text, bytes)
                                      else request_text.encode())
    (req / "000002.json").write_text(json.dumps({"argv": ["sh", "-c", "echo ok"],
                                                 "timeout": 30, "cwd": str(tmp_path)}))
    (req / "000003.json").write_text(json.dumps({"op": "poweroff"}))
    agent.serve(tmp_path, {"PATH": "/usr/bin:/bin"})
    rsp = tmp_path / protocol.RSP_DIR
    bad = json.loads((rsp / "000001.json").read_text())
    assert (bad["returncode"], bad["timed_out"]) == (agent.BAD_REQUEST_RC, False)
    stderr = (tmp_path / protocol.OUT_DIR / "000001" / "stderr").read_text()
    assert stderr.startswith("pyxen-agent: bad request 000001: " + reason)
    assert json.loads((rsp / "000002.json").read_text())["returncode"] == 0
    assert (tmp_path / protocol.OUT_DIR / "000002" / "stdout").read_text() == "ok\n"
    assert list(req.iterdir()) == []


def test_a_request_without_a_timeout_gets_the_default(tmp_path: Path) -> None:
    assert agent.check_request({"argv": ["true"]}) is None
    assert agent.check_request({"argv": ["true"], "timeout": None}) is None
    assert agent.check_request({"argv": ["true"], "timeout": 0.5}) is None
    assert agent.check_request({"op": "poweroff"}) is None


# xenprof: a reset that fails is an error, not figures of the wrong span.

@pytest.mark.parametrize("failing", [["xenperf", "-r"], ["xenlockprof", "-r"]])
def test_a_failed_counter_reset_is_an_error(monkeypatch: pytest.MonkeyPatch,
                                            failing: list[str]) -> None:
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        rc = 1 if argv == failing else 0
        return subprocess.CompletedProcess(argv, rc, "", "Permission denied\n" if rc else "")

    monkeypatch.setattr(xenprof, "_run", run)
    p = xenprof.Profiler()
    assert p.available
    with pytest.raises(xenprof.XenprofError,
                       match=f"^{' '.join(failing)} exited 1: Permission denied$"):
        p.reset()
    assert isinstance(xenprof.XenprofError("x"), LabError)


# One name for each file a dom0 driver hands back.

def test_the_storm_writes_its_files_under_the_protocols_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyxen.lab.dom0.result import hand_back
    dom0bench.Progress(tmp_path, 4).advance("create")
    assert json.loads((tmp_path / protocol.PROGRESS_FILE).read_text())["done"] == 1
    monkeypatch.setenv(protocol.ENV_OUT, str(tmp_path))
    assert hand_back({"errors": []}) == 0
    assert json.loads((tmp_path / protocol.RESULT_FILE).read_text()) == {"errors": []}
