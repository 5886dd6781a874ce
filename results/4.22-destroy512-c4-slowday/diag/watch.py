"""Host side: snapshot every QEMU thread's schedstat/ctxt switches at each marker."""
import os, sys, time, json, subprocess
from pathlib import Path
log = Path(sys.argv[2]); out = Path(sys.argv[1])
def qemu_pid():
    while True:
        r = subprocess.run(["pgrep", "-n", "-f", "qemu-system-x86_64"], capture_output=True, text=True)
        if r.stdout.strip():
            return int(r.stdout.split()[0])
        time.sleep(0.5)
def snap(pid):
    d = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{t}/comm").read().strip()
            ss = open(f"/proc/{pid}/task/{t}/schedstat").read().split()
            st = open(f"/proc/{pid}/task/{t}/status").read()
            vol = int(st.split("\nvoluntary_ctxt_switches:")[1].split()[0])
            inv = int(st.split("nonvoluntary_ctxt_switches:")[1].split()[0])
            d[f"{comm}:{t}"] = [int(ss[0]), int(ss[1]), int(ss[2]), vol, inv]
        except (OSError, IndexError):
            pass
    return d
def hostsnap():
    return open("/proc/stat").readline().split()[1:8]
pid = qemu_pid()
seen = set(); snaps = {}
args = open(f"/proc/{pid}/cmdline").read().split("\0")
log = Path(args[args.index("-serial") + 1].split("file:", 1)[1])
while not log.exists():
    time.sleep(0.05)
f = open(log, errors="replace")
buf = ""
while True:
    part = f.readline()
    if not part:
        time.sleep(0.002); continue
    buf += part
    if not buf.endswith("\n"):
        continue
    line, buf = buf, ""
    if "PYXMARK " in line:
        name = line.split("PYXMARK ")[1].split()[0]
        if name == "done":
            break
        snaps[name] = {"t": time.monotonic(), "threads": snap(pid), "host": hostsnap()}
out.write_text(json.dumps(snaps))
