"""Make the benchmark pcap: >= 1M packets of REAL mixed traffic captured with tcpdump.

A lab (tests/lab.py) of two namespaces; the server runs nginx (ports 80, 8080, 8081),
python's http.server (8000) and dnsmasq; the client runs, in rounds, concurrently:
h2load keep-alive HTTP/1.1 over files of mixed sizes, h2load pipelining (-m 4), curl with
`Connection: close` (one connection per request), curl to the HTTP/1.0 http.server, dig
over UDP and over TCP (kept open and not), a closed port (RST), and h2load on port 8081
with 3% random loss both ways (retransmissions). Rounds repeat until the capture holds
`--packets` packets.

Snaplen 262144 (whole packets): bpfnetlog and tshark must both see every payload byte to
delimit HTTP messages and parse DNS; a short snaplen would make tshark stop decoding
("packet size limited during capture") and the comparison would not be like for like.
Offloads are off, so packets are wire-sized (<= 1514 bytes) and the file stays ~0.5 GB.

Root only. Usage: `.venv/bin/python bench/make_pcap.py [--out bench/data/mixed.pcap] [--packets N]`.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import lab as L

DEFAULT_OUT = ROOT / "bench" / "data" / "mixed.pcap"
DEFAULT_PACKETS = 1_050_000
MAX_ROUNDS = 40
KEEPALIVE_URIS = ["/small.txt", "/1k.bin", "/index.html", "/10k.bin", "/dir/page.html"]
DNS_NAMES = [("example.test", "A"), ("www.example.test", "A"), ("web.lab.test", "AAAA"), ("alias.lab.test", "A"),
             ("nope.lab.test", "A"), ("db.lab.test", "A")]  # fmt: skip


class PacketCounter:
    """Counts the records of a pcap that tcpdump is still writing, reading only new bytes."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.packets = path, 24, 0

    def update(self) -> int:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        pos = 0
        while pos + 16 <= len(data):
            (caplen,) = struct.unpack_from("<I", data, pos + 8)
            if pos + 16 + caplen > len(data):
                break  # record still being written
            pos += 16 + caplen
            self.packets += 1
        self.offset += pos
        return self.packets


def traffic_round(link: L.Link, n: int) -> None:
    """One round of every kind of traffic, concurrently; every client has its own timeout."""
    c, srv = link.a, link.b_ip
    ka = [L.url(srv, 80, u) for u in KEEPALIVE_URIS]
    jobs = [
        ["h2load", "--h1", "-n", str(6000 * n), "-c", "8", "-m", "1", "-T", "60", *ka],
        ["h2load", "--h1", "-n", str(2000 * n), "-c", "2", "-m", "4", "-T", "60", *ka[:3]],
        ["h2load", "--h1", "-n", str(300 * n), "-c", "4", "-m", "1", "-T", "60",
         L.url(srv, 8081, "/64k.bin"), L.url(srv, 8081, "/10k.bin")],
        ["curl", "-s", "--max-time", "60", "-H", "Connection: close",
         *[a for i in range(150 * n) for a in (L.url(srv, 8080, KEEPALIVE_URIS[i % 4]), "-o", "/dev/null")]],
        ["curl", "-s", "--max-time", "60",
         *[a for i in range(30 * n) for a in (L.url(srv, 8000, KEEPALIVE_URIS[i % 2]), "-o", "/dev/null")]],
        ["dig", f"@{srv}", "+tries=1", "+time=2", "+noall", *[a for _ in range(40 * n) for q in DNS_NAMES for a in q]],
        ["dig", f"@{srv}", "+tries=1", "+time=2", "+noall", "+tcp", "+keepopen",
         *[a for _ in range(10 * n) for q in DNS_NAMES for a in q]],
        ["dig", f"@{srv}", "+tries=1", "+time=2", "+noall", "+tcp", *[a for _ in range(3 * n) for q in DNS_NAMES for a in q]],
        ["curl", "-s", "--max-time", "5", L.url(srv, 81, "/"), L.url(srv, 81, "/")],
    ]  # fmt: skip
    with ThreadPoolExecutor(len(jobs)) as pool:
        for job in jobs:
            pool.submit(c.run, job, 120, False)


def make_pcap(out: Path = DEFAULT_OUT, packets: int = DEFAULT_PACKETS, scale: int = 2) -> int:
    """Capture rounds of lab traffic into `out` until it holds >= `packets`; returns the count."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    with L.Lab() as lab:
        link = L.two_hosts(lab, ipv6=False, subnet="10.232.0.0/24")
        server = link.b
        nginx = lab.nginx(server, ports=(80, 8080, 8081), ipv6=False)
        lab.http_server(server, 8000, nginx.www)
        lab.dnsmasq(server, [link.b_ip])
        cap = lab.capture(link.a, link.a_if, tmp, extra=["-B", "131072"])
        counter = PacketCounter(tmp)
        t0 = time.monotonic()
        with lab.loss(server, link.b_if, 3, "tcp dport 8081"), lab.loss(link.a, link.a_if, 3, "tcp sport 8081"):
            for rnd in range(MAX_ROUNDS):
                traffic_round(link, scale)
                n = counter.update()
                print(f"round {rnd + 1}: {n:,} packets, {time.monotonic() - t0:.0f}s", flush=True)
                if n >= packets:
                    break
        stats = cap.stop()
    n = PacketCounter(tmp).update()
    print(f"tcpdump: {stats.captured:,} captured, {stats.dropped:,} dropped by kernel; file has {n:,} packets")
    if n < packets:
        raise RuntimeError(f"only {n} packets after {MAX_ROUNDS} rounds")
    tmp.replace(out)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--packets", type=int, default=DEFAULT_PACKETS)
    args = ap.parse_args()
    make_pcap(args.out, args.packets)


if __name__ == "__main__":
    main()
