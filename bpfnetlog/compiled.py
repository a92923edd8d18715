"""Where the numba kernels run from: an ahead-of-time build, or numba at run time.

`python -m bpfnetlog.aot` (the install step) compiles every kernel called from Python into
the extension module `bpfnetlog/_kernels*.so`. With it, no process imports numba: that
saves ~0.6 s per command (numba's import and the first load of its cached code), a tenth of
`bpfnetlog read` on bench/ingest's pcap. Without it, or when a source it was built from has
changed since (their digest is kept next to it), or with BPFNETLOG_JIT=1, kernels are
compiled by numba as they are first called (`cache=True`), from the same sources.

Kernel modules mark their functions with `kernel` (called only by other kernels) or
`entry` (called from Python; the build exports these, by the names `export_name` gives).

Kernels are compiled without numba's runtime (NRT): they allocate nothing (callers pass every
buffer) and pay no reference counting, which was a tenth of `bpfnetlog read`'s CPU (an atomic
increment and decrement per array argument of every inner call). Without NRT, numba refuses
array-to-array slice assignment: `copy_bytes` is that copy, as a memcpy.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
# The modules that hold kernels, and those whose constants or helpers the kernels bake in.
KERNEL_MODULES = ("capture.pcap", "capture.afpacket", "capture.pcapng_writer", "capture.ebpf.ringbuf",
                  "decode.frames", "l4.chunks", "l4.flowkeys", "l4.tcp_analysis", "l7.http1_kernel")  # fmt: skip
CONSTANT_MODULES = ("compiled", "packets", "l7.http1", "capture.ebpf.record")
EXTENSION = "_kernels"
DIGEST_FILE = HERE / f"{EXTENSION}.sources"
JIT_ENV = "BPFNETLOG_JIT"  # "1": numba at run time even where the extension is built (tests compare both)


def sources_digest() -> str:
    """sha256 over the sources the extension is compiled from."""
    h = hashlib.sha256()
    for name in KERNEL_MODULES + CONSTANT_MODULES:
        h.update((HERE / (name.replace(".", "/") + ".py")).read_bytes())
    return h.hexdigest()


def _load() -> ModuleType | None:
    if os.environ.get(JIT_ENV) == "1":  # also set by the build, which compiles with numba
        return None
    try:
        built = DIGEST_FILE.read_text().strip()
        ext = importlib.import_module(f"bpfnetlog.{EXTENSION}")
    except (OSError, ImportError):
        return None
    if built != sources_digest():
        print("bpfnetlog: compiled kernels are older than their sources; numba compiles them instead "
              "(slower start). Rebuild: .venv/bin/python -m bpfnetlog.aot", file=sys.stderr)  # fmt: skip
        return None
    return ext


AOT = _load()


def export_name(fn: Callable[..., Any]) -> str:
    """`<module>__<function>`, e.g. flowkeys__group: unique across the kernel modules."""
    return f"{fn.__module__.rsplit('.', 1)[-1]}__{fn.__name__}"


def _numba(fn: Callable[..., Any], inline: bool) -> Callable[..., Any]:
    import numba  # only without the extension: 0.4 s to import

    return numba.njit(cache=True, inline="always" if inline else "never", _nrt=False)(fn)


def kernel(fn: Callable[..., Any] | None = None, *, inline: bool = False) -> Any:
    """A kernel only other kernels call (`inline`: compiled into its callers)."""

    def wrap(f: Callable[..., Any]) -> Any:
        return f if AOT is not None else _numba(f, inline)

    return wrap(fn) if fn is not None else wrap


def entry(fn: Callable[..., Any]) -> Any:
    """A kernel called from Python: the extension's compiled function, else numba's."""
    if AOT is not None:
        return getattr(AOT, export_name(fn))
    return _numba(fn, False)


def _copy_bytes_kernel() -> Callable[..., Any]:
    """copy_bytes(dst, at, src, a, n): dst[at:at+n] = src[a:a+n] (n <= 0: nothing), one memcpy."""
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def memcpy(typingctx, dst, at, src, a, n):  # type: ignore[no-untyped-def]
        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            d = context.make_array(sig.args[0])(context, builder, args[0])
            s = context.make_array(sig.args[2])(context, builder, args[2])
            at_, a_, n_ = (context.cast(builder, args[i], sig.args[i], types.intp) for i in (1, 3, 4))
            cgutils.raw_memcpy(builder, builder.gep(d.data, [at_]), builder.gep(s.data, [a_]), n_, 1)

        return types.void(dst, at, src, a, n), codegen

    def copy_bytes(dst, at, src, a, n):  # type: ignore[no-untyped-def]
        if n > 0:
            memcpy(dst, at, src, a, n)

    return njit(inline="always", _nrt=False)(copy_bytes)


def _never_called(*args: Any) -> None:
    raise RuntimeError("copy_bytes runs inside compiled kernels only")


# With the extension, kernels are plain functions that never run: no numba import for this either.
copy_bytes = _never_called if AOT is not None else _copy_bytes_kernel()
