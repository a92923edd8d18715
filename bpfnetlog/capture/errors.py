"""Errors a live capture raises before it runs; each message says what to do."""

from __future__ import annotations

import os

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39


class CaptureError(RuntimeError):
    """Live capture cannot start here; str() tells the operator the fix."""


def effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def require_caps(*caps: int, backend: str) -> None:
    """Fail early with a readable message instead of EPERM deep inside libbpf."""
    eff = effective_caps()
    missing = [c for c in caps if not eff >> c & 1]
    if missing:
        names = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_BPF: "CAP_BPF",
                 CAP_PERFMON: "CAP_PERFMON"}
        who = f"uid {os.geteuid()}"
        raise CaptureError(
            f"{backend} capture needs {', '.join(names[c] for c in missing)} (running as {who}): "
            "run as root (sudo) or grant the capabilities, e.g. "
            "`sudo setcap cap_bpf,cap_perfmon,cap_net_admin,cap_sys_admin+ep $(readlink -f $(which python3))`"
        )
