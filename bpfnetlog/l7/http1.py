"""HTTP/1.0 and HTTP/1.1, observed passively from both directions.

Sans-IO: `feed` takes in-order bytes of one direction and returns `Message`
events. Bodies are counted, never copied or scanned byte by byte; only heads
and chunk-size lines are buffered, and that buffer is capped. The observer may
join mid-stream or lose bytes, so a direction that is not in sync scans (with a
C-level regex) for the next line that looks like a request or status line.
Responses answer requests in FIFO order (pipelining); the parser keeps that
queue itself because a response's framing depends on its request (HEAD, CONNECT).
"""

from __future__ import annotations

import json
import re
from collections import deque
from functools import lru_cache

from .base import SEQ_MASK, Message, safe_text

MAX_HEAD = 64 * 1024  # larger heads are treated as malformed (resync), never buffered further
MAX_LINE = 8 * 1024  # request target / chunk-size line cap
MAX_HEADERS = 128
MAX_HEADERS_JSON = 4096  # chars of req_headers / resp_headers
MAX_VALUE = 1024
MAX_WAITING = 1024  # requests awaiting a response, per connection
REDACTED = "[REDACTED]"
_SECRET = re.compile("auth|token|secret|passw|cookie|api-?_?key")

_METHODS = (
    b"GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|CONNECT|TRACE|PROPFIND|PROPPATCH|MKCOL|COPY|MOVE|LOCK|UNLOCK|REPORT|SEARCH|PURGE"
)
_REQ = rb"(" + _METHODS + rb") ([^ \r\n]{1,%d}) HTTP/(1\.[01])\r?\n" % MAX_LINE
_RESP = rb"HTTP/(1\.[01]) ([1-9][0-9][0-9])(?:[ \t][^\r\n]{0,1024})?\r?\n"
_REQ_LINE = re.compile(_REQ)
_RESP_LINE = re.compile(_RESP)
# Resync scans accept a start line anywhere, not only at a line start: a body need not
# end with a newline, so after a mid-stream join the next message is glued to it.
_SCAN = {0: _REQ_LINE, 1: _RESP_LINE, -1: re.compile(rb"(?:" + _REQ + rb"|" + _RESP + rb")")}  # by role
RESYNC_TAIL = 1024  # bytes kept while unsynced, for a start line split across packets
_HEAD_END = re.compile(rb"\r?\n\r?\n")

# Per-direction states.
RESYNC, HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILERS, UNTIL_CLOSE, TUNNEL = range(9)
_COUNTING = (BODY, CHUNK_DATA, UNTIL_CLOSE, TUNNEL)


def detect(data: bytes, side: int) -> "Http1Parser | None":
    """HTTP if `data` holds something that looks like a request or a status line."""
    return Http1Parser() if _SCAN[-1].search(data) else None


def response_status(code: int) -> str:
    """1xx-3xx ok, 4xx client_error, 5xx server_error."""
    return "ok" if code < 400 else "client_error" if code < 500 else "server_error"


class _Half:
    """One direction: the unparsed bytes and where the parser is in a message."""

    __slots__ = ("buf", "seq", "marks", "state", "remaining", "msg", "scan_from")

    def __init__(self) -> None:
        self.buf = bytearray()  # unconsumed bytes; buf[0] has raw seq `seq`
        self.seq = 0
        self.marks: list[tuple[int, int]] = []  # (offset in buf, ts of the packet from there on)
        self.state = RESYNC
        self.remaining = 0  # body / chunk bytes still expected
        self.msg: Message | None = None  # message being parsed
        self.scan_from = 0  # head-end search resumes here

    def ts_at(self, off: int) -> int:
        for start, ts in reversed(self.marks):
            if start <= off:
                return ts
        return self.marks[0][1]

    def consume(self, n: int) -> None:
        if not n:
            return
        del self.buf[:n]
        self.seq = (self.seq + n) & SEQ_MASK
        self.scan_from = max(0, self.scan_from - n)
        marks = self.marks
        i = 0
        while i + 1 < len(marks) and marks[i + 1][0] <= n:
            i += 1
        self.marks = [(max(0, o - n), ts) for o, ts in marks[i:]]


class Http1Parser:
    """Both directions of one HTTP/1.x connection."""

    proto = "http"

    def __init__(self) -> None:
        self.client_side = -1
        self.malformed = 0
        self._halves = (_Half(), _Half())
        self._waiting: deque[tuple[int, str]] = deque()  # (key, method) of requests not yet answered
        self._n = 0

    # -- Parser API ---------------------------------------------------------------

    def feed(self, side: int, data: bytes, seq: int, ts: int) -> list[Message]:
        h = self._halves[side]
        out: list[Message] = []
        if h.state == TUNNEL or not data:
            return out
        if not h.buf and h.state in _COUNTING:  # fast path: body bytes are only counted
            used = self._count(h, len(data), ts, out)
            if used == len(data):
                return out
            data, seq = data[used:], (seq + used) & SEQ_MASK
        if not h.buf:
            h.seq, h.marks = seq, [(0, ts)]
        else:
            h.marks.append((len(h.buf), ts))
        h.buf += data
        self._parse(side, h, out)
        return out

    def gap(self, side: int, size: int) -> list[Message]:
        h = self._halves[side]
        out: list[Message] = []
        if h.state in (UNTIL_CLOSE, TUNNEL) and size >= 0 and h.msg is not None:
            h.msg.length += size
        elif h.state in (BODY, CHUNK_DATA) and 0 <= size <= h.remaining:
            # The hole is inside a body of known size: skip it and stay in sync.
            self._count(h, size, h.msg.ts_end if h.msg else 0, out)
        elif h.state != TUNNEL:
            self._end(h, out)
            h.state = RESYNC
            h.buf.clear()
            h.marks = []
        return out

    def close(self, ts: int) -> list[Message]:
        out: list[Message] = []
        for h in self._halves:
            self._end(h, out)
            h.state = TUNNEL
        return out

    # -- parsing ------------------------------------------------------------------

    def _count(self, h: _Half, n: int, ts: int, out: list[Message]) -> int:
        """Counts up to `n` body bytes; returns how many belonged to the current body."""
        msg = h.msg
        if h.state in (UNTIL_CLOSE, TUNNEL):
            if msg is not None:
                msg.length += n
                msg.ts_end = ts
            return n
        take = min(n, h.remaining)
        h.remaining -= take
        msg.length += take
        msg.ts_end = ts
        if not h.remaining:
            if h.state == BODY:
                self._end(h, out)
            else:
                h.state = CHUNK_END
        return take

    def _parse(self, side: int, h: _Half, out: list[Message]) -> None:
        buf = h.buf
        p = 0
        while p < len(buf):
            state = h.state
            if state in _COUNTING:
                n = len(buf) - p if state in (UNTIL_CLOSE, TUNNEL) else min(h.remaining, len(buf) - p)
                p += self._count(h, n, h.ts_at(p + n - 1), out)
            elif state == RESYNC:
                h.consume(p)
                p = 0
                m = _SCAN[self._role(side)].search(buf)
                if m is None:
                    h.consume(max(0, len(buf) - RESYNC_TAIL))
                    return
                h.consume(m.start())
                h.state, h.scan_from = HEAD, 0
            elif state == HEAD:
                m = _HEAD_END.search(buf, max(p, h.scan_from))
                if m is None:
                    if len(buf) - p > MAX_HEAD:
                        p = self._malformed(h, p, out)
                        continue
                    h.scan_from = max(p, len(buf) - 3)
                    break
                if not self._head(side, h, p, m.end(), out):
                    p = self._malformed(h, p, out)
                    continue
                p = m.end()
            elif state == CHUNK_SIZE:
                nl = buf.find(b"\n", p)
                if nl < 0:
                    if len(buf) - p > MAX_LINE:
                        p = self._malformed(h, p, out)
                        continue
                    break
                size = _chunk_size(buf[p:nl])
                if size < 0:
                    p = self._malformed(h, p, out)
                    continue
                h.msg.length += nl + 1 - p
                p = nl + 1
                h.remaining = size
                h.state = CHUNK_DATA if size else TRAILERS
            elif state == CHUNK_END:
                n = 2 if buf.startswith(b"\r\n", p) else 1 if buf.startswith(b"\n", p) else 0
                if not n:
                    if len(buf) - p < 2 and buf[p] == 0x0D:
                        break
                    p = self._malformed(h, p, out)
                    continue
                h.msg.length += n
                p += n
                h.state = CHUNK_SIZE
            else:  # TRAILERS: an empty line, or trailer fields up to an empty line
                n = 2 if buf.startswith(b"\r\n", p) else 1 if buf.startswith(b"\n", p) else 0
                if not n:
                    m = _HEAD_END.search(buf, p)
                    if m is None:
                        if len(buf) - p > MAX_HEAD:
                            p = self._malformed(h, p, out)
                            continue
                        break
                    n = m.end() - p
                h.msg.length += n
                p += n
                h.msg.ts_end = h.ts_at(p - 1)
                self._end(h, out)
        h.consume(min(p, len(buf)))

    def _role(self, side: int) -> int:
        return -1 if self.client_side < 0 else 0 if side == self.client_side else 1

    def _malformed(self, h: _Half, p: int, out: list[Message]) -> int:
        """Ends the current message where it broke, skips the bad line, resyncs; new parse position."""
        self.malformed += 1
        self._end(h, out)
        nl = h.buf.find(b"\n", p)
        h.consume(len(h.buf) if nl < 0 else nl + 1)
        h.state = RESYNC
        return 0

    def _end(self, h: _Half, out: list[Message]) -> None:
        msg = h.msg
        if msg is not None:
            msg.complete = True
            if msg not in out:
                out.append(msg)
            h.msg = None
        if h.state != TUNNEL:
            h.state = HEAD

    def _head(self, side: int, h: _Half, start: int, end: int, out: list[Message]) -> bool:
        """Parses the head in buf[start:end]; False if it is not a valid head."""
        buf = h.buf
        role = self._role(side)
        req = _REQ_LINE.match(buf, start) if role != 1 else None
        resp = None if req or role == 0 else _RESP_LINE.match(buf, start)
        line = req or resp
        headers = _headers(bytes(buf[line.end() : end])) if line else None
        if headers is None:
            return False
        if self.client_side < 0:
            self.client_side = side if req else 1 - side
        if req:
            method = req[1].decode()
            self._n += 1
            key: int | None = self._n
            if len(self._waiting) >= MAX_WAITING:
                self._waiting.popleft()
            self._waiting.append((self._n, method))
            fields = _request_fields(method, req[2], req[3], headers)
        else:
            code = int(resp[2])
            if 100 <= code < 200 and code != 101:
                h.state = HEAD  # interim (100 Continue, 103 ...): the final response follows
                return True
            key, method = self._waiting.popleft() if self._waiting else (None, "")
            fields = _response_fields(code, resp[1], headers)
        framing = _framing(headers, method, fields.get("http_status_code"))
        if framing is None:
            return False
        h.state, h.remaining = framing
        h.msg = msg = Message(
            is_request=req is not None,
            side=side,
            seq=(h.seq + start) & SEQ_MASK,
            ts_start=h.ts_at(start),
            ts_end=h.ts_at(end - 1),
            length=end - start,
            fields=fields,
            key=key,
        )
        out.append(msg)
        if h.state == TUNNEL:  # CONNECT accepted or 101: the rest is another protocol
            self._halves[1 - side].state = TUNNEL
            self._end(h, out)
        elif h.state == BODY and not h.remaining:
            self._end(h, out)
        return True


def _headers(block: bytes | bytearray) -> dict[str, bytes] | None:
    """Header block -> {lower-case name: value}; duplicates joined by ", ". None if invalid."""
    headers: dict[str, bytes] = {}
    for line in block.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or name[-1:] in b" \t":
            return None
        if len(headers) >= MAX_HEADERS:
            break
        key = _header_name(name)
        value = value.strip()
        headers[key] = headers[key] + b", " + value if key in headers else value
    return headers


@lru_cache(maxsize=4096)  # header names repeat on every message
def _header_name(name: bytes) -> str:
    return safe_text(name, 128).lower()


def _framing(headers: dict[str, bytes], method: str, code: object) -> tuple[int, int] | None:
    """(state, body length) after a head (RFC 9112 section 6.3); None if the length is invalid."""
    if code is not None:  # response
        if method == "HEAD" or code in (204, 304):
            return BODY, 0
        if code == 101 or (method == "CONNECT" and 200 <= code < 300):
            return TUNNEL, 0
    te = headers.get("transfer-encoding")
    if te is not None and te.rsplit(b",", 1)[-1].strip().lower() == b"chunked":
        return CHUNK_SIZE, 0
    cl = headers.get("content-length")
    if cl is not None:
        values = {v.strip() for v in cl.split(b",")}
        if len(values) != 1:
            return None
        value = values.pop()
        return (BODY, int(value)) if value.isdigit() and len(value) <= 18 else None
    return (BODY, 0) if code is None else (UNTIL_CLOSE, 0)


def _chunk_size(line: bytes | bytearray) -> int:
    """Size of a chunk-size line (extensions ignored); -1 if invalid."""
    digits = line.split(b";", 1)[0].strip()
    if not digits or len(digits) > 15:
        return -1
    try:
        return int(digits, 16)
    except ValueError:
        return -1


def _request_fields(method: str, target: bytes, version: bytes, headers: dict[str, bytes]) -> dict[str, object]:
    resource = safe_text(target, MAX_LINE)
    path = resource
    if "://" in path[:12]:  # absolute-form (proxies): keep the path part
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    path = path.split("?", 1)[0]
    host = safe_text(headers.get("host", b""), 256)
    fields: dict[str, object] = {
        "http_method": method,
        "request_type": method,
        "http_path": path,
        "request_resource": resource,
        "http_host": host,
        "request_domain": host,
        "http_version": version.decode(),
        "http_user_agent": safe_text(headers.get("user-agent", b""), 512),
        "req_headers": headers_json(headers),
    }
    fields.update(trace_ids(headers))
    return fields


def _response_fields(code: int, version: bytes, headers: dict[str, bytes]) -> dict[str, object]:
    fields: dict[str, object] = {
        "http_status_code": code,
        "response_code": code,
        "response_status": response_status(code),
        "http_version": version.decode(),
        "resp_headers": headers_json(headers),
    }
    if b := headers.get("x-request-id"):
        fields["x_request_id"] = safe_text(b, 256)
    return fields


def trace_ids(headers: dict[str, bytes]) -> dict[str, str]:
    """trace_id / parent_id / span_id / x_request_id from W3C traceparent, b3 or X-B3-*.

    traceparent carries the caller's span, which is this request's parent_id;
    B3 carries the span of the call itself (span_id) and its parent (parent_id).
    """
    out: dict[str, str] = {}
    if tp := headers.get("traceparent"):
        parts = tp.split(b"-")
        if len(parts) >= 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
            out["trace_id"] = safe_text(parts[1], 32)
            out["parent_id"] = safe_text(parts[2], 16)
    elif b3 := headers.get("b3"):
        parts = b3.split(b"-")
        if len(parts) >= 2:
            out["trace_id"], out["span_id"] = safe_text(parts[0], 32), safe_text(parts[1], 16)
            if len(parts) >= 4:
                out["parent_id"] = safe_text(parts[3], 16)
    elif tid := headers.get("x-b3-traceid"):
        out["trace_id"] = safe_text(tid, 32)
        for name, field in (("x-b3-spanid", "span_id"), ("x-b3-parentspanid", "parent_id")):
            if value := headers.get(name):
                out[field] = safe_text(value, 16)
    if rid := headers.get("x-request-id"):
        out["x_request_id"] = safe_text(rid, 256)
    return out


def is_secret(name: str) -> bool:
    """Authorization, Proxy-Authorization, Cookie, Set-Cookie, X-Api-Key, *token*, *secret*, ..."""
    return _SECRET.search(name) is not None


def headers_json(headers: dict[str, bytes]) -> str:
    """JSON object of the headers, secrets redacted, at most MAX_HEADERS_JSON chars."""
    kept: dict[str, str] = {}
    size = 2
    for name, value in headers.items():
        text = REDACTED if is_secret(name) else safe_text(value, MAX_VALUE)
        size += len(name) + len(text) + 6
        if size > MAX_HEADERS_JSON:
            kept["..."] = "[TRUNCATED]"
            break
        kept[name] = text
    return json.dumps(kept, ensure_ascii=False)
