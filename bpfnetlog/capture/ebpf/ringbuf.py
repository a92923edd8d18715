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
from bpfnetlog.compiled import copy_bytes, entry

BUSY, DISCARD = 1 << 31, 1 << 30
HDR = 8
MAX_RECORDS = 1 << 18  # per batch: bounds the memory of one drain


@entry
def _drain(data, mask, cons, prod, rec_size, hdr_out, pay_out, pay_off):
    """Copy records [cons, prod) into hdr_out/pay_out; stop at a busy record or a full hdr_out."""
    n = 0
    poff = 0
    while cons < prod and n < hdr_out.shape[0]:
        p = cons & mask
        ln = np.uint32(data[p]) | (np.uint32(data[p + 1]) << 8) | (np.uint32(data[p + 2]) << 16) | (
            np.uint32(data[p + 3]) << 24
        )
        if ln & BUSY:
            break
        size = ln & ~np.uint32(BUSY | DISCARD)
        if not (ln & DISCARD) and size >= rec_size:
            body = p + HDR
            copy_bytes(hdr_out[n], 0, data, body, rec_size)
            cap = np.int64(hdr_out[n, 72]) | (np.int64(hdr_out[n, 73]) << 8)  # payload_cap
            cap = min(cap, np.int64(size) - rec_size)
            copy_bytes(pay_out, poff, data, body + rec_size, cap)
            pay_off[n] = poff
            poff += cap
            n += 1
        cons += (np.int64(size) + HDR + 7) & ~np.int64(7)
    return cons, n, poff


class RingReader:
    """Reads a BPF_MAP_TYPE_RINGBUF map by fd; `read()` returns header records and payload bytes."""

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

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(records as REC array, payload buffer, payload offset per record) and release the space."""
        cons, prod = int(self._cons[0]), int(self._prod[0])
        pending = prod - cons
        nmax = min(pending // (HDR + REC.itemsize), MAX_RECORDS)
        hdr = np.empty((nmax, REC.itemsize), np.uint8)
        pay = np.empty(pending, np.uint8)  # untouched pages cost no memory
        pay_off = np.empty(nmax, np.int64)
        new_cons, n, used = _drain(self._data, self._mask, cons, prod, REC.itemsize, hdr, pay, pay_off)
        self._cons[0] = new_cons  # x86 does not move the loads above past this store
        return hdr[:n].view(REC)[:, 0], pay[:used], pay_off[:n]

    def close(self) -> None:
        self._epoll.close()
        del self._cons, self._prod, self._data
        gc.collect()  # views of the maps can sit in reference cycles; mmap.close() refuses then
        self._cons_mm.close()
        self._prod_mm.close()
