"""The kernel's header parsing, run on the real program with BPF_PROG_TEST_RUN.

parse_direct() (IPv4 without options or IPv6 without extension headers, then TCP or UDP, read
from the skb's linear data) must give the records parse() gives: each packet is checked against
the values it was built from, and against its VLAN-tagged copy, which only parse() handles."""

from __future__ import annotations

import os
import struct

import pytest
from bpfrun import loaded, run_packet

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)")

V4_A, V4_B = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2])
V6_A, V6_B = bytes.fromhex("fd00000000000000000000000000000a"), bytes.fromhex("fd00000000000000000000000000000b")
MAPPED = b"\0" * 10 + b"\xff\xff"
TIMESTAMPS = bytes([1, 1, 8, 10]) + bytes(8)  # NOP NOP TS: what Linux puts on every segment
SYN_OPTIONS = bytes([2, 4, 5, 0xB4, 4, 2, 8, 10]) + bytes(8) + bytes([1, 3, 3, 7])  # MSS SACK TS NOP WS=7


def tcp(flags: int, payload: bytes, options: bytes = b"", seq: int = 0xFFFF0001, ack: int = 0x01020304) -> bytes:
    return struct.pack("!HHIIBBHHH", 40000, 8080, seq, ack, (5 + len(options) // 4) << 4, flags, 0xFEDC, 0,
                       0) + options + payload  # fmt: skip


def udp(payload: bytes) -> bytes:
    return struct.pack("!HHHH", 5353, 53, 8 + len(payload), 0) + payload


def ipv4(proto: int, l4: bytes, options: bytes = b"", frag: int = 0x4000) -> bytes:
    ihl = 5 + len(options) // 4
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), 1, frag, 64, proto, 0, V4_A,
                       V4_B) + options + l4  # fmt: skip


def ipv6(nh: int, l4: bytes, ext: bytes = b"") -> bytes:
    first = nh if not ext else 0  # ext: one hop-by-hop header carrying nh
    return struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(l4), first, 64, V6_A, V6_B) + ext + l4


def eth(ethertype: int, l3: bytes, vlan: bool = False) -> bytes:
    tag = struct.pack("!HH", 0x8100, 42) if vlan else b""
    return b"\x02" * 6 + b"\x04" * 6 + tag + struct.pack("!H", ethertype) + l3


PAYLOAD = bytes(range(256)) * 2
# name -> (ethertype, L3 packet, the fields its record must have, its payload)
CASES = {
    "v4 tcp data": (0x0800, ipv4(6, tcp(0x18, PAYLOAD[:300], TIMESTAMPS)), {"proto": 6, "flags": 0x18, "payload_len": 300}, PAYLOAD[:300]),
    "v4 tcp ack": (0x0800, ipv4(6, tcp(0x10, b"")), {"proto": 6, "flags": 0x10, "payload_len": 0}, b""),
    "v4 syn, window scale": (0x0800, ipv4(6, tcp(0x02, b"", SYN_OPTIONS)), {"flags": 0x02, "wscale": 7}, b""),
    "v4 ip options": (0x0800, ipv4(6, tcp(0x18, PAYLOAD[:40]), options=bytes([1, 1, 1, 0])), {"payload_len": 40}, PAYLOAD[:40]),
    "v4 first fragment": (0x0800, ipv4(17, udp(PAYLOAD[:64]), frag=0x2000), {"proto": 17, "payload_len": 64}, PAYLOAD[:64]),
    "v4 udp": (0x0800, ipv4(17, udp(PAYLOAD[:100])), {"proto": 17, "payload_len": 100, "sport": 5353, "dport": 53}, PAYLOAD[:100]),
    "v4 udp, tiny": (0x0800, ipv4(17, udp(b"abc")), {"proto": 17, "payload_len": 3}, b"abc"),
    "v6 tcp data": (0x86DD, ipv6(6, tcp(0x18, PAYLOAD[:500], TIMESTAMPS)), {"ip_version": 6, "payload_len": 500}, PAYLOAD[:500]),
    "v6 udp": (0x86DD, ipv6(17, udp(PAYLOAD[:20])), {"ip_version": 6, "proto": 17, "payload_len": 20}, PAYLOAD[:20]),
    "v6 hop-by-hop": (0x86DD, ipv6(6, tcp(0x18, PAYLOAD[:10]), ext=bytes([6, 0, 1, 4, 0, 0, 0, 0])), {"ip_version": 6, "payload_len": 10}, PAYLOAD[:10]),
}  # fmt: skip


@pytest.fixture(scope="module")
def kernel():
    with loaded() as obj_rings:
        yield obj_rings


@pytest.mark.parametrize("name", CASES)
def test_record_has_the_packets_fields_on_both_parse_paths(kernel, name: str) -> None:
    ethertype, l3, expected, payload = CASES[name]
    v6 = ethertype == 0x86DD
    want = {"ip_version": 4, "proto": 6, "sport": 40000, "dport": 8080, "seq": 0xFFFF0001, "ack": 0x01020304,
            "win": 0xFEDC, "wscale": -1, "payload_cap": len(payload), **expected}  # fmt: skip
    if want["proto"] == 17:
        want.update(sport=5353, dport=53, seq=0, ack=0, win=0, flags=0)
    recs = []
    for vlan in (False, True):
        data = eth(ethertype, l3, vlan)
        rec, got_payload = run_packet(*kernel, data)
        assert rec, f"{name}: no record"
        assert {k: rec[k] for k in want} == want
        assert rec["wire_len"] == len(data)
        assert rec["src_ip"] == (V6_A if v6 else MAPPED + V4_A) and rec["dst_ip"] == (V6_B if v6 else MAPPED + V4_B)
        assert got_payload == payload
        recs.append({k: v for k, v in rec.items() if k not in ("ts", "wire_len", "payload_off")})
    assert recs[0] == recs[1]


@pytest.mark.parametrize("frame", [
    eth(0x0800, ipv4(1, bytes(40))),  # ICMP
    eth(0x0800, ipv4(17, udp(PAYLOAD[:64]), frag=0x0010)),  # a later fragment: no UDP header
    eth(0x0806, bytes(28)),  # ARP
    eth(0x0800, ipv4(6, tcp(0x10, b""))[:30]),  # cut inside the TCP header
], ids=["icmp", "later fragment", "arp", "truncated"])  # fmt: skip
def test_packets_without_a_transport_header_send_no_record(kernel, frame: bytes) -> None:
    rec, _ = run_packet(*kernel, frame)
    assert rec == {}
