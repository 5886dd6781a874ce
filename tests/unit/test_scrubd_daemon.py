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
            os.umask(0)         # the socket's mode must not come from ours
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
    log = tmp_path / "calls"
    r = run(scrubd, "run", "--once", nodes=100, phys_nodes=128, big=1, log=log)
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout)
    assert [n["node"] for n in line["nodes"]] == list(range(100))
    assert line["nodes"][99]["worker_runs"] == 2**64 - 1
    assert log.read_text().splitlines() == ["get 1 cap 128 nodes 100"]


def test_more_nodes_than_physinfo_said_grow_the_array(scrubd: Path, tmp_path: Path) -> None:
    """Defensive: Xen's physinfo covers every node the sysctl can report, but
    a sysctl answering ENOBUFS with a larger count is followed."""
    log = tmp_path / "calls"
    r = run(scrubd, "run", "--once", nodes=100, phys_nodes=2, log=log)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["nodes"]) == 100
    assert log.read_text().splitlines() == ["get 1 cap 2 nodes 100", "get 2 cap 100 nodes 100"]


def test_more_nodes_than_it_takes_is_a_host_it_cannot_run_on(scrubd: Path) -> None:
    r = run(scrubd, "run", "--once", nodes=5000, phys_nodes=2)
    assert r.returncode == EXIT_HOST and "Argument list too long" in r.stderr


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
    seen: list[dict[str, object]] = []

    def failing() -> bool:
        seen.append(json.loads(d.status(scrubd)))
        return "error" in seen[-1]
    wait_for(failing, "an error in the status")
    assert "reading XEN_SYSCTL_scrub_op: Resource temporarily unavailable" in \
        str(seen[-1]["error"])
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
    assert r.returncode == EXIT_HOST and f"another scrubd runs (it holds {sock}.lock)" in r.stderr
    assert not log.exists() or "set" not in log.read_text()   # it steered nothing
    assert "nodes" in json.loads(first.status(scrubd))        # the first still answers


def test_a_one_shot_that_would_steer_waits_for_no_running_daemon(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    sock, log = tmp_path / "s.sock", tmp_path / "calls"
    daemons.append(Daemon(scrubd, sock, "--interval", "3600"))
    r = subprocess.run([str(scrubd), "run", "--once", "--socket", str(sock), "--low-mib",
                        "4096", "--high-mib", "8192"], capture_output=True, text=True,
                       env=env(log=log), timeout=30)
    assert r.returncode == EXIT_HOST and "another scrubd runs" in r.stderr
    assert not log.exists()
    # Watching only needs no lock.
    assert run(scrubd, "run", "--once", "--socket", str(sock)).returncode == 0


def test_the_socket_directory_is_made_when_missing(scrubd: Path, tmp_path: Path) -> None:
    # Without systemd's RuntimeDirectory= (a scrubd started by hand, the
    # lab's dom0) /run/scrubd does not exist: steering still takes its lock.
    sock = tmp_path / "run-scrubd" / "s.sock"
    r = subprocess.run([str(scrubd), "run", "--once", "--socket", str(sock), "--low-mib",
                        "4096", "--high-mib", "8192"], capture_output=True, text=True,
                       env=env(), timeout=30)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    # A missing grandparent is not made: only the socket's own directory.
    deep = tmp_path / "no" / "such" / "s.sock"
    r = run(scrubd, "run", "--once", "--socket", str(deep), "--low-mib", "4096",
            "--high-mib", "8192")
    assert r.returncode == 1 and "No such file or directory" in r.stderr
    assert not (tmp_path / "no").exists()


def test_a_stopped_daemon_neither_hangs_a_second_one_nor_status(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    sock = tmp_path / "s.sock"
    d = Daemon(scrubd, sock, "--interval", "3600")
    daemons.append(d)
    d.proc.send_signal(signal.SIGSTOP)
    try:
        backlog = []
        for _ in range(20):             # fill its listen backlog
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(str(sock))
            except BlockingIOError:
                s.close()
                break
            backlog.append(s)
        t0 = time.monotonic()
        r = run(scrubd, "run", "--socket", str(sock))
        assert r.returncode == EXIT_HOST and time.monotonic() - t0 < 5
        t0 = time.monotonic()
        r = run(scrubd, "status", "--socket", str(sock))
        assert r.returncode == 1 and time.monotonic() - t0 < 15
        for s in backlog:
            s.close()
    finally:
        d.proc.send_signal(signal.SIGCONT)
    assert d.stop()[0] == 0


def test_status_refuses_a_cut_off_line(scrubd: Path, tmp_path: Path) -> None:
    sock = tmp_path / "fake.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(sock))
    srv.listen(1)
    proc = subprocess.Popen([str(scrubd), "status", "--socket", str(sock)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    conn, _ = srv.accept()
    conn.sendall(b'{"time": 1, "nodes": [')
    conn.close()
    srv.close()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "not all of it" in err and out == ""


def test_a_slow_reader_of_a_long_line_still_gets_all_of_it(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    """The 1 s deadline is for taking nothing: a reader that keeps reading,
    however slowly, gets the whole line."""
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "3600", nodes=4000, big=1)
    daemons.append(d)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(d.sock))
    data = b""
    t0 = time.monotonic()
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        assert chunk, f"cut off after {len(data)} bytes"
        data += chunk
        time.sleep(0.1)                 # about 2 s in all, more than the deadline
    s.close()
    assert time.monotonic() - t0 > 1.0
    assert len(json.loads(data)["nodes"]) == 4000


def test_a_dead_daemons_socket_is_replaced(scrubd: Path, tmp_path: Path,
                                           daemons: list[Daemon]) -> None:
    sock = tmp_path / "s.sock"
    dead = Daemon(scrubd, sock, "--interval", "3600")
    dead.proc.kill()
    dead.proc.wait()
    assert sock.exists()
    d = Daemon(scrubd, sock, "--interval", "3600")
    daemons.append(d)
    # The stale socket let the constructor return before the new one was
    # bound (the unlink between leaves no socket for a moment).
    wait_for(lambda: run(scrubd, "status", "--socket", str(sock)).returncode == 0,
             "the new daemon to answer")
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
    # 0-2, the lock and the listening socket: every accept() fails with EMFILE.
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "3600", limit_fds=5)
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


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze")
    unit = tmp_path / "scrubd.service"
    unit.write_text(UNIT.read_text().replace("/usr/sbin/scrubd", shutil.which("true") or
                                             "/bin/true"))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


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
