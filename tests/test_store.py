"""The embedded store: durability, concurrent readers, compaction, retention."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bpfnetlog.records import L4_SOURCE, L7_SOURCE, SCHEMAS, STATS_TABLE
from bpfnetlog.store import MaintenancePolicy, ParquetStoreWriter, StoreError, open_reader, open_writer
from bpfnetlog.store.layout import HOUR_NS, list_segments, live_segments

T0 = 1_790_000_000 // 3600 * 3600 * 10**9  # a fixed hour-aligned instant (2026-09)


def l7_rows(start: int, n: int, t: int = T0) -> list[dict]:
    return [{"time": t + i, "conn_id": f"c{start + i}", "http_status_code": 200} for i in range(n)]


def count(store: Path, table: str = L7_SOURCE) -> tuple[int, int]:
    """(rows, distinct conn_id) of a table: equal when nothing is duplicated."""
    with open_reader(store) as r:
        n, distinct = r.sql(f'SELECT count(*), count(DISTINCT conn_id) FROM "{table}"').to_pylist()[0].values()
    return n, distinct


def test_write_flush_read_roundtrip(tmp_path: Path) -> None:
    with open_writer(tmp_path / "s") as w:
        w.write(L7_SOURCE, [{"time": T0, "src_ip": "10.0.0.1", "http_status_code": 503, "virtual_nic": True}])
        w.write(L7_SOURCE, pa.table({"time": pa.array([T0 + 1]), "http_method": ["GET"]}))
        with open_reader(tmp_path / "s") as r:
            assert r.sql(f'SELECT count(*) AS n FROM "{L7_SOURCE}"').to_pylist() == [{"n": 0}]  # not flushed
        w.flush()
        rows = open_reader(tmp_path / "s").sql(f'SELECT * FROM "{L7_SOURCE}" ORDER BY time').to_pylist()
    assert [(r["src_ip"], r["http_status_code"], r["virtual_nic"], r["http_method"]) for r in rows] == [
        ("10.0.0.1", 503, True, None),
        (None, None, None, "GET"),
    ]
    assert set(rows[0]) == set(SCHEMAS[L7_SOURCE].names)


def test_empty_and_unwritten_tables_query_with_schema(tmp_path: Path) -> None:
    open_writer(tmp_path).close()
    with open_reader(tmp_path) as r:
        for table, schema in SCHEMAS.items():
            result = r.sql(f'SELECT * FROM "{table}"')
            assert result.num_rows == 0
            assert result.schema.names == schema.names
            assert result.schema.types == schema.types


def test_missing_store_error_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store at .*--store"):
        open_reader(tmp_path / "nope")


def test_unknown_table_and_fields_are_refused(tmp_path: Path) -> None:
    with open_writer(tmp_path) as w:
        with pytest.raises(ValueError, match="unknown table"):
            w.write("nope", [{"time": 1}])
        with pytest.raises(ValueError, match="http_stauts"):
            w.write(L7_SOURCE, [{"time": 1, "http_stauts": 1}])
        with pytest.raises(ValueError, match="bogus"):
            w.write(L4_SOURCE, pa.table({"time": [1], "bogus": [2]}))


def test_rows_are_partitioned_by_hour_of_time(tmp_path: Path) -> None:
    with open_writer(tmp_path) as w:
        w.write(L4_SOURCE, [{"time": T0 + h * HOUR_NS, "conn_id": str(h)} for h in (2, 0, 1, 0)])
    hours = {s.hour for s in list_segments(tmp_path, L4_SOURCE)}
    assert len(hours) == 3
    # A time window only lists the hours it overlaps.
    assert len(live_segments(tmp_path, L4_SOURCE, T0 + HOUR_NS, T0 + HOUR_NS + 1)) == 1
    with open_reader(tmp_path, T0 + HOUR_NS, T0 + 2 * HOUR_NS) as r:
        assert r.sql(f'SELECT conn_id FROM "{L4_SOURCE}"').to_pylist() == [{"conn_id": "1"}]


def test_stats_table(tmp_path: Path) -> None:
    with open_writer(tmp_path) as w:
        w.write(STATS_TABLE, [{"time": T0, "source": "ebpf", "packets": 10, "dropped": 2, "errors": ""}])
    with open_reader(tmp_path) as r:
        assert r.sql(f'SELECT source, packets, dropped FROM "{STATS_TABLE}"').to_pylist() == [
            {"source": "ebpf", "packets": 10, "dropped": 2}
        ]


def test_second_writer_is_refused_and_lock_released_on_close(tmp_path: Path) -> None:
    w = open_writer(tmp_path)
    with pytest.raises(StoreError, match=f"pid {os.getpid()}"):
        open_writer(tmp_path)
    w.close()
    open_writer(tmp_path).close()


def test_sequence_continues_after_reopen(tmp_path: Path) -> None:
    for i in range(3):
        with open_writer(tmp_path) as w:
            w.write(L7_SOURCE, l7_rows(i * 10, 10))
    assert [s.first for s in list_segments(tmp_path, L7_SOURCE)] == [1, 2, 3]
    assert count(tmp_path) == (30, 30)


def test_compaction_merges_runs_and_keeps_every_row(tmp_path: Path) -> None:
    policy = MaintenancePolicy(compact_min_files=4)
    with ParquetStoreWriter(tmp_path, policy, maintenance_interval=1e9) as w:
        for i in range(10):
            w.write(L7_SOURCE, l7_rows(i * 5, 5, T0 + (HOUR_NS if i >= 7 else 0)))
            w.flush()
        w.maintain()
        segs = live_segments(tmp_path, L7_SOURCE)
        # hour 1: segments 1..7 merged; hour 2: 8..10 is too short a run to merge
        assert [(s.first, s.last) for s in segs] == [(1, 7), (8, 8), (9, 9), (10, 10)]
        w.write(L7_SOURCE, l7_rows(50, 5))
        w.flush()
    assert count(tmp_path) == (55, 55)


def _compact_for_an_hour(segment_bytes: int) -> tuple[float, int]:
    """An hour of 5 s flushes of `segment_bytes` each, compaction planned every minute (merges
    simulated): (bytes rewritten / bytes written, live files at the end)."""
    from bpfnetlog.store.layout import Segment
    from bpfnetlog.store.maintain import compaction_runs

    live: list = []
    written = rewritten = 0
    for minute in range(60):
        for k in range(12):
            seq = minute * 12 + k + 1
            live.append(Segment(L7_SOURCE, "h", seq, seq, Path("x"), segment_bytes, 0.0))
            written += segment_bytes
        for run in compaction_runs(live, MaintenancePolicy()):
            size = sum(seg.size for seg in run)
            rewritten += size
            at = live.index(run[0])
            live[at : at + len(run)] = [Segment(L7_SOURCE, "h", run[0].first, run[-1].last, Path("x"), size, 0.0)]
    return rewritten / written, len(live)


@pytest.mark.parametrize(("segment_bytes", "most_rewrites", "most_files"),
                         [(30_000, 2, 12), (300_000, 1, 60), (3_600_000, 0, 720)])  # fmt: skip
def test_compaction_rewrites_each_row_a_few_times_not_every_minute(segment_bytes: int, most_rewrites: int,
                                                                   most_files: int) -> None:  # fmt: skip
    """Merged files merge only with files of their size class: a row is rewritten at most once
    per class (twice), while the file count still falls; segments of 2 MB and more (a busy
    capture's 5 s flush of packet rows) are left as they are. (Merging a minute's merge again
    with each next minute's flushes rewrote 30 KB flushes 30 times over an hour.)"""
    factor, files = _compact_for_an_hour(segment_bytes)
    assert factor <= most_rewrites
    assert files <= most_files


def test_merge_sources_stay_invisible_until_the_next_run(tmp_path: Path) -> None:
    """Also the state a crash between a merge's rename and any delete leaves."""
    with ParquetStoreWriter(tmp_path, MaintenancePolicy(compact_min_files=2), 1e9) as w:
        for i in range(3):
            w.write(L7_SOURCE, l7_rows(i * 5, 5))
            w.flush()
        w.maintain()
        assert len(list_segments(tmp_path, L7_SOURCE)) == 4  # merged + its 3 sources
        assert [(s.first, s.last) for s in live_segments(tmp_path, L7_SOURCE)] == [(1, 3)]
        assert count(tmp_path) == (15, 15)
        w.maintain()
    assert [(s.first, s.last) for s in list_segments(tmp_path, L7_SOURCE)] == [(1, 3)]


def test_retention_by_age_and_size(tmp_path: Path) -> None:
    w = ParquetStoreWriter(tmp_path, MaintenancePolicy(retention_hours=1.0, compact_min_files=1000), 1e9)
    for i in range(6):
        w.write(L7_SOURCE, l7_rows(i * 100, 100))
        w.flush()
    segs = list_segments(tmp_path, L7_SOURCE)
    old = time.time() - 2 * 3600
    for s in segs[:2]:
        os.utime(s.path, (old, old))
    w.maintain()
    assert count(tmp_path) == (400, 400)
    w.policy = MaintenancePolicy(retention_bytes=sum(s.size for s in segs[-2:]))
    w.maintain()
    remaining = list_segments(tmp_path, L7_SOURCE)
    assert [s.first for s in remaining] == [s.first for s in segs[-2:]]  # the newest survive
    w.policy = MaintenancePolicy(retention_bytes=0)
    w.maintain()
    assert not (tmp_path / L7_SOURCE).exists() or not any((tmp_path / L7_SOURCE).iterdir())
    w.close()
    assert count(tmp_path) == (0, 0)


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    from bpfnetlog.store import MaintenancePolicy, ParquetStoreWriter
    store, batches, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    w = ParquetStoreWriter(store, MaintenancePolicy(compact_min_files=3), maintenance_interval=0.0)
    for b in range(batches):
        w.write("bpf_net_l7_log", [
            {"time": 1790000000000000000 + (b % 3) * 3600 * 10**9 + i, "conn_id": f"{b}-{i}"}
            for i in range(per)
        ])
        w.flush()
        print(b, flush=True)
    w.close()
    """
)


def start_writer(store: Path, batches: int, per: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(store), str(batches), str(per)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def test_concurrent_reader_sees_no_duplicates_or_losses(tmp_path: Path) -> None:
    """A writer flushing and compacting in a loop (another process) while we query."""
    per = 50
    writer = start_writer(tmp_path, 300, per)
    assert writer.stdout is not None
    writer.stdout.readline()  # the store exists
    seen = []
    while writer.poll() is None:
        rows, distinct = count(tmp_path)
        assert rows == distinct, "a row was read twice"
        assert rows % per == 0, "a flush was read half"
        assert not seen or rows >= seen[-1], "rows vanished"
        seen.append(rows)
    assert writer.wait() == 0
    assert count(tmp_path) == (300 * per, 300 * per)
    assert len(seen) > 10
    assert len(list_segments(tmp_path, L7_SOURCE)) < 300  # compaction did run


def test_kill_9_of_the_writer_leaves_readable_data(tmp_path: Path) -> None:
    per = 1000
    writer = start_writer(tmp_path, 10**6, per)
    assert writer.stdout is not None
    for _ in range(20):
        writer.stdout.readline()
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    rows, distinct = count(tmp_path)
    assert rows == distinct and rows >= 20 * per and rows % per == 0
    with open_writer(tmp_path) as w:  # the lock died with the process; partial files are cleaned
        assert not list(tmp_path.glob("*/*/*.tmp"))
        w.write(L7_SOURCE, [{"time": T0, "conn_id": "after"}])
    assert count(tmp_path) == (rows + 1, distinct + 1)


def test_dictionary_text_reads_back_as_plain_strings(tmp_path: Path) -> None:
    """Text built as dictionaries (store.columns) is stored so: nulls among the distinct values
    become null rows, a flush mixing dictionary and plain batches keeps every value, readers and
    compaction see the plain strings of records.py."""
    from bpfnetlog.store.columns import dictionary

    tags = pa.array(["eth0", None, "veth1"])
    with open_writer(tmp_path / "s") as w:
        w.write(L7_SOURCE, pa.table({"time": pa.array([T0, T0 + 1, T0 + 2, T0 + 3]),
                                     "nic_name": dictionary([0, 1, 2, 0], tags),
                                     "conn_id": dictionary([0, 0, 1, 1], pa.array(["c1", "c2"]))}))  # fmt: skip
        w.write(L7_SOURCE, pa.table({"time": pa.array([T0 + 4]), "nic_name": ["lo"], "conn_id": ["c3"]}))
    with open_reader(tmp_path / "s") as r:
        rows = r.sql(f'SELECT nic_name, conn_id FROM "{L7_SOURCE}" ORDER BY time').to_pylist()
    assert rows == [{"nic_name": "eth0", "conn_id": "c1"}, {"nic_name": None, "conn_id": "c1"},
                    {"nic_name": "veth1", "conn_id": "c2"}, {"nic_name": "eth0", "conn_id": "c2"},
                    {"nic_name": "lo", "conn_id": "c3"}]  # fmt: skip
    segment = next((tmp_path / "s" / L7_SOURCE).glob("*/*.parquet"))
    assert pq.read_schema(segment).field("nic_name").type == pa.string()


def test_segments_keep_dictionary_and_split_integer_encodings(tmp_path: Path) -> None:
    """Connection tags repeat across connections (many on one NIC), and each flush joins batches
    with their own dictionaries: the segment still stores text as one dictionary (not plain text)
    and integers byte-stream-split, and every value reads back unchanged."""
    from bpfnetlog.store.columns import dictionary

    with open_writer(tmp_path / "s") as w:
        for b in range(2):  # per-connection values, several connections on the same NIC
            w.write(L7_SOURCE, pa.table({"time": pa.array([T0 + 3 * b + i for i in range(3)]),
                                         "nic_name": dictionary([0, 1, 2], pa.array(["eth0", f"veth{b}", "eth0"])),
                                         "src_port": pa.array([80, 8080 + b, 443], pa.int32())}))  # fmt: skip
    segment = next((tmp_path / "s" / L7_SOURCE).glob("*/*.parquet"))
    columns = pq.ParquetFile(segment).metadata.row_group(0)
    encodings = {columns.column(i).path_in_schema: columns.column(i).encodings for i in range(columns.num_columns)}
    assert "RLE_DICTIONARY" in encodings["nic_name"] and "PLAIN" not in encodings["nic_name"][1:]
    assert "BYTE_STREAM_SPLIT" in encodings["src_port"] and "BYTE_STREAM_SPLIT" in encodings["time"]
    with open_reader(tmp_path / "s") as r:
        rows = r.sql(f'SELECT nic_name, src_port FROM "{L7_SOURCE}" ORDER BY time').to_pylist()
    assert [(x["nic_name"], x["src_port"]) for x in rows] == [
        ("eth0", 80), ("veth0", 8080), ("eth0", 443), ("eth0", 80), ("veth1", 8081), ("eth0", 443)]


def test_all_null_columns_are_not_written_and_read_back_as_typed_nulls(tmp_path: Path) -> None:
    """A column null on every row of a flush is left out of its segment (no bytes, no write time);
    readers still see it, typed as records.py says, null there and set where another segment has it."""
    with open_writer(tmp_path / "s") as w:
        w.write(L7_SOURCE, [{"time": T0, "conn_id": "a"}])  # no redis_command, no status code
        w.flush()
        w.write(L7_SOURCE, [{"time": T0 + 1, "conn_id": "b", "redis_command": "GET"}])
    first = sorted((tmp_path / "s" / L7_SOURCE).glob("*/*.parquet"))[0]
    assert "redis_command" not in pq.read_schema(first).names and "time" in pq.read_schema(first).names
    with open_reader(tmp_path / "s") as r:
        got = r.sql(f'SELECT conn_id, redis_command, http_status_code FROM "{L7_SOURCE}" ORDER BY time')
    assert got.to_pylist() == [{"conn_id": "a", "redis_command": None, "http_status_code": None},
                               {"conn_id": "b", "redis_command": "GET", "http_status_code": None}]  # fmt: skip
    assert got.schema.field("http_status_code").type == SCHEMAS[L7_SOURCE].field("http_status_code").type


def test_merge_keeps_order_encodings_and_columns_some_sources_lack(tmp_path: Path) -> None:
    """Compaction rewrites segments in their order (each flush's rows as the writer grouped
    them, not re-sorted by time), text still one dictionary, a column missing from a source
    null on its rows."""
    from bpfnetlog.store.columns import dictionary

    with ParquetStoreWriter(tmp_path, MaintenancePolicy(compact_min_files=3), 1e9) as w:
        for b in range(3):
            cols = {"time": pa.array([T0 + 10 - b, T0 + 20 - b]),  # out of time order across flushes
                    "nic_name": dictionary([0, 1], pa.array([f"veth{b}", "eth0"]))}  # fmt: skip
            if b != 1:
                cols["redis_command"] = pa.array(["GET", None])
            w.write(L7_SOURCE, pa.table(cols))
            w.flush()
        w.maintain()
        (merged,) = live_segments(tmp_path, L7_SOURCE)
        assert (merged.first, merged.last) == (1, 3)
    got = pq.read_table(merged.path)
    assert got.column("time").to_pylist() == [T0 + 10, T0 + 20, T0 + 9, T0 + 19, T0 + 8, T0 + 18]
    assert got.column("nic_name").to_pylist() == ["veth0", "eth0", "veth1", "eth0", "veth2", "eth0"]
    assert got.column("redis_command").to_pylist() == ["GET", None, None, None, "GET", None]
    meta = pq.ParquetFile(merged.path).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert "RLE_DICTIONARY" in encodings["nic_name"] and "PLAIN" not in encodings["nic_name"][1:]
