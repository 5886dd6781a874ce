"""bench.json, the file the benchmarks write (``python -m pyxen.lab bench``
its storm ``runs``, ``scrubbench`` its ``birth_after_death`` section): its
format version, and the loader every reader of a saved one goes through.

Formats:

1. no ``"format"`` key (runs saved before bench.json was versioned): a run
   without ``"repeat"`` is repetition 0 (before ``--repeat`` existed);
2. ``"format": 2``: every storm run carries ``"repeat"``, the document the
   number of repetitions (``"repeat"``).

``load_bench`` reads any of them and gives the current format: it fills in
what an older one lacks.  A newer format than BENCH_FORMAT fails, naming both.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyxen.lab.contract.errors import LabError

if TYPE_CHECKING:
    from rich.table import Table

#: The format bench.json is written in, and the newest this pyxen reads.
BENCH_FORMAT = 2

#: The results file of ``bench``, ``scrubbench`` (a section of it) and
#: ``autoscale`` (a document of its own kind) in their ``--out`` directory.
BENCH_JSON = "bench.json"
#: Where the benchmarks write when not given ``--out``; ``autoscale``'s
#: bench.json is of another kind than the storm's, so it has its own.
DEFAULT_OUT = Path("bench-out")
AUTOSCALE_OUT = Path("autoscale-out")
#: The "kind" of a storm bench.json (bench, scrubbench): it has no such key.
STORM_KIND = None


def load_bench(path: Path, require_runs: bool = True) -> dict[str, Any]:
    """The bench.json at ``path``, in format BENCH_FORMAT.  LabError naming
    the file when it cannot be read, is not a JSON object, has a format this
    pyxen does not read, or (``require_runs``) holds no storm runs."""
    doc = read_results(path, "benchmark results")
    fmt = doc.get("format", 1)
    if type(fmt) is not int or fmt < 1:
        raise LabError(f"{path}: \"format\" must be a positive integer, got {fmt!r}")
    if fmt > BENCH_FORMAT:
        raise LabError(f"{path} is bench.json format {fmt}; this pyxen reads formats up to "
                       f"{BENCH_FORMAT}: read it with the newer pyxen that wrote it")
    runs = doc.get("runs")
    if require_runs and (not isinstance(runs, list) or not runs):
        raise LabError(f"{path} holds no benchmark runs (no 'runs' list): "
                       "is it a bench.json from 'python -m pyxen.lab bench'?")
    for i, r in enumerate(runs if isinstance(runs, list) else []):
        rep = r.get("repeat", 0) if isinstance(r, dict) else 0
        if type(rep) is not int or rep < 0:
            raise LabError(f"{path}: runs[{i}] \"repeat\" must be a whole number >= 0, "
                           f"got {rep!r}")
    if fmt == 1:
        _upgrade_from_1(doc)
    return doc


def _upgrade_from_1(doc: dict[str, Any]) -> None:
    """Format 1 -> 2 in place: runs without a repetition are repetition 0."""
    saved = doc.get("runs")
    runs = [r for r in saved if isinstance(r, dict)] if isinstance(saved, list) else []
    for r in runs:
        r.setdefault("repeat", 0)
    if runs:
        doc.setdefault("repeat", 1 + max(int(r["repeat"]) for r in runs))
    doc["format"] = 2


def _kind_name(kind: str | None) -> str:
    return "boot-storm ('bench', 'scrubbench')" if kind is STORM_KIND else repr(kind)


def read_results(path: Path, what: str = "results file") -> dict[str, Any]:
    """The JSON object saved at ``path``: what every reader of a saved
    results file goes through.  LabError naming ``what`` and the file when
    it cannot be read, is not UTF-8 JSON, or is no JSON object."""
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise LabError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise LabError(f"cannot read {what} {path}: not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise LabError(f"cannot read {what} {path}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise LabError(f"{what} {path} is not a JSON object")
    return doc


def writable_dir(out_dir: Path, option: str = "--out") -> None:
    """Make ``out_dir`` (given as ``option``) and check that files can be
    written there: what a long command does first, so that its results are
    not lost at its end.  LabError naming the option and the directory."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as exc:
        raise LabError(f"{option} {out_dir}: cannot write results there: "
                       f"{exc.strerror or exc}") from None


def writable_file(path: Path, option: str = "--out") -> None:
    """``writable_dir`` for a results file's directory; LabError when
    ``path`` is a directory."""
    if path.is_dir():
        raise LabError(f"{option} {path} is a directory: give the file to write")
    writable_dir(path.parent, option)


def prepare_out(out_dir: Path, json_name: str, kind: str | None) -> dict[str, Any] | None:
    """Make ``out_dir`` (a benchmark's ``--out``) and check that the results
    of a run of ``kind`` (the document's ``"kind"``; STORM_KIND for
    bench.json's storm runs) can be written there as ``json_name``: what a
    command does before any build, so that a run is not lost at its end.

    LabError when the directory cannot be made or written, or when it holds
    a ``json_name`` the run must not replace: one that cannot be read, or of
    another kind.  Returns that file's document (None when there is none)."""
    writable_dir(out_dir)
    path = out_dir / json_name
    if not path.exists():
        return None
    try:
        doc = read_results(path)
    except LabError as exc:
        raise LabError(f"{exc}; this run would replace it: choose another --out "
                       "(or move the file away)") from None
    found = doc.get("kind")
    if found != kind:
        raise LabError(f"{path} holds {_kind_name(found)} results, and this run of kind "
                       f"{_kind_name(kind)} would replace them: choose another --out")
    return doc


def saved_bench(out_dir: Path) -> dict[str, Any] | None:
    """The storm bench.json in ``out_dir`` (load_bench: in format
    BENCH_FORMAT), None when there is none, after prepare_out: LabError when
    a run of ``bench`` or ``scrubbench`` cannot write its sections there."""
    if prepare_out(out_dir, BENCH_JSON, STORM_KIND) is None:
        return None
    return load_bench(out_dir / BENCH_JSON, require_runs=False)


def write_storm_sections(out_dir: Path, sections: dict[str, Any],
                         png_name: str) -> tuple[dict[str, Any], Path, Path]:
    """Write ``sections`` into ``out_dir``'s storm bench.json, keeping what
    the saved one holds besides them (another command's sections: bench's
    runs, scrubbench's birth_after_death) and the files replaced, it and
    the run's plot ``png_name`` (places_keeping); returns the document, the
    file written and where to draw the plot.

    The saved file was checked before the run (saved_bench); should it have
    changed meanwhile into one this run must not replace (another command
    writing to the same --out), the run is not lost: its sections go to
    ``bench.<pid>.json`` beside it, and LabError says where."""
    try:
        saved = saved_bench(out_dir) or {}
    except LabError as exc:
        aside = out_dir / f"{Path(BENCH_JSON).stem}.{os.getpid()}.json"
        write_json(aside, {"format": BENCH_FORMAT, **sections})
        raise LabError(f"{exc}; this run's results are in {aside}") from None
    doc = dict(sections)
    for key, value in saved.items():
        doc.setdefault(key, value)
    doc.setdefault("format", BENCH_FORMAT)
    json_path, png_path = places_keeping(out_dir / BENCH_JSON, out_dir / png_name)
    write_json(json_path, doc)
    return doc, json_path, png_path


def _stamped(paths: list[Path], when: float) -> list[Path]:
    """``NAME.YYYYmmdd-HHMMSS.SUFFIX`` beside each of ``paths`` for the time
    ``when``, one stamp for all (numbered should any such name be taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))

    def named(tag: str) -> list[Path]:
        return [p.with_name(f"{p.name.split('.', 1)[0]}.{tag}{''.join(p.suffixes)}")
                for p in paths]

    out, n = named(stamp), 1
    while any(p.exists() for p in out):
        n += 1
        out = named(f"{stamp}-{n}")
    return out


def keep_previous(path: Path, *companions: Path) -> list[Path]:
    """Before a run's results replace ``path`` (and its plot, ``companions``),
    move the files there aside, all named for the time ``path`` was written
    (_stamped), so that a rerun into the same --out loses nothing: renamed,
    they take no space and are never half made, and what is written next
    (a plot is written in place) cannot reach them.  Returns their new
    names (empty: no ``path`` there).  OSError, with every file back where
    it was, when they cannot be moved."""
    try:
        written = path.stat().st_mtime
    except FileNotFoundError:
        return []
    there = [p for p in (path, *companions) if p.exists()]
    moved: list[tuple[Path, Path]] = []
    try:
        for src, dst in zip(there, _stamped(there, written)):
            os.rename(src, dst)
            moved.append((src, dst))
    except BaseException:
        for src, dst in reversed(moved):
            os.rename(dst, src)
        raise
    return [dst for _, dst in moved]


def places_keeping(path: Path, *companions: Path) -> list[Path]:
    """Where a run writes its results file ``path`` and its plots
    ``companions``: there, the files there kept first (keep_previous), and
    said so.  Should they not be kept, those are left alone and the run
    writes beside them (_stamped, now), which is said too."""
    from pyxen.lab.host.progress import say
    try:
        kept = keep_previous(path, *companions)
    except OSError as exc:
        new = _stamped([path, *companions], time.time())
        say(f"could not keep the previous {path} ({exc.strerror or exc}): "
            f"it is left as it was, and this run's results go to {new[0]}")
        return new
    if kept:
        say(f"kept the previous results as {', '.join(map(str, kept))}")
    return [path, *companions]


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` whole or not at all: a temporary file beside
    it, renamed over it (a crash or a full disk leaves the old file)."""
    text = json.dumps(doc, indent=2, allow_nan=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def failed_name(json_name: str) -> str:
    """Where a run none of whose variants succeeded writes its failures
    (``xsbench.json`` -> ``xsbench.failed.json``), so that it does not
    replace earlier results."""
    return json_name.removesuffix(".json") + ".failed.json"


def write_results(out_dir: Path, json_name: str, doc: dict[str, Any],
                  draw: Callable[[Path], None], png_name: str, table: Table,
                  *more: Table, any_good: bool = True) -> Path:
    """Write a benchmark's results file and plot into ``out_dir``, print its
    table (and ``more`` after it), and say where they are: what every
    benchmark does at its end.  A run without ``any_good`` variant writes
    ``doc`` (its failures) to failed_name(json_name) instead, and neither
    plot nor table: an earlier ``json_name`` there is kept.  Returns the
    file written."""
    from pyxen.lab.host.progress import print_table, say
    out_dir.mkdir(parents=True, exist_ok=True)
    if not any_good:
        failed = out_dir / failed_name(json_name)
        write_json(failed, doc)
        say(f"no variant succeeded: wrote the failures to {failed}"
            + (f" ({out_dir / json_name} is kept)" if (out_dir / json_name).exists() else ""))
        return failed
    written, png = places_keeping(out_dir / json_name, out_dir / png_name)
    write_json(written, doc)
    draw(png)
    for t in (table, *more):
        print_table(t)
    say(f"wrote {written} and {png}")
    return written


def failed_runs_error(what: str, failed: list[dict[str, Any]], where: Path) -> LabError:
    """The error naming each failed variant's errors, and where every run is."""
    return LabError(f"{what} failed on "
                    + "; ".join(f"{r['variant']}: {'; '.join(r['errors'])}" for r in failed)
                    + f" (every run is in {where})")
