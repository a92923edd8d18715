"""The kernel's payload verdicts (`quiet` map, its per-CPU memo, SYN resets), run on the real
programs with BPF_PROG_TEST_RUN: packets in, ring records out, no interface or namespace."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from bpfrun import NETNS_ID, RING, loaded, run_packet, send_packet

from bpfnetlog.capture.ebpf import loader
from bpfnetlog.capture.ebpf.record import STAT_RING_DROP, STAT_SHED
from bpfnetlog.capture.ebpf.ringbuf import NO_NICS, Rings
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


def test_a_ring_over_half_full_keeps_headers_and_sheds_payload(kernel) -> None:
    """Records of payload packets get their payload while the ring is at most half full; after
    that they come with headers only (counted as shed), so the ring keeps room for every
    packet's record instead of dropping whole records."""
    obj, rings = kernel
    data = frame(0x18, b"y" * 1000)  # a 56 + 1024-byte reservation (+ 8 of ring header) each
    per = 8 + 56 + 1024
    n = RING // per + 8  # more than the ring holds with payload
    for _ in range(n):
        send_packet(obj, data)
    cols, *_ = rings.read(0, NO_NICS)
    caps = cols["payload_cap"].tolist()
    full = (RING // 2) // per + 1  # the record that takes the ring past half is the last with payload
    assert caps == [1000] * full + [0] * (n - full)
    assert cols["payload_len"].tolist() == [1000] * n  # what the packet carried, kept
    stats = loader.read_stats(obj.map_fds["stats"])
    assert int(stats[STAT_SHED]) == n - full and int(stats[STAT_RING_DROP]) == 0
