/*
 * pyxen's C shim, compiled into pyxen._xen with the cffi declarations.
 *
 * xentoollog loggers that collect the error-level messages logged since they
 * were last cleared, so that a failing libxl/libxc call becomes a Python
 * exception carrying the library's own words (pyxen.errors).  libxl logs the
 * root cause first and its consequences after ("cannot make domain"), so all
 * of them are kept, oldest first, up to the buffer's size.  Warnings and
 * below are dropped.
 *
 * Two kinds of logger:
 *
 *  - per handle (PYXEN_LOG_PER_HANDLE), for libxl contexts: one buffer in
 *    the logger, under its mutex.  libxl logs for a call from the calling
 *    thread and from the reaper threads of the call's children (below), and
 *    both must reach the exception raised for that call.  A context serves
 *    one call at a time (pyxen.libxl.LibxlPool), so the buffer is the call's.
 *    (Not quite: a reaper may still be inside libxl_childproc_reaped() for a
 *    moment after the call its child belonged to has returned, and what it
 *    logs then lands in the next call's buffer.)
 *
 *  - per thread (PYXEN_LOG_PER_THREAD), for XenCtrl handles, which threads
 *    share: each thread's messages go to a thread-local buffer
 *    (pyxen_last_message()), so concurrent calls do not mix.  libxenctrl
 *    logs only from the calling thread.
 *
 * Messages are formatted straight into the buffer; nothing large is put on
 * the stack of the thread that logs.
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

#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <xentoollog.h>

/* A libxl context's buffer (on the heap, in the logger). */
#define PYXEN_MSG_LEN 8192
/* A thread's buffer for per-thread loggers (static TLS: keep it small). */
#define PYXEN_TLS_MSG_LEN 2048

#define PYXEN_LOG_PER_THREAD 0
#define PYXEN_LOG_PER_HANDLE 1

typedef struct {
    xentoollog_logger vtable;   /* first: the libraries see only this */
    int per_handle;
    pthread_mutex_t lock;       /* per handle: guards used and msg */
    size_t used;
    libxl_ctx *ctx;             /* set by pyxen_childproc_setmode() */
    char msg[PYXEN_MSG_LEN];
} pyxen_logger;

static __thread char pyxen_tls_msg[PYXEN_TLS_MSG_LEN];

/* Clamp what a snprintf() into buf[*used..size) wrote; keeps buf terminated. */
static void pyxen_advance(char *buf, size_t size, size_t *used, int n)
{
    if ( n < 0 )
        buf[*used] = '\0';
    else if ( (size_t)n >= size - *used )
        *used = size - 1;
    else
        *used += n;
}

/*
 * Appends one message, "[context: ]text[: strerror]", on a line of its own,
 * to buf (size bytes, *used of them used, terminated).
 */
static void pyxen_append(char *buf, size_t size, size_t *used, int errnoval,
                         const char *context, const char *format, va_list al)
{
    if ( *used + 2 >= size )
        return; /* full: the root cause is already in */
    if ( *used )
        pyxen_advance(buf, size, used, snprintf(buf + *used, size - *used, "\n"));
    if ( context )
        pyxen_advance(buf, size, used,
                      snprintf(buf + *used, size - *used, "%s: ", context));
    pyxen_advance(buf, size, used, vsnprintf(buf + *used, size - *used, format, al));
    if ( errnoval >= 0 )
        pyxen_advance(buf, size, used, snprintf(buf + *used, size - *used, ": %s",
                                                strerror(errnoval)));
}

static void pyxen_vmessage(xentoollog_logger *logger, xentoollog_level level,
                           int errnoval, const char *context,
                           const char *format, va_list al)
{
    pyxen_logger *lg = (pyxen_logger *)logger;

    if ( level < XTL_ERROR )
        return;
    if ( !lg->per_handle )
    {
        size_t used = strlen(pyxen_tls_msg);

        pyxen_append(pyxen_tls_msg, sizeof(pyxen_tls_msg), &used, errnoval,
                     context, format, al);
        return;
    }
    pthread_mutex_lock(&lg->lock);
    pyxen_append(lg->msg, sizeof(lg->msg), &lg->used, errnoval, context,
                 format, al);
    pthread_mutex_unlock(&lg->lock);
}

static void pyxen_progress(xentoollog_logger *logger, const char *context,
                           const char *doing_what, int percent,
                           unsigned long done, unsigned long total)
{
    (void)logger; (void)context; (void)doing_what;
    (void)percent; (void)done; (void)total;
}

static void pyxen_logger_free(xentoollog_logger *logger)
{
    pyxen_logger *lg = (pyxen_logger *)logger;

    if ( !lg )
        return;
    pthread_mutex_destroy(&lg->lock);
    free(lg);
}

/* A logger of kind @per_handle (PYXEN_LOG_PER_*); free with pyxen_logger_free(). */
static xentoollog_logger *pyxen_logger_new(int per_handle)
{
    pyxen_logger *lg = calloc(1, sizeof(*lg));

    if ( !lg )
        return NULL;
    if ( pthread_mutex_init(&lg->lock, NULL) )
    {
        free(lg);
        return NULL;
    }
    lg->per_handle = !!per_handle;
    lg->vtable.vmessage = pyxen_vmessage;
    lg->vtable.progress = pyxen_progress;
    lg->vtable.destroy = pyxen_logger_free;
    return &lg->vtable;
}

/*
 * Copies what @logger collected (a per-thread logger: what this thread
 * collected) into out[0..size), terminated; returns its length.
 */
static size_t pyxen_logger_message(xentoollog_logger *logger, char *out, size_t size)
{
    pyxen_logger *lg = (pyxen_logger *)logger;
    const char *src = lg->per_handle ? lg->msg : pyxen_tls_msg;
    size_t n;

    if ( !size )
        return 0;
    if ( lg->per_handle )
        pthread_mutex_lock(&lg->lock);
    n = strlen(src);
    if ( n >= size )
        n = size - 1;
    memcpy(out, src, n);
    out[n] = '\0';
    if ( lg->per_handle )
        pthread_mutex_unlock(&lg->lock);
    return n;
}

/* Forgets what @logger collected (a per-thread logger: on this thread). */
static void pyxen_logger_clear(xentoollog_logger *logger)
{
    pyxen_logger *lg = (pyxen_logger *)logger;

    if ( !lg->per_handle )
    {
        pyxen_tls_msg[0] = '\0';
        return;
    }
    pthread_mutex_lock(&lg->lock);
    lg->used = 0;
    lg->msg[0] = '\0';
    pthread_mutex_unlock(&lg->lock);
}

/* This thread's buffer of the per-thread loggers. */
static const char *pyxen_last_message(void)
{
    return pyxen_tls_msg;
}

static void pyxen_clear_message(void)
{
    pyxen_tls_msg[0] = '\0';
}

/*
 * XEN_SYSCTL_scrub_op (the hypervisor series' scrub workers).  pyxen is also built against
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
    uint64_t deferred;
    uint64_t offlined;
} pyxen_scrub_node;

#ifdef XEN_SYSCTL_scrub_op
#define PYXEN_SCRUB_SUPPORTED 1
#define PYXEN_SCRUB_POLICY_IDLE XEN_SYSCTL_SCRUB_POLICY_idle
#define PYXEN_SCRUB_POLICY_EAGER XEN_SYSCTL_SCRUB_POLICY_eager
#define PYXEN_SCRUB_BUDGET_MIN_US XEN_SYSCTL_SCRUB_BUDGET_MIN_US
#define PYXEN_SCRUB_BUDGET_MAX_US XEN_SYSCTL_SCRUB_BUDGET_MAX_US
#define PYXEN_SCRUB_PERIOD_MIN_US XEN_SYSCTL_SCRUB_PERIOD_MIN_US
#define PYXEN_SCRUB_PERIOD_MAX_US XEN_SYSCTL_SCRUB_PERIOD_MAX_US
#define PYXEN_SCRUB_PERIOD_PER_BUDGET XEN_SYSCTL_SCRUB_PERIOD_PER_BUDGET
#else
#define PYXEN_SCRUB_SUPPORTED 0
#define PYXEN_SCRUB_POLICY_IDLE (-1)
#define PYXEN_SCRUB_POLICY_EAGER (-1)
#define PYXEN_SCRUB_BUDGET_MIN_US 0
#define PYXEN_SCRUB_BUDGET_MAX_US 0
#define PYXEN_SCRUB_PERIOD_MIN_US 0
#define PYXEN_SCRUB_PERIOD_MAX_US 0
#define PYXEN_SCRUB_PERIOD_PER_BUDGET 0
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
        out[i].deferred = nodes[i].deferred;
        out[i].offlined = nodes[i].offlined;
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
    pyxen_logger *lg;           /* the context's (pyxen_childproc_setmode()) */
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
 * fork().  Stock libxencall (cache_mutex, taken for every
 * hypercall buffer) and libxentoolcore (handles_lock) do nothing about that
 * (the toolstack series holds them across fork()), so libxl's destroyer child, whose
 * xc_domain_destroy() needs a hypercall buffer, can block for ever while
 * another thread runs a hypercall -- and libxl_domain_destroy() with it.
 *
 * That holds only until the child execs: a program it execs (a hotplug
 * script, the bootloader, a device model) starts afresh and may well wait
 * in futex() for its own threads.  See pyxen_child_unexeced().
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

/* Reads @fd to its end or @size bytes, whichever is first; -1 on error. */
static ssize_t pyxen_read_full(int fd, char *buf, size_t size)
{
    size_t got = 0;

    while ( got < size )
    {
        ssize_t n = read(fd, buf + got, size - got);

        if ( n < 0 && errno == EINTR )
            continue;
        if ( n < 0 )
            return -1;
        if ( n == 0 )
            break;
        got += n;
    }
    return got;
}

/* Whether the files @a and @b can be read and have the same contents. */
static int pyxen_same_contents(const char *a, const char *b)
{
    char x[256], y[256];        /* small: this runs on a reaper's stack */
    int fa = open(a, O_RDONLY | O_CLOEXEC);
    int fb = open(b, O_RDONLY | O_CLOEXEC);
    int same = 0;

    if ( fa >= 0 && fb >= 0 )
    {
        for ( ;; )
        {
            ssize_t na = pyxen_read_full(fa, x, sizeof(x));
            ssize_t nb = pyxen_read_full(fb, y, sizeof(y));

            if ( na < 0 || na != nb || memcmp(x, y, na) )
                break;
            if ( na < (ssize_t)sizeof(x) )
            {
                same = na > 0 || same; /* two empty files prove nothing */
                break;
            }
            same = 1;
        }
    }
    if ( fa >= 0 )
        close(fa);
    if ( fb >= 0 )
        close(fb);
    return same;
}

/*
 * Whether @pid still runs this process's program as fork() copied it, i.e.
 * has not exec'd since.  Two tests, both must pass:
 *
 *  - /proc/PID/exe is the very file /proc/self/exe is (same device and
 *    inode; stat() follows both links, so a renamed or deleted binary still
 *    compares right): false after an exec of any other program;
 *  - /proc/PID/auxv is ours byte for byte: fork() copies the auxiliary
 *    vector, every exec builds a new one (entry point, stack addresses,
 *    AT_RANDOM, AT_EXECFN), so this is false after an exec of this same
 *    binary too -- pygrub, the bootloader, is a Python script, and under the
 *    interpreter pyxen runs in its exe is ours.
 *
 * Any doubt answers 0 (the child is gone, or its /proc files are not
 * readable, as after an exec of a setuid program): 0 means "leave it be".
 */
static int pyxen_child_unexeced(int pid)
{
    char path[48];
    struct stat self, child;

    snprintf(path, sizeof(path), "/proc/%d/exe", pid);
    if ( stat("/proc/self/exe", &self) || stat(path, &child) )
        return 0;
    if ( self.st_dev != child.st_dev || self.st_ino != child.st_ino )
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/auxv", pid);
    return pyxen_same_contents("/proc/self/auxv", path);
}

/*
 * Waits until @pid exits or is seen, twice half a second apart, blocked in
 * futex() before any exec (pyxen_child_unexeced()); kills it in the second
 * case.  Both are sampled each time, the exec check after the futex one, so
 * a child that execs meanwhile is not taken for deadlocked.  The signal
 * goes through the pidfd, so it can never hit another process that got the
 * pid after the child was reaped elsewhere.  Without pidfd_open() (Linux
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
        if ( pyxen_child_in_futex(pid) && pyxen_child_unexeced(pid) )
            seen++;
        else
            seen = 0;
        if ( seen == 2 )
        {
#ifdef SYS_pidfd_send_signal
            r = syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
            if ( r < 0 && errno == ENOSYS )
                r = kill(pid, SIGKILL);
#else
            r = kill(pid, SIGKILL);
#endif
            if ( r == 0 )
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

/*
 * Reaper threads run libxl's callbacks (the rest of a destroy, logging,
 * more forks), so they get the default stack size, as any thread libxl
 * expects to run on; a small one would turn a deep callback into a crash of
 * the whole process.
 */
static int pyxen_reaper_attr(pthread_attr_t *attr)
{
    int rc = pthread_attr_init(attr);

    if ( !rc )
        pthread_attr_setdetachstate(attr, PTHREAD_CREATE_DETACHED);
    return rc;
}

struct pyxen_stack_probe {
    size_t size;
    int done;
};

static void *pyxen_stack_probe_thread(void *arg)
{
    struct pyxen_stack_probe *p = arg;
    pthread_attr_t attr;
    size_t size = 0;

    if ( !pthread_getattr_np(pthread_self(), &attr) )
    {
        pthread_attr_getstacksize(&attr, &size);
        pthread_attr_destroy(&attr);
    }
    p->size = size;
    __atomic_store_n(&p->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/*
 * The stack size of a thread started as pyxen_fork() starts reapers, as
 * that thread measures it (for the tests); 0 if that could not be done.
 */
static size_t pyxen_reaper_stack_size(void)
{
    const struct timespec ms = { 0, 1000000 };
    struct pyxen_stack_probe p = { 0, 0 };
    pthread_attr_t attr;
    pthread_t thread;
    int rc = pyxen_reaper_attr(&attr);

    if ( rc )
        return 0;
    rc = pthread_create(&thread, &attr, pyxen_stack_probe_thread, &p);
    pthread_attr_destroy(&attr);
    if ( rc )
        return 0;
    while ( !__atomic_load_n(&p.done, __ATOMIC_SEQ_CST) )
        nanosleep(&ms, NULL);
    return p.size;
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
    /* What libxl logs from here goes to the context's logger: the call's. */
    libxl_childproc_reaped(c.lg->ctx, c.pid, status);
    __atomic_sub_fetch(&pyxen_reapers, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/*
 * The libxenctrl gate.  Every libxenctrl call takes libxencall's buffer
 * cache mutex (a hypercall buffer) or libxentoolcore's handles lock (a
 * handle opened or closed), and stock's toolstack does not hold them across
 * fork(): a child forked while another thread holds one inherits it locked,
 * and libxl's destroyer child then sleeps for ever in its own hypercall
 * (the reapers find it and kill it, and pyxen destroys again -- pyxen.libxl;
 * with three threads pairing pause and unpause, ten children in a row were
 * found so).  pyxen's own libxenctrl calls (pyxen.xenctrl) take this gate
 * shared, and pyxen_fork() takes it exclusive around fork(): no such call is
 * under way in any thread at the fork, and none starts before it is over.
 * Writers are preferred, so a stream of calls in other threads cannot hold
 * a fork off; a thread's nested enters take the lock once (a signal handler
 * that calls libxenctrl inside a call would otherwise wait behind a waiting
 * writer, for ever).  Not covered: hypercalls that libxl makes inside its
 * own calls in other threads (under libxl's locks, which the forking thread
 * may hold), and forks that do not go through pyxen_fork() (Python's
 * os.fork() holds the GIL, which a caller needs to leave the gate).
 */
#define PYXEN_XC_GATE_INIT PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP
static pthread_rwlock_t pyxen_xc_gate = PYXEN_XC_GATE_INIT;
static __thread unsigned int pyxen_xc_depth;

/*
 * In a child of fork(): the gate as if new, and this thread outside it.
 * What the parent's threads held is not this child's: a shared hold of a
 * thread that does not exist here would keep every fork waiting, and the
 * forking thread's own exclusive hold cannot be released here (glibc knows
 * a writer by its thread ID, which the child's thread does not have).
 */
static void pyxen_xc_gate_reset(void)
{
    static const pthread_rwlock_t init = PYXEN_XC_GATE_INIT;

    pyxen_xc_gate = init;
    pyxen_xc_depth = 0;
}

static void pyxen_xc_enter(void)
{
    if ( pyxen_xc_depth++ == 0 )
        pthread_rwlock_rdlock(&pyxen_xc_gate);
}

/* A no-op in a thread that has not entered; errno is kept (the call's). */
static void pyxen_xc_leave(void)
{
    int saved = errno;

    if ( pyxen_xc_depth && --pyxen_xc_depth == 0 )
        pthread_rwlock_unlock(&pyxen_xc_gate);
    errno = saved;
}

/* For the tests: 1 if some thread is inside the gate (or forking), else 0. */
static int pyxen_xc_gate_busy(void)
{
    if ( pthread_rwlock_trywrlock(&pyxen_xc_gate) )
        return 1;
    pthread_rwlock_unlock(&pyxen_xc_gate);
    return 0;
}

/*
 * For the tests, from a thread outside the gate: 1 if a fork holds the gate
 * or waits for it (writers first: a new shared hold is then refused).
 */
static int pyxen_xc_gate_fork_waiting(void)
{
    if ( pthread_rwlock_tryrdlock(&pyxen_xc_gate) )
        return 1;
    pthread_rwlock_unlock(&pyxen_xc_gate);
    return 0;
}

/*
 * fork() with @lock held across it (so that the child's copy is unlocked)
 * and no libxenctrl call of pyxen's under way in another thread.  The gate
 * comes first, so that @lock (a context's logger's) is not held, and that
 * context's reapers kept from logging, while the fork waits for the gate.
 * A thread inside the gate (a signal handler's libxl call made inside a
 * libxenctrl call) forks without it rather than wait for itself.  In the
 * child the forking thread, the only one, owns @lock and unlocks it; the
 * gate is made new (pyxen_xc_gate_reset()).
 */
static pid_t pyxen_gated_fork(pthread_mutex_t *lock)
{
    int gated = !pyxen_xc_depth;
    pid_t pid;
    int saved;

    if ( gated )
        pthread_rwlock_wrlock(&pyxen_xc_gate);
    pthread_mutex_lock(lock);
    pid = fork();
    saved = errno;
    pthread_mutex_unlock(lock);
    if ( pid == 0 )
        pyxen_xc_gate_reset();
    else if ( gated )
        pthread_rwlock_unlock(&pyxen_xc_gate);
    errno = saved;
    return pid;
}

/*
 * For the tests: a pyxen_gated_fork() whose child exits at once, with 0 if
 * its gate is free, 1 if not; that status once it is reaped, -1 with errno
 * on failure.
 */
static int pyxen_gated_fork_probe(void)
{
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    int status;
    pid_t pid = pyxen_gated_fork(&lock);

    if ( pid < 0 )
        return -1;
    if ( pid == 0 )
        _exit(pyxen_xc_gate_busy());     /* 0: the child's gate is free */
    while ( waitpid(pid, &status, 0) < 0 )
        if ( errno != EINTR )
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static pid_t pyxen_fork(void *user)
{
    pyxen_logger *lg = user;
    struct pyxen_child *c = malloc(sizeof(*c));
    pthread_attr_t attr;
    pthread_t thread;
    sigset_t all, old;
    pid_t pid;
    int rc;

    if ( !c )
        return -1; /* errno ENOMEM: libxl reports the fork as failed */

    /*
     * The logger's lock is held across fork(), so that the child's copy of
     * it is unlocked (pthread_atfork()'s idiom): a reaper of this context
     * logging at that instant would otherwise leave it locked in the child,
     * whose first error message would then block for ever.  So is the
     * libxenctrl gate (above).
     */
    pid = pyxen_gated_fork(&lg->lock);
    if ( pid <= 0 )
    {
        int saved = errno;

        free(c);
        errno = saved;
        return pid;
    }

    c->lg = lg;
    c->pid = pid;
    /* The reaper takes no signal meant for Python's main thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    __atomic_add_fetch(&pyxen_reapers, 1, __ATOMIC_SEQ_CST);
    rc = pyxen_reaper_attr(&attr);
    if ( !rc )
    {
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

/* xs_open()'s flag for libxenstore's cache of reads (0: this one has none). */
#ifdef XS_OPEN_CACHE
#define PYXEN_XS_OPEN_CACHE XS_OPEN_CACHE
#else
#define PYXEN_XS_OPEN_CACHE 0
#endif

/* libxl_ctx_alloc()'s flag for a context that reads through libxenstore's cache. */
#ifdef LIBXL_HAVE_CTX_XS_CACHE
#define PYXEN_LIBXL_CTX_XS_CACHE LIBXL_CTX_XS_CACHE
#else
#define PYXEN_LIBXL_CTX_XS_CACHE 0
#endif

/*
 * Route @ctx's child processes through pyxen_fork() (call before any).
 * @logger is the per-handle logger @ctx was allocated with, and must live
 * as long as @ctx: its reapers log through it, and pyxen_fork() uses it.
 */
static void pyxen_childproc_setmode(libxl_ctx *ctx, xentoollog_logger *logger)
{
    pyxen_logger *lg = (pyxen_logger *)logger;

    lg->ctx = ctx;
    libxl_childproc_setmode(ctx, &pyxen_childproc_hooks, lg);
}

/*
 * In the child of a fork() of this process (Python's os.fork()): the
 * reapers counted are the parent's threads, none of which runs here, so
 * pyxen_childproc_quiesce() would wait for them for ever.
 */
static void pyxen_childproc_forget_reapers(void)
{
    __atomic_store_n(&pyxen_reapers, 0, __ATOMIC_SEQ_CST);
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
