"""How long a fork+exit+wait of this process takes in dom0: bare, and after
pyxen opened a Host (as the benchmark's driver does), with 4 pool threads."""
import os, statistics, time, threading
from concurrent.futures import ThreadPoolExecutor

def rss() -> str:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return line.split(None, 1)[1].strip()
    return "?"

def forks(n: int = 20) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        out.append(time.monotonic() - t0)
    return out

def report(label: str) -> None:
    f = forks()
    print(f"{label}: rss {rss()}, fork+exit+wait ms median {1000*statistics.median(f):.1f} "
          f"min {1000*min(f):.1f} max {1000*max(f):.1f}", flush=True)

report("bare python")
import pyxen
h = pyxen.Host()
h.open()
report("after pyxen.Host().open()")
with ThreadPoolExecutor(4) as pool:
    list(pool.map(lambda _: h.free_memory_mib(), range(8)))
    report("with 4 pool threads used")
t0 = time.monotonic()
for _ in range(20):
    h.free_memory_mib()
print(f"free_memory_mib ms {1000*(time.monotonic()-t0)/20:.2f}")
