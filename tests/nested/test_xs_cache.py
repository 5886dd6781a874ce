"""xenstore_cache in the lab's dom0, in front of the staged xenstored.

Unmodified xl creates and destroys tiny guests through the proxy; the whole
store (``xenstore-ls -f``) with a guest created through the proxy equals the
store with the same guest created straight against xenstored, apart from
domids, UUIDs and event-channel / grant numbers.  The staleness window for
writes made behind the proxy's back is measured and reported.

Every run does this in the lab's shared boot (tests/nested/conftest.py), with
a proxy the test starts on a socket of its own in front of xenstored's: the
test's clients (xl and the processes it starts, xenstore-ls) go through it,
xenconsoled and the rest of dom0 do not.  Scheduled runs also boot dom0 as
``+cache`` benchmarks do (``VMOptions(xs_cache=True)``: xenstored moved
behind the proxy before any client starts, every client through it).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from pyxen.lab.contract import protocol
from pyxen.lab.host import paths
from pyxen.lab.host.vm import Dom0, SharedDom0
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import StagedBuild
from xenstore_cache.control import DEFAULT_CONTROL, DEFAULT_LISTEN, DEFAULT_UPSTREAM

pytestmark = pytest.mark.nested

GUEST_CFG = """name = "xsc-guest"
type = "pv"
kernel = "{kernel}"
memory = 16
vcpus = 1
on_crash = "destroy"
"""

# One run: create, dump the store, destroy; XENSTORED_PATH picks the socket.
CYCLE_SCRIPT = """set -e
cfg="$1"; sock="$2"; out="$3"
export XENSTORED_PATH="$sock"
xl create "$cfg" >/dev/null
xenstore-ls -f > "$out"
xl destroy xsc-guest
for i in $(seq 100); do xl list xsc-guest >/dev/null 2>&1 || exit 0; sleep 0.1; done
echo "xsc-guest did not go away" >&2; exit 1
"""

#: The whole check in one dom0 command: with PROXY_START=1 it first starts a
#: proxy of its own (stopped, and its directory removed, whatever happens),
#: then a cycle through the proxy and one straight to xenstored, the
#: staleness window, the proxy's counters.  Files land in $PYXEN_OUT.
CHECK_SCRIPT = """set -eu
cycle="$1"; cfg="$2"; listen="$3"; upstream="$4"; control="$5"; py="$6"
if [ "${{PROXY_START:-0}}" = 1 ]; then
    dir=$(dirname "$listen")
    mkdir -p "$dir"
    "$py" -P -m xenstore_cache run --listen "$listen" --upstream "$upstream" \
        --control "$control" --ready-file "$dir/ready" > "$PYXEN_OUT/proxy.log" 2>&1 &
    proxy=$!
    trap 'kill $proxy 2>/dev/null || true; wait $proxy 2>/dev/null || true; rm -rf "$dir"' EXIT
    for i in $(seq {start_polls}); do [ -e "$dir/ready" ] && break; sleep 0.1; done
    [ -e "$dir/ready" ] || {{ echo "the proxy did not start" >&2; cat "$PYXEN_OUT/proxy.log" >&2; exit 1; }}
fi
sh "$cycle" "$cfg" "$listen" "$PYXEN_OUT/proxy.ls"
sh "$cycle" "$cfg" "$upstream" "$PYXEN_OUT/direct.ls"
"$py" -P -m xenstore_cache.staleness --listen "$listen" --upstream "$upstream" \
    --samples 200 --json > "$PYXEN_OUT/staleness.json"
"$py" -P -m xenstore_cache stats --control "$control" --json > "$PYXEN_OUT/stats.json"
"""

#: Where the test's own proxy listens in the shared boot: a directory of its
#: own beside xenstored's, removed when the check ends.
OWN_PROXY_DIR = "/run/pyxen-xs-cache-test"
#: Up to 60 s for the proxy to start (Python's start under TCG takes seconds).
START_POLLS = 600


@dataclass(frozen=True)
class ProxyLayout:
    """Where the proxy listens, where xenstored does, the control socket, and
    whether the check starts the proxy itself."""
    listen: str
    upstream: str
    control: str
    start: bool


#: The shared boot: xenstored on its usual socket, the test's proxy beside it.
OWN_PROXY = ProxyLayout(f"{OWN_PROXY_DIR}/socket", DEFAULT_LISTEN,
                        f"{OWN_PROXY_DIR}/control", start=True)
#: A +cache boot: the agent started the proxy on xenstored's usual socket.
BOOT_PROXY = ProxyLayout(DEFAULT_LISTEN, DEFAULT_UPSTREAM, DEFAULT_CONTROL, start=False)


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


def run_check(dom0: Dom0,
              layout: ProxyLayout) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """The check's command in ``dom0``: the two dumps, the staleness window
    and the proxy's counters."""
    cfg = dom0.share("xsc.cfg", GUEST_CFG.format(kernel=paths.tinyguest_path()))
    cycle = dom0.share("xsc-cycle.sh", CYCLE_SCRIPT)
    check = dom0.share("xsc-check.sh", CHECK_SCRIPT.format(start_polls=START_POLLS))
    res = dom0.run(["sh", check, cycle, cfg, layout.listen, layout.upstream, layout.control,
                    sys.executable],
                   env={"PROXY_START": "1" if layout.start else "0"}, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    dumps = {name: (res.files / f"{name}.ls").read_text() for name in ("proxy", "direct")}
    return (dumps, json.loads((res.files / "staleness.json").read_text()),
            json.loads((res.files / "stats.json").read_text()))


def check_transparent(dumps: dict[str, str], window: dict[str, Any],
                      counters: dict[str, Any]) -> None:
    """The store with a guest created through the proxy equals the store
    with one created straight; the proxy served hits and no protocol error."""
    for d in dumps.values():
        assert '/name = "xsc-guest"' in d, d[:2000]
    proxy, direct = normalise(dumps["proxy"]), normalise(dumps["direct"])
    only_proxy = sorted(set(proxy) - set(direct))
    only_direct = sorted(set(direct) - set(proxy))
    assert not only_proxy and not only_direct, (
        f"through the proxy only: {only_proxy[:20]}\nwithout it only: {only_direct[:20]}")
    print("staleness:", window, "\nproxy:", {k: v for k, v in counters.items() if k != "per_op"})
    assert counters["hits"] > 0 and counters["protocol_errors"] == 0


def test_store_through_proxy_equals_store_without(lab_boot: SharedDom0) -> None:
    """In the shared boot, through a proxy the test starts and stops."""
    dom0 = lab_boot.get()   # booted by its first user
    check_transparent(*run_check(dom0, OWN_PROXY))
    gone = dom0.run(["sh", "-c", f"test ! -e {OWN_PROXY_DIR}"])
    assert gone.returncode == 0, f"the test's proxy left {OWN_PROXY_DIR} behind"
    procs = dom0.run(["ps", "-eo", "args"], check=True).stdout
    assert "ps -eo args" in procs, f"ps did not list dom0's processes (itself among them): {procs}"
    left = [p for p in procs.splitlines() if "xenstore_cache run" in p]
    assert left == [], f"the test's proxy still runs: {left}"


@pytest.mark.scheduled
def test_store_through_a_boot_time_proxy_equals_store_without(lab_build: StagedBuild) -> None:
    """In a boot made as ``+cache`` benchmarks make theirs: xenstored moved
    behind the proxy before any client starts, every client through it."""
    with Dom0(lab_build, VMOptions(xs_cache=True)) as own:
        check_transparent(*run_check(own, BOOT_PROXY))
        check_latency_through_proxy(own)


def check_latency_through_proxy(dom0: Dom0) -> None:
    """``xsbench``'s driver in a ``+cache`` boot: every read a hit, every
    write forwarded, the idle connections the proxy's (xenstored's
    descriptors do not grow with them), and the proxy's system calls
    counted beside xenstored's."""
    from pyxen.lab.contract.requests import XsLatencyRequest
    from pyxen.lab.host.xsbench import run_latency

    req = XsLatencyRequest(idle=(0, 16), reads=20, rounds=2, syscall_reads=20, writes=20,
                           misses=20)
    result = run_latency(dom0, req)
    assert result["errors"] == [], result["errors"]
    assert result["proxy_pid"]
    by = {(p["round"], p["idle"]): p for p in result["points"]}
    assert by[0, 16]["xenstored_fds"] == by[0, 0]["xenstored_fds"]
    assert by[0, 16]["proxy_fds"] >= by[0, 0]["proxy_fds"] + 16
    # Descending in round 1: the proxy had dropped the 16 before the point
    # (give or take the control socket's connection of the counters' query).
    assert by[1, 0]["proxy_fds"] <= by[0, 0]["proxy_fds"] + 1, by
    for p in by.values():
        assert (p["proxy_hits"], p["proxy_forwarded"]) == (20, 0), p
        for kind in ("miss", "write"):
            assert (p[kind]["proxy_hits"], p[kind]["proxy_forwarded"]) == (0, 20), p
    for c in result["syscalls"]:
        # A hit never reaches xenstored; a miss and a write go through both.
        assert c["total_per_read"] < 1 and c["proxy"]["total_per_read"] >= 2, c
        for kind in ("miss", "write"):
            assert c[kind]["total_per_read"] >= 2, c
            assert c[kind]["proxy"]["total_per_read"] >= 4, c
    # The misses' nodes are gone.
    left = dom0.run(["xenstore-exists", protocol.XS_MISS_DIR])
    assert left.returncode != 0, f"{protocol.XS_MISS_DIR} left behind"
