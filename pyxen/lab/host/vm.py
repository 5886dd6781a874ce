"""Booting a staged Xen nested in QEMU (TCG) and running commands in its dom0."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pyxen
from pyxen.lab.contract import protocol
from pyxen.lab.contract.errors import (
    BootError,
    BootTimeout,
    Dom0Timeout,
    LabError,
    MissingHostPackage,
)
from pyxen.lab.host import hostdeps, paths, progress, sources
from pyxen.lab.host.initramfs import build_initramfs
from pyxen.lab.host.ram_backing import read_backing
from pyxen.lab.host.vm_options import DOM0_CMDLINE, VMOptions, check_qemu_path
from pyxen.lab.host.xenbuild import StagedBuild

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"

#: Seconds a VM gets to power off before it is killed.
SHUTDOWN_GRACE_S = 60.0

def qemu_argv(xen: Path, vmlinuz: Path, initramfs: Path, options: VMOptions,
              xchg: Path, serial_log: Path) -> list[str]:
    """The QEMU command line (pure: no side effects, so it can be tested)."""
    options.validate()
    for p, what in ((xen, "the hypervisor image"), (vmlinuz, "the dom0 kernel"),
                    (initramfs, "the initramfs"), (xchg, "the exchange directory"),
                    (serial_log, "the serial log")):
        check_qemu_path(p, what)
    argv = [
        QEMU, *options.accel_argv(), "-cpu", "max",
        "-smp", str(options.cpus), "-m", str(options.memory_mib),
        "-nodefaults", "-display", "none", "-vga", "none", "-monitor", "none",
        "-no-reboot",
        "-serial", f"file:{serial_log}",
        "-kernel", str(xen),
        "-append", " ".join(options.xen_cmdline_words()),
        # Multiboot modules: dom0 kernel with its command line, then the initramfs.
        "-initrd", f"{vmlinuz} {DOM0_CMDLINE.replace(',', ',,')},{initramfs}",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=xchg,path={xchg},security_model=none",
        "-device", "virtio-9p-pci,fsdev=xchg,mount_tag=xchg",
    ]
    if options.numa_nodes > 1:
        per_cpu = options.cpus // options.numa_nodes
        per_mem = options.memory_mib // options.numa_nodes
        for n in range(options.numa_nodes):
            argv += ["-object", f"memory-backend-ram,id=m{n},size={per_mem}M",
                     "-numa", (f"node,nodeid={n},cpus={n * per_cpu}-{(n + 1) * per_cpu - 1},"
                               f"memdev=m{n}")]
    return argv


def dom0_binds(extra: list[Path]) -> list[str]:
    """Host paths dom0 needs at the same place: the Python running the lab, the
    pyxen package, the lab cache (staged builds).  /usr is always bound."""
    wanted = [Path(sys.base_prefix), Path(sys.prefix), Path(sys.exec_prefix),
              Path(pyxen.__file__).resolve().parents[1], paths.cache_root(), *extra]
    out: list[str] = []
    for p in sorted({q.resolve() for q in wanted}, key=lambda q: len(q.parts)):
        s = str(p)
        if s == "/" or s == "/usr" or s.startswith("/usr/"):
            continue
        if any(s == o or s.startswith(o + "/") for o in out):
            continue
        out.append(s)
    return out


def qemu_processes(run_dir: Path | str) -> list[int]:
    """PIDs of QEMU processes whose command line names ``run_dir`` (each VM's
    command line holds its own run directory): how to check none is left."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if QEMU in cmdline and str(run_dir) in cmdline:
            pids.append(int(proc.name))
    return pids


#: Boots tried before a hang is reported (see Dom0.start).
BOOT_ATTEMPTS = 2


@dataclass
class Dom0Result:
    """What a dom0 command did: exit status, output, and its handed-back files."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    files: Path
    elapsed_s: float

    def check(self) -> Dom0Result:
        if self.returncode != 0:
            raise LabError(f"dom0 command {self.argv!r} exited {self.returncode}:\n"
                           f"{self.stderr.strip()[-2000:]}")
        return self

    def json_file(self, name: str, what: str,
                  ok_codes: tuple[int, ...] = (0,)) -> dict[str, Any]:
        """The JSON object the command handed back as ``name``; LabError
        naming ``what`` (and the command's stderr) if it exited with a code
        not in ``ok_codes`` or left no such file, or one that is not a JSON
        object (a driver killed while it wrote it)."""
        path = self.files / name
        if self.returncode not in ok_codes or not path.exists():
            raise LabError(f"{what} failed in dom0 ({self.returncode}):\n"
                           f"{self.stderr[-3000:]}")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:   # UnicodeDecodeError is a ValueError
            raise LabError(f"{what}: cannot read {name} ({exc}); dom0 exited "
                           f"{self.returncode}:\n{self.stderr[-3000:]}") from None
        if not isinstance(data, dict):
            raise LabError(f"{what}: {name} holds {type(data).__name__}, not an object")
        return data


class Dom0:
    """A nested Xen booted with a staged build; ``run`` executes in its dom0.

    Use as a context manager: the VM is always powered off or killed on exit,
    also on errors and Ctrl-C, so no QEMU is left behind.
    """

    def __init__(self, build: StagedBuild, options: VMOptions | None = None,
                 run_dir: Path | None = None, extra_binds: list[Path] | None = None) -> None:
        self.build = build
        self.options = options or VMOptions()
        self.options.validate()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = run_dir or paths.runs_dir() / f"{stamp}-{build.variant.name}-{os.getpid()}"
        self.xchg = self.run_dir / "xchg"
        self.serial_log = self.run_dir / "serial.log"
        self.extra_binds = extra_binds or []
        self._proc: subprocess.Popen[bytes] | None = None
        self._next_id = 0

    # -- lifecycle -------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.shutdown()
        else:
            self.kill()

    def _prepare(self) -> list[str]:
        if shutil.which(QEMU) is None:
            raise MissingHostPackage([hostdeps.QEMU_PACKAGE])
        kernel = sources.dom0_kernel()
        initrd = build_initramfs(kernel, paths.kernel_dir())
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        (self.xchg / protocol.LAB_DIR).mkdir(parents=True)
        (self.xchg / protocol.BOOT_PYTHON).write_text(sys.executable)
        (self.xchg / protocol.BOOT_BINDS).write_text(
            "".join(p + "\n" for p in dom0_binds(self.extra_binds)))
        (self.xchg / protocol.BOOT_PYTHONPATH).write_text(
            str(Path(pyxen.__file__).resolve().parents[1]))
        (self.xchg / protocol.CONFIG).write_text(json.dumps({
            "tools_root": str(self.build.tools_root),
            "programs": dict(self.build.programs),
            "library_dirs": list(self.build.library_dirs),
            "native": str(self.build.native),
            "xs_domain_preload": str(self.build.xs_domain_preload),
            "xs_cache": self.options.xs_cache,
            "lib_cache": self.options.lib_cache,
        }, indent=2))
        return qemu_argv(self.build.xen, kernel.vmlinuz, initrd, self.options,
                         self.xchg, self.serial_log)

    def start(self) -> None:
        """Boot and wait until dom0's toolstack is up (BootError otherwise).

        A boot that hangs (dom0 not up within the boot timeout, with no
        failure seen) is tried again, BOOT_ATTEMPTS times in all: under QEMU
        TCG, dom0's kernel now and then stops making progress early in its
        boot, on stock builds as on patched ones.  The hung attempt's run
        directory is kept beside the new one (``<run_dir>-hung<N>``)."""
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            try:
                self._start_once()
                return
            except BootTimeout as exc:
                self.kill()
                if attempt == BOOT_ATTEMPTS:
                    raise
                hung = self.run_dir.with_name(f"{self.run_dir.name}-hung{attempt}")
                shutil.rmtree(hung, ignore_errors=True)
                self.run_dir.rename(hung)
                log.warning("%s (boot attempt %d of %d): booting again; the hung boot "
                            "is kept in %s", exc.reason, attempt, BOOT_ATTEMPTS, hung)

    def _start_once(self) -> None:
        argv = self._prepare()
        log.debug("qemu: %s", " ".join(argv))
        (self.run_dir / "qemu.cmdline").write_text(" ".join(argv) + "\n")
        # QEMU writes its stderr through its own copy of the descriptor:
        # ours is closed once it has started.
        with (self.run_dir / "qemu.stderr").open("wb") as stderr:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=stderr,
                                          start_new_session=True)
        log.info("booting (%s)", self.run_dir)
        started = time.monotonic()
        deadline = started + self.options.boot_timeout_s
        ready, failed = self.xchg / protocol.READY, self.xchg / protocol.FAILED
        while True:
            if ready.exists():
                variant = self.build.variant
                progress.record_step(
                    f"boot of '{variant.name}'{' (debug)' if variant.debug else ''} "
                    f"to dom0 up ({self.run_dir.name})", time.monotonic() - started)
                return
            if failed.exists():
                raise BootError("dom0 toolstack setup failed:\n" + failed.read_text(),
                                self.serial_tail())
            if self._proc.poll() is not None:
                err = (self.run_dir / "qemu.stderr").read_text(errors="replace").strip()
                raise BootError(f"QEMU exited with status {self._proc.returncode} before "
                                f"dom0 was up{': ' + err if err else ''}", self.serial_tail())
            if time.monotonic() > deadline:
                raise BootTimeout(f"dom0 not up after {self.options.boot_timeout_s:g} s",
                                  self.serial_tail())
            time.sleep(protocol.POLL_INTERVAL_S * 4)

    def serial_tail(self, lines: int = 40) -> str:
        try:
            text = self.serial_log.read_text(errors="replace")
        except OSError:
            return "(no serial log)"
        return "\n".join(text.replace("\r", "").splitlines()[-lines:])

    def kill(self) -> None:
        """Kill QEMU now (idempotent)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def shutdown(self) -> None:
        """Ask dom0 to power off; kill QEMU if it has not ended within the grace time."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self._submit({"op": "poweroff"})
        try:
            proc.wait(timeout=SHUTDOWN_GRACE_S)
        except subprocess.TimeoutExpired:
            log.warning("VM did not power off within %g s: killing it", SHUTDOWN_GRACE_S)
            self.kill()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ram_backing(self) -> dict[str, float] | None:
        """How much of QEMU's resident memory is in host huge pages now
        (see :mod:`pyxen.lab.host.ram_backing`); None if QEMU is not running."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        return read_backing(proc.pid, self.options.memory_mib)

    # -- commands ----------------------------------------------------------
    def share(self, name: str, text: str) -> str:
        """Put a file in the exchange share; returns its path as dom0 sees it."""
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"share name must be a plain file name, got {name!r}")
        d = self.xchg / protocol.SHARE_DIR
        d.mkdir(exist_ok=True)
        (d / name).write_text(text)
        return f"{protocol.DOM0_XCHG}/{protocol.SHARE_DIR}/{name}"

    def _submit(self, req: dict[str, object]) -> str:
        self._next_id += 1
        rid = f"{self._next_id:06d}"
        tmp = self.xchg / protocol.REQ_DIR / f"{rid}.tmp"
        tmp.parent.mkdir(exist_ok=True)
        tmp.write_text(json.dumps(req))
        tmp.rename(tmp.with_suffix(".json"))
        return rid

    def run(self, argv: list[str], timeout: float = 600.0,
            env: dict[str, str] | None = None, check: bool = False,
            on_poll: Callable[[Path], None] | None = None) -> Dom0Result:
        """Run ``argv`` in dom0 and return its status, output and files.

        Past ``timeout`` seconds the VM is killed and Dom0Timeout raised.
        ``on_poll`` is called with the command's output directory while it runs
        (to show progress the command writes there).
        """
        if not self.alive:
            raise LabError("the VM is not running:\n" + self.serial_tail())
        rid = self._submit({"argv": argv, "timeout": timeout, "env": env or {}})
        rsp = self.xchg / protocol.RSP_DIR / f"{rid}.json"
        deadline = time.monotonic() + timeout + 30.0  # the agent enforces `timeout`
        while not rsp.exists():
            if not self.alive:
                raise BootError(f"the VM died while running {argv!r}", self.serial_tail())
            if time.monotonic() > deadline:
                self.kill()
                raise Dom0Timeout(argv, timeout)
            if on_poll is not None:
                on_poll(self.xchg / protocol.OUT_DIR / rid / "files")
            time.sleep(protocol.POLL_INTERVAL_S)
        result = json.loads(rsp.read_text())
        out = self.xchg / protocol.OUT_DIR / rid
        if result["timed_out"]:
            self.kill()
            raise Dom0Timeout(argv, timeout)
        res = Dom0Result(
            argv=argv,
            returncode=int(result["returncode"]),
            stdout=(out / "stdout").read_text(errors="replace"),
            stderr=(out / "stderr").read_text(errors="replace"),
            files=out / "files",
            elapsed_s=float(result["elapsed_s"]),
        )
        return res.check() if check else res


class SharedDom0:
    """One boot of a build for several users in turn (tests sharing a VM):
    ``get`` boots on first use and boots again only if the VM has ended
    (a command past its timeout kills it, or it died); ``close`` powers it
    off.  A user that needs a VM of its own makes a ``Dom0``."""

    def __init__(self, build: StagedBuild, options: VMOptions | None = None,
                 extra_binds: list[Path] | None = None) -> None:
        self.build = build
        self.options = options or VMOptions()
        self.extra_binds = extra_binds or []
        self.boots = 0
        self._vm: Dom0 | None = None

    def get(self) -> Dom0:
        if self._vm is None or not self._vm.alive:
            if self._vm is not None:
                self._vm.kill()
                self._vm = None
            vm = Dom0(self.build, self.options, extra_binds=self.extra_binds)
            vm.__enter__()   # kills what it started if the boot fails
            self._vm = vm
            self.boots += 1
        return self._vm

    def close(self) -> None:
        if self._vm is not None:
            self._vm.shutdown()
            self._vm = None
