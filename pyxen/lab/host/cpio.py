"""A minimal writer of the "newc" cpio format the Linux kernel unpacks as initramfs."""

from __future__ import annotations

import gzip
import io
import stat
from pathlib import Path

_TRAILER = "TRAILER!!!"


class CpioWriter:
    """Collects directories, files and symlinks; ``getvalue`` gives the archive."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes) -> None:
        name_b = name.encode() + b"\0"
        header = (
            "070701"
            + "".join(f"{v:08x}" for v in (
                self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
        ).encode()
        self._ino += 1
        self._buf.write(header + name_b)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def mkdir(self, name: str, mode: int = 0o755) -> None:
        """Add a directory and its missing parents."""
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self._dirs:
                self._dirs.add(d)
                self._entry(d, stat.S_IFDIR | mode, b"")

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        if "/" in name:
            self.mkdir(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFREG | mode, data)

    def add_symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        if "/" in name:
            self.mkdir(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def getvalue(self) -> bytes:
        """The archive, with its trailer."""
        out = io.BytesIO(self._buf.getvalue())
        out.seek(0, io.SEEK_END)
        name_b = _TRAILER.encode() + b"\0"
        header = ("070701" + "".join(f"{v:08x}" for v in (
            0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(name_b), 0))).encode()
        out.write(header + name_b)
        out.write(b"\0" * (-out.tell() % 4))
        return out.getvalue()

    def write_gz(self, path: Path) -> None:
        path.write_bytes(gzip.compress(self.getvalue(), compresslevel=6))
