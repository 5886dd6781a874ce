import time, sys
import pyxen
from pyxen.config import DomainConfig
from pyxen.lab.host import paths
from pyxen.lab.dom0.xstrace import TraceReader, trace_path, watch_event_connections
tr = TraceReader(trace_path())
with pyxen.Host() as h:
    for i in range(2):
        d = h.create(DomainConfig(f"dbg{i}", paths.tinyguest_path()))
        time.sleep(4)
        text = tr.take_text()
        conns = watch_event_connections(text, f"/local/domain/{d.domid}/console/tty", f"dom{d.domid}")
        print("conns", conns)
        for line in text.splitlines():
            if any(c in line for c in conns) and ("IN " in line or "WATCH_EVENT" in line):
                print(line[:160])
        d.destroy(); d.wait_death(30); tr.take_text()
