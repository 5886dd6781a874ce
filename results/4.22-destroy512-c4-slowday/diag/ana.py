import json, sys, re
for tag in sys.argv[1:]:
    d = json.load(open(f"snap-{tag}.json"))
    ks = sorted({int(n.split('-')[1]) for n in d})
    mk = {}
    for line in open(f"out-{tag}.txt"):
        if line.startswith('{"k"'):
            r = json.loads(line); mk[r["k"]] = r["makespan"]
    for k in ks:
        a, b = d[f"start-{k}"], d[f"end-{k}"]
        el = b["t"] - a["t"]
        rows = []
        for th, v in b["threads"].items():
            if th not in a["threads"]: continue
            u = a["threads"][th]
            dv = [x - y for x, y in zip(v, u)]
            if dv[0] < 1e6 and dv[3] + dv[4] < 5: continue
            name = th.split(":")[0]
            rows.append(f"{name[:12]:12} cpu {dv[0]/1e9:5.2f}s wait {dv[1]/1e9:5.2f}s slices {dv[2]:6} vol {dv[3]:6} invol {dv[4]:5}")
        hs = [int(x) - int(y) for x, y in zip(b["host"], a["host"])]
        print(f"{tag} k={k} window {el:.2f}s makespan {mk.get(k, 0):.2f}s host idle {hs[3]/100:.2f} cpu-s of {2*el:.2f}")
        for r in rows: print("   ", r)
