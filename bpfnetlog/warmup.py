"""Run every kernel once: the install step's check of the build, and capture's start.

With the ahead-of-time kernels (bpfnetlog.aot) this is a quick run of a sample pcap
through decode, L4, L7, the store and the pcapng writer. Where numba compiles at run time
instead (no build, a stale one, BPFNETLOG_JIT=1), it compiles or loads each kernel from
numba's cache (`cache=True`, seconds the first time, ~0.5 s after): `bpfnetlog capture`
pays that before attaching (`load`), not while the ring fills.
Usage: `python -m bpfnetlog.warmup [PCAP]`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bpfnetlog.capture.afpacket import _walk as afpacket_walk
from bpfnetlog.capture.ebpf.record import REC
from bpfnetlog.capture.ebpf.ringbuf import HDR, drain as ring_drain
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
    one = np.zeros(128, np.uint8)  # one empty IPv6 record: header (its length) + REC
    one[:4] = np.frombuffer(np.uint32(REC.itemsize).tobytes(), np.uint8)
    one[HDR + REC.fields["ip_version"][1]] = 6
    ring = SimpleNamespace(data=np.frombuffer(one.tobytes(), np.uint8), mask=127, cons=0, prod=HDR + REC.itemsize)
    ring_drain([ring, ring], 0)  # read-only data, as the mmap'd rings; two: the merge runs too
    blocks = np.zeros(0, np.uint8)  # writable, as AF_PACKET's copied blocks
    afpacket_walk(blocks, i64, i64, u32, u32, i64, np.zeros(0, np.uint8))
    decode(blocks, i64, u32, u32, np.zeros(0, np.uint16), i64, i64, np.zeros(0, np.uint16), [],
           direction=np.zeros(0, np.uint8))  # fmt: skip


if __name__ == "__main__":
    warm_live()
    from bpfnetlog.compiled import AOT

    n = warm(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLE)
    how = "compiled ahead of time" if AOT is not None else "compiled by numba (cached)"
    print(f"bpfnetlog: kernels {how}, checked on {n} sample packets")
