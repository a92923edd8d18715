"""Packet batches: the columnar unit every source produces and L4 consumes.

A source (pcap file, eBPF ring, AF_PACKET ring) never hands packets one by one
to Python: it fills a `PacketBatch`, one numpy array per header field, all of
the same length, plus one byte buffer that holds the captured payloads
(`payload_off` / `payload_cap` index into it). Only TCP and UDP over IPv4/IPv6
are in a batch; everything else is counted in `SourceStats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

# Values of PacketBatch.direction (where the packet was seen, live capture only).
DIR_UNKNOWN, DIR_INGRESS, DIR_EGRESS = 0, 1, 2

# TCP flag bits, as in the TCP header.
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

PROTO_TCP, PROTO_UDP = 6, 17

# name -> dtype of each column of a batch (IP columns are (n, 16) uint8, see below).
COLUMNS: dict[str, np.dtype] = {
    "ts": np.dtype(np.int64),  # ns since the epoch
    "frame": np.dtype(np.int64),  # frame number in the source, 1-based (tshark's frame.number)
    "nic": np.dtype(np.uint16),  # index into PacketBatch.nics
    "direction": np.dtype(np.uint8),  # DIR_*
    "wire_len": np.dtype(np.uint32),  # length of the frame on the wire
    "ip_version": np.dtype(np.uint8),  # 4 or 6
    "proto": np.dtype(np.uint8),  # PROTO_TCP or PROTO_UDP
    "sport": np.dtype(np.uint16),
    "dport": np.dtype(np.uint16),
    "flags": np.dtype(np.uint8),  # TCP flags; 0 for UDP
    "seq": np.dtype(np.uint32),  # raw TCP sequence number
    "ack": np.dtype(np.uint32),  # raw TCP acknowledgement number
    "win": np.dtype(np.uint16),  # raw TCP window field
    "wscale": np.dtype(np.int8),  # window scale option of a SYN, -1 if absent
    "payload_len": np.dtype(np.uint32),  # L4 payload length from the IP/UDP lengths
    "payload_off": np.dtype(np.int64),  # offset of the captured payload in `data`
    "payload_cap": np.dtype(np.uint32),  # captured payload bytes (<= payload_len)
    "gso_segs": np.dtype(np.uint16),  # segments of a GSO super-packet (1 otherwise)
}


def read_only(data) -> np.ndarray:
    """Bytes as a read-only uint8 array: one kernel signature for every source (a pcap's mmap is
    read-only, live buffers are not), so the kernels compiled at install serve all."""
    view = np.frombuffer(data, np.uint8)
    view.flags.writeable = False
    return view


@dataclass(frozen=True)
class Nic:
    """An interface packets were seen on; `name` is what records call nic_name."""

    name: str
    mac: str = ""
    ifindex: int = 0
    netns: str = ""  # "<inode>" or "<inode>:<name>"; "" for a file
    virtual: bool = False
    host_network: bool = True


class FlowRef(NamedTuple):
    """One connection on one NIC, as the pipeline tells a live source about it."""

    nic: Nic
    proto: int
    ip_a: bytes  # 16 bytes, IPv4 as ::ffff:a.b.c.d
    port_a: int
    ip_b: bytes
    port_b: int


@dataclass
class PacketBatch:
    """Columns of `n` packets; `src_ip`/`dst_ip` are (n, 16) uint8 (IPv4 as ::ffff:a.b.c.d)."""

    cols: dict[str, np.ndarray]
    src_ip: np.ndarray
    dst_ip: np.ndarray
    data: np.ndarray  # uint8 buffer that payload_off/payload_cap index into
    nics: list[Nic]

    def __len__(self) -> int:
        return len(self.cols["ts"])

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["cols"][name]
        except KeyError:
            raise AttributeError(name) from None

    def payload(self, i: int) -> bytes:
        """The captured payload bytes of packet `i` (a copy)."""
        off = int(self.cols["payload_off"][i])
        return self.data[off : off + int(self.cols["payload_cap"][i])].tobytes()

    @staticmethod
    def empty(nics: list[Nic] | None = None) -> "PacketBatch":
        return PacketBatch(
            cols={k: np.zeros(0, dt) for k, dt in COLUMNS.items()},
            src_ip=np.zeros((0, 16), np.uint8),
            dst_ip=np.zeros((0, 16), np.uint8),
            data=np.zeros(0, np.uint8),
            nics=list(nics or []),
        )


@dataclass
class SourceStats:
    """What a source read and what it could not turn into packets; reaches the store and the CLI."""

    source: str
    packets: int = 0  # frames read
    decoded: int = 0  # TCP/UDP packets put in batches
    skipped: int = 0  # not TCP/UDP over IP (ARP, ICMP, ...)
    malformed: int = 0  # cut or invalid headers
    dropped: int = 0  # lost by the capture (ring full, kernel drops)
    errors: list[str] = field(default_factory=list)  # e.g. "truncated record at byte 1234: ..."
