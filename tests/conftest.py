"""Shared fixtures: the lab pcap (real traffic in namespaces), a bpfnetlog CLI runner, stores.

The lab pcap is built once per session: one tcpdump on the client's veth while nginx,
python's http.server and dnsmasq answer curl, a pipelining client, h2load and dig, with a
closed port (RST) and a download under random loss (retransmissions). Lab tests skip,
with the reason, when not root or when a tool is missing (CI installs them all).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lab as L
import pytest

HTTP_SERVER_PORT = 8000  # python -m http.server; tshark needs `-d tcp.port==8000,http`
CLOSED_PORT = 81
PIPELINE_REQUESTS = [("GET", "/small.txt"), ("GET", "/1k.bin"), ("HEAD", "/10k.bin"),
                     ("GET", "/notfound/a"), ("GET", "/index.html"), ("GET", "/error")]  # fmt: skip
H2LOAD_REQUESTS = 10


@dataclass(frozen=True)
class LabPcap:
    """The session's lab capture and what every client said it did."""

    path: Path
    client_ip: str
    client_ip6: str
    server_ip: str
    server_ip6: str
    http_ports: tuple[int, ...]  # extra ports tshark must decode as HTTP
    closed_port: int
    curl: list[L.HttpResult]  # one entry per request curl made (keep-alive and not)
    pipelined: list[L.HttpResult]  # the raw-socket pipelining client (HEAD in the middle)
    h2load_url: str
    h2load: dict[str, int]
    dig: list[L.DigResult]
    capture: L.CaptureStats


def lab_skip_reason() -> str | None:
    """Why lab tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces)"
    missing = L.missing_tools()
    return f"lab tools missing: {', '.join(missing)}" if missing else None


def record_lab_traffic(out: Path) -> LabPcap:
    """Build the lab, capture every kind of traffic the tests compare, tear the lab down."""
    with L.Lab() as lab:
        link = L.two_hosts(lab)
        client, server = link.a, link.b
        assert link.a_ip6 and link.b_ip6
        srv, srv6 = link.b_ip, link.b_ip6
        nginx = lab.nginx(server, ports=(80, 8080))
        lab.http_server(server, HTTP_SERVER_PORT, nginx.www)
        lab.dnsmasq(server, [srv, srv6])
        cap = lab.capture(client, link.a_if, out)
        curl: list[L.HttpResult] = []
        # keep-alive: many requests on one connection, 200/404/500, query strings, sizes
        curl += L.curl(client, [L.url(srv, 80, t) for t in ["/", "/small.txt", "/10k.bin?x=1&y=a%20b", "/notfound/x",
                                                             "/error", "/64k.bin", "/dir/page.html?q=1"]])  # fmt: skip
        curl += L.curl(client, [L.url(srv6, 8080, "/1k.bin"), L.url(srv6, 8080, "/notfound/v6")])  # IPv6, extra port
        curl += L.curl(client, [L.url(srv, 80, "/10k.bin"), L.url(srv, 80, "/index.html")], extra=["-I"])  # HEADs
        curl += L.curl(client, [L.url(srv, 80, "/dir/page.html")], extra=["--data", "a=1&b=2"])  # POST -> 405
        curl += L.curl(client, [L.url(srv, 80, "/small.txt")], extra=["-H", "X-Pad: " + "p" * 3000])  # 3 segments
        # HTTP/1.0 server that closes: one connection per request
        curl += L.curl(client, [L.url(srv, HTTP_SERVER_PORT, "/small.txt"), L.url(srv, HTTP_SERVER_PORT, "/1k.bin")])
        closed = L.curl(client, [L.url(srv, CLOSED_PORT, "/")], timeout=3)
        assert [r.status for r in closed] == [0], closed  # refused: SYN answered by RST
        pipelined = L.pipelined(client, srv, 80, PIPELINE_REQUESTS)
        h2load_url = L.url(srv, 80, "/1k.bin")
        h2load = L.h2load_pipelined(client, h2load_url, H2LOAD_REQUESTS, depth=5)
        dig = L.dig(client, srv, [("example.test", "A"), ("web.lab.test", "AAAA"), ("alias.lab.test", "A"),
                                  ("nope.lab.test", "A"), ("example.test", "AAAA"), ("www.example.test", "A")])  # fmt: skip
        dig += L.dig(client, srv6, [("db.lab.test", "A")])
        dig += L.dig(client, srv, [("web.lab.test", "A"), ("db.lab.test", "A"), ("alias.lab.test", "A")], tcp=True)
        # 5% loss both ways while downloading: retransmissions in both directions' analysis
        with lab.loss(server, link.b_if, 5), lab.loss(client, link.a_if, 5):
            curl += L.curl(client, [L.url(srv, 80, "/64k.bin"), L.url(srv, 80, "/big.bin"), L.url(srv, 80, "/10k.bin")])
        stats = cap.stop()
    return LabPcap(out, link.a_ip, link.a_ip6, srv, srv6, (HTTP_SERVER_PORT,), CLOSED_PORT, curl, pipelined,
                   h2load_url, h2load, dig, stats)  # fmt: skip


@pytest.fixture(scope="session")
def lab_pcap(tmp_path_factory: pytest.TempPathFactory) -> LabPcap:
    """The session's lab pcap (built on first use, a few seconds, < 5000 packets)."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    return record_lab_traffic(tmp_path_factory.mktemp("lab") / "lab.pcap")


@pytest.fixture
def lab() -> Iterator[L.Lab]:
    """A fresh empty lab for a test that builds its own topology; removed even on failure."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    with L.Lab() as the_lab:
        yield the_lab


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A store directory that does not exist yet (bpfnetlog creates it)."""
    return tmp_path / "store"


BnlRunner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def bnl() -> BnlRunner:
    """Run the installed `bpfnetlog` CLI (the venv's entry point), as a user would."""
    exe = Path(sys.executable).with_name("bpfnetlog")

    def run(args: Sequence[str], timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False)

    return run
