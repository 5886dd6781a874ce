"""The requests the host sends the dom0 benchmark drivers
(pyxen.lab.contract.requests): checked fields, a versioned JSON round trip,
and the way each side passes them (``--request JSON``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxen.lab.contract import protocol
from pyxen.lab.contract.args import number_list, positive_int_list
from pyxen.lab.contract.requests import (REQUEST_FORMAT, DriverRequest, ScrubRequest,
                                         StormRequest, XsLatencyRequest, parse_request)

KERNEL = Path("/srv/tinyguest")

_part = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                min_size=1, max_size=12)
kernels = st.lists(_part, min_size=1, max_size=4).map(lambda parts: Path("/", *parts))
words = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")),
                min_size=1, max_size=12)


@st.composite
def storm_requests(draw: st.DrawFn) -> StormRequest:
    guests = draw(st.integers(1, 10_000))
    return StormRequest(guests=guests, concurrency=draw(st.integers(1, guests)),
                        kernel=draw(kernels), memory_mib=draw(st.integers(4, 1 << 20)),
                        driver=draw(st.sampled_from(protocol.STORM_DRIVERS)),
                        prefix=draw(words), running=draw(st.integers(0, 1000)))


gaps = st.lists(st.floats(0, protocol.SCRUB_MAX_GAP_S), min_size=1, max_size=6).map(tuple)
scrub_requests = st.builds(
    ScrubRequest, kernel=kernels, gaps=gaps, guest_mib=st.integers(4, 1 << 20),
    sizes=st.lists(st.integers(4, 1 << 20), min_size=1, max_size=6).map(tuple),
    clean_timeout=st.floats(0, 1e6, exclude_min=True), prefix=words,
    spinners=st.none() | st.integers(0, 64), fill=st.sampled_from(protocol.SCRUB_FILLS),
    dma_bits=st.none() | st.integers(1, 64), reps=st.integers(1, 50),
    size_reps=st.integers(1, 50))


xs_requests = st.builds(
    XsLatencyRequest,
    idle=st.lists(st.integers(0, protocol.XS_MAX_IDLE), min_size=1, max_size=6,
                  unique=True).map(tuple),
    reads=st.integers(10, 10**6), rounds=st.integers(1, 20),
    syscall_reads=st.sampled_from([0, 10, 300]),
    path=st.sampled_from(["/", "/local/domain/0/name", "/tool/x y"]))


@given(st.one_of(storm_requests(), scrub_requests, xs_requests))
def test_a_request_comes_back_from_its_json_equal(req: DriverRequest) -> None:
    text = req.to_json()
    back = type(req).from_json(text)
    assert back == req
    assert back.to_json() == text
    doc = json.loads(text)
    assert (doc["format"], doc["kind"]) == (REQUEST_FORMAT, type(req).KIND)


def test_json_shapes_become_the_field_types() -> None:
    # What a caller (or JSON) gives loosely is stored as the declared type.
    req = ScrubRequest(kernel="/k", gaps=[0, 2], sizes=[64], clean_timeout=5)  # type: ignore[arg-type]
    assert req.kernel == Path("/k") and req.gaps == (0.0, 2.0) and req.sizes == (64,)
    assert isinstance(req.gaps[0], float) and isinstance(req.clean_timeout, float)
    assert ScrubRequest(KERNEL) == ScrubRequest(KERNEL, gaps=protocol.SCRUB_GAPS_DEFAULT,
                                                sizes=protocol.SCRUB_SIZES_DEFAULT)


@pytest.mark.parametrize("cls,field,value,why", [
    (StormRequest, "guests", 0, "must be >= 1"),
    (StormRequest, "concurrency", 5, "must be 1..guests (4)"),
    (StormRequest, "concurrency", 0, "must be 1..guests (4)"),
    (StormRequest, "kernel", Path("tinyguest"), "must be an absolute path"),
    (StormRequest, "memory_mib", 3, "must be >= 4"),
    (StormRequest, "driver", "libvirt", "must be one of ('pyxen', 'xl')"),
    (StormRequest, "prefix", "", "must be a non-empty word"),
    (StormRequest, "prefix", "a b", "must be a non-empty word"),
    (StormRequest, "running", -1, "must be >= 0"),
    (StormRequest, "guests", "4", "must be int"),
    (StormRequest, "guests", True, "must be int"),
    (StormRequest, "guests", 4.0, "must be int"),
    (StormRequest, "trace_timed", 1, "must be bool"),
    (StormRequest, "trace_timed", "true", "must be bool"),
    (StormRequest, "kernel", 7, "must be path (str)"),
    (ScrubRequest, "gaps", (), "must be one or more seconds, each 0..600"),
    (ScrubRequest, "gaps", (0.0, 601.0), "must be one or more seconds, each 0..600"),
    (ScrubRequest, "gaps", (-1.0,), "must be one or more seconds, each 0..600"),
    (ScrubRequest, "gaps", (float("nan"),), "must be one or more seconds, each 0..600"),
    (ScrubRequest, "gaps", "0,1", "must be a list of float"),
    (ScrubRequest, "gaps", (0.0, "1"), "must be a list of float"),
    (ScrubRequest, "guest_mib", 2, "must be >= 4"),
    (ScrubRequest, "spinner_weight", 0, "must be >= 1 or null"),
    (ScrubRequest, "sizes", (), "must be one or more MiB, each >= 4"),
    (ScrubRequest, "sizes", (64, 1), "must be one or more MiB, each >= 4"),
    (ScrubRequest, "sizes", (64.0,), "must be a list of int"),
    (ScrubRequest, "clean_timeout", 0.0, "must be > 0 s"),
    (ScrubRequest, "clean_timeout", float("inf"), "must be > 0 s"),
    (ScrubRequest, "prefix", "bad\n", "must be a non-empty word"),
    (ScrubRequest, "spinners", -1, "must be >= 0 or null"),
    (ScrubRequest, "spinners", 1.5, "must be int or null"),
    (ScrubRequest, "fill", "rack", "must be one of ('node', 'host')"),
    (ScrubRequest, "dma_bits", 0, "must be 1..64 or null"),
    (ScrubRequest, "dma_bits", 29.5, "must be int or null"),
    (ScrubRequest, "reps", 0, "must be >= 1"),
    (ScrubRequest, "size_reps", 0, "must be >= 1"),
    (XsLatencyRequest, "idle", (), "must be one or more distinct counts, each 0..900"),
    (XsLatencyRequest, "idle", (0, 0), "must be one or more distinct counts, each 0..900"),
    (XsLatencyRequest, "idle", (-1,), "must be one or more distinct counts, each 0..900"),
    (XsLatencyRequest, "idle", (901,), "must be one or more distinct counts, each 0..900"),
    (XsLatencyRequest, "reads", 9, "must be >= 10"),
    (XsLatencyRequest, "rounds", 0, "must be >= 1"),
    (XsLatencyRequest, "syscall_reads", 3, "must be 0 or >= 10"),
    (XsLatencyRequest, "path", "local/domain", "must be an absolute Xenstore path"),
    (XsLatencyRequest, "path", "/a\0b", "must be an absolute Xenstore path"),
])
def test_a_bad_field_is_named_with_its_value(cls: type[DriverRequest], field: str, value: Any,
                                             why: str) -> None:
    good: dict[str, Any] = {StormRequest: {"guests": 4, "concurrency": 2, "kernel": KERNEL},
                            ScrubRequest: {"kernel": KERNEL}, XsLatencyRequest: {}}[cls]
    with pytest.raises(ValueError) as info:
        cls(**{**good, field: value})
    message = str(info.value)
    assert message.startswith(f"{cls.__name__}.{field} {why}"), message
    assert message.endswith(f", got {value!r}"), message
    # ... and the same from JSON: the field's check, not a decoding error
    doc = json.loads(cls(**good).to_json())
    doc[field] = str(value) if isinstance(value, Path) else value
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{field} "):
        cls.from_json(json.dumps(doc))


def storm_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(StormRequest(4, 2, KERNEL).to_json())
    return doc


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("format"), 'StormRequest: no "format" in the request (this pyxen reads '
                                "format 1)"),
    (lambda d: d.update(format=2), "StormRequest: request format 2 is newer than this pyxen "
                                   "reads (1)"),
    (lambda d: d.update(format=0), "StormRequest: unknown request format 0"),
    (lambda d: d.update(format="1"), "StormRequest: unknown request format '1'"),
    (lambda d: d.update(format=True), "StormRequest: unknown request format True"),
    (lambda d: d.update(kind="scrub"), "StormRequest: a request of kind 'scrub', expected "
                                       "'storm'"),
    (lambda d: d.pop("kind"), "StormRequest: a request of kind None, expected 'storm'"),
    (lambda d: d.pop("guests"), "StormRequest: missing field(s) guests"),
    (lambda d: (d.pop("driver"), d.update(reps=3, extra=1)),
     "StormRequest: missing field(s) driver; unknown field(s) extra, reps"),
])
def test_from_json_says_what_is_wrong_with_the_document(change: Any, message: str) -> None:
    doc = storm_doc()
    change(doc)
    with pytest.raises(ValueError) as info:
        StormRequest.from_json(json.dumps(doc))
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize("text,message", [
    ("--guests 4", "StormRequest: not JSON"),
    ("[1, 2]", "StormRequest: expected a JSON object, got '[1, 2]'"),
    ("", "StormRequest: not JSON"),
])
def test_from_json_rejects_what_is_not_a_json_object(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        StormRequest.from_json(text)
    assert str(info.value).startswith(message), str(info.value)


def test_a_scrub_request_is_not_a_storm_request() -> None:
    with pytest.raises(ValueError, match="kind 'scrub', expected 'storm'"):
        StormRequest.from_json(ScrubRequest(KERNEL).to_json())


def test_a_driver_reads_its_request_from_one_argument(capsys: pytest.CaptureFixture[str]) -> None:
    req = ScrubRequest(KERNEL, gaps=(0.0, 1.5), reps=3, dma_bits=29)
    assert parse_request(ScrubRequest, ["--request", req.to_json()], prog="p") == req
    for argv, message in ((["--request", "{}"], 'no "format"'),
                          (["--gaps", "0,1"], "the following arguments are required: "
                                              "--request")):
        with pytest.raises(SystemExit) as info:
            parse_request(ScrubRequest, argv, prog="p")
        assert info.value.code == 2
        assert message in capsys.readouterr().err


def test_the_comma_lists_of_the_command_line_parse_once() -> None:
    assert number_list("0, 0.5,2") == (0.0, 0.5, 2.0)
    assert positive_int_list("64,256") == (64, 256)
    for bad, message in (("0,x", "not a comma-separated list of numbers: '0,x'"),
                         ("1,nan", "not a finite number: 'nan'"), ("", "not a comma")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            number_list(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="listed twice"):
        positive_int_list("64,64")
