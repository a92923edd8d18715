"""Which connection each packet belongs to, computed for a whole batch at once.

A connection on a NIC is (nic, proto, endpoint A, endpoint B) with A the
smaller endpoint, so both directions map to one key and `side` says which
endpoint sent the packet (0: A, 1: B). Keys are hashed to 64 bits so that
grouping a batch is one hash-table pass over integers (`group`); the full key
is kept per flow and compared afterwards (`differs`), so a hash collision is
detected and counted, never silently merged. Compiled with numba: one pass
per batch for each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bpfnetlog.compiled import entry, kernel

_M1 = 0x9E3779B97F4A7C15
_M2 = 0xBF58476D1CE4E5B9
_M3 = 0x94D049BB133111EB


@kernel(inline=True)
def _mix(h: np.uint64, w: np.uint64) -> np.uint64:
    """splitmix64-style combine: cheap and well spread."""
    h = (h ^ w) * np.uint64(_M2)
    h ^= h >> np.uint64(31)
    h *= np.uint64(_M3)
    h ^= h >> np.uint64(29)
    return h


@kernel(inline=True)
def _ip_words(ip, i: int) -> tuple[np.uint64, np.uint64]:
    """The 16 address bytes of row i as two big-endian words (so word order = address order)."""
    hi = np.uint64(0)
    lo = np.uint64(0)
    for j in range(8):
        hi = (hi << np.uint64(8)) | np.uint64(ip[i, j])
        lo = (lo << np.uint64(8)) | np.uint64(ip[i, 8 + j])
    return hi, lo


@kernel(inline=True)
def _same_ips(a, i: int, b, j: int) -> bool:
    """Row i of `a` equals row j of `b` ((n, 2) u64 views of 16-byte addresses)."""
    return a[i, 0] == b[j, 0] and a[i, 1] == b[j, 1]


@entry
def _keys(nic, proto, src_ip, dst_ip, src64, dst64, sport, dport, words, hashes, side) -> None:
    """Each packet's key, hash and side. A packet of the previous packet's flow, either way
    (bulk transfers come as runs of one flow), takes its key instead of computing it."""
    for i in range(len(nic)):
        if i > 0 and nic[i] == nic[i - 1] and proto[i] == proto[i - 1]:
            if sport[i] == sport[i - 1] and dport[i] == dport[i - 1] and _same_ips(src64, i, src64, i - 1) \
                    and _same_ips(dst64, i, dst64, i - 1):
                flip = 0
            elif sport[i] == dport[i - 1] and dport[i] == sport[i - 1] and _same_ips(src64, i, dst64, i - 1) \
                    and _same_ips(dst64, i, src64, i - 1):
                flip = 1
            else:
                flip = -1
            if flip >= 0:
                for j in range(5):
                    words[i, j] = words[i - 1, j]
                hashes[i] = hashes[i - 1]
                side[i] = side[i - 1] ^ flip
                continue
        s0, s1 = _ip_words(src_ip, i)
        d0, d1 = _ip_words(dst_ip, i)
        sp, dp = np.uint64(sport[i]), np.uint64(dport[i])
        src_first = s0 < d0 or (s0 == d0 and (s1 < d1 or (s1 == d1 and sp <= dp)))
        if src_first:
            a0, a1, b0, b1, pa_, pb = s0, s1, d0, d1, sp, dp
        else:
            a0, a1, b0, b1, pa_, pb = d0, d1, s0, s1, dp, sp
        meta = (np.uint64(nic[i]) << np.uint64(40)) | (np.uint64(proto[i]) << np.uint64(32)) | (pa_ << np.uint64(16)) | pb
        words[i, 0], words[i, 1], words[i, 2], words[i, 3], words[i, 4] = a0, a1, b0, b1, meta
        h = np.uint64(_M1)
        h = _mix(h, a0)
        h = _mix(h, a1)
        h = _mix(h, b0)
        h = _mix(h, b1)
        hashes[i] = _mix(h, meta)
        side[i] = 0 if src_first else 1


def group(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct hashes in order of first appearance, index of each one's first packet, each
    packet's position in the first array): np.unique's answer without its sort."""
    n = len(hashes)
    size = 16
    while size < 2 * n:
        size *= 2
    uniq, first, inverse = np.empty(n, np.uint64), np.empty(n, np.int64), np.empty(n, np.int64)
    k = _group(hashes, np.full(size, -1, np.int64), uniq, first, inverse)
    return uniq[:k], first[:k], inverse


@entry
def _group(hashes, table, uniq, first, inverse) -> int:
    """Open addressing over `table` (a power of two, > 2n, all -1); how many distinct."""
    mask = len(table) - 1
    k = 0
    for i in range(len(hashes)):
        h = hashes[i]
        j = np.int64(h & np.uint64(mask))
        while True:
            u = table[j]
            if u < 0:
                table[j] = k
                uniq[k] = h
                first[k] = i
                inverse[i] = k
                k += 1
                break
            if uniq[u] == h:
                inverse[i] = u
                break
            j = (j + 1) & mask
    return k


def differs(keys: np.ndarray, slots: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Per packet: its flow slot holds another key (a 64-bit hash collision)."""
    out = np.zeros(len(slots), np.bool_)
    _differs(keys, slots, words, out)
    return out


@entry
def _differs(keys, slots, words, out) -> None:
    for i in range(len(slots)):
        for j in range(5):
            if keys[slots[i], j] != words[i, j]:
                out[i] = True
                break


@dataclass
class BatchKeys:
    """Canonical flow keys of a batch: `words` (n, 5) uint64 identify the flow exactly."""

    words: np.ndarray
    hashes: np.ndarray  # (n,) uint64
    side: np.ndarray  # (n,) uint8: 0 if the packet was sent by endpoint A


def key_parts(words: np.ndarray) -> tuple[int, int, bytes, int, bytes, int]:
    """(nic index, proto, 16-byte ip A, port A, 16-byte ip B, port B) of one flow key (`words` row)."""
    w = [int(x) for x in words]
    meta = w[4]
    return (meta >> 40, (meta >> 32) & 0xFF, w[0].to_bytes(8, "big") + w[1].to_bytes(8, "big"),
            (meta >> 16) & 0xFFFF, w[2].to_bytes(8, "big") + w[3].to_bytes(8, "big"), meta & 0xFFFF)  # fmt: skip


def batch_keys(
    nic: np.ndarray, proto: np.ndarray, src_ip: np.ndarray, dst_ip: np.ndarray, sport: np.ndarray, dport: np.ndarray
) -> BatchKeys:
    """Canonical (direction-free) keys for every packet of a batch."""
    n = len(nic)
    u8, u16 = np.uint8, np.uint16  # one compiled signature for every source (pcap, live, kernel counters)
    nic, proto = nic.astype(u16, copy=False), proto.astype(u8, copy=False)
    sport, dport = sport.astype(u16, copy=False), dport.astype(u16, copy=False)
    src_ip, dst_ip = np.ascontiguousarray(src_ip, u8), np.ascontiguousarray(dst_ip, u8)
    words, hashes, side = np.empty((n, 5), np.uint64), np.empty(n, np.uint64), np.empty(n, np.uint8)
    _keys(nic, proto, src_ip, dst_ip, src_ip.view(np.uint64), dst_ip.view(np.uint64), sport, dport, words, hashes, side)
    return BatchKeys(words=words, hashes=hashes, side=side)
