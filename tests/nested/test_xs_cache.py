"""xenstore_cache in the lab's dom0, in front of the staged xenstored.

Unmodified xl creates and destroys tiny guests through the proxy; the whole
store (``xenstore-ls -f``) with a guest created through the proxy equals the
store with the same guest created straight against xenstored, apart from
domids, UUIDs and event-channel / grant numbers.  The staleness window for
writes made behind the proxy's back is measured and reported.
"""

from __future__ import annotations

import json
import re
import sys

import pytest

from pyxen.lab.host import paths
from pyxen.lab.host.vm import Dom0
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import StagedBuild
from xenstore_cache.control import DEFAULT_LISTEN, DEFAULT_UPSTREAM

pytestmark = pytest.mark.nested

GUEST_CFG = """name = "xsc-guest"
type = "pv"
kernel = "{kernel}"
memory = 16
vcpus = 1
on_crash = "destroy"
"""

# One run: create, dump the store, destroy; XENSTORED_PATH picks the socket.
DOM0_SCRIPT = """set -e
cfg="$1"; sock="$2"; out="$3"
export XENSTORED_PATH="$sock"
xl create "$cfg" >/dev/null
xenstore-ls -f > "$out"
xl destroy xsc-guest
for i in $(seq 100); do xl list xsc-guest >/dev/null 2>&1 || exit 0; sleep 0.1; done
echo "xsc-guest did not go away" >&2; exit 1
"""

#: Keys whose value is the guest's domid.
DOMID_VALUE = re.compile(r"(/frontend-id|/backend-id|^/libxl/names/[0-9a-f]+/domid)$")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: Keys whose values are allocated per create (event channels, grants, frames,
#: times): their values are compared as "present", not equal.
VOLATILE = re.compile(r"/(port|ring-ref|mfn|start_time|domid|store/port|console/port|"
                      r"console/ring-ref|store/ring-ref)$")


def normalise(dump: str) -> list[str]:
    out = []
    domids = set(re.findall(r"^/local/domain/(\d+) ", dump, re.M)) - {"0"}
    for line in dump.splitlines():
        path, _, value = line.partition(" = ")
        for d in domids:
            path = re.sub(rf"/{d}(?=/|$)", "/DOMID", path)
            # The name index's record of a domain is keyed "<domid>-<uuid>".
            path = re.sub(rf"^(/libxl/names-domains/){d}-", r"\1DOMID-", path)
            value = re.sub(rf"/{d}(?=/|\"|$)", "/DOMID", value)
            if DOMID_VALUE.search(path) and value == f'"{d}"':
                value = '"DOMID"'
        path = UUID.sub("UUID", path)
        value = UUID.sub("UUID", value)
        if VOLATILE.search(path):
            value = "<volatile>"
        out.append(f"{path} = {value}")
    return sorted(out)


def test_store_through_proxy_equals_store_without(lab_build: StagedBuild) -> None:
    with Dom0(lab_build, VMOptions(xs_cache=True)) as dom0:
        cfg = dom0.share("xsc.cfg", GUEST_CFG.format(kernel=paths.tinyguest_path()))
        script = dom0.share("xsc.sh", DOM0_SCRIPT)
        dumps = {}
        for name, sock in (("proxy", DEFAULT_LISTEN), ("direct", DEFAULT_UPSTREAM)):
            res = dom0.run(["sh", "-c", f'sh {script} {cfg} {sock} "$PYXEN_OUT/{name}.ls"'],
                           timeout=300)
            assert res.returncode == 0, res.stdout + res.stderr
            dumps[name] = (res.files / f"{name}.ls").read_text()
        stale = dom0.run([sys.executable, "-P", "-m", "xenstore_cache.staleness",
                          "--samples", "200", "--json"], timeout=300)
        stats = dom0.run([sys.executable, "-P", "-m", "xenstore_cache", "stats", "--json"],
                         timeout=60)
    for d in dumps.values():
        assert '/name = "xsc-guest"' in d, d[:2000]
    proxy, direct = normalise(dumps["proxy"]), normalise(dumps["direct"])
    only_proxy = sorted(set(proxy) - set(direct))
    only_direct = sorted(set(direct) - set(proxy))
    assert not only_proxy and not only_direct, (
        f"through the proxy only: {only_proxy[:20]}\nwithout it only: {only_direct[:20]}")
    assert stale.returncode == 0, stale.stderr
    window = json.loads(stale.stdout)
    counters = json.loads(stats.stdout)
    print("staleness:", window, "\nproxy:", {k: v for k, v in counters.items() if k != "per_op"})
    assert counters["hits"] > 0 and counters["protocol_errors"] == 0
