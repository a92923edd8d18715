"""The query language: parser, compiler checks, error positions, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfnetlog.query import QueryError, compile_query, parse_time
from bpfnetlog.query.syntax import And, Compare, Exists, FullText, MatchAll, Not, Or, Range, Value, parse
from bpfnetlog.records import L4_SOURCE, L7_SOURCE, PACKET_TABLE


def cmp(field: str, op: str, text: str, pos: int, field_pos: int = 0, like: str | None = None) -> Compare:
    return Compare(field, field_pos, op, Value(text, like, pos))


def test_field_value_and_quotes() -> None:
    assert parse("nic_name:eth0") == cmp("nic_name", "=", "eth0", 9)
    assert parse('http_path:"/a b"') == Compare("http_path", 0, "=", Value("/a b", None, 10, quoted=True))
    assert parse('http_path: "x\\"y"').value.text == 'x"y'


def test_wildcards_become_escaped_like_patterns() -> None:
    assert parse("http_path:/api/*").value.like == "/api/%"
    assert parse("http_path:a?c").value.like == "a_c"
    assert parse("http_path:100%_x*").value.like == "100\\%\\_x%"
    assert parse("http_path:a\\*b").value == Value("a*b", None, 10)  # escaped: literal
    assert parse('http_path:"a*"').value.like is None  # quoted: literal
    assert parse("tls_sni:*") == Exists("tls_sni", 0)


def test_comparisons_and_ranges() -> None:
    assert parse("http_status_code:>=500") == cmp("http_status_code", ">=", "500", 19)
    for op in (">", "<", "<="):
        assert parse(f"tcp_rtt:{op}5").op == op
    assert parse("tcp_rtt:[1 TO 10]") == Range("tcp_rtt", 0, Value("1", None, 9), Value("10", None, 14), True, True)
    r = parse("tcp_rtt:{1 TO 10}")
    assert (r.low_inclusive, r.high_inclusive) == (False, False)
    r = parse("tcp_rtt:[-5 TO *}")
    assert (r.low.text, r.high, r.high_inclusive) == ("-5", None, False)
    assert parse("tcp_rtt:>-5").value.text == "-5"


def test_boolean_operators_precedence_and_implicit_and() -> None:
    a, b, c = (FullText(Value(x, None, i)) for x, i in (("a", 0), ("b", 6), ("c", 11)))
    assert parse("a AND b OR c") == Or((And((a, b)), c))
    assert parse("a     b OR c") == Or((And((a, b)), c))
    assert parse("a and b or c") == Or((And((a, b)), c))
    assert parse("a && (b || c)") == And((a, Or((FullText(Value("b", None, 6)), FullText(Value("c", None, 11))))))
    assert parse("NOT a") == Not(FullText(Value("a", None, 4)))
    assert parse("-nic_name:x") == Not(cmp("nic_name", "=", "x", 10, 1))
    assert parse("!a") == Not(FullText(Value("a", None, 1)))
    assert parse("+a") == FullText(Value("a", None, 1))
    assert parse("") == parse("   ") == MatchAll()


def test_field_groups() -> None:
    assert parse("http_status_code:(500 OR >=502)") == Or(
        (cmp("http_status_code", "=", "500", 18), cmp("http_status_code", ">=", "502", 27))
    )


def test_ipv6_values_keep_their_colons() -> None:
    assert parse("src_ip:fe80::1").value.text == "fe80::1"
    assert parse("src_ip:2001:db8::/32").value.text == "2001:db8::/32"


@pytest.mark.parametrize(
    "query, position, message",
    [
        ("(a OR b", 7, "expected ')'"),
        ("a)", 1, "unexpected ')'"),
        ("a AND", 5, "ends where a term"),
        ("OR a", 0, "expected a term"),
        ('nic_name:"eth0', 9, "unterminated"),
        ("nic_name:", 9, "expected a value"),
        ("tcp_rtt:[1 10]", 11, "expected TO"),
        ("tcp_rtt:[1 TO 10", 16, "expected ']'"),
        ("tcp_rtt:>a*", 9, "wildcards"),
        ("a;DROP:x", 0, "not a field name"),
        ("x\\", 1, "backslash"),
        ("nic_nme:eth0", 0, "unknown field 'nic_nme' (did you mean nic_name?)"),
        ("a AND bogus:1", 6, "unknown field"),
        ("tcp_rtt:abc", 8, "is a number"),
        ("tcp_rtt:[1 TO x]", 14, "is a number"),
        ("virtual_nic:yes", 12, "true or false"),
        ("src_ip:10.0.0.0/33", 7, "not a network"),
        ("source:nope", 7, "unknown source"),
        ("source:>a", 0, "source takes a table name"),
        ("tcp_rtt:*x*", 8, "wildcards only work on text"),
    ],
)
def test_errors_point_at_the_problem(query: str, position: int, message: str) -> None:
    with pytest.raises(QueryError) as info:
        compile_query(query)
    assert info.value.position == position
    assert message in info.value.message
    lines = str(info.value).splitlines()
    assert lines[1] == "  " + query and lines[2] == "  " + " " * position + "^"


def test_fields_map_to_tables() -> None:
    assert set(compile_query("")) == {L4_SOURCE, L7_SOURCE}
    assert set(compile_query("tcp_rtt:>1")) == {L4_SOURCE}  # FALSE in L7: table skipped
    assert set(compile_query("http_status_code:500")) == {L7_SOURCE}
    assert set(compile_query("source:bpf_net_l4_log")) == {L4_SOURCE}
    assert set(compile_query("NOT source:bpf_net_l4_log")) == {L7_SOURCE}
    assert set(compile_query("source:bpf_net_packet seq:5")) == {PACKET_TABLE}
    assert set(compile_query("tcp_rtt:>1 OR http_status_code:500")) == {L4_SOURCE, L7_SOURCE}
    # NOT of a field a table lacks is TRUE there: L4 records have no status 500
    assert compile_query("NOT http_status_code:500")[L4_SOURCE].text == "TRUE"
    with pytest.raises(QueryError, match="unknown field 'seq'"):
        compile_query("seq:5")  # the packet table is not searched unless named


@pytest.mark.parametrize(
    "query",
    [
        "src_ip:\"x' OR 1=1 --\"",
        "http_path:'; DROP TABLE bpf_net_l7_log; --",
        'nic_name:"\\"; SELECT 1"',
        "x' OR '1'='1",
        'http_method:(GET OR "a\'b")',
    ],
)
def test_values_never_reach_the_sql_text(query: str) -> None:
    for where in compile_query(query).values():
        assert "DROP" not in where.text and "1=1" not in where.text and "'1'" not in where.text
        assert "SELECT" not in where.text and "a'b" not in where.text
        assert where.text.count("?") == len(where.params)


@pytest.mark.parametrize("query", ['a;DROP:x', 'src_ip";DROP:1', "x'y:1", "nic_name)--:1"])
def test_hostile_field_names_are_rejected(query: str) -> None:
    with pytest.raises(QueryError):
        compile_query(query)


_PIECES = list('ab:*?"\\()[]{}<>=-+!/ .0123456789') + [
    "AND ", "OR ", "NOT ", " TO ", "src_ip", "tcp_rtt", "nic_name", "source:", "virtual_nic", "::", "10.0.0.0/8"
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=25).map("".join))
def test_random_queries_raise_only_query_error(query: str) -> None:
    try:
        wheres = compile_query(query)
    except QueryError as e:
        assert 0 <= e.position <= len(query)
        str(e)
        return
    for where in wheres.values():
        assert where.text.count("?") == len(where.params)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_arbitrary_text_raises_only_query_error(query: str) -> None:
    try:
        compile_query(query)
    except QueryError:
        pass


def test_parse_time() -> None:
    now = 1_800_000_000 * 10**9
    assert parse_time("now", now) == now
    assert parse_time("-15m", now) == now - 15 * 60 * 10**9
    assert parse_time("now-2h", now) == now - 2 * 3600 * 10**9
    assert parse_time("+1.5s", now) == now + 1_500_000_000
    assert parse_time("2026-11-22T10:00:00Z") == 1_795_341_600 * 10**9
    assert parse_time("2026-11-22T10:00:00.5+01:00") == 1_795_338_000 * 10**9 + 500_000_000
    assert parse_time("1795341600") == 1_795_341_600 * 10**9  # seconds
    assert parse_time("1795341600123") == 1_795_341_600_123 * 10**6  # ms
    assert parse_time(str(now)) == now == parse_time(now)
    with pytest.raises(QueryError, match="not a time"):
        parse_time("yesterday")
