"""pcap/pcapng reader: formats, interfaces, frame numbers, timestamps, damaged and hostile files."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.utils import wrpcap

from bpfnetlog.capture.pcap import PcapError, PcapReader, read_pcap
from bpfnetlog.packets import PacketBatch, SourceStats
from tests import pcapgen

SEC = 1_700_000_000
F_TCP = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2")
              / TCP(sport=1000, dport=80, seq=11, ack=22, flags="PA") / b"hello")
F_UDP = bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=53, dport=1000) / b"dns")
F_ARP = bytes(Ether() / ARP())
R_TCP6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=2000, dport=443, seq=33) / b"raw6")


def read(path: Path, **kw) -> tuple[PacketBatch, SourceStats, PcapReader]:
    """All batches of a file concatenated (tests read small files), its stats and the reader."""
    r = PcapReader(path, **kw)
    batches = list(r.batches())
    for b in batches:
        assert b.data.base is not None  # a view of the mapped file, not a copy
    if not batches:
        return PacketBatch.empty(r.nics), r.stats, r
    cols = {k: np.concatenate([b.cols[k] for b in batches]) for k in batches[0].cols}
    return (PacketBatch(cols, np.concatenate([b.src_ip for b in batches]),
                        np.concatenate([b.dst_ip for b in batches]), batches[0].data, r.nics), r.stats, r)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_scapy_pcap_us(tmp_path: Path) -> None:
    pkts = [Ether(F_TCP), Ether(F_ARP), Ether(F_UDP)]
    for i, p in enumerate(pkts):
        p.time = SEC + i + 0.000123
    wrpcap(str(tmp_path / "eth0.pcap"), pkts)
    b, stats, r = read(tmp_path / "eth0.pcap")
    assert (stats.packets, stats.decoded, stats.skipped, stats.malformed, stats.errors) == (3, 2, 1, 0, [])
    assert stats.source == "eth0.pcap" and [n.name for n in r.nics] == ["eth0"]
    assert list(b.frame) == [1, 3]
    assert list(b.ts) == [SEC * 10**9 + 123_000, (SEC + 2) * 10**9 + 123_000]
    assert (b.seq[0], b.ack[0], b.sport[0], b.dport[0]) == (11, 22, 1000, 80)
    assert b.payload(0) == b"hello" and b.payload(1) == b"dns"
    # Zero copy: payload offsets are offsets into the file itself.
    raw = (tmp_path / "eth0.pcap").read_bytes()
    assert len(b.data) == len(raw) and raw[b.payload_off[0]:b.payload_off[0] + 5] == b"hello"


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("ns", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, big: bool, ns: bool) -> None:
    frac = 123_456_789 if ns else 123_456
    data = pcapgen.pcap([(SEC, frac, F_TCP), (SEC + 1, 0, F_UDP)], ns=ns, big=big)
    b, stats, _ = read(write(tmp_path, "x.pcap", data))
    assert stats.decoded == 2 and stats.errors == []
    assert b.ts[0] == SEC * 10**9 + (frac if ns else frac * 1000)
    assert b.ts[1] == (SEC + 1) * 10**9
    assert b.payload(0) == b"hello"


def test_pcap_raw_linktype_and_fcs_bits(tmp_path: Path) -> None:
    data = pcapgen.pcap([(SEC, 0, R_TCP6)], linktype=101 | 0x10000000)
    b, stats, _ = read(write(tmp_path, "raw.pcap", data))
    assert stats.decoded == 1 and b.seq[0] == 33 and b.payload(0) == b"raw6"


def test_small_batches_number_frames_across_the_file(tmp_path: Path) -> None:
    frames = [(SEC, i, [F_TCP, F_ARP, F_UDP][i % 3]) for i in range(10)]
    path = write(tmp_path, "b.pcap", pcapgen.pcap(frames))
    r = PcapReader(path, batch_size=3)
    batches = list(r.batches())
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    assert np.concatenate([b.frame for b in batches]).tolist() == [1, 3, 4, 6, 7, 9, 10]
    assert (r.stats.packets, r.stats.decoded, r.stats.skipped) == (10, 7, 3)
    assert [f for b in read_pcap(path, batch_size=4) for f in b.frame] == [1, 3, 4, 6, 7, 9, 10]


def test_nic_name_argument(tmp_path: Path) -> None:
    path = write(tmp_path, "cap.pcap", pcapgen.pcap([(SEC, 0, F_TCP)]))
    _, _, r = read(path, nic_name="veth1")
    assert [n.name for n in r.nics] == ["veth1"]


def test_pcapng_two_interfaces(tmp_path: Path) -> None:
    mac = bytes.fromhex("020000aabbcc")
    data = (pcapgen.shb()
            + pcapgen.idb(1, name="eth0", mac=mac)  # default resolution: microseconds
            + pcapgen.idb(101, name="tun0", tsresol=9)
            + pcapgen.epb(0, SEC * 10**6 + 5, F_TCP)
            + pcapgen.epb(1, SEC * 10**9 + 7, R_TCP6)
            + pcapgen.epb(0, SEC * 10**6 + 6, F_ARP)
            + pcapgen.block(5, b"\0" * 20)  # interface statistics: not a packet
            + pcapgen.epb(1, SEC * 10**9 + 8, bytes(IP() / ICMP())))
    b, stats, r = read(write(tmp_path, "two.pcapng", data))
    assert [(n.name, n.mac) for n in r.nics] == [("eth0", "02:00:00:aa:bb:cc"), ("tun0", "")]
    assert (stats.packets, stats.decoded, stats.skipped, stats.errors) == (4, 2, 2, [])
    assert list(b.frame) == [1, 2] and list(b.nic) == [0, 1]
    assert list(b.ts) == [SEC * 10**9 + 5000, SEC * 10**9 + 7]
    assert b.payload(0) == b"hello" and b.payload(1) == b"raw6" and b.ip_version[1] == 6


def test_pcapng_spb_pb_sections_and_names(tmp_path: Path) -> None:
    data = (pcapgen.shb()
            + pcapgen.idb(1, tsresol=0x80 | 10, tsoffset=5)  # unnamed, 2^-10 s units, +5 s
            + pcapgen.pb(0, 1024 * 3 + 512, F_TCP)
            + pcapgen.spb(F_UDP)
            + pcapgen.block(4, b"\0" * 4)  # name resolution: skipped
            + pcapgen.shb(big=True)  # new section: interface ids restart, byte order flips
            + pcapgen.idb(101, name="lo", tsresol=3, big=True)
            + pcapgen.idb(1, big=True)
            + pcapgen.epb(1, 77, F_UDP, big=True)
            + pcapgen.epb(0, 2000, R_TCP6, big=True))
    b, stats, r = read(write(tmp_path, "sec.pcapng", data))
    assert stats.errors == [] and stats.decoded == 4
    assert [n.name for n in r.nics] == ["sec", "lo", "sec:1"]
    assert list(b.nic) == [0, 0, 2, 1] and list(b.frame) == [1, 2, 3, 4]
    # PB at 3.5 s + 5 s offset; the SPB carries no timestamp and keeps the previous one.
    assert list(b.ts) == [8_500_000_000, 8_500_000_000, 77_000, 2_000_000_000]
    assert b.payload(1) == b"dns" and b.payload(3) == b"raw6"


def test_pcapng_picosecond_resolution(tmp_path: Path) -> None:
    data = pcapgen.shb() + pcapgen.idb(1, tsresol=12) + pcapgen.epb(0, 1_700 * 10**12 + 5_000, F_TCP)
    b, _, _ = read(write(tmp_path, "ps.pcapng", data))
    assert list(b.ts) == [1_700 * 10**9 + 5]


def test_pcapng_spb_cut_by_snaplen(tmp_path: Path) -> None:
    frame = bytes(Ether() / IP() / TCP() / (b"x" * 105))
    data = pcapgen.shb() + pcapgen.idb(1, snaplen=60) + pcapgen.spb(frame)
    b, stats, _ = read(write(tmp_path, "spb.pcapng", data))
    assert stats.decoded == 1 and b.payload_len[0] == 105 and b.payload_cap[0] == 60 - 54


def test_pcapng_interface_statistics_give_drops(tmp_path: Path) -> None:
    data = (pcapgen.shb() + pcapgen.idb(1, name="a") + pcapgen.idb(1, name="b")
            + pcapgen.isb(0, ifdrop=5) + pcapgen.epb(0, 0, F_TCP) + pcapgen.isb(1, osdrop=3)
            + pcapgen.isb(0, ifdrop=7, osdrop=2)  # totals: replaces the first ISB of interface 0
            + pcapgen.shb(big=True) + pcapgen.idb(1, name="a", big=True) + pcapgen.isb(0, ifdrop=4, big=True))
    _, stats, _ = read(write(tmp_path, "d.pcapng", data))
    assert (stats.packets, stats.dropped, stats.errors) == (1, 9 + 3 + 4, [])


def test_pcapng_nic_name_argument_overrides_if_name(tmp_path: Path) -> None:
    data = (pcapgen.shb() + pcapgen.idb(1, name="eth0") + pcapgen.idb(1, name="eth1")
            + pcapgen.epb(1, 0, F_TCP))
    b, _, r = read(write(tmp_path, "o.pcapng", data), nic_name="pod0")
    assert [n.name for n in r.nics] == ["pod0"] and list(b.nic) == [0]


def test_truncated_pcap_keeps_earlier_records(tmp_path: Path) -> None:
    data = pcapgen.pcap([(SEC, 0, F_TCP), (SEC, 1, F_UDP), (SEC, 2, F_TCP)])
    cut = len(data) - 10
    b, stats, _ = read(write(tmp_path, "cut.pcap", data[:cut]))
    start = 24 + 2 * 16 + len(F_TCP) + len(F_UDP)
    assert stats.packets == 2 and list(b.frame) == [1, 2]
    assert stats.errors == [f"cut.pcap: truncated packet record at byte {start} "
                            f"(caplen {len(F_TCP)}, {len(F_TCP) - 10} bytes left); 2 packets read before it"]
    _, stats, _ = read(write(tmp_path, "hdr.pcap", data[:start + 5]))
    assert stats.errors == [f"hdr.pcap: truncated packet record header at byte {start} (5 bytes left); "
                            "2 packets read before it"]


def test_pcap_huge_caplen(tmp_path: Path) -> None:
    data = bytearray(pcapgen.pcap([(SEC, 0, F_TCP), (SEC, 0, F_TCP)]))
    at = 24 + 16 + len(F_TCP) + 8  # caplen of the second record
    data[at : at + 4] = b"\xff\xff\xff\xff"
    _, stats, _ = read(write(tmp_path, "huge.pcap", bytes(data)))
    assert stats.packets == 1
    assert stats.errors == [f"huge.pcap: corrupt packet record at byte {24 + 16 + len(F_TCP)} "
                            "(caplen 4294967295 > 262144); 1 packets read before it"]


@pytest.mark.parametrize("blen,what", [
    (0, "corrupt block at byte {p} (bad block length 0)"),
    (30, "corrupt block at byte {p} (bad block length 30)"),
    (1 << 20, "truncated block at byte {p} (length 1048576, {left} bytes left)"),
    (36, "corrupt block at byte {p} (block length 36 does not match its trailer)"),
])
def test_pcapng_corrupt_block_length(tmp_path: Path, blen: int, what: str) -> None:
    head = pcapgen.shb() + pcapgen.idb(1) + pcapgen.epb(0, 0, F_TCP)
    bad = bytearray(pcapgen.epb(0, 0, F_UDP) + pcapgen.epb(0, 0, F_UDP))
    bad[4:8] = blen.to_bytes(4, "little")
    b, stats, _ = read(write(tmp_path, "c.pcapng", head + bytes(bad)))
    assert stats.packets == 1 and b.payload(0) == b"hello"
    msg = what.format(p=len(head), left=len(bad))
    assert stats.errors == [f"c.pcapng: {msg}; 1 packets read before it"]


def test_pcapng_undeclared_interface_and_bad_idb(tmp_path: Path) -> None:
    head = pcapgen.shb() + pcapgen.idb(1) + pcapgen.epb(0, 0, F_TCP)
    _, stats, _ = read(write(tmp_path, "i.pcapng", head + pcapgen.epb(3, 0, F_TCP)))
    assert stats.errors == [f"i.pcapng: corrupt block at byte {len(head)} (packet of undeclared "
                            "interface 3); 1 packets read before it"]
    bad_idb = bytearray(pcapgen.idb(1, name="x"))
    bad_idb[-4:] = b"\0\0\0\0"
    _, stats, _ = read(write(tmp_path, "j.pcapng", head + bytes(bad_idb) + pcapgen.epb(0, 0, F_TCP)))
    assert stats.packets == 1 and stats.errors == [
        f"j.pcapng: corrupt block at byte {len(head)} (block length {len(bad_idb)} does not match "
        "its trailer); 1 packets read before it"]


def test_pcapng_truncated_in_last_block(tmp_path: Path) -> None:
    data = pcapgen.shb() + pcapgen.idb(1) + pcapgen.epb(0, 0, F_TCP) + pcapgen.epb(0, 0, F_UDP)
    _, stats, _ = read(write(tmp_path, "t.pcapng", data[:-3]))
    assert stats.packets == 1 and "truncated block at byte" in stats.errors[0]


@pytest.mark.parametrize("data,msg", [
    (b"", "empty file"),
    (b"\x01\x02", "not a pcap or pcapng file"),
    (b"GET / HTTP/1.1\r\n" * 4, "not a pcap or pcapng file (magic 0x47455420)"),
    (pcapgen.pcap([])[:20], "truncated pcap file header"),
])
def test_not_a_capture(tmp_path: Path, data: bytes, msg: str) -> None:
    path = write(tmp_path, "bad.bin", data)
    with pytest.raises(PcapError, match="bad.bin") as e:
        PcapReader(path)
    assert msg in str(e.value)
    with pytest.raises(PcapError):
        PcapReader(tmp_path / "missing.pcap")


def test_header_only_files(tmp_path: Path) -> None:
    _, stats, _ = read(write(tmp_path, "h.pcap", pcapgen.pcap([])))
    assert (stats.packets, stats.errors) == (0, [])
    _, stats, _ = read(write(tmp_path, "h.pcapng", pcapgen.shb()))
    assert (stats.packets, stats.errors) == (0, [])


def _sample_files() -> list[bytes]:
    return [
        pcapgen.pcap([(SEC, i, f) for i, f in enumerate([F_TCP, F_ARP, F_UDP, F_TCP])]),
        pcapgen.pcap([(SEC, 0, R_TCP6), (SEC, 1, bytes(IP() / TCP()))], linktype=101, big=True, ns=True),
        pcapgen.shb() + pcapgen.idb(1, name="a") + pcapgen.epb(0, 1, F_TCP) + pcapgen.spb(F_UDP)
        + pcapgen.shb(big=True) + pcapgen.idb(101, name="b", big=True) + pcapgen.epb(0, 2, R_TCP6, big=True),
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, 2), cut=st.integers(0, 400), flips=st.lists(
    st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6), tail=st.binary(max_size=64))
def test_hostile_files_never_crash(which: int, cut: int, flips: list[tuple[int, int]], tail: bytes) -> None:
    data = bytearray(_sample_files()[which])
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    data = bytes(data[: max(cut, 1) if cut < len(data) else len(data)]) + tail
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d), "h.pcap", data)
        try:
            r = PcapReader(path, batch_size=2)
        except PcapError:
            return
        batches = list(r.batches())
    s = r.stats
    assert s.packets == s.decoded + s.skipped + s.malformed and len(s.errors) <= 1
    assert sum(len(b) for b in batches) == s.decoded
    for b in batches:
        assert np.all(b.payload_off + b.payload_cap <= len(b.data)) and np.all(b.payload_off >= 0)
        assert np.all(b.frame >= 1) and np.all(b.frame <= s.packets)
        assert np.all(b.nic < len(b.nics))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


CAPTURES = {  # tool command line (file and filter appended) -> what it exercises
    "tcpdump-ethernet": ["tcpdump", "-i", "lo", "-U", "-n", "-w"],
    "tcpdump-any-sll2-ns": ["tcpdump", "-i", "any", "-U", "-n", "--time-stamp-precision=nano", "-w"],
    "dumpcap-pcapng": ["dumpcap", "-q", "-i", "lo", "-w"],
}


TOOLS = ("tcpdump", "dumpcap", "tshark", "curl")


@pytest.mark.skipif(os.geteuid() != 0 or not all(shutil.which(t) for t in TOOLS),
                    reason="needs root, tcpdump, dumpcap, tshark and curl")
@pytest.mark.parametrize("capture", list(CAPTURES))
def test_loopback_capture_matches_tshark(tmp_path: Path, capture: str) -> None:
    """HTTP over IPv4 and IPv6 plus UDP datagrams on lo; every packet's fields as tshark sees them."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "big.bin").write_bytes(os.urandom(300_000))
    port = _free_port()
    pcap_path = tmp_path / "lo.cap"
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "::",
                               "--directory", str(tmp_path / "www")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cmd = CAPTURES[capture] + [str(pcap_path)]
    cmd += ["-f", f"port {port}"] if cmd[0] == "dumpcap" else [f"port {port}"]
    dump = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        end = time.monotonic() + 10
        while not (pcap_path.exists() and pcap_path.stat().st_size > 0) and time.monotonic() < end:
            time.sleep(0.05)  # the file header is written once the capture runs
        time.sleep(0.5)
        for url in (f"http://127.0.0.1:{port}/big.bin", f"http://[::1]:{port}/", f"http://127.0.0.1:{port}/x"):
            subprocess.run(["curl", "-s", "-g", "-o", "/dev/null", "-m", "10", url], check=False, timeout=20)
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_DGRAM) as u:
                for size in (0, 7, 1400):
                    u.sendto(b"u" * size, (host, port))
        time.sleep(0.5)
    finally:
        for proc in (dump, server):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    fields = ["frame.number", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "tcp.seq_raw",
              "tcp.ack_raw", "tcp.len", "udp.length", "frame.time_epoch"]
    shown = "(tcp or udp) and not icmp and not icmpv6"  # ICMP errors quote UDP headers
    out = subprocess.run(["tshark", "-r", str(pcap_path), "-Y", shown, "-T", "fields",
                          *(a for f in fields for a in ("-e", f))],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    expected = []
    for line in out.splitlines():
        frame, tsp, tdp, usp, udp, seq, ack, tlen, ulen, epoch = line.split("\t")
        sec, frac = epoch.split(".")
        expected.append((int(frame), int(tsp or usp), int(tdp or udp), int(seq or 0), int(ack or 0),
                         int(tlen) if tlen else int(ulen) - 8, int(sec) * 10**9 + int(frac.ljust(9, "0"))))
    b, stats, _ = read(pcap_path)
    got = [(int(f), int(sp), int(dp), int(s), int(a) if fl & 0x10 else 0, int(pl), int(t))
           for f, sp, dp, s, a, fl, pl, t in zip(b.frame, b.sport, b.dport, b.seq, b.ack, b.flags,
                                                 b.payload_len, b.ts)]
    assert stats.errors == [] and stats.malformed == 0
    assert set(b.ip_version) == {4, 6} and set(b.proto) == {6, 17}
    assert len(got) > 20 and got == expected
