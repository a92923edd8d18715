"""Compile the numba kernels once (install step), and load them before capture starts.

numba caches compiled code next to the modules (`cache=True`); without the
install step the first `bpfnetlog capture` spends seconds compiling while the
ring fills. Loading the cached code still costs ~0.5 s of CPU per process, at
each kernel's first call: `bpfnetlog capture` pays it before attaching (`load`),
not when the first packets arrive. Usage: `python -m bpfnetlog.warmup [PCAP]`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from bpfnetlog.capture.afpacket import _walk as afpacket_walk
from bpfnetlog.capture.ebpf.record import REC
from bpfnetlog.capture.ebpf.ringbuf import _drain as ring_drain
from bpfnetlog.capture.pcap import PcapReader
from bpfnetlog.capture.pcapng_writer import PcapngWriter
from bpfnetlog.decode.frames import decode
from bpfnetlog.pipeline import Pipeline
from bpfnetlog.store.writer import ParquetStoreWriter


SAMPLE = Path(__file__).resolve().parent / "data" / "warmup.pcapng"  # HTTP, DNS, TCP and UDP, small packets


def load() -> None:
    """Every kernel the live path calls, loaded (or compiled) now: the live sources' and the pipeline's."""
    warm_live()
    warm(SAMPLE)


def warm(pcap: Path) -> int:
    """Run the sample through decode, L4, L7, the store and the pcapng writer; packets read."""
    with tempfile.TemporaryDirectory() as tmp:
        with ParquetStoreWriter(Path(tmp) / "store") as store, PcapngWriter(Path(tmp) / "out.pcapng") as out:
            pipe = Pipeline(store, "warmup")
            for batch in PcapReader(pcap).batches():
                pipe.feed(batch)
                out.write(batch)
            pipe.finish()
    return pipe.count.packets


def warm_live() -> None:
    """The live sources' kernels, with the argument types they get there (no packets needed)."""
    i64, u32 = np.zeros(0, np.int64), np.zeros(0, np.uint32)
    ring = np.frombuffer(bytes(64), np.uint8)  # read-only, as the mmap'd ring
    ring_drain(ring, 63, 0, 0, REC.itemsize, np.zeros((1, REC.itemsize), np.uint8), np.zeros(1, np.uint8),
               np.zeros(1, np.int64))  # fmt: skip
    blocks = np.zeros(0, np.uint8)  # writable, as AF_PACKET's copied blocks
    afpacket_walk(blocks, i64, i64, u32, u32, i64, np.zeros(0, np.uint8))
    decode(blocks, i64, u32, u32, np.zeros(0, np.uint16), i64, i64, np.zeros(0, np.uint16), [],
           direction=np.zeros(0, np.uint8))  # fmt: skip


if __name__ == "__main__":
    warm_live()
    print(f"bpfnetlog: numba kernels compiled ({warm(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLE)} sample packets)")
