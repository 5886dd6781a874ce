"""Building Xen (hypervisor and toolstack) from an upstream source, with
patches, into cached staging directories keyed by every input."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyxen.lab.contract.errors import BuildError, LabError
from pyxen.lab.host import hostdeps, paths
from pyxen.lab.host.buildkey import build_key
from pyxen.lab.host.nativebuild import build_native, build_scrubd, build_xs_domain_preload
from pyxen.lab.host.patchset import apply_series
from pyxen.lab.host.paths import locked as locked  # eachpatch takes it from here
from pyxen.lab.host.progress import step
from pyxen.lab.host.sources import XenSource
from pyxen.lab.host.vm_options import check_qemu_path

log = logging.getLogger(__name__)

#: configure flags of the toolstack: no docs, stubdoms, firmware or OCaml
#: (none of which the lab's PV guests use, and each would need its own
#: sources or compilers); the system QEMU for device models; no pygrub (nor
#: its libfsimage) and no xentop/xenstat: the lab boots its guests' kernels
#: directly and reads domain state through libxl.
TOOLS_CONFIGURE_FLAGS: tuple[str, ...] = (
    "--prefix=/usr",
    "PYTHON=/usr/bin/python3",
    "--disable-docs",
    "--disable-stubdom",
    "--disable-qemu-traditional",
    "--with-system-qemu=/usr/bin/qemu-system-i386",
    "--disable-ocamltools",
    "--disable-seabios",
    "--disable-ovmf",
    "--disable-ipxe",
    "--disable-rombios",
    "--disable-pvshim",
    "--disable-pygrub",
    "--disable-monitors",
)

#: make variables of the hypervisor's build: no xen.efi (the lab boots
#: ``xen`` by multiboot; linking the PE image three times over and checking
#: it is about a fifth of a hypervisor build: 77 s against 95 s for
#: defconfig at -j2 on a 2-core host).  Only the image's prerequisite goes:
#: XEN_BUILD_EFI, and so the code in ``xen``, stays as Xen's checks set it.
XEN_MAKE_VARIABLES: tuple[str, ...] = ("efi-y=",)

#: The toolstack directories (tools/<dir>) the lab builds and installs,
#: after tools/libs (which every one of them links): the xenstore clients,
#: xenstored, misc (xenperf, xenlockprof), examples (/etc/xen's xl.conf),
#: hotplug (/etc/xen/scripts), console (xenconsoled), xl, helpers
#: (xen-init-dom0).  Left out, as nothing in the lab runs them: tests (Xen's
#: unit tests and the x86 emulator's harness, about half of a whole
#: toolstack's compile time), fuzz, firmware (hvmloader), xentrace,
#: debugger, python (Xen's own bindings: pyxen has its own), flask, xenmon,
#: vchan, xenpmd, 9pfsd, xenpaging, xcutils -- measured, a quarter of the
#: rest (18.7 s of 70 s at -j2 on a 2-core host).
TOOLS_LIBRARIES = "libs"
TOOLS_PROGRAM_DIRS: tuple[str, ...] = ("xs-clients", "xenstored", "misc", "examples",
                                       "hotplug", "console", "xl", "helpers")

#: The directories tools/Makefile's "install" makes before it installs its
#: subdirectories (which rely on them: without the pkg-config directory each
#: library's .pc file would overwrite a file of that name), in its words.
TOOLS_INSTALL_DIRS_RULE = "\n".join((
    "pyxen-install-dirs:",
    "\t$(INSTALL_DIR) -m 700 $(DESTDIR)$(XEN_DUMP_DIR)",
    "\t$(INSTALL_DIR) $(DESTDIR)$(XEN_LOG_DIR)",
    "\t$(INSTALL_DIR) $(DESTDIR)$(XEN_LIB_DIR)",
    "\t$(INSTALL_DIR) $(DESTDIR)$(PKG_INSTALLDIR)",
))

#: What decides a toolstack build besides the sources (its cache key).
TOOLS_RECIPE = {"configure": list(TOOLS_CONFIGURE_FLAGS),
                "directories": [TOOLS_LIBRARIES, *TOOLS_PROGRAM_DIRS],
                "install_dirs": TOOLS_INSTALL_DIRS_RULE}

#: Toolstack programs the lab runs in dom0, found in the staged install.
TOOLSTACK_PROGRAMS = ("xl", "xenstored", "xenconsoled", "xen-init-dom0",
                      "xenstore-ls", "xenstore-read", "xenstore-write")

_MANIFEST = "manifest.json"

#: What a hypervisor build keeps (its name in the cache entry: the file of
#: the built xen/ directory): the multiboot image, its .config, its symbols.
HYPERVISOR_OUTPUTS: Mapping[str, str] = {"xen": "xen", "xen.config": ".config",
                                         "xen-syms": "xen-syms"}

#: Kconfig of a profiling hypervisor: lock profiling (read with xenlockprof)
#: and software perf counters (xenperf; they count every hypercall entry,
#: continuations included).  EXPERT exposes them without DEBUG.
PROFILE_KCONFIG = {"EXPERT": "y", "DEBUG_LOCK_PROFILE": "y", "PERF_COUNTERS": "y"}

#: Instrumentation applied after the series to every profiling build alike
#: (files in pyxen/lab/data/profile, in this order): perf counters of domctls
#: turned away by a busy domctl lock, which lock profiling cannot count, and
#: of pages scrubbed in the background (idle CPUs, scrub workers), which
#: tells whether a phase's heap_lock contention came from scrubbing.
PROFILE_PATCHES = ("domctl-retry-counter.patch", "background-scrub-counter.patch")


@dataclass(frozen=True)
class Variant:
    """What to build: a name, the Xen source, the hypervisor and toolstack
    series (each in apply order) and hypervisor options."""

    name: str
    source: XenSource
    xen_patches: tuple[Path, ...] = ()
    tools_patches: tuple[Path, ...] = ()
    debug: bool = False
    profile: bool = False   # lock profiling and perf counters (xenlockprof, xenperf)
    kconfig: tuple[tuple[str, str], ...] = field(default=())

    @property
    def patches(self) -> tuple[Path, ...]:
        """Every patch, in apply order (the hypervisor's first)."""
        return self.xen_patches + self.tools_patches

    @property
    def instrumentation(self) -> tuple[Path, ...]:
        """The lab's own patches for this build, applied after the hypervisor
        series (profiling builds only)."""
        if not self.profile:
            return ()
        return tuple(paths.package_data(f"profile/{name}") for name in PROFILE_PATCHES)

    def hypervisor_kconfig(self) -> dict[str, str]:
        cfg = dict(self.kconfig)
        if self.debug:
            cfg["DEBUG"] = "y"
        if self.profile:
            cfg.update(PROFILE_KCONFIG)
        return cfg


@dataclass(frozen=True)
class StagedBuild:
    """A built variant: the hypervisor image and the staged toolstack."""

    variant: Variant
    hypervisor_key: str
    tools_key: str
    xen: Path               # the multiboot (ELF32) hypervisor image
    tools_root: Path        # DESTDIR of the toolstack's install
    programs: Mapping[str, str]   # program name -> absolute path inside tools_root
    library_dirs: tuple[str, ...]  # directories holding the staged libxen*.so
    native: Path            # pyxen._xen compiled against the staged headers
    #: The lab's xs-domain-preload.so (LD_PRELOADed by the stub-domain tests):
    #: a library, so not among ``programs`` (whose directories go on PATH).
    xs_domain_preload: Path


def jobs() -> int:
    return max(1, os.cpu_count() or 1)


def run_logged(step_name: str, argv: list[str], cwd: Path, logfile: Path,
               env: Mapping[str, str] | None = None) -> None:
    with logfile.open("a") as fh:
        fh.write(f"\n$ {' '.join(argv)}\n")
        fh.flush()
        # Its own process group, killed whole if the lab stops (Ctrl-C,
        # SIGTERM) mid-step: make's compilers would otherwise go on writing
        # into the build directory that the next run clears and reuses.
        proc = subprocess.Popen(argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                env=dict(os.environ, **(env or {})),
                                start_new_session=True)
        try:
            proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if proc.returncode != 0:
        lines = logfile.read_text(errors="replace").splitlines()
        raise BuildError(step_name, "\n".join(lines[-30:]), str(logfile))


def _prepare_tree(pristine: Path, work: Path, patches: tuple[Path, ...]) -> Path:
    src = work / "src"
    shutil.copytree(pristine, src, symlinks=True)
    apply_series(src, list(patches))
    return src


def _set_kconfig(dotconfig: Path, settings: Mapping[str, str]) -> None:
    lines = [ln for ln in dotconfig.read_text().splitlines()
             if not any(ln.startswith(f"CONFIG_{k}=") or ln == f"# CONFIG_{k} is not set"
                        for k in settings)]
    lines += [f"CONFIG_{k}={v}" for k, v in settings.items()]
    dotconfig.write_text("\n".join(lines) + "\n")


def _damage(out: Path, key: str, outputs: Collection[str]) -> str | None:
    """What is wrong with the cache entry ``out`` of ``key`` (None: nothing):
    its manifest must be a JSON object of that key, and each of ``outputs``
    (paths under ``out``) must be there."""
    try:
        manifest = json.loads((out / _MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {_MANIFEST}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{_MANIFEST} unreadable: {exc}"
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return f"{_MANIFEST} is not the manifest of key {key}"
    missing = [name for name in outputs if not (out / name).exists()]
    if missing:
        return f"{', '.join(missing)} missing"
    return None


def _cached_build(component: str, key: str, variant: Variant, patches: tuple[Path, ...],
                  eta: str, manifest: Mapping[str, object],
                  recipe: Callable[[Path, Path, Path], None],
                  outputs: Collection[str]) -> Path:
    """builds/<component>-<key>, built once by ``recipe(src, work, logfile)``,
    which leaves ``outputs`` (paths under ``work``).

    The build runs in a temporary directory on a fresh copy of the pristine
    tree with ``patches`` applied, and is renamed into place only
    when it is complete (a failed build leaves its log in the temporary
    directory and never a half-built cache entry).  An entry found damaged
    (manifest unreadable, an output missing) is built again.
    """
    out = paths.builds_dir() / f"{component}-{key}"
    if _damage(out, key, outputs) is None:
        return out
    with locked(component):
        damage = _damage(out, key, outputs)
        if damage is None:
            return out
        if out.exists():
            log.warning("build cache entry %s is damaged (%s): building it again",
                        out, damage)
        work = paths.builds_dir() / f".tmp-{component}-{key}"
        if work.exists():   # a stopped build's leftovers: the lock says nobody owns them
            shutil.rmtree(work)
        work.mkdir(parents=True)
        source = variant.source
        with step(f"building {component} of Xen {source.version} for '{variant.name}' "
                  f"(key {key}, {eta})"):
            src = _prepare_tree(source.tree, work, patches)
            recipe(src, work, work / "build.log")
            shutil.rmtree(src)
            (work / _MANIFEST).write_text(json.dumps(
                {"key": key, **source.describe(),
                 "patches": [p.name for p in patches], **manifest}, indent=2))
            shutil.rmtree(out, ignore_errors=True)
            work.rename(out)
    return out


def configure_hypervisor(src: Path, logfile: Path, kconfig: Mapping[str, str],
                         make_args: Sequence[str] = (), dotconfig: Path | None = None,
                         run: Callable[..., None] = run_logged) -> None:
    """The hypervisor's defconfig with ``kconfig`` set on top of it
    (olddefconfig settles what depends on them).  ``make_args`` go to every
    make (an output directory, another architecture); ``dotconfig`` is the
    .config they make (default: the source tree's)."""
    run("xen defconfig", ["make", "-C", "xen", *make_args, "defconfig"], src, logfile)
    if kconfig:
        _set_kconfig(dotconfig or src / "xen" / ".config", kconfig)
        run("xen olddefconfig", ["make", "-C", "xen", *make_args, "olddefconfig"],
            src, logfile)


def hypervisor_make(make_args: Sequence[str] = ()) -> list[str]:
    """The make command that builds the hypervisor as the lab does."""
    return ["make", "-C", "xen", *make_args, *XEN_MAKE_VARIABLES, f"-j{jobs()}"]


def toolstack_subdir_goals(action: str) -> list[tuple[str, list[str]]]:
    """The lab's toolstack directories as tools/Makefile goals of ``action``
    ('all', 'install'), in order: (step's name, goals).  Libraries first:
    every program links them."""
    return [("toolstack libraries", [f"subdir-{action}-{TOOLS_LIBRARIES}"]),
            ("toolstack programs", [f"subdir-{action}-{d}" for d in TOOLS_PROGRAM_DIRS])]


def build_hypervisor(variant: Variant) -> tuple[str, Path]:
    """Build (or reuse) the hypervisor of a variant; returns (key, xen image).
    Only the hypervisor series is applied: a toolstack patch does not change
    the hypervisor, so stock and patched share it while that series is empty."""
    kconfig = variant.hypervisor_kconfig()
    patches = variant.xen_patches + variant.instrumentation
    recipe_key = {"kconfig": kconfig, "make": list(XEN_MAKE_VARIABLES)}
    key = build_key("xen", variant.source.sha256, patches, recipe_key)

    def recipe(src: Path, work: Path, logfile: Path) -> None:
        configure_hypervisor(src, logfile, kconfig)
        run_logged("hypervisor build", hypervisor_make(), src, logfile)
        for kept, built in HYPERVISOR_OUTPUTS.items():
            shutil.copy2(src / "xen" / built, work / kept)

    out = _cached_build("xen", key, variant, patches, "~2 min", recipe_key, recipe,
                        HYPERVISOR_OUTPUTS)
    return key, out / "xen"


def find_programs(root: Path) -> dict[str, str]:
    """Absolute paths of the toolstack programs in a staged install (executables
    under usr/, never etc/'s completion scripts of the same name)."""
    found: dict[str, str] = {}
    for dirpath, _dirs, files in sorted(os.walk(root / "usr")):
        for name in files:
            path = Path(dirpath) / name
            if name in TOOLSTACK_PROGRAMS and name not in found and os.access(path, os.X_OK):
                found[name] = str(path)
    missing = [p for p in TOOLSTACK_PROGRAMS if p not in found]
    if missing:
        raise LabError(f"staged toolstack in {root} lacks {', '.join(missing)}")
    return found


def _find_library_dirs(root: Path) -> list[str]:
    dirs = {str(p.parent) for p in root.rglob("libxenctrl.so*")}
    dirs |= {str(p.parent) for p in root.rglob("libxenlight.so*")}
    return sorted(dirs)


def build_tools(variant: Variant) -> tuple[str, Path]:
    """Build (or reuse) the toolstack of a variant; returns (key, staging root).
    Both series are applied: the tools compile against the hypervisor's
    public headers."""
    key = build_key("tools", variant.source.sha256, variant.patches, TOOLS_RECIPE)

    def recipe(src: Path, work: Path, logfile: Path) -> None:
        run_logged("autogen", ["./autogen.sh"], src, logfile)
        run_logged("configure", ["./configure", *TOOLS_CONFIGURE_FLAGS], src, logfile)
        # Xen's "install-tools" less the directories the lab does not use:
        # the public headers, the libraries, then the programs' directories
        # side by side (each one's install target builds it first).
        destdir = f"DESTDIR={work / 'stage'}"
        run_logged("toolstack headers", ["make", "install-tools-public-headers", destdir],
                   src, logfile)
        run_logged("toolstack directories",
                   ["make", "-C", "tools", f"--eval={TOOLS_INSTALL_DIRS_RULE}",
                    "pyxen-install-dirs", destdir], src, logfile)
        for name, goals in toolstack_subdir_goals("install"):
            run_logged(name, ["make", "-C", "tools", *goals, destdir, f"-j{jobs()}"],
                       src, logfile)
        if not any((work / "stage").rglob("pkgconfig/xenlight.pc")):
            raise BuildError("toolstack install", "no pkgconfig/xenlight.pc in the staged "
                             "install", str(logfile))

    out = _cached_build("tools", key, variant, variant.patches, "~2-3 min",
                        TOOLS_RECIPE, recipe, ("stage",))
    return key, out / "stage"


def build(variant: Variant) -> StagedBuild:
    """Build (or fetch from the cache) everything a variant needs to boot."""
    # Before minutes of building what QEMU could then not be given.
    check_qemu_path(paths.cache_root(), "the lab's cache")
    hostdeps.check(list(hostdeps.PACKAGES["build"]))
    hv_key, xen = build_hypervisor(variant)
    tools_key, stage = build_tools(variant)
    programs = dict(find_programs(stage))
    scrubd = build_scrubd(stage, tools_key)
    if scrubd is not None:  # on dom0's PATH with the staged programs
        programs["scrubd"] = str(scrubd)
    return StagedBuild(
        variant=variant,
        hypervisor_key=hv_key,
        tools_key=tools_key,
        xen=xen,
        tools_root=stage,
        programs=programs,
        library_dirs=tuple(_find_library_dirs(stage)),
        native=build_native(stage, tools_key),
        xs_domain_preload=build_xs_domain_preload(stage, tools_key),
    )
