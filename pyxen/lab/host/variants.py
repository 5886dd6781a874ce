"""Named variants of Xen the lab builds: ``stock`` and ``patched``.

The patch series are kept per Xen branch, hypervisor and toolstack apart
(they go to different maintainers)::

    patches/4.22/xen/series     hypervisor series (apply order)
    patches/4.22/tools/series   toolstack series, applied after the hypervisor's

``patched`` applies both to the source's tree: the hypervisor build takes
the hypervisor series only, the toolstack build both (the tools compile
against the hypervisor's public headers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host import paths, sources
from pyxen.lab.host.patchset import read_series
from pyxen.lab.host.vm_options import VMOptions
from pyxen.lab.host.xenbuild import Variant

#: Builds the lab knows, in the order they are run and reported.
KNOWN = ("stock", "patched")
#: Suffix of a variant run with the Xenstore caching proxy in dom0 ("stock+cache").
CACHE_SUFFIX = "+cache"
#: Suffix of a variant whose toolstack reads through libxenstore's own cache
#: ("patched+libcache"; a toolstack with the cache patches).
LIBCACHE_SUFFIX = "+libcache"
#: The two series of a branch, in apply order: (sub-directory, builds it changes).
SERIES_PARTS = ("xen", "tools")


@dataclass(frozen=True)
class RunVariant:
    """What one benchmark run boots: a build (one of KNOWN), whether dom0
    runs the Xenstore caching proxy in front of xenstored, and whether the
    toolstack reads through libxenstore's cache."""

    build: str
    xs_cache: bool = False
    lib_cache: bool = False

    @property
    def name(self) -> str:
        """The name runs are reported under: 'patched', 'patched+libcache+cache'."""
        return (self.build + (LIBCACHE_SUFFIX if self.lib_cache else "")
                + (CACHE_SUFFIX if self.xs_cache else ""))

    @classmethod
    def parse(cls, name: str) -> RunVariant:
        """'patched+cache' -> RunVariant('patched', xs_cache=True); unknown
        names and suffixes are errors."""
        base, *options = name.split("+")
        known = {CACHE_SUFFIX[1:]: "xs_cache", LIBCACHE_SUFFIX[1:]: "lib_cache"}
        if base not in KNOWN or any(o not in known for o in options) \
                or len(set(options)) != len(options):
            raise ValueError(f"unknown variant {name!r} (known: {', '.join(KNOWN)}, "
                             f"each optionally with {LIBCACHE_SUFFIX} and/or {CACHE_SUFFIX})")
        if "libcache" in options and base == "stock":
            raise ValueError(f"{name!r}: stock's libxenstore has no cache "
                             f"({LIBCACHE_SUFFIX} needs the patched toolstack)")
        return cls(base, **{known[o]: True for o in options})

    def vm_options(self, options: VMOptions) -> VMOptions:
        """``options`` with this variant's dom0 userland switches."""
        return dataclasses.replace(options, xs_cache=self.xs_cache, lib_cache=self.lib_cache)


def _patch_roots() -> tuple[Path, ...]:
    """Where series are looked for: ./patches, then this checkout's."""
    return tuple(dict.fromkeys((Path.cwd() / "patches", paths.patches_dir())))


def find_series(branch: str, explicit: Path | None = None) -> Path:
    """The series directory for a Xen branch ('4.22'): ``explicit``, else
    ``patches/<branch>`` here or in the checkout."""
    if explicit is not None:
        if not explicit.is_dir():
            raise LabError(f"--series {explicit}: not a directory (it holds xen/series "
                           "and/or tools/series)")
        return explicit
    roots = _patch_roots()
    for root in roots:
        if (root / branch).is_dir():
            return root / branch
    kept = sorted({d.name for r in roots if r.is_dir() for d in r.iterdir() if d.is_dir()})
    raise LabError(f"no patch series for Xen {branch}: looked in "
                   f"{', '.join(str(r / branch) for r in roots)} (series kept for: "
                   f"{', '.join(kept) or 'none'}); run from the checkout, pass "
                   "--series DIR, or build another Xen with --xen-source")


def read_series_dir(directory: Path) -> dict[str, tuple[Path, ...]]:
    """{'xen': patches, 'tools': patches} of a series directory; a part
    without a series file is empty, a directory with neither is an error."""
    found = {part: tuple(read_series(directory / part / "series"))
             for part in SERIES_PARTS if (directory / part / "series").exists()}
    if not found:
        raise LabError(f"{directory} holds no series "
                       f"({' or '.join(f'{p}/series' for p in SERIES_PARTS)})")
    return {part: found.get(part, ()) for part in SERIES_PARTS}


def parse_variant_list(text: str) -> list[RunVariant]:
    """'stock,patched+cache' -> [RunVariant('stock'), RunVariant('patched', True)];
    unknown or repeated names are errors."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("no variant given (known: " + ", ".join(KNOWN) + ")")
    parsed = [RunVariant.parse(n) for n in names]
    if len(set(names)) != len(names):
        raise ValueError(f"variant listed twice in {text!r}")
    return parsed


def resolve(name: str, series: Path | None = None, debug: bool = False,
            profile: bool = False, source: sources.XenSource | None = None) -> Variant:
    """The build for a name on a Xen source (default: the one the user named,
    see :func:`sources.xen_source`): stock has no patches, patched has the
    series of the source's branch (a ``+cache`` suffix changes dom0's
    userland, not the build)."""
    name = RunVariant.parse(name).build
    src = source if source is not None else sources.xen_source()
    if name != "patched":
        return Variant(name=name, source=src, debug=debug, profile=profile)
    parts = read_series_dir(find_series(src.branch, series))
    return Variant(name=name, source=src, xen_patches=parts["xen"],
                   tools_patches=parts["tools"], debug=debug, profile=profile)
