"""Where a run's figures came from: the project commit it records."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pyxen.lab.host import provenance

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def commit(repo: Path, text: str) -> str:
    (repo / "f").write_text(text)
    git(repo, "add", "f")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", text)
    return git(repo, "rev-parse", "HEAD")


def test_a_run_records_the_commit_it_started_from(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    git(tmp_path, "init", "-q")
    first = commit(tmp_path, "one")
    monkeypatch.chdir(tmp_path)
    provenance.run_commit.cache_clear()
    assert provenance.run_commit() == first
    # The checkout moves on during the run: the run still records its start.
    second = commit(tmp_path, "two")
    assert provenance.run_commit() == first
    assert provenance.project_commit() == second
    (tmp_path / "f").write_text("edited")
    assert provenance.project_commit() == second + "+dirty"
    provenance.run_commit.cache_clear()


def test_outside_a_checkout_the_commit_is_unknown(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # git looks no higher than tmp_path, wherever the temporary files are
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert provenance.project_commit(tmp_path) == "unknown"
