/* cffi cdef: the parts of libxenctrl (xenctrl.h) pyxen uses. */
typedef struct xc_interface_core xc_interface;

typedef struct {
    uint16_t domain;
    uint32_t flags;
    uint64_t tot_pages;
    uint64_t max_pages;
    uint64_t outstanding_pages;
    uint64_t cpu_time;
    uint32_t nr_online_vcpus;
    uint32_t max_vcpu_id;
    uint32_t cpupool;
    ...;
} xc_domaininfo_t;

typedef struct {
    uint32_t threads_per_core;
    uint32_t cores_per_socket;
    uint32_t nr_cpus;
    uint32_t max_cpu_id;
    uint32_t nr_nodes;
    uint32_t max_node_id;
    uint32_t cpu_khz;
    uint32_t capabilities;
    uint64_t total_pages;
    uint64_t free_pages;
    uint64_t scrub_pages;
    uint64_t outstanding_pages;
    ...;
} xc_physinfo_t;

typedef struct { uint64_t memsize; uint64_t memfree; } xc_meminfo_t;
typedef struct { uint32_t core; uint32_t socket; uint32_t node; } xc_cputopo_t;

#define XEN_DOMINF_dying ...
#define XEN_DOMINF_shutdown ...
#define XEN_DOMINF_paused ...
#define XEN_DOMINF_blocked ...
#define XEN_DOMINF_running ...
#define XEN_DOMINF_xs_domain ...
#define XEN_DOMINF_shutdownmask ...
#define XEN_DOMINF_shutdownshift ...
#define XEN_INVALID_NODE_DIST ...

xc_interface *xc_interface_open(xentoollog_logger *logger,
                                xentoollog_logger *dombuild_logger,
                                unsigned open_flags);
int xc_interface_close(xc_interface *xch);

int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain,
                          unsigned int max_domains, xc_domaininfo_t *info);
int xc_physinfo(xc_interface *xch, xc_physinfo_t *info);
int xc_numainfo(xc_interface *xch, unsigned *max_nodes,
                xc_meminfo_t *meminfo, uint32_t *distance);
int xc_cputopoinfo(xc_interface *xch, unsigned *max_cpus, xc_cputopo_t *cputopo);
int xc_domain_pause(xc_interface *xch, uint32_t domid);
int xc_domain_unpause(xc_interface *xch, uint32_t domid);
int xc_domain_destroy(xc_interface *xch, uint32_t domid);
int xc_domain_claim_pages(xc_interface *xch, uint32_t domid, unsigned long nr_pages);

/* XEN_DOMCTL_createdomain alone (XenCtrl.create_bare_domain). */
struct xen_domctl_createdomain {
    uint32_t ssidref;
    uint32_t flags;
    uint32_t max_vcpus;
    uint32_t max_evtchn_port;
    int32_t max_grant_frames;
    int32_t max_maptrack_frames;
    uint32_t grant_opts;
    uint32_t cpupool_id;
    ...;
};
int xc_domain_create(xc_interface *xch, uint32_t *pdomid,
                     struct xen_domctl_createdomain *config);

/* XEN_SYSCTL_scrub_op through pyxen's shim (shim.c says why). */
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
#define PYXEN_SCRUB_SUPPORTED ...
#define PYXEN_SCRUB_POLICY_IDLE ...
#define PYXEN_SCRUB_POLICY_EAGER ...
#define PYXEN_SCRUB_BUDGET_MIN_US ...
#define PYXEN_SCRUB_BUDGET_MAX_US ...
#define PYXEN_SCRUB_PERIOD_MIN_US ...
#define PYXEN_SCRUB_PERIOD_MAX_US ...
#define PYXEN_SCRUB_PERIOD_PER_BUDGET ...
/* The gate pyxen's libxenctrl calls pass, against forks (shim.c). */
void pyxen_xc_enter(void);
void pyxen_xc_leave(void);
int pyxen_xc_gate_busy(void);
int pyxen_xc_gate_fork_waiting(void);
void pyxen_xc_gate_reset(void);
int pyxen_scrub_get(xc_interface *xch, uint32_t *policy, uint32_t *budget_us,
                    uint32_t *period_us, unsigned int *num_nodes,
                    pyxen_scrub_node *out);
int pyxen_scrub_set(xc_interface *xch, uint32_t policy, uint32_t budget_us,
                    uint32_t period_us);

/* XEN_SYSCTL_page_offline_op: status bits (xen/sysctl.h). */
#define PG_OFFLINE_STATUS_MASK ...
#define PG_OFFLINE_OFFLINED ...
#define PG_OFFLINE_PENDING ...
#define PG_OFFLINE_FAILED ...
#define PG_OFFLINE_AGAIN ...
#define PG_OFFLINE_OWNED ...
#define PG_OFFLINE_BROKEN ...
#define PG_OFFLINE_OWNER_SHIFT ...
#define PG_OFFLINE_STATUS_OFFLINED ...
#define PG_OFFLINE_STATUS_ONLINE ...
#define PG_OFFLINE_STATUS_OFFLINE_PENDING ...
#define PG_OFFLINE_STATUS_BROKEN ...
int xc_mark_page_online(xc_interface *xch, unsigned long start,
                        unsigned long end, uint32_t *status);
int xc_mark_page_offline(xc_interface *xch, unsigned long start,
                         unsigned long end, uint32_t *status);
int xc_query_page_offline_status(xc_interface *xch, unsigned long start,
                                 unsigned long end, uint32_t *status);

int xc_send_debug_keys(xc_interface *xch, const char *keys);
int xc_readconsolering(xc_interface *xch, char *buffer, unsigned int *pnr_chars,
                       int clear, int incremental, uint32_t *pindex);
