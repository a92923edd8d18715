"""Packets through the real tc programs with BPF_PROG_TEST_RUN: bytes in, ring records out,
no interface or namespace. Shared by the tests of the kernel side's verdicts and parsing."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

from bpfnetlog.capture.ebpf import loader
from bpfnetlog.capture.ebpf.libbpf import lib
from bpfnetlog.capture.ebpf.ringbuf import NO_NIC, NO_NICS, Rings
from bpfnetlog.packets import DIR_INGRESS

RING = 1 << 16
NETNS_ID = 7


class RunOpts(ctypes.Structure):  # struct bpf_test_run_opts (libbpf 1.x)
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int),
                ("duration", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32)]  # fmt: skip


lib.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.POINTER(RunOpts)]
lib.bpf_prog_test_run_opts.restype = ctypes.c_int


@contextlib.contextmanager
def loaded() -> Iterator[tuple[loader.NetlogObject, Rings]]:
    """The programs with their rings, this thread pinned to one CPU (the quiet memo is per CPU)."""
    cpus = loader.online_cpus()
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})
    ring_fds = loader.create_rings(cpus, RING)
    obj = loader.NetlogObject(loader.object_path(), NETNS_ID, 1024, False, None, ring_fds, 1024)
    rings = Rings(list(ring_fds.values()), RING)
    try:
        yield obj, rings
    finally:
        rings.close()
        obj.close()
        for fd in ring_fds.values():
            os.close(fd)
        os.sched_setaffinity(0, affinity)


def send_packet(obj: loader.NetlogObject, data: bytes) -> None:
    """One packet through the ingress program; its record stays in the ring."""
    buf = ctypes.create_string_buffer(data, len(data))
    opts = RunOpts(sz=ctypes.sizeof(RunOpts), data_in=ctypes.cast(buf, ctypes.c_void_p),
                   data_size_in=len(data), repeat=1)  # fmt: skip
    assert lib.bpf_prog_test_run_opts(obj.prog_fd(DIR_INGRESS, False), ctypes.byref(opts)) == 0


def run_packet(obj: loader.NetlogObject, rings: Rings, data: bytes) -> tuple[dict[str, int], bytes]:
    """One packet through the ingress program: the fields of the records it sent (none: {}),
    and its payload bytes."""
    send_packet(obj, data)
    cols, src, dst, payload, (rows, keys) = rings.read(0, NO_NICS)  # told of no NIC: each record's key listed
    assert len(cols["ts"]) <= 1
    if not len(cols["ts"]):
        return {}, b""
    rec = {k: int(v[0]) for k, v in cols.items()}
    assert rec["nic"] == NO_NIC and rows.tolist() == [0]
    rec["netns_id"], rec["ifindex"] = int(keys[0]) >> 32, int(keys[0]) & 0xFFFFFFFF
    rec["src_ip"], rec["dst_ip"] = bytes(src[0]), bytes(dst[0])
    return rec, bytes(payload[rec["payload_off"] : rec["payload_off"] + rec["payload_cap"]])
