"""The per-CPU ring reader on hand-made ring memory: records of several rings merged in time
order, payloads with their records, discarded records skipped, a busy one ends its ring's batch."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from bpfnetlog.capture.ebpf.convert import NicTable, to_batch
from bpfnetlog.capture.ebpf.record import REC, REC4, REC_HEAD
from bpfnetlog.capture.ebpf.ringbuf import BUSY, DISCARD, HDR, NO_NIC, drain
from bpfnetlog.packets import Nic

SIZE = 4096


def record(ts: int, payload: bytes, v6: bool = False) -> bytes:
    """A record as the programs write it: an IPv4 one (REC's head, 4-byte addresses) or an
    IPv6 one (a whole REC), then its payload. Addresses come from ts, to be checked."""
    r = np.zeros(1, REC)
    r["ts_ns"], r["seq"], r["payload_cap"], r["payload_len"] = ts, ts * 10, len(payload), len(payload)
    r["sport"], r["proto"], r["ip_version"] = 1000 + ts, 6, 6 if v6 else 4
    r["netns_id"], r["ifindex"] = 7, ifindex_of(ts)
    if v6:
        r["saddr"], r["daddr"] = address(ts, True, 0), address(ts, True, 1)
        return r.tobytes() + payload
    r4 = np.zeros(1, REC4)
    r4["head"] = np.frombuffer(r.tobytes()[:REC_HEAD], np.uint8)
    r4["saddr"], r4["daddr"] = address(ts, False, 0)[12:], address(ts, False, 1)[12:]
    return r4.tobytes() + payload


def ifindex_of(ts: int) -> int:
    """The records of ts 1-9 come from NICs 2, 3 and 4, in runs: 2 2 2 3 3 3 4 4 4."""
    return 2 + (ts - 1) // 3


def address(ts: int, v6: bool, dst: int) -> list[int]:
    """16 bytes: fd00::<ts>:<dst>:1 or ::ffff:10.<dst>.<ts>.1."""
    if v6:
        return [0xFD] + [0] * 11 + [ts >> 8, ts & 0xFF, dst, 1]
    return [0] * 10 + [0xFF, 0xFF, 10, dst, ts, 1]


def ring(records: list[tuple[int, bytes, int]], v6: frozenset[int] = frozenset()) -> SimpleNamespace:
    """A ring holding `records` (ts, payload, header flags; IPv6 where ts is in `v6`) from
    position 0, as RingReader exposes it."""
    data = bytearray(2 * SIZE)
    pos = 0
    for ts, payload, flags in records:
        body = record(ts, payload, ts in v6)
        data[pos : pos + HDR] = np.array([len(body) | flags, 0], np.uint32).tobytes()
        data[pos + HDR : pos + HDR + len(body)] = body
        pos += (HDR + len(body) + 7) & ~7
    view = np.frombuffer(bytes(data), np.uint8)  # read-only, as the mmap'd data area
    return SimpleNamespace(data=view, mask=SIZE - 1, cons=0, prod=pos)


def test_ipv4_and_ipv6_records_give_their_addresses_payloads_and_sizes() -> None:
    """IPv4 records are 56 bytes (64 in the ring: one cache line), IPv6 ones 80; the reader
    gives both 16-byte addresses (IPv4-mapped) and finds the payload after either header."""
    assert (REC4.itemsize, REC.itemsize) == (56, 80)
    a = ring([(1, b"", 0), (2, b"six", 0), (3, b"four", 0), (4, b"", 0)], v6=frozenset({2, 4}))
    assert a.prod == (8 + 56) + (8 + 80 + 3 + 5) + (8 + 56 + 4 + 4) + (8 + 80)
    _, cols, src, dst, payload, _ = drain([a], ts_shift=0)
    assert cols["ip_version"].tolist() == [4, 6, 4, 6]
    assert cols["sport"].tolist() == [1001, 1002, 1003, 1004]
    assert [payload[o : o + c].tobytes() for o, c in zip(cols["payload_off"], cols["payload_cap"])] == [
        b"", b"six", b"four", b""]  # fmt: skip
    for i, (ts, v6) in enumerate([(1, False), (2, True), (3, False), (4, True)]):
        assert src[i].tolist() == address(ts, v6, 0) and dst[i].tolist() == address(ts, v6, 1)


def test_records_shorter_than_their_layout_are_skipped() -> None:
    """A length below the IPv4 layout, or an IPv6 record cut below 80 bytes, is skipped, not
    read past its end; the records around it stay."""
    data = bytearray(2 * SIZE)
    pos = 0
    for body in (record(1, b"x"), record(2, b"")[:40], record(3, b"", v6=True)[:72], record(4, b"yz")):
        data[pos : pos + HDR] = np.array([len(body), 0], np.uint32).tobytes()
        data[pos + HDR : pos + HDR + len(body)] = body
        pos += (HDR + len(body) + 7) & ~7
    r = SimpleNamespace(data=np.frombuffer(bytes(data), np.uint8), mask=SIZE - 1, cons=0, prod=pos)
    stops, cols, _, _, payload, _ = drain([r], ts_shift=0)
    assert cols["ts"].tolist() == [1, 4] and payload.tobytes() == b"xyz" and stops == [pos]


def test_rings_merge_in_time_order_with_their_payloads() -> None:
    a = ring([(1, b"a1", 0), (4, b"", 0), (6, b"a6-payload", 0), (9, b"", 0)])
    b = ring([(2, b"b2", 0), (3, b"dropped", DISCARD), (5, b"b5", 0), (7, b"", 0), (8, b"late", BUSY)])
    stops, cols, src, dst, payload, _ = drain([a, b], ts_shift=100)
    assert cols["ts"].tolist() == [101, 102, 104, 105, 106, 107, 109]  # the busy record (8) waits
    assert cols["seq"].tolist() == [10, 20, 40, 50, 60, 70, 90]
    assert cols["sport"].tolist() == [1001, 1002, 1004, 1005, 1006, 1007, 1009]
    got = [payload[o : o + c].tobytes() for o, c in zip(cols["payload_off"], cols["payload_cap"])]
    assert got == [b"a1", b"b2", b"", b"b5", b"a6-payload", b"", b""]
    assert stops[0] == a.prod  # all of a consumed; b up to its busy record
    assert stops[1] < b.prod and b.data[stops[1] : stops[1] + 4].view(np.uint32)[0] & BUSY


def test_one_ring_keeps_its_order_and_empty_rings_give_nothing() -> None:
    a = ring([(5, b"x", 0), (6, b"yy", 0)])
    empty = ring([])
    stops, cols, _, _, payload, _ = drain([empty, a, empty], ts_shift=0)
    assert cols["ts"].tolist() == [5, 6] and payload.tobytes() == b"xyy"
    assert stops == [0, a.prod, 0]
    stops, cols, *_ = drain([empty], ts_shift=0)
    assert len(cols["ts"]) == 0 and stops == [0]


def test_a_ring_with_more_than_a_batch_cuts_the_others_at_its_last_time(monkeypatch) -> None:
    """Batch after batch, records come out in time order although a ring holds more than a
    batch's share: the other rings wait past the last time it gave."""
    from bpfnetlog.capture.ebpf import ringbuf

    monkeypatch.setattr(ringbuf, "MAX_RECORDS", 6)
    monkeypatch.setattr(ringbuf, "MIN_RECORDS", 3)  # 3 records per ring and batch
    a = ring([(t, b"a", 0) for t in range(1, 11)])
    b = ring([(t, b"bb", 0) for t in range(2, 21, 2)])
    out, batches = [], 0
    while True:
        stops, cols, _, _, payload, _ = drain([a, b], ts_shift=0)
        if not len(cols["ts"]):
            break
        batches += 1
        out += [(int(t), payload[o : o + c].tobytes())
                for t, o, c in zip(cols["ts"], cols["payload_off"], cols["payload_cap"])]  # fmt: skip
        a.cons, b.cons = stops
    want = sorted([(t, b"a") for t in range(1, 11)] + [(t, b"bb") for t in range(2, 21, 2)])  # a before b at a tie
    assert out == want
    assert (a.cons, b.cons) == (a.prod, b.prod) and batches >= 5


def test_records_get_the_nic_of_their_namespace_and_ifindex_or_are_listed_as_unknown() -> None:
    """Known (netns_id, ifindex) pairs give their NIC index; a pair the reader was not told of
    gives NO_NIC and its (row, key), for convert.to_batch to resolve; runs of one NIC and
    changes between NICs (in both rings) are all looked up right."""
    a = ring([(t, b"", 0) for t in (1, 2, 4, 5, 7, 9)])
    b = ring([(t, b"", 0) for t in (3, 6, 8)])
    known = (np.array([7 << 32 | 2, 7 << 32 | 4, 8 << 32 | 3], np.uint64), np.array([10, 11, 12], np.uint16))
    _, cols, *_, (rows, keys) = drain([a, b], ts_shift=0, nics=known)
    assert cols["ts"].tolist() == list(range(1, 10))
    assert cols["nic"].tolist() == [10, 10, 10, NO_NIC, NO_NIC, NO_NIC, 11, 11, 11]  # ifindex 3 is netns 8's
    assert sorted(rows.tolist()) == [3, 4, 5] and keys.tolist() == [7 << 32 | 3] * 3


def test_to_batch_gives_an_unknown_nic_a_stub_and_keeps_known_ones() -> None:
    """A record of a NIC the table does not hold (released, or not yet seen by the follower)
    gets a stub NIC named after its ifindex; the others keep theirs."""
    nics = NicTable()
    nics.add(7, Nic(name="veth0", ifindex=2))
    nics.add(7, Nic(name="eth0", ifindex=4))
    r = ring([(t, b"", 0) for t in range(1, 10)])
    _, cols, src, dst, payload, unknown = drain([r], ts_shift=0, nics=nics.known())
    batch = to_batch(cols, src, dst, payload, unknown, nics, first_frame=1)
    assert [batch.nics[i].name for i in batch.cols["nic"]] == ["veth0"] * 3 + ["if3"] * 3 + ["eth0"] * 3
    assert batch.cols["frame"].tolist() == list(range(1, 10))
