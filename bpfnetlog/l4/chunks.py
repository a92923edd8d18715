"""Packets waiting for their chunk to close, and the per-chunk sums of L4 records.

A chunk (at most 256 packets of one connection) is written when it is full,
when its connection ends, or at a periodic flush. Until then its packets sit
here as columns, so an L7 message that starts in them can still mark them.
Per-chunk counters are one compiled pass over these columns, not Python loops.
"""

from __future__ import annotations

import numpy as np

from bpfnetlog.compiled import entry
from bpfnetlog.l4 import tcp_analysis as ta
from bpfnetlog.l4.flows import Analyzed
from bpfnetlog.packets import PacketBatch, RST, SYN

# Packet columns kept until the chunk is written: name -> where it comes from.
_FROM_BATCH = ("ts", "frame", "flags", "seq", "ack", "win", "payload_len", "gso_segs", "l7_mark")
_FROM_L4 = ("slot", "side", "chunk", "idx", "bits", "rtt")


class PendingPackets:
    """Columns of the packets of chunks not yet written.

    Batches are kept as parts and joined once, when rows are asked for: joining at every add
    copied everything pending again for each batch (with 0.2 s batches and a 5 s flush, 13x
    the bytes of the batches)."""

    def __init__(self) -> None:
        self._parts: list[dict[str, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(p["slot"]) for p in self._parts)

    @property
    def cols(self) -> dict[str, np.ndarray]:
        """All pending rows in arrival order ({} when none)."""
        if len(self._parts) > 1:
            self._parts = [{k: np.concatenate([p[k] for p in self._parts]) for k in self._parts[0]}]
        return self._parts[0] if self._parts else {}

    def add(self, batch: PacketBatch, an: Analyzed) -> None:
        """Keep the batch's columns (the batch owns them and is done with them), without the
        packets L4 refused (hash collisions: slot -1), if any."""
        new = {name: batch.cols[name] for name in _FROM_BATCH}
        new.update({name: getattr(an, name) for name in _FROM_L4})
        if (an.slot < 0).any():
            keep = an.slot >= 0
            new = {name: v[keep] for name, v in new.items()}
        self._parts.append(new)

    def take(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Remove and return the rows where `mask` is true, in arrival order (in which a
        connection's chunk and idx only grow), or grouped by connection where connections
        interleave (see `_grouped`). All rows of a bulk transfer (a periodic flush): no copy."""
        c = self.cols
        if not c:
            return {}
        if mask.all():
            self._parts = []
            order = _grouped(c["slot"])
            return c if order is None else {k: v[order] for k, v in c.items()}
        rows = np.flatnonzero(mask)
        order = _grouped(c["slot"][rows])
        if order is not None:
            rows = rows[order]
        out = {k: v[rows] for k, v in c.items()}
        keep = ~mask
        self._parts = [{k: v[keep] for k, v in c.items()}] if keep.any() else []
        return out

    def ready(self, fl: np.ndarray, finished_slots: np.ndarray, flush_all: bool) -> np.ndarray:
        """Rows whose chunk is complete: a later chunk started, the connection finished, or a flush."""
        c = self.cols
        if not c:
            return np.zeros(0, bool)
        if flush_all:
            return np.ones(len(c["slot"]), bool)
        return (c["chunk"] < fl[c["slot"], ta.F_CHUNK]) | np.isin(c["slot"], finished_slots)


def slot_groups(slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct slots, ascending; each row's position among them): a count per slot, no sort."""
    uslots = np.flatnonzero(np.bincount(slot))
    lut = np.empty(len(uslots) and int(uslots[-1]) + 1, np.int64)
    lut[uslots] = np.arange(len(uslots))
    return uslots, lut[slot]


def _grouped(slot: np.ndarray, min_run: int = 16) -> np.ndarray | None:
    """The stable order grouping rows by slot, when connections interleave in runs shorter than
    `min_run` rows on average (many concurrent connections): grouped, the packet table is ~30%
    smaller (each connection's seq, ack, times side by side). None when the runs are long (a
    bulk transfer): grouping would cost a gather of every column and gain nothing."""
    n = len(slot)
    runs = 1 + int(np.count_nonzero(slot[1:] != slot[:-1])) if n else 0
    if runs * min_run <= n:
        return None
    keys = slot.astype(np.uint16) if n and slot.max() < 1 << 16 else slot  # 16 bits: numpy's radix sort
    return np.argsort(keys, kind="stable")


# Rows of chunk_sums' output matrix (one column per chunk), in the order the kernel fills them.
_SUMS = ("tx_packets", "rx_packets", "tx_bytes", "rx_bytes", "tx_retrans", "rx_retrans", "tcp_syn_retrans",
         "tx_rst", "rx_rst", "tx_zero_win", "rx_zero_win", "dup_ack", "out_of_order", "lost_segment",
         "syn_in_chunk", "rtt_sum", "rtt_n", "tx_seq_min", "tx_seq_max", "rx_seq_min", "rx_seq_max",
         "start_time", "end_time")  # fmt: skip
_TX_LO, _TX_HI, _RX_LO, _RX_HI = (_SUMS.index(k) for k in ("tx_seq_min", "tx_seq_max", "rx_seq_min", "rx_seq_max"))
_START, _END = _SUMS.index("start_time"), _SUMS.index("end_time")
_RETRANS_ANY, _ZERO_WIN, _DUP_ACK = ta.RETRANS_ANY, ta.A_ZERO_WIN, ta.A_DUP_ACK
_OUT_OF_ORDER, _LOST_SEG = ta.A_OUT_OF_ORDER, ta.A_LOST_SEG


@entry
def _chunk_of_rows(slot, chunk, last_chunk, last_at, row_chunk, chunk_slot, chunk_no):  # type: ignore[no-untyped-def]
    """Number the chunks of rows in arrival order, as they first appear: row_chunk[i] is row i's,
    chunk_slot/chunk_no each chunk's connection and number. A connection's chunk numbers only
    grow, so its last chunk (last_chunk/last_at, per slot, -1 on entry) is the only one to match.
    Returns the number of chunks."""
    m = 0
    for i in range(len(slot)):
        s = slot[i]
        if last_chunk[s] != chunk[i]:
            last_chunk[s], last_at[s] = chunk[i], m
            chunk_slot[m], chunk_no[m] = s, chunk[i]
            m += 1
        row_chunk[i] = last_at[s]
    return m


@entry
def _chunk_sums(row_chunk, slot, side, src_side, bits, plen, flags, rtt, seq, ts, out):  # type: ignore[no-untyped-def]
    """out[:, c] = the sums of chunk c (the rows where row_chunk == c): one pass over the rows
    instead of a numpy pass per counter. Sequence ranges are 0 where a side sent nothing."""
    m = out.shape[1]
    for c in range(m):
        for k in range(out.shape[0]):
            out[k, c] = 0
        out[_TX_LO, c], out[_TX_HI, c], out[_RX_LO, c], out[_RX_HI, c] = 1 << 40, -1, 1 << 40, -1
        out[_START, c] = -1  # packet times are never negative
    for i in range(len(slot)):
        c = row_chunk[i]
        tx = side[i] == src_side[slot[i]]
        p = np.int64(plen[i])
        lo = np.int64(seq[i])
        b, f = bits[i], flags[i]
        retrans = (b & _RETRANS_ANY) != 0
        d = 0 if tx else 1  # the tx_ and rx_ rows of a counter are next to each other
        out[0 + d, c] += 1
        out[2 + d, c] += p
        out[4 + d, c] += retrans
        out[7 + d, c] += (f & RST) != 0
        out[9 + d, c] += (b & _ZERO_WIN) != 0
        lo_row = _TX_LO + 2 * d
        out[lo_row, c] = min(out[lo_row, c], lo)
        out[lo_row + 1, c] = max(out[lo_row + 1, c], lo + p)
        out[6, c] += retrans and (f & SYN) != 0
        out[11, c] += (b & _DUP_ACK) != 0
        out[12, c] += (b & _OUT_OF_ORDER) != 0
        out[13, c] += (b & _LOST_SEG) != 0
        if (f & SYN) != 0:
            out[14, c] = 1
        if rtt[i] > 0:
            out[15, c] += rtt[i]
            out[16, c] += 1
        if out[_START, c] < 0:
            out[_START, c] = ts[i]
        out[_END, c] = ts[i]
    for c in range(m):
        for lo_row in (_TX_LO, _RX_LO):
            if out[lo_row + 1, c] < 0:
                out[lo_row, c], out[lo_row + 1, c] = 0, 0


def chunk_sums(rows: dict[str, np.ndarray], src_side: np.ndarray) -> dict[str, np.ndarray]:
    """Per-chunk counters of rows in arrival order; `src_side[slot]` is the local side.

    Returns arrays with one entry per chunk, sorted by (slot, chunk), named as the L4 fields
    they fill (plus `slot`, `count`, `start_time`, `end_time`).
    """
    slot = rows["slot"].astype(np.int32, copy=False)
    n = len(slot)
    if n == 0:
        return {}
    scratch = np.full((2, len(src_side)), -1, np.int64)
    row_chunk, chunk_slot, chunk_no = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    m = _chunk_of_rows(slot, rows["chunk"].astype(np.int32, copy=False), scratch[0], scratch[1], row_chunk,
                       chunk_slot, chunk_no)  # fmt: skip
    out = np.empty((len(_SUMS), m), np.int64)
    as_ = lambda name, dt: rows[name].astype(dt, copy=False)  # noqa: E731 - one compiled signature
    _chunk_sums(row_chunk, slot, as_("side", np.uint8), src_side.astype(np.int64, copy=False), as_("bits", np.uint16),
                as_("payload_len", np.uint32), as_("flags", np.uint8), as_("rtt", np.int64), as_("seq", np.uint32),
                as_("ts", np.int64), out)  # fmt: skip
    order = np.lexsort((chunk_no[:m], chunk_slot[:m]))
    sums = dict(zip(_SUMS, out[:, order]))
    rtt_sum, rtt_n = sums.pop("rtt_sum"), sums.pop("rtt_n")
    sums["syn_in_chunk"] = sums["syn_in_chunk"] > 0
    sums["tcp_rtt"] = np.where(rtt_n > 0, rtt_sum // np.maximum(rtt_n, 1) // 1000, 0)
    sums["count"] = sums["tx_packets"] + sums["rx_packets"]
    return {"slot": chunk_slot[:m][order], "chunk_id": chunk_no[:m][order], **sums}
