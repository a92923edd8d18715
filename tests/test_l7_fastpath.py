"""The compiled HTTP/1 fast path gives the same records as the Python L7 engine alone.

`Pipeline(fast_l7=False)` is the reference: every connection through `l7.engine`.
Both runs read the same real captures (the lab pcap: keep-alive, pipelining with HEAD,
h2load, 5% loss -> retransmissions and handovers; the example capture) with small
batches, so connections cross batches, and every L7 record and every packet row
must be equal field by field.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfnetlog.capture.pcap import PcapReader
from bpfnetlog.l4.roles import LocalNets
from bpfnetlog.l7.http1_kernel import K_BAILS, K_HEADS
from bpfnetlog.pipeline import Pipeline
from bpfnetlog.records import L4_SOURCE, L7_SOURCE, PACKET_TABLE
from bpfnetlog.store.reader import DuckDBStoreReader
from bpfnetlog.store.writer import ParquetStoreWriter

ROOT = Path(__file__).resolve().parents[1]


def read(pcap: Path, store: Path, fast: bool, batch_size: int) -> dict[str, list[dict]]:
    with ParquetStoreWriter(store) as writer:
        pipe = Pipeline(writer, "h1", LocalNets([]), fast_l7=fast)
        reader = PcapReader(pcap, batch_size=batch_size, nic_name="eth0")
        for batch in reader.batches():
            pipe.feed(batch)
            pipe.tick()
        pipe.finish([reader.stats])
        stats = dict(pipe.l7.stats)
        if pipe.fast is not None:
            stats["fast_messages"], stats["handovers"] = int(pipe.fast.cnt[K_HEADS]), int(pipe.fast.cnt[K_BAILS])
    db = DuckDBStoreReader(store)
    out = {
        L7_SOURCE: db.sql(f'SELECT * FROM "{L7_SOURCE}" ORDER BY l7_id').to_pylist(),
        PACKET_TABLE: db.sql(f'SELECT * FROM "{PACKET_TABLE}" ORDER BY conn_id, idx').to_pylist(),
        L4_SOURCE: db.sql(f'SELECT * FROM "{L4_SOURCE}" ORDER BY conn_id, chunk_id').to_pylist(),
    }
    return out | {"stats": stats}


def assert_same(pcap: Path, tmp: Path, batch_size: int) -> dict:
    ref = read(pcap, tmp / "ref", False, batch_size)
    fast = read(pcap, tmp / "fast", True, batch_size)
    for table in (L7_SOURCE, PACKET_TABLE, L4_SOURCE):
        assert len(fast[table]) == len(ref[table]), table
        for a, b in zip(fast[table], ref[table]):
            diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
            assert not diff, (table, a.get("l7_id") or a.get("conn_id"), diff)
    for name in ("records", "markers", "timeouts", "dup_segments"):
        assert fast["stats"][name] == ref["stats"][name], name
    return fast


def test_example_capture_same_records(tmp_path: Path) -> None:
    out = assert_same(ROOT / "examples" / "sample.pcapng", tmp_path, 64)
    assert sum(r["l7_proto"] == "http" for r in out[L7_SOURCE]) > 10


@pytest.mark.lab
def test_lab_capture_same_records(lab_pcap, tmp_path: Path) -> None:
    out = assert_same(lab_pcap.path, tmp_path, 100)
    assert sum(r["pairing"] == "paired" for r in out[L7_SOURCE]) > 20


# ---- hand-built conversations: every way out of the fast path, and back into the engine ----

CLI, SRV = ("10.9.0.1", 40000), ("10.9.0.2", 80)


def conversation(port: int, t0: float, steps: list[tuple[int, bytes]], *, order: list[int] | None = None,
                 dup: int | None = None, fin: bool = True) -> list:  # fmt: skip
    """A TCP connection (handshake, `steps` as (side, payload) segments, FINs) as scapy packets.

    `order` permutes the data segments (reordering, holes), `dup` repeats one of them.
    """
    from scapy.all import IP, TCP, Ether  # type: ignore

    ends = ((CLI[0], port), SRV)
    seq = [1000 + port, 5000 + port]

    def pkt(side: int, flags: str, data: bytes = b"", at_seq: int | None = None):
        (sip, sp), (dip, dp) = ends[side], ends[1 - side]
        p = Ether() / IP(src=sip, dst=dip) / TCP(sport=sp, dport=dp, flags=flags,
                                                 seq=seq[side] if at_seq is None else at_seq, ack=seq[1 - side])
        return p / data if data else p

    out = [pkt(0, "S")]
    seq[0] += 1
    out.append(pkt(1, "SA"))
    seq[1] += 1
    out.append(pkt(0, "A"))
    data = []
    for side, payload in steps:
        data.append(pkt(side, "PA", payload))
        seq[side] += len(payload)
    if dup is not None:
        data.insert(dup + 1, data[dup].copy())
    out += [data[i] for i in order] if order is not None else data
    if fin:
        out += [pkt(0, "FA"), pkt(1, "FA")]
    for i, p in enumerate(out):
        p.time = t0 + i * 0.001
    return out


def req(target: str = "/a", extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: h.test\r\nUser-Agent: t/1\r\n{extra}\r\n".encode()


def resp(body: bytes = b"", code: int = 200, extra: str = "", length: bool = True) -> bytes:
    cl = f"Content-Length: {len(body)}\r\n" if length else ""
    return f"HTTP/1.1 {code} X\r\nServer: s\r\n{cl}{extra}\r\n".encode() + body


def scenarios() -> list:
    body = bytes(range(256)) * 8
    packets = []
    # pipelining (3 requests in one segment), HEAD, 204/304, bodies over several segments
    packets += conversation(41001, 1.0, [
        (0, req("/1") + req("/2", method="HEAD") + req("/3?x=1")),
        (1, resp(body)[:700]), (1, resp(body)[700:]), (1, resp(code=200, extra="Content-Length: 99\r\n",
                                                                length=False)),
        (1, resp(code=304)), (0, req("/4", "Content-Length: 5\r\n", "POST") + b"hello"), (1, resp(code=204)),
    ])  # fmt: skip
    # secrets redacted, tracing headers (fields from Python), absolute-form target, long User-Agent
    packets += conversation(41002, 2.0, [
        (0, req("/s", "Authorization: Bearer abc\r\nCookie: k=v\r\nX-Api-Key: 1\r\n"
                      "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n")),
        (1, resp(b"ok", extra="Set-Cookie: s=1\r\nX-Request-Id: rid-1\r\n")),
        (0, req("http://h.test/abs?q", "X-Request-Id: r2\r\n")), (1, resp(b"ok")),
        (0, req("/ua", "User-Agent: " + "u" * 600 + "\r\n")), (1, resp(b"ok")),
    ])  # fmt: skip
    # a hole in a response body (segments 2 and 3 swapped): handover with a message in flight
    packets += conversation(41003, 3.0, [(0, req("/h")), (1, resp(body)[:600]), (1, resp(body)[600:1200]),
                                         (1, resp(body)[1200:]), (0, req("/after")), (1, resp(b"x"))],
                            order=[0, 1, 3, 2, 4, 5])  # fmt: skip
    # a retransmitted request (counted, not parsed again), then chunked (handover at a head)
    packets += conversation(41004, 4.0, [(0, req("/d")), (1, resp(b"abc")), (0, req("/c")),
                                         (1, resp(extra="Transfer-Encoding: chunked\r\n", length=False) +
                                          b"3\r\nabc\r\n0\r\n\r\n")], dup=0)  # fmt: skip
    # a head split across two segments; a 100 Continue
    packets += conversation(41005, 5.0, [(0, req("/split")[:10]), (0, req("/split")[10:]), (1, resp(b"y"))])
    packets += conversation(41009, 5.5, [(0, req("/0")), (1, resp(b"0")),
                                         (0, req("/e", "Expect: 100-continue\r\nContent-Length: 2\r\n", "PUT")),
                                         (1, b"HTTP/1.1 100 Continue\r\n\r\n"), (0, b"zz"), (1, resp(b""))])  # fmt: skip
    # header text over MAX_HEADERS_TEXT in one segment: cut, and the secret in it still redacted
    packets += conversation(41010, 5.8, [(0, req("/big", "X-Long: " + "v" * 3000 + "\r\nX-Auth-Token: s3cret\r\n"
                                                            "X-More: " + "w" * 2000 + "\r\n")), (1, resp(b"b"))])  # fmt: skip
    # a request left without response on an open connection, another answered after 40 s (timeout)
    packets += conversation(41006, 6.0, [(0, req("/never"))], fin=False)
    late = conversation(41007, 7.0, [(0, req("/slow")), (1, resp(b"late"))], fin=True)
    for p in late[4:]:
        p.time += 40
    packets += late
    packets += conversation(41008, 45.0, [(0, req("/tick")), (1, resp(b"t"))])  # time passes: /slow times out
    packets.sort(key=lambda p: p.time)
    return packets


def test_hand_built_exits_same_records(tmp_path: Path) -> None:
    from scapy.all import wrpcap  # type: ignore

    pcap = tmp_path / "edges.pcap"
    wrpcap(str(pcap), scenarios())
    runs = {batch: assert_same(pcap, tmp_path / f"b{batch}", batch) for batch in (1000, 7, 1)}
    out = runs[1]  # one packet per batch: every tick happens, state crosses batches at every packet
    recs = {r["request_resource"]: r for r in out[L7_SOURCE] if r["request_resource"]}
    assert {"/1", "/2", "/3?x=1", "/4", "/s", "/h", "/after", "/d", "/c", "/split", "/e", "/big", "/never",
            "/slow"} <= set(recs)  # fmt: skip
    assert recs["/2"]["http_method"] == "HEAD" and recs["/2"]["response_length"] == len(resp(code=200, extra="Content-Length: 99\r\n", length=False))
    assert recs["/s"]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert "Authorization: [REDACTED]" in recs["/s"]["req_headers"] and "abc" not in recs["/s"]["req_headers"]
    assert "Set-Cookie: [REDACTED]" in recs["/s"]["resp_headers"]
    assert recs["http://h.test/abs?q"]["http_path"] == "/abs"
    assert recs["/h"]["response_length"] == len(resp(bytes(range(256)) * 8)) and recs["/h"]["rx_packets"] == 3
    assert recs["/d"]["tx_packets"] == 2 and recs["/d"]["tx_retrans"] == 1  # the copy counts, as in the engine
    big = recs["/big"]["req_headers"]
    assert big.endswith("...[TRUNCATED]") and len(big) == 4096 + len("\n...[TRUNCATED]"), big[-40:]
    assert "X-Auth-Token: [REDACTED]" in big and "s3cret" not in big
    assert recs["/never"]["pairing"] == "no_response"
    assert recs["/slow"]["response_status"] == "timeout"
    late = [r for r in out[L7_SOURCE] if r["pairing"] == "no_request"]
    assert len(late) == 1 and late[0]["response_length"] == len(resp(b"late"))
    one_batch = {r["request_resource"]: r for r in runs[1000][L7_SOURCE]}
    assert one_batch["/slow"]["pairing"] == "paired"  # no tick between request and response: in time
    # the hole, chunked, the split head and 100 Continue left the fast path; the rest stayed
    assert out["stats"]["handovers"] == 4 and out["stats"]["fast_messages"] >= 20, out["stats"]


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=24).map(lambda b: bytes(c for c in b if 0x21 <= c < 0x7F and c != 0x3A))
       | st.text("aApPiIkKeEyY-_tTsScCoOwWhHnNrR", max_size=16).map(str.encode))  # fmt: skip
def test_kernel_secret_names_as_python(name: bytes) -> None:
    """The kernel's one-pass secret check says what http1's regex says, for any header name."""
    import numpy as np

    from bpfnetlog.l7.http1 import _SECRET
    from bpfnetlog.l7.http1_kernel import _is_secret

    d = np.frombuffer(b"x" + name + b":", np.uint8)
    assert _is_secret(d, 1, len(name)) == (_SECRET.search(name.lower()) is not None)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1)),
                max_size=40))  # fmt: skip
def test_kernel_id_texts_as_python(rows: list[tuple[int, int, int]]) -> None:
    """l7_id (`<conn_id>-<n>`) and l7_traceid (`<req_seq>_<resp_seq>`) as the kernel writes them are
    Python's f-strings, for any int64 (-1: a missing message)."""
    import numpy as np
    import pyarrow as pa

    from bpfnetlog.l7.http1_kernel import id_text, pair_text

    conn_ids = [f"{i:x}".rjust(16, "c") for i in range(4)]
    prefix = np.array([np.frombuffer(c.encode(), np.uint8) for c in conn_ids])
    slots, a, b = (np.array([r[j] for r in rows], np.int64) for j in range(3))
    n = len(rows)
    offsets, out = np.empty(n + 1, np.int32), np.empty(n * 37, np.uint8)
    id_text(prefix, slots, a, offsets, out)
    got = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out)).to_pylist()
    assert got == [f"{conn_ids[s]}-{x}" for s, x, _ in rows]
    offsets, out = np.empty(n + 1, np.int32), np.empty(n * 41, np.uint8)
    pair_text(a, b, ord("_"), offsets, out)
    got = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out)).to_pylist()
    assert got == [f"{x}_{y}" for _, x, y in rows]
