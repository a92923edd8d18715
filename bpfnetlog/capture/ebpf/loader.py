"""Load copies of bpf/netlog.bpf.o: one per network namespace, all sharing one set of maps.

A tc program cannot tell which namespace it runs in on every kernel (the
netns-cookie helper for tc is recent), and ifindexes repeat across namespaces
(every `lo` is 1). So each namespace gets its own copy of the programs with its
`netns_id` in .rodata; the first copy creates the maps, later copies reuse
their fds, so there is one set of rings (one per CPU, made by `create_rings`),
one flow table and one filter.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import numpy as np

from bpfnetlog.capture.ebpf.libbpf import BPF_ANY, BatchOpts, BpfError, check, check_ptr, lib, num_possible_cpus
from bpfnetlog.capture.ebpf.record import (
    CONFIG,
    FLOW_KEY,
    FLOW_VAL,
    LPM_KEY,
    MAX_SNAPLEN,
    QUIET_GEN_USER,
    QUIET_NO_PAYLOAD,
    STAT_MAX,
)
from bpfnetlog.capture.errors import CaptureError

MAPS = ("rings", "lost", "quiet", "quiet_gen", "quiet_memo", "stats", "filter", "filter_addr", "filter_port")
# (direction, link has no L2 header) -> program name in netlog.bpf.c
PROGRAMS = {(1, False): "netlog_ingress", (2, False): "netlog_egress", (1, True): "netlog_in_l3", (2, True): "netlog_eg_l3"}
OBJECT_ENV = "BPFNETLOG_BPF_OBJECT"
BPF_MAP_TYPE_RINGBUF = 27


def object_path() -> Path:
    """The compiled object: $BPFNETLOG_BPF_OBJECT if set, else the package's copy or the source tree's bpf/."""
    here = Path(__file__).resolve()
    env = os.environ.get(OBJECT_ENV)
    candidates = [Path(env)] if env else [here.parent / "netlog.bpf.o", here.parents[3] / "bpf" / "netlog.bpf.o"]
    for c in candidates:
        if c.is_file():
            return c
    raise CaptureError(
        "BPF object netlog.bpf.o not found (looked in "
        + ", ".join(map(str, candidates))
        + "): run bpf/build.sh (needs apt packages clang llvm libbpf-dev) or set "
        + OBJECT_ENV
    )


class NetlogObject:
    """One loaded copy of the object; `prog_fd(direction, l3)` gives what to attach."""

    def __init__(self, path: Path, netns_id: int, snaplen: int, filtered: bool, shared: dict[str, int] | None,
                 ring_fds: dict[int, int], lost_flows: int):
        """`shared`: the first copy's map fds (None for the first copy, which creates the maps and
        puts `ring_fds` (CPU -> ring, `create_rings`) into `rings`). `filtered`: a capture filter
        will be in the filter maps (without one the programs leave its code out)."""
        self._obj = check_ptr(lib.bpf_object__open_file(str(path).encode(), None), f"open {path}")
        try:
            self._configure(netns_id, snaplen, filtered, shared, ring_fds, lost_flows)
            ret = lib.bpf_object__load(self._obj)
            if ret < 0:
                check(ret, f"load {path.name} (the kernel needs BPF ring buffers and tc BPF: Linux >= 5.8)", True)
            self.map_fds = {m: lib.bpf_map__fd(self._map(m)) for m in MAPS}
            self._progs = {k: lib.bpf_program__fd(self._prog(n)) for k, n in PROGRAMS.items()}
            if not shared:
                for cpu, fd in ring_fds.items():
                    map_update(self.map_fds["rings"], np.array([cpu], np.uint32), np.array([fd], np.uint32), "rings")
        except BaseException:
            lib.bpf_object__close(self._obj)
            raise

    def _map(self, name: str) -> int:
        return check_ptr(lib.bpf_object__find_map_by_name(self._obj, name.encode()), f"map {name}")

    def _prog(self, name: str) -> int:
        return check_ptr(lib.bpf_object__find_program_by_name(self._obj, name.encode()), f"program {name}")

    def _configure(self, netns_id: int, snaplen: int, filtered: bool, shared: dict[str, int] | None,
                   ring_fds: dict[int, int], lost_flows: int) -> None:
        size = ctypes.c_size_t()
        ptr = check_ptr(lib.bpf_map__initial_value(self._map(".rodata"), ctypes.byref(size)), ".rodata")
        if size.value != CONFIG.itemsize:
            raise BpfError(0, f".rodata is {size.value} bytes, record.CONFIG expects {CONFIG.itemsize}")
        cfg = np.zeros(1, CONFIG)
        cfg["snaplen"], cfg["netns_id"], cfg["filtered"] = min(snaplen, MAX_SNAPLEN), netns_id, filtered
        ctypes.memmove(ptr, cfg.ctypes.data, CONFIG.itemsize)
        if shared:
            for name, fd in shared.items():
                check(lib.bpf_map__reuse_fd(self._map(name), fd), f"reuse map {name}")
        else:
            rings = self._map("rings")
            check(lib.bpf_map__set_max_entries(rings, num_possible_cpus()), "ring count")
            check(lib.bpf_map__set_inner_map_fd(rings, next(iter(ring_fds.values()))), "ring template")
            check(lib.bpf_map__set_max_entries(self._map("lost"), lost_flows), "lost flows table size")

    def prog_fd(self, direction: int, l3: bool) -> int:
        return self._progs[(direction, l3)]

    def close(self) -> None:
        """Release this copy; attached links keep their program until they are closed."""
        lib.bpf_object__close(self._obj)


def online_cpus() -> list[int]:
    """The CPUs online now (/sys/devices/system/cpu/online, e.g. "0-3,6")."""
    cpus: list[int] = []
    for part in Path("/sys/devices/system/cpu/online").read_text().strip().split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def create_rings(cpus: list[int], size: int) -> dict[int, int]:
    """CPU -> fd of a new BPF ring buffer of `size` bytes (a power of two, >= a page): the
    programs write to the ring of the CPU they run on. Only for `cpus` (those online): a VM's
    possible CPUs can be many more, and a ring's memory is allocated whole. A CPU without a ring
    (one brought online later) has its records counted as ring drops. The caller closes the fds."""
    fds: dict[int, int] = {}
    try:
        for cpu in cpus:
            fds[cpu] = check(lib.bpf_map_create(BPF_MAP_TYPE_RINGBUF, f"netlog_ring{cpu}".encode(), 0, 0, size, None),
                             f"create the ring buffer of CPU {cpu}")  # fmt: skip
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def map_update(fd: int, key: np.ndarray, value: np.ndarray, what: str) -> None:
    check(lib.bpf_map_update_elem(fd, key.ctypes.data, value.ctypes.data, BPF_ANY), f"update {what}")


def map_delete(fd: int, key: np.ndarray, what: str) -> None:
    """Delete one entry; a missing one is fine (the LRU may have evicted it)."""
    ret = lib.bpf_map_delete_elem(fd, key.ctypes.data)
    if ret < 0 and -ret != errno.ENOENT:
        check(ret, f"delete {what}")


class QuietFlows:
    """User space's side of the `quiet` map: entries written or removed, then the table's version
    (quiet_gen[1]) raised, so that no CPU goes on using a memo of an older verdict (quiet_memo)."""

    def __init__(self, map_fds: dict[str, int]):
        self._quiet, self._gen, self._version = map_fds["quiet"], map_fds["quiet_gen"], 0

    def apply(self, quiet: list[np.ndarray], resumed: list[np.ndarray]) -> None:
        """Headers only for the flows (FLOW_KEY) in `quiet`, payload again for those in `resumed`."""
        value = np.array([QUIET_NO_PAYLOAD], np.uint32)
        for key in quiet:
            map_update(self._quiet, key, value, "quiet flows")
        for key in resumed:
            map_delete(self._quiet, key, "quiet flows")
        if quiet or resumed:
            self._version += 1
            map_update(self._gen, np.array([QUIET_GEN_USER], np.uint32), np.array([self._version], np.uint64),
                       "quiet version")  # fmt: skip


def read_stats(fd: int) -> np.ndarray:
    """Per-CPU counters summed over CPUs, indexed by record.STAT_*."""
    ncpu = num_possible_cpus()
    out = np.zeros(STAT_MAX, np.uint64)
    vals = np.zeros(ncpu, np.uint64)  # per-CPU values are 8-byte aligned
    for i in range(STAT_MAX):
        key = np.array([i], np.uint32)
        check(lib.bpf_map_lookup_elem(fd, key.ctypes.data, vals.ctypes.data), "read stats")
        out[i] = vals.sum()
    return out


def read_lost(fd: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """All (FLOW_KEY, FLOW_VAL) entries of the `lost` map, fetched with batched lookups."""
    keys, vals = [], []
    token_in, token_out = np.zeros(64, np.uint8), np.zeros(64, np.uint8)
    opts = BatchOpts(ctypes.sizeof(BatchOpts), 0, 0)
    first = True
    while True:
        k, v = np.zeros(chunk, FLOW_KEY), np.zeros(chunk, FLOW_VAL)
        count = ctypes.c_uint32(chunk)
        ret = lib.bpf_map_lookup_batch(fd, None if first else token_in.ctypes.data, token_out.ctypes.data,
                                       k.ctypes.data, v.ctypes.data, ctypes.byref(count), ctypes.byref(opts))
        keys.append(k[: count.value])
        vals.append(v[: count.value])
        if ret < 0:
            if -ret == 2:  # ENOENT: that was the last batch
                break
            check(ret, "read the lost packets per flow")
        token_in[:] = token_out
        first = False
    return np.concatenate(keys), np.concatenate(vals)


def flow_key(ifindex: int, netns_id: int, proto: int, direction: int, saddr: bytes, sport: int, daddr: bytes,
             dport: int) -> np.ndarray:  # fmt: skip
    """One key of the per-flow maps (`quiet`, `lost`); addresses as 16 bytes (IPv4 ::ffff:a.b.c.d)."""
    key = np.zeros(1, FLOW_KEY)
    key["ifindex"], key["netns_id"], key["proto"], key["direction"] = ifindex, netns_id, proto, direction
    key["saddr"][0], key["daddr"][0] = np.frombuffer(saddr, np.uint8), np.frombuffer(daddr, np.uint8)
    key["sport"], key["dport"] = sport, dport
    return key


def lpm_key(prefixlen: int, addr: bytes) -> np.ndarray:
    key = np.zeros(1, LPM_KEY)
    key["prefixlen"] = prefixlen
    key["addr"][0] = np.frombuffer(addr, np.uint8)
    return key
