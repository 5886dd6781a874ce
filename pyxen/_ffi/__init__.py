"""cffi declarations (``*.h`` fragments), the C shim and the builder of pyxen._xen."""
