"""Which connection each packet belongs to, computed for a whole batch at once.

A connection on a NIC is (nic, proto, endpoint A, endpoint B) with A the
smaller endpoint, so both directions map to one key and `side` says which
endpoint sent the packet (0: A, 1: B). Keys are hashed to 64 bits with numpy
so that grouping a batch is one `np.unique` over integers; the full key is
kept per flow and compared afterwards, so a hash collision is detected and
counted, never silently merged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """splitmix64-style combine: cheap, vectorized, well spread."""
    with np.errstate(over="ignore"):
        h = (h ^ w) * _M2
        h ^= h >> np.uint64(31)
        h *= _M3
        h ^= h >> np.uint64(29)
    return h


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
    s = src_ip.view(">u8").astype(np.uint64)  # (n, 2), big-endian so order = address order
    d = dst_ip.view(">u8").astype(np.uint64)
    sp = sport.astype(np.uint64)
    dp = dport.astype(np.uint64)
    src_first = (s[:, 0] < d[:, 0]) | (
        (s[:, 0] == d[:, 0]) & ((s[:, 1] < d[:, 1]) | ((s[:, 1] == d[:, 1]) & (sp <= dp)))
    )
    a = np.where(src_first[:, None], s, d)
    b = np.where(src_first[:, None], d, s)
    pa_ = np.where(src_first, sp, dp)
    pb = np.where(src_first, dp, sp)
    meta = (nic.astype(np.uint64) << np.uint64(40)) | (proto.astype(np.uint64) << np.uint64(32)) | (pa_ << np.uint64(16)) | pb
    words = np.stack([a[:, 0], a[:, 1], b[:, 0], b[:, 1], meta], axis=1)
    h = np.full(len(nic), _M1, np.uint64)
    for j in range(5):
        h = _mix(h, words[:, j])
    return BatchKeys(words=words, hashes=h, side=(~src_first).astype(np.uint8))
