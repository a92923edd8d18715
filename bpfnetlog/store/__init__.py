"""Where records go: the embedded store (Parquet segments read by DuckDB).

Writers and readers are opened through `open_writer` / `open_reader`, so a
ClickHouse backend can be chosen here later without touching the callers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bpfnetlog.store.base import Batch, StoreError, StoreReader, StoreWriter
from bpfnetlog.store.maintain import MaintenancePolicy
from bpfnetlog.store.writer import ParquetStoreWriter

if TYPE_CHECKING:
    from bpfnetlog.store.reader import DuckDBStoreReader

__all__ = [
    "Batch",
    "DuckDBStoreReader",
    "MaintenancePolicy",
    "ParquetStoreWriter",
    "StoreError",
    "StoreReader",
    "StoreWriter",
    "open_reader",
    "open_writer",
]


def open_writer(
    path: Path | str,
    *,
    retention_hours: float | None = None,
    retention_bytes: int | None = None,
    maintenance_interval: float = 60.0,
) -> StoreWriter:
    """The writer of a store directory (created if missing); one per directory at a time."""
    policy = MaintenancePolicy(retention_hours=retention_hours, retention_bytes=retention_bytes)
    return ParquetStoreWriter(path, policy, maintenance_interval)


def open_reader(path: Path | str, t_from: int | None = None, t_to: int | None = None) -> StoreReader:
    """A reader of an existing store; StoreError if there is none at `path`."""
    from bpfnetlog.store.reader import DuckDBStoreReader

    return DuckDBStoreReader(path, t_from, t_to)


def __getattr__(name: str):
    """DuckDB is imported on first use of the reader: writers (`read`, `capture`) never need it."""
    if name == "DuckDBStoreReader":
        from bpfnetlog.store.reader import DuckDBStoreReader

        return DuckDBStoreReader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
