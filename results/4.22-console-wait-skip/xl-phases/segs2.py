"""Ad hoc: medians of three phases of the creates phases.py logged: from
libxl's create to the domain built (xc_dom_release), from there to the
creation's completion, and from the create to xl's unpause.
Usage: python segs2.py stock.json patched-pre37.json patched.json"""
import json, sys, statistics
def t(r, m, extra=None, after=0.0):
    return next(t for t, l in r["lines"] if t >= after and m in l and (extra is None or extra in l))
for f in sys.argv[1:]:
    runs = json.load(open(f)); rows = []
    for r in runs:
        a = t(r, "do_domain_create: ao", "create:"); b = t(r, "xc_dom_release: called")
        c = t(r, "complete, rc=0", after=b); d = t(r, "libxl_domain_unpause")
        rows.append(((b - a), (c - b), (d - a)))
    med = [statistics.median(x[i] for x in rows) * 1000 for i in range(3)]
    print(f"{f}: create..built {med[0]:.0f} ms, built..complete {med[1]:.0f} ms, create..unpause {med[2]:.0f} ms")
