"""AF_PACKET backend (the eBPF fallback): same packets as tcpdump, full pcap-filter language, auto fallback."""

from __future__ import annotations

import collections
import os
import time

import lab as L
import pytest
from test_ebpf_live import Collector, _pcap_tcp

from bpfnetlog.capture.afpacket import compile_cbpf
from bpfnetlog.capture.errors import CaptureError
from bpfnetlog.capture.live import LiveSource

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
    pytest.mark.skipif(bool(L.missing_tools(["ip", "ethtool", "tcpdump", "curl", "nginx"])), reason="lab tools missing"),
]

BLOCK_RETIRE_S = 1.0  # a TPACKET_V3 block reaches user space when full or after its timeout


def test_afpacket_equals_tcpdump(tmp_path):
    with L.Lab() as lab:
        h = L.two_hosts(lab)
        c, s = h.a, h.b
        lab.nginx(s, ports=(8080, 8081))
        cap = lab.capture(c, h.a_if, tmp_path / "c.pcap", extra=["tcp port 8080"])
        src = LiveSource(backend="afpacket", filter="tcp port 8080", netns=[c.name, s.name])
        src.start()
        assert src.backend == "afpacket" and src.stats().nics_attached == 4
        col = Collector(src)
        L.curl(c, [L.url(h.b_ip, p, t) for p in (8080, 8081) for t in ("/index.html", "/10k.bin")])
        L.curl(c, [L.url(h.b_ip6, 8080, "/1k.bin")])
        cap.stop()
        time.sleep(BLOCK_RETIRE_S)
        got = col.stop()
    want = _pcap_tcp(tmp_path / "c.pcap")
    on_client = [r for r in got if r[0] == h.a_if and r[1].endswith(":" + c.name)]
    mine = collections.Counter(r[3:7] + r[8:11] + (r[11][:1024],) for r in on_client)
    theirs = collections.Counter(w[:7] + (w[7][:1024],) for w in want)
    assert len(want) > 30 and mine == theirs
    assert all(8080 in (r[5], r[6]) for r in got)
    assert src.stats().dropped == 0 and src.ring_losses() is None


def test_auto_falls_back_for_a_filter_outside_the_ebpf_subset():
    with L.Lab() as lab:
        h = L.two_hosts(lab)
        with LiveSource(filter="icmp or tcp[13] & 2 != 0", netns=[h.a.name, h.b.name]) as src:
            assert src.backend == "afpacket"
            assert "AF_PACKET" in src.notice and ("unsupported" in src.notice or "parse" in src.notice)


def test_bad_pcap_filter_is_a_clear_error():
    with pytest.raises(CaptureError, match="bad filter"):
        compile_cbpf("port 80 andd host", 1, 1024)
