"""The kernels compiled ahead of time (bpfnetlog.aot): used without importing numba, and they
give the same records as numba's just-in-time build of the same sources."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bpfnetlog.compiled import JIT_ENV
from bpfnetlog.records import L4_SOURCE, L7_SOURCE, PACKET_TABLE
from bpfnetlog.store.reader import DuckDBStoreReader

ROOT = Path(__file__).resolve().parents[1]
BNL = Path(sys.executable).with_name("bpfnetlog")
SAMPLE = ROOT / "examples" / "sample.pcapng"


def _env(jit: bool) -> dict[str, str]:
    """This process's environment, with the kernels of the ahead-of-time build or numba's."""
    env = {k: v for k, v in os.environ.items() if k != JIT_ENV}
    return env | {JIT_ENV: "1"} if jit else env


def test_commands_run_without_numba() -> None:
    """read and capture import their whole path without numba (its import alone is ~0.4 s)."""
    code = ("import sys, bpfnetlog.cli, bpfnetlog.pipeline, bpfnetlog.capture.pcap, bpfnetlog.capture.live\n"
            "from bpfnetlog.compiled import AOT\nprint(AOT is not None, 'numba' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(False), check=True)
    assert out.stdout.split() == ["True", "False"], out.stderr


@pytest.mark.parametrize("table", [L4_SOURCE, L7_SOURCE, PACKET_TABLE])
def test_same_records_as_numba_jit(tmp_path_factory: pytest.TempPathFactory, table: str) -> None:
    """Every record of the sample pcap (HTTP, DNS, TCP, UDP), field by field, from both builds."""
    stores = {}
    for mode in ("aot", "jit"):
        store = tmp_path_factory.getbasetemp() / f"compiled-{mode}"
        if not store.exists():
            subprocess.run([str(BNL), "read", str(SAMPLE), "--store", str(store), "--host", "h"],
                           env=_env(mode == "jit"), check=True, capture_output=True, timeout=600)  # fmt: skip
        with DuckDBStoreReader(store) as r:
            stores[mode] = r.sql(f'SELECT * FROM "{table}" ORDER BY ALL').to_pylist()
    assert stores["aot"] and stores["aot"] == stores["jit"]
