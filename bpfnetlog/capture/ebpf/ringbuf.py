"""BPF ring buffer consumer: mmap + one numba loop per batch, no per-packet Python.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (mapped
read-write), page 1 the producer position, then the data area mapped twice in
a row (read-only) so a record that wraps is still contiguous. Each record has
an 8-byte header: u32 length with BUSY/DISCARD bits, u32 page offset.
"""

from __future__ import annotations

import gc
import mmap
import select
import time

import numpy as np

from bpfnetlog.capture.ebpf.record import REC
from bpfnetlog.compiled import copy_bytes, entry, kernel
from bpfnetlog.packets import COLUMNS

BUSY, DISCARD = 1 << 31, 1 << 30
HDR = 8
MAX_RECORDS = 1 << 18  # per batch: bounds the memory of one drain
_O = {name: REC.fields[name][1] for name in REC.names}  # byte offset of each field in a record
O_TS, O_IFINDEX, O_NETNS, O_WIRE, O_PLEN, O_SEQ, O_ACK, O_SADDR, O_DADDR = (
    _O[f] for f in ("ts_ns", "ifindex", "netns_id", "wire_len", "payload_len", "seq", "ack", "saddr", "daddr"))
O_SPORT, O_DPORT, O_WIN, O_GSO, O_CAP, O_DIR, O_PROTO, O_IPV, O_FLAGS, O_WSCALE = (
    _O[f] for f in ("sport", "dport", "win", "gso_segs", "payload_cap", "direction", "proto", "ip_version", "flags",
                    "wscale"))  # fmt: skip
# the PacketBatch columns (packets.COLUMNS) `drain` fills: all but frame and nic, which convert.to_batch adds
RING_COLUMNS = ("ts", "direction", "wire_len", "ip_version", "proto", "sport", "dport", "flags", "seq", "ack", "win",
                "wscale", "payload_len", "payload_off", "payload_cap", "gso_segs")  # fmt: skip


@kernel(inline=True)
def _le(d, p: int, n: int) -> int:
    """The n-byte little-endian unsigned integer at d[p:]."""
    v = 0
    for j in range(n - 1, -1, -1):
        v = (v << 8) | d[p + j]
    return v


@entry
def _drain(data, mask, cons, prod, rec_size, ts_shift, ts, netns, ifindex, direction, wire_len, ip_version, proto,
           sport, dport, flags, seq, ack, win, wscale, payload_len, payload_off, payload_cap, gso_segs, src_ip, dst_ip,
           pay_out):  # fmt: skip
    """Records [cons, prod) straight into columns (one pass, no intermediate copy of the headers),
    their payloads into pay_out; stops at a busy record or when the columns are full.
    ts_shift: CLOCK_REALTIME - CLOCK_MONOTONIC (the kernel stamps monotonic time)."""
    n = 0
    poff = 0
    while cons < prod and n < len(ts):
        p = cons & mask
        ln = np.uint32(_le(data, p, 4))
        if ln & BUSY:
            break
        size = ln & ~np.uint32(BUSY | DISCARD)
        if not (ln & DISCARD) and size >= rec_size:
            b = p + HDR
            ts[n] = _le(data, b + O_TS, 8) + ts_shift
            netns[n], ifindex[n] = _le(data, b + O_NETNS, 4), _le(data, b + O_IFINDEX, 4)
            wire_len[n], payload_len[n] = _le(data, b + O_WIRE, 4), _le(data, b + O_PLEN, 4)
            seq[n], ack[n] = _le(data, b + O_SEQ, 4), _le(data, b + O_ACK, 4)
            sport[n], dport[n] = _le(data, b + O_SPORT, 2), _le(data, b + O_DPORT, 2)
            win[n], gso_segs[n] = _le(data, b + O_WIN, 2), _le(data, b + O_GSO, 2)
            direction[n], proto[n], ip_version[n] = data[b + O_DIR], data[b + O_PROTO], data[b + O_IPV]
            flags[n], wscale[n] = data[b + O_FLAGS], np.int8(data[b + O_WSCALE])
            for j in range(16):
                src_ip[n, j] = data[b + O_SADDR + j]
                dst_ip[n, j] = data[b + O_DADDR + j]
            cap = min(np.int64(_le(data, b + O_CAP, 2)), np.int64(size) - rec_size)
            copy_bytes(pay_out, poff, data, b + rec_size, cap)
            payload_cap[n] = cap
            payload_off[n] = poff
            poff += cap
            n += 1
        cons += (np.int64(size) + HDR + 7) & ~np.int64(7)
    return cons, n, poff


def drain(data: np.ndarray, mask: int, cons: int, prod: int,
          ts_shift: int) -> tuple[int, dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """(new consumer position, RING_COLUMNS + netns_id and ifindex, source and destination
    addresses (n, 16), payload bytes) of the records in [cons, prod); ts_shift as `_drain` takes it."""
    pending = prod - cons
    nmax = min(pending // (HDR + REC.itemsize), MAX_RECORDS)
    c = {name: np.empty(nmax, COLUMNS[name]) for name in RING_COLUMNS}
    c["netns_id"], c["ifindex"] = np.empty(nmax, np.uint32), np.empty(nmax, np.uint32)
    src, dst = np.empty((nmax, 16), np.uint8), np.empty((nmax, 16), np.uint8)
    pay = np.empty(pending, np.uint8)  # untouched pages cost no memory
    new_cons, n, used = _drain(data, mask, cons, prod, REC.itemsize, ts_shift, c["ts"], c["netns_id"], c["ifindex"],
                               c["direction"], c["wire_len"], c["ip_version"], c["proto"], c["sport"], c["dport"],
                               c["flags"], c["seq"], c["ack"], c["win"], c["wscale"], c["payload_len"],
                               c["payload_off"], c["payload_cap"], c["gso_segs"], src, dst, pay)  # fmt: skip
    return new_cons, {k: v[:n] for k, v in c.items()}, src[:n], dst[:n], pay[:used]


class RingReader:
    """Reads a BPF_MAP_TYPE_RINGBUF map by fd; `read()` drains it into batch columns (`drain`)."""

    def __init__(self, map_fd: int, size: int):
        page = mmap.PAGESIZE
        self._cons_mm = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod_mm = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._cons = np.frombuffer(self._cons_mm, np.uint64, 1)
        whole = np.frombuffer(self._prod_mm, np.uint8)
        self._prod = whole[:8].view(np.uint64)
        self._data = whole[page:]
        self._mask = size - 1
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    def pending(self) -> int:
        """Bytes written by the kernel and not yet consumed."""
        return int(self._prod[0]) - int(self._cons[0])

    def wait(self, timeout_s: float) -> bool:
        """Block until the kernel signals data (or timeout); True if something is pending."""
        if self.pending() > 0:
            return True
        self._epoll.poll(timeout_s)
        return self.pending() > 0

    def settle(self, min_bytes: int, max_s: float, step_s: float) -> None:
        """Sleep until `min_bytes` are pending or `max_s` passed: fewer, larger batches."""
        deadline = time.monotonic() + max_s
        while self.pending() < min_bytes and time.monotonic() < deadline:
            time.sleep(step_s)

    def read(self, ts_shift: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """`drain` of the pending records, and their space released."""
        new_cons, cols, src, dst, payload = drain(self._data, self._mask, int(self._cons[0]), int(self._prod[0]),
                                                  ts_shift)  # fmt: skip
        self._cons[0] = new_cons  # x86 does not move the loads above past this store
        return cols, src, dst, payload

    def close(self) -> None:
        self._epoll.close()
        del self._cons, self._prod, self._data
        gc.collect()  # views of the maps can sit in reference cycles; mmap.close() refuses then
        self._cons_mm.close()
        self._prod_mm.close()
