/*
 * A stand-in for the libxenctrl that scrubd uses (the scrub sysctl's calls,
 * physinfo), to test scrubd without Xen: fake_xenctrl.c behaves as the
 * FAKE_* environment variables say.  Same names and types as the patched
 * xenctrl.h, nothing else.
 */
#ifndef FAKE_XENCTRL_H
#define FAKE_XENCTRL_H

#include <stdint.h>

typedef struct fake_xc_interface xc_interface;

typedef struct {
    uint64_t free_pages;
    uint32_t max_node_id;
} xc_physinfo_t;

#define XEN_SYSCTL_SCRUB_POLICY_idle    0
#define XEN_SYSCTL_SCRUB_POLICY_eager   1
#define XEN_SYSCTL_SCRUB_BUDGET_MIN_US  10
#define XEN_SYSCTL_SCRUB_BUDGET_MAX_US  1000
#define XEN_SYSCTL_SCRUB_PERIOD_MIN_US  1000
#define XEN_SYSCTL_SCRUB_PERIOD_MAX_US  1000000
#define XEN_SYSCTL_SCRUB_PERIOD_PER_BUDGET 10

typedef struct {
    uint64_t dirty_pages, freed_dirty, scrubbed_local, scrubbed_remote,
             scrubbed_alloc, scrubbed_worker, taken_dirty, worker_runs,
             deferred, offlined;
} xc_scrub_node_t;

xc_interface *xc_interface_open(void *logger, void *dombuild_logger,
                                unsigned int open_flags);
int xc_interface_close(xc_interface *xch);
int xc_physinfo(xc_interface *xch, xc_physinfo_t *info);
int xc_scrub_get(xc_interface *xch, uint32_t *policy, uint32_t *budget_us,
                 uint32_t *period_us, unsigned int *num_nodes,
                 xc_scrub_node_t *nodes);
int xc_scrub_set(xc_interface *xch, uint32_t policy, uint32_t budget_us,
                 uint32_t period_us);

#endif
