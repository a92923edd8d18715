"""Live eBPF capture in lab namespaces: tcpdump agreement, following namespaces,
filter, ring overflow accounting, kill -9 and clsact cleanup, error messages.

Every source is restricted (`netns=`) to this test's own namespaces, so nothing is
attached to the host's interfaces and runs in parallel never see each other.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lab as L
import numpy as np
import pytest

from bpfnetlog.capture.ebpf import EbpfSource
from bpfnetlog.capture.errors import CaptureError
from bpfnetlog.capture.live import LiveSource
from bpfnetlog.packets import DIR_EGRESS, DIR_INGRESS, PacketBatch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
    pytest.mark.skipif(bool(L.missing_tools(["ip", "ethtool", "tcpdump", "curl", "nginx", "bpftool"])),
                       reason=f"missing: {L.missing_tools(['ip', 'ethtool', 'tcpdump', 'curl', 'nginx', 'bpftool'])}"),
]


@pytest.fixture(scope="module", autouse=True)
def bpf_object():
    obj = ROOT / "bpf" / "netlog.bpf.o"
    if not obj.exists() or obj.stat().st_mtime < (ROOT / "bpf" / "netlog.bpf.c").stat().st_mtime:
        subprocess.run([str(ROOT / "bpf" / "build.sh")], check=True)


@pytest.fixture
def lab():
    with L.Lab() as lab:
        yield lab
    # the kernel frees programs after an RCU grace period, not at close()
    assert _wait(lambda: not _netlog_programs(), 5), "programs left loaded after the test"


@pytest.fixture
def hosts(lab):
    return L.two_hosts(lab)


def _netlog_programs() -> list[str]:
    progs = json.loads(L.run(["bpftool", "-j", "prog", "show"]).stdout)
    return [p["name"] for p in progs if p.get("name", "").startswith("netlog_")]


class Collector:
    """Iterates a source's batches in a thread (as the pipeline would) until stop()."""

    def __init__(self, src: LiveSource):
        self.src, self.batches = src, []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for b in self.src.batches(timeout_s=0.2):
            if len(b):
                self.batches.append(b)

    def stop(self) -> list[tuple]:
        time.sleep(0.3)  # the last packets reach the ring
        self.src.stop()
        self.thread.join(5)
        assert not self.thread.is_alive()
        return [r for b in self.batches for r in rows(b)]


def rows(b: PacketBatch) -> list[tuple]:
    """(nic name, netns label, direction, src, dst, sport, dport, proto, seq, ack, flags, payload, gso_segs, plen)."""
    out = []
    for i in range(len(b)):
        nic = b.nics[b.nic[i]]
        out.append((nic.name, nic.netns, int(b.direction[i]), bytes(b.src_ip[i]), bytes(b.dst_ip[i]),
                    int(b.sport[i]), int(b.dport[i]), int(b.proto[i]), int(b.seq[i]), int(b.ack[i]),
                    int(b.flags[i]), b.payload(i), int(b.gso_segs[i]), int(b.payload_len[i])))
    return out


def _ip16(ip: str) -> bytes:
    import ipaddress

    a = ipaddress.ip_address(ip)
    return (b"\0" * 10 + b"\xff\xff" + a.packed) if a.version == 4 else a.packed


def _pcap_tcp(path: Path) -> list[tuple]:
    """(src, dst, sport, dport, seq, ack, flags, payload) of every TCP packet tcpdump wrote."""
    from scapy.all import IP, TCP, IPv6, rdpcap

    out = []
    for p in rdpcap(str(path)):
        ip = p[IP] if IP in p else p[IPv6] if IPv6 in p else None
        if ip is None or TCP not in p:
            continue
        t = p[TCP]
        out.append((_ip16(ip.src), _ip16(ip.dst), t.sport, t.dport, t.seq, t.ack, int(t.flags), bytes(t.payload)))
    return out


def _wait(pred, timeout: float = 6.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_records_equal_tcpdump(lab, hosts, tmp_path):
    """Same packets as tcpdump on the client veth: 5-tuple, seq, ack, flags, payload bytes."""
    c, s = hosts.a, hosts.b
    lab.nginx(s, ports=(8080,))
    cap = lab.capture(c, hosts.a_if, tmp_path / "c.pcap", extra=["tcp"])
    src = LiveSource(backend="ebpf", netns=[c.name, s.name], payload_snaplen=1024)
    src.start()
    assert src.stats().nics_attached == 4  # lo + veth0 in both namespaces
    col = Collector(src)
    L.curl(c, [L.url(hosts.b_ip, 8080, t) for t in ("/index.html", "/10k.bin", "/notfound/x")])
    L.curl(c, [L.url(hosts.b_ip6, 8080, "/1k.bin")])
    cap.stop()
    got = col.stop()
    want = _pcap_tcp(tmp_path / "c.pcap")
    on_client = [r for r in got if r[0] == hosts.a_if and r[1].endswith(":" + c.name) and r[7] == 6]
    assert all(r[12] == 1 for r in on_client), "no GSO expected on the client veth (offloads off)"
    mine = collections.Counter(r[3:7] + r[8:11] + (r[11],) for r in on_client)
    theirs = collections.Counter(w[:7] + (w[7][:1024],) for w in want)
    assert len(want) > 30
    assert mine == theirs
    # the server's egress may carry GSO super-packets: its segments and bytes still add up
    server_out = [r for r in got if r[1].endswith(":" + s.name) and r[0] == hosts.b_if and r[2] == DIR_EGRESS]
    segs, nbytes = collections.Counter(), collections.Counter()
    for r in server_out:
        segs[r[3:7]] += r[12] if r[13] else 1
        nbytes[r[3:7]] += r[13]
    wsegs, wbytes = collections.Counter(), collections.Counter()
    for w in want:
        if w[0] == _ip16(hosts.b_ip) or w[0] == _ip16(hosts.b_ip6):
            wsegs[w[:4]] += 1
            wbytes[w[:4]] += len(w[7])
    assert segs == wsegs and nbytes == wbytes
    st = src.stats()
    assert st.dropped == 0 and st.packets == len(got) and st.attach_mode == "tcx"


def test_namespace_followed_and_released(lab, hosts):
    c, s = hosts.a, hosts.b
    late = f"{lab.prefix}n"
    src = LiveSource(backend="ebpf", netns=[c.name, s.name, late], rescan_s=0.5)
    src.start()
    col = Collector(src)
    assert src.stats().nics_attached == 4
    n = lab.netns("n")  # created after start
    lab.link(c, n, "10.232.0.1", "10.232.0.2", a_if="veth1", b_if="veth0")
    assert _wait(lambda: src.stats().nics_attached == 7), src.stats()  # + c/veth1, n/lo, n/veth0
    n.run(["python3", "-c", "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                            "for _ in range(5): s.sendto(b'hello', ('10.232.0.1', 9999))"])
    time.sleep(0.3)
    lab.namespaces.remove(n)
    L.run(["ip", "netns", "delete", n.name])
    assert _wait(lambda: src.stats().nics_attached == 4), src.stats()
    # nothing pins the deleted namespace: its veth peer in c goes away
    assert _wait(lambda: "veth1" not in c.run(["ip", "-br", "link"]).stdout)
    got = col.stop()
    late_rows = [r for r in got if r[1].endswith(":" + n.name) and r[0] == "veth0"]
    assert len([r for r in late_rows if r[11] == b"hello" and r[2] == DIR_EGRESS]) == 5
    assert len([r for r in got if r[0] == "veth1" and r[11] == b"hello" and r[2] == DIR_INGRESS]) == 5


@pytest.mark.parametrize(("expr", "want_ports"), [("tcp port 8080", {8080}), ("tcp and not port 8080", {8081})])
def test_filter(lab, hosts, expr, want_ports):
    c, s = hosts.a, hosts.b
    lab.nginx(s, ports=(8080, 8081))
    src = LiveSource(backend="ebpf", filter=expr, netns=[c.name, s.name])
    src.start()
    col = Collector(src)
    L.curl(c, [L.url(hosts.b_ip, p, "/small.txt") for p in (8080, 8081)])
    got = col.stop()
    assert got
    assert {r[6] if r[2] == DIR_EGRESS and r[1].endswith(c.name) else r[5] for r in got
            if r[1].endswith(c.name) and r[0] == hosts.a_if} == want_ports
    assert all({r[5], r[6]} & want_ports for r in got)
    assert src.stats().filtered > 0


def test_ring_overflow_counts_exact(lab, hosts):
    """A one-page ring and a flood: every packet is a record or a counted loss, and per flow the
    records received plus the kernel's lost counts equal what was sent."""
    c, s = hosts.a, hosts.b
    src = EbpfSource(filter="udp port 9999", netns=[c.name, s.name], ring_bytes=4096)
    src.start()
    sent = int(c.run([sys.executable, "-c",
                      "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nn = 0\n"
                      f"for _ in range(20000):\n    n += s.sendto(b'x' * 100, ('{hosts.b_ip}', 9999)) == 100\n"
                      "print(n)"]).stdout)
    received = got_out = got_bytes = 0
    for b in src.batches(timeout_s=0.3):
        if not len(b):
            break
        received += len(b)
        out = [i for i in range(len(b)) if b.nics[b.nic[i]].netns.endswith(c.name)
               and b.direction[i] == DIR_EGRESS and b.dport[i] == 9999]  # fmt: skip
        got_out += len(out)
        got_bytes += int(b.wire_len[out].sum())
    st = src.stats()
    lost = src.ring_losses()
    src.stop()
    assert st.dropped > 0 and received == st.packets
    assert int(lost.values["packets"].sum()) == st.dropped
    client_out = [i for i in range(len(lost.values)) if lost.nics[lost.nic[i]].netns.endswith(c.name)
                  and lost.direction[i] == DIR_EGRESS and lost.dport[i] == 9999]
    assert len(client_out) <= 1 and sent == 20000  # one flow (none if it lost nothing)
    assert got_out + int(lost.values["packets"][client_out].sum()) == sent
    assert got_bytes + int(lost.values["bytes"][client_out].sum()) == sent * (14 + 20 + 8 + 100)


SCRIPT = """
import sys, time
from bpfnetlog.capture.live import LiveSource
src = LiveSource(backend="ebpf", netns=sys.argv[1].split(","), attach_mode=sys.argv[2])
src.start()
print("ready", src.stats().attach_mode, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("mode", ["tcx", "clsact"])
def test_kill9_leaves_nothing(lab, hosts, mode):
    c, s = hosts.a, hosts.b
    proc = lab.spawn(None, [sys.executable, "-c", SCRIPT, f"{c.name},{s.name}", mode], log="k9.log")
    assert _wait(lambda: "ready" in (lab.tmp / "k9.log").read_text(), 20), (lab.tmp / "k9.log").read_text()
    lab.stop(proc, signal.SIGKILL)

    def tc_filters() -> str:
        return "".join(ns.run(["tc", "filter", "show", "dev", "veth0", d]).stdout for ns in (c, s)
                       for d in ("ingress", "egress"))

    if mode == "tcx":
        assert _wait(lambda: not _netlog_programs()), "tcx links must vanish with their process"
        return
    assert "netlog_ingress" in tc_filters()  # clsact filters outlive a killed process
    src = EbpfSource(netns=[c.name, s.name], attach_mode="clsact")
    src.start()
    assert src.stats().stale_removed == 6  # (2 hooks on veth0 + ingress only on lo) x 2 namespaces
    src.stop()
    assert tc_filters() == ""
    assert "clsact" not in c.run(["tc", "qdisc", "show", "dev", "veth0"]).stdout


def test_clear_errors(monkeypatch):
    monkeypatch.setenv("BPFNETLOG_BPF_OBJECT", "/nonexistent/netlog.bpf.o")
    with pytest.raises(CaptureError, match="bpf/build.sh"):
        LiveSource(backend="ebpf", netns=["none"]).start()
    code = "from bpfnetlog.capture.live import LiveSource\nLiveSource(backend='ebpf').start()"
    r = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", code],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode != 0 and "CAP_BPF" in r.stderr and "sudo" in r.stderr
