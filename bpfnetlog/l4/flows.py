"""The flow table: slots of per-connection state, and the batch entry point of L4.

Python keeps only what is per flow (a dict from key hash to slot, the
conn_id strings); everything per packet happens in `tcp_analysis` under
numba. Slots are reused through a free list once a connection is finished
and written, so a long capture keeps a bounded table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bpfnetlog.l4 import tcp_analysis as ta
from bpfnetlog.l4.flowkeys import batch_keys, differs, group
from bpfnetlog.packets import PacketBatch

CHUNK_MAX_PACKETS = 256


@dataclass
class Analyzed:
    """Per-packet output of L4 for one batch (all arrays of the batch's length)."""

    slot: np.ndarray  # int32 flow slot (after port-reuse splits)
    side: np.ndarray  # uint8, 0 = sent by endpoint A of the slot's key
    chunk: np.ndarray  # int32 chunk number within the connection
    idx: np.ndarray  # int32 packet number within the connection
    bits: np.ndarray  # uint16 analysis bits (tcp_analysis.A_*)
    rtt: np.ndarray  # int64 ns, RTT sample carried by this ACK, 0 if none


class FlowTable:
    """All connections currently tracked, across batches, for one source."""

    def __init__(self, chunk_max_packets: int = CHUNK_MAX_PACKETS, chunk_max_ns: int = 60_000_000_000,
                 capacity: int = 4096) -> None:  # fmt: skip
        self.chunk_max_packets = chunk_max_packets
        self.chunk_max_ns = chunk_max_ns
        self.fl, self.sd, self.hist = ta.new_state(capacity)
        self.keys = np.zeros((capacity, 5), np.uint64)  # BatchKeys.words of each slot
        self.slot_hash = np.zeros(capacity, np.uint64)
        self.by_hash: dict[int, int] = {}
        self.free: list[int] = list(range(capacity - 1, -1, -1))
        self.hash_collisions = 0

    @property
    def capacity(self) -> int:
        return len(self.fl)

    def _grow(self, need: int) -> None:
        old = self.capacity
        new = max(old * 2, old + need)
        fl, sd, hist = ta.new_state(new)
        fl[:old], sd[:old], hist[:old] = self.fl, self.sd, self.hist
        self.fl, self.sd, self.hist = fl, sd, hist
        self.keys = np.concatenate([self.keys, np.zeros((new - old, 5), np.uint64)])
        self.slot_hash = np.concatenate([self.slot_hash, np.zeros(new - old, np.uint64)])
        self.free = list(range(new - 1, old - 1, -1)) + self.free

    def _take_slot(self) -> int:
        if not self.free:
            self._grow(1)
        return self.free.pop()

    def analyze(self, batch: PacketBatch) -> tuple[Analyzed, np.ndarray]:
        """Run L4 over a batch; returns the per-packet output and the slots created by it."""
        n = len(batch)
        k = batch_keys(batch.nic, batch.proto, batch.src_ip, batch.dst_ip, batch.sport, batch.dport)
        uniq, first, inverse = group(k.hashes)
        uslots = np.empty(len(uniq), np.int64)
        created: list[int] = []
        for j, h in enumerate(uniq.tolist()):
            slot = self.by_hash.get(h)
            if slot is None:
                slot = self._take_slot()
                self.by_hash[h] = slot
                self.slot_hash[slot] = h
                self.keys[slot] = k.words[first[j]]
                created.append(slot)
            uslots[j] = slot
        slot_in = uslots[inverse]
        # detect (never merge) 64-bit hash collisions
        mismatch = differs(self.keys, slot_in, k.words)
        self.hash_collisions += int(mismatch.sum())
        side = k.side
        out = Analyzed(
            slot=np.zeros(n, np.int32), side=side, chunk=np.zeros(n, np.int32), idx=np.zeros(n, np.int32),
            bits=np.zeros(n, np.uint16), rtt=np.zeros(n, np.int64),
        )
        slot_in[mismatch] = -1  # counted; never attributed to the wrong flow
        # spare slots for new connections on reused 5-tuples (a SYN is needed for that)
        syns = int(np.count_nonzero((batch.flags & 0x12) == 0x02))
        cols = batch.cols
        start = 0
        while start < n:
            if len(self.free) < syns + 1:
                self._grow(syns + 1)
            spare = np.array(self.free[::-1][: syns + 1], np.int64)
            start, top = ta.analyze_batch(
                slot_in, side, cols["ts"], cols["proto"], cols["flags"], cols["seq"], cols["ack"], cols["win"],
                cols["wscale"], cols["payload_len"], self.fl, self.sd, self.hist, self.keys, spare, 0, start,
                self.chunk_max_packets, self.chunk_max_ns, out.slot, out.chunk, out.idx, out.bits, out.rtt,
            )  # fmt: skip
            if top:
                del self.free[len(self.free) - top :]
            for slot in spare[:top].tolist():
                self.slot_hash[slot] = self.slot_hash[np.flatnonzero(self.fl[:, ta.F_NEXT] == slot)[0]]
                self.by_hash[int(self.slot_hash[slot])] = slot
                created.append(slot)
        return out, np.array(created, np.int64)

    def finished(self, now: int, idle_tcp_ns: int, idle_udp_ns: int, linger_ns: int) -> np.ndarray:
        """Slots whose connection is over: closed and lingered, superseded by a new one, or idle."""
        fl = self.fl
        used = fl[:, ta.F_USED] != 0
        closed = (fl[:, ta.F_CLOSED] != 0) & (now - fl[:, ta.F_CLOSE_TS] > linger_ns)
        superseded = fl[:, ta.F_NEXT] >= 0
        idle_limit = np.where(fl[:, ta.F_PROTO] == 6, idle_tcp_ns, idle_udp_ns)
        idle = now - fl[:, ta.F_LAST_TS] > idle_limit
        return np.flatnonzero(used & (closed | superseded | idle))

    def used_slots(self) -> np.ndarray:
        return np.flatnonzero(self.fl[:, ta.F_USED] != 0)

    def release(self, slots: np.ndarray) -> None:
        """Forget finished connections (after they were written) and recycle their slots."""
        for slot in slots.tolist():
            h = int(self.slot_hash[slot])
            if self.by_hash.get(h) == slot:
                del self.by_hash[h]
        # a slot that pointed to its successor no longer does
        self.fl[np.isin(self.fl[:, ta.F_NEXT], slots), ta.F_NEXT] = -1
        ta.reset_slots(self.fl, self.sd, self.hist, slots)
        self.free.extend(slots.tolist())
