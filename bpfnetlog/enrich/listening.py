"""Listening TCP sockets of every network namespace: who is the server of a mid-stream connection.

A connection whose handshake the capture missed (it started before
`bpfnetlog capture`) has no SYN to tell client from server; a socket in
LISTEN state on one of its endpoints, in the namespace of the NIC it was seen
on, does. Sockets are read from /proc/thread-self/net/tcp{,6} after entering
each namespace in a short-lived thread (setns moves only that thread).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading


ANY = "*"  # a socket bound to 0.0.0.0 or ::
_LISTEN = "0A"

Listening = dict[str, frozenset[tuple[str, int]]]  # netns label -> {(ip or ANY, port)}


def parse_proc_net_tcp(text: str, v6: bool) -> set[tuple[str, int]]:
    """(ip, port) of LISTEN sockets in a /proc/net/tcp or tcp6 table."""
    out = set()
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4 or parts[3] != _LISTEN:
            continue
        addr_hex, port_hex = parts[1].split(":")
        raw = bytes.fromhex(addr_hex)
        # the kernel prints each 32-bit word in host (little-endian) order
        raw = b"".join(struct.pack("<I", struct.unpack(">I", raw[i : i + 4])[0]) for i in range(0, len(raw), 4))
        ip = socket.inet_ntop(socket.AF_INET6 if v6 else socket.AF_INET, raw)
        addr = ipaddress.ip_address(ip)
        if addr.is_unspecified:
            ip = ANY
        elif v6 and addr.ipv4_mapped:
            ip = str(addr.ipv4_mapped)
        out.add((ip, int(port_hex, 16)))
    return out


def _read_here() -> frozenset[tuple[str, int]]:
    found: set[tuple[str, int]] = set()
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            with open(f"/proc/thread-self/net/{name}") as f:
                found |= parse_proc_net_tcp(f.read(), v6)
        except OSError:
            continue  # no IPv6 in this namespace
    return frozenset(found)


def listening_sockets() -> Listening:
    """LISTEN sockets of every namespace, keyed like records' `netns` ("<inode>" or "<inode>:<name>")."""
    from bpfnetlog.capture.ebpf.netns import discover, entered  # live capture only: pyroute2 is slow to import

    result: Listening = {}

    def scan() -> None:
        for ns in discover().values():
            with entered(ns) as inside:
                if inside:
                    result[ns.label] = _read_here()

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
