"""Ad hoc (kept as the provenance of one figure of the results page, section
"a create no longer waits for a console nobody asked for"): where an
`xl -vvv create` of a tiny guest spends its time, from xl's own log lines
stamped as they arrive (xenstored's trace off), after one warm-up create.
Also times 300 reads of one node with a libxenstore client.

Run in the lab's dom0 (outputs in this folder: stock.json, patched-pre37.json
with --series of the commit before toolstack 0037, patched.json):

    python -m pyxen.lab run --variant patched --bind DIR --files OUT -- \
        sh -c "$PWD/.venv/bin/python DIR/phases.py 6 \$PYXEN_OUT/phases.json \
               $PWD/.venv/lib/python3.11/site-packages/pyxen/guest/tinyguest"

Arguments: creates, output file, the tiny guest.  segs2.py prints the
medians of the phases."""
import json, subprocess, sys, time
from pathlib import Path
from pyxen import DomainConfig

n = int(sys.argv[1]); out = Path(sys.argv[2]); kernel = Path(sys.argv[3])
runs = []
def one(name, keep):
    cfg = Path(f"/tmp/{name}.cfg")
    cfg.write_text(DomainConfig(name=name, kernel=kernel).to_xl_config())
    t0 = time.monotonic()
    p = subprocess.Popen(["xl", "-vvv", "create", str(cfg)], stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True, bufsize=1)
    lines = []
    for l in p.stderr:
        lines.append((time.monotonic() - t0, l.rstrip("\n")))
    p.wait()
    total = time.monotonic() - t0
    if keep:
        runs.append({"name": name, "total": total, "rc": p.returncode, "lines": lines})
subprocess.run(["xenstore-control", "log", "off"], check=True)
import pyxen.xenstore as X
subprocess.run(["xl", "destroy", "warm"], stderr=subprocess.DEVNULL)
one("warm", False)
time.sleep(1)
for i in range(n):
    one(f"ph{i}", True)
    time.sleep(0.5)
for i in range(n):
    subprocess.run(["xl", "destroy", f"ph{i}"])
subprocess.run(["xl", "destroy", "warm"])
try:
    xs = X.XenStore(); xs.open() if hasattr(xs, "open") else None
    t = time.monotonic()
    for _ in range(300): xs.read("/local/domain/0/name")
    print("read us", (time.monotonic() - t) / 300 * 1e6)
except Exception as e:
    print("read timing failed", e)
out.write_text(json.dumps(runs, indent=1))
print("totals", [round(r["total"], 3) for r in runs])
