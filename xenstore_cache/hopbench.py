"""The proxy's hop measured natively: the proxy in front of the model
xenstored on this host, no VM.

    python -m xenstore_cache hopbench [--iterations N] [--hit-fraction H] [--json FILE]

Three rows, each the latency of one request as a client sees it (median and
p90 in µs over ``iterations`` requests, after a warm-up, in ``rounds``
interleaved rounds so that a machine whose speed drifts affects every row
alike):

* ``direct``: READ of one node straight to the model xenstored (L_model);
* ``hit``: the same READ through the proxy, answered from its cache; the
  proxy's counters must show every one of them as a READ hit;
* ``forwarded``: the same READ through the proxy just after a WRITE of that
  node through the proxy (not timed) invalidated it, so that it misses and
  goes upstream; the counters must show every one as a forwarded READ and
  none as a hit.  Between the WRITE and the timed READ an IS_DOMAIN_INTRODUCED
  (never cached; not timed) goes through the proxy: its reply comes after
  the WRITE's watch event on the proxy's connection, so the proxy has
  handled that event before the timed READ.  Without it the model, which
  then sent a change's events after its reply (xenstored, and the model
  now, send them before it), had the proxy handle the event during a
  quarter of the timed READs in the processes layout (their fills refused),
  timing the event with the READ; it is kept as a guard.  The counters must
  show no refused fill.

A READ miss was chosen over a request the proxy never caches because it asks
the model for exactly what ``direct`` asks, so ``forwarded - direct`` leaves
the proxy's part alone; it also pays what a real miss pays (the cache
lookup, the fill ticket, the fill).  GET_PERMS is no uncacheable request
here: outside transactions this proxy caches it.  Derived:

* T_hit = median of ``hit`` (a hit replaces a whole round trip to xenstored);
* H_fwd = median of ``forwarded`` - median of ``direct`` (the hop's cost on a
  request that must reach xenstored anyway).

**Layout: three processes** (default, ``layout="processes"``): the client
(this process), the proxy (``python -m xenstore_cache run``) and the model
(``python -m xenstore_cache.model_server``) each in its own process, as in a
dom0 where ``xl``, the proxy and xenstored are separate programs.  In one
asyncio loop the client, proxy and model would never sleep: a request would
pay the proxy's Python work and socket calls but none of the wake-ups, and a
forwarded request through a real proxy makes two more of them (client ->
proxy -> xenstored -> proxy -> client against client -> xenstored -> client).
Leaving them out would flatter the proxy, so the default pays them.  The
proxy's counters come over its control socket, as ``xenstore-cache stats``
reads them.  ``layout="inprocess"`` (everything in this process's loop, as
the socket tests run it) is kept as the lower bound: the CPU cost of the hop
without wake-ups.  Both include the Python client's own cost in ``direct``
and ``hit``; H_fwd subtracts it.

**When the proxy pays** (``break_even_latency_us``).  With a fraction h of
requests hits, L a request's round trip to xenstored directly, T_hit a hit
and H_fwd the hop on a forwarded request, a request through the proxy costs
on average::

    h·T_hit + (1 - h)·(H_fwd + L)        against L directly.

The proxy pays when that is below L::

    h·T_hit + (1 - h)·H_fwd + (1 - h)·L < L
    h·T_hit + (1 - h)·H_fwd < h·L
    L > T_hit + ((1 - h) / h)·H_fwd      (h > 0)

and saves ``h·(L - T_hit) - (1 - h)·H_fwd`` per request on average
(``saving_per_request_us``).  Only the L of the requests the cache answers
(reads) enters: a forwarded request costs its own L either way, whatever
it is, plus H_fwd.  With h = 1 the break-even is T_hit; with
h <= 0 the proxy never pays (nothing is answered from the cache and every
request pays H_fwd): an error, not an infinity.  Applied to xenstored
latencies measured elsewhere (``project``), the result is a **projection**,
and labelled as such: it assumes that this host's T_hit and H_fwd stand
for the real host's, the hit fraction of the lab's domain creates, and that
a request's L does not change with the proxy in front (the proxy's one
connection is one of xenstored's connections).  T_hit here includes the
Python client's own cost, which a C client (libxenstore) does not pay: on
that count the projection is against the proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from xenstore_cache.client import WireClient
from xenstore_cache.control import SetupError, query_control
from xenstore_cache.model_server import model_behind_proxy
from xenstore_cache.server import check_writable_file
from xenstore_cache.wire import Op, Packet

Layout = Literal["processes", "inprocess"]
LAYOUTS: tuple[Layout, ...] = ("processes", "inprocess")

#: The node read: a short value, as most of a domain's nodes hold.
NODE = b"/tool/hopbench/node"
VALUE = b"/local/domain/17"
#: Hit fraction of a domain create's requests through the proxy in the lab
#: (32-guest run: patched+cache 1276 hits of 5165 requests, 0.247;
#: stock+cache 1807 of 5624, 0.321).
DEFAULT_HIT_FRACTION = 0.25
DEFAULT_ITERATIONS = 2000
DEFAULT_ROUNDS = 5
#: Read round trips of C xenstored on real hardware, from the reference
#: paper, against idle connections to it: the L of the projection.
REFERENCE_LATENCIES_US: tuple[tuple[str, float], ...] = (
    ("C xenstored read, 0 idle connections", 93.0),
    ("C xenstored read, 64 idle connections", 189.0),
    ("C xenstored read, 256 idle connections", 429.0),
    ("C xenstored read, 512 idle connections", 758.0),
)
PROJECTION = "projection"

_START_TIMEOUT_S = 20.0


class HopBenchError(Exception):
    """The measurement could not be made, or the proxy did not do what a row
    needs (a ``hit`` that was forwarded, a ``forwarded`` that hit)."""


# -- the formula ---------------------------------------------------------------

def _check_inputs(h: float, hit_us: float, hop_fwd_us: float) -> None:
    if not math.isfinite(h) or not 0.0 <= h <= 1.0:
        raise ValueError(f"hit fraction must be between 0 and 1, got {h}")
    if not math.isfinite(hit_us) or hit_us < 0:
        raise ValueError(f"hit latency must be a finite number of µs >= 0, got {hit_us}")
    if not math.isfinite(hop_fwd_us):
        raise ValueError(f"hop cost must be a finite number of µs, got {hop_fwd_us}")


def break_even_latency_us(h: float, hit_us: float, hop_fwd_us: float) -> float:
    """The xenstored round trip L above which the proxy pays:
    ``L > hit_us + ((1 - h) / h) * hop_fwd_us`` (derived in the module's
    docstring).  ``h = 1`` gives ``hit_us`` (nothing is forwarded); ``h <= 0``
    is refused: with no hits the proxy never pays, whatever L."""
    if math.isfinite(h) and h <= 0.0:
        raise ValueError(f"hit fraction {h}: with no hits the proxy never pays "
                         "(every request pays the hop); the break-even is infinite")
    _check_inputs(h, hit_us, hop_fwd_us)
    return hit_us + (1.0 - h) / h * hop_fwd_us


def saving_per_request_us(h: float, l_us: float, hit_us: float, hop_fwd_us: float) -> float:
    """What the proxy saves per request on average against L directly:
    ``L - (h*T_hit + (1-h)*(H_fwd + L)) = h*(L - T_hit) - (1-h)*H_fwd``;
    negative when it costs.  ``0 <= h <= 1``."""
    _check_inputs(h, hit_us, hop_fwd_us)
    if not math.isfinite(l_us) or l_us < 0:
        raise ValueError(f"xenstored latency must be a finite number of µs >= 0, got {l_us}")
    return h * (l_us - hit_us) - (1.0 - h) * hop_fwd_us


@dataclass(frozen=True)
class ProjectionRow:
    label: str
    l_us: float
    pays: bool
    saving_us: float
    kind: str = PROJECTION

    @property
    def saving_fraction(self) -> float:
        """The saving as a fraction of L."""
        return self.saving_us / self.l_us if self.l_us > 0 else 0.0


@dataclass(frozen=True)
class Projection:
    """Not a measurement: this host's T_hit and H_fwd applied to xenstored
    latencies measured elsewhere."""

    hit_fraction: float
    t_hit_us: float
    h_fwd_us: float
    break_even_us: float
    rows: tuple[ProjectionRow, ...]
    kind: str = PROJECTION

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["rows"] = [asdict(r) | {"saving_fraction": r.saving_fraction} for r in self.rows]
        return d


def project(t_hit_us: float, h_fwd_us: float,
            latencies: Sequence[tuple[str, float]] = REFERENCE_LATENCIES_US,
            hit_fraction: float = DEFAULT_HIT_FRACTION) -> Projection:
    """Per xenstored latency L: does the proxy pay, and what it saves per
    request on average (negative: what it costs).  A projection."""
    be = break_even_latency_us(hit_fraction, t_hit_us, h_fwd_us)
    rows = []
    for label, l_us in latencies:
        saving = saving_per_request_us(hit_fraction, l_us, t_hit_us, h_fwd_us)
        rows.append(ProjectionRow(label=label, l_us=l_us, pays=saving > 0, saving_us=saving))
    return Projection(hit_fraction=hit_fraction, t_hit_us=t_hit_us, h_fwd_us=h_fwd_us,
                      break_even_us=be, rows=tuple(rows))


# -- results -------------------------------------------------------------------

@dataclass(frozen=True)
class Latency:
    """One row: a request's latency as the client saw it."""

    median_us: float
    p90_us: float
    samples: int

    @classmethod
    def from_ns(cls, samples_ns: Sequence[int]) -> Latency:
        if not samples_ns:
            raise ValueError("no samples")
        s = sorted(samples_ns)
        p90 = s[max(0, math.ceil(0.9 * len(s)) - 1)]     # nearest rank
        return cls(median_us=statistics.median(s) / 1000.0, p90_us=p90 / 1000.0,
                   samples=len(s))


@dataclass(frozen=True)
class Counts:
    """The proxy's READ counters over one row's timed requests, and its
    fills (refused: a change overtook a forwarded READ)."""

    hits: int
    misses: int
    forwarded: int
    fills: int = 0
    fills_refused: int = 0


@dataclass(frozen=True)
class HopResult:
    layout: str
    iterations: int
    rounds: int
    warmup: int
    direct: Latency
    hit: Latency
    forwarded: Latency
    hit_counts: Counts
    forwarded_counts: Counts
    host: str
    python: str
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]

    @property
    def t_hit_us(self) -> float:
        return self.hit.median_us

    @property
    def h_fwd_us(self) -> float:
        return self.forwarded.median_us - self.direct.median_us

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["derived"] = {"t_hit_us": self.t_hit_us, "h_fwd_us": self.h_fwd_us}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> HopResult:
        """The inverse of ``to_dict``; ``derived`` (recomputed) and a
        ``projection`` the CLI adds are ignored."""
        try:
            def obj(key: str) -> dict[str, object]:
                v = d[key]
                if not isinstance(v, dict):
                    raise TypeError(f"{key} is not an object")
                return v

            def lat(key: str) -> Latency:
                v = obj(key)
                return Latency(median_us=float(v["median_us"]),  # type: ignore[arg-type]
                               p90_us=float(v["p90_us"]),  # type: ignore[arg-type]
                               samples=int(v["samples"]))  # type: ignore[call-overload]

            def counts(key: str) -> Counts:
                v = obj(key)
                return Counts(**{k: int(v[k])  # type: ignore[call-overload]
                                 for k in ("hits", "misses", "forwarded", "fills",
                                           "fills_refused")})

            def load(key: str) -> tuple[float, float, float]:
                v = d[key]
                if not isinstance(v, list | tuple) or len(v) != 3:
                    raise TypeError(f"{key} is not three numbers")
                return (float(v[0]), float(v[1]), float(v[2]))

            return cls(layout=str(d["layout"]), iterations=int(d["iterations"]),  # type: ignore[call-overload]
                       rounds=int(d["rounds"]), warmup=int(d["warmup"]),  # type: ignore[call-overload]
                       direct=lat("direct"), hit=lat("hit"), forwarded=lat("forwarded"),
                       hit_counts=counts("hit_counts"),
                       forwarded_counts=counts("forwarded_counts"),
                       host=str(d["host"]), python=str(d["python"]),
                       loadavg_before=load("loadavg_before"),
                       loadavg_after=load("loadavg_after"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a hopbench result: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> HopResult:
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("not a hopbench result: not a JSON object")
        return cls.from_dict(d)


# -- the measurement -------------------------------------------------------------

@dataclass
class _Setup:
    listen: Path
    upstream: Path
    stats: Callable[[], Awaitable[dict[str, object]]]


def _read_counts(stats: dict[str, object]) -> Counts:
    per_op = stats.get("per_op")
    read = per_op.get("READ", {}) if isinstance(per_op, dict) else {}
    if not isinstance(read, dict):
        raise HopBenchError(f"unexpected proxy counters: {stats!r}")
    try:
        return Counts(hits=int(read.get("hits", 0)), misses=int(read.get("misses", 0)),
                      forwarded=int(read.get("forwarded", 0)),
                      fills=int(stats.get("fills", 0)),  # type: ignore[call-overload]
                      fills_refused=int(stats.get("fills_refused", 0)))  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise HopBenchError(f"unexpected proxy counters: {stats!r}") from exc


def _delta(a: Counts, b: Counts) -> Counts:
    return Counts(b.hits - a.hits, b.misses - a.misses, b.forwarded - a.forwarded,
                  b.fills - a.fills, b.fills_refused - a.fills_refused)


def _sum(a: Counts, b: Counts) -> Counts:
    return Counts(a.hits + b.hits, a.misses + b.misses, a.forwarded + b.forwarded,
                  a.fills + b.fills, a.fills_refused + b.fills_refused)


@contextlib.asynccontextmanager
async def _inprocess(tmp: Path) -> AsyncIterator[_Setup]:
    async with model_behind_proxy(tmp, _START_TIMEOUT_S) as (model, proxy):
        async def stats() -> dict[str, object]:
            counters: dict[str, object] = proxy.stats()
            return counters

        yield _Setup(proxy.cfg.listen, model.path, stats)


def _child_env() -> dict[str, str]:
    """The children import this very package, wherever it is installed."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


async def _wait_until(what: str, ok: Callable[[], Awaitable[bool]],
                      procs: Sequence[tuple[subprocess.Popen[bytes], Path]]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not await ok():
        for p, log in procs:
            if p.poll() is not None:
                raise HopBenchError(f"{what}: {' '.join(map(str, p.args))} exited with "  # type: ignore[arg-type]
                                    f"{p.returncode}: {log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise HopBenchError(f"{what}: not ready after {_START_TIMEOUT_S} s")
        await asyncio.sleep(0.01)


async def _connectable(path: Path) -> bool:
    try:
        _, w = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    w.close()
    return True


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@contextlib.asynccontextmanager
async def _processes(tmp: Path) -> AsyncIterator[_Setup]:
    up, xs, ctl, ready = tmp / "up", tmp / "xs", tmp / "ctl", tmp / "ready"
    env = _child_env()
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as f:
            p = subprocess.Popen([sys.executable, *args], stdin=subprocess.DEVNULL,
                                 stdout=f, stderr=subprocess.STDOUT, env=env)
        procs.append((p, log))
        return p

    try:
        spawn(["-m", "xenstore_cache.model_server", str(up)], tmp / "model.log")
        await _wait_until("model xenstored", lambda: _connectable(up), procs)
        spawn(["-m", "xenstore_cache", "run", "--listen", str(xs), "--upstream", str(up),
               "--control", str(ctl), "--ready-file", str(ready)], tmp / "proxy.log")

        async def is_ready() -> bool:
            return ready.exists()

        await _wait_until("proxy", is_ready, procs)

        async def stats() -> dict[str, object]:
            return await query_control(ctl)

        yield _Setup(xs, up, stats)
    finally:
        for p, _ in reversed(procs):        # the proxy first, then the model
            _stop(p)


async def _timed(client: WireClient, n: int,
                 before: Callable[[], Awaitable[object]] | None = None) -> list[int]:
    out: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(n):
        if before is not None:
            await before()
        t0 = clock()
        rsp = await client.call(Op.READ, NODE + b"\0")
        t1 = clock()
        if rsp.op != Op.READ or rsp.payload != VALUE:
            raise HopBenchError(f"READ {NODE!r} answered {rsp}")
        out.append(t1 - t0)
    return out


def _expect(pkt: Packet, what: str) -> None:
    if pkt.op == Op.ERROR:
        raise HopBenchError(f"{what}: {pkt.error_name}")


async def measure(iterations: int = DEFAULT_ITERATIONS, *, layout: Layout = "processes",
                  rounds: int = DEFAULT_ROUNDS, warmup: int | None = None) -> HopResult:
    """Start a model xenstored and the proxy in front of it on temporary
    sockets and time ``iterations`` requests of each row (see the module)."""
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    rounds = min(rounds, iterations)
    if warmup is None:
        warmup = min(200, max(10, iterations // 10))
    if warmup < 0:
        raise ValueError(f"warmup must be at least 0, got {warmup}")
    load_before = os.getloadavg()
    start = _processes if layout == "processes" else _inprocess
    with tempfile.TemporaryDirectory(prefix="xshop") as d:   # AF_UNIX: short paths
        async with start(Path(d)) as setup:
            direct = await WireClient.open(setup.upstream)
            proxied = await WireClient.open(setup.listen)
            try:
                _expect(await direct.call(Op.WRITE, NODE + b"\0" + VALUE), "WRITE")

                async def invalidate() -> None:
                    _expect(await proxied.call(Op.WRITE, NODE + b"\0" + VALUE), "WRITE")
                    # Replied after the WRITE's event: the proxy has handled it.
                    _expect(await proxied.call(Op.IS_DOMAIN_INTRODUCED, b"0\0"),
                            "IS_DOMAIN_INTRODUCED")

                async def fill() -> None:
                    for _ in range(3):   # a fill overtaken by the write's event is refused
                        await proxied.call(Op.READ, NODE + b"\0")

                await _timed(direct, warmup)
                await fill()
                await _timed(proxied, warmup)
                await _timed(proxied, warmup, invalidate)

                samples: dict[str, list[int]] = {"direct": [], "hit": [], "forwarded": []}
                counts = {"hit": Counts(0, 0, 0), "forwarded": Counts(0, 0, 0)}
                kinds = ("direct", "hit", "forwarded")
                for r in range(rounds):
                    n = iterations // rounds + (1 if r < iterations % rounds else 0)
                    for kind in kinds[r % 3:] + kinds[:r % 3]:
                        if kind == "direct":
                            samples[kind] += await _timed(direct, n)
                            continue
                        if kind == "hit":
                            await fill()
                        c0 = _read_counts(await setup.stats())
                        samples[kind] += await _timed(
                            proxied, n, invalidate if kind == "forwarded" else None)
                        c1 = _read_counts(await setup.stats())
                        counts[kind] = _sum(counts[kind], _delta(c0, c1))
            finally:
                direct.close()
                proxied.close()
    res = HopResult(
        layout=layout, iterations=iterations, rounds=rounds, warmup=warmup,
        direct=Latency.from_ns(samples["direct"]), hit=Latency.from_ns(samples["hit"]),
        forwarded=Latency.from_ns(samples["forwarded"]),
        hit_counts=counts["hit"], forwarded_counts=counts["forwarded"],
        host=" ".join(x for x in (platform.machine(), platform.processor(),
                                  f"{os.cpu_count()} CPUs") if x),
        python=platform.python_version(), loadavg_before=load_before,
        loadavg_after=os.getloadavg())
    hc, fc = res.hit_counts, res.forwarded_counts
    if (hc.hits, hc.forwarded) != (iterations, 0):
        raise HopBenchError(f"the 'hit' row was not all hits: {hc} for {iterations} reads")
    if (fc.hits, fc.forwarded, fc.fills_refused) != (0, iterations, 0):
        raise HopBenchError(f"the 'forwarded' row was not all forwarded and filled: {fc} "
                            f"for {iterations} reads")
    return res


def run(iterations: int = DEFAULT_ITERATIONS, *, layout: Layout = "processes",
        rounds: int = DEFAULT_ROUNDS, warmup: int | None = None) -> HopResult:
    return asyncio.run(measure(iterations, layout=layout, rounds=rounds, warmup=warmup))


# -- arguments and output ----------------------------------------------------------

def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def hit_fraction(text: str) -> float:
    """argparse type: a hit fraction h with 0 < h <= 1."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v) or not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(
            f"a hit fraction must be above 0 and at most 1, got {text} "
            "(with no hits the proxy never pays)")
    return v


def report(res: HopResult, proj: Projection) -> dict[str, object]:
    """What ``--json`` writes: the measurement, and the projection apart."""
    return res.to_dict() | {"projection": proj.to_dict()}


def format_table(res: HopResult, proj: Projection) -> str:
    head = (f"measured: proxy in front of the model xenstored, layout {res.layout}, "
            f"{res.iterations} requests a row ({res.rounds} rounds, {res.warmup} warm-up), "
            f"load average {res.loadavg_before[0]:.2f} -> {res.loadavg_after[0]:.2f}")
    direct = f"{'direct':<12}{res.direct.median_us:>10.1f}{res.direct.p90_us:>10.1f}"
    lines = [head, f"{'row':<12}{'median µs':>10}{'p90 µs':>10}  proxy READ counters",
             f"{direct}  (no proxy: L_model)"]
    for name, lat, c in (("hit", res.hit, res.hit_counts),
                         ("forwarded", res.forwarded, res.forwarded_counts)):
        lines.append(f"{name:<12}{lat.median_us:>10.1f}{lat.p90_us:>10.1f}  "
                     f"{c.hits} hits, {c.forwarded} forwarded, "
                     f"{c.fills_refused} fills refused")
    derived = (f"T_hit = {res.t_hit_us:.1f} µs (hit); "
               f"H_fwd = forwarded - direct = {res.h_fwd_us:.1f} µs (medians)")
    proj_head = (f"projection (not measured): real xenstored latencies L, "
                 f"hit fraction h = {proj.hit_fraction:g}")
    be = f"projection: break-even L = T_hit + ((1-h)/h)*H_fwd = {proj.break_even_us:.1f} µs"
    lines += [derived, "", proj_head, be,
              f"{'':<12}{'L µs':>7}  {'pays':<5}{'saving µs/req':>14}{'of L':>7}  L is"]
    for r in proj.rows:
        lines.append(f"{r.kind:<12}{r.l_us:>7.0f}  {'yes' if r.pays else 'no':<5}"
                     f"{r.saving_us:>14.1f}{r.saving_fraction:>7.0%}  {r.label}")
    return "\n".join(lines)


def main(iterations: int, h: float, json_path: Path | None, layout: Layout = "processes") -> int:
    """The ``hopbench`` subcommand."""
    # An in-process proxy's start and stop are not news here.
    logging.getLogger("xenstore_cache.server").setLevel(logging.WARNING)
    try:
        if json_path is not None:       # before a measurement it could not keep
            check_writable_file(json_path, "--json file")
        res = run(iterations, layout=layout)
    except (HopBenchError, SetupError, OSError, TimeoutError) as exc:
        print(f"xenstore-cache hopbench: error: {exc}", file=sys.stderr)
        return 1
    proj = project(res.t_hit_us, res.h_fwd_us, hit_fraction=h)
    print(format_table(res, proj), flush=True)
    if json_path is not None:
        return _write_report(json_path, report(res, proj))
    return 0


def _write_report(path: Path, doc: dict[str, object]) -> int:
    """Write ``--json``; when that fails, print the document on stdout
    instead, so the measurement is kept, and say so."""
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    try:
        path.write_text(text)
    except OSError as exc:
        print(text, end="")
        print(f"xenstore-cache hopbench: error: cannot write --json file {path}: {exc} "
              "(the JSON result is on stdout instead)", file=sys.stderr)
        return 1
    return 0
