"""Write packet batches to a pcapng file Wireshark opens (`bpfnetlog capture --write-pcap`).

The eBPF source keeps header fields and the first bytes of payload, not whole
frames, so each packet is rebuilt as an IP packet (LINKTYPE_RAW): an IPv4 or
IPv6 header, a TCP header without options or a UDP header, then the captured
payload. `origlen` is the packet's real length, so a cut payload shows as
"captured N of M bytes", as with tcpdump -s. Checksums are left 0. One
interface block per NIC carries its name, so Wireshark shows nic_name.
Frames are built by numba into one buffer per batch: no Python step per packet.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from bpfnetlog.compiled import copy_bytes, entry, kernel
from bpfnetlog.packets import Nic, PacketBatch

LINKTYPE_RAW = 101
_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_V4_MAPPED = np.array([0] * 10 + [0xFF, 0xFF], np.uint8)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def _shb() -> bytes:
    return _block(_SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _option(4, b"bpfnetlog") + _option(0, b""))


def _idb(nic: Nic) -> bytes:
    opts = _option(2, nic.name.encode()[:255]) + _option(9, bytes([9]))  # if_name, if_tsresol = ns
    return _block(_IDB, struct.pack("<HHI", LINKTYPE_RAW, 0, 0) + opts + _option(0, b""))


@kernel(inline=True)
def _put16(buf, p, v):
    buf[p] = (v >> 8) & 0xFF
    buf[p + 1] = v & 0xFF


@kernel(inline=True)
def _put32(buf, p, v):
    buf[p] = (v >> 24) & 0xFF
    buf[p + 1] = (v >> 16) & 0xFF
    buf[p + 2] = (v >> 8) & 0xFF
    buf[p + 3] = v & 0xFF


@kernel(inline=True)
def _le32(buf, p, v):
    buf[p] = v & 0xFF
    buf[p + 1] = (v >> 8) & 0xFF
    buf[p + 2] = (v >> 16) & 0xFF
    buf[p + 3] = (v >> 24) & 0xFF


@entry
def _fill(buf, starts, iface, ts, v4, proto, src, dst, sport, dport, flags, seq, ack, win, plen, cap, poff, data):
    for i in range(len(starts)):
        p = starts[i]
        ip_len = 20 if v4[i] else 40
        l4_len = 20 if proto[i] == 6 else 8
        frame = ip_len + l4_len + cap[i]
        orig = ip_len + l4_len + plen[i]
        total = (frame + 3) & ~3
        _le32(buf, p, 6)
        _le32(buf, p + 4, 32 + total)
        _le32(buf, p + 8, iface[i])
        _le32(buf, p + 12, np.uint32(ts[i] >> 32))
        _le32(buf, p + 16, np.uint32(ts[i] & 0xFFFFFFFF))
        _le32(buf, p + 20, frame)
        _le32(buf, p + 24, orig)
        q = p + 28
        buf[q : q + total] = 0
        if v4[i]:
            buf[q] = 0x45
            _put16(buf, q + 2, min(orig, 65535))
            buf[q + 8] = 64
            buf[q + 9] = proto[i]
            copy_bytes(buf, q + 12, src[i], 12, 4)
            copy_bytes(buf, q + 16, dst[i], 12, 4)
        else:
            buf[q] = 0x60
            _put16(buf, q + 4, min(orig - 40, 65535))
            buf[q + 6] = proto[i]
            buf[q + 7] = 64
            copy_bytes(buf, q + 8, src[i], 0, 16)
            copy_bytes(buf, q + 24, dst[i], 0, 16)
        t = q + ip_len
        _put16(buf, t, sport[i])
        _put16(buf, t + 2, dport[i])
        if proto[i] == 6:
            _put32(buf, t + 4, seq[i])
            _put32(buf, t + 8, ack[i])
            buf[t + 12] = 5 << 4
            buf[t + 13] = flags[i]
            _put16(buf, t + 14, win[i])
        else:
            _put16(buf, t + 4, min(8 + plen[i], 65535))
        c = cap[i]
        copy_bytes(buf, t + l4_len, data, poff[i], c)
        _le32(buf, q + total, 32 + total)


class PcapngWriter:
    """Appends batches to one pcapng file; flushes after every batch so a kill loses little."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._f = open(self.path, "wb")
        self._f.write(_shb())
        self._iface: dict[Nic, int] = {}
        self.packets = 0

    def write(self, batch: PacketBatch) -> None:
        n = len(batch)
        if not n:
            return
        lut = np.empty(len(batch.nics), np.int64)
        for i, nic in enumerate(batch.nics):
            if nic not in self._iface:
                self._iface[nic] = len(self._iface)
                self._f.write(_idb(nic))
            lut[i] = self._iface[nic]
        c = batch.cols
        v4 = (batch.src_ip[:, :12] == _V4_MAPPED).all(axis=1)
        # each EPB: 32 bytes of block framing + the frame (IP + TCP/UDP header + payload) padded to 4
        frame = np.where(v4, 20, 40) + np.where(c["proto"] == 6, 20, 8) + c["payload_cap"].astype(np.int64)
        sizes = 32 + ((frame + 3) & ~3)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        buf = np.empty(int(sizes.sum()), np.uint8)
        _fill(buf, starts, lut[c["nic"]], c["ts"], v4, c["proto"], batch.src_ip, batch.dst_ip, c["sport"],
              c["dport"], c["flags"], c["seq"].astype(np.int64), c["ack"].astype(np.int64), c["win"],
              c["payload_len"].astype(np.int64), c["payload_cap"].astype(np.int64), c["payload_off"], batch.data)  # fmt: skip
        self._f.write(buf.tobytes())
        self._f.flush()
        self.packets += n

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "PcapngWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
