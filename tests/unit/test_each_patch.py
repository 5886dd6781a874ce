"""The series check (pyxen.lab.host.eachpatch) without Xen: which parts a
patch rebuilds, the steps it runs in order, and how a patch that does not
apply or does not build is named."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from pyxen.lab.contract.errors import BuildError, LabError, PatchError
from pyxen.lab.host import eachpatch
from pyxen.lab.host.eachpatch import FLASK_POLICY, HYPERVISOR, TOOLSTACK
from pyxen.lab.host.sources import XenSource


def _patch(tmp_path: Path, name: str, *files: str) -> Path:
    body = "".join(f"diff --git a/{f} b/{f}\n--- a/{f}\n+++ b/{f}\n@@ -1 +1 @@\n-a\n+b\n"
                   for f in files)
    path = tmp_path / name
    path.write_text(f"From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] {name}\n\n---\n{body}")
    return path


def test_the_files_a_patch_touches_are_read_from_its_diff_headers(tmp_path: Path) -> None:
    p = _patch(tmp_path, "0001.patch", "xen/common/domain.c", "CHANGELOG.md")
    assert eachpatch.touched_files(p) == ["xen/common/domain.c", "CHANGELOG.md"]
    rename = tmp_path / "0002.patch"
    rename.write_text("diff --git a/tools/old.c b/tools/new.c\nsimilarity index 100%\n")
    assert eachpatch.touched_files(rename) == ["tools/old.c", "tools/new.c"]


def test_a_patch_with_no_diff_is_an_error_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "0003-empty.patch"
    empty.write_text("Subject: nothing\n")
    with pytest.raises(PatchError, match="0003-empty.patch.*changes no file"):
        eachpatch.touched_files(empty)
    bad = tmp_path / "0004-bad.patch"
    bad.write_text("diff --git xen/a.c\n")
    with pytest.raises(PatchError, match="0004-bad.patch.*diff header"):
        eachpatch.touched_files(bad)


@pytest.mark.parametrize(("files", "parts"), [
    (["xen/common/page_alloc.c"], (HYPERVISOR,)),
    (["tools/libs/light/libxl_create.c"], (TOOLSTACK,)),
    (["xen/include/public/sysctl.h", "xen/common/sysctl.c"], (HYPERVISOR, TOOLSTACK)),
    (["tools/include/xenctrl.h", "xen/arch/x86/mm.c"], (HYPERVISOR, TOOLSTACK)),
    (["docs/misc/xen-command-line.pandoc", "CHANGELOG.md"], ()),
    (["tools/flask/policy/modules/dom0.te"], (TOOLSTACK, FLASK_POLICY)),
    (["xen/xsm/flask/policy/access_vectors"], (HYPERVISOR, FLASK_POLICY)),
])
def test_a_patch_rebuilds_the_parts_it_touched(files: list[str],
                                               parts: tuple[str, ...]) -> None:
    assert eachpatch.parts_to_build(files) == parts


def test_tools_no_build_compiles_are_reported_as_left_out() -> None:
    assert eachpatch._left_out(["tools/flask/policy/modules/dom0.te",
                                "tools/flask/utils/loadpolicy.c",
                                "tools/libs/ctrl/xc_misc.c", "tools/include/xenctrl.h",
                                "tools/xl/xl_vmcontrol.c", "xen/common/domain.c"]) == [
        "tools/flask/utils/loadpolicy.c"]


class FakeRunner:
    """Records each step; fails the step named ``fail`` on its ``nth`` run."""

    def __init__(self, fail: str | None = None, nth: int = 1) -> None:
        self.steps: list[tuple[str, list[str], Mapping[str, str] | None]] = []
        self.fail, self.nth, self.seen = fail, nth, 0

    def __call__(self, name: str, argv: list[str], cwd: Path, logfile: Path,
                 env: Mapping[str, str] | None) -> None:
        self.steps.append((name, argv, env))
        if name == self.fail:
            self.seen += 1
            if self.seen == self.nth:
                raise BuildError(name, "error: it broke", str(logfile))


def _source(tmp_path: Path) -> XenSource:
    tree = tmp_path / "pristine"
    (tree / "xen").mkdir(parents=True, exist_ok=True)
    (tree / "xen" / "Makefile").write_text("VERSION = 4\n")
    return XenSource(tree=tree, version="4.22.0", sha256="0" * 64, origin="xen.tar.xz",
                     verified=True)


def _series(tmp_path: Path) -> list[tuple[str, list[Path]]]:
    return [("xen", [_patch(tmp_path, "x1.patch", "xen/common/domain.c"),
                     _patch(tmp_path, "x2.patch", "docs/misc/a.pandoc")]),
            ("tools", [_patch(tmp_path, "t1.patch", "tools/xl/xl.c",
                              "tools/flask/policy/x.te", "tools/tests/x.c")])]


def test_each_patch_is_applied_with_git_am_and_what_it_touched_is_built(
        tmp_path: Path) -> None:
    run = FakeRunner()
    work = tmp_path / "work"
    results = eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path), work, run)
    names = [n for n, _, _ in run.steps]
    prepare = names.index("xen defconfig")
    assert names[:prepare] == ["git init", "git add", "git commit", "autogen", "configure"]
    after = names[prepare + 1:]
    # The whole tree once, then per patch: git am and its parts' builds.
    tools = ["toolstack headers", "toolstack libraries", "toolstack programs"]
    # The policy is built once whole because a patch changes it.
    assert after == ["hypervisor build", *tools, "flask policy",
                     "git am", "hypervisor build",
                     "git am",
                     "git am", *tools, "flask policy"]
    assert all(env and env["GIT_COMMITTER_NAME"] for n, _, env in run.steps
               if n.startswith("git "))
    ams = [argv[-1] for n, argv, _ in run.steps if n == "git am"]
    assert [Path(a).name for a in ams] == ["x1.patch", "x2.patch", "t1.patch"]
    assert [(r.series, r.patch, r.parts) for r in results] == [
        ("xen", "x1.patch", (HYPERVISOR,)), ("xen", "x2.patch", ()),
        ("tools", "t1.patch", (TOOLSTACK, FLASK_POLICY))]
    assert results[2].left_out == ["tools/tests/x.c"]
    assert (work / "src" / "xen" / "Makefile").exists()
    lines = eachpatch.report_lines(results)
    assert "3 patches applied with git am" in lines[-2]
    assert lines[-1].endswith("tools/tests/x.c")


def test_without_a_policy_change_the_policy_is_not_built(tmp_path: Path) -> None:
    run = FakeRunner()
    series = [("xen", [_patch(tmp_path, "x1.patch", "xen/common/domain.c")])]
    eachpatch.check_each_patch(_source(tmp_path), series, tmp_path / "work", run)
    assert "flask policy" not in [n for n, _, _ in run.steps]


def test_missing_programs_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    series = _series(tmp_path)
    monkeypatch.setattr("shutil.which",
                        lambda name: None if name == "checkpolicy" else f"/usr/bin/{name}")
    with pytest.raises(LabError, match="apt-get install checkpolicy"):
        eachpatch.check_programs(series)
    eachpatch.check_programs(series[:1])    # no policy change: not needed
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(LabError, match="git not found"):
        eachpatch.check_programs(series[:1])


def test_a_patch_that_does_not_apply_is_named(tmp_path: Path) -> None:
    run = FakeRunner(fail="git am", nth=2)
    with pytest.raises(PatchError, match="(?s)x2.patch.*git am failed.*it broke"):
        eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path),
                                   tmp_path / "work", run)


def test_a_patch_that_does_not_build_is_named(tmp_path: Path) -> None:
    # The second is the first after a patch (t1).
    run = FakeRunner(fail="toolstack programs", nth=2)
    with pytest.raises(BuildError, match="toolstack programs after tools t1.patch"):
        eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path),
                                   tmp_path / "work", run)


def test_an_unreadable_patch_stops_the_check_before_any_work(tmp_path: Path) -> None:
    series = _series(tmp_path)
    series[1][1][0].write_text("not a patch\n")
    run = FakeRunner()
    with pytest.raises(PatchError, match="t1.patch"):
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
    # One an earlier check made is emptied and reused.
    again = tmp_path / "again"
    eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path), again, FakeRunner())
    (again / "leftover").write_text("x")
    eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path), again, FakeRunner())
    assert not (again / "leftover").exists()


def test_the_record_names_the_source_and_each_patch(tmp_path: Path) -> None:
    results = eachpatch.check_each_patch(_source(tmp_path), _series(tmp_path),
                                         tmp_path / "work", FakeRunner())
    out = tmp_path / "r" / "each.json"
    eachpatch.write_report(results, _source(tmp_path), out)
    record = json.loads(out.read_text())
    assert record["xen_version"] == "4.22.0"
    assert record["commit"]
    assert [p["patch"] for p in record["patches"]] == ["x1.patch", "x2.patch", "t1.patch"]
    assert record["patches"][0]["parts"] == [HYPERVISOR]
