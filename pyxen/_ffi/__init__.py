"""cffi declarations (``*.h`` fragments), the C shim and the builder of pyxen._xen."""

#: Environment variable naming another build of pyxen._xen to load (a file
#: path): the lab sets it in dom0 to bindings built against the staged Xen.
NATIVE_ENV = "PYXEN_NATIVE"
