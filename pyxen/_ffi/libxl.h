/* cffi cdef: the parts of libxenlight (libxl.h, libxl_utils.h) pyxen uses. */
typedef struct libxl__ctx libxl_ctx;
typedef uint32_t libxl_domid;

typedef enum { LIBXL_DOMAIN_TYPE_PV = 2, ... } libxl_domain_type;
typedef enum { LIBXL_ACTION_ON_SHUTDOWN_DESTROY = 1,
               LIBXL_ACTION_ON_SHUTDOWN_PRESERVE = 4, ... } libxl_action_on_shutdown;
typedef enum { ... } libxl_shutdown_reason;
typedef enum { ... } libxl_error;
typedef enum { ... } libxl_scheduler;

#define LIBXL_VERSION ...
#define ERROR_FAIL ...
#define ERROR_INVAL ...
#define ERROR_NOMEM ...
#define ERROR_DOMAIN_NOTFOUND ...

typedef struct { uint32_t size; uint8_t *map; } libxl_bitmap;
typedef struct { ...; } libxl_defbool;
typedef struct { ...; } libxl_asyncop_how;
typedef struct { ...; } libxl_asyncprogress_how;

typedef struct { unsigned char uuid[16]; } libxl_uuid;

typedef struct {
    libxl_domain_type type;
    char *name;
    libxl_uuid uuid;
    ...;
} libxl_domain_create_info;

/* Only the fields pyxen sets; libxl's init gives the rest their defaults. */
typedef struct {
    int weight;
    ...;
} libxl_domain_sched_params;

typedef struct {
    int max_vcpus;
    libxl_bitmap avail_vcpus;
    uint64_t max_memkb;
    uint64_t target_memkb;
    char *kernel;
    char *cmdline;
    char *ramdisk;
    libxl_bitmap nodemap;
    libxl_defbool numa_placement;
    libxl_domain_sched_params sched_params;
    ...;
} libxl_domain_build_info;

typedef struct {
    libxl_domain_create_info c_info;
    libxl_domain_build_info b_info;
    libxl_action_on_shutdown on_poweroff;
    libxl_action_on_shutdown on_reboot;
    libxl_action_on_shutdown on_watchdog;
    libxl_action_on_shutdown on_crash;
    ...;
} libxl_domain_config;

typedef struct {
    libxl_domid domid;
    bool running;
    bool blocked;
    bool paused;
    bool shutdown;
    bool dying;
    libxl_shutdown_reason shutdown_reason;
    uint64_t outstanding_memkb;
    uint64_t current_memkb;
    uint64_t max_memkb;
    uint64_t cpu_time;
    uint32_t vcpu_max_id;
    uint32_t vcpu_online;
    ...;
} libxl_dominfo;


const char *libxl_error_to_string(libxl_error p);
const char *libxl_scheduler_to_string(libxl_scheduler p);
libxl_scheduler libxl_get_scheduler(libxl_ctx *ctx);

int libxl_ctx_alloc(libxl_ctx **pctx, int version, unsigned flags,
                    xentoollog_logger *lg);
int libxl_ctx_free(libxl_ctx *ctx);
/* The shim's child handling: no SIGCHLD handler, a reaper per child (shim.c). */
void pyxen_childproc_setmode(libxl_ctx *ctx, xentoollog_logger *logger);
#define PYXEN_LIBXL_CTX_XS_CACHE ...
void pyxen_childproc_quiesce(void);
void pyxen_childproc_forget_reapers(void);
unsigned long pyxen_deadlocked_children(void);
void pyxen_watch_child(int pid);
int pyxen_child_unexeced(int pid);
size_t pyxen_reaper_stack_size(void);
int pyxen_gated_fork_probe(void);

void libxl_domain_config_init(libxl_domain_config *p);
void libxl_domain_config_dispose(libxl_domain_config *p);
void libxl_domain_build_info_init_type(libxl_domain_build_info *p,
                                       libxl_domain_type type);
int libxl_cpu_bitmap_alloc(libxl_ctx *ctx, libxl_bitmap *cpumap, int max_cpus);
void libxl_bitmap_set(libxl_bitmap *bitmap, int bit);
int libxl_node_bitmap_alloc(libxl_ctx *ctx, libxl_bitmap *nodemap, int max_nodes);
void libxl_defbool_set(libxl_defbool *db, bool b);

int libxl_domain_create_new(libxl_ctx *ctx, libxl_domain_config *d_config,
                            uint32_t *domid, const libxl_asyncop_how *ao_how,
                            const libxl_asyncprogress_how *aop_console_how);
int libxl_domain_unpause(libxl_ctx *ctx, uint32_t domid,
                         const libxl_asyncop_how *ao_how);
int libxl_domain_destroy(libxl_ctx *ctx, uint32_t domid,
                         const libxl_asyncop_how *ao_how);

libxl_dominfo *libxl_list_domain(libxl_ctx *ctx, int *nb_domain_out);
void libxl_dominfo_list_free(libxl_dominfo *list, int nb_domain);
int libxl_name_to_domid(libxl_ctx *ctx, const char *name, uint32_t *domid);
char *libxl_domid_to_name(libxl_ctx *ctx, uint32_t domid);
