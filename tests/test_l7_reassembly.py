"""Per-direction TCP reassembly: order, duplicates, wraparound, bounded buffering, gaps."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bpfnetlog.l7.reassembly import Chunk, StreamReassembler


def joined(chunks: list[Chunk]) -> bytes:
    return b"".join(c.data for c in chunks)


def test_in_order_chunks_carry_raw_seq_and_ts():
    r = StreamReassembler()
    r.set_isn(99)
    assert r.segment(100, b"abc", 1) == [Chunk(100, b"abc", 1)]
    assert r.segment(103, b"de", 2) == [Chunk(103, b"de", 2)]


def test_out_of_order_is_held_then_delivered_in_order():
    r = StreamReassembler()
    r.set_isn(99)
    assert r.segment(106, b"ghi", 3) == []
    assert r.segment(103, b"def", 2) == []
    assert r.waiting
    out = r.segment(100, b"abc", 1)
    assert [(c.seq, c.data, c.ts, c.gap) for c in out] == [
        (100, b"abc", 1, 0),
        (103, b"def", 2, 0),
        (106, b"ghi", 3, 0),
    ]
    assert not r.waiting


def test_retransmission_and_overlap_first_copy_wins():
    stats: dict[str, int] = {}
    r = StreamReassembler(stats=stats)
    r.set_isn(0)
    r.segment(1, b"abcd", 1)
    assert r.segment(1, b"XXXX", 2) == []  # full retransmission
    assert r.segment(3, b"YYef", 3) == [Chunk(5, b"ef", 3)]  # overlap: only new bytes
    assert stats["dup_segments"] == 1
    # Two buffered copies of the same hole: the first stored one is kept.
    r.segment(9, b"11", 4)
    r.segment(9, b"22", 5)
    assert joined(r.segment(7, b"gh", 6)) == b"gh11"


def test_seq_wraparound_near_2_32():
    r = StreamReassembler()
    isn = 2**32 - 4
    r.set_isn(isn)  # first data byte at 2**32 - 3
    a = r.segment(2**32 - 3, b"abcde", 1)  # crosses the wrap
    c = r.segment(4, b"hij", 3)  # after the wrap, out of order
    b = r.segment(2, b"fg", 2)
    assert [x.seq for x in a + b] == [2**32 - 3, 2, 4]
    assert c == []
    assert joined(a + b) == b"abcdefghij"
    assert r.offset(4) == 7


def test_buffer_overflow_declares_a_gap():
    stats: dict[str, int] = {}
    r = StreamReassembler(max_bytes=10, stats=stats)
    r.set_isn(0)
    r.segment(1, b"aa", 1)
    assert r.segment(6, b"bbbbbb", 2) == []  # hole 3..5
    out = r.segment(12, b"cccccc", 3)  # would hold 12 bytes > 10
    assert [(c.seq, c.data, c.gap) for c in out] == [(6, b"bbbbbb", 3), (12, b"cccccc", 0)]
    assert stats["buffer_overflow"] == 1 and stats["gaps"] == 1 and stats["gap_bytes"] == 3


def test_segment_count_cap():
    r = StreamReassembler(max_segments=2)
    r.set_isn(0)
    r.segment(1, b"a", 1)
    r.segment(3, b"c", 2)
    r.segment(5, b"e", 3)
    out = r.segment(7, b"g", 4)  # third held segment
    assert [(c.data, c.gap) for c in out] == [(b"c", 1)]  # e and g still wait behind a hole


def test_far_jump_skips_at_once():
    r = StreamReassembler(max_bytes=100)
    r.set_isn(0)
    r.segment(1, b"a", 1)
    out = r.segment(10_000, b"z", 2)
    assert [(c.seq, c.gap) for c in out] == [(10_000, 9_998)]


def test_flush_gives_up_on_holes():
    r = StreamReassembler()
    r.set_isn(0)
    r.segment(1, b"ab", 1)
    r.segment(5, b"ef", 2)
    r.segment(9, b"ij", 3)
    out = r.flush()
    assert [(c.seq, c.data, c.gap) for c in out] == [(5, b"ef", 2), (9, b"ij", 2)]
    assert not r.waiting


def test_mid_stream_join_starts_at_first_seen_seq():
    r = StreamReassembler()
    assert r.segment(123456, b"xy", 1) == [Chunk(123456, b"xy", 1)]


def _segments(data: bytes, cuts: list[int], isn: int) -> list[tuple[int, bytes]]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [((isn + 1 + a) & 0xFFFFFFFF, data[a:b]) for a, b in zip(points, points[1:]) if b > a]


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=3000),
    cuts=st.lists(st.integers(0, 3000), max_size=30),
    isn=st.integers(0, 2**32 - 1),
    seed=st.integers(0, 2**32),
    dups=st.integers(0, 5),
)
def test_any_order_with_duplicates_rebuilds_the_stream(data, cuts, isn, seed, dups):
    segs = _segments(data, cuts, isn)
    rng = random.Random(seed)
    segs += [rng.choice(segs) for _ in range(dups)]
    rng.shuffle(segs)
    r = StreamReassembler()
    r.set_isn(isn)
    out = [c for seq, d in segs for c in r.segment(seq, d, 0)]
    assert joined(out) == data
    assert all(c.gap == 0 for c in out)
    assert out[0].seq == (isn + 1) & 0xFFFFFFFF
