"""``python -m pyxen.lab``: build, boot, run in dom0, benchmark."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

# Only the standard library at import time: "deps --install" must run on a
# fresh machine before the lab extra's dependencies (rich, matplotlib) exist.
from pyxen.config import DEFAULT_WEIGHT, MAX_WEIGHT, MIN_WEIGHT, validate_weight
from pyxen.lab.contract import protocol
from pyxen.lab.contract.args import (nonneg_int, nonneg_int_list, nonneg_number,
                                     number_list, positive_int, positive_int_list,
                                     positive_number)
from pyxen.lab.contract.errors import LabError, describe
from pyxen.lab.contract.faastrace import PLATFORM_KEEP_ALIVE_S
from pyxen.lab.contract.requests import RequestFieldError
from pyxen.lab.host import hostdeps, paths, progress, sources, variants
from pyxen.lab.host.benchfile import (AUTOSCALE_OUT, BENCH_JSON, DEFAULT_OUT, prepare_out,
                                      saved_bench, writable_dir, writable_file)
from pyxen.lab.host.vm_options import VMOptions

if TYPE_CHECKING:
    from pyxen.lab.host.xenbuild import StagedBuild

log = logging.getLogger("pyxen.lab")


def _variant_list(text: str) -> list[variants.RunVariant]:
    try:
        return variants.parse_variant_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: The option that sets each field of a dom0 request (pyxen.lab.contract.
#: requests) a user can give a bad value, so that an error names the option.
REQUEST_FIELD_OPTIONS: dict[str, str] = {
    "memory_mib": "--guest-memory", "guest_mib": "--guest-memory",
    "keep_alive_s": "--keep-alive", "spinners_per_cpu": "--spinners",
    **{f: "--" + f.replace("_", "-") for f in (
        "clean_timeout", "concurrency", "creators", "driver", "fill", "gaps", "guests",
        "idle", "max_inflight", "misses", "probes", "readers", "reads", "reps", "rounds",
        "running", "scrub_policy", "size_reps", "sizes", "spinner_weight", "spinners",
        "stubs", "syscall_reads", "writes")}}

#: The option that sets each field of VMOptions its validate() checks (a
#: VM's memory_mib is --memory; a request's, above, --guest-memory).
VM_OPTIONS = {"cpus": "--cpus", "memory_mib": "--memory", "dom0_vcpus": "--dom0-vcpus",
              "dom0_mem_mib": "--dom0-mem", "numa_nodes": "--numa-nodes",
              "icount_shift": "--icount", "boot_timeout_s": "--boot-timeout"}

#: --variants when not given: stock against patched.
_DEFAULT_VARIANTS = [variants.RunVariant("stock"), variants.RunVariant("patched")]


def weight_arg(text: str) -> int:
    """A scheduler weight argument, in the range pyxen.config takes."""
    try:
        return validate_weight(positive_int(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _sha256(text: str) -> str:
    try:
        return sources.check_sha256(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_source_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Xen source")
    g.add_argument("--xen-source", type=Path, metavar="PATH",
                   help=f"Xen release tarball (xen-X.Y.Z.tar.gz or .tar.xz) or source tree "
                        f"(default ${sources.SOURCE_ENV}, else "
                        f"xen-{sources.DEFAULT_VERSION}.tar.* in the lab's cache)")
    g.add_argument("--xen-sha256", type=_sha256, metavar="SUM",
                   help=f"expected SHA-256 of the tarball (default ${sources.SHA256_ENV}; "
                        "known release files are checked without it)")
    g.add_argument("--series", type=Path, metavar="DIR",
                   help="patch series directory holding xen/series and tools/series "
                        "(default patches/<X.Y> for the source's Xen X.Y)")


def _named_series(text: str) -> tuple[str, Path]:
    try:
        return variants.parse_named_series(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_variants_option(p: argparse.ArgumentParser) -> None:
    """--variants, and --series-as for the patched@NAME variants it may list."""
    p.add_argument("--variants", type=_variant_list, default=_DEFAULT_VARIANTS,
                   help="comma-separated: stock, patched, patched@NAME (the series "
                        "given with --series-as NAME=DIR), each optionally +libcache "
                        "and/or +cache (default stock,patched)")
    p.add_argument("--series-as", type=_named_series, action="append", metavar="NAME=DIR",
                   help="a series directory built by the variant patched@NAME, to compare "
                        "two series in one run (repeatable)")


def _source(args: argparse.Namespace) -> sources.XenSource:
    return sources.xen_source(args.xen_source, args.xen_sha256)


def _add_vm_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("nested VM")
    g.add_argument("--cpus", type=positive_int, default=2, help="Xen's pCPUs (QEMU -smp)")
    g.add_argument("--memory", type=positive_int, default=3072, metavar="MIB",
                   help="Xen's RAM in MiB")
    g.add_argument("--dom0-vcpus", type=positive_int, default=2)
    g.add_argument("--dom0-mem", type=positive_int, metavar="MIB",
                   help=f"dom0_mem in MiB (default {VMOptions.dom0_mem_mib})")
    g.add_argument("--autoballoon", action="store_true",
                   help="boot without dom0_mem (dom0 owns all memory; xl autoballoons)")
    g.add_argument("--numa-nodes", type=positive_int, default=1,
                   help="virtual NUMA nodes (QEMU -numa)")
    g.add_argument("--xen-cmdline", default="", help="extra Xen command-line options")
    g.add_argument("--debug", action="store_true", help="debug hypervisor (debug=y)")
    g.add_argument("--profile", action="store_true",
                   help="profiling hypervisor: lock profiling + perf counters")
    g.add_argument("--boot-timeout", type=float, default=300.0, metavar="S")
    _add_icount_option(g)


def _add_icount_option(g: argparse._ActionsContainer) -> None:
    g.add_argument("--icount", type=int, metavar="SHIFT", dest="icount_shift",
                   help="count instructions instead of host time: QEMU -icount "
                        "shift=SHIFT,sleep=off (2**SHIFT ns per instruction, one vCPU "
                        "thread): times in the guest no longer depend on the host's "
                        "speed or load; the run is slower")


def _vm_options(args: argparse.Namespace) -> VMOptions:
    if args.autoballoon and args.dom0_mem is not None:
        raise ValueError("--autoballoon boots without dom0_mem: drop --dom0-mem")
    opts = VMOptions(cpus=args.cpus, memory_mib=args.memory, dom0_vcpus=args.dom0_vcpus,
                     dom0_mem_mib=None if args.autoballoon else
                     args.dom0_mem or VMOptions.dom0_mem_mib,
                     numa_nodes=args.numa_nodes, xen_cmdline=tuple(args.xen_cmdline.split()),
                     boot_timeout_s=args.boot_timeout, icount_shift=args.icount_shift)
    opts.validate(VM_OPTIONS)
    return opts


def _build_variants(args: argparse.Namespace) -> dict[str, StagedBuild]:
    """Each build ``--variants`` names, built (or reused) once, by name; the
    host's packages checked first."""
    from pyxen.lab.host.xenbuild import build
    hostdeps.check()
    source = _source(args)
    # Every variant resolved (its series found) before the first build.
    resolved = {b: variants.resolve(b, args.series, args.debug, args.profile, source,
                                    args.named_series)
                for b in dict.fromkeys(v.build for v in args.variants)}
    return {b: build(v) for b, v in resolved.items()}


def cmd_deps(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.install:
        added = hostdeps.install()
        print("installed: " + (" ".join(added) if added else "nothing (all present)"))
    else:
        hostdeps.check()
        print("all host packages present")
    return 0


def cmd_build(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from pyxen.lab.host.xenbuild import build
    staged = build(variants.resolve(args.variant, args.series, args.debug, args.profile,
                                    _source(args)))
    print(f"{args.variant} (Xen {staged.variant.source.version}): "
          f"hypervisor {staged.xen}\n"
          f"{args.variant} (Xen {staged.variant.source.version}): "
          f"toolstack  {staged.tools_root}")
    return 0


def cmd_check_series(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from pyxen.lab.host import eachpatch
    if args.out:
        writable_file(args.out)      # before the builds of every patch
    eachpatch.check_packages(args.arm64)
    source = _source(args)
    found = variants.read_series_dir(variants.find_series(source.branch, args.series))
    series = [(part, found[part]) for part in variants.SERIES_PARTS]
    results = eachpatch.check_each_patch(source, series,
                                         args.work or eachpatch.default_work_dir(),
                                         arm64=args.arm64)
    for line in eachpatch.report_lines(results):
        print(line)
    if args.out:
        eachpatch.write_report(results, source, args.out, args.arm64)
        print(f"wrote {args.out}")
    return 0


def cmd_run(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("run needs a command after --")
    opts = _vm_options(args)
    for b in args.bind:
        if not b.is_dir():
            ap.error(f"--bind {b}: not a directory")
    if args.files:
        writable_dir(args.files, "--files")     # before the build and the run
    from pyxen.lab.host.vm import Dom0
    from pyxen.lab.host.xenbuild import build
    staged = build(variants.resolve(args.variant, args.series, args.debug, args.profile,
                                    _source(args)))
    with Dom0(staged, opts, extra_binds=[b.resolve() for b in args.bind]) as dom0:
        res = dom0.run(command, timeout=args.timeout)
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        if args.files:
            import shutil
            shutil.copytree(res.files, args.files, dirs_exist_ok=True)
    return res.returncode


def _refuse_libcache_with_xl(ap: argparse.ArgumentParser,
                             run_variants: list[variants.RunVariant], driver: str) -> None:
    """A usage error for ``+libcache`` variants driven by ``xl``: xl does not
    ask libxl for libxenstore's cache (an application asks for it with
    LIBXL_CTX_XS_CACHE), so such a variant would quietly run without it."""
    with_lib = [v.name for v in run_variants if v.lib_cache]
    if with_lib and driver == "xl":
        ap.error(f"{', '.join(with_lib)}: xl does not ask libxl for libxenstore's cache "
                 "(LIBXL_CTX_XS_CACHE is for applications), so --driver xl would run them "
                 "without it: use --driver pyxen")


def cmd_bench(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _refuse_libcache_with_xl(ap, args.variants, args.driver)
    opts = _vm_options(args)
    from pyxen.lab.host.bench import BenchParams, run_bench
    params = BenchParams(args.guests, args.concurrency, args.guest_memory, args.driver,
                         args.repeat, args.running, args.trace_timed)
    params.validate()
    if args.running:
        # Xen's own share of the VM's memory is left a margin of 128 MiB.
        room = opts.memory_mib - (opts.dom0_mem_mib or 0) - 128
        if params.guests_mib() > room:
            ap.error(f"--running {args.running} and --guests {args.guests} of "
                     f"{args.guest_memory} MiB need about {params.guests_mib()} MiB, and "
                     f"the VM leaves {room} MiB for guests: raise --memory "
                     f"(now {opts.memory_mib})")
    saved_bench(args.out)     # --out checked before any build
    hostdeps.check()
    run_bench(args.variants, params, opts, args.out, args.series, args.debug,
              args.profile, _source(args), args.wide, args.named_series)
    return 0


#: The files ``plot --out`` writes, by their suffix (matplotlib's formats).
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def cmd_plot(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from pyxen.lab.host.bench import replot
    if args.out is not None:
        # Else matplotlib would write another file than the one named.
        if args.out.suffix.lower() not in PLOT_SUFFIXES:
            ap.error(f"--out {args.out}: name a {', '.join(PLOT_SUFFIXES)} file")
        writable_file(args.out)
    print(f"wrote {replot(args.bench_json, args.out, args.wide)}")
    return 0


def _refuse_caches(ap: argparse.ArgumentParser, run_variants: list[variants.RunVariant],
                  why: str, proxy_too: bool = True) -> None:
    """A usage error naming the ``+libcache`` variants (and unless not
    ``proxy_too`` the ``+cache`` ones) of a benchmark that runs no libxl
    cached context (nor the proxy)."""
    with_cache = [v.name for v in run_variants if (proxy_too and v.xs_cache) or v.lib_cache]
    if with_cache:
        ap.error(f"{why}: drop {', '.join(with_cache)} from --variants")


def cmd_scrubbench(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _refuse_caches(ap, args.variants, "scrubbench runs no Xenstore cache")
    from pyxen.lab.host.scrubbench import SCRUB_VM, ScrubParams, run_scrub_bench
    params = ScrubParams(gaps=args.gaps, guest_mib=args.guest_memory, sizes=args.sizes,
                         clean_timeout=args.clean_timeout, reps=args.reps,
                         size_reps=args.size_reps, fill=args.fill,
                         scrub_policy=args.scrub_policy, spinners=args.spinners,
                         spinner_weight=args.spinner_weight)
    params.validate()
    options = dataclasses.replace(SCRUB_VM, cpus=args.cpus or SCRUB_VM.cpus,
                                  memory_mib=args.memory or SCRUB_VM.memory_mib,
                                  icount_shift=args.icount_shift)
    try:   # scrubbench has only these of the VM's options
        options.validate({f: VM_OPTIONS[f] for f in ("cpus", "memory_mib", "icount_shift")})
    except ValueError as exc:
        ap.error(str(exc))
    saved_bench(args.out)     # --out checked before any build
    hostdeps.check()
    source = _source(args)
    resolved = [variants.resolve(v.build, args.series, profile=args.profile, source=source,
                                 named=args.named_series)
                for v in args.variants]
    run_scrub_bench(resolved, params, options, args.out)
    return 0


def cmd_scrubpool(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from pyxen.lab.host.scrubpool import load_invocations, pool, pooled_lines, write_pooled
    invocations = load_invocations(args.run_dirs)   # main() reports a ValueError as usage
    try:
        pooled = pool(invocations)
    except (TypeError, KeyError, AttributeError) as exc:   # a field of the wrong shape
        raise LabError(f"cannot pool the runs in {', '.join(map(str, args.run_dirs))}: "
                       f"{describe(exc)} (a field of another type than scrubbench "
                       "writes?)") from exc
    for line in pooled_lines(pooled):
        print(line)
    if args.out:
        write_pooled(pooled, args.out)
        print(f"wrote {args.out}")
    return 0


def cmd_xsbench(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _refuse_caches(ap, args.variants, "xsbench's client is no libxl context, so "
                   "libxenstore's cache would not be asked for (+cache, the proxy, is "
                   "measured)", proxy_too=False)
    from pyxen.lab.host.xsbench import XSBENCH_JSON, XSBENCH_KIND, XsParams, run_xs_bench
    params = XsParams(idle=args.idle, reads=args.reads, rounds=args.rounds,
                      syscall_reads=args.syscall_reads, writes=args.writes,
                      misses=args.misses)
    params.validate()
    opts = _vm_options(args)
    prepare_out(args.out, XSBENCH_JSON, XSBENCH_KIND)
    built = _build_variants(args)
    run_xs_bench([(v, built[v.build]) for v in args.variants], params, opts, args.out)
    return 0


def cmd_domctlbench(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _refuse_caches(ap, args.variants, "domctlbench measures the hypervisor")
    from pyxen.lab.host.domctlbench import (DOMCTLBENCH_JSON, DOMCTLBENCH_KIND, DomctlParams,
                                            run_domctl_bench)
    params = DomctlParams(creators=args.creators, readers=args.readers,
                          probes=args.probes, rounds=args.rounds, stubs=args.stubs)
    params.request()                  # ValueError naming a bad value, before any build
    opts = _vm_options(args)
    prepare_out(args.out, DOMCTLBENCH_JSON, DOMCTLBENCH_KIND)
    built = _build_variants(args)
    run_domctl_bench([(v, built[v.build]) for v in args.variants], params, opts, args.out)
    return 0


def cmd_autoscale(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _refuse_libcache_with_xl(ap, args.variants, args.driver)
    from pyxen.lab.host.autoscale import AUTOSCALE_KIND, AutoscaleParams, run_autoscale
    params = AutoscaleParams(
        trace=args.trace or paths.sample_trace(), speedup=args.speedup, replicas=args.replicas, seed=args.seed,
        keep_alive_s=args.keep_alive, memory_mib=args.guest_memory,
        max_inflight=args.max_inflight, driver=args.driver, running=args.running,
        spinners_per_cpu=args.spinners, rounds=args.rounds, share_boot=args.share_boot)
    params.validate()
    opts = _vm_options(args)
    prepare_out(args.out, BENCH_JSON, AUTOSCALE_KIND)
    run_autoscale(args.variants, _build_variants(args), params, opts, args.out)
    return 0


def cmd_project(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from pyxen.lab.host.coldstart_projection import add_projection, projection_table
    from pyxen.lab.host.progress import print_table
    proj = add_projection(args.bench_json, args.serial_from, tuple(args.cores))
    print_table(projection_table(proj))
    print(f"wrote the projection into {args.bench_json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pyxen.lab",
                                 description="Nested Xen lab: build stock and patched Xen "
                                             "from an upstream source release, boot it in "
                                             "QEMU, run work in dom0.")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("deps", help="check (or install) the host packages the lab needs")
    p.add_argument("--install", action="store_true", help="apt-get install what is missing")
    p.set_defaults(func=cmd_deps)

    p = sub.add_parser("build", help="build (or reuse) a variant")
    p.add_argument("--variant", default="stock", choices=variants.KNOWN)
    p.add_argument("--debug", action="store_true")
    p.add_argument("--profile", action="store_true")
    _add_source_options(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("check-series", help="apply each patch of the series with git am "
                                            "and build what it touched (fit to post)")
    _add_source_options(p)
    p.add_argument("--work", type=Path, metavar="DIR",
                   help="where the git tree is made and kept (default: the lab's cache, "
                        "builds/each-patch); a directory an earlier check made is emptied, "
                        "any other must be empty")
    p.add_argument("--arm64", action="store_true",
                   help="also build the hypervisor for arm64 (gcc-aarch64-linux-gnu)")
    p.add_argument("--out", type=Path, metavar="JSON", help="write the record here")
    p.set_defaults(func=cmd_check_series)

    p = sub.add_parser("run", help="boot a variant and run a command in its dom0")
    p.add_argument("--variant", default="stock", choices=variants.KNOWN)
    _add_source_options(p)
    p.add_argument("--timeout", type=positive_number, default=600.0, metavar="S")
    p.add_argument("--files", type=Path, metavar="DIR",
                   help="copy the command's $PYXEN_OUT files here")
    p.add_argument("--bind", type=Path, action="append", default=[], metavar="DIR",
                   help="also make this host directory visible in dom0 at the same "
                        "path (repeatable)")
    _add_vm_options(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- command and arguments")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="boot-storm benchmark: stock vs variants in one run")
    _add_variants_option(p)
    p.add_argument("--guests", type=positive_int, default=16)
    p.add_argument("--concurrency", type=positive_int_list, default=(4,),
                   help="creates in flight; a list (1,2,4,8) runs one storm for each")
    p.add_argument("--guest-memory", type=positive_int, default=16, metavar="MIB")
    p.add_argument("--driver", choices=protocol.STORM_DRIVERS,
                   default=protocol.STORM_DRIVER_DEFAULT,
                   help="create/destroy through pyxen (libxl in-process, threads; default) "
                        "or unmodified xl processes")
    p.add_argument("--repeat", type=positive_int, default=1, metavar="N",
                   help="run every variant's storms N times, variants interleaved, one "
                        "boot each; the table gives medians and the range of the ratios")
    p.add_argument("--running", type=nonneg_int, default=0, metavar="N",
                   help="keep N other idle guests (--guest-memory each, created through "
                        "--driver: with xl each keeps its xl monitor) up through every "
                        "storm; raise --memory to fit them")
    p.add_argument("--trace-timed", action="store_true",
                   help="keep xenstored's trace on in the timed storm too (its times then "
                        "include the trace's cost) and record its own request and watch-"
                        "event counts under timed_counts: what a process's first storm "
                        "does that the counted second one does not")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--wide", action="store_true",
                   help="print every column of the summary table (wider than 100 columns)")
    _add_source_options(p)
    _add_vm_options(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("plot", help="redraw a saved bench.json's plot and print its table")
    p.add_argument("bench_json", type=Path)
    p.add_argument("--out", type=Path, help="the plot to write, .png, .svg or .pdf (default: "
                                            "bench.png beside it)")
    p.add_argument("--wide", action="store_true",
                   help="print every column of the summary table (wider than 100 columns)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("scrubbench", help="birth after death under load (NUMA-local "
                                          "scrubbing): stock vs variants, 4 pCPUs on 2 nodes")
    _add_variants_option(p)
    p.add_argument("--gaps", type=number_list, default=protocol.SCRUB_GAPS_DEFAULT,
                   help="seconds between death and birth, comma-separated "
                        f"(each 0..{protocol.SCRUB_MAX_GAP_S:g})")
    p.add_argument("--guest-memory", type=positive_int, default=512, metavar="MIB")
    p.add_argument("--sizes", type=positive_int_list, default=protocol.SCRUB_SIZES_DEFAULT,
                   help="guest sizes (MiB) for destroy time and time to clean")
    p.add_argument("--clean-timeout", type=float, default=60.0, metavar="S")
    p.add_argument("--reps", type=positive_int, default=1,
                   help="repetitions of every gap (medians and spread are reported)")
    p.add_argument("--size-reps", type=positive_int, default=1,
                   help="repetitions of every size (medians and spread are reported)")
    _add_source_options(p)
    p.add_argument("--cpus", type=positive_int,
                   help="Xen's pCPUs, split over the 2 NUMA nodes, one spinner each "
                        "(default: the benchmark's VM, scrubbench.SCRUB_VM)")
    p.add_argument("--memory", type=positive_int, metavar="MIB",
                   help="Xen's RAM in MiB, split over the 2 NUMA nodes (default: SCRUB_VM's)")
    _add_icount_option(p)
    p.add_argument("--fill", choices=protocol.SCRUB_FILLS, default=protocol.SCRUB_FILL_DEFAULT,
                   help="ballast on the guests' node only, or on every node (a full host)")
    p.add_argument("--scrub-policy", choices=protocol.SCRUB_POLICIES,
                   default=protocol.SCRUB_POLICY_DEFAULT,
                   help="where Xen has the scrub-worker sysctl (patched): switch the "
                        "per-node workers on (eager), keep them off (idle, stock's "
                        "behaviour), leave what Xen booted with, or alternate (each "
                        "repetition of the gaps twice in the same boot, workers on and off "
                        "in turn); stock ignores it")
    p.add_argument("--spinners", type=nonneg_int, default=None, metavar="N",
                   help="spinning guests in all (default one per pCPU; fewer leave "
                        "some pCPUs idle, a partly loaded host)")
    p.add_argument("--spinner-weight", type=weight_arg, default=None, metavar="W",
                   help=f"the spinners' scheduler weight (credit, credit2; "
                        f"{MIN_WEIGHT}..{MAX_WEIGHT}, default the scheduler's "
                        f"{DEFAULT_WEIGHT}, dom0's too): 1 gives dom0 a pCPU whenever it "
                        "wants one while the spinners take the cycles it leaves")
    p.add_argument("--profile", action="store_true",
                   help="profiling hypervisors (lock profiling + perf counters): each "
                        "destroy's heap_lock wait, domctl entries and pages scrubbed in "
                        "the background meanwhile are recorded")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.set_defaults(func=cmd_scrubbench)

    p = sub.add_parser("scrubpool", help="pool the birth-after-death runs of several "
                                         "scrubbench invocations of one command (a boot "
                                         "per variant each) and compare them with stock")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                   help="a scrubbench --out directory (its bench.json)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="also write the pooled summaries and ratios as JSON")
    p.set_defaults(func=cmd_scrubpool)

    p = sub.add_parser("xsbench", help="Xenstore read latency against idle connections "
                                       "(+cache: through the proxy): stock vs variants "
                                       "in one run")
    _add_variants_option(p)
    p.add_argument("--idle", type=nonneg_int_list, default=protocol.XS_IDLE_DEFAULT,
                   help="counts of idle connections held open, comma-separated "
                        f"(each 0..{protocol.XS_MAX_IDLE})")
    p.add_argument("--reads", type=positive_int, default=protocol.XS_READS_DEFAULT,
                   help="timed reads at each count")
    p.add_argument("--rounds", type=positive_int, default=protocol.XS_ROUNDS_DEFAULT,
                   help="rounds over all counts (medians are reported)")
    p.add_argument("--syscall-reads", type=int, default=protocol.XS_SYSCALL_READS_DEFAULT,
                   metavar="N", help="reads at each count during which xenstored's "
                   "system calls are counted with strace -c, after the timed rounds "
                   "(0: none); a +cache variant's proxy is counted too")
    p.add_argument("--misses", type=int, default=0, metavar="N",
                   help="timed reads of nodes not read before at each count, after "
                        "its reads (each node made for them, removed after; through "
                        "the proxy, every one forwarded); the strace pass counts as "
                        "many as --syscall-reads (0: none)")
    p.add_argument("--writes", type=int, default=0, metavar="N",
                   help="timed writes of the node's own value at each count, after "
                        "its reads and misses; the strace pass counts as many as "
                        "--syscall-reads (0: none)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    _add_source_options(p)
    _add_vm_options(p)
    p.set_defaults(func=cmd_xsbench)

    p = sub.add_parser("domctlbench", help="exclusive domctls while domains are created, "
                                           "destroyed and read: stock vs variants")
    _add_variants_option(p)
    p.add_argument("--creators", type=nonneg_int, default=protocol.DOMCTL_CREATORS_DEFAULT,
                   help="threads creating and destroying empty domains")
    p.add_argument("--readers", type=nonneg_int, default=protocol.DOMCTL_READERS_DEFAULT,
                   help="threads reading domain information")
    p.add_argument("--stubs", type=nonneg_int, default=0,
                   help="Xenstore stub domains (XSM_XS_PRIV) issuing the domctls they may "
                        f"as fast as they can, 0..{protocol.DOMCTL_STUBS_MAX}")
    p.add_argument("--probes", type=positive_int, default=protocol.DOMCTL_PROBES_DEFAULT,
                   help="pause/unpause pairs timed per phase")
    p.add_argument("--rounds", type=positive_int, default=protocol.DOMCTL_ROUNDS_DEFAULT,
                   help="rounds of idle then loaded probes (medians are reported)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    _add_source_options(p)
    _add_vm_options(p)
    p.set_defaults(func=cmd_domctlbench)

    p = sub.add_parser("autoscale", help="replay a function-invocation trace on an "
                                         "autoscaler: cold starts, stock vs variants")
    p.add_argument("--trace", type=Path, default=None,
                   help="app,func,end_timestamp,duration CSV (Azure Functions 2021 format; "
                        "default the shipped sample)")
    _add_variants_option(p)
    p.add_argument("--speedup", type=positive_number, default=10.0,
                   help="divide the trace's times and durations by this")
    p.add_argument("--replicas", type=positive_int, default=1,
                   help="copies of every function, each shifted by a random offset")
    p.add_argument("--seed", type=int, default=0, help="for the replicas' offsets")
    p.add_argument("--keep-alive", type=nonneg_number, default=None, metavar="S",
                   help="how long an idle instance lives (default "
                        f"{PLATFORM_KEEP_ALIVE_S:.0f} s / speedup)")
    p.add_argument("--guest-memory", type=positive_int, default=128, metavar="MIB")
    p.add_argument("--max-inflight", type=positive_int, default=8,
                   help="creates and destroys at once")
    p.add_argument("--driver", choices=protocol.STORM_DRIVERS,
                   default=protocol.STORM_DRIVER_DEFAULT)
    p.add_argument("--running", type=nonneg_int, default=0, metavar="N",
                   help="other idle guests up through the replay")
    p.add_argument("--spinners", type=nonneg_int, default=0, metavar="N",
                   help="spinning guests per pCPU (a loaded host: no idle scrubbing)")
    p.add_argument("--rounds", type=positive_int, default=1,
                   help="replays of the trace per variant, the variants taking turns "
                        "(A B, then B A); a variant's figures pool its replays")
    p.add_argument("--share-boot", action="store_true",
                   help="variants that differ only in +libcache share each round's boot and "
                        "take turns in it (each replay switches the cache for itself)")
    p.add_argument("--out", type=Path, default=AUTOSCALE_OUT,
                   help=f"where {BENCH_JSON} and autoscale.png go (default {AUTOSCALE_OUT}: "
                        f"not {DEFAULT_OUT}, whose {BENCH_JSON} is a boot storm's)")
    _add_source_options(p)
    _add_vm_options(p)
    p.set_defaults(func=cmd_autoscale)

    p = sub.add_parser("project", help="project an autoscale run's mean cold start onto "
                                       "more cores (a model, not a measurement)")
    p.add_argument("bench_json", type=Path, help="an autoscale run's bench.json (updated)")
    p.add_argument("--serial-from", type=Path, required=True, metavar="BENCH_JSON",
                   help="a boot storm's bench.json (C=1 and a larger C): the serial "
                        "fractions")
    p.add_argument("--cores", type=positive_int, nargs="+", default=[16, 64])
    p.set_defaults(func=cmd_project)
    return ap


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt("SIGTERM")


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr)])
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C stops the VM even when this process was started with SIGINT
    # ignored (a shell without job control does that to background jobs,
    # and Python then leaves it ignored): a lab that cannot be interrupted
    # would leave QEMU running.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _dispatch(ap, args)
    except LabError as exc:
        log.debug("where the error came from (-v)", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:
        # A file's bytes, not the command line: the readers that know the
        # file name it (LabError); this is the last resort.
        print(f"error: a file is not UTF-8 text: {exc}", file=sys.stderr)
        return 2
    except RequestFieldError as exc:
        option = REQUEST_FIELD_OPTIONS.get(exc.field)
        ap.error(f"{option} {exc.problem}" if option else str(exc))
    except ValueError as exc:
        ap.error(str(exc))
    except OSError as exc:
        # A file or directory the lab could not make, read or write.
        print(f"error: {_os_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        doing = progress.interrupted_step()
        print("interrupted" + (f" while {doing}" if doing else "")
              + " (any VM it had started is stopped)", file=sys.stderr)
        return 130
    return 0  # pragma: no cover - ap.error exits


def _os_error_text(exc: OSError) -> str:
    """"PATH: what went wrong" for an OSError (its own text without a path)."""
    if exc.filename is None or not exc.strerror:
        return str(exc)
    return f"{exc.filename}: {exc.strerror}" + ("" if exc.filename2 is None
                                              else f" ({exc.filename2})")


def _dispatch(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the subcommand: the ``cmd_*`` function its parser registered
    (the ``--series-as`` pairs checked against ``--variants`` first, and
    ``--series`` against the variants it would be built for)."""
    if hasattr(args, "series_as"):
        args.named_series = variants.named_series_map(args.series_as)
        variants.check_named_series(args.variants, args.named_series)
    if hasattr(args, "variants"):
        variants.check_series_used(args.variants, getattr(args, "series", None))
    elif hasattr(args, "variant"):
        variants.check_series_used([variants.RunVariant.parse(args.variant)],
                                   getattr(args, "series", None))
    result: int = args.func(ap, args)
    return result
