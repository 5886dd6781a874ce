/*
 * The fake libxenctrl behind xenctrl.h in this folder.  Environment:
 *   FAKE_NODES=N         nodes the scrub sysctl reports (default 1)
 *   FAKE_PHYS_NODES=N    max_node_id + 1 that physinfo reports (default 64:
 *                        Xen reports MAX_NUMNODES - 1, whatever is online)
 *   FAKE_BIG=1           every counter UINT64_MAX (the longest status line)
 *   FAKE_GET_ERRNO=E     xc_scrub_get fails with errno E ...
 *   FAKE_GET_FAIL=A-B    ... on its calls A to B (1-based; default every call)
 *   FAKE_OPEN_ERRNO=E    xc_interface_open fails with errno E
 *   FAKE_LOG=PATH        each call appended to PATH, one line each
 * Like the patched library, xc_scrub_get fails with ENOBUFS and the node
 * count when the caller's array is too small.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xenctrl.h"

struct fake_xc_interface { int unused; };

static struct fake_xc_interface the_interface;
static unsigned long get_calls;
static uint32_t cur_policy, cur_budget = 1000, cur_period = 10000;

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

    (void)xch;
    info->free_pages = 1024 * 256;     /* 1 GiB */
    info->max_node_id = nodes - 1;
    return 0;
}

int xc_scrub_get(xc_interface *xch, uint32_t *policy, uint32_t *budget_us,
                 uint32_t *period_us, unsigned int *num_nodes,
                 xc_scrub_node_t *nodes)
{
    unsigned int n = env_num("FAKE_NODES", 1), i;
    long err = env_num("FAKE_GET_ERRNO", 0);
    const char *range = getenv("FAKE_GET_FAIL");
    unsigned long first = 1, last = (unsigned long)-1;

    (void)xch;
    get_calls++;
    log_call("get %lu cap %lu nodes %lu", get_calls, *num_nodes, n);
    if ( range && *range )
        sscanf(range, "%lu-%lu", &first, &last);
    if ( err && get_calls >= first && get_calls <= last )
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
    *policy = cur_policy;
    *budget_us = cur_budget;
    *period_us = cur_period;
    return 0;
}

int xc_scrub_set(xc_interface *xch, uint32_t policy, uint32_t budget_us,
                 uint32_t period_us)
{
    (void)xch;
    log_call("set %lu %lu %lu", policy, budget_us, period_us);
    cur_policy = policy;
    if ( budget_us )
    {
        cur_budget = budget_us;
        cur_period = period_us;
    }
    return 0;
}
