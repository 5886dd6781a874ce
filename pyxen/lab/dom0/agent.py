"""The lab agent: runs inside dom0 (started by the initramfs' init).

It brings up the *staged* toolstack (xenstored with a request trace,
xen-init-dom0, xenconsoled logging guest consoles), then serves commands the
host drops into the exchange directory (a 9p share), one at a time:

  xchg/req/<id>.json   {"argv": [...], "timeout": s, "env": {...}} or {"op": "poweroff"}
  xchg/out/<id>/       stdout, stderr, and files/ (the command's $PYXEN_OUT)
  xchg/rsp/<id>.json   {"returncode": n, "timed_out": bool, "elapsed_s": s}

A malformed request (not JSON, no argv, a timeout that is not a positive
finite number) is answered with return code 2 and the reason on its stderr.

Only the standard library is imported: this runs before anything else is set up.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from pyxen._ffi import NATIVE_ENV
from pyxen.lab.contract import protocol
from xenstore_cache.control import DEFAULT_CONTROL, DEFAULT_LISTEN, DEFAULT_UPSTREAM


def _log(xchg: Path, msg: str) -> None:
    line = f"[{time.monotonic():10.3f}] {msg}\n"
    with (xchg / protocol.AGENT_LOG).open("a") as fh:
        fh.write(line)
    # The serial log shows it too (dom0's console is hvc0 -> Xen -> com1).
    try:
        with open("/dev/console", "w") as con:
            con.write("pyxen-agent: " + line)
    except OSError:
        pass


def _sh(argv: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: "
                           f"{(proc.stdout + proc.stderr).strip()}")


def toolstack_env(cfg: dict[str, object]) -> dict[str, str]:
    """PATH and LD_LIBRARY_PATH that put the staged toolstack first."""
    programs = dict(cfg["programs"])  # type: ignore[call-overload]
    bin_dirs: list[str] = []
    for path in programs.values():
        d = os.path.dirname(str(path))
        if d not in bin_dirs:
            bin_dirs.append(d)
    env = {
        "PATH": ":".join(bin_dirs + ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]),
        "LD_LIBRARY_PATH": ":".join(cfg["library_dirs"]),  # type: ignore[arg-type]
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        protocol.ENV_XS_TRACE: protocol.XS_TRACE,
        protocol.ENV_CONSOLE_LOG_DIR: protocol.CONSOLE_LOG_DIR,
        protocol.ENV_XS_DOMAIN_PRELOAD: str(cfg.get("xs_domain_preload", "")),
        # pyxen's bindings compiled against the staged headers (pyxen._native).
        NATIVE_ENV: str(cfg["native"]),
        **protocol.lib_cache_env(bool(cfg.get("lib_cache"))),
    }
    return env


#: Where Linux says how many files a process may be allowed to open.
NR_OPEN = Path("/proc/sys/fs/nr_open")


def xenstored_argv(xenstored: str, *args: str) -> list[str]:
    """xenstored's command line as upstream's launch-xenstore runs it: under
    ``prlimit --nofile`` with the system's limit (XENSTORED_MAX_OPEN_FDS's
    default, "unlimited"), for xenstored holds a socket for every client (an
    ``xl`` monitor per running guest): with the 1024 it would inherit, a
    host of 500 guests would run it out of files."""
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        raise RuntimeError("prlimit (util-linux) not found: xenstored needs it to be "
                           "started as launch-xenstore starts it")
    limit = int(NR_OPEN.read_text())
    return [prlimit, f"--nofile={limit}", xenstored, *args]


def bring_up(xchg: Path, cfg: dict[str, object]) -> dict[str, str]:
    """Mount what the toolstack needs and start its daemons; returns the env."""
    for d in ("/dev/pts", "/dev/shm", "/var/lib/xen", "/var/lib/xenstored",
              "/var/log/xen", protocol.CONSOLE_LOG_DIR, "/run/xen", "/run/xenstored",
              "/run/lock", "/proc/xen"):
        os.makedirs(d, exist_ok=True)
    if not os.path.lexists("/var/run"):
        os.symlink("/run", "/var/run")
    if not os.path.lexists("/var/lock"):
        os.symlink("/run/lock", "/var/lock")
    _sh(["mount", "-t", "devpts", "-o", "gid=5,mode=620,ptmxmode=666", "devpts", "/dev/pts"])
    _sh(["mount", "-t", "tmpfs", "tmpfs", "/dev/shm"])
    _sh(["mount", "-t", "xenfs", "xenfs", "/proc/xen"])

    tools_root = Path(str(cfg["tools_root"]))
    shutil.rmtree("/etc/xen", ignore_errors=True)
    shutil.copytree(tools_root / "etc" / "xen", "/etc/xen", symlinks=True)

    env = toolstack_env(cfg)
    programs = dict(cfg["programs"])  # type: ignore[call-overload]
    xenstored_env = dict(env)
    if cfg.get("xs_cache"):
        # xenstored moves to the upstream socket; the proxy takes its place.
        xenstored_env["XENSTORED_PATH"] = DEFAULT_UPSTREAM
    _sh(xenstored_argv(programs["xenstored"], "--pid-file", "/run/xenstored.pid",
                       "-T", protocol.XS_TRACE), xenstored_env)
    if cfg.get("xs_cache"):
        start_xs_cache(xchg, env)
        # Every client names the proxy: one that is down is an error, never a
        # silent fallback to /dev/xen/xenbus (libxenstore's xs_open would).
        env["XENSTORED_PATH"] = DEFAULT_LISTEN
        env[protocol.ENV_XS_CACHE_CONTROL] = DEFAULT_CONTROL
    _sh([programs["xen-init-dom0"]], env)
    _sh([programs["xenconsoled"], "--log=guest", f"--log-dir={protocol.CONSOLE_LOG_DIR}",
         "--pid-file=/run/xenconsoled.pid"], env)
    return env


def start_xs_cache(xchg: Path, env: dict[str, str]) -> None:
    """Start xenstore_cache in front of the relocated xenstored; wait for its watch."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(protocol.XS_CACHE_READY)
    log = open(protocol.XS_CACHE_LOG, "ab")  # noqa: SIM115 - the daemon keeps it
    subprocess.Popen([sys.executable, "-m", "xenstore_cache", "run",
                      "--listen", DEFAULT_LISTEN, "--upstream", DEFAULT_UPSTREAM,
                      "--control", DEFAULT_CONTROL, "--ready-file", protocol.XS_CACHE_READY],
                     env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                     start_new_session=True)
    deadline = time.monotonic() + protocol.XS_CACHE_START_S
    while not os.path.exists(protocol.XS_CACHE_READY):
        if time.monotonic() > deadline:
            raise RuntimeError("xenstore-cache did not start: "
                               + Path(protocol.XS_CACHE_LOG).read_text()[-2000:])
        time.sleep(0.05)
    _log(xchg, "xenstore-cache up in front of xenstored")


#: A request's timeout when it names none, seconds.
DEFAULT_TIMEOUT_S = 600.0

#: The return code of a request refused as malformed (its reason on stderr).
BAD_REQUEST_RC = 2


def check_request(req: object) -> str | None:
    """Why ``req`` (a decoded request) cannot be run, or None when it can:
    the power-off op, or a non-empty ``argv`` list, and ``timeout`` (if
    given) a positive finite number, ``env`` an object, ``cwd`` a string."""
    if not isinstance(req, dict):
        return f"a request is a JSON object, not {type(req).__name__}"
    if req.get("op") == "poweroff":
        return None
    argv = req.get("argv")
    if not isinstance(argv, list) or not argv:
        return f"argv must be a non-empty list, got {argv!r}"
    timeout = req.get("timeout")
    if timeout is not None and (isinstance(timeout, bool)
                                or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        return f"timeout must be a positive finite number of seconds, got {timeout!r}"
    if req.get("env") is not None and not isinstance(req["env"], dict):
        return f"env must be an object, got {req['env']!r}"
    if req.get("cwd") is not None and not isinstance(req["cwd"], str):
        return f"cwd must be a string, got {req['cwd']!r}"
    return None


def refuse(xchg: Path, rid: str, reason: str) -> dict[str, object]:
    """The response to a malformed request: its reason on the request's
    stderr, return code BAD_REQUEST_RC."""
    out = xchg / protocol.OUT_DIR / rid
    (out / "files").mkdir(parents=True, exist_ok=True)
    (out / "stdout").write_bytes(b"")
    (out / "stderr").write_text(f"pyxen-agent: bad request {rid}: {reason}\n")
    return {"returncode": BAD_REQUEST_RC, "timed_out": False, "elapsed_s": 0.0}


def run_request(xchg: Path, rid: str, req: dict[str, object],
                base_env: dict[str, str]) -> dict[str, object]:
    out = xchg / protocol.OUT_DIR / rid
    files = out / "files"
    files.mkdir(parents=True, exist_ok=True)
    env = dict(base_env)
    env.update({str(k): str(v) for k, v in dict(req.get("env") or {}).items()})  # type: ignore[call-overload]
    env[protocol.ENV_OUT] = str(files)
    argv = [str(a) for a in req["argv"]]  # type: ignore[attr-defined]
    raw_timeout = req.get("timeout")   # checked by check_request
    timeout = DEFAULT_TIMEOUT_S if raw_timeout is None else float(raw_timeout)  # type: ignore[arg-type]
    start = time.monotonic()
    timed_out = False
    with (out / "stdout").open("wb") as so, (out / "stderr").open("wb") as se:
        try:
            proc = subprocess.Popen(argv, stdout=so, stderr=se, stdin=subprocess.DEVNULL,
                                    env=env, cwd=str(req.get("cwd") or "/root"),
                                    start_new_session=True)
        except OSError as exc:
            se.write(f"pyxen-agent: cannot run {argv[0]}: {exc}\n".encode())
            return {"returncode": 127, "timed_out": False, "elapsed_s": 0.0}
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
    return {"returncode": rc, "timed_out": timed_out,
            "elapsed_s": time.monotonic() - start}


def serve(xchg: Path, env: dict[str, str]) -> None:
    req_dir = xchg / protocol.REQ_DIR
    rsp_dir = xchg / protocol.RSP_DIR
    while True:
        pending = sorted(p for p in req_dir.glob("*.json"))
        if not pending:
            time.sleep(protocol.POLL_INTERVAL_S)
            continue
        for path in pending:
            rid = path.stem
            try:
                text = path.read_bytes().decode()
                req = json.loads(text)
                reason = check_request(req)
            except (ValueError, OverflowError) as exc:   # not UTF-8 JSON; a huge number
                req, reason = None, f"not a request: {exc}"
            finally:
                path.unlink()
            if reason is not None:
                _log(xchg, f"refused {rid}: {reason}")
                rsp = refuse(xchg, rid, reason)
            elif req.get("op") == "poweroff":
                _log(xchg, "poweroff requested")
                return
            else:
                _log(xchg, f"run {rid}: {req.get('argv')}")
                rsp = run_request(xchg, rid, req, env)
                _log(xchg, f"done {rid}: {rsp}")
            tmp = rsp_dir / f"{rid}.tmp"
            tmp.write_text(json.dumps(rsp))
            tmp.rename(rsp_dir / f"{rid}.json")


def main(argv: list[str]) -> int:
    xchg = Path(argv[0]) if argv else Path("/xchg")
    for d in (protocol.REQ_DIR, protocol.RSP_DIR, protocol.OUT_DIR):
        (xchg / d).mkdir(exist_ok=True)
    try:
        cfg = json.loads((xchg / protocol.CONFIG).read_text())
        env = bring_up(xchg, cfg)
    except Exception:  # noqa: BLE001 - any setup failure goes to the host, then power off
        (xchg / protocol.FAILED).write_text(traceback.format_exc())
        _log(xchg, "setup failed:\n" + traceback.format_exc())
        return 1
    _log(xchg, "toolstack up")
    (xchg / protocol.READY).write_text(json.dumps({"pid": os.getpid()}))
    serve(xchg, env)
    os.sync()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
