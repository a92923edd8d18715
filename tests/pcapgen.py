"""Hand-built pcap/pcapng bytes for tests: every header field under the test's control.

scapy writes only the common cases (one interface, little-endian); the reader
must also handle big-endian files, several sections and interfaces, SPB/PB
blocks and damaged lengths, so tests build those bytes here.
"""

from __future__ import annotations

import struct


def pcap(frames: list[tuple[int, int, bytes]], linktype: int = 1, ns: bool = False,
         big: bool = False, snaplen: int = 262144, wire: dict[int, int] | None = None) -> bytes:
    """A pcap file of (ts seconds, ts fraction in us or ns, frame bytes); wire: index -> orig len."""
    e = ">" if big else "<"
    out = [struct.pack(e + "IHHiIII", 0xA1B23C4D if ns else 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)]
    for i, (sec, frac, data) in enumerate(frames):
        out.append(struct.pack(e + "IIII", sec, frac, len(data), (wire or {}).get(i, len(data))))
        out.append(data)
    return b"".join(out)


def _opt(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def block(btype: int, body: bytes, big: bool = False) -> bytes:
    """A pcapng block: type, length, body padded to 4 bytes, length again."""
    e = ">" if big else "<"
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def shb(big: bool = False) -> bytes:
    e = ">" if big else "<"
    return block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1), big)


def idb(linktype: int, name: str | None = None, tsresol: int | None = None, snaplen: int = 0,
        mac: bytes | None = None, tsoffset: int | None = None, big: bool = False) -> bytes:
    e = ">" if big else "<"
    opts = b""
    if name is not None:
        opts += _opt(e, 2, name.encode())
    if mac is not None:
        opts += _opt(e, 6, mac)
    if tsresol is not None:
        opts += _opt(e, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += _opt(e, 14, struct.pack(e + "q", tsoffset))
    if opts:
        opts += _opt(e, 0, b"")
    return block(1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts, big)


def epb(iface: int, ts: int, data: bytes, wire: int | None = None, big: bool = False) -> bytes:
    """Enhanced packet block; `ts` in the interface's if_tsresol units."""
    e = ">" if big else "<"
    hdr = struct.pack(e + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data),
                      len(data) if wire is None else wire)
    return block(6, hdr + data, big)


def pb(iface: int, ts: int, data: bytes, big: bool = False) -> bytes:
    """Obsolete packet block (pcapng draft 1.0, still written by old tools)."""
    e = ">" if big else "<"
    hdr = struct.pack(e + "HHIIII", iface, 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return block(2, hdr + data, big)


def spb(data: bytes, wire: int | None = None, big: bool = False) -> bytes:
    """Simple packet block: no interface id (always 0), no timestamp."""
    e = ">" if big else "<"
    return block(3, struct.pack(e + "I", len(data) if wire is None else wire) + data, big)


def isb(iface: int, ifdrop: int | None = None, osdrop: int | None = None, big: bool = False) -> bytes:
    """Interface statistics block with the drop counters (totals since the capture started)."""
    e = ">" if big else "<"
    opts = b""
    if ifdrop is not None:
        opts += _opt(e, 5, struct.pack(e + "Q", ifdrop))
    if osdrop is not None:
        opts += _opt(e, 7, struct.pack(e + "Q", osdrop))
    return block(5, struct.pack(e + "III", iface, 0, 0) + opts + _opt(e, 0, b""), big)
