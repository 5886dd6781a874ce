"""Named variants of Xen the lab builds: ``stock`` and ``patched``."""

from __future__ import annotations

from pathlib import Path

from pyxen.lab.patchset import read_series
from pyxen.lab.xenbuild import Variant

#: Variant names the lab knows, in the order they are run and reported.
KNOWN = ("stock", "patched")


def find_series(explicit: Path | None = None) -> Path:
    """The patch series: ``explicit``, else ./patches/series, else the checkout's."""
    if explicit is not None:
        return explicit
    here = Path.cwd() / "patches" / "series"
    if here.exists():
        return here
    return Path(__file__).resolve().parents[2] / "patches" / "series"


def parse_variant_list(text: str) -> list[str]:
    """'stock,patched' -> ['stock', 'patched']; unknown or repeated names are errors."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("no variant given (known: " + ", ".join(KNOWN) + ")")
    for n in names:
        if n not in KNOWN:
            raise ValueError(f"unknown variant {n!r} (known: {', '.join(KNOWN)})")
    if len(set(names)) != len(names):
        raise ValueError(f"variant listed twice in {text!r}")
    return names


def resolve(name: str, series: Path | None = None, debug: bool = False,
            profile: bool = False) -> Variant:
    """The Variant for a name: stock has no patches, patched has the series."""
    if name not in KNOWN:
        raise ValueError(f"unknown variant {name!r} (known: {', '.join(KNOWN)})")
    patches = tuple(read_series(find_series(series))) if name == "patched" else ()
    return Variant(name=name, patches=patches, debug=debug, profile=profile)
