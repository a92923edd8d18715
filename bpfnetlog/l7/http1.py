"""HTTP/1.0 and HTTP/1.1, observed passively from both directions.

Sans-IO: `feed` takes in-order bytes of one direction and returns `Message`
events. Bodies are counted, never copied or scanned byte by byte; only heads
and chunk-size lines are buffered, and that buffer is capped. The observer may
join mid-stream or lose bytes, so a direction that is not in sync scans (with a
C-level regex) for the next line that looks like a request or status line.
Responses answer requests in FIFO order (pipelining); the parser keeps that
queue itself because a response's framing depends on its request (HEAD, CONNECT).

Truncated captures (snaplen) reach the parser as `gap(side, size)` with a known
size right after the captured bytes of a segment: inside a body of known length
(Content-Length, or a chunk whose size line was captured) the bytes are counted
and the parser stays in sync, so the next message is found at its exact seq.
A head cut by the snaplen still gives a message (start line and the header
lines that were captured); its length runs until the next message found on
that side (or the end of the connection), because its framing is unknown.

Only the headers the records need are looked at (Content-Length,
Transfer-Encoding, Host, User-Agent, traceparent, b3, X-B3-*, X-Request-Id);
`req_headers` / `resp_headers` hold the header block itself as text: one
"Name: value" line per header, lines joined by "\\n" (CR dropped), bytes that
are not printable ASCII escaped as \\xNN (like `base.safe_text`), the value of
every header whose name looks secret (auth, token, secret, passw, cookie,
api-key) replaced by "[REDACTED]", and at most MAX_HEADERS_TEXT characters
(then cut, ending with "\\n...[TRUNCATED]"). Parsed heads are memoized (a
bounded dict keyed by the head's bytes), so repeated heads cost one lookup.
"""

from __future__ import annotations

import re
from collections import deque

from .base import SEQ_MASK, Message, safe_text

MAX_HEAD = 64 * 1024  # larger heads are treated as malformed (resync), never buffered further
MAX_LINE = 8 * 1024  # request target / chunk-size line cap
MAX_HEADERS_TEXT = 4096  # chars of req_headers / resp_headers
MAX_VALUE = 1024
HOST_MAX, UA_MAX = 256, 512  # longer Host / User-Agent values are cut and end with "..."
MAX_WAITING = 1024  # requests awaiting a response, per connection
HEAD_CACHE = 4096  # parsed heads kept (by their bytes); heads above HEAD_CACHE_BYTES are not kept
HEAD_CACHE_BYTES = 2048
REDACTED = "[REDACTED]"
TRUNCATED = "\n...[TRUNCATED]"
SECRET_WORDS = (b"auth", b"token", b"secret", b"passw", b"cookie")  # in a header name: its value is redacted
_SECRET = re.compile(b"|".join(SECRET_WORDS) + rb"|api-?_?key")

METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "PROPFIND", "PROPPATCH",
           "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT", "SEARCH", "PURGE")  # fmt: skip
_REQ = rb"(" + "|".join(METHODS).encode() + rb") ([^ \r\n]{1,%d}) HTTP/(1\.[01])\r?\n" % MAX_LINE
_RESP = rb"HTTP/(1\.[01]) ([1-9][0-9][0-9])(?:[ \t][^\r\n]{0,1024})?\r?\n"
_REQ_LINE = re.compile(_REQ)
_RESP_LINE = re.compile(_RESP)
# Resync scans accept a start line anywhere, not only at a line start: a body need not
# end with a newline, so after a mid-stream join the next message is glued to it.
_SCAN = {0: _REQ_LINE, 1: _RESP_LINE, -1: re.compile(rb"(?:" + _REQ + rb"|" + _RESP + rb")")}  # by role
RESYNC_TAIL = 1024  # bytes kept while unsynced, for a start line split across packets
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_NAMES = re.compile(rb"\n([^:\n]*):")  # header names, on b"\n" + the lower-cased header lines
_CONTROL = bytes((*range(0x09), *range(0x0B, 0x0D), *range(0x0E, 0x20), 0x7F))  # all but LF and CR
_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x0A), *range(0x0B, 0x20), 0x7F)}  # all but LF
_VERSIONS = {b"1.0": "1.0", b"1.1": "1.1"}
WANTED_HEADERS = (  # the only headers looked at (lower case); http1_kernel relies on this order
    b"content-length", b"transfer-encoding", b"host", b"user-agent", b"traceparent", b"b3",
    b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid", b"x-request-id",
)  # fmt: skip
_TRACING = frozenset(WANTED_HEADERS[4:])

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
        self.msg: Message | None = None  # message being parsed (RESYNC: a cut message running on)
        self.scan_from = 0  # head-end search resumes here (offset in buf)

    def ts_at(self, off: int) -> int:
        marks = self.marks
        if len(marks) == 1:
            return marks[0][1]
        for start, ts in reversed(marks):
            if start <= off:
                return ts
        return marks[0][1]

    def keep(self, buf: bytes | bytearray, p: int) -> None:
        """buf[p:] stays for the next feed (buf is h.buf or the data of this feed)."""
        n = len(buf)
        if p >= n:
            if self.buf:
                self.buf = bytearray()
            self.seq = (self.seq + n) & SEQ_MASK
            self.marks = []
            self.scan_from = 0
            return
        if buf is self.buf:
            if p:
                del buf[:p]
        else:
            self.buf = bytearray(buf[p:] if p else buf)
        if p:
            self.seq = (self.seq + p) & SEQ_MASK
            self.scan_from = max(0, self.scan_from - p)
            marks = self.marks
            i = 0
            while i + 1 < len(marks) and marks[i + 1][0] <= p:
                i += 1
            self.marks = [(max(0, o - p), ts) for o, ts in marks[i:]]


class Http1Parser:
    """Both directions of one HTTP/1.x connection."""

    proto = "http"

    def __init__(self) -> None:
        self.client_side = -1
        self.malformed = 0
        self._halves = (_Half(), _Half())
        self._waiting: deque[tuple[int, str]] = deque()  # (key, method) of requests not yet answered
        self._n = 0

    @classmethod
    def resume(cls, client_side: int, requests: int, waiting: list[tuple[int, str]],
               halves: list[tuple[int, int, Message | None, int]]) -> "Http1Parser":  # fmt: skip
        """A parser in the state another observer of the same bytes reached (see l7.fastpath).

        `requests`: requests seen; `waiting`: (key, method) of those not answered, oldest
        first; per side (state HEAD or BODY, body bytes remaining, message in progress,
        raw seq of the next byte).
        """
        p = cls()
        p.client_side, p._n = client_side, requests
        p._waiting.extend(waiting)
        for h, (state, remaining, msg, seq) in zip(p._halves, halves):
            h.state, h.remaining, h.msg, h.seq = state, remaining, msg, seq
        return p

    # -- Parser API ---------------------------------------------------------------

    def feed(self, side: int, data: bytes, seq: int, ts: int) -> list[Message]:
        h = self._halves[side]
        out: list[Message] = []
        state = h.state
        if state == TUNNEL or not data:
            return out
        if h.buf:
            h.marks.append((len(h.buf), ts))
            h.buf += data
            buf = h.buf
        else:
            if state in _COUNTING:  # fast path: body bytes are only counted
                used = self._count(h, len(data), ts, out)
                if used == len(data):
                    return out
                data, seq = data[used:], (seq + used) & SEQ_MASK
            buf = data
            h.seq, h.marks, h.scan_from = seq, [(0, ts)], 0
        h.keep(buf, self._parse(side, h, buf, out))
        return out

    def absorb(self, side: int, size: int, ts: int) -> bool:
        """Body bytes that do not end their body (or a tunnel's bytes): counted without a look."""
        h = self._halves[side]
        if h.buf:
            return False
        state = h.state
        if state == BODY or state == CHUNK_DATA:
            if size >= h.remaining:
                return False
            h.remaining -= size
        elif state != UNTIL_CLOSE:
            return state == TUNNEL  # feed ignores a tunnel's bytes
        msg = h.msg
        if msg is not None:
            msg.length += size
            msg.ts_end = ts
        return True

    def gap(self, side: int, size: int) -> list[Message]:
        """`size` bytes (-1: unknown) missing: lost, or not captured (snaplen)."""
        h = self._halves[side]
        out: list[Message] = []
        state = h.state
        if state == TUNNEL:
            return out
        if size >= 0:
            if state == UNTIL_CLOSE:
                if h.msg is not None:
                    h.msg.length += size
                return out
            if state in (BODY, CHUNK_DATA, CHUNK_END) and not h.buf:
                # The hole starts inside a body of known size: count it and stay in sync.
                if state != CHUNK_END:
                    size -= self._count(h, size, h.msg.ts_end, out)
                if size >= 2 and h.state == CHUNK_END:  # the CRLF that ends a chunk's data
                    h.msg.length += 2
                    size -= 2
                    h.state = CHUNK_SIZE
                if not size:
                    return out
                if h.state != HEAD:  # a chunk-size line was not captured: framing lost
                    self._end(h, out)
                h.state = RESYNC
                h.keep(b"", 0)
                return out
            if state == RESYNC and h.msg is not None:  # the rest of a cut head's message
                h.msg.length += len(h.buf) + size
                h.keep(b"", 0)
                return out
            if state == HEAD and h.buf and self._cut_head(side, h, size, out):
                return out
        if h.msg is not None and h.state == RESYNC:
            h.msg.length += len(h.buf)
        self._end(h, out)
        h.state = RESYNC
        h.buf = bytearray()
        h.marks = []
        return out

    def close(self, ts: int) -> list[Message]:
        out: list[Message] = []
        for h in self._halves:
            if h.msg is not None and h.state == RESYNC:
                h.msg.length += len(h.buf)
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
        take = n if n < h.remaining else h.remaining
        h.remaining -= take
        msg.length += take
        msg.ts_end = ts
        if not h.remaining:
            if h.state == BODY:
                self._end(h, out)
            else:
                h.state = CHUNK_END
        return take

    def _parse(self, side: int, h: _Half, buf: bytes | bytearray, out: list[Message]) -> int:
        """Parses buf (h.buf, or the data of this feed when nothing was kept); returns bytes used."""
        p = 0
        n = len(buf)
        while p < n:
            state = h.state
            if state == HEAD:
                end = _head_end(buf, p if p > h.scan_from else h.scan_from)
                if end < 0:
                    if n - p > MAX_HEAD:
                        p = self._malformed(h, buf, p, out)
                        continue
                    h.scan_from = max(p, n - 3)
                    break
                if not self._head(side, h, buf, p, end, out):
                    p = self._malformed(h, buf, p, out)
                    continue
                p = end
            elif state in _COUNTING:
                k = n - p if state in (UNTIL_CLOSE, TUNNEL) else min(h.remaining, n - p)
                p += self._count(h, k, h.ts_at(p + k - 1), out)
            elif state == RESYNC:
                m = _SCAN[self._role(side)].search(buf, p)
                if m is None:
                    keep = max(p, n - RESYNC_TAIL)
                    if h.msg is not None:
                        h.msg.length += keep - p
                    p = keep
                    break
                if h.msg is not None:  # a cut head's message ends where the next one starts
                    h.msg.length += m.start() - p
                    if m.start() > p:
                        h.msg.ts_end = h.ts_at(m.start() - 1)
                    self._end(h, out)
                p = m.start()
                h.state, h.scan_from = HEAD, p
            elif state == CHUNK_SIZE:
                nl = buf.find(b"\n", p)
                if nl < 0:
                    if n - p > MAX_LINE:
                        p = self._malformed(h, buf, p, out)
                        continue
                    break
                size = _chunk_size(buf[p:nl])
                if size < 0:
                    p = self._malformed(h, buf, p, out)
                    continue
                h.msg.length += nl + 1 - p
                p = nl + 1
                h.remaining = size
                h.state = CHUNK_DATA if size else TRAILERS
            elif state == CHUNK_END:
                k = 2 if buf.startswith(b"\r\n", p) else 1 if buf.startswith(b"\n", p) else 0
                if not k:
                    if n - p < 2 and buf[p] == 0x0D:
                        break
                    p = self._malformed(h, buf, p, out)
                    continue
                h.msg.length += k
                p += k
                h.state = CHUNK_SIZE
            else:  # TRAILERS: an empty line, or trailer fields up to an empty line
                k = 2 if buf.startswith(b"\r\n", p) else 1 if buf.startswith(b"\n", p) else 0
                if not k:
                    m = _HEAD_END.search(buf, p)
                    if m is None:
                        if n - p > MAX_HEAD:
                            p = self._malformed(h, buf, p, out)
                            continue
                        break
                    k = m.end() - p
                h.msg.length += k
                p += k
                h.msg.ts_end = h.ts_at(p - 1)
                self._end(h, out)
        return p

    def _role(self, side: int) -> int:
        return -1 if self.client_side < 0 else 0 if side == self.client_side else 1

    def _malformed(self, h: _Half, buf: bytes | bytearray, p: int, out: list[Message]) -> int:
        """Ends the current message where it broke, skips the bad line, resyncs; new parse position."""
        self.malformed += 1
        self._end(h, out)
        nl = buf.find(b"\n", p)
        h.state = RESYNC
        return len(buf) if nl < 0 else nl + 1

    def _end(self, h: _Half, out: list[Message]) -> None:
        msg = h.msg
        if msg is not None:
            msg.complete = True
            if not out or out[-1] is not msg and msg not in out:
                out.append(msg)
            h.msg = None
        if h.state != TUNNEL:
            h.state = HEAD

    def _head(self, side: int, h: _Half, buf: bytes | bytearray, start: int, end: int, out: list[Message]) -> bool:
        """Parses the head in buf[start:end]; False if it is not a valid head."""
        role = self._role(side)
        raw = buf if start == 0 and end == len(buf) and type(buf) is bytes else bytes(buf[start:end])
        head = _CACHE.get(raw)
        if head is None or (role == 0 and not head[0]) or (role == 1 and head[0]):
            head = _parse_head(raw, role)
            if head is None:
                return False
            if len(raw) <= HEAD_CACHE_BYTES:
                if len(_CACHE) >= HEAD_CACHE:
                    _CACHE.clear()
                _CACHE[raw] = head
        return self._start(side, h, head, start, end, out)

    def _start(self, side: int, h: _Half, head: tuple, start: int, end: int, out: list[Message]) -> bool:
        is_req, word, fields, te, cl = head
        if self.client_side < 0:
            self.client_side = side if is_req else 1 - side
        if is_req:
            self._n += 1
            key: int | None = self._n
            if len(self._waiting) >= MAX_WAITING:
                self._waiting.popleft()
            self._waiting.append((key, word))
            framing = _framing(te, cl, word, None)
        else:
            if 100 <= word < 200 and word != 101:
                h.state = HEAD  # interim (100 Continue, 103 ...): the final response follows
                return True
            key, method = self._waiting.popleft() if self._waiting else (None, "")
            framing = _framing(te, cl, method, word)
        if framing is None:
            return False
        h.state, h.remaining = framing
        marks = h.marks
        if len(marks) == 1:
            ts0 = ts1 = marks[0][1]
        else:
            ts0, ts1 = h.ts_at(start), h.ts_at(end - 1)
        # the memoized head's dict itself: Message.fields are read-only, so equal heads share one
        h.msg = msg = Message(is_req, side, (h.seq + start) & SEQ_MASK, ts0, ts1, end - start, fields, key)
        out.append(msg)
        if h.state == TUNNEL:  # CONNECT accepted or 101: the rest is another protocol
            self._halves[1 - side].state = TUNNEL
            self._end(h, out)
        elif h.state == BODY and not h.remaining:
            self._end(h, out)
        return True

    def _cut_head(self, side: int, h: _Half, size: int, out: list[Message]) -> bool:
        """The rest of the buffered head was not captured: a message from what was (start line needed)."""
        buf = h.buf
        last = buf.rfind(b"\n")
        role = self._role(side)
        head = _parse_head(bytes(buf[: last + 1]) + b"\n", role) if last > 0 else None
        if head is None:
            return False
        is_req, word, fields, _, _ = head
        if not is_req and 100 <= word < 200:
            return False
        n = len(buf)
        if not self._start(side, h, (is_req, word, fields, None, None), 0, n, out):
            return False
        msg = h.msg
        if msg is None:  # ended at once (a request without body): it may run on, unknown
            msg = h.msg = out[-1]
            msg.complete = False
        msg.length = n + size
        h.state = RESYNC
        h.keep(buf, n)
        return True


_CACHE: dict[bytes, tuple] = {}


def _head_end(buf: bytes | bytearray, p: int) -> int:
    """Offset right after the empty line that ends the head starting before p; -1 if not there yet."""
    i = buf.find(b"\n\r\n", p)
    j = buf.find(b"\n\n", p, i if i >= 0 else len(buf))
    if j >= 0:
        return j + 2
    return i + 3 if i >= 0 else -1


def _parse_head(raw: bytes, role: int) -> tuple | None:
    """(is_request, method or status code, fields, transfer-encoding, content-length); None if invalid."""
    req = _REQ_LINE.match(raw) if role != 1 else None
    resp = None if req or role == 0 else _RESP_LINE.match(raw)
    line = req or resp
    if line is None:
        return None
    block = raw[line.end() :].rstrip(b"\r\n")
    headers = _Headers(block)
    if not headers.valid:
        return None
    te, cl = headers.get(b"transfer-encoding"), headers.get(b"content-length")
    if req:
        method = req[1].decode()
        return True, method, _request_fields(method, req[2], req[3], headers), te, cl
    code = int(resp[2])
    return False, code, _response_fields(code, resp[1], headers), te, cl


class _Headers:
    """The header lines of a head: only the wanted ones are looked at."""

    __slots__ = ("block", "lines", "clean", "index", "secrets", "valid")

    def __init__(self, block: bytes) -> None:
        self.block = block
        self.lines = lines = block.split(b"\n") if block else []
        self.clean = block.isascii() and len(block.translate(None, _CONTROL)) == len(block)
        names = _NAMES.findall(b"\n" + block.lower()) if block else []
        self.valid = len(names) == len(lines) and all(n and n[-1] not in b" \t" for n in names)
        self.index: dict[bytes, list[int]] = {}
        self.secrets: list[int] = []
        for i, name in enumerate(names):
            if name in _WANTED_SET:
                self.index.setdefault(name, []).append(i)
            elif _SECRET.search(name):
                self.secrets.append(i)

    def get(self, name: bytes) -> bytes | None:
        idx = self.index.get(name)
        if idx is None:
            return None
        values = [self.lines[i].partition(b":")[2].strip() for i in idx]
        return values[0] if len(values) == 1 else b", ".join(values)

    def text(self, raw: bytes) -> str:
        return _text(raw, MAX_VALUE) if self.clean and b"\r" not in raw else safe_text(raw, MAX_VALUE)

    def block_text(self) -> str:
        """The header block as req_headers / resp_headers text (see the module docstring)."""
        lines = self.lines
        if self.secrets:
            lines = list(lines)
            for i in self.secrets:
                lines[i] = lines[i].partition(b":")[0] + b": " + REDACTED.encode()
        raw = b"\n".join(line[:-1] if line.endswith(b"\r") else line for line in lines)
        if self.clean and b"\r" not in raw:
            text = raw[: MAX_HEADERS_TEXT + 1].decode("ascii")
        else:
            text = raw[: MAX_HEADERS_TEXT + 1].decode("utf-8", "backslashreplace").translate(_ESCAPES)
        return text if len(text) <= MAX_HEADERS_TEXT else text[:MAX_HEADERS_TEXT] + TRUNCATED


_WANTED_SET = frozenset(WANTED_HEADERS)


def _text(raw: bytes, cap: int) -> str:
    return raw.decode("ascii") if len(raw) <= cap else raw[:cap].decode("ascii") + "..."


def _framing(te: bytes | None, cl: bytes | None, method: str, code: int | None) -> tuple[int, int] | None:
    """(state, body length) after a head (RFC 9112 section 6.3); None if the length is invalid."""
    if code is not None:  # response
        if method == "HEAD" or code in (204, 304):
            return BODY, 0
        if code == 101 or (method == "CONNECT" and 200 <= code < 300):
            return TUNNEL, 0
    if te is not None and te.rsplit(b",", 1)[-1].strip().lower() == b"chunked":
        return CHUNK_SIZE, 0
    if cl is not None:
        if cl.isdigit() and len(cl) <= 18:
            return BODY, int(cl)
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


def _request_fields(method: str, target: bytes, version: bytes, headers: _Headers) -> dict[str, object]:
    resource = safe_text(target, MAX_LINE)
    path = resource
    if "://" in path[:12]:  # absolute-form (proxies): keep the path part
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    path = path.split("?", 1)[0]
    host = headers.get(b"host")
    host = headers.text(host[:HOST_MAX]) + ("..." if len(host) > HOST_MAX else "") if host else ""
    ua = headers.get(b"user-agent")
    ua = headers.text(ua[:UA_MAX]) + ("..." if len(ua) > UA_MAX else "") if ua else ""
    fields: dict[str, object] = {
        "http_method": method,
        "request_type": method,
        "http_path": path,
        "request_resource": resource,
        "http_host": host,
        "request_domain": host,
        "http_version": _VERSIONS[version],
        "http_user_agent": ua,
        "req_headers": headers.block_text(),
    }
    if not _TRACING.isdisjoint(headers.index):
        fields.update(trace_ids(headers.get))
    return fields


def _response_fields(code: int, version: bytes, headers: _Headers) -> dict[str, object]:
    fields: dict[str, object] = {
        "http_status_code": code,
        "response_code": code,
        "response_status": response_status(code),
        "http_version": _VERSIONS[version],
        "resp_headers": headers.block_text(),
    }
    if b := headers.get(b"x-request-id"):
        fields["x_request_id"] = safe_text(b, 256)
    return fields


def trace_ids(get) -> dict[str, str]:
    """trace_id / parent_id / span_id / x_request_id from W3C traceparent, b3 or X-B3-*.

    `get(lower-case name as bytes)` gives a header's value or None. traceparent
    carries the caller's span, which is this request's parent_id; B3 carries
    the span of the call itself (span_id) and its parent (parent_id).
    """
    out: dict[str, str] = {}
    if tp := get(b"traceparent"):
        parts = tp.split(b"-")
        if len(parts) >= 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
            out["trace_id"] = safe_text(parts[1], 32)
            out["parent_id"] = safe_text(parts[2], 16)
    elif b3 := get(b"b3"):
        parts = b3.split(b"-")
        if len(parts) >= 2:
            out["trace_id"], out["span_id"] = safe_text(parts[0], 32), safe_text(parts[1], 16)
            if len(parts) >= 4:
                out["parent_id"] = safe_text(parts[3], 16)
    elif tid := get(b"x-b3-traceid"):
        out["trace_id"] = safe_text(tid, 32)
        for name, field in ((b"x-b3-spanid", "span_id"), (b"x-b3-parentspanid", "parent_id")):
            if value := get(name):
                out[field] = safe_text(value, 16)
    if rid := get(b"x-request-id"):
        out["x_request_id"] = safe_text(rid, 256)
    return out


def is_secret(name: str) -> bool:
    """Authorization, Proxy-Authorization, Cookie, Set-Cookie, X-Api-Key, *token*, *secret*, ..."""
    return _SECRET.search(name.lower().encode("utf-8", "replace")) is not None
