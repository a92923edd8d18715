"""Attach programs at tc ingress/egress: tcx links, or clsact filters on older kernels.

A tcx link is an fd: closing it (or the process dying, even by kill -9)
detaches the program. A clsact filter outlives its process, so ours carry a
fixed handle and priority plus program names starting with `netlog_`, and
`remove_stale` deletes such leftovers at the next start. All calls act in the
calling thread's network namespace (see netns.py).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass

from pyroute2 import IPRoute

from bpfnetlog.capture.ebpf.libbpf import (
    BPF_TC_EGRESS,
    BPF_TC_INGRESS,
    BPF_TCX_EGRESS,
    BPF_TCX_INGRESS,
    BpfError,
    TcHook,
    TcOpts,
    check,
    lib,
)
from bpfnetlog.capture.ebpf.loader import NetlogObject
from bpfnetlog.capture.ebpf.netns import Link

CLSACT_HANDLE = 0x6E6C6F67  # "nlog": recognisably ours in `tc filter show`
CLSACT_PRIO = 0xB9F1
PROG_PREFIX = b"netlog_"
CLSACT_INGRESS, CLSACT_EGRESS = 0xFFFFFFF2, 0xFFFFFFF3  # tc parents of the clsact hooks
BPF_TC_F_REPLACE = 1
_TCX = {1: BPF_TCX_INGRESS, 2: BPF_TCX_EGRESS}
_TC = {1: BPF_TC_INGRESS, 2: BPF_TC_EGRESS}
# errnos that mean "this kernel has no tcx": fall back to clsact
_NO_TCX = {errno.EINVAL, errno.EOPNOTSUPP, 524}


@dataclass
class Attachment:
    """One program on one hook; `detach()` is idempotent and never raises for a vanished device."""

    ifindex: int
    direction: int
    link_fd: int = -1  # tcx
    created_qdisc: bool = False  # clsact: we made the qdisc, so we remove it

    @property
    def needs_netns(self) -> bool:
        """A tcx link is closed from anywhere; a clsact filter is found by ifindex, per namespace."""
        return self.link_fd < 0

    def detach(self) -> None:
        if self.link_fd >= 0:
            os.close(self.link_fd)
            self.link_fd = -1
            return
        hook = _hook(self.ifindex, _TC[self.direction])
        lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(_opts()))
        if self.created_qdisc:
            hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS
            lib.bpf_tc_hook_destroy(ctypes.byref(hook))


def _hook(ifindex: int, point: int) -> TcHook:
    return TcHook(ctypes.sizeof(TcHook), ifindex, point, 0)


def _opts(prog_fd: int = 0, flags: int = 0) -> TcOpts:
    return TcOpts(ctypes.sizeof(TcOpts), prog_fd, flags, 0, CLSACT_HANDLE, CLSACT_PRIO)


def attach_tcx(prog_fd: int, ifindex: int, direction: int) -> Attachment | None:
    """A tcx link, or None when the kernel has no tcx (caller falls back to clsact)."""
    fd = lib.bpf_link_create(prog_fd, ifindex, _TCX[direction], None)
    if fd < 0 and -fd in _NO_TCX:
        return None
    check(fd, f"tcx attach ifindex {ifindex}")
    return Attachment(ifindex, direction, link_fd=fd)


def attach_clsact(prog_fd: int, ifindex: int, direction: int) -> Attachment:
    hook = _hook(ifindex, _TC[direction])
    ret = lib.bpf_tc_hook_create(ctypes.byref(hook))
    if ret < 0 and -ret != errno.EEXIST:
        check(ret, f"create clsact qdisc on ifindex {ifindex} (kernel needs CONFIG_NET_SCH_INGRESS)")
    check(lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(_opts(prog_fd, BPF_TC_F_REPLACE))),
          f"tc attach ifindex {ifindex}")
    return Attachment(ifindex, direction, created_qdisc=ret == 0)


def _prog_name(prog_id: int) -> bytes:
    fd = lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return b""
    try:
        info = (ctypes.c_uint8 * 80)()  # struct bpf_prog_info up to name[16] at offset 64
        size = ctypes.c_uint32(80)
        if lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) < 0:
            return b""
        return bytes(info[64:80]).split(b"\0")[0]
    finally:
        os.close(fd)


def _has_filters(ifindex: int) -> bool:
    with IPRoute() as ipr:
        return any(ipr.get_filters(index=ifindex, parent=p) for p in (CLSACT_INGRESS, CLSACT_EGRESS))


def remove_stale(ifindex: int) -> int:
    """Delete clsact filters a killed bpfnetlog left on ifindex, and their clsact
    qdisc once nothing else uses it; returns how many filters."""
    removed = 0
    for point in (BPF_TC_INGRESS, BPF_TC_EGRESS):
        hook, opts = _hook(ifindex, point), _opts()
        if lib.bpf_tc_query(ctypes.byref(hook), ctypes.byref(opts)) < 0:
            continue
        if _prog_name(opts.prog_id).startswith(PROG_PREFIX):
            try:
                check(lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(_opts())), "remove stale filter")
                removed += 1
            except BpfError:
                pass
    if removed and not _has_filters(ifindex):
        lib.bpf_tc_hook_destroy(ctypes.byref(_hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)))
    return removed


class TcAttacher:
    """Follower strategy for eBPF: one program copy per namespace, both tc hooks per link."""

    def __init__(self, load: Callable[[int], NetlogObject], mode: str):
        self._load = load
        self.mode = mode  # "auto" until the first attach decides "tcx" or "clsact"
        self.stale_removed = 0

    def open_ns(self, netns_id: int) -> NetlogObject:
        return self._load(netns_id)

    def close_ns(self, obj: NetlogObject) -> None:
        obj.close()

    def attach(self, obj: NetlogObject, link: Link, netns_id: int, nic_index: int) -> list[Attachment]:
        self.stale_removed += remove_stale(link.ifindex)
        atts: list[Attachment] = []
        try:
            # loopback: every packet leaves and re-enters the same device, so one hook sees it once
            for direction in (1,) if link.name == "lo" else (1, 2):
                atts.append(self._attach_one(obj.prog_fd(direction, link.l3), link.ifindex, direction))
        except OSError:
            for a in atts:
                a.detach()
            raise
        return atts

    def _attach_one(self, prog_fd: int, ifindex: int, direction: int) -> Attachment:
        if self.mode in ("auto", "tcx"):
            a = attach_tcx(prog_fd, ifindex, direction)
            if a is not None:
                self.mode = "tcx"
                return a
            if self.mode == "tcx":
                raise OSError(errno.EOPNOTSUPP, "this kernel has no tcx links (Linux >= 6.6); use attach mode clsact or auto")
            self.mode = "clsact"
        return attach_clsact(prog_fd, ifindex, direction)
