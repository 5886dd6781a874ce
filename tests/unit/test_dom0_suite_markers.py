"""The in-dom0 suites fail on any skipped test (tests/nested/conftest.py,
check_dom0_suite): a test that skips itself on stock must carry a marker
that leaves it out of stock's suite (``breaks_stock`` or ``series_only``),
or stock's scheduled run fails on the skip."""

from __future__ import annotations

import ast
from pathlib import Path

XEN_TESTS = Path(__file__).resolve().parents[1] / "xen"
LEAVES_STOCK = {"breaks_stock", "series_only"}


def _marks(decorators: list[ast.expr]) -> set[str]:
    """The names of pytest.mark.<name> among ``decorators`` (called or not)."""
    names = set()
    for d in decorators:
        node = d.func if isinstance(d, ast.Call) else d
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "mark"):
            names.add(node.attr)
    return names


def _module_marks(tree: ast.Module) -> set[str]:
    for node in tree.body:
        if (isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)):
            value = node.value
            items = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
            return _marks(items)
    return set()


def _skips_on_stock(fn: ast.FunctionDef) -> bool:
    """Whether ``fn`` has ``if helpers.on_stock(): ... pytest.skip(...)``."""
    for node in ast.walk(fn):
        if not isinstance(node, ast.If):
            continue
        test = node.test
        if not (isinstance(test, ast.Call) and isinstance(test.func, ast.Attribute)
                and test.func.attr == "on_stock"):
            continue
        for inner in node.body:
            for call in ast.walk(inner):
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "skip"):
                    return True
    return False


def stock_skippers_without_marker(source: str) -> list[str]:
    tree = ast.parse(source)
    module = _module_marks(tree)
    return [fn.name for fn in tree.body
            if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_")
            and _skips_on_stock(fn) and not (LEAVES_STOCK & (module | _marks(fn.decorator_list)))]


def test_every_test_that_skips_on_stock_is_left_out_of_stocks_suite() -> None:
    files = sorted(XEN_TESTS.glob("test_*.py"))
    assert files
    bad = {f.name: names for f in files
           if (names := stock_skippers_without_marker(f.read_text()))}
    assert bad == {}


def test_the_check_finds_an_unmarked_stock_skip_and_accepts_a_marked_one() -> None:
    body = '''
def test_x(helpers):
    if helpers.on_stock():
        pytest.skip("no")
'''
    assert stock_skippers_without_marker(body) == ["test_x"]
    assert stock_skippers_without_marker("@pytest.mark.breaks_stock" + body) == []
    assert stock_skippers_without_marker("import pytest\npytestmark = [pytest.mark.xen, "
                                         "pytest.mark.series_only]" + body) == []
    assert stock_skippers_without_marker(body.replace("pytest.skip", "print")) == []
