"""AST -> one parameterized WHERE clause per table.

No text from the query ever reaches the SQL: a field name is used only after
it was found in records.TABLE_FIELDS (and it is quoted from there), every value
is a bound parameter. Semantics:

- a query without `source:` searches both log sources; `source:<table>` is
  TRUE in that table and FALSE in the others (any table of TABLE_FIELDS may be
  named, e.g. `source:bpf_net_packet seq:123`);
- a field missing from a table is FALSE there; a field missing from every
  searched table is an error;
- NOT is a set complement: `-http_status_code:500` also matches records with
  no status (SQL's NULL would hide them);
- text matches are exact and case-sensitive for `field:value` (with `*` / `?`
  wildcards), case-insensitive substring for a bare value (all text fields);
- `*_ip` fields take CIDRs (`10.0.0.0/8`, `fd00::/8`) and IP ranges compared
  as numbers.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from bpfnetlog.query.errors import QueryError
from bpfnetlog.query.ipsql import IPAddress, in_range_sql, network_sql
from bpfnetlog.query.syntax import And, Compare, Exists, FullText, MatchAll, Node, Not, Or, Range, Value, parse
from bpfnetlog.records import SOURCES, TABLE_FIELDS

SOURCE_FIELD = "source"
_FIELD_TYPES: dict[str, dict[str, pa.DataType]] = {t: dict(f) for t, f in TABLE_FIELDS.items()}


@dataclass(frozen=True)
class Sql:
    text: str
    params: tuple[Any, ...] = ()


TRUE = Sql("TRUE")
FALSE = Sql("FALSE")


def compile_query(text: str) -> dict[str, Sql]:
    """The WHERE clause of each table the query can match (tables where it is always FALSE are left out)."""
    try:
        node = parse(text)
        tables = _searched_tables(node)
        _check_fields(node, tables)
        wheres = {table: _TableCompiler(table).node(node) for table in tables}
    except QueryError as e:
        e.text = text
        raise
    return {table: where for table, where in wheres.items() if where != FALSE}


def _leaves(node: Node):
    if isinstance(node, (And, Or)):
        for item in node.items:
            yield from _leaves(item)
    elif isinstance(node, Not):
        yield from _leaves(node.item)
    else:
        yield node


def _searched_tables(node: Node) -> list[str]:
    """The log sources, plus any other table the query names with `source:`."""
    tables = list(SOURCES)
    for leaf in _leaves(node):
        if getattr(leaf, "field", None) != SOURCE_FIELD:
            continue
        if not isinstance(leaf, Compare) or leaf.op != "=" or leaf.value.like is not None:
            raise QueryError(f"source takes a table name: {', '.join(TABLE_FIELDS)}", leaf.field_pos)
        if leaf.value.text not in TABLE_FIELDS:
            raise QueryError(f"unknown source; sources: {', '.join(TABLE_FIELDS)}", leaf.value.pos)
        if leaf.value.text not in tables:
            tables.append(leaf.value.text)
    return tables


def _check_fields(node: Node, tables: list[str]) -> None:
    known = {name for t in tables for name in _FIELD_TYPES[t]}
    for leaf in _leaves(node):
        field = getattr(leaf, "field", SOURCE_FIELD)
        if field != SOURCE_FIELD and field not in known:
            close = difflib.get_close_matches(field, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise QueryError(f"unknown field {field!r}{hint}", leaf.field_pos)


def _number(value: Value, field: str) -> int | float:
    if value.like is not None:
        raise QueryError(f"wildcards only work on text fields; {field} is a number", value.pos)
    try:
        return int(value.text)
    except ValueError:
        pass
    try:
        number = float(value.text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise QueryError(f"{field} is a number; {value.text!r} is not", value.pos)
    return number


def _boolean(value: Value, field: str) -> bool:
    text = value.text.lower()
    if text not in ("true", "false"):
        raise QueryError(f"{field} is true or false", value.pos)
    return text == "true"


def _ip(value: Value | None) -> IPAddress | None:
    if value is None or value.like is not None:
        return None
    try:
        return ipaddress.ip_address(value.text)
    except ValueError:
        return None


def _like_escape(text: str) -> str:
    return "".join("\\" + c if c in "%_\\" else c for c in text)


_OPS = {"=": "=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}  # query op -> SQL op, never from input


class _TableCompiler:
    def __init__(self, table: str) -> None:
        self.table = table
        self.types = _FIELD_TYPES[table]

    def node(self, node: Node) -> Sql:
        if isinstance(node, MatchAll):
            return TRUE
        if isinstance(node, And):
            return self.combine("AND", [self.node(n) for n in node.items], neutral=TRUE, absorbing=FALSE)
        if isinstance(node, Or):
            return self.combine("OR", [self.node(n) for n in node.items], neutral=FALSE, absorbing=TRUE)
        if isinstance(node, Not):
            inner = self.node(node.item)
            if inner in (TRUE, FALSE):
                return FALSE if inner is TRUE else TRUE
            return Sql(f"NOT COALESCE(({inner.text}), FALSE)", inner.params)
        if isinstance(node, FullText):
            return self.full_text(node.value)
        if node.field == SOURCE_FIELD:
            return TRUE if node.value.text == self.table else FALSE
        if node.field not in self.types:
            return FALSE
        col = f'"{node.field}"'
        if isinstance(node, Exists):
            return Sql(f"{col} IS NOT NULL")
        if isinstance(node, Range):
            return self.range(node, col)
        return self.compare(node, col)

    @staticmethod
    def combine(op: str, parts: list[Sql], neutral: Sql, absorbing: Sql) -> Sql:
        if absorbing in parts:
            return absorbing
        parts = [p for p in parts if p != neutral]
        if not parts:
            return neutral
        if len(parts) == 1:
            return parts[0]
        return Sql(f" {op} ".join(f"({p.text})" for p in parts), tuple(x for p in parts for x in p.params))

    def typed(self, field: str, value: Value) -> Any:
        ftype = self.types[field]
        if pa.types.is_integer(ftype):
            return _number(value, field)
        if pa.types.is_boolean(ftype):
            return _boolean(value, field)
        return value.text

    def is_ip_field(self, field: str) -> bool:
        return field.endswith("_ip") and pa.types.is_string(self.types[field])

    def compare(self, node: Compare, col: str) -> Sql:
        value, op = node.value, node.op
        if self.is_ip_field(node.field) and not value.quoted and value.like is None:
            if op == "=" and "/" in value.text:
                try:
                    net = ipaddress.ip_network(value.text, strict=False)
                except ValueError:
                    raise QueryError(f"not a network (CIDR): {value.text!r}", value.pos) from None
                return Sql(*network_sql(col, net))
            addr = _ip(value)
            if addr is not None and op == "=":
                return Sql(f"{col} = ?", (str(addr),))
            if addr is not None:
                low, high = (addr, None) if op.startswith(">") else (None, addr)
                return Sql(*in_range_sql(col, low, high, addr.version, "=" in op, "=" in op))
        if op == "=" and value.like is not None and pa.types.is_string(self.types[node.field]):
            return Sql(f"{col} LIKE ? ESCAPE '\\'", (value.like,))
        return Sql(f"{col} {_OPS[op]} ?", (self.typed(node.field, value),))

    def range(self, node: Range, col: str) -> Sql:
        if self.is_ip_field(node.field):
            low, high = _ip(node.low), _ip(node.high)
            versions = {a.version for a in (low, high) if a is not None}
            all_ips = (low is not None or node.low is None) and (high is not None or node.high is None)
            if len(versions) == 1 and all_ips:
                return Sql(
                    *in_range_sql(col, low, high, versions.pop(), node.low_inclusive, node.high_inclusive)
                )
        parts = []
        if node.low is not None:
            op = ">=" if node.low_inclusive else ">"
            parts.append(Sql(f"{col} {op} ?", (self.typed(node.field, node.low),)))
        if node.high is not None:
            op = "<=" if node.high_inclusive else "<"
            parts.append(Sql(f"{col} {op} ?", (self.typed(node.field, node.high),)))
        return self.combine("AND", parts, TRUE, FALSE) if parts else Sql(f"{col} IS NOT NULL")

    def full_text(self, value: Value) -> Sql:
        pattern = f"%{value.like if value.like is not None else _like_escape(value.text)}%"
        cols = [f'"{name}"' for name, t in self.types.items() if pa.types.is_string(t)]
        return Sql(" OR ".join(f"{c} ILIKE ? ESCAPE '\\'" for c in cols), (pattern,) * len(cols))

