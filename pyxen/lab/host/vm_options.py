"""Options of the nested VM and the Xen/dom0 command lines they produce."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pyxen.lab.contract.errors import LabError

#: Xen options that must always be there under TCG: without smap=0 smep=0,
#: dom0 dies at its first instruction with a page fault (#PF) on its own stack.
XEN_BASE_CMDLINE = ("console=com1", "com1=115200,8n1", "smap=0", "smep=0",
                    "loglvl=all", "guest_loglvl=all")

#: dom0 Linux command line: console through Xen, our init, reboot on panic
#: (so a dead dom0 ends QEMU instead of hanging).
DOM0_CMDLINE = "console=hvc0 earlyprintk=xen rdinit=/init panic=-1"

#: Largest ``icount_shift``: at 2**10 ns per instruction the virtual machine
#: runs at under a million instructions per second, too slow to boot dom0.
ICOUNT_SHIFT_MAX = 10


def check_qemu_path(path: Path, what: str) -> None:
    """A file or directory QEMU is given on its command line (or one under
    ``path``) must hold no comma and no whitespace: -fsdev splits its options
    at commas, and QEMU's multiboot loader takes a module's file name up to
    its first space (what follows is the module's command line)."""
    text = str(path)
    reason = ("a comma" if "," in text else
              "whitespace" if any(c.isspace() for c in text) else None)
    if reason is not None:
        raise LabError(f"{what} {text!r} holds {reason}: QEMU cannot take such a path "
                       f"on its command line (move it, or set PYXEN_CACHE to another "
                       f"directory)")


@dataclass(frozen=True)
class VMOptions:
    """How to boot the nested Xen.  ``validate`` names any bad value."""

    cpus: int = 2                  # QEMU vCPUs (Xen's pCPUs)
    memory_mib: int = 3072         # QEMU memory (Xen's RAM)
    dom0_vcpus: int = 2
    dom0_mem_mib: int | None = 1024  # None: no dom0_mem (autoballoon mode)
    numa_nodes: int = 1
    xen_cmdline: tuple[str, ...] = field(default=())  # extra Xen options
    boot_timeout_s: float = 300.0
    xs_cache: bool = False           # dom0 runs xenstore_cache in front of xenstored
    lib_cache: bool = False          # the toolstack reads through libxenstore's cache
    #: None: multi-threaded TCG, times are host time.  N: QEMU's instruction
    #: counter (-icount shift=N,sleep=off), one vCPU thread: the guest's clock
    #: advances 2**N ns per instruction executed and jumps over idle time, so
    #: what Xen and dom0 time is instructions, whatever the host's speed or
    #: load (vCPUs take turns, so a spinning waiter's instructions count).
    icount_shift: int | None = None

    def validate(self, names: Mapping[str, str] | None = None) -> None:
        """ValueError naming the first bad value: by its field, or by what
        ``names`` calls that field (the lab's CLI: its options)."""
        def n(f: str) -> str:
            return (names or {}).get(f, f)

        if self.cpus < 1 or self.cpus > 64:
            raise ValueError(f"{n('cpus')} must be 1..64, got {self.cpus}")
        if self.memory_mib < 512:
            raise ValueError(f"{n('memory_mib')} must be >= 512, got {self.memory_mib}")
        if self.dom0_vcpus < 1 or self.dom0_vcpus > self.cpus:
            raise ValueError(f"{n('dom0_vcpus')} must be 1..{n('cpus')} ({self.cpus}), "
                             f"got {self.dom0_vcpus}")
        if self.dom0_mem_mib is not None and not (
                256 <= self.dom0_mem_mib <= self.memory_mib - 128):
            raise ValueError(
                f"{n('dom0_mem_mib')} must be 256..{self.memory_mib - 128} "
                f"({n('memory_mib')} - 128), got {self.dom0_mem_mib}")
        if self.numa_nodes < 1:
            raise ValueError(f"{n('numa_nodes')} must be >= 1, got {self.numa_nodes}")
        if self.numa_nodes > 1:
            if self.cpus % self.numa_nodes:
                raise ValueError(f"{n('cpus')} ({self.cpus}) must divide evenly over "
                                 f"{self.numa_nodes} NUMA nodes")
            if self.memory_mib % self.numa_nodes:
                raise ValueError(f"{n('memory_mib')} ({self.memory_mib}) must divide evenly "
                                 f"over {self.numa_nodes} NUMA nodes")
        for opt in self.xen_cmdline:
            if not opt or any(c.isspace() for c in opt):
                raise ValueError(f"Xen command-line option {opt!r} must be one word")
        if self.icount_shift is not None and not 0 <= self.icount_shift <= ICOUNT_SHIFT_MAX:
            raise ValueError(f"{n('icount_shift')} must be 0..{ICOUNT_SHIFT_MAX}, "
                             f"got {self.icount_shift}")
        # A NaN compares false with everything: "<= 0" alone lets it through.
        if not (math.isfinite(self.boot_timeout_s) and self.boot_timeout_s > 0):
            raise ValueError(f"{n('boot_timeout_s')} must be a finite number > 0, "
                             f"got {self.boot_timeout_s}")

    def record(self) -> dict[str, object]:
        """The VM as results files record it."""
        return {"cpus": self.cpus, "memory_mib": self.memory_mib,
                "dom0_vcpus": self.dom0_vcpus, "dom0_mem_mib": self.dom0_mem_mib,
                "numa_nodes": self.numa_nodes,
                "accel": "tcg" if self.icount_shift is None else "tcg-icount",
                "icount_shift": self.icount_shift}

    def accel_argv(self) -> list[str]:
        """QEMU's accelerator options: multi-threaded TCG, or single-threaded
        TCG with the instruction counter (``-icount`` rules MTTCG out)."""
        if self.icount_shift is None:
            return ["-accel", "tcg,thread=multi"]
        return ["-accel", "tcg,thread=single",
                "-icount", f"shift={self.icount_shift},sleep=off"]

    def xen_cmdline_words(self) -> list[str]:
        words = list(XEN_BASE_CMDLINE)
        words.append(f"dom0_max_vcpus={self.dom0_vcpus}")
        if self.dom0_mem_mib is not None:
            words.append(f"dom0_mem={self.dom0_mem_mib}M,max:{self.dom0_mem_mib}M")
        words.extend(self.xen_cmdline)
        return words
