"""Named variants of Xen the lab builds: ``stock`` and ``patched``.

The patch series are kept per Xen branch, hypervisor and toolstack apart
(they go to different maintainers)::

    patches/4.22/xen/series     hypervisor series (apply order)
    patches/4.22/tools/series   toolstack series, applied after the hypervisor's

``patched`` applies both to the source's tree: the hypervisor build takes
the hypervisor series only, the toolstack build both (the tools compile
against the hypervisor's public headers).

``patched@NAME`` builds another series directory, named on the command
line (``--series-as NAME=DIR``), so that two versions of a series (with and
without a patch, say) run in one benchmark, boot after boot in turn, and
are compared within one run rather than across runs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
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
#: Separates a patched build from the name of the series it builds ("patched@v1").
SERIES_TAG = "@"
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


def check_series_tag(tag: str) -> str:
    """``tag`` if it can name a series (letters, digits, '_', '.', '-', at
    most 32, not starting with a punctuation mark), else ValueError."""
    if not _TAG_RE.fullmatch(tag):
        raise ValueError(f"series name {tag!r}: use 1-32 letters, digits, '_', '.' or '-', "
                         "starting with a letter or digit")
    return tag


@dataclass(frozen=True)
class RunVariant:
    """What one benchmark run boots: a build (one of KNOWN), whether dom0
    runs the Xenstore caching proxy in front of xenstored, and whether the
    toolstack reads through libxenstore's cache."""

    build: str
    xs_cache: bool = False
    lib_cache: bool = False

    @property
    def base(self) -> str:
        """The build without its series name: 'patched' for 'patched@v1'."""
        return self.build.split(SERIES_TAG, 1)[0]

    @property
    def series_tag(self) -> str | None:
        """The series name of 'patched@v1' ('v1'), None for the default series."""
        base, sep, tag = self.build.partition(SERIES_TAG)
        return tag if sep else None

    @property
    def name(self) -> str:
        """The name runs are reported under: 'patched', 'patched+libcache+cache'."""
        return (self.build + (LIBCACHE_SUFFIX if self.lib_cache else "")
                + (CACHE_SUFFIX if self.xs_cache else ""))

    @classmethod
    def parse(cls, name: str) -> RunVariant:
        """'patched+cache' -> RunVariant('patched', xs_cache=True); unknown
        names and suffixes are errors."""
        build, *options = name.split("+")
        base, sep, tag = build.partition(SERIES_TAG)
        known = {CACHE_SUFFIX[1:]: "xs_cache", LIBCACHE_SUFFIX[1:]: "lib_cache"}
        if base not in KNOWN or any(o not in known for o in options) \
                or len(set(options)) != len(options):
            raise ValueError(f"unknown variant {name!r} (known: {', '.join(KNOWN)}, "
                             f"patched{SERIES_TAG}NAME for a series given with --series-as, "
                             f"each optionally with {LIBCACHE_SUFFIX} and/or {CACHE_SUFFIX})")
        if sep and base != "patched":
            raise ValueError(f"{name!r}: only patched builds a series ({base} has none)")
        if sep:
            try:
                check_series_tag(tag)
            except ValueError as exc:
                raise ValueError(f"{name!r}: {exc}") from None
        if "libcache" in options and base == "stock":
            raise ValueError(f"{name!r}: stock's libxenstore has no cache "
                             f"({LIBCACHE_SUFFIX} needs the patched toolstack)")
        return cls(build, **{known[o]: True for o in options})

    def vm_options(self, options: VMOptions) -> VMOptions:
        """``options`` with this variant's dom0 userland switches."""
        return dataclasses.replace(options, xs_cache=self.xs_cache, lib_cache=self.lib_cache)


def _patch_roots() -> tuple[Path, ...]:
    """Where series are looked for: ./patches, then this checkout's."""
    return tuple(dict.fromkeys((Path.cwd() / "patches", paths.patches_dir())))


def given_series_dir(option: str, directory: Path) -> Path:
    """A series directory the user gave (``option`` as they wrote it, e.g.
    '--series DIR' or '--series-as v1=DIR'), checked to be a directory."""
    if not directory.is_dir():
        raise LabError(f"{option}: not a directory (it holds "
                       f"{' and/or '.join(f'{p}/series' for p in SERIES_PARTS)})")
    return directory


def find_series(branch: str, explicit: Path | None = None) -> Path:
    """The series directory for a Xen branch ('4.22'): ``explicit``, else
    ``patches/<branch>`` here or in the checkout."""
    if explicit is not None:
        return given_series_dir(f"--series {explicit}", explicit)
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
    unknown, repeated or empty names are errors."""
    names = [n.strip() for n in text.split(",")]
    if not any(names):
        raise ValueError("no variant given (known: " + ", ".join(KNOWN) + ")")
    if not all(names):
        raise ValueError(f"an empty variant name in {text!r} (two commas in a row, or one "
                         "at an end)")
    parsed = [RunVariant.parse(n) for n in names]
    if len(set(names)) != len(names):
        raise ValueError(f"variant listed twice in {text!r}")
    return parsed


def parse_named_series(text: str) -> tuple[str, Path]:
    """'v1=DIR' -> ('v1', Path('DIR')), for ``--series-as``; the directory
    is checked when a variant builds it."""
    tag, sep, directory = text.partition("=")
    if not sep or not directory:
        raise ValueError(f"{text!r}: give NAME=DIR (a series directory, built by the "
                         f"variant patched{SERIES_TAG}NAME)")
    return check_series_tag(tag), Path(directory)


def named_series_map(pairs: list[tuple[str, Path]] | None) -> dict[str, Path]:
    """The ``--series-as`` pairs as a map; a name given twice is an error."""
    named: dict[str, Path] = {}
    for tag, directory in pairs or ():
        if tag in named:
            raise ValueError(f"--series-as {tag}: given twice ({named[tag]}, {directory})")
        named[tag] = directory
    return named


def check_named_series(run_variants: list[RunVariant], named: Mapping[str, Path]) -> None:
    """ValueError naming a ``patched@NAME`` variant without its series, or a
    series no variant builds (a typo in either would otherwise go unseen)."""
    tags = {v.series_tag for v in run_variants if v.series_tag is not None}
    missing = sorted(tags - set(named))
    if missing:
        raise ValueError(f"no --series-as for {', '.join(f'patched{SERIES_TAG}{t}' for t in missing)}"
                         f" (give --series-as NAME=DIR)")
    unused = sorted(set(named) - tags)
    if unused:
        raise ValueError(f"--series-as {', '.join(unused)}: no variant "
                         f"patched{SERIES_TAG}NAME builds it")


def check_series_used(run_variants: list[RunVariant], series: Path | None) -> None:
    """ValueError when ``series`` (``--series``) is given and no variant of
    ``run_variants`` builds it (only ``patched`` does; stock has no patches,
    patched@NAME builds its --series-as): it would be ignored unseen."""
    if series is not None and not any(v.base == "patched" and v.series_tag is None
                                      for v in run_variants):
        raise ValueError(f"--series {series}: no variant here builds it (only patched "
                         f"does, and {', '.join(v.name for v in run_variants)} is asked): "
                         "drop --series or ask for patched")


def resolve(name: str, series: Path | None = None, debug: bool = False,
            profile: bool = False, source: sources.XenSource | None = None,
            named: Mapping[str, Path] | None = None) -> Variant:
    """The build for a name on a Xen source (default: the one the user named,
    see :func:`sources.xen_source`): stock has no patches, patched has the
    series of the source's branch or ``series``, patched@NAME the series
    directory ``named[NAME]`` (a ``+cache`` suffix changes dom0's userland,
    not the build)."""
    variant = RunVariant.parse(name)
    src = source if source is not None else sources.xen_source()
    if variant.base != "patched":
        return Variant(name=variant.build, source=src, debug=debug, profile=profile)
    tag = variant.series_tag
    if tag is None:
        directory = find_series(src.branch, series)
    elif named is None or tag not in named:
        raise LabError(f"{variant.build}: no series named {tag!r} (give --series-as {tag}=DIR)")
    else:
        directory = given_series_dir(f"--series-as {tag}={named[tag]}", named[tag])
    parts = read_series_dir(directory)
    return Variant(name=variant.build, source=src, xen_patches=parts["xen"],
                   tools_patches=parts["tools"], debug=debug, profile=profile)
