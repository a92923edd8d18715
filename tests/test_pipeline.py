"""The pipeline end to end on hand-built traces: exact L4 chunks, packet rows and L7 links."""

from __future__ import annotations

from pathlib import Path

from scapy.all import wrpcap  # type: ignore

from bpfnetlog.capture.pcap import PcapReader
from bpfnetlog.l4.roles import LocalNets
from bpfnetlog.pipeline import Pipeline, Timeouts
from bpfnetlog.records import L4_SOURCE, L7_SOURCE, PACKET_TABLE
from bpfnetlog.store.reader import DuckDBStoreReader
from bpfnetlog.store.writer import ParquetStoreWriter
from tests.test_l4_analysis import Conv, scenario


def run(pcap: Path, store: Path, local: list[str], batch_size: int = 262144, timeouts: Timeouts | None = None):
    with ParquetStoreWriter(store) as writer:
        pipe = Pipeline(writer, "h1", LocalNets(local), timeouts)
        reader = PcapReader(pcap, batch_size=batch_size, nic_name="eth0")
        for batch in reader.batches():
            pipe.feed(batch)
            pipe.tick()
        pipe.finish([reader.stats])
    reader = DuckDBStoreReader(store)

    def rows(table: str, order: str) -> list[dict]:
        return reader.sql(f'SELECT * FROM "{table}" ORDER BY {order}').to_pylist()

    return rows


def test_scenario_l4_records(tmp_path: Path) -> None:
    pcap = tmp_path / "s.pcap"
    wrpcap(str(pcap), scenario())
    rows = run(pcap, tmp_path / "store", ["10.1.0.1/32"])
    l4 = rows(L4_SOURCE, "start_time")
    assert len(l4) == 7
    first = l4[0]
    assert first["src_ip"] == "10.1.0.1" and first["src_port"] == 40001 and first["dst_port"] == 80
    assert (first["direction"], first["conn_side"]) == ("outgoing", "client")
    assert (first["client_ip"], first["server_ip"]) == ("10.1.0.1", "10.1.0.2")
    assert (first["tx_packets"], first["rx_packets"]) == (6, 4)  # S . P. . F. . / S. . P. F.
    assert (first["tx_bytes"], first["rx_bytes"]) == (27, 40)  # len of the request / response bytes
    assert first["nic_traceid"] == "1000_5000"
    assert (first["conn_state"], first["history"], first["close_type"]) == ("SF", "ShADadFf", "fin")
    assert first["chunk_syn"] and first["chunk_fin"] and first["chunk_id"] == 0
    assert (first["tcp_3whs_cost"], first["tcp_4whs_cost"], first["tcp_rtt"]) == (2000, 2000, 1000)
    assert (first["tx_seq_min"], first["tx_seq_max"]) == (1000, 1000 + 1 + 27 + 1)  # SYN, request, FIN
    assert first["l7_proto"] == "http" and first["status"] == "info"
    assert first["nic_name"] == "eth0" and first["host"] == "h1"
    lossy = l4[1]
    assert (lossy["rx_retrans"], lossy["tx_retrans"], lossy["dup_ack"], lossy["lost_segment"]) == (3, 0, 2, 1)
    assert (lossy["tx_zero_win"], lossy["tx_rst"], lossy["status"]) == (1, 1, "error")
    assert lossy["close_type"] == "rst"
    rej = l4[2]
    assert (rej["conn_state"], rej["tx_packets"], rej["rx_rst"]) == ("REJ", 1, 1)
    reuse = [r for r in l4 if r["src_port"] == 40001]
    assert len(reuse) == 2 and reuse[0]["conn_id"] != reuse[1]["conn_id"]
    assert reuse[1]["nic_traceid"] == "90000_70000"
    udp = l4[-1]
    assert (udp["l4_proto"], udp["dst_port"], udp["tx_packets"], udp["conn_state"]) == ("udp", 53, 1, "S0")

    pk = rows(PACKET_TABLE, "time")
    first_pk = [p for p in pk if p["conn_id"] == first["conn_id"]]
    assert [p["flags"] for p in first_pk] == ["S", "S.", ".", "P.", ".", "P.", ".", "F.", "F.", "."]
    assert [p["txrx"] for p in first_pk] == ["tx", "rx", "tx", "tx", "rx", "rx", "tx", "tx", "rx", "tx"]
    assert [p["idx"] for p in first_pk] == list(range(10))
    req = first_pk[3]
    l7 = rows(L7_SOURCE, "time")
    rec = [r for r in l7 if r["conn_id"] == first["conn_id"]]
    assert len(rec) == 1
    assert (req["l7_id"], req["http_method"], req["http_path"]) == (rec[0]["l7_id"], "GET", "/")
    assert first_pk[5]["l7_id"] == rec[0]["l7_id"]  # the response's first packet
    assert rec[0]["req_seq"] == req["seq"] == 1001 and rec[0]["resp_seq"] == 5001
    assert rec[0]["l7_traceid"] == "1001_5001"
    assert (rec[0]["tx_packets"], rec[0]["rx_packets"]) == (1, 1)
    lossy_pk = [p for p in pk if p["conn_id"] == lossy["conn_id"]]
    assert "fast_retransmission" in {a for p in lossy_pk for a in p["analysis"].split(",")}


def test_batch_size_does_not_change_records(tmp_path: Path) -> None:
    pcap = tmp_path / "s.pcap"
    wrpcap(str(pcap), scenario())
    fields = "conn_id, chunk_id, tx_packets, rx_packets, tx_bytes, rx_bytes, tx_retrans, rx_retrans, history, conn_state"
    whole = run(pcap, tmp_path / "a", ["10.1.0.1/32"])(L4_SOURCE, "conn_id, chunk_id")
    small = run(pcap, tmp_path / "b", ["10.1.0.1/32"], batch_size=3)(L4_SOURCE, "conn_id, chunk_id")
    pick = [f.strip() for f in fields.split(",")]
    assert [[r[f] for f in pick] for r in whole] == [[r[f] for f in pick] for r in small]


def test_long_connection_is_chunked_and_idle_timeout(tmp_path: Path) -> None:
    conv = Conv(40020)
    conv.handshake()
    for _ in range(600):
        conv.send("c", "PA", b"q" * 10, dt=0.0001)
    late = Conv(40021, t0=conv.t + 500)  # 500 s later: the first connection is idle by then
    late.handshake()
    pcap = tmp_path / "long.pcap"
    wrpcap(str(pcap), conv.pkts + late.pkts)
    rows = run(pcap, tmp_path / "store", ["10.1.0.1/32"], batch_size=100)
    l4 = [r for r in rows(L4_SOURCE, "start_time, chunk_id") if r["src_port"] == 40020]
    assert [r["chunk_id"] for r in l4] == [0, 1, 2]
    assert [r["packets"] for r in l4] == [256, 256, 91]
    assert [r["close_type"] for r in l4] == ["open", "open", "timeout"]
    assert [r["chunk_fin"] for r in l4] == [False, False, True]
    assert sum(r["tx_bytes"] for r in l4) == 6000


def test_kernel_ring_drops_reach_the_connection_records(tmp_path: Path) -> None:
    """Per-flow ring drops (the kernel's `lost` map) land on the connection's next record, once."""
    import numpy as np

    from bpfnetlog.capture.ebpf.record import FLOW_VAL
    from bpfnetlog.capture.ebpf.source import RingLosses
    from bpfnetlog.packets import Nic

    pcap = tmp_path / "s.pcap"
    wrpcap(str(pcap), scenario())
    store = tmp_path / "store"
    with ParquetStoreWriter(store) as writer:
        pipe = Pipeline(writer, "h1", LocalNets(["10.1.0.1/32"]))
        reader = PcapReader(pcap, nic_name="eth0")
        for batch in reader.batches():
            pipe.feed(batch)

        def ip(a: str) -> np.ndarray:
            return np.frombuffer(bytes(10) + b"\xff\xff" + bytes(int(x) for x in a.split(".")), np.uint8)

        vals = np.zeros(2, FLOW_VAL)
        vals["packets"] = [3, 4]  # both directions of the mid-stream connection 10.1.0.1:40006 <-> 10.1.0.2:6379
        fc = RingLosses(
            nic=np.zeros(2, np.uint16), direction=np.array([1, 2], np.uint8), proto=np.full(2, 6, np.uint8),
            src_ip=np.stack([ip("10.1.0.2"), ip("10.1.0.1")]), dst_ip=np.stack([ip("10.1.0.1"), ip("10.1.0.2")]),
            sport=np.array([6379, 40006], np.uint16), dport=np.array([40006, 6379], np.uint16), values=vals,
            nics=[Nic("eth0")],
        )
        seen: dict = {}
        pipe.account_drops(fc, seen)
        pipe.account_drops(fc, seen)  # cumulative counters: counted once
        pipe.finish([reader.stats])
    l4 = DuckDBStoreReader(store).sql(f'SELECT src_port, capture_drops, status FROM "{L4_SOURCE}"').to_pylist()
    assert {(r["src_port"], r["capture_drops"], r["status"]) for r in l4 if r["capture_drops"]} == {(40006, 7, "warning")}
    assert sum(r["capture_drops"] for r in l4) == 7


def test_capture_statistics_rows(tmp_path: Path) -> None:
    """A row per write_stats call, counters as given; rows of one run share `started`; a pcap has
    no live-only counters (null), a live source's headers-only and shed counts reach the store."""
    import time

    from bpfnetlog.capture.ebpf.source import LiveStats
    from bpfnetlog.records import STATS_TABLE

    pcap = tmp_path / "s.pcap"
    wrpcap(str(pcap), scenario())
    store = tmp_path / "store"
    before = time.time_ns()
    with ParquetStoreWriter(store) as writer:
        pipe = Pipeline(writer, "h1")
        reader = PcapReader(pcap, nic_name="eth0")
        for batch in reader.batches():
            pipe.feed(batch)
        pipe.write_stats([LiveStats("ebpf", packets=50, decoded=48, dropped=2, quiet=7, shed=3)])
        pipe.finish([reader.stats, LiveStats("ebpf", packets=90, decoded=88, dropped=2, quiet=9, shed=37)])
    after = time.time_ns()
    rows = DuckDBStoreReader(store).sql(
        f'SELECT source, started, packets, decoded, dropped, headers_only, payload_shed, host FROM "{STATS_TABLE}" '
        "ORDER BY source, packets").to_pylist()  # fmt: skip
    started = {r.pop("started") for r in rows}
    assert len(started) == 1 and before <= started.pop() <= after
    n = reader.stats.packets
    assert n == len(scenario())
    assert rows == [
        {"source": "ebpf", "packets": 50, "decoded": 48, "dropped": 2, "headers_only": 7, "payload_shed": 3, "host": "h1"},
        {"source": "ebpf", "packets": 90, "decoded": 88, "dropped": 2, "headers_only": 9, "payload_shed": 37, "host": "h1"},
        {"source": "s.pcap", "packets": n, "decoded": n, "dropped": 0, "headers_only": None, "payload_shed": None,
         "host": "h1"},
    ]  # fmt: skip


def test_capture_statistics_before_any_packet(tmp_path: Path) -> None:
    """A live capture's first flush on a quiet host: the row has the wall clock's time (not 0,
    which would file it under 1970's hour, where --from and retention never look)."""
    import time

    from bpfnetlog.capture.ebpf.source import LiveStats
    from bpfnetlog.records import STATS_TABLE

    before = time.time_ns()
    with ParquetStoreWriter(tmp_path / "store") as writer:
        pipe = Pipeline(writer, "h1")
        pipe.write_stats([LiveStats("ebpf")])
    after = time.time_ns()
    (row,) = DuckDBStoreReader(tmp_path / "store").sql(f'SELECT time, packets FROM "{STATS_TABLE}"').to_pylist()
    assert before <= row["time"] <= after and row["packets"] == 0
