"""Parsing /proc for the per-create CPU attribution (pyxen.lab.dom0.proccpu)."""

from __future__ import annotations

import os
import time

import pytest

from pyxen.lab.dom0 import proccpu

TICK = 1.0 / os.sysconf("SC_CLK_TCK")


def test_stat_with_spaces_and_parentheses_in_the_name():
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime ...
    stat = "42 (x (y) z) S 1 42 42 0 -1 4194304 10 0 0 0 300 200 7 3 20 0 1 0"
    assert proccpu.parse_stat_cpu_s(stat) == pytest.approx(500 * TICK)
    assert proccpu.parse_stat_cpu_s(stat, children=True) == pytest.approx(510 * TICK)


def test_busy_time_leaves_out_idle_and_iowait():
    text = "cpu  100 5 50 1000 40 1 2 0 0 0\ncpu0 50 2 25 500 20 1 1 0 0 0\n"
    assert proccpu.parse_proc_stat_busy_s(text) == pytest.approx(158 * TICK)
    with pytest.raises(ValueError, match="cpu"):
        proccpu.parse_proc_stat_busy_s("intr 1 2 3\n")


def test_find_pids_by_comm(tmp_path):
    for pid, comm in ((10, "xenstored"), (11, "bash"), (12, "xenconsoled"), (13, "xenstored")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
    (tmp_path / "self").mkdir()
    found = proccpu.find_pids(("xenstored", "xenconsoled", "oxenstored"), tmp_path)
    assert found["xenconsoled"] == 12 and found["xenstored"] in (10, 13)
    assert "oxenstored" not in found


def test_sampler_sees_this_process_burn_cpu():
    s = proccpu.CpuSampler()
    before = s.sample()
    t_end = time.process_time() + 0.3
    while time.process_time() < t_end:
        pass
    d = proccpu.CpuSampler.delta(before, s.sample())
    assert d["bench"] >= 0.2
    assert d["dom0"] >= 0.2
