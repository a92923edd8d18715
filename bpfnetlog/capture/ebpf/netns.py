"""Network namespaces and their interfaces, seen from one thread at a time.

setns(2) with CLONE_NEWNET changes only the calling thread, so the follower
thread steps into a namespace, lists links and attaches programs there (both
netlink and tcx/tc resolve ifindexes in the caller's namespace), then steps
back. Nothing is held open between scans: an open fd or socket would keep a
deleted namespace alive.
"""

from __future__ import annotations

import ctypes
import fcntl
import glob
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyroute2 import IPRoute

CLONE_NEWNET = 0x40000000
IFF_UP = 0x1
SIOCGIFFLAGS = 0x8913
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Netns:
    """A namespace by inode; `path` is any file that opens it (a /run/netns mount or /proc/PID/ns/net)."""

    ino: int
    path: str
    name: str = ""
    host: bool = False

    @property
    def label(self) -> str:
        """What records call netns: "<inode>:<name>" or "<inode>"."""
        return f"{self.ino}:{self.name}" if self.name else str(self.ino)

    def matches(self, wanted: list[str]) -> bool:
        """--netns entries: a name, an inode, or "host"."""
        return any(w in (self.name, str(self.ino)) or (w == "host" and self.host) for w in wanted)


@dataclass(frozen=True)
class Link:
    ifindex: int
    name: str
    mac: str
    kind: str  # rtnetlink IFLA_INFO_KIND: veth, bridge, tun, ...; "" for a physical NIC
    up: bool
    l3: bool  # no link-layer header (tun, wireguard, ipip): needs the *_l3 programs

    @property
    def virtual(self) -> bool:
        return bool(self.kind) or self.name == "lo"


def host_ino() -> int:
    """The host's namespace: init's, or ours when init's is hidden (non-dumpable or another pid ns)."""
    try:
        return os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return os.stat("/proc/self/ns/net").st_ino


def discover() -> dict[int, Netns]:
    """Every namespace with a process or a /run/netns name, by inode."""
    host = host_ino()
    found: dict[int, Netns] = {}
    for path in sorted(glob.glob("/run/netns/*")):
        try:
            ino = os.stat(path).st_ino
        except OSError:
            continue
        found.setdefault(ino, Netns(ino, path, os.path.basename(path), ino == host))
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        path = f"/proc/{entry.name}/ns/net"
        try:
            ino = int(os.readlink(path)[5:-1])  # "net:[4026531840]": half the cost of a stat
        except (OSError, ValueError):
            continue  # the process exited
        if ino not in found:
            found[ino] = Netns(ino, path, "", ino == host)
    return found


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(ns: Netns) -> Iterator[bool]:
    """Run the block in `ns` (this thread only); yields False if ns is gone or was replaced."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            fd = os.open(ns.path, os.O_RDONLY)
        except OSError:
            yield False
            return
        try:
            if os.fstat(fd).st_ino != ns.ino:  # a reused /proc/PID path
                yield False
                return
            _setns(fd)
        finally:
            os.close(fd)
        try:
            yield True
        finally:
            _setns(own)
    finally:
        os.close(own)


def link_states() -> tuple[tuple[int, str, bool], ...]:
    """(ifindex, name, up) of every link of the current thread's namespace, 100x cheaper than
    links(): the follower lists links in full only when these changed."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        states = []
        for ifindex, name in socket.if_nameindex():
            try:
                req = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", name.encode(), 0))
            except OSError:  # the link went away since the listing
                continue
            states.append((ifindex, name, bool(struct.unpack_from("H", req, 16)[0] & IFF_UP)))
    return tuple(states)


def links() -> list[Link]:
    """Links of the current thread's namespace."""
    out = []
    with IPRoute() as ipr:
        for msg in ipr.get_links():
            out.append(
                Link(
                    ifindex=msg["index"],
                    name=msg.get_attr("IFLA_IFNAME") or "",
                    mac=msg.get_attr("IFLA_ADDRESS") or "",
                    kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "",
                    up=bool(msg["flags"] & IFF_UP),
                    l3=msg["ifi_type"] not in (ARPHRD_ETHER, ARPHRD_LOOPBACK),
                )
            )
    return out
