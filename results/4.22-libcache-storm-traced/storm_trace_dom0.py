"""dom0: two 16-guest storms at C=8 with xenstored's trace on for both, with
and without libxenstore's cache (a process each); per storm: the caches'
WATCH/UNWATCH requests on "/", their events, makespan."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

WATCH = re.compile(r"^(?:io: )?IN (\S+) (?:\(d\d+\) )?\d{8} \d\d:\d\d:\d\d (WATCH|UNWATCH) \(/ xs-cache:")

if len(sys.argv) > 1:          # the child: one variant
    from pyxen.lab.contract import protocol
    from pyxen.lab.dom0.dom0bench import storm
    from pyxen.lab.dom0.drivers import DRIVERS
    from pyxen.lab.dom0.xstrace import TraceReader, count_watch_events, trace_path
    from pyxen.lab.dom0.settle import SCRUB_SETTLE_S, settle_scrub
    kernel = Path(sys.argv[2])
    driver = DRIVERS["pyxen"]()
    out = Path("/tmp/st-out"); out.mkdir(exist_ok=True)
    res = []
    for n, phases in ((0, protocol.BENCH_PHASES[:2]), (1, protocol.BENCH_PHASES[2:])):
        settle_scrub(SCRUB_SETTLE_S)
        tr = TraceReader(trace_path())
        r = storm(16, 8, kernel, 16, f"st{sys.argv[1]}{n}x", Path("/tmp/st-work"), out, driver, phases)
        text = tr.take_text()
        w = {"WATCH": 0, "UNWATCH": 0}
        conns = set()
        for line in text.splitlines():
            m = WATCH.match(line)
            if m:
                w[m.group(2)] += 1
                conns.add(m.group(1))
        res.append({"storm": n, "makespan_s": r["makespan_s"], "create_s": r["create_s"],
                    "cache_watch": w, "cache_conns": len(conns),
                    "events": dict(count_watch_events(text)), "errors": r["errors"]})
    print(json.dumps(res))
    sys.exit(0)

# The parent: each variant in a child, twice, alternating.
kernel = os.environ["GUEST"]
allres = {}
for rep in range(int(os.environ.get("REPS", "2"))):
    for lib in ("0", "1"):
        env = dict(os.environ, PYXEN_LIB_CACHE=lib, LIBXENSTORE_CACHE=lib)
        p = subprocess.run([sys.executable, "-P", __file__, lib, kernel], env=env,
                           capture_output=True, text=True)
        if p.returncode:
            print(p.stderr[-3000:], file=sys.stderr)
            sys.exit(1)
        allres.setdefault(lib, []).append(json.loads(p.stdout.strip().splitlines()[-1]))
print(json.dumps(allres, indent=1))
