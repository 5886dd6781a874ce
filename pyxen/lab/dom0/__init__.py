"""The lab's dom0 side: what runs inside the booted Xen's dom0 -- the agent
that takes the host's commands, the storm and scrub benchmark drivers
(``python -m pyxen.lab.dom0.dom0bench``, ``python -m pyxen.lab.dom0.scrub_dom0``),
xl, lock and Xenstore-trace sampling, CPU and hypervisor profiling.  It
imports pyxen.lab.contract, never pyxen.lab.host
(tests/unit/test_lab_layout.py checks it).
"""
