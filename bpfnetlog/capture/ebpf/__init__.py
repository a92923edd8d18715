"""eBPF live capture: tc programs (bpf/netlog.bpf.c) loaded through libbpf, records read from a ring buffer."""

from bpfnetlog.capture.ebpf.filter import FilterError, compile_filter
from bpfnetlog.capture.ebpf.source import EbpfSource, LiveStats, RingLosses

__all__ = ["EbpfSource", "FilterError", "LiveStats", "RingLosses", "compile_filter"]
