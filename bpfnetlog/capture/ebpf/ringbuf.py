"""BPF ring buffer consumer: the per-CPU rings mmapped, merged in time order by two compiled
loops per ring and batch, no per-packet Python.

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

from bpfnetlog.capture.ebpf.record import REC, REC4
from bpfnetlog.compiled import copy_bytes, entry, kernel
from bpfnetlog.packets import COLUMNS

BUSY, DISCARD = 1 << 31, 1 << 30
HDR = 8
MAX_RECORDS = 1 << 18  # per batch, over all rings: bounds the memory of one drain
MIN_RECORDS = 1 << 14  # per ring and batch, however many rings
_O = {name: REC.fields[name][1] for name in REC.names}  # byte offset of each field in a record
# Records start 8-byte aligned and every field is aligned to its size (addresses to 8): the
# kernels read whole words from u16/u32/u64 views of the ring (byte by byte took 50 ns a record).
assert all(_O[f] % min(REC.fields[f][0].itemsize, 8) == 0 for f in REC.names) and _O["saddr"] % 8 == _O["daddr"] % 8 == 0
O_TS, O_IFINDEX, O_NETNS, O_WIRE, O_PLEN, O_SEQ, O_ACK, O_SADDR, O_DADDR = (
    _O[f] for f in ("ts_ns", "ifindex", "netns_id", "wire_len", "payload_len", "seq", "ack", "saddr", "daddr"))
O_SPORT, O_DPORT, O_WIN, O_GSO, O_CAP, O_DIR, O_PROTO, O_IPV, O_FLAGS, O_WSCALE = (
    _O[f] for f in ("sport", "dport", "win", "gso_segs", "payload_cap", "direction", "proto", "ip_version", "flags",
                    "wscale"))  # fmt: skip
# IPv4 records (REC4) end after their 4-byte addresses; IPv6 records are a whole REC
O_SADDR4, O_DADDR4, REC4_SIZE, REC6_SIZE = REC4.fields["saddr"][1], REC4.fields["daddr"][1], REC4.itemsize, REC.itemsize
assert O_SADDR4 % 4 == O_DADDR4 % 4 == O_IPV % 4 == 0
V4_MAPPED = np.uint64(0xFFFF0000)  # bytes 8..11 of ::ffff:a.b.c.d, as the little-endian u64 of bytes 8..15
NO_NIC = 0xFFFF  # nic of a record whose NIC the reader was not told of
NO_NICS = (np.zeros(0, np.uint64), np.zeros(0, np.uint16))  # drain() told of no NIC
# the PacketBatch columns (packets.COLUMNS) `drain` fills: all but frame, which convert.to_batch adds
RING_COLUMNS = ("ts", "nic", "direction", "wire_len", "ip_version", "proto", "sport", "dport", "flags", "seq", "ack",
                "win", "wscale", "payload_len", "payload_off", "payload_cap", "gso_segs")  # fmt: skip


@kernel(inline=True)
def _head_size(d32, body):  # type: ignore[no-untyped-def]
    """Header bytes of the record whose body starts at `body` (at least REC4_SIZE long): its
    ip_version says which layout it has, REC4 (IPv4) or REC (IPv6)."""
    return np.int64(REC4_SIZE) if d32[(body + O_IPV) >> 2] & 0xFF == 4 else np.int64(REC6_SIZE)


@kernel(inline=True)
def _record(d32, mask, cons):  # type: ignore[no-untyped-def]
    """The record at position `cons`: (byte offset of its body in the data area, or -1 for one
    to skip (discarded, or shorter than its layout), -2 for one the kernel is still writing; its
    length; the position of the next record)."""
    p = cons & mask
    ln = np.uint32(d32[p >> 2])
    size = np.int64(ln & ~np.uint32(BUSY | DISCARD))
    after = cons + ((size + HDR + 7) & ~np.int64(7))
    if ln & BUSY:
        return np.int64(-2), size, after
    if (ln & DISCARD) or size < REC4_SIZE or size < _head_size(d32, p + HDR):
        return np.int64(-1), size, after
    return np.int64(p + HDR), size, after


@entry
def _stamps(d32, d64, mask, cons, prod, ts, ends):  # type: ignore[no-untyped-def]
    """Times of the records in [cons, prod), up to len(ts) of them, and the position after each
    (ends); stops at a busy record. Returns (position after the last record walked, count):
    `_drain` then walks the same ones."""
    n = 0
    while cons < prod and n < len(ts):
        b, _, after = _record(d32, mask, cons)
        if b == -2:
            break
        cons = after
        if b >= 0:
            ts[n] = d64[(b + O_TS) >> 3]
            ends[n] = cons
            n += 1
    return cons, n


@entry
def _drain(data, d16, d32, d64, mask, cons, stop, ts_shift, dest, poff, nic_keys, nic_idx, unk_rows, unk_keys,
           nunknown, ts, nic, direction, wire_len, ip_version, proto, sport, dport, flags, seq, ack, win, wscale,
           payload_len, payload_off, payload_cap, gso_segs, src_ip, dst_ip, pay_out):  # fmt: skip
    """The records `_stamps` walked in [cons, stop) straight into columns, the k-th at row dest[k]
    (rows of several rings interleave in time order); payloads into pay_out from `poff` on.
    `data` and its u16/u32/u64 views are the ring's data area; src_ip/dst_ip are (n, 2) u64,
    IPv4 addresses as ::ffff:a.b.c.d. ts_shift: CLOCK_REALTIME - CLOCK_MONOTONIC (the kernel
    stamps monotonic time). A record's nic is that of its (netns_id << 32 | ifindex) in the
    sorted `nic_keys` (`nic_idx` alongside), else NO_NIC, its row and key into unk_rows/unk_keys
    from `nunknown` on.
    Returns (where the payloads end, unknowns now)."""
    k = 0
    last_key, last_nic = np.uint64(0), np.uint16(NO_NIC)  # runs of one NIC's records: no search
    while cons < stop:
        b, size, after = _record(d32, mask, cons)
        if b >= 0:
            n = dest[k]
            ts[n] = d64[(b + O_TS) >> 3] + ts_shift
            key = np.uint64(d32[(b + O_NETNS) >> 2]) << np.uint64(32) | np.uint64(d32[(b + O_IFINDEX) >> 2])
            if key != last_key or k == 0:
                j = np.searchsorted(nic_keys, key)
                last_key = key
                last_nic = nic_idx[j] if j < len(nic_keys) and nic_keys[j] == key else np.uint16(NO_NIC)
            nic[n] = last_nic
            if last_nic == NO_NIC:
                unk_rows[nunknown], unk_keys[nunknown] = n, key
                nunknown += 1
            wire_len[n], payload_len[n] = d32[(b + O_WIRE) >> 2], d32[(b + O_PLEN) >> 2]
            seq[n], ack[n] = d32[(b + O_SEQ) >> 2], d32[(b + O_ACK) >> 2]
            sport[n], dport[n] = d16[(b + O_SPORT) >> 1], d16[(b + O_DPORT) >> 1]
            win[n], gso_segs[n] = d16[(b + O_WIN) >> 1], d16[(b + O_GSO) >> 1]
            direction[n], proto[n], ip_version[n] = data[b + O_DIR], data[b + O_PROTO], data[b + O_IPV]
            flags[n], wscale[n] = data[b + O_FLAGS], np.int8(data[b + O_WSCALE])
            head = _head_size(d32, b)
            if head == REC4_SIZE:
                src_ip[n, 0], dst_ip[n, 0] = 0, 0
                src_ip[n, 1] = np.uint64(d32[(b + O_SADDR4) >> 2]) << np.uint64(32) | V4_MAPPED
                dst_ip[n, 1] = np.uint64(d32[(b + O_DADDR4) >> 2]) << np.uint64(32) | V4_MAPPED
            else:
                src_ip[n, 0], src_ip[n, 1] = d64[(b + O_SADDR) >> 3], d64[(b + O_SADDR + 8) >> 3]
                dst_ip[n, 0], dst_ip[n, 1] = d64[(b + O_DADDR) >> 3], d64[(b + O_DADDR + 8) >> 3]
            cap = min(np.int64(d16[(b + O_CAP) >> 1]), size - head)
            copy_bytes(pay_out, poff, data, b + head, cap)
            payload_cap[n] = cap
            payload_off[n] = poff
            poff += cap
            k += 1
        cons = after
    return poff, nunknown


class RingReader:
    """The mmaps of one BPF_MAP_TYPE_RINGBUF map, by fd."""

    def __init__(self, map_fd: int, size: int):
        page = mmap.PAGESIZE
        self._cons_mm = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod_mm = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._cons = np.frombuffer(self._cons_mm, np.uint64, 1)
        whole = np.frombuffer(self._prod_mm, np.uint8)
        self._prod = whole[:8].view(np.uint64)
        self.data = whole[page:]
        self.mask = size - 1

    @property
    def cons(self) -> int:
        return int(self._cons[0])

    @property
    def prod(self) -> int:
        return int(self._prod[0])

    def release(self, cons: int) -> None:
        """Give the space before `cons` back to the kernel."""
        self._cons[0] = cons  # x86 does not move the loads above past this store

    def close(self) -> None:
        del self._cons, self._prod, self.data
        gc.collect()  # views of the maps can sit in reference cycles; mmap.close() refuses then
        self._cons_mm.close()
        self._prod_mm.close()


Unknown = tuple[np.ndarray, np.ndarray]  # rows of records whose NIC drain() was not told of, their keys


def drain(rings: list[RingReader], ts_shift: int, nics: tuple[np.ndarray, np.ndarray] = NO_NICS) -> tuple[
        list[int], dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, Unknown]:  # fmt: skip
    """(each ring's new consumer position, RING_COLUMNS, source and destination addresses (n, 16),
    payload bytes, unknown NICs) of the records pending in `rings`, in time order.

    `nics`: NicTable.known(), the NICs the reader knows (sorted netns_id << 32 | ifindex keys, their
    indexes): a record's `nic` column is its NIC's index, or NO_NIC for the rows listed in
    `unknown` (rows, their keys), for the caller to resolve.

    Every producer position is read first, so a record that comes later on one ring cannot
    precede (in the batch) one from an earlier moment on another; a ring holding more than a
    batch's share cuts the others at its last time, for the same reason. `_stamps` takes each
    ring's times (they only grow within a ring: one CPU), a stable sort of all of them gives
    every record its row, `_drain` writes it there: one merge, no second copy of the columns."""
    prods = [r.prod for r in rings]
    cap = max(MAX_RECORDS // len(rings), MIN_RECORDS)
    stamps, ends, stops, full = [], [], [], []
    for r, prod in zip(rings, prods):
        ts, end = np.empty((2, min((prod - r.cons) // (HDR + REC4_SIZE), cap)), np.int64)
        stop, n = _stamps(r.data.view(np.uint32), r.data.view(np.uint64), r.mask, r.cons, prod, ts, end)
        stamps.append(ts[:n])
        ends.append(end[:n])
        stops.append(stop)
        full.append(n == cap)
    if any(full):  # a ring with more than a batch: the others stop at its last time, or what
        cut = min(t[-1] for t, f in zip(stamps, full) if f)  # it still holds would come after them
        for i, t in enumerate(stamps):
            k = int(np.searchsorted(t, cut, side="right"))  # a ring's times only grow
            if k < len(t):
                stamps[i], stops[i] = t[:k], int(ends[i][k - 1]) if k else rings[i].cons
    counts = [len(t) for t in stamps]
    total = sum(counts)
    if sum(c > 0 for c in counts) > 1:
        dest = np.empty(total, np.int64)
        dest[np.argsort(np.concatenate(stamps), kind="stable")] = np.arange(total)
    else:  # one ring has it all: its order is time order
        dest = np.arange(total, dtype=np.int64)
    c = {name: np.empty(total, COLUMNS[name]) for name in RING_COLUMNS}
    unk_rows, unk_keys = np.empty(total, np.int64), np.empty(total, np.uint64)
    src, dst = np.empty((total, 16), np.uint8), np.empty((total, 16), np.uint8)
    pay = np.empty(sum(stop - r.cons for r, stop in zip(rings, stops)), np.uint8)  # untouched pages cost no memory
    used, first, nunknown = 0, 0, 0
    for r, stop, n in zip(rings, stops, counts):
        if n:
            d = r.data
            used, nunknown = _drain(
                d, d.view(np.uint16), d.view(np.uint32), d.view(np.uint64), r.mask, r.cons, stop, ts_shift,
                dest[first : first + n], used, nics[0], nics[1], unk_rows, unk_keys, nunknown, c["ts"], c["nic"],
                c["direction"], c["wire_len"], c["ip_version"], c["proto"], c["sport"], c["dport"], c["flags"],
                c["seq"], c["ack"], c["win"], c["wscale"], c["payload_len"], c["payload_off"], c["payload_cap"],
                c["gso_segs"], src.view(np.uint64), dst.view(np.uint64), pay)  # fmt: skip
        first += n
    return stops, c, src, dst, pay[:used], (unk_rows[:nunknown], unk_keys[:nunknown])


class Rings:
    """The per-CPU rings of the programs, read as one: `read()` drains them into batch columns."""

    def __init__(self, map_fds: list[int], size: int):
        self._rings = [RingReader(fd, size) for fd in map_fds]
        self._size = size
        self._epoll = select.epoll()
        for fd in map_fds:
            self._epoll.register(fd, select.EPOLLIN)

    def pending(self) -> int:
        """Bytes written by the kernel and not yet consumed, over all rings."""
        return sum(r.prod - r.cons for r in self._rings)

    def fullest(self) -> int:
        """Pending bytes of the fullest ring (the one that overflows first)."""
        return max(r.prod - r.cons for r in self._rings)

    def wait(self, timeout_s: float) -> bool:
        """Block until the kernel signals data (or timeout); True if something is pending."""
        if self.pending() > 0:
            return True
        self._epoll.poll(timeout_s)
        return self.pending() > 0

    def settle(self, min_bytes: int, max_s: float, max_rate: float) -> None:
        """Sleep until one ring holds `min_bytes` or `max_s` passed: fewer, larger batches.

        A wakeup costs ~0.1 ms of CPU on a busy host (a fixed 10 ms step was 40% of the reader
        thread's CPU under iperf3), so it sleeps as long as the fullest ring's fill rate says
        reaching `min_bytes` takes, but never longer than half the time a ring takes to fill
        from there at `max_rate` bytes/s: a burst during the sleep cannot overflow it."""
        now = time.monotonic()
        deadline, longest = now + max_s, (self._size - min_bytes) / max_rate / 2
        then, was = now, self.fullest()
        nap = longest  # no rate known yet
        while was < min_bytes and now < deadline:
            time.sleep(max(min(nap, longest, deadline - now), 0.001))
            now, full = time.monotonic(), self.fullest()
            rate = (full - was) / (now - then)
            nap = (min_bytes - full) / rate if rate > 0 else longest
            then, was = now, full

    def read(self, ts_shift: int, nics: tuple[np.ndarray, np.ndarray]) -> tuple[
            dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, Unknown]:  # fmt: skip
        """`drain` of the pending records, and their space released."""
        stops, cols, src, dst, payload, unknown = drain(self._rings, ts_shift, nics)
        for r, stop in zip(self._rings, stops):
            r.release(stop)
        return cols, src, dst, payload, unknown

    def close(self) -> None:
        self._epoll.close()
        for r in self._rings:
            r.close()
