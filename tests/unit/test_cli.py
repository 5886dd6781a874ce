from __future__ import annotations

import argparse
import json

import pytest

from pyxen.lab.host import cli
from pyxen.lab.host.cli import build_parser, main


@pytest.mark.parametrize("argv,msg", [
    (["bench", "--guests", "0"], "must be >= 1"),
    (["bench", "--guests", "-3"], "must be >= 1"),
    (["bench", "--guests", "two"], "not an integer"),
    (["bench", "--variants", "stock,fast"], "unknown variant 'fast'"),
    (["bench", "--variants", "stock,stock"], "listed twice"),
    (["bench", "--variants", ""], "no variant"),
    (["bench", "--variants", "stock+cach"], "unknown variant 'stock+cach'"),
    (["bench", "--variants", "+cache"], "unknown variant '+cache'"),
    (["bench", "--variants", "stock+cache,stock+cache"], "listed twice"),
    (["bench", "--concurrency", "1,2,0"], "must be >= 1"),
    (["bench", "--concurrency", "2,2"], "listed twice"),
    (["run", "--variant", "nope", "--", "true"], "invalid choice"),
    (["scrubbench", "--reps", "0"], "must be >= 1"),
    (["scrubbench", "--size-reps", "0"], "must be >= 1"),
    (["scrubbench", "--fill", "rack"], "invalid choice"),
    (["scrubbench", "--spinner-weight", "0"], "must be >= 1"),
    (["scrubbench", "--spinner-weight", "65536"], "weight must be 1..65535, got 65536"),
    (["build", "--xen-sha256", "abc"], "64 hex digits"),
    (["bench", "--xen-sha256", "g" * 64], "64 hex digits"),
])
def test_bad_arguments_are_rejected_by_the_parser(argv, msg, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["bench", "--guests", "2", "--concurrency", "4"], "exceeds --guests"),
    (["bench", "--numa-nodes", "2", "--cpus", "3"], "divide evenly"),
    (["bench", "--dom0-vcpus", "4", "--cpus", "2"], "--dom0-vcpus must be 1..--cpus (2), got 4"),
    (["bench", "--dom0-mem", "8000", "--memory", "3072"],
     "--dom0-mem must be 256..2944 (--memory - 128), got 8000"),
    (["bench", "--xen-cmdline", "", "--memory", "100"], "--memory must be >= 512, got 100"),
    (["bench", "--autoballoon", "--dom0-mem", "512"],
     "--autoballoon boots without dom0_mem: drop --dom0-mem"),
    (["run", "--variant", "stock"], "needs a command"),
    (["scrubbench", "--cpus", "3"], "divide evenly over 2 NUMA nodes"),
    (["scrubbench", "--memory", "4097"], "divide evenly over 2 NUMA nodes"),
    (["bench", "--icount", "11"], "--icount must be 0..10"),
    (["scrubbench", "--icount", "-1"], "--icount must be 0..10"),
    (["scrubbench", "--variants", "stock,patched+cache"], "runs no Xenstore cache"),
    (["scrubbench", "--variants", "stock,patched+libcache"], "drop patched+libcache"),
    (["bench", "--variants", "stock,patched+libcache", "--driver", "xl"],
     "patched+libcache: xl does not ask libxl for libxenstore's cache"),
    (["autoscale", "--variants", "patched,patched+libcache", "--driver", "xl"],
     "use --driver pyxen"),
    (["bench", "--variants", "stock,patched@old"], "no --series-as for patched@old"),
    (["scrubbench", "--variants", "stock", "--series-as", "old=/s"],
     "--series-as old: no variant patched@NAME builds it"),
    (["bench", "--series-as", "old"], "give NAME=DIR"),
])
def test_inconsistent_arguments_fail_before_any_work(argv, msg, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert msg in capsys.readouterr().err


def test_defaults_run_stock_and_patched():
    args = build_parser().parse_args(["bench"])
    assert [v.name for v in args.variants] == ["stock", "patched"]
    assert all(args.guests >= c >= 1 for c in args.concurrency)


def test_cache_variants_share_the_build_and_add_the_proxy():
    from pyxen.lab.host import variants
    args = build_parser().parse_args(["bench", "--variants", "stock,stock+cache,patched+cache"])
    assert [v.name for v in args.variants] == ["stock", "stock+cache", "patched+cache"]
    assert [v.xs_cache for v in args.variants] == [False, True, True]
    assert variants.RunVariant.parse("patched+cache") == variants.RunVariant("patched", True)
    assert variants.RunVariant.parse("stock") == variants.RunVariant("stock")


def test_icount_reaches_the_vm_options():
    args = build_parser().parse_args(["bench", "--icount", "2"])
    assert cli._vm_options(args).icount_shift == 2
    assert cli._vm_options(build_parser().parse_args(["bench"])).icount_shift is None


def test_concurrency_takes_a_list():
    assert build_parser().parse_args(["bench", "--concurrency", "1,2,4,8"]).concurrency == \
        (1, 2, 4, 8)


def test_projection_follows_amdahl():
    from pyxen.lab.host.bench import project
    runs = [{"variant": "v", "concurrency": 1, "makespan_s": 100.0},
            {"variant": "v", "concurrency": 4, "makespan_s": 60.0}]
    proj = project(runs, cpus=2)["v"]
    # S = 100/60 on p = 2 CPUs: e = (0.6 - 0.5) / 0.5 = 0.2
    assert abs(proj["serial_fraction"] - 0.2) < 1e-9
    assert abs(proj["makespan_16_cores_s"] - 100 * (0.2 + 0.8 / 16)) < 1e-9
    assert project(runs[:1], cpus=2) == {}  # nothing to project from


def test_cpu_growth_compares_the_first_and_last_creates_per_process():
    from pyxen.lab.host.bench import cpu_growth
    each = [{"xenstored": 0.01 * (i + 1), "bench": 0.2, "wall": 1.0 + i} for i in range(12)]
    runs = [{"variant": "v", "guests": 12, "cpu_s_each": each},
            {"variant": "w", "guests": 3, "cpu_s_each": each[:3]},  # too few
            {"variant": "x", "guests": 12, "cpu_s_each": None}]
    g = cpu_growth(runs, k=5)
    assert list(g) == ["v guests=12"]
    row = g["v guests=12"]
    # creates 2..6 (index 1..5) against the last five (index 7..11); medians
    assert row["xenstored"]["first_s"] == pytest.approx(0.04)
    assert row["xenstored"]["last_s"] == pytest.approx(0.10)
    assert row["xenstored"]["ratio"] == pytest.approx(2.5)
    assert row["bench"]["ratio"] == pytest.approx(1.0)
    assert row["wall"]["last_s"] == pytest.approx(10.0)


def test_ctrl_c_stops_the_lab_even_when_started_with_sigint_ignored(monkeypatch, capsys):
    # A shell without job control starts background jobs with SIGINT
    # ignored; the lab must still stop (and take its VM down) on Ctrl-C.
    import os
    import signal
    import time

    from pyxen.lab.host import cli

    def dispatch(ap, args):  # stands in for a long lab command
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)
        return 0

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    monkeypatch.setattr(cli, "_dispatch", dispatch)
    try:
        t0 = time.monotonic()
        assert main(["deps"]) == 130
        assert time.monotonic() - t0 < 5
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    assert "interrupted" in capsys.readouterr().err


def test_plot_redraws_a_saved_run_with_the_retry_panel(tmp_path, capsys):
    def run(variant: str, c: int, entries: int, retried: int) -> dict:
        profile = {"hypercalls": {"domctl": entries},
                   "counters": {"domctl: retried, lock busy": retried},
                   "locks": {"global lock domctl_lock": {"acquisitions": entries - retried}}}
        return {"variant": variant, "driver": "pyxen", "guests": 2, "concurrency": c,
                "makespan_s": 1.0, "create_s": [0.5, 0.5], "running_before_create": [0, 1],
                "destroy_makespan_s": 0.4, "xs_requests_per_create": 170.0,
                "console_ok": 2, "lock_profile": profile, "destroy_lock_profile": profile}
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps({"runs": [run("stock", 1, 49, 0), run("stock", 4, 80, 31)],
                                 "notes": []}))
    assert cli.main(["plot", str(saved)]) == 0
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "15.50" in capsys.readouterr().out   # 31 / 2 retries per create at C=4


def test_plot_names_a_file_that_is_not_a_benchmark(tmp_path, capsys):
    bad = tmp_path / "other.json"
    bad.write_text('{"hello": 1}')
    assert cli.main(["plot", str(bad)]) == 2
    assert "holds no benchmark runs" in capsys.readouterr().err
    assert cli.main(["plot", str(tmp_path / "missing.json")]) == 2
    assert "cannot read benchmark results" in capsys.readouterr().err


def test_plot_refuses_an_out_it_would_not_write(tmp_path, capsys):
    # matplotlib would have written noext.png, or d/.png beside a directory,
    # while the command said it wrote the name given
    saved = tmp_path / "bench.json"
    saved.write_text('{"runs": [], "notes": []}')
    for out, message in [(tmp_path / "noext", "name a .png, .svg, .pdf file"),
                         (tmp_path / "plot.jpeg", "name a .png, .svg, .pdf file")]:
        with pytest.raises(SystemExit) as exit_:
            cli.main(["plot", str(saved), "--out", str(out)])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    (tmp_path / "d.png").mkdir()
    assert cli.main(["plot", str(saved), "--out", str(tmp_path / "d.png")]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "d.png"]


def test_every_subcommand_registers_its_function():
    import argparse
    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        assert parser.get_default("func") is getattr(cli, f"cmd_{name.replace('-', '_')}"), name


def test_the_deps_command_runs_before_the_lab_extra_is_installed() -> None:
    """``make install`` runs ``python3 -m pyxen.lab deps`` with the system
    Python of a fresh machine, before rich, matplotlib or pyxs exist: the
    whole parser (every subcommand's defaults) must build without them."""
    import subprocess
    import sys
    from pathlib import Path
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('rich', 'matplotlib', 'pyxs', 'hypothesis'):\n"
        "            raise ImportError(f'{name} is not installed (blocked by the test)')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from pyxen.lab.host import cli\n"
        "cli.build_parser()\n"
        "sys.exit(cli.main(['deps', '--help']))\n")
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=repo, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
                       timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]


def test_an_os_error_is_an_error_line_not_a_traceback(monkeypatch, capsys):
    def dispatch(ap, args):
        raise NotADirectoryError(20, "Not a directory", "/dev/null/x")
    monkeypatch.setattr(cli, "_dispatch", dispatch)
    assert main(["deps"]) == 2
    assert capsys.readouterr().err == "error: /dev/null/x: Not a directory\n"


def test_an_interrupt_says_what_it_interrupted(monkeypatch, capsys):
    from pyxen.lab.host import progress

    def dispatch(ap, args):
        with progress.step("building the hypervisor for 'stock'"):
            raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_dispatch", dispatch)
    monkeypatch.setattr(progress, "_INTERRUPTED", [])
    assert main(["deps"]) == 130
    assert "interrupted while building the hypervisor for 'stock'" in capsys.readouterr().err
    assert progress.current_step() is None


@pytest.mark.parametrize("value", ["nan", "-5", "0", "inf"])
def test_run_timeout_is_a_positive_finite_number(value, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--timeout", value, "--", "true"])
    assert "--timeout" in capsys.readouterr().err


def test_run_checks_bind_before_the_build(tmp_path, monkeypatch, capsys):
    def resolve(*args, **kwargs):
        raise AssertionError("built before --bind was checked")
    monkeypatch.setattr(cli.variants, "resolve", resolve)
    with pytest.raises(SystemExit) as info:
        main(["run", "--bind", str(tmp_path / "missing"), "--", "true"])
    assert info.value.code == 2
    assert "not a directory" in capsys.readouterr().err


def test_run_checks_files_before_the_build(tmp_path, monkeypatch, capsys):
    def resolve(*args, **kwargs):
        raise AssertionError("built before --files was checked")
    monkeypatch.setattr(cli.variants, "resolve", resolve)
    a_file = tmp_path / "f"
    a_file.write_text("")
    assert main(["run", "--files", str(a_file / "out"), "--", "true"]) == 2
    assert f"--files {a_file / 'out'}: cannot write results there" in capsys.readouterr().err


def test_check_series_checks_out_before_any_build(tmp_path, monkeypatch, capsys):
    from pyxen.lab.host import eachpatch

    def check_packages(*args, **kwargs):
        raise AssertionError("went on before --out was checked")
    monkeypatch.setattr(eachpatch, "check_packages", check_packages)
    assert main(["check-series", "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a directory" in capsys.readouterr().err
    a_file = tmp_path / "f"
    a_file.write_text("")
    assert main(["check-series", "--out", str(a_file / "report.json")]) == 2
    assert "cannot write results there" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["build", "--series", "/s"],
    ["build", "--variant", "stock", "--series", "/s"],
    ["run", "--series", "/s", "--", "true"],
    ["bench", "--variants", "stock,stock+cache", "--series", "/s"],
    ["bench", "--variants", "stock,patched@new", "--series-as", "new=/n", "--series", "/s"],
])
def test_a_series_no_variant_builds_is_refused(argv, monkeypatch, capsys):
    def resolve(*args, **kwargs):
        raise AssertionError("built with --series ignored")
    monkeypatch.setattr(cli.variants, "resolve", resolve)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "--series /s: no variant here builds it" in capsys.readouterr().err


def test_plot_names_what_a_malformed_bench_json_lacks(tmp_path, capsys):
    path = tmp_path / "bench.json"
    for doc, message in (({"format": 2, "runs": [{"variant": "stock"}]},
                          "runs[0] has no 'driver'"),
                         ({"runs": [1]}, "runs[0] is int, not a run record"),
                         ({"runs": [{"variant": "s", "driver": "xl", "guests": 1,
                                     "concurrency": "1"}]}, "runs[0] 'concurrency' is '1'")):
        path.write_text(json.dumps(doc))
        assert cli.main(["plot", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"error: {path}: {message}" in err, err


@pytest.mark.parametrize("field,value,message", [
    ("repeat", 1e400, "\"repeat\" must be a whole number >= 0, got inf"),
    ("repeat", None, "\"repeat\" must be a whole number >= 0, got None"),
    ("repeat", "abc", "\"repeat\" must be a whole number >= 0, got 'abc'"),
    ("create_s", ["a"], "'create_s' holds 'a', of the wrong type"),
    ("running_before_create", [-1], "'running_before_create' holds -1, of the wrong type"),
])
def test_plot_names_a_run_field_of_the_wrong_type(tmp_path, capsys, field, value, message):
    run = {"variant": "stock", "driver": "pyxen", "guests": 1, "concurrency": 1,
           "makespan_s": 1.0, "destroy_makespan_s": 0.4, "create_s": [0.5],
           "running_before_create": [0], "xs_requests_per_create": None, "console_ok": 1,
           field: value}
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps({"runs": [run], "notes": []}).replace("Infinity", "1e400"))
    assert cli.main(["plot", str(saved)]) == 2
    err = capsys.readouterr().err
    assert f"{saved}: runs[0] {message}" in err and "Traceback" not in err



@pytest.mark.parametrize("cmd", ["bench", "scrubbench", "autoscale"])
def test_a_request_field_error_names_the_option(cmd, capsys):
    # the dom0 request's check, not argparse's: once "ScrubRequest.guest_mib ..."
    with pytest.raises(SystemExit) as exit_:
        cli.main([cmd, "--variants", "stock", "--guest-memory", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "error: --guest-memory must be >= 4, got 1" in err
    assert "Request." not in err


def test_every_request_field_option_is_an_option_of_the_lab():
    sub = next(a for a in cli.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    options = {o for p in sub.choices.values() for a in p._actions for o in a.option_strings}
    assert set(cli.REQUEST_FIELD_OPTIONS.values()) <= options
