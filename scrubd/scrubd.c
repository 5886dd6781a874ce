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
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <xenctrl.h>

#define SCRUBD_SOCKET  "/run/scrubd.sock"
#define STATUS_MAX     8192
#define MAX_NODES      64
#define PAGES_PER_MIB  ((uint64_t)256)

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
                           XEN_SYSCTL_SCRUB_PERIOD_MAX_US, &v) )
                return -EINVAL;
            c->budget_us = v;
            break;
        case 'p':
            if ( parse_num("--period-us", optarg, XEN_SYSCTL_SCRUB_BUDGET_MIN_US,
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
    if ( c->budget_us > c->period_us )
    {
        fprintf(stderr, "scrubd: --budget-us (%" PRIu32 ") exceeds --period-us (%" PRIu32 ")\n",
                c->budget_us, c->period_us);
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

/*
 * One sample: read, steer, format.  Returns 0 with the JSON line in @line,
 * or -1 with errno (and a message on stderr).
 */
static int sample(xc_interface *xch, const struct config *c, char *line,
                  size_t size)
{
    xc_scrub_node_t nodes[MAX_NODES];
    unsigned int nr = MAX_NODES, i;
    uint32_t policy, budget, period;
    xc_physinfo_t phys = { 0 };
    uint64_t dirty = 0, clean_mib;
    const char *switched = NULL;
    struct timespec now;
    size_t used = 0;

    if ( xc_scrub_get(xch, &policy, &budget, &period, &nr, nodes) )
    {
        fprintf(stderr, "scrubd: reading XEN_SYSCTL_scrub_op: %s%s\n", strerror(errno),
                errno == ENOSYS ? " (this Xen has no scrub workers)" : "");
        return -1;
    }
    if ( xc_physinfo(xch, &phys) )
    {
        fprintf(stderr, "scrubd: xc_physinfo: %s\n", strerror(errno));
        return -1;
    }
    for ( i = 0; i < nr; i++ )
        dirty += nodes[i].dirty_pages;
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
                fprintf(stderr, "scrubd: setting the %s policy: %s\n",
                        policy_name(want), strerror(errno));
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
    append(line, size, &used,
           "{\"time\": %lld.%03ld, \"policy\": \"%s\", \"budget_us\": %" PRIu32
           ", \"period_us\": %" PRIu32 ", \"free_mib\": %" PRIu64
           ", \"dirty_mib\": %" PRIu64 ", \"clean_free_mib\": %" PRIu64
           ", \"switched_to\": %s%s%s, \"nodes\": [",
           (long long)now.tv_sec, now.tv_nsec / 1000000, policy_name(policy),
           budget, period, (uint64_t)phys.free_pages / PAGES_PER_MIB,
           dirty / PAGES_PER_MIB, clean_mib,
           switched ? "\"" : "", switched ? switched : "null", switched ? "\"" : "");
    for ( i = 0; i < nr; i++ )
        append(line, size, &used,
               "%s{\"node\": %u, \"dirty_pages\": %" PRIu64 ", \"freed_dirty\": %" PRIu64
               ", \"scrubbed_local\": %" PRIu64 ", \"scrubbed_remote\": %" PRIu64
               ", \"scrubbed_alloc\": %" PRIu64 ", \"scrubbed_worker\": %" PRIu64
               ", \"taken_dirty\": %" PRIu64 ", \"worker_runs\": %" PRIu64 "}",
               i ? ", " : "", i, nodes[i].dirty_pages, nodes[i].freed_dirty,
               nodes[i].scrubbed_local, nodes[i].scrubbed_remote,
               nodes[i].scrubbed_alloc, nodes[i].scrubbed_worker,
               nodes[i].taken_dirty, nodes[i].worker_runs);
    if ( !append(line, size, &used, "]}") )
    {
        errno = ENOSPC;
        fprintf(stderr, "scrubd: status line longer than %zu bytes\n", size);
        return -1;
    }
    return 0;
}

static int listen_socket(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    mode_t old;
    int fd;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if ( fd < 0 )
        return -1;
    strcpy(sa.sun_path, path); /* length checked when parsing */
    if ( unlink(path) && errno != ENOENT )
        goto fail;
    old = umask(0177); /* 0600 from the start: no window with a wider mode */
    if ( bind(fd, (struct sockaddr *)&sa, sizeof(sa)) )
    {
        umask(old);
        goto fail;
    }
    umask(old);
    if ( chmod(path, 0600) || listen(fd, 8) )
        goto fail;
    return fd;

 fail:
    {
        int saved = errno;

        close(fd);
        errno = saved;
    }
    return -1;
}

/* Hands the last status line to every waiting client; they only read. */
static void serve_clients(int lfd, const char *line)
{
    for ( ; ; )
    {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        size_t len = strlen(line), off = 0;
        struct timeval tmo = { .tv_sec = 1 };

        if ( fd < 0 )
            return;
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tmo, sizeof(tmo));
        while ( off < len )
        {
            ssize_t n = write(fd, line + off, len - off);

            if ( n <= 0 )
                break;
            off += n;
        }
        if ( off == len )
            (void)!write(fd, "\n", 1);
        close(fd);
    }
}

static int cmd_run(int argc, char **argv)
{
    struct config c = {
        .interval_s = 1.0, .low_mib = -1, .high_mib = -1,
        .socket_path = SCRUBD_SOCKET,
    };
    static char line[STATUS_MAX];
    struct sigaction sa = { .sa_handler = on_signal };
    xc_interface *xch;
    int lfd = -1, rc = 0;

    if ( parse_run_args(argc, argv, &c) )
        return 2;

    xch = xc_interface_open(NULL, NULL, 0);
    if ( !xch )
    {
        fprintf(stderr, "scrubd: cannot open libxenctrl: %s (run in dom0, as root)\n",
                strerror(errno));
        return 1;
    }
    if ( sample(xch, &c, line, sizeof(line)) )
    {
        xc_interface_close(xch);
        return 1;
    }
    puts(line);
    fflush(stdout);
    if ( c.once )
    {
        xc_interface_close(xch);
        return 0;
    }

    lfd = listen_socket(c.socket_path);
    if ( lfd < 0 )
    {
        fprintf(stderr, "scrubd: control socket %s: %s\n", c.socket_path, strerror(errno));
        xc_interface_close(xch);
        return 1;
    }
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    while ( !stopping )
    {
        struct timespec next, now;
        struct pollfd pfd = { .fd = lfd, .events = POLLIN };

        clock_gettime(CLOCK_MONOTONIC, &next);
        next.tv_sec += (time_t)c.interval_s;
        next.tv_nsec += (long)((c.interval_s - (time_t)c.interval_s) * 1e9);
        if ( next.tv_nsec >= 1000000000L )
        {
            next.tv_sec++;
            next.tv_nsec -= 1000000000L;
        }
        for ( ; ; )
        {
            long ms;

            clock_gettime(CLOCK_MONOTONIC, &now);
            ms = (next.tv_sec - now.tv_sec) * 1000 +
                 (next.tv_nsec - now.tv_nsec) / 1000000;
            if ( ms <= 0 || stopping )
                break;
            if ( poll(&pfd, 1, (int)ms) > 0 )
                serve_clients(lfd, line);
        }
        if ( stopping )
            break;
        if ( sample(xch, &c, line, sizeof(line)) )
        {
            rc = 1;
            break;
        }
        puts(line);
        fflush(stdout);
    }

    close(lfd);
    unlink(c.socket_path);
    xc_interface_close(xch);
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
    char buf[STATUS_MAX + 1];
    size_t used = 0;
    int ch, fd;

    while ( (ch = getopt_long(argc, argv, "", opts, NULL)) != -1 )
    {
        if ( ch != 's' )
        {
            usage(stderr);
            return 2;
        }
        path = optarg;
    }
    if ( optind != argc || strlen(path) >= sizeof(sa.sun_path) )
    {
        usage(stderr);
        return 2;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
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
        ssize_t n = read(fd, buf + used, sizeof(buf) - 1 - used);

        if ( n <= 0 )
            break;
        used += n;
        if ( used == sizeof(buf) - 1 )
            break;
    }
    close(fd);
    if ( !used )
    {
        fprintf(stderr, "scrubd: %s sent no status\n", path);
        return 1;
    }
    buf[used] = '\0';
    fputs(buf, stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if ( argc < 2 )
    {
        usage(stderr);
        return 2;
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
    return 2;
}
