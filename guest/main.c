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
 * Freestanding: no libc, Xen's public headers give the ABI.  Hypercalls use
 * "syscall" with the number in %rax, which is what the 64-bit hypercall page
 * does, so no hypercall page is needed.
 */
#include <stdint.h>

#include <xen/xen.h>
#include <xen/sched.h>
#include <xen/event_channel.h>
#include <xen/io/console.h>

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

/* The command line is exactly "spin". */
static int is_spin(const uint8_t *cmdline)
{
    static const char spin[] = "spin";
    unsigned int i;

    for ( i = 0; i < sizeof(spin); i++ )
        if ( cmdline[i] != (uint8_t)spin[i] )
            return 0;
    return 1;
}

void __attribute__((noreturn)) guest_main(const start_info_t *si)
{
    struct xencons_interface *ring = mfn_to_virt(si->console.domU.mfn);
    shared_info_t *shared = (shared_info_t *)shared_info_page;
    evtchn_port_t ports[2] = { si->console.domU.evtchn, si->store_evtchn };
    char line[64];

    if ( hypercall3(__HYPERVISOR_update_va_mapping,
                    (unsigned long)shared_info_page,
                    si->shared_info | PTE_FLAGS, UVMF_INVLPG) )
        shutdown(SHUTDOWN_crash);

    console_write(ring, ports[0], shared, line,
                  format_line(line, si->nr_pages));

    if ( is_spin(si->cmd_line) )
        for ( ;; )
            asm volatile ( "pause" ::: "memory" );

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
