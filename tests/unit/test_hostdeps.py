from __future__ import annotations

import pytest

from pyxen.lab.contract.errors import MissingHostPackage
from pyxen.lab.host import hostdeps

def test_missing_package_error_is_one_line_with_the_command(monkeypatch):
    monkeypatch.setattr(hostdeps, "missing_packages", lambda pkgs=None: ["qemu-system-x86"])
    with pytest.raises(MissingHostPackage) as info:
        hostdeps.check()
    msg = str(info.value)
    assert "\n" not in msg
    assert "qemu-system-x86" in msg and "apt-get install qemu-system-x86" in msg


def test_dpkg_reports_a_nonexistent_package_missing():
    assert hostdeps.missing_packages(["pyxen-no-such-package"]) == ["pyxen-no-such-package"]


def test_package_list_has_no_duplicates():
    pkgs = hostdeps.all_packages()
    assert len(pkgs) == len(set(pkgs))
