/*
 * pyxen's C shim, compiled into pyxen._xen with the cffi declarations.
 *
 * A xentoollog logger that collects the error-level messages each thread
 * logs since its last pyxen_clear_message(), so that a failing libxl/libxc
 * call becomes a Python exception carrying the library's own words
 * (pyxen.errors).  libxl logs the root cause first and its consequences
 * after ("cannot make domain"), so all of them are kept, oldest first, up to
 * the buffer's size.  Warnings and below are dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/syscall.h>
#include <sys/wait.h>

#include <xentoollog.h>

#define PYXEN_MSG_LEN 2048

static __thread char pyxen_msg[PYXEN_MSG_LEN];

static void pyxen_vmessage(xentoollog_logger *logger, xentoollog_level level,
                           int errnoval, const char *context,
                           const char *format, va_list al)
{
    char text[PYXEN_MSG_LEN];
    size_t used = strlen(pyxen_msg);
    int n;

    (void)logger;
    if ( level < XTL_ERROR || used + 2 >= sizeof(pyxen_msg) )
        return;
    vsnprintf(text, sizeof(text), format, al);
    n = snprintf(pyxen_msg + used, sizeof(pyxen_msg) - used, "%s%s%s%s",
                 used ? "\n" : "", context ? context : "", context ? ": " : "", text);
    if ( n < 0 )
        return;
    used = strlen(pyxen_msg);
    if ( errnoval >= 0 && used + 1 < sizeof(pyxen_msg) )
        snprintf(pyxen_msg + used, sizeof(pyxen_msg) - used, ": %s", strerror(errnoval));
}

static void pyxen_progress(xentoollog_logger *logger, const char *context,
                           const char *doing_what, int percent,
                           unsigned long done, unsigned long total)
{
    (void)logger; (void)context; (void)doing_what;
    (void)percent; (void)done; (void)total;
}

static void pyxen_destroy(xentoollog_logger *logger)
{
    free(logger);
}

static xentoollog_logger *pyxen_logger_new(void)
{
    xentoollog_logger *lg = calloc(1, sizeof(*lg));

    if ( !lg )
        return NULL;
    lg->vmessage = pyxen_vmessage;
    lg->progress = pyxen_progress;
    lg->destroy = pyxen_destroy;
    return lg;
}

static const char *pyxen_last_message(void)
{
    return pyxen_msg;
}

static void pyxen_clear_message(void)
{
    pyxen_msg[0] = '\0';
}

/*
 * XEN_SYSCTL_scrub_op (patches/0003, 0004).  pyxen is also built against
 * stock Xen headers, which have no such sysctl: there the calls fail with
 * ENOSYS, as a stock hypervisor would.  The node counters are copied into a
 * struct of pyxen's own so the cdef does not depend on which headers are in
 * use; its fields are those of struct xen_sysctl_scrub_node.
 */
typedef struct {
    uint64_t dirty_pages;
    uint64_t freed_dirty;
    uint64_t scrubbed_local;
    uint64_t scrubbed_remote;
    uint64_t scrubbed_alloc;
    uint64_t scrubbed_worker;
    uint64_t taken_dirty;
    uint64_t worker_runs;
} pyxen_scrub_node;

#ifdef XEN_SYSCTL_scrub_op
#define PYXEN_SCRUB_SUPPORTED 1
#define PYXEN_SCRUB_POLICY_IDLE XEN_SYSCTL_SCRUB_POLICY_idle
#define PYXEN_SCRUB_POLICY_EAGER XEN_SYSCTL_SCRUB_POLICY_eager
#define PYXEN_SCRUB_BUDGET_MIN_US XEN_SYSCTL_SCRUB_BUDGET_MIN_US
#define PYXEN_SCRUB_PERIOD_MAX_US XEN_SYSCTL_SCRUB_PERIOD_MAX_US
#else
#define PYXEN_SCRUB_SUPPORTED 0
#define PYXEN_SCRUB_POLICY_IDLE (-1)
#define PYXEN_SCRUB_POLICY_EAGER (-1)
#define PYXEN_SCRUB_BUDGET_MIN_US 0
#define PYXEN_SCRUB_PERIOD_MAX_US 0
#endif

static int pyxen_scrub_get(xc_interface *xch, uint32_t *policy,
                           uint32_t *budget_us, uint32_t *period_us,
                           unsigned int *num_nodes, pyxen_scrub_node *out)
{
#ifdef XEN_SYSCTL_scrub_op
    xc_scrub_node_t *nodes = NULL;
    unsigned int i;
    int rc;

    if ( out && *num_nodes )
    {
        nodes = calloc(*num_nodes, sizeof(*nodes));
        if ( !nodes )
            return -1;
    }
    rc = xc_scrub_get(xch, policy, budget_us, period_us, num_nodes, nodes);
    for ( i = 0; rc == 0 && nodes && i < *num_nodes; i++ )
    {
        out[i].dirty_pages = nodes[i].dirty_pages;
        out[i].freed_dirty = nodes[i].freed_dirty;
        out[i].scrubbed_local = nodes[i].scrubbed_local;
        out[i].scrubbed_remote = nodes[i].scrubbed_remote;
        out[i].scrubbed_alloc = nodes[i].scrubbed_alloc;
        out[i].scrubbed_worker = nodes[i].scrubbed_worker;
        out[i].taken_dirty = nodes[i].taken_dirty;
        out[i].worker_runs = nodes[i].worker_runs;
    }
    if ( nodes )
    {
        int saved = errno;

        free(nodes);
        errno = saved;
    }
    return rc;
#else
    (void)xch; (void)policy; (void)budget_us; (void)period_us;
    (void)num_nodes; (void)out;
    errno = ENOSYS;
    return -1;
#endif
}

static int pyxen_scrub_set(xc_interface *xch, uint32_t policy,
                           uint32_t budget_us, uint32_t period_us)
{
#ifdef XEN_SYSCTL_scrub_op
    return xc_scrub_set(xch, policy, budget_us, period_us);
#else
    (void)xch; (void)policy; (void)budget_us; (void)period_us;
    errno = ENOSYS;
    return -1;
#endif
}

/*
 * libxl's child processes (the destroyer child of libxl_domain_destroy, ...)
 * without libxl's SIGCHLD handler.  In its default modes libxl installs a
 * process-wide SIGCHLD handler that takes a mutex and swaps the handler with
 * sigaction() while it registers contexts; with several libxl contexts in
 * one process (pyxen.libxl.LibxlPool) those swaps race with forks and exits
 * in other threads, and a 200-cycle create/destroy stress at concurrency 4
 * crashed or hung the process.  So pyxen owns SIGCHLD ("mainloop" mode) without handling the
 * signal at all: libxl forks through pyxen_fork(), which starts a detached
 * thread per child that waits for exactly that pid and hands its status to
 * libxl_childproc_reaped().  No other child of the process (Python's
 * subprocess ones) is touched.  libxl forks with its context lock held and
 * lists the child before dropping it; libxl_childproc_reaped() takes that
 * lock first, so a child that exits at once is still recognised.
 */
struct pyxen_child {
    libxl_ctx *ctx;
    pid_t pid;
};

/* Reaper threads not yet out of libxl (pyxen_childproc_quiesce()). */
static int pyxen_reapers;

/* Children the reapers found deadlocked and killed (see below). */
static unsigned long pyxen_deadlocks;

/*
 * A child of a multithreaded process has one thread.  If that thread sleeps
 * in futex(), it waits for a lock that no thread of the child will ever
 * release: the lock was copied locked from another thread of ours at
 * fork().  Stock Xen 4.17's libxencall (cache_mutex, taken for every
 * hypercall buffer) and libxentoolcore (handles_lock) do nothing about that
 * (patches/0008 holds them across fork()), so libxl's destroyer child, whose
 * xc_domain_destroy() needs a hypercall buffer, can block for ever while
 * another thread runs a hypercall -- and libxl_domain_destroy() with it.
 */
static int pyxen_child_in_futex(pid_t pid)
{
    char path[48], buf[64];
    long nr;
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if ( fd < 0 )
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if ( n <= 0 )
        return 0;
    buf[n] = '\0';
    /* "running", or the number of the syscall the task is blocked in. */
    return sscanf(buf, "%ld", &nr) == 1 && nr == SYS_futex;
}

/*
 * Waits until @pid exits or is seen blocked in futex() twice, half a
 * second apart; kills it in the second case.  Without pidfd_open() (Linux
 * before 5.3) it only returns when the child exits.
 */
static void pyxen_watch_child(int pid)
{
#ifdef SYS_pidfd_open
    int pidfd = syscall(SYS_pidfd_open, pid, 0);
    int seen = 0;

    if ( pidfd < 0 )
        return;
    for ( ;; )
    {
        struct pollfd p = { .fd = pidfd, .events = POLLIN };
        int r = poll(&p, 1, 500);

        if ( r > 0 || (r < 0 && errno != EINTR) )
            break;
        if ( r < 0 )
            continue;
        seen = pyxen_child_in_futex(pid) ? seen + 1 : 0;
        if ( seen == 2 )
        {
            kill(pid, SIGKILL);
            __atomic_add_fetch(&pyxen_deadlocks, 1, __ATOMIC_SEQ_CST);
            break;
        }
    }
    close(pidfd);
#else
    (void)pid;
#endif
}

/* How many deadlocked children the reapers have killed so far. */
static unsigned long pyxen_deadlocked_children(void)
{
    return __atomic_load_n(&pyxen_deadlocks, __ATOMIC_SEQ_CST);
}

static void *pyxen_reaper(void *arg)
{
    struct pyxen_child c = *(struct pyxen_child *)arg;
    int status = 0;

    free(arg);
    pyxen_watch_child(c.pid);
    while ( waitpid(c.pid, &status, 0) < 0 )
    {
        if ( errno != EINTR )
        {
            /*
             * ECHILD: something else in the process reaped it (a
             * waitpid(-1), or SIGCHLD set to SIG_IGN), and its status is
             * lost.  libxl must still hear that the child is gone, or the
             * operation waiting for it would wait forever: report it as
             * failed (exit status 127), which libxl logs and returns as an
             * error.
             */
            status = 127 << 8;
            break;
        }
    }
    libxl_childproc_reaped(c.ctx, c.pid, status);
    __atomic_sub_fetch(&pyxen_reapers, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static pid_t pyxen_fork(void *user)
{
    struct pyxen_child *c = malloc(sizeof(*c));
    pthread_attr_t attr;
    pthread_t thread;
    sigset_t all, old;
    pid_t pid;
    int rc;

    if ( !c )
        return -1; /* errno ENOMEM: libxl reports the fork as failed */

    pid = fork();
    if ( pid <= 0 )
    {
        int saved = errno;

        free(c);
        errno = saved;
        return pid;
    }

    c->ctx = user;
    c->pid = pid;
    /* The reaper takes no signal meant for Python's main thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    __atomic_add_fetch(&pyxen_reapers, 1, __ATOMIC_SEQ_CST);
    rc = pthread_attr_init(&attr);
    if ( !rc )
    {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        rc = pthread_create(&thread, &attr, pyxen_reaper, c);
        pthread_attr_destroy(&attr);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if ( rc )
    {
        /* Without a reaper libxl would wait for this child forever. */
        __atomic_sub_fetch(&pyxen_reapers, 1, __ATOMIC_SEQ_CST);
        free(c);
        kill(pid, SIGKILL);
        while ( waitpid(pid, NULL, 0) < 0 && errno == EINTR )
            continue;
        errno = rc;
        return -1;
    }
    return pid;
}

static const libxl_childproc_hooks pyxen_childproc_hooks = {
    .chldowner = libxl_sigchld_owner_mainloop,
    .fork_replacement = pyxen_fork,
};

/* Route @ctx's child processes through pyxen_fork() (call before any). */
static void pyxen_childproc_setmode(libxl_ctx *ctx)
{
    libxl_childproc_setmode(ctx, &pyxen_childproc_hooks, ctx);
}

/*
 * Wait until no reaper is inside libxl: a synchronous libxl call returns as
 * soon as its child's callback ran, possibly before the reaper that ran it
 * has left libxl_childproc_reaped(); a context must not be freed under it.
 */
static void pyxen_childproc_quiesce(void)
{
    const struct timespec ms = { 0, 1000000 };

    while ( __atomic_load_n(&pyxen_reapers, __ATOMIC_SEQ_CST) )
        nanosleep(&ms, NULL);
}
