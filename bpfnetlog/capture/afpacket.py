"""AF_PACKET capture, for hosts where eBPF is not allowed: one TPACKET_V3 ring per interface.

The filter is the full pcap-filter language, compiled to classic BPF by
libpcap's pcap_compile (ctypes over libpcap.so.0.8) for the interface's link
type; its return value (the snaplen) also bounds how much of each packet the
kernel copies. Filled ring blocks are copied out, given back to the kernel,
and decoded in one numba pass by bpfnetlog.decode.frames. Interfaces and
namespaces are followed like the eBPF backend's (same Follower).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import select
import socket
import struct
import threading
from collections.abc import Iterator

import numpy as np

from bpfnetlog.capture.ebpf.convert import NicTable
from bpfnetlog.capture.ebpf.follow import Follower
from bpfnetlog.capture.ebpf.netns import Link
from bpfnetlog.capture.ebpf.source import LiveStats
from bpfnetlog.capture.errors import CAP_NET_ADMIN, CAP_SYS_ADMIN, CaptureError, require_caps
from bpfnetlog.compiled import entry, kernel
from bpfnetlog.decode.frames import LT_ETHERNET, LT_RAW, decode
from bpfnetlog.packets import DIR_EGRESS, DIR_INGRESS, PacketBatch

SOL_PACKET, PACKET_RX_RING, PACKET_STATISTICS, PACKET_VERSION, TPACKET_V3 = 263, 5, 6, 10, 2
SO_ATTACH_FILTER, ETH_P_ALL, PACKET_OUTGOING, TP_STATUS_USER = 26, 3, 4, 1
DLT_EN10MB, DLT_RAW = 1, 12
BLOCK_SIZE, FRAME_SIZE, BLOCK_TIMEOUT_MS = 1 << 20, 1 << 11, 20
HEADER_ROOM = 256  # link + IP + TCP headers kept in front of the payload snaplen


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


def _libpcap() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libpcap.so.0.8")
    except OSError:
        raise CaptureError("libpcap.so.0.8 not found: apt install libpcap0.8") from None
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p, ctypes.c_int,
                                 ctypes.c_uint32]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    return lib


def compile_cbpf(expr: str | None, dlt: int, snaplen: int) -> bytes:
    """Classic BPF instructions (struct sock_filter array) for `expr` on link type `dlt`."""
    lib = _libpcap()
    p = lib.pcap_open_dead(dlt, snaplen)
    prog = _BpfProgram()
    try:
        if lib.pcap_compile(p, ctypes.byref(prog), (expr or "").encode(), 1, 0xFFFFFFFF) != 0:
            raise CaptureError(f"bad filter {expr!r}: {lib.pcap_geterr(p).decode(errors='replace')}")
        code = ctypes.string_at(prog.bf_insns, prog.bf_len * 8)
        lib.pcap_freecode(ctypes.byref(prog))
        return code
    finally:
        lib.pcap_close(p)


class PacketRing:
    """A packet socket bound to one link, with its mmap'ed TPACKET_V3 ring; closed by detach()."""

    needs_netns = False  # a socket is closed from anywhere

    def __init__(self, link: Link, nic_index: int, insns: bytes, blocks: int):
        self.nic_index = nic_index
        self.linktype = LT_RAW if link.l3 else LT_ETHERNET
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: no packets before bind
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            req = struct.pack("7I", BLOCK_SIZE, blocks, FRAME_SIZE, BLOCK_SIZE // FRAME_SIZE * blocks,
                              BLOCK_TIMEOUT_MS, 0, 0)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self._filter = ctypes.create_string_buffer(insns, len(insns))
            fprog = struct.pack("HxxxxxxP", len(insns) // 8, ctypes.addressof(self._filter))
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            self.mm = mmap.mmap(self.sock.fileno(), BLOCK_SIZE * blocks, mmap.MAP_SHARED,
                                mmap.PROT_READ | mmap.PROT_WRITE)
            self.sock.bind((link.name, ETH_P_ALL))
        except BaseException:
            self.sock.close()
            raise
        self.view = np.frombuffer(self.mm, np.uint8).reshape(blocks, BLOCK_SIZE)
        self.status = self.view[:, 8:12].view(np.uint32)[:, 0]  # tpacket_hdr_v1.block_status
        self.next_block = 0
        self.closed = False
        self.drops = 0

    def take_blocks(self) -> list[np.ndarray]:
        """Copies of the blocks the kernel handed over, in order; each is given back at once."""
        out = []
        with self.lock:
            if self.closed:
                return out
            while self.status[self.next_block] & TP_STATUS_USER:
                blk = self.view[self.next_block]
                out.append(blk[: int(blk[20:24].view(np.uint32)[0])].copy())  # blk_len
                self.status[self.next_block] = 0
                self.next_block = (self.next_block + 1) % len(self.status)
            _, tp_drops, _ = struct.unpack("3I", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
            self.drops += tp_drops  # reading the statistics resets them
        return out

    def detach(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                del self.view, self.status
                self.mm.close()
                self.sock.close()


@kernel(inline=True)
def _u32(buf, p):
    return np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8) | (np.int64(buf[p + 2]) << 16) | (np.int64(buf[p + 3]) << 24)


@entry
def _walk(buf, starts, off, caplen, wire, ts, direction):
    """Per-packet offsets, lengths, times and directions of the blocks at `starts` in buf
    (tpacket_block_desc, then tpacket3_hdr + sockaddr_ll before each frame)."""
    k = 0
    for b in range(starts.shape[0]):
        s = starts[b]
        p = s + _u32(buf, s + 16)  # offset_to_first_pkt
        for _ in range(_u32(buf, s + 12)):  # num_pkts
            off[k] = p + (np.int64(buf[p + 24]) | (np.int64(buf[p + 25]) << 8))  # tp_mac
            caplen[k] = _u32(buf, p + 12)
            wire[k] = _u32(buf, p + 16)
            ts[k] = _u32(buf, p + 4) * 1_000_000_000 + _u32(buf, p + 8)
            direction[k] = DIR_EGRESS if buf[p + 58] == PACKET_OUTGOING else DIR_INGRESS  # sll_pkttype
            k += 1
            p += _u32(buf, p)  # tp_next_offset
    return k


class SocketAttacher:
    """Follower strategy for AF_PACKET: one PacketRing per link, registered with the source."""

    mode = "tpacket_v3"

    def __init__(self, source: "AfPacketSource"):
        self._src = source

    def open_ns(self, netns_id: int) -> None:
        return None

    def close_ns(self, handle: None) -> None:
        pass

    def attach(self, handle: None, link: Link, netns_id: int, nic_index: int) -> list[PacketRing]:
        ring = PacketRing(link, nic_index, self._src.insns(link.l3), self._src.blocks)
        self._src.add_ring(ring)
        return [ring]


class AfPacketSource:
    """Same interface as EbpfSource (start, batches, stats, stop); no kernel per-flow counters."""

    def __init__(self, filter: str | None = None, ifaces: list[str] | None = None, netns: list[str] | None = None,
                 payload_snaplen: int = 1024, ring_bytes: int = 4 << 20, rescan_s: float = 1.0):
        self._expr, self._snaplen = filter, payload_snaplen + HEADER_ROOM
        self.blocks = max(2, ring_bytes // BLOCK_SIZE)  # per interface
        self._insns = {l3: compile_cbpf(filter, DLT_RAW if l3 else DLT_EN10MB, self._snaplen) for l3 in (False, True)}
        self.nics = NicTable()
        self._rings: dict[int, PacketRing] = {}  # fd -> ring
        self._epoll = select.epoll()
        self._follower = Follower(SocketAttacher(self), self.nics.add, ifaces, netns, rescan_s)
        self._frames, self._received, self._skipped, self._malformed = 1, 0, 0, 0
        self._running = self._iterating = False
        self._old_drops = 0  # drops of rings closed since

    def insns(self, l3: bool) -> bytes:
        return self._insns[l3]

    def add_ring(self, ring: PacketRing) -> None:
        self._rings[ring.sock.fileno()] = ring
        self._epoll.register(ring.sock.fileno(), select.EPOLLIN)

    def start(self) -> None:
        require_caps(CAP_NET_ADMIN, CAP_SYS_ADMIN, backend="AF_PACKET")
        self._follower.start()
        self._follower.ready.wait()
        if self._follower.error is not None:
            raise CaptureError(f"cannot open packet sockets: {self._follower.error}") from self._follower.error
        if not self._follower.attached() and self._follower.errors:  # nothing matching yet is fine
            errors = "; ".join(self._follower.errors)
            self.stop()
            raise CaptureError(f"AF_PACKET capture attached to no interface: {errors}")
        self._running = True

    def batches(self, timeout_s: float = 1.0) -> Iterator[PacketBatch]:
        """As EbpfSource.batches: packets as they come, an empty batch after timeout_s of silence."""
        self._iterating = True
        try:
            yield from self._batches(timeout_s)
        finally:
            self._iterating = False
            if not self._running:
                self._epoll.close()

    def _batches(self, timeout_s: float) -> Iterator[PacketBatch]:
        while self._running:
            self._epoll.poll(timeout_s)
            blocks, rings = [], []
            for fd, ring in list(self._rings.items()):
                if ring.closed:
                    self._old_drops += ring.drops
                    del self._rings[fd]  # a closed fd leaves the epoll set by itself
                    continue
                got = ring.take_blocks()
                blocks += got
                rings += [ring] * len(got)
            if not blocks:
                yield PacketBatch.empty(self.nics.snapshot())
                continue
            yield self._decode(blocks, rings)

    def _decode(self, blocks: list[np.ndarray], rings: list[PacketRing]) -> PacketBatch:
        buf = np.concatenate(blocks)
        sizes = np.array([len(b) for b in blocks], np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        nums = np.array([int(b[12:16].view(np.uint32)[0]) for b in blocks], np.int64)
        n = int(nums.sum())
        off, caplen, wire = np.empty(n, np.int64), np.empty(n, np.uint32), np.empty(n, np.uint32)
        ts, direction = np.empty(n, np.int64), np.empty(n, np.uint8)
        _walk(buf, starts, off, caplen, wire, ts, direction)
        nic = np.repeat(np.array([r.nic_index for r in rings], np.uint16), nums)
        linktype = np.repeat(np.array([r.linktype for r in rings], np.uint16), nums)
        frames = np.arange(self._frames, self._frames + n, dtype=np.int64)
        self._frames += n
        batch, skipped, malformed = decode(buf, off, caplen, wire, linktype, ts, frames, nic, self.nics.snapshot(),
                                           direction=direction)
        self._received += n
        self._skipped += skipped
        self._malformed += malformed
        return batch

    def stats(self) -> LiveStats:
        drops = self._old_drops + sum(r.drops for r in list(self._rings.values()))
        return LiveStats(source="afpacket", backend="afpacket", packets=self._received,
                         decoded=self._received - self._skipped - self._malformed, skipped=self._skipped,
                         malformed=self._malformed,
                         dropped=drops, errors=list(self._follower.errors),
                         nics_attached=len(self._follower.attached()), attach_mode=SocketAttacher.mode)

    def stop(self) -> None:
        """Close every socket (the follower detaches them); a running batches() ends within its timeout."""
        self._running = False
        if self._follower.is_alive():
            self._follower.stop()
        if not self._iterating:
            self._epoll.close()
