"""What the pipeline and the query side need from a store, whatever the backend.

The embedded Parquet+DuckDB store implements these today; a ClickHouse
backend implements the same two protocols later, so callers never branch on
the backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import pyarrow as pa

Batch = pa.Table | pa.RecordBatch | list[dict[str, Any]]


class StoreError(Exception):
    """A store cannot be opened or used; the message says what to do."""


class StoreWriter(Protocol):
    def write(self, table: str, batch: Batch) -> None:
        """Buffer rows of one table (records.TABLE_FIELDS); nothing is visible before flush()."""

    def flush(self) -> None:
        """Make every buffered row durable and visible to readers."""

    def close(self) -> None:
        """Flush and release the store."""


class StoreReader(Protocol):
    def sql(self, query: str, params: Sequence[Any] = ()) -> pa.Table:
        """Run one read-only query; tables are visible under their records.* names."""

    def close(self) -> None: ...
