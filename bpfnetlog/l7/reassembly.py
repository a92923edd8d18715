"""Per-direction TCP stream reassembly for a passive observer.

A capture sees segments late, twice, out of order or never. Parsers need the
bytes in order, so each direction keeps a bounded out-of-order buffer; when
data is missing for good (buffer full, far jump, flush at close/timeout) the
reassembler skips ahead and says how many bytes it skipped, so the parser can
resynchronise instead of stalling forever. Sequence numbers are unwrapped into
unbounded stream offsets, so 32-bit wraparound needs no special case.

Captures may be truncated (snaplen: tcpdump -s, the eBPF capture's payload
cap): a segment then covers `length` bytes of the stream but only its first
len(data) bytes were captured. The stream position still advances by
`length`; the uncaptured tail is delivered as `Chunk.tail`, a hole of known
size and known place that is not loss (no `gaps` counted), so a parser that
knows a body's length stays in sync across it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from .base import SEQ_MASK

_HALF = 1 << 31
_FULL = 1 << 32


@dataclass(slots=True)
class Chunk:
    """In-order bytes: `seq` is the raw seq of data[0], `ts` of the packet that carried them."""

    seq: int
    data: bytes
    ts: int
    gap: int = 0  # bytes known missing right before this chunk (loss)
    tail: int = 0  # bytes right after `data` that were on the wire but not captured (snaplen)


class StreamReassembler:
    """One direction of one TCP connection; first copy of a byte wins."""

    __slots__ = ("max_bytes", "max_segments", "stats", "_base", "next", "_ooo", "_heap", "_ooo_bytes", "_ooo_end")

    def __init__(self, max_bytes: int = 1 << 20, max_segments: int = 1024, stats: dict[str, int] | None = None):
        self.max_bytes = max_bytes
        self.max_segments = max_segments
        self.stats = stats if stats is not None else {}
        self._base: int | None = None  # raw seq of stream offset 0
        self.next = 0  # offset of the next byte to deliver
        self._ooo: dict[int, tuple[bytes, int, int]] = {}  # offset -> (data, ts, length), behind a hole
        self._heap: list[int] = []  # offsets in _ooo
        self._ooo_bytes = 0  # captured bytes held
        self._ooo_end = 0  # furthest end offset buffered

    def set_isn(self, isn: int) -> None:
        """SYN seen: the stream starts right after it (ignored once data arrived)."""
        if self._base is None:
            self._base = (isn + 1) & SEQ_MASK

    def offset(self, seq: int) -> int:
        """Stream offset of raw `seq`, taking the unwrap nearest to the delivery point."""
        if self._base is None:
            self._base = seq
        d = (seq - self._base - self.next) & SEQ_MASK
        return self.next + (d - _FULL if d >= _HALF else d)

    def raw(self, off: int) -> int:
        return ((self._base or 0) + off) & SEQ_MASK

    @property
    def waiting(self) -> bool:
        """Out-of-order data is held back by a hole."""
        return bool(self._ooo)

    def oldest_ts(self) -> int:
        return min(v[1] for v in self._ooo.values())

    def segment(self, seq: int, data: bytes, ts: int, length: int | None = None) -> list[Chunk]:
        """One segment in (`length`: its size on the wire, >= len(data)); deliverable chunks out."""
        if length is None or length < len(data):
            length = len(data)
        if not length:
            return []
        return self.at(self.offset(seq), data, ts, length)

    def at(self, off: int, data: bytes, ts: int, length: int) -> list[Chunk]:
        """`segment` for a caller that already has the stream offset `off` of the segment."""
        end = off + length
        if end <= self.next:
            self._count("dup_segments")
            return []
        out: list[Chunk] = []
        if off > self.next:
            self._store(off, data, ts, length)
            while self._ooo and (
                self._ooo_bytes > self.max_bytes
                or len(self._ooo) > self.max_segments
                or self._ooo_end - self.next > self.max_bytes
            ):
                self._count("buffer_overflow")
                self._skip(out)
            return out
        self._emit(out, off, data, ts, length)
        if self._ooo:
            self._drain(out)
        return out

    def flush(self) -> list[Chunk]:
        """Give up on every hole (connection end, reorder timeout)."""
        out: list[Chunk] = []
        while self._ooo:
            self._skip(out)
        return out

    def _emit(self, out: list[Chunk], off: int, data: bytes, ts: int, length: int) -> None:
        """Deliver [off, off+length) from self.next on (off <= self.next < off+length)."""
        skip = self.next - off
        if skip:
            data = data[skip:]
        out.append(Chunk(self.raw(self.next), data, ts, 0, length - skip - len(data)))
        self.next = off + length

    def _store(self, off: int, data: bytes, ts: int, length: int) -> None:
        old = self._ooo.get(off)
        if old is None:
            heapq.heappush(self._heap, off)
        elif old[2] >= length:
            self._count("dup_segments")
            return
        else:
            self._ooo_bytes -= len(old[0])
        self._ooo[off] = (data, ts, length)
        self._ooo_bytes += len(data)
        self._ooo_end = max(self._ooo_end, off + length)

    def _skip(self, out: list[Chunk]) -> None:
        """Declare the first hole lost and deliver what follows it."""
        low = self._heap[0]
        if low > self.next:
            self._count("gaps")
            self._count("gap_bytes", low - self.next)
            gap, self.next = low - self.next, low
        else:
            gap = 0
        start = len(out)
        self._drain(out)
        if gap and len(out) > start:
            out[start].gap = gap

    def _drain(self, out: list[Chunk]) -> None:
        heap, ooo = self._heap, self._ooo
        while heap and heap[0] <= self.next:
            off = heapq.heappop(heap)
            data, ts, length = ooo.pop(off)
            self._ooo_bytes -= len(data)
            if off + length > self.next:
                self._emit(out, off, data, ts, length)
        if not ooo:
            self._ooo_end = self.next

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n
