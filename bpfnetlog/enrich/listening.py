"""Listening TCP sockets of every network namespace: who is the server of a mid-stream connection.

A connection whose handshake the capture missed (it started before
`bpfnetlog capture`) has no SYN to tell client from server; a socket in
LISTEN state on one of its endpoints, in the namespace of the NIC it was seen
on, does. Sockets are listed with a sock_diag netlink dump after entering each
namespace in a short-lived thread (setns moves only that thread; a netlink
socket belongs to the namespace it was created in).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading

ANY = "*"  # a socket bound to 0.0.0.0 or ::

Listening = dict[str, frozenset[tuple[str, int]]]  # netns label -> {(ip or ANY, port)}

# sock_diag (linux/inet_diag.h): a dump of TCP sockets in LISTEN state only, so the kernel walks
# the listening hash and never the established one (/proc/net/tcp walks every bucket of both,
# ~10% of a CPU per read on a busy host).
_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY, _NLMSG_ERROR, _NLMSG_DONE = 4, 20, 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_TCP_LISTEN = 10
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQ = struct.Struct("=BBBBI48x")  # family, protocol, ext, pad, states, inet_diag_sockid (zeros)
_MSG_SPORT, _MSG_SRC = 4, 8  # offsets in inet_diag_msg: id.idiag_sport (be16), id.idiag_src[16]


def listening_here() -> frozenset[tuple[str, int]]:
    """(ip or ANY, port) of the LISTEN TCP sockets of the calling thread's network namespace."""
    found: set[tuple[str, int]] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        for family in (socket.AF_INET, socket.AF_INET6):
            req = _REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
            nl.send(_NLMSG.pack(_NLMSG.size + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + req)
            found |= _dump(nl, family)
    return frozenset(found)


def _dump(nl: socket.socket, family: int) -> set[tuple[str, int]]:
    out = set()
    while True:
        buf = nl.recv(1 << 16)
        off = 0
        while off + _NLMSG.size <= len(buf):
            length, kind = _NLMSG.unpack_from(buf, off)[:2]
            if kind == _NLMSG_DONE or length < _NLMSG.size:
                return out
            if kind == _NLMSG_ERROR:  # e.g. no IPv6 in this namespace
                return out
            msg = buf[off + _NLMSG.size : off + length]
            port = int.from_bytes(msg[_MSG_SPORT : _MSG_SPORT + 2], "big")
            raw = msg[_MSG_SRC : _MSG_SRC + (4 if family == socket.AF_INET else 16)]
            out.add((_ip_or_any(raw, family), port))
            off += (length + 3) & ~3


def _ip_or_any(raw: bytes, family: int) -> str:
    addr = ipaddress.ip_address(raw)
    if addr.is_unspecified:
        return ANY
    if family == socket.AF_INET6 and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


def listening_sockets() -> Listening:
    """LISTEN sockets of every namespace, keyed like records' `netns` ("<inode>" or "<inode>:<name>")."""
    from bpfnetlog.capture.ebpf.netns import discover, entered  # live capture only: pyroute2 is slow to import

    result: Listening = {}

    def scan() -> None:
        for ns in discover().values():
            with entered(ns) as inside:
                if inside:
                    result[ns.label] = listening_here()

    t = threading.Thread(target=scan, name="listening-sockets", daemon=True)
    t.start()
    t.join(timeout=10)
    return result


def server_side(listening: Listening, netns: str, ip: tuple[str, str], port: tuple[int, int]) -> int:
    """0 or 1 when exactly one endpoint listens in `netns`, else -1."""
    socks = listening.get(netns)
    if not socks:
        return -1
    hits = [(ip[i], port[i]) in socks or (ANY, port[i]) in socks for i in (0, 1)]
    if hits[0] != hits[1]:
        return 0 if hits[0] else 1
    return -1
