"""scrubd as a daemon, without Xen: scrubd.c compiled against a fake
libxenctrl (tests/unit/scrubd_fake, driven by FAKE_* variables) and run as a
process: big hosts, failing sysctls, signals, a second daemon, clients that
do not read, running out of descriptors, putting back what it set, failing
sets, and the systemd unit."""

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
from typing import Any

import pytest

HERE = Path(__file__).parent
SCRUBD_DIR = HERE.parent.parent / "scrubd"
FAKE = HERE / "scrubd_fake"
UNIT = SCRUBD_DIR / "systemd" / "scrubd.service"
#: scrubd's exit statuses (scrubd.c): bad options, a host that cannot run it.
EXIT_USAGE, EXIT_HOST = 2, 3
#: Watermarks far above the fake's 1 GiB of free memory: scrubd wants eager.
STEER = ("--low-mib", "4096", "--high-mib", "8192")


def build(tmp_path_factory: pytest.TempPathFactory, *defines: str) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("scrubd") / "scrubd"
    subprocess.run([cc, "-O1", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
                    *defines, f"-I{FAKE}", "-o", str(out), str(SCRUBD_DIR / "scrubd.c"),
                    str(FAKE / "fake_xenctrl.c")], check=True)
    return out


@pytest.fixture(scope="module")
def scrubd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory)


@pytest.fixture(scope="module")
def scrubd_no_boot_id(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scrubd on a host whose boot id cannot be read."""
    return build(tmp_path_factory, '-DSCRUBD_BOOT_ID="/nonexistent/boot_id"')


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

    def lines(self, n: int = 1) -> list[dict[str, object]]:
        """The JSON lines it logged, once there are at least ``n``."""
        def done() -> list[dict[str, object]]:
            text = self.out.read_text()
            whole = text[:text.rfind("\n") + 1].splitlines()
            return [json.loads(x) for x in whole] if len(whole) >= n else []
        wait_for(done, f"{n} lines")
        return done()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=10)
        return rc, self.out.read_text(), self.err.read_text()


def sets(log: Path) -> list[str]:
    """The fake's xc_scrub_set calls (failed ones too), as "set P B T"."""
    return [x for x in log.read_text().splitlines() if x.startswith("set ")] \
        if log.exists() else []


def xen_state(state: Path) -> tuple[int, ...]:
    """The fake hypervisor's policy, budget and period (FAKE_STATE)."""
    return tuple(int(x) for x in state.read_text().split())


def put(path: Path, text: str) -> None:
    """Writes ``path`` whole at once (the fake and scrubd read it meanwhile)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.rename(path)


#: This boot's id, which scrubd writes in <socket>.saved.
BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
#: What STEER sets on the fake's default budget and period: eager.
EAGER = (1, 1000, 10000)


def saved_text(orig: tuple[int, ...], held: tuple[int, ...],
               pending: tuple[int, ...] | None = None, boot: str = BOOT_ID) -> str:
    """A <socket>.saved as scrubd writes it: the policy, budget and period it
    found (to put back), the ones it set, and the ones it is setting."""
    nums = (*orig, *held, *(held if pending is None else pending))
    return f"scrubd-saved-v2 {' '.join(map(str, nums))} {boot}\n"


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
    # Without watermarks nothing is set: a budget would be silently ignored.
    (["--budget-us", "1000", "--period-us", "10000"],
     "--budget-us and --period-us need --low-mib and --high-mib"),
    (["--socket", ""], "--socket must be an absolute path, got ''"),
    (["--socket", "scrubd.sock"], "--socket must be an absolute path"),
    (["--low-mib", " 5", "--high-mib", "10"], "--low-mib must be a whole number"),
    (["--low-mib", "+5", "--high-mib", "10"], "--low-mib must be a whole number"),
    (["--low-mib", "5", "--high-mib", "10", "--budget-us", "+100", "--period-us", "1000"],
     "--budget-us must be a whole number"),
    (["--interval", " 1"], "--interval must be"),
    (["--interval", "+1"], "--interval must be"),
    (["--interval", "1e0"], "--interval must be"),
])
def test_bad_options_exit_with_the_usage_status(scrubd: Path, args: list[str],
                                                message: str) -> None:
    r = run(scrubd, "run", "--once", *args)
    assert r.returncode == EXIT_USAGE and message in r.stderr


def test_status_refuses_a_relative_socket(scrubd: Path) -> None:
    r = run(scrubd, "status", "--socket", "")
    assert r.returncode == EXIT_USAGE and "--socket must be an absolute path" in r.stderr


@pytest.mark.parametrize("fake, message", [
    ({"get_errno": errno.ENOSYS}, "this Xen has no scrub workers"),
    ({"open_errno": errno.ENOENT}, "run in dom0, as root"),
    # An older or mismatched Xen, or Flask, refuses the sysctl.
    ({"get_errno": errno.EPERM}, "Operation not permitted (the hypervisor may lack the "
     "scrub sysctl or be another version than this libxenctrl, or its Flask policy "
     "denies it)"),
    ({"get_errno": errno.EACCES}, "Permission denied (the hypervisor may lack the scrub"),
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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=lambda sig: sig.name)
def test_a_stop_signal_stops_it_at_once_whatever_the_interval(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon], sig: signal.Signals) -> None:
    # SIGHUP too: its default action would kill it, leaving its socket, with
    # a status that Restart=on-failure does not restart.
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "3600")
    daemons.append(d)
    d.lines()
    t0 = time.monotonic()
    rc, out, _ = d.stop(sig)
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
    # exec: a scrubd that cannot start fails "systemctl start".
    assert settings["Type"] == "exec"
    assert settings["RuntimeDirectory"] == "scrubd"
    # <socket>.saved must outlive a crash and the restart after it.
    assert settings["RuntimeDirectoryPreserve"] == "yes"
    assert "ReadWritePaths" not in settings
    assert settings["RestrictAddressFamilies"] == "AF_UNIX"
    assert settings["CapabilityBoundingSet"] == "CAP_IPC_LOCK"
    assert settings["ProtectSystem"] == "strict"
    exec_start = settings["ExecStart"]
    assert "--socket /run/scrubd/scrubd.sock" in exec_start
    # systemd drops an empty $VAR, but passes an empty ${VAR} as an empty
    # argument (which scrubd refuses): options come only through $VAR.
    assert "${" not in exec_start and exec_start.endswith("$SCRUBD_OPTS")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=lambda sig: sig.name)
def test_a_stop_puts_back_the_policy_budget_and_period_it_changed(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon], sig: signal.Signals) -> None:
    sock, log, state = tmp_path / "s.sock", tmp_path / "calls", tmp_path / "xen"
    d = Daemon(scrubd, sock, "--interval", "3600", *STEER, "--budget-us", "1000",
               "--period-us", "10000", log=log, state=state, budget=500, period=5000)
    daemons.append(d)
    assert d.lines()[0]["switched_to"] == "eager"
    assert xen_state(state) == (1, 1000, 10000)
    assert (tmp_path / "s.sock.saved").exists()
    rc, _, err = d.stop(sig)
    assert rc == 0, err
    assert xen_state(state) == (0, 500, 5000)
    assert sets(log) == ["set 1 1000 10000", "set 0 500 5000"]
    assert "put back the idle policy (budget 500 us, period 5000 us)" in err
    assert not sock.exists() and not (tmp_path / "s.sock.saved").exists()


def steer_steady_then_stop(scrubd: Path, tmp_path: Path, daemons: list[Daemon],
                           **fake: Any) -> str:
    """A steering daemon on a host already as it wants it (no switch), stopped:
    its stop succeeds; what it said on stderr is returned."""
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "3600", *STEER, **fake)
    daemons.append(d)
    assert d.lines()[0]["switched_to"] is None
    rc, _, err = d.stop()
    assert rc == 0, err
    return err


def test_a_stop_sets_nothing_it_did_not_change(scrubd: Path, tmp_path: Path,
                                               daemons: list[Daemon]) -> None:
    log = tmp_path / "calls"
    # Already eager with the budget asked for: nothing to switch, nor to put back.
    steer_steady_then_stop(scrubd, tmp_path, daemons, log=log, policy=1)
    assert sets(log) == []
    assert not (tmp_path / "s.sock.saved").exists()


def test_a_stop_that_cannot_put_it_back_says_so_and_fails(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    sock, log = tmp_path / "s.sock", tmp_path / "calls"
    d = Daemon(scrubd, sock, "--interval", "3600", *STEER, log=log,
               set_errno=errno.EAGAIN, set_fail="2-2")
    daemons.append(d)
    assert d.lines()[0]["switched_to"] == "eager"
    rc, _, err = d.stop()
    assert rc == 1
    assert "putting back the idle policy (budget 1000 us, period 10000 us): Resource " \
        "temporarily unavailable; left as scrubd set it" in err
    # Kept for the next scrubd, which puts it back: what it found (and Xen
    # held then), and what it was setting; written before the set.
    assert (tmp_path / "s.sock.saved").read_text() == \
        saved_text((0, 1000, 10000), (0, 1000, 10000), EAGER)
    assert not sock.exists()


def test_after_a_crash_the_next_daemon_puts_back_what_the_first_found(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    sock, state = tmp_path / "s.sock", tmp_path / "xen"
    state.write_text("0 500 5000\n")
    args = ("--interval", "3600", *STEER, "--budget-us", "1000", "--period-us", "10000")
    first = Daemon(scrubd, sock, *args, state=state)
    daemons.append(first)
    assert first.lines()[0]["switched_to"] == "eager"
    first.proc.kill()
    first.proc.wait()
    assert xen_state(state) == (1, 1000, 10000)
    # The next one finds eager: not what it is to put back.
    second = Daemon(scrubd, sock, *args, state=state)
    daemons.append(second)
    assert second.lines()[0]["switched_to"] is None
    rc, _, err = second.stop()
    assert rc == 0, err
    assert "did not put back the idle policy (budget 500 us, period 5000 us)" in err
    assert xen_state(state) == (0, 500, 5000)
    assert not (tmp_path / "s.sock.saved").exists()


def test_a_saved_file_from_before_a_reboot_is_not_put_back(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    state, saved = tmp_path / "xen", tmp_path / "s.sock.saved"
    saved.write_text(saved_text((1, 200, 2000), (0, 1000, 10000),
                                boot="00000000-0000-0000-0000-000000000000"))
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "3600", *STEER, state=state)
    daemons.append(d)
    assert d.lines()[0]["switched_to"] == "eager"
    rc, _, err = d.stop()
    assert rc == 0, err
    assert "written before the last reboot" in err
    assert xen_state(state) == (0, 1000, 10000)     # what this one found
    assert not saved.exists()


def test_a_one_shot_sets_and_leaves(scrubd: Path, tmp_path: Path) -> None:
    state = tmp_path / "xen"
    r = run(scrubd, "run", "--once", "--socket", str(tmp_path / "s.sock"), *STEER,
            "--budget-us", "200", "--period-us", "2000", state=state)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["switched_to"] == "eager"
    assert xen_state(state) == (1, 200, 2000)
    assert not (tmp_path / "s.sock.saved").exists()


def test_a_failing_set_still_gives_every_sample_and_is_logged_once(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    log = tmp_path / "calls"
    # The first 20 sets fail (about 1 s at 0.05 s), from the first sample on.
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "0.05", *STEER, log=log,
               set_errno=errno.EAGAIN, set_fail="1-20")
    daemons.append(d)
    wait_for(lambda: json.loads(d.status(scrubd)).get("set_error") is not None,
             "a failed set in the status")
    wait_for(lambda: len(sets(log)) > 20, "a set that works")
    rc, out, err = d.stop()
    assert rc == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    failed = [x for x in lines if x["set_error"]]
    assert lines[0] is failed[0] and len(failed) == 20
    assert all(x["set_error"] == {"policy": "eager", "errno": errno.EAGAIN,
                                  "error": "Resource temporarily unavailable"}
               and x["switched_to"] is None and x["steering"] for x in failed)
    assert [x["switched_to"] for x in lines[20:]][:1] == ["eager"]
    assert err.count("setting the eager policy: Resource temporarily unavailable") == 1
    assert "setting the scrub policy works again" in err


@pytest.mark.parametrize("when", ["first", "later"])
@pytest.mark.parametrize("err_no, hint", [
    (errno.EPERM, "its Flask policy denies xen2:scrub_policy"),
    (errno.EOPNOTSUPP, "cpupool 0 runs neither credit nor credit2"),
])
def test_a_set_that_can_never_work_stops_steering_not_watching(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon], when: str, err_no: int,
        hint: str) -> None:
    log = tmp_path / "calls"
    # Idle, and eager wanted: at once with 1 GiB free (first), or from the
    # third sample on, when 16 GiB free drop to 1 GiB (later).
    fake: dict[str, Any] = {} if when == "first" else \
        {"free_mib": "16384,16384,16384,1024"}
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "0.05", *STEER, log=log,
               set_errno=err_no, **fake)
    daemons.append(d)
    d.lines(10)
    assert d.proc.poll() is None, "it stopped watching"
    rc, out, err = d.stop()
    assert rc == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    failed = [i for i, x in enumerate(lines) if x["set_error"]]
    assert failed == [0 if when == "first" else 2]
    i = failed[0]
    assert lines[i]["set_error"]["errno"] == err_no
    assert all(x["steering"] for x in lines[:i])
    assert not any(x["steering"] for x in lines[i:])
    assert len(sets(log)) == 1                              # never tried again
    assert err.count("no longer steering, only watching") == 1 and hint in err
    # Recorded before the set, which changed nothing: nothing is left to put back.
    assert "put back" not in err and not (tmp_path / "s.sock.saved").exists()


@pytest.mark.parametrize("err_no, status", [(errno.EPERM, EXIT_HOST), (errno.EAGAIN, 1)])
def test_a_one_shot_whose_set_fails_still_prints_its_sample(
        scrubd: Path, tmp_path: Path, err_no: int, status: int) -> None:
    r = run(scrubd, "run", "--once", "--socket", str(tmp_path / "s.sock"), *STEER,
            set_errno=err_no)
    assert r.returncode == status, r.stderr
    line = json.loads(r.stdout)
    assert line["set_error"]["errno"] == err_no and line["switched_to"] is None


def test_a_change_before_its_first_set_is_what_it_puts_back(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    """Between the watermarks it sets nothing, maybe for hours: a change made
    meanwhile is the host's policy, not something to undo at stop."""
    log, state, free = tmp_path / "calls", tmp_path / "xen", tmp_path / "free"
    put(state, "0 500 5000\n")
    put(free, "6000\n")                 # between 4096 and 8192: nothing set
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "0.05", *STEER, "--budget-us",
               "1000", "--period-us", "10000", log=log, state=state, free_file=free)
    daemons.append(d)
    d.lines(3)
    assert sets(log) == []
    put(state, "0 700 7000\n")          # an administrator's budget and period
    put(free, "1024\n")                 # then eager is wanted
    wait_for(lambda: sets(log), "scrubd's first set")
    assert xen_state(state) == EAGER
    rc, _, err = d.stop()
    assert rc == 0, err
    assert sets(log) == ["set 1 1000 10000", "set 0 700 7000"]
    assert xen_state(state) == (0, 700, 7000)
    assert "put back the idle policy (budget 700 us, period 7000 us)" in err


def test_a_change_after_its_set_is_left_at_stop(scrubd: Path, tmp_path: Path,
                                               daemons: list[Daemon]) -> None:
    log, state = tmp_path / "calls", tmp_path / "xen"
    put(state, "0 500 5000\n")
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "3600", *STEER, log=log,
               state=state)
    daemons.append(d)
    assert d.lines()[0]["switched_to"] == "eager"
    put(state, "1 200 2000\n")          # eager, with the budget an administrator wants
    rc, _, err = d.stop()
    assert rc == 0, err
    assert sets(log) == ["set 1 0 0"]
    assert xen_state(state) == (1, 200, 2000)
    assert "not putting back the idle policy (budget 500 us, period 5000 us): Xen has " \
        "the eager policy (budget 200 us, period 2000 us), which scrubd did not set; " \
        "someone else changed it since, left as it is" in err
    assert not (tmp_path / "s.sock.saved").exists()


@pytest.mark.parametrize("free_after, expected, message", [
    # Between the watermarks the second sets nothing: the fix stays.
    ("6000", ["set 1 1000 10000"], "not putting back the idle policy (budget 500 us, "
     "period 5000 us): Xen has the idle policy (budget 700 us, period 7000 us), which "
     "scrubd did not set"),
    # Below the low one it sets eager again: the fix is what it puts back.
    ("1024", ["set 1 1000 10000", "set 1 1000 10000", "set 0 700 7000"],
     "scrubd: put back the idle policy (budget 700 us, period 7000 us)"),
], ids=["second-sets-nothing", "second-sets-again"])
def test_after_a_crash_a_fix_by_hand_is_not_undone(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon], free_after: str,
        expected: list[str], message: str) -> None:
    sock, log, state, free = tmp_path / "s.sock", tmp_path / "calls", tmp_path / "xen", \
        tmp_path / "free"
    put(state, "0 500 5000\n")
    put(free, "1024\n")
    args = ("--interval", "3600", *STEER, "--budget-us", "1000", "--period-us", "10000")
    first = Daemon(scrubd, sock, *args, log=log, state=state, free_file=free)
    daemons.append(first)
    assert first.lines()[0]["switched_to"] == "eager"
    first.proc.kill()
    first.proc.wait()
    put(state, "0 700 7000\n")          # the administrator's fix of the crash's eager
    put(free, f"{free_after}\n")
    second = Daemon(scrubd, sock, *args, log=log, state=state, free_file=free)
    daemons.append(second)
    second.lines()
    rc, _, err = second.stop()
    assert rc == 0, err
    assert sets(log) == expected
    assert xen_state(state) == (0, 700, 7000)
    assert message in err and "scrubd: put back the idle policy (budget 500" not in err
    assert not (tmp_path / "s.sock.saved").exists()


def test_a_fifo_for_the_saved_file_does_not_hang_the_start(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    saved = tmp_path / "s.sock.saved"
    os.mkfifo(saved, 0o600)
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "3600", *STEER)
    daemons.append(d)
    assert d.lines()[0]["switched_to"] == "eager"
    rc, _, err = d.stop()
    assert rc == 0, err
    assert f"not trusting {saved} (not a regular file): removing it" in err
    assert "put back the idle policy" in err and not saved.exists()


def root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a file of another user")


@pytest.mark.parametrize("how", ["group-writable", "world-writable", "another-user",
                                 "symlink"])
def test_a_saved_file_someone_else_could_write_is_not_trusted(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon], how: str) -> None:
    log, state, saved = tmp_path / "calls", tmp_path / "xen", tmp_path / "s.sock.saved"
    put(state, "1 1000 10000\n")        # as a scrubd before set it...
    text = saved_text((0, 500, 5000), EAGER)     # ... and what it says it found
    if how == "symlink":
        (tmp_path / "elsewhere").write_text(text)
        saved.symlink_to(tmp_path / "elsewhere")
        why = "a symbolic link"
    else:
        saved.write_text(text)
        saved.chmod({"group-writable": 0o620, "world-writable": 0o602}.get(how, 0o600))
        why = {"group-writable": "writable by others (mode 0620)",
               "world-writable": "writable by others (mode 0602)"}.get(how, "")
        if how == "another-user":
            root_only()
            os.chown(saved, 65534, 65534)
            why = f"owned by uid 65534, not {os.geteuid()}"
    err = steer_steady_then_stop(scrubd, tmp_path, daemons, log=log, state=state)
    assert f"not trusting {saved} ({why}): removing it" in err
    assert sets(log) == [] and xen_state(state) == EAGER
    assert not saved.exists() and not saved.is_symlink()


@pytest.mark.parametrize("how", ["writable-by-all", "another-user", "symlink"])
def test_a_planted_temporary_file_is_not_what_becomes_the_saved_file(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon], how: str) -> None:
    tmp, target = tmp_path / "s.sock.saved.tmp", tmp_path / "target"
    if how == "symlink":
        tmp.symlink_to(target)
    else:
        tmp.write_text("planted")
        tmp.chmod(0o666)
        if how == "another-user":
            root_only()
            os.chown(tmp, 65534, 65534)
    d = Daemon(scrubd, tmp_path / "s.sock", "--interval", "3600", *STEER)
    daemons.append(d)
    assert d.lines()[0]["switched_to"] == "eager"
    st = (tmp_path / "s.sock.saved").lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    assert not target.exists() and not tmp.exists() and not tmp.is_symlink()
    assert d.stop()[0] == 0


@pytest.mark.parametrize("how", ["group-writable", "world-writable", "another-user"])
def test_in_a_directory_others_can_write_no_saved_file_is_used(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon], how: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sock, log, state, saved = run_dir / "s.sock", tmp_path / "calls", tmp_path / "xen", \
        run_dir / "s.sock.saved"
    if how == "another-user":
        root_only()
        os.chown(run_dir, 65534, 65534)
        mode = 0o755
    else:
        mode = 0o770 if how == "group-writable" else 0o777
    run_dir.chmod(mode)
    owner = run_dir.stat().st_uid
    message = f"{run_dir} is not a directory only uid {os.geteuid()} can write " \
        f"(owner uid {owner}, mode {mode:04o}): no {sock}.saved is read or written"
    # A file planted there, as scrubd writes it: neither read nor removed.
    put(state, "1 1000 10000\n")
    text = saved_text((0, 500, 5000), EAGER)
    saved.write_text(text)
    saved.chmod(0o600)
    d = Daemon(scrubd, sock, "--interval", "3600", *STEER, log=log, state=state)
    daemons.append(d)
    assert d.lines()[0]["switched_to"] is None
    rc, _, err = d.stop()
    assert rc == 0, err
    assert message in err
    assert sets(log) == [] and xen_state(state) == EAGER and saved.read_text() == text
    # Nor written; a clean stop still puts back what it changed.
    saved.unlink()
    put(state, "0 500 5000\n")
    d = Daemon(scrubd, sock, "--interval", "3600", *STEER, log=log, state=state)
    daemons.append(d)
    assert d.lines()[0]["switched_to"] == "eager"
    assert not saved.exists()
    rc, _, err = d.stop()
    assert rc == 0, err
    assert xen_state(state) == (0, 500, 5000)


GOOD = saved_text((0, 1000, 10000), EAGER)


@pytest.mark.parametrize("text", [
    # Numbers that wrap in an unsigned int: 4294967296 is 0, 4294967297 is 1.
    pytest.param(GOOD.replace("v2 0 ", "v2 4294967296 "), id="policy-2**32"),
    pytest.param(GOOD.replace("v2 0 ", "v2 4294967297 "), id="policy-2**32+1"),
    pytest.param(saved_text((0, 4294967296, 4294967296), EAGER), id="budget-period-2**32"),
    pytest.param(saved_text((0, 4294967297, 4294967297 + 9999), EAGER),
                 id="budget-period-wrap-to-valid"),
    # Signs, blanks and junk in a number.
    pytest.param(GOOD.replace("v2 0 ", "v2 +0 "), id="plus"),
    pytest.param(GOOD.replace("v2 0 ", "v2 -0 "), id="minus"),
    pytest.param(GOOD.replace("v2 0 ", "v2  0 "), id="two-blanks"),
    pytest.param(GOOD.replace("v2 0 1000 ", "v2 0 1000x "), id="junk-in-number"),
    # Junk after the line, or on the same one; no end of line.
    pytest.param(GOOD + "junk\n", id="second-line"),
    pytest.param(GOOD.replace("\n", " junk\n"), id="junk-after-boot-id"),
    pytest.param(GOOD.rstrip("\n"), id="no-newline"),
    # Values Xen refuses: a budget more than a tenth of the period, out of
    # range, only one of budget and period, no such policy.
    pytest.param(saved_text((0, 1000, 1000), EAGER), id="budget-over-period/10"),
    pytest.param(saved_text((0, 1000, 10000), (1, 1000, 1000)), id="held-over-period/10"),
    pytest.param(saved_text((0, 1001, 100000), EAGER), id="budget-too-big"),
    pytest.param(saved_text((0, 9, 10000), EAGER), id="budget-too-small"),
    pytest.param(saved_text((0, 1000, 1000001), EAGER), id="period-too-long"),
    pytest.param(saved_text((0, 1000, 0), EAGER), id="period-0-only"),
    pytest.param(saved_text((2, 1000, 10000), EAGER), id="no-such-policy"),
    # The format before this one (too few numbers), another magic word, nothing.
    pytest.param(f"scrubd-saved-v1 0 1000 10000 {BOOT_ID}\n", id="v1"),
    pytest.param(GOOD.replace("v2", "v3"), id="v3"),
    pytest.param("", id="empty"),
])
def test_a_saved_file_not_as_scrubd_writes_it_is_removed_unused(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon], text: str) -> None:
    log, state, saved = tmp_path / "calls", tmp_path / "xen", tmp_path / "s.sock.saved"
    put(state, "1 1000 10000\n")
    saved.write_text(text)
    saved.chmod(0o600)
    err = steer_steady_then_stop(scrubd, tmp_path, daemons, log=log, state=state)
    assert f"removing {saved}: not what scrubd writes" in err
    assert sets(log) == [] and xen_state(state) == EAGER and not saved.exists()


def test_a_saved_file_as_scrubd_writes_it_is_put_back(
        scrubd: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    """The other side of the one above: the limits themselves are taken."""
    log, state, saved = tmp_path / "calls", tmp_path / "xen", tmp_path / "s.sock.saved"
    put(state, "1 1000 10000\n")
    saved.write_text(saved_text((0, 100, 1000), (0, 1000, 1000000), EAGER))
    saved.chmod(0o600)
    err = steer_steady_then_stop(scrubd, tmp_path, daemons, log=log, state=state)
    assert sets(log) == ["set 0 100 1000"] and xen_state(state) == (0, 100, 1000)
    assert not saved.exists()


def test_without_a_boot_id_no_saved_file_is_trusted_or_written(
        scrubd_no_boot_id: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    log, state, saved = tmp_path / "calls", tmp_path / "xen", tmp_path / "s.sock.saved"
    # What an unreadable boot id was written as: it must not match itself.
    put(state, "1 1000 10000\n")
    saved.write_text(saved_text((0, 500, 5000), EAGER, boot="unknown"))
    saved.chmod(0o600)
    d = Daemon(scrubd_no_boot_id, tmp_path / "s.sock", "--interval", "3600", *STEER,
               log=log, state=state)
    daemons.append(d)
    assert d.lines()[0]["switched_to"] is None
    rc, _, err = d.stop()
    assert rc == 0, err
    assert f"removing {saved}: the boot id is unreadable, so it may be from before " \
        "a reboot" in err
    assert sets(log) == [] and xen_state(state) == EAGER and not saved.exists()
    # Nor is one written that a later scrubd could not tell from this boot's.
    put(state, "0 500 5000\n")
    d = Daemon(scrubd_no_boot_id, tmp_path / "s.sock", "--interval", "3600", *STEER,
               state=state)
    daemons.append(d)
    assert d.lines()[0]["switched_to"] == "eager"
    assert not saved.exists()
    rc, _, err = d.stop()
    assert rc == 0 and "cannot read the boot id (/nonexistent/boot_id)" in err
    assert xen_state(state) == (0, 500, 5000)
