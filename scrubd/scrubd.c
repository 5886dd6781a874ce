/*
 * scrubd: watches and steers the hypervisor's scrubbing of freed memory.
 *
 * Every interval it reads XEN_SYSCTL_scrub_op (per-node dirty pages and who
 * scrubbed what) and the host's free memory through libxenctrl, logs one JSON
 * line, and switches the scrub policy by watermarks on free *clean* memory
 * (free minus dirty): below the low watermark the per-node workers are
 * switched on (eager, with the configured budget), above the high one they
 * are switched off (idle: only idle CPUs scrub, guests keep every cycle).
 * Between the two the policy is left alone (hysteresis).
 *
 *   scrubd run [--interval S] [--low-mib N --high-mib N]
 *              [--budget-us N --period-us N] [--socket PATH] [--once]
 *   scrubd status [--socket PATH]
 *
 * "scrubd status" prints the last line the daemon logged, read from its
 * control socket (root only, 0600, like xenstored's).  Without watermarks
 * scrubd only watches.
 *
 * Exit status: 0 stopped by SIGTERM/SIGINT/SIGHUP (or --once done); 2 bad
 * options; 3 this host cannot run it (no privcmd, not root, a Xen without the
 * scrub sysctl or with more nodes than scrubd takes, another scrubd running):
 * restarting cannot help either (the systemd unit's RestartPreventExitStatus);
 * 1 anything else, and a stop that could not put back what scrubd changed.
 * Once the socket is up, a failed read is logged (and reported by "status")
 * and tried again at the next interval: it does not stop the daemon.  A
 * failed set, from the first sample on, is reported in the sample's line;
 * it is tried again at the next interval, unless its errno says it never
 * can work: then scrubd stops steering and only watches.
 *
 * One scrubd steers at a time: "run", and "run --once" with watermarks, hold
 * an exclusive flock() on "<socket>.lock" for as long as they run.
 *
 * The daemon ("run" with watermarks, not --once) puts back at its stop the
 * policy, budget and period Xen had just before its first set, if Xen still
 * holds what scrubd set: a change by someone else (by hand, another tool)
 * since is left, and logged.  Before each set it records them, and what it
 * set and is setting, in "<socket>.saved", removed at stop: a daemon started
 * after one that did not stop cleanly (killed, crashed, or failing to put
 * them back) puts back what that one found, again only if Xen still holds
 * what that one set.  The file is used only in a directory no other user
 * can write, only if it is a regular file of scrubd's user that no other
 * can write, and only from this boot.  "run --once" sets and leaves.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <xenctrl.h>

#define SCRUBD_SOCKET  "/run/scrubd/scrubd.sock"
#define PAGES_PER_MIB  ((uint64_t)256)

#define EXIT_USAGE     2
#define EXIT_HOST      3

/* Room for the status line: its head, and one node's object at most. */
#define LINE_HEAD_MAX  1024
#define LINE_NODE_MAX  512
/* Far more nodes than Xen's MAX_NUMNODES; bounds what a reply makes us allocate. */
#define NODES_MAX      4096
/* "scrubd status" reads at most one line of NODES_MAX nodes. */
#define STATUS_READ_MAX (LINE_HEAD_MAX + NODES_MAX * LINE_NODE_MAX)
/*
 * Status clients being sent their line at once; a client that takes nothing
 * for CLIENT_TIMEOUT_MS is dropped.  While all slots are busy new
 * connections wait in the listen backlog.  After EMFILE/ENFILE the socket is
 * not listened to for ACCEPT_BACKOFF_MS.
 */
#define CLIENTS_MAX      16
#define CLIENT_TIMEOUT_MS 1000
#define ACCEPT_BACKOFF_MS 200
/* "scrubd status" gives up on a daemon that sends nothing for this long. */
#define STATUS_TIMEOUT_S 5
/*
 * At most one "not accepting" message per this many seconds, and one about
 * a sysctl that keeps failing the same way.
 */
#define ACCEPT_LOG_S     10
#define FAIL_LOG_S       60
/* Room for "<socket>" and what scrubd appends to it: ".lock", ".saved.tmp". */
#define SOCKET_PATH_MAX  (sizeof(((struct sockaddr_un *)0)->sun_path) + 16)
/*
 * The first word of "<socket>.saved", which says what to put back at stop
 * and what scrubd set (v1 had no more than the former: it is not trusted).
 */
#define SAVED_MAGIC      "scrubd-saved-v2"
/* The kernel's boot id (a build for tests may name another file). */
#ifndef SCRUBD_BOOT_ID
#define SCRUBD_BOOT_ID   "/proc/sys/kernel/random/boot_id"
#endif

struct config {
    double interval_s;
    long long low_mib, high_mib;   /* -1: not steering */
    uint32_t budget_us, period_us; /* 0: keep the hypervisor's */
    const char *socket_path;
    bool once;
};

static volatile sig_atomic_t stopping;

/* SIGTERM, SIGINT and SIGHUP: stop, putting back what scrubd changed. */
static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: scrubd run [--interval S] [--low-mib N --high-mib N]\n"
            "                  [--budget-us N --period-us N] [--socket PATH] [--once]\n"
            "       scrubd status [--socket PATH]\n");
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/*
 * A whole non-negative number in [min, max], in decimal digits only (no
 * sign, no blanks, nothing after it): 0, or -EINVAL.  For the options and
 * the saved file alike.
 */
static int parse_digits(const char *s, long long min, long long max,
                        long long *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if ( !is_digit(s[0]) || errno || end == s || *end || v < min || v > max )
        return -EINVAL;
    *out = v;
    return 0;
}

/* parse_digits(), or an error naming the option. */
static int parse_num(const char *opt, const char *s, long long min,
                     long long max, long long *out)
{
    if ( parse_digits(s, min, max, out) )
    {
        fprintf(stderr, "scrubd: %s must be a whole number in %lld..%lld, got '%s'\n",
                opt, min, max, s);
        return -EINVAL;
    }
    return 0;
}

/* An absolute path that fits a socket address. */
static int check_socket_path(const char *path)
{
    if ( path[0] != '/' )
    {
        fprintf(stderr, "scrubd: --socket must be an absolute path, got '%s'\n", path);
        return -EINVAL;
    }
    if ( strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path) )
    {
        fprintf(stderr, "scrubd: --socket path too long: %s\n", path);
        return -EINVAL;
    }
    return 0;
}

static int parse_run_args(int argc, char **argv, struct config *c)
{
    static const struct option opts[] = {
        { "interval",  required_argument, NULL, 'i' },
        { "low-mib",   required_argument, NULL, 'l' },
        { "high-mib",  required_argument, NULL, 'h' },
        { "budget-us", required_argument, NULL, 'b' },
        { "period-us", required_argument, NULL, 'p' },
        { "socket",    required_argument, NULL, 's' },
        { "once",      no_argument,       NULL, 'o' },
        { NULL, 0, NULL, 0 },
    };
    long long v;
    int ch;

    while ( (ch = getopt_long(argc, argv, "", opts, NULL)) != -1 )
    {
        switch ( ch )
        {
        case 'i':
        {
            char *end;

            /* Decimal seconds: no sign, blanks, exponent, hex, inf or nan. */
            errno = 0;
            c->interval_s = strtod(optarg, &end);
            if ( !*optarg || strspn(optarg, "0123456789.") != strlen(optarg) ||
                 errno || end == optarg || *end || !(c->interval_s >= 0.05) ||
                 c->interval_s > 3600 )
            {
                fprintf(stderr, "scrubd: --interval must be 0.05..3600 seconds, "
                        "got '%s'\n", optarg);
                return -EINVAL;
            }
            break;
        }
        case 'l':
            if ( parse_num("--low-mib", optarg, 0, LLONG_MAX / 2, &c->low_mib) )
                return -EINVAL;
            break;
        case 'h':
            if ( parse_num("--high-mib", optarg, 0, LLONG_MAX / 2, &c->high_mib) )
                return -EINVAL;
            break;
        case 'b':
            if ( parse_num("--budget-us", optarg, XEN_SYSCTL_SCRUB_BUDGET_MIN_US,
                           XEN_SYSCTL_SCRUB_BUDGET_MAX_US, &v) )
                return -EINVAL;
            c->budget_us = v;
            break;
        case 'p':
            if ( parse_num("--period-us", optarg, XEN_SYSCTL_SCRUB_PERIOD_MIN_US,
                           XEN_SYSCTL_SCRUB_PERIOD_MAX_US, &v) )
                return -EINVAL;
            c->period_us = v;
            break;
        case 's':
            c->socket_path = optarg;
            break;
        case 'o':
            c->once = true;
            break;
        default:
            usage(stderr);
            return -EINVAL;
        }
    }
    if ( optind != argc )
    {
        fprintf(stderr, "scrubd: unexpected argument '%s'\n", argv[optind]);
        return -EINVAL;
    }
    if ( (c->low_mib < 0) != (c->high_mib < 0) )
    {
        fprintf(stderr, "scrubd: give both --low-mib and --high-mib, or neither\n");
        return -EINVAL;
    }
    if ( c->low_mib >= 0 && c->low_mib >= c->high_mib )
    {
        fprintf(stderr, "scrubd: --low-mib (%lld) must be below --high-mib (%lld)\n",
                c->low_mib, c->high_mib);
        return -EINVAL;
    }
    if ( !c->budget_us != !c->period_us )
    {
        fprintf(stderr, "scrubd: give both --budget-us and --period-us, or neither\n");
        return -EINVAL;
    }
    /* Xen's rule: a worker leaves guests at least nine tenths of a CPU. */
    if ( (uint64_t)c->budget_us * XEN_SYSCTL_SCRUB_PERIOD_PER_BUDGET > c->period_us )
    {
        fprintf(stderr, "scrubd: --budget-us (%" PRIu32 ") is more than 1/%d of "
                "--period-us (%" PRIu32 ")\n", c->budget_us,
                XEN_SYSCTL_SCRUB_PERIOD_PER_BUDGET, c->period_us);
        return -EINVAL;
    }
    /* Without watermarks nothing is set: a budget would be ignored. */
    if ( c->budget_us && c->low_mib < 0 )
    {
        fprintf(stderr, "scrubd: --budget-us and --period-us need --low-mib and "
                "--high-mib (without watermarks scrubd sets nothing)\n");
        return -EINVAL;
    }
    return check_socket_path(c->socket_path);
}

static const char *policy_name(uint32_t policy)
{
    switch ( policy )
    {
    case XEN_SYSCTL_SCRUB_POLICY_idle:  return "idle";
    case XEN_SYSCTL_SCRUB_POLICY_eager: return "eager";
    }
    return "unknown";
}

/* Appends to buf, never past its size; returns false once it is full. */
static bool append(char *buf, size_t size, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool append(char *buf, size_t size, size_t *used, const char *fmt, ...)
{
    va_list ap;
    int n;

    if ( *used >= size )
        return false;
    va_start(ap, fmt);
    n = vsnprintf(buf + *used, size - *used, fmt, ap);
    va_end(ap);
    if ( n < 0 || (size_t)n >= size - *used )
    {
        *used = size;
        return false;
    }
    *used += n;
    return true;
}

/* The node counters and the status line, sized from the node count. */
struct samples {
    xc_scrub_node_t *nodes;
    unsigned int cap;          /* entries in nodes */
    char *line;                /* the last status line, for "scrubd status" */
    size_t line_size;
};

static int grow(struct samples *st, unsigned int nr)
{
    xc_scrub_node_t *nodes;
    size_t line_size;
    char *line;

    if ( nr <= st->cap )
        return 0;
    if ( nr > NODES_MAX )
    {
        errno = E2BIG;
        return -1;
    }
    nodes = realloc(st->nodes, nr * sizeof(*nodes));
    if ( !nodes )
        return -1;
    st->nodes = nodes;
    line_size = LINE_HEAD_MAX + (size_t)nr * LINE_NODE_MAX;
    line = realloc(st->line, line_size);
    if ( !line )
        return -1;
    if ( !st->line_size )
        line[0] = '\0';
    st->line = line;
    st->line_size = line_size;
    st->cap = nr;
    return 0;
}

/*
 * Reads the policy and every node's counters, growing the array when Xen
 * reports more nodes than it holds (ENOBUFS, with the count).
 */
static int read_scrub(xc_interface *xch, struct samples *st, uint32_t *policy,
                      uint32_t *budget, uint32_t *period, unsigned int *nr)
{
    unsigned int tries;

    for ( tries = 0; tries < 4; tries++ )
    {
        *nr = st->cap;
        if ( !xc_scrub_get(xch, policy, budget, period, nr, st->nodes) )
            return *nr <= st->cap ? 0 : (errno = EPROTO, -1);
        if ( errno != ENOBUFS || *nr <= st->cap )
            return -1;
        if ( grow(st, *nr) )
            return -1;
    }
    errno = ENOBUFS;  /* the node count kept changing */
    return -1;
}

/* The status line for a failed sample, so that "scrubd status" shows it. */
static void error_line(struct samples *st, const char *what, int err)
{
    struct timespec now;
    size_t used = 0;

    clock_gettime(CLOCK_REALTIME, &now);
    append(st->line, st->line_size, &used,
           "{\"time\": %lld.%03ld, \"error\": \"%s: %s\"}",
           (long long)now.tv_sec, now.tv_nsec / 1000000, what, strerror(err));
}

/*
 * What an errno from the scrub sysctl may mean, for the message: reading, or
 * (@setting) setting @policy.
 */
static const char *sysctl_hint(int err, bool setting, uint32_t policy)
{
    switch ( err )
    {
    case ENOSYS:
        return " (this Xen has no scrub workers)";
    case EPERM:
    case EACCES:
        return setting ?
            " (the hypervisor may lack the scrub sysctl, or its Flask policy "
            "denies xen2:scrub_policy)" :
            " (the hypervisor may lack the scrub sysctl or be another version "
            "than this libxenctrl, or its Flask policy denies it)";
    case EOPNOTSUPP:
        return setting && policy == XEN_SYSCTL_SCRUB_POLICY_eager ?
            " (cpupool 0 runs neither credit nor credit2)" : "";
    }
    return "";
}

/* Whether a failed set of the policy can never work on this host. */
static bool set_permanent(int err)
{
    return err == EOPNOTSUPP || err == EPERM || err == EACCES || err == ENOSYS;
}

static time_t mono_s(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec;
}

/*
 * A failure that may repeat at every interval: logged when it starts, when
 * its errno changes, and at most once per FAIL_LOG_S while it lasts.
 */
struct fail_log {
    int err;                   /* failing with this errno; 0: working */
    time_t logged;             /* when last logged (CLOCK_MONOTONIC) */
    unsigned long unlogged;    /* failures since, not logged */
};

/* Whether to log failure @err now; counts it if not. */
static bool fail_due(struct fail_log *fl, int err)
{
    time_t now = mono_s();

    if ( fl->err == err && now - fl->logged < FAIL_LOG_S )
    {
        fl->unlogged++;
        return false;
    }
    fl->err = err;
    fl->logged = now;
    return true;
}

/* The tail of a failure's message: how often it failed unlogged. */
static void fail_tail(struct fail_log *fl, const char *again)
{
    if ( fl->unlogged )
        fprintf(stderr, "; %lu more failures since, not logged", fl->unlogged);
    fprintf(stderr, "; %s\n", again);
    fl->unlogged = 0;
}

/* Whether a failure ended: then it is logged that @what works again. */
static void fail_over(struct fail_log *fl, const char *what)
{
    if ( !fl->err )
        return;
    fprintf(stderr, "scrubd: %s works again%s\n", what,
            fl->unlogged ? " (after failures not logged)" : "");
    fl->err = 0;
    fl->unlogged = 0;
}

/* A policy with its budget and period, as Xen reports or takes them. */
struct scrub_vals {
    uint32_t policy, budget, period;
};

static bool same_vals(const struct scrub_vals *a, const struct scrub_vals *b)
{
    return a->policy == b->policy && a->budget == b->budget &&
           a->period == b->period;
}

/*
 * Steering by watermarks, and what to put back at stop.  Before each set,
 * Xen's values become orig unless they are held or pending (what scrubd set
 * or was setting): a change by someone else since is the new original.  At
 * stop orig is put back only if Xen still holds held or pending.
 */
struct steering {
    bool on;                   /* steering: watermarks, no permanent failure */
    bool touched;              /* a set was tried, or the saved file was loaded */
    bool from_saved;           /* orig/held/pending from a scrubd before this one */
    struct scrub_vals orig;    /* what Xen had before scrubd set: put back at stop */
    struct scrub_vals held;    /* what Xen holds after scrubd's last set that worked */
    struct scrub_vals pending; /* what scrubd's last set tried (= held if it worked) */
    char saved_path[SOCKET_PATH_MAX];  /* "<socket>.saved"; "": none */
    char saved_line[160];      /* the saved file's line last written (or tried) */
    char boot_id[40];          /* the kernel's, to tell a reboot; "": unreadable */
    int set_err;               /* this sample's failed set: errno, 0 if none */
    uint32_t set_policy;       /* ... and the policy it tried to set */
    struct fail_log read_log, set_log;
};

static void save_orig(struct steering *s);

/*
 * One sample: read, steer, format into st->line.  Returns 0, or -1 with
 * errno and a message on stderr when the sysctl could not be read (st->line
 * then says what failed).  A failed set still gives the sample: s->set_err
 * and the line say it failed, and after a permanent failure s->on is false.
 */
static int sample(xc_interface *xch, const struct config *c, struct samples *st,
                  struct steering *s)
{
    unsigned int nr, i;
    uint32_t policy, budget, period;
    xc_physinfo_t phys = { 0 };
    uint64_t dirty = 0, clean_mib;
    const char *switched = NULL;
    struct timespec now;
    size_t used = 0;
    int err;

    s->set_err = 0;
    if ( read_scrub(xch, st, &policy, &budget, &period, &nr) )
    {
        err = errno;
        if ( fail_due(&s->read_log, err) )
        {
            fprintf(stderr, "scrubd: reading XEN_SYSCTL_scrub_op: %s%s", strerror(err),
                    sysctl_hint(err, false, 0));
            fail_tail(&s->read_log, "tried again at each interval");
        }
        error_line(st, "reading XEN_SYSCTL_scrub_op", err);
        errno = err;
        return -1;
    }
    if ( xc_physinfo(xch, &phys) )
    {
        err = errno;
        if ( fail_due(&s->read_log, err) )
        {
            fprintf(stderr, "scrubd: xc_physinfo: %s", strerror(err));
            fail_tail(&s->read_log, "tried again at each interval");
        }
        error_line(st, "xc_physinfo", err);
        errno = err;
        return -1;
    }
    fail_over(&s->read_log, "sampling");
    for ( i = 0; i < nr; i++ )
        dirty += st->nodes[i].dirty_pages;
    clean_mib = (phys.free_pages > dirty ? phys.free_pages - dirty : 0) / PAGES_PER_MIB;

    if ( s->on )
    {
        uint32_t want = policy;

        if ( clean_mib < (uint64_t)c->low_mib )
            want = XEN_SYSCTL_SCRUB_POLICY_eager;
        else if ( clean_mib > (uint64_t)c->high_mib )
            want = XEN_SYSCTL_SCRUB_POLICY_idle;
        if ( want != policy ||
             (want == XEN_SYSCTL_SCRUB_POLICY_eager && c->budget_us &&
              (budget != c->budget_us || period != c->period_us)) )
        {
            struct scrub_vals cur = { policy, budget, period };

            /*
             * What to put back at stop: Xen's values now, just before this
             * set, unless they are what scrubd (this one, or one before it
             * that did not stop cleanly) set or was setting; then what was
             * there before that still is.  Anything else was set by someone
             * else since (by hand, another tool): that is the original now.
             */
            if ( !s->touched ||
                 !(same_vals(&cur, &s->held) || same_vals(&cur, &s->pending)) )
                s->orig = cur;
            s->held = cur;
            /* Xen keeps its budget and period when given none (0). */
            s->pending.policy = want;
            s->pending.budget = c->budget_us ? c->budget_us : budget;
            s->pending.period = c->budget_us ? c->period_us : period;
            s->touched = true;
            /* Recorded before it changes: a crash right after must not lose it. */
            save_orig(s);
            if ( xc_scrub_set(xch, want, c->budget_us, c->period_us) )
            {
                err = errno;
                s->set_err = err;
                s->set_policy = want;
                if ( set_permanent(err) )
                {
                    /* Once, and never tried again: watching goes on. */
                    fprintf(stderr, "scrubd: setting the %s policy: %s%s; "
                            "no longer steering, only watching\n",
                            policy_name(want), strerror(err), sysctl_hint(err, true, want));
                    s->on = false;
                }
                else if ( fail_due(&s->set_log, err) )
                {
                    fprintf(stderr, "scrubd: setting the %s policy: %s%s",
                            policy_name(want), strerror(err), sysctl_hint(err, true, want));
                    fail_tail(&s->set_log, "tried again at each interval");
                }
            }
            else
            {
                fail_over(&s->set_log, "setting the scrub policy");
                s->held = s->pending;
                policy = want;
                if ( c->budget_us )
                {
                    budget = c->budget_us;
                    period = c->period_us;
                }
                switched = policy_name(want);
            }
        }
    }

    clock_gettime(CLOCK_REALTIME, &now);
    append(st->line, st->line_size, &used,
           "{\"time\": %lld.%03ld, \"policy\": \"%s\", \"budget_us\": %" PRIu32
           ", \"period_us\": %" PRIu32 ", \"free_mib\": %" PRIu64
           ", \"dirty_mib\": %" PRIu64 ", \"clean_free_mib\": %" PRIu64
           ", \"switched_to\": %s%s%s, \"steering\": %s, \"set_error\": ",
           (long long)now.tv_sec, now.tv_nsec / 1000000, policy_name(policy),
           budget, period, (uint64_t)phys.free_pages / PAGES_PER_MIB,
           dirty / PAGES_PER_MIB, clean_mib,
           switched ? "\"" : "", switched ? switched : "null", switched ? "\"" : "",
           s->on ? "true" : "false");
    if ( s->set_err )
        append(st->line, st->line_size, &used,
               "{\"policy\": \"%s\", \"errno\": %d, \"error\": \"%s\"}",
               policy_name(s->set_policy), s->set_err, strerror(s->set_err));
    else
        append(st->line, st->line_size, &used, "null");
    append(st->line, st->line_size, &used, ", \"nodes\": [");
    for ( i = 0; i < nr; i++ )
        append(st->line, st->line_size, &used,
               "%s{\"node\": %u, \"dirty_pages\": %" PRIu64 ", \"freed_dirty\": %" PRIu64
               ", \"scrubbed_local\": %" PRIu64 ", \"scrubbed_remote\": %" PRIu64
               ", \"scrubbed_alloc\": %" PRIu64 ", \"scrubbed_worker\": %" PRIu64
               ", \"taken_dirty\": %" PRIu64 ", \"worker_runs\": %" PRIu64
               ", \"deferred\": %" PRIu64 ", \"offlined\": %" PRIu64 "}",
               i ? ", " : "", i, st->nodes[i].dirty_pages, st->nodes[i].freed_dirty,
               st->nodes[i].scrubbed_local, st->nodes[i].scrubbed_remote,
               st->nodes[i].scrubbed_alloc, st->nodes[i].scrubbed_worker,
               st->nodes[i].taken_dirty, st->nodes[i].worker_runs,
               st->nodes[i].deferred, st->nodes[i].offlined);
    if ( !append(st->line, st->line_size, &used, "]}") )
    {
        /* Cannot happen: the line is sized for the nodes. */
        fprintf(stderr, "scrubd: status line longer than %zu bytes\n", st->line_size);
        error_line(st, "formatting the status", ENOSPC);
        errno = ENOSPC;
        return -1;
    }
    return 0;
}

/*
 * The kernel's boot id, or "" when it cannot be read: then no saved file is
 * trusted (it may be from before a reboot) nor written.
 */
static void read_boot_id(char *buf, size_t size)
{
    FILE *f = fopen(SCRUBD_BOOT_ID, "re");

    if ( !f || !fgets(buf, size, f) )
        buf[0] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    if ( strchr(buf, ' ') )
        buf[0] = '\0';
    if ( f )
        fclose(f);
}

/*
 * Whether @v is what Xen's set takes, the rule the options are held to:
 * idle or eager, and a budget of 10-1000 us and a period of 1 ms-1 s with
 * the budget at most a tenth of the period, or both 0 (keep Xen's).
 */
static bool vals_ok(const struct scrub_vals *v)
{
    if ( v->policy != XEN_SYSCTL_SCRUB_POLICY_idle &&
         v->policy != XEN_SYSCTL_SCRUB_POLICY_eager )
        return false;
    if ( !v->budget && !v->period )
        return true;
    return v->budget >= XEN_SYSCTL_SCRUB_BUDGET_MIN_US &&
           v->budget <= XEN_SYSCTL_SCRUB_BUDGET_MAX_US &&
           v->period >= XEN_SYSCTL_SCRUB_PERIOD_MIN_US &&
           v->period <= XEN_SYSCTL_SCRUB_PERIOD_MAX_US &&
           (uint64_t)v->budget * XEN_SYSCTL_SCRUB_PERIOD_PER_BUDGET <= v->period;
}

/*
 * Whether @socket_path's directory can hold "<socket>.saved": a directory
 * owned by scrubd's effective user that neither group nor others can write.
 * Else someone else could plant the file (or its ".tmp") and have scrubd set
 * what it says at stop.  Says why not on stderr.
 */
static bool saved_dir_ok(const char *socket_path)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char *slash;
    struct stat sb;

    snprintf(dir, sizeof(dir), "%s", socket_path);
    slash = strrchr(dir, '/'); /* an absolute path: checked when parsing */
    if ( slash == dir )
        slash++;               /* "/scrubd.sock": the root */
    *slash = '\0';
    if ( stat(dir, &sb) )
    {
        fprintf(stderr, "scrubd: %s: %s: no %s.saved is read or written; what scrubd "
                "changes is put back at a clean stop only\n", dir, strerror(errno),
                socket_path);
        return false;
    }
    if ( S_ISDIR(sb.st_mode) && sb.st_uid == geteuid() &&
         !(sb.st_mode & (S_IWGRP | S_IWOTH)) )
        return true;
    fprintf(stderr, "scrubd: %s is not a directory only uid %u can write (owner uid "
            "%u, mode %04o): no %s.saved is read or written; what scrubd changes is "
            "put back at a clean stop only\n", dir, (unsigned int)geteuid(),
            (unsigned int)sb.st_uid, (unsigned int)(sb.st_mode & 07777), socket_path);
    return false;
}

/* The saved file's line: "<magic> <orig> <held> <pending> <boot id>\n". */
static int format_saved(const struct steering *s, char *buf, size_t size)
{
    return snprintf(buf, size, SAVED_MAGIC " %" PRIu32 " %" PRIu32 " %" PRIu32
                    " %" PRIu32 " %" PRIu32 " %" PRIu32 " %" PRIu32 " %" PRIu32
                    " %" PRIu32 " %s\n", s->orig.policy, s->orig.budget,
                    s->orig.period, s->held.policy, s->held.budget, s->held.period,
                    s->pending.policy, s->pending.budget, s->pending.period,
                    s->boot_id);
}

/*
 * Writes to the saved file what to put back (orig) and what scrubd set and
 * is setting (held, pending), when that changed: through a temporary file
 * made anew (a file planted under that name is removed, not reused) and
 * rename(), so that the file is whole or absent.  A failure is logged (once
 * for what it was to say), and only a crash of this scrubd then loses what
 * to put back.
 */
static void save_orig(struct steering *s)
{
    char tmp[SOCKET_PATH_MAX + 8], buf[sizeof(s->saved_line)];
    int fd, n, err;

    if ( !s->saved_path[0] )
        return;
    n = format_saved(s, buf, sizeof(buf));
    if ( !strcmp(buf, s->saved_line) )
        return;
    strcpy(s->saved_line, buf);
    snprintf(tmp, sizeof(tmp), "%s.tmp", s->saved_path);
    if ( unlink(tmp) && errno != ENOENT )
        fd = -1;
    else
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if ( fd < 0 )
        err = errno;
    else
    {
        errno = EIO;           /* a short write sets none */
        err = write(fd, buf, n) == n ? 0 : errno;
        if ( close(fd) && !err )
            err = errno;
        if ( !err && rename(tmp, s->saved_path) )
            err = errno;
        if ( !err )
            return;
        unlink(tmp);
    }
    fprintf(stderr, "scrubd: recording in %s what to put back at stop: %s (should "
            "scrubd not stop cleanly, the next one cannot put it back)\n",
            s->saved_path, strerror(err));
}

/* The number before the next blank at *@p, in 0..UINT32_MAX; *@p moves past it. */
static bool saved_word(char **p, uint32_t *out)
{
    char *blank = strchr(*p, ' ');
    long long v;

    if ( !blank )
        return false;
    *blank = '\0';
    if ( parse_digits(*p, 0, UINT32_MAX, &v) )
        return false;
    *out = v;
    *p = blank + 1;
    return true;
}

/*
 * Why the open saved file @fd is not to be trusted, or NULL: only a regular
 * file owned by scrubd's effective user that neither group nor others can
 * write is.
 */
static const char *saved_untrusted(int fd, char *why, size_t size)
{
    struct stat sb;

    if ( fstat(fd, &sb) )
        snprintf(why, size, "%s", strerror(errno));
    else if ( !S_ISREG(sb.st_mode) )
        snprintf(why, size, "not a regular file");
    else if ( sb.st_uid != geteuid() )
        snprintf(why, size, "owned by uid %u, not %u", (unsigned int)sb.st_uid,
                 (unsigned int)geteuid());
    else if ( sb.st_mode & (S_IWGRP | S_IWOTH) )
        snprintf(why, size, "writable by others (mode %04o)",
                 (unsigned int)(sb.st_mode & 07777));
    else
        return NULL;
    return why;
}

/*
 * At the start of a steering daemon: what a scrubd before it (that did not
 * stop cleanly) found and set, from the saved file, to put back at this
 * one's stop if Xen then still holds what that one set.  The file is opened
 * without following a link or waiting on a FIFO, and read only if
 * saved_untrusted() finds nothing against it; then it must be exactly one
 * line as save_orig() writes it, with values vals_ok() takes, and of this
 * boot (whose id must be readable).  A file that fails is logged and
 * removed.
 */
static void load_orig(struct steering *s)
{
    char buf[sizeof(s->saved_line) + 1], why[64], *p, *nl;
    const char *bad = NULL;
    struct scrub_vals v[3];
    bool valid;
    ssize_t n;
    int fd, i;

    fd = open(s->saved_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if ( fd < 0 && errno == ENOENT )
        return;
    if ( fd < 0 && errno == ELOOP )
        bad = "a symbolic link";
    else if ( fd < 0 )
    {
        fprintf(stderr, "scrubd: reading %s: %s (what a scrubd before this one "
                "found is not put back)\n", s->saved_path, strerror(errno));
        return;
    }
    else
        bad = saved_untrusted(fd, why, sizeof(why));
    if ( bad )
    {
        if ( fd >= 0 )
            close(fd);
        fprintf(stderr, "scrubd: not trusting %s (%s): removing it; what it says is "
                "not put back\n", s->saved_path, bad);
        if ( unlink(s->saved_path) && errno != ENOENT )
            fprintf(stderr, "scrubd: removing %s: %s\n", s->saved_path, strerror(errno));
        return;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    if ( n < 0 )
    {
        fprintf(stderr, "scrubd: reading %s: %s (what a scrubd before this one "
                "found is not put back)\n", s->saved_path, strerror(errno));
        close(fd);
        return;
    }
    close(fd);
    buf[n] = '\0';

    /* "<magic> <9 numbers> <boot id>\n", nothing more: the numbers' words. */
    p = buf + strlen(SAVED_MAGIC) + 1;
    valid = (size_t)n < sizeof(buf) - 1 && strlen(buf) == (size_t)n &&
        !strncmp(buf, SAVED_MAGIC " ", strlen(SAVED_MAGIC) + 1);
    for ( i = 0; valid && i < 3; i++ )
        valid = saved_word(&p, &v[i].policy) && saved_word(&p, &v[i].budget) &&
                saved_word(&p, &v[i].period) && vals_ok(&v[i]);
    nl = valid ? strchr(p, '\n') : NULL;
    valid = nl && !nl[1] && nl > p && (size_t)(nl - p) < sizeof(s->boot_id) &&
            !memchr(p, ' ', nl - p);
    if ( valid )
        *nl = '\0';
    if ( !valid || !s->boot_id[0] || strcmp(p, s->boot_id) )
    {
        fprintf(stderr, "scrubd: removing %s: %s\n", s->saved_path,
                !valid ? "not what scrubd writes" :
                s->boot_id[0] ? "written before the last reboot" :
                "the boot id is unreadable, so it may be from before a reboot");
        unlink(s->saved_path);
        return;
    }
    s->orig = v[0];
    s->held = v[1];
    s->pending = v[2];
    s->touched = s->from_saved = true;
    format_saved(s, s->saved_line, sizeof(s->saved_line)); /* not rewritten as is */
    fprintf(stderr, "scrubd: a scrubd before this one did not put back the %s policy "
            "(budget %" PRIu32 " us, period %" PRIu32 " us) it found; this one puts "
            "it back at its stop if Xen then still holds what that one set\n",
            policy_name(s->orig.policy), s->orig.budget, s->orig.period);
}

/*
 * At the stop of the daemon: puts back orig if Xen still holds what scrubd
 * (this one, or one before it that did not stop cleanly) set or was setting.
 * Anything else was set by someone else since scrubd did: it is left as it
 * is, and logged.  Returns 0, or -1 (logged) when Xen could not be read or
 * set: the saved file is then kept for the next scrubd.
 */
static int restore_orig(xc_interface *xch, struct samples *st, struct steering *s)
{
    struct scrub_vals cur;
    unsigned int nr;

    if ( !s->touched )
        return 0;
    if ( read_scrub(xch, st, &cur.policy, &cur.budget, &cur.period, &nr) )
    {
        int err = errno;

        fprintf(stderr, "scrubd: reading XEN_SYSCTL_scrub_op to put back the %s "
                "policy (budget %" PRIu32 " us, period %" PRIu32 " us): %s%s; left "
                "as it is\n", policy_name(s->orig.policy), s->orig.budget,
                s->orig.period, strerror(err), sysctl_hint(err, false, 0));
        return -1;
    }
    if ( same_vals(&cur, &s->orig) )
        ; /* Never changed, or put back already. */
    else if ( same_vals(&cur, &s->held) || same_vals(&cur, &s->pending) )
    {
        if ( xc_scrub_set(xch, s->orig.policy, s->orig.budget, s->orig.period) )
        {
            int err = errno;

            fprintf(stderr, "scrubd: putting back the %s policy (budget %" PRIu32
                    " us, period %" PRIu32 " us): %s%s; left as scrubd set it\n",
                    policy_name(s->orig.policy), s->orig.budget, s->orig.period,
                    strerror(err), sysctl_hint(err, true, s->orig.policy));
            return -1;
        }
        fprintf(stderr, "scrubd: put back the %s policy (budget %" PRIu32 " us, "
                "period %" PRIu32 " us)\n", policy_name(s->orig.policy),
                s->orig.budget, s->orig.period);
    }
    else
        fprintf(stderr, "scrubd: not putting back the %s policy (budget %" PRIu32
                " us, period %" PRIu32 " us): Xen has the %s policy (budget %"
                PRIu32 " us, period %" PRIu32 " us), which scrubd did not set; "
                "someone else changed it since, left as it is\n",
                policy_name(s->orig.policy), s->orig.budget, s->orig.period,
                policy_name(cur.policy), cur.budget, cur.period);
    if ( s->saved_path[0] && unlink(s->saved_path) && errno != ENOENT )
        fprintf(stderr, "scrubd: removing %s: %s\n", s->saved_path, strerror(errno));
    return 0;
}

/*
 * The lock "<socket>.lock": held (exclusive, not waited for) by whichever
 * scrubd steers.  Returns its fd, or -1 with errno EWOULDBLOCK when another
 * scrubd holds it.  Released by the kernel when the process ends.
 */
static int take_lock(const char *socket_path)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];
    char *slash;
    int fd;

    /*
     * The socket's directory, made 0700 if missing: systemd makes
     * /run/scrubd (RuntimeDirectory=), a scrubd started by hand or by
     * another init does not have it.  Only the last component is made.
     */
    snprintf(path, sizeof(path), "%s", socket_path);
    slash = strrchr(path, '/');
    if ( slash && slash != path )
    {
        *slash = '\0';
        if ( mkdir(path, 0700) && errno != EEXIST )
            return -1;
    }

    snprintf(path, sizeof(path), "%s.lock", socket_path);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if ( fd < 0 )
        return -1;
    if ( flock(fd, LOCK_EX | LOCK_NB) )
    {
        int err = errno;

        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

/*
 * The control socket at @path, made 0600 by the umask at bind(); the caller
 * holds the lock (take_lock()).  Whatever is at @path already: a socket
 * refusing connections (a scrubd that died) is replaced; a socket that takes
 * them or cannot say, or anything that is not a socket, is left alone and -1
 * returned with errno EADDRINUSE or EEXIST.
 */
static int listen_socket(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct stat sb;
    mode_t old;
    int fd;

    strcpy(sa.sun_path, path); /* length checked when parsing */
    if ( !lstat(path, &sb) )
    {
        if ( !S_ISSOCK(sb.st_mode) )
        {
            errno = EEXIST;
            return -1;
        }
        /* Non-blocking: a stopped daemon's full backlog must not hang us. */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if ( fd < 0 )
            return -1;
        if ( !connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
             errno != ECONNREFUSED )
        {
            close(fd);
            errno = EADDRINUSE;
            return -1;
        }
        close(fd);
        /* Nobody listens; the caller holds the lock, so nobody else unlinks. */
        if ( unlink(path) && errno != ENOENT )
            return -1;
    }
    else if ( errno != ENOENT )
        return -1;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if ( fd < 0 )
        return -1;
    old = umask(0177); /* 0600 from the start: no window with a wider mode */
    if ( bind(fd, (struct sockaddr *)&sa, sizeof(sa)) )
    {
        umask(old);
        goto fail;
    }
    umask(old);
    if ( listen(fd, 8) )
    {
        unlink(path);
        goto fail;
    }
    return fd;

 fail:
    {
        int saved = errno;

        close(fd);
        errno = saved;
    }
    return -1;
}

/* Milliseconds from now to @t, clamped to [-1 day, 1 day]. */
static long ms_until(const struct timespec *t)
{
    struct timespec now;
    int64_t ms;

    clock_gettime(CLOCK_MONOTONIC, &now);
    ms = ((int64_t)t->tv_sec - now.tv_sec) * 1000 +
         ((int64_t)t->tv_nsec - now.tv_nsec) / 1000000;
    if ( ms > 86400000 )
        return 86400000;
    if ( ms < -86400000 )
        return -86400000;
    return ms;
}

static void add_ms(struct timespec *t, double ms)
{
    long long ns = t->tv_nsec + (long long)(ms * 1e6);

    t->tv_sec += ns / 1000000000LL;
    t->tv_nsec = ns % 1000000000LL;
}

/* A status client being sent the line as it was when it connected. */
struct client {
    int fd;                    /* -1: a free slot */
    char *line;
    size_t len, off;
    struct timespec deadline;
};

static void drop_client(struct client *cl)
{
    close(cl->fd);
    free(cl->line);
    cl->fd = -1;
    cl->line = NULL;
}

/* Sends what the socket takes now; drops the client when done or failed. */
static void feed_client(struct client *cl)
{
    while ( cl->off < cl->len )
    {
        ssize_t n = send(cl->fd, cl->line + cl->off, cl->len - cl->off,
                         MSG_DONTWAIT | MSG_NOSIGNAL);

        if ( n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) )
            return;
        if ( n <= 0 )
            break;
        cl->off += n;
        /* Progress: another CLIENT_TIMEOUT_MS for the rest. */
        clock_gettime(CLOCK_MONOTONIC, &cl->deadline);
        add_ms(&cl->deadline, CLIENT_TIMEOUT_MS);
    }
    drop_client(cl);
}

/*
 * Accepts clients into free slots and starts sending them the line (with a
 * newline).  Returns false when accept() fails for want of a resource
 * (descriptors, memory): the caller stops listening for a while instead of
 * being woken again at once.
 */
static bool accept_clients(int lfd, const char *line, struct client *clients)
{
    unsigned int i;

    for ( i = 0; i < CLIENTS_MAX; i++ )
    {
        struct client *cl = &clients[i];
        int fd;

        if ( cl->fd >= 0 )
            continue;
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if ( fd < 0 )
        {
            static time_t logged;
            time_t now = time(NULL);

            if ( errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED ||
                 errno == EINTR )
                return true;
            /* EMFILE, ENFILE, ENOMEM, ENOBUFS...: the socket stays readable. */
            if ( now - logged >= ACCEPT_LOG_S )
            {
                fprintf(stderr, "scrubd: control socket: %s; not accepting for %d ms\n",
                        strerror(errno), ACCEPT_BACKOFF_MS);
                logged = now;
            }
            return false;
        }
        cl->len = strlen(line) + 1;
        cl->line = malloc(cl->len);
        if ( !cl->line )
        {
            close(fd);
            return true;
        }
        memcpy(cl->line, line, cl->len - 1);
        cl->line[cl->len - 1] = '\n';
        cl->fd = fd;
        cl->off = 0;
        clock_gettime(CLOCK_MONOTONIC, &cl->deadline);
        add_ms(&cl->deadline, CLIENT_TIMEOUT_MS);
        feed_client(cl);
    }
    return true;
}

/*
 * Waits up to @wait_ms for connections and for clients' sockets to take more
 * of their line, then serves them; returns at once when a stop signal comes
 * (the signals are unblocked only inside ppoll()).
 */
static void serve(int lfd, const char *line, struct client *clients, long wait_ms,
                  const sigset_t *run_mask, struct timespec *backoff_until)
{
    struct pollfd pfds[CLIENTS_MAX + 1];
    struct client *polled[CLIENTS_MAX + 1];
    unsigned int i, n = 0;
    bool slot_free = false;
    struct timespec tmo;
    long ms;

    for ( i = 0; i < CLIENTS_MAX; i++ )
    {
        struct client *cl = &clients[i];

        if ( cl->fd < 0 )
        {
            slot_free = true;
            continue;
        }
        ms = ms_until(&cl->deadline);
        if ( ms <= 0 )
        {
            drop_client(cl);
            slot_free = true;
            continue;
        }
        if ( ms < wait_ms )
            wait_ms = ms;
        pfds[n] = (struct pollfd){ .fd = cl->fd, .events = POLLOUT };
        polled[n++] = cl;
    }
    ms = ms_until(backoff_until);
    if ( slot_free && ms <= 0 )
    {
        pfds[n] = (struct pollfd){ .fd = lfd, .events = POLLIN };
        polled[n++] = NULL;
    }
    else if ( slot_free && ms < wait_ms )
        wait_ms = ms;

    tmo.tv_sec = wait_ms / 1000;
    tmo.tv_nsec = (wait_ms % 1000) * 1000000L;
    if ( ppoll(pfds, n, &tmo, run_mask) <= 0 )
        return;
    for ( i = 0; i < n; i++ )
    {
        if ( !pfds[i].revents )
            continue;
        if ( polled[i] )
            feed_client(polled[i]);
        else if ( !accept_clients(lfd, line, clients) )
        {
            clock_gettime(CLOCK_MONOTONIC, backoff_until);
            add_ms(backoff_until, ACCEPT_BACKOFF_MS);
        }
    }
}

/* Whether a failure of the first sample means this host cannot run scrubd. */
static bool host_cannot(int err)
{
    return err == ENOSYS || err == EOPNOTSUPP || err == EPERM || err == EACCES ||
           err == E2BIG;
}

/* Whether libxenctrl failing to open with @err means no privcmd for us. */
static bool cannot_open(int err)
{
    return err == ENOENT || err == ENXIO || err == ENODEV || err == EPERM ||
           err == EACCES;
}

static int cmd_run(int argc, char **argv)
{
    struct config c = {
        .interval_s = 1.0, .low_mib = -1, .high_mib = -1,
        .socket_path = SCRUBD_SOCKET,
    };
    struct samples st = { 0 };
    struct steering steer = { 0 };
    struct client clients[CLIENTS_MAX];
    struct sigaction sa = { .sa_handler = on_signal };
    sigset_t stop_signals, run_mask;
    struct timespec next, backoff_until;
    xc_physinfo_t phys = { 0 };
    xc_interface *xch;
    int lfd = -1, lock_fd = -1, rc = 0;
    bool steered = false;

    if ( parse_run_args(argc, argv, &c) )
        return EXIT_USAGE;
    for ( unsigned int i = 0; i < CLIENTS_MAX; i++ )
        clients[i].fd = -1;

    /*
     * SIGTERM, SIGINT and SIGHUP (a closed terminal, or a "kill -HUP" meant
     * as a reload, which scrubd has nothing to do for) stop it cleanly.
     * They are blocked but while ppoll() waits: one that arrives while a
     * sample runs is taken by the next ppoll(), at once.
     */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGHUP);
    sigprocmask(SIG_BLOCK, &stop_signals, &run_mask);
    sigdelset(&run_mask, SIGTERM);
    sigdelset(&run_mask, SIGINT);
    sigdelset(&run_mask, SIGHUP);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    xch = xc_interface_open(NULL, NULL, 0);
    if ( !xch )
    {
        int err = errno;

        fprintf(stderr, "scrubd: cannot open libxenctrl: %s%s\n", strerror(err),
                cannot_open(err) ? " (run in dom0, as root)" : "");
        return cannot_open(err) ? EXIT_HOST : 1;
    }
    /* Sized from the host's node count; grown if the sysctl reports more. */
    if ( xc_physinfo(xch, &phys) )
    {
        rc = host_cannot(errno) ? EXIT_HOST : 1;
        fprintf(stderr, "scrubd: xc_physinfo: %s\n", strerror(errno));
        goto out;
    }
    if ( grow(&st, phys.max_node_id < NODES_MAX ? phys.max_node_id + 1 : NODES_MAX) )
    {
        fprintf(stderr, "scrubd: %s\n", strerror(errno));
        rc = 1;
        goto out;
    }
    /*
     * Before anything is steered: one scrubd steers at a time.  A watching
     * --once needs no lock (nor socket).
     */
    if ( !c.once || c.low_mib >= 0 )
    {
        lock_fd = take_lock(c.socket_path);
        if ( lock_fd < 0 )
        {
            int err = errno;

            rc = err == EWOULDBLOCK ? EXIT_HOST : 1;
            if ( err == EWOULDBLOCK )
                fprintf(stderr, "scrubd: another scrubd runs (it holds %s.lock)\n",
                        c.socket_path);
            else
                fprintf(stderr, "scrubd: lock %s.lock: %s\n", c.socket_path,
                        strerror(err));
            goto out;
        }
    }
    if ( !c.once )
        lfd = listen_socket(c.socket_path);
    if ( !c.once && lfd < 0 )
    {
        int err = errno;

        rc = err == EADDRINUSE || err == EEXIST ? EXIT_HOST : 1;
        if ( err == EADDRINUSE )
            fprintf(stderr, "scrubd: another scrubd answers on %s\n", c.socket_path);
        else if ( err == EEXIST )
            fprintf(stderr, "scrubd: %s exists and is not a socket: not replacing it\n",
                    c.socket_path);
        else
            fprintf(stderr, "scrubd: control socket %s: %s\n", c.socket_path,
                    strerror(err));
        goto out;
    }

    steer.on = c.low_mib >= 0;
    if ( steer.on && !c.once )
    {
        /*
         * The daemon puts back at its stop what it (or one before) changed,
         * recorded in "<socket>.saved" if nobody else can write there.
         */
        if ( saved_dir_ok(c.socket_path) )
        {
            snprintf(steer.saved_path, sizeof(steer.saved_path), "%s.saved",
                     c.socket_path);
            read_boot_id(steer.boot_id, sizeof(steer.boot_id));
            load_orig(&steer);
            if ( !steer.boot_id[0] )
            {
                fprintf(stderr, "scrubd: cannot read the boot id (%s): no %s is "
                        "written, no later scrubd could tell it from one before a "
                        "reboot; what scrubd changes is put back at a clean stop "
                        "only\n", SCRUBD_BOOT_ID, steer.saved_path);
                steer.saved_path[0] = '\0';
            }
        }
        steered = true;
    }
    if ( sample(xch, &c, &st, &steer) )
    {
        int err = errno;

        /* A host that cannot, or a one-shot: done.  Else retried below. */
        if ( host_cannot(err) || c.once )
        {
            rc = host_cannot(err) ? EXIT_HOST : 1;
            goto out;
        }
    }
    else
    {
        puts(st.line);
        fflush(stdout);
    }
    /* A one-shot sets and leaves; its status says whether the set worked. */
    if ( c.once )
    {
        if ( steer.set_err )
            rc = set_permanent(steer.set_err) ? EXIT_HOST : 1;
        goto out;
    }

    clock_gettime(CLOCK_MONOTONIC, &next);
    backoff_until = next;
    while ( !stopping )
    {
        long ms;

        add_ms(&next, c.interval_s * 1000);
        while ( !stopping && (ms = ms_until(&next)) > 0 )
            serve(lfd, st.line, clients, ms, &run_mask, &backoff_until);
        if ( stopping )
            break;
        /* A late wake-up starts the next interval from now, not in a burst. */
        if ( ms_until(&next) < -(long)(c.interval_s * 1000) )
            clock_gettime(CLOCK_MONOTONIC, &next);
        /* A failed read is logged by sample() and tried again next time. */
        if ( sample(xch, &c, &st, &steer) )
            continue;
        puts(st.line);
        fflush(stdout);
    }

 out:
    /* Under the lock still: no other scrubd reads what is put back. */
    if ( steered && restore_orig(xch, &st, &steer) )
        rc = rc ? rc : 1;
    for ( unsigned int i = 0; i < CLIENTS_MAX; i++ )
        if ( clients[i].fd >= 0 )
            drop_client(&clients[i]);
    if ( lfd >= 0 )
    {
        /* Ours to remove: we hold the lock, nobody else bound it since. */
        close(lfd);
        unlink(c.socket_path);
    }
    if ( lock_fd >= 0 )
        close(lock_fd);
    xc_interface_close(xch);
    free(st.nodes);
    free(st.line);
    return rc;
}

static int cmd_status(int argc, char **argv)
{
    static const struct option opts[] = {
        { "socket", required_argument, NULL, 's' },
        { NULL, 0, NULL, 0 },
    };
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    const char *path = SCRUBD_SOCKET;
    char *buf = NULL;
    size_t used = 0, size = 0;
    int ch, fd, rc = 0;

    while ( (ch = getopt_long(argc, argv, "", opts, NULL)) != -1 )
    {
        if ( ch != 's' )
        {
            usage(stderr);
            return EXIT_USAGE;
        }
        path = optarg;
    }
    if ( optind != argc )
    {
        usage(stderr);
        return EXIT_USAGE;
    }
    if ( check_socket_path(path) )
        return EXIT_USAGE;
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if ( fd >= 0 )
    {
        /* A stopped or stuck daemon must not hang us. */
        struct timeval tmo = { .tv_sec = STATUS_TIMEOUT_S };

        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tmo, sizeof(tmo));
    }
    if ( fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) )
    {
        fprintf(stderr, "scrubd: cannot reach scrubd at %s: %s (is it running?)\n",
                path, strerror(errno));
        if ( fd >= 0 )
            close(fd);
        return 1;
    }
    for ( ; ; )
    {
        ssize_t n;

        if ( used == size )
        {
            char *bigger;

            if ( size >= STATUS_READ_MAX )
            {
                fprintf(stderr, "scrubd: %s sent more than %d bytes\n", path,
                        STATUS_READ_MAX);
                rc = 1;
                break;
            }
            size = size ? size * 2 : 4096;
            bigger = realloc(buf, size + 1);
            if ( !bigger )
            {
                fprintf(stderr, "scrubd: %s\n", strerror(errno));
                rc = 1;
                break;
            }
            buf = bigger;
        }
        n = read(fd, buf + used, size - used);
        if ( n < 0 && errno == EINTR )
            continue;
        if ( n < 0 )
        {
            fprintf(stderr, "scrubd: reading from %s: %s\n", path,
                    errno == EAGAIN ? "timed out" : strerror(errno));
            rc = 1;
            break;
        }
        if ( n == 0 )
            break;
        used += n;
    }
    close(fd);
    if ( !rc && !used )
    {
        fprintf(stderr, "scrubd: %s sent no status\n", path);
        rc = 1;
    }
    else if ( !rc && buf[used - 1] != '\n' )
    {
        fprintf(stderr, "scrubd: %s sent %zu bytes of a status line, not all of it\n",
                path, used);
        rc = 1;
    }
    if ( !rc )
    {
        buf[used] = '\0';
        fputs(buf, stdout);
    }
    free(buf);
    return rc;
}

int main(int argc, char **argv)
{
    if ( argc < 2 )
    {
        usage(stderr);
        return EXIT_USAGE;
    }
    if ( !strcmp(argv[1], "run") )
        return cmd_run(argc - 1, argv + 1);
    if ( !strcmp(argv[1], "status") )
        return cmd_status(argc - 1, argv + 1);
    if ( !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") )
    {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "scrubd: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
