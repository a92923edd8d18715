"""The embedded store's writer: buffers rows per table, one segment per table and hour per flush."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bpfnetlog.records import SCHEMAS
from bpfnetlog.store.base import Batch, StoreError
from bpfnetlog.store.files import ensure_dir, write_parquet_atomic
from bpfnetlog.store.layout import (
    HOUR_NS,
    LOCK_NAME,
    TMP_SUFFIX,
    hour_dir_name,
    list_segments,
    segment_name,
)
from bpfnetlog.store.maintain import (
    MaintenancePolicy,
    apply_retention,
    compact,
    purge_superseded,
    table_names,
)

log = logging.getLogger(__name__)


def conform(table: str, batch: Batch) -> pa.Table:
    """Rows of `batch` in exactly the table's schema: missing fields null, unknown fields an error.

    Unknown fields are refused rather than dropped: a misspelt field would
    otherwise vanish from the logs without a trace.
    """
    schema = SCHEMAS.get(table)
    if schema is None:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(SCHEMAS)}")
    if isinstance(batch, list):
        present = set().union(*batch)
        unknown = present - set(schema.names)
        if unknown:
            raise ValueError(f"fields not in {table}: {', '.join(sorted(unknown))}")
        # column by column, skipping absent fields: 3x faster than Table.from_pylist
        columns = [
            pa.array([row.get(f.name) for row in batch], f.type) if f.name in present
            else pa.nulls(len(batch), f.type)
            for f in schema
        ]  # fmt: skip
        return pa.Table.from_arrays(columns, schema=schema)
    if isinstance(batch, pa.RecordBatch):
        batch = pa.Table.from_batches([batch])
    unknown = set(batch.column_names) - set(schema.names)
    if unknown:
        raise ValueError(f"fields not in {table}: {', '.join(sorted(unknown))}")
    present = set(batch.column_names)
    columns = [_as_type(batch.column(f.name), f.type) if f.name in present else pa.nulls(batch.num_rows, f.type)
               for f in schema]  # fmt: skip
    return pa.Table.from_arrays(columns, names=schema.names)


def _as_type(column: pa.ChunkedArray, type_: pa.DataType) -> pa.ChunkedArray:
    """The column in the schema's type; cast only when it differs (a cast to the same type still copies).

    Text may stay dictionary-encoded (connection tags, flag names: a few values repeated on
    every row): Parquet stores such a column as it is, and readers get plain strings back.
    """
    if column.type == type_ or (pa.types.is_dictionary(column.type) and column.type.value_type == type_):
        return column
    return column.cast(type_)


def plain(table: pa.Table) -> pa.Table:
    """The table with its dictionary-encoded text decoded: the schema of records.py exactly."""
    return table.cast(pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                                 for f in table.schema]))  # fmt: skip


def _concat(tables: list[pa.Table]) -> pa.Table:
    """Buffered batches as one table; decoded to plain text only when their encodings differ.

    Batches of dictionary text get one dictionary per column: Parquet writes a column whose
    dictionary changes from chunk to chunk by hashing every row's text again."""
    first = tables[0].schema
    if any(not t.schema.equals(first) for t in tables[1:]):
        return pa.concat_tables([plain(t) for t in tables])
    return pa.concat_tables(tables).unify_dictionaries() if len(tables) > 1 else tables[0]


def split_by_hour(table: pa.Table) -> list[tuple[str, pa.Table]]:
    """Rows grouped by the UTC hour of `time` (a null time counts as now)."""
    times = pc.fill_null(table.column("time"), time.time_ns()).to_numpy()
    hours = times // HOUR_NS
    if hours.size == 0:
        return []
    if hours.min() == hours.max():
        return [(hour_dir_name(int(times[0])), table)]
    order = np.argsort(hours, kind="stable")
    sorted_hours = hours[order]
    starts = np.flatnonzero(np.r_[True, sorted_hours[1:] != sorted_hours[:-1]])
    bounds = np.r_[starts, sorted_hours.size]
    return [
        (hour_dir_name(int(sorted_hours[a]) * HOUR_NS), table.take(order[a:b]))
        for a, b in zip(bounds[:-1], bounds[1:])
    ]


class ParquetStoreWriter:
    """Writes `DIR/<table>/<hour>/<seq>-<seq>.parquet`; the only writer of its directory.

    A lock file enforces a single writer, because compaction relies on no one
    else adding sequence numbers; the kernel drops the lock when the process
    dies, even by kill -9.
    """

    def __init__(
        self,
        root: Path | str,
        policy: MaintenancePolicy = MaintenancePolicy(),
        maintenance_interval: float = 60.0,
    ) -> None:
        self.root = Path(root)
        self.policy = policy
        self.maintenance_interval = maintenance_interval
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._acquire_lock()
        self._remove_partial_files()
        self._next_seq = 1 + max(
            (s.last for t in table_names(self.root) for s in list_segments(self.root, t)), default=0
        )
        self._buffers: dict[str, list[pa.Table]] = {}
        self._listing_lock = threading.Lock()
        self._maintainer: threading.Thread | None = None
        self._last_maintenance = time.monotonic()

    def _acquire_lock(self):
        f = open(self.root / LOCK_NAME, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise StoreError(
                f"store {self.root} is being written by another process (pid {holder}); "
                "stop it, or give this capture another --store directory"
            ) from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        return f

    def _remove_partial_files(self) -> None:
        """Temp files of a writer that crashed; safe since we hold the lock."""
        for tmp in self.root.glob(f"*/*/*{TMP_SUFFIX}"):
            tmp.unlink()

    def write(self, table: str, batch: Batch) -> None:
        rows = conform(table, batch)
        if rows.num_rows:
            self._buffers.setdefault(table, []).append(rows)

    def flush(self) -> None:
        with self._listing_lock:
            for table in list(self._buffers):
                slices = split_by_hour(_concat(self._buffers[table]))
                for i, (hour, rows) in enumerate(slices):
                    try:
                        self._write_segment(table, hour, rows)
                    except BaseException:
                        self._buffers[table] = [r for _, r in slices[i:]]  # retry only the rest
                        raise
                del self._buffers[table]
        self._maybe_maintain()

    def _write_segment(self, table: str, hour: str, rows: pa.Table) -> None:
        directory = self.root / table / hour
        ensure_dir(directory)
        seq = self._next_seq
        write_parquet_atomic(directory / segment_name(seq, seq), rows)
        self._next_seq += 1

    def maintain(self) -> None:
        """Purge superseded files, apply retention, compact. Runs in the background from flush()."""
        purge_superseded(self.root)
        apply_retention(self.root, self.policy, self._listing_lock)
        compact(self.root, self.policy, self._listing_lock)

    def _maybe_maintain(self) -> None:
        if self._maintainer is not None and self._maintainer.is_alive():
            return
        if time.monotonic() - self._last_maintenance < self.maintenance_interval:
            return
        self._last_maintenance = time.monotonic()
        self._maintainer = threading.Thread(target=self._maintain_logged, name="store-maintenance", daemon=True)
        self._maintainer.start()

    def _maintain_logged(self) -> None:
        try:
            self.maintain()
        except Exception:  # the capture must go on; the next run retries
            log.exception("store maintenance failed in %s", self.root)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._maintainer is not None:
                self._maintainer.join()
            self._lock_file.close()

    def __enter__(self) -> "ParquetStoreWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
