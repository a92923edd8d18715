"""The compiled HTTP/1 fast path in front of the Python L7 engine.

`FastHttp.feed` runs `http1_kernel.run` over a batch: plain in-order HTTP/1
connections are parsed there entirely; every other packet (UDP, connections
that are not plain HTTP, and a connection from the first packet the kernel
cannot handle on) is left to `engine.L7Engine`. When a connection leaves the
fast path mid-way, `_handover` gives the engine the exact state the kernel
reached (stream positions, framing, the requests waiting, the message in
progress and its packet counts), so records do not depend on which path
parsed them (tests/test_l7_fastpath.py compares both on real captures).

Records and markers leave as Arrow columns: no Python object per message.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bpfnetlog.correlate.ids import CONN_ID_LEN

from . import http1
from . import http1_kernel as k
from .base import Message
from .engine import L7Engine

_METHODS = pa.array(k.METHODS, pa.string())
_VERSIONS = pa.array(["1.0", "1.1"], pa.string())
_PAIRING = pa.array(["paired", "no_response", "no_request"], pa.string())
# response_status of every status code, by http1's rule
_RESPONSE_STATUS = np.array([http1.response_status(code) for code in range(1000)], object)


class FastHttp:
    """Kernel state for every flow slot, its message/record tables, and the handover."""

    def __init__(self, engine: L7Engine) -> None:
        self.engine = engine
        self.cs = np.zeros((0, k.NC), np.int64)
        self.q = np.zeros((0, k.QCAP), np.int64)
        # np.zeros of this size is calloc'd: pages cost memory only once rows reach them
        self.ms = np.zeros((1 << 17, k.NM), np.int64)
        self.rs = np.zeros((1 << 17, k.NR), np.int64)
        self.arena = np.zeros(1 << 25, np.uint8)
        self.cnt = np.zeros(6, np.int64)
        self.heads = np.zeros((k.MAX_HEADS, k.NH), np.int64)  # the kernel's scratch for one segment
        self.conn_ids = np.zeros(0, object)  # slot -> conn_id
        self.conn_text = np.zeros((0, CONN_ID_LEN), np.uint8)  # slot -> its bytes, for k.id_text

    # -- slots ------------------------------------------------------------------------
    def track(self, slot: int, conn_id: str, capacity: int) -> None:
        """A new connection in `slot` (capacity: the flow table's)."""
        if len(self.cs) < capacity:
            old = len(self.cs)
            self.cs = np.concatenate([self.cs, np.zeros((capacity - old, k.NC), np.int64)])
            self.cs[old:, k.C_ISN : k.C_ISN + 2] = -1
            self.q = np.concatenate([self.q, np.zeros((capacity - old, k.QCAP), np.int64)])
            self.conn_ids = np.concatenate([self.conn_ids, np.zeros(capacity - old, object)])
            self.conn_text = np.concatenate([self.conn_text, np.zeros((capacity - old, CONN_ID_LEN), np.uint8)])
        self.conn_ids[slot] = conn_id
        self.conn_text[slot] = np.frombuffer(conn_id.encode(), np.uint8)  # fails unless CONN_ID_LEN bytes

    def release(self, slots: np.ndarray) -> None:
        slots = slots[slots < len(self.cs)]
        self.cs[slots] = 0
        self.cs[slots, k.C_ISN] = self.cs[slots, k.C_ISN + 1] = -1

    def client_side(self, slot: int) -> int:
        return int(self.cs[slot, k.C_CLIENT])

    def is_fast(self, slot: int) -> bool:
        return slot < len(self.cs) and self.cs[slot, k.C_OWN] == k.FAST

    # -- packets ----------------------------------------------------------------------
    def feed(self, slot, side, ts, seq, syn, poff, pcap, plen, retrans, data: np.ndarray):
        """A batch's TCP packets with payload or SYN; (to the engine, marker rows) per packet."""
        n = len(slot)
        heads, dups = int(self.cnt[k.K_HEADS]), int(self.cnt[k.K_DUPS])
        to_py = np.zeros(n, np.bool_)
        mark = np.full(n, -1, np.int64)
        bailed = np.zeros(n + 1, np.int64)
        start = 0
        while start < n:
            start = k.run(self.cs, self.q, self.ms, self.rs, self.cnt, self.arena, data, slot, side, ts, seq, syn,
                          poff, pcap, plen, retrans, start, to_py, mark, bailed, self.heads)  # fmt: skip
            if start < n:
                self._grow(int(plen[start]))
        if bailed[0]:
            self._handover(bailed[1 : bailed[0] + 1], int(ts[0]))
        self.engine.stats["markers"] += int(self.cnt[k.K_HEADS]) - heads  # as the engine counts message starts
        self.engine.stats["dup_segments"] += int(self.cnt[k.K_DUPS]) - dups
        return to_py, mark

    def _grow(self, payload: int) -> None:
        """Room for one more packet: tables and arena double (rows are compacted at `take_records`)."""
        if len(self.ms) - self.cnt[k.K_MSGS] < k.ROOM_MSGS:
            self.ms = _doubled(self.ms, int(self.cnt[k.K_MSGS]))
        if len(self.rs) - self.cnt[k.K_RECS] < k.ROOM_MSGS:
            self.rs = _doubled(self.rs, int(self.cnt[k.K_RECS]))
        used = int(self.cnt[k.K_ARENA])
        if len(self.arena) - used < k.ROOM_ARENA + 2 * payload:
            self.arena = _doubled(self.arena, used, k.ROOM_ARENA + 2 * payload)

    def _head(self, row: int) -> tuple:
        """http1._parse_head of a message row's head bytes (the Python parser's view of it)."""
        m = self.ms[row]
        raw = self.arena[m[k.M_HEAD_A] : m[k.M_HEAD_A] + m[k.M_HEAD_L]].tobytes()
        return http1._parse_head(raw, 0 if m[k.M_REQ] else 1)

    def _handover(self, slots: np.ndarray, ts: int) -> None:
        """Connections that left the fast path: the engine carries on from the kernel's state."""
        ms, used = self.ms, int(self.cnt[k.K_MSGS])
        live = np.flatnonzero(np.isin(ms[:used, k.M_SLOT], slots) & (ms[:used, k.M_STATE] != k.EMITTED))
        states = dict(zip(live.tolist(), ms[live, k.M_STATE].tolist()))
        ms[live, k.M_STATE] = k.EMITTED  # the engine reports them now; the kernel forgets them
        by_slot: dict[int, list[int]] = {}
        for row in live.tolist():
            by_slot.setdefault(int(ms[row, k.M_SLOT]), []).append(row)
        for slot in slots.tolist():
            c = self.cs[slot]
            conn_id = self.conn_ids[slot]
            if c[k.C_NMSG] == 0:  # never on the fast path: only the stream origins to tell
                for side in (0, 1):
                    if c[k.C_ISN + side] >= 0:
                        self.engine.tcp_segment(conn_id, side, int(c[k.C_ISN + side]), ts, b"", retrans=False,
                                                syn=True)  # fmt: skip
                continue
            self._handover_fast(slot, conn_id, by_slot.get(slot, []), states)

    def _handover_fast(self, slot: int, conn_id: str, rows: list[int], states: dict[int, int]) -> None:
        ms, c = self.ms, self.cs[slot]
        fifo = [int(self.q[slot, (c[k.C_QH] + j) % k.QCAP]) for j in range(c[k.C_QN])]
        msgs: dict[int, Message] = {}
        counts: dict[int, tuple[int, int, int]] = {}
        for row in rows:
            m = ms[row]
            key = int(m[k.M_KEY]) if m[k.M_KEY] >= 0 else None
            msg = Message(bool(m[k.M_REQ]), int(m[k.M_SIDE]), int(m[k.M_SEQ]), int(m[k.M_TS0]), int(m[k.M_TS1]),
                          int(m[k.M_LEN]), self._head(row)[2], key, states[row] != k.OPEN, off=int(m[k.M_OFF]))  # fmt: skip
            msgs[row] = msg
            counts[id(msg)] = (int(m[k.M_PK]), int(m[k.M_BY]), int(m[k.M_RT]))
        waiting = set(fifo)
        requests = [(msgs[r], int(ms[r, k.M_N]), r in waiting) for r in rows if ms[r, k.M_REQ]]
        responses = [(msgs[r], int(ms[r, k.M_N]), msgs.get(int(ms[r, k.M_PAIR]))) for r in rows if not ms[r, k.M_REQ]]
        halves = []
        for side in (0, 1):
            cur = int(c[k.C_CUR + side])
            halves.append((http1.BODY if c[k.C_ST + side] == k.BODY else http1.HEAD, int(c[k.C_REM + side]),
                           msgs.get(cur) if cur >= 0 else None, int(c[k.C_NXT + side])))  # fmt: skip
        methods = [(int(ms[r, k.M_KEY]), k.METHODS[ms[r, k.M_CODE]]) for r in fifo]
        parser = http1.Http1Parser.resume(int(c[k.C_CLIENT]), int(c[k.C_NREQ]), methods, halves)
        self.engine.adopt(conn_id, parser, (int(c[k.C_ISN]), int(c[k.C_ISN + 1])), (int(c[k.C_OFF]), int(c[k.C_OFF + 1])),
                          (int(c[k.C_DONE]), int(c[k.C_DONE + 1])), int(c[k.C_NMSG]), requests, responses, counts)  # fmt: skip

    # -- connections end ----------------------------------------------------------------
    def close(self, slot: int) -> None:
        if self.is_fast(slot):
            k.close(self.cs, self.q, self.ms, self.rs, self.cnt, slot)

    def expire(self, deadline: int) -> int:
        """Requests started at or before `deadline` (ns) without response: timeout records; how many."""
        return k.expire(self.cs, self.q, self.ms, self.rs, self.cnt, deadline) if len(self.cs) else 0

    # -- output -------------------------------------------------------------------------
    def markers(self, rows: np.ndarray) -> dict[str, pa.Array]:
        """l7_id, http_method, http_path of the marker rows (what the packet series shows)."""
        ms = self.ms
        pair = ms[rows, k.M_PAIR]
        named = np.where(ms[rows, k.M_REQ] == 1, rows, pair)  # a response shows its request
        out = {"l7_id": self._l7_ids(ms[rows, k.M_SLOT], ms[rows, k.M_N])}
        has = named >= 0
        req_rows = np.where(has, named, 0)
        method = _METHODS.take(pa.array(ms[req_rows, k.M_CODE]))
        path = self._strings(req_rows, k.M_TGT_A, k.M_PATH_L)
        out["http_method"] = pc.if_else(pa.array(has), method, "")
        out["http_path"] = pc.if_else(pa.array(has), path, "")
        self._patch_python(out, req_rows, has, ("http_method", "http_path"))
        return out

    def take_records(self) -> dict[str, object] | None:
        """The records written since the last call as columns (+ "slot"), then compaction; None if none."""
        n = int(self.cnt[k.K_RECS])
        out = self._record_columns(self.rs[:n]) if n else None
        self.cnt[k.K_RECS] = 0
        used = int(self.cnt[k.K_MSGS])
        k.compact(self.cs, self.q, self.ms, self.cnt, self.arena, np.empty(used, np.bool_), np.empty(used, np.int64))
        return out

    def _l7_ids(self, slots: np.ndarray, ns: np.ndarray) -> pa.Array:
        """`<conn_id>-<n>`, written by one kernel pass (Arrow's unique/take/cast/join took 5x longer)."""
        return _kernel_text(len(slots), CONN_ID_LEN + 1 + k.DECIMAL_MAX, k.id_text, self.conn_text,
                            np.ascontiguousarray(slots), np.ascontiguousarray(ns))  # fmt: skip

    def _strings(self, rows: np.ndarray, a_col: int, len_col: int, valid: np.ndarray | None = None) -> pa.Array:
        """The arena spans of message rows as strings; null where not `valid` (no such message)."""
        a, ln = self.ms[rows, a_col], self.ms[rows, len_col]
        offsets, data = k.gather(self.arena, a, ln)
        nulls = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
        return pa.StringArray.from_buffers(len(rows), pa.py_buffer(offsets), pa.py_buffer(data), nulls)

    def _patch_python(self, cols: dict, rows: np.ndarray, valid: np.ndarray, names) -> None:
        """Rows whose head the kernel left to Python (M_PY): the fields its dict has, from http1._parse_head."""
        py = np.flatnonzero(valid & (self.ms[rows, k.M_PY] == 1))
        if not len(py):
            return
        heads = [self._head(int(rows[i]))[2] for i in py.tolist()]
        for name in names:
            has = [j for j, h in enumerate(heads) if name in h]
            if not has:
                continue
            mask = np.zeros(len(rows), bool)
            mask[py[has]] = True
            values = np.full(len(rows), None, object)
            values[py[has]] = [heads[j][name] for j in has]
            cols[name] = pc.if_else(pa.array(mask), pa.array(values, cols[name].type), cols[name])

    def _record_columns(self, r: np.ndarray) -> dict[str, object]:
        ms = self.ms
        n = len(r)
        req, resp = r[:, k.R_REQ], r[:, k.R_RESP]
        has_req, has_resp = req >= 0, resp >= 0
        qr, pr = np.where(has_req, req, 0), np.where(has_resp, resp, 0)

        def only(where: np.ndarray, values: np.ndarray) -> pa.Array:
            """values where `where` holds, null elsewhere (a field of a missing message)."""
            return pa.array(values, mask=~where)

        def req_col(values: np.ndarray) -> pa.Array:
            return only(has_req, values)

        def resp_col(values: np.ndarray) -> pa.Array:
            return only(has_resp, values)

        def req_text(a_col: int, len_col: int) -> pa.Array:
            return self._strings(qr, a_col, len_col, has_req)

        cols: dict[str, object] = {"slot": r[:, k.R_SLOT], "time": pa.array(r[:, k.R_TIME])}
        cols["l7_id"] = self._l7_ids(r[:, k.R_SLOT], r[:, k.R_N])
        cols["http_method"] = cols["request_type"] = _METHODS.take(pa.array(ms[qr, k.M_CODE], mask=~has_req))
        cols["http_path"] = req_text(k.M_TGT_A, k.M_PATH_L)
        cols["request_resource"] = req_text(k.M_TGT_A, k.M_TGT_L)
        cols["http_host"] = cols["request_domain"] = req_text(k.M_HOST_A, k.M_HOST_L)
        cols["http_user_agent"] = req_text(k.M_UA_A, k.M_UA_L)
        cols["req_headers"] = req_text(k.M_HDR_A, k.M_HDR_L)
        cols["resp_headers"] = self._strings(pr, k.M_HDR_A, k.M_HDR_L, has_resp)
        ver = np.where(has_req, ms[qr, k.M_VER], ms[pr, k.M_VER])
        cols["http_version"] = _VERSIONS.take(pa.array(ver))
        code = ms[pr, k.M_CODE]
        cols["http_status_code"] = cols["response_code"] = resp_col(code.astype(np.int32))
        status = _RESPONSE_STATUS[code]  # a copy: the given statuses go on top
        given = r[:, k.R_STATUS]
        status[given == k.ST_TIMEOUT] = "timeout"
        status[given == k.ST_UNKNOWN] = "unknown"
        cols["response_status"] = pa.array(status, pa.string())
        cols["pairing"] = _PAIRING.take(pa.array(r[:, k.R_PAIRING]))
        req_seq, resp_seq = r[:, k.R_REQ_SEQ], r[:, k.R_RESP_SEQ]
        cols["req_seq"], cols["resp_seq"] = pa.array(req_seq), pa.array(resp_seq)
        cols["l7_traceid"] = _kernel_text(n, 2 * k.DECIMAL_MAX + 1, k.pair_text, np.ascontiguousarray(req_seq),
                                          np.ascontiguousarray(resp_seq), ord("_"))  # fmt: skip
        cols["request_length"] = req_col(r[:, k.R_REQ_LEN])
        cols["response_length"] = resp_col(r[:, k.R_RESP_LEN])
        cols["cost_req_sent"] = req_col((r[:, k.R_REQ_TS1] - r[:, k.R_REQ_TS0]) // 1000)
        cols["cost_cnt_dl"] = resp_col((r[:, k.R_RESP_TS1] - r[:, k.R_RESP_TS0]) // 1000)
        paired = has_req & has_resp
        cols["cost_resp_wait"] = only(paired, np.maximum(0, r[:, k.R_RESP_TS0] - r[:, k.R_REQ_TS1]) // 1000)
        cols["response_duration"] = only(paired, np.maximum(0, r[:, k.R_RESP_TS1] - r[:, k.R_REQ_TS0]) // 1000)
        names = ("http_method", "request_type", "http_path", "request_resource", "http_host", "request_domain",
                 "http_user_agent", "req_headers", "trace_id", "parent_id", "span_id", "x_request_id")  # fmt: skip
        for name in ("trace_id", "parent_id", "span_id", "x_request_id"):
            cols[name] = pa.nulls(n, pa.string())
        self._patch_python(cols, pr, has_resp, ("x_request_id",))
        self._patch_python(cols, qr, has_req, names)
        counts = r[:, [k.R_REQ_PK, k.R_REQ_BY, k.R_REQ_RT, k.R_RESP_PK, k.R_RESP_BY, k.R_RESP_RT]]
        cols["counts"] = np.maximum(counts, 0)  # -1: no such message
        return cols


class MarkerTable:
    """Marker columns (l7_id, http_method, http_path) by id, until the packets they mark are written."""

    def __init__(self) -> None:
        self._chunks: list[tuple[int, dict[str, pa.Array]]] = []  # (first id, columns)
        self._next = 0

    def add(self, cols: dict[str, pa.Array]) -> np.ndarray:
        n = len(cols["l7_id"])
        self._chunks.append((self._next, cols))
        self._next += n
        return np.arange(self._next - n, self._next, dtype=np.int64)

    def take(self, ids: np.ndarray) -> dict[str, pa.Array] | None:
        """Columns for `ids` (-1: null); None when no id is set."""
        if not self._chunks or not (ids >= 0).any():
            return None
        first = self._chunks[0][0]
        idx = pa.array(np.where(ids >= 0, ids - first, 0), mask=ids < 0)
        return {name: pa.concat_arrays([c[name] for _, c in self._chunks]).take(idx) for name in self._chunks[0][1]}

    def keep_only(self, ids: np.ndarray) -> None:
        """Forget the markers below the lowest of `ids` (those still on waiting packets; -1: none)."""
        marked = ids[ids >= 0]
        lowest = int(marked.min()) if len(marked) else self._next
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]["l7_id"]) <= lowest:
            self._chunks.pop(0)


def _kernel_text(n: int, room: int, fill: Callable[..., None], *args: object) -> pa.StringArray:
    """n strings that the kernel `fill(*args, offsets, out)` writes, each at most `room` bytes."""
    offsets, out = np.empty(n + 1, np.int32), np.empty(n * room, np.uint8)
    fill(*args, offsets, out)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out))


def _doubled(a: np.ndarray, used: int, extra: int = 0) -> np.ndarray:
    """`a` with twice the rows (at least `used + extra`), its first `used` rows kept: only those
    are copied; the new zeros are calloc'd, so untouched rows cost nothing."""
    out = np.zeros((max(2 * len(a), used + extra),) + a.shape[1:], a.dtype)
    out[:used] = a[:used]
    return out
