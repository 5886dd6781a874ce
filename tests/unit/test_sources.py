"""Choosing, verifying and unpacking the Xen source the lab builds (no Xen needed)."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import random
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host import paths, sources, variants
from pyxen.lab.host.buildkey import build_key

MAKEFILE = """\
# xen/Makefile of a release
export XEN_VERSION       = 4
export XEN_SUBVERSION    = 22
export XEN_EXTRAVERSION ?= .0$(XEN_VENDORVERSION)
"""


def _make_tree(root: Path, makefile: str = MAKEFILE) -> Path:
    (root / "xen").mkdir(parents=True)
    (root / "xen" / "Makefile").write_text(makefile)
    (root / "tools").mkdir()
    (root / "tools" / "configure").write_text("#!/bin/sh\n")
    (root / "tools" / "configure").chmod(0o755)
    return root


def _tarball(path: Path, tree: Path, top: str = "xen-4.22.0") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        tf.add(tree, arcname=top)
    return path


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(sources.SOURCE_ENV, raising=False)
    monkeypatch.delenv(sources.SHA256_ENV, raising=False)


def test_version_comes_from_the_trees_makefile(tmp_path: Path) -> None:
    assert sources.tree_version(_make_tree(tmp_path / "t")) == "4.22.0"
    rc = MAKEFILE.replace("?= .0$(XEN_VENDORVERSION)", "?= -rc$(XEN_VENDORVERSION)")
    assert sources.tree_version(_make_tree(tmp_path / "rc", rc)) == "4.22-rc"
    with pytest.raises(LabError, match="not a Xen source tree"):
        sources.tree_version(tmp_path)


def test_a_tarball_unpacks_once_with_its_version_and_sum(tmp_path: Path) -> None:
    tb = _tarball(tmp_path / "xen-4.22.0.tar.gz", _make_tree(tmp_path / "t"))
    src = sources.xen_source(tb)
    assert src.version == "4.22.0" and src.branch == "4.22"
    assert src.sha256 == hashlib.sha256(tb.read_bytes()).hexdigest()
    assert not src.verified                          # no sum given, name not known
    assert (src.tree / "xen" / "Makefile").read_text() == MAKEFILE
    assert src.tree.is_relative_to(paths.sources_dir())
    assert sources.xen_source(tb) == src             # reused, not unpacked again


def test_a_given_sum_is_checked_and_a_wrong_one_names_both(tmp_path: Path) -> None:
    tb = _tarball(tmp_path / "xen-4.22.0.tar.gz", _make_tree(tmp_path / "t"))
    good = hashlib.sha256(tb.read_bytes()).hexdigest()
    assert sources.xen_source(tb, good.upper()).verified
    wrong = "0" * 64
    with pytest.raises(LabError) as info:
        sources.xen_source(tb, wrong)
    assert wrong in str(info.value) and good in str(info.value)
    with pytest.raises(ValueError, match="64 hex digits"):
        sources.xen_source(tb, "abc")


def test_a_known_release_file_is_checked_without_a_given_sum(tmp_path: Path) -> None:
    # Same name as a known release export, other contents: refused.
    tb = _tarball(tmp_path / "xen-4.22.0.tar.xz.tmp", _make_tree(tmp_path / "t"))
    renamed = tb.rename(tmp_path / "xen-4.22.0.tar.xz")
    with pytest.raises(LabError, match=sources.KNOWN_TARBALLS["xen-4.22.0.tar.xz"]):
        sources.xen_source(renamed)


def test_the_environment_names_the_source_and_sum(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tb = _tarball(tmp_path / "xen-4.22.0.tar.gz", _make_tree(tmp_path / "t"))
    monkeypatch.setenv(sources.SOURCE_ENV, str(tb))
    monkeypatch.setenv(sources.SHA256_ENV, "1" * 64)
    with pytest.raises(LabError, match="1" * 64):
        sources.xen_source()
    monkeypatch.delenv(sources.SHA256_ENV)
    assert sources.xen_source().origin == str(tb.resolve())


def test_without_a_source_one_line_says_where_to_get_it() -> None:
    with pytest.raises(LabError) as info:
        sources.xen_source()
    msg = str(info.value)
    assert "\n" not in msg
    assert f"xen-{sources.DEFAULT_VERSION}.tar.gz" in msg
    assert "--xen-source" in msg and sources.SOURCE_ENV in msg


def test_the_default_release_is_found_in_the_cache(tmp_path: Path) -> None:
    paths.sources_dir().mkdir(parents=True)
    tb = _tarball(paths.sources_dir() / f"xen-{sources.DEFAULT_VERSION}.tar.gz",
                  _make_tree(tmp_path / "t"))
    assert sources.xen_source().origin == str(tb.resolve())


def test_a_tree_is_copied_without_git_and_keyed_by_its_contents(tmp_path: Path) -> None:
    tree = _make_tree(tmp_path / "t")
    (tree / ".git").mkdir()
    (tree / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    first = sources.xen_source(tree)
    assert not (first.tree / ".git").exists()
    assert (first.tree / "tools" / "configure").stat().st_mode & 0o100
    (tree / ".git" / "HEAD").write_text("ref: refs/heads/other\n")
    assert sources.xen_source(tree).sha256 == first.sha256   # .git is not the source
    (tree / "xen" / "Makefile").write_text(MAKEFILE + "# changed\n")
    assert sources.xen_source(tree).sha256 != first.sha256
    (tree / "tools" / "configure").chmod(0o644)
    assert sources.tree_digest(tree) != sources.tree_digest(first.tree)


def test_tarballs_with_several_tops_or_unsafe_members_are_refused(tmp_path: Path) -> None:
    tree = _make_tree(tmp_path / "t")
    two = tmp_path / "two.tar.gz"
    with tarfile.open(two, "w:gz") as tf:
        tf.add(tree, arcname="a")
        tf.add(tree, arcname="b")
    with pytest.raises(LabError, match="one top directory"):
        sources.xen_source(two)
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tf:
        data = b"x"
        info = tarfile.TarInfo("xen-4.22.0/../../escape")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(LabError, match="cannot unpack"):
        sources.xen_source(evil)
    assert not (tmp_path / "escape").exists()
    with pytest.raises(LabError, match="neither a directory nor a tarball"):
        sources.xen_source(tree / "xen" / "Makefile")
    with pytest.raises(LabError, match="does not exist"):
        sources.xen_source(tmp_path / "nowhere.tar.gz")


def _leftovers() -> list[str]:
    """What is in the sources folder besides its lock file."""
    return sorted(p.name for p in paths.sources_dir().iterdir() if p.name != ".unpack.lock")


@pytest.mark.parametrize("mode", ["gz", "xz", "bz2"])
def test_a_truncated_tarball_is_refused_by_name_and_leaves_nothing(tmp_path: Path,
                                                                   mode: str) -> None:
    tree = _make_tree(tmp_path / "t")
    # Past bzip2's first 900 kB block, so the stream ends inside the second.
    (tree / "big").write_bytes(random.Random(0).randbytes(1_200_000))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        tf.add(tree, arcname="xen-4.22.0")
    compressors: dict[str, Callable[[bytes], bytes]] = {
        "gz": gzip.compress, "xz": lzma.compress, "bz2": bz2.compress}
    whole = compressors[mode](raw.getvalue())
    cut = tmp_path / f"xen-cut.tar.{mode}"
    cut.write_bytes(whole[:len(whole) * 3 // 4])
    with pytest.raises(LabError, match=re.escape(f"cannot unpack {cut}")):
        sources.xen_source(cut)
    assert _leftovers() == []


def test_a_tarball_of_one_file_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("not a tree\n")
    one = tmp_path / "one.tar.gz"
    with tarfile.open(one, "w:gz") as tf:
        tf.add(tmp_path / "a", arcname="a")
    with pytest.raises(LabError, match=re.escape(f"{one}: its one top entry a is not a directory")):
        sources.xen_source(one)
    assert _leftovers() == []


def test_a_tarball_made_from_its_top_directorys_parent_with_dot_unpacks(
        tmp_path: Path) -> None:
    # tar -C parent -czf x.tgz .  ->  ./, ./xen-4.22.0/, ./xen-4.22.0/xen/Makefile, ...
    parent = tmp_path / "parent"
    _make_tree(parent / "xen-4.22.0")
    dot = tmp_path / "dot.tar.gz"
    with tarfile.open(dot, "w:gz") as tf:
        tf.add(parent, arcname=".")
    src = sources.xen_source(dot)
    assert src.version == "4.22.0"
    assert (src.tree / "xen" / "Makefile").read_text() == MAKEFILE
    assert _leftovers() == [src.tree.name]


_UNPACK = """
import sys
from pathlib import Path
from pyxen.lab.host import sources
src = sources.xen_source(Path(sys.argv[1]))
print(sum(1 for p in src.tree.rglob("*") if p.is_file()))
"""


def test_lab_runs_unpacking_one_tarball_at_once_all_get_the_whole_tree(
        tmp_path: Path) -> None:
    tree = _make_tree(tmp_path / "t")
    for d in range(30):
        (tree / "many" / str(d)).mkdir(parents=True)
        for f in range(50):
            (tree / "many" / str(d) / f"{f}.c").write_text(f"int x{d}_{f};\n")
    tb = _tarball(tmp_path / "xen-4.22.0.tar.gz", tree)
    files = 1 + sum(1 for p in tree.rglob("*") if p.is_file())   # and the stamp
    runs = [subprocess.Popen([sys.executable, "-P", "-c", _UNPACK, str(tb)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert int(out) == files
    assert len(_leftovers()) == 1


# The series of a branch: hypervisor and toolstack apart.

def _series(root: Path, part: str, names: list[str]) -> None:
    d = root / part
    d.mkdir(parents=True)
    for n in names:
        (d / n).write_text(f"patch {n}\n")
    (d / "series").write_text("# comment\n" + "\n".join(names) + "\n")


def test_patched_takes_the_series_of_the_sources_branch(tmp_path: Path) -> None:
    tb = _tarball(tmp_path / "xen-4.22.0.tar.gz", _make_tree(tmp_path / "t"))
    src = sources.xen_source(tb)
    series = tmp_path / "patches" / "4.22"
    _series(series, "xen", ["0001-xen.patch"])
    _series(series, "tools", ["0001-libxl.patch", "0002-xl.patch"])
    v = variants.resolve("patched", series, source=src)
    assert [p.name for p in v.xen_patches] == ["0001-xen.patch"]
    assert [p.name for p in v.tools_patches] == ["0001-libxl.patch", "0002-xl.patch"]
    assert v.patches == v.xen_patches + v.tools_patches
    stock = variants.resolve("stock+cache", series, source=src)
    assert stock.patches == () and stock == variants.resolve("stock", source=src)


def test_a_named_series_is_built_beside_the_default_one(tmp_path: Path) -> None:
    tb = _tarball(tmp_path / "xen-4.22.0.tar.gz", _make_tree(tmp_path / "t"))
    src = sources.xen_source(tb)
    default, older = tmp_path / "patches" / "4.22", tmp_path / "older"
    _series(default, "xen", ["0001-a.patch", "0002-b.patch"])
    _series(older, "xen", ["0001-a.patch"])
    v = variants.resolve("patched@older+cache", default, source=src, named={"older": older})
    assert v.name == "patched@older"
    assert [p.parent.parent for p in v.xen_patches] == [older]
    assert [p.name for p in variants.resolve("patched", default, source=src).xen_patches] == \
        ["0001-a.patch", "0002-b.patch"]
    with pytest.raises(LabError, match=r"patched@newer: no series named 'newer' "
                                       r"\(give --series-as newer=DIR\)"):
        variants.resolve("patched@newer", default, source=src, named={"older": older})
    with pytest.raises(LabError, match=r"--series-as x=.*missing: not a directory"):
        variants.resolve("patched@x", source=src, named={"x": tmp_path / "missing"})


def test_a_branch_without_series_is_named_with_those_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tb = _tarball(tmp_path / "xen-4.20.4.tar.gz",
                  _make_tree(tmp_path / "t", MAKEFILE.replace("22", "20").replace(".0$", ".4$")))
    src = sources.xen_source(tb)
    patches = tmp_path / "checkout" / "patches"
    _series(patches / "4.22", "tools", ["0001-a.patch"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "patches_dir", lambda: patches)
    with pytest.raises(LabError, match=r"no patch series for Xen 4\.20: .*kept for: 4\.22"):
        variants.resolve("patched", source=src)
    assert variants.resolve("stock", source=src).patches == ()   # stock needs none
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LabError, match="holds no series"):
        variants.resolve("patched", empty, source=src)


def test_the_hypervisor_key_ignores_toolstack_patches(tmp_path: Path) -> None:
    from pyxen.lab.host import xenbuild
    src = sources.xen_source(_tarball(tmp_path / "x.tar.gz", _make_tree(tmp_path / "t")))
    series = tmp_path / "s"
    _series(series, "tools", ["0001-libxl.patch"])
    patched = variants.resolve("patched", series, source=src)
    stock = variants.resolve("stock", source=src)
    kconfig = {"kconfig": stock.hypervisor_kconfig()}
    assert build_key("xen", src.sha256, patched.xen_patches, kconfig) == \
        build_key("xen", src.sha256, stock.xen_patches, kconfig)
    assert build_key("tools", src.sha256, patched.patches, {}) != \
        build_key("tools", src.sha256, stock.patches, {})
    assert xenbuild.Variant("x", src).patches == ()


def test_profiling_builds_and_only_they_get_the_retry_counter(tmp_path: Path) -> None:
    from pyxen.lab.contract.xenprof import RETRY_COUNTER_PREFIX
    from pyxen.lab.host import xenbuild
    src = sources.xen_source(_tarball(tmp_path / "x.tar.gz", _make_tree(tmp_path / "t")))
    assert variants.resolve("stock", source=src).instrumentation == ()
    for name in ("stock", "patched"):
        series = tmp_path / name
        _series(series, "xen", ["0001-xen.patch"])
        v = variants.resolve(name, series, source=src, profile=True)
        assert [p.name for p in v.instrumentation] == list(xenbuild.PROFILE_PATCHES)
        # Applied after the series, to stock and patched alike; not a series patch.
        assert not set(v.instrumentation) & set(v.patches)
    patch = v.instrumentation[0].read_text()
    # The counter the patch adds is the one the profile parser sums.
    assert f'"{RETRY_COUNTER_PREFIX}, lock busy"' in patch
    assert "+++ b/xen/common/domctl.c" in patch and "perfc_incr(domctl_retry_lock_busy)" in patch


def _fake_kernel_tools(monkeypatch: pytest.MonkeyPatch, fail_extract: list[bool]) -> list[str]:
    """apt-cache, apt-get download and dpkg-deb as the kernel fetch runs them:
    the download writes a .deb into its cwd, the extraction a boot/ tree (or
    fails while ``fail_extract[0]``).  Returns the commands run."""
    ran: list[str] = []

    def run(argv: list[str], cwd: Path | None = None) -> str:
        ran.append(argv[0])
        if argv[0] == "apt-cache":
            return "linux-image-amd64\n  Depends: linux-image-6.1.0-99-amd64\n"
        if argv[0] == "apt-get":
            assert cwd is not None
            (cwd / "linux-image.deb").write_bytes(b"!<arch>\n")
            return ""
        if fail_extract[0]:
            raise LabError("dpkg-deb -x failed: out of space")
        root = Path(argv[-1])
        (root / "boot").mkdir(parents=True)
        (root / "boot" / "vmlinuz-6.1.0-99-amd64").write_bytes(b"kernel")
        return ""

    monkeypatch.setattr(sources, "_run", run)
    return ran


def test_a_failed_kernel_fetch_leaves_nothing_a_later_run_takes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    fail = [True]
    ran = _fake_kernel_tools(monkeypatch, fail)
    with pytest.raises(LabError, match="out of space"):
        sources.dom0_kernel()
    # Nothing under the kernel directory: no half-extracted package, no temporary.
    assert [p.name for p in paths.kernel_dir().iterdir() if not p.name.startswith(".")] == []
    fail[0] = False
    kernel = sources.dom0_kernel()
    assert kernel.release == "6.1.0-99-amd64" and kernel.vmlinuz.read_bytes() == b"kernel"
    assert [p.name for p in paths.kernel_dir().iterdir() if not p.name.startswith(".")] \
        == ["linux-image-6.1.0-99-amd64"]
    ran.clear()
    assert sources.dom0_kernel() == kernel and ran == ["apt-cache"]   # cached: no download
    # The directory has the umask's mode, as one made in place would (not mkdtemp's 0700).
    umask = os.umask(0o022)
    os.umask(umask)
    assert (paths.kernel_dir() / "linux-image-6.1.0-99-amd64").stat().st_mode & 0o777 \
        == 0o777 & ~umask
