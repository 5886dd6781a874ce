/*
 * tinyguest: a minimal 64-bit PV guest for measuring domain birth and death.
 *
 * It does what a real guest must do to be "up" and nothing more, so that the
 * cost of creating it is the toolstack's and the hypervisor's:
 *   1. write one line to its PV console ring (xenconsoled logs it, and
 *      "xl console" shows it; a domU's console_io hypercall is refused by a
 *      non-debug Xen, so the ring is the only console there is);
 *   2. wait forever without burning CPU: SCHEDOP_poll on its console and
 *      xenstore event channels, clearing their pending bits in shared_info
 *      after each wake-up -- or, with the command line "spin", burn its vCPU
 *      forever (load for benchmarks that need every pCPU busy; its CPU time,
 *      as Xen accounts it, is its throughput).
 *
 * With the command line "xs-half" it first plays a guest caught by an
 * XS_INTRODUCE in the middle of a Xenstore request (xs_half() below); with
 * "xs-nosignal" one whose request's event was lost (xs_nosignal()); with
 * "xs-deaf" and "xs-pipe" two that hold one of them at its outstanding
 * requests quota in xenstored (xs_deaf(), xs_pipe()); with
 * "domctl" it plays a Xenstore stub domain issuing the domctls such a
 * domain may, as fast as it can (domctl_hammer() below).
 *
 * Freestanding: no libc, Xen's public headers give the ABI.  Hypercalls use
 * "syscall" with the number in %rax, which is what the 64-bit hypercall page
 * does, so no hypercall page is needed.
 */
#include <stdint.h>

#include <xen/xen.h>
#include <xen/sched.h>
#include <xen/event_channel.h>
#include <xen/io/console.h>
#include <xen/io/xs_wire.h>

#define PAGE_SHIFT 12
#define PAGE_SIZE  (1UL << PAGE_SHIFT)

/* L1 entry flags for mapping shared_info: present, writable, accessed, dirty. */
#define PTE_FLAGS  0x63UL

/* The line the lab looks for in the console log. */
#define BANNER "pyxen-tinyguest: up, nr_pages="

/* A bss page whose mapping is replaced by the shared_info frame. */
uint8_t shared_info_page[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

static inline long hypercall3(unsigned int nr, unsigned long a1,
                              unsigned long a2, unsigned long a3)
{
    register unsigned long rdi asm("rdi") = a1;
    register unsigned long rsi asm("rsi") = a2;
    register unsigned long rdx asm("rdx") = a3;
    long ret;

    asm volatile ( "syscall"
                   : "=a" (ret), "+r" (rdi), "+r" (rsi), "+r" (rdx)
                   : "0" ((unsigned long)nr)
                   : "rcx", "r11", "memory" );
    return ret;
}

static void shutdown(unsigned int reason)
{
    struct sched_shutdown s = { .reason = reason };

    for ( ;; )
        hypercall3(__HYPERVISOR_sched_op, SCHEDOP_shutdown,
                   (unsigned long)&s, 0);
}

static void *mfn_to_virt(unsigned long mfn)
{
    const unsigned long *m2p = (const unsigned long *)MACH2PHYS_VIRT_START;

    /* virt_base is 0 (see head.S), so a pfn's virtual address is pfn << 12. */
    return (void *)(m2p[mfn] << PAGE_SHIFT);
}

static void notify(evtchn_port_t port)
{
    struct evtchn_send send = { .port = port };

    hypercall3(__HYPERVISOR_event_channel_op, EVTCHNOP_send,
               (unsigned long)&send, 0);
}

/* Sleep until one of the ports is pending, then clear them. */
static void wait_for_events(shared_info_t *shared, evtchn_port_t *ports,
                            unsigned int nr)
{
    struct sched_poll poll = { .nr_ports = nr, .timeout = 0 };
    const unsigned int bits = sizeof(xen_ulong_t) * 8;
    unsigned int i;

    set_xen_guest_handle(poll.ports, ports);
    if ( hypercall3(__HYPERVISOR_sched_op, SCHEDOP_poll,
                    (unsigned long)&poll, 0) )
        shutdown(SHUTDOWN_crash);

    shared->vcpu_info[0].evtchn_upcall_pending = 0;
    for ( i = 0; i < nr; i++ )
        __atomic_fetch_and(&shared->evtchn_pending[ports[i] / bits],
                           ~((xen_ulong_t)1 << (ports[i] % bits)),
                           __ATOMIC_SEQ_CST);
}

static void console_write(struct xencons_interface *ring, evtchn_port_t port,
                          shared_info_t *shared, const char *s,
                          unsigned long len)
{
    evtchn_port_t ports[1] = { port };

    while ( len )
    {
        XENCONS_RING_IDX prod = ring->out_prod;
        XENCONS_RING_IDX cons = __atomic_load_n(&ring->out_cons,
                                                __ATOMIC_ACQUIRE);

        if ( prod - cons >= sizeof(ring->out) )
        {
            /* Full: xenconsoled notifies us when it has consumed output. */
            notify(port);
            wait_for_events(shared, ports, 1);
            continue;
        }
        while ( len && prod - cons < sizeof(ring->out) )
        {
            ring->out[MASK_XENCONS_IDX(prod, ring->out)] = *s++;
            prod++;
            len--;
        }
        __atomic_store_n(&ring->out_prod, prod, __ATOMIC_RELEASE);
        notify(port);
    }
}

static unsigned long format_line(char *buf, unsigned long nr_pages)
{
    static const char banner[] = BANNER;
    char digits[20];
    unsigned long n = 0, i, d = 0;

    for ( i = 0; i < sizeof(banner) - 1; i++ )
        buf[n++] = banner[i];
    do {
        digits[d++] = '0' + nr_pages % 10;
        nr_pages /= 10;
    } while ( nr_pages );
    while ( d )
        buf[n++] = digits[--d];
    buf[n++] = '\r';
    buf[n++] = '\n';
    return n;
}

/*
 * The length of "prefix" if the command line starts with it, else -1.
 * The command line is NUL-terminated within start_info's MAX_GUEST_CMDLINE.
 */
static int cmdline_prefix(const uint8_t *cmdline, const char *prefix)
{
    unsigned int i;

    for ( i = 0; prefix[i]; i++ )
        if ( cmdline[i] != (uint8_t)prefix[i] )
            return -1;
    return i;
}

/* The command line is exactly "word". */
static int cmdline_is(const int8_t *si_cmdline, const char *word)
{
    const uint8_t *cmdline = (const uint8_t *)si_cmdline;
    int i = cmdline_prefix(cmdline, word);

    return i >= 0 && cmdline[i] == 0;
}

/* The command line is "prefix" and a decimal number: 1 and the number. */
static int cmdline_number(const int8_t *si_cmdline, const char *prefix,
                          unsigned long *value)
{
    const uint8_t *cmdline = (const uint8_t *)si_cmdline;
    int i = cmdline_prefix(cmdline, prefix);
    unsigned int digits;

    if ( i < 0 )
        return 0;
    for ( *value = 0, digits = 0; cmdline[i] >= '0' && cmdline[i] <= '9'; i++ )
    {
        if ( ++digits > 9 )
            return 0;
        *value = *value * 10 + (cmdline[i] - '0');
    }
    return digits && cmdline[i] == 0;
}

static void yield(void)
{
    hypercall3(__HYPERVISOR_sched_op, SCHEDOP_yield, 0, 0);
}

/* Append the decimal digits of n to buf at *n_out. */
static void put_number(char *buf, unsigned long *at, unsigned long n)
{
    char digits[20];
    unsigned long d = 0;

    do {
        digits[d++] = '0' + n % 10;
        n /= 10;
    } while ( n );
    while ( d )
        buf[(*at)++] = digits[--d];
}

static void put_text(char *buf, unsigned long *at, const char *s)
{
    while ( *s )
        buf[(*at)++] = *s++;
}

static void put_request(struct xenstore_domain_interface *xs, const void *p,
                        unsigned long len)
{
    const uint8_t *b = p;
    XENSTORE_RING_IDX prod = xs->req_prod;

    while ( len-- )
        xs->req[MASK_XENSTORE_IDX(prod++)] = *b++;
    __atomic_store_n(&xs->req_prod, prod, __ATOMIC_RELEASE);
}

/* Waits until the response ring holds @n bytes from @cons on. */
static void xs_wait_rsp(struct xenstore_domain_interface *xs,
                        XENSTORE_RING_IDX cons, uint32_t n)
{
    while ( __atomic_load_n(&xs->rsp_prod, __ATOMIC_ACQUIRE) - cons < n )
        yield();
}

/*
 * Waits for the next message on the response ring and copies its header
 * to @hdr; returns the ring index of its body (not consumed yet).
 */
static XENSTORE_RING_IDX xs_read_header(struct xenstore_domain_interface *xs,
                                        struct xsd_sockmsg *hdr)
{
    uint8_t *h = (uint8_t *)hdr;
    XENSTORE_RING_IDX cons = xs->rsp_cons;
    unsigned long i;

    xs_wait_rsp(xs, cons, sizeof(*hdr));
    for ( i = 0; i < sizeof(*hdr); i++ )
        h[i] = xs->rsp[MASK_XENSTORE_IDX(cons++)];
    return cons;
}

/* Marks the response ring read up to @cons, and says so. */
static void xs_consume(struct xenstore_domain_interface *xs,
                       evtchn_port_t port, XENSTORE_RING_IDX cons)
{
    __atomic_store_n(&xs->rsp_cons, cons, __ATOMIC_RELEASE);
    notify(port);
}

/* Waits for the next message on the ring and consumes it, whatever it is. */
static void xs_skip_message(struct xenstore_domain_interface *xs,
                            evtchn_port_t port)
{
    struct xsd_sockmsg hdr;
    XENSTORE_RING_IDX body = xs_read_header(xs, &hdr);

    xs_wait_rsp(xs, body, hdr.len);
    xs_consume(xs, port, body + hdr.len);
}

/* Puts a request of one type with the given payload on the ring. */
static void xs_put(struct xenstore_domain_interface *xs, uint32_t type,
                   uint32_t req_id, const char *payload, uint32_t len)
{
    const struct xsd_sockmsg hdr = {
        .type = type, .req_id = req_id, .len = len,
    };

    put_request(xs, &hdr, sizeof(hdr));
    put_request(xs, payload, len);
}

static void console_line(struct xencons_interface *con, evtchn_port_t port,
                         shared_info_t *shared, const char *text)
{
    char line[96];
    unsigned long n = 0;

    put_text(line, &n, "pyxen-tinyguest: ");
    put_text(line, &n, text);
    put_text(line, &n, "\r\n");
    console_write(con, port, shared, line, n);
}

/* Waits for input on the console, and takes it. */
static void console_wait_input(struct xencons_interface *con,
                               evtchn_port_t port)
{
    XENCONS_RING_IDX prod;

    while ( (prod = __atomic_load_n(&con->in_prod, __ATOMIC_ACQUIRE)) ==
            con->in_cons )
        yield();
    __atomic_store_n(&con->in_cons, prod, __ATOMIC_RELEASE);
    notify(port);
}

/*
 * Waits for the next reply on the ring, then writes
 * "pyxen-tinyguest: <mode> reply type=T req_id=R body=B" to the console (B:
 * up to 32 bytes of the body, '?' for what is not printable) and consumes it.
 */
static void xs_reply_line(struct xenstore_domain_interface *xs,
                          evtchn_port_t port, struct xencons_interface *con,
                          evtchn_port_t con_port, shared_info_t *shared,
                          const char *mode)
{
    struct xsd_sockmsg reply;
    XENSTORE_RING_IDX body = xs_read_header(xs, &reply);
    char line[128];
    unsigned long n = 0, i;

    /* Up to 32 bytes of the body. */
    xs_wait_rsp(xs, body, reply.len < 32 ? reply.len : 32);
    put_text(line, &n, "pyxen-tinyguest: ");
    put_text(line, &n, mode);
    put_text(line, &n, " reply type=");
    put_number(line, &n, reply.type);
    put_text(line, &n, " req_id=");
    put_number(line, &n, reply.req_id);
    put_text(line, &n, " body=");
    for ( i = 0; i < reply.len && i < 32; i++ )
    {
        char c = xs->rsp[MASK_XENSTORE_IDX(body + i)];

        line[n++] = (c >= ' ' && c <= '~') ? c : '?';
    }
    put_text(line, &n, "\r\n");
    xs_wait_rsp(xs, body, reply.len);
    xs_consume(xs, port, body + reply.len);
    console_write(con, con_port, shared, line, n);
}

/*
 * A request sent in two parts with an XS_INTRODUCE of this domain between
 * them: the first 8 bytes of a header; then, once xenstored has read them
 * and the toolstack's XS_INTRODUCE has reset the ring (req_prod back to 0),
 * the rest.  The bytes are chosen so that the rest is also a whole request
 * of its own: XS_READ of "name" with req_id XS_HALF_REST_LEN.  A xenstored
 * that dropped the half-read request on the reset answers that one; one
 * that kept appending to it answers the first (req_id XS_HALF_FIRST_ID), or
 * worse.  The reply goes to the console ("xs-half reply ...").
 */
#define XS_HALF_FIRST_ID 7
#define XS_HALF_REST_LEN 13

static void xs_half(struct xenstore_domain_interface *xs, evtchn_port_t port,
                    struct xencons_interface *con, evtchn_port_t con_port,
                    shared_info_t *shared)
{
    const uint32_t first[2] = { XS_READ, XS_HALF_FIRST_ID };
    /* As the first request's tx_id and len; as a request, type and req_id. */
    const uint32_t rest[2] = { XS_READ, XS_HALF_REST_LEN };
    /* As the first request's body; as a request, tx_id, len and "name". */
    const uint32_t rest_hdr[2] = { 0, 5 };

    put_request(xs, first, sizeof(first));
    notify(port);
    while ( __atomic_load_n(&xs->req_cons, __ATOMIC_ACQUIRE) != sizeof(first) )
        yield();
    console_line(con, con_port, shared, "xs-half sent");

    while ( __atomic_load_n(&xs->req_prod, __ATOMIC_ACQUIRE) != 0 )
        yield();
    put_request(xs, rest, sizeof(rest));
    put_request(xs, rest_hdr, sizeof(rest_hdr));
    put_request(xs, "name", 5);
    notify(port);

    xs_reply_line(xs, port, con, con_port, shared, "xs-half");
}

/*
 * "xs-nosignal": once input arrives on the console (so that the test
 * chooses when), an XS_READ of "name" (req_id XS_NOSIGNAL_ID) put on the
 * ring without the event that tells xenstored of it, as by a guest whose
 * signal was lost.  "xs-nosignal sent" on the console once it is on the
 * ring, then the reply ("xs-nosignal reply ...") whenever xenstored looks at
 * the ring and answers it.
 */
#define XS_NOSIGNAL_ID 21

static void xs_nosignal(struct xenstore_domain_interface *xs,
                        evtchn_port_t port, struct xencons_interface *con,
                        evtchn_port_t con_port, shared_info_t *shared)
{
    console_wait_input(con, con_port);
    xs_put(xs, XS_READ, XS_NOSIGNAL_ID, "name", 5);
    console_line(con, con_port, shared, "xs-nosignal sent");

    xs_reply_line(xs, port, con, con_port, shared, "xs-nosignal");
}

/*
 * Two guests and a quota, to hold one domain at its outstanding requests
 * quota by another's unread watch events (xenstored keeps a request
 * outstanding until every event it fired was read or timed out).
 *
 * "xs-deaf": watches XS_DEAF_PATH (token XS_DEAF_TOKEN: an event of it is
 * exactly XS_DEAF_EVENT_BYTES, so XENSTORE_RING_SIZE / XS_DEAF_EVENT_BYTES
 * events fill the ring to its last byte), reads the watch's reply and
 * first event, prints "xs-deaf ready", and never reads its ring again.
 * Once a byte arrives on its console, it puts XS_DEAF_READS reads of the
 * path on the ring, with their event, and prints "xs-deaf sent".
 *
 * "xs-pipe": puts a write of XS_DEAF_PATH and one of XS_PIPE_OTHER_PATH,
 * which the deaf guest does not watch, on the ring at once, with one
 * event, prints "xs-pipe sent", then "xs-pipe done" once it has read both
 * replies.
 */
#define XS_DEAF_PATH        "/pyxen-deaf/x"
#define XS_DEAF_TOKEN       "t"
#define XS_DEAF_EVENT_BYTES (sizeof(struct xsd_sockmsg) + \
                             sizeof(XS_DEAF_PATH) + sizeof(XS_DEAF_TOKEN))
#define XS_DEAF_READS       3
#define XS_PIPE_OTHER_PATH  "/pyxen-deaf/y"

_Static_assert(XENSTORE_RING_SIZE % XS_DEAF_EVENT_BYTES == 0,
               "the deaf guest's events must fill its ring exactly");

static void xs_deaf(struct xenstore_domain_interface *xs, evtchn_port_t port,
                    struct xencons_interface *con, evtchn_port_t con_port,
                    shared_info_t *shared)
{
    static const char watch[] = XS_DEAF_PATH "\0" XS_DEAF_TOKEN;
    unsigned int i;

    xs_put(xs, XS_WATCH, 1, watch, sizeof(watch));
    notify(port);
    xs_skip_message(xs, port);          /* the watch's reply */
    xs_skip_message(xs, port);          /* and its first event */
    console_line(con, con_port, shared, "xs-deaf ready");

    console_wait_input(con, con_port);
    for ( i = 0; i < XS_DEAF_READS; i++ )
        xs_put(xs, XS_READ, 2 + i, XS_DEAF_PATH, sizeof(XS_DEAF_PATH));
    notify(port);
    console_line(con, con_port, shared, "xs-deaf sent");
}

static void xs_pipe(struct xenstore_domain_interface *xs, evtchn_port_t port,
                    struct xencons_interface *con, evtchn_port_t con_port,
                    shared_info_t *shared)
{
    static const char watched[] = XS_DEAF_PATH "\0" "a";
    static const char other[] = XS_PIPE_OTHER_PATH "\0" "a";

    /* The values are not NUL-terminated: leave out the literals' last NUL. */
    xs_put(xs, XS_WRITE, 1, watched, sizeof(watched) - 1);
    xs_put(xs, XS_WRITE, 2, other, sizeof(other) - 1);
    notify(port);
    console_line(con, con_port, shared, "xs-pipe sent");

    xs_skip_message(xs, port);
    xs_skip_message(xs, port);
    console_line(con, con_port, shared, "xs-pipe done");
}

/*
 * "domctl" or "domctl=ID": play a de-privileged Xenstore stub domain (one
 * created with XEN_DOMCTL_CDF_xs_domain holds XSM_XS_PRIV) that issues,
 * forever and as fast as it can, the domctls such a domain may:
 * getdomaininfo and get_domain_state of domain ID (when given) in every
 * round, of DOMCTL_SWEEP more IDs in turn from the first DOMCTL_WINDOW (so
 * every domain there is read every DOMCTL_WINDOW / DOMCTL_SWEEP rounds),
 * and get_domain_state of DOMID_INVALID (the changed domains, refused to
 * all but VIRQ_DOM_EXC's handler after taking that handler's event_lock).
 * getdomaininfo's interface version is not stable: the first that Xen does
 * not refuse with -EACCES is used.  The console gets
 * "pyxen-tinyguest: domctl version=V first=R" (R: getdomaininfo of domain 0,
 * 0 when allowed), then every DOMCTL_REPORT rounds
 * "pyxen-tinyguest: domctl calls=N ok=M".
 *
 * Only the header of struct xen_domctl is spelt out: the layout of its
 * start is part of the stable ABI, and the union after it is never more
 * than 128 bytes (DOMCTL_UNION_BYTES leaves room).
 */
#define DOMCTL_GETDOMAININFO     5
#define DOMCTL_GET_DOMAIN_STATE  90     /* stable: interface_version 0 */
#define DOMCTL_VERSION_FIRST     0x10
#define DOMCTL_VERSION_LAST      0x40
#define DOMCTL_SWEEP             8
#define DOMCTL_WINDOW            1024
#define DOMCTL_REPORT            2048
#define DOMCTL_UNION_BYTES       256
#define ERR_EACCES               13

struct domctl {
    uint32_t cmd;
    uint32_t interface_version;
    uint16_t domain;
    uint16_t pad[3];
    uint64_t u[DOMCTL_UNION_BYTES / 8];
};

static struct domctl domctl_buf;

static long domctl(uint32_t cmd, uint32_t version, uint16_t domid)
{
    unsigned int i;

    for ( i = 0; i < DOMCTL_UNION_BYTES / 8; i++ )
        domctl_buf.u[i] = 0;
    domctl_buf.cmd = cmd;
    domctl_buf.interface_version = version;
    domctl_buf.domain = domid;
    domctl_buf.pad[0] = domctl_buf.pad[1] = domctl_buf.pad[2] = 0;
    return hypercall3(__HYPERVISOR_domctl, (unsigned long)&domctl_buf, 0, 0);
}

static void put_signed(char *buf, unsigned long *at, long n)
{
    if ( n < 0 )
    {
        buf[(*at)++] = '-';
        n = -n;
    }
    put_number(buf, at, n);
}

/* "pyxen-tinyguest: domctl <a><x><b><y>" on the console. */
static void domctl_report(struct xencons_interface *con, evtchn_port_t port,
                          shared_info_t *shared, const char *a, long x,
                          const char *b, long y)
{
    char line[96];
    unsigned long n = 0;

    put_text(line, &n, "pyxen-tinyguest: domctl ");
    put_text(line, &n, a);
    put_signed(line, &n, x);
    put_text(line, &n, b);
    put_signed(line, &n, y);
    put_text(line, &n, "\r\n");
    console_write(con, port, shared, line, n);
}

static void __attribute__((noreturn)) domctl_hammer(
    struct xencons_interface *con, evtchn_port_t con_port, shared_info_t *shared,
    uint16_t target)
{
    uint32_t version;
    long first = -ERR_EACCES;
    unsigned long calls = 0, ok = 0, rounds = 0;
    unsigned int i;
    uint16_t next = 0;

    for ( version = DOMCTL_VERSION_FIRST; version <= DOMCTL_VERSION_LAST; version++ )
        if ( (first = domctl(DOMCTL_GETDOMAININFO, version, 0)) != -ERR_EACCES )
            break;
    domctl_report(con, con_port, shared, "version=", version, " first=", first);

    for ( ;; )
    {
        if ( target != DOMID_INVALID )
        {
            ok += domctl(DOMCTL_GETDOMAININFO, version, target) == 0;
            ok += domctl(DOMCTL_GET_DOMAIN_STATE, 0, target) == 0;
            calls += 2;
        }
        for ( i = 0; i < DOMCTL_SWEEP; i++, next = (next + 1) % DOMCTL_WINDOW )
        {
            ok += domctl(DOMCTL_GETDOMAININFO, version, next) == 0;
            ok += domctl(DOMCTL_GET_DOMAIN_STATE, 0, next) == 0;
        }
        domctl(DOMCTL_GET_DOMAIN_STATE, 0, DOMID_INVALID);
        calls += 2 * DOMCTL_SWEEP + 1;
        if ( ++rounds % DOMCTL_REPORT )
            continue;
        domctl_report(con, con_port, shared, "calls=", calls, " ok=", ok);
    }
}

void __attribute__((noreturn)) guest_main(const start_info_t *si)
{
    struct xencons_interface *ring = mfn_to_virt(si->console.domU.mfn);
    shared_info_t *shared = (shared_info_t *)shared_info_page;
    evtchn_port_t ports[2] = { si->console.domU.evtchn, si->store_evtchn };
    char line[64];
    unsigned long value;

    if ( hypercall3(__HYPERVISOR_update_va_mapping,
                    (unsigned long)shared_info_page,
                    si->shared_info | PTE_FLAGS, UVMF_INVLPG) )
        shutdown(SHUTDOWN_crash);

    console_write(ring, ports[0], shared, line,
                  format_line(line, si->nr_pages));

    if ( cmdline_is(si->cmd_line, "spin") )
        for ( ;; )
            asm volatile ( "pause" ::: "memory" );

    if ( cmdline_is(si->cmd_line, "domctl") )
        domctl_hammer(ring, ports[0], shared, DOMID_INVALID);
    if ( cmdline_number(si->cmd_line, "domctl=", &value) && value < DOMID_FIRST_RESERVED )
        domctl_hammer(ring, ports[0], shared, value);

    if ( cmdline_is(si->cmd_line, "xs-half") )
        xs_half(mfn_to_virt(si->store_mfn), si->store_evtchn, ring, ports[0],
                shared);
    if ( cmdline_is(si->cmd_line, "xs-nosignal") )
        xs_nosignal(mfn_to_virt(si->store_mfn), si->store_evtchn, ring,
                    ports[0], shared);
    if ( cmdline_is(si->cmd_line, "xs-deaf") )
        xs_deaf(mfn_to_virt(si->store_mfn), si->store_evtchn, ring, ports[0],
                shared);
    if ( cmdline_is(si->cmd_line, "xs-pipe") )
        xs_pipe(mfn_to_virt(si->store_mfn), si->store_evtchn, ring, ports[0],
                shared);

    for ( ;; )
        wait_for_events(shared, ports, 2);
}

/*
 * Local variables:
 * mode: C
 * c-file-style: "BSD"
 * c-basic-offset: 4
 * indent-tabs-mode: nil
 * End:
 */
