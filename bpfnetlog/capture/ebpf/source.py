"""EbpfSource: tc programs on every wanted NIC, records read from the ring as PacketBatches."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from bpfnetlog.capture.ebpf import loader
from bpfnetlog.capture.ebpf.attach import TcAttacher
from bpfnetlog.capture.ebpf.convert import NicTable, to_batch
from bpfnetlog.capture.ebpf.filter import compile_filter
from bpfnetlog.capture.ebpf.follow import Follower
from bpfnetlog.capture.ebpf.libbpf import BpfError
from bpfnetlog.capture.ebpf.record import (
    FLOW_VAL,
    STAT_QUIET,
    STAT_FILTERED,
    STAT_RING_DROP,
    STAT_SHED,
    STAT_SKIPPED,
)
from bpfnetlog.capture.ebpf.ringbuf import Rings
from bpfnetlog.capture.errors import CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN, CaptureError, require_caps
from bpfnetlog.packets import DIR_EGRESS, DIR_INGRESS, FlowRef, PacketBatch, SourceStats  # DIR_*: the kernel's too

# Each batch costs a few ms whatever its size: with less than COALESCE_BYTES pending the reader
# lets the rings fill until one holds 1/COALESCE_FILL of its size, for at most COALESCE_MAX_S.
# FILL_RATE_MAX: bytes/s of records one CPU's programs can write (~140 MB/s measured: a 64-byte
# UDP flood at 917k packets/s), which bounds how long the reader may sleep. With the pipeline
# behind, it checks the queue every COALESCE_STEP_S.
COALESCE_BYTES, COALESCE_FILL, COALESCE_MAX_S, COALESCE_STEP_S = 2 << 20, 8, 0.2, 0.01
FILL_RATE_MAX = 256 << 20
RING_MIN_PER_CPU = 4 << 20
# Batches the reader thread took from the rings and the pipeline has not yet: a flush that
# writes millions of rows waits here, in memory, not in the rings. Beyond it the reader
# waits, the rings fill and the kernel counts what it cannot keep (ring drops).
QUEUE_BYTES = 256 << 20


def per_cpu_ring(total: int, cpus: int) -> int:
    """Each CPU's ring: its share of `total` bytes, but at least min(total, RING_MIN_PER_CPU) (one
    busy CPU, say an elephant flow's, fills its own ring only), as a power of two."""
    size = max(total // cpus, min(total, RING_MIN_PER_CPU))
    return 1 << (size.bit_length() - 1)


@dataclass
class RingLosses:
    """The packets the ring had no room for, per (NIC, direction, 5-tuple), from the kernel: with
    the records received, each flow's exact totals."""

    nic: np.ndarray  # uint16 index into `nics`
    direction: np.ndarray
    proto: np.ndarray
    src_ip: np.ndarray  # (n, 16) uint8
    dst_ip: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    values: np.ndarray  # record.FLOW_VAL: packets, bytes, payload_bytes, segs (of the lost records)
    nics: list = field(default_factory=list)


class EbpfSource:
    """Start, iterate `batches()`, `stop()`; see bpfnetlog.capture.live.LiveSource for the facade."""

    def __init__(self, filter: str | None = None, ifaces: list[str] | None = None,
                 netns: list[str] | None = None, payload_snaplen: int = 1024, ring_bytes: int = 64 << 20,
                 lost_flows: int = 1 << 16, attach_mode: str = "auto", rescan_s: float = 1.0):
        if ring_bytes & (ring_bytes - 1) or ring_bytes < 4096:
            raise ValueError("ring_bytes must be a power of two >= 4096")
        self._filter = compile_filter(filter)  # FilterError before touching the kernel
        self._ifaces, self._netns = ifaces, netns
        self._snaplen, self._lost_flows = payload_snaplen, lost_flows
        self._cpus = loader.online_cpus()
        self._per_cpu = per_cpu_ring(ring_bytes, len(self._cpus))
        self._attach_mode, self._rescan_s = attach_mode, rescan_s
        self.nics = NicTable()
        self._shared: dict[str, int] | None = None
        self._first: loader.NetlogObject | None = None
        self._ring: Rings | None = None
        self._ring_fds: dict[int, int] = {}  # CPU -> its ring
        self._follower: Follower | None = None
        self._frames = 1
        self._received = 0
        self._running = False
        self._reader: threading.Thread | None = None
        self._queue: queue.Queue[tuple[PacketBatch, int] | None] = queue.Queue()  # (batch, bytes); None: the end
        self._queued = 0  # bytes in the queue
        self._queued_lock = threading.Lock()
        self._reader_error: BaseException | None = None
        self._ended = False  # batches() saw the reader's end
        self._kernel = np.zeros(8, np.uint64)  # last kernel counters, kept after stop()
        self._quiet: loader.QuietFlows | None = None

    def start(self) -> None:
        require_caps(CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN, backend="eBPF")
        path = loader.object_path()
        try:
            self._ring_fds = loader.create_rings(self._cpus, self._per_cpu)
            self._first = loader.NetlogObject(path, 0, self._snaplen, self._filter.enabled, None, self._ring_fds,
                                              self._lost_flows)
        except BpfError as e:
            self._close_ring_fds()
            raise CaptureError(f"cannot load the BPF programs: {e}") from e
        self._shared = dict(self._first.map_fds)
        self._quiet = loader.QuietFlows(self._shared)
        self._fill_filter()
        self._ring = Rings(list(self._ring_fds.values()), self._per_cpu)
        self._attacher = TcAttacher(self._load, self._attach_mode)
        self._follower = Follower(self._attacher, self.nics.add, self._ifaces, self._netns, self._rescan_s)
        self._follower.start()
        self._follower.ready.wait()
        if self._follower.error is not None:
            err = self._follower.error
            self.stop()
            if isinstance(err, BpfError):
                raise CaptureError(f"cannot attach the BPF programs: {err}") from err
            raise err
        if not self._follower.attached() and self._follower.errors:  # nothing matching yet is fine
            errors = "; ".join(self._follower.errors)
            self.stop()
            raise CaptureError(f"eBPF capture attached to no interface: {errors}")
        self._running = True
        self._reader = threading.Thread(target=self._read_rings, name="bpfnetlog-rings", daemon=True)
        self._reader.start()

    def _load(self, netns_id: int) -> loader.NetlogObject:
        return loader.NetlogObject(loader.object_path(), netns_id, self._snaplen, self._filter.enabled,
                                   self._shared, self._ring_fds, self._lost_flows)

    def _fill_filter(self) -> None:
        fds, f = self._shared, self._filter
        for prefixlen, addr, bits in f.lpm:
            loader.map_update(fds["filter_addr"], loader.lpm_key(prefixlen, addr), np.array([bits], np.uint64),
                              "filter addresses")
        for port, bits in f.ports.items():
            loader.map_update(fds["filter_port"], np.array([port], np.uint32), np.array([bits], np.uint64),
                              "filter ports")
        loader.map_update(fds["filter"], np.zeros(1, np.uint32), f.header, "filter")  # enable last

    def batches(self, timeout_s: float = 1.0) -> Iterator[PacketBatch]:
        """Yield batches as records arrive, an empty batch after `timeout_s` of silence
        (so callers can flush on time); ends after stop(), with what the rings held then.
        Called again after stop() (say after Ctrl-C interrupted the loop), it yields that rest."""
        while not self._ended:
            try:
                item = self._queue.get(timeout=timeout_s)
            except queue.Empty:
                yield PacketBatch.empty(self.nics.snapshot())
                continue
            if item is None:
                self._ended = True
                if self._reader_error is not None:
                    raise CaptureError(f"reading the ring buffers failed: {self._reader_error}") from self._reader_error
                return
            batch, size = item
            with self._queued_lock:
                self._queued -= size
            yield batch

    def _read_rings(self) -> None:
        """The reader thread: rings -> batches -> queue, until stop(); then what the rings still
        hold (the programs are detached by then), and the queue's end mark."""
        ring = self._ring
        assert ring is not None
        try:
            while self._running:
                if self._queued > QUEUE_BYTES:  # the pipeline is behind: let the rings fill
                    time.sleep(COALESCE_STEP_S)
                    continue
                if not ring.wait(0.1):
                    continue
                if ring.pending() < COALESCE_BYTES:
                    ring.settle(self._per_cpu // COALESCE_FILL, COALESCE_MAX_S, FILL_RATE_MAX)
                self._put(self._read(ring))
            self._put(self._read(ring))
        except BaseException as e:  # reported by batches(), not lost with the thread
            self._reader_error = e
        finally:
            self._close_ring()
            self._queue.put(None)

    def _put(self, batch: PacketBatch) -> None:
        if len(batch):
            size = sum(v.nbytes for v in (*batch.cols.values(), batch.src_ip, batch.dst_ip, batch.data))
            with self._queued_lock:
                self._queued += size
            self._queue.put((batch, size))

    def _read(self, ring: Rings) -> PacketBatch:
        # the kernel stamps CLOCK_MONOTONIC; records get wall-clock ns
        shift = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        batch = to_batch(*ring.read(shift, self.nics.known()), self.nics, self._frames)
        self._frames += len(batch)
        self._received += len(batch)
        return batch

    def stats(self) -> "LiveStats":
        if self._shared:
            self._kernel = loader.read_stats(self._shared["stats"])
        k = self._kernel
        f = self._follower
        return LiveStats(
            source="ebpf", packets=self._received, decoded=self._received, skipped=int(k[STAT_SKIPPED]),
            dropped=int(k[STAT_RING_DROP]), quiet=int(k[STAT_QUIET]), shed=int(k[STAT_SHED]),
            errors=list(f.errors) if f else [],
            filtered=int(k[STAT_FILTERED]),
            nics_attached=len(f.attached()) if f else 0, attach_mode=self._attacher.mode if f else "",
            stale_removed=self._attacher.stale_removed if f else 0,
        )

    def set_quiet(self, quiet: list[FlowRef], resumed: list[FlowRef]) -> None:
        """Stop (quiet) or restart (resumed) copying payload for these connections, both directions.

        The pipeline asks for it once its L7 stage gave up on a connection: then a bulk transfer
        costs the ring and this process headers only. A SYN clears it in the kernel too.
        """
        if self._quiet is not None:
            self._quiet.apply([k for r in quiet for k in self._quiet_keys(r)],
                              [k for r in resumed for k in self._quiet_keys(r)])  # fmt: skip

    def _quiet_keys(self, ref: FlowRef) -> list[np.ndarray]:
        """The kernel's flow keys of a connection: each orientation at ingress and at egress."""
        netns_id = self.nics.netns_id(ref.nic)
        if netns_id is None:
            return []
        return [loader.flow_key(ref.nic.ifindex, netns_id, ref.proto, direction, saddr, sport, daddr, dport)
                for saddr, sport, daddr, dport in ((ref.ip_a, ref.port_a, ref.ip_b, ref.port_b),
                                                   (ref.ip_b, ref.port_b, ref.ip_a, ref.port_a))
                for direction in (DIR_INGRESS, DIR_EGRESS)]  # fmt: skip

    def ring_losses(self) -> RingLosses:
        keys, vals = loader.read_lost(self._shared["lost"])
        return RingLosses(
            nic=self.nics.indexes(keys["netns_id"], keys["ifindex"]), direction=keys["direction"].copy(),
            proto=keys["proto"].copy(), src_ip=keys["saddr"].copy(), dst_ip=keys["daddr"].copy(),
            sport=keys["sport"].copy(), dport=keys["dport"].copy(), values=vals.astype(FLOW_VAL),
            nics=self.nics.snapshot(),
        )

    def stop(self) -> None:
        """Detach everything and free the maps; safe to call twice and from another thread
        (batches() then yields what the rings held and ends)."""
        self._running = False
        if self._follower is not None and self._follower.is_alive():
            self._follower.stop()  # kept: stats() still reports its mode and errors
        if self._shared:
            self._kernel = loader.read_stats(self._shared["stats"])
        if self._reader is not None:
            self._reader.join()  # it reads the rest and closes the rings
        else:
            self._close_ring()
        if self._first is not None:
            self._first.close()
            self._first = None
        self._shared, self._quiet = None, None

    def _close_ring(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._close_ring_fds()

    def _close_ring_fds(self) -> None:
        for fd in self._ring_fds.values():
            os.close(fd)
        self._ring_fds = {}


@dataclass
class LiveStats(SourceStats):
    """SourceStats plus what only a live source knows."""

    quiet: int = 0  # records sent without payload: their connection's L7 stage had given up
    shed: int = 0  # records sent without their payload: the ring was over half full
    filtered: int = 0  # packets the capture filter rejected
    nics_attached: int = 0
    attach_mode: str = ""  # "tcx" or "clsact" (ebpf), "tpacket_v3" (afpacket)
    stale_removed: int = 0  # clsact filters of a killed earlier run removed at start
    backend: str = field(default="ebpf")
    started: float = field(default_factory=time.time)
