"""`bpfnetlog query`: prints records as a table, a JSON array or JSON lines.

Every shown value comes from captured packets, i.e. from an attacker: the
table renders them as plain Text (no rich markup) with control characters
made visible, so a crafted HTTP path cannot restyle or hijack the terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bpfnetlog.query.run import run_query
from bpfnetlog.records import L4_SOURCE, L7_SOURCE
from bpfnetlog.store import StoreError

Record = dict[str, Any]
Column = tuple[str, Callable[[Record], Any]]


def _time(r: Record) -> str:
    t = r.get("time")
    if t is None:
        return ""
    return datetime.fromtimestamp(t / 1e9).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _endpoint(ip_field: str, port_field: str) -> Callable[[Record], str]:
    def show(r: Record) -> str:
        ip, port = r.get(ip_field), r.get(port_field)
        if ip is None:
            return ""
        host = f"[{ip}]" if ":" in ip else ip
        return host if port is None else f"{host}:{port}"

    return show


def _pair(a: str, b: str) -> Callable[[Record], str]:
    """tx/rx style "a/b" of two counters."""

    def show(r: Record) -> str:
        return "/".join("-" if r.get(f) is None else str(r[f]) for f in (a, b))

    return show


def _field(name: str) -> Callable[[Record], Any]:
    return lambda r: r.get(name)


def _l4_summary(r: Record) -> str:
    return f"pkts {_pair('tx_packets', 'rx_packets')(r)} bytes {_pair('tx_bytes', 'rx_bytes')(r)} retrans {_pair('tx_retrans', 'rx_retrans')(r)}"


def _l7_summary(r: Record) -> str:
    parts = [r.get("http_method") or r.get("request_type"), r.get("http_path") or r.get("request_resource")]
    code = r.get("http_status_code") or r.get("response_code")
    return " ".join(str(p) for p in (*parts, code) if p is not None)


_COMMON_HEAD: list[Column] = [
    ("time", _time),
    ("nic", _field("nic_name")),
    ("src", _endpoint("src_ip", "src_port")),
    ("dst", _endpoint("dst_ip", "dst_port")),
]
_COLUMNS: dict[str, list[Column]] = {
    L4_SOURCE: _COMMON_HEAD
    + [
        ("l4", _field("l4_proto")),
        ("l7", _field("l7_proto")),
        ("pkts tx/rx", _pair("tx_packets", "rx_packets")),
        ("bytes tx/rx", _pair("tx_bytes", "rx_bytes")),
        ("retrans tx/rx", _pair("tx_retrans", "rx_retrans")),
        ("rtt us", _field("tcp_rtt")),
        ("state", _field("conn_state")),
        ("close", _field("close_type")),
        ("status", _field("status")),
    ],
    L7_SOURCE: _COMMON_HEAD
    + [
        ("l7", _field("l7_proto")),
        ("method", lambda r: r.get("http_method") or r.get("request_type")),
        ("path", lambda r: r.get("http_path") or r.get("request_resource")),
        ("code", lambda r: r.get("http_status_code") or r.get("response_code")),
        ("duration us", _field("response_duration")),
        ("status", _field("status")),
    ],
}
_MIXED: list[Column] = [
    _COMMON_HEAD[0],
    ("source", lambda r: {L4_SOURCE: "l4", L7_SOURCE: "l7"}.get(r["source"], r["source"])),
    *_COMMON_HEAD[1:],
    ("l7", _field("l7_proto")),
    ("summary", lambda r: _l4_summary(r) if r["source"] == L4_SOURCE else _l7_summary(r)),
    ("status", _field("status")),
]
_STYLE = {"error": "red", "warning": "yellow"}


def _safe(value: Any) -> Text:
    """Plain text, control characters shown as escapes instead of reaching the terminal."""
    if value is None:
        return Text("")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    return Text(text)


def columns_for(records: list[Record]) -> list[Column]:
    """Per-source columns when every record has one source, a mixed set otherwise."""
    sources = {r["source"] for r in records}
    if len(sources) == 1:
        source = sources.pop()
        if source in _COLUMNS:
            return _COLUMNS[source]
        return [(name, _field(name)) for name in records[0] if name != "source"]
    return _MIXED


def print_table(records: list[Record], console: Console) -> None:
    if not records:
        console.print("no records match", style="dim")
        return
    columns = columns_for(records)
    table = Table(header_style="bold")
    for name, _ in columns:  # wrap, never cut: a cut path or IP misleads
        table.add_column(name, overflow="fold", no_wrap=name == "time")
    for r in records:
        table.add_row(*[_safe(show(r)) for _, show in columns], style=_STYLE.get(r.get("status") or ""))
    console.print(table)


def query_command(store: Path, text: str, fmt: str, limit: int, t_from: str | None, t_to: str | None) -> int:
    """Body of `bpfnetlog query`; returns the exit code (2 for a bad query, time or store)."""
    if fmt not in ("table", "json", "jsonl"):
        print(f"error: --format is table, json or jsonl, not {fmt!r}", file=sys.stderr)
        return 2
    try:
        records = run_query(store, text, limit=limit, t_from=t_from, t_to=t_to)
    except (ValueError, StoreError) as e:  # QueryError is a ValueError; so is a negative --limit
        print(f"error: {e}", file=sys.stderr)
        return 2
    if fmt == "json":
        json.dump(records, sys.stdout)  # ASCII: C1 control characters stay escaped
        sys.stdout.write("\n")
    elif fmt == "jsonl":
        for r in records:
            sys.stdout.write(json.dumps(r) + "\n")
    else:
        console = Console()
        if not console.is_terminal:  # piped: one line per record where possible, for grep
            console = Console(width=max(console.width, 240))
        print_table(records, console)
    return 0
