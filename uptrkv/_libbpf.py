"""ctypes binding of the system libbpf (``libbpf.so.1``).

The leaf of the package: nothing here imports the rest of uptrkv.  One table
declares every C signature; one error checker turns libbpf's conventions
(negative errno from int functions, NULL plus errno from pointer functions)
into :class:`LibbpfError`.  Callers above this module get Python objects from
:mod:`uptrkv.loader` and :mod:`uptrkv.btf`; raw pointers never leave those.

Set ``UPTRKV_LIBBPF`` to the path of another libbpf build to use it instead.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno
import os
import threading
from ctypes import (CFUNCTYPE, POINTER, Structure, c_bool, c_char_p, c_int, c_size_t,
                    c_uint, c_uint32, c_void_p)

LIBBPF_ENV = "UPTRKV_LIBBPF"
DEFAULT_LIBBPF = "libbpf.so.1"


class LibbpfError(OSError):
    """A libbpf call failed; ``errno`` holds the positive error number."""

    def __init__(self, err: int, call: str, detail: str = ""):
        msg = f"{call}: {os.strerror(err)}"
        if detail:
            msg += "\n" + detail
        super().__init__(err, msg)
        self.call = call
        self.detail = detail

    def __str__(self) -> str:  # OSError's default prefixes "[Errno N]"; keep the message readable
        return f"[Errno {self.errno}] {self.strerror}"


# --- C structures mirrored from libbpf's public headers -----------------------

class bpf_object_open_opts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("object_name", c_char_p),
        ("relaxed_maps", c_bool),
        ("pin_root_path", c_char_p),
        ("_unused_attach_prog_fd", c_uint32),
        ("kconfig", c_char_p),
        ("btf_custom_path", c_char_p),
        ("kernel_log_buf", c_void_p),
        ("kernel_log_size", c_size_t),
        ("kernel_log_level", c_uint32),
    ]


class bpf_test_run_opts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


class bpf_map_create_opts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("btf_fd", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("inner_map_fd", c_uint32),
        ("map_flags", c_uint32),
        ("map_extra", ctypes.c_uint64),
        ("numa_node", c_uint32),
        ("map_ifindex", c_uint32),
    ]


class bpf_prog_info(Structure):
    """The start of the kernel's struct bpf_prog_info (the kernel fills what fits)."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", c_uint32),
        ("xlated_prog_len", c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
    ]


class bpf_link_info(Structure):
    """The start of the kernel's struct bpf_link_info (the kernel fills what fits)."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("prog_id", c_uint32),
    ]


class bpf_map_info(Structure):
    """The start of the kernel's struct bpf_map_info (the kernel fills what fits)."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("max_entries", c_uint32),
        ("map_flags", c_uint32),
        ("name", ctypes.c_char * 16),
        ("ifindex", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
    ]


class btf_type(Structure):
    _fields_ = [("name_off", c_uint32), ("info", c_uint32), ("size_or_type", c_uint32)]


class btf_member(Structure):
    _fields_ = [("name_off", c_uint32), ("type", c_uint32), ("offset", c_uint32)]


class btf_enum(Structure):
    _fields_ = [("name_off", c_uint32), ("val", ctypes.c_int32)]


class btf_var_secinfo(Structure):
    _fields_ = [("type", c_uint32), ("offset", c_uint32), ("size", c_uint32)]


PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)

# Checkers: how each function reports failure.
_INT = "int"        # returns negative errno
_PTR = "ptr"        # returns NULL and sets errno
_NONE = "none"      # cannot fail

# name: (restype, argtypes, checker)
SIGNATURES = {
    "libbpf_set_print": (c_void_p, [PRINT_FN], _NONE),
    "bpf_object__open_file": (c_void_p, [c_char_p, POINTER(bpf_object_open_opts)], _PTR),
    "bpf_object__load": (c_int, [c_void_p], _INT),
    "bpf_object__close": (None, [c_void_p], _NONE),
    "bpf_object__name": (c_char_p, [c_void_p], _NONE),
    "bpf_object__btf": (c_void_p, [c_void_p], _NONE),
    "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p], _NONE),
    "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p], _NONE),
    "bpf_map__name": (c_char_p, [c_void_p], _NONE),
    "bpf_map__fd": (c_int, [c_void_p], _NONE),
    "bpf_map__type": (c_int, [c_void_p], _NONE),
    "bpf_map__key_size": (c_uint32, [c_void_p], _NONE),
    "bpf_map__value_size": (c_uint32, [c_void_p], _NONE),
    "bpf_map__max_entries": (c_uint32, [c_void_p], _NONE),
    "bpf_map__map_flags": (c_uint32, [c_void_p], _NONE),
    "bpf_map__btf_value_type_id": (c_uint32, [c_void_p], _NONE),
    "bpf_map__initial_value": (c_void_p, [c_void_p, POINTER(c_size_t)], _NONE),
    "bpf_map__pin": (c_int, [c_void_p, c_char_p], _INT),
    "bpf_map__unpin": (c_int, [c_void_p, c_char_p], _INT),
    "bpf_map__reuse_fd": (c_int, [c_void_p, c_int], _INT),
    "bpf_map__update_elem": (c_int, [c_void_p, c_void_p, c_size_t, c_void_p, c_size_t, ctypes.c_uint64], _INT),
    "bpf_map__lookup_elem": (c_int, [c_void_p, c_void_p, c_size_t, c_void_p, c_size_t, ctypes.c_uint64], _INT),
    "bpf_map__delete_elem": (c_int, [c_void_p, c_void_p, c_size_t, ctypes.c_uint64], _INT),
    "bpf_program__name": (c_char_p, [c_void_p], _NONE),
    "bpf_program__section_name": (c_char_p, [c_void_p], _NONE),
    "bpf_program__fd": (c_int, [c_void_p], _NONE),
    "bpf_program__set_autoload": (c_int, [c_void_p, c_bool], _INT),
    "bpf_program__set_log_level": (c_int, [c_void_p, c_uint32], _INT),
    "bpf_program__flags": (c_uint32, [c_void_p], _NONE),
    "bpf_program__set_flags": (c_int, [c_void_p, c_uint32], _INT),
    "bpf_program__set_log_buf": (c_int, [c_void_p, c_void_p, c_size_t], _INT),
    "bpf_program__attach": (c_void_p, [c_void_p], _PTR),
    "bpf_link__destroy": (c_int, [c_void_p], _NONE),
    "bpf_link__fd": (c_int, [c_void_p], _NONE),
    "bpf_link__pin": (c_int, [c_void_p, c_char_p], _INT),
    "bpf_link__unpin": (c_int, [c_void_p], _INT),
    "bpf_prog_test_run_opts": (c_int, [c_int, POINTER(bpf_test_run_opts)], _INT),
    "bpf_obj_get": (c_int, [c_char_p], _INT),
    "bpf_raw_tracepoint_open": (c_int, [c_char_p, c_int], _INT),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, POINTER(c_uint32)], _INT),
    "bpf_obj_pin": (c_int, [c_int, c_char_p], _INT),
    "bpf_prog_get_fd_by_id": (c_int, [c_uint32], _INT),
    "bpf_map_get_fd_by_id": (c_int, [c_uint32], _INT),
    "bpf_map_create": (c_int, [c_int, c_char_p, c_uint32, c_uint32, c_uint32,
                               POINTER(bpf_map_create_opts)], _INT),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64], _INT),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p], _INT),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p], _INT),
    "btf__load_from_kernel_by_id": (c_void_p, [c_uint32], _PTR),
    "btf__parse_raw": (c_void_p, [c_char_p], _PTR),
    "btf__free": (None, [c_void_p], _NONE),
    "btf__type_cnt": (c_uint32, [c_void_p], _NONE),
    "btf__type_by_id": (POINTER(btf_type), [c_void_p, c_uint32], _NONE),
    "btf__name_by_offset": (c_char_p, [c_void_p, c_uint32], _NONE),
    "btf__find_by_name_kind": (c_int, [c_void_p, c_char_p, c_uint32], _INT),
    "btf__resolve_size": (ctypes.c_long, [c_void_p, c_uint32], _INT),
}


class _Messages(threading.local):
    """libbpf's recent warnings, per thread, to attach to the next error."""

    def __init__(self):
        self.lines = collections.deque(maxlen=40)


_messages = _Messages()
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
_libc.vsnprintf.restype = c_int

LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2


@PRINT_FN
def _print(level, fmt, args):
    # va_list decays to a pointer on x86-64 and arm64, so vsnprintf can take it.
    if level > LIBBPF_INFO:
        return 0
    buf = ctypes.create_string_buffer(4096)
    n = _libc.vsnprintf(buf, len(buf), fmt, args)
    if n > 0:
        _messages.lines.append(buf.value.decode(errors="replace").rstrip("\n"))
    return 0


def take_messages() -> str:
    """Return and forget libbpf's messages collected on this thread."""
    text = "\n".join(_messages.lines)
    _messages.lines.clear()
    return text


def _errcheck_int(name):
    def check(result, func, args):
        if result < 0:
            raise LibbpfError(-result, name, take_messages())
        return result
    return check


def _errcheck_ptr(name):
    def check(result, func, args):
        if not result:
            err = ctypes.get_errno() or errno.EINVAL
            raise LibbpfError(err, name, take_messages())
        return result
    return check


def _path() -> str:
    return os.environ.get(LIBBPF_ENV, DEFAULT_LIBBPF)


def _load() -> ctypes.CDLL:
    path = _path()
    try:
        lib = ctypes.CDLL(path, use_errno=True)
    except OSError as exc:
        raise ImportError(
            f"cannot load libbpf from {path!r} ({exc}); install Debian's libbpf1 "
            f"or point {LIBBPF_ENV} at a libbpf.so.1") from None
    for name, (restype, argtypes, checker) in SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise ImportError(f"{path} lacks {name}(); uptrkv needs libbpf >= 1.0") from None
        fn.restype = restype
        fn.argtypes = argtypes
        if checker == _INT:
            fn.errcheck = _errcheck_int(name)
        elif checker == _PTR:
            fn.errcheck = _errcheck_ptr(name)
    lib.libbpf_set_print(_print)
    return lib


lib = _load()


class _Hot:
    """The calls on hot paths, at the cost of a bare ctypes call.

    A second handle on the same library, without errno swapping, argument
    converters or Python error checkers: callers pass ctypes-ready arguments
    (int fds, bytes or ctypes buffers, ``U64[...]`` flags) and check the
    negative errno that libbpf >= 1.0 returns, with :func:`check`.
    """

    def __init__(self, path: str):
        handle = ctypes.CDLL(path)
        self.bpf_map_lookup_elem = handle.bpf_map_lookup_elem
        self.bpf_map_update_elem = handle.bpf_map_update_elem
        self.bpf_map_delete_elem = handle.bpf_map_delete_elem
        self.bpf_prog_test_run_opts = handle.bpf_prog_test_run_opts
        for fn in (self.bpf_map_lookup_elem, self.bpf_map_update_elem,
                   self.bpf_map_delete_elem, self.bpf_prog_test_run_opts):
            fn.restype = c_int


hot = _Hot(_path())
# 64-bit flag arguments for hot calls (no argtypes there to widen an int).
U64 = [ctypes.c_uint64(i) for i in range(8)]


def check(rc: int, call: str) -> int:
    """Raise LibbpfError for a hot call's negative errno."""
    if rc < 0:
        raise LibbpfError(-rc, call, take_messages())
    return rc
