"""IP addresses as comparable numbers in DuckDB SQL, for CIDR and IP ranges.

IPs are strings in the store and DuckDB's inet extension is not available
offline, so a column is turned into a fixed-width form in plain SQL: IPv4 into
a BIGINT, IPv6 into 32 lowercase hex digits (string order == numeric order).
A network is then a closed range [first, last] of that form, correct for every
prefix length. `col` is always a quoted column name from the schema whitelist.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ip4_int_sql(col: str) -> str:
    """BIGINT of a dotted quad, NULL for anything else."""
    octets = " + ".join(
        f"(TRY_CAST(split_part({col}, '.', {i + 1}) AS BIGINT) << {24 - 8 * i})" for i in range(4)
    )
    return f"(CASE WHEN regexp_full_match({col}, '[0-9]{{1,3}}(\\.[0-9]{{1,3}}){{3}}') THEN {octets} END)"


def _ip6_groups_sql(s: str) -> str:
    """The 8 hex groups of an IPv6 text `s` (lowercase), `::` expanded, a dotted tail converted."""
    quad = f"regexp_extract({s}, '[0-9]+(\\.[0-9]+){{3}}$')"
    word = " || ':' || ".join(
        f"printf('%x', TRY_CAST(split_part({quad}, '.', {a}) AS INTEGER) * 256"
        f" + TRY_CAST(split_part({quad}, '.', {a + 1}) AS INTEGER))"
        for a in (1, 3)
    )
    t = f"(CASE WHEN {quad} <> '' THEN left({s}, length({s}) - length({quad})) || {word} ELSE {s} END)"
    head = f"string_split(split_part({t}, '::', 1), ':')"
    tail = f"string_split(split_part({t}, '::', 2), ':')"
    # string_split('') is [''] : drop empty groups on both sides of '::'
    head = f"list_filter({head}, lambda g: g <> '')"
    tail = f"list_filter({tail}, lambda g: g <> '')"
    zeros = f"list_resize(['0'], greatest(0, 8 - len({head}) - len({tail})), '0')"
    return f"(CASE WHEN contains({t}, '::') THEN {head} || {zeros} || {tail} ELSE string_split({t}, ':') END)"


def ip6_hex_sql(col: str) -> str:
    """32 hex digits of an IPv6 text, NULL for anything else (IPv4 included)."""
    groups = _ip6_groups_sql("s")
    hexed = f"list_transform(g, lambda x: lpad(x, 4, '0'))"
    body = (
        f"list_transform([{groups}], lambda g: CASE WHEN len(g) = 8"
        f" AND list_max(list_transform(g, lambda x: length(x))) <= 4"
        f" AND list_min(list_transform(g, lambda x: length(x))) >= 1"
        f" THEN array_to_string({hexed}, '') END)[1]"
    )
    return (
        f"(CASE WHEN regexp_full_match({col}, '[0-9A-Fa-f:.]+') AND contains({col}, ':')"
        f" AND NOT regexp_matches({col}, ':::|::.*::')"
        f" THEN list_transform([lower({col})], lambda s: {body})[1] END)"
    )


def ip_key(addr: IPAddress) -> int | str:
    """The SQL form's value for one address: what ip4_int_sql / ip6_hex_sql compute."""
    return int(addr) if addr.version == 4 else addr.packed.hex()


def in_range_sql(
    col: str,
    low: IPAddress | None,
    high: IPAddress | None,
    version: int,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> tuple[str, tuple[int | str, ...]]:
    """`col` between two addresses of one IP version (None: open end)."""
    form = ip4_int_sql(col) if version == 4 else ip6_hex_sql(col)
    parts, params = [], []
    if low is not None:
        parts.append(f"{form} {'>=' if low_inclusive else '>'} ?")
        params.append(ip_key(low))
    if high is not None:
        parts.append(f"{form} {'<=' if high_inclusive else '<'} ?")
        params.append(ip_key(high))
    return " AND ".join(parts) or f"{form} IS NOT NULL", tuple(params)


def network_sql(col: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[str, tuple[int | str, ...]]:
    return in_range_sql(col, net.network_address, net.broadcast_address, net.version)
