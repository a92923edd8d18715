"""Where records go: the embedded store (Parquet segments read by DuckDB)."""
