"""The project's patch series: reading ``patches/series`` and applying it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pyxen.lab.contract.errors import PatchError


def read_series(series: Path) -> list[Path]:
    """The patch files named by a quilt-style series file, in apply order.

    Blank lines and ``#`` comments are ignored; names are relative to the
    series file's directory.  A named patch that does not exist is an error.
    """
    if not series.exists():
        raise PatchError(str(series), "series file not found")
    patches: list[Path] = []
    for lineno, raw in enumerate(series.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.split()[0]
        path = series.parent / name
        if not path.is_file():
            raise PatchError(name, f"listed at {series}:{lineno} but not found")
        patches.append(path)
    return patches


_FAILED_HUNK = re.compile(r"^Hunk #(\d+) FAILED at (\d+)")
_PATCHING = re.compile(r"^(?:patching|checking) file (.+)$")


def failed_hunks(patch_output: str) -> list[str]:
    """'file: Hunk #N FAILED at L' for each failed hunk in GNU patch's output."""
    current = "?"
    failures: list[str] = []
    for line in patch_output.splitlines():
        m = _PATCHING.match(line)
        if m:
            current = m.group(1).strip("'\"")
            continue
        m = _FAILED_HUNK.match(line)
        if m:
            failures.append(f"{current}: hunk #{m.group(1)} FAILED at line {m.group(2)}")
    return failures


def _patch(tree: Path, patch: Path, dry_run: bool) -> subprocess.CompletedProcess[str]:
    argv = ["patch", "-p1", "--forward", "--batch", "--no-backup-if-mismatch",
            "-i", str(patch.resolve())]
    if dry_run:
        argv.append("--dry-run")
    return subprocess.run(argv, cwd=tree, capture_output=True, text=True, check=False)


def apply_series(tree: Path, patches: list[Path]) -> None:
    """Apply each patch in order; the first that does not apply cleanly raises
    PatchError naming it and its failing hunks.  Nothing is half-applied: every
    patch is checked with a dry run before it is applied."""
    for patch in patches:
        check = _patch(tree, patch, dry_run=True)
        if check.returncode != 0:
            out = check.stdout + check.stderr
            hunks = failed_hunks(out)
            detail = "; ".join(hunks) if hunks else (out.strip().splitlines() or ["?"])[-1]
            raise PatchError(patch.name, detail)
        done = _patch(tree, patch, dry_run=False)
        if done.returncode != 0:  # pragma: no cover - dry run said it applies
            raise PatchError(patch.name, (done.stdout + done.stderr).strip())
