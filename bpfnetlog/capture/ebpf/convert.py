"""Ring records -> PacketBatch columns (vectorized), and the NIC table they index."""

from __future__ import annotations

import threading
import time

import numpy as np

from bpfnetlog.l4.flowkeys import group
from bpfnetlog.packets import COLUMNS, Nic, PacketBatch


class NicTable:
    """Append-only list of NICs; (netns_id, ifindex) -> index of its latest entry. Thread-safe."""

    def __init__(self) -> None:
        self.nics: list[Nic] = []
        self._index: dict[int, int] = {}
        self._netns_id: dict[Nic, int] = {}
        self._lock = threading.Lock()

    def add(self, netns_id: int, nic: Nic) -> int:
        with self._lock:
            key = netns_id << 32 | nic.ifindex
            cur = self._index.get(key)
            if cur is not None and self.nics[cur] == nic:
                return cur
            self.nics.append(nic)
            self._index[key] = len(self.nics) - 1
            self._netns_id[nic] = netns_id
            return self._index[key]

    def indexes(self, netns_id: np.ndarray, ifindex: np.ndarray) -> np.ndarray:
        """NIC index per record; an unknown pair (a record from a NIC released since) gets a stub NIC."""
        keys = netns_id.astype(np.uint64) << np.uint64(32) | ifindex.astype(np.uint64)
        uniq, _, inv = group(keys)  # a hash pass, not np.unique's sort
        idx = np.empty(len(uniq), np.uint16)
        for i, k in enumerate(uniq.tolist()):
            with self._lock:
                j = self._index.get(k)
            if j is None:
                j = self.add(k >> 32, Nic(name=f"if{k & 0xFFFFFFFF}", ifindex=k & 0xFFFFFFFF))
            idx[i] = j
        return idx[inv]

    def netns_id(self, nic: Nic) -> int | None:
        """The loader's namespace id of a NIC this table gave out (None: not one of ours)."""
        with self._lock:
            return self._netns_id.get(nic)

    def snapshot(self) -> list[Nic]:
        with self._lock:
            return list(self.nics)


def to_batch(recs: np.ndarray, payload: np.ndarray, pay_off: np.ndarray, nics: NicTable,
             first_frame: int) -> PacketBatch:
    """One PacketBatch from ring records; kernel monotonic times become wall-clock ns."""
    n = len(recs)
    mono_to_wall = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    cols = {
        "ts": recs["ts_ns"].astype(np.int64) + mono_to_wall,
        "frame": np.arange(first_frame, first_frame + n, dtype=np.int64),
        "nic": nics.indexes(recs["netns_id"], recs["ifindex"]),
        "payload_off": pay_off,
    }
    for name in ("direction", "wire_len", "ip_version", "proto", "sport", "dport", "flags", "seq", "ack", "win",
                 "wscale", "payload_len", "payload_cap", "gso_segs"):
        cols[name] = recs[name].astype(COLUMNS[name])
    return PacketBatch(cols=cols, src_ip=recs["saddr"].copy(), dst_ip=recs["daddr"].copy(), data=payload,
                       nics=nics.snapshot())
