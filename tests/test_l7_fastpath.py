"""The compiled HTTP/1 fast path gives the same records as the Python L7 engine alone.

`Pipeline(fast_l7=False)` is the reference: every connection through `l7.engine`.
Both runs read the same real captures (the lab pcap: keep-alive, pipelining with HEAD,
h2load, 5% loss -> retransmissions and handovers; the example capture) with small
batches, so connections cross batches, and every L7 record and every packet row
must be equal field by field.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfnetlog.capture.pcap import PcapReader
from bpfnetlog.l4.roles import LocalNets
from bpfnetlog.pipeline import Pipeline
from bpfnetlog.records import L4_SOURCE, L7_SOURCE, PACKET_TABLE
from bpfnetlog.store.reader import DuckDBStoreReader
from bpfnetlog.store.writer import ParquetStoreWriter

ROOT = Path(__file__).resolve().parents[1]


def read(pcap: Path, store: Path, fast: bool, batch_size: int) -> dict[str, list[dict]]:
    with ParquetStoreWriter(store) as writer:
        pipe = Pipeline(writer, "h1", LocalNets([]), fast_l7=fast)
        reader = PcapReader(pcap, batch_size=batch_size, nic_name="eth0")
        for batch in reader.batches():
            pipe.feed(batch)
            pipe.tick()
        pipe.finish([reader.stats])
        stats = dict(pipe.l7.stats)
    db = DuckDBStoreReader(store)
    out = {
        L7_SOURCE: db.sql(f'SELECT * FROM "{L7_SOURCE}" ORDER BY l7_id').to_pylist(),
        PACKET_TABLE: db.sql(f'SELECT * FROM "{PACKET_TABLE}" ORDER BY conn_id, idx').to_pylist(),
        L4_SOURCE: db.sql(f'SELECT * FROM "{L4_SOURCE}" ORDER BY conn_id, chunk_id').to_pylist(),
    }
    return out | {"stats": stats}


def assert_same(pcap: Path, tmp: Path, batch_size: int) -> dict:
    ref = read(pcap, tmp / "ref", False, batch_size)
    fast = read(pcap, tmp / "fast", True, batch_size)
    for table in (L7_SOURCE, PACKET_TABLE, L4_SOURCE):
        assert len(fast[table]) == len(ref[table]), table
        for a, b in zip(fast[table], ref[table]):
            diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
            assert not diff, (table, a.get("l7_id") or a.get("conn_id"), diff)
    for name in ("records", "markers", "timeouts", "dup_segments"):
        assert fast["stats"][name] == ref["stats"][name], name
    return fast


def test_example_capture_same_records(tmp_path: Path) -> None:
    out = assert_same(ROOT / "examples" / "sample.pcapng", tmp_path, 64)
    assert sum(r["l7_proto"] == "http" for r in out[L7_SOURCE]) > 10


@pytest.mark.lab
def test_lab_capture_same_records(lab_pcap, tmp_path: Path) -> None:
    out = assert_same(lab_pcap.path, tmp_path, 100)
    assert sum(r["pairing"] == "paired" for r in out[L7_SOURCE]) > 20
