"""Dom0Result.json_file: what a dom0 command hands back, read or refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host.vm import Dom0Result


def result(tmp_path: Path, rc: int, content: str | None) -> Dom0Result:
    if content is not None:
        (tmp_path / "result.json").write_text(content)
    return Dom0Result(["cmd"], rc, "", "the driver's stderr", tmp_path, 1.0)


def test_an_object_is_read(tmp_path: Path) -> None:
    assert result(tmp_path, 0, '{"a": 1}').json_file("result.json", "x") == {"a": 1}


def test_a_failed_command_is_an_error_naming_it_with_its_stderr(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"(?s)the storm failed in dom0 \(2\).*driver's stderr"):
        result(tmp_path, 2, '{"a": 1}').json_file("result.json", "the storm")


def test_an_exit_code_the_caller_accepts_still_returns_the_file(tmp_path: Path) -> None:
    res = result(tmp_path, 1, '{"errors": ["x"]}')
    assert res.json_file("result.json", "x", ok_codes=(0, 1)) == {"errors": ["x"]}


def test_a_missing_file_is_an_error_even_on_success(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="the storm failed"):
        result(tmp_path, 0, None).json_file("result.json", "the storm")


def test_json_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="holds list, not an object"):
        result(tmp_path, 0, "[1, 2]").json_file("result.json", "the storm")
