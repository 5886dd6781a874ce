"""What the host asks of the benchmark drivers it runs in dom0: one typed,
frozen request per driver, passed as a single JSON argument.

The host builds a request (``StormRequest`` for pyxen.lab.dom0.dom0bench,
``ScrubRequest`` for pyxen.lab.dom0.scrub_dom0, ``XsLatencyRequest`` for
pyxen.lab.dom0.xslatency, ``AutoscaleRequest`` for pyxen.lab.dom0.autoscale)
and runs
``python -m pyxen.lab.dom0.<driver> --request '<request.to_json()>'``; the
driver reads it back with ``parse_request`` (``from_json``).  A request
checks its fields when built, so a bad value fails on the host, before any
VM boots, with a ValueError naming the field and the value.

The JSON carries ``"format"`` (REQUEST_FORMAT) and ``"kind"`` (which
driver), and every field: ``from_json`` rejects another format, another
kind, a missing, unknown or mistyped field, each with its own message
(host and dom0 run the same pyxen, so a mismatch is a bug, not an old file).
By hand, in the lab's dom0: print
``ScrubRequest(Path("/path/to/tinyguest"), reps=3).to_json()`` and pass it as
``--request``, quoted for the shell.
"""

from __future__ import annotations

import argparse
import json
import math
import types
from dataclasses import dataclass, fields
from pathlib import Path, PurePath
from typing import Any, ClassVar, Self, TypeVar, get_args, get_origin, get_type_hints

from pyxen.lab.contract import protocol

#: The requests' JSON format; from_json reads this one only.
REQUEST_FORMAT = 1


class _Mistyped(Exception):
    """A value that is not of (and does not convert to) a field's type."""


def _type_name(tp: Any) -> str:
    if get_origin(tp) is types.UnionType:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in get_args(tp))
    if get_origin(tp) is tuple:
        return f"a list of {_type_name(get_args(tp)[0])}"
    return {int: "int", float: "float", str: "str", bool: "bool",
            Path: "path (str)"}.get(tp, str(tp))


def _coerce(tp: Any, value: Any) -> Any:
    """``value`` as a field of type ``tp`` holds it: a JSON list becomes a
    tuple, an int a float where a float is wanted, a str a Path; anything
    else of the wrong type (a bool for an int, too, and only a bool for a
    bool) raises _Mistyped."""
    if get_origin(tp) is types.UnionType:
        if value is None and type(None) in get_args(tp):
            return None
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return _coerce(inner, value)
    if get_origin(tp) is tuple:
        if not isinstance(value, list | tuple):
            raise _Mistyped
        return tuple(_coerce(get_args(tp)[0], v) for v in value)
    if tp is bool and isinstance(value, bool):
        return value
    if isinstance(value, bool) or tp is bool:
        raise _Mistyped
    if tp is float and isinstance(value, int | float):
        return float(value)
    if tp is Path and isinstance(value, str | PurePath):
        return Path(value)
    if tp in (int, str) and isinstance(value, tp):
        return value
    raise _Mistyped


class RequestFieldError(ValueError):
    """A request's field of the wrong type or value: ``request`` (its class
    name), ``field``, and ``problem`` ("must be ..., got ...")."""

    def __init__(self, request: str, field: str, problem: str) -> None:
        super().__init__(f"{request}.{field} {problem}")
        self.request, self.field, self.problem = request, field, problem


@dataclass(frozen=True)
class DriverRequest:
    """What every driver request shares: field types enforced on
    construction, the value checks of ``check``, and the JSON round trip."""

    #: The driver the request is for ("kind" in its JSON).
    KIND: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            try:
                object.__setattr__(self, f.name, _coerce(hints[f.name], value))
            except _Mistyped:
                raise RequestFieldError(type(self).__name__, f.name,
                                        f"must be {_type_name(hints[f.name])}, "
                                        f"got {value!r}") from None
        self.check()

    def check(self) -> None:
        """Check the values (their types already are): ValueError via ``require``."""

    def require(self, name: str, ok: bool, what: str) -> None:
        """Unless ``ok``: RequestFieldError naming the field, what it must be,
        and its value."""
        if not ok:
            raise RequestFieldError(type(self).__name__, name,
                                    f"must be {what}, got {getattr(self, name)!r}")

    def to_json(self) -> str:
        doc: dict[str, Any] = {"format": REQUEST_FORMAT, "kind": self.KIND}
        for f in fields(self):
            value = getattr(self, f.name)
            doc[f.name] = str(value) if isinstance(value, PurePath) else value
        return json.dumps(doc, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Self:
        """The request ``to_json`` wrote; ValueError saying what is wrong otherwise."""
        name = cls.__name__
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{name}: not JSON ({exc}): {text[:200]!r}") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{name}: expected a JSON object, got {text[:200]!r}")
        fmt = doc.pop("format", None)
        if fmt is None:
            raise ValueError(f"{name}: no \"format\" in the request (this pyxen reads "
                             f"format {REQUEST_FORMAT})")
        if type(fmt) is int and fmt > REQUEST_FORMAT:
            raise ValueError(f"{name}: request format {fmt} is newer than this pyxen reads "
                             f"({REQUEST_FORMAT}): do host and dom0 run the same pyxen?")
        if type(fmt) is not int or fmt != REQUEST_FORMAT:
            raise ValueError(f"{name}: unknown request format {fmt!r} (this pyxen reads "
                             f"format {REQUEST_FORMAT})")
        kind = doc.pop("kind", None)
        if kind != cls.KIND:
            raise ValueError(f"{name}: a request of kind {kind!r}, expected {cls.KIND!r}")
        names = [f.name for f in fields(cls)]
        problems = []
        if missing := [n for n in names if n not in doc]:
            problems.append("missing field(s) " + ", ".join(missing))
        if unknown := sorted(set(doc) - set(names)):
            problems.append("unknown field(s) " + ", ".join(unknown))
        if problems:
            raise ValueError(f"{name}: " + "; ".join(problems))
        return cls(**doc)


R = TypeVar("R", bound=DriverRequest)


def parse_request(cls: type[R], argv: list[str] | None, prog: str) -> R:
    """A driver's command line, ``--request JSON``: the request (an argparse
    error, exit 2, naming what is wrong otherwise)."""
    ap = argparse.ArgumentParser(prog=prog, description=f"run one {cls.__name__} "
                                 "(built by the host: pyxen.lab.contract.requests)")
    ap.add_argument("--request", required=True, metavar="JSON",
                    help=f"{cls.__name__}.to_json()")
    args = ap.parse_args(argv)
    try:
        return cls.from_json(args.request)
    except ValueError as exc:
        ap.error(str(exc))


def _is_word(text: str) -> bool:
    """Non-empty, without whitespace (a domain name prefix)."""
    return bool(text) and not any(c.isspace() for c in text)


@dataclass(frozen=True)
class StormRequest(DriverRequest):
    """One boot storm (pyxen.lab.dom0.dom0bench): ``guests`` tiny guests of
    ``memory_mib``, at most ``concurrency`` creates in flight, through
    ``driver``, named ``prefix<i>``; with ``running`` other idle guests
    (named ``prefix r<i>``, created the same way) up for the whole storm."""

    KIND: ClassVar[str] = "storm"

    guests: int
    concurrency: int
    kernel: Path              # the tiny guest; the same path on the host and in dom0
    memory_mib: int = 16
    driver: str = protocol.STORM_DRIVER_DEFAULT
    prefix: str = "bench-"
    running: int = 0
    #: Keep xenstored's trace on in the timed storm too (its times then
    #: include the trace's cost) and count what it did (``timed_counts``).
    trace_timed: bool = False

    def check(self) -> None:
        self.require("guests", self.guests >= 1, ">= 1")
        self.require("running", self.running >= 0, ">= 0")
        self.require("concurrency", 1 <= self.concurrency <= self.guests,
                     f"1..guests ({self.guests})")
        self.require("kernel", self.kernel.is_absolute(), "an absolute path")
        self.require("memory_mib", self.memory_mib >= protocol.MIN_GUEST_MIB,
                     f">= {protocol.MIN_GUEST_MIB}")
        self.require("driver", self.driver in protocol.STORM_DRIVERS,
                     f"one of {protocol.STORM_DRIVERS}")
        self.require("prefix", _is_word(self.prefix), "a non-empty word")


@dataclass(frozen=True)
class ScrubRequest(DriverRequest):
    """The birth-after-death benchmark (pyxen.lab.dom0.scrub_dom0, whose
    docstring says what it does with each field)."""

    KIND: ClassVar[str] = "scrub"

    kernel: Path              # the tiny guest; the same path on the host and in dom0
    gaps: tuple[float, ...] = protocol.SCRUB_GAPS_DEFAULT    # s between death and birth
    guest_mib: int = 512
    sizes: tuple[int, ...] = protocol.SCRUB_SIZES_DEFAULT    # MiB, for time to clean
    clean_timeout: float = 60.0
    prefix: str = "bad-"
    spinners: int | None = None   # spinning guests in all; None: one per pCPU
    spinner_weight: int | None = None   # their scheduler weight; None: the scheduler's default
    fill: str = protocol.SCRUB_FILL_DEFAULT
    dma_bits: int | None = None   # Xen's DMA width, to leave the DMA pool out of the fill
    reps: int = 1                 # repetitions of every gap, interleaved
    size_reps: int = 1            # repetitions of every size, interleaved
    scrub_policy: str = protocol.SCRUB_POLICY_DEFAULT   # set before the runs, where Xen can

    def check(self) -> None:
        self.require("kernel", self.kernel.is_absolute(), "an absolute path")
        self.require("gaps", bool(self.gaps) and all(
            0 <= g <= protocol.SCRUB_MAX_GAP_S for g in self.gaps),
            f"one or more seconds, each 0..{protocol.SCRUB_MAX_GAP_S:g}")
        self.require("guest_mib", self.guest_mib >= protocol.MIN_GUEST_MIB,
                     f">= {protocol.MIN_GUEST_MIB}")
        self.require("sizes", bool(self.sizes) and min(self.sizes) >= protocol.MIN_GUEST_MIB,
                     f"one or more MiB, each >= {protocol.MIN_GUEST_MIB}")
        self.require("clean_timeout", math.isfinite(self.clean_timeout)
                     and self.clean_timeout > 0, "> 0 s")
        self.require("prefix", _is_word(self.prefix), "a non-empty word")
        self.require("spinners", self.spinners is None or self.spinners >= 0,
                     ">= 0 or null")
        # (the scheduler's upper bound is pyxen.config's, checked on the host)
        self.require("spinner_weight", self.spinner_weight is None or self.spinner_weight >= 1,
                     ">= 1 or null")
        self.require("fill", self.fill in protocol.SCRUB_FILLS,
                     f"one of {protocol.SCRUB_FILLS}")
        self.require("dma_bits", self.dma_bits is None or 1 <= self.dma_bits <= 64,
                     "1..64 or null")
        self.require("reps", self.reps >= 1, ">= 1")
        self.require("size_reps", self.size_reps >= 1, ">= 1")
        self.require("scrub_policy", self.scrub_policy in protocol.SCRUB_POLICIES,
                     f"one of {protocol.SCRUB_POLICIES}")


@dataclass(frozen=True)
class XsLatencyRequest(DriverRequest):
    """Xenstore read latency against idle connections
    (pyxen.lab.dom0.xslatency): for each of ``rounds`` rounds and each count
    of ``idle``, that many idle libxenstore connections are held open while
    ``reads`` reads of ``path`` are timed through one more, then ``misses``
    reads of nodes not read before (made for the batch, removed after it),
    then ``writes`` writes of ``path``'s own value (0: none of either).  The
    strace pass counts ``syscall_reads`` reads, and as many misses and
    writes when those are timed."""

    KIND: ClassVar[str] = "xslatency"

    idle: tuple[int, ...] = protocol.XS_IDLE_DEFAULT
    reads: int = protocol.XS_READS_DEFAULT
    rounds: int = protocol.XS_ROUNDS_DEFAULT
    path: str = protocol.XS_READ_PATH
    syscall_reads: int = protocol.XS_SYSCALL_READS_DEFAULT  # 0: no strace pass
    writes: int = 0
    misses: int = 0

    def check(self) -> None:
        self.require("idle", bool(self.idle) and len(set(self.idle)) == len(self.idle)
                     and all(0 <= n <= protocol.XS_MAX_IDLE for n in self.idle),
                     f"one or more distinct counts, each 0..{protocol.XS_MAX_IDLE}")
        self.require("reads", self.reads >= 10, ">= 10")
        self.require("rounds", self.rounds >= 1, ">= 1")
        self.require("syscall_reads", self.syscall_reads == 0 or self.syscall_reads >= 10,
                     "0 or >= 10")
        self.require("writes", self.writes == 0 or self.writes >= 10, "0 or >= 10")
        self.require("misses", self.misses == 0 or 10 <= self.misses <= protocol.XS_MAX_MISSES,
                     f"0 or 10..{protocol.XS_MAX_MISSES}")
        self.require("syscall_reads", not self.misses
                     or self.syscall_reads <= protocol.XS_MAX_MISSES,
                     f"at most {protocol.XS_MAX_MISSES} with misses (as many are made)")
        self.require("path", self.path.startswith("/") and "\0" not in self.path,
                     "an absolute Xenstore path")


#: The most creating threads a DomctlRequest may ask for (each has a block of
#: protocol.DOMCTL_IDS_PER_CREATOR domain IDs).
DOMCTL_CREATORS_MAX = 16


@dataclass(frozen=True)
class DomctlRequest(DriverRequest):
    """Exclusive domctls against domain creation (pyxen.lab.dom0.domctlfair):
    in each of ``rounds`` rounds, ``probes`` pause/unpause pairs of an empty
    domain are timed with nothing else running, then again while
    ``creators`` threads create and destroy empty domains, ``readers``
    threads read domain information, and ``stubs`` Xenstore stub domains
    (pyxen.lab.dom0.xsstub: the tiny guest ``kernel``, holding XSM_XS_PRIV)
    issue the domctls they may, as fast as they can; the stubs are paused
    while the idle probes run."""

    KIND: ClassVar[str] = "domctl"

    creators: int = protocol.DOMCTL_CREATORS_DEFAULT
    readers: int = protocol.DOMCTL_READERS_DEFAULT
    probes: int = protocol.DOMCTL_PROBES_DEFAULT
    rounds: int = protocol.DOMCTL_ROUNDS_DEFAULT
    stubs: int = 0
    kernel: Path | None = None   # the tiny guest (for stubs); the same path in dom0

    def check(self) -> None:
        self.require("creators", 0 <= self.creators <= DOMCTL_CREATORS_MAX,
                     f"0..{DOMCTL_CREATORS_MAX}")
        self.require("readers", 0 <= self.readers <= 16, "0..16")
        self.require("stubs", 0 <= self.stubs <= protocol.DOMCTL_STUBS_MAX,
                     f"0..{protocol.DOMCTL_STUBS_MAX}")
        self.require("creators", self.creators + self.readers + self.stubs >= 1,
                     "at least 1 when there are no readers and no stubs (no load)")
        if self.stubs:
            self.require("kernel", self.kernel is not None and self.kernel.is_absolute(),
                         "an absolute path when there are stubs")
        self.require("probes", self.probes >= 10, ">= 10")
        self.require("rounds", self.rounds >= 1, ">= 1")


@dataclass(frozen=True)
class AutoscaleRequest(DriverRequest):
    """A trace replayed on an autoscaler (pyxen.lab.dom0.autoscale):
    invocation n of function ``funcs[n]`` arrives ``starts[n]`` s after the
    replay starts and keeps an instance of its function (one tiny guest of
    ``memory_mib``, named ``prefix<instance>``) busy for ``durations[n]`` s;
    idle instances live ``keep_alive_s``; at most ``max_inflight`` creates
    and destroys at once, through ``driver``.  Load: ``running`` other idle
    guests, and ``spinners_per_cpu`` spinning guests per pCPU."""

    KIND: ClassVar[str] = "autoscale"

    kernel: Path              # the tiny guest; the same path on the host and in dom0
    funcs: tuple[int, ...]
    starts: tuple[float, ...]
    durations: tuple[float, ...]
    keep_alive_s: float = 60.0
    memory_mib: int = 128
    max_inflight: int = 8
    driver: str = protocol.STORM_DRIVER_DEFAULT
    running: int = 0
    spinners_per_cpu: int = 0
    prefix: str = "fn-"

    def check(self) -> None:
        self.require("kernel", self.kernel.is_absolute(), "an absolute path")
        n = len(self.funcs)
        self.require("funcs", n >= 1 and min(self.funcs) >= 0,
                     "one or more function indexes, each >= 0")
        self.require("starts", len(self.starts) == n
                     and all(math.isfinite(s) and s >= 0 for s in self.starts)
                     and list(self.starts) == sorted(self.starts),
                     f"{n} ascending finite times >= 0 (one per function index)")
        self.require("durations", len(self.durations) == n
                     and all(math.isfinite(d) and d >= 0 for d in self.durations),
                     f"{n} finite durations >= 0 (one per function index)")
        self.require("keep_alive_s", math.isfinite(self.keep_alive_s)
                     and self.keep_alive_s >= 0, "a finite number of seconds >= 0")
        self.require("memory_mib", self.memory_mib >= protocol.MIN_GUEST_MIB,
                     f">= {protocol.MIN_GUEST_MIB}")
        self.require("max_inflight", self.max_inflight >= 1, ">= 1")
        self.require("driver", self.driver in protocol.STORM_DRIVERS,
                     f"one of {protocol.STORM_DRIVERS}")
        self.require("running", self.running >= 0, ">= 0")
        self.require("spinners_per_cpu", self.spinners_per_cpu >= 0, ">= 0")
        self.require("prefix", _is_word(self.prefix), "a non-empty word")
