from __future__ import annotations

import pytest

from pyxen.lab.cli import build_parser, main


@pytest.mark.parametrize("argv,msg", [
    (["bench", "--guests", "0"], "must be >= 1"),
    (["bench", "--guests", "-3"], "must be >= 1"),
    (["bench", "--guests", "two"], "not an integer"),
    (["bench", "--variants", "stock,fast"], "unknown variant 'fast'"),
    (["bench", "--variants", "stock,stock"], "listed twice"),
    (["bench", "--variants", ""], "no variant"),
    (["bench", "--concurrency", "1,2,0"], "must be >= 1"),
    (["bench", "--concurrency", "2,2"], "listed twice"),
    (["run", "--variant", "nope", "--", "true"], "invalid choice"),
])
def test_bad_arguments_are_rejected_by_the_parser(argv, msg, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["bench", "--guests", "2", "--concurrency", "4"], "exceeds --guests"),
    (["bench", "--numa-nodes", "2", "--cpus", "3"], "divide evenly"),
    (["bench", "--dom0-vcpus", "4", "--cpus", "2"], "dom0_vcpus"),
    (["bench", "--dom0-mem", "8000", "--memory", "3072"], "dom0_mem_mib"),
    (["bench", "--xen-cmdline", "", "--memory", "100"], "memory_mib"),
    (["run", "--variant", "stock"], "needs a command"),
])
def test_inconsistent_arguments_fail_before_any_work(argv, msg, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert msg in capsys.readouterr().err


def test_defaults_run_stock_and_patched():
    args = build_parser().parse_args(["bench"])
    assert args.variants == ["stock", "patched"]
    assert all(args.guests >= c >= 1 for c in args.concurrency)


def test_concurrency_takes_a_list():
    assert build_parser().parse_args(["bench", "--concurrency", "1,2,4,8"]).concurrency == \
        (1, 2, 4, 8)
