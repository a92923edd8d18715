"""The kernel filter (compiled maps, evaluated here as the BPF program does) agrees with libpcap.

tcpdump is the oracle: the same expression is run by tcpdump over a pcap of
varied packets, and by a Python model of filter_pass() in bpf/netlog.bpf.c.
"""

from __future__ import annotations

import ipaddress
import random
import shutil
import struct
import subprocess

import pytest

from bpfnetlog.capture.ebpf.filter import CompiledFilter, FilterError, compile_filter

EXPRESSIONS = [
    "tcp port 80",
    "udp",
    "ip6",
    "host 10.0.0.1",
    "src host 10.0.0.1 and dst port 443",
    "net 10.0.0.0/8 and not port 22",
    "host 10.0.0.1 or net 10.1.0.0/16 and not port 22 or 443",
    "portrange 1000-2000",
    "src net 10.1 or dst host fd00::1",
    "ip6 and tcp",
    "not (tcp and port 80)",
    "ip and udp dst port 53",
    "src or dst port 53",
    "src and dst net 10.0.0.0/8",
    "port 80 or 443 or 8080",
    "! udp && (port 80 || port 53)",
    "tcp src portrange 1000-1500 or udp dst port 53",
    "net 10.1.0.0 mask 255.255.0.0 and not host 10.1.2.3",
    "net fd00::/64 and tcp",
]
V4 = ["10.0.0.1", "10.0.0.2", "10.1.2.3", "10.1.9.9", "192.168.1.1", "8.8.8.8"]
V6 = ["fd00::1", "fd00::2", "fd00:0:0:1::5", "2001:db8::1"]
PORTS = [22, 53, 80, 443, 1000, 1499, 1500, 2000, 2001, 8080, 40000]


def _mapped(ip: str) -> int:
    a = ipaddress.ip_address(ip)
    return int(a) | (0xFFFF << 32) if a.version == 4 else int(a)


def _model(f: CompiledFilter, proto: str, v: int, src: str, dst: str, sport: int, dport: int) -> bool:
    """filter_pass() of netlog.bpf.c over the compiled maps."""
    h = f.header[0]
    if not h["enabled"]:
        return True

    def lpm(ip: str) -> int:
        a, best, bits = _mapped(ip), -1, 0
        for plen, addr, b in f.lpm:
            net = int.from_bytes(addr, "big")
            if plen > best and (a >> (128 - plen)) == (net >> (128 - plen)):
                best, bits = plen, b
        return bits

    t = int(h["m_tcp"] if proto == "tcp" else h["m_udp"]) | int(h["m_ip4"] if v == 4 else h["m_ip6"])
    s, d = lpm(src), lpm(dst)
    t |= (s & int(h["m_src_addr"])) | (d & int(h["m_dst_addr"])) | ((s | d) & int(h["m_any_addr"]))
    s, d = f.ports.get(sport, 0), f.ports.get(dport, 0)
    t |= (s & int(h["m_src_port"])) | (d & int(h["m_dst_port"])) | ((s | d) & int(h["m_any_port"]))
    for c in h["clauses"][: h["nclauses"]]:
        pos, neg = int(c["pos"]), int(c["neg"])
        if t & pos == pos and t & neg == 0:
            return True
    return False


def _frame(proto: str, v: int, src: str, dst: str, sport: int, dport: int) -> bytes:
    """Ethernet + IP + TCP/UDP header, no payload (checksums do not matter to filters)."""
    l4 = (struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 1024, 0, 0) if proto == "tcp"
          else struct.pack("!HHHH", sport, dport, 8, 0))
    nh = 6 if proto == "tcp" else 17
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if v == 4:
        l3 = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(l4), 0, 0, 64, nh, 0) + s + d
    else:
        l3 = struct.pack("!IHBB", 6 << 28, len(l4), nh, 64) + s + d
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", 0x0800 if v == 4 else 0x86DD) + l3 + l4


@pytest.fixture(scope="module")
def packets(tmp_path_factory):
    """600 varied packets in a pcap; packet i has timestamp i seconds (tcpdump -tt names it)."""
    rng = random.Random(7)
    meta, out = [], [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(600):
        v = rng.choice([4, 6])
        src, dst = (rng.choice(V4), rng.choice(V4)) if v == 4 else (rng.choice(V6), rng.choice(V6))
        m = (rng.choice(["tcp", "udp"]), v, src, dst, rng.choice(PORTS), rng.choice(PORTS))
        frame = _frame(*m)
        out.append(struct.pack("<IIII", i, 0, len(frame), len(frame)) + frame)
        meta.append(m)
    path = tmp_path_factory.mktemp("flt") / "pkts.pcap"
    path.write_bytes(b"".join(out))
    return path, meta


@pytest.mark.skipif(not shutil.which("tcpdump"), reason="tcpdump missing")
@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_filter_agrees_with_libpcap(packets, expr):
    path, meta = packets
    out = subprocess.run(["tcpdump", "-tt", "-nn", "-r", str(path), expr], capture_output=True, text=True,
                         check=True).stdout
    want = {int(line.split(".")[0]) for line in out.splitlines() if line}
    f = compile_filter(expr)
    got = {i for i, m in enumerate(meta) if _model(f, *m)}
    assert got == want


def test_empty_filter_captures_everything():
    assert not compile_filter(None).header[0]["enabled"]
    assert not compile_filter("  ").header[0]["enabled"]


@pytest.mark.parametrize("expr", ["icmp", "ether host 1:2:3:4:5:6", "greater 100", "vlan", "tcp[13] & 2 != 0",
                                  "port 80 and", "(port 80", "net 10.0.0.1/8", "port 99999"])
def test_outside_subset_is_rejected(expr):
    with pytest.raises(FilterError):
        compile_filter(expr)


def test_too_many_clauses_is_rejected():
    expr = " and ".join(f"(port {p} or port {p + 1000})" for p in range(1, 8))  # 2**7 clauses
    with pytest.raises(FilterError, match="too complex"):
        compile_filter(expr)
