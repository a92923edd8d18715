"""HTTP/1.x parser on hand-built byte streams: framing, pairing keys, resync, hostile input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bpfnetlog.l7.base import Message
from bpfnetlog.l7.http1 import MAX_HEAD, Http1Parser, detect

C, S = 0, 1  # client side, server side


def feed_all(p: Http1Parser, side: int, data: bytes, seq: int = 1000, ts: int = 0, step: int = 0) -> list[Message]:
    """Feeds `data` whole, or in pieces of `step` bytes (ts grows by 1 per piece)."""
    out: list[Message] = []
    pieces = [data] if not step else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        out += p.feed(side, piece, seq, ts)
        seq += len(piece)
        ts += 1
    return out


def done(msgs: list[Message]) -> list[Message]:
    """Complete messages, once each (a message is reported at its start and again at its end)."""
    seen: set[int] = set()
    return [m for m in msgs if m.complete and not (id(m) in seen or seen.add(id(m)))]


REQ = b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def test_request_fields():
    (m,) = feed_all(Http1Parser(), C, REQ)
    assert m.complete and m.is_request and m.seq == 1000 and m.length == len(REQ) and m.key == 1
    f = m.fields
    assert f["http_method"] == f["request_type"] == "GET"
    assert f["http_path"] == "/index.html"
    assert f["request_resource"] == "/index.html?q=1"
    assert f["http_host"] == f["request_domain"] == "example.com"
    assert f["http_version"] == "1.1"
    assert f["http_user_agent"] == "curl/8"
    assert f["req_headers"] == "Host: example.com\nUser-Agent: curl/8"


def test_headers_split_byte_by_byte_give_the_same_message():
    p = Http1Parser()
    msgs = feed_all(p, C, REQ, step=1)
    (m,) = msgs
    assert m.complete and m.ts_start == 0 and m.ts_end == len(REQ) - 1
    assert m.fields == feed_all(Http1Parser(), C, REQ)[0].fields


def test_response_reported_at_head_then_completed_with_body():
    p = Http1Parser()
    feed_all(p, C, REQ)
    (start,) = p.feed(S, RESP[:-3], 5000, 10)
    assert not start.complete and start.fields["http_status_code"] == 200 and start.key == 1
    (end,) = p.feed(S, RESP[-3:], 5000 + len(RESP) - 3, 11)
    assert end is start and end.complete and end.length == len(RESP) and end.ts_end == 11


def test_pipelining_five_requests_with_head_in_the_middle():
    p = Http1Parser()
    methods = ["GET", "POST", "HEAD", "GET", "DELETE"]
    reqs = b""
    for i, m in enumerate(methods):
        body = b"abc" if m == "POST" else b""
        reqs += b"%s /r%d HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (m.encode(), i, len(body), body)
    sent = done(feed_all(p, C, reqs))
    assert [m.fields["http_method"] for m in sent] == methods
    assert [m.key for m in sent] == [1, 2, 3, 4, 5]
    resps = b""
    for i in range(5):
        # The HEAD response announces a length but carries no body.
        body = b"" if i == 2 else b"body%d" % i
        resps += b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + body
    got = done(feed_all(p, S, resps, seq=9000, step=7))
    assert [m.key for m in got] == [1, 2, 3, 4, 5]
    assert [m.length for m in got] == [43, 43, 38, 43, 43]
    assert got[3].seq == 9000 + 43 * 2 + 38
    assert p.malformed == 0


def test_chunked_body_with_trailers():
    p = Http1Parser()
    feed_all(p, C, REQ)
    resp = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Checksum: 1\r\nX-More: 2\r\n\r\n"
    )
    tail = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    feed_all(p, C, REQ)
    msgs = done(feed_all(p, S, resp + tail, step=3))
    assert [m.length for m in msgs] == [len(resp), len(tail)]
    assert msgs[1].fields["response_status"] == "client_error"


def test_100_continue_is_not_the_final_response():
    p = Http1Parser()
    req_head = b"PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    assert not feed_all(p, C, req_head)[0].complete
    assert p.feed(S, b"HTTP/1.1 100 Continue\r\n\r\n", 5000, 1) == []
    (req,) = p.feed(C, b"data", 1000 + len(req_head), 2)
    assert req.complete and req.length == len(req_head) + 4
    (resp,) = p.feed(S, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 5025, 3)
    assert resp.complete and resp.key == 1 and resp.seq == 5025 and resp.fields["http_status_code"] == 201


def test_204_and_304_have_no_body():
    p = Http1Parser()
    feed_all(p, C, REQ + REQ + REQ)
    resps = (
        b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"
        + RESP
    )
    got = done(feed_all(p, S, resps))
    assert [m.fields["http_status_code"] for m in got] == [204, 304, 200]


def test_close_delimited_body_ends_at_close():
    p = Http1Parser()
    feed_all(p, C, b"GET / HTTP/1.0\r\n\r\n")
    (m,) = p.feed(S, b"HTTP/1.0 200 OK\r\n\r\nsome", 5000, 1)
    assert not m.complete
    assert p.feed(S, b" more bytes", 5023, 2) == []
    (m2,) = p.close(3)
    assert m2 is m and m.complete and m.length == 34 and m.ts_end == 2


def test_mid_stream_join_resyncs_at_next_message():
    p = Http1Parser()
    junk = b"of a body that we joined in the middle\r\nGET not a request\r\n"
    msgs = done(feed_all(p, C, junk + REQ, step=5))
    assert len(msgs) == 1 and msgs[0].seq == 1000 + len(junk)
    assert p.client_side == C
    # A body need not end with a newline: the status line is found right after it.
    (r,) = done(feed_all(p, S, b"tail of an old response" + RESP, seq=7000))
    assert r.key == 1 and r.seq == 7000 + 23


def test_response_without_request_has_no_key():
    p = Http1Parser()
    (m,) = feed_all(p, S, RESP)
    assert m.key is None and p.client_side == C


def test_gap_inside_a_known_length_body_stays_in_sync():
    p = Http1Parser()
    head = b"POST /u HTTP/1.1\r\nContent-Length: 100\r\n\r\n"
    feed_all(p, C, head + b"x" * 10)
    assert p.gap(C, 50) == []
    (m,) = p.feed(C, b"y" * 40, 0, 5)
    assert m.complete and m.length == len(head) + 100
    (m2,) = p.feed(C, REQ, 0, 6)
    assert m2.key == 2


def test_gap_in_a_head_ends_the_message_and_resyncs():
    p = Http1Parser()
    feed_all(p, C, REQ)
    feed_all(p, S, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    (cut,) = p.gap(S, -1)
    assert cut.complete and cut.key == 1
    # Resync at the next status line; its request was already answered by the cut one.
    (r,) = done(p.feed(S, b"lo\r\n0\r\n\r\n" + RESP, 0, 9))
    assert r.key is None and r.seq == 9 and r.length == len(RESP)


def test_hostile_bytes_are_stored_escaped():
    p = Http1Parser()
    raw = b"GET /\x00<script>\xff HTTP/1.1\r\nHost: \x1b[31mevil\xfe\r\nX-\xff: \x00\r\n\r\n"
    (m,) = feed_all(p, C, raw)
    assert m.fields["http_path"] == "/\\x00<script>\\xff"
    assert m.fields["http_host"] == "\\x1b[31mevil\\xfe"
    assert m.fields["req_headers"] == "Host: \\x1b[31mevil\\xfe\nX-\\xff: \\x00"


def test_secrets_are_redacted():
    p = Http1Parser()
    req = (
        b"GET / HTTP/1.1\r\nAuthorization: Bearer abc\r\nProxy-Authorization: x\r\nCookie: s=1\r\n"
        b"X-Api-Key: k\r\nX-Auth-Token: t\r\nX-Client-Secret: s\r\nDb-Password: p\r\nAccept: */*\r\n\r\n"
    )
    (m,) = feed_all(p, C, req)
    h = dict(line.split(": ", 1) for line in m.fields["req_headers"].split("\n"))
    assert h.pop("Accept") == "*/*"
    assert set(h.values()) == {"[REDACTED]"} and len(h) == 7
    (r,) = feed_all(p, S, b"HTTP/1.1 200 OK\r\nSet-Cookie: id=secret\r\nContent-Length: 0\r\n\r\n")
    assert r.fields["resp_headers"] == "Set-Cookie: [REDACTED]\nContent-Length: 0"


def test_header_text_is_bounded():
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 900) for i in range(60))
    (m,) = feed_all(Http1Parser(), C, b"GET / HTTP/1.1\r\n" + many + b"\r\n")
    text = m.fields["req_headers"]
    assert len(text) == 4096 + len("\n...[TRUNCATED]") and text.endswith("\n...[TRUNCATED]")
    assert text.startswith("X-H0: vvv")


def test_trace_ids():
    p = Http1Parser()
    tp = b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX-Request-Id: rid-1\r\n"
    b3 = b"b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90\r\n"
    xb3 = b"X-B3-TraceId: 463ac35c9f6413ad\r\nX-B3-SpanId: a2fb4a1d1a96d312\r\nX-B3-ParentSpanId: 0020000000000001\r\n"
    got = [done(feed_all(p, C, b"GET / HTTP/1.1\r\n" + h + b"\r\n"))[0].fields for h in (tp, b3, xb3)]
    assert (got[0]["trace_id"], got[0]["parent_id"], got[0]["x_request_id"]) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        "rid-1",
    )
    assert "span_id" not in got[0]
    assert (got[1]["trace_id"], got[1]["span_id"], got[1]["parent_id"]) == (
        "80f198ee56343ba864fe8b2a57d3eff7",
        "e457b5a2e4d86bd1",
        "05e3ac9a4f6e3b90",
    )
    assert (got[2]["trace_id"], got[2]["span_id"], got[2]["parent_id"]) == (
        "463ac35c9f6413ad",
        "a2fb4a1d1a96d312",
        "0020000000000001",
    )


def test_oversized_head_is_malformed_and_memory_stays_bounded():
    p = Http1Parser()
    p.feed(C, b"GET / HTTP/1.1\r\nX: ", 0, 0)
    for _ in range(20):
        p.feed(C, b"a" * 10_000, 0, 0)
    assert p.malformed == 1
    assert len(p._halves[C].buf) <= MAX_HEAD + 10_000
    (m,) = done(p.feed(C, b"\r\n" + REQ, 0, 1))
    assert m.fields["http_path"] == "/index.html"


def test_bad_content_length_is_malformed():
    p = Http1Parser()
    assert feed_all(p, C, b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n" + REQ)[0].fields["http_path"] == "/index.html"
    assert p.malformed == 1


def test_absolute_form_target():
    (m,) = feed_all(Http1Parser(), C, b"GET http://proxy.example/a/b?c HTTP/1.1\r\n\r\n")
    assert m.fields["http_path"] == "/a/b" and m.fields["request_resource"] == "http://proxy.example/a/b?c"


def test_connect_then_tunnel_is_ignored():
    p = Http1Parser()
    feed_all(p, C, b"CONNECT db:443 HTTP/1.1\r\nHost: db:443\r\n\r\n")
    (r,) = feed_all(p, S, b"HTTP/1.1 200 Connection established\r\n\r\n")
    assert r.complete
    assert feed_all(p, C, REQ) == [] and feed_all(p, S, RESP) == []


def test_detect_by_content():
    assert detect(b"GET / HTTP/1.1\r\n", 0) is not None
    assert detect(b"binary\x00junk\nHTTP/1.1 200 OK\r\n", 1) is not None
    assert detect(b"GET / HTTP/1.1", 0) is None  # line not finished yet
    assert detect(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0) is None
    assert detect(b"*3\r\n$3\r\nSET\r\n", 0) is None


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.tuples(st.integers(0, 1), st.binary(max_size=300)), max_size=20), gaps=st.booleans())
def test_random_bytes_never_crash(chunks, gaps):
    p = Http1Parser()
    for i, (side, data) in enumerate(chunks):
        if gaps and i % 3 == 2:
            p.gap(side, i - 3)
        for m in p.feed(side, data, i * 1000, i):
            assert m.length >= 0
    p.close(99)


_STREAM = st.sampled_from(
    [
        REQ,
        b"GET /a HTTP/1.1\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"\r\n",
        b"Host: x\r\n",
        b"\x00\xff",
        b"5\r\nhello\r\n",
    ]
)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(_STREAM, max_size=12), step=st.integers(1, 40))
def test_http_like_streams_parse_the_same_in_any_segmentation(parts, step):
    data = b"".join(parts)

    def run(step: int) -> list[tuple]:
        p = Http1Parser()
        msgs = done(feed_all(p, C, data, step=step)) + done(feed_all(p, S, data, step=step)) + p.close(0)
        return [(m.side, m.seq, m.length, m.key, m.fields) for m in msgs]

    assert run(step) == run(0)
