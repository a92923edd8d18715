"""The pipeline: packet batches in, L4 chunks + packets + L7 records out to a store.

One `Pipeline` serves one capture (a set of files or a live source). For each
batch: L4 analysis (numba, `l4.flows`), then the payload-carrying packets go
to the L7 engine (`l7.engine`), then `tick()` writes what is complete:
chunks that are full or whose connection ended, L7 records that paired or
timed out. Packets of open chunks wait in `l4.chunks.PendingPackets` so the
L7 markers (which packet starts which request) can still be put on them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bpfnetlog.correlate.ids import nic_traceid
from bpfnetlog.correlate.tags import Conn, new_conn
from bpfnetlog.l4 import tcp_analysis as ta
from bpfnetlog.l4 import zeek
from bpfnetlog.l4.chunks import PendingPackets, chunk_sums, slot_groups
from bpfnetlog.enrich.listening import Listening, server_side
from bpfnetlog.l4.flowkeys import batch_keys, key_parts
from bpfnetlog.l4.flows import FlowTable
from bpfnetlog.l4.packet_rows import packet_table
from bpfnetlog.l4.roles import LocalNets
from bpfnetlog.l7.engine import L7Engine, L7Record, Marker
from bpfnetlog.l7.fastpath import FastHttp, MarkerTable
from bpfnetlog.packets import DIR_EGRESS, FIN, RST, SYN, FlowRef, Nic, PacketBatch, SourceStats, read_only
from bpfnetlog.records import L4_SOURCE, L7_SOURCE, PACKET_TABLE, SCHEMAS, STATS_TABLE
from bpfnetlog.store.base import StoreWriter
from bpfnetlog.store.columns import dictionary

if TYPE_CHECKING:
    from bpfnetlog.capture.ebpf.source import RingLosses

S = 1_000_000_000
L4_NAMES = frozenset(SCHEMAS[L4_SOURCE].names)


@dataclass
class Timeouts:
    """Seconds; an idle connection is written and forgotten after idle_tcp / idle_udp."""

    idle_tcp: float = 300.0
    idle_udp: float = 60.0
    linger: float = 2.0  # TIME_WAIT-like: keep a closed connection for its last ACKs
    l7_request: float = 30.0  # a request without response becomes a timeout record
    chunk_max: float = 60.0  # a chunk spans at most this much time


@dataclass
class Counters:
    packets: int = 0
    connections: int = 0
    l4_records: int = 0
    l7_records: int = 0
    packet_rows: int = 0


class Pipeline:
    def __init__(self, writer: StoreWriter, host: str, local: LocalNets | None = None,
                 timeouts: Timeouts | None = None, fast_l7: bool = True, report_quiet: bool = False) -> None:  # fmt: skip
        """`fast_l7=False` sends every connection to the Python L7 engine (the reference the
        compiled HTTP fast path is tested against). `report_quiet`: keep the lists `take_quiet`
        returns (live capture uses them to stop copying payload nobody parses)."""
        self.writer = writer
        self.host = host
        self.started = time.time_ns()  # the run's, in its capture statistics
        self.local = local or LocalNets()
        self.t = timeouts or Timeouts()
        self.flows = FlowTable(chunk_max_ns=int(self.t.chunk_max * S))
        self.l7 = L7Engine(request_timeout_ns=int(self.t.l7_request * S))
        self.fast: FastHttp | None = FastHttp(self.l7) if fast_l7 else None
        self.fast_markers = MarkerTable()
        self.pending = PendingPackets()
        self.nics: list[Nic] = []
        self._nic_index: dict[Nic, int] = {}
        self.conns: dict[int, Conn] = {}  # slot -> connection
        self.slot_of: dict[str, int] = {}  # conn_id -> slot
        self.markers: dict[tuple[int, int, int], Marker] = {}  # (slot, side, seq) -> marker
        self.now = 0
        self.count = Counters()
        self.listening: Listening = {}  # LISTEN sockets per netns (live capture), see enrich.listening
        self.drops: dict[int, int] = {}  # slot -> packets of it the capture lost, not yet reported
        self.l7_off = np.zeros(0, bool)  # slot -> the L7 engine gave up on this connection
        self.report_quiet = report_quiet
        self._quiet: list[FlowRef] = []  # connections the L7 stage gave up on, not yet taken
        self._resumed: list[FlowRef] = []  # of those, the ones that ended

    # ---- input -------------------------------------------------------------
    def feed(self, batch: PacketBatch) -> None:
        """Analyze one batch; nothing is written until `tick()`."""
        if len(batch) == 0:
            return
        batch.cols["nic"] = self._global_nics(batch)
        an, created = self.flows.analyze(batch)
        fl = self.flows.fl
        for slot in created.tolist():
            c = new_conn(self.host, self.nics, self.flows.keys[slot], int(fl[slot, ta.F_FIRST_TS]))
            if self.listening and c.proto == 6:
                c.listen_server = server_side(self.listening, c.nic.netns, c.ip, c.port)
            self.conns[slot] = c
            self.slot_of[c.conn_id] = slot
            if self.fast is not None:
                self.fast.track(slot, c.conn_id, self.flows.capacity)
        self.count.connections += len(created)
        self.count.packets += len(batch)
        self._learn_wire_locality(batch, an)
        self._feed_l7(batch, an)
        self.pending.add(batch, an)
        self.now = max(self.now, int(batch.ts.max()))

    def _learn_wire_locality(self, batch: PacketBatch, an) -> None:
        """A packet seen at tc egress was sent by this host: its side is the local one.

        On loopback every packet leaves and enters this host, so the address rules decide there.
        """
        egress = np.flatnonzero((batch.direction == DIR_EGRESS) & (an.slot >= 0))
        if not len(egress):
            return
        # a connection's packets come in runs: its first packet starts one, so the first of each
        # slot is among the run starts, far fewer to sort than the packets
        slot = an.slot[egress]
        starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
        slots, first = np.unique(slot[starts], return_index=True)
        for slot, side in zip(slots.tolist(), an.side[egress[starts[first]]].tolist()):
            conn = self.conns[slot]
            if conn.wire_local < 0 and conn.src_side < 0 and not conn.nic.name == "lo":
                conn.wire_local = side

    def account_drops(self, fc: "RingLosses", already: dict[tuple, int]) -> None:
        """Kernel per-flow ring drops -> `capture_drops` of the connections' next records.

        `already` (flow key -> drops counted before) is kept by the caller across calls, since
        the kernel counters are cumulative.
        """
        lost = np.flatnonzero(fc.values["packets"] > 0)
        if not len(lost):
            return
        lut = np.array([self._nic_index.get(n, -1) for n in fc.nics] or [-1], np.int64)
        nic = lut[fc.nic[lost]]
        keys = batch_keys(np.maximum(nic, 0).astype(np.uint16), fc.proto[lost], fc.src_ip[lost], fc.dst_ip[lost],
                          fc.sport[lost], fc.dport[lost])  # fmt: skip
        for j, h in enumerate(keys.hashes.tolist()):
            key = (int(nic[j]), h, int(fc.direction[lost[j]]))
            total = int(fc.values["packets"][lost[j]])
            new = total - already.get(key, 0)
            slot = self.flows.by_hash.get(h)
            if new > 0 and nic[j] >= 0 and slot is not None:
                already[key] = total
                self.drops[slot] = self.drops.get(slot, 0) + new

    def _global_nics(self, batch: PacketBatch) -> np.ndarray:
        """Batch-local NIC indexes -> this pipeline's, so several sources never collide."""
        lut = np.empty(max(len(batch.nics), 1), np.uint16)
        for i, nic in enumerate(batch.nics):
            if nic not in self._nic_index:
                self._nic_index[nic] = len(self.nics)
                self.nics.append(nic)
            lut[i] = self._nic_index[nic]
        return lut[batch.nic]

    def _feed_l7(self, batch: PacketBatch, an) -> None:
        """Payload packets (and SYN/FIN/RST) to the L7 stage, except for connections it gave up on.

        TCP goes through the compiled HTTP fast path first (l7.fastpath); what it leaves,
        and UDP, goes to the Python engine one packet at a time.
        """
        c = batch.cols
        tcp = c["proto"] == 6
        if len(self.l7_off) < self.flows.capacity:
            self.l7_off = np.concatenate([self.l7_off, np.zeros(self.flows.capacity - len(self.l7_off), bool)])
        ok = an.slot >= 0
        syn = tcp & ((c["flags"] & SYN) != 0)
        want = ok & ((c["payload_len"] > 0) | (tcp & ((c["flags"] & (SYN | FIN | RST)) != 0)))
        want &= ~self.l7_off[np.where(ok, an.slot, 0)]
        retrans_any = (an.bits & ta.RETRANS_ANY) != 0
        batch.cols["l7_mark"] = np.full(len(batch), -1, np.int64)
        if self.fast is not None:
            # only the packets it wants (payload or SYN): a bulk transfer given up on costs nothing here
            fast = np.flatnonzero(want & tcp & ((c["payload_len"] > 0) | syn))
            to_py, mark = self.fast.feed(
                an.slot[fast].astype(np.int64), an.side[fast].astype(np.int64), c["ts"][fast],
                c["seq"][fast].astype(np.int64), syn[fast], c["payload_off"][fast],
                c["payload_cap"][fast].astype(np.int64), c["payload_len"][fast].astype(np.int64),
                retrans_any[fast].astype(np.int64), read_only(batch.data),
            )  # fmt: skip
            want &= ~tcp
            want[fast[to_py]] = True  # what the fast path left to the Python engine
            starts = mark >= 0
            self._fast_markers(an.slot, fast[starts], mark[starts], batch.cols["l7_mark"])
        sel = np.flatnonzero(want)
        if not len(sel):
            return
        data = memoryview(batch.data)
        conns = self.conns
        tcp_segment, udp_datagram = self.l7.tcp_segment, self.l7.udp_datagram
        # FIN and RST are not passed: the engine ends a connection only on close()
        rows = zip(
            an.slot[sel].tolist(), an.side[sel].tolist(), c["ts"][sel].tolist(), tcp[sel].tolist(),
            c["seq"][sel].tolist(), syn[sel].tolist(), c["payload_off"][sel].tolist(),
            c["payload_cap"][sel].tolist(), c["payload_len"][sel].tolist(), retrans_any[sel].tolist(),
        )  # fmt: skip
        off_slots = []
        for slot, side, ts, is_tcp, seq, syn_, off, cap, plen, retrans in rows:
            payload = data[off : off + cap]  # the engine copies only the bytes it looks at
            if is_tcp:
                wanted = tcp_segment(conns[slot].conn_id, side, seq, ts, payload, length=plen, retrans=retrans, syn=syn_)
            else:
                wanted = udp_datagram(conns[slot].conn_id, side, ts, payload, plen)
            if not wanted:
                off_slots.append(slot)
        if off_slots:  # later packets of these connections skip the loop above
            self.l7_off[off_slots] = True
            if self.report_quiet:
                self._quiet.extend(self._flow_ref(slot) for slot in dict.fromkeys(off_slots))

    def take_quiet(self) -> tuple[list[FlowRef], list[FlowRef]]:
        """(connections whose payload is of no more use, connections among those that ended) since
        the last call; empty unless `report_quiet`."""
        out = self._quiet, self._resumed
        self._quiet, self._resumed = [], []
        return out

    def _flow_ref(self, slot: int) -> FlowRef:
        nic, proto, ip_a, port_a, ip_b, port_b = key_parts(self.flows.keys[slot])
        return FlowRef(self.nics[nic], proto, ip_a, port_a, ip_b, port_b)

    def _fast_markers(self, slots: np.ndarray, marked: np.ndarray, rows: np.ndarray, l7_mark: np.ndarray) -> None:
        """The fast path's markers (message `rows` starting at packets `marked`) become ids into
        `fast_markers`, on the packets they mark."""
        if not len(marked):
            return
        l7_mark[marked] = self.fast_markers.add(self.fast.markers(rows))
        for slot in np.unique(slots[marked]).tolist():
            conn = self.conns[slot]
            conn.l7_proto = "http"
            if conn.l7_client < 0:
                conn.l7_client = self.fast.client_side(slot)

    # ---- output ------------------------------------------------------------
    def tick(self, now: int | None = None, flush_all: bool = False) -> None:
        """Write what is complete at time `now` (ns; default: newest packet seen).

        `flush_all` also writes the open chunks of running connections (the
        periodic flush of long connections, and the end of input).
        """
        now = self.now if now is None else now
        t = self.t
        finished = self.flows.finished(now, int(t.idle_tcp * S), int(t.idle_udp * S), int(t.linger * S))
        for slot in finished.tolist():
            self.l7.close(self.conns[slot].conn_id, now)
            if self.fast is not None:
                self.fast.close(slot)
        self.l7.expire(now)
        self._take_markers()
        self._write_l7(self.l7.take_records())
        if self.fast is not None:
            self.l7.stats["timeouts"] += self.fast.expire(now - self.l7.request_timeout_ns)
            self._write_fast_l7(self.fast.take_records())
        rows = self.pending.take(self.pending.ready(self.flows.fl, finished, flush_all))
        self._write_l4(rows, set(finished.tolist()), flush_all)
        for slot in finished.tolist():
            conn = self.conns.pop(slot)
            del self.slot_of[conn.conn_id]
            self.drops.pop(slot, None)
        if len(finished):
            self.markers = {k: m for k, m in self.markers.items() if k[0] in self.conns}
            self._release(finished)

    def finish(self, stats: list[SourceStats] = ()) -> None:
        """End of input: every connection ends, everything is written."""
        self.l7.finish(self.now)
        if self.fast is not None:
            for slot in self.flows.used_slots().tolist():
                self.fast.close(slot)
        self.tick(self.now, flush_all=True)
        everything = self.flows.used_slots()
        for slot in everything.tolist():
            conn = self.conns.pop(slot)
            del self.slot_of[conn.conn_id]
        self._release(everything)
        self.write_stats(stats)
        self.writer.flush()

    def write_stats(self, stats: list[SourceStats]) -> None:
        """A row per source: its counters so far (records.STATS_FIELDS)."""
        if stats:
            self.writer.write(STATS_TABLE, [self._stats_row(s) for s in stats])

    def _release(self, slots: np.ndarray) -> None:
        """Slots are reused: forget what was learned about their connections."""
        known = slots[slots < len(self.l7_off)]
        if self.report_quiet:
            self._resumed.extend(self._flow_ref(slot) for slot in known[self.l7_off[known]].tolist())
        self.l7_off[known] = False
        if self.fast is not None:
            self.fast.release(slots)
        self.flows.release(slots)

    def _stats_row(self, s: SourceStats) -> dict:
        # before any packet (a quiet host at the first flush) the wall clock, not 1970's hour
        return {"time": self.now or time.time_ns(), "started": self.started, "host": self.host, "source": s.source,
                "packets": s.packets, "decoded": s.decoded, "skipped": s.skipped, "malformed": s.malformed,
                "dropped": s.dropped, "headers_only": getattr(s, "quiet", None),
                "payload_shed": getattr(s, "shed", None), "errors": "; ".join(s.errors)}  # fmt: skip

    def _take_markers(self) -> None:
        for m in self.l7.take_markers():
            slot = self.slot_of.get(m.conn_id)
            if slot is None:
                continue
            self.markers[(slot, m.side, m.seq)] = m
            conn = self.conns[slot]
            conn.l7_proto = m.l7_proto
            if conn.l7_client < 0:
                conn.l7_client = m.side if m.is_request else 1 - m.side

    def _tags(self, slot: int) -> dict:
        fl = self.flows.fl
        return self.conns[slot].tags(
            self.host, self.local, nic_traceid(int(fl[slot, ta.F_SYN_SEQ]), int(fl[slot, ta.F_SYNACK_SEQ]))
        )

    def _write_l7(self, records: list[L7Record]) -> None:
        """L7 records to the store, built column by column (a dict per record costs 3x more).

        A record is its connection's tags + its fields (`L7Record.fields`) + l7_proto/l7_id/time,
        the tx/rx counts and status.
        """
        kept, tags, which, client_is_src = self._l7_tags(records)
        if not kept:
            return
        n = len(kept)
        types = SCHEMAS[L7_SOURCE]
        cols = self._take_columns(tags, which, types)
        fields = self._l7_field_columns(kept, types)
        clash = fields.keys() & cols.keys()
        if clash:
            raise ValueError(f"L7 fields named like connection tags: {', '.join(sorted(clash))}")
        cols.update(fields)
        cols["l7_proto"] = pa.array([r.l7_proto for r in kept], pa.string())
        cols["l7_id"] = pa.array([r.l7_id for r in kept], pa.string())
        cols["time"] = pa.array([r.time for r in kept], pa.int64())
        counts = np.array([(r.req_packets, r.req_bytes, r.req_retrans, r.resp_packets, r.resp_bytes,
                            r.resp_retrans) for r in kept], np.int64).reshape(n, 6)  # fmt: skip
        self._traffic_columns(cols, counts, np.asarray(client_is_src, bool)[np.asarray(which, np.int64)])
        cols["status"] = self._l7_status(cols.get("response_status", pa.nulls(n, pa.string())))
        self.writer.write(L7_SOURCE, pa.table(cols))
        self.count.l7_records += n

    def _write_fast_l7(self, cols: dict | None) -> None:
        """The fast path's records (columns, see FastHttp.take_records) with their connections' tags."""
        if cols is None:
            return
        slots = cols.pop("slot")
        counts = cols.pop("counts")
        n = len(slots)
        uslots, which = np.unique(slots, return_inverse=True)
        tags, client_is_src = [], []
        for slot in uslots.tolist():
            conn = self.conns[slot]
            tags.append(self._tags(slot))
            client_is_src.append(conn.client_side == conn.src_side)
        out = self._take_columns(tags, which.tolist(), SCHEMAS[L7_SOURCE])
        out.update(cols)
        out["l7_proto"] = pa.repeat("http", n)
        self._traffic_columns(out, counts, np.asarray(client_is_src, bool)[which])
        out["status"] = self._l7_status(out["response_status"])
        self.writer.write(L7_SOURCE, pa.table(out))
        self.count.l7_records += n
        self.l7.stats["records"] += n

    @staticmethod
    def _traffic_columns(cols: dict, counts: np.ndarray, req_is_tx: np.ndarray) -> None:
        """tx_/rx_ packets, bytes, retrans from (request p/b/r, response p/b/r) per record."""
        for k, what in enumerate(("packets", "bytes", "retrans")):
            cols["tx_" + what] = pa.array(np.where(req_is_tx, counts[:, k], counts[:, 3 + k]))
            cols["rx_" + what] = pa.array(np.where(req_is_tx, counts[:, 3 + k], counts[:, k]))

    def _l7_tags(self, records: list[L7Record]) -> tuple[list[L7Record], list[dict], list[int], list[bool]]:
        """(records of known connections, distinct tag dicts, index of each record's tags, per tag
        dict: the client is the src side).

        A connection's tags change only when its client side does (the first record of a
        connection may tell it), so they are computed once per (slot, client side), in record
        order, exactly when the per-record computation would have changed them.
        """
        kept, tags, which, client_is_src = [], [], [], []
        index: dict[tuple[int, int], int] = {}
        for r in records:
            slot = self.slot_of.get(r.conn_id)
            if slot is None:
                continue
            conn = self.conns[slot]
            if conn.l7_client < 0 and r.client_side >= 0:
                conn.l7_client = r.client_side
            key = (slot, conn.client_side)
            i = index.get(key)
            if i is None:
                i = index[key] = len(tags)
                tags.append(self._tags(slot))
                client_is_src.append(conn.client_side == conn.src_side)
            kept.append(r)
            which.append(i)
        return kept, tags, which, client_is_src

    @staticmethod
    def _l7_field_columns(records: list[L7Record], schema: pa.Schema) -> dict[str, pa.Array]:
        """The columns of the records' fields: the messages' fields converted once per distinct
        dict (records of equal heads share it) and taken, then each record's own fields on top."""
        index: dict[int, int] = {}  # id(dict) -> position in dicts
        dicts: list[dict] = []

        def at(d: dict) -> int:
            i = index.get(id(d))
            if i is None:
                i = index[id(d)] = len(dicts)
                dicts.append(d)
            return i

        req_at = pa.array([at(r.req_fields) for r in records], pa.int32())
        resp_at = pa.array([at(r.resp_fields) for r in records], pa.int32())
        owns = [r.own for r in records]
        names = set().union(*dicts)
        own_names = set().union(*owns)
        unknown = (names | own_names) - set(schema.names)
        if unknown:
            raise ValueError(f"fields not in {L7_SOURCE}: {', '.join(sorted(unknown))}")
        out = {}
        for name in names:  # the request's value if it has the field, else the response's
            values = pa.array([d.get(name) for d in dicts], schema.field(name).type)
            has = pa.array([name in d for d in dicts])
            out[name] = pc.if_else(has.take(req_at), values.take(req_at), values.take(resp_at))
        for name in own_names:
            col = pa.array([o.get(name) for o in owns], schema.field(name).type)
            if name in out:  # where the record has no value of its own, the messages' stays
                col = pc.if_else(pa.array([name in o for o in owns]), col, out[name])
            out[name] = col
        return out

    @staticmethod
    def _l7_status(response_status: pa.Array) -> pa.Array:
        """status: error for server_error/timeout, warning for client_error, else info."""
        known = pa.array(["server_error", "timeout", "client_error"])
        which = pc.fill_null(pc.index_in(response_status, value_set=known), 3).to_numpy()
        return pa.array(np.array(["error", "error", "warning", "info"], object)[which], pa.string())

    @staticmethod
    def _take_columns(rows: list[dict], which: list[int], schema: pa.Schema) -> dict[str, pa.Array]:
        """Columns of rows[which[0]], rows[which[1]], ...: each distinct row converted once, then
        taken (text as a dictionary over the distinct rows: the store writes it so)."""
        idx = np.asarray(which, np.int32)
        take = pa.array(idx)
        out = {}
        for name in rows[0]:
            values = pa.array([row[name] for row in rows], schema.field(name).type)
            out[name] = dictionary(idx, values) if pa.types.is_string(values.type) else values.take(take)
        return out

    def _write_l4(self, rows: dict[str, np.ndarray], finished: set[int], flush_all: bool) -> None:
        """One L4 record per chunk of `rows`, built column by column: the connection's tags and
        Zeek fields once per connection, the counters (`chunk_sums`) as arrays."""
        if not rows or not len(rows["slot"]):
            return
        fl = self.flows.fl
        slots, slot_of_row = slot_groups(rows["slot"])
        slot_list = slots.tolist()
        tags = [self._tags(slot) for slot in slot_list]  # fixes src_side before tx/rx are counted
        src_side = np.zeros(self.flows.capacity, np.int64)
        for slot, conn in self.conns.items():
            src_side[slot] = conn.src_side
        sums = chunk_sums(rows, src_side)
        chunk_slot = sums["slot"]
        which = np.searchsorted(slots, chunk_slot)  # chunk -> its connection in slot_list
        last = np.r_[chunk_slot[1:] != chunk_slot[:-1], True]  # chunks are sorted by (slot, chunk)
        l7_proto, history, conn_state = [], [], []
        for slot, t in zip(slot_list, tags):
            conn = self.conns[slot]
            codes = self.flows.hist[slot, : fl[slot, ta.F_HIST_N]].tolist()
            l7_proto.append(conn.l7_proto)
            history.append(zeek.history(codes, conn.client_side))
            conn_state.append(zeek.conn_state(codes, conn.client_side, t["l4_proto"]))
        final = np.array([slot in finished for slot in slot_list], bool)[which] & last
        drops = np.array([self.drops.pop(slot, 0) for slot in slot_list], np.int64)
        cols = self._take_columns(tags, which.tolist(), SCHEMAS[L4_SOURCE])
        for name in sums:
            if name in L4_NAMES:  # the sums named as L4 fields
                cols[name] = pa.array(sums[name])
        f = fl[chunk_slot]
        cols["time"] = pa.array(sums["start_time"])
        cols["duration"] = pa.array((sums["end_time"] - sums["start_time"]) // 1000)
        cols["packets"] = pa.array(sums["count"])
        cols["chunk_syn"] = pa.array(sums["syn_in_chunk"])
        cols["chunk_fin"] = pa.array(final)
        cols["l7_proto"] = dictionary(which, pa.array(l7_proto, pa.string()))
        cols["tcp_3whs_cost"] = pa.array(_span_us(f[:, ta.F_SYN_TS], f[:, ta.F_HS_DONE_TS]))
        cols["tcp_4whs_cost"] = pa.array(_span_us(f[:, ta.F_FIN1_TS], f[:, ta.F_FIN_DONE_TS]))
        cols["history"] = dictionary(which, pa.array(history, pa.string()))
        cols["conn_state"] = states = pa.array(conn_state, pa.string()).take(which)
        cols["close_type"] = _close_types(f[:, ta.F_CLOSED], final, flush_all)
        capture_drops = np.where(last, drops[which], 0)  # told once, on the connection's last chunk
        cols["capture_drops"] = pa.array(capture_drops)
        cols["status"] = _l4_status(sums, states, capture_drops)
        self.writer.write(L4_SOURCE, pa.table(cols))
        fast_marks = self.fast_markers.take(rows["l7_mark"])
        self.writer.write(PACKET_TABLE, packet_table(rows, (slots, slot_of_row), self.conns, self.markers, self.host,
                                                    fast_marks))  # fmt: skip
        self.fast_markers.keep_only(self.pending.cols.get("l7_mark", np.zeros(0, np.int64)))
        self.count.l4_records += len(chunk_slot)
        self.count.packet_rows += len(rows["slot"])
        if flush_all:  # running connections continue in a new chunk
            for slot in set(slot_list) - finished:
                fl[slot, ta.F_CHUNK] += 1
                fl[slot, ta.F_CHUNK_PKTS] = 0


def _span_us(begin: np.ndarray, done: np.ndarray) -> np.ndarray:
    """done - begin in us where `done` was reached (non-zero), else 0."""
    return np.where(done != 0, done - begin, 0) // 1000


def _close_types(closed: np.ndarray, final: np.ndarray, flush_all: bool) -> pa.Array:
    """rst / fin from the kernel's close state; a connection's last chunk written by its idle
    timeout (not by the end of input or a periodic flush) is "timeout"; else "open"."""
    kind = np.where(closed == 2, 0, np.where(closed == 1, 1, np.where(final & (not flush_all), 2, 3)))
    return pa.array(np.array(["rst", "fin", "timeout", "open"], object)[kind], pa.string())


_ERROR_STATES = pa.array(["S0", "REJ", "RSTOS0"])


def _l4_status(sums: dict[str, np.ndarray], conn_state: pa.Array, capture_drops: np.ndarray) -> pa.Array:
    """error: a reset or a refused / unanswered handshake; warning: counts are lower bounds (capture
    drops; the kernel counters have the exact totals) or the network struggled; else info."""
    error = (sums["tx_rst"] > 0) | (sums["rx_rst"] > 0) | pc.is_in(conn_state, _ERROR_STATES).to_numpy(zero_copy_only=False)
    warning = capture_drops > 0
    for name in ("tx_retrans", "rx_retrans", "lost_segment", "tx_zero_win", "rx_zero_win"):
        warning |= sums[name] > 0
    kind = np.where(error, 0, np.where(warning, 1, 2))
    return pa.array(np.array(["error", "warning", "info"], object)[kind], pa.string())
