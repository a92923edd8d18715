"""LiveSource: the one object the capture command uses, whatever the backend.

    with LiveSource(filter="tcp port 80", netns=["pod1"]) as src:
        for batch in src.batches(timeout_s=1.0):   # empty batch after 1 s of silence
            pipeline.feed(batch)
        ...                                         # src.stop() (e.g. from a timer) ends the loop
    src.stats()          # LiveStats: packets, dropped (ring full), filtered, nics_attached ...
    src.ring_losses()    # per flow, the packets the ring lost (eBPF only, else None)

`backend="auto"` tries eBPF and falls back to AF_PACKET when eBPF cannot
start here or the filter is outside the eBPF subset; `notice` says why.
SIGTERM is turned into SystemExit while the source runs (SIGINT already
raises KeyboardInterrupt), so a `with` block always detaches everything.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from bpfnetlog.capture.ebpf import EbpfSource, FilterError, LiveStats, RingLosses
from bpfnetlog.capture.errors import CaptureError
from bpfnetlog.packets import FlowRef, PacketBatch

BACKENDS = ("auto", "ebpf", "afpacket")


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def batch_scheduling() -> None:
    """Put every thread of this process (and so the threads it starts later) under SCHED_BATCH.

    A capture keeps its fair share of the CPUs (under SCHED_IDLE or a high nice value a busy host
    would starve it and its rings would overflow), but it no longer preempts the host's own work
    each time it wakes up for a batch: it runs when a CPU frees up or at the next tick. iperf3 between
    namespaces with TSO on (CPUs ~88% busy) lost 4.8% (median of 14 rounds) instead of 7.0% to it.
    """
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setscheduler(int(tid), os.SCHED_BATCH, os.sched_param(0))
        except OSError:  # a thread that just ended; switching to SCHED_BATCH needs no privilege
            pass


class LiveSource:
    """Packets of live interfaces as PacketBatches (see module docstring)."""

    def __init__(self, backend: str = "auto", filter: str | None = None, ifaces: list[str] | None = None,
                 netns: list[str] | None = None, payload_snaplen: int = 1024, ring_bytes: int = 64 << 20,
                 afpacket_ring_bytes: int = 4 << 20, attach_mode: str = "auto", rescan_s: float = 1.0):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
        self.requested = backend
        self.backend = ""  # the one that runs, after start()
        self.notice = ""  # why auto fell back, for the CLI to print
        self._args = dict(filter=filter, ifaces=ifaces, netns=netns, payload_snaplen=payload_snaplen,
                          rescan_s=rescan_s)
        self._ebpf_args = dict(ring_bytes=ring_bytes, attach_mode=attach_mode)  # rings (one per CPU) for all NICs
        self._afpacket_args = dict(ring_bytes=afpacket_ring_bytes)  # per NIC, pinned kernel memory
        self._src: EbpfSource | None = None
        self._old_sigterm = None

    def start(self) -> None:
        if self.requested in ("auto", "ebpf"):
            try:
                src = EbpfSource(**self._args, **self._ebpf_args)
                src.start()
                self._src, self.backend = src, "ebpf"
            except (CaptureError, FilterError) as e:
                if self.requested == "ebpf":
                    raise
                self.notice = f"eBPF capture unavailable ({e}); using AF_PACKET"
        if self._src is None:
            from bpfnetlog.capture.afpacket import AfPacketSource

            src = AfPacketSource(**self._args, **self._afpacket_args)
            src.start()
            self._src, self.backend = src, "afpacket"
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm)

    def batches(self, timeout_s: float = 1.0) -> Iterator[PacketBatch]:
        """Batches as packets arrive; an empty one after `timeout_s` without packets; ends after stop()."""
        return self._src.batches(timeout_s)

    def stats(self) -> LiveStats:
        return self._src.stats()

    def set_quiet(self, quiet: list[FlowRef], resumed: list[FlowRef]) -> None:
        """Connections whose payload is of no use (eBPF stops copying it), and ones that ended;
        AF_PACKET keeps its fixed snaplen."""
        if self.backend == "ebpf" and (quiet or resumed):
            self._src.set_quiet(quiet, resumed)

    def ring_losses(self) -> RingLosses | None:
        """The kernel's per-flow counts of the packets the ring lost (eBPF); None for AF_PACKET."""
        return self._src.ring_losses() if self.backend == "ebpf" else None

    def stop(self) -> None:
        if self._src is not None:
            self._src.stop()
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def __enter__(self) -> "LiveSource":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
