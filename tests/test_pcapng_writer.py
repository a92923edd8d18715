"""--write-pcap: batches rebuilt as raw-IP pcapng that tshark and our reader agree on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bpfnetlog.capture.pcap import PcapReader
from bpfnetlog.capture.pcapng_writer import PcapngWriter

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sample.pcapng"
SAME = ("ts", "proto", "sport", "dport", "seq", "ack", "win", "payload_len", "payload_cap")


def _columns(path: Path, **kw) -> tuple[dict, list[bytes], np.ndarray, np.ndarray, list[str]]:
    batches = list(PcapReader(path, **kw).batches())
    cols = {k: np.concatenate([b.cols[k] for b in batches]) for k in SAME + ("flags",)}
    payloads = [b.payload(i) for b in batches for i in range(len(b))]
    src = np.concatenate([b.src_ip for b in batches])
    dst = np.concatenate([b.dst_ip for b in batches])
    names = [b.nics[j].name for b in batches for j in b.nic.tolist()]
    return cols, payloads, src, dst, names


def test_roundtrip_through_our_reader(tmp_path: Path) -> None:
    out = tmp_path / "out.pcapng"
    with PcapngWriter(out) as w:
        for b in PcapReader(SAMPLE, nic_name="veth0", batch_size=500).batches():
            w.write(b)
    want, want_pay, want_src, want_dst, _ = _columns(SAMPLE)
    got, got_pay, got_src, got_dst, names = _columns(out)
    for k in SAME + ("flags",):
        assert np.array_equal(got[k], want[k]), k
    assert got_pay == want_pay and np.array_equal(got_src, want_src) and np.array_equal(got_dst, want_dst)
    assert set(names) == {"veth0"}


def test_truncated_payload_keeps_original_length(tmp_path: Path) -> None:
    batch = next(PcapReader(SAMPLE).batches())
    big = int(np.argmax(batch.payload_len))
    assert batch.payload_len[big] > 100
    batch.cols["payload_cap"][big] = 100  # as the eBPF source does beyond --payload-snaplen
    out = tmp_path / "cut.pcapng"
    with PcapngWriter(out) as w:
        w.write(batch)
    got, pay, *_ = _columns(out)
    assert got["payload_cap"][big] == 100 and got["payload_len"][big] == batch.payload_len[big]
    assert pay[big] == batch.payload(big)


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
def test_tshark_reads_it(tmp_path: Path) -> None:
    out = tmp_path / "out.pcapng"
    with PcapngWriter(out) as w:
        for b in PcapReader(SAMPLE, nic_name="veth0").batches():
            w.write(b)
    fields = subprocess.run(
        ["tshark", "-r", str(out), "-T", "fields", "-e", "frame.interface_name", "-e", "tcp.seq_raw",
         "-e", "tcp.len", "-e", "http.request.method", "-e", "dns.qry.name"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    want, *_ = _columns(SAMPLE)
    assert len(fields) == len(want["seq"])
    rows = [line.split("\t") for line in fields]
    assert {r[0] for r in rows} == {"veth0"}
    tcp = want["proto"] == 6
    assert [int(r[1]) for r in rows if r[1]] == want["seq"][tcp].tolist()
    assert [int(r[2]) for r in rows if r[2]] == want["payload_len"][tcp].tolist()
    assert sum(1 for r in rows if r[3]) > 10 and sum(1 for r in rows if r[4]) > 5  # HTTP and DNS decode
