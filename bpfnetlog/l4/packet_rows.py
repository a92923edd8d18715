"""The packet series of written chunks as an Arrow table (records.PACKET_FIELDS).

Built column by column, text as dictionaries (flag strings, analysis names,
conn_ids: store.columns), so a million packets cost a few numpy operations,
not a million Python dicts. Only the few packets that start an L7 message take a
Python step, to carry that message's id, method and path.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bpfnetlog.l4.flowkeys import group
from bpfnetlog.l4.tcp_analysis import ANALYSIS_NAMES
from bpfnetlog.packets import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG
from bpfnetlog.store.columns import dictionary


def _flag_text(flags: int) -> str:
    """tcpdump's notation: S, S., ., P., F., R, R. (ECE/CWR as E/W, URG as U)."""
    out = "".join(c for bit, c in ((SYN, "S"), (FIN, "F"), (PSH, "P"), (RST, "R"), (URG, "U"),
                                   (ECE, "E"), (CWR, "W")) if flags & bit)  # fmt: skip
    return out + ("." if flags & ACK else "")


# every value once (Parquet writes a dictionary with a repeated value as plain text); UDP: 0, ""
FLAG_TEXT = pa.array([_flag_text(i) for i in range(256)], pa.string())
_ANALYSIS_BITS = sorted(ANALYSIS_NAMES)


def _analysis_text(bits: int) -> str:
    return ",".join(ANALYSIS_NAMES[b] for b in _ANALYSIS_BITS if bits & b)


def packet_table(rows: dict[str, np.ndarray], groups: tuple[np.ndarray, np.ndarray], conns: dict, markers: dict,
                 host: str, fast_marks: dict[str, pa.Array] | None = None) -> pa.Table:  # fmt: skip
    """Rows in arrival order, from PendingPackets.take; `groups`: chunks.slot_groups of their
    slots (the caller has them already); `conns` maps slot -> Conn.

    L7 markers come from the Python engine (`markers`: (slot, side, seq) -> Marker) and from
    the compiled HTTP path (`fast_marks`: columns aligned with the rows, null where unmarked).
    """
    slot = rows["slot"]
    n = len(slot)
    uslots, inv = groups
    slot_conns = [conns[s] for s in uslots.tolist()]
    conn_ids = pa.array([c.conn_id for c in slot_conns], pa.string())
    nic_names = pa.array([c.nic.name for c in slot_conns], pa.string())
    src_side = np.array([c.src_side for c in slot_conns], np.int64)[inv]
    proto = np.array([c.proto for c in slot_conns], np.int64)[inv]
    bits_u, _, bits_inv = group(rows["bits"].astype(np.uint64))
    flags = np.where(proto == 6, rows["flags"], 0).astype(np.int32)

    names = ("l7_proto", "http_method", "http_path", "l7_id")  # Marker attributes, named as the columns
    at: list[int] = []  # rows the Python engine marked, and their markers
    found = []
    if markers:
        marked_slots = np.fromiter({k[0] for k in markers}, np.int64)
        payload = np.flatnonzero((rows["payload_len"] > 0) & np.isin(slot, marked_slots))
        for i, s, side, seq in zip(payload.tolist(), slot[payload].tolist(), rows["side"][payload].tolist(),
                                   rows["seq"][payload].tolist()):  # fmt: skip
            m = markers.pop((s, side, seq), None)
            if m is not None:
                at.append(i)
                found.append(m)
    # n rows, null except where marked: the few markers' values, taken
    if found:
        where = np.full(n, -1, np.int32)
        where[at] = np.arange(len(at), dtype=np.int32)
        take = pa.array(where, mask=where < 0)
        l7_cols = {name: pa.array([getattr(m, name) for m in found], pa.string()).take(take) for name in names}
    else:  # a bulk transfer's rows: no marker at all
        l7_cols = dict.fromkeys(names, pa.nulls(n, pa.string()))
    if fast_marks is not None:
        fast = fast_marks["l7_id"].is_valid()
        l7_cols["l7_proto"] = pc.if_else(fast, pa.scalar("http"), l7_cols["l7_proto"])
        for k in ("http_method", "http_path", "l7_id"):
            l7_cols[k] = pc.if_else(fast, fast_marks[k], l7_cols[k])

    return pa.table({
        "time": rows["ts"],
        "host": dictionary(np.zeros(n, np.int32), pa.array([host])),
        "nic_name": dictionary(inv, nic_names),
        "conn_id": dictionary(inv, conn_ids),
        "chunk_id": rows["chunk"].astype(np.int32, copy=False),
        "idx": rows["idx"].astype(np.int32, copy=False),
        "frame": rows["frame"],
        "txrx": dictionary((rows["side"] != src_side).astype(np.int32), pa.array(["tx", "rx"])),
        "flags": dictionary(flags, FLAG_TEXT),
        "seq": rows["seq"].astype(np.int64),
        "ack_seq": rows["ack"].astype(np.int64),
        "payload_size": rows["payload_len"].astype(np.int32),
        "win": rows["win"].astype(np.int32),
        "gso_segs": rows["gso_segs"].astype(np.int32),
        "analysis": dictionary(bits_inv.astype(np.int32), pa.array([_analysis_text(b) for b in bits_u.tolist()])),
        "rtt": rows["rtt"] // 1000,
        **l7_cols,
    })
