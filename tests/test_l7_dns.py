"""DNS parser: UDP datagrams, TCP length-prefixed messages across segments, hostile input."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rrset
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfnetlog.l7.dns import DnsParser, detect_tcp, detect_udp, response_status


def query(name: str = "example.com", rdtype: str = "A", qid: int = 4242) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    q.id = qid
    return q


def answer(q: dns.message.Message, *addrs: str, rcode: int = 0) -> bytes:
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if addrs:
        name = q.question[0].name
        r.answer.append(dns.rrset.from_text(name, 60, "IN", q.question[0].rdtype, *addrs))
    return r.to_wire()


def tcp(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


def test_udp_query_and_response_fields():
    q = query()
    p = detect_udp(q.to_wire(), 1)
    assert isinstance(p, DnsParser)
    (m,) = p.feed(1, q.to_wire(), 0, 10)
    assert m.is_request and m.complete and p.client_side == 1
    assert m.key == (4242, "example.com") and m.traceid == "dns_4242_example.com"
    assert m.fields == {
        "dns_query": "example.com",
        "dns_qtype": "A",
        "request_type": "A",
        "request_resource": "example.com",
        "request_domain": "example.com",
    }
    (r,) = p.feed(0, answer(q, "1.2.3.4", "5.6.7.8"), 0, 20)
    assert not r.is_request and r.key == m.key
    assert sorted(r.fields["dns_answers"].split(",")) == ["1.2.3.4", "5.6.7.8"]
    assert (r.fields["dns_rcode"], r.fields["response_code"], r.fields["response_status"]) == ("NOERROR", 0, "ok")
    assert type(r.fields["response_code"]) is int


def test_nxdomain_and_servfail_status():
    q = query("nope.example", "AAAA")
    p = DnsParser(tcp=False)
    (r,) = p.feed(0, answer(q, rcode=dns.rcode.NXDOMAIN), 0, 1)
    assert (r.fields["dns_rcode"], r.fields["response_code"], r.fields["response_status"]) == (
        "NXDOMAIN",
        3,
        "client_error",
    )
    assert r.fields["dns_qtype"] == "AAAA" and r.fields["dns_answers"] == ""
    assert [response_status(c) for c in (0, 1, 2, 3, 4, 5)] == [
        "ok",
        "client_error",
        "server_error",
        "client_error",
        "server_error",
        "server_error",
    ]


def test_tcp_messages_across_segments_and_two_in_one_segment():
    q1, q2 = query("a.example", qid=1), query("b.example", "MX", qid=2)
    wire = tcp(q1.to_wire()) + tcp(q2.to_wire())
    p = detect_tcp(wire, 0)
    assert isinstance(p, DnsParser)
    out = []
    for i in range(0, len(wire), 7):
        out += p.feed(0, wire[i : i + 7], 5000 + i, i)
    assert [(m.fields["dns_query"], m.seq, m.length, m.traceid) for m in out] == [
        ("a.example", 5000, len(tcp(q1.to_wire())), None),
        ("b.example", 5000 + len(tcp(q1.to_wire())), len(tcp(q2.to_wire())), None),
    ]
    assert out[1].fields["dns_qtype"] == "MX"
    assert out[0].ts_start == 0 and out[0].ts_end == 28  # first and last piece that carried it
    resp = tcp(answer(q2, "10 mx.b.example.")) + tcp(answer(q1, "9.9.9.9"))
    got = p.feed(1, resp, 9000, 99)
    assert [m.key for m in got] == [(2, "b.example"), (1, "a.example")]
    assert got[0].fields["dns_answers"] == "10 mx.b.example."


def test_tcp_gap_drops_the_cut_message_and_resyncs():
    q1, q2, q3 = query(qid=1), query("x.example", qid=2), query("y.example", qid=3)
    p = DnsParser(tcp=True)
    w1 = tcp(q1.to_wire())
    assert p.feed(0, w1[:10], 0, 0) == []
    # A known-size hole inside the message (loss, or a capture that cut the segment):
    # the message is lost but its end is known, so the next one is found exactly.
    assert p.gap(0, 5) == [] and p.malformed == 1
    (m,) = p.feed(0, w1[15:] + tcp(q2.to_wire()), 15, 1)
    assert m.fields["dns_query"] == "x.example" and m.seq == len(w1)
    # A hole of unknown size: the next segment is assumed to start a message.
    p.feed(0, w1[:10], 500, 2)
    assert p.gap(0, -1) == []
    (m,) = p.feed(0, tcp(q3.to_wire()), 600, 3)
    assert m.fields["dns_query"] == "y.example" and m.seq == 600


def test_udp_datagram_cut_by_the_capture_keeps_header_and_question():
    q = query("cut.example", "AAAA", qid=9)
    big = answer(q, *[f"2001:db8::{i}" for i in range(40)])
    p = DnsParser(tcp=False)
    (m,) = p.datagram(1, big[:120], 5, len(big))
    assert m.complete and not m.is_request and m.length == len(big) and m.key == (9, "cut.example")
    assert (m.fields["dns_query"], m.fields["dns_qtype"], m.fields["dns_rcode"]) == ("cut.example", "AAAA", "NOERROR")
    assert "dns_answers" not in m.fields and p.malformed == 1
    assert p.datagram(1, big[:20], 6, len(big)) == []  # not even the question: counted, no message
    assert p.malformed == 2
    assert detect_udp(big[:120], 1) is not None


def test_malformed_is_counted_not_raised():
    p = DnsParser(tcp=False)
    assert p.feed(0, b"\x00\x01" + b"\xff" * 20, 0, 0) == []
    assert p.malformed == 1
    t = DnsParser(tcp=True)
    assert t.feed(0, b"\x00\x03abc", 0, 0) == []  # length below a DNS header
    assert t.feed(0, tcp(b"\x00" * 12 + b"\xff\xff\xff"), 0, 0) == []
    assert t.malformed == 2


def test_detection_rejects_other_protocols():
    assert detect_udp(b"GET / HTTP/1.1\r\n\r\n", 0) is None
    assert detect_udp(b"\x00" * 12, 0) is None  # no question: not plausible
    assert detect_tcp(b"GET / HTTP/1.1\r\n\r\n", 0) is None
    assert detect_tcp(tcp(query().to_wire())[:-1], 0) is None  # not complete yet


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.binary(max_size=200)), max_size=10))
def test_random_bytes_never_crash(chunks):
    udp, tcp_ = DnsParser(tcp=False), DnsParser(tcp=True)
    for i, (side, data) in enumerate(chunks):
        udp.feed(side, data, 0, i)
        tcp_.feed(side, data, i, i)
        detect_udp(data, side)
        detect_tcp(data, side)
    tcp_.close(0)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=60), st.integers(0, 60))
def test_corrupted_real_message_never_crashes(noise, at):
    wire = bytearray(answer(query(), "1.2.3.4"))
    wire[at % len(wire) : at % len(wire) + len(noise)] = noise
    DnsParser(tcp=False).feed(0, bytes(wire), 0, 0)
