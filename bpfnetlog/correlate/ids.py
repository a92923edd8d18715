"""Ids of connections and requests, local to one NIC or stable across NICs and NAT.

- `conn_id`: one connection on one NIC (DataKit's inner_traceid); links the
  L4 chunks, the packets and the L7 records of that observation.
- `nic_traceid`: `<SYN seq>_<SYN-ACK seq>`; NAT rewrites addresses and ports
  but not sequence numbers, so it is equal on every NIC the connection crossed.
- `community_id`: Community ID v1, to join with Zeek, Suricata, Arkime.
"""

from __future__ import annotations

import hashlib

import communityid

_CID = communityid.CommunityID()


def conn_id(host: str, nic: str, proto: int, ip_a: str, port_a: int, ip_b: str, port_b: int, first_ts: int) -> str:
    """16 hex digits, unique per connection per NIC (the first packet's time tells reuses apart)."""
    key = f"{host}|{nic}|{proto}|{ip_a}|{port_a}|{ip_b}|{port_b}|{first_ts}".encode()
    return hashlib.blake2b(key, digest_size=8).hexdigest()


def community_id(proto: int, ip_a: str, port_a: int, ip_b: str, port_b: int) -> str:
    """Community ID v1 of a TCP/UDP flow (direction-free by definition)."""
    if proto == 6:
        tpl = communityid.FlowTuple.make_tcp(ip_a, ip_b, port_a, port_b)
    else:
        tpl = communityid.FlowTuple.make_udp(ip_a, ip_b, port_a, port_b)
    return _CID.calc(tpl)


def nic_traceid(syn_seq: int, synack_seq: int) -> str:
    """`<SYN seq>_<SYN-ACK seq>`, or "" when the handshake was not seen."""
    if syn_seq < 0 or synack_seq < 0:
        return ""
    return f"{syn_seq}_{synack_seq}"
