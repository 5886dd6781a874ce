"""``xenstore-cache``: run the proxy, or ask a running one for its counters.

    xenstore-cache run [--listen P] [--upstream P] [--control P] [--max-entries N] [--max-mib M]
    xenstore-cache stats [--control P] [--json]
    xenstore-cache hopbench [--iterations N] [--hit-fraction H] [--json FILE] [--layout L]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import sys
from pathlib import Path

from xenstore_cache import hopbench
from xenstore_cache.cache import DEFAULT_MAX_BYTES
from xenstore_cache.control import (
    DEFAULT_CONTROL,
    DEFAULT_UPSTREAM,
    PER_OP_COUNTERS,
    SetupError,
    query_control,
)
from xenstore_cache.server import (
    CachingProxy,
    Config,
    check_paths,
    check_writable_file,
    probe_upstream,
)

log = logging.getLogger("xenstore_cache")


def _default_listen() -> str:
    # Where libxenstore clients will look: the same rule as xs_daemon_socket().
    if os.environ.get("XENSTORED_PATH"):
        return os.environ["XENSTORED_PATH"]
    rundir = os.environ.get("XENSTORED_RUNDIR", "/var/run/xenstored")
    return f"{rundir}/socket"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xenstore-cache", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the proxy in the foreground")
    run.add_argument("--listen", default=_default_listen(),
                     help="socket clients connect to (default: libxenstore's: %(default)s)")
    run.add_argument("--upstream", default=DEFAULT_UPSTREAM,
                     help="xenstored's relocated socket (default: %(default)s)")
    run.add_argument("--control", default=DEFAULT_CONTROL,
                     help="control socket for 'stats' (default: %(default)s)")
    run.add_argument("--max-entries", type=int, default=None,
                     help="cached entries before the cache is emptied")
    run.add_argument("--max-mib", type=int, default=None,
                     help="estimated MiB the cache may hold before it is emptied "
                          f"(default: {DEFAULT_MAX_BYTES >> 20})")
    run.add_argument("--ready-file", type=Path, default=None,
                     help="write this file once the watch on xenstored is registered")
    run.add_argument("-v", "--verbose", action="store_true")
    st = sub.add_parser("stats", help="counters of a running proxy")
    st.add_argument("--control", default=DEFAULT_CONTROL)
    st.add_argument("--json", action="store_true", help="print JSON")
    hb = sub.add_parser("hopbench", help="measure the proxy's hop here, in front of the "
                        "model xenstored (no VM), and project where it pays")
    hb.add_argument("--iterations", type=hopbench.positive_int,
                    default=hopbench.DEFAULT_ITERATIONS,
                    help="timed requests per row (default: %(default)s)")
    hb.add_argument("--hit-fraction", type=hopbench.hit_fraction,
                    default=hopbench.DEFAULT_HIT_FRACTION,
                    help="fraction of requests the cache answers, for the projection "
                         "(0 < H <= 1; default: %(default)s, a domain create in the lab)")
    hb.add_argument("--json", type=Path, default=None, metavar="FILE",
                    help="also write the result and the projection to FILE")
    hb.add_argument("--layout", choices=hopbench.LAYOUTS, default="processes",
                    help="client, proxy and model in their own processes (default), or "
                         "all in one asyncio loop (no wake-ups: a lower bound)")
    return p


async def _run(cfg: Config, ready_file: Path | None) -> None:
    proxy = CachingProxy(cfg)
    await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if ready_file is not None:
            waiter = asyncio.create_task(proxy.watch_ready.wait())
            done, _ = await asyncio.wait({waiter, asyncio.create_task(stop.wait())},
                                         return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                _write_ready_file(ready_file)
        await stop.wait()
    finally:
        await proxy.stop()


def raise_open_file_limit() -> int:
    """The proxy's soft limit on open files raised to its hard limit, as
    xenconsoled raises its own: it holds a socket for every client (an ``xl``
    monitor per running guest), and the soft limit is 1024 under systemd.
    Returns the limit now in force; a limit that cannot be raised is logged
    and kept (asyncio then pauses accepting while every file is in use)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:
        log.warning("could not raise the open-file limit from %d to %d (%s): "
                    "at most %d clients at once", soft, hard, exc, soft)
        return soft
    return hard


def _write_ready_file(path: Path) -> None:
    """Say the proxy is ready: its process ID in ``path``."""
    try:
        path.write_text(str(os.getpid()))
    except OSError as exc:
        raise SetupError(f"cannot write the ready file {path}: {exc}; stopping, "
                         "as whoever waits for it would wait for ever") from exc


def _print_stats(stats: dict[str, object]) -> None:
    keys = ("requests", "hits", "misses", "forwarded", "local_errors", "events",
            "invalidations", "fills", "fills_refused", "flushes", "perms_flushes",
            "entries", "cache_bytes", "cache_nodes", "overflows", "clients", "clients_total",
            "upstream_connections", "upstream_requests_in_flight", "protocol_errors",
            "upstream_losses", "cleanup_failures", "cache_enabled")
    width = max(map(len, keys))
    for k in keys:
        print(f"{k:{width}} {stats.get(k)}")
    per_op = stats.get("per_op")
    if isinstance(per_op, dict) and per_op:
        print(f"\n{'op':22}" + "".join(f" {n:>9}" for n in PER_OP_COUNTERS))
        for op, c in per_op.items():    # query_control checked each has its counters
            print(f"{op:22}" + "".join(f" {c[n]:9}" for n in PER_OP_COUNTERS))


def _stats(control: Path, as_json: bool) -> int:
    """The ``stats`` subcommand."""
    try:
        stats = asyncio.run(query_control(control))
    except (OSError, TimeoutError) as exc:
        raise SetupError(f"cannot ask the xenstore-cache control socket at {control}: "
                         f"{exc or type(exc).__name__}") from exc
    if as_json:
        print(json.dumps(stats, indent=2, sort_keys=True))
    else:
        _print_stats(stats)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="xenstore-cache: %(levelname)s %(message)s")
    try:
        if args.cmd == "stats":
            return _stats(Path(args.control), args.json)
        if args.cmd == "hopbench":
            return hopbench.main(args.iterations, args.hit_fraction, args.json, args.layout)
        kwargs = {}
        if args.max_entries is not None:
            if args.max_entries < 1:
                raise SetupError(f"--max-entries must be at least 1, got {args.max_entries}")
            kwargs["max_entries"] = args.max_entries
        if args.max_mib is not None:
            if args.max_mib < 1:
                raise SetupError(f"--max-mib must be at least 1, got {args.max_mib}")
            kwargs["max_bytes"] = args.max_mib << 20
        cfg = Config(listen=Path(args.listen), upstream=Path(args.upstream),
                     control=Path(args.control), **kwargs)
        check_paths(cfg)
        if args.ready_file is not None:
            check_writable_file(args.ready_file, "--ready-file")
        probe_upstream(cfg.upstream)
        log.info("open files: up to %d", raise_open_file_limit())
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_run(cfg, args.ready_file))
        return 0
    except SetupError as exc:
        print(f"xenstore-cache: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
