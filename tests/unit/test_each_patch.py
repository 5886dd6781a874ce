"""The series check (pyxen.lab.host.eachpatch) without Xen: what a patch
has built, the steps in order, how a patch that does not apply or build is
named, what the builds' dependency files say was compiled, and git confined
to the check's tree (real git, make faked)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from pyxen.lab.contract.errors import BuildError, LabError, MissingHostPackage, PatchError
from pyxen.lab.host import cli, eachpatch
from pyxen.lab.host.sources import XenSource


def _patch(tmp_path: Path, name: str, *files: str) -> Path:
    body = "".join(f"diff --git a/{f} b/{f}\n--- a/{f}\n+++ b/{f}\n@@ -1 +1 @@\n-a\n+b\n"
                   for f in files)
    path = tmp_path / name
    path.write_text(f"From 0 Mon Sep 17 00:00:00 2001\nFrom: A U Thor <a@example.org>\n"
                    f"Subject: [PATCH] {name}\n\n---\n{body}")
    return path


def test_the_files_a_patch_touches_are_read_from_its_diff_headers(tmp_path: Path) -> None:
    p = _patch(tmp_path, "0001.patch", "xen/common/domain.c", "CHANGELOG.md")
    assert eachpatch.touched_files(p) == ["xen/common/domain.c", "CHANGELOG.md"]
    rename = tmp_path / "0002.patch"
    rename.write_text("diff --git a/tools/old.c b/tools/new.c\nsimilarity index 100%\n")
    assert eachpatch.touched_files(rename) == ["tools/old.c", "tools/new.c"]


def test_a_patch_that_cannot_be_read_is_an_error_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "0003-empty.patch"
    empty.write_text("Subject: nothing\n")
    with pytest.raises(LabError, match="0003-empty.patch changes no file"):
        eachpatch.touched_files(empty)
    bad = tmp_path / "0004-bad.patch"
    bad.write_text("diff --git xen/a.c\n")
    with pytest.raises(LabError, match="0004-bad.patch: cannot read the diff header"):
        eachpatch.touched_files(bad)
    with pytest.raises(LabError, match="cannot read patch .*0005-gone.patch"):
        eachpatch.touched_files(tmp_path / "0005-gone.patch")


@pytest.mark.parametrize(("files", "built"), [
    (["xen/common/page_alloc.c"], True),
    (["tools/libs/light/libxl_create.c"], True),
    (["xen/common/libelf/libelf-loader.c"], True),     # compiled by the tools too
    (["Config.mk"], True),
    (["config/Tools.mk.in"], True),
    (["docs/misc/xen-command-line.pandoc", "CHANGELOG.md"], False),
    (["SUPPORT.md", "MAINTAINERS"], False),
    (["docs/man/xl.conf.5.pod.in", "tools/xl/xl_vmcontrol.c"], True),
])
def test_every_patch_but_documentation_is_built(files: list[str], built: bool) -> None:
    assert eachpatch.needs_build(files) is built


@pytest.mark.parametrize(("files", "hypervisors"), [
    (["xen/common/page_alloc.c", "CHANGELOG.md"], True),
    (["Config.mk"], True),
    (["tools/xl/xl.c", "CHANGELOG.md"], False),
    (["tools/flask/policy/modules/dom0.te"], True),       # Xen may embed the policy
    (["docs/misc/a.pandoc"], False),
])
def test_only_the_toolstack_changed_leaves_the_hypervisors_alone(
        files: list[str], hypervisors: bool) -> None:
    assert eachpatch.needs_hypervisors(files) is hypervisors


@pytest.mark.parametrize(("files", "expected"), [
    (["tools/xl/xl.c"], (False, False)),
    (["config/Tools.mk.in"], (True, False)),
    (["tools/configure"], (True, False)),
    (["tools/configure.ac", "tools/configure"], (True, True)),
    (["m4/python_devel.m4"], (True, True)),
])
def test_a_change_to_what_configure_reads_runs_it_again(
        files: list[str], expected: tuple[bool, bool]) -> None:
    assert eachpatch.needs_configure(files) == expected


class FakeRunner:
    """Records each step; makes the .config a defconfig would; fails the
    step named ``fail`` on its ``nth`` run; ``drop`` is a Kconfig setting
    olddefconfig takes back."""

    def __init__(self, fail: str | None = None, nth: int = 1, drop: str | None = None,
                 real_git: bool = False) -> None:
        self.steps: list[tuple[str, list[str], Mapping[str, str] | None]] = []
        self.fail, self.nth, self.seen, self.drop = fail, nth, 0, drop
        self.real_git = real_git

    def __call__(self, name: str, argv: list[str], cwd: Path, logfile: Path,
                 env: Mapping[str, str] | None) -> None:
        self.steps.append((name, argv, env))
        if name == self.fail:
            self.seen += 1
            if self.seen == self.nth:
                raise BuildError(name, "error: it broke", str(logfile))
        out = next((Path(a[2:]) for a in argv if a.startswith("O=")), None)
        if name.startswith("xen defconfig") and out is not None:
            (out / ".config").write_text("CONFIG_X86=y\n")
        if name.startswith("xen olddefconfig") and out is not None and self.drop:
            dotconfig = out / ".config"
            dotconfig.write_text("".join(ln + "\n" for ln in dotconfig.read_text().splitlines()
                                         if not ln.startswith(f"CONFIG_{self.drop}=")))
        if self.real_git and argv[0] == "git":
            proc = subprocess.run(argv, cwd=cwd, env=dict(os.environ, **(env or {})),
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise BuildError(name, proc.stdout + proc.stderr, str(logfile))


def _source(tmp_path: Path) -> XenSource:
    tree = tmp_path / "pristine"
    for f in ("xen/common/domain.c", "docs/misc/a.pandoc", "tools/xl/xl.c", "tools/xl/xl_cmd.c",
              "tools/flask/policy/x.te", "tools/tests/x.c"):
        (tree / f).parent.mkdir(parents=True, exist_ok=True)
        (tree / f).write_text("a\n")
    return XenSource(tree=tree, version="4.22.0", sha256="0" * 64, origin="xen.tar.xz",
                     verified=True)


def _series(tmp_path: Path) -> list[tuple[str, list[Path]]]:
    return [("xen", [_patch(tmp_path, "x1.patch", "xen/common/domain.c"),
                     _patch(tmp_path, "x2.patch", "docs/misc/a.pandoc")]),
            ("tools", [_patch(tmp_path, "t1.patch", "tools/xl/xl.c",
                              "tools/flask/policy/x.te", "tools/tests/x.c"),
                       _patch(tmp_path, "t2.patch", "tools/xl/xl_cmd.c")])]


EVERYTHING = ["hypervisor build (x86_64)", "hypervisor build (x86_64-full)",
              "toolstack headers", "toolstack libraries", "toolstack programs",
              "flask policy"]


def test_each_patch_is_applied_with_git_am_and_everything_built_after_it(
        tmp_path: Path) -> None:
    run = FakeRunner()
    work = tmp_path / "work"
    results = eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path), work, run)
    names = [n for n, _, _ in run.steps]
    assert names[:4] == ["git init", "git add", "git commit", "configure"]
    # Each configuration in its own output directory, set and settled.
    assert names[4:7] == ["xen defconfig (x86_64)", "xen defconfig (x86_64-full)",
                          "xen olddefconfig (x86_64-full)"]
    full = (work / "xen-x86_64-full" / ".config").read_text()
    assert "CONFIG_XSM_FLASK=y" in full and "CONFIG_LATE_HWDOM=y" in full
    assert (work / "xen-x86_64" / ".config").read_text() == "CONFIG_X86=y\n"
    after = names[7:]
    assert after == [*EVERYTHING, "git am", *EVERYTHING, "git am", "git am", *EVERYTHING,
                     "git am", *EVERYTHING[2:]]     # t2: the toolstack only
    assert all(env and env["GIT_COMMITTER_NAME"] and env["GIT_CONFIG_NOSYSTEM"] == "1"
               for n, _, env in run.steps if n.startswith("git "))
    ams = [argv for n, argv, _ in run.steps if n == "git am"]
    assert all("--no-3way" in a for a in ams)
    assert [Path(a[-1]).name for a in ams] == ["x1.patch", "x2.patch", "t1.patch", "t2.patch"]
    assert [(r.series, r.patch, r.built) for r in results] == [
        ("xen", "x1.patch", True), ("xen", "x2.patch", False), ("tools", "t1.patch", True),
        ("tools", "t2.patch", True)]
    # No dependency file here: every changed code file is left out, nothing else.
    assert results[0].left_out == ["xen/common/domain.c"]
    assert results[2].left_out == ["tools/xl/xl.c", "tools/tests/x.c"]
    assert (work / "src" / "xen" / "common" / "domain.c").exists()
    lines = eachpatch.report_lines(results)
    assert "4 patches applied with git am" in lines[4] and "2 xen, 2 tools" in lines[4]
    assert lines[-2] == ("changed by tools t1.patch but compiled by no build: "
                         "tools/xl/xl.c, tools/tests/x.c")


def test_arm64_adds_a_cross_compiled_configuration(tmp_path: Path) -> None:
    run = FakeRunner()
    eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path)[:1], tmp_path / "w",
                               run, arm64=True)
    arm = [argv for n, argv, _ in run.steps if n == "hypervisor build (arm64-full)"]
    assert len(arm) == 2    # the whole tree, then after x1
    assert "XEN_TARGET_ARCH=arm64" in arm[0] and "CROSS_COMPILE=aarch64-linux-gnu-" in arm[0]


def test_a_setting_kconfig_does_not_take_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="x86_64-full: Kconfig did not take LATE_HWDOM"):
        eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path), tmp_path / "w",
                                   FakeRunner(drop="LATE_HWDOM"))


def test_a_patch_that_does_not_apply_is_named(tmp_path: Path) -> None:
    run = FakeRunner(fail="git am", nth=2)
    with pytest.raises(PatchError, match="(?s)xen x2.patch.*git am failed.*it broke"):
        eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path),
                                   tmp_path / "work", run)


def test_a_patch_that_does_not_build_is_named(tmp_path: Path) -> None:
    # The second is the first after a patch (x1).
    run = FakeRunner(fail="toolstack programs", nth=2)
    with pytest.raises(BuildError, match="toolstack programs after xen x1.patch"):
        eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path),
                                   tmp_path / "work", run)
    assert (tmp_path / "work" / "src").is_dir()     # kept to look at


def test_a_tree_that_does_not_build_before_any_patch_blames_none(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as caught:
        eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path), tmp_path / "w",
                                   FakeRunner(fail="flask policy"))
    assert "after" not in caught.value.step and caught.value.step == "flask policy"


def test_an_unreadable_patch_stops_the_check_before_any_work(tmp_path: Path) -> None:
    series = _series(tmp_path)
    series[1][1][0].write_text("not a patch\n")
    run = FakeRunner()
    with pytest.raises(LabError, match="t1.patch"):
        eachpatch.check_each_patch(_source(tmp_path), series, tmp_path / "work", run)
    assert run.steps == [] and not (tmp_path / "work").exists()


def test_a_work_directory_holding_other_files_is_refused_not_emptied(
        tmp_path: Path) -> None:
    work = tmp_path / "mine"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    with pytest.raises(LabError, match="did not make"):
        eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path), work, FakeRunner())
    assert (work / "notes.txt").read_text() == "keep me"
    link = tmp_path / "link"
    link.symlink_to(work)
    with pytest.raises(LabError, match="not a directory"):
        eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path), link, FakeRunner())
    # One an earlier check made is emptied and reused.
    again = tmp_path / "again"
    eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path), again, FakeRunner())
    (again / "leftover").write_text("x")
    eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path), again, FakeRunner())
    assert not (again / "leftover").exists()


def test_what_was_compiled_is_read_from_the_dependency_files(tmp_path: Path) -> None:
    work = tmp_path / "work"
    tree = work / "src"
    for f in ("xen/common/domain.c", "xen/include/xen/sched.h", "xen/include/public/xen.h",
              "xen/arch/arm/setup.c", "tools/libs/light/libxl.c", "tools/libs/light/x.h"):
        (tree / f).parent.mkdir(parents=True, exist_ok=True)
        (tree / f).write_text("")
    (tree / "tools/include").mkdir(parents=True)
    (tree / "tools/include/xen").symlink_to(tree / "xen/include/public")
    out = work / "xen-x86_64" / "common"
    out.mkdir(parents=True)
    (out / ".domain.o.cmd").write_text(
        "cmd_common/domain.o := gcc -c -o common/domain.o common/domain.c\n"
        "source_common/domain.o := $(srctree)/common/domain.c\n"
        "deps_common/domain.o := \\\n"
        "    $(wildcard include/config/arm.h) \\\n"
        "  include/xen/sched.h \\\n"
        "  include/generated/autoconf.h \\\n")
    (tree / "tools/libs/light/.libxl.o.d").write_text(
        f"libxl.o: libxl.c x.h \\\n {tree}/tools/libs/light/../../../tools/include/xen/xen.h\n")
    compiled = eachpatch.compiled_files(work, tree)
    assert compiled == {"xen/common/domain.c", "xen/include/xen/sched.h",
                        "tools/libs/light/libxl.c", "tools/libs/light/x.h",
                        "xen/include/public/xen.h"}
    assert eachpatch.left_out(["xen/arch/arm/setup.c", "xen/common/domain.c",
                               "xen/Kconfig", "tools/libs/light/x.h"], compiled) == [
        "xen/arch/arm/setup.c"]


def test_the_record_names_the_source_the_configurations_and_each_patch(
        tmp_path: Path) -> None:
    results = eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path),
                                         tmp_path / "work", FakeRunner())
    out = tmp_path / "r" / "each.json"
    eachpatch.write_report(results, _source(tmp_path), out, arm64=False)
    record = json.loads(out.read_text())
    assert record["xen_version"] == "4.22.0"
    assert record["commit"] and record["commit"] != "unknown"
    assert [c["name"] for c in record["hypervisor_configs"]] == ["x86_64", "x86_64-full"]
    assert [p["patch"] for p in record["patches"]] == ["x1.patch", "x2.patch", "t1.patch",
                                                       "t2.patch"]
    assert [p["built"] for p in record["patches"]] == [True, False, True, True]


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_is_confined_to_the_checks_tree(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Real git, make faked: a file the tarball's .gitignore names is in the
    base commit, an outer repository's GIT_DIR and the user's configuration
    (a hook path, three-way am) change nothing."""
    source = _source(tmp_path)
    (source.tree / "tools/tests/.gitignore").write_text("x.c\n")
    outer = tmp_path / "outer"
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[am]\n\tthreeWay = true\n[core]\n\thooksPath = /nonexistent\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_DIR", str(outer / ".git"))
    work = tmp_path / "work"
    results = eachpatch.check_each_patch(source, _series(tmp_path), work,
                                         FakeRunner(real_git=True))
    assert [r.patch for r in results] == ["x1.patch", "x2.patch", "t1.patch", "t2.patch"]
    monkeypatch.delenv("GIT_DIR")
    log = subprocess.run(["git", "-C", str(work / "src"), "log", "--format=%an|%s"],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    assert log[:5] == ["A U Thor|t2.patch", "A U Thor|t1.patch", "A U Thor|x2.patch",
                       "A U Thor|x1.patch", "pyxen lab|base"]
    assert (work / "src/tools/tests/x.c").read_text() == "b\n"
    outer_log = subprocess.run(["git", "-C", str(outer), "log"], capture_output=True)
    assert outer_log.returncode != 0        # still no commit there


def test_missing_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []

    def check(packages: list[str]) -> None:
        asked.append(packages)
        raise MissingHostPackage([p for p in packages if p in ("checkpolicy",
                                                               "gcc-aarch64-linux-gnu")])
    monkeypatch.setattr("pyxen.lab.host.hostdeps.check", check)
    with pytest.raises(MissingHostPackage, match="checkpolicy"):
        eachpatch.check_packages(arm64=False)
    assert "git" in asked[0] and "gcc-aarch64-linux-gnu" not in asked[0]
    with pytest.raises(MissingHostPackage, match="gcc-aarch64-linux-gnu"):
        eachpatch.check_packages(arm64=True)


def test_the_command_checks_packages_first_and_takes_both_series_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []
    series_dir = tmp_path / "series"
    for part in ("xen", "tools"):
        (series_dir / part).mkdir(parents=True)
        _patch(series_dir / part, f"{part}1.patch", f"{part}/a.c")
        (series_dir / part / "series").write_text(f"{part}1.patch\n")
    monkeypatch.setattr(eachpatch, "check_packages", lambda arm64: calls.append("packages"))
    monkeypatch.setattr(cli, "_source", lambda args: _source(tmp_path))

    def check(source: XenSource, series: list[tuple[str, tuple[Path, ...]]], work: Path,
              arm64: bool = False) -> list[eachpatch.PatchBuild]:
        calls.append("check")
        assert [(s, [p.name for p in ps]) for s, ps in series] == [
            ("xen", ["xen1.patch"]), ("tools", ["tools1.patch"])]
        assert work == tmp_path / "w" and arm64
        return [eachpatch.PatchBuild(s, ps[0].name, True, 1.0) for s, ps in series]
    monkeypatch.setattr(eachpatch, "check_each_patch", check)
    out = tmp_path / "out.json"
    assert cli.main(["check-series", "--series", str(series_dir), "--work",
                     str(tmp_path / "w"), "--arm64", "--out", str(out)]) == 0
    assert calls == ["packages", "check"]
    assert "2 patches applied" in capsys.readouterr().out
    assert [p["patch"] for p in json.loads(out.read_text())["patches"]] == [
        "xen1.patch", "tools1.patch"]
