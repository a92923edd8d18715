"""Packets waiting for their chunk to close, and the per-chunk sums of L4 records.

A chunk (at most 256 packets of one connection) is written when it is full,
when its connection ends, or at a periodic flush. Until then its packets sit
here as columns, so an L7 message that starts in them can still mark them.
Per-chunk counters are numpy group sums over these columns, not Python loops.
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
        """Remove and return the rows where `mask` is true, sorted by (slot, chunk, idx)."""
        c = self.cols
        if not c:
            return {}
        rows = np.flatnonzero(mask)
        order = rows[_order(c["slot"][rows], c["chunk"][rows], c["idx"][rows])]
        out = {k: v[order] for k, v in c.items()}
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


# Rows of chunk_sums' output matrix (one column per chunk), in the order the kernel fills them.
_SUMS = ("tx_packets", "rx_packets", "tx_bytes", "rx_bytes", "tx_retrans", "rx_retrans", "tcp_syn_retrans",
         "tx_rst", "rx_rst", "tx_zero_win", "rx_zero_win", "dup_ack", "out_of_order", "lost_segment",
         "syn_in_chunk", "rtt_sum", "rtt_n", "tx_seq_min", "tx_seq_max", "rx_seq_min", "rx_seq_max")  # fmt: skip
_RETRANS_ANY, _ZERO_WIN, _DUP_ACK = ta.RETRANS_ANY, ta.A_ZERO_WIN, ta.A_DUP_ACK
_OUT_OF_ORDER, _LOST_SEG = ta.A_OUT_OF_ORDER, ta.A_LOST_SEG


@entry
def _chunk_sums(starts, slot, side, src_side, bits, plen, flags, rtt, seq, out):  # type: ignore[no-untyped-def]
    """Fill out[:, c] with the sums of chunk c (rows starts[c] .. starts[c+1]-1): one pass over
    the rows instead of a numpy pass per counter. Sequence ranges are 0 where a side sent nothing."""
    m, n = len(starts), len(slot)
    for c in range(m):
        for k in range(out.shape[0]):
            out[k, c] = 0
        tx_lo, tx_hi, rx_lo, rx_hi = 1 << 40, -1, 1 << 40, -1
        end = starts[c + 1] if c + 1 < m else n
        for i in range(starts[c], end):
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
            if tx:
                tx_lo, tx_hi = min(tx_lo, lo), max(tx_hi, lo + p)
            else:
                rx_lo, rx_hi = min(rx_lo, lo), max(rx_hi, lo + p)
            out[6, c] += retrans and (f & SYN) != 0
            out[11, c] += (b & _DUP_ACK) != 0
            out[12, c] += (b & _OUT_OF_ORDER) != 0
            out[13, c] += (b & _LOST_SEG) != 0
            if (f & SYN) != 0:
                out[14, c] = 1
            if rtt[i] > 0:
                out[15, c] += rtt[i]
                out[16, c] += 1
        if tx_hi >= 0:
            out[17, c], out[18, c] = tx_lo, tx_hi
        if rx_hi >= 0:
            out[19, c], out[20, c] = rx_lo, rx_hi


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
    out = np.empty((len(_SUMS), len(starts)), np.int64)
    as_ = lambda name, dt: rows[name].astype(dt, copy=False)  # noqa: E731 - one compiled signature
    _chunk_sums(starts, as_("slot", np.int32), as_("side", np.uint8), src_side.astype(np.int64, copy=False),
                as_("bits", np.uint16), as_("payload_len", np.uint32), as_("flags", np.uint8), as_("rtt", np.int64),
                as_("seq", np.uint32), out)  # fmt: skip
    sums = dict(zip(_SUMS, out))
    rtt_sum, rtt_n = sums.pop("rtt_sum"), sums.pop("rtt_n")
    sums["syn_in_chunk"] = sums["syn_in_chunk"] > 0
    sums["tcp_rtt"] = np.where(rtt_n > 0, rtt_sum // np.maximum(rtt_n, 1) // 1000, 0)
    ts = rows["ts"]
    ends = np.r_[starts[1:], n] - 1
    return {"slot": slot[starts], "chunk_id": chunk[starts], "first": starts, "count": ends - starts + 1, **sums,
            "start_time": ts[starts], "end_time": ts[ends]}  # fmt: skip
