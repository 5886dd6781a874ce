"""scrubd as a daemon, without Xen: scrubd.c compiled against a fake
libxenctrl (tests/unit/scrubd_fake, driven by FAKE_* variables) and run as a
process: big hosts, failing sysctls, signals, a second daemon, clients that
do not read, running out of descriptors, and the systemd unit."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SCRUBD_DIR = HERE.parent.parent / "scrubd"
FAKE = HERE / "scrubd_fake"
UNIT = SCRUBD_DIR / "systemd" / "scrubd.service"
#: scrubd's exit statuses (scrubd.c): bad options, a host that cannot run it.
EXIT_USAGE, EXIT_HOST = 2, 3


@pytest.fixture(scope="module")
def scrubd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("scrubd") / "scrubd"
    subprocess.run([cc, "-O1", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
                    f"-I{FAKE}", "-o", str(out), str(SCRUBD_DIR / "scrubd.c"),
                    str(FAKE / "fake_xenctrl.c")], check=True)
    return out


def env(**fake: object) -> dict[str, str]:
    return {**os.environ, **{f"FAKE_{k.upper()}": str(v) for k, v in fake.items()}}


def run(scrubd: Path, *args: str, **fake: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(scrubd), *args], capture_output=True, text=True,
                          env=env(**fake), timeout=30)


def wait_for(cond: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Daemon:
    def __init__(self, scrubd: Path, sock: Path, *args: str, limit_fds: int | None = None,
                 **fake: object) -> None:
        def limit() -> None:
            if limit_fds is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit_fds, limit_fds))
        self.sock = sock
        # Files, not pipes: a status line of thousands of nodes would fill a
        # pipe nobody reads until the end and block the daemon in puts().
        self.out, self.err = sock.with_suffix(".out"), sock.with_suffix(".err")
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen([str(scrubd), "run", "--socket", str(sock), *args],
                                         stdout=out, stderr=err, env=env(**fake),
                                         preexec_fn=limit)
        wait_for(lambda: sock.exists() or self.proc.poll() is not None, "the socket")

    def status(self, scrubd: Path) -> str:
        r = run(scrubd, "status", "--socket", str(self.sock))
        assert r.returncode == 0, r.stderr
        return r.stdout

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=10)
        return rc, self.out.read_text(), self.err.read_text()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def test_a_host_with_more_than_64_nodes_and_full_counters_fits(scrubd: Path,
                                                               tmp_path: Path) -> None:
    # physinfo says 2 nodes, the sysctl 100: the array grows on ENOBUFS.
    log = tmp_path / "calls"
    r = run(scrubd, "run", "--once", nodes=100, phys_nodes=2, big=1, log=log)
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout)
    assert [n["node"] for n in line["nodes"]] == list(range(100))
    assert line["nodes"][99]["worker_runs"] == 2**64 - 1
    assert log.read_text().splitlines() == ["get 1 cap 2 nodes 100", "get 2 cap 100 nodes 100"]


def test_status_reads_a_line_longer_than_a_socket_buffer(scrubd: Path, tmp_path: Path,
                                                         daemons: list[Daemon]) -> None:
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "3600", nodes=4000, big=1)
    daemons.append(d)
    line = json.loads(d.status(scrubd))
    assert len(line["nodes"]) == 4000
    assert d.stop()[0] == 0


@pytest.mark.parametrize("args, message", [
    (["--interval", "0"], "--interval must be"),
    (["--low-mib", "10"], "give both --low-mib and --high-mib"),
    (["--bogus"], "unrecognized option"),
])
def test_bad_options_exit_with_the_usage_status(scrubd: Path, args: list[str],
                                                message: str) -> None:
    r = run(scrubd, "run", "--once", *args)
    assert r.returncode == EXIT_USAGE and message in r.stderr


@pytest.mark.parametrize("fake, message", [
    ({"get_errno": errno.ENOSYS}, "this Xen has no scrub workers"),
    ({"open_errno": errno.ENOENT}, "run in dom0, as root"),
    ({"get_errno": errno.EPERM}, "Operation not permitted"),
])
def test_a_host_that_cannot_run_it_exits_with_the_host_status(
        scrubd: Path, tmp_path: Path, fake: dict[str, int], message: str) -> None:
    r = subprocess.run([str(scrubd), "run", "--socket", str(tmp_path / "s.sock")],
                       capture_output=True, text=True, env=env(**fake), timeout=30)
    assert r.returncode == EXIT_HOST and message in r.stderr
    assert not (tmp_path / "s.sock").exists()


def test_the_unit_does_not_restart_what_a_restart_cannot_fix() -> None:
    unit = UNIT.read_text()
    prevent = re.search(r"^RestartPreventExitStatus=(.*)$", unit, re.M)
    assert prevent and set(prevent.group(1).split()) == {str(EXIT_USAGE), str(EXIT_HOST)}
    assert re.search(r"^Restart=on-failure$", unit, re.M)


def test_a_failing_sysctl_is_logged_reported_and_retried(scrubd: Path, tmp_path: Path,
                                                         daemons: list[Daemon]) -> None:
    # Calls 2-30 fail (about 1.5 s at 0.05 s), then it works again.
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "0.05",
               get_errno=errno.EAGAIN, get_fail="2-30")
    daemons.append(d)
    wait_for(lambda: "error" in json.loads(d.status(scrubd)), "an error in the status")
    assert "reading XEN_SYSCTL_scrub_op: Resource temporarily unavailable" in \
        json.loads(d.status(scrubd))["error"]
    wait_for(lambda: "nodes" in json.loads(d.status(scrubd)), "a good status again")
    rc, out, err = d.stop()
    assert rc == 0
    assert len(out.splitlines()) >= 2       # before and after the failures
    assert "Resource temporarily unavailable" in err and "sampling works again" in err


def test_sigterm_stops_it_at_once_whatever_the_interval(scrubd: Path, tmp_path: Path,
                                                        daemons: list[Daemon]) -> None:
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "3600")
    daemons.append(d)
    t0 = time.monotonic()
    rc, out, _ = d.stop()
    assert rc == 0 and time.monotonic() - t0 < 2.0
    assert len(out.splitlines()) == 1
    assert not d.sock.exists(), "scrubd left its socket behind"


def test_its_socket_is_root_only_from_the_start(scrubd: Path, tmp_path: Path,
                                                daemons: list[Daemon]) -> None:
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "3600")
    daemons.append(d)
    assert stat.S_IMODE(d.sock.lstat().st_mode) == 0o600


def test_a_second_daemon_neither_steers_nor_takes_the_socket(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    sock, log = tmp_path / "s.sock", tmp_path / "calls"
    first = Daemon(scrubd, sock, "--interval", "3600")
    daemons.append(first)
    r = subprocess.run([str(scrubd), "run", "--socket", str(sock), "--low-mib", "4096",
                        "--high-mib", "8192"], capture_output=True, text=True,
                       env=env(log=log), timeout=30)
    assert r.returncode == EXIT_HOST and f"another scrubd answers on {sock}" in r.stderr
    assert not log.exists() or "set" not in log.read_text()   # it steered nothing
    assert "nodes" in json.loads(first.status(scrubd))        # the first still answers


def test_a_dead_daemons_socket_is_replaced(scrubd: Path, tmp_path: Path,
                                           daemons: list[Daemon]) -> None:
    sock = tmp_path / "s.sock"
    dead = Daemon(scrubd, sock, "--interval", "3600")
    dead.proc.kill()
    dead.proc.wait()
    assert sock.exists()
    d = Daemon(scrubd, sock, "--interval", "3600")
    daemons.append(d)
    assert "nodes" in json.loads(d.status(scrubd))


def test_what_is_not_a_socket_is_not_removed(scrubd: Path, tmp_path: Path) -> None:
    path = tmp_path / "precious"
    path.write_text("data")
    r = run(scrubd, "run", "--socket", str(path))
    assert r.returncode == EXIT_HOST and "is not a socket: not replacing it" in r.stderr
    assert path.read_text() == "data"


def test_clients_that_do_not_read_never_hold_it_up(scrubd: Path, tmp_path: Path,
                                                   daemons: list[Daemon]) -> None:
    """A line far larger than a socket buffer, and more silent clients than it
    serves at once: a reading client still gets the whole line promptly."""
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "3600", nodes=4000, big=1)
    daemons.append(d)
    silent = []
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(d.sock))
        silent.append(s)
    try:
        t0 = time.monotonic()
        assert len(json.loads(d.status(scrubd))["nodes"]) == 4000
        # Silent clients are dropped after 1 s each slot, 16 slots at once.
        assert time.monotonic() - t0 < 5.0
    finally:
        for s in silent:
            s.close()
    assert d.stop()[0] == 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_it_backs_off_instead_of_spinning(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    # 0-2 and the listening socket: every accept() fails with EMFILE.
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "3600", limit_fds=4)
    daemons.append(d)
    waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    waiting.connect(str(d.sock))        # queued in the backlog, never accepted
    try:
        before = cpu_seconds(d.proc.pid)
        time.sleep(1.5)
        used = cpu_seconds(d.proc.pid) - before
    finally:
        waiting.close()
    rc, _, err = d.stop()
    assert rc == 0
    assert "Too many open files; not accepting for" in err
    assert used < 0.3, f"scrubd used {used:.2f} s of CPU in 1.5 s with a connection waiting"


def test_the_unit_is_confined_and_can_only_watch() -> None:
    unit = UNIT.read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert settings["RuntimeDirectory"] == "scrubd"
    assert "ReadWritePaths" not in settings
    assert settings["RestrictAddressFamilies"] == "AF_UNIX"
    assert settings["CapabilityBoundingSet"] == "CAP_IPC_LOCK"
    assert settings["ProtectSystem"] == "strict"
    exec_start = settings["ExecStart"]
    assert "--socket /run/scrubd/scrubd.sock" in exec_start
    # systemd drops an empty $VAR, but passes an empty ${VAR} as an empty
    # argument (which scrubd refuses): options come only through $VAR.
    assert "${" not in exec_start and exec_start.endswith("$SCRUBD_OPTS")
