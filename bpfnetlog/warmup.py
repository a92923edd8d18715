"""Compile the numba kernels once (install step), so the first capture or read starts at once.

numba caches compiled code next to the modules (`cache=True`); without this
step the first `bpfnetlog capture` spends seconds compiling while the ring
fills. Usage: `python -m bpfnetlog.warmup PCAP` (install.sh passes the sample).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bpfnetlog.capture.pcap import PcapReader
from bpfnetlog.capture.pcapng_writer import PcapngWriter
from bpfnetlog.pipeline import Pipeline
from bpfnetlog.store.writer import ParquetStoreWriter


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


if __name__ == "__main__":
    print(f"bpfnetlog: numba kernels compiled ({warm(Path(sys.argv[1]))} sample packets)")
