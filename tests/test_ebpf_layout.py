"""record.py must mirror bpf/netlog.h exactly: checked against the object's BTF."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bpfnetlog.capture.ebpf.record import STRUCTS

ROOT = Path(__file__).resolve().parents[1]
OBJ = ROOT / "bpf" / "netlog.bpf.o"


@pytest.fixture(scope="module")
def btf_structs() -> dict[str, tuple[int, dict[str, int]]]:
    if not OBJ.exists() or OBJ.stat().st_mtime < max(p.stat().st_mtime for p in (ROOT / "bpf").glob("netlog*.[ch]")):
        if not shutil.which("clang"):
            pytest.skip("clang missing: cannot build bpf/netlog.bpf.o")
        subprocess.run([str(ROOT / "bpf" / "build.sh")], check=True)
    if not shutil.which("bpftool"):
        pytest.skip("bpftool missing")
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(OBJ), "format", "raw"], check=True,
                         capture_output=True, text=True).stdout
    structs, cur = {}, None
    for line in out.splitlines():
        m = re.match(r"\[\d+\] STRUCT '(\w+)' size=(\d+)", line)
        if m:
            cur = structs[m.group(1)] = (int(m.group(2)), {})
            continue
        m = re.match(r"\s+'(\w+)' type_id=\d+ bits_offset=(\d+)", line)
        if m and cur is not None:
            cur[1][m.group(1)] = int(m.group(2)) // 8
        elif not line.startswith("\t"):
            cur = None
    return structs


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_dtype_matches_btf(btf_structs, name):
    size, members = btf_structs[name]
    dt = STRUCTS[name]
    assert dt.itemsize == size
    assert {f: dt.fields[f][1] for f in dt.names} == members
