"""Where a clean birth's time goes, by guest size (ad hoc): user vs system
CPU of the creating process (system includes Xen's time in its hypercalls),
dom0's CPU, wall."""
import json, os, resource, sys, time
from pathlib import Path
from pyxen.host import Host
from pyxen.config import DomainConfig
from pyxen.lab.contract.heapdump import unscrubbed_by_node
from pyxen.xenctrl import scrub_supported
from pyxen.lab.dom0.xstrace import xs_trace_off
kernel = Path(sys.argv[1]); reps = int(sys.argv[2]); sizes = [int(s) for s in sys.argv[3].split(",")]
def ru():
    r = resource.getrusage(resource.RUSAGE_SELF); c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + c.ru_utime, r.ru_stime + c.ru_stime
with xs_trace_off(), Host() as host:
    counters = scrub_supported()
    def dirty():
        if counters:
            return sum(n.dirty_pages for n in host.scrub_state().nodes)
        return sum(unscrubbed_by_node(host.xc.heap_dump()).values())
    def wait_clean():
        t0 = time.monotonic()
        while dirty() and time.monotonic() - t0 < 300:
            time.sleep(0.2)
    n = 0
    for rep in range(reps):
        for mib in sizes:
            wait_clean()
            time.sleep(1)
            n += 1
            d0 = host.xc.domain_info(0).cpu_time_ns / 1e9
            u0, s0 = ru(); t0 = time.monotonic()
            dom = host.create(DomainConfig(f"bp{n}", kernel, memory_mib=mib))
            t1 = time.monotonic(); u1, s1 = ru()
            d1 = host.xc.domain_info(0).cpu_time_ns / 1e9
            t2 = time.monotonic()
            os.system(f"xl destroy {dom.domid}")
            dom.wait_death(120)
            t3 = time.monotonic()
            print(json.dumps({"mib": mib, "rep": rep, "wall": round(t1 - t0, 3),
                              "user": round(u1 - u0, 3), "sys": round(s1 - s0, 3),
                              "dom0_cpu": round(d1 - d0, 3), "destroy": round(t3 - t2, 3)}), flush=True)
