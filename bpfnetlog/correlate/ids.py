"""Ids of connections and requests, local to one NIC or stable across NICs and NAT.

- `conn_id`: one connection on one NIC (DataKit's inner_traceid); links the
  L4 chunks, the packets and the L7 records of that observation.
- `nic_traceid`: `<SYN seq>_<SYN-ACK seq>`; NAT rewrites addresses and ports
  but not sequence numbers, so it is equal on every NIC the connection crossed.
- `community_id`: Community ID v1, to join with Zeek, Suricata, Arkime. Computed here
  from the spec (sha1 over the ordered tuple), not with the `communityid` package: its
  per-tuple validation cost 30 us per connection, a tenth of `read`'s time once L7 was
  compiled; tests/test_ids.py checks both agree on random IPv4/IPv6 TCP/UDP tuples.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct


CONN_ID_LEN = 16  # hex digits of a conn_id (l7.fastpath keeps them in a table this wide)


def conn_id(host: str, nic: str, proto: int, ip_a: str, port_a: int, ip_b: str, port_b: int, first_ts: int) -> str:
    """16 hex digits, unique per connection per NIC (the first packet's time tells reuses apart)."""
    key = f"{host}|{nic}|{proto}|{ip_a}|{port_a}|{ip_b}|{port_b}|{first_ts}".encode()
    return hashlib.blake2b(key, digest_size=CONN_ID_LEN // 2).hexdigest()


def community_id(proto: int, ip_a: str, port_a: int, ip_b: str, port_b: int, seed: int = 0) -> str:
    """Community ID v1 of a TCP/UDP flow (direction-free by definition)."""
    a, b = _packed(ip_a), _packed(ip_b)
    if (a, port_a) > (b, port_b):  # the spec's order: lower address (then port) first
        a, b, port_a, port_b = b, a, port_b, port_a
    digest = hashlib.sha1(struct.pack("!H", seed) + a + b + struct.pack("!BBHH", proto, 0, port_a, port_b)).digest()
    return "1:" + base64.b64encode(digest).decode()


def _packed(ip: str) -> bytes:
    """Text address -> 4 or 16 bytes (inet_pton: 10x faster than ipaddress, which matters per flow)."""
    return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)


def nic_traceid(syn_seq: int, synack_seq: int) -> str:
    """`<SYN seq>_<SYN-ACK seq>`, or "" when the handshake was not seen."""
    if syn_seq < 0 or synack_seq < 0:
        return ""
    return f"{syn_seq}_{synack_seq}"
