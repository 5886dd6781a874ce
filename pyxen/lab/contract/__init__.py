"""What both sides of the lab share: the host (pyxen.lab.host) and dom0
(pyxen.lab.dom0) import from here, and nothing here imports either of them
(tests/unit/test_lab_layout.py checks it).  Constants of the host <-> dom0
exchange, the typed requests the host sends the dom0 benchmark drivers
(requests: StormRequest, ScrubRequest, versioned JSON), typed errors,
argument types and pure parsers: standard library only.
"""
