"""Builder of pyxen._xen: cffi API mode over libxenctrl, libxenlight and libxenstore.

The declarations are the plain header fragments next to this file (one per
library) and the C shim; this script only joins them.  meson runs it to emit
the C source (``python build.py OUT.c``) and compiles that with the Xen
libraries; the lab compiles the same source against a staged Xen's headers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: cdef fragments, in dependency order.
CDEF_FILES = ("common.h", "xentoollog.h", "xenctrl.h", "xenstore.h", "libxl.h")

#: Headers the generated C includes (the real declarations cffi checks against).
C_HEADERS = ("stdlib.h", "string.h", "stdbool.h", "xenctrl.h", "xenstore.h",
             "libxl.h", "libxl_utils.h")

#: Libraries to link (also the pkg-config modules meson asks for).
LIBRARIES = ("xenctrl", "xenlight", "xenstore", "xentoollog")

MODULE = "pyxen._xen"


def cdef_source() -> str:
    return "\n".join((HERE / name).read_text() for name in CDEF_FILES)


def c_preamble() -> str:
    includes = "".join(f"#include <{h}>\n" for h in C_HEADERS)
    return includes + (HERE / "shim.c").read_text()


def ffibuilder() -> Any:
    import cffi  # type: ignore[import-untyped]

    ffi = cffi.FFI()
    ffi.cdef(cdef_source())
    ffi.set_source(MODULE, c_preamble(), libraries=list(LIBRARIES))
    return ffi


def emit(out: Path) -> None:
    ffibuilder().emit_c_code(str(out))


if __name__ == "__main__":
    emit(Path(sys.argv[1]))
