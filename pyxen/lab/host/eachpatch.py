"""Checking that a series is fit to post: every patch applies with ``git am``
onto the pristine release and the tree builds after each one.

The hypervisor series is applied first, then the toolstack's (the order the
lab builds them in).  After each patch the parts of the tree it touched are
built incrementally: the hypervisor (defconfig, as the lab builds it) when
it changed a file under ``xen/``, the lab's toolstack directories when it
changed one under ``tools/`` or Xen's public headers, which the tools
compile against, and the Flask policy (with checkpolicy) when it changed
the policy or its access vectors.  A patch touching only documentation
builds nothing.  Xen builds with ``-Werror``, so a new warning fails its
patch.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyxen.lab.contract.errors import BuildError, LabError, PatchError
from pyxen.lab.host import paths
from pyxen.lab.host.progress import step
from pyxen.lab.host.provenance import run_commit
from pyxen.lab.host.sources import XenSource
from pyxen.lab.host.xenbuild import (TOOLS_CONFIGURE_FLAGS, TOOLS_LIBRARIES,
                                     TOOLS_PROGRAM_DIRS, XEN_MAKE_VARIABLES, jobs,
                                     run_logged)

log = logging.getLogger(__name__)

#: The parts of the tree a patch may rebuild, in build order.
HYPERVISOR = "hypervisor"
TOOLSTACK = "toolstack"
FLASK_POLICY = "flask-policy"

#: Where the Flask policy is built (with checkpolicy) and what it is built
#: from besides its own directory: the hypervisor's access vectors.
_POLICY_DIR = "tools/flask/policy"
_POLICY_SOURCES = (f"{_POLICY_DIR}/", "xen/xsm/flask/policy/")

#: Paths whose change rebuilds the toolstack besides tools/ itself: the
#: public headers it is compiled against.
_TOOLS_HEADERS = "xen/include/public/"

#: The identity of the base commit and of the commits ``git am`` makes (the
#: patches keep their own authors).
_GIT_IDENTITY = {"GIT_AUTHOR_NAME": "pyxen lab", "GIT_AUTHOR_EMAIL": "lab@localhost",
                 "GIT_COMMITTER_NAME": "pyxen lab", "GIT_COMMITTER_EMAIL": "lab@localhost"}


def touched_files(patch: Path) -> list[str]:
    """The files a ``git format-patch`` file changes (its ``diff --git`` lines;
    a rename counts both names).  A file with none is an error naming it."""
    files: list[str] = []
    for line in patch.read_text(errors="replace").splitlines():
        if line.startswith("diff --git "):
            parts = line.split()
            if len(parts) != 4 or not parts[2].startswith("a/") or not parts[3].startswith("b/"):
                raise PatchError(patch.name, f"cannot read the diff header {line!r}")
            for name in (parts[2][2:], parts[3][2:]):
                if name not in files:
                    files.append(name)
    if not files:
        raise PatchError(patch.name, "changes no file (no 'diff --git' line)")
    return files


def parts_to_build(files: Sequence[str]) -> tuple[str, ...]:
    """Which parts a change of ``files`` rebuilds, in build order."""
    parts = []
    if any(f.startswith("xen/") for f in files):
        parts.append(HYPERVISOR)
    if any(f.startswith("tools/") or f.startswith(_TOOLS_HEADERS) for f in files):
        parts.append(TOOLSTACK)
    if any(f.startswith(_POLICY_SOURCES) for f in files):
        parts.append(FLASK_POLICY)
    return tuple(parts)


@dataclass
class PatchBuild:
    """One patch of the check: where it is and what built after it."""

    series: str                     # "xen" or "tools"
    patch: str                      # the file's name
    parts: tuple[str, ...]          # what was built after it (empty: docs only)
    seconds: float                  # applying and building
    left_out: list[str] = field(default_factory=list)   # touched, built by nothing here


def _left_out(files: Sequence[str]) -> list[str]:
    """Touched files under tools/ that no build of the check compiles: the
    directories the lab does not build (Flask's utilities, the tests...)."""
    built = [f"tools/{d}/" for d in ("include", TOOLS_LIBRARIES, *TOOLS_PROGRAM_DIRS)]
    built.append(f"{_POLICY_DIR}/")
    return [f for f in files if f.startswith("tools/") and not f.startswith(tuple(built))]


#: How a step is run: (step's name, argv, directory, log file, environment
#: added); raises BuildError with the log's tail (xenbuild.run_logged).
Runner = Callable[[str, list[str], Path, Path, Mapping[str, str] | None], None]


def _git(tree: Path, logfile: Path, run: Runner, *args: str) -> None:
    # Unsigned whatever the user's configuration says: a scratch tree.
    run(f"git {args[0]}", ["git", "-c", "commit.gpgsign=false", *args], tree, logfile,
        _GIT_IDENTITY)


def _build(part: str, tree: Path, logfile: Path, run: Runner) -> None:
    if part == FLASK_POLICY:
        run("flask policy", ["make", "-C", _POLICY_DIR], tree, logfile, None)
    elif part == HYPERVISOR:
        run("hypervisor build", ["make", "-C", "xen", *XEN_MAKE_VARIABLES, f"-j{jobs()}"],
            tree, logfile, None)
    else:
        # Each its own make: goals of one make -j may be built side by side.
        run("toolstack headers", ["make", "-C", "tools", "subdir-all-include"],
            tree, logfile, None)
        run("toolstack libraries", ["make", "-C", "tools", f"subdir-all-{TOOLS_LIBRARIES}",
                                    f"-j{jobs()}"], tree, logfile, None)
        run("toolstack programs", ["make", "-C", "tools",
                                   *(f"subdir-all-{d}" for d in TOOLS_PROGRAM_DIRS),
                                   f"-j{jobs()}"], tree, logfile, None)


def _prepare(source: Path, tree: Path, logfile: Path, run: Runner,
             parts: Sequence[str]) -> None:
    """A git tree of the pristine source, configured, with ``parts`` built
    whole once."""
    shutil.copytree(source, tree, symlinks=True)
    _git(tree, logfile, run, "init", "-q")
    _git(tree, logfile, run, "add", "-A")
    _git(tree, logfile, run, "commit", "-q", "-m", "base")
    run("autogen", ["./autogen.sh"], tree, logfile, None)
    run("configure", ["./configure", *TOOLS_CONFIGURE_FLAGS], tree, logfile, None)
    run("xen defconfig", ["make", "-C", "xen", "defconfig"], tree, logfile, None)
    for part in parts:
        _build(part, tree, logfile, run)


#: Marks a directory this check made, which a later check may empty.
_MARKER = ".pyxen-each-patch"


def _empty_work_dir(work: Path) -> None:
    """Make ``work`` empty but for the marker; a directory that holds
    anything and was not made by this check is refused, never emptied."""
    if work.exists():
        if not work.is_dir():
            raise LabError(f"{work}: not a directory")
        if any(work.iterdir()) and not (work / _MARKER).exists():
            raise LabError(f"{work} holds files this check did not make: give an empty "
                           "or new directory")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / _MARKER).write_text("made by python -m pyxen.lab check-series; emptied by "
                                "the next check\n")


def parts_needed(series: Sequence[tuple[str, Sequence[Path]]]) -> set[str]:
    """The parts some patch of ``series`` rebuilds (PatchError naming a
    patch that cannot be read)."""
    return {part for _, patches in series for patch in patches
            for part in parts_to_build(touched_files(patch))}


def check_each_patch(source: XenSource, series: Sequence[tuple[str, Sequence[Path]]],
                     work: Path, run: Runner | None = None) -> list[PatchBuild]:
    """Apply each patch of ``series`` (pairs of a series' name and its
    patches, in apply order) with ``git am`` onto a copy of the pristine
    tree in ``work`` and build what it touched.  The first patch that does
    not apply raises PatchError, the first that does not build BuildError
    (its log names it); the tree is left in ``work`` to look at."""
    runner: Runner = run or run_logged
    needed = parts_needed(series)       # every patch readable before any work
    _empty_work_dir(work)
    tree, logfile = work / "src", work / "build.log"
    with step(f"preparing Xen {source.version}: a git tree, configured and built whole"):
        _prepare(source.tree, tree, logfile, runner,
                 [HYPERVISOR, TOOLSTACK] + [FLASK_POLICY] * (FLASK_POLICY in needed))
    done: list[PatchBuild] = []
    total = sum(len(p) for _, p in series)
    for part_name, patches in series:
        for patch in patches:
            start = time.monotonic()
            files = touched_files(patch)
            parts = parts_to_build(files)
            with step(f"[{len(done) + 1}/{total}] {part_name} {patch.name}: "
                      f"git am, build {' and '.join(parts) or 'nothing (documentation)'}"):
                try:
                    _git(tree, logfile, runner, "am", "-q", str(patch.resolve()))
                except BuildError as exc:
                    raise PatchError(patch.name, f"git am failed (log: {exc.log_path}):\n"
                                                 f"{exc.log_tail}") from exc
                for part in parts:
                    try:
                        _build(part, tree, logfile, runner)
                    except BuildError as exc:
                        raise BuildError(f"{exc.step} after {part_name} {patch.name}",
                                         exc.log_tail, exc.log_path) from exc
            done.append(PatchBuild(part_name, patch.name, parts,
                                   round(time.monotonic() - start, 1), _left_out(files)))
    return done


def write_report(results: Sequence[PatchBuild], source: XenSource, out: Path) -> None:
    """The check's record: the source, the project's commit the series came
    from, and each patch with what it built."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**source.describe(), "commit": run_commit(), "jobs": jobs(),
                               "patches": [asdict(r) for r in results]}, indent=2) + "\n")


def report_lines(results: Sequence[PatchBuild]) -> list[str]:
    """One line a patch, then what no build here compiled."""
    lines = [f"{r.series:5} {r.patch:72} {'+'.join(r.parts) or '(docs)':20} {r.seconds:7.1f} s"
             for r in results]
    left = sorted({f for r in results for f in r.left_out})
    lines.append(f"{len(results)} patches applied with git am, each built after it.")
    if left:
        lines.append("touched but built by none of these builds: " + ", ".join(left))
    return lines


def default_work_dir() -> Path:
    """Where the check's tree is kept (in the lab's cache)."""
    return paths.builds_dir() / "each-patch"


def check_programs(series: Sequence[tuple[str, Sequence[Path]]]) -> None:
    """What the check runs beyond the lab's build packages, present: git
    (``git am``), and checkpolicy where the series changes the Flask policy.
    A clear error naming the package otherwise."""
    if shutil.which("git") is None:
        raise LabError("git not found: the check applies each patch with 'git am' "
                       "(apt-get install git)")
    if FLASK_POLICY in parts_needed(series) and shutil.which("checkpolicy") is None:
        raise LabError("the series changes the Flask policy, which is built with "
                       "checkpolicy: apt-get install checkpolicy")
