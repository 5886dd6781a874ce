"""Named variants of Xen the lab builds: ``stock`` and ``patched``."""

from __future__ import annotations

from pathlib import Path

from pyxen.lab import paths
from pyxen.lab.errors import LabError
from pyxen.lab.patchset import read_series
from pyxen.lab.xenbuild import Variant

#: Builds the lab knows, in the order they are run and reported.
KNOWN = ("stock", "patched")
#: Suffix of a variant run with the Xenstore caching proxy in dom0 ("stock+cache").
CACHE_SUFFIX = "+cache"


def split_name(name: str) -> tuple[str, bool]:
    """'patched+cache' -> ('patched', True); the build and whether dom0 runs the proxy."""
    base, cached = (name[:-len(CACHE_SUFFIX)], True) if name.endswith(CACHE_SUFFIX) \
        else (name, False)
    if base not in KNOWN:
        raise ValueError(f"unknown variant {name!r} (known: {', '.join(KNOWN)}, "
                         f"each optionally with {CACHE_SUFFIX})")
    return base, cached


def find_series(explicit: Path | None = None) -> Path:
    """The patch series: ``explicit``, else ./patches/series, else the checkout's."""
    if explicit is not None:
        return explicit
    candidates = (Path.cwd() / "patches" / "series", paths.default_series())
    for here in candidates:
        if here.exists():
            return here
    raise LabError(f"no patch series: neither {candidates[0]} nor {candidates[1]} exists "
                   "(pyxen is installed outside its checkout); run from the checkout or "
                   "pass --series PATH")


def parse_variant_list(text: str) -> list[str]:
    """'stock,patched' -> ['stock', 'patched']; unknown or repeated names are errors."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("no variant given (known: " + ", ".join(KNOWN) + ")")
    for n in names:
        split_name(n)
    if len(set(names)) != len(names):
        raise ValueError(f"variant listed twice in {text!r}")
    return names


def resolve(name: str, series: Path | None = None, debug: bool = False,
            profile: bool = False) -> Variant:
    """The build for a name: stock has no patches, patched has the series
    (a ``+cache`` suffix changes dom0's userland, not the build)."""
    name, _ = split_name(name)
    patches = tuple(read_series(find_series(series))) if name == "patched" else ()
    return Variant(name=name, patches=patches, debug=debug, profile=profile)
