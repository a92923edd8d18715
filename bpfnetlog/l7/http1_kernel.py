"""HTTP/1 over in-order TCP streams, compiled with numba: the fast path of the L7 stage.

Most HTTP connections a capture sees are plain: the handshake was seen, every
segment arrives once and in order, heads are printable ASCII with CRLF lines
and fit in the segment that starts them, bodies have a Content-Length. For
those, this kernel does what `http1.Http1Parser` + `engine.L7Engine` do —
framing, FIFO pairing (pipelining, HEAD, 204/304), per-message packet/byte/
retransmission accounting, markers, header text with secrets redacted — over a
whole batch at once, with the state in integer arrays (one row per flow slot,
like `l4.tcp_analysis`), and writes messages and records as table rows.

Anything else is not guessed at: before the first packet it cannot handle
(a retransmission, a hole, a head split across segments, chunked or
close-delimited bodies, 1xx, CONNECT/Upgrade, control or non-ASCII bytes, a
tracing header...) the connection is handed over, with its exact state, to the
Python engine (`fastpath.FastHttp.handover`), which carries on as if it had
seen the connection from the start. A few heads are valid but not worth
compiling (tracing headers, absolute-form targets, long Host / User-Agent):
their fields come from `http1._parse_head` (flag M_PY), framing stays here.
"""

from __future__ import annotations

import numpy as np

from bpfnetlog.compiled import copy_bytes, entry, kernel

from .http1 import (HOST_MAX, MAX_HEADERS_TEXT, MAX_LINE, METHODS, REDACTED, SECRET_WORDS, TRUNCATED, UA_MAX,
                    WANTED_HEADERS)  # fmt: skip

# Connection columns (int64 array `cs`, one row per flow slot).
C_OWN, C_CLIENT, C_NREQ, C_NMSG, C_QH, C_QN = range(6)
C_ISN = 6  # +side: raw ISN, -1 unknown
C_NXT = 8  # +side: raw seq of the next expected byte
C_OFF = 10  # +side: stream offset of that byte (0 = first byte after the SYN)
C_ST = 12  # +side: HEAD or BODY
C_REM = 14  # +side: body bytes still expected
C_CUR = 16  # +side: message row in progress, -1
C_DONE = 18  # +side: stream offset where the last complete message ended, -1
NC = 20
UNDECIDED, FAST, PYTHON = 0, 1, 2  # C_OWN
HEAD, BODY = 0, 1  # C_ST
QCAP = 32  # requests waiting for a response, per connection (more: handed over)

# Message columns (int64 array `ms`, one row per message).
(M_SLOT, M_REQ, M_SIDE, M_SEQ, M_OFF, M_TS0, M_TS1, M_LEN, M_PK, M_BY, M_RT, M_CODE, M_VER, M_KEY, M_N, M_PAIR,
 M_STATE, M_PY, M_HEAD_A, M_HEAD_L, M_TGT_A, M_TGT_L, M_PATH_L, M_HOST_A, M_HOST_L, M_UA_A, M_UA_L, M_HDR_A,
 M_HDR_L) = range(29)  # fmt: skip
NM = 29
OPEN, COMPLETE, EMITTED = 0, 1, 2  # M_STATE

# Record columns (int64 array `rs`, one row per L7 record).
(R_SLOT, R_N, R_REQ, R_RESP, R_PAIRING, R_STATUS, R_TIME, R_REQ_LEN, R_REQ_TS0, R_REQ_TS1, R_REQ_PK, R_REQ_BY,
 R_REQ_RT, R_RESP_LEN, R_RESP_TS0, R_RESP_TS1, R_RESP_PK, R_RESP_BY, R_RESP_RT, R_REQ_SEQ, R_RESP_SEQ) = range(21)  # fmt: skip
NR = 21
PAIRED, NO_RESPONSE, NO_REQUEST = 0, 1, 2  # R_PAIRING
ST_FIELDS, ST_TIMEOUT, ST_UNKNOWN = 0, 1, 2  # R_STATUS: from the response's fields, or this

# Counters (int64 array `cnt`).
K_MSGS, K_ARENA, K_RECS, K_BAILS, K_HEADS, K_DUPS = range(6)  # HEADS: messages started; DUPS: old segments again


def _byte_table(words: tuple[bytes, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Words as rows of a uint8 matrix (zero padded) and their lengths: what numba compares against."""
    table = np.zeros((len(words), max(map(len, words))), np.uint8)
    for i, w in enumerate(words):
        table[i, : len(w)] = np.frombuffer(w, np.uint8)
    return table, np.array([len(w) for w in words], np.int64)


_M_HEAD, _M_CONNECT = METHODS.index("HEAD"), METHODS.index("CONNECT")
_METHOD_BYTES, _METHOD_LEN = _byte_table(tuple(m.encode() for m in METHODS))
# Header names the kernel acts on (http1.WANTED_HEADERS), and what it does with them.
_NAME_BYTES, _NAME_LEN = _byte_table(WANTED_HEADERS)
H_CL, H_TE, H_HOST, H_UA = range(4)  # >= 4: tracing headers -> fields from Python
_NAME_BY_LEN = np.zeros(int(_NAME_LEN.max()) + 1, np.int64)  # length -> bit k set if WANTED_HEADERS[k] has it
for _k, _n in enumerate(_NAME_LEN):
    _NAME_BY_LEN[_n] |= 1 << _k
_SECRET_BYTES, _SECRET_LEN = _byte_table(SECRET_WORDS)  # + api-?_?key, as http1._SECRET
_SECRET_FIRST = np.zeros(256, np.int64)  # byte -> bit k set if SECRET_WORDS[k] starts with it ("api" aside)
for _k, _w in enumerate(SECRET_WORDS):
    _SECRET_FIRST[_w[0]] |= 1 << _k
_SECRET_FIRST[ord("a")] |= 1 << len(SECRET_WORDS)
_REDACTED = np.frombuffer(b": " + REDACTED.encode(), np.uint8).copy()
_TRUNCATED = np.frombuffer(TRUNCATED.encode(), np.uint8).copy()
MAX_HEADS = 64  # heads in one segment (more: handed over)
ROOM_MSGS = MAX_HEADS + 2  # free message / record rows the kernel needs before a packet
ROOM_ARENA = MAX_HEADS * (2 * 4096 + 64)  # ... and free arena bytes, plus twice the payload

# Head info (int64 array `hi`, one row per head of the packet being planned).
H_START, H_END, H_ISREQ, H_CODE, H_VER, H_CLV, H_TGT_A, H_TGT_L, H_PATH_L, H_HOST_A, H_HOST_L, H_UA_A, H_UA_L, H_PY = range(14)  # fmt: skip
NH = 14


@kernel(inline=True)
def _lower(b: int) -> int:
    return b + 32 if 65 <= b <= 90 else b


@kernel
def _wanted(d, a: int, n: int) -> int:
    """Index in WANTED_HEADERS of the header name d[a:a+n] (any case), or -1.

    Only the names of that length are compared (`_NAME_BY_LEN`): most headers match none.
    """
    if n >= len(_NAME_BY_LEN):
        return -1
    candidates = _NAME_BY_LEN[n]
    k = 0
    while candidates:
        if candidates & 1:
            ok = True
            for j in range(n):
                if _lower(d[a + j]) != _NAME_BYTES[k, j]:
                    ok = False
                    break
            if ok:
                return k
        candidates >>= 1
        k += 1
    return -1


@entry
def _is_secret(d, a: int, n: int) -> bool:
    """http1._SECRET on the lower-cased name: auth|token|secret|passw|cookie|api-?_?key.

    One pass over the name: only a byte that starts a word (`_SECRET_FIRST`) is looked at further.
    """
    for s in range(n):
        c = _lower(d[a + s])
        words = _SECRET_FIRST[c]
        if words == 0:
            continue
        for k in range(len(_SECRET_LEN)):
            if words & (1 << k) and s + _SECRET_LEN[k] <= n:
                ok = True
                for j in range(1, _SECRET_LEN[k]):
                    if _lower(d[a + s + j]) != _SECRET_BYTES[k, j]:
                        ok = False
                        break
                if ok:
                    return True
        if c == 97 and s + 6 <= n and _lower(d[a + s + 1]) == 112 and _lower(d[a + s + 2]) == 105:  # api
            j = a + s + 3
            if d[j] == 45:  # -
                j += 1
            if j < a + n and d[j] == 95:  # _
                j += 1
            if j + 3 <= a + n and _lower(d[j]) == 107 and _lower(d[j + 1]) == 101 and _lower(d[j + 2]) == 121:
                return True
    return False


@kernel
def _strip(d, a: int, b: int) -> tuple[int, int]:
    """[a, b) without leading/trailing spaces (the only whitespace a simple head has)."""
    while a < b and d[a] == 32:
        a += 1
    while b > a and d[b - 1] == 32:
        b -= 1
    return a, b


@kernel
def parse_head(d, p: int, end: int, request: bool, h) -> int:
    """A simple head at d[p:...] within d[:end] into the row `h`; its end offset, or -1.

    -1: incomplete in these bytes, or not simple (the Python parser must look).
    """
    # start line
    if request:
        k = -1
        for m in range(len(_METHOD_LEN)):
            ml = _METHOD_LEN[m]
            if p + ml < end and d[p + ml] == 32:
                ok = True
                for j in range(ml):
                    if d[p + j] != _METHOD_BYTES[m, j]:
                        ok = False
                        break
                if ok:
                    k = m
                    break
        if k < 0 or k == _M_CONNECT:
            return -1
        t = p + _METHOD_LEN[k] + 1
        q = t
        path_l = -1
        while q < end and 0x21 <= d[q] <= 0x7E:
            if d[q] == 63 and path_l < 0:  # ?
                path_l = q - t
            q += 1
        tl = q - t
        if tl < 1 or tl > MAX_LINE or q + 11 > end or d[q] != 32:
            return -1
        q += 1
        h[H_PY] = 0
        for j in range(min(tl, 12) - 2):  # "://" in the first 12 chars: absolute form
            if d[t + j] == 58 and d[t + j + 1] == 47 and d[t + j + 2] == 47:
                h[H_PY] = 1
        h[H_CODE] = k
        h[H_TGT_A], h[H_TGT_L] = t, tl
        h[H_PATH_L] = tl if path_l < 0 else path_l
    else:
        q = p
        if q + 12 > end:
            return -1
        h[H_PY] = 0
    # "HTTP/1.x"
    if not (d[q] == 72 and d[q + 1] == 84 and d[q + 2] == 84 and d[q + 3] == 80 and d[q + 4] == 47
            and d[q + 5] == 49 and d[q + 6] == 46 and (d[q + 7] == 48 or d[q + 7] == 49)):  # fmt: skip
        return -1
    h[H_VER] = d[q + 7] - 48
    q += 8
    if not request:
        if d[q] != 32 or not (49 <= d[q + 1] <= 57 and 48 <= d[q + 2] <= 57 and 48 <= d[q + 3] <= 57):
            return -1
        h[H_CODE] = (d[q + 1] - 48) * 100 + (d[q + 2] - 48) * 10 + d[q + 3] - 48
        q += 4
        if q < end and d[q] == 32:
            r = q + 1
            while r < end and 0x20 <= d[r] <= 0x7E:
                r += 1
            if r - q - 1 > 1024:
                return -1
            q = r
    if q + 1 >= end or d[q] != 13 or d[q + 1] != 10:
        return -1
    q += 2
    # header lines: "name: value" CRLF, until an empty line
    h[H_CLV] = -1
    h[H_HOST_A] = h[H_HOST_L] = h[H_UA_A] = h[H_UA_L] = -1
    hosts = 0
    while True:
        if q + 1 >= end:
            return -1
        if d[q] == 13:
            if d[q + 1] != 10:
                return -1
            h[H_START], h[H_END] = p, q + 2
            if hosts > 1:
                h[H_PY] = 1
            return q + 2
        a = q
        while q < end and d[q] != 58:
            c = d[q]
            if c <= 0x20 or c >= 0x7F:  # names are tokens: no space, control or non-ASCII
                return -1
            q += 1
        if q >= end or q == a:
            return -1
        nl = q - a
        v = q + 1
        while q < end and d[q] != 13:
            c = d[q]
            if c < 0x20 or c >= 0x7F:
                return -1
            q += 1
        if q + 1 >= end or d[q + 1] != 10:
            return -1
        va, vb = _strip(d, v, q)
        q += 2
        k = _wanted(d, a, nl)
        if k < 0:
            continue
        if k == H_CL:
            if h[H_CLV] >= 0 or vb - va < 1 or vb - va > 18:
                return -1
            cl = 0
            for j in range(va, vb):
                if not 48 <= d[j] <= 57:
                    return -1
                cl = cl * 10 + d[j] - 48
            h[H_CLV] = cl
        elif k == H_TE:
            return -1
        elif k == H_HOST:
            hosts += 1
            h[H_HOST_A], h[H_HOST_L] = va, vb - va
            if vb - va > HOST_MAX:
                h[H_PY] = 1
        elif k == H_UA:
            if h[H_UA_A] >= 0 or vb - va > UA_MAX:
                h[H_PY] = 1
            h[H_UA_A], h[H_UA_L] = va, vb - va
        else:
            h[H_PY] = 1


@kernel
def _copy(arena, at: int, d, a: int, n: int) -> int:
    copy_bytes(arena, at, d, a, n)
    return at + n


@kernel
def _header_text(arena, at: int, d, a: int, b: int) -> int:
    """The header lines in d[a:b] (each ending CRLF) as req_headers/resp_headers text at arena[at:].

    Each line (parse_head checked its colon and CRLF) is copied in one memcpy, or its name and
    the redaction mark when the name says it is a secret (copied byte by byte, the fast path
    took 10% longer on bench/ingest's pcap).
    """
    start = at
    q = a
    while q < b:
        if at > start:
            arena[at] = 10
            at += 1
        c = q
        while d[c] != 58:
            c += 1
        e = c
        while d[e] != 13:
            e += 1
        if _is_secret(d, q, c - q):
            at = _copy(arena, at, d, q, c - q)
            at = _copy(arena, at, _REDACTED, 0, len(_REDACTED))
        else:
            at = _copy(arena, at, d, q, e - q)
        q = e + 2
        if at - start > MAX_HEADERS_TEXT:
            at = start + MAX_HEADERS_TEXT
            return _copy(arena, at, _TRUNCATED, 0, len(_TRUNCATED))
    return at


@kernel
def _new_message(ms, cnt, arena, d, h, slot: int, side: int, req: bool, seq: int, off: int, ts: int, rt: int) -> int:
    """A message row for the head `h` (offsets in d), its strings copied to the arena."""
    row = cnt[K_MSGS]
    cnt[K_MSGS] += 1
    cnt[K_HEADS] += 1
    m = ms[row]
    m[:] = -1
    m[M_SLOT], m[M_REQ], m[M_SIDE], m[M_SEQ], m[M_OFF] = slot, req, side, seq, off
    m[M_TS0] = m[M_TS1] = ts
    m[M_LEN] = h[H_END] - h[H_START]
    m[M_PK], m[M_BY], m[M_RT] = 1, 0, rt
    m[M_CODE], m[M_VER], m[M_STATE], m[M_PY] = h[H_CODE], h[H_VER], OPEN, h[H_PY]
    at = cnt[K_ARENA]
    m[M_HEAD_A], m[M_HEAD_L] = at, h[H_END] - h[H_START]
    at = _copy(arena, at, d, h[H_START], h[H_END] - h[H_START])
    if req:
        m[M_TGT_A], m[M_TGT_L], m[M_PATH_L] = at, h[H_TGT_L], h[H_PATH_L]
        at = _copy(arena, at, d, h[H_TGT_A], h[H_TGT_L])
        if h[H_HOST_A] >= 0:
            m[M_HOST_A], m[M_HOST_L] = at, h[H_HOST_L]
            at = _copy(arena, at, d, h[H_HOST_A], h[H_HOST_L])
        if h[H_UA_A] >= 0:
            m[M_UA_A], m[M_UA_L] = at, h[H_UA_L]
            at = _copy(arena, at, d, h[H_UA_A], h[H_UA_L])
    # the header lines: after the start line, before the empty line
    s = h[H_START]
    while d[s] != 10:
        s += 1
    m[M_HDR_A] = at
    at = _header_text(arena, at, d, s + 1, h[H_END] - 2)
    m[M_HDR_L] = at - m[M_HDR_A]
    cnt[K_ARENA] = at
    return row


@kernel
def _emit(rs, cnt, ms, slot: int, n: int, req: int, resp: int, pairing: int, status: int) -> None:
    """A record of request row `req` and response row `resp` (-1: missing), values as of now."""
    r = rs[cnt[K_RECS]]
    cnt[K_RECS] += 1
    r[:] = -1
    r[R_SLOT], r[R_N], r[R_REQ], r[R_RESP], r[R_PAIRING], r[R_STATUS] = slot, n, req, resp, pairing, status
    if req >= 0:
        q = ms[req]
        q[M_STATE] = EMITTED
        r[R_TIME] = q[M_TS0]
        r[R_REQ_LEN], r[R_REQ_TS0], r[R_REQ_TS1] = q[M_LEN], q[M_TS0], q[M_TS1]
        r[R_REQ_PK], r[R_REQ_BY], r[R_REQ_RT], r[R_REQ_SEQ] = q[M_PK], q[M_BY], q[M_RT], q[M_SEQ]
    if resp >= 0:
        p = ms[resp]
        p[M_STATE] = EMITTED
        if req < 0:
            r[R_TIME] = p[M_TS0]
        r[R_RESP_LEN], r[R_RESP_TS0], r[R_RESP_TS1] = p[M_LEN], p[M_TS0], p[M_TS1]
        r[R_RESP_PK], r[R_RESP_BY], r[R_RESP_RT], r[R_RESP_SEQ] = p[M_PK], p[M_BY], p[M_RT], p[M_SEQ]


@kernel
def _complete(cs, ms, rs, cnt, slot: int, side: int, row: int) -> None:
    m = ms[row]
    if m[M_STATE] == OPEN:
        m[M_STATE] = COMPLETE
    cs[slot, C_DONE + side] = m[M_OFF] + m[M_LEN]
    cs[slot, C_CUR + side] = -1
    if not m[M_REQ]:
        pair = m[M_PAIR]
        _emit(rs, cnt, ms, slot, m[M_N], pair, row, PAIRED if pair >= 0 else NO_REQUEST, ST_FIELDS)


@kernel
def _plan(cs, ms, q, d, base: int, cap: int, plen: int, slot: int, side: int, hi) -> int:
    """Walks one in-order segment with a copy of the state: its heads into `hi`; how many, or -1."""
    st, rem = cs[slot, C_ST + side], cs[slot, C_REM + side]
    request = side == cs[slot, C_CLIENT]
    k = 0
    pos = 0
    while pos < plen:
        if st == BODY:
            take = min(rem, plen - pos)
            pos += take
            rem -= take
            if rem == 0:
                st = HEAD
            continue
        if pos >= cap or k >= MAX_HEADS:
            return -1
        h = hi[k]
        end = parse_head(d, base + pos, base + cap, request, h)
        if end < 0:
            return -1
        if request:
            body = max(h[H_CLV], 0)
        else:
            code = h[H_CODE]
            if code < 200:  # interim responses and 101: the Python parser
                return -1
            method = -1
            if k < cs[slot, C_QN]:
                method = ms[q[slot, (cs[slot, C_QH] + k) % QCAP], M_CODE]
            if method == _M_HEAD or code == 204 or code == 304:
                body = 0
            elif h[H_CLV] >= 0:
                body = h[H_CLV]
            else:
                return -1  # close-delimited: the Python parser
        h[H_ISREQ] = request
        h[H_CLV] = body
        k += 1
        pos = end - base
        if body:
            st, rem = BODY, body
    if request and cs[slot, C_QN] + k > QCAP:
        return -1
    return k


@kernel
def _apply(cs, ms, q, rs, cnt, arena, d, base: int, plen: int, slot: int, side: int, ts: int, rt: int,
           hi, nheads: int) -> int:  # fmt: skip
    """Applies a planned segment; the row of the message starting at its first byte, or -1."""
    off0, seq0 = cs[slot, C_OFF + side], cs[slot, C_NXT + side]
    pos = 0
    mark = -1
    k = 0
    while pos < plen:
        if cs[slot, C_ST + side] == BODY:
            row = cs[slot, C_CUR + side]
            take = min(cs[slot, C_REM + side], plen - pos)
            m = ms[row]
            if pos == 0:  # a message continuing from an earlier segment
                m[M_PK] += 1
                m[M_RT] += rt
            m[M_BY] += take
            m[M_LEN] += take
            m[M_TS1] = ts
            pos += take
            cs[slot, C_REM + side] -= take
            if cs[slot, C_REM + side] == 0:
                cs[slot, C_ST + side] = HEAD
                _complete(cs, ms, rs, cnt, slot, side, row)
            continue
        h = hi[k]
        k += 1
        req = h[H_ISREQ] == 1
        row = _new_message(ms, cnt, arena, d, h, slot, side, req, (seq0 + pos) & 0xFFFFFFFF, off0 + pos, ts, rt)
        m = ms[row]
        m[M_BY] = m[M_LEN]
        if pos == 0:
            mark = row
        if req:
            cs[slot, C_NREQ] += 1
            cs[slot, C_NMSG] += 1
            m[M_KEY], m[M_N] = cs[slot, C_NREQ], cs[slot, C_NMSG]
            q[slot, (cs[slot, C_QH] + cs[slot, C_QN]) % QCAP] = row
            cs[slot, C_QN] += 1
        else:
            pair = -1
            if cs[slot, C_QN]:
                r = q[slot, cs[slot, C_QH]]
                cs[slot, C_QH] = (cs[slot, C_QH] + 1) % QCAP
                cs[slot, C_QN] -= 1
                m[M_KEY] = ms[r, M_KEY]
                if ms[r, M_STATE] != EMITTED:  # else it timed out: this response has no request
                    pair = r
            m[M_PAIR] = pair
            if pair >= 0:
                m[M_N] = ms[pair, M_N]
            else:
                cs[slot, C_NMSG] += 1
                m[M_N] = cs[slot, C_NMSG]
        pos = h[H_END] - base
        cs[slot, C_CUR + side] = row
        if h[H_CLV]:
            cs[slot, C_ST + side], cs[slot, C_REM + side] = BODY, h[H_CLV]
        else:
            _complete(cs, ms, rs, cnt, slot, side, row)
    cs[slot, C_OFF + side] = off0 + plen
    cs[slot, C_NXT + side] = (seq0 + plen) & 0xFFFFFFFF
    return mark


@kernel
def _count_if_overlaps(ms, row: int, off: int, plen: int, rt: int) -> None:
    if row < 0 or ms[row, M_STATE] == EMITTED:
        return
    m = ms[row]
    lo, hi = max(off, m[M_OFF]), min(off + plen, m[M_OFF] + m[M_LEN])
    if hi > lo:
        m[M_PK] += 1
        m[M_BY] += hi - lo
        m[M_RT] += rt


@kernel
def _duplicate(cs, q, ms, slot: int, side: int, off: int, plen: int, rt: int) -> None:
    """A segment whose bytes were all seen: counted for the messages without record it overlaps
    (as the Python engine's packet log does), parsed by no one."""
    if side == cs[slot, C_CLIENT]:
        for j in range(cs[slot, C_QN]):
            _count_if_overlaps(ms, q[slot, (cs[slot, C_QH] + j) % QCAP], off, plen, rt)
        resp = cs[slot, C_CUR + 1 - side]
        if resp >= 0:
            _count_if_overlaps(ms, ms[resp, M_PAIR], off, plen, rt)
    else:
        _count_if_overlaps(ms, cs[slot, C_CUR + side], off, plen, rt)


@entry
def run(cs, q, ms, rs, cnt, arena, d, slot_a, side_a, ts_a, seq_a, syn_a, poff_a, pcap_a, plen_a, rt_a, start: int,
        to_py, mark, bailed, hi) -> int:  # fmt: skip
    """Packets start.. of a batch (those with payload or SYN); returns the index to resume from when tables are full, else len.

    to_py[i]: packet i goes to the Python engine; mark[i]: message row starting at
    packet i's first byte; bailed: slots handed over in this call (0: how many);
    hi: (MAX_HEADS, NH) scratch for the heads of one segment.
    """
    n = len(slot_a)
    for i in range(start, n):
        slot, side = slot_a[i], side_a[i]
        own = cs[slot, C_OWN]
        if own == PYTHON:
            to_py[i] = True
            continue
        seq, plen = seq_a[i], plen_a[i]
        if syn_a[i]:
            if plen == 0 and cs[slot, C_ISN + side] < 0 and own == UNDECIDED:
                cs[slot, C_ISN + side] = seq
                cs[slot, C_NXT + side] = (seq + 1) & 0xFFFFFFFF
                continue
            if plen == 0:
                continue  # a repeated SYN: the stream origin stays (as StreamReassembler.set_isn)
        if plen == 0:
            continue
        if (len(ms) - cnt[K_MSGS] < ROOM_MSGS or len(rs) - cnt[K_RECS] < ROOM_MSGS
                or len(arena) - cnt[K_ARENA] < ROOM_ARENA + 2 * plen):  # fmt: skip
            return i
        k = -1
        if own == UNDECIDED:
            if cs[slot, C_ISN] >= 0 and cs[slot, C_ISN + 1] >= 0 and seq == cs[slot, C_NXT + side] and not syn_a[i]:
                cs[slot, C_CLIENT] = side
                cs[slot, C_DONE] = cs[slot, C_DONE + 1] = -1
                cs[slot, C_CUR] = cs[slot, C_CUR + 1] = -1
                k = _plan(cs, ms, q, d, poff_a[i], pcap_a[i], plen, slot, side, hi)
            if k > 0:
                cs[slot, C_OWN] = FAST
        elif seq == cs[slot, C_NXT + side] and not syn_a[i]:
            k = _plan(cs, ms, q, d, poff_a[i], pcap_a[i], plen, slot, side, hi)
        else:
            back = (cs[slot, C_NXT + side] - seq) & 0xFFFFFFFF
            if 0 < back < (1 << 31) and plen <= back:  # all of it seen before
                _duplicate(cs, q, ms, slot, side, cs[slot, C_OFF + side] - back, plen, rt_a[i])
                cnt[K_DUPS] += 1
                continue
        if k < 0 or (k == 0 and cs[slot, C_OWN] != FAST):
            cs[slot, C_OWN] = PYTHON
            bailed[0] += 1
            bailed[bailed[0]] = slot
            to_py[i] = True
            cnt[K_BAILS] += 1
            continue
        mark[i] = _apply(cs, ms, q, rs, cnt, arena, d, poff_a[i], plen, slot, side, ts_a[i], rt_a[i], hi, k)
    return n


@entry
def close(cs, q, ms, rs, cnt, slot: int) -> None:
    """End of a fast connection: messages in progress end, requests without response are reported."""
    for side in range(2):
        row = cs[slot, C_CUR + side]
        if row >= 0:
            _complete(cs, ms, rs, cnt, slot, side, row)
    for j in range(cs[slot, C_QN]):
        r = q[slot, (cs[slot, C_QH] + j) % QCAP]
        if ms[r, M_STATE] != EMITTED:
            _emit(rs, cnt, ms, slot, ms[r, M_N], r, -1, NO_RESPONSE, ST_UNKNOWN)
    cs[slot, C_QN] = 0
    cs[slot, C_OWN] = PYTHON  # nothing more from this slot until it is released


@entry
def expire(cs, q, ms, rs, cnt, deadline: int) -> int:
    """Requests that started at or before `deadline` without a response: timeout records."""
    n = 0
    for slot in range(len(cs)):
        if cs[slot, C_OWN] != FAST:
            continue
        for j in range(cs[slot, C_QN]):
            r = q[slot, (cs[slot, C_QH] + j) % QCAP]
            if ms[r, M_TS0] > deadline:
                break
            if ms[r, M_STATE] != EMITTED:
                _emit(rs, cnt, ms, slot, ms[r, M_N], r, -1, NO_RESPONSE, ST_TIMEOUT)
                n += 1
    return n


@entry
def compact(cs, q, ms, cnt, arena, live, remap) -> None:
    """Keeps the rows still needed (not yet in a record, or waited on by a response) and their bytes,
    moved down in place (rows and their arena bytes were allocated in the same order).
    live (bool) and remap (int64): scratch of at least cnt[K_MSGS] rows."""
    n = cnt[K_MSGS]
    for r in range(n):
        live[r] = ms[r, M_STATE] != EMITTED
    for slot in range(len(cs)):
        if cs[slot, C_OWN] == FAST:
            for j in range(cs[slot, C_QN]):
                live[q[slot, (cs[slot, C_QH] + j) % QCAP]] = True
    k = 0
    at = 0
    for r in range(n):
        remap[r] = -1
        if not live[r]:
            continue
        remap[r] = k
        for j in range(ms.shape[1]):  # a row copy, not ms[k] = ms[r]: no NRT in kernels (compiled.py)
            ms[k, j] = ms[r, j]
        for a, ln in ((M_HEAD_A, M_HEAD_L), (M_TGT_A, M_TGT_L), (M_HOST_A, M_HOST_L), (M_UA_A, M_UA_L),
                      (M_HDR_A, M_HDR_L)):  # fmt: skip
            src = ms[k, a]
            if src >= 0:
                ms[k, a] = at
                for j in range(ms[k, ln]):  # at <= src: a forward copy never overwrites what it reads
                    arena[at + j] = arena[src + j]
                at += ms[k, ln]
        k += 1
    for r in range(k):
        if ms[r, M_PAIR] >= 0:
            ms[r, M_PAIR] = remap[ms[r, M_PAIR]]
    for slot in range(len(cs)):
        if cs[slot, C_OWN] == FAST:
            for side in range(2):
                if cs[slot, C_CUR + side] >= 0:
                    cs[slot, C_CUR + side] = remap[cs[slot, C_CUR + side]]
            for j in range(cs[slot, C_QN]):
                i = (cs[slot, C_QH] + j) % QCAP
                q[slot, i] = remap[q[slot, i]]
    cnt[K_MSGS] = k
    cnt[K_ARENA] = at


def gather(arena: np.ndarray, a: np.ndarray, ln: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arrow string buffers (int32 offsets, bytes) of the spans (a[i], ln[i]); ln < 0 -> empty."""
    offsets = np.zeros(len(a) + 1, np.int32)
    np.cumsum(np.maximum(ln, 0), out=offsets[1:])
    out = np.empty(int(offsets[-1]), np.uint8)
    _gather(arena, a, ln, offsets, out)
    return offsets, out


@entry
def _gather(arena, a, ln, offsets, out) -> None:
    for i in range(len(a)):
        copy_bytes(out, offsets[i], arena, a[i], ln[i])


DECIMAL_MAX = 20  # bytes of the longest int64 in decimal: -9223372036854775808


@kernel
def _decimal(out, at: int, v: int) -> int:
    """The decimal text of v at out[at:]; the end offset. Digits of the magnitude as uint64: -v
    overflows for the smallest int64 (and floor division of a negative never reaches 0)."""
    ten = np.uint64(10)
    if v < 0:
        out[at] = 45  # -
        at += 1
        u = np.uint64(-(v + 1)) + np.uint64(1)
    else:
        u = np.uint64(v)
    end = at + 1
    t = u // ten
    while t:
        end += 1
        t //= ten
    p = end
    while True:
        p -= 1
        out[p] = np.uint8(np.uint64(48) + u % ten)
        u //= ten
        if p == at:
            break
    return end


@entry
def id_text(prefix, slots, ns, offsets, out) -> None:
    """Row i: prefix[slots[i]] "-" decimal ns[i] (a fast-path l7_id: its conn_id, its number), as
    Arrow string offsets/out; out has room for prefix.shape[1] + 1 + DECIMAL_MAX bytes a row."""
    w = prefix.shape[1]
    at = 0
    offsets[0] = 0
    for i in range(len(slots)):
        copy_bytes(out, at, prefix[slots[i]], 0, w)
        out[at + w] = 45  # -
        at = _decimal(out, at + w + 1, ns[i])
        offsets[i + 1] = at


@entry
def pair_text(a, b, sep: int, offsets, out) -> None:
    """Row i: decimal a[i], the byte sep, decimal b[i] (l7_traceid: req_seq "_" resp_seq), as Arrow
    string offsets/out; out has room for 2 * DECIMAL_MAX + 1 bytes a row."""
    at = 0
    offsets[0] = 0
    for i in range(len(a)):
        at = _decimal(out, at, a[i])
        out[at] = sep
        at = _decimal(out, at + 1, b[i])
        offsets[i + 1] = at
