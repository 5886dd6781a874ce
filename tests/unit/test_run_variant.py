"""A benchmarked variant: a build and whether dom0 runs the Xenstore proxy."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pyxen.lab.contract.errors import LabError
from pyxen.lab.host import bench, cli, variants, xenbuild
from pyxen.lab.host.variants import RunVariant
from pyxen.lab.host.vm_options import VMOptions


@pytest.mark.parametrize("name,build,cached,lib", [
    ("stock", "stock", False, False), ("patched", "patched", False, False),
    ("stock+cache", "stock", True, False), ("patched+cache", "patched", True, False),
    ("patched+libcache", "patched", False, True),
    ("patched+libcache+cache", "patched", True, True),
    ("patched@v1", "patched@v1", False, False), ("patched@pre-0019.b+cache", "patched@pre-0019.b",
                                                 True, False),
])
def test_a_name_parses_once_and_gives_the_same_name_back(name, build, cached, lib):
    v = RunVariant.parse(name)
    assert (v.build, v.xs_cache, v.lib_cache) == (build, cached, lib)
    assert v.name == name
    assert v.base == build.split("@")[0]
    assert v.series_tag == (build.split("@")[1] if "@" in build else None)


@pytest.mark.parametrize("bad,msg", [
    ("fast", "unknown variant 'fast'"), ("patched+fast", "unknown variant"),
    ("patched+cache+cache", "unknown variant"),
    ("stock+libcache", "stock's libxenstore has no cache"),
    ("stock@v1", "only patched builds a series"), ("patched@", "series name ''"),
    ("patched@-x", "starting with a letter or digit"), ("patched@a/b", "series name 'a/b'"),
    ("patched@" + "x" * 33, "1-32 letters"),
])
def test_bad_names_say_what_is_known(bad, msg):
    with pytest.raises(ValueError, match=msg):
        RunVariant.parse(bad)


def test_the_variant_list_parses_to_run_variants_in_order():
    assert variants.parse_variant_list(" patched+cache, stock ") == [
        RunVariant("patched", True), RunVariant("stock")]
    for bad, msg in (("stock,fast", "unknown variant 'fast'"), ("", "no variant"),
                     ("stock+cache,stock+cache", "listed twice"), (" , ", "no variant"),
                     ("stock,,patched", "an empty variant name in 'stock,,patched'"),
                     ("stock,", "an empty variant name")):
        with pytest.raises(ValueError, match=msg):
            variants.parse_variant_list(bad)


def test_named_series_must_match_the_variants_that_build_them():
    run = variants.parse_variant_list("stock,patched,patched@old")
    named = variants.named_series_map([variants.parse_named_series("old=/s/old")])
    assert named == {"old": Path("/s/old")}
    variants.check_named_series(run, named)
    with pytest.raises(ValueError, match=r"no --series-as for patched@old"):
        variants.check_named_series(run, {})
    with pytest.raises(ValueError, match=r"--series-as new: no variant patched@NAME builds it"):
        variants.check_named_series(run, {**named, "new": Path("/s/new")})
    with pytest.raises(ValueError, match=r"--series-as old: given twice"):
        variants.named_series_map([("old", Path("/a")), ("old", Path("/b"))])
    for bad in ("old", "old=", "=/s", "o/d=/s"):
        with pytest.raises(ValueError):
            variants.parse_named_series(bad)


def test_bench_reports_runs_under_the_same_variant_strings(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    # Builds: patched's series are empty here (same keys as stock's).
    monkeypatch.setattr(variants, "resolve", lambda name, *a, **kw: name)
    monkeypatch.setattr(bench, "build", lambda name: SimpleNamespace(
        name=name, hypervisor_key="k", tools_key="k"))
    seen: list[tuple[str, str, bool]] = []

    def run_variant(staged: Any, params: Any, options: VMOptions, progress: Any,
                    name: str, repeat: int) -> list[dict[str, Any]]:
        seen.append((staged.name, name, options.xs_cache))
        return [{"variant": name, "xs_cache": options.xs_cache, "concurrency": 1,
                 "guests": 1, "makespan_s": 1.0, "create_s": [0.5], "console_ok": 1,
                 "repeat": repeat}]

    monkeypatch.setattr(bench, "run_variant", run_variant)
    monkeypatch.setattr(bench, "plot", lambda runs, path: None)
    monkeypatch.setattr(bench, "print_summary", lambda *a: None)
    run = variants.parse_variant_list("stock,stock+cache,patched+cache")
    bench.run_bench(run, bench.BenchParams(1, (1,)), VMOptions(), tmp_path)
    assert seen == [("stock", "stock", False), ("stock", "stock+cache", True),
                    ("patched", "patched+cache", True)]
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["format"] == 2                       # pyxen.lab.host.benchfile.BENCH_FORMAT
    assert [(r["variant"], r["xs_cache"]) for r in doc["runs"]] == [
        ("stock", False), ("stock+cache", True), ("patched+cache", True)]
    assert doc["notes"] == ["note: 'patched+cache' is identical to stock (its series is "
                            "empty): differences are run-to-run noise"]


def test_a_variant_s_switches_reach_the_vm_and_dom0_s_environment():
    from pyxen.lab.contract import protocol
    from pyxen.lab.dom0.agent import toolstack_env
    base = VMOptions(cpus=4)
    opts = RunVariant.parse("patched+libcache").vm_options(base)
    assert (opts.lib_cache, opts.xs_cache, opts.cpus) == (True, False, 4)
    assert RunVariant.parse("stock+cache").vm_options(base).xs_cache
    cfg = {"programs": {"xl": "/x/usr/sbin/xl"}, "library_dirs": ["/x/usr/lib"],
           "native": "/x/_xen.so", "xs_domain_preload": "/c/xs-domain-preload.so"}
    on = toolstack_env({**cfg, "lib_cache": True})
    off = toolstack_env(cfg)
    # The preload library is handed over by name, not put on PATH.
    assert on[protocol.ENV_XS_DOMAIN_PRELOAD] == "/c/xs-domain-preload.so"
    assert on["PATH"].split(":")[0] == "/x/usr/sbin" and "/c" not in on["PATH"].split(":")
    assert on[protocol.ENV_LIB_CACHE] == on[protocol.ENV_LIBXENSTORE_CACHE] == "1"
    # Without +libcache no program in dom0 reads through the cache.
    assert off[protocol.ENV_LIB_CACHE] == off[protocol.ENV_LIBXENSTORE_CACHE] == "0"


def test_every_variant_is_resolved_before_the_first_build(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    # a series that is not there is found before stock's build, not after it
    def resolve(name: str, *a: Any, **kw: Any) -> str:
        if name != "stock":
            raise LabError(f"{name}: no series")
        return name

    built: list[str] = []
    monkeypatch.setattr(variants, "resolve", resolve)
    monkeypatch.setattr(bench, "build", built.append)
    with pytest.raises(LabError, match="patched: no series"):
        bench.run_bench(variants.parse_variant_list("stock,patched"),
                        bench.BenchParams(1, (1,)), VMOptions(), tmp_path)
    monkeypatch.setattr(cli.hostdeps, "check", lambda: None)
    monkeypatch.setattr(cli, "_source", lambda args: None)
    monkeypatch.setattr(xenbuild, "build", built.append)
    args = cli.build_parser().parse_args(["bench", "--variants", "stock,patched"])
    args.named_series = {}           # what main() adds from --series-as
    with pytest.raises(LabError, match="patched: no series"):
        cli._build_variants(args)
    assert built == []
