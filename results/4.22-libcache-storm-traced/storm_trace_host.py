import json, sys
from pathlib import Path
from pyxen.lab.host import paths, variants
from pyxen.lab.host.vm import Dom0
from pyxen.lab.host.xenbuild import build
import os
staged = build(variants.resolve("patched", Path(os.environ["SERIES"]) if os.environ.get("SERIES") else None))
guest = str(paths.tinyguest_path().absolute())
with Dom0(staged, extra_binds=[Path("/work/labscripts")]) as dom0:
    res = dom0.run([sys.executable, "-P", "/work/labscripts/storm_trace_dom0.py"], timeout=3000,
                   env={"GUEST": guest, "REPS": "2"})
print(res.stdout[-20000:]); print(res.stderr[-5000:], file=sys.stderr); print("rc", res.returncode)
