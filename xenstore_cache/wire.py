"""The Xenstore wire protocol of Xen 4.17 to 4.22, without I/O ("sans-I/O").

One source of truth for the message types, limits and framing that the
caching proxy and its model xenstored share.  The facts follow
``xen/include/public/io/xs_wire.h`` and xenstored's ``core.c``
(``tools/xenstore/xenstored_core.c`` up to 4.17, ``tools/xenstored/core.c``
since 4.18):

* a message is a 16-byte header ``type, req_id, tx_id, len`` (uint32 each,
  host byte order) and ``len`` bytes of payload, ``len`` at most 4096;
* xenstored drops a connection whose header announces more than 4096 bytes
  (it can no longer find the next header); a complete message of a type it
  does not implement gets an ``ERROR "ENOSYS"`` reply;
* a reply echoes ``req_id`` and ``tx_id``; an error is ``ERROR`` with the
  errno name and a NUL as payload.

Payloads are opaque bytes: values may hold any byte and may be empty.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

#: ``XENSTORE_PAYLOAD_MAX``: the longest payload of one message.
MAX_PAYLOAD = 4096
#: ``XENSTORE_ABS_PATH_MAX``: the longest absolute path.
MAX_PATH = 3072
#: ``XENSTORE_REL_PATH_MAX``: xenstored's default path quota (below the domain path).
MAX_REL_PATH = 2048

#: The header: type, req_id, tx_id, len in the host's byte order.
HEADER = struct.Struct("=IIII")
HEADER_SIZE = HEADER.size

#: Socket connections to xenstored are dom0's; relative paths are below this.
DOM0_PATH = "/local/domain/0"

_PATH_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-/_@")


class Op(enum.IntEnum):
    """``enum xsd_sockmsg_type`` of Xen 4.22 (20, XS_RESTRICT, was removed;
    23-26 are new in 4.21 and 4.22: a 4.17 xenstored answers them ENOSYS)."""

    CONTROL = 0
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESET_WATCHES = 21
    DIRECTORY_PART = 22
    GET_FEATURE = 23
    SET_FEATURE = 24
    GET_QUOTA = 25
    SET_QUOTA = 26


#: Types a client may send (xenstored's ``wire_funcs`` with a handler).
REQUEST_OPS = frozenset(Op) - {Op.WATCH_EVENT, Op.ERROR}
#: Requests that change nodes: their first argument is the path changed.
MUTATING_OPS = frozenset({Op.WRITE, Op.MKDIR, Op.RM, Op.SET_PERMS})
#: Requests xenstored runs outside any transaction whatever tx_id says.
NO_TX_OPS = frozenset({Op.WATCH, Op.UNWATCH})

#: The errno names xenstored sends (``xsd_errors[]``), in its order.
ERRORS = ("EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO",
          "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN", "E2BIG", "EPERM")


class ProtocolError(Exception):
    """The peer broke the framing; the connection cannot be used any more."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One message.  ``op`` is an int so that unknown types can be carried."""

    op: int
    req_id: int
    tx_id: int
    payload: bytes

    def encode(self) -> bytes:
        """Header and payload; refuses what xenstored could not frame."""
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")
        return HEADER.pack(self.op, self.req_id, self.tx_id, len(self.payload)) + self.payload

    @property
    def op_name(self) -> str:
        try:
            return Op(self.op).name
        except ValueError:
            return f"UNKNOWN({self.op})"

    def reply(self, op: int, payload: bytes) -> Packet:
        """A reply to this request: same req_id and tx_id."""
        return Packet(op, self.req_id, self.tx_id, payload)

    def error(self, name: str) -> Packet:
        """An ERROR reply to this request carrying errno ``name``."""
        if name not in ERRORS:
            raise ValueError(f"{name!r} is not an error xenstored sends")
        return self.reply(Op.ERROR, name.encode() + b"\0")

    def args(self) -> list[bytes]:
        """NUL-separated arguments (a trailing NUL ends the last one)."""
        return split_args(self.payload)

    @property
    def error_name(self) -> str | None:
        """For an ERROR packet, the errno name; else None."""
        if self.op != Op.ERROR:
            return None
        return self.payload.rstrip(b"\0").decode("ascii", "replace")


def split_args(payload: bytes) -> list[bytes]:
    parts = payload.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return parts


def one_arg(payload: bytes) -> bytes | None:
    """xenstored's ``onearg()``: exactly one NUL, at the end; else None."""
    if not payload or payload[-1] != 0 or payload.index(0) != len(payload) - 1:
        return None
    return payload[:-1]


class Decoder:
    """Turns a byte stream into packets.

    ``feed`` returns the complete packets so far and keeps the rest.  A header
    announcing more than ``MAX_PAYLOAD`` bytes raises ProtocolError (xenstored
    drops such a connection); so does ``close()`` inside a message.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        self._buf += data
        out: list[Packet] = []
        while len(self._buf) >= HEADER_SIZE:
            op, req_id, tx_id, length = HEADER.unpack_from(self._buf)
            if length > MAX_PAYLOAD:
                raise ProtocolError(f"header announces {length} bytes of payload "
                                    f"(at most {MAX_PAYLOAD})")
            if len(self._buf) < HEADER_SIZE + length:
                break
            payload = bytes(self._buf[HEADER_SIZE:HEADER_SIZE + length])
            del self._buf[:HEADER_SIZE + length]
            out.append(Packet(op, req_id, tx_id, payload))
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held."""
        return len(self._buf)

    def close(self) -> None:
        """End of stream: an incomplete message is an error."""
        if self._buf:
            raise ProtocolError(f"connection closed inside a message ({len(self._buf)} bytes)")


def is_valid_path(path: str) -> bool:
    """xenstored's ``is_valid_nodename`` for an absolute path (default quota)."""
    if not path.startswith("/"):
        return False
    if path.endswith("/") and path != "/":
        return False
    if "//" in path:
        return False
    limit = MAX_REL_PATH
    prefix = "/local/domain/"
    if path.startswith(prefix):
        rest = path[len(prefix):]
        digits = rest.split("/", 1)[0]
        if digits.isdigit() and len(digits) <= 5 and "/" in rest:
            limit += len(prefix) + len(digits) + 1
    if len(path) > limit:
        return False
    return all(c in _PATH_CHARS for c in path.encode("ascii", "replace"))


def is_valid_special(name: str) -> bool:
    """xenstored's ``canonicalize()`` for a special node's name (``@...``),
    where a request allows one: its characters, no trailing or double slash,
    the default path quota."""
    if not name.startswith("@") or name.endswith("/") or "//" in name:
        return False
    if len(name) > MAX_REL_PATH:
        return False
    return all(c in _PATH_CHARS for c in name.encode("ascii", "replace"))


def canonical_path(raw: bytes, base: str = DOM0_PATH) -> str | None:
    """The absolute path xenstored works on for a request argument, or None
    when it is not a valid node path.  An argument starting with ``@`` is
    never one: xenstored's ``canonicalize()`` refuses it (EINVAL) for every
    request but GET_PERMS, SET_PERMS, WATCH and UNWATCH, which take it as a
    special node's name, not relative to the domain's path."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    if text.startswith("@"):
        return None
    if not text.startswith("/"):
        text = f"{base}/{text}"
    return text if is_valid_path(text) else None


def ancestors(path: str) -> list[str]:
    """'/a/b/c' -> ['/a/b', '/a', '/']."""
    out: list[str] = []
    while path != "/":
        path = path.rsplit("/", 1)[0] or "/"
        out.append(path)
    return out


def is_below(path: str, top: str) -> bool:
    """``path`` is ``top`` or inside it."""
    return top == "/" or path == top or path.startswith(top + "/")

