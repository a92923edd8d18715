"""ctypes bindings for the part of Debian's libbpf1 (1.1.x) that capture needs.

PyPI's libbpf wrappers cannot attach tc programs (FACTS.md), so the few calls
are declared here. Every function that fails raises `BpfError` with errno and,
for a failed load, the tail of libbpf's log (the verifier's message).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections import deque

LIBBPF_PATHS = ("libbpf.so.1", "/usr/lib/x86_64-linux-gnu/libbpf.so.1")

BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47
BPF_TC_INGRESS, BPF_TC_EGRESS = 1, 2
BPF_ANY = 0


class BpfError(OSError):
    """A libbpf or bpf(2) failure; `str()` says what failed and, for loads, why."""


class TcHook(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
    ]


class TcOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
    ]


class BatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_log: deque[str] = deque(maxlen=40)  # libbpf's recent messages, for error reports


def _load() -> ctypes.CDLL:
    for path in LIBBPF_PATHS:
        try:
            return ctypes.CDLL(path, use_errno=True)
        except OSError:
            continue
    raise BpfError(errno.ENOENT, "libbpf.so.1 not found: install the libbpf1 package (apt install libbpf1)")


_lib = _load()
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

_P, _I, _U32, _S = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
for _name, _res, _args in [
    ("libbpf_set_print", _P, [_PRINT_FN]),
    ("libbpf_num_possible_cpus", _I, []),
    ("bpf_object__open_file", _P, [ctypes.c_char_p, _P]),
    ("bpf_object__load", _I, [_P]),
    ("bpf_object__close", None, [_P]),
    ("bpf_object__find_map_by_name", _P, [_P, ctypes.c_char_p]),
    ("bpf_object__find_program_by_name", _P, [_P, ctypes.c_char_p]),
    ("bpf_map__fd", _I, [_P]),
    ("bpf_map__reuse_fd", _I, [_P, _I]),
    ("bpf_map__set_max_entries", _I, [_P, _U32]),
    ("bpf_map__set_inner_map_fd", _I, [_P, _I]),
    ("bpf_map_create", _I, [_I, ctypes.c_char_p, _U32, _U32, _U32, _P]),
    ("bpf_map__initial_value", _P, [_P, ctypes.POINTER(_S)]),
    ("bpf_program__fd", _I, [_P]),
    ("bpf_link_create", _I, [_I, _I, _I, _P]),
    ("bpf_tc_hook_create", _I, [ctypes.POINTER(TcHook)]),
    ("bpf_tc_hook_destroy", _I, [ctypes.POINTER(TcHook)]),
    ("bpf_tc_attach", _I, [ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts)]),
    ("bpf_tc_detach", _I, [ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts)]),
    ("bpf_tc_query", _I, [ctypes.POINTER(TcHook), ctypes.POINTER(TcOpts)]),
    ("bpf_map_update_elem", _I, [_I, _P, _P, ctypes.c_uint64]),
    ("bpf_map_lookup_elem", _I, [_I, _P, _P]),
    ("bpf_map_delete_elem", _I, [_I, _P]),
    ("bpf_map_lookup_batch", _I, [_I, _P, _P, _P, _P, ctypes.POINTER(_U32), ctypes.POINTER(BatchOpts)]),
    ("bpf_prog_get_fd_by_id", _I, [_U32]),
    ("bpf_obj_get_info_by_fd", _I, [_I, _P, ctypes.POINTER(_U32)]),
]:
    _f = getattr(_lib, _name)
    _f.restype, _f.argtypes = _res, _args
_libc.vsnprintf.argtypes = [ctypes.c_char_p, _S, ctypes.c_char_p, _P]


@_PRINT_FN
def _print(level: int, fmt: bytes, args: int) -> int:
    buf = ctypes.create_string_buffer(1024)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    _log.append(buf.value.decode(errors="replace").rstrip())
    return 0


_lib.libbpf_set_print(_print)  # keep libbpf quiet; its words only go into errors


def log_tail(lines: int = 15) -> str:
    """libbpf's last messages (verifier output of a failed load)."""
    return "\n".join(list(_log)[-lines:])


def check(ret: int, what: str, with_log: bool = False) -> int:
    """Raise BpfError for a negative libbpf return (-errno), else return it."""
    if ret is not None and ret >= 0:
        return ret
    err = -ret if ret else ctypes.get_errno()
    msg = f"{what}: {os.strerror(err)}"
    if with_log:
        msg += "\n" + log_tail()
    raise BpfError(err, msg)


def check_ptr(ptr: int | None, what: str) -> int:
    """Raise BpfError for a NULL pointer returned by libbpf (errno holds the cause)."""
    if not ptr:
        err = ctypes.get_errno() or errno.ENOENT
        raise BpfError(err, f"{what}: {os.strerror(err)}\n{log_tail()}")
    return ptr


def num_possible_cpus() -> int:
    return check(_lib.libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


lib = _lib
