"""Live capture benchmark: what `bpfnetlog capture` costs the traffic it watches, and where it drops.

Everything runs between two lab namespaces (tests/lab.py): a client `a` and a server `b`
on one veth pair. The capture runs as a user runs it, `bpfnetlog capture --netns <b>`
(b's lo + veth0: every packet of the load is seen once, on b's veth0), and in the same
run `tcpdump -i veth0 -w /dev/null` in b on the same load, for comparison:

- throughput: iperf3 TCP a -> b without capture, with bpfnetlog, with tcpdump, and with
  bpfnetlog under kernel.bpf_stats_enabled (to time its tc programs: the clock reads of the
  stats cost each program run, so the plain bpfnetlog rows run without); veth offloads on
  (TSO/GSO: the hooks see 64 kB GSO packets) and again with TSO/GSO off (wire-sized packets,
  ~40x the packet rate); `--runs` runs each, medians;
- packet rate: 64-byte UDP datagrams a -> b at increasing rates (frames written with
  AF_PACKET sendmmsg: iperf3 -u tops out near 100k packets/s here, a UDP socket near
  300k), dropped by nftables after the tc hook;
  the highest rate at which the capture drops nothing;
- HTTP: wrk against nginx (keep-alive, small responses): requests/s without and with
  capture, and whether every request became an L7 record;
- for every load: kernel drops (bpfnetlog: ring full, from the store's
  bpf_net_capture_stats; tcpdump: "dropped by kernel"), packets/s recorded, and the
  capturing process's CPU (utime + stime from /proc/PID/stat, load start -> drained; for
  bpfnetlog until after its next flush to the store) per packet, and for bpfnetlog + bpf_stats
  (and the packet-rate loads) the time its tc programs ran in the kernel (softirq time that
  no process is charged for).

Every load lasts `--seconds` (<= 10). Needs root, iperf3, wrk, nginx, tcpdump, nftables, bpftool.
Usage: `sudo .venv/bin/python bench/live.py [--seconds 5] [--runs 3] [--rates 100000,...] [--offloads on]`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import lab as L  # noqa: E402 - tests/ holds the lab library
from test_capture_e2e import hooked, wait_for  # noqa: E402 - readiness: tcx hooks in place

BNL = Path(sys.executable).with_name("bpfnetlog")
IPERF_PORT, FLOOD_PORT = 5201, 9999
PAYLOAD = 64  # UDP payload bytes of the flood (106-byte frames)
TICK = os.sysconf("SC_CLK_TCK")
DEFAULT_RATES = (100_000, 200_000, 300_000, 500_000, 700_000, 1_000_000, 1_500_000)
console = Console(width=160)


# --- measuring a capturing process ----------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`: what the capture costs in CPU."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5)


def drained_cpu(pid: int, timeout: float = 20.0) -> float:
    """CPU seconds of `pid` once it has caught up with the load (uses < 5% CPU for 0.4 s)."""
    last, deadline = cpu_seconds(pid), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.4)
        now = cpu_seconds(pid)
        if now - last < 0.02:
            return now
        last = now
    return last


@dataclass(frozen=True)
class Seen:
    """What a capturing tool reported over one or more loads."""

    tool: str
    packets: int
    dropped: int
    cpu_s: float  # CPU of the capturing process during the loads
    l7_records: int = -1  # HTTP/DNS records stored on b's veth0 (bpfnetlog only)
    bpf_s: float = 0.0  # time in bpfnetlog's tc programs (kernel.bpf_stats_enabled), not in cpu_s

    @property
    def us_per_packet(self) -> float:
        return self.cpu_s / max(self.packets, 1) * 1e6

    @property
    def bpf_us_per_packet(self) -> float:
        return self.bpf_s / max(self.packets, 1) * 1e6


class Tool:
    """A capturing process around loads: start, count CPU while loads run, stop, report."""

    name = ""

    def __init__(self, lab: L.Lab, ns: L.Netns, work: Path) -> None:
        self.lab, self.ns, self.work = lab, ns, work
        self.proc: subprocess.Popen[str] | None = None
        self.cpu = 0.0

    @contextmanager
    def load(self) -> Iterator[None]:
        """Count this process's CPU from the load's start until it has drained the load."""
        assert self.proc is not None
        before = cpu_seconds(self.proc.pid)
        yield
        self.cpu += drained_cpu(self.proc.pid) - before

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> Seen:
        raise NotImplementedError


BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
FLUSH_S = 5.0  # bpfnetlog capture's default --flush-interval


def bpf_run_seconds() -> float:
    """Time spent so far in bpfnetlog's tc programs (run_time_ns of every netlog_* program)."""
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True).stdout)
    return sum(p.get("run_time_ns", 0) for p in progs if p.get("name", "").startswith("netlog_")) / 1e9


class Bpfnetlog(Tool):
    """`bpfnetlog capture --netns <ns>` into a fresh store, as a user runs it (default flush
    interval, no bpf_stats); counts from bpf_net_capture_stats."""

    name = "bpfnetlog"
    bpf_stats = False
    bpf_s = 0.0

    @contextmanager
    def load(self) -> Iterator[None]:
        before = bpf_run_seconds() if self.bpf_stats else 0.0
        with super().load():
            yield
            time.sleep(FLUSH_S + 0.5)  # its CPU includes writing the load's records to the store
        if self.bpf_stats:
            self.bpf_s += bpf_run_seconds() - before

    def start(self) -> None:
        self.store = self.work / f"store-{time.monotonic_ns()}"
        self.stats_were = BPF_STATS.read_text().strip()
        BPF_STATS.write_text("1" if self.bpf_stats else "0")
        self.log = f"{self.store.name}.log"
        self.proc = self.lab.spawn(None, [str(BNL), "capture", "--store", str(self.store), "--netns", self.ns.name],
                                   log=self.log)  # fmt: skip
        wait_for(lambda: hooked(self.ns, "veth0") or self.proc.poll() is not None, 90, "bpfnetlog capture to attach")
        if self.proc.poll() is not None:
            raise RuntimeError((self.lab.tmp / self.log).read_text())

    def stop(self) -> Seen:
        from bpfnetlog.store.reader import DuckDBStoreReader

        assert self.proc is not None
        try:  # SIGTERM, not SIGINT: a shell's background job starts with SIGINT ignored
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # its threads' stacks into the log, then SIGKILL
            time.sleep(1)
        code = self.lab.stop(self.proc, signal.SIGTERM, timeout=5)
        BPF_STATS.write_text(self.stats_were)
        if code != 0:
            raise RuntimeError(f"bpfnetlog capture exited {code}: {(self.lab.tmp / self.log).read_text()}")
        with DuckDBStoreReader(self.store) as r:
            # a row per flush, each the run's totals so far (they only grow): the largest is the total
            packets, dropped = r.sql("SELECT sum(p), sum(d) FROM (SELECT max(packets) p, max(dropped) d "
                                     "FROM bpf_net_capture_stats GROUP BY started, source)").to_pylist()[0].values()  # fmt: skip
            l7 = r.sql("SELECT count(*) AS n FROM bpf_net_l7_log WHERE nic_name = 'veth0'").to_pylist()[0]["n"]
        return Seen(self.name, int(packets or 0), int(dropped or 0), self.cpu, l7, self.bpf_s)


class BpfnetlogTimed(Bpfnetlog):
    """The same capture with kernel.bpf_stats_enabled: the time its tc programs run (the stats'
    two clock reads per program run make it a little slower than plain `bpfnetlog`)."""

    name = "bpfnetlog + bpf_stats"
    bpf_stats = True


class Tcpdump(Tool):
    """`tcpdump -i veth0 -w /dev/null` in the namespace, as one would run it; its exit counters."""

    name = "tcpdump"

    def start(self) -> None:
        argv = ["tcpdump", "-i", "veth0", "-n", "-w", "/dev/null"]
        self.proc = self.lab.spawn(self.ns, argv, stderr_pipe=True)  # `ip netns exec` execs: same PID
        self.cap = L.Capture(self.lab, self.proc, Path("/dev/null"))
        self.cap.wait_ready()

    def stop(self) -> Seen:
        st = self.cap.stop()
        return Seen(self.name, st.received, st.dropped, self.cpu)


# --- loads ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lab2:
    """The benchmark's lab: client a, server b (iperf3, nginx), flood sink on b's veth0."""

    lab: L.Lab
    link: L.Link

    @property
    def a(self) -> L.Netns:
        return self.link.a

    @property
    def b(self) -> L.Netns:
        return self.link.b


def build_lab(lab: L.Lab) -> Lab2:
    link = lab.link(lab.netns("a"), lab.netns("b"), "10.241.0.1", "10.241.0.2", offloads=True)
    lab.spawn(link.b, ["iperf3", "-s", "-p", str(IPERF_PORT)], log="iperf3.log")
    link.b.wait_listening(IPERF_PORT)
    lab.nginx(link.b, ports=(80,), ipv6=False)
    rules = lab.tmp / "sink.nft"  # the flood ends after the tc hook: no socket, no ICMP replies
    rules.write_text("table netdev sink {\n  chain in {\n    type filter hook ingress device \"veth0\" priority 0;\n"
                     f"    udp dport {FLOOD_PORT} drop\n  }}\n}}\n")  # fmt: skip
    link.b.run(["nft", "-f", str(rules)])
    return Lab2(lab, link)


def set_offloads(lab2: Lab2, on: bool) -> None:
    """TSO/GSO/GRO on both veth ends (on: the kernel's defaults for veth)."""
    state = "on" if on else "off"
    for ns in (lab2.a, lab2.b):
        ns.run(["ethtool", "-K", "veth0", "tso", state, "gso", state, "gro", state])


def iperf3_gbps(lab2: Lab2, seconds: float) -> float:
    """One iperf3 TCP run a -> b: receiver's Gbit/s."""
    out = lab2.a.run(["iperf3", "-c", lab2.link.b_ip, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"],
                     timeout=seconds + 30).stdout  # fmt: skip
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def mac(ns: L.Netns, ifname: str = "veth0") -> str:
    return json.loads(ns.run(["ip", "-j", "link", "show", ifname]).stdout)[0]["address"]


def flood(lab2: Lab2, pps: int, seconds: float) -> float:
    """UDP 64-byte datagrams a -> b at `pps` for `seconds`; the rate actually sent."""
    frame = udp_frame(mac(lab2.a), mac(lab2.b), lab2.link.a_ip, lab2.link.b_ip, FLOOD_PORT)
    argv = [sys.executable, str(Path(__file__).resolve()), "send", "veth0", frame.hex(), str(pps), str(seconds)]
    r = json.loads(lab2.a.run(argv, timeout=seconds + 30).stdout)
    return r["sent"] / r["seconds"]


def wrk_rps(lab2: Lab2, seconds: float) -> tuple[float, int]:
    """wrk, 1 thread, 8 keep-alive connections, /small.txt: (requests/s, requests)."""
    out = lab2.a.run(["wrk", "-t1", "-c8", f"-d{int(seconds)}s", L.url(lab2.link.b_ip, 80, "/small.txt")],
                     timeout=seconds + 30).stdout  # fmt: skip
    return float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1)), int(re.search(r"(\d+) requests in", out).group(1))


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, port: int) -> bytes:
    """One Ethernet/IPv4/UDP frame with a PAYLOAD-byte payload (UDP checksum 0: none, valid on IPv4)."""
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + PAYLOAD, 0, 0x4000, 64, 17, 0,
                               socket.inet_aton(src_ip), socket.inet_aton(dst_ip)))  # fmt: skip
    words = sum(struct.unpack("!10H", ip))
    words = (words & 0xFFFF) + (words >> 16)
    struct.pack_into("!H", ip, 10, ~((words & 0xFFFF) + (words >> 16)) & 0xFFFF)
    udp = struct.pack("!HHHH", 40000, port, 8 + PAYLOAD, 0)
    eth = bytes.fromhex(dst_mac.replace(":", "") + src_mac.replace(":", "")) + b"\x08\x00"
    return eth + bytes(ip) + udp + b"b" * PAYLOAD


def _sendmmsg_sender(ifname: str, frame: bytes, pps: int, seconds: float) -> dict[str, float]:
    """The in-namespace flood sender: AF_PACKET, qdisc bypass, up to 256 frames per sendmmsg, paced.

    A UDP socket tops out near 300k datagrams/s here (the whole IP/UDP send path per
    datagram, plus the veth receive path that runs on the sender's CPU); writing frames
    straight to the veth leaves more of the 2 CPUs to the receive side and the capture.
    """

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    class Msghdr(ctypes.Structure):
        _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(Iovec)),
                    ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                    ("flags", ctypes.c_int)]  # fmt: skip

    class Mmsghdr(ctypes.Structure):
        _fields_ = [("hdr", Msghdr), ("len", ctypes.c_uint)]

    libc = ctypes.CDLL(None, use_errno=True)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((ifname, 0))
    sock.setsockopt(263, 20, 1)  # SOL_PACKET, PACKET_QDISC_BYPASS
    buf = ctypes.create_string_buffer(frame, len(frame))
    iov = Iovec(ctypes.addressof(buf), len(frame))
    msgs = (Mmsghdr * 256)()
    for m in msgs:
        m.hdr.iov, m.hdr.iovlen = ctypes.pointer(iov), 1
    sent, t0 = 0, time.perf_counter()
    while (now := time.perf_counter()) - t0 < seconds:
        due = min(int((now - t0) * pps) - sent, 256)
        if due <= 0:
            time.sleep(0.0002)
            continue
        sent += max(libc.sendmmsg(sock.fileno(), msgs, due, 0), 0)  # -1 (ENOBUFS): nothing sent, try again
    return {"sent": sent, "seconds": time.perf_counter() - t0}


# --- the benchmark ---------------------------------------------------------------------------

TOOLS: list[type[Tool] | None] = [None, Bpfnetlog, Tcpdump]


@dataclass(frozen=True)
class Row:
    """Loads of one kind under one tool: their figures and what the tool saw."""

    load: str
    tool: str
    values: list[float]  # per run: Gbit/s, sent packets/s, or requests/s
    seen: Seen | None
    seconds: float  # load time the tool was watching
    requests: int = 0  # wrk: requests completed (to compare with L7 records)
    rounds: bool = False  # values[i] of every tool come from the same round (tools took turns)

    @property
    def median(self) -> float:
        return statistics.median(self.values)


def _merged(seen: list[Seen]) -> Seen | None:
    """One tool's runs as one: packets, drops, CPU and records summed."""
    if not seen:
        return None
    return Seen(seen[0].tool, sum(s.packets for s in seen), sum(s.dropped for s in seen),
                sum(s.cpu_s for s in seen), sum(s.l7_records for s in seen) if seen[0].l7_records >= 0 else -1,
                sum(s.bpf_s for s in seen))  # fmt: skip


def under(lab2: Lab2, tool: type[Tool] | None, work: Path,
          loads: Callable[[], list[float]]) -> tuple[list[float], Seen | None]:  # fmt: skip
    """Run `loads` under `tool` (started before, stopped after; CPU counted while they run)."""
    if tool is None:
        return loads(), None
    t = tool(lab2.lab, lab2.b, work)
    t.start()
    try:
        with t.load():
            values = loads()
    finally:
        seen = t.stop()
    return values, seen


def bench_throughput(lab2: Lab2, work: Path, seconds: float, runs: int, offloads: list[bool]) -> list[Row]:
    """iperf3 with offloads on, then off (those in `offloads`); each under no capture, bpfnetlog,
    tcpdump, and bpfnetlog with bpf_stats (BpfnetlogTimed: the time in its tc programs).

    The tools take turns run by run (none, bpfnetlog, tcpdump, none, ...): this VM's speed
    drifts by 10% and more within minutes, and a drift must not land on one tool's runs only.
    """
    rows = []
    for on in offloads:
        set_offloads(lab2, on)
        iperf3_gbps(lab2, 2)  # a fresh lab's first run is slow: not a round's baseline
        load = f"iperf3 TCP, TSO/GSO {'on' if on else 'off'} (Gbit/s)"
        values: dict[str, list[float]] = {}
        seen: dict[str, list[Seen]] = {}
        for _ in range(runs):
            for tool in [*TOOLS, BpfnetlogTimed]:
                name = tool.name if tool else "none"
                v, s = under(lab2, tool, work, lambda: [iperf3_gbps(lab2, seconds)])
                values.setdefault(name, []).extend(v)
                seen.setdefault(name, []).extend([s] if s else [])
        for name, v in values.items():
            rows.append(Row(load, name, v, _merged(seen[name]), seconds * runs, rounds=True))
    set_offloads(lab2, True)
    return rows


def bench_flood(lab2: Lab2, work: Path, seconds: float, rates: list[int]) -> list[Row]:
    """Increasing UDP rates, each under bpfnetlog (with bpf_stats: the zero-drop rate holds without
    them too) then tcpdump, until the sender is the limit."""
    rows = []
    for pps in rates:
        for tool in (BpfnetlogTimed, Tcpdump):
            values, seen = under(lab2, tool, work, lambda: [flood(lab2, pps, seconds)])
            rows.append(Row(f"UDP {PAYLOAD} B @ {pps:,}/s (sent/s)", tool.name, values, seen, seconds))
        if min(r.median for r in rows[-2:]) < 0.9 * pps:  # higher targets would measure the sender
            break
    return rows


def bench_wrk(lab2: Lab2, work: Path, seconds: float, runs: int) -> list[Row]:
    """HTTP requests/s under no capture, bpfnetlog, tcpdump; bpfnetlog's L7 records vs requests."""
    rows = []
    for tool in TOOLS:
        done: list[int] = []

        def loads() -> list[float]:
            results = [wrk_rps(lab2, seconds) for _ in range(runs)]
            done.extend(n for _, n in results)
            return [r for r, _ in results]

        values, seen = under(lab2, tool, work, loads)
        rows.append(Row("wrk HTTP/1.1, 8 conns (req/s)", tool.name if tool else "none", values, seen, seconds * runs,
                        sum(done)))  # fmt: skip
    return rows


# --- report -----------------------------------------------------------------------------------


def round_ratios(row: Row, none: Row) -> list[float]:
    """Each round's value over the same round's without capture, where the tools took turns round
    by round (a drift of the VM's speed then hits both sides of a ratio); [] otherwise."""
    if row.rounds and none.rounds and len(row.values) == len(none.values) > 1:
        return [v / b for v, b in zip(row.values, none.values)]
    return []


def vs_none(row: Row, none: Row) -> float:
    """Median of the same-round ratios, else the ratio of the medians."""
    ratios = round_ratios(row, none)
    return statistics.median(ratios) if ratios else row.median / none.median


def ratio_lines(rows: list[Row]) -> list[str]:
    """The same-round ratios of each capture, for pooling several runs of this noisy VM."""
    base = {r.load: r for r in rows if r.tool == "none"}
    out = []
    for r in rows:
        ratios = round_ratios(r, base[r.load]) if r.load in base and r.tool != "none" else []
        if ratios:
            out.append(f"{r.load}, {r.tool}: same-round ratios {' '.join(f'{x:.3f}' for x in ratios)} "
                       f"(median {statistics.median(ratios):.3f}, mean {statistics.mean(ratios):.3f})")
    return out


def table(title: str, rows: list[Row]) -> Table:
    """Figures per load and tool, with the ratio to the same load without capture."""
    t = Table(title=title)
    for col in ("load", "capture", "median", "vs none", "runs", "captured pkt/s", "kernel drops", "CPU us/pkt",
                "CPU s / load s", "BPF us/pkt", "L7 records"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("load", "capture", "runs") else "right")
    base = {r.load: r for r in rows if r.tool == "none"}
    for r in rows:
        s = r.seen
        t.add_row(r.load, r.tool, f"{r.median:,.2f}" if r.median < 1000 else f"{r.median:,.0f}",
                  f"{vs_none(r, base[r.load]):.3f}" if r.load in base else "",
                  " ".join(f"{v:,.2f}" if v < 1000 else f"{v:,.0f}" for v in r.values),
                  f"{s.packets / r.seconds:,.0f}" if s else "", f"{s.dropped:,}" if s else "",
                  f"{s.us_per_packet:.2f}" if s else "", f"{s.cpu_s / r.seconds:.2f}" if s else "",
                  f"{s.bpf_us_per_packet:.2f}" if s and s.bpf_s else "",
                  f"{s.l7_records:,} / {r.requests:,} req" if s and s.l7_records >= 0 and r.requests else "")  # fmt: skip
    return t


def zero_drop_rate(rows: list[Row], tool: str) -> tuple[float, float]:
    """(highest captured pkt/s with 0 kernel drops, CPU us/pkt there) of `tool` in the flood."""
    ok = [(r.seen.packets / r.seconds, r.seen.us_per_packet)
          for r in rows if r.tool == tool and r.seen and r.seen.dropped == 0]  # fmt: skip
    return max(ok, default=(0.0, 0.0))


def summary(tput: list[Row], fl: list[Row]) -> str:
    """One line for the README: the issue's targets are 0 drops at >= 500k pkt/s, <= 5% loss with TSO."""
    med = {(r.load.split(" (")[0], r.tool): r.median for r in tput}
    by = {(r.load.split(" (")[0], r.tool): r for r in tput}

    def loss(load: str, tool: str) -> str:
        return f"{(vs_none(by[(load, tool)], by[(load, 'none')]) - 1) * 100:+.1f}%"

    on, off = "iperf3 TCP, TSO/GSO on", "iperf3 TCP, TSO/GSO off"
    bnl_pps, bnl_us = zero_drop_rate(fl, BpfnetlogTimed.name)
    td_pps, td_us = zero_drop_rate(fl, "tcpdump")
    return (f"bench/live (`sudo .venv/bin/python bench/live.py`): iperf3 TSO on {med[(on, 'none')]:.1f} Gbit/s, "
            f"with capture {med[(on, 'bpfnetlog')]:.1f} ({loss(on, 'bpfnetlog')}; tcpdump -w /dev/null "
            f"{loss(on, 'tcpdump')}); TSO/GSO off {med[(off, 'none')]:.2f} -> {med[(off, 'bpfnetlog')]:.2f} "
            f"({loss(off, 'bpfnetlog')}; tcpdump {loss(off, 'tcpdump')}); 0 drops up to {bnl_pps:,.0f} pkt/s "
            f"(64 B UDP) at {bnl_us:.2f} us user+sys CPU/packet (tcpdump: 0 drops up to {td_pps:,.0f} pkt/s, "
            f"{td_us:.2f} us/packet).")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each load (<= 10)")
    ap.add_argument("--runs", type=int, default=3, help="iperf3 / wrk runs per setting (medians)")
    ap.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)), help="UDP packets/s to try, ascending")
    ap.add_argument("--loads", default="throughput,rate,http", help="which loads to run (comma separated)")
    ap.add_argument("--offloads", default="on,off", help="veth TSO/GSO settings of the throughput loads: on,off / on / off")
    args = ap.parse_args()
    loads = set(args.loads.split(","))
    if not loads or loads - {"throughput", "rate", "http"}:
        ap.error("--loads: a comma separated subset of throughput,rate,http")
    offloads = [o == "on" for o in args.offloads.split(",")]
    if not offloads or set(args.offloads.split(",")) - {"on", "off"}:
        ap.error("--offloads: on,off, on or off")
    if not 0 < args.seconds <= 10:
        ap.error("--seconds must be in (0, 10]")
    if os.geteuid() != 0:
        sys.exit("bench/live.py needs root (network namespaces, eBPF): sudo .venv/bin/python bench/live.py")
    missing = L.missing_tools(["ip", "ethtool", "nft", "tcpdump", "nginx", "iperf3", "wrk", "bpftool"])
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)}")
    rates = [int(r) for r in args.rates.split(",")]
    with L.Lab() as lab:
        lab2 = build_lab(lab)
        console.print(f"lab {lab.prefix}: a {lab2.link.a_ip} -> b {lab2.link.b_ip}; {os.cpu_count()} CPUs; "
                      f"loads of {args.seconds:g} s; capture on b (lo + veth0)")  # fmt: skip
        tput = fl = None
        if "throughput" in loads:
            tput = bench_throughput(lab2, lab.tmp, args.seconds, args.runs, offloads)
            console.print(table("Throughput", tput))
            for line in ratio_lines(tput):
                console.print(line, soft_wrap=True)
        if "rate" in loads:
            fl = bench_flood(lab2, lab.tmp, args.seconds, rates)
            console.print(table("Packet rate", fl))
        if "http" in loads:
            console.print(table("HTTP", bench_wrk(lab2, lab.tmp, args.seconds, args.runs)))
    if tput is not None and fl is not None and set(offloads) == {True, False}:
        console.print(summary(tput, fl), soft_wrap=True)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "send":
        print(json.dumps(_sendmmsg_sender(sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))))
    else:
        main()
