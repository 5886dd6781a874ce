from __future__ import annotations

from dataclasses import asdict

from pyxen.lab.contract.xenprof import (PHASE_FIGURES, SCRUB_BACKGROUND_COUNTER, LockStat,
                                         background_scrubbed, domctl_retries,
                                         parse_counters, parse_hypercalls,
                                         parse_lockprof, phase_figures)

LOCKPROF = """\
global lock heap_lock                             : lock:       12345(         0.012345678s), block:          17(         0.000123456s)
global lock domctl_lock                           : lock:         300(         0.100000000s), block:           0(         0.000000000s)
domain 3 lock domctl_lock                         : lock:          40(         0.001000000s), block:           2(         0.000002000s)
domain 4 lock domctl_lock                         : lock:          60(         0.002000000s), block:           1(         0.000001000s)
total profiling time:          1.000000000s
"""

XENPERF = ("exceptions                          T=      1234\n"
           "hypercalls                          T=      2115 " + " ".join(
               "1200" if i == 12 else "900" if i == 36 else "15" if i == 29 else "0"
               for i in range(64)) + "\n"
           "calls from multicall                T=         0\n")


def test_lock_profile_lines_parse_and_same_names_add_up():
    locks = parse_lockprof(LOCKPROF)
    assert locks["global lock heap_lock"] == LockStat(12345, 0.012345678, 17, 0.000123456)
    assert locks["global lock domctl_lock"].blocked == 0
    assert locks["domain 3 lock domctl_lock"].acquisitions == 40
    assert "total profiling time" not in str(locks)


def test_hypercall_array_is_indexed_by_hypercall_number():
    assert parse_hypercalls(XENPERF) == {"memory_op": 1200, "domctl": 900, "sched_op": 15}


def test_no_hypercall_array_is_empty():
    assert parse_hypercalls("exceptions T= 3\n") == {}


def test_domctl_counters_are_kept_by_name_with_their_totals():
    text = ("domctl: ran shared                  T=       392         200        192\n"
            "domctl: retried, domctl_lock busy   T=         7           0          7\n"
            "domctl: retried, exclusive busy     T=         0\n"
            "sched: timer                        T=       999         500        499\n")
    assert parse_counters(text) == {"domctl: ran shared": 392,
                                    "domctl: retried, domctl_lock busy": 7,
                                    "domctl: retried, exclusive busy": 0}
    # A build without them (stock) gives nothing, not zeros.
    assert parse_counters(XENPERF) == {}


def test_retries_come_only_from_the_retry_counters():
    # Without the instrumentation's counter, entries minus domctl_lock
    # acquisitions is not a retry count (unlocked domctls since 4.18).
    stock = {"hypercalls": {"domctl": 641}, "counters": {},
             "locks": {"global lock domctl_lock": {"acquisitions": 434}}}
    assert domctl_retries(stock) is None
    # A counter that stayed at zero is zero retries, not unknown.
    assert domctl_retries({**stock, "counters": {"domctl: retried, lock busy": 0}}) == 0
    assert domctl_retries({**stock, "counters": {"domctl: other": 5}}) is None
    patched = {"hypercalls": {"domctl": 641},
               "counters": {"domctl: ran shared": 600, "domctl: retried, domctl_lock busy": 41},
               "locks": {}}
    assert domctl_retries(patched) == 41
    # Neither source (a build without profiling): unknown.
    assert domctl_retries({"hypercalls": {"domctl": 9}, "counters": {}, "locks": {}}) is None
    assert domctl_retries(None) is None


def test_background_scrubbing_is_read_from_the_labs_counter():
    text = ("scrub: pages scrubbed in the background T=     65536       60000       5536\n"
            "sched: timer                        T=       999\n")
    counters = parse_counters(text)
    assert counters == {SCRUB_BACKGROUND_COUNTER: 65536}
    assert background_scrubbed({"counters": counters}) == 65536
    # Zero is a count; a build without the counter is unknown, not zero.
    assert background_scrubbed({"counters": {SCRUB_BACKGROUND_COUNTER: 0}}) == 0
    assert background_scrubbed({"counters": {"domctl: retried, lock busy": 3}}) is None
    assert background_scrubbed(None) is None


def test_a_phase_figures_come_from_heap_lock_domctls_and_background_scrubbing() -> None:
    profile = {"hypercalls": parse_hypercalls(XENPERF),
               "counters": {SCRUB_BACKGROUND_COUNTER: 4096},
               "locks": {k: asdict(v) for k, v in parse_lockprof(LOCKPROF).items()}}
    figures = phase_figures(profile)
    assert tuple(figures) == PHASE_FIGURES
    assert figures == {"heap_lock_wait_s": 0.000123456, "heap_lock_held_s": 0.012345678,
                       "heap_lock_blocked": 17, "domctl_entries": 900,
                       "background_scrubbed": 4096}
    # A profile without the lock or the counter: those unknown, domctls none.
    bare = phase_figures({"hypercalls": {}, "counters": {}, "locks": {}})
    assert bare == {"heap_lock_wait_s": None, "heap_lock_held_s": None,
                    "heap_lock_blocked": None, "domctl_entries": 0,
                    "background_scrubbed": None}
    # No profile (not a profiling build): nothing known.
    assert set(phase_figures(None).values()) == {None}
