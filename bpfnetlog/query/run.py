"""Running a query against a store: what the CLI and the viewer call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bpfnetlog.query.compile import Sql, compile_query
from bpfnetlog.query.timeparse import parse_time
from bpfnetlog.records import SCHEMAS
from bpfnetlog.store import open_reader

TimeArg = int | str | None


def _ns(t: TimeArg) -> int | None:
    return None if t is None else parse_time(t)


def _window(low: int | None, high: int | None) -> Sql:
    """The SQL condition on `time` of [low, high) (ns; None: open)."""
    parts, params = ["TRUE"], []
    if low is not None:
        parts.append("time >= ?")
        params.append(low)
    if high is not None:
        parts.append("time < ?")
        params.append(high)
    return Sql(" AND ".join(parts), tuple(params))


def run_query(
    store_dir: Path | str,
    text: str,
    *,
    limit: int = 100,
    t_from: TimeArg = None,
    t_to: TimeArg = None,
    order: str = "desc",
) -> list[dict[str, Any]]:
    """Records matching `text` in [t_from, t_to), newest first (or oldest with order="asc").

    Each record has every field of its table plus "source" (the table name).
    Raises QueryError for a bad query or time, StoreError for a missing store.
    """
    if order not in ("asc", "desc"):
        raise ValueError(f"order is asc or desc, not {order!r}")
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}")
    wheres = compile_query(text)
    low, high = _ns(t_from), _ns(t_to)
    window = _window(low, high)
    records: list[dict[str, Any]] = []
    with open_reader(store_dir, low, high) as reader:
        for table, where in wheres.items():
            names = SCHEMAS[table].names
            sql = (
                f'SELECT * FROM "{table}" WHERE ({where.text}) AND {window.text} '
                f"ORDER BY time {order.upper()} NULLS LAST LIMIT ?"
            )
            result = reader.sql(sql, [*where.params, *window.params, limit])
            for row in result.select(names).to_pylist():
                row["source"] = table
                records.append(row)
    records.sort(key=lambda r: r["time"] if r["time"] is not None else -1, reverse=order == "desc")
    return records[:limit]


def count_histogram(
    store_dir: Path | str, text: str, t_from: int | str, t_to: int | str, buckets: int = 60
) -> list[dict[str, int]]:
    """Counts per time bucket for the viewer: [{"time": start_ns, "count": n, <source>: n, ...}]."""
    wheres = compile_query(text)
    low, high = parse_time(t_from), parse_time(t_to)
    window = _window(low, high)
    width = max(1, -(-(high - low) // buckets))
    rows = [{"time": low + i * width, "count": 0, **{t: 0 for t in wheres}} for i in range(buckets)]
    with open_reader(store_dir, low, high) as reader:
        for table, where in wheres.items():
            sql = (
                f'SELECT (time - ?) // ? AS bucket, count(*) AS n FROM "{table}" '
                f"WHERE ({where.text}) AND {window.text} GROUP BY bucket"
            )
            for hit in reader.sql(sql, [low, width, *where.params, *window.params]).to_pylist():
                rows[hit["bucket"]][table] += hit["n"]
                rows[hit["bucket"]]["count"] += hit["n"]
    return rows
