"""Autoballooning creates that together need more memory than dom0 can give
(patches/0005 and 0006).

Runs in the dom0 of a lab booted without ``dom0_mem``
(tests/nested/test_autoballoon_in_dom0.py): dom0 owns all memory, and every
``xl create`` balloons it down for the new guest.  Stock xl serialises those
creates under its global lock file; patched xl runs them concurrently and
protects each build's memory with a hypervisor claim, building again when its
claim loses.  Either way, the creates that do not fit must fail cleanly,
leaving nothing behind, and every create that succeeds must have built an
intact guest: it boots and reports all of its pages.

``PYXEN_EXPECT_XL_LOCK`` (set by the runner: 1 for stock, 0 for patched)
says whether xl's lock file may be taken.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyxen.config import DomainConfig
from pyxen.lab.dom0 import xl
from pyxen.lab.dom0.dom0bench import console_log
from pyxen.lab.dom0.xllock import LockSampler

pytestmark = [pytest.mark.xen, pytest.mark.autoballoon]

GUEST_MIB = 384
#: libxl refuses dom0 balloon targets below this (LIBXL_MIN_DOM0_MEM).
DOM0_MIN_MIB = 128
#: What libxl_domain_need_memory adds to a PV guest's memory (maxmem slack,
#: page tables), and rounding: a guest "fits" when GUEST_MIB + this is there.
NEED_SLACK_MIB = 4
BANNER = re.compile(r"pyxen-tinyguest: up, nr_pages=(\d+)")


@dataclass
class Outcome:
    name: str
    returncode: int
    stderr: str
    seconds: float


def _xl_create(path: Path) -> Outcome:
    t0 = time.monotonic()
    proc = subprocess.run(["xl", "create", "-q", str(path)], capture_output=True,
                          text=True, timeout=900, check=False)
    return Outcome(path.stem, proc.returncode, proc.stderr, time.monotonic() - t0)


def _nr_pages(name: str, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            m = BANNER.search(console_log(name).read_text(errors="replace"))
        except OSError:
            m = None
        if m:
            return int(m.group(1))
        time.sleep(0.2)
    return None


def _dom0_target_mib(host) -> int:  # type: ignore[no-untyped-def]
    """dom0's balloon target (what libxl checks against its minimum)."""
    return int(host.xenstore.read("/local/domain/0/memory/target")) // 1024


@pytest.fixture
def autoballoon_host(host):  # type: ignore[no-untyped-def]
    """The host, checked to be in autoballoon mode (Xen booted without dom0_mem)."""
    info = xl.parse_info(xl.xl("info"))
    if "dom0_mem" in info.get("xen_commandline", ""):
        pytest.fail(f"Xen was booted with dom0_mem ({info['xen_commandline']}): "
                    "not autoballoon mode")
    return host


def test_overcommitted_concurrent_creates_fail_cleanly(autoballoon_host, kernel, helpers,
                                                       tmp_path):
    host = autoballoon_host
    if host.free_memory_mib() >= GUEST_MIB:
        pytest.fail(f"{host.free_memory_mib()} MiB free before any create: dom0 does "
                    "not own the memory, so the creates would not balloon")
    total_mib = host.physinfo().total_pages // 256
    # More guests than could fit even with dom0 ballooned to its minimum.
    count = total_mib // GUEST_MIB + 2
    paths = []
    for i in range(count):
        cfg = DomainConfig(name=f"{helpers.PREFIX}ab{i}", kernel=kernel, memory_mib=GUEST_MIB)
        path = tmp_path / f"{cfg.name}.cfg"
        path.write_text(cfg.to_xl_config())
        paths.append(path)

    with LockSampler() as sampler, ThreadPoolExecutor(max_workers=count) as pool:
        outcomes = list(pool.map(_xl_create, paths))
    print(f"xl lock: held {sampler.use.held_s:.1f} s, waited {sampler.use.wait_s:.1f} s, "
          f"at most {sampler.use.max_waiters} waiting")
    for o in outcomes:
        print(f"{o.name}: rc={o.returncode} {o.seconds:.1f} s "
              f"{o.stderr.strip().splitlines()[-1:] if o.returncode else ''}")

    live = {d.name: d for d in host.domains()}
    ok = [o for o in outcomes if o.returncode == 0]
    failed = [o for o in outcomes if o.returncode != 0]
    try:
        # Every success is an intact guest: running, with all its memory, and
        # it booted and counted every page it was given.
        for o in ok:
            assert o.name in live, f"{o.name}: xl create succeeded but no such domain"
            assert live[o.name].info().tot_pages >= GUEST_MIB * 256, o.name
            assert _nr_pages(o.name, 120.0) == GUEST_MIB * 256, \
                f"{o.name} did not boot with its {GUEST_MIB * 256} pages"
        # Every failure is for want of memory, says so, and left no domain.
        for o in failed:
            assert o.name not in live, f"{o.name}: failed create left its domain behind"
            assert "memory" in o.stderr, f"{o.name} failed, not for memory:\n{o.stderr}"
        assert ok, "no create succeeded: the host could hold some guests"
        assert failed, f"all {count} creates succeeded in {total_mib} MiB"
        # The failures were real: what is left (free memory, and what dom0 could
        # still give above libxl's minimum) cannot hold one more guest.
        left = host.free_memory_mib() + _dom0_target_mib(host) - DOM0_MIN_MIB
        assert left < GUEST_MIB + NEED_SLACK_MIB, \
            f"{len(failed)} creates failed with {left} MiB still obtainable"
        # No claim outlives its build; no Xenstore node outlives its domain.
        assert host.physinfo().outstanding_pages == 0
        domids = {d.domid for d in host.domains()}
        stale = [d for d in host.xenstore.directory("/local/domain") if int(d) not in domids]
        assert not stale, f"Xenstore /local/domain entries of no domain: {stale}"
        expect_lock = os.environ.get("PYXEN_EXPECT_XL_LOCK")
        if expect_lock == "0":
            assert sampler.use.samples > 0 and sampler.use.held_s == 0.0, \
                "patched xl took its global create lock"
        elif expect_lock == "1":
            assert sampler.use.held_s > 0.0, "stock xl never took its create lock"
    finally:
        free_before = host.free_memory_mib()
        for o in ok:
            if o.name in live:
                live[o.name].destroy()
        ours = {o.name for o in ok}
        assert helpers.wait_for(lambda: not (ours & set(helpers.ours(host))), 120.0)
    # The guests' memory went back to Xen, none kept by a dead domain.
    assert helpers.wait_for(
        lambda: host.free_memory_mib() >= free_before + len(ok) * GUEST_MIB, 60.0), \
        f"free {host.free_memory_mib()} MiB after destroying {len(ok)} guests, " \
        f"{free_before} before"


def test_create_after_overcommit_succeeds(autoballoon_host, kernel, helpers, tmp_path):
    """One more create after the over-commit succeeds: the failures above left
    neither a claim nor a lock nor dom0's balloon in the way."""
    host = autoballoon_host
    cfg = DomainConfig(name=f"{helpers.PREFIX}after", kernel=kernel, memory_mib=64)
    path = tmp_path / "after.cfg"
    path.write_text(cfg.to_xl_config())
    o = _xl_create(path)
    try:
        assert o.returncode == 0, o.stderr
        assert _nr_pages(cfg.name, 120.0) == 64 * 256
    finally:
        subprocess.run(["xl", "destroy", cfg.name], capture_output=True, check=False)
    assert host.physinfo().outstanding_pages == 0
