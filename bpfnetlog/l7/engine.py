"""The L7 stage as the pipeline sees it: packets of connections in, records and markers out.

Per connection it keeps two reassemblers, a parser picked by content (never by
port), the requests waiting for a response and, per direction, a log of the
packets that may still be attributed to a message. Everything is bounded:
connections (LRU), reorder buffers, detection buffers, waiting requests and
the packet logs.

Truncated captures: `length` is a packet's payload size on the wire and
`payload` the bytes that were captured (its first len(payload) bytes). The
stream advances by `length`; the parser is told about the uncaptured tail as a
known-size gap, and byte counts (request_length, response_length, tx/rx bytes)
use `length`.

`tcp_segment` and `udp_datagram` return False once the engine has given up on
the connection (not a protocol it knows): every later packet of that
connection would be dropped at once, so the caller may stop sending them.

Packet accounting: each direction's log holds (start, size, retransmission) per
packet in stream order, packed in one int (`_pack`: ints are not tracked by the
garbage collector, tuples are, and the log holds an entry per packet); it is pruned below the oldest message of that
direction that has no record yet, so attributing a message's packets looks at
only the packets around it (O(packets) overall).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import OrderedDict
from dataclasses import dataclass

from . import dns, http1
from .base import Detector, Message, Parser
from .reassembly import Chunk, StreamReassembler

TCP_DETECTORS: tuple[Detector, ...] = (http1.detect, dns.detect_tcp)
UDP_DETECTORS: tuple[Detector, ...] = (dns.detect_udp,)
DETECT_KEEP = 16 * 1024  # captured bytes per side kept while the protocol is unknown
DETECT_GIVE_UP = 256 * 1024  # stream bytes after which an undetected TCP connection is ignored
DETECT_GIVE_UP_DATAGRAMS = 8
MAX_WAITING = 1024  # requests without response per connection
PACKET_LOG = 4096  # packets per direction kept for attributing them to messages
_START_SHIFT = 33  # packet log entry: start << 33 | size << 1 | retransmission; sorts like (start, size, retrans)
_SIZE_MASK = (1 << 32) - 1  # sizes are below 2**32 (payload_len is 32 bits)
_NONE: dict[str, object] = {}  # the fields of a missing message (never written to)
_HTTP_HINT = b"HTTP/1."  # every HTTP/1 start line holds it; detection runs only once it was seen
_MASK = 0xFFFFFFFF


@dataclass(slots=True)
class L7Record:
    """One request and its response (either may be missing, see fields["pairing"]).

    Its fields are the response's, overridden by the request's, overridden by its own
    (`fields` merges them). The messages' dicts are kept as they are, shared by every
    record of an equal head (the parsers memoize heads), so a writer can convert each
    distinct dict once.
    """

    conn_id: str
    l7_id: str
    client_side: int  # 0/1, -1 unknown
    l7_proto: str
    time: int  # ns: request start, or response start without request
    own: dict[str, object]  # L7_FIELDS names only: ids, pairing, seqs, lengths, costs
    req_fields: dict[str, object]  # the request's fields (read-only; empty without a request)
    resp_fields: dict[str, object]  # the response's fields (read-only; empty without a response)
    req_packets: int = 0
    req_bytes: int = 0
    req_retrans: int = 0
    resp_packets: int = 0
    resp_bytes: int = 0
    resp_retrans: int = 0

    @property
    def fields(self) -> dict[str, object]:
        """Every L7_FIELDS value of the record, as one new dict."""
        return self.resp_fields | self.req_fields | self.own


@dataclass(slots=True)
class Marker:
    """The packet (conn_id, side, seq) starts an L7 message; for UDP seq is 0 and ts tells the packet."""

    conn_id: str
    side: int
    seq: int
    l7_id: str
    l7_proto: str
    http_method: str
    http_path: str
    is_request: bool
    ts: int = 0


class _Exchange:
    """One l7_id: a request and, later, its response."""

    __slots__ = ("l7_id", "req", "conn", "done")

    def __init__(self, l7_id: str, req: Message | None, conn: "_Conn") -> None:
        self.l7_id = l7_id
        self.req = req
        self.conn = conn
        self.done = False


class _Conn:
    __slots__ = (
        "id", "udp", "parser", "ignored", "reasm", "pre", "pre_bytes", "seen", "hint", "dns_checked",
        "n", "waiting", "inflight", "log", "lo", "span", "done_end", "malformed",
    )  # fmt: skip

    def __init__(self, conn_id: str, udp: bool, stats: dict[str, int]) -> None:
        self.id = conn_id
        self.udp = udp
        self.parser: Parser | None = None
        self.ignored = False  # detection gave up: every later packet is dropped at once
        self.reasm = (StreamReassembler(stats=stats), StreamReassembler(stats=stats))
        self.pre: list[tuple[int, Chunk]] = []  # chunks delivered before detection
        self.pre_bytes = [0, 0]
        self.seen = 0  # bytes (TCP) or datagrams (UDP) offered to detection
        self.hint = [b"", b""]  # per side: the last bytes seen, or None once _HTTP_HINT was seen
        self.dns_checked = [False, False]
        self.n = 0  # l7_id counter
        self.waiting: dict[object, _Exchange] = {}  # key -> request without response yet
        self.inflight: dict[str, _Exchange] = {}  # l7_id -> request not yet in a record
        self.log: tuple[list, list] = ([], [])  # per side: packed (start, size, retrans), sorted
        self.lo = [0, 0]  # per side: log entries before this index are forgotten
        self.span = [0, 0]  # per side: largest end - start in the log
        self.done_end = [-1, -1]  # stream offset where the last complete message of a side ended
        self.malformed = 0  # parser.malformed already added to stats


class L7Engine:
    """Reassembly + detection + parsing + pairing for every connection of one capture."""

    def __init__(
        self,
        request_timeout_ns: int = 30_000_000_000,
        max_conns: int = 100_000,
        reorder_timeout_ns: int = 1_000_000_000,
    ) -> None:
        self.request_timeout_ns = request_timeout_ns
        self.reorder_timeout_ns = reorder_timeout_ns
        self.max_conns = max_conns
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "conns", "unknown_conns", "evicted", "gaps", "gap_bytes", "buffer_overflow",
                "dup_segments", "reorder_flushes", "malformed", "records", "markers", "timeouts",
                "truncated_packets", "truncated_bytes",
            ),
            0,
        )  # fmt: skip
        self._conns: OrderedDict[str, _Conn] = OrderedDict()
        self._age: OrderedDict[_Exchange, None] = OrderedDict()  # waiting requests, oldest first
        self._holes: dict[_Conn, None] = {}  # connections with data held behind a hole
        self._records: list[L7Record] = []
        self._markers: list[Marker] = []

    # -- input --------------------------------------------------------------------

    def tcp_segment(
        self,
        conn_id: str,
        side: int,
        seq: int,
        ts: int,
        payload: bytes | memoryview,
        *,
        length: int | None = None,
        retrans: bool,
        syn: bool = False,
    ) -> bool:
        """Every TCP packet with payload, plus SYNs (they fix the stream origin).

        `payload` is what was captured of the segment (a memoryview is copied only
        when its bytes are looked at or kept: body bytes are only counted), `length`
        its payload size on the wire (None: len(payload)). Returns False once the connection is
        ignored (unknown protocol): the caller may drop its later packets.
        Only the caller's `close` ends a connection: a FIN of one side does not end the
        other side's messages, so FIN/RST are not passed.
        """
        conn = self._live_conn(conn_id, False, ts)
        if conn is None:
            return False
        r = conn.reasm[side]
        if syn:
            r.set_isn(seq)
            seq = (seq + 1) & _MASK  # data on a SYN (TFO) starts after it
        cap = len(payload)
        if length is not None and length > cap:
            n = length
            tail = n - cap
            self.stats["truncated_packets"] += 1
            self.stats["truncated_bytes"] += tail
        elif cap:
            n, tail = cap, 0
        else:
            return True
        off = r.offset(seq)
        # The packet log, kept sorted by start offset (in-order packets are appended).
        log = conn.log[side]
        entry = (off << _START_SHIFT) | (n << 1) | (1 if retrans else 0)
        if not log or off >= log[-1] >> _START_SHIFT:
            log.append(entry)
        else:
            insort(log, entry, conn.lo[side])
        if n > conn.span[side]:
            conn.span[side] = n
        if len(log) - conn.lo[side] > PACKET_LOG:
            self._trim_log(conn, side)
        if off == r.next and not r._ooo:  # in order and nothing waits: no Chunk, no list
            r.next = off + n
            parser = conn.parser
            if parser is None:
                self._detect_tcp(conn, side, Chunk(seq, bytes(payload), ts, 0, tail))
            elif tail or not parser.absorb(side, cap, ts):
                if cap:
                    msgs = parser.feed(side, bytes(payload), seq, ts)
                    if msgs:
                        self._on_messages(conn, msgs)
                if tail:
                    msgs = parser.gap(side, tail)
                    if msgs:
                        self._on_messages(conn, msgs)
                if parser.malformed != conn.malformed:
                    self._count_malformed(conn)
        else:
            self._deliver(conn, side, r.at(off, bytes(payload), ts, n))
            if r._ooo:
                self._holes[conn] = None
        return not conn.ignored

    def udp_datagram(
        self, conn_id: str, side: int, ts: int, payload: bytes | memoryview, length: int | None = None
    ) -> bool:
        """One UDP datagram; `length` is its payload size on the wire (None: len(payload)).

        Returns False once the connection is ignored (unknown protocol).
        """
        payload = bytes(payload)
        conn = self._live_conn(conn_id, True, ts)
        if conn is None:
            return False
        if not payload:
            return True
        n = length if length is not None and length > len(payload) else len(payload)
        if n > len(payload):
            self.stats["truncated_packets"] += 1
            self.stats["truncated_bytes"] += n - len(payload)
        if conn.parser is None:
            conn.parser = _detect(UDP_DETECTORS, payload, side)
            conn.seen += 1
            if conn.parser is None:
                if conn.seen >= DETECT_GIVE_UP_DATAGRAMS:
                    self._give_up(conn)
                return not conn.ignored
        self._on_messages(conn, conn.parser.datagram(side, payload, ts, n))
        self._count_malformed(conn)
        return True

    def adopt(self, conn_id: str, parser: Parser, isn: tuple[int, int], next_off: tuple[int, int],
              done_end: tuple[int, int], n: int, requests: list[tuple[Message, int, bool]],
              responses: list[tuple[Message, int, Message | None]],
              counts: dict[int, tuple[int, int, int]]) -> None:  # fmt: skip
        """Carry on a TCP connection another observer followed so far (l7.fastpath).

        `isn`/`next_off` per side (isn -1: unknown); `n`: l7_ids given; `requests`: those
        without a record yet, with their l7_id number and whether they still wait for a response
        (else a response in progress answers them); `responses`: in progress, with their l7_id
        number and request (None: no_request);
        `counts`: id(message) -> (packets, bytes, retransmissions) so far, for the packet log.
        """
        conn = self._new_conn(conn_id, False, max((m.ts_end for m, *_ in requests), default=0))
        conn.parser, conn.n = parser, n
        conn.done_end = list(done_end)
        for side in (0, 1):
            if isn[side] >= 0:
                conn.reasm[side].set_isn(isn[side])
            conn.reasm[side].next = next_off[side]
        for req, k, waits in requests:
            ex = req.tag = _Exchange(f"{conn_id}-{k}", req, conn)
            conn.inflight[ex.l7_id] = ex
            if waits:
                conn.waiting[req.key] = ex
                self._age[ex] = None
        for resp, k, req in responses:
            resp.tag = req.tag if req is not None else _Exchange(f"{conn_id}-{k}", None, conn)
        for m, *_ in [*requests, *responses]:
            packets, size, retrans = counts[id(m)]
            log = conn.log[m.side]
            # entries that give _account the same sums: packets-1 of one byte, the rest in one
            log.extend((m.off << _START_SHIFT) | (1 << 1) | (1 if k < retrans else 0) for k in range(packets - 1))
            log.append((m.off << _START_SHIFT) | ((size - packets + 1) << 1) | (1 if packets - 1 < retrans else 0))
            conn.span[m.side] = max(conn.span[m.side], size - packets + 1)
        for log in conn.log:
            log.sort()

    def _live_conn(self, conn_id: str, udp: bool, ts: int) -> "_Conn | None":
        """The connection's state (made on first sight, most recently used), None if ignored."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return self._new_conn(conn_id, udp, ts)
        if conn.ignored:
            return None
        self._conns.move_to_end(conn_id)
        return conn

    def close(self, conn_id: str, ts: int) -> None:
        conn = self._conns.pop(conn_id, None)
        if conn is not None:
            self._close(conn, ts)

    def expire(self, now_ts: int) -> None:
        for conn in list(self._holes):
            for side, r in enumerate(conn.reasm):
                if r.waiting and r.oldest_ts() <= now_ts - self.reorder_timeout_ns:
                    self.stats["reorder_flushes"] += 1
                    self._deliver(conn, side, r.flush())
            if not (conn.reasm[0].waiting or conn.reasm[1].waiting):
                self._holes.pop(conn, None)
        deadline = now_ts - self.request_timeout_ns
        while self._age:
            ex = next(iter(self._age))
            if ex.req.ts_start > deadline:
                break
            self.stats["timeouts"] += 1
            self._unanswered(ex, "timeout")

    def finish(self, ts: int) -> None:
        while self._conns:
            self._close(self._conns.popitem(last=False)[1], ts)

    def take_records(self) -> list[L7Record]:
        out, self._records = self._records, []
        return out

    def take_markers(self) -> list[Marker]:
        out, self._markers = self._markers, []
        return out

    # -- connections ----------------------------------------------------------------

    def _new_conn(self, conn_id: str, udp: bool, ts: int) -> _Conn:
        conn = self._conns[conn_id] = _Conn(conn_id, udp, self.stats)
        self.stats["conns"] += 1
        if len(self._conns) > self.max_conns:
            self.stats["evicted"] += 1
            self._close(self._conns.popitem(last=False)[1], ts)
        return conn

    def _close(self, conn: _Conn, ts: int) -> None:
        self._holes.pop(conn, None)
        if conn.parser is not None:
            for side, r in enumerate(conn.reasm):
                self._deliver(conn, side, r.flush())
            self._on_messages(conn, conn.parser.close(ts))
            self._count_malformed(conn)
        for ex in list(conn.waiting.values()):
            self._unanswered(ex, "unknown")
        for ex in list(conn.inflight.values()):  # requests whose key could not be waited on
            self._emit(ex, None, "no_response", "unknown")

    def _give_up(self, conn: _Conn) -> None:
        """Not a protocol we know: drop what was kept and ignore the connection from now on."""
        self.stats["unknown_conns"] += 1
        conn.ignored = True
        conn.pre = []
        conn.reasm = (StreamReassembler(), StreamReassembler())
        conn.log = ([], [])
        conn.lo = [0, 0]
        self._holes.pop(conn, None)

    # -- bytes to messages ----------------------------------------------------------

    def _deliver(self, conn: _Conn, side: int, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            if conn.parser is not None:
                self._feed(conn, side, chunk)
            elif not conn.ignored:
                self._detect_tcp(conn, side, chunk)

    def _detect_tcp(self, conn: _Conn, side: int, chunk: Chunk) -> None:
        """Keep the chunk, look at this side's kept bytes, and replay them once detected.

        The detectors run only when they can succeed: HTTP once "HTTP/1." was seen
        on this side, DNS once the first message announced by its length prefix is
        complete; so a connection of another protocol costs one substring search
        per packet until it is given up.
        """
        conn.pre.append((side, chunk))
        data = chunk.data
        conn.pre_bytes[side] += len(data)
        conn.seen += chunk.gap + len(data) + chunk.tail
        while conn.pre_bytes[side] > DETECT_KEEP:  # forget the oldest bytes of this side (keep the newest)
            mine = [i for i, (s, _) in enumerate(conn.pre) if s == side]
            if len(mine) < 2:
                break
            dropped = conn.pre.pop(mine[0])[1]
            conn.pre_bytes[side] -= len(dropped.data)
            conn.pre[mine[1] - 1][1].gap += dropped.gap + len(dropped.data) + dropped.tail
            conn.dns_checked[side] = False  # the kept bytes start elsewhere now
        hint = conn.hint[side]
        if hint is not None:
            if _HTTP_HINT in data or (hint and _HTTP_HINT in hint + data[:6]):
                conn.hint[side] = hint = None
            else:
                conn.hint[side] = b"" if chunk.tail else (hint + data[-6:])[-6:]
        parser = None
        if hint is None or not conn.dns_checked[side]:
            kept = b"".join(c.data for s, c in conn.pre if s == side)
            if not conn.dns_checked[side] and len(kept) >= 2:
                need = 2 + int.from_bytes(kept[:2], "big")
                if len(kept) >= need:  # the first message is complete: DNS over TCP or not
                    conn.dns_checked[side] = True
                    parser = dns.detect_tcp(kept[:need], side)
            if parser is None and hint is None:
                parser = http1.detect(kept, side)
        if parser is None:
            if conn.seen > DETECT_GIVE_UP:
                self._give_up(conn)
            return
        conn.parser = parser
        pre, conn.pre = conn.pre, []
        for s, c in pre:
            self._feed(conn, s, c)

    def _feed(self, conn: _Conn, side: int, chunk: Chunk) -> None:
        parser = conn.parser
        if chunk.gap:
            self._on_messages(conn, parser.gap(side, chunk.gap))
        if chunk.data:
            self._on_messages(conn, parser.feed(side, chunk.data, chunk.seq, chunk.ts))
        if chunk.tail:
            self._on_messages(conn, parser.gap(side, chunk.tail))
        self._count_malformed(conn)

    def _count_malformed(self, conn: _Conn) -> None:
        if conn.parser.malformed != conn.malformed:
            self.stats["malformed"] += conn.parser.malformed - conn.malformed
            conn.malformed = conn.parser.malformed

    # -- messages to records ----------------------------------------------------------

    def _on_messages(self, conn: _Conn, msgs: list[Message]) -> None:
        start, complete = self._start, self._complete
        for m in msgs:
            if m.tag is None:
                start(conn, m)
            if m.complete:
                complete(conn, m)

    def _start(self, conn: _Conn, m: Message) -> None:
        """A message began: give it an l7_id (its request's, for a response) and mark its packet."""
        if not conn.udp:
            m.off = conn.reasm[m.side].offset(m.seq)
        if m.is_request:
            conn.n += 1
            ex = m.tag = _Exchange(f"{conn.id}-{conn.n}", m, conn)
            if m.key is not None:
                waiting = conn.waiting
                old = waiting.get(m.key)
                if old is not None:  # same key again (a DNS retry): the first got no answer
                    self._unanswered(old, "unknown")
                elif len(waiting) >= MAX_WAITING:
                    self._unanswered(next(iter(waiting.values())), "unknown")
                waiting[m.key] = ex
                self._age[ex] = None
            conn.inflight[ex.l7_id] = ex
            named = m.fields
        else:
            ex = conn.waiting.pop(m.key, None) if m.key is not None else None
            if ex is None:
                conn.n += 1
                ex = _Exchange(f"{conn.id}-{conn.n}", None, conn)
                named = m.fields
            else:
                self._age.pop(ex, None)
                named = ex.req.fields  # a response's marker names the request it answers
            m.tag = ex
        self.stats["markers"] += 1
        self._markers.append(
            Marker(conn.id, m.side, m.seq, ex.l7_id, conn.parser.proto, named.get("http_method", ""),
                   named.get("http_path", ""), m.is_request, m.ts_start)
        )  # fmt: skip

    def _complete(self, conn: _Conn, m: Message) -> None:
        side = m.side
        if not conn.udp:
            end = m.off + m.length
            if end > conn.done_end[side]:
                conn.done_end[side] = end
        if not m.is_request:
            ex = m.tag
            self._emit(ex, m, "paired" if ex.req is not None else "no_request", None)
        if not conn.udp and len(conn.log[side]) - conn.lo[side] > 4:  # a few stale entries cost less than pruning
            self._prune(conn, side)

    def _unanswered(self, ex: _Exchange, status: str) -> None:
        conn = ex.conn
        if conn.waiting.get(ex.req.key) is ex:
            del conn.waiting[ex.req.key]
        self._age.pop(ex, None)
        self._emit(ex, None, "no_response", status)

    def _prune(self, conn: _Conn, side: int) -> None:
        """Forget packets that can no longer belong to a message without a record."""
        floor = conn.done_end[side]
        if conn.inflight:
            first = next(iter(conn.inflight.values())).req
            if first.side == side and first.off < floor:
                floor = first.off
        log = conn.log[side]
        lo = conn.lo[side]
        n = len(log)
        while lo < n and (log[lo] >> _START_SHIFT) + ((log[lo] >> 1) & _SIZE_MASK) <= floor:
            lo += 1
        if lo >= n:
            log.clear()
            lo = 0
            conn.span[side] = 0
        elif lo > 256 and lo * 2 > n:
            del log[:lo]
            lo = 0
        conn.lo[side] = lo

    def _trim_log(self, conn: _Conn, side: int) -> None:
        """More than PACKET_LOG packets wait: forget the oldest (their messages lose them)."""
        conn.lo[side] += 1
        if conn.lo[side] * 2 > len(conn.log[side]):
            del conn.log[side][: conn.lo[side]]
            conn.lo[side] = 0

    def _account(self, conn: _Conn, m: Message) -> tuple[int, int, int]:
        """(packets, payload bytes, retransmissions) of the packets that carried `m`."""
        if conn.udp:
            return 1, m.length, 0
        a = m.off
        b = a + m.length
        side = m.side
        log = conn.log[side]
        i = conn.lo[side]
        n = len(log)
        if n - i > 16:
            i = bisect_left(log, (a - conn.span[side]) << _START_SHIFT, i)
        packets = size = retrans = 0
        while i < n:
            e = log[i]
            start = e >> _START_SHIFT
            end = start + ((e >> 1) & _SIZE_MASK)
            rt = e & 1
            if start >= b:
                break
            if end > a:
                packets += 1
                size += (end if end < b else b) - (start if start > a else a)
                retrans += rt
            i += 1
        return packets, size, retrans

    def _emit(self, ex: _Exchange, resp: Message | None, pairing: str, status: str | None) -> None:
        if ex.done:
            return
        ex.done = True
        conn, req = ex.conn, ex.req
        if req is not None:
            conn.inflight.pop(ex.l7_id, None)
        req_fields = req.fields if req is not None else _NONE
        resp_fields = resp.fields if resp is not None else _NONE
        f = {"l7_id": ex.l7_id, "pairing": pairing}
        if status is not None or ("response_status" not in req_fields and "response_status" not in resp_fields):
            f["response_status"] = status or "unknown"
        req_seq = req.seq if req is not None and not conn.udp else -1
        resp_seq = resp.seq if resp is not None and not conn.udp else -1
        f["req_seq"], f["resp_seq"] = req_seq, resp_seq
        f["l7_traceid"] = (req or resp).traceid or f"{req_seq}_{resp_seq}"
        rec = L7Record(conn.id, ex.l7_id, conn.parser.client_side, conn.parser.proto, (req or resp).ts_start, f,
                       req_fields, resp_fields)  # fmt: skip
        if req is not None:
            f["request_length"] = req.length
            f["cost_req_sent"] = (req.ts_end - req.ts_start) // 1000
            rec.req_packets, rec.req_bytes, rec.req_retrans = self._account(conn, req)
            if resp is not None:
                f["cost_resp_wait"] = max(0, resp.ts_start - req.ts_end) // 1000
                f["response_duration"] = max(0, resp.ts_end - req.ts_start) // 1000
        if resp is not None:
            f["response_length"] = resp.length
            f["cost_cnt_dl"] = (resp.ts_end - resp.ts_start) // 1000
            rec.resp_packets, rec.resp_bytes, rec.resp_retrans = self._account(conn, resp)
        self.stats["records"] += 1
        self._records.append(rec)
        ex.req = None  # req.tag is ex: without this cycle both are freed at once, not by the garbage collector


def _detect(detectors: tuple[Detector, ...], data: bytes, side: int) -> Parser | None:
    for detector in detectors:
        parser = detector(data, side)
        if parser is not None:
            return parser
    return None
