"""Ingest benchmark: packets/s of `bpfnetlog read` end to end, against tshark and nfstream.

On one pcap of >= 1M packets of real mixed traffic (bench/make_pcap.py builds it if missing),
in one run, each tool as a separate process pinned to one CPU (taskset; `--all-cores` to
lift that), timed with wall clock and CPU time (user + sys of the process and its children):

- bpfnetlog: `bpfnetlog read F --store DIR` into a fresh store (decode, L4 analysis,
  L7 HTTP/DNS, store write: everything);
- tshark: the same HTTP fields and TCP analysis (`-T fields -e http.request.method ...
  -e tcp.seq_raw -e tcp.analysis.retransmission`), extra HTTP ports decoded as HTTP,
  as bpfnetlog finds HTTP by content;
- nfstream: flows of the same file, `NFStreamer(n_dissections=0)` (flows only) and with its
  default nDPI dissection.

Tools take turns (a round runs each once) and speed-ups are medians of the same round's ratios,
since this VM's speed drifts by 20% over minutes. Prints a table (rich) of figures and of how
much faster bpfnetlog is. Usage:
`.venv/bin/python bench/ingest.py [--pcap F] [--all-cores] [--skip-nfstream] [--repeat N]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_pcap import DEFAULT_OUT, PacketCounter, make_pcap

BNL = Path(sys.executable).with_name("bpfnetlog")
HTTP_PORTS = (8000, 8081)  # lab ports outside tshark's default HTTP ports
TSHARK_FIELDS = ["frame.number", "tcp.stream", "tcp.seq_raw", "tcp.len", "tcp.analysis.retransmission",
                 "tcp.analysis.flags", "http.request.method", "http.request.uri", "http.host",
                 "http.response.code", "dns.qry.name"]  # fmt: skip
NFSTREAM = "import sys; from nfstream import NFStreamer; print(sum(1 for _ in NFStreamer(source=sys.argv[1]{opt})))"
# nfstream lives in a venv of its own: it pulls in pandas, which pyarrow then imports in every
# bpfnetlog process that has it installed (0.2 s of start-up no user install pays).
PEERS_VENV = Path(__file__).resolve().parent / ".venv-peers"
PEERS_REQUIREMENTS = Path(__file__).resolve().parent / "requirements-peers.txt"


@dataclass(frozen=True)
class Run:
    """One timed tool run: what it produced, in how long."""

    tool: str
    wall: float
    cpu: float
    output: str  # what the tool found, to show the runs did comparable work


def timed(argv: list[str], stdout: Path | None = None, timeout: float = 3600) -> tuple[float, float]:
    """Run argv to completion; (wall s, CPU s of it and its children) from wait4's rusage."""
    with open(stdout or os.devnull, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE)
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... -> {proc.returncode}: {err[-2000:]}")
    if wall > timeout:
        raise RuntimeError(f"{argv[0]} took {wall:.0f}s")
    return wall, ru.ru_utime + ru.ru_stime


def bench_bpfnetlog(pcap: Path, pin: list[str], work: Path) -> Run:
    from bpfnetlog.store import open_reader

    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)  # a fresh store each run
    wall, cpu = timed([*pin, str(BNL), "read", str(pcap), "--store", str(store)])
    r = open_reader(store)
    try:
        n4 = r.sql("select count(distinct conn_id) from bpf_net_l4_log").column(0)[0].as_py()
        http = r.sql("select count(*) from bpf_net_l7_log where http_method <> '' or http_status_code > 0").column(0)[0].as_py()
        dns = r.sql("select count(*) from bpf_net_l7_log where dns_query <> ''").column(0)[0].as_py()
    finally:
        r.close()
    return Run("bpfnetlog read", wall, cpu, f"{n4:,} connections, {http:,} HTTP, {dns:,} DNS records")


def bench_tshark(pcap: Path, pin: list[str], work: Path) -> Run:
    out = work / "tshark.tsv"
    argv = [*pin, "tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "occurrence=a"]
    for p in HTTP_PORTS:
        argv += ["-d", f"tcp.port=={p},http"]
    for name in TSHARK_FIELDS:
        argv += ["-e", name]
    wall, cpu = timed(argv, stdout=out)
    reqs = resps = retrans = 0
    with open(out) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            retrans += cols[4] != ""
            reqs += len(cols[6].split(",")) if cols[6] else 0
            resps += len(cols[9].split(",")) if cols[9] else 0
    return Run("tshark", wall, cpu,
               f"{reqs:,} HTTP requests, {resps:,} responses, {retrans:,} retransmissions")  # fmt: skip


def peers_python() -> Path:
    """bench/.venv-peers/bin/python with requirements-peers.txt installed (made on first use)."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / "installed.txt"
    want = PEERS_REQUIREMENTS.read_text()
    if not stamp.exists() or stamp.read_text() != want:
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                        str(PEERS_REQUIREMENTS)], check=True)  # fmt: skip
        stamp.write_text(want)
    return python


def bench_nfstream(pcap: Path, pin: list[str], work: Path, dissect: bool) -> Run:
    out = work / "nfstream.txt"
    code = NFSTREAM.format(opt="" if dissect else ", n_dissections=0")
    wall, cpu = timed([*pin, str(peers_python()), "-c", code, str(pcap)], stdout=out)
    return Run(f"nfstream ({'nDPI' if dissect else 'flows only'})", wall, cpu, f"{int(out.read_text().strip()):,} flows")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--pcap", type=Path, default=DEFAULT_OUT, help="built by make_pcap.py if missing")
    ap.add_argument("--all-cores", action="store_true", help="do not pin the tools to one CPU")
    ap.add_argument("--skip-nfstream", action="store_true")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds (each runs every tool once); the table shows medians (this VM is noisy)")  # fmt: skip
    args = ap.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 110)
    if not args.pcap.exists():
        console.print(f"[bold]building {args.pcap}[/] (root, lab namespaces)")
        make_pcap(args.pcap)
    packets = PacketCounter(args.pcap).update()
    size = args.pcap.stat().st_size
    pin = [] if args.all_cores or shutil.which("taskset") is None else ["taskset", "-c", "0"]
    console.print(f"{args.pcap}: {packets:,} packets, {size / 1e6:,.0f} MB; {'pinned to CPU 0' if pin else 'all cores'}")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bnl-bench-") as tmp:
        work = Path(tmp)
        steps = [lambda: bench_bpfnetlog(args.pcap, pin, work), lambda: bench_tshark(args.pcap, pin, work)]
        if not args.skip_nfstream:
            steps += [lambda: bench_nfstream(args.pcap, pin, work, False), lambda: bench_nfstream(args.pcap, pin, work, True)]
        rounds = [[step() for step in steps] for _ in range(max(args.repeat, 1))]  # tools take turns
    for i in range(len(steps)):
        tries = [r[i] for r in rounds]
        walls = ", ".join(f"{t.wall:.2f}" for t in tries)
        runs.append(Run(tries[0].tool, statistics.median(t.wall for t in tries),
                        statistics.median(t.cpu for t in tries), tries[-1].output))  # fmt: skip
        console.print(f"  {runs[-1].tool}: {runs[-1].wall:.2f}s wall (median of {walls}), "
                      f"{runs[-1].cpu:.2f}s CPU — {runs[-1].output}")  # fmt: skip

    def speed_up(i: int, what: str) -> float:
        """Median over rounds of tool i's time / bpfnetlog's in the same round: the VM's speed
        drifts by 20% over minutes, a round's tools run within one minute."""
        return statistics.median(getattr(r[i], what) / getattr(r[0], what) for r in rounds)

    table = Table(title=f"Ingest of {packets:,} packets ({size / 1e6:,.0f} MB)")
    for col in ("tool", "wall s", "CPU s", "pkt/s", "pkt/CPU-s", "bnl speed-up", "bnl speed-up CPU"):
        table.add_column(col, justify="left" if col == "tool" else "right")
    for i, r in enumerate(runs):
        table.add_row(r.tool, f"{r.wall:.2f}", f"{r.cpu:.2f}", f"{packets / r.wall:,.0f}", f"{packets / r.cpu:,.0f}",
                      f"{speed_up(i, 'wall'):.2f}x", f"{speed_up(i, 'cpu'):.2f}x")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
