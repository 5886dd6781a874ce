from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pyxen.lab.contract.errors import PatchError
from pyxen.lab.host.patchset import apply_series, failed_hunks, read_series


def _diff(tree: Path, rel: str, new: str) -> str:
    """A -p1 unified diff turning tree/rel into ``new``."""
    old = tree / rel
    tmp = tree.parent / "new.tmp"
    tmp.write_text(new)
    proc = subprocess.run(["diff", "-u", "--label", f"a/{rel}", "--label", f"b/{rel}",
                           str(old), str(tmp)], capture_output=True, text=True, check=False)
    tmp.unlink()
    return proc.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "xen"
    (t / "xen/common").mkdir(parents=True)
    (t / "xen/common/domctl.c").write_text("".join(f"line {i}\n" for i in range(40)))
    return t


def test_series_reads_in_order_skipping_comments(tmp_path):
    (tmp_path / "0001-a.patch").write_text("")
    (tmp_path / "0002-b.patch").write_text("")
    (tmp_path / "series").write_text("# comment\n0002-b.patch\n\n0001-a.patch  # why\n")
    assert [p.name for p in read_series(tmp_path / "series")] == \
        ["0002-b.patch", "0001-a.patch"]


def test_series_naming_a_missing_patch_is_an_error(tmp_path):
    (tmp_path / "series").write_text("0001-gone.patch\n")
    with pytest.raises(PatchError, match="0001-gone.patch.*series:1"):
        read_series(tmp_path / "series")


def test_project_series_parse():
    """Every series kept in patches/<branch>/{xen,tools}/ names patches that exist."""
    found = sorted((Path(__file__).resolve().parents[2] / "patches").glob("*/*/series"))
    assert found, "no series under patches/"
    for series in found:
        read_series(series)


def test_the_readme_counts_the_series_patches() -> None:
    """The README's table gives the maintained series' sizes: they must be
    the series files' (a patch added without the table following it once
    left "toolstack: 42 patches" beside 44)."""
    root = Path(__file__).resolve().parents[2]
    counts = {part: len(read_series(root / "patches/4.22" / part / "series"))
              for part in ("tools", "xen")}
    row = next(line for line in (root / "README.md").read_text().splitlines()
               if line.startswith("| `patches/4.22/` |"))
    assert f"toolstack: {counts['tools']} patches; hypervisor: {counts['xen']}" in row, row


def test_patches_apply_in_order(tree, tmp_path):
    src = (tree / "xen/common/domctl.c").read_text()
    step1 = src.replace("line 5\n", "line five\n")
    p1 = tmp_path / "0001-five.patch"
    p1.write_text(_diff(tree, "xen/common/domctl.c", step1))
    (tree / "xen/common/domctl.c").write_text(step1)
    step2 = step1.replace("line five\n", "line FIVE\n")
    p2 = tmp_path / "0002-upper.patch"   # only applies after 0001
    p2.write_text(_diff(tree, "xen/common/domctl.c", step2))
    (tree / "xen/common/domctl.c").write_text(src)

    apply_series(tree, [p1, p2])
    assert (tree / "xen/common/domctl.c").read_text() == step2


def test_failing_patch_is_named_with_its_hunk(tree, tmp_path):
    src = (tree / "xen/common/domctl.c").read_text()
    good = tmp_path / "0001-good.patch"
    good.write_text(_diff(tree, "xen/common/domctl.c", src.replace("line 2\n", "two\n")))
    bad = tmp_path / "0002-bad.patch"
    bad.write_text(_diff(tree, "xen/common/domctl.c", src.replace("line 30\n", "thirty\n"))
                   .replace(" line 29\n", " line 29 changed upstream\n")
                   .replace(" line 28\n", " line 28 changed upstream\n")
                   .replace(" line 27\n", " line 27 changed upstream\n"))
    with pytest.raises(PatchError) as info:
        apply_series(tree, [good, bad])
    assert info.value.patch == "0002-bad.patch"
    assert "xen/common/domctl.c: hunk #1 FAILED" in str(info.value)
    # The good patch applied; the bad one left nothing behind (no .rej/.orig either).
    text = (tree / "xen/common/domctl.c").read_text()
    assert "two\n" in text and "thirty" not in text
    assert not list(tree.rglob("*.rej")) and not list(tree.rglob("*.orig"))


def test_failed_hunks_parses_gnu_patch_output():
    out = ("checking file xen/common/domctl.c\nHunk #1 succeeded at 3.\n"
           "Hunk #2 FAILED at 120.\nchecking file tools/xl/xl_vmcontrol.c\n"
           "Hunk #1 FAILED at 9.\n2 out of 3 hunks FAILED\n")
    assert failed_hunks(out) == ["xen/common/domctl.c: hunk #2 FAILED at line 120",
                                 "tools/xl/xl_vmcontrol.c: hunk #1 FAILED at line 9"]
