"""Pure parsers of what Xen prints about its heap: the debug key 'H' heap
dump (dirty pages and free DMA-zone pages per node) and the DMA width in its
boot log.  The scrub benchmark's dom0 driver (pyxen.lab.dom0.scrub_dom0) reads
them from the console ring; its host side (pyxen.lab.host.scrubbench) reads
the DMA width from the serial log."""

from __future__ import annotations

import re

_UNSCRUBBED = re.compile(r"Node (\d+) has (\d+) unscrubbed pages")
_ZONE = re.compile(r"heap\[node=(\d+)\]\[zone=(\d+)\] -> (\d+) pages")
_DMA_WIDTH = re.compile(r"DMA width (\d+) bits")
PAGE_SHIFT = 12


def unscrubbed_by_node(heap_dump: str) -> dict[int, int]:
    """Dirty pages per node from Xen's 'H' heap dump; a node it does not
    mention has none (Xen prints only nodes with unscrubbed pages)."""
    return {int(n): int(p) for n, p in _UNSCRUBBED.findall(heap_dump)}


def dma_free_by_node(heap_dump: str, dma_bits: int) -> dict[int, int]:
    """Free pages per node in Xen's DMA zones (zone z holds the pages below
    2^(z + PAGE_SHIFT); those up to ``dma_bits`` are the DMA pool), from the
    'H' heap dump.  Xen gives domains these only when no other memory is
    left, clean or dirty, on any node."""
    out: dict[int, int] = {}
    for node, zone, pages in _ZONE.findall(heap_dump):
        if int(zone) + PAGE_SHIFT <= dma_bits:
            out[int(node)] = out.get(int(node), 0) + int(pages)
    return out


def dma_width(boot_log: str) -> int | None:
    """Xen's DMA width from its boot log ("... DMA width 29 bits"); None
    when it has none (no DMA pool)."""
    m = _DMA_WIDTH.search(boot_log)
    return int(m.group(1)) if m else None
