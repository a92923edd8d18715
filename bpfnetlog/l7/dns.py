"""DNS over UDP (one message per datagram) and over TCP (2-byte length prefix).

Decoding is dnspython's `from_wire`; this module only frames messages, checks
that a header is plausible before trusting a parse (content detection), and
turns a message into record fields. Anything dnspython rejects is counted as
malformed and skipped. A decode costs ~100 us, more than everything else of a
message, so queries of the plain shape resolvers send are read by slicing
(`_plain_query`, same values as dnspython) and other messages are memoized by
their bytes after the id (`_parse`).

Truncated captures (snaplen): a datagram cut by the capture (`length` > the
captured bytes) that dnspython cannot decode still gives a message from its
header and question (id, QR, rcode, name, type; no answers), counted in
`malformed`. Over TCP, a known-size gap inside a message (loss the reassembler
gave up on, or an uncaptured tail) drops that message (malformed) but skips
exactly its remaining bytes, so the next message is found at its length prefix.
"""

from __future__ import annotations

import re

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from .base import SEQ_MASK, Message, safe_text

MAX_ANSWERS = 2048  # chars of dns_answers
_OPCODES = (0, 2, 4, 5)  # QUERY, STATUS, NOTIFY, UPDATE


def response_status(rcode: int) -> str:
    """Like DeepFlow: NOERROR ok; FORMERR and NXDOMAIN the client's fault; the rest the server's."""
    if rcode == 0:
        return "ok"
    return "client_error" if rcode in (1, 3) else "server_error"


def _plausible(wire: bytes) -> bool:
    """Header sanity, so random bytes that happen to parse are not taken for DNS."""
    if len(wire) < 12:
        return False
    opcode = (wire[2] >> 3) & 0xF
    qd = int.from_bytes(wire[4:6], "big")
    rest = sum(int.from_bytes(wire[i : i + 2], "big") for i in (6, 8, 10))
    return opcode in _OPCODES and qd == 1 and rest <= 512


_LABEL = re.compile(rb"[A-Za-z0-9_-]+")
_PLAIN_QTYPES = frozenset((1, 2, 5, 6, 12, 15, 16, 28, 33, 64, 65, 255))  # A NS CNAME SOA PTR MX TXT AAAA SRV SVCB HTTPS ANY


def _plain_query(wire: bytes) -> tuple[int, str, int] | None:
    """(id, qname, qtype) of a query of the plain shape stub resolvers and dig send, read without
    dnspython, whose decode costs ~100 us; None for any other shape (dnspython decodes those).

    The shape: QUERY opcode, one IN question of a listed type, no answer or authority records,
    at most one additional record, an EDNS OPT of version 0 holding nothing or one cookie,
    labels of letters, digits, "-" and "_" without compression, nothing after. For these,
    dnspython's decode succeeds and gives this name (no escapes needed), type and id.
    """
    end = len(wire)
    if end < 17 or wire[2] & 0xF8 or wire[4:10] != b"\x00\x01\x00\x00\x00\x00" or wire[10] or wire[11] > 1:
        return None
    labels = []
    p = 12
    while p < end and 0 < wire[p] < 64:
        label = wire[p + 1 : p + 1 + wire[p]]
        if len(label) != wire[p] or not _LABEL.fullmatch(label):
            return None
        labels.append(label)
        p += 1 + wire[p]
    if p + 5 > end or wire[p] or not labels or p - 12 >= 255 or wire[p + 3 : p + 5] != b"\x00\x01":
        return None
    qtype = int.from_bytes(wire[p + 1 : p + 3], "big")
    if qtype not in _PLAIN_QTYPES:
        return None
    p += 5
    if wire[11]:  # OPT: root name, type 41, payload size, ext-rcode 0, version 0, flags, options
        if wire[p : p + 3] != b"\x00\x00\x29" or p + 11 > end or wire[p + 5 : p + 7] != b"\x00\x00":
            return None
        size = int.from_bytes(wire[p + 9 : p + 11], "big")
        p += 11
        if p + size != end:
            return None
        if size:  # one COOKIE option: client cookie (8 bytes) + server cookie (none, or 8 to 32 bytes)
            olen = size - 4
            if wire[p : p + 2] != b"\x00\x0a" or int.from_bytes(wire[p + 2 : p + 4], "big") != olen:
                return None
            if olen != 8 and not 16 <= olen <= 40:
                return None
    elif p != end:
        return None
    return int.from_bytes(wire[:2], "big"), b".".join(labels).decode("ascii"), qtype


def _decode(wire: bytes) -> dns.message.Message | None:
    try:
        return dns.message.from_wire(wire)
    except Exception:  # dnspython raises many types on hostile input; all mean "not DNS"
        return None


_PARSED: dict[bytes, tuple | None] = {}  # message bytes after the id -> _parse's answer
PARSED_CACHE = 4096  # entries; messages above PARSED_CACHE_BYTES are not kept
PARSED_CACHE_BYTES = 512


def _parse(wire: bytes) -> tuple[bool, str | None, int, dict[str, object] | None] | None:
    """(is_request, question name (None: no question), qtype, response fields (None for a request))
    of a whole message; None if dnspython rejects it.

    Memoized by the bytes after the id: repeated lookups of a name get answers that differ
    only in the id, and a dnspython decode costs ~100 us (the id plays no part in the decode).
    """
    key = wire[2:]
    if key in _PARSED:
        return _PARSED[key]
    msg = _decode(wire)
    parsed = None
    if msg is not None:
        is_request = not msg.flags & dns.flags.QR
        q = msg.question[0] if msg.question else None
        response = None
        if not is_request:
            rcode = msg.rcode()
            answers = ",".join(rd.to_text() for rrset in msg.answer for rd in rrset)
            response = dict(dns_rcode=dns.rcode.to_text(rcode), response_code=int(rcode),
                            response_status=response_status(rcode),
                            dns_answers=safe_text(answers.encode(), MAX_ANSWERS))  # fmt: skip
        name = q.name.to_text(omit_final_dot=True) if q is not None else None
        parsed = is_request, name, q.rdtype if q is not None else 0, response
    if len(key) <= PARSED_CACHE_BYTES:
        if len(_PARSED) >= PARSED_CACHE:
            _PARSED.clear()
        _PARSED[key] = parsed
    return parsed


def _question(wire: bytes) -> tuple[int, int, int, str, int] | None:
    """(id, flags, rcode, qname, qtype) from the header and first question of a cut message."""
    if not _plausible(wire):
        return None
    try:
        name, used = dns.name.from_wire(wire, 12)
    except Exception:  # a cut or hostile name
        return None
    if len(wire) < 12 + used + 4:
        return None
    qtype = int.from_bytes(wire[12 + used : 14 + used], "big")
    flags = int.from_bytes(wire[2:4], "big")
    return int.from_bytes(wire[:2], "big"), flags, flags & 0xF, name.to_text(omit_final_dot=True), qtype


def detect_udp(data: bytes, side: int) -> "DnsParser | None":
    ok = _plain_query(data) is not None or (
        _plausible(data) and (_parse(data) is not None or _question(data) is not None)
    )
    return DnsParser(tcp=False) if ok else None


def detect_tcp(data: bytes, side: int) -> "DnsParser | None":
    size = int.from_bytes(data[:2], "big")
    wire = data[2 : 2 + size]
    ok = len(data) >= 2 + size and (_plain_query(wire) is not None or (_plausible(wire) and _parse(wire) is not None))
    return DnsParser(tcp=True) if ok else None


_FIELDS: dict[tuple, dict[str, object]] = {}  # (qname, qtype, response items) -> the fields, shared


def _fields(qname: str | None, qtype: int, response: dict[str, object] | None) -> dict[str, object]:
    """A message's fields: the question's (qname None: there was none), then `response`'s.

    One dict per distinct answer, shared by every message that gives it (Message.fields are
    read-only): a resolver asks the same few names again and again, and the pipeline converts
    each distinct dict to columns once.
    """
    key = (qname, qtype, tuple(response.items()) if response else None)
    fields = _FIELDS.get(key)
    if fields is None:
        fields = {}
        if qname is not None:
            qtext = dns.rdatatype.to_text(qtype)
            fields.update(dns_query=qname, dns_qtype=qtext, request_type=qtext, request_resource=qname,
                          request_domain=qname)  # fmt: skip
        if response is not None:
            fields.update(response)
        if len(_FIELDS) >= PARSED_CACHE:
            _FIELDS.clear()
        _FIELDS[key] = fields
    return fields


class DnsParser:
    """Both directions of one DNS flow; the side that sends queries is the client."""

    proto = "dns"

    def __init__(self, tcp: bool) -> None:
        self.client_side = -1
        self.malformed = 0
        self._tcp = tcp
        self._buf = (bytearray(), bytearray())  # TCP: bytes of an unfinished message
        self._seq = [0, 0]  # raw seq of _buf[side][0]
        self._ts = [0, 0]  # ts of the packet that carried _buf[side][0]
        self._skip = [0, 0]  # TCP: bytes of a cut message still to skip

    def datagram(self, side: int, data: bytes, ts: int, length: int) -> list[Message]:
        """One UDP datagram of `length` bytes on the wire, of which `data` was captured."""
        msg = self._message(side, data, 0, ts, ts, max(length, len(data)), cut=length > len(data))
        return [msg] if msg else []

    def feed(self, side: int, data: bytes, seq: int, ts: int) -> list[Message]:
        if not self._tcp:
            msg = self._message(side, data, 0, ts, ts, len(data))
            return [msg] if msg else []
        skip = self._skip[side]
        if skip:
            if skip >= len(data):
                self._skip[side] = skip - len(data)
                return []
            self._skip[side] = 0
            data, seq = data[skip:], (seq + skip) & SEQ_MASK
        buf = self._buf[side]
        if not buf:
            self._seq[side], self._ts[side] = seq, ts
        buf += data
        out: list[Message] = []
        while len(buf) >= 2:
            size = int.from_bytes(buf[:2], "big")
            if size < 12:
                self.malformed += 1
                buf.clear()
                break
            if len(buf) < 2 + size:
                break
            msg = self._message(side, bytes(buf[2 : 2 + size]), self._seq[side], self._ts[side], ts, 2 + size)
            if msg:
                out.append(msg)
            del buf[: 2 + size]
            self._seq[side] = (self._seq[side] + 2 + size) & SEQ_MASK
            self._ts[side] = ts
        return out

    def absorb(self, side: int, size: int, ts: int) -> bool:
        """DNS messages are small: every byte is looked at (see `feed`)."""
        return False

    def gap(self, side: int, size: int) -> list[Message]:
        """Drop the cut message and skip the rest of it when its size is known; else the next
        segment is assumed to start a message."""
        buf = self._buf[side]
        if self._skip[side]:
            if 0 <= size <= self._skip[side]:
                self._skip[side] -= size
                return []
            self._skip[side] = 0
        elif size >= 0 and len(buf) >= 2:
            left = 2 + int.from_bytes(buf[:2], "big") - len(buf)
            if size <= left:
                self.malformed += 1
                self._skip[side] = left - size
        buf.clear()
        return []

    def close(self, ts: int) -> list[Message]:
        for buf in self._buf:
            buf.clear()
        return []

    def _message(
        self, side: int, wire: bytes, seq: int, ts0: int, ts1: int, length: int, cut: bool = False
    ) -> Message | None:
        plain = _plain_query(wire)
        if plain is not None:
            qid, name, qtype = plain
            return self._result(side, True, qid, name, qtype, None, seq, ts0, ts1, length)
        parsed = _parse(wire)
        if parsed is None:
            self.malformed += 1
            return self._cut_message(side, wire, ts0, length) if cut else None
        is_request, name, qtype, response = parsed
        qid = int.from_bytes(wire[:2], "big")
        return self._result(side, is_request, qid, name, qtype, response, seq, ts0, ts1, length)

    def _cut_message(self, side: int, wire: bytes, ts: int, length: int) -> Message | None:
        """A datagram the capture cut: header and question only."""
        q = _question(wire)
        if q is None:
            return None
        qid, flags, rcode, name, qtype = q
        is_request = not flags & dns.flags.QR
        response = None
        if not is_request:
            response = dict(dns_rcode=dns.rcode.to_text(rcode), response_code=rcode,
                            response_status=response_status(rcode))  # fmt: skip
        return self._result(side, is_request, qid, name, qtype, response, 0, ts, ts, length)

    def _result(self, side: int, is_request: bool, qid: int, name: str | None, qtype: int,
                response: dict[str, object] | None, seq: int, ts0: int, ts1: int, length: int) -> Message:  # fmt: skip
        """The message with its fields: the question's (`name` None: there was none), then `response`'s."""
        if self.client_side < 0:
            self.client_side = side if is_request else 1 - side
        shown = safe_text(name.encode(), 512) if name is not None else None
        fields = _fields(shown, qtype, response)
        qname = shown or ""
        traceid = None if self._tcp else f"dns_{qid}_{qname}"
        return Message(is_request, side, seq, ts0, ts1, length, fields, (qid, qname.lower()), True, traceid)
