"""Ahead-of-time build of the numba kernels: `python -m bpfnetlog.aot` (run by install.sh).

Compiles every `compiled.entry` kernel, with the argument types its callers pass, into
bpfnetlog/_kernels*.so (numba.pycc; the CPU is this machine's), and writes the digest of
the sources next to it (see bpfnetlog.compiled). Callers normalise what they pass (one
signature per kernel: `packets.read_only` for bytes), so one compiled version serves all.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import time

os.environ["BPFNETLOG_JIT"] = "1"  # kernels as numba dispatchers, never a previous build's functions
# and never numba's cache either: its index does not know compile flags (a cached kernel built
# with reference counting would be linked in, and the module has no runtime for it)
BUILD_CACHE = tempfile.mkdtemp(prefix="bpfnetlog-aot-")
os.environ["NUMBA_CACHE_DIR"] = BUILD_CACHE

from numba import types as t  # noqa: E402
from numba.pycc import CC  # noqa: E402

from bpfnetlog import compiled  # noqa: E402

U8, U16, U32, U64, I8, I32, I64, B = t.uint8, t.uint16, t.uint32, t.uint64, t.int8, t.int32, t.int64, t.boolean


def A(dtype: t.Type, ndim: int = 1, readonly: bool = False) -> t.Array:
    """A C-contiguous array type."""
    return t.Array(dtype, ndim, "C", readonly=readonly)


RO = A(U8, readonly=True)  # packet bytes (packets.read_only)
# module -> kernel -> argument types, as the callers pass them
ENTRIES: dict[str, dict[str, tuple[t.Type, ...]]] = {
    "capture.pcap": {
        "_walk_pcap": (RO, I64, B, I64, I64, A(I64), A(U32), A(U32), A(I64)),
        "_walk_pcapng": (RO, I64, B, A(I64), A(I64), A(I64), A(I64), A(I64), A(I64), A(I64), I64, A(I64), A(U32),
                         A(U32), A(I64), A(I64), A(U16), I64),
    },
    "capture.afpacket": {"_walk": (A(U8), A(I64), A(I64), A(U32), A(U32), A(I64), A(U8))},
    "capture.pcapng_writer": {
        "_fill": (A(U8), A(I64), A(I64), A(I64), A(B), A(U8), A(U8, 2), A(U8, 2), A(U16), A(U16), A(U8), A(I64),
                  A(I64), A(U16), A(I64), A(I64), A(I64), RO),
    },
    "capture.ebpf.ringbuf": {
        "_stamps": (A(U32, readonly=True), A(U64, readonly=True), I64, I64, I64, A(I64), A(I64)),
        "_drain": (RO, A(U16, readonly=True), A(U32, readonly=True), A(U64, readonly=True), I64, I64, I64, I64,
                   A(I64), I64, A(U64), A(U16), A(I64), A(U64), I64, A(I64), A(U16), A(U8), A(U32), A(U8), A(U8),
                   A(U16), A(U16), A(U8), A(U32), A(U32), A(U16), A(I8), A(U32), A(I64), A(U32), A(U16),
                   A(U64, 2), A(U64, 2), A(U8)),
    },
    "decode.frames": {
        "decode_frames": (RO, A(I64), A(U32), A(U32), A(I64), A(I64), A(I64), A(U16), A(U8), A(U16), A(I64),
                          A(I64), A(U16), A(U32), A(U8), A(U8), A(U16), A(U16), A(U8), A(U32), A(U32), A(U16),
                          A(I8), A(U32), A(I64), A(U32), A(U8, 2), A(U8, 2), A(U8), A(U16)),
    },
    "l4.chunks": {
        "_chunk_of_rows": (A(I32), A(I32), A(I64), A(I64), A(I64), A(I64), A(I64)),
        "_chunk_sums": (A(I64), A(I32), A(U8), A(I64), A(U16), A(U32), A(U8), A(I64), A(U32), A(I64), A(I64, 2)),
    },
    "l4.flowkeys": {
        "_keys": (A(U16), A(U8), A(U8, 2), A(U8, 2), A(U64, 2), A(U64, 2), A(U16), A(U16), A(U64, 2), A(U64), A(U8)),
        "_group": (A(U64), A(I64), A(U64), A(I64), A(I64)),
        "_differs": (A(U64, 2), A(I64), A(U64, 2), A(B)),
    },
    "l4.tcp_analysis": {
        "analyze_batch": (A(I64), A(U8), A(I64), A(U8), A(U8), A(U32), A(U32), A(U16), A(I8), A(U32), A(I64, 2),
                          A(I64, 3), A(U8, 2), A(U64, 2), A(I64), I64, I64, I64, I64, A(I32), A(I32), A(I32),
                          A(U16), A(I64)),
    },
    "l7.http1_kernel": {
        "_is_secret": (RO, I64, I64),
        "run": (A(I64, 2), A(I64, 2), A(I64, 2), A(I64, 2), A(I64), A(U8), RO, A(I64), A(I64), A(I64), A(I64), A(B),
                A(I64), A(I64), A(I64), A(I64), I64, A(B), A(I64), A(I64), A(I64, 2)),
        "close": (A(I64, 2), A(I64, 2), A(I64, 2), A(I64, 2), A(I64), I64),
        "expire": (A(I64, 2), A(I64, 2), A(I64, 2), A(I64, 2), A(I64), I64),
        "compact": (A(I64, 2), A(I64, 2), A(I64, 2), A(I64), A(U8), A(B), A(I64)),
        "_gather": (A(U8), A(I64), A(I64), A(I32), A(U8)),
        "id_text": (A(U8, 2), A(I64), A(I64), A(I32), A(U8)),
        "pair_text": (A(I64), A(I64), I64, A(I32), A(U8)),
    },
}


def build() -> None:
    assert set(ENTRIES) == set(compiled.KERNEL_MODULES), "compiled.KERNEL_MODULES and ENTRIES disagree"
    cc = CC(compiled.EXTENSION)
    cc.output_dir = str(compiled.HERE)
    cc.target_cpu = "host"
    cc.verbose = False
    cc.use_nrt = False  # as compiled._numba: kernels allocate nothing, so no reference counting
    for module, kernels in ENTRIES.items():
        mod = importlib.import_module(f"bpfnetlog.{module}")
        for name, args in kernels.items():
            dispatcher = getattr(mod, name)
            dispatcher.compile(args)  # its return type, as numba infers it
            ret = dispatcher.overloads[args].signature.return_type
            cc.export(compiled.export_name(dispatcher.py_func), ret(*args))(dispatcher.py_func)
    compiled.DIGEST_FILE.unlink(missing_ok=True)  # no stale digest next to a half-built module
    cc.compile()
    compiled.DIGEST_FILE.write_text(compiled.sources_digest() + "\n")


if __name__ == "__main__":
    t0 = time.monotonic()
    try:
        build()
    finally:
        shutil.rmtree(BUILD_CACHE, ignore_errors=True)
    n = sum(map(len, ENTRIES.values()))
    print(f"bpfnetlog: {n} kernels compiled ahead of time in {time.monotonic() - t0:.0f} s", file=sys.stderr)
