"""The lab's three parts import one way: host -> contract <- dom0.

pyxen.lab.host (CLI, builds, VM, benchmark orchestration) and pyxen.lab.dom0
(what runs in the booted Xen's dom0) both import pyxen.lab.contract, never
each other, and the contract imports neither.  The host side also works
without the compiled pyxen._xen, as pyxen/__init__.py promises.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyxen.lab

LAB = Path(pyxen.lab.__file__).resolve().parent

#: Package -> the lab packages its modules must not import.
FORBIDDEN = {
    "pyxen.lab.host": ("pyxen.lab.dom0",),
    "pyxen.lab.dom0": ("pyxen.lab.host",),
    "pyxen.lab.contract": ("pyxen.lab.host", "pyxen.lab.dom0"),
}


def _module_files(package: str) -> list[tuple[str, Path]]:
    """(module name, source file) of every module in a lab package."""
    folder = LAB / package.rsplit(".", 1)[1]
    return [(package if f.stem == "__init__" else f"{package}.{f.stem}", f)
            for f in sorted(folder.glob("*.py"))]


def imported_modules(package: str, source: str) -> set[str]:
    """Every module an import statement anywhere in ``source`` (a file of
    ``package``) may load: ``import a.b`` gives a.b; ``from a import b`` gives
    a and a.b (b may be a submodule); relative imports are resolved."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(package: str) -> list[str]:
    found = []
    for _, path in _module_files(package):
        for name in sorted(imported_modules(package, path.read_text())):
            for banned in FORBIDDEN[package]:
                if _under(name, banned):
                    found.append(f"{path.relative_to(LAB.parent.parent)}: imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_lab_package_imports_what_it_must_not(package: str) -> None:
    assert _module_files(package), f"no modules found for {package}"
    assert violations(package) == []


def test_the_contract_imports_only_the_standard_library_and_itself() -> None:
    # Both sides import it: it must load anywhere, Xen's libraries or not.
    for _, path in _module_files("pyxen.lab.contract"):
        for name in imported_modules("pyxen.lab.contract", path.read_text()):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or _under(name, "pyxen.lab.contract"), \
                f"{path.name} imports {name}"


def test_the_lab_package_itself_imports_only_the_contract() -> None:
    # pyxen/lab/__init__.py runs before any module of either side.
    names = imported_modules("pyxen.lab", (LAB / "__init__.py").read_text())
    lab = {n for n in names if _under(n, "pyxen")}
    assert lab and all(_under(n, "pyxen.lab.contract") for n in lab), lab


#: The tests that run in dom0 (tests/xen): the host side is not there to import.
DOM0_TESTS = Path(__file__).resolve().parents[1] / "xen"


def test_the_tests_that_run_in_dom0_import_nothing_of_the_host_side() -> None:
    files = sorted(DOM0_TESTS.glob("*.py"))
    assert any(f.name == "conftest.py" for f in files), DOM0_TESTS
    found = [f"{f.name}: imports {name}" for f in files
             for name in sorted(imported_modules("tests.xen", f.read_text()))
             if _under(name, "pyxen.lab.host")]
    assert found == []


def test_the_check_sees_a_forbidden_import() -> None:
    # The walk itself: a dom0 module importing the host, in each spelling.
    for text in ("from pyxen.lab.host import cli", "import pyxen.lab.host.vm",
                 "from pyxen.lab import host", "from ..host import paths",
                 "def f():\n    from pyxen.lab.host.cli import main\n"):
        names = imported_modules("pyxen.lab.dom0", text)
        assert any(_under(n, "pyxen.lab.host") for n in names), text


_IMPORT_HOST_WITHOUT_XEN = """
import contextlib, importlib, io, json, pkgutil, runpy, sys
sys.path.insert(0, {root!r})

class NoXen:
    def find_spec(self, name, path=None, target=None):
        if name == "pyxen._xen":
            raise ImportError("pyxen._xen made unimportable by the test")
        return None

sys.meta_path.insert(0, NoXen())
import pyxen.lab.contract
import pyxen.lab.host
names = sorted(m.name for package in (pyxen.lab.contract, pyxen.lab.host)
               for m in pkgutil.iter_modules(package.__path__, package.__name__ + "."))
for name in names:
    importlib.import_module(name)
sys.argv = ["pyxen.lab", "--help"]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        runpy.run_module("pyxen.lab", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        help_exit = exc.code
print(json.dumps({{"imported": names, "help_exit": help_exit,
                  "loaded": sorted(m for m in sys.modules if m.startswith("pyxen"))}}))
"""


def test_the_host_side_and_the_contract_import_without_the_compiled_module(tmp_path: Path) -> None:
    script = _IMPORT_HOST_WITHOUT_XEN.format(root=str(LAB.parent.parent))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, check=False, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    expected = {name for package in ("pyxen.lab.contract", "pyxen.lab.host")
                for name, _ in _module_files(package)} - {"pyxen.lab.contract", "pyxen.lab.host"}
    assert set(report["imported"]) == expected
    assert report["help_exit"] == 0          # python -m pyxen.lab --help
    loaded = report["loaded"]
    assert "pyxen._xen" not in loaded and "pyxen._native" not in loaded
    assert not [m for m in loaded if _under(m, "pyxen.lab.dom0")], loaded


#: `-m pyxen.lab...` in the lab's sources and init.sh: what the host starts.
_LAUNCHED = re.compile(r"""-m["']?,?\s*["']?(pyxen\.lab[\w.]*)""")


def test_every_module_the_lab_launches_exists() -> None:
    sources = [*LAB.rglob("*.py"), LAB / "data" / "init.sh"]
    launched = {m.rstrip(".") for f in sources for m in _LAUNCHED.findall(f.read_text())}
    assert {"pyxen.lab", "pyxen.lab.dom0.agent", "pyxen.lab.dom0.dom0bench",
            "pyxen.lab.dom0.scrub_dom0", "pyxen.lab.dom0.xslatency"} <= launched
    for module in sorted(launched):
        assert importlib.util.find_spec(module) is not None, module
