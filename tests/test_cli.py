"""The CLI as a user runs it: summaries, exit codes, clear errors, clean stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BNL = Path(sys.executable).with_name("bpfnetlog")
SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sample.pcapng"


def bnl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BNL), *args], capture_output=True, text=True, timeout=300)


def test_read_then_query(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    r = bnl("read", str(SAMPLE), "--store", store, "--local-ip", "10.231.0.1", "--host", "h1")
    assert r.returncode == 0, r.stderr
    assert "L7 records" in r.stderr and "1,296" in r.stderr
    assert "leaked" not in r.stderr and "Traceback" not in r.stderr
    q = bnl("query", "source:bpf_net_l7_log AND http_status_code:>=500", "--store", store, "--format", "jsonl")
    assert q.returncode == 0, q.stderr
    rows = [json.loads(line) for line in q.stdout.splitlines()]
    assert rows and all(r["http_status_code"] >= 500 and r["host"] == "h1" for r in rows)
    assert {r["direction"] for r in rows} == {"outgoing"}


def test_truncated_file_keeps_what_came_before(tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(SAMPLE.read_bytes()[:300_000])
    r = bnl("read", str(cut), "--store", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    assert "at byte" in " ".join(r.stderr.split())
    q = bnl("query", "source:bpf_net_l4_log", "--store", str(tmp_path / "s"), "--format", "jsonl", "--limit", "1000")
    assert q.returncode == 0 and q.stdout.strip()


def test_errors_say_what_to_do(tmp_path: Path) -> None:
    r = bnl("read", str(tmp_path / "nope.pcap"), "--store", str(tmp_path / "s"))
    assert r.returncode == 2 and "no such file" in r.stderr
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"GET / HTTP/1.1\r\n\r\n" * 10)
    r = bnl("read", str(junk), "--store", str(tmp_path / "s"))
    assert r.returncode == 1 and "junk.pcap" in r.stderr and "Traceback" not in r.stderr
    r = bnl("query", "http_status_code:>=", "--store", str(tmp_path / "s"))
    assert r.returncode == 2 and "^" in r.stderr
    r = bnl("query", "*", "--store", str(tmp_path / "missing"))
    assert r.returncode == 2 and "no store" in r.stderr
