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
 * Exit status: 0 stopped by SIGTERM/SIGINT (or --once done); 2 bad options;
 * 3 this host cannot run it (no privcmd, not root, a Xen without the scrub
 * sysctl or with more nodes than scrubd takes, another scrubd running):
 * restarting cannot help either (the systemd unit's RestartPreventExitStatus);
 * 1 anything else.  Once the socket is up, a failed sysctl is logged (and
 * reported by "status") and tried again at the next interval: it does not
 * stop the daemon.
 *
 * One scrubd steers at a time: "run", and "run --once" with watermarks, hold
 * an exclusive flock() on "<socket>.lock" for as long as they run.
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
#define LINE_HEAD_MAX  512
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
/* At most one "not accepting" message per this many seconds. */
#define ACCEPT_LOG_S     10

struct config {
    double interval_s;
    long long low_mib, high_mib;   /* -1: not steering */
    uint32_t budget_us, period_us; /* 0: keep the hypervisor's */
    const char *socket_path;
    bool once;
};

static volatile sig_atomic_t stopping;

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

/* A whole non-negative number in [min, max], or an error naming the option. */
static int parse_num(const char *opt, const char *s, long long min,
                     long long max, long long *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if ( errno || end == s || *end || v < min || v > max )
    {
        fprintf(stderr, "scrubd: %s must be a whole number in %lld..%lld, got '%s'\n",
                opt, min, max, s);
        return -EINVAL;
    }
    *out = v;
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

            errno = 0;
            c->interval_s = strtod(optarg, &end);
            if ( errno || end == optarg || *end || !(c->interval_s >= 0.05) ||
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
    if ( strlen(c->socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path) )
    {
        fprintf(stderr, "scrubd: --socket path too long: %s\n", c->socket_path);
        return -EINVAL;
    }
    return 0;
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
 * One sample: read, steer, format into st->line.  Returns 0, or -1 with
 * errno and a message on stderr (st->line then says what failed).
 */
static int sample(xc_interface *xch, const struct config *c, struct samples *st)
{
    unsigned int nr, i;
    uint32_t policy, budget, period;
    xc_physinfo_t phys = { 0 };
    uint64_t dirty = 0, clean_mib;
    const char *switched = NULL;
    struct timespec now;
    size_t used = 0;
    int err;

    if ( read_scrub(xch, st, &policy, &budget, &period, &nr) )
    {
        err = errno;
        fprintf(stderr, "scrubd: reading XEN_SYSCTL_scrub_op: %s%s\n", strerror(err),
                err == ENOSYS ? " (this Xen has no scrub workers)" : "");
        error_line(st, "reading XEN_SYSCTL_scrub_op", err);
        errno = err;
        return -1;
    }
    if ( xc_physinfo(xch, &phys) )
    {
        err = errno;
        fprintf(stderr, "scrubd: xc_physinfo: %s\n", strerror(err));
        error_line(st, "xc_physinfo", err);
        errno = err;
        return -1;
    }
    for ( i = 0; i < nr; i++ )
        dirty += st->nodes[i].dirty_pages;
    clean_mib = (phys.free_pages > dirty ? phys.free_pages - dirty : 0) / PAGES_PER_MIB;

    if ( c->low_mib >= 0 )
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
            if ( xc_scrub_set(xch, want, c->budget_us, c->period_us) )
            {
                err = errno;
                fprintf(stderr, "scrubd: setting the %s policy: %s\n",
                        policy_name(want), strerror(err));
                error_line(st, "setting the scrub policy", err);
                errno = err;
                return -1;
            }
            policy = want;
            if ( c->budget_us )
            {
                budget = c->budget_us;
                period = c->period_us;
            }
            switched = policy_name(want);
        }
    }

    clock_gettime(CLOCK_REALTIME, &now);
    append(st->line, st->line_size, &used,
           "{\"time\": %lld.%03ld, \"policy\": \"%s\", \"budget_us\": %" PRIu32
           ", \"period_us\": %" PRIu32 ", \"free_mib\": %" PRIu64
           ", \"dirty_mib\": %" PRIu64 ", \"clean_free_mib\": %" PRIu64
           ", \"switched_to\": %s%s%s, \"nodes\": [",
           (long long)now.tv_sec, now.tv_nsec / 1000000, policy_name(policy),
           budget, period, (uint64_t)phys.free_pages / PAGES_PER_MIB,
           dirty / PAGES_PER_MIB, clean_mib,
           switched ? "\"" : "", switched ? switched : "null", switched ? "\"" : "");
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
    struct client clients[CLIENTS_MAX];
    struct sigaction sa = { .sa_handler = on_signal };
    sigset_t stop_signals, run_mask;
    struct timespec next, backoff_until;
    xc_physinfo_t phys = { 0 };
    xc_interface *xch;
    int lfd = -1, lock_fd = -1, rc = 0, last_err = 0;

    if ( parse_run_args(argc, argv, &c) )
        return EXIT_USAGE;
    for ( unsigned int i = 0; i < CLIENTS_MAX; i++ )
        clients[i].fd = -1;

    /*
     * SIGTERM and SIGINT are blocked but while ppoll() waits: one that
     * arrives while a sample runs is taken by the next ppoll(), at once.
     */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_signals, &run_mask);
    sigdelset(&run_mask, SIGTERM);
    sigdelset(&run_mask, SIGINT);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
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

    if ( sample(xch, &c, &st) )
    {
        last_err = errno;
        /* A host that cannot, or a one-shot: done.  Else retried below. */
        if ( host_cannot(last_err) || c.once )
        {
            rc = host_cannot(last_err) ? EXIT_HOST : 1;
            goto out;
        }
    }
    else
    {
        puts(st.line);
        fflush(stdout);
    }
    if ( c.once )
        goto out;

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
        if ( sample(xch, &c, &st) )
        {
            /* Logged by sample(); tried again at the next interval. */
            last_err = errno;
            continue;
        }
        if ( last_err )
        {
            fprintf(stderr, "scrubd: sampling works again\n");
            last_err = 0;
        }
        puts(st.line);
        fflush(stdout);
    }

 out:
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
    if ( optind != argc || strlen(path) >= sizeof(sa.sun_path) )
    {
        usage(stderr);
        return EXIT_USAGE;
    }
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
