"""L4 analysis against Wireshark: hand-built TCP conversations with every anomaly,
analyzed by bpfnetlog's flow table and by tshark; per-frame flags must agree."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.all import IP, TCP, UDP, Ether, Raw, wrpcap  # type: ignore

from bpfnetlog.capture.pcap import PcapReader
from bpfnetlog.l4 import tcp_analysis as ta
from bpfnetlog.l4 import zeek
from bpfnetlog.l4.flows import FlowTable

C, S = "10.1.0.1", "10.1.0.2"


class Conv:
    """Builds one TCP conversation packet by packet, with explicit seq/ack bookkeeping."""

    def __init__(self, cport: int, sport: int = 80, cisn: int = 1000, sisn: int = 5000, t0: float = 1.0) -> None:
        self.cport, self.sport = cport, sport
        self.seq = {"c": cisn, "s": sisn}
        self.t = t0
        self.pkts: list = []

    def send(self, who: str, flags: str, data: bytes = b"", seq: int | None = None, ack: int | None = None,
             win: int = 65535, dt: float = 0.001, advance: bool = True) -> None:
        other = "s" if who == "c" else "c"
        src, dst = (C, S) if who == "c" else (S, C)
        sp, dp = (self.cport, self.sport) if who == "c" else (self.sport, self.cport)
        s = self.seq[who] if seq is None else seq
        a = self.seq[other] if ack is None else ack
        p = Ether() / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags, seq=s % 2**32,
                                                 ack=a % 2**32 if "A" in flags else 0, window=win)
        if data:
            p = p / Raw(data)
        self.t += dt
        p.time = self.t
        self.pkts.append(p)
        if advance and seq is None:
            self.seq[who] += len(data) + ("S" in flags) + ("F" in flags)

    def handshake(self) -> None:
        self.send("c", "S")
        self.send("s", "SA")
        self.send("c", "A")

    def close(self) -> None:
        self.send("c", "FA")
        self.send("s", "FA")
        self.send("c", "A")


def scenario() -> list:
    pkts = []
    # 1: clean request/response with FIN close
    a = Conv(40001)
    a.handshake()
    a.send("c", "PA", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    a.send("s", "A")
    a.send("s", "PA", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    a.send("c", "A")
    a.close()
    pkts += a.pkts
    # 2: loss, dup acks, fast retransmission, plain retransmission, out of order
    b = Conv(40002, t0=2.0)
    b.handshake()
    base = b.seq["s"]
    segs = [bytes([65 + i]) * 100 for i in range(6)]
    b.send("s", "A", segs[0])
    b.seq["s"] += 100  # segs[1] lost
    for i in range(2, 5):
        b.send("s", "A", segs[i])
        b.send("c", "A", ack=base + 100)  # first is a normal ack, then dup acks
    b.send("s", "A", segs[1], seq=base + 100)  # fast retransmission
    b.send("c", "A", ack=base + 500)
    b.send("s", "A", segs[1], seq=base + 100, dt=0.5)  # late, already acked: spurious
    b.send("s", "A", segs[5], dt=0.5)
    b.send("s", "A", segs[5], seq=base + 500, dt=0.3)  # plain retransmission (no dup acks)
    b.send("c", "A", win=0, ack=base + 600)  # zero window
    b.send("c", "A", win=8192, ack=base + 600)  # window update
    b.send("c", "RA")
    pkts += b.pkts
    # 3: rejected connection
    c = Conv(40003, sport=81, t0=3.0)
    c.send("c", "S")
    c.send("s", "RA", seq=0, ack=c.seq["c"])
    pkts += c.pkts
    # 4: sequence numbers wrap around 2**32 mid-connection
    d = Conv(40004, cisn=2**32 - 50, t0=4.0)
    d.handshake()
    d.send("c", "PA", b"x" * 100)
    d.send("s", "A")
    d.send("c", "PA", b"y" * 100)
    d.send("c", "PA", b"y" * 100, seq=d.seq["c"] - 100, dt=0.4)  # retransmission across the wrap
    d.send("s", "A")
    d.close()
    pkts += d.pkts
    # 5: port reuse: a second connection on the same 5-tuple after the first closed
    e = Conv(40001, cisn=90000, sisn=70000, t0=5.0)
    e.handshake()
    e.close()
    pkts += e.pkts
    # 6: midstream (no handshake) and a UDP flow
    f = Conv(40006, sport=6379, t0=6.0)
    f.send("c", "PA", b"PING\r\n")
    f.send("s", "PA", b"+PONG\r\n")
    pkts += f.pkts
    u = Ether() / IP(src=C, dst=S) / UDP(sport=5353, dport=53) / Raw(b"\x12\x34" + bytes(10))
    u.time = 7.0
    pkts.append(u)
    return pkts


TSHARK_FLAGS = {
    "tcp.analysis.retransmission": ta.RETRANS_ANY,
    "tcp.analysis.fast_retransmission": ta.A_FAST_RETRANS,
    "tcp.analysis.spurious_retransmission": ta.A_SPURIOUS,
    "tcp.analysis.out_of_order": ta.A_OUT_OF_ORDER,
    "tcp.analysis.duplicate_ack": ta.A_DUP_ACK,
    "tcp.analysis.zero_window": ta.A_ZERO_WIN,
    "tcp.analysis.lost_segment": ta.A_LOST_SEG,
    "tcp.analysis.keep_alive": ta.A_KEEP_ALIVE,
    "tcp.analysis.window_update": ta.A_WIN_UPDATE,
}


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("l4") / "scenario.pcap"
    wrpcap(str(path), scenario())
    return path


def analyze(path: Path):
    ft = FlowTable()
    batches = list(PcapReader(path).batches())
    assert len(batches) == 1
    an, _ = ft.analyze(batches[0])
    return ft, batches[0], an


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
def test_analysis_flags_match_tshark(trace: Path) -> None:
    fields = list(TSHARK_FLAGS)
    out = subprocess.run(
        ["tshark", "-r", str(trace), "-T", "fields", "-E", "separator=|", "-e", "frame.number"]
        + [x for f in fields for x in ("-e", f)],
        capture_output=True, text=True, check=True,
    ).stdout
    want = {}
    for line in out.splitlines():
        parts = line.split("|")
        want[int(parts[0])] = {f for f, v in zip(fields, parts[1:]) if v}
    _, batch, an = analyze(trace)
    got = {}
    for frame, bits in zip(batch.frame.tolist(), an.bits.tolist()):
        got[frame] = {f for f, b in TSHARK_FLAGS.items() if bits & b}
    assert got == want
    # the scenario really exercises what it claims to
    seen = set().union(*want.values())
    assert {"tcp.analysis.fast_retransmission", "tcp.analysis.spurious_retransmission",
            "tcp.analysis.duplicate_ack", "tcp.analysis.zero_window", "tcp.analysis.lost_segment",
            "tcp.analysis.window_update", "tcp.analysis.retransmission"} <= seen


def test_connections_history_and_state(trace: Path) -> None:
    ft, batch, an = analyze(trace)
    slots = ft.used_slots().tolist()
    assert len(slots) == 7  # 5 TCP conversations + 1 reused 5-tuple + 1 UDP
    by_first = sorted(slots, key=lambda s: ft.fl[s, ta.F_FIRST_TS])
    states = []
    for s in by_first:
        codes = ft.hist[s, : ft.fl[s, ta.F_HIST_N]].tolist()
        client = int(ft.fl[s, ta.F_SYN_SIDE])
        proto = "tcp" if ft.fl[s, ta.F_PROTO] == 6 else "udp"
        states.append((zeek.conn_state(codes, client, proto), zeek.history(codes, client)))
    assert states == [
        ("SF", "ShADadFf"),
        ("RSTO", "ShAdgtWR"),  # the client advertised the zero window
        ("REJ", "Sr"),
        ("SF", "ShADaTFf"),  # only the client sent data, and retransmitted it
        ("SF", "ShAFf"),
        ("OTH", "Dd"),  # no SYN: the first sender is shown upper case
        ("S0", "D"),
    ]


def test_rtt_handshake_and_close(trace: Path) -> None:
    ft, batch, an = analyze(trace)
    first = min(ft.used_slots().tolist(), key=lambda s: ft.fl[s, ta.F_FIRST_TS])
    f = ft.fl[first]
    # packets are 1 ms apart: SYN -> final ACK of the handshake = 2 ms; FIN -> last ACK = 2 ms
    assert f[ta.F_HS_DONE_TS] - f[ta.F_SYN_TS] == 2_000_000
    assert f[ta.F_FIN_DONE_TS] - f[ta.F_FIN1_TS] == 2_000_000
    assert f[ta.F_CLOSED] == 1
    assert f[ta.F_SYN_SEQ] == 1000 and f[ta.F_SYNACK_SEQ] == 5000
    rtts = [r for s, r in zip(an.slot.tolist(), an.rtt.tolist()) if s == first and r]
    # request acked 1 ms after it was sent; the response acked 1 ms after
    assert rtts == [1_000_000, 1_000_000]


def test_chunks_hold_at_most_256_packets(tmp_path: Path) -> None:
    conv = Conv(40010)
    conv.handshake()
    for _ in range(300):
        conv.send("c", "PA", b"z" * 10, dt=0.0001)
    path = tmp_path / "long.pcap"
    wrpcap(str(path), conv.pkts)
    ft, batch, an = analyze(path)
    assert an.chunk.tolist() == [0] * 256 + [1] * 47
    assert an.idx.tolist() == list(range(303))


def _pending(run: int):
    """PendingPackets after two batches of 50 packets of 3 connections taking turns every `run`
    packets; packets 1 and 51 were refused by L4 (a hash collision: slot -1)."""
    import numpy as np

    from bpfnetlog.l4.chunks import PendingPackets
    from bpfnetlog.l4.flows import Analyzed
    from bpfnetlog.packets import PacketBatch

    pending = PendingPackets()
    for first in (0, 50):
        rows = np.arange(first, first + 50)
        cols = {name: rows.astype(np.int64) for name in ("ts", "frame", "flags", "seq", "ack", "win", "payload_len",
                                                          "gso_segs", "l7_mark")}  # fmt: skip
        an = Analyzed(slot=((rows // run) % 3).astype(np.int32), side=np.zeros(50, np.uint8),
                      chunk=(rows // 30).astype(np.int32), idx=rows.astype(np.int32), bits=np.zeros(50, np.uint16),
                      rtt=np.zeros(50, np.int64))  # fmt: skip
        an.slot[rows == first + 1] = -1
        pending.add(PacketBatch(cols, np.zeros((50, 16), np.uint8), np.zeros((50, 16), np.uint8), b"", []), an)
    return pending


def test_pending_rows_of_long_runs_come_out_in_arrival_order() -> None:
    """A bulk transfer's rows: taken in arrival order, the rest kept in order for the next take;
    all rows (a periodic flush) handed over without a copy."""
    import numpy as np

    pending = _pending(run=25)
    assert len(pending) == 98
    first = pending.take(pending.cols["chunk"] < 2)
    assert first["frame"].tolist() == [f for f in range(60) if f not in (1, 51)]
    rest = pending.cols
    assert rest["frame"].tolist() == list(range(60, 100))
    everything = pending.take(np.ones(len(rest["frame"]), bool))
    assert all(everything[k] is rest[k] for k in rest)  # handed over, not copied
    assert len(pending) == 0 and pending.take(np.zeros(0, bool)) == {}


def test_pending_rows_of_interleaved_connections_come_out_grouped() -> None:
    """Short runs (many concurrent connections): rows grouped by connection, each connection's
    in arrival order, so its chunk and idx still only grow."""
    import numpy as np

    pending = _pending(run=2)
    got = pending.take(np.ones(98, bool))
    frames = [f for f in range(100) if f not in (1, 51)]
    assert got["frame"].tolist() == sorted(frames, key=lambda f: (f // 2) % 3)  # sorted() is stable
    assert got["slot"].tolist() == sorted(got["slot"].tolist())


def test_chunk_sums_equal_a_row_by_row_count() -> None:
    """The compiled chunk_sums against the L4 fields counted row by row in plain Python, on
    rows in arrival order; chunks come out sorted by (slot, chunk)."""
    import numpy as np

    from bpfnetlog.l4.chunks import chunk_sums
    from bpfnetlog.packets import RST, SYN

    rng = np.random.default_rng(11)
    n = 4000
    slot = rng.integers(0, 30, n).astype(np.int32)  # arrival order: connections interleave
    chunk = np.zeros(n, np.int32)
    for s in range(30):  # a connection's chunk numbers only grow
        at = np.flatnonzero(slot == s)
        chunk[at] = np.sort(rng.integers(0, 3, len(at)))
    rows = {"slot": slot, "chunk": chunk, "side": rng.integers(0, 2, n).astype(np.uint8),
            "bits": rng.integers(0, 1 << 16, n).astype(np.uint16),
            "payload_len": rng.choice([0, 0, 1, 1448, 65000], n).astype(np.uint32),
            "flags": rng.integers(0, 256, n).astype(np.uint8),
            "rtt": np.where(rng.random(n) < 0.3, rng.integers(1, 10**9, n), 0).astype(np.int64),
            "seq": rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32),
            "ts": np.sort(rng.integers(0, 10**12, n)).astype(np.int64)}  # fmt: skip
    src_side = rng.integers(-1, 2, 30).astype(np.int64)  # -1: side not known yet, every row rx
    got = chunk_sums(rows, src_side)
    keys = sorted(set(zip(slot.tolist(), chunk.tolist())))
    assert list(zip(got["slot"].tolist(), got["chunk_id"].tolist())) == keys
    for c, (s, k) in enumerate(keys):
        at = [i for i in range(n) if slot[i] == s and chunk[i] == k]
        r = {name: [int(rows[name][i]) for i in at] for name in rows}
        tx = [side == src_side[s] for side in r["side"]]
        retrans = [(b & ta.RETRANS_ANY) != 0 for b in r["bits"]]
        for side, mine in (("tx", True), ("rx", False)):
            sel = [i for i in range(len(at)) if tx[i] == mine]
            assert got[f"{side}_packets"][c] == len(sel)
            assert got[f"{side}_bytes"][c] == sum(r["payload_len"][i] for i in sel)
            assert got[f"{side}_retrans"][c] == sum(retrans[i] for i in sel)
            assert got[f"{side}_rst"][c] == sum(r["flags"][i] & RST != 0 for i in sel)
            assert got[f"{side}_zero_win"][c] == sum(r["bits"][i] & ta.A_ZERO_WIN != 0 for i in sel)
            lo = min((r["seq"][i] for i in sel), default=0)
            hi = max((r["seq"][i] + r["payload_len"][i] for i in sel), default=0)
            assert (got[f"{side}_seq_min"][c], got[f"{side}_seq_max"][c]) == (lo, hi)
        assert got["tcp_syn_retrans"][c] == sum(rt and f & SYN != 0 for rt, f in zip(retrans, r["flags"]))
        assert got["dup_ack"][c] == sum(b & ta.A_DUP_ACK != 0 for b in r["bits"])
        assert got["out_of_order"][c] == sum(b & ta.A_OUT_OF_ORDER != 0 for b in r["bits"])
        assert got["lost_segment"][c] == sum(b & ta.A_LOST_SEG != 0 for b in r["bits"])
        assert got["syn_in_chunk"][c] == any(f & SYN for f in r["flags"])
        samples = [x for x in r["rtt"] if x > 0]
        assert got["tcp_rtt"][c] == (sum(samples) // len(samples) // 1000 if samples else 0)
        assert got["count"][c] == len(at)
        assert (got["start_time"][c], got["end_time"][c]) == (r["ts"][0], r["ts"][-1])


def test_flow_keys_of_runs_equal_keys_computed_alone() -> None:
    """batch_keys reuses the previous packet's key for a packet of the same flow (either way):
    every key, hash and side equals the one the packet gets in a batch of its own."""
    import numpy as np

    from bpfnetlog.l4.flowkeys import batch_keys

    rng = np.random.default_rng(5)
    ips = rng.integers(0, 256, (4, 16)).astype(np.uint8)
    ips[3] = ips[2]  # two endpoints on one address: the ports decide the order
    n = 600
    a, b = rng.integers(0, 4, n), rng.integers(0, 4, n)
    a = np.repeat(a[::3], 3)[:n]  # runs of one flow, some reversed below
    b = np.repeat(b[::3], 3)[:n]
    swap = rng.random(n) < 0.5
    src, dst = np.where(swap, b, a), np.where(swap, a, b)
    ports = rng.choice([53, 80, 40000], 4).astype(np.uint16)
    nic = rng.choice([0, 0, 0, 1], n).astype(np.uint16)
    proto = rng.choice([6, 6, 17], n).astype(np.uint8)
    cols = (nic, proto, ips[src], ips[dst], ports[src], ports[dst])
    got = batch_keys(*cols)
    for i in range(n):
        alone = batch_keys(*(c[i : i + 1] for c in cols))
        assert np.array_equal(got.words[i], alone.words[0]) and got.hashes[i] == alone.hashes[0]
        assert got.side[i] == alone.side[0]
    assert len(np.unique(got.hashes)) > 10  # many flows, not one
