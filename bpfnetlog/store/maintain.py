"""Compaction and retention of the segment files.

Both run only in the process that holds the writer lock (the writer starts
them in a background thread), so the sequence numbers of one hour are never
extended while a compaction lists them. Readers stay correct throughout; see
the range rule in layout.py.

A merge leaves its sources in place (readers ignore them) until the next
maintenance run, one interval later: a query that listed them just before the
merge can still finish without a retry.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bpfnetlog.store.files import remove_quietly, repeated_text, write_parquet_atomic
from bpfnetlog.store.layout import Segment, list_segments, segment_name, split_live


@dataclass(frozen=True)
class MaintenancePolicy:
    retention_hours: float | None = None  # delete segments written longer ago than this
    retention_bytes: int | None = None  # then delete the oldest until the store is smaller
    compact_min_files: int = 8  # merge a run of small segments once it has this many
    compact_target_bytes: int = 64 << 20  # merged segments grow up to about this size
    # Segments at least this big are left as they are: a merge costs about what writing did
    # (~0.45 us a packet row: 5% of a CPU at 120k packets/s), DuckDB opens a file in ~0.65 ms.
    compact_below_bytes: int = 2 << 20


def table_names(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def size_class(size: int, policy: MaintenancePolicy) -> int:
    """0, 1, 2: a segment's size in powers of `compact_min_files` up to `compact_below_bytes`.

    Only segments of one class merge, and `compact_min_files` of them make one of the next
    class: a row is rewritten once per class it climbs (at most twice), instead of at
    every maintenance run while its merged file stayed small (a minute's merge of 5 s flushes
    was merged again with the next minute's, and so on: each packet row re-encoded up to ~30
    times in an hour, each time costing about what writing it did).
    """
    fan = max(policy.compact_min_files, 2)
    unit = max(1, policy.compact_below_bytes // fan**2)
    cls, units = 0, size // unit
    while units >= fan:
        units //= fan
        cls += 1
    return cls


def compaction_runs(live: list[Segment], policy: MaintenancePolicy) -> list[list[Segment]]:
    """Runs of consecutive small live segments of one hour and size class, each to become one file.

    Consecutive matters: the merged file's range first..last must contain no
    live segment that is left out of it, or readers would drop that one.
    """
    runs: list[list[Segment]] = []
    run: list[Segment] = []
    size = 0
    small = policy.compact_below_bytes
    for seg in live:
        if run and (seg.hour != run[-1].hour or seg.size >= small or size + seg.size > policy.compact_target_bytes
                    or size_class(seg.size, policy) != size_class(run[-1].size, policy)):  # fmt: skip
            runs.append(run)
            run, size = [], 0
        if seg.size < small:
            run.append(seg)
            size += seg.size
    if run:
        runs.append(run)
    return [r for r in runs if len(r) >= policy.compact_min_files]


def _read_encoded(path: Path) -> pa.Table:
    """A segment with its repeated text as dictionaries, as the writer had it: decoded to plain
    strings, every value would be hashed again to write its dictionary (most of a merge's cost)."""
    return pq.read_table(path, read_dictionary=repeated_text(pq.read_schema(path)))


def merge(run: list[Segment]) -> Segment:
    """Write the rows of `run` as one file, in the sources' order (flush order: each flush's
    rows grouped as the writer grouped them); the sources become superseded."""
    tables = [_read_encoded(seg.path) for seg in run]
    # permissive: a column a segment left out (null on all its rows) comes back null there;
    # one dictionary per column, or Parquet hashes every row's text again
    merged = pa.concat_tables(tables, promote_options="permissive").unify_dictionaries()
    first, last = run[0].first, run[-1].last
    path = run[0].path.with_name(segment_name(first, last))
    mtime = max(seg.mtime for seg in run)  # retention ages the merge by its newest rows
    write_parquet_atomic(path, merged, mtime=mtime)
    return Segment(run[0].table, run[0].hour, first, last, path, path.stat().st_size, mtime)


def purge_superseded(root: Path) -> int:
    """Delete the sources of earlier merges (or of a merge cut short by a crash)."""
    superseded = [seg for table in table_names(root) for seg in split_live(list_segments(root, table))[1]]
    for seg in superseded:
        remove_quietly(seg.path)
    return len(superseded)


def compact(root: Path, policy: MaintenancePolicy, listing_lock: threading.Lock) -> int:
    """Merge small segments; returns how many files were merged."""
    merged = 0
    for table in table_names(root):
        with listing_lock:  # no flush half-way while we decide which ranges are complete
            live = split_live(list_segments(root, table))[0]
        for run in compaction_runs(live, policy):
            merge(run)
            merged += len(run)
    return merged


def apply_retention(
    root: Path, policy: MaintenancePolicy, listing_lock: threading.Lock, now: float | None = None
) -> int:
    """Delete segments by age, then the oldest by total size; returns bytes freed.

    Run it after purge_superseded(): deleting a merged file whose sources
    still exist would bring the sources back to life.
    """
    if policy.retention_hours is None and policy.retention_bytes is None:
        return 0
    now = time.time() if now is None else now
    live: list[Segment] = []
    for table in table_names(root):
        live += split_live(list_segments(root, table))[0]
    live.sort(key=lambda s: (s.mtime, s.first))
    total = sum(s.size for s in live)
    freed = 0
    for seg in live:
        too_old = policy.retention_hours is not None and seg.mtime < now - policy.retention_hours * 3600
        too_big = policy.retention_bytes is not None and total - freed > policy.retention_bytes
        if not (too_old or too_big):
            continue
        remove_quietly(seg.path)
        freed += seg.size
    with listing_lock:  # the writer may be about to create a file in an empty hour
        for table in table_names(root):
            for hour in os.scandir(root / table):
                if hour.is_dir() and not any(os.scandir(hour.path)):
                    os.rmdir(hour.path)
    return freed
