"""The cffi bindings without a hypervisor: they build and import, and every
library's failure becomes a typed exception with errno and the library's words."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from pyxen import errors

_native = pytest.importorskip("pyxen._native", reason="pyxen._xen not built (pip install .)")

ON_XEN = Path("/proc/xen/capabilities").exists() or Path("/dev/xen/privcmd").exists()
no_xen = pytest.mark.skipif(ON_XEN, reason="this host runs Xen")


def test_module_exposes_the_three_libraries():
    lib = _native.lib
    for fn in ("xc_interface_open", "xc_domain_getinfolist", "xc_domain_claim_pages",
               "libxl_domain_create_new", "libxl_list_domain", "xs_read",
               "xs_transaction_start", "pyxen_logger_new"):
        assert hasattr(lib, fn), fn
    assert lib.LIBXL_DOMAIN_TYPE_PV == 2
    assert lib.XEN_DOMINF_dying == 1


@no_xen
def test_xenctrl_without_xen_raises_with_the_library_message():
    from pyxen.xenctrl import XenCtrl
    with pytest.raises(errors.XenCtrlError) as info:
        XenCtrl()
    assert info.value.function == "xc_interface_open"
    # The message is libxenctrl's own, captured by the shim's logger.
    assert "privileged command interface" in info.value.message
    assert info.value.errno in (errno.ENOENT, errno.EACCES, errno.ENXIO)


@no_xen
def test_libxl_without_xen_raises_a_libxl_error():
    from pyxen.libxl import Libxl
    with pytest.raises(errors.LibxlError) as info:
        Libxl()
    assert info.value.function == "libxl_ctx_alloc"
    assert info.value.code < 0 and info.value.code_name


@no_xen
def test_xenstore_without_xenstored_raises_enoent(monkeypatch, tmp_path):
    from pyxen.xenstore import XenStore
    monkeypatch.setenv("XENSTORED_PATH", str(tmp_path / "no-socket"))
    with pytest.raises(errors.XenstoreError) as info:
        XenStore()
    assert info.value.errno in (errno.ENOENT, errno.ECONNREFUSED)


@pytest.mark.parametrize("rc,cls,name", [
    (-3, errors.LibxlError, "ERROR_FAIL"),
    (-6, errors.LibxlError, "ERROR_INVAL"),
    (-21, errors.DomainNotFound, None),
])
def test_libxl_codes_map_to_typed_errors(rc, cls, name):
    _native.clear_message()  # as every wrapper does before its call
    with pytest.raises(cls) as info:
        _native.check_libxl(rc, "libxl_something")
    if name:
        assert info.value.code_name == name
        assert name in str(info.value)


def test_success_codes_pass_through():
    assert _native.check_libxl(0, "f") == 0
    assert _native.check_xc(7, "f") == 7
    _native.check_xs(True, "f")


@pytest.mark.parametrize("err,cls", [(errno.ESRCH, errors.DomainNotFound),
                                     (errno.EINVAL, errors.XenCtrlError)])
def test_xenctrl_errno_maps_to_typed_errors(err, cls):
    _native.ffi.errno = err
    with pytest.raises(cls) as info:
        _native.check_xc(-1, "xc_domain_pause")
    assert info.value.errno == err
    assert errno.errorcode[err] in str(info.value)


def test_xenstore_errno_names_the_path():
    _native.ffi.errno = errno.EACCES
    with pytest.raises(errors.XenstoreError, match="/local/domain/7/name: Permission denied"):
        _native.check_xs(False, "xs_read", "/local/domain/7/name")


def test_not_found_is_also_a_lookup_error():
    assert issubclass(errors.DomainNotFound, LookupError)
    assert issubclass(errors.TransactionConflict, errors.XenstoreError)


def test_bad_arguments_are_refused_before_any_call():
    from pyxen.xenstore import Perm, XenStore, _check_path
    from pyxen.xenctrl import XenCtrl
    # Each range check is pyxen.limits' (test_limits.py); here, that the
    # calls use them before reaching C (no handle is needed to be refused).
    xc, xs = XenCtrl.__new__(XenCtrl), XenStore.__new__(XenStore)
    xs._handle = None
    for call, what in ((lambda: xc.domain_info(0x7FF0), "domid"),
                       (lambda: xs.introduce_domain(-1, 1, 1), "domid"),
                       (lambda: xs.introduce_domain(1, 1 << 52, 1), "mfn"),
                       (lambda: xs.introduce_domain(1, 1, 0), "port")):
        with pytest.raises(ValueError, match=what):
            call()
    for bad in ("", "a\0b", "x" * 4000):
        with pytest.raises(ValueError, match="path"):
            _check_path(bad)
    with pytest.raises(ValueError, match="n r w b"):
        Perm(0, "x")


def test_a_closed_or_ended_handle_is_refused_by_name() -> None:
    from pyxen.xenstore import Transaction, XenStore
    xs = XenStore.__new__(XenStore)
    xs._handle = None
    xs._t = 0
    xs._in_forked_child = False
    with pytest.raises(ValueError, match="XenStore connection is closed"):
        xs.read("/local")
    tx = Transaction(xs, 5)
    tx.ended = True
    with pytest.raises(ValueError, match="transaction 5 has ended"):
        tx.write("/local/x", b"1")


@pytest.mark.parametrize("value", [5, 10 ** 10, None, [1, 2]])
def test_a_value_that_is_not_bytes_or_str_is_refused(value: Any) -> None:
    from pyxen.xenstore import XenStore
    xs = XenStore.__new__(XenStore)
    xs._handle = None
    xs._t = 0
    with pytest.raises(TypeError, match="Xenstore value must be bytes or str"):
        xs.write("/local/x", value)


@pytest.mark.parametrize("token,msg", [("tok\0evil", "NUL"), (b"tok", "must be a string"),
                                       ("t" * 1023, "1023 bytes is longer than 1022")])
def test_bad_watch_tokens_are_refused(token: str, msg: str) -> None:
    from pyxen.xenstore import MAX_PATH, MAX_PAYLOAD, MAX_TOKEN, _check_token
    with pytest.raises(ValueError, match=msg):
        _check_token(token)
    assert _check_token("t" * MAX_TOKEN) == b"t" * MAX_TOKEN
    # An event for the longest path still fits one message.
    assert MAX_PATH + 1 + MAX_TOKEN + 1 == MAX_PAYLOAD


def test_a_connection_closed_inside_a_transaction_commits_nothing(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pyxen import xenstore

    class Lib:  # libxenstore's transaction calls, recorded
        ends: list[tuple[int, bool]] = []

        def xs_transaction_start(self, h: Any) -> int:
            return 7

        def xs_transaction_end(self, h: Any, tid: int, abort: bool) -> bool:
            self.ends.append((tid, abort))
            return True

        def xs_close(self, h: Any) -> None:
            pass

    monkeypatch.setattr(xenstore, "lib", Lib())
    xs = xenstore.XenStore.__new__(xenstore.XenStore)
    xs._handle, xs._t, xs._in_forked_child = object(), 0, False
    with pytest.raises(ValueError, match="closed inside transaction 7: nothing was committed"):
        with xs.transaction():
            xs.close()
    xs._handle = object()
    with pytest.raises(RuntimeError, match="body"):
        with xs.transaction():
            xs.close()
            raise RuntimeError("body")
    assert Lib.ends == []  # never on a freed handle
    xs._handle = object()
    with xs.transaction():
        pass
    assert Lib.ends == [(7, False)]


@pytest.mark.parametrize("exc", [
    errors.XenCtrlError("xc_domain_pause", errno.EINVAL, "bad"),
    errors.DomainNotFound("libxl_name_to_domid", None, "no domain named 'x'"),
    errors.XenstoreError("xs_read", errno.ENOENT, "/x: No such file or directory"),
    errors.TransactionConflict("xs_transaction_end", errno.EAGAIN, "still conflicting"),
    errors.LibxlError("libxl_domain_create_new", -3, "ERROR_FAIL", None, "it broke"),
])
def test_errors_cross_processes_as_themselves(exc: errors.XenError) -> None:
    import pickle
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is type(exc) and str(again) == str(exc)
    assert (again.function, again.errno, again.message) == (exc.function, exc.errno, exc.message)
    if isinstance(exc, errors.LibxlError):
        assert isinstance(again, errors.LibxlError)
        assert (again.code, again.code_name) == (exc.code, exc.code_name)


def test_an_unknown_libxl_code_is_still_a_libxl_error() -> None:
    with pytest.raises(errors.LibxlError, match="libxl error -999") as info:
        _native.check_libxl(-999, "libxl_something")
    assert info.value.code == -999


def test_the_domain_path_of_any_32_bit_id_is_asked(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pyxen import xenstore

    class Lib:  # xs_get_domain_path names any ID's path, as xenstored does
        def xs_get_domain_path(self, h: Any, domid: int) -> Any:
            return _native.ffi.new("char[]", f"/local/domain/{domid}".encode())

        def free(self, p: Any) -> None:
            pass

    monkeypatch.setattr(xenstore, "lib", Lib())
    xs = xenstore.XenStore.__new__(xenstore.XenStore)
    xs._handle, xs._t, xs._in_forked_child = object(), 0, False
    assert xs.get_domain_path(65535) == "/local/domain/65535"   # no domain's: still a path
    for bad in (-1, 1 << 32, True):
        with pytest.raises(ValueError, match="domid must be an integer 0..2\\^32 - 1"):
            xs.get_domain_path(bad)
    xs._handle = None
