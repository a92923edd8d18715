"""The kernel's payload verdicts (`quiet` map, its per-CPU memo, SYN resets), run on the real
programs with BPF_PROG_TEST_RUN: packets in, ring records out, no interface or namespace."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from bpfrun import NETNS_ID, loaded, run_packet

from bpfnetlog.capture.ebpf import loader
from bpfnetlog.capture.ebpf.ringbuf import Rings
from bpfnetlog.packets import DIR_INGRESS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)")

CLIENT, SERVER = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2])


def frame(flags: int, payload: bytes) -> bytes:
    """Ethernet + IPv4 + TCP 10.9.0.1:40000 -> 10.9.0.2:80."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1000, 2000, 5 << 4, flags, 512, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 1, 0x4000, 64, 6, 0, CLIENT, SERVER)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp + payload


@pytest.fixture
def kernel():
    with loaded() as obj_rings:
        yield obj_rings


def run(obj: loader.NetlogObject, rings: Rings, data: bytes) -> dict[str, int]:
    """One packet through the ingress program; its record's fields."""
    rec, _ = run_packet(obj, rings, data)
    assert rec
    return rec


def key(rec: dict[str, int]) -> np.ndarray:
    """The flow of frame()'s packets at this ingress, as the kernel keys it."""
    return loader.flow_key(rec["ifindex"], NETNS_ID, 6, DIR_INGRESS, b"\0" * 10 + b"\xff\xff" + CLIENT, 40000,
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
