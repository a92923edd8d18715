"""Packets waiting for their chunk to close, and the per-chunk sums of L4 records.

A chunk (at most 256 packets of one connection) is written when it is full,
when its connection ends, or at a periodic flush. Until then its packets sit
here as columns, so an L7 message that starts in them can still mark them.
Per-chunk counters are numpy group sums over these columns, not Python loops.
"""

from __future__ import annotations

import numpy as np

from bpfnetlog.l4 import tcp_analysis as ta
from bpfnetlog.l4.flows import Analyzed
from bpfnetlog.packets import PacketBatch, RST, SYN

# Packet columns kept until the chunk is written: name -> where it comes from.
_FROM_BATCH = ("ts", "frame", "flags", "seq", "ack", "win", "payload_len", "gso_segs", "l7_mark")
_FROM_L4 = ("slot", "side", "chunk", "idx", "bits", "rtt")


class PendingPackets:
    """Columns of the packets of chunks not yet written."""

    def __init__(self) -> None:
        self.cols: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.cols["slot"]) if self.cols else 0

    def add(self, batch: PacketBatch, an: Analyzed) -> None:
        keep = an.slot >= 0
        new = {name: batch.cols[name][keep] for name in _FROM_BATCH}
        new.update({name: getattr(an, name)[keep] for name in _FROM_L4})
        if not self.cols:
            self.cols = new
        else:
            self.cols = {k: np.concatenate([self.cols[k], v]) for k, v in new.items()}

    def take(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Remove and return the rows where `mask` is true, sorted by (slot, chunk, idx)."""
        if not self.cols:
            return {}
        rows = np.flatnonzero(mask)
        c = self.cols
        order = rows[_order(c["slot"][rows], c["chunk"][rows], c["idx"][rows])]
        out = {k: v[order] for k, v in c.items()}
        self.cols = {k: v[~mask] for k, v in c.items()}
        return out

    def ready(self, fl: np.ndarray, finished_slots: np.ndarray, flush_all: bool) -> np.ndarray:
        """Rows whose chunk is complete: a later chunk started, the connection finished, or a flush."""
        if not self.cols:
            return np.zeros(0, bool)
        if flush_all:
            return np.ones(len(self), bool)
        slot = self.cols["slot"]
        return (self.cols["chunk"] < fl[slot, ta.F_CHUNK]) | np.isin(slot, finished_slots)


def sorted_groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, each row's position among them) of a sorted array, as `take` returns
    rows sorted by slot: read off where the values change, no sort and no hash."""
    change = np.empty(len(values), np.bool_)
    change[:1] = True
    np.not_equal(values[1:], values[:-1], out=change[1:])
    return values[change], np.cumsum(change) - 1


def _order(slot: np.ndarray, chunk: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The permutation sorting rows by (slot, chunk, idx).

    Rows are kept in arrival order, in which one connection's (chunk, idx) only grows: a stable
    sort by slot alone is enough, and on 16-bit slots numpy's is a radix sort (~10x faster than
    a lexsort). Checked, not assumed: if a slot's rows are out of order, lexsort.
    (idx counts the connection's packets, so the three do not fit one packed 64-bit key.)"""
    if len(slot) and slot.max() < 1 << 16:
        order = np.argsort(slot.astype(np.uint16), kind="stable")
        s, c, i = slot[order], chunk[order], idx[order]
        same = s[1:] == s[:-1]
        back = (c[1:] < c[:-1]) | ((c[1:] == c[:-1]) & (i[1:] < i[:-1]))
        if not np.any(same & back):
            return order
    return np.lexsort((idx, chunk, slot))


def chunk_sums(rows: dict[str, np.ndarray], src_side: np.ndarray) -> dict[str, np.ndarray]:
    """Per-chunk counters of rows sorted by (slot, chunk); `src_side[slot]` is the local side.

    Returns arrays with one entry per chunk (plus `slot`, `chunk`, `first`,
    `count` to find its rows), named as the L4 fields they fill.
    """
    slot, chunk = rows["slot"], rows["chunk"]
    n = len(slot)
    if n == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, (slot[1:] != slot[:-1]) | (chunk[1:] != chunk[:-1])])
    tx = rows["side"] == src_side[slot]
    rx = ~tx
    bits = rows["bits"]
    plen = rows["payload_len"].astype(np.int64)
    flags = rows["flags"]

    def total(mask_or_values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(mask_or_values.astype(np.int64), starts)

    retrans = (bits & ta.RETRANS_ANY) != 0
    rtt = rows["rtt"]
    rtt_n = total(rtt > 0)
    seq = rows["seq"].astype(np.int64)
    seq_end = seq + plen
    big = np.int64(1 << 40)

    def seq_range(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = np.minimum.reduceat(np.where(mask, seq, big), starts)
        hi = np.maximum.reduceat(np.where(mask, seq_end, -1), starts)
        has = total(mask) > 0
        return np.where(has, lo, 0), np.where(has, hi, 0)

    tx_lo, tx_hi = seq_range(tx)
    rx_lo, rx_hi = seq_range(rx)
    ts = rows["ts"]
    ends = np.r_[starts[1:], n] - 1
    return {
        "slot": slot[starts],
        "chunk_id": chunk[starts],
        "first": starts,
        "count": ends - starts + 1,
        "tx_packets": total(tx),
        "rx_packets": total(rx),
        "tx_bytes": total(np.where(tx, plen, 0)),
        "rx_bytes": total(np.where(rx, plen, 0)),
        "tx_retrans": total(tx & retrans),
        "rx_retrans": total(rx & retrans),
        "tcp_syn_retrans": total(retrans & ((flags & SYN) != 0)),
        "tx_rst": total(tx & ((flags & RST) != 0)),
        "rx_rst": total(rx & ((flags & RST) != 0)),
        "tx_zero_win": total(tx & ((bits & ta.A_ZERO_WIN) != 0)),
        "rx_zero_win": total(rx & ((bits & ta.A_ZERO_WIN) != 0)),
        "dup_ack": total((bits & ta.A_DUP_ACK) != 0),
        "out_of_order": total((bits & ta.A_OUT_OF_ORDER) != 0),
        "lost_segment": total((bits & ta.A_LOST_SEG) != 0),
        "syn_in_chunk": total((flags & SYN) != 0) > 0,
        "tcp_rtt": np.where(rtt_n > 0, total(rtt) // np.maximum(rtt_n, 1) // 1000, 0),
        "tx_seq_min": tx_lo,
        "tx_seq_max": tx_hi,
        "rx_seq_min": rx_lo,
        "rx_seq_max": rx_hi,
        "start_time": ts[starts],
        "end_time": ts[ends],
    }
