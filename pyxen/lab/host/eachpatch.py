"""Checking that a series is fit to post: every patch applies with ``git am``
onto the pristine release and the tree builds after each one.

The hypervisor series is applied first, then the toolstack's (the order the
lab builds them in).  After each patch that changes anything but
documentation, everything the check builds is rebuilt incrementally: the
hypervisor in each configuration (:data:`HYPERVISOR_CONFIGS`, each in its
own output directory; arm64 on request, with a cross compiler) unless the
patch changes only the toolstack, the lab's toolstack directories and the
Flask policy.  Xen builds with ``-Werror``, so a new warning fails its
patch.  A patch changing what configure reads has configure run again
first.

What was compiled is read back from the builds' own dependency files: a C
or assembly file or header a patch changed that no object of any build
depends on is reported as left out (code for another architecture, a
configuration none of these selects, a tools directory the lab does not
build), so that a clean check never claims more than it compiled.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyxen.lab.contract.errors import BuildError, LabError, PatchError
from pyxen.lab.host import hostdeps, paths
from pyxen.lab.host.progress import step
from pyxen.lab.host.provenance import run_commit
from pyxen.lab.host.sources import XenSource
from pyxen.lab.host.xenbuild import (PROFILE_KCONFIG, TOOLS_CONFIGURE_FLAGS,
                                     configure_hypervisor, hypervisor_make, jobs, locked,
                                     run_logged, toolstack_subdir_goals)


@dataclass(frozen=True)
class HypervisorConfig:
    """One configuration the hypervisor is built in, in its own directory."""

    name: str
    kconfig: Mapping[str, str]
    make_args: tuple[str, ...] = ()     # besides O=: the architecture, a compiler
    package: str = ""                   # the Debian package of a cross compiler


#: Everything the series' code can be built with on x86 beyond defconfig:
#: a debug build, XSM with Flask, perf counters and lock profiling (which
#: the lab's profiling builds use), a late hardware domain.
_FULL = {"EXPERT": "y", "DEBUG": "y", "XSM": "y", "XSM_FLASK": "y", **PROFILE_KCONFIG}

#: The hypervisor's configurations: defconfig (as the lab's builds), and
#: the fullest x86 one.
HYPERVISOR_CONFIGS: tuple[HypervisorConfig, ...] = (
    HypervisorConfig("x86_64", {}),
    HypervisorConfig("x86_64-full", {**_FULL, "LATE_HWDOM": "y"}),
)

#: With ``arm64``: Arm's fullest, cross-compiled (LLC colouring excludes NUMA).
ARM64_CONFIG = HypervisorConfig(
    "arm64-full", {**_FULL, "LLC_COLORING": "y"},
    ("XEN_TARGET_ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"), "gcc-aarch64-linux-gnu")


def hypervisor_configs(arm64: bool) -> tuple[HypervisorConfig, ...]:
    """The configurations a check builds, arm64's with ``arm64``."""
    return HYPERVISOR_CONFIGS + ((ARM64_CONFIG,) if arm64 else ())


#: Documentation: a patch changing only these builds nothing.
_DOC_PREFIXES = ("docs/", "LICENSES/")
_DOC_FILES = ("CHANGELOG.md", "SUPPORT.md", "README", "MAINTAINERS", "CREDITS",
              "CONTRIBUTING", "COPYING", "CODING_STYLE")

#: What configure reads: a patch changing one has configure run again
#: (autogen.sh first when it changes configure's own sources).
_AUTOCONF_SOURCES = ("configure.ac", "tools/configure.ac", "m4/", "tools/m4/")
_CONFIGURE_INPUTS = (*_AUTOCONF_SOURCES, "configure", "tools/configure", "config/",
                     "tools/config.h.in", "config.sub", "config.guess")

#: The Flask policy's directory (built with checkpolicy).
_POLICY_DIR = "tools/flask/policy"

#: Files that are compiled (or included), whose coverage the check reports.
_CODE_SUFFIXES = (".c", ".h", ".S", ".inc")

#: The identity of the base commit and of the commits ``git am`` makes (the
#: patches keep their own authors).
_GIT_IDENTITY = {"GIT_AUTHOR_NAME": "pyxen lab", "GIT_AUTHOR_EMAIL": "lab@localhost",
                 "GIT_COMMITTER_NAME": "pyxen lab", "GIT_COMMITTER_EMAIL": "lab@localhost"}


def touched_files(patch: Path) -> list[str]:
    """The files a ``git format-patch`` file changes (its ``diff --git`` lines;
    a rename counts both names).  LabError naming the file if it cannot be
    read or changes none."""
    try:
        text = patch.read_text(errors="replace")
    except OSError as exc:
        raise LabError(f"cannot read patch {patch}: {exc.strerror}") from exc
    files: list[str] = []
    for line in text.splitlines():
        if line.startswith("diff --git "):
            parts = line.split()
            if len(parts) != 4 or not parts[2].startswith("a/") or not parts[3].startswith("b/"):
                raise LabError(f"patch {patch.name}: cannot read the diff header {line!r}")
            for name in (parts[2][2:], parts[3][2:]):
                if name not in files:
                    files.append(name)
    if not files:
        raise LabError(f"patch {patch.name} changes no file (no 'diff --git' line)")
    return files


def is_documentation(name: str) -> bool:
    """Whether a changed file is documentation only (nothing builds it)."""
    return name.startswith(_DOC_PREFIXES) or name in _DOC_FILES


def needs_build(files: Sequence[str]) -> bool:
    """Whether a change of ``files`` is to be built: anything but documentation."""
    return not all(is_documentation(f) for f in files)


def needs_hypervisors(files: Sequence[str]) -> bool:
    """Whether a change of ``files`` is to be built in the hypervisor's
    configurations: one outside tools/ and the documentation (the hypervisor
    compiles nothing under tools/ but the Flask policy it may embed)."""
    return any(not is_documentation(f) and
               (not f.startswith("tools/") or f.startswith(f"{_POLICY_DIR}/"))
               for f in files)


def needs_configure(files: Sequence[str]) -> tuple[bool, bool]:
    """(run configure again, run autogen.sh before it) for a change of ``files``."""
    return (any(f.startswith(_CONFIGURE_INPUTS) for f in files),
            any(f.startswith(_AUTOCONF_SOURCES) for f in files))


@dataclass
class PatchBuild:
    """One patch of the check: where it is and what built after it."""

    series: str                     # "xen" or "tools"
    patch: str                      # the file's name
    built: bool                     # False: documentation only
    seconds: float                  # applying and building
    left_out: list[str] = field(default_factory=list)   # code no build compiled


#: How a step is run: (step's name, argv, directory, log file, environment
#: added); raises BuildError with the log's tail (xenbuild.run_logged).
Runner = Callable[[str, list[str], Path, Path, Mapping[str, str] | None], None]


def _git_env(tree: Path) -> dict[str, str]:
    """git confined to ``tree``: none of the user's configuration (hooks,
    am.threeWay, signing) and none of an outer repository's variables."""
    git_dir = tree / ".git"
    return {**_GIT_IDENTITY, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_DIR": str(git_dir), "GIT_WORK_TREE": str(tree),
            "GIT_INDEX_FILE": str(git_dir / "index"),
            "GIT_OBJECT_DIRECTORY": str(git_dir / "objects"),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": ""}


def _git(tree: Path, logfile: Path, run: Runner, *args: str) -> None:
    run(f"git {args[0]}", ["git", *args], tree, logfile, _git_env(tree))


class _Build:
    """The parts the check builds in one tree, each step through ``run``."""

    def __init__(self, work: Path, run: Runner, configs: Sequence[HypervisorConfig]) -> None:
        self.tree, self.logfile, self.run = work / "src", work / "build.log", run
        self.configs = [(c, work / f"xen-{c.name}") for c in configs]

    def _step(self, name: str, argv: list[str]) -> None:
        self.run(name, argv, self.tree, self.logfile, None)

    def make_args(self, config: HypervisorConfig, out: Path) -> list[str]:
        return [f"O={out}", *config.make_args]

    def configure(self, autogen: bool) -> None:
        if autogen:
            self._step("autogen", ["./autogen.sh"])
        self._step("configure", ["./configure", *TOOLS_CONFIGURE_FLAGS])

    def configure_hypervisors(self) -> None:
        """Each configuration in its output directory, checked to have taken
        every setting asked for (Kconfig drops one whose dependencies fail)."""
        for config, out in self.configs:
            out.mkdir(parents=True, exist_ok=True)
            configure_hypervisor(
                self.tree, self.logfile, config.kconfig, self.make_args(config, out),
                out / ".config",
                lambda n, a, c, lf, cfg=config: self.run(f"{n} ({cfg.name})", a, c, lf, None))
            dotconfig = (out / ".config").read_text().splitlines()
            dropped = [k for k, v in config.kconfig.items() if f"CONFIG_{k}={v}" not in dotconfig]
            if dropped:
                raise LabError(f"hypervisor configuration {config.name}: Kconfig did not take "
                               f"{', '.join(dropped)} (see {out / '.config'})")

    def everything(self, hypervisors: bool = True) -> None:
        """The hypervisor in each configuration (unless ``hypervisors`` is
        false), the toolstack, the Flask policy."""
        for config, out in self.configs if hypervisors else []:
            self._step(f"hypervisor build ({config.name})",
                       hypervisor_make(self.make_args(config, out)))
        # Each its own make: goals of one make -j may be built side by side.
        self._step("toolstack headers", ["make", "-C", "tools", "subdir-all-include"])
        for name, goals in toolstack_subdir_goals("all"):
            self._step(name, ["make", "-C", "tools", *goals, f"-j{jobs()}"])
        self._step("flask policy", ["make", "-C", _POLICY_DIR])


#: Marks a directory this check made, which a later check may empty.
_MARKER = ".pyxen-each-patch"


def _empty_work_dir(work: Path) -> None:
    """Make ``work`` empty but for the marker; a directory that holds
    anything and was not made by this check is refused, never emptied."""
    if work.is_symlink() or (work.exists() and not work.is_dir()):
        raise LabError(f"{work}: not a directory")
    if work.exists():
        if any(work.iterdir()) and not (work / _MARKER).exists():
            raise LabError(f"{work} holds files this check did not make: give an empty "
                           "or new directory")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / _MARKER).write_text("made by python -m pyxen.lab check-series; emptied by "
                                "the next check\n")


def _dependency_files(work: Path, tree: Path) -> Iterable[Path]:
    """The dependency files the builds wrote: Xen's ``.*.cmd`` in each output
    directory, the tools' ``.*.d``."""
    for root in [d for d in work.iterdir() if d.name.startswith("xen-")] + [tree / "tools"]:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if name.startswith(".") and name.endswith((".cmd", ".d")):
                    yield Path(dirpath, name)


@functools.lru_cache(maxsize=None)
def _resolve(base: str, token: str) -> Path | None:
    """base/token with symlinks resolved, if it is a file."""
    candidate = Path(os.path.realpath(os.path.join(base, token)))
    return candidate if candidate.is_file() else None


def compiled_files(work: Path, tree: Path) -> set[str]:
    """The source files (relative to ``tree``, symlinks resolved) that some
    object of the check's builds depends on, read from their dependency
    files; paths there are absolute, relative to the file's directory, to
    the hypervisor's sources (``$(srctree)``) or to its output directory."""
    real_tree = Path(os.path.realpath(tree))
    xen_src = tree / "xen"
    found: set[str] = set()
    for depfile in _dependency_files(work, tree):
        out_dir = next((p for p in depfile.parents if p.parent == work), depfile.parent)
        for line in depfile.read_text(errors="replace").splitlines():
            if "$(wildcard" in line:
                continue
            for token in line.replace("$(srctree)", str(xen_src)).split():
                token = token.rstrip(":\\")
                if not token.endswith(_CODE_SUFFIXES):
                    continue
                for base in (depfile.parent, xen_src, out_dir):
                    candidate = _resolve(str(base), token)
                    if candidate is not None:
                        if candidate.is_relative_to(real_tree):
                            found.add(str(candidate.relative_to(real_tree)))
                        break
    _resolve.cache_clear()
    return found


def left_out(files: Sequence[str], compiled: set[str]) -> list[str]:
    """The changed C/assembly files and headers no build compiled."""
    return [f for f in files if f.endswith(_CODE_SUFFIXES) and f not in compiled]


def check_each_patch(source: XenSource, series: Sequence[tuple[str, Sequence[Path]]],
                     work: Path, run: Runner | None = None, arm64: bool = False
                     ) -> list[PatchBuild]:
    """Apply each patch of ``series`` (pairs of a series' name and its
    patches, in apply order) with ``git am`` onto a git tree of the pristine
    source in ``work`` and build everything after each patch that is not
    documentation only.  The first patch that does not apply raises
    PatchError, the first that does not build BuildError, each naming it;
    the tree is left in ``work`` to look at."""
    runner: Runner = run or run_logged
    # Every patch read (and readable) before any work.
    changes = [(part_name, patch, touched_files(patch))
               for part_name, patches in series for patch in patches]
    configs = hypervisor_configs(arm64)
    with locked("each-patch"):
        _empty_work_dir(work)
        build = _Build(work, runner, configs)
        tree = build.tree
        with step(f"preparing Xen {source.version}: a git tree, configured and built whole "
                  f"({', '.join(c.name for c in configs)}, toolstack, Flask policy)"):
            shutil.copytree(source.tree, tree, symlinks=True)
            _git(tree, build.logfile, runner, "init", "-q")
            _git(tree, build.logfile, runner, "add", "-A", "-f")
            _git(tree, build.logfile, runner, "commit", "-q", "-m", "base")
            build.configure(autogen=False)
            build.configure_hypervisors()
            build.everything()
        done: list[tuple[PatchBuild, list[str]]] = []
        for part_name, patch, files in changes:
            start = time.monotonic()
            built = needs_build(files)
            reconfigure, autogen = needs_configure(files)
            name = f"{part_name} {patch.name}"
            with step(f"[{len(done) + 1}/{len(changes)}] {name}: git am, "
                      f"{'build' if built else 'documentation only'}"):
                try:
                    _git(tree, build.logfile, runner, "am", "-q", "--no-3way",
                         str(patch.resolve()))
                except BuildError as exc:
                    raise PatchError(name, f"git am failed (log: {exc.log_path}):\n"
                                           f"{exc.log_tail}") from exc
                try:
                    if reconfigure:
                        build.configure(autogen)
                    if built:
                        build.everything(needs_hypervisors(files))
                except BuildError as exc:
                    raise BuildError(f"{exc.step} after {name}",
                                     exc.log_tail, exc.log_path) from exc
            done.append((PatchBuild(part_name, patch.name, built,
                                    round(time.monotonic() - start, 1)), files))
        with step("reading what the builds compiled from their dependency files"):
            compiled = compiled_files(work, tree)
    for result, files in done:
        result.left_out = left_out(files, compiled)
    return [r for r, _ in done]


def write_report(results: Sequence[PatchBuild], source: XenSource, out: Path,
                 arm64: bool) -> None:
    """The check's record: the source, the project's commit the series came
    from, the configurations, and each patch with what it built."""
    configs = hypervisor_configs(arm64)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        **source.describe(), "commit": run_commit(), "jobs": jobs(),
        "hypervisor_configs": [{"name": c.name, "kconfig": dict(c.kconfig),
                                "make_args": list(c.make_args)} for c in configs],
        "toolstack_configure": list(TOOLS_CONFIGURE_FLAGS),
        "patches": [asdict(r) for r in results]}, indent=2) + "\n")


def report_lines(results: Sequence[PatchBuild]) -> list[str]:
    """One line a patch, the count per series, then the code no build compiled."""
    lines = [f"{r.series:5} {r.patch:72} {'built' if r.built else '(docs)':7} "
             f"{r.seconds:7.1f} s" for r in results]
    counts: dict[str, int] = {}
    for r in results:
        counts[r.series] = counts.get(r.series, 0) + 1
    lines.append(f"{len(results)} patches applied with git am, each built after it "
                 f"({', '.join(f'{n} {s}' for s, n in counts.items())}).")
    for r in results:
        if r.left_out:
            lines.append(f"changed by {r.series} {r.patch} but compiled by no build: "
                         + ", ".join(r.left_out))
    return lines


def default_work_dir() -> Path:
    """Where the check's tree is kept (in the lab's cache)."""
    return paths.builds_dir() / "each-patch"


def check_packages(arm64: bool) -> None:
    """What the check needs besides the lab's build packages, installed:
    git and checkpolicy (hostdeps' "check"), the arm64 cross compiler when
    asked for (MissingHostPackage naming them)."""
    hostdeps.check([*hostdeps.PACKAGES["build"], *hostdeps.PACKAGES["check"],
                    *((ARM64_CONFIG.package,) if arm64 else ())])
