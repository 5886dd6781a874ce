"""Domain configuration: validated Python data, and the xl config file format.

A ``DomainConfig`` is checked when it is made, so bad input is a ValueError
naming the problem before any hypercall.  The same class reads and writes the
subset of xl's configuration syntax (xl.cfg(5)) that PV guests like ours use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

#: Names libxl and xl accept and that are safe everywhere they end up (xl config
#: quoting, Xenstore paths, file names).  All-digit names are refused because
#: xl reads them as domain ids, and names of dots alone as file names.
NAME_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}")

MIN_MEMORY_MIB = 4
#: libxenguest builds a PV guest of ``memory`` MiB passed as an unsigned int
#: and turns it into pages in 32 bits (xc_dom_mem_init(): ``mem_mb << 8``):
#: 16 TiB or more would be cut without a word.
MAX_MEMORY_MIB = (1 << 24) - 1
#: The longest command line a PV guest receives (MAX_GUEST_CMDLINE, 1024
#: with its NUL): libxenguest cuts a longer one without a word.
MAX_CMDLINE_BYTES = 1023
MAX_VCPUS = 128
#: Highest NUMA node number accepted (Xen's MAX_NUMNODES is 64 on x86).
MAX_NUMA_NODE = 63

#: Scheduler weights credit and credit2 accept, and their default.
MIN_WEIGHT, MAX_WEIGHT, DEFAULT_WEIGHT = 1, 65535, 256
#: The schedulers that have weights (libxl's names).  Under the others
#: (rtds, null, arinc653) libxl would ignore a weight without a word.
WEIGHTED_SCHEDULERS = ("credit", "credit2")

#: What xl does on guest shutdown that libxl alone can carry out.
SHUTDOWN_ACTIONS = ("destroy", "preserve")


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid domain name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . -, "
            "not starting with '-'")
    if name.isdigit():
        raise ValueError(f"invalid domain name {name!r}: all digits reads as a domain id")
    if not name.strip("."):
        raise ValueError(f"invalid domain name {name!r}: dots alone name no file")
    return name


def validate_weight(weight: Any) -> int:
    """A scheduler weight (credit, credit2), or a ValueError naming the range."""
    return _int("weight", weight, MIN_WEIGHT, MAX_WEIGHT)


def check_weight_scheduler(scheduler: str) -> None:
    """A ValueError unless ``scheduler`` (libxl's name of the one the domain
    will run under) gives domains weights."""
    if scheduler not in WEIGHTED_SCHEDULERS:
        raise ValueError(f"weight needs the {' or '.join(WEIGHTED_SCHEDULERS)} scheduler; "
                         f"Xen runs {scheduler}")


def _int(field: str, value: Any, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{field} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{field} must be {bound}, got {value}")
    return value


def _path(field: str, value: Any) -> Path:
    text = str(value)
    if not Path(text).is_absolute():
        raise ValueError(f"{field} must be an absolute path, got {text!r}")
    if any(c in text for c in '"\\\n\r\0'):
        raise ValueError(f"{field} path {text!r} has a character xl config cannot hold")
    return Path(text)


@dataclass(frozen=True)
class DomainConfig:
    """A PV domain: name, kernel, memory, vCPUs, and what to do when it stops."""

    name: str
    kernel: Path
    memory_mib: int = 16
    vcpus: int = 1
    maxmem_mib: int | None = None
    cmdline: str = ""
    ramdisk: Path | None = None
    on_poweroff: str = "destroy"
    on_reboot: str = "destroy"
    on_crash: str = "preserve"
    #: NUMA nodes the memory comes from (libxl's nodemap, automatic placement
    #: off); None lets libxl place the domain.  Not expressible in xl config.
    nodes: tuple[int, ...] | None = None
    #: The domain's weight under the credit and credit2 schedulers (xl.cfg's
    #: ``weight``): its share of a busy CPU against other domains' weights.
    #: None keeps the scheduler's default (DEFAULT_WEIGHT).  A create with a
    #: weight under another scheduler fails (check_weight_scheduler()).
    weight: int | None = None

    def __post_init__(self) -> None:
        validate_name(self.name)
        object.__setattr__(self, "kernel", _path("kernel", self.kernel))
        _int("memory_mib", self.memory_mib, MIN_MEMORY_MIB, MAX_MEMORY_MIB)
        _int("vcpus", self.vcpus, 1, MAX_VCPUS)
        if self.maxmem_mib is not None:
            _int("maxmem_mib", self.maxmem_mib, self.memory_mib, MAX_MEMORY_MIB)
        if self.ramdisk is not None:
            object.__setattr__(self, "ramdisk", _path("ramdisk", self.ramdisk))
        if self.weight is not None:
            validate_weight(self.weight)
        if not isinstance(self.cmdline, str) or any(c in self.cmdline for c in '\n\r\0'):
            raise ValueError(f"cmdline {self.cmdline!r} has a line break or NUL, which a "
                             "kernel command line cannot hold")
        cmdline_bytes = len(self.cmdline.encode())
        if cmdline_bytes > MAX_CMDLINE_BYTES:
            raise ValueError(f"cmdline is {cmdline_bytes} bytes; a PV guest "
                             f"receives at most {MAX_CMDLINE_BYTES}")
        for f in ("on_poweroff", "on_reboot", "on_crash"):
            v = getattr(self, f)
            if v not in SHUTDOWN_ACTIONS:
                raise ValueError(f"{f} must be one of {', '.join(SHUTDOWN_ACTIONS)}, got {v!r}")
        if self.nodes is not None:
            if isinstance(self.nodes, (str, bytes)) or not self.nodes:
                raise ValueError(f"nodes must be a non-empty sequence of node numbers, "
                                 f"got {self.nodes!r}")
            object.__setattr__(self, "nodes", tuple(
                _int("nodes[]", n, 0, MAX_NUMA_NODE) for n in self.nodes))

    @property
    def max_memory_mib(self) -> int:
        return self.maxmem_mib if self.maxmem_mib is not None else self.memory_mib

    # -- xl configuration files ----------------------------------------
    def to_xl_config(self) -> str:
        """The xl configuration file text."""
        if self.nodes is not None:
            raise ValueError("nodes has no xl configuration equivalent "
                             "(xl places memory by vCPU affinity)")
        lines = [
            f'name = "{self.name}"',
            'type = "pv"',
            f'kernel = "{self.kernel}"',
            f"memory = {self.memory_mib}",
            f"maxmem = {self.max_memory_mib}",
            f"vcpus = {self.vcpus}",
        ]
        if self.cmdline:
            lines.append(f'cmdline = "{_quote_body(self.cmdline)}"')
        if self.ramdisk is not None:
            lines.append(f'ramdisk = "{self.ramdisk}"')
        if self.weight is not None:
            lines.append(f"weight = {self.weight}")
        lines += [f'{f} = "{getattr(self, f)}"' for f in ("on_poweroff", "on_reboot",
                                                          "on_crash")]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_xl_config(cls, text: str, base_dir: Path | None = None) -> DomainConfig:
        """Read an xl configuration (the keys this class models; any other key
        is an error naming it, rather than being silently ignored)."""
        values = parse_xl_config(text)
        known = {"name", "type", "kernel", "memory", "maxmem", "vcpus", "cmdline",
                 "extra", "ramdisk", "on_poweroff", "on_reboot", "on_crash", "weight"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unsupported xl config key(s): {', '.join(unknown)} "
                             f"(supported: {', '.join(sorted(known))})")
        if values.get("type", "pv") != "pv":
            raise ValueError(f"only type = \"pv\" is supported, got {values['type']!r}")
        for required in ("name", "kernel"):
            if required not in values:
                raise ValueError(f"xl config has no {required}")

        def path(v: Any) -> Path:
            if not isinstance(v, str):
                raise ValueError(f"expected a string path, got {v!r}")
            p = Path(v)
            return p if p.is_absolute() or base_dir is None else base_dir / p

        kw: dict[str, Any] = {"name": values["name"], "kernel": path(values["kernel"])}
        if "memory" in values:
            kw["memory_mib"] = values["memory"]
        if "maxmem" in values:
            kw["maxmem_mib"] = values["maxmem"]
        if "vcpus" in values:
            kw["vcpus"] = values["vcpus"]
        if "cmdline" in values or "extra" in values:
            kw["cmdline"] = values.get("cmdline", values.get("extra"))
        if "ramdisk" in values:
            kw["ramdisk"] = path(values["ramdisk"])
        if "weight" in values:
            kw["weight"] = values["weight"]
        for f in ("on_poweroff", "on_reboot", "on_crash"):
            if f in values:
                kw[f] = values[f]
        return cls(**kw)

    @classmethod
    def from_xl_file(cls, path: Path) -> DomainConfig:
        return cls.from_xl_config(Path(path).read_text(), base_dir=Path(path).parent)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


_TOKEN = re.compile(r"""
    (?P<ws>[ \t]+) | (?P<comment>\#[^\n]*) | (?P<nl>[\n;]) |
    (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*') |
    (?P<num>0x[0-9a-fA-F]+|-?[0-9]+) |
    (?P<ident>[A-Za-z_][A-Za-z0-9_]*) | (?P<punct>[=\[\],])
""", re.VERBOSE)


#: The escapes xl's parser reads in a quoted string (xlu__cfgl_dequote()),
#: each to its character.  It refuses any other (its numeric escapes, \x and
#: octal, are refused here: xl's own reading of them is broken).
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "a": "\a", "b": "\b", "f": "\f",
            "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _quote_body(text: str) -> str:
    """``text`` as the inside of a double-quoted xl string (line breaks are
    refused by DomainConfig, so only backslashes and quotes need escaping)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _unquote(s: str, line: int) -> str:
    def escape(m: re.Match[str]) -> str:
        c = m.group(1)
        if c not in _ESCAPES:
            raise ValueError(f"xl config line {line}: invalid escape \\{c} in a quoted string")
        return _ESCAPES[c]
    return re.sub(r"\\(.)", escape, s[1:-1])


def parse_xl_config(text: str) -> dict[str, Any]:
    """Parse xl config syntax: ``key = value`` settings, values being strings,
    integers or [lists]; ``#`` comments; ``;`` or newlines between settings.
    A key set twice keeps the last value, as xl does."""
    tokens: list[tuple[str, str, int]] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"xl config line {line}: unexpected {text[pos]!r}")
        kind = m.lastgroup or ""
        if kind not in ("ws", "comment"):
            tokens.append((kind, m.group(), line))
        line += m.group().count("\n")
        pos = m.end()
    tokens.append(("nl", "", line))

    out: dict[str, Any] = {}
    i = 0

    def value(i: int) -> tuple[Any, int]:
        kind, tok, ln = tokens[i]
        if kind == "str":
            return _unquote(tok, ln), i + 1
        if kind == "num":
            return int(tok, 0), i + 1
        if tok == "[":
            items: list[Any] = []
            i += 1
            while tokens[i][1] != "]":
                if tokens[i][0] == "nl" and tokens[i][1] == "\n":
                    i += 1
                    continue
                v, i = value(i)
                items.append(v)
                if tokens[i][1] == ",":
                    i += 1
                elif tokens[i][1] != "]" and tokens[i][1] != "\n":
                    raise ValueError(f"xl config line {tokens[i][2]}: expected ',' or ']'")
            return items, i + 1
        raise ValueError(f"xl config line {ln}: expected a value, got {tok or 'end'!r}")

    while i < len(tokens):
        kind, tok, ln = tokens[i]
        if kind == "nl":
            i += 1
            continue
        if kind != "ident":
            raise ValueError(f"xl config line {ln}: expected a setting name, got {tok!r}")
        if tokens[i + 1][1] != "=":
            raise ValueError(f"xl config line {ln}: expected '=' after {tok}")
        v, i = value(i + 2)
        if tokens[i][0] != "nl":
            raise ValueError(f"xl config line {tokens[i][2]}: unexpected {tokens[i][1]!r}")
        out[tok] = v
    return out
