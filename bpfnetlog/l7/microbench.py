"""Microbenchmark of the L7 engine alone: HTTP/1.1 keep-alive exchanges per second.

    python -m bpfnetlog.l7.microbench [--exchanges N] [--conns C] [--snaplen S]

Traffic like `wrk` against nginx: C connections interleaved, each request one
segment, each response one segment (a 240-byte nginx head + a 2000-byte body).
`--snaplen S` keeps at most S payload bytes of each segment (like tcpdump -s),
passing the real length as `length=`. The time covers `tcp_segment`,
`expire` (once per 1000 packets, like the pipeline's ticks) and `take_records` /
`take_markers`; packets are built before the clock starts.
"""

from __future__ import annotations

import argparse
import time

from .engine import L7Engine

REQUEST = b"GET /file HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 02:56:01 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 2000\r\n"
    b"Last-Modified: Sun, 22 Nov 2026 02:55:40 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6920e6dc-7d0"\r\nAccept-Ranges: bytes\r\n\r\n'
)
RESPONSE = RESPONSE_HEAD + b"x" * 2000


def packets(exchanges: int, conns: int, snaplen: int) -> list[tuple]:
    """(conn_id, side, seq, ts, payload, length, syn) in capture order."""
    out: list[tuple] = []
    seq = {}
    ts = 1_000_000_000
    for c in range(conns):
        cid = f"c{c}"
        out.append((cid, 0, 1000, ts, b"", 0, True))
        out.append((cid, 1, 50000, ts, b"", 0, True))
        seq[cid] = [1001, 50001]
    for i in range(exchanges):
        cid = f"c{i % conns}"
        s = seq[cid]
        for side, data in ((0, REQUEST), (1, RESPONSE)):
            ts += 5_000
            cap = data[:snaplen] if snaplen else data
            out.append((cid, side, s[side], ts, cap, len(data), False))
            s[side] = (s[side] + len(data)) & 0xFFFFFFFF
    return out


def run(pkts: list[tuple], use_length: bool = True) -> tuple[float, int, L7Engine]:
    eng = L7Engine()
    seg = eng.tcp_segment
    records = 0
    t0 = time.perf_counter()
    for i, (cid, side, seq, ts, payload, length, syn) in enumerate(pkts):
        if use_length:
            seg(cid, side, seq, ts, payload, length=length, retrans=False, syn=syn)
        else:
            seg(cid, side, seq, ts, payload, retrans=False, syn=syn)
        if i % 1000 == 999:
            eng.expire(ts)
            records += len(eng.take_records())
            eng.take_markers()
    eng.finish(pkts[-1][3])
    records += len(eng.take_records())
    eng.take_markers()
    return time.perf_counter() - t0, records, eng


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exchanges", type=int, default=100_000)
    ap.add_argument("--conns", type=int, default=20)
    ap.add_argument("--snaplen", type=int, default=0, help="payload bytes kept per segment (0: all)")
    ap.add_argument("--no-length", action="store_true", help="old API: no length= argument")
    a = ap.parse_args()
    pkts = packets(a.exchanges, a.conns, a.snaplen)
    secs, records, eng = run(pkts, not a.no_length)
    print(
        f"{a.exchanges} exchanges, {records} records in {secs:.3f}s: "
        f"{a.exchanges / secs:,.0f} exchanges/s, {len(pkts) / secs:,.0f} packets/s (snaplen {a.snaplen or 'none'})"
    )
    print({k: v for k, v in eng.stats.items() if v})


if __name__ == "__main__":
    main()
