"""The common tags of one connection on one NIC, shared by its L4 and L7 records."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import numpy as np

from bpfnetlog.correlate.ids import community_id, conn_id
from bpfnetlog.l4.flowkeys import key_parts
from bpfnetlog.l4.roles import LocalNets, client_by_ports, direction, local_side
from bpfnetlog.packets import Nic

_V4_MAPPED = bytes(10) + b"\xff\xff"


def ip_text(raw: bytes) -> str:
    """16-byte address (IPv4-mapped for IPv4) -> its usual text form."""
    if raw[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def key_endpoints(words: np.ndarray) -> tuple[int, int, str, int, str, int]:
    """(nic index, proto, ip A, port A, ip B, port B) from a flow key (flowkeys.BatchKeys.words row)."""
    nic, proto, ip_a, port_a, ip_b, port_b = key_parts(words)
    return nic, proto, ip_text(ip_a), port_a, ip_text(ip_b), port_b


@dataclass
class Conn:
    """What records need to know about a connection beyond its packets."""

    conn_id: str
    nic: Nic
    proto: int
    ip: tuple[str, str]  # endpoint A, endpoint B
    port: tuple[int, int]
    syn_client: int = -1  # from the handshake; final once set
    listen_server: int = -1  # endpoint with a LISTEN socket in the NIC's namespace (live capture)
    l7_client: int = -1  # from the L7 parser
    l7_proto: str = ""
    wire_local: int = -1  # side seen leaving this host (tc egress), the surest locality signal
    src_side: int = -1  # fixed at the first record written, so all chunks agree
    _community_id: str = field(default="", repr=False)
    _cached: tuple = field(default=(), repr=False)  # (client_side, nic_traceid, tags)

    @property
    def client_side(self) -> int:
        if self.syn_client >= 0:
            return self.syn_client
        if self.listen_server >= 0:
            return 1 - self.listen_server
        if self.l7_client >= 0:
            return self.l7_client
        return client_by_ports(self.port[0], self.port[1])

    def tags(self, host: str, local: LocalNets, nic_traceid: str) -> dict:
        """The COMMON_FIELDS of records.py for this connection (minus time/status/l7_proto).

        Read-only: the dict is kept and returned again until the client side or nic_traceid changes.
        """
        client = self.client_side
        if self._cached and self._cached[0] == client and self._cached[1] == nic_traceid:
            return self._cached[2]
        if self.wire_local >= 0:
            src, known = self.wire_local, True
        elif self.nic.name == "lo":  # both ends are this host: the client's view
            src, known = (client if client >= 0 else 0), True
        else:
            src, known = local_side(self.ip[0], self.ip[1], client, local)
        if self.src_side < 0:
            self.src_side = src
        src = self.src_side
        dst = 1 - src
        dirn, role = direction(src, client, known)
        if not self._community_id:
            self._community_id = community_id(self.proto, self.ip[0], self.port[0], self.ip[1], self.port[1])
        c = client if client >= 0 else src
        tags = {
            "host": host,
            "nic_name": self.nic.name,
            "nic_mac": self.nic.mac,
            "ifindex": self.nic.ifindex,
            "netns": self.nic.netns,
            "virtual_nic": self.nic.virtual,
            "host_network": self.nic.host_network,
            "src_ip": self.ip[src],
            "dst_ip": self.ip[dst],
            "src_port": self.port[src],
            "dst_port": self.port[dst],
            "l4_proto": "tcp" if self.proto == 6 else "udp",
            "direction": dirn,
            "conn_side": role,
            "client_ip": self.ip[c],
            "client_port": self.port[c],
            "server_ip": self.ip[1 - c],
            "server_port": self.port[1 - c],
            "community_id": self._community_id,
            "conn_id": self.conn_id,
            "nic_traceid": nic_traceid,
        }
        self._cached = (client, nic_traceid, tags)
        return tags


def new_conn(host: str, nics: list[Nic], words: np.ndarray, first_ts: int) -> Conn:
    nic_i, proto, ip_a, port_a, ip_b, port_b = key_endpoints(words)
    nic = nics[nic_i]
    cid = conn_id(host, nic.name, proto, ip_a, port_a, ip_b, port_b, first_ts)
    return Conn(conn_id=cid, nic=nic, proto=proto, ip=(ip_a, ip_b), port=(port_a, port_b))
