"""pyxen: fast parallel guest birth and death for Xen.

Subpackages:
  pyxen.lab  -- builds stock and patched Xen from Debian's source and boots it
                nested in QEMU to run tests and benchmarks in dom0.
"""

__version__ = "0.1.0"
