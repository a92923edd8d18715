"""Ring records -> PacketBatch columns (vectorized), and the NIC table they index."""

from __future__ import annotations

import threading

import numpy as np

from bpfnetlog.l4.flowkeys import group
from bpfnetlog.packets import Nic, PacketBatch


class NicTable:
    """Append-only list of NICs; (netns_id, ifindex) -> index of its latest entry. Thread-safe."""

    def __init__(self) -> None:
        self.nics: list[Nic] = []
        self._index: dict[int, int] = {}
        self._netns_id: dict[Nic, int] = {}
        self._known: tuple[np.ndarray, np.ndarray] | None = None  # known()'s answer until the next add
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
            self._known = None
            return self._index[key]

    def known(self) -> tuple[np.ndarray, np.ndarray]:
        """(the netns_id << 32 | ifindex keys, sorted; each one's NIC index): for the ring reader,
        which gives each record its NIC as it reads it (ringbuf.drain)."""
        with self._lock:
            if self._known is None:
                keys = sorted(self._index)
                self._known = np.array(keys, np.uint64), np.array([self._index[k] for k in keys], np.uint16)
            return self._known

    def indexes(self, netns_id: np.ndarray, ifindex: np.ndarray) -> np.ndarray:
        """NIC index per record; an unknown pair (a record from a NIC released since) gets a stub NIC."""
        return self.by_key(netns_id.astype(np.uint64) << np.uint64(32) | ifindex.astype(np.uint64))

    def by_key(self, keys: np.ndarray) -> np.ndarray:
        """NIC index per netns_id << 32 | ifindex key, as `indexes`."""
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


def to_batch(cols: dict[str, np.ndarray], src_ip: np.ndarray, dst_ip: np.ndarray, payload: np.ndarray,
             unknown: tuple[np.ndarray, np.ndarray], nics: NicTable, first_frame: int) -> PacketBatch:
    """One PacketBatch from the columns Rings.read filled: frame numbers added, and the NICs of the
    records whose NIC the reader did not know (`unknown`: row, key) resolved."""
    n = len(src_ip)
    cols["frame"] = np.arange(first_frame, first_frame + n, dtype=np.int64)
    rows, keys = unknown
    if len(rows):
        cols["nic"][rows] = nics.by_key(keys)
    return PacketBatch(cols=cols, src_ip=src_ip, dst_ip=dst_ip, data=payload, nics=nics.snapshot())
