"""Queries end to end: known rows in a store, exact result sets."""

from __future__ import annotations

import json
import ipaddress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfnetlog.query import QueryError, count_histogram, run_query
from bpfnetlog.query.output import query_command
from bpfnetlog.records import L4_SOURCE, L7_SOURCE, SCHEMAS
from bpfnetlog.store import open_writer

T0 = 1_790_000_000 // 3600 * 3600 * 10**9
SEC = 10**9

L7_ROWS = [
    dict(conn_id="a", src_ip="10.0.0.1", dst_ip="192.168.1.10", http_method="GET", http_path="/api/users", http_status_code=200, nic_name="eth0", virtual_nic=True),
    dict(conn_id="b", src_ip="10.255.255.255", dst_ip="192.168.1.10", http_method="POST", http_path="/api/login", http_status_code=500, nic_name="veth1", virtual_nic=False),
    dict(conn_id="c", src_ip="11.0.0.0", dst_ip="192.168.1.11", http_method="GET", http_path="/health", http_status_code=503, nic_name="eth0", virtual_nic=False),
    dict(conn_id="d", src_ip="9.255.255.255", dst_ip="fe80::1", http_method="GET", http_path="/100%_done", http_status_code=404, nic_name="br0"),
    dict(conn_id="e", src_ip="2001:db8::1", dst_ip="2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", http_method="PUT", http_path="/a b", nic_name="eth1"),
    dict(conn_id="f", src_ip="2001:db9::", dst_ip="::ffff:10.0.0.1", http_method="GET", http_path="/x' OR 1=1 --", http_status_code=502, nic_name="eth0"),
]
L4_ROWS = [
    dict(conn_id="a", src_ip="10.0.0.1", tcp_rtt=1, tx_retrans=0, nic_name="eth0", status="info"),
    dict(conn_id="g", src_ip="10.1.2.3", tcp_rtt=10, tx_retrans=3, nic_name="eth0", status="warning"),
    dict(conn_id="h", src_ip="172.16.0.1", tcp_rtt=11, tx_retrans=0, nic_name="veth1", status="error"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store")
    with open_writer(path) as w:
        w.write(L7_SOURCE, [dict(r, time=T0 + i * SEC) for i, r in enumerate(L7_ROWS)])
        w.write(L4_SOURCE, [dict(r, time=T0 + i * SEC) for i, r in enumerate(L4_ROWS)])
    return path


def ids(store: Path, query: str, **kw) -> list[str]:
    return sorted(f"{r['source'][8:10]}:{r['conn_id']}" for r in run_query(store, query, **kw))


@pytest.mark.parametrize(
    "query, expected",
    [
        ("", ["l4:a", "l4:g", "l4:h", "l7:a", "l7:b", "l7:c", "l7:d", "l7:e", "l7:f"]),
        ("source:bpf_net_l7_log http_status_code:>=500", ["l7:b", "l7:c", "l7:f"]),
        ("source:bpf_net_l7_log AND http_status_code:>=500 AND NOT src_ip:10.0.0.0/8", ["l7:c", "l7:f"]),
        ("http_status_code:>500", ["l7:c", "l7:f"]),
        ("http_status_code:<404", ["l7:a"]),
        ("http_status_code:<=404", ["l7:a", "l7:d"]),
        ("http_status_code:[404 TO 502]", ["l7:b", "l7:d", "l7:f"]),
        ("http_status_code:{404 TO 502}", ["l7:b"]),
        ("http_status_code:[500 TO *]", ["l7:b", "l7:c", "l7:f"]),
        ("tcp_rtt:[1 TO 10]", ["l4:a", "l4:g"]),
        ("tcp_rtt:{1 TO 10]", ["l4:g"]),
        ("-http_status_code:500 source:bpf_net_l7_log", ["l7:a", "l7:c", "l7:d", "l7:e", "l7:f"]),  # e: no status
        ("http_status_code:*", ["l7:a", "l7:b", "l7:c", "l7:d", "l7:f"]),
        ("http_path:/api/*", ["l7:a", "l7:b"]),
        ("http_path:/api/?sers", ["l7:a"]),
        ("http_path:/100%_*", ["l7:d"]),  # % and _ are literal
        ("http_path:/100_*", []),
        ('http_path:"/a b"', ["l7:e"]),
        ("http_path:\"/x' OR 1=1 --\"", ["l7:f"]),
        ("http_method:(PUT OR POST)", ["l7:b", "l7:e"]),
        ("nic_name:eth0 AND (tx_retrans:>0 OR http_method:POST)", ["l4:g"]),
        ("nic_name:eth0 tx_retrans:>0 OR nic_name:veth1", ["l4:g", "l4:h", "l7:b"]),
        ("virtual_nic:true", ["l7:a"]),
        ("virtual_nic:false", ["l7:b", "l7:c"]),
        ("status:error OR status:warning", ["l4:g", "l4:h"]),
        ("conn_id:a", ["l4:a", "l7:a"]),
        ("LOGIN", ["l7:b"]),  # bare word: case-insensitive, any text field
        ("172.16", ["l4:h"]),
        ("src_ip:10.0.0.0/8", ["l4:a", "l4:g", "l7:a", "l7:b"]),  # 10.255.255.255 in, 11.0.0.0 and 9.255.255.255 out
        ("src_ip:10.0.0.1/32", ["l4:a", "l7:a"]),
        ("src_ip:0.0.0.0/0", ["l4:a", "l4:g", "l4:h", "l7:a", "l7:b", "l7:c", "l7:d"]),
        ("src_ip:11.0.0.0/31", ["l7:c"]),
        ("src_ip:2001:db8::/32", ["l7:e"]),  # 2001:db9:: is out
        ("dst_ip:2001:db8::/32", ["l7:e"]),  # the last address of the network is in
        ("src_ip:::/0", ["l7:e", "l7:f"]),
        ("dst_ip:fe80::/10", ["l7:d"]),
        ("dst_ip:::ffff:0:0/96", ["l7:f"]),  # IPv4-mapped
        ("src_ip:2001:0db8:0:0::1", ["l7:e"]),  # another spelling of the same address
        ("src_ip:[10.0.0.1 TO 10.255.255.255]", ["l4:a", "l4:g", "l7:a", "l7:b"]),
        ("src_ip:{10.0.0.1 TO 10.255.255.255}", ["l4:g"]),
        ("src_ip:>=11.0.0.0", ["l4:h", "l7:c"]),
        ("src_ip:10.*", ["l4:a", "l4:g", "l7:a", "l7:b"]),
        ("source:bpf_net_l4_log OR http_status_code:404", ["l4:a", "l4:g", "l4:h", "l7:d"]),
    ],
)
def test_exact_result_sets(store: Path, query: str, expected: list[str]) -> None:
    assert ids(store, query) == expected


def test_records_have_every_field_plus_source_newest_first(store: Path) -> None:
    records = run_query(store, "", limit=4)
    assert [r["time"] for r in records] == [T0 + 5 * SEC, T0 + 4 * SEC, T0 + 3 * SEC, T0 + 2 * SEC]
    for r in records:
        assert list(r) == SCHEMAS[r["source"]].names + ["source"]
    oldest = run_query(store, "", limit=2, order="asc")
    assert [(r["time"], r["source"]) for r in oldest][0][0] == T0


def test_time_window_is_half_open(store: Path) -> None:
    assert ids(store, "source:bpf_net_l7_log", t_from=T0 + SEC, t_to=T0 + 3 * SEC) == ["l7:b", "l7:c"]
    assert ids(store, "", t_from=str(T0 + 2 * SEC), t_to=str(T0 + 3 * SEC)) == ["l4:h", "l7:c"]


def test_count_histogram(store: Path) -> None:
    hist = count_histogram(store, "", T0, T0 + 6 * SEC, 3)
    assert [(h["time"], h["count"], h[L4_SOURCE], h[L7_SOURCE]) for h in hist] == [
        (T0, 4, 2, 2),
        (T0 + 2 * SEC, 3, 1, 2),
        (T0 + 4 * SEC, 2, 0, 2),
    ]


def test_query_command_formats(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert query_command(store, "conn_id:a", "jsonl", 10, None, None) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["source"] for r in lines} == {L4_SOURCE, L7_SOURCE}
    assert all(set(r) == set(SCHEMAS[r["source"]].names) | {"source"} for r in lines)
    assert query_command(store, "conn_id:a", "json", 10, None, None) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert query_command(store, "source:bpf_net_l7_log", "table", 10, None, None) == 0
    out = capsys.readouterr().out
    assert "/api/login" in out and "veth1" in out


def test_query_command_errors(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert query_command(store, "tcp_rtt:>x", "table", 10, None, None) == 2
    err = capsys.readouterr().err
    assert "tcp_rtt is a number" in err and "^" in err
    assert query_command(tmp_path / "missing", "", "table", 10, None, None) == 2
    assert "no store at" in capsys.readouterr().err
    assert query_command(store, "", "table", 10, "last tuesday", None) == 2
    assert "not a time" in capsys.readouterr().err


def test_table_output_escapes_captured_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_writer(tmp_path) as w:
        w.write(L7_SOURCE, [{"time": T0, "http_path": "/[bold red]x[/]\x1b]0;pwned\x07", "http_method": "GET"}])
    assert query_command(tmp_path, "", "table", 10, None, None) == 0
    out = capsys.readouterr().out
    assert "\x1b]0" not in out and "\x07" not in out
    assert "[bold" in out  # shown as text, not applied as markup


_PIECES = list('ab:*?"\\()[]{}<>=-+!/ .05') + [
    "AND ", "OR ", "NOT ", " TO ", "src_ip:", "tcp_rtt:", "http_path:", "virtual_nic:", "source:bpf_net_l4_log",
    "fe80::", "10.0.0.0/8", "true", "-1",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
def test_random_queries_run_or_raise_query_error(store: Path, query: str) -> None:
    """Whatever compiles must also run: no DuckDB type or syntax error."""
    try:
        run_query(store, query)
    except QueryError:
        pass


def test_ip_forms_agree_with_python() -> None:
    """The SQL IPv4/IPv6 normalization against the ipaddress module, on many spellings."""
    import duckdb
    import pyarrow as pa

    from bpfnetlog.query.ipsql import ip4_int_sql, ip6_hex_sql

    texts = ["::", "::1", "1::", "1:2:3:4:5:6:7:8", "fe80::1:0:0:1", "::ffff:1.2.3.4", "64:ff9b::10.0.0.1",
             "0.0.0.0", "255.255.255.255", "1.2.3", "1.2.3.4.5", "x", "", "1::2::3", "12345::", ":::"]
    texts += [ipaddress.ip_address(n).exploded for n in (1, 2**128 - 1, 2**64, 2**127 + 5)]
    texts += [str(ipaddress.IPv6Address(n)).upper() for n in (2**112 * 0xFE80 + 1, 2**96 * 7)]
    con = duckdb.connect()
    con.register("t", pa.table({"ip": texts}))
    rows = con.sql(f'SELECT ip, {ip4_int_sql(chr(34) + "ip" + chr(34))}, {ip6_hex_sql(chr(34) + "ip" + chr(34))} FROM t').fetchall()
    for text, v4, v6 in rows:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            addr = None
        assert v4 == (int(addr) if addr and addr.version == 4 else None), text
        assert v6 == (addr.packed.hex() if addr and addr.version == 6 else None), text
