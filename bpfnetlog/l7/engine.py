"""The L7 stage as the pipeline sees it: packets of connections in, records and markers out.

Per connection it keeps two reassemblers, a parser picked by content (never by
port), the requests waiting for a response and a short log of the packets that
may still be attributed to a message. Everything is bounded: connections (LRU),
reorder buffers, detection buffers, waiting requests and the packet log.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from . import dns, http1
from .base import Detector, Message, Parser
from .reassembly import Chunk, StreamReassembler

TCP_DETECTORS: tuple[Detector, ...] = (http1.detect, dns.detect_tcp)
UDP_DETECTORS: tuple[Detector, ...] = (dns.detect_udp,)
DETECT_KEEP = 16 * 1024  # bytes per side kept while the protocol is unknown
DETECT_GIVE_UP = 256 * 1024  # bytes after which an undetected TCP connection is ignored
DETECT_GIVE_UP_DATAGRAMS = 8
MAX_WAITING = 1024  # requests without response per connection
PACKET_LOG = 4096  # packets per direction kept for attributing them to messages


@dataclass(slots=True)
class L7Record:
    """One request and its response (either may be missing, see fields["pairing"])."""

    conn_id: str
    l7_id: str
    client_side: int  # 0/1, -1 unknown
    l7_proto: str
    time: int  # ns: request start, or response start without request
    fields: dict[str, object]  # L7_FIELDS names only
    req_packets: int = 0
    req_bytes: int = 0
    req_retrans: int = 0
    resp_packets: int = 0
    resp_bytes: int = 0
    resp_retrans: int = 0


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


@dataclass(eq=False, slots=True)
class _Exchange:
    """One l7_id: a request and, later, its response."""

    l7_id: str
    req: Message | None
    conn: "_Conn"
    done: bool = False


class _Conn:
    __slots__ = (
        "id", "udp", "parser", "ignored", "reasm", "pre", "pre_bytes", "seen",
        "n", "waiting", "inflight", "packets", "done_end", "malformed",
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
        self.n = 0  # l7_id counter
        self.waiting: dict[object, _Exchange] = {}  # key -> request without response yet
        self.inflight: dict[str, _Exchange] = {}  # l7_id -> request not yet in a record
        self.packets: tuple[deque, deque] = (deque(maxlen=PACKET_LOG), deque(maxlen=PACKET_LOG))
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
        payload: bytes,
        *,
        retrans: bool,
        syn: bool = False,
        fin: bool = False,
        rst: bool = False,
    ) -> None:
        """Every TCP packet with payload, plus SYNs (they fix the stream origin).

        FIN/RST are accepted but only the caller's `close` ends a connection: a
        FIN of one side does not end the other side's messages.
        """
        conn = self._conn(conn_id, False, ts)
        if conn.ignored:
            return
        r = conn.reasm[side]
        if syn:
            r.set_isn(seq)
            seq = (seq + 1) & 0xFFFFFFFF  # data on a SYN (TFO) starts after it
        if not payload:
            return
        off = r.offset(seq)
        conn.packets[side].append((off, off + len(payload), retrans))
        self._deliver(conn, side, r.segment(seq, payload, ts))
        if r.waiting:
            self._holes[conn] = None

    def udp_datagram(self, conn_id: str, side: int, ts: int, payload: bytes) -> None:
        conn = self._conn(conn_id, True, ts)
        if conn.ignored or not payload:
            return
        if conn.parser is None:
            conn.parser = _detect(UDP_DETECTORS, payload, side)
            conn.seen += 1
            if conn.parser is None:
                if conn.seen >= DETECT_GIVE_UP_DATAGRAMS:
                    self._give_up(conn)
                return
        self._feed(conn, side, Chunk(0, payload, ts))

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
                del self._holes[conn]
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

    def _conn(self, conn_id: str, udp: bool, ts: int) -> _Conn:
        conn = self._conns.get(conn_id)
        if conn is not None:
            self._conns.move_to_end(conn_id)
            return conn
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

    def _give_up(self, conn: _Conn) -> None:
        """Not a protocol we know: drop what was kept and ignore the connection from now on."""
        self.stats["unknown_conns"] += 1
        conn.ignored = True
        conn.pre = []
        conn.reasm = (StreamReassembler(), StreamReassembler())
        conn.packets[0].clear()
        conn.packets[1].clear()
        self._holes.pop(conn, None)

    # -- bytes to messages ----------------------------------------------------------

    def _deliver(self, conn: _Conn, side: int, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            if conn.parser is not None:
                self._feed(conn, side, chunk)
            elif not conn.ignored:
                self._detect_tcp(conn, side, chunk)

    def _detect_tcp(self, conn: _Conn, side: int, chunk: Chunk) -> None:
        """Keep the chunk, look at this side's kept bytes, and replay them once detected."""
        conn.pre.append((side, chunk))
        conn.pre_bytes[side] += len(chunk.data)
        conn.seen += len(chunk.data)
        while conn.pre_bytes[side] > DETECT_KEEP:  # forget the oldest bytes of this side
            i = next(i for i, (s, _) in enumerate(conn.pre) if s == side)
            dropped = conn.pre.pop(i)[1]
            conn.pre_bytes[side] -= len(dropped.data)
            nxt = next(c for s, c in conn.pre[i:] if s == side)
            nxt.gap += dropped.gap + len(dropped.data)
        data = b"".join(c.data for s, c in conn.pre if s == side)
        conn.parser = _detect(TCP_DETECTORS, data, side)
        if conn.parser is None:
            if conn.seen > DETECT_GIVE_UP:
                self._give_up(conn)
            return
        pre, conn.pre = conn.pre, []
        for s, c in pre:
            self._feed(conn, s, c)

    def _feed(self, conn: _Conn, side: int, chunk: Chunk) -> None:
        parser = conn.parser
        if chunk.gap:
            self._on_messages(conn, parser.gap(side, chunk.gap))
        self._on_messages(conn, parser.feed(side, chunk.data, chunk.seq, chunk.ts))
        self._count_malformed(conn)

    def _count_malformed(self, conn: _Conn) -> None:
        if conn.parser.malformed != conn.malformed:
            self.stats["malformed"] += conn.parser.malformed - conn.malformed
            conn.malformed = conn.parser.malformed

    # -- messages to records ----------------------------------------------------------

    def _on_messages(self, conn: _Conn, msgs: list[Message]) -> None:
        for m in msgs:
            if m.tag is None:
                self._start(conn, m)
            if m.complete:
                self._complete(conn, m)

    def _start(self, conn: _Conn, m: Message) -> None:
        """A message began: give it an l7_id (its request's, for a response) and mark its packet."""
        if m.is_request:
            ex = m.tag = _Exchange(self._new_id(conn), m, conn)
            if m.key is not None:
                old = conn.waiting.get(m.key)
                if old is not None:  # same key again (a DNS retry): the first got no answer
                    self._unanswered(old, "unknown")
                elif len(conn.waiting) >= MAX_WAITING:
                    self._unanswered(next(iter(conn.waiting.values())), "unknown")
                conn.waiting[m.key] = ex
                self._age[ex] = None
            conn.inflight[ex.l7_id] = ex
        else:
            ex = conn.waiting.pop(m.key, None) if m.key is not None else None
            if ex is None:
                ex = _Exchange(self._new_id(conn), None, conn)
            else:
                self._age.pop(ex, None)
            m.tag = ex
        self.stats["markers"] += 1
        named = (ex.req or m).fields  # a response's marker names the request it answers
        self._markers.append(
            Marker(
                conn.id, m.side, m.seq, ex.l7_id, conn.parser.proto,
                str(named.get("http_method", "")), str(named.get("http_path", "")), m.is_request, m.ts_start,
            )
        )  # fmt: skip

    def _complete(self, conn: _Conn, m: Message) -> None:
        if not conn.udp:
            end = conn.reasm[m.side].offset(m.seq) + m.length
            conn.done_end[m.side] = max(conn.done_end[m.side], end)
        if not m.is_request:
            self._emit(m.tag, m, "paired" if m.tag.req is not None else "no_request", None)
        self._prune(conn, m.side)

    def _unanswered(self, ex: _Exchange, status: str) -> None:
        conn = ex.conn
        if conn.waiting.get(ex.req.key) is ex:
            del conn.waiting[ex.req.key]
        self._age.pop(ex, None)
        self._emit(ex, None, "no_response", status)

    def _new_id(self, conn: _Conn) -> str:
        conn.n += 1
        return f"{conn.id}-{conn.n}"

    def _prune(self, conn: _Conn, side: int) -> None:
        """Forget packets that can no longer belong to a message without a record."""
        floor = conn.done_end[side]
        if conn.inflight:
            first = next(iter(conn.inflight.values())).req
            if first.side == side and not conn.udp:
                floor = min(floor, conn.reasm[side].offset(first.seq))
        log = conn.packets[side]
        while log and log[0][1] <= floor:
            log.popleft()

    def _account(self, conn: _Conn, m: Message) -> tuple[int, int, int]:
        """(packets, payload bytes, retransmissions) of the packets that carried `m`."""
        if conn.udp:
            return 1, m.length, 0
        a = conn.reasm[m.side].offset(m.seq)
        b = a + m.length
        packets = size = retrans = 0
        for start, end, rt in conn.packets[m.side]:
            if start < b and end > a:
                packets += 1
                size += min(end, b) - max(start, a)
                retrans += rt
        return packets, size, retrans

    def _emit(self, ex: _Exchange, resp: Message | None, pairing: str, status: str | None) -> None:
        if ex.done:
            return
        ex.done = True
        conn, req = ex.conn, ex.req
        conn.inflight.pop(ex.l7_id, None)
        f: dict[str, object] = {}
        if resp is not None:
            f.update(resp.fields)
        if req is not None:
            f.update(req.fields)
        f["l7_id"] = ex.l7_id
        f["pairing"] = pairing
        if status is not None or "response_status" not in f:
            f["response_status"] = status or "unknown"
        req_seq = req.seq if req is not None and not conn.udp else -1
        resp_seq = resp.seq if resp is not None and not conn.udp else -1
        f["req_seq"], f["resp_seq"] = req_seq, resp_seq
        f["l7_traceid"] = (req or resp).traceid or f"{req_seq}_{resp_seq}"
        rec = L7Record(conn.id, ex.l7_id, conn.parser.client_side, conn.parser.proto, (req or resp).ts_start, f)
        if req is not None:
            f["request_length"] = req.length
            f["cost_req_sent"] = (req.ts_end - req.ts_start) // 1000
            rec.req_packets, rec.req_bytes, rec.req_retrans = self._account(conn, req)
        if resp is not None:
            f["response_length"] = resp.length
            f["cost_cnt_dl"] = (resp.ts_end - resp.ts_start) // 1000
            rec.resp_packets, rec.resp_bytes, rec.resp_retrans = self._account(conn, resp)
        if req is not None and resp is not None:
            f["cost_resp_wait"] = max(0, resp.ts_start - req.ts_end) // 1000
            f["response_duration"] = max(0, resp.ts_end - req.ts_start) // 1000
        self.stats["records"] += 1
        self._records.append(rec)


def _detect(detectors: tuple[Detector, ...], data: bytes, side: int) -> Parser | None:
    for detector in detectors:
        parser = detector(data, side)
        if parser is not None:
            return parser
    return None
