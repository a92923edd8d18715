"""Who is the client, and which side is local: the two questions behind direction.

Client: the sender of the SYN, else the receiver of the SYN-ACK, else whoever
the L7 parser saw sending requests, else port scores (a well-known or lower
port is the server's). Local side (`src` of the records): the endpoint whose
address belongs to the capturing host (`--local-ip`, or the interface
addresses of a live capture). Unknown locality leaves direction `unknown`
and puts the client in `src`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

# Ports that identify a server even when both ports are low or both high.
WELL_KNOWN = frozenset(
    {20, 21, 22, 23, 25, 53, 67, 68, 80, 110, 123, 143, 161, 389, 443, 465, 587, 636, 853, 993, 995, 1433,
     1521, 2049, 2379, 3000, 3306, 4317, 5000, 5432, 5672, 6379, 6443, 8000, 8080, 8443, 8888, 9000,
     9090, 9092, 9200, 11211, 27017}
)  # fmt: skip


def port_score(port: int) -> int:
    """Higher = more likely the server's port."""
    if port in WELL_KNOWN:
        return 3
    if port < 1024:
        return 2
    if port < 32768:
        return 1
    return 0


def client_by_ports(port_a: int, port_b: int) -> int:
    """Client side (0 = endpoint A) from port scores, -1 when they do not tell."""
    sa, sb = port_score(port_a), port_score(port_b)
    if sa != sb:
        return 0 if sa < sb else 1
    if port_a != port_b and sa < 3:
        return 0 if port_a > port_b else 1
    return -1


class LocalNets:
    """The capturing host's addresses, as networks; empty means unknown."""

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self.nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def __bool__(self) -> bool:
        return bool(self.nets)

    def contains(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return any(addr.version == n.version and addr in n for n in self.nets)


def local_side(ip_a: str, ip_b: str, client_side: int, local: LocalNets) -> tuple[int, bool]:
    """(side to report as src, whether locality is known)."""
    if local:
        la, lb = local.contains(ip_a), local.contains(ip_b)
        if la != lb:
            return (0 if la else 1), True
        if la and lb:  # both ends on this host (loopback, two local pods): the client's view
            return (client_side if client_side >= 0 else 0), True
    return (client_side if client_side >= 0 else 0), False


def direction(src_side: int, client_side: int, known: bool) -> tuple[str, str]:
    """(direction, conn_side) of a record whose src is `src_side`."""
    if client_side < 0:
        return "unknown", "unknown"
    role = "client" if src_side == client_side else "server"
    if not known:
        return "unknown", role
    return ("outgoing" if role == "client" else "incoming"), role
