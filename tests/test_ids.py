"""Our Community ID v1 equals the `communityid` package's on any TCP/UDP tuple."""

from __future__ import annotations

import ipaddress

import communityid
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfnetlog.correlate.ids import community_id

_CID = communityid.CommunityID()
ports = st.integers(0, 65535)
v4 = st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i)))
v6 = st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i)))


def reference(proto: int, a: str, pa: int, b: str, pb: int) -> str:
    make = communityid.FlowTuple.make_tcp if proto == 6 else communityid.FlowTuple.make_udp
    return _CID.calc(make(a, b, pa, pb))


@settings(max_examples=400)
@given(st.sampled_from([6, 17]), st.one_of(st.tuples(v4, v4), st.tuples(v6, v6)), ports, ports)
def test_matches_package(proto: int, addrs: tuple[str, str], pa: int, pb: int) -> None:
    a, b = addrs
    assert community_id(proto, a, pa, b, pb) == reference(proto, a, pa, b, pb)
    assert community_id(proto, b, pb, a, pa) == reference(proto, a, pa, b, pb)


def test_same_address_orders_by_port() -> None:
    assert community_id(6, "10.0.0.1", 80, "10.0.0.1", 1234) == reference(6, "10.0.0.1", 1234, "10.0.0.1", 80)


def test_known_value() -> None:
    # from the Community ID spec's baseline (tcp 128.232.110.120:34855 -> 66.35.250.204:80)
    assert community_id(6, "128.232.110.120", 34855, "66.35.250.204", 80) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
