import json, sys, statistics as st
pts = []
for f in sys.argv[1:]:
    d = json.load(open(f)); by = {}
    for r in d["runs"]:
        if r.get("concurrency") != 4 or r.get("guests") != 4: continue
        by.setdefault(r["repeat"], {})[r["variant"]] = r["destroy_makespan_s"]
    for rep, v in by.items():
        s = v.get("stock")
        for n, m in v.items():
            if s and (n == "patched" or n.startswith("patched@diag")):
                pts.append((s, m / s, f))
pts.sort()
for lo, hi in ((0, 0.9), (0.9, 1.0), (1.0, 1.2), (1.2, 1.8), (1.8, 9)):
    g = [r for s, r, _ in pts if lo <= s < hi]
    if g: print(f"stock {lo}-{hi} s: n={len(g)} median ratio {st.median(g):.2f} above {sum(x>1 for x in g)}")
xs = [s for s, _, _ in pts]; ys = [r for _, r, _ in pts]
print("n", len(pts), "pearson r(stock s, ratio) = %.2f" % st.correlation(xs, ys))
