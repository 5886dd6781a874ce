"""Ad hoc (kept as the provenance of one figure of the results page; the
benchmark's maintained count is xs_create_reach): each client's Xenstore
requests per create, by operation, sent with or without a transaction open
on its connection, and the paths of their reads.

Run in the lab's dom0, from the project's directory (results/README.md,
section "libxenstore's cache with xenstored's event-driven loop on stock's
toolstack"):

    R=$PWD/results/4.22-libcache-xenstored/requests-by-operation
    python -m pyxen.lab run --variant patched \
        --series results/4.22-libcache-xenstored/series --memory 6656 --dom0-mem 1536 \
        --bind "$R" --files OUT -- \
        sh -c "$PWD/.venv/bin/python $R/txreads.py 0 6 \$PYXEN_OUT/requests.json \
               $PWD/.venv/lib/python3.11/site-packages/pyxen/guest/tinyguest"

Arguments: cache (1: ask libxl for libxenstore's cache), creates, output
file, the tiny guest.  One warm-up create, then the counted ones, one at a
time."""
import collections, json, os, re, sys, time
from pathlib import Path
import pyxen
from pyxen import DomainConfig

cache = sys.argv[1] == "1"
n = int(sys.argv[2])
out = Path(sys.argv[3])
kernel = Path(sys.argv[4])
trace = Path("/var/log/xen/xenstored-trace.log")
host = pyxen.Host(xs_cache=cache)
host.open()
# warm-up create (first-use costs), then the measured ones
d = host.create(DomainConfig(name="warm", kernel=kernel))
time.sleep(1)
off = trace.stat().st_size
doms = []
for i in range(n):
    doms.append(host.create(DomainConfig(name=f"tx{i}", kernel=kernel)))
    time.sleep(0.5)
text = trace.read_bytes()[off:].decode(errors="replace")
for x in doms + [d]:
    host.xl.destroy(x.domid)
line = re.compile(r"^io: IN (0x[0-9a-f]+) \(d(\d+)\) \S+ \S+ (\S+) \((.*)\)$")
intx = collections.defaultdict(bool)
counts = collections.Counter()
for l in text.splitlines():
    m = line.match(l)
    if not m:
        continue
    conn, dom, op, arg = m.groups()
    if op == "TRANSACTION_START":
        counts[(conn, op, "out")] += 1
        intx[conn] = True
        continue
    if op == "TRANSACTION_END":
        counts[(conn, op, "in")] += 1
        intx[conn] = False
        continue
    counts[(conn, op, "in" if intx[conn] else "out")] += 1
per_conn = collections.defaultdict(dict)
for (conn, op, where), c in counts.items():
    per_conn[conn][f"{op}/{where}"] = c / n
paths = collections.defaultdict(collections.Counter)
for l in text.splitlines():
    m = line.match(l)
    if m and m.group(3) in ("READ", "DIRECTORY", "GET_DOMAIN_PATH"):
        a = re.sub(r"/local/domain/[0-9]+", "/local/domain/N", m.group(4).strip())
        paths[m.group(1) + " d" + m.group(2)][m.group(3) + " " + a] += 1
(out.parent / "text.log").write_text(text)
out.write_text(json.dumps({"cache": cache, "n": n, "per_conn": per_conn,
                           "paths": {k: v.most_common(40) for k, v in paths.items()}}, indent=1))
print(json.dumps(per_conn, indent=1))
