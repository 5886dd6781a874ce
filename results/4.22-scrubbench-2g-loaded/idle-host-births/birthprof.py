import sys
from pathlib import Path
from pyxen.lab.host import variants, paths
from pyxen.lab.host.vm import Dom0
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import build
staged = build(variants.resolve(sys.argv[1]))
opts = VMOptions(cpus=2, memory_mib=6144, dom0_vcpus=2, dom0_mem_mib=1024)
with Dom0(staged, opts, extra_binds=[Path("/work/labscripts")]) as dom0:
    res = dom0.run([sys.executable, "-P", "/work/labscripts/birthprof_dom0.py",
                    str(paths.tinyguest_path().absolute()), sys.argv[2], sys.argv[3]], timeout=3000)
    print(res.stdout); print(res.stderr[-3000:], file=sys.stderr)
