"""Frame decoder: every link type, IP variant and TCP/UDP field, with exact values."""

from __future__ import annotations

import ipaddress
import struct
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from bpfnetlog.decode.frames import decode
from bpfnetlog.packets import (
    ACK, DIR_EGRESS, DIR_INGRESS, DIR_UNKNOWN, PROTO_TCP, PROTO_UDP, PSH, SYN, PacketBatch,
)

ETH = 1


def frame_arrays(frames: list[bytes], caplen: list[int] | None = None,
                 wire: list[int] | None = None, lead: int = 7) -> tuple[np.ndarray, ...]:
    """buf, off, caplen, wire_len of frames laid back to back after `lead` junk bytes."""
    buf = bytearray(b"\xee" * lead)
    offs = []
    for f in frames:
        offs.append(len(buf))
        buf += f
    return (np.frombuffer(bytes(buf), np.uint8), np.array(offs, np.int64),
            np.array(caplen or [len(f) for f in frames], np.uint32),
            np.array(wire or [len(f) for f in frames], np.uint32))


def run(frames: list[bytes], linktype: int = ETH, caplen: list[int] | None = None,
        wire: list[int] | None = None) -> tuple[PacketBatch, int, int]:
    """Decode frames with ts = 1000 * index + 5 and frame numbers from 1."""
    n = len(frames)
    return decode(*frame_arrays(frames, caplen, wire), np.full(n, linktype, np.int64),
                  np.arange(n, dtype=np.int64) * 1000 + 5, np.arange(1, n + 1, dtype=np.int64),
                  np.zeros(n, np.uint16), [])


def one(frame: bytes, linktype: int = ETH, **kw) -> PacketBatch:
    b, skipped, malformed = run([frame], linktype, **kw)
    assert (len(b), skipped, malformed) == (1, 0, 0)
    return b


def ip_of(row: np.ndarray) -> str:
    a = ipaddress.IPv6Address(bytes(row))
    return str(a.ipv4_mapped or a)


TCP4 = IP(src="10.1.2.3", dst="192.168.9.8") / TCP(
    sport=43210, dport=8080, seq=0xFFFFFFF0, ack=123456789, flags="PA", window=501
) / b"GET / HTTP/1.1\r\n\r\n"


def test_ethernet_ipv4_tcp_fields() -> None:
    b = one(bytes(Ether() / TCP4))
    assert b.ts[0] == 5 and b.frame[0] == 1 and b.nic[0] == 0
    assert b.ip_version[0] == 4 and b.proto[0] == PROTO_TCP
    assert (b.sport[0], b.dport[0]) == (43210, 8080)
    assert (b.seq[0], b.ack[0], b.win[0]) == (0xFFFFFFF0, 123456789, 501)
    assert b.flags[0] == PSH | ACK and b.wscale[0] == -1
    assert ip_of(b.src_ip[0]) == "10.1.2.3" and ip_of(b.dst_ip[0]) == "192.168.9.8"
    assert bytes(b.src_ip[0])[:12] == b"\0" * 10 + b"\xff\xff"
    assert b.payload_len[0] == 18 and b.payload_cap[0] == 18
    assert b.payload(0) == b"GET / HTTP/1.1\r\n\r\n"
    assert b.wire_len[0] == len(Ether() / TCP4)
    assert b.direction[0] == DIR_UNKNOWN and b.gso_segs[0] == 1


def test_syn_window_scale() -> None:
    syn = IP() / TCP(flags="S", options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)),
                                         ("NOP", None), ("WScale", 9)])
    assert one(bytes(syn), 101).wscale[0] == 9
    assert one(bytes(IP() / TCP(flags="S", options=[("MSS", 1460)])), 101).wscale[0] == -1
    assert one(bytes(IP() / TCP(flags="S", options=[("WScale", 20)])), 101).wscale[0] == 14
    # A window-scale option outside a SYN means nothing.
    assert one(bytes(IP() / TCP(flags="A", options=[("WScale", 7)])), 101).wscale[0] == -1
    b = one(bytes(IP() / TCP(flags="SA", options=[("WScale", 0)]) / b"x"), 101)
    assert b.wscale[0] == 0 and b.flags[0] == SYN | ACK and b.payload(0) == b"x"


def test_udp_and_ethernet_padding() -> None:
    b = one(bytes(Ether() / IP() / UDP(sport=5353, dport=53) / b"ab") + b"\0" * 16)
    assert b.proto[0] == PROTO_UDP and (b.sport[0], b.dport[0]) == (5353, 53)
    assert b.payload_len[0] == 2 and b.payload(0) == b"ab"
    assert (b.flags[0], b.seq[0], b.ack[0], b.win[0], b.wscale[0]) == (0, 0, 0, 0, -1)


def test_vlan_single_and_double() -> None:
    single = one(bytes(Ether() / Dot1Q(vlan=10) / TCP4))
    assert single.payload(0) == bytes(TCP4[TCP].payload)
    double = one(bytes(Ether() / Dot1AD(vlan=100) / Dot1Q(vlan=10) / TCP4))
    assert double.seq[0] == 0xFFFFFFF0 and double.payload(0) == bytes(TCP4[TCP].payload)
    v6 = one(bytes(Ether() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IPv6(src="fe80::1", dst="2001:db8::2")
                   / UDP(sport=1, dport=2) / b"v6"))
    assert ip_of(v6.dst_ip[0]) == "2001:db8::2" and v6.payload(0) == b"v6"


def test_cooked_sll_and_sll2() -> None:
    sll = struct.pack(">HHH8sH", 4, 1, 6, b"\x02" * 6 + b"\0\0", 0x0800)
    b = one(sll + bytes(TCP4), 113)
    assert b.dport[0] == 8080 and b.payload(0) == bytes(TCP4[TCP].payload)
    sll2 = struct.pack(">HHIHBB8s", 0x86DD, 0, 3, 1, 0, 6, b"\x02" * 8)
    b = one(sll2 + bytes(IPv6() / UDP(sport=7, dport=9) / b"z"), 276)
    assert (b.ip_version[0], b.sport[0], b.payload(0)) == (6, 7, b"z")
    arp = struct.pack(">HHH8sH", 0, 1, 6, b"\0" * 8, 0x0806)
    assert run([arp + bytes(ARP())], 113)[1:] == (1, 0)


@pytest.mark.parametrize("linktype", [101, 12, 14, 228])
def test_raw_ipv4(linktype: int) -> None:
    assert one(bytes(TCP4), linktype).seq[0] == 0xFFFFFFF0


@pytest.mark.parametrize("linktype", [101, 229])
def test_raw_ipv6(linktype: int) -> None:
    b = one(bytes(IPv6(src="2001:db8::1", dst="::1") / TCP(sport=1, dport=2, seq=7)), linktype)
    assert ip_of(b.src_ip[0]) == "2001:db8::1" and ip_of(b.dst_ip[0]) == "::1" and b.seq[0] == 7


@pytest.mark.parametrize("header,ver", [
    (struct.pack("<I", 2), 4), (struct.pack(">I", 2), 4),
    (struct.pack("<I", 30), 6), (struct.pack("<I", 24), 6), (struct.pack(">I", 10), 6),
])
def test_null_loopback(header: bytes, ver: int) -> None:
    ip = IP() if ver == 4 else IPv6()
    assert one(header + bytes(ip / UDP(sport=3, dport=4)), 0).ip_version[0] == ver
    assert one(header + bytes(ip / UDP(sport=3, dport=4)), 108).ip_version[0] == ver


def test_null_loopback_other_family_skipped() -> None:
    assert run([struct.pack("<I", 7) + bytes(TCP4)], 0)[1:] == (1, 0)


def test_ipv4_options() -> None:
    pkt = IP(options=[b"\x94\x04\x00\x00", b"\x01\x01\x01\x00"]) / TCP(dport=443) / b"opt"
    assert pkt[IP].ihl is None and len(IP(bytes(pkt)).options) >= 1
    b = one(bytes(Ether() / pkt))
    assert b.dport[0] == 443 and b.payload_len[0] == 3 and b.payload(0) == b"opt"


def test_ipv6_extension_headers() -> None:
    pkt = (IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting()
           / IPv6ExtHdrDestOpt() / TCP(sport=80, dport=9999, seq=42, flags="A") / b"data!")
    b = one(bytes(Ether() / pkt))
    assert (b.sport[0], b.seq[0], b.payload_len[0], b.payload(0)) == (80, 42, 5, b"data!")


def test_ipv6_fragments() -> None:
    first = IPv6() / IPv6ExtHdrFragment(offset=0, m=1, id=9) / UDP(sport=1, dport=2, len=1000) / (b"a" * 64)
    later = IPv6() / IPv6ExtHdrFragment(offset=9, m=0, id=9, nh=17) / (b"b" * 64)
    b, skipped, malformed = run([bytes(Ether() / first), bytes(Ether() / later)])
    assert (len(b), skipped, malformed) == (1, 1, 0)
    assert b.payload_len[0] == 64 and b.payload(0) == b"a" * 64  # this fragment's share


def test_ipv4_fragments() -> None:
    whole = IP(src="1.1.1.1", dst="2.2.2.2", id=77) / TCP(sport=5, dport=6, seq=1000) / (b"f" * 100)
    frags = [bytes(Ether() / f) for f in whole.fragment(48)]
    assert len(frags) == 3
    b, skipped, malformed = run(frags)
    assert (len(b), skipped, malformed) == (1, 2, 0)
    assert b.seq[0] == 1000 and b.frame[0] == 1 and b.payload_len[0] == 48 - 20


def test_snaplen_cut_keeps_true_length() -> None:
    frame = bytes(Ether() / IP() / TCP() / (b"p" * 1000))
    b = one(frame[:100], caplen=[100], wire=[len(frame)])
    assert b.payload_len[0] == 1000 and b.payload_cap[0] == 100 - 54 and b.payload(0) == b"p" * 46
    assert b.wire_len[0] == len(frame)


def test_tso_zero_ip_length_uses_wire() -> None:
    frame = bytearray(bytes(Ether() / IP() / TCP() / (b"s" * 3000)))
    frame[16:18] = b"\0\0"
    assert one(bytes(frame)).payload_len[0] == 3000


def test_skipped_not_tcp_udp() -> None:
    frames = [bytes(Ether() / ARP()), bytes(Ether() / IP() / ICMP()),
              bytes(Ether() / IPv6() / ICMPv6EchoRequest()), bytes(Ether(type=0x88CC) / (b"lldp" * 10)),
              bytes(Ether() / IP(proto=47) / (b"gre-ish" * 4))]
    b, skipped, malformed = run(frames)
    assert (len(b), skipped, malformed) == (0, 5, 0)
    assert run([bytes(TCP4)], linktype=127)[1:] == (1, 0)  # unknown link type


def test_malformed() -> None:
    good = bytes(Ether() / TCP4)
    bad_ihl = bytearray(good)
    bad_ihl[14] = 0x44
    bad_version = bytearray(good)
    bad_version[14] = 0x65
    bad_doff = bytearray(good)
    bad_doff[14 + 20 + 12] = 0x40
    short_total = bytearray(good)
    short_total[16:18] = struct.pack(">H", 30)  # total length shorter than IP+TCP headers
    cut_ext = bytes(Ether() / IPv6() / IPv6ExtHdrHopByHop(options=[]) / TCP())[:14 + 40 + 1]
    frames = [good[:10], good[:30], bytes(bad_ihl), bytes(bad_version), bytes(bad_doff),
              good[:14 + 20 + 10], bytes(short_total), cut_ext,
              bytes(Ether() / Dot1Q() / Dot1Q())[:16], bytes(Ether() / IP() / UDP())[:14 + 20 + 4]]
    b, skipped, malformed = run(frames)
    assert (len(b), skipped, malformed) == (0, 0, len(frames))


def test_compaction_keeps_order_and_frame_numbers() -> None:
    frames = [bytes(Ether() / ARP()), bytes(Ether() / IP() / TCP(seq=1)), b"\0" * 5,
              bytes(Ether() / IP() / UDP(sport=9)), bytes(Ether() / IP() / TCP(seq=2))]
    b, skipped, malformed = run(frames)
    assert list(b.frame) == [2, 4, 5] and list(b.ts) == [1005, 3005, 4005]
    assert list(b.proto) == [6, 17, 6] and (skipped, malformed) == (1, 1)
    for name, arr in b.cols.items():
        assert len(arr) == 3, name
    assert b.src_ip.shape == (3, 16)


def test_live_sources_pass_direction_and_gso() -> None:
    frames = [bytes(Ether() / ARP()), bytes(Ether() / TCP4), bytes(Ether() / IP() / UDP())]
    b, _, _ = decode(*frame_arrays(frames), np.ones(3, np.int64), np.zeros(3, np.int64),
                     np.arange(1, 4), np.zeros(3, np.uint16), [],
                     direction=np.array([DIR_INGRESS, DIR_EGRESS, DIR_INGRESS], np.uint8),
                     gso_segs=np.array([1, 44, 1], np.uint16))
    assert list(b.direction) == [DIR_EGRESS, DIR_INGRESS] and list(b.gso_segs) == [44, 1]


def test_decode_speed() -> None:
    """Several million frames/s on one core (the pipeline target is 500k packets/s end to end)."""
    tpl = [bytes(Ether() / IP() / TCP(flags="PA") / (b"x" * n)) for n in (0, 100, 1448)]
    tpl.append(bytes(Ether() / Dot1Q() / IPv6() / UDP() / (b"q" * 60)))
    n = 400_000
    args = frame_arrays([tpl[i % 4] for i in range(n)])
    rest = (np.ones(n, np.int64), np.zeros(n, np.int64), np.arange(1, n + 1), np.zeros(n, np.uint16), [])
    decode(*args, *rest)  # compile/load and fault the pages in outside the timing
    t = time.perf_counter()
    b, _, _ = decode(*args, *rest)
    rate = n / (time.perf_counter() - t)
    print(f"decode: {rate / 1e6:.2f} M frames/s")
    assert len(b) == n and rate > 1_000_000


@settings(max_examples=500, deadline=None)
@given(frames=st.lists(st.binary(max_size=120), min_size=1, max_size=8),
       linktype=st.sampled_from([0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 9999]),
       seed=st.sampled_from([b"", bytes(Ether() / TCP4),
                             bytes(Ether() / IPv6() / IPv6ExtHdrHopByHop() / UDP())]))
def test_random_frames_never_escape_their_bytes(frames: list[bytes], linktype: int, seed: bytes) -> None:
    frames = [seed[: len(f)] + f for f in frames]  # realistic prefixes reach the deeper parsers
    b, skipped, malformed = run(frames, linktype)
    assert len(b) + skipped + malformed == len(frames)
    args = frame_arrays(frames)
    ends = (args[1] + args[2])[b.frame - 1]
    assert np.all(b.payload_off + b.payload_cap <= ends)
    assert np.all(b.payload_cap <= b.payload_len)


def test_frames_outside_the_buffer_are_malformed() -> None:
    buf, off, cap, wire = frame_arrays([bytes(Ether() / TCP4)])
    cap[0] += 1
    b, skipped, malformed = decode(buf, off, cap, wire, np.ones(1, np.int64), np.zeros(1, np.int64),
                                   np.ones(1, np.int64), np.zeros(1, np.uint16), [])
    assert (len(b), skipped, malformed) == (0, 0, 1)
