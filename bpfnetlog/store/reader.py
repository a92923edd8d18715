"""The embedded store's reader: an in-memory DuckDB whose views are the live Parquet segments."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from bpfnetlog.records import SCHEMAS
from bpfnetlog.store.base import StoreError
from bpfnetlog.store.layout import live_segments

# A query fails with an IOException when compaction or retention deleted a file
# between our listing and DuckDB opening it; listing again fixes that. The waits between
# attempts (5 ms, doubling: 1.3 s in all) outlast a writer that maintains without pause
# (tests do; a merge's sources normally stay one maintenance interval, 60 s).
_ATTEMPTS = 9
_FIRST_WAIT_S = 0.005


class DuckDBStoreReader:
    """Read-only view of a store directory, safe while a writer works on it.

    Each sql() lists the live segments again, so it sees every flush that
    finished before it started. `t_from` / `t_to` (ns) only limit which hour
    directories are listed; callers still filter rows on `time`.
    """

    def __init__(self, root: Path | str, t_from: int | None = None, t_to: int | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise StoreError(
                f"no store at {self.root}: start a capture with `--store {self.root}` first, "
                "or point --store at the directory a capture wrote"
            )
        self.t_from, self.t_to = t_from, t_to
        self._con = duckdb.connect(":memory:")
        for i, schema in enumerate(SCHEMAS.values()):
            # The typed empty table keeps every column in the view, even before
            # the first flush or when old segments lack a newer field.
            self._con.register(f"_empty_{i}", schema.empty_table())

    def _refresh_views(self) -> None:
        for i, table in enumerate(SCHEMAS):
            files = [str(s.path) for s in live_segments(self.root, table, self.t_from, self.t_to)]
            if files:
                self._con.read_parquet(files, union_by_name=True).create_view(f"_files_{i}", replace=True)
                body = f"SELECT * FROM _files_{i} UNION ALL BY NAME SELECT * FROM _empty_{i}"
            else:
                body = f"SELECT * FROM _empty_{i}"
            self._con.execute(f'CREATE OR REPLACE TEMP VIEW "{table}" AS {body}')

    def sql(self, query: str, params: Sequence[Any] = ()) -> pa.Table:
        for attempt in range(_ATTEMPTS - 1):
            try:
                return self._run(query, params)
            except duckdb.IOException:
                time.sleep(_FIRST_WAIT_S * 2**attempt)
        return self._run(query, params)

    def _run(self, query: str, params: Sequence[Any]) -> pa.Table:
        self._refresh_views()
        return self._con.sql(query, params=list(params)).to_arrow_table()

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "DuckDBStoreReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
