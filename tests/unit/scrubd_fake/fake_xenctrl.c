/*
 * The fake libxenctrl behind xenctrl.h in this folder.  Environment:
 *   FAKE_NODES=N         nodes the scrub sysctl reports (default 1)
 *   FAKE_PHYS_NODES=N    max_node_id + 1 that physinfo reports (default 64:
 *                        Xen reports MAX_NUMNODES - 1, whatever is online)
 *   FAKE_BIG=1           every counter UINT64_MAX (the longest status line)
 *   FAKE_GET_ERRNO=E     xc_scrub_get fails with errno E ...
 *   FAKE_GET_FAIL=A-B    ... on its calls A to B (1-based; default every call)
 *   FAKE_SET_ERRNO=E     xc_scrub_set fails with errno E ...
 *   FAKE_SET_FAIL=A-B    ... on its calls A to B (1-based; default every call)
 *   FAKE_OPEN_ERRNO=E    xc_interface_open fails with errno E
 *   FAKE_POLICY=P, FAKE_BUDGET=B, FAKE_PERIOD=T
 *                        the hypervisor's policy, budget and period at start
 *                        (default 0, idle; 1000; 10000)
 *   FAKE_STATE=PATH      the hypervisor's policy, budget and period kept in
 *                        PATH ("P B T"), so that they outlive the process like
 *                        Xen's: read at every call when PATH exists, written
 *                        by every successful xc_scrub_set
 *   FAKE_FREE_MIB=A,B,.. free memory physinfo reports at its first, second...
 *                        call, the last one thereafter (default 1024)
 *   FAKE_FREE_FILE=PATH  ... or, when PATH exists, the number in PATH, read
 *                        at every call (a test moves it when it wants)
 *   FAKE_LOG=PATH        each call appended to PATH, one line each
 * Like the patched library, xc_scrub_get fails with ENOBUFS and the node
 * count when the caller's array is too small, and like the hypervisor
 * xc_scrub_set fails with EINVAL for an unknown policy, or a budget and
 * period (but both 0: keep the current ones) out of range or with the budget
 * more than a tenth of the period.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xenctrl.h"

struct fake_xc_interface { int unused; };

static struct fake_xc_interface the_interface;
static unsigned long get_calls, set_calls, phys_calls;
static uint32_t cur_policy, cur_budget, cur_period;
static int cur_loaded;

static long env_num(const char *name, long dflt)
{
    const char *v = getenv(name);

    return v && *v ? strtol(v, NULL, 0) : dflt;
}

static void log_call(const char *fmt, unsigned long a, unsigned long b,
                     unsigned long c)
{
    const char *path = getenv("FAKE_LOG");
    FILE *f;

    if ( !path || !(f = fopen(path, "a")) )
        return;
    fprintf(f, fmt, a, b, c);
    fputc('\n', f);
    fclose(f);
}

/* Whether @calls (1-based) is within "A-B" in @name (unset: every call). */
static int in_range(const char *name, unsigned long calls)
{
    const char *range = getenv(name);
    unsigned long first = 1, last = (unsigned long)-1;

    if ( range && *range )
        sscanf(range, "%lu-%lu", &first, &last);
    return calls >= first && calls <= last;
}

/* The hypervisor's policy, budget and period, from FAKE_STATE if it exists. */
static void load_state(void)
{
    const char *path = getenv("FAKE_STATE");
    unsigned int p, b, t;
    FILE *f;

    if ( !cur_loaded )
    {
        cur_policy = env_num("FAKE_POLICY", 0);
        cur_budget = env_num("FAKE_BUDGET", 1000);
        cur_period = env_num("FAKE_PERIOD", 10000);
        cur_loaded = 1;
    }
    if ( !path || !(f = fopen(path, "r")) )
        return;
    if ( fscanf(f, "%u %u %u", &p, &b, &t) == 3 )
    {
        cur_policy = p;
        cur_budget = b;
        cur_period = t;
    }
    fclose(f);
}

static void save_state(void)
{
    const char *path = getenv("FAKE_STATE");
    FILE *f;

    if ( !path || !(f = fopen(path, "w")) )
        return;
    fprintf(f, "%u %u %u\n", (unsigned int)cur_policy, (unsigned int)cur_budget,
            (unsigned int)cur_period);
    fclose(f);
}

xc_interface *xc_interface_open(void *logger, void *dombuild_logger,
                                unsigned int open_flags)
{
    long err = env_num("FAKE_OPEN_ERRNO", 0);

    (void)logger; (void)dombuild_logger; (void)open_flags;
    if ( err )
    {
        errno = err;
        return NULL;
    }
    return &the_interface;
}

int xc_interface_close(xc_interface *xch)
{
    (void)xch;
    return 0;
}

int xc_physinfo(xc_interface *xch, xc_physinfo_t *info)
{
    long nodes = env_num("FAKE_PHYS_NODES", 64);
    const char *free_mib = getenv("FAKE_FREE_MIB");
    unsigned long mib = 1024, i;
    FILE *f;

    (void)xch;
    phys_calls++;
    /* The phys_calls-th of the comma-separated values, or the last one. */
    for ( i = 1; free_mib && *free_mib; i++ )
    {
        mib = strtoul(free_mib, NULL, 0);
        free_mib = strchr(free_mib, ',');
        if ( i == phys_calls || !free_mib )
            break;
        free_mib++;
    }
    if ( getenv("FAKE_FREE_FILE") && (f = fopen(getenv("FAKE_FREE_FILE"), "r")) )
    {
        if ( fscanf(f, "%lu", &mib) != 1 )
            mib = 1024;
        fclose(f);
    }
    info->free_pages = (uint64_t)mib * 256;
    info->max_node_id = nodes - 1;
    return 0;
}

int xc_scrub_get(xc_interface *xch, uint32_t *policy, uint32_t *budget_us,
                 uint32_t *period_us, unsigned int *num_nodes,
                 xc_scrub_node_t *nodes)
{
    unsigned int n = env_num("FAKE_NODES", 1), i;
    long err = env_num("FAKE_GET_ERRNO", 0);

    (void)xch;
    get_calls++;
    log_call("get %lu cap %lu nodes %lu", get_calls, *num_nodes, n);
    if ( err && in_range("FAKE_GET_FAIL", get_calls) )
    {
        errno = err;
        return -1;
    }
    if ( *num_nodes < n )
    {
        *num_nodes = n;
        errno = ENOBUFS;
        return -1;
    }
    for ( i = 0; i < n; i++ )
    {
        memset(&nodes[i], getenv("FAKE_BIG") ? 0xff : 0, sizeof(nodes[i]));
        if ( !getenv("FAKE_BIG") )
            nodes[i].dirty_pages = 256 * (i + 1);
    }
    *num_nodes = n;
    load_state();
    *policy = cur_policy;
    *budget_us = cur_budget;
    *period_us = cur_period;
    return 0;
}

int xc_scrub_set(xc_interface *xch, uint32_t policy, uint32_t budget_us,
                 uint32_t period_us)
{
    long err = env_num("FAKE_SET_ERRNO", 0);

    (void)xch;
    set_calls++;
    log_call("set %lu %lu %lu", policy, budget_us, period_us);
    if ( err && in_range("FAKE_SET_FAIL", set_calls) )
    {
        errno = err;
        return -1;
    }
    if ( (policy != XEN_SYSCTL_SCRUB_POLICY_idle &&
          policy != XEN_SYSCTL_SCRUB_POLICY_eager) ||
         ((budget_us || period_us) &&
          (budget_us < XEN_SYSCTL_SCRUB_BUDGET_MIN_US ||
           budget_us > XEN_SYSCTL_SCRUB_BUDGET_MAX_US ||
           period_us < XEN_SYSCTL_SCRUB_PERIOD_MIN_US ||
           period_us > XEN_SYSCTL_SCRUB_PERIOD_MAX_US ||
           (uint64_t)budget_us * XEN_SYSCTL_SCRUB_PERIOD_PER_BUDGET > period_us)) )
    {
        errno = EINVAL;
        return -1;
    }
    load_state();
    cur_policy = policy;
    if ( budget_us )
    {
        cur_budget = budget_us;
        cur_period = period_us;
    }
    save_state();
    return 0;
}
