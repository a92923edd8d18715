"""L7Engine: packets of connections in, paired records and packet markers out."""

from __future__ import annotations

import random

import dns.message
import dns.rrset
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfnetlog.l7.engine import L7Engine, L7Record
from bpfnetlog.records import L7_FIELDS

L7_NAMES = {name for name, _ in L7_FIELDS}
MS = 1_000_000


class Conn:
    """A hand-driven TCP connection: side 0 is the client, side 1 the server."""

    def __init__(self, eng: L7Engine, conn_id: str = "c1", isn: tuple[int, int] = (1000, 5000), syn: bool = True):
        self.eng, self.id = eng, conn_id
        self.seq = [(isn[0] + 1) & 0xFFFFFFFF, (isn[1] + 1) & 0xFFFFFFFF]
        self.ts = 1_000 * MS
        if syn:
            eng.tcp_segment(conn_id, 0, isn[0], self.ts, b"", retrans=False, syn=True)
            eng.tcp_segment(conn_id, 1, isn[1], self.ts, b"", retrans=False, syn=True)

    def send(self, side: int, data: bytes, step: int = 0, dt: int = MS) -> int:
        """Sends `data` in segments of `step` bytes (0: one segment); returns the seq of its first byte."""
        first = self.seq[side]
        for i in range(0, len(data), step or len(data)):
            self.segment(side, self.seq[side], data[i : i + (step or len(data))], dt)
            self.seq[side] = (self.seq[side] + len(data[i : i + (step or len(data))])) & 0xFFFFFFFF
        return first

    def segment(self, side: int, seq: int, data: bytes, dt: int = MS, retrans: bool = False) -> bool:
        self.ts += dt
        return self.eng.tcp_segment(self.id, side, seq, self.ts, data, retrans=retrans)

    def lose(self, side: int, n: int) -> None:
        self.seq[side] = (self.seq[side] + n) & 0xFFFFFFFF


def req(path: str = "/", method: str = "GET", body: bytes = b"") -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n%s" % (
        method.encode(),
        path.encode(),
        len(body),
        body,
    )


def resp(code: int = 200, body: bytes = b"ok") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (code, len(body), body)


def test_one_exchange_exact_fields():
    eng = L7Engine()
    c = Conn(eng)
    q = req("/api/v1?x=1")
    s = resp(503, b"x" * 100)
    assert c.send(0, q, step=20) == 1001  # 3 packets, 1 ms apart
    markers = eng.take_markers()
    assert [(m.side, m.seq, m.l7_id, m.http_method, m.http_path, m.is_request) for m in markers] == [
        (0, 1001, "c1-1", "GET", "/api/v1", True)
    ]
    c.send(1, s, step=100, dt=5 * MS)  # 2 packets, 5 ms apart
    (m,) = eng.take_markers()
    assert (m.side, m.seq, m.l7_id, m.http_path, m.is_request) == (1, 5001, "c1-1", "/api/v1", False)
    (r,) = eng.take_records()
    f = r.fields
    assert set(f) <= L7_NAMES
    assert (r.conn_id, r.l7_id, r.client_side, r.l7_proto, r.time) == ("c1", "c1-1", 0, "http", 1_001 * MS)
    assert (f["req_seq"], f["resp_seq"], f["l7_traceid"], f["pairing"]) == (1001, 5001, "1001_5001", "paired")
    assert (f["http_status_code"], f["response_code"], f["response_status"]) == (503, 503, "server_error")
    assert (f["cost_req_sent"], f["cost_resp_wait"], f["cost_cnt_dl"], f["response_duration"]) == (
        2000,
        5000,
        5000,
        12000,
    )
    assert (f["request_length"], f["response_length"]) == (len(q), len(s))
    assert (r.req_packets, r.req_bytes, r.resp_packets, r.resp_bytes) == (3, len(q), 2, len(s))
    assert eng.take_records() == []


def test_retransmissions_are_counted_on_the_message_they_carry():
    eng = L7Engine()
    c = Conn(eng)
    q = req("/r")
    seq = c.send(0, q)
    c.segment(0, seq, q, retrans=True)  # the ACK was lost: whole request again
    c.send(1, resp())
    (r,) = eng.take_records()
    assert (r.req_packets, r.req_bytes, r.req_retrans, r.resp_retrans) == (2, 2 * len(q), 1, 0)
    assert eng.stats["dup_segments"] == 1


def test_keep_alive_pipelining_with_head_in_the_middle():
    eng = L7Engine()
    c = Conn(eng)
    methods = ["GET", "POST", "HEAD", "GET", "PUT"]
    reqs = [req(f"/p{i}", m, b"body" if m in ("POST", "PUT") else b"") for i, m in enumerate(methods)]
    seqs = [c.send(0, q) for q in reqs]
    codes = [200, 201, 202, 203, 226]
    resps = [resp(codes[i], b"" if m == "HEAD" else b"data%d" % i) for i, m in enumerate(methods)]
    resps[2] = b"HTTP/1.1 202 X\r\nContent-Length: 5\r\n\r\n"  # HEAD: length announced, no body
    wire = b"".join(resps)
    first = c.send(1, wire, step=11)
    recs = eng.take_records()
    assert [r.fields["http_method"] for r in recs] == methods
    assert [r.fields["http_status_code"] for r in recs] == codes
    assert [r.fields["req_seq"] for r in recs] == seqs
    offsets = [sum(len(x) for x in resps[:i]) for i in range(5)]
    assert [r.fields["resp_seq"] for r in recs] == [first + o for o in offsets]
    assert [r.l7_id for r in recs] == [f"c1-{i}" for i in range(1, 6)]
    assert all(r.fields["pairing"] == "paired" for r in recs)
    # A packet that carries the end of one response and the start of the next counts for both.
    assert sum(r.resp_bytes for r in recs) == len(wire)
    assert sum(r.resp_packets for r in recs) > -(-len(wire) // 11)


def test_request_without_response_times_out():
    eng = L7Engine(request_timeout_ns=30 * 1000 * MS)
    c = Conn(eng)
    seq = c.send(0, req("/slow"))
    eng.expire(c.ts + 29 * 1000 * MS)
    assert eng.take_records() == []
    eng.expire(c.ts + 31 * 1000 * MS)
    (r,) = eng.take_records()
    assert (r.fields["pairing"], r.fields["response_status"], r.fields["req_seq"], r.fields["resp_seq"]) == (
        "no_response",
        "timeout",
        seq,
        -1,
    )
    assert r.fields["l7_traceid"] == f"{seq}_-1" and "cost_resp_wait" not in r.fields
    assert eng.stats["timeouts"] == 1
    # A late response no longer has its request.
    c.send(1, resp())
    (late,) = eng.take_records()
    assert late.fields["pairing"] == "no_request" and late.l7_id == "c1-2"


def test_close_turns_waiting_requests_into_no_response():
    eng = L7Engine()
    c = Conn(eng)
    c.send(0, req("/a") + req("/b"))
    c.send(1, resp())
    eng.close("c1", c.ts)
    recs = eng.take_records()
    assert [(r.fields["http_path"], r.fields["pairing"], r.fields["response_status"]) for r in recs] == [
        ("/a", "paired", "ok"),
        ("/b", "no_response", "unknown"),
    ]


def test_response_without_request_mid_stream_join():
    eng = L7Engine()
    c = Conn(eng, syn=False)
    c.send(1, b"rest of an older body\r\n" + resp(404))
    (r,) = eng.take_records()
    assert (r.fields["pairing"], r.fields["response_status"], r.client_side) == ("no_request", "client_error", 0)
    assert (r.fields["req_seq"], r.fields["resp_seq"]) == (-1, 5001 + 23)
    assert r.time == c.ts


def test_lost_segment_gap_then_resync_at_next_request():
    eng = L7Engine()
    c = Conn(eng)
    c.send(0, b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    c.lose(0, 30)  # a chunk of the body is never seen
    c.send(0, b"more chunked body\r\n0\r\n\r\n")
    eng.expire(c.ts + 2000 * MS)  # reorder timeout: give up on the hole
    assert eng.stats["gaps"] == 1 and eng.stats["gap_bytes"] == 30 and eng.stats["reorder_flushes"] == 1
    seq_b = c.send(0, req("/b"))
    c.send(1, resp(200) + resp(201))
    recs = eng.take_records()
    assert [(r.fields["http_path"], r.fields["http_status_code"], r.fields["req_seq"]) for r in recs] == [
        ("/a", 200, 1001),
        ("/b", 201, seq_b),
    ]


def test_buffer_overflow_forces_the_gap_without_a_timer():
    eng = L7Engine()
    c = Conn(eng)
    c.send(0, req("/a", "POST", b"x" * 10))
    c.lose(0, 100)  # the head of /big is lost ...
    for _ in range(300):  # ... so its 1.2 MB body waits behind a hole until the buffer is full
        c.send(0, b"y" * 4000)
    assert eng.stats["buffer_overflow"] >= 1 and eng.stats["gaps"] == 1
    c.send(0, req("/c"))
    c.send(1, resp(200) + resp(201) + resp(202))
    # FIFO pairing cannot know /big existed: /c takes its response, the last is unpaired.
    recs = eng.take_records()
    assert [(r.fields.get("http_path"), r.fields.get("http_status_code")) for r in recs] == [
        ("/a", 200),
        ("/c", 201),
        (None, 202),
    ]
    assert eng.stats["malformed"] == 0


def test_seq_wraparound_near_2_32():
    eng = L7Engine()
    c = Conn(eng, isn=(2**32 - 10, 2**32 - 3))
    q, s = req("/wrap", "POST", b"z" * 30), resp(200, b"w" * 50)
    c.send(0, q, step=8)
    c.send(1, s, step=8)
    (r,) = eng.take_records()
    assert (r.fields["req_seq"], r.fields["resp_seq"]) == (2**32 - 9, 2**32 - 2)
    assert (r.req_bytes, r.resp_bytes, r.fields["response_length"]) == (len(q), len(s), len(s))


def test_out_of_order_segments_are_reassembled():
    eng = L7Engine()
    c = Conn(eng)
    q = req("/ooo", "POST", b"b" * 50)
    c.segment(0, 1001 + 40, q[40:])
    c.segment(0, 1001, q[:40])
    c.seq[0] += len(q)
    c.send(1, resp())
    (r,) = eng.take_records()
    assert r.fields["http_path"] == "/ooo" and r.req_packets == 2 and r.fields["req_seq"] == 1001


def test_hostile_path_and_secrets_reach_the_record_safely():
    eng = L7Engine()
    c = Conn(eng)
    c.send(0, b"GET /\x00<script>\xff HTTP/1.1\r\nCookie: sid=1\r\nAuthorization: Basic x\r\n\r\n")
    c.send(1, b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=2\r\nContent-Length: 0\r\n\r\n")
    (r,) = eng.take_records()
    assert r.fields["http_path"] == "/\\x00<script>\\xff"
    assert r.fields["req_headers"] == "Cookie: [REDACTED]\nAuthorization: [REDACTED]"
    assert r.fields["resp_headers"] == "Set-Cookie: [REDACTED]\nContent-Length: 0"


def test_dns_over_udp():
    eng = L7Engine()
    q = dns.message.make_query("svc.cluster.local", "A")
    q.id = 77
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("svc.cluster.local.", 5, "IN", "A", "10.0.0.7"))
    eng.udp_datagram("u1", 1, 1000, q.to_wire())
    (m,) = eng.take_markers()
    assert (m.side, m.seq, m.l7_proto, m.is_request, m.ts) == (1, 0, "dns", True, 1000)
    eng.udp_datagram("u1", 0, 3_500_000, r.to_wire())
    (rec,) = eng.take_records()
    f = rec.fields
    assert set(f) <= L7_NAMES
    assert (rec.client_side, rec.l7_proto, f["pairing"]) == (1, "dns", "paired")
    assert (f["dns_query"], f["dns_qtype"], f["dns_rcode"], f["dns_answers"]) == (
        "svc.cluster.local",
        "A",
        "NOERROR",
        "10.0.0.7",
    )
    assert (f["l7_traceid"], f["req_seq"], f["resp_seq"]) == ("dns_77_svc.cluster.local", -1, -1)
    assert (f["cost_resp_wait"], f["response_duration"]) == (3499, 3499)
    assert (rec.req_packets, rec.req_bytes, rec.resp_packets) == (1, len(q.to_wire()), 1)


def test_dns_over_tcp():
    eng = L7Engine()
    c = Conn(eng)
    q = dns.message.make_query("example.org", "TXT")
    wire = q.to_wire()
    c.send(0, len(wire).to_bytes(2, "big") + wire, step=5)
    rw = dns.message.make_response(q).to_wire()
    c.send(1, len(rw).to_bytes(2, "big") + rw)
    (rec,) = eng.take_records()
    assert (rec.l7_proto, rec.fields["dns_query"], rec.fields["dns_qtype"]) == ("dns", "example.org", "TXT")
    assert rec.fields["l7_traceid"] == "1001_5001"


def test_unknown_protocol_is_given_up_cheaply():
    eng = L7Engine()
    c = Conn(eng)
    for _ in range(100):
        c.send(0, b"\x16\x03\x01" + bytes(range(256)) * 16)
    assert eng.stats["unknown_conns"] == 1
    conn = eng._conns["c1"]
    assert conn.ignored and conn.pre == [] and conn.log == ([], [])
    assert c.segment(0, c.seq[0], b"more") is False  # the caller may stop sending this connection
    eng.finish(c.ts)
    assert eng.take_records() == [] and eng.take_markers() == []


def test_lru_eviction_closes_the_oldest_connection():
    eng = L7Engine(max_conns=2)
    for i in range(3):
        Conn(eng, f"k{i}").send(0, req(f"/{i}"))
    (r,) = eng.take_records()
    assert (r.conn_id, r.fields["pairing"], eng.stats["evicted"]) == ("k0", "no_response", 1)
    assert list(eng._conns) == ["k1", "k2"]


def test_close_delimited_response_ends_at_close():
    eng = L7Engine()
    c = Conn(eng)
    c.send(0, b"GET / HTTP/1.0\r\n\r\n")
    c.send(1, b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 500, step=100)
    assert eng.take_records() == []
    eng.close("c1", c.ts + 10 * MS)
    (r,) = eng.take_records()
    assert r.fields["response_length"] == 519 and r.resp_packets == 6 and r.fields["pairing"] == "paired"


# -- properties ------------------------------------------------------------------------

_REQS = st.sampled_from(
    [
        req("/a"),
        req("/b", "POST", b"p" * 37),
        b"GET /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
    ]
)
_RESPS = st.sampled_from(
    [
        resp(200, b"r" * 25),
        resp(404, b""),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\nT: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" + resp(500),
    ]
)
_PAIRS = st.one_of(
    st.tuples(_REQS, _RESPS),
    st.just((req("/h", "HEAD"), b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")),
)

_TIMING = {"cost_req_sent", "cost_resp_wait", "cost_cnt_dl", "response_duration"}


def _run(isn: tuple[int, int], streams: tuple[bytes, bytes], segs: tuple[list, list]) -> list[tuple]:
    eng = L7Engine()
    c = Conn(eng, isn=isn)
    for side in (0, 1):
        for off, length in segs[side]:
            seq = (c.seq[side] + off) & 0xFFFFFFFF
            c.segment(side, seq, streams[side][off : off + length])
    eng.finish(c.ts)
    return [_key(r) for r in eng.take_records()]


def _key(r: L7Record) -> tuple:
    fields = {k: v for k, v in r.fields.items() if k not in _TIMING}
    return (r.l7_id, r.client_side, sorted(fields.items()), r.req_bytes, r.resp_bytes)


def _cut(data: bytes, cuts: list[int]) -> list[tuple[int, int]]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [(a, b - a) for a, b in zip(points, points[1:]) if b > a]


@settings(max_examples=150, deadline=None)
@given(
    pairs=st.lists(_PAIRS, min_size=1, max_size=6),
    cuts=st.tuples(st.lists(st.integers(0, 2000), max_size=15), st.lists(st.integers(0, 2000), max_size=15)),
    isn=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    seed=st.integers(0, 2**32),
)
def test_same_records_for_any_segmentation_and_reordering(pairs, cuts, isn, seed):
    streams = (b"".join(q for q, _ in pairs), b"".join(s for _, s in pairs))
    whole = _run(isn, streams, ([(0, len(streams[0]))], [(0, len(streams[1]))]))
    assert [r[2] for r in whole] and all(dict(r[2])["pairing"] == "paired" for r in whole)
    segs = (_cut(streams[0], cuts[0]), _cut(streams[1], cuts[1]))
    assert _run(isn, streams, segs) == whole
    rng = random.Random(seed)
    for side_segs in segs:
        rng.shuffle(side_segs)
    assert _run(isn, streams, segs) == whole


@settings(max_examples=200, deadline=None)
@given(
    packets=st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 2**32 - 1), st.binary(max_size=200), st.booleans()),
        max_size=25,
    ),
    prefix=st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"\x00\x1d"]),
)
def test_random_packets_never_crash(packets, prefix):
    eng = L7Engine(max_conns=3)
    for i, (side, seq, data, udp) in enumerate(packets):
        conn = f"c{seq % 4}"
        if udp:
            eng.udp_datagram("u" + conn, side, i, prefix + data)
        else:
            eng.tcp_segment(conn, side, seq, i, prefix + data, retrans=bool(i % 2), syn=i % 5 == 0)
        if i % 7 == 0:
            eng.expire(i * 10**10)
    eng.finish(10**12)
    for r in eng.take_records():
        assert set(r.fields) <= L7_NAMES


# -- truncated captures (snaplen) ----------------------------------------------------------


def _chunked(body: bytes, size: int) -> list[bytes]:
    """A chunked response as segments: the head, then one segment per chunk (its size line first)."""
    segs = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for i in range(0, len(body), size):
        part = body[i : i + size]
        segs.append(b"%x\r\n%s\r\n" % (len(part), part))
    return segs + [b"0\r\n\r\n"]


def _segments(message: bytes, mss: int = 1448) -> list[bytes]:
    return [message[i : i + mss] for i in range(0, len(message), mss)]


_SNAP_EXCHANGES = [
    # (request segments, response segments); every message starts a segment, as senders do
    ([req("/small")], _segments(resp(200, b"a" * 2000))),
    ([req("/upload", "POST", b"u" * 2000)], _segments(resp(201, b""))),
    ([req("/big")], _segments(resp(200, b"b" * 70000))),
    ([req("/chunked")], _chunked(b"c" * 9000, 1000)),
    ([req("/upload-big", "PUT", b"v" * 70000)], _segments(resp(204, b""))),
    ([req("/404")], _segments(resp(404, b"n" * 300))),
]


def _snap_run(snaplen: int, pipelined: bool) -> list[tuple]:
    eng = L7Engine()
    c = Conn(eng)

    def send(side: int, segs: list[bytes]) -> None:
        for seg in segs:
            c.ts += MS
            cut = seg[:snaplen] if snaplen else seg
            assert eng.tcp_segment(c.id, side, c.seq[side], c.ts, cut, length=len(seg), retrans=False)
            c.seq[side] = (c.seq[side] + len(seg)) & 0xFFFFFFFF

    exchanges = _SNAP_EXCHANGES * 2
    if pipelined:  # every request first, then every response
        for q, _ in exchanges:
            send(0, [s for part in q for s in _segments(part)])
        for _, s in exchanges:
            send(1, s)
    else:
        for q, s in exchanges:
            send(0, [x for part in q for x in _segments(part)])
            send(1, s)
    eng.finish(c.ts)
    assert eng.stats["malformed"] == 0 and eng.stats["gaps"] == 0
    return [
        (
            r.l7_id, r.fields["http_method"], r.fields["http_path"], r.fields["http_status_code"],
            r.fields["req_seq"], r.fields["resp_seq"], r.fields["request_length"], r.fields["response_length"],
            r.fields["pairing"], r.req_packets, r.req_bytes, r.resp_packets, r.resp_bytes, r.time,
        )
        for r in eng.take_records()
    ]  # fmt: skip


def test_truncated_payloads_give_the_same_records():
    for pipelined in (False, True):
        whole = _snap_run(0, pipelined)
        assert len(whole) == 12 and all(r[8] == "paired" for r in whole)
        assert whole[2][7] == len(resp(200, b"b" * 70000)) and whole[2][11] == -(-whole[2][7] // 1448)
        for snaplen in (64, 200, 1024):
            assert _snap_run(snaplen, pipelined) == whole, (snaplen, pipelined)


def test_truncated_stream_position_and_stats():
    eng = L7Engine()
    c = Conn(eng)
    q, s = req("/a"), resp(200, b"x" * 5000)
    eng.tcp_segment("c1", 0, c.seq[0], c.ts, q, retrans=False)
    eng.tcp_segment("c1", 1, c.seq[1], c.ts + MS, s[:100], length=len(s), retrans=False)
    (r,) = eng.take_records()  # complete at once: the uncaptured tail finished the body
    assert (r.fields["response_length"], r.resp_bytes, r.resp_packets) == (len(s), len(s), 1)
    assert eng.stats["truncated_packets"] == 1 and eng.stats["truncated_bytes"] == len(s) - 100
    assert eng.stats["gaps"] == 0 and not eng._holes
    # The next response is found at its exact seq, though its first bytes came after a cut.
    seq2 = (c.seq[1] + len(s)) & 0xFFFFFFFF
    eng.tcp_segment("c1", 0, c.seq[0] + len(q), c.ts + 2 * MS, q, retrans=False)
    eng.tcp_segment("c1", 1, seq2, c.ts + 3 * MS, resp(404), retrans=False)
    (r2,) = eng.take_records()
    assert (r2.fields["resp_seq"], r2.fields["http_status_code"]) == (seq2, 404)


def test_truncated_head_still_gives_the_message():
    eng = L7Engine()
    c = Conn(eng)
    long_head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nX-Long: " + b"h" * 300 + b"\r\nContent-Length: 10\r\n\r\n"
    for i in range(3):
        c.ts += MS
        eng.tcp_segment("c1", 0, c.seq[0], c.ts, req(f"/{i}"), retrans=False)
        c.seq[0] += len(req(f"/{i}"))
        s = long_head + b"0123456789"
        eng.tcp_segment("c1", 1, c.seq[1], c.ts, s[:100], length=len(s), retrans=False)
        c.seq[1] += len(s)
    eng.finish(c.ts)
    recs = eng.take_records()
    assert [(r.fields["http_path"], r.fields["http_status_code"], r.fields["pairing"]) for r in recs] == [
        ("/0", 200, "paired"), ("/1", 200, "paired"), ("/2", 200, "paired")
    ]  # fmt: skip
    # Its framing is unknown, so it runs until the next response (or the end of the connection).
    assert [r.fields["response_length"] for r in recs] == [len(long_head) + 10] * 3
    assert recs[0].fields["resp_headers"] == "Server: nginx"


def test_truncated_dns_over_udp_is_counted_never_a_crash():
    eng = L7Engine()
    q = dns.message.make_query("big.example", "TXT")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("big.example.", 5, "IN", "TXT", *[f'"{"t" * 200}"' for _ in range(5)]))
    wire = r.to_wire()
    assert eng.udp_datagram("u1", 0, 1000, q.to_wire()) is True
    assert eng.udp_datagram("u1", 1, 2000, wire[:60], length=len(wire)) is True
    (rec,) = eng.take_records()
    assert (rec.fields["pairing"], rec.fields["dns_query"], rec.resp_bytes) == ("paired", "big.example", len(wire))
    assert eng.stats["malformed"] == 1
    for cut in range(0, len(wire), 7):
        eng.udp_datagram("u2", 1, 3000 + cut, wire[:cut], length=len(wire))
    eng.finish(10**6)
