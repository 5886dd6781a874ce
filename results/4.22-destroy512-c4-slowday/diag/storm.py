"""Diagnostic (not product): 4 x 512 MiB destroy storms at C=4, each destroy
phase between marks in the serial log (/dev/kmsg) that the host watches.
Usage: storm.py STORMS [--no-pause] (--no-pause: no second's pause before
the destroys; the runs ns*/np* used it, as storm_nosleep.py before the two
scripts were merged)."""
import sys, time, json
from pathlib import Path
from pyxen.lab.dom0 import dom0bench
from pyxen.lab.dom0.drivers import DRIVERS, wait_vanished
from pyxen.lab.dom0.settle import settle_scrub
from pyxen.lab.dom0.xstrace import xs_trace_off

kernel = Path("/work/main/.venv/lib/python3.11/site-packages/pyxen/guest/tinyguest")
drv = DRIVERS["pyxen"]()
def mark(name):
    with open("/dev/kmsg", "w") as f:
        f.write(f"<2>PYXMARK {name}\n")

pause = "--no-pause" not in sys.argv[2:]
res = []
with xs_trace_off():
    for k in range(int(sys.argv[1])):
        settle_scrub(60)
        s, base = dom0bench.prepare(4, 4, kernel, 512, f"p{k}x", Path("/tmp/pb"), Path("/tmp/pb"), drv)
        dom0bench.create_phase(s, "create")
        ok = dom0bench.console_phase(s)
        if pause:
            time.sleep(1)
        mark(f"start-{k}")
        if pause:
            time.sleep(0.3)
        t0 = time.monotonic()
        d = dom0bench.destroy_phase(s, "destroy")
        t1 = time.monotonic()
        time.sleep(0.3)
        mark(f"end-{k}")
        left = wait_vanished(drv, {c.name for c in s.configs}, 60)
        res.append({"k": k, "makespan": d.makespan_s, "destroy_s": d.destroy_s, "ok": ok,
                    "errors": s.errors, "left": sorted(left), "window": t1 - t0 + 0.6})
        print(json.dumps(res[-1]), flush=True)
mark("done")
