"""The host <-> dom0 agent contract: exchange-directory layout and dom0 paths.

Used by both sides (the agent imports nothing else of the lab's), so every
name here is defined once.
"""

#: Exchange directory entries (relative to its root).
LAB_DIR = "lab"
CONFIG = "lab/config.json"      # host -> agent: toolstack locations
BOOT_PYTHON = "lab/python"      # host -> init: interpreter path
BOOT_BINDS = "lab/binds"        # host -> init: host paths to bind into dom0
BOOT_PYTHONPATH = "lab/pythonpath"
READY = "lab/ready"             # agent -> host: toolstack is up
FAILED = "lab/failed"           # agent -> host: setup failed (traceback)
AGENT_LOG = "lab/agent.log"
REQ_DIR = "req"
RSP_DIR = "rsp"
OUT_DIR = "out"
SHARE_DIR = "share"             # host -> dom0 files (Dom0.share)

#: Files a dom0 driver writes in its output directory (ENV_OUT): what it
#: measured, and (the storm) how far it has got, for the host to show.
RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.json"

#: Where dom0 mounts the exchange directory (init.sh mounts it there).
DOM0_XCHG = "/xchg"

#: How often the agent and the host look for new files.
POLL_INTERVAL_S = 0.05

#: dom0 paths.
XS_TRACE = "/var/log/xen/xenstored-trace.log"
CONSOLE_LOG_DIR = "/var/log/xen/console"

#: The benchmark's phases in dom0, in order (progress.json "phase"): a timed
#: storm with xenstored's trace off, then the same storm traced, to count
#: Xenstore requests (pyxen.lab.dom0.dom0bench says why there are two).
BENCH_PHASES = ("create", "destroy", "count-create", "count-destroy")

#: Environment a dom0 command sees.
ENV_OUT = "PYXEN_OUT"                    # directory handed back to the host
ENV_XS_TRACE = "PYXEN_XS_TRACE"          # xenstored's request trace
ENV_CONSOLE_LOG_DIR = "PYXEN_CONSOLE_LOG_DIR"
ENV_XS_CACHE_CONTROL = "PYXEN_XS_CACHE_CONTROL"  # set when dom0 runs xenstore_cache
ENV_LIB_CACHE = "PYXEN_LIB_CACHE"        # "1": pyxen's libxl contexts use libxenstore's cache
#: libxenstore's own switch: "0" turns its cache off for every program in
#: dom0, whatever it asks for, so only a +libcache variant reads through it.
ENV_LIBXENSTORE_CACHE = "LIBXENSTORE_CACHE"

#: The in-dom0 test suite's environment, set by its runner on the host
#: (tests/nested/test_in_dom0.py): the variant the lab booted ("stock" makes
#: tests that show a stock defect the series fixes expect the defect) ...
ENV_VARIANT = "PYXEN_VARIANT"
#: ... and the run lengths (cycles, examples, rounds) a soak sets on the host,
#: forwarded to dom0.  The tests' ``run_length`` fixture reads only these, so
#: a length the runner does not forward cannot be added by mistake.
ENV_RUN_LENGTHS = ("PYXEN_STATEFUL_EXAMPLES", "PYXEN_STRESS_CYCLES",
                   "PYXEN_NAME_RACE_CYCLES", "PYXEN_LIBCACHE_ROUNDS")

#: The lab's LD_PRELOAD library that makes the domains a program creates
#: Xenstore domains (XSM_XS_PRIV) when ENV_XS_DOMAIN is "1"; its path in
#: dom0 is in ENV_XS_DOMAIN_PRELOAD.
XS_DOMAIN_PRELOAD = "xs-domain-preload.so"
ENV_XS_DOMAIN_PRELOAD = "PYXEN_XS_DOMAIN_PRELOAD"
ENV_XS_DOMAIN = "PYXEN_XS_DOMAIN"
XS_CACHE_LOG = "/var/log/xen/xenstore-cache.log"
XS_CACHE_READY = "/run/xenstore-cache.ready"
XS_CACHE_START_S = 30.0

#: How the storm driver (dom0bench) creates and destroys domains: pyxen
#: (libxl in-process, threads) or unmodified xl processes.
STORM_DRIVERS = ("pyxen", "xl")
STORM_DRIVER_DEFAULT = "pyxen"


def running_guests_s(count: int) -> float:
    """How long a dom0 command may take, beyond its own work, to bring up
    ``count`` idle guests (``--running``) and destroy them again: 20 s each,
    plus 0.12 s for every guest already up, because on stock's toolstack
    each create and each destroy by name reads every running domain's name
    and xenstored visits every connection (stock took 1,062 s to bring up
    256 under TCG, 3,758 s for 500).  A bound for a hung VM, not an
    estimate: 500 get 7 hours."""
    if count < 0:
        raise ValueError(f"count of running guests must be >= 0, got {count}")
    return 20.0 * count + 0.06 * count * count


#: The least memory a benchmark's tiny guest is given.
MIN_GUEST_MIB = 4
#: What a tiny guest costs Xen beyond its memory (page tables, p2m, Xen's
#: structures), MiB: for the checks that a storm's guests fit.
GUEST_OVERHEAD_MIB = 2

#: The scrub driver's fill: ballast on the guests' node only, or on every node.
SCRUB_FILLS = ("node", "host")
SCRUB_FILL_DEFAULT = "host"
#: The scrub policy the driver sets where Xen has XEN_SYSCTL_scrub_op (the
#: hypervisor series' per-node workers, off by default): "eager" switches the
#: workers on, "idle" keeps stock's behaviour, "boot" leaves what Xen booted
#: with, "alternate" runs each repetition of the gaps twice in the same boot,
#: workers on and off in turn (SCRUB_ALTERNATION, the order swapped every
#: repetition; the sizes run with them on).  A Xen without the sysctl runs
#: stock's behaviour whatever is asked.
SCRUB_POLICIES = ("eager", "idle", "boot", "alternate")
SCRUB_ALTERNATE = "alternate"
SCRUB_ALTERNATION = ("eager", "idle")
SCRUB_POLICY_DEFAULT = "eager"
#: Its gaps between death and birth (s), their bound, and its guest sizes (MiB).
SCRUB_GAPS_DEFAULT = (0.0, 0.5, 2.0, 5.0)
SCRUB_MAX_GAP_S = 600.0
SCRUB_SIZES_DEFAULT = (64, 256, 512, 1024)

#: The Xenstore latency benchmark (xsbench): idle connections held open
#: while a client's reads are timed, and the node it reads.
XS_IDLE_DEFAULT = (0, 64, 256, 512)
XS_READ_PATH = "/local/domain/0/name"
#: Timed reads at each count, and rounds over all counts.
XS_READS_DEFAULT = 1000
XS_ROUNDS_DEFAULT = 5
#: Reads during which xenstored's system calls are counted (strace -c),
#: once per count after the timed rounds.
XS_SYSCALL_READS_DEFAULT = 300
#: At most this many idle connections (each is an open file in dom0).
XS_MAX_IDLE = 900
#: The requests xsbench times, in its order: a read of XS_READ_PATH (through
#: the proxy, a hit), a "miss" (a read of a node not read before) and a
#: write of the node's own value.
XS_REQUESTS = ("read", "miss", "write")
#: Where xsbench's misses read: nodes it makes for a batch of reads of
#: nodes not read before, and removes after it.
XS_MISS_DIR = "/tool/xsbench-misses"
#: At most this many misses a batch (each is a node made, then removed).
XS_MAX_MISSES = 5000

#: The domctl fairness benchmark (domctlbench): threads that create and
#: destroy empty domains, threads that read domain information, and the
#: exclusive domctls (pause, unpause) timed meanwhile and without them.
DOMCTL_CREATORS_DEFAULT = 2
DOMCTL_READERS_DEFAULT = 1
DOMCTL_PROBES_DEFAULT = 300
DOMCTL_ROUNDS_DEFAULT = 3
#: Xenstore stub domains domctlbench may start (each takes a vCPU's worth
#: of a pCPU, for ever).
DOMCTL_STUBS_MAX = 4
#: Their names in dom0.
DOMCTL_STUB_PREFIX = "pyxen-domctl-stub"
#: Empty domains get IDs from here up (far from the lab's guests), a block
#: of DOMCTL_IDS_PER_CREATOR per creating thread.
DOMCTL_FIRST_ID = 20000
DOMCTL_IDS_PER_CREATOR = 500


def lib_cache_env(on: bool) -> dict[str, str]:
    """The environment that turns libxenstore's cache on or off for a dom0
    command: pyxen's contexts ask for it, and libxenstore lets them."""
    value = "1" if on else "0"
    return {ENV_LIB_CACHE: value, ENV_LIBXENSTORE_CACHE: value}
