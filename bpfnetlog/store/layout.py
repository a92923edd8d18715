"""On-disk layout of the embedded store, shared by the writer and every reader.

    DIR/<table>/<YYYYMMDDHH>/<first>-<last>.parquet

The hour directory is the UTC hour of the rows' `time`, so a reader with a
time range opens only the hours it needs. Every segment covers a range of
sequence numbers: a flush writes `<n>-<n>` (one fresh number per file, from a
counter that only the single writer owns); compaction merges the live files of
a contiguous run `a..b` of one hour into `<a>-<b>`.

Why ranges (the compaction-safety choice): a reader lists the files and keeps
only those whose range no other file of the same hour *contains*. Compaction
renames the merged file into place and deletes its sources only later (next
maintenance run), so a reader that lists while both exist drops the sources:
never a duplicate, never a gap. A reader that listed before the rename and
finds a source gone when it opens it lists again (see reader.py). No manifest
to keep consistent, and a crash at any point leaves a valid directory.
Files being written are named `*.tmp` and are never listed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

HOUR_NS = 3600 * 1_000_000_000
SUFFIX = ".parquet"
TMP_SUFFIX = ".tmp"
LOCK_NAME = ".writer.lock"
_HOUR_RE = re.compile(r"^\d{10}$")
_SEG_RE = re.compile(r"^(\d{12})-(\d{12})\.parquet$")


@dataclass(frozen=True, order=True)
class Segment:
    """One Parquet file of one table and hour, covering sequence numbers first..last."""

    table: str
    hour: str
    first: int
    last: int
    path: Path
    size: int
    mtime: float


def segment_name(first: int, last: int) -> str:
    return f"{first:012d}-{last:012d}{SUFFIX}"


def hour_dir_name(time_ns: int) -> str:
    """UTC hour of a timestamp, as the partition directory name."""
    return datetime.fromtimestamp(time_ns // HOUR_NS * 3600, tz=timezone.utc).strftime("%Y%m%d%H")


def hour_start_ns(name: str) -> int:
    dt = datetime.strptime(name, "%Y%m%d%H").replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000


def list_segments(
    root: Path, table: str, t_from: int | None = None, t_to: int | None = None
) -> list[Segment]:
    """Every complete segment of a table (superseded ones included), in hours overlapping [t_from, t_to)."""
    segments: list[Segment] = []
    try:
        hours = [e.name for e in os.scandir(root / table) if e.is_dir() and _HOUR_RE.match(e.name)]
    except FileNotFoundError:
        return segments
    for hour in sorted(hours):
        start = hour_start_ns(hour)
        if (t_from is not None and start + HOUR_NS <= t_from) or (t_to is not None and start >= t_to):
            continue
        try:
            entries = list(os.scandir(root / table / hour))
        except FileNotFoundError:  # removed by retention while we listed
            continue
        for entry in entries:
            m = _SEG_RE.match(entry.name)
            if not m:
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            segments.append(
                Segment(table, hour, int(m[1]), int(m[2]), Path(entry.path), st.st_size, st.st_mtime)
            )
    return sorted(segments)


def split_live(segments: list[Segment]) -> tuple[list[Segment], list[Segment]]:
    """(live, superseded): a segment is superseded when another of its hour covers its range.

    One sweep per hour in (first asc, last desc) order: a segment is covered
    iff an earlier one reaches at least as far (an identical range, which the
    writer never produces, counts once).
    """
    live: list[Segment] = []
    superseded: list[Segment] = []
    reach: dict[tuple[str, str], int] = {}
    for seg in sorted(segments, key=lambda s: (s.table, s.hour, s.first, -s.last)):
        key = (seg.table, seg.hour)
        if reach.get(key, -1) >= seg.last:
            superseded.append(seg)
        else:
            live.append(seg)
            reach[key] = seg.last
    return sorted(live), sorted(superseded)


def live_segments(
    root: Path, table: str, t_from: int | None = None, t_to: int | None = None
) -> list[Segment]:
    return split_live(list_segments(root, table, t_from, t_to))[0]
