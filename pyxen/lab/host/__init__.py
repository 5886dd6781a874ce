"""The lab's host side: the CLI (``python -m pyxen.lab``), Xen builds, the
QEMU VM and the benchmarks' orchestration and plots.  It imports
pyxen.lab.contract, never pyxen.lab.dom0, and works without the compiled
pyxen._xen (tests/unit/test_lab_layout.py checks both).
"""
