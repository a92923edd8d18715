"""The kernel's payload verdicts (`quiet` map, its per-CPU memo, SYN resets), run on the real
programs with BPF_PROG_TEST_RUN: packets in, ring records out, no interface or namespace."""

from __future__ import annotations

import ctypes
import os
import struct

import numpy as np
import pytest

from bpfnetlog.capture.ebpf import loader
from bpfnetlog.capture.ebpf.libbpf import lib
from bpfnetlog.capture.ebpf.ringbuf import Rings
from bpfnetlog.packets import DIR_INGRESS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)")

RING = 1 << 16


class RunOpts(ctypes.Structure):  # struct bpf_test_run_opts (libbpf 1.x)
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int),
                ("duration", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32)]  # fmt: skip


lib.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.POINTER(RunOpts)]
lib.bpf_prog_test_run_opts.restype = ctypes.c_int

CLIENT, SERVER = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2])


def frame(flags: int, payload: bytes) -> bytes:
    """Ethernet + IPv4 + TCP 10.9.0.1:40000 -> 10.9.0.2:80."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1000, 2000, 5 << 4, flags, 512, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 1, 0x4000, 64, 6, 0, CLIENT, SERVER)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp + payload


@pytest.fixture
def kernel():
    """The ingress program with its rings, run on one CPU (the memo is per CPU)."""
    cpus = loader.online_cpus()
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})
    ring_fds = loader.create_rings(cpus, RING)
    obj = loader.NetlogObject(loader.object_path(), 7, 1024, False, None, ring_fds, 1024)
    rings = Rings(list(ring_fds.values()), RING)
    try:
        yield obj, rings
    finally:
        rings.close()
        obj.close()
        for fd in ring_fds.values():
            os.close(fd)
        os.sched_setaffinity(0, affinity)


def run(obj: loader.NetlogObject, rings: Rings, data: bytes) -> dict[str, int]:
    """One packet through the ingress program; its record's fields."""
    buf = ctypes.create_string_buffer(data, len(data))
    opts = RunOpts(sz=ctypes.sizeof(RunOpts), data_in=ctypes.cast(buf, ctypes.c_void_p),
                       data_size_in=len(data), repeat=1)  # fmt: skip
    assert lib.bpf_prog_test_run_opts(obj.prog_fd(DIR_INGRESS, False), ctypes.byref(opts)) == 0
    cols, *_ = rings.read(0)
    assert len(cols["ts"]) == 1
    return {k: int(v[0]) for k, v in cols.items()}


def key(rec: dict[str, int]) -> np.ndarray:
    """The flow of frame()'s packets at this ingress, as the kernel keys it."""
    return loader.flow_key(rec["ifindex"], 7, 6, DIR_INGRESS, b"\0" * 10 + b"\xff\xff" + CLIENT, 40000,
                           b"\0" * 10 + b"\xff\xff" + SERVER, 80)  # fmt: skip


def test_quiet_verdicts_reach_every_packet_after_them(kernel) -> None:
    obj, rings = kernel
    quiet = loader.QuietFlows(obj.map_fds)
    data = frame(0x18, b"x" * 300)
    first = run(obj, rings, data)
    assert first["payload_cap"] == 300  # and this CPU's memo now says: not quiet
    flow = key(first)

    quiet.apply([flow], [])
    assert run(obj, rings, data)["payload_cap"] == 0  # the version moved: the memo is not used
    assert run(obj, rings, data)["payload_cap"] == 0  # now from the memo

    run(obj, rings, frame(0x02, b""))  # a SYN: a new connection on the same 5-tuple
    assert run(obj, rings, data)["payload_cap"] == 300

    quiet.apply([flow], [])
    assert run(obj, rings, data)["payload_cap"] == 0
    quiet.apply([], [flow])
    assert run(obj, rings, data)["payload_cap"] == 300
    other = frame(0x18, b"y" * 100)  # same flow, another packet: memo hit, still payload
    assert run(obj, rings, other)["payload_cap"] == 100
