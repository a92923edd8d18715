"""pcap and pcapng files as PacketBatches, zero copy over mmap.

Usage::

    reader = PcapReader("trace.pcapng", batch_size=262144, nic_name=None)
    for batch in reader.batches():      # Iterator[PacketBatch]
        ...
    reader.stats                        # SourceStats, complete once batches() is exhausted

    for batch in read_pcap("trace.pcap"):   # same, when the stats do not matter
        ...

The file is mapped, not read: every batch's `data` is the whole file as a
uint8 array and `payload_off` are file offsets. Record/block headers are
walked by numba (a Python step per packet would cap the pipeline far below a
million packets/s); Python only parses pcapng section, interface and
statistics blocks.

Frame numbers count every record (skipped ones too), from 1, so they match
tshark's frame.number. NIC names: the `nic_name` argument if given (it
overrides everything, as the CLI's --nic), else the pcapng if_name option, else
the file's stem (with ":<n>" for a pcapng file's unnamed interface n > 0).
Interfaces of the same name share one `Nic`.

`stats.dropped` is what pcapng interface statistics blocks report as lost
(isb_ifdrop + isb_osdrop, last block of each interface); pcap files cannot say.

Bad input: a file that is empty or is not pcap/pcapng raises `PcapError`. A
damaged file stops at the first bad record or block; everything before it is
kept and `stats.errors` names the byte offset and what is wrong.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bpfnetlog.compiled import entry, kernel
from bpfnetlog.decode.frames import decode
from bpfnetlog.packets import Nic, PacketBatch, SourceStats

PCAP_US, PCAP_NS = 0xA1B2C3D4, 0xA1B23C4D
PCAPNG_SHB, PCAPNG_BOM = 0x0A0D0D0A, 0x1A2B3C4D
_IDB, _PB, _SPB, _ISB, _EPB = 1, 2, 3, 5, 6

# Largest caplen accepted when the file's snaplen is smaller (libpcap's own ceiling).
_MAX_CAPLEN = 262144

# Walker status codes (numba -> Python).
_OK, _EOF, _NEED_PY = 0, 1, 2
_E_TRUNC_HDR, _E_TRUNC_DATA, _E_BAD_CAPLEN = 3, 4, 5
_E_BLK_LEN, _E_BLK_TRUNC, _E_BLK_TRAILER, _E_BLK_IF, _E_BLK_CAPLEN = 6, 7, 8, 9, 10


class PcapError(Exception):
    """The file cannot be read as pcap or pcapng at all (empty, bad magic, unreadable)."""


@kernel(inline=True)
def _u32(buf: np.ndarray, p: int, big: bool) -> int:
    if big:
        return (np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16) | (
            np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3])
    return (np.int64(buf[p + 3]) << 24) | (np.int64(buf[p + 2]) << 16) | (
        np.int64(buf[p + 1]) << 8) | np.int64(buf[p])


@entry
def _walk_pcap(buf: np.ndarray, pos: int, big: bool, ts_mul: int, max_caplen: int,
               o_off: np.ndarray, o_cap: np.ndarray, o_wire: np.ndarray,
               o_ts: np.ndarray) -> tuple[int, int, int, int]:
    """Fill o_* with the pcap records at `pos`: (n filled, pos, status, caplen)."""
    end = buf.shape[0]
    k = 0
    n = o_off.shape[0]
    while k < n:
        if pos == end:
            return k, pos, _EOF, 0
        if end - pos < 16:
            return k, pos, _E_TRUNC_HDR, 0
        cap = _u32(buf, pos + 8, big)
        if cap > max_caplen:
            return k, pos, _E_BAD_CAPLEN, cap
        if end - pos - 16 < cap:
            return k, pos, _E_TRUNC_DATA, cap
        o_ts[k] = _u32(buf, pos, big) * 1_000_000_000 + _u32(buf, pos + 4, big) * ts_mul
        o_off[k] = pos + 16
        o_cap[k] = cap
        o_wire[k] = _u32(buf, pos + 12, big)
        pos += 16 + cap
        k += 1
    return k, pos, _OK, 0


@kernel(inline=True)
def _to_ns(v: int, mul: int, div: int, shift: int, off_ns: int) -> int:
    """A pcapng timestamp in if_tsresol units to ns (decimal: *mul or //div; binary: >>shift)."""
    if shift:
        return (v >> shift) * 1_000_000_000 + (((v & ((1 << shift) - 1)) * 1_000_000_000) >> shift) + off_ns
    if div == 1:  # the usual us/ns resolutions: no division per packet
        return v * mul + off_ns
    return v // div + off_ns


@entry
def _walk_pcapng(buf: np.ndarray, pos: int, big: bool,
                 if_lt: np.ndarray, if_nic: np.ndarray, if_snap: np.ndarray, if_mul: np.ndarray,
                 if_div: np.ndarray, if_shift: np.ndarray, if_off: np.ndarray, last_ts: int,
                 o_off: np.ndarray, o_cap: np.ndarray, o_wire: np.ndarray, o_ts: np.ndarray,
                 o_lt: np.ndarray, o_nic: np.ndarray,
                 start: int) -> tuple[int, int, int, int, int]:
    """Fill o_* from `start` with packet blocks; stops at SHB/IDB/ISB (_NEED_PY), EOF or damage.

    Returns (n filled, pos, status, detail, last timestamp); SPBs carry no
    timestamp, so they get the previous packet's.
    """
    end = buf.shape[0]
    k = start
    n = o_off.shape[0]
    n_if = if_lt.shape[0]
    while k < n:
        if pos == end:
            return k, pos, _EOF, 0, last_ts
        if end - pos < 12:
            return k, pos, _E_BLK_TRUNC, 12, last_ts
        btype = _u32(buf, pos, big)
        if btype == PCAPNG_SHB or btype == _IDB or btype == _ISB:
            return k, pos, _NEED_PY, 0, last_ts
        blen = _u32(buf, pos + 4, big)
        if blen < 12 or blen % 4:
            return k, pos, _E_BLK_LEN, blen, last_ts
        if blen > end - pos:
            return k, pos, _E_BLK_TRUNC, blen, last_ts
        if _u32(buf, pos + blen - 4, big) != blen:
            return k, pos, _E_BLK_TRAILER, blen, last_ts
        if btype == _EPB or btype == _PB:
            if blen < 32:
                return k, pos, _E_BLK_LEN, blen, last_ts
            if btype == _EPB:
                iface = _u32(buf, pos + 8, big)
            elif big:
                iface = (np.int64(buf[pos + 8]) << 8) | np.int64(buf[pos + 9])
            else:
                iface = (np.int64(buf[pos + 9]) << 8) | np.int64(buf[pos + 8])
            if iface >= n_if:
                return k, pos, _E_BLK_IF, iface, last_ts
            cap = _u32(buf, pos + 20, big)
            if cap > blen - 32:
                return k, pos, _E_BLK_CAPLEN, cap, last_ts
            raw = (_u32(buf, pos + 12, big) << 32) | _u32(buf, pos + 16, big)
            last_ts = _to_ns(raw, if_mul[iface], if_div[iface], if_shift[iface], if_off[iface])
            o_off[k] = pos + 28
            o_wire[k] = _u32(buf, pos + 24, big)
        elif btype == _SPB:
            if blen < 16:
                return k, pos, _E_BLK_LEN, blen, last_ts
            if n_if == 0:
                return k, pos, _E_BLK_IF, 0, last_ts
            iface = 0
            wire = _u32(buf, pos + 8, big)
            cap = min(wire, blen - 16)
            if if_snap[0] > 0:
                cap = min(cap, if_snap[0])
            o_off[k] = pos + 12
            o_wire[k] = wire
        else:  # name resolution, statistics, custom, ...: not packets
            pos += blen
            continue
        o_cap[k] = cap
        o_ts[k] = last_ts
        o_lt[k] = if_lt[iface]
        o_nic[k] = if_nic[iface]
        pos += blen
        k += 1
    return k, pos, _OK, 0, last_ts


@dataclass
class _Section:
    """Interfaces of the current pcapng section, as arrays numba can read."""

    big: bool
    lt: list[int] = field(default_factory=list)
    nic: list[int] = field(default_factory=list)
    snap: list[int] = field(default_factory=list)
    mul: list[int] = field(default_factory=list)
    div: list[int] = field(default_factory=list)
    shift: list[int] = field(default_factory=list)
    off: list[int] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (np.array(self.lt, np.int64), np.array(self.nic, np.int64),
                np.array(self.snap, np.int64), np.array(self.mul, np.int64),
                np.array(self.div, np.int64), np.array(self.shift, np.int64),
                np.array(self.off, np.int64))


def _tsresol(code: int) -> tuple[int, int, int]:
    """(mul, div, shift) turning if_tsresol units into ns."""
    exp = code & 0x7F
    if code & 0x80:
        return 1, 1, min(exp, 62)
    exp = min(exp, 18)
    return (10 ** (9 - exp), 1, 0) if exp <= 9 else (1, 10 ** (exp - 9), 0)


class PcapReader:
    """One pcap/pcapng file: `batches()` yields PacketBatches, `stats` says what was read."""

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 262144,
                 nic_name: str | None = None) -> None:
        self.path = Path(path)
        self.batch_size = max(1, int(batch_size))
        self.nic_override = nic_name
        self.stats = SourceStats(source=self.path.name)
        self.nics: list[Nic] = []
        self._section_no = 0
        self._drops: dict[tuple[int, int], int] = {}  # (pcapng section, interface) -> drops
        self._buf = self._map()
        magic_le = struct.unpack_from("<I", self._buf, 0)[0]
        magic_be = struct.unpack_from(">I", self._buf, 0)[0]
        if magic_le == PCAPNG_SHB:
            self.format = "pcapng"
        elif PCAP_US in (magic_le, magic_be) or PCAP_NS in (magic_le, magic_be):
            self.format = "pcap"
        else:
            raise PcapError(f"{self.path}: not a pcap or pcapng file (magic 0x{magic_be:08x})")
        if self.format == "pcap" and len(self._buf) < 24:
            raise PcapError(f"{self.path}: truncated pcap file header ({len(self._buf)} bytes)")

    def _map(self) -> np.ndarray:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise PcapError(f"{self.path}: empty file")
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise PcapError(f"{self.path}: cannot read: {e}") from e
        if size < 4:
            raise PcapError(f"{self.path}: not a pcap or pcapng file ({size} bytes)")
        return np.frombuffer(mm, np.uint8)

    def _nic_index(self, name: str, mac: str = "") -> int:
        """Index of the Nic called `name`, added on first sight."""
        for i, nic in enumerate(self.nics):
            if nic.name == name:
                return i
        self.nics.append(Nic(name=name, mac=mac))
        return len(self.nics) - 1

    def _error(self, msg: str) -> None:
        self.stats.errors.append(f"{self.path.name}: {msg}; {self.stats.packets} packets read before it")

    def batches(self) -> Iterator[PacketBatch]:
        """Decode the whole file, `batch_size` frames at a time (batches hold only TCP/UDP)."""
        frames = self._pcap_frames() if self.format == "pcap" else self._pcapng_frames()
        for off, cap, wire, lt, ts, nic in frames:
            first = self.stats.packets + 1
            self.stats.packets += len(off)
            frame_no = np.arange(first, first + len(off), dtype=np.int64)
            batch, skipped, malformed = decode(self._buf, off, cap, wire, lt, ts, frame_no, nic,
                                               list(self.nics))
            self.stats.decoded += len(batch)
            self.stats.skipped += skipped
            self.stats.malformed += malformed
            if len(batch):
                yield batch

    def _arrays(self) -> tuple[np.ndarray, ...]:
        n = self.batch_size
        return (np.empty(n, np.int64), np.empty(n, np.uint32), np.empty(n, np.uint32),
                np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.uint16))

    def _pcap_frames(self) -> Iterator[tuple[np.ndarray, ...]]:
        buf = self._buf
        big = struct.unpack_from("<I", buf, 0)[0] not in (PCAP_US, PCAP_NS)
        e = ">" if big else "<"
        magic, _vmaj, _vmin, _zone, _sigfigs, snaplen, linktype = struct.unpack_from(e + "IHHiIII", buf, 0)
        ts_mul = 1 if magic == PCAP_NS else 1000
        nic = self._nic_index(self.nic_override or self.path.stem)
        linktype &= 0xFFFF  # the upper bits describe FCS presence, not the link
        max_caplen = max(snaplen, _MAX_CAPLEN)
        pos = 24
        while True:
            off, cap, wire, lt, ts, nics = self._arrays()
            n, pos, status, detail = _walk_pcap(buf, pos, big, ts_mul, max_caplen, off, cap, wire, ts)
            lt[:n] = linktype
            nics[:n] = nic
            if n:
                yield off[:n], cap[:n], wire[:n], lt[:n], ts[:n], nics[:n]
            if status != _OK:
                break
        left = len(buf) - pos
        if status == _E_TRUNC_HDR:
            self._error(f"truncated packet record header at byte {pos} ({left} bytes left)")
        elif status == _E_TRUNC_DATA:
            self._error(f"truncated packet record at byte {pos} (caplen {detail}, {left - 16} bytes left)")
        elif status == _E_BAD_CAPLEN:
            self._error(f"corrupt packet record at byte {pos} (caplen {detail} > {max_caplen})")

    def _pcapng_frames(self) -> Iterator[tuple[np.ndarray, ...]]:
        buf = self._buf
        sec: _Section | None = None
        ifs = _Section(big=False).arrays()
        last_ts = 0
        pos = 0
        off, cap, wire, lt, ts, nics = self._arrays()
        k = 0
        while True:
            big = sec.big if sec else False
            k, pos, status, detail, last_ts = _walk_pcapng(
                buf, pos, big, *ifs, last_ts, off, cap, wire, ts, lt, nics, k)
            error = _block_error(status, pos, detail, len(buf) - pos)
            if status == _NEED_PY:
                try:
                    sec, blen = self._pcapng_block(pos, sec)
                    ifs = sec.arrays()
                    pos += blen
                    continue
                except ValueError as e:
                    error = f"corrupt block at byte {pos} ({e})"
            if k:  # the batch is full, or the file ends here
                yield off[:k], cap[:k], wire[:k], lt[:k], ts[:k], nics[:k]
                off, cap, wire, lt, ts, nics = self._arrays()
                k = 0
            if status != _OK:
                break
        if error:
            self._error(error)

    def _pcapng_block(self, pos: int, sec: _Section | None) -> tuple[_Section, int]:
        """Parse the SHB, IDB or ISB at `pos`: (the section current after it, block length)."""
        buf = self._buf
        left = len(buf) - pos
        if left < 12:
            raise ValueError(f"block header cut, {left} bytes left")
        if struct.unpack_from("<I", buf, pos)[0] == PCAPNG_SHB:
            bom = struct.unpack_from("<I", buf, pos + 8)[0]
            if bom not in (PCAPNG_BOM, 0x4D3C2B1A):
                raise ValueError(f"section header byte-order magic 0x{bom:08x}")
            self._section_no += 1
            sec = _Section(big=bom != PCAPNG_BOM)
            return sec, self._check_block(pos, sec.big, 28)
        if sec is None:
            raise ValueError("block before any section header")
        e = ">" if sec.big else "<"
        btype = struct.unpack_from(e + "I", buf, pos)[0]
        if btype == _ISB:
            blen = self._check_block(pos, sec.big, 24)
            iface = struct.unpack_from(e + "I", buf, pos + 8)[0]
            opts = self._options(pos + 20, pos + blen - 4, e)
            # Counters are totals since the capture started: the last ISB of an interface wins.
            self._drops[(self._section_no, iface)] = sum(
                struct.unpack(e + "Q", opts[c])[0] for c in (5, 7) if len(opts.get(c, b"")) == 8)
            self.stats.dropped = sum(self._drops.values())
            return sec, blen
        blen = self._check_block(pos, sec.big, 20)
        linktype, _res, snaplen = struct.unpack_from(e + "HHI", buf, pos + 8)
        opts = self._options(pos + 16, pos + blen - 4, e)
        n_if = len(sec.lt)
        if self.nic_override:
            name = self.nic_override
        else:
            name = opts.get(2, b"").split(b"\0", 1)[0].decode("utf-8", "replace")
            name = name or (self.path.stem if n_if == 0 else f"{self.path.stem}:{n_if}")
        mac = ":".join(f"{b:02x}" for b in opts[6]) if len(opts.get(6, b"")) == 6 else ""
        mul, div, shift = _tsresol(opts[9][0] if opts.get(9) else 6)
        tsoff = struct.unpack(e + "q", opts[14])[0] if len(opts.get(14, b"")) == 8 else 0
        sec.lt.append(linktype)
        sec.nic.append(self._nic_index(name, mac))
        sec.snap.append(snaplen)
        sec.mul.append(mul)
        sec.div.append(div)
        sec.shift.append(shift)
        sec.off.append(tsoff * 1_000_000_000)
        return sec, blen

    def _options(self, p: int, stop: int, e: str) -> dict[int, bytes]:
        """pcapng options between `p` and `stop`: code -> value (the first one of each code)."""
        opts: dict[int, bytes] = {}
        while p + 4 <= stop:
            code, ln = struct.unpack_from(e + "HH", self._buf, p)
            if code == 0:
                break
            opts.setdefault(code, bytes(self._buf[p + 4 : min(p + 4 + ln, stop)]))
            p += 4 + ((ln + 3) & ~3)
        return opts

    def _check_block(self, pos: int, big: bool, min_len: int) -> int:
        """Length of the block at `pos`, checked against the file and its trailer."""
        e = ">" if big else "<"
        blen = struct.unpack_from(e + "I", self._buf, pos + 4)[0]
        if blen < min_len or blen % 4:
            raise ValueError(f"bad block length {blen}")
        if blen > len(self._buf) - pos:
            raise ValueError(f"block length {blen}, {len(self._buf) - pos} bytes left")
        if struct.unpack_from(e + "I", self._buf, pos + blen - 4)[0] != blen:
            raise ValueError(f"block length {blen} does not match its trailer")
        return blen


def _block_error(status: int, pos: int, detail: int, left: int) -> str:
    """The stats.errors text for a walker status ("" when the walk did not fail)."""
    if status == _E_BLK_TRUNC:
        return f"truncated block at byte {pos} (length {detail}, {left} bytes left)"
    what = {
        _E_BLK_LEN: f"bad block length {detail}",
        _E_BLK_TRAILER: f"block length {detail} does not match its trailer",
        _E_BLK_IF: f"packet of undeclared interface {detail}",
        _E_BLK_CAPLEN: f"packet caplen {detail} larger than its block",
    }.get(status)
    return f"corrupt block at byte {pos} ({what})" if what else ""


def read_pcap(path: str | os.PathLike[str], batch_size: int = 262144,
              nic_name: str | None = None) -> Iterator[PacketBatch]:
    """PacketBatches of a pcap/pcapng file (use PcapReader to also get the SourceStats)."""
    return PcapReader(path, batch_size, nic_name).batches()
