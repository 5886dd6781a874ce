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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyxen.lab.contract.errors import LabError

if TYPE_CHECKING:
    from rich.table import Table

#: The format bench.json is written in, and the newest this pyxen reads.
BENCH_FORMAT = 2


def load_bench(path: Path, require_runs: bool = True) -> dict[str, Any]:
    """The bench.json at ``path``, in format BENCH_FORMAT.  LabError naming
    the file when it cannot be read, is not a JSON object, has a format this
    pyxen does not read, or (``require_runs``) holds no storm runs."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read benchmark results {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise LabError(f"{path} is not a bench.json (not a JSON object)")
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


def write_results(out_dir: Path, json_name: str, doc: dict[str, Any],
                  draw: Callable[[Path], None], png_name: str, table: Table,
                  *more: Table) -> None:
    """Write a benchmark's results file and plot into ``out_dir``, print its
    table (and ``more`` after it), and say where they are: what every
    benchmark does at its end."""
    from pyxen.lab.host.progress import console, print_table
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / json_name).write_text(json.dumps(doc, indent=2, allow_nan=False))
    draw(out_dir / png_name)
    for t in (table, *more):
        print_table(t)
    console().print(f"wrote {out_dir / json_name} and {out_dir / png_name}")


def failed_runs_error(what: str, failed: list[dict[str, Any]], where: Path) -> LabError:
    """The error naming each failed variant's errors, and where every run is."""
    return LabError(f"{what} failed on "
                    + "; ".join(f"{r['variant']}: {'; '.join(r['errors'])}" for r in failed)
                    + f" (every run is in {where})")
