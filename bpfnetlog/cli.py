"""The `bpfnetlog` command: read pcaps, capture live, query the store.

Commands are thin: they parse options, build a source, a pipeline and a
store writer, and report progress. The work lives in the pipeline stages.
"""

from __future__ import annotations

import gc

gc.disable()  # start-up builds ~100k objects that all live on: no collection pass needed (see _start)

import atexit  # noqa: E402
import faulthandler  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Optional  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

app = typer.Typer(
    help="Network logs from packets: L4 connections (bpf_net_l4_log) and L7 requests (bpf_net_l7_log). "
    "`kill -USR1 <pid>` makes a running command print every thread's stack to stderr.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
faulthandler.register(signal.SIGUSR1, all_threads=True)  # what is it doing? without a debugger


@app.callback()
def _start(ctx: typer.Context) -> None:
    # read and capture switch the collector on after their imports (_few_gc_passes); the rest now
    if ctx.invoked_subcommand not in ("read", "capture"):
        gc.enable()


def _few_gc_passes() -> None:
    """Records are acyclic and short-lived: full GC scans of millions of young objects are waste.

    Freezing what exists after the imports (done without collections, ~0.1 s) and raising the
    gen-0 threshold cut ~15% of `read` time.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    gc.enable()
    atexit.register(_unfreeze_for_duckdb)


def _unfreeze_for_duckdb() -> None:
    """DuckDB, when loaded, reports frozen objects as leaks at exit; else they stay frozen, so the
    exit's collection skips them (0.3 s of a `read`)."""
    if "duckdb" in sys.modules:
        gc.unfreeze()

StoreOpt = Annotated[Path, typer.Option("--store", help="Data directory of the embedded store.")]


@app.command()
def read(
    files: Annotated[list[Path], typer.Argument(help="pcap or pcapng files (tcpdump, Wireshark, dumpcap).")],
    store: StoreOpt = Path("data"),
    nic: Annotated[Optional[str], typer.Option(help="nic_name of the records (default: pcapng interface name, else the file's stem).")] = None,
    host: Annotated[Optional[str], typer.Option(help="host of the records (default: this machine's hostname).")] = None,
    local_ip: Annotated[Optional[list[str]], typer.Option(
        "--local-ip", help="Address or CIDR of the capturing host (repeatable). Decides src/dst and "
        "direction (outgoing/incoming); without it direction is 'unknown' and src is the client.")] = None,
) -> None:
    """Turn pcap/pcapng files into L4 and L7 logs in the store."""
    from bpfnetlog.capture.pcap import PcapError, PcapReader
    from bpfnetlog.l4.roles import LocalNets
    from bpfnetlog.pipeline import Pipeline
    from bpfnetlog.store.base import StoreError
    from bpfnetlog.store.writer import ParquetStoreWriter

    try:
        local = LocalNets(local_ip or [])
    except ValueError as e:
        err.print(f"[red]error:[/] --local-ip: {e}")
        raise typer.Exit(2) from None
    missing = [f for f in files if not f.is_file()]
    if missing:
        err.print(f"[red]error:[/] no such file: {', '.join(map(str, missing))}")
        raise typer.Exit(2)
    try:
        writer = ParquetStoreWriter(store)
    except StoreError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    pipe = Pipeline(writer, host or socket.gethostname(), local)
    _few_gc_passes()
    stats = []
    failed = 0
    t0 = time.perf_counter()
    with writer, Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                          console=err, transient=True) as progress:  # fmt: skip
        task = progress.add_task("reading")
        for f in files:
            try:
                reader = PcapReader(f, nic_name=nic)
                for batch in reader.batches():
                    pipe.feed(batch)
                    pipe.tick()
                    writer.flush()
                    rate = pipe.count.packets / max(time.perf_counter() - t0, 1e-9)
                    progress.update(task, description=f"{f.name}: {pipe.count.packets:,} packets "
                                    f"({rate:,.0f}/s), {pipe.count.connections:,} connections, "
                                    f"{pipe.count.l7_records:,} L7 records")  # fmt: skip
            except PcapError as e:
                err.print(f"[red]error:[/] {e}")
                failed += 1
                continue
            stats.append(reader.stats)
        pipe.finish(stats)
    elapsed = time.perf_counter() - t0
    _summary(pipe, stats, elapsed, store)
    if failed == len(files):
        raise typer.Exit(1)


def _pipeline_rows(t: Table, pipe, elapsed: float) -> None:
    """The rows both summaries show: what the pipeline made of the packets."""
    c = pipe.count
    t.add_row("packets", f"{c.packets:,} ({c.packets / max(elapsed, 1e-9):,.0f}/s in {elapsed:.2f}s)")
    t.add_row("connections", f"{c.connections:,}")
    t.add_row("L4 records (chunks)", f"{c.l4_records:,}")
    t.add_row("L7 records", f"{c.l7_records:,}")


def _summary(pipe, stats, elapsed: float, store: Path) -> None:
    t = Table(title=f"bpfnetlog read -> {store}", show_header=False)
    _pipeline_rows(t, pipe, elapsed)
    t.add_row("skipped (not TCP/UDP)", f"{sum(s.skipped for s in stats):,}")
    t.add_row("malformed", f"{sum(s.malformed for s in stats):,}")
    errors = [e for s in stats for e in s.errors]
    t.add_row("errors", "\n".join(errors) if errors else "0")
    err.print(t)


@app.command()
def capture(
    store: StoreOpt = Path("data"),
    duration: Annotated[Optional[float], typer.Option(help="Stop after this many seconds (default: until Ctrl-C / SIGTERM).")] = None,
    filter: Annotated[Optional[str], typer.Option("--filter", help="pcap-filter subset evaluated in the kernel: host/net/port/portrange/tcp/udp with and/or/not, e.g. 'tcp port 80 and net 10.0.0.0/8'.")] = None,
    iface: Annotated[Optional[list[str]], typer.Option("--iface", help="Only these interfaces (repeatable; default: every UP interface).")] = None,
    netns: Annotated[Optional[list[str]], typer.Option("--netns", help="Only these network namespaces: name under /run/netns, inode, or 'host' (repeatable; default: all).")] = None,
    backend: Annotated[str, typer.Option(help="auto (eBPF, else AF_PACKET), ebpf or afpacket.")] = "auto",
    payload_snaplen: Annotated[int, typer.Option(help="Payload bytes kept per packet for L7 parsing.")] = 1024,
    flush_interval: Annotated[float, typer.Option(help="Seconds between writes of records to the store.")] = 5.0,
    host: Annotated[Optional[str], typer.Option(help="host of the records (default: this machine's hostname).")] = None,
    write_pcap: Annotated[Optional[Path], typer.Option("--write-pcap", help="Also write the captured packets to this pcapng (raw IP, headers rebuilt, payload cut at --payload-snaplen) for Wireshark.")] = None,
) -> None:
    """Capture live on every NIC of this host and its network namespaces (eBPF tc programs).

    Runs under SCHED_BATCH: its fair share of CPU, without preempting the host's work at each wakeup."""
    from rich.live import Live

    from bpfnetlog.capture.errors import CaptureError
    from bpfnetlog.capture.live import LiveSource, batch_scheduling
    from bpfnetlog.enrich.listening import listening_sockets
    from bpfnetlog.pipeline import Pipeline
    from bpfnetlog.store.base import StoreError
    from bpfnetlog.store.writer import ParquetStoreWriter
    from bpfnetlog.warmup import load as load_kernels

    try:
        writer = ParquetStoreWriter(store)
    except StoreError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    pipe = Pipeline(writer, host or socket.gethostname(), report_quiet=write_pcap is None)  # a pcap keeps payload
    _few_gc_passes()
    from bpfnetlog.capture.pcapng_writer import PcapngWriter

    try:
        pcap_out = PcapngWriter(write_pcap) if write_pcap else None
    except OSError as e:
        writer.close()
        err.print(f"[red]error:[/] --write-pcap {write_pcap}: {e.strerror}")
        raise typer.Exit(2) from None
    src = LiveSource(backend=backend, filter=filter, ifaces=iface, netns=netns, payload_snaplen=payload_snaplen)
    load_kernels()  # the compiled kernels, before packets wait for them
    batch_scheduling()  # the host's work first when the capture wakes up (it keeps its CPU share)
    try:
        src.start()
    except (CaptureError, ValueError) as e:
        writer.close()
        if pcap_out is not None:
            pcap_out.close()
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    reported_drops: dict[tuple, int] = {}
    t0 = time.monotonic()
    last_flush = t0
    stopped_by = "end of --duration"
    try:  # from here on, Ctrl-C / SIGTERM always detach and flush
        _announce(src, store)
        pipe.listening = listening_sockets()
        with Live(console=err, refresh_per_second=2, transient=False) as live:
            for batch in src.batches(timeout_s=0.5):
                pipe.feed(batch)
                src.set_quiet(*pipe.take_quiet())
                if pcap_out is not None:
                    pcap_out.write(batch)
                now = time.monotonic()
                if now - last_flush >= flush_interval:
                    stats = src.stats()
                    if stats.dropped and src.ring_losses() is not None:
                        pipe.account_drops(src.ring_losses(), reported_drops)
                    pipe.listening = listening_sockets()
                    pipe.tick(time.time_ns(), flush_all=True)
                    pipe.write_stats([stats])  # so far: a long or killed capture has them too
                    writer.flush()
                    last_flush = now
                    live.update(_live_table(src.backend, stats, pipe, now - t0))
                if duration is not None and now - t0 >= duration:
                    break
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    except SystemExit:
        stopped_by = "SIGTERM"
    finally:
        attached = src.stats()
        if attached.dropped and src.ring_losses() is not None:
            pipe.account_drops(src.ring_losses(), reported_drops)
        src.stop()
        for batch in src.batches():  # what the ring held when the loop ended
            pipe.feed(batch)
        stats = src.stats()
        stats.nics_attached, stats.attach_mode = attached.nics_attached, attached.attach_mode
        pipe.finish([stats])
        writer.close()
        if pcap_out is not None:
            pcap_out.close()
    elapsed = time.monotonic() - t0
    err.print(_live_table(src.backend, stats, pipe, elapsed, f"bpfnetlog capture -> {store} (stopped: {stopped_by})"))


def _announce(src, store: Path) -> None:
    if src.notice:
        err.print(f"[yellow]note:[/] {src.notice}")
    ready = src.stats()
    if not ready.nics_attached:
        err.print("[yellow]note:[/] no interface matches --iface/--netns yet; capture starts when one appears")
    err.print(f"capturing on {ready.nics_attached} interfaces ({src.backend}, {ready.attach_mode}) into {store}; "
              "Ctrl-C to stop")  # fmt: skip


def _live_table(backend: str, s, pipe, elapsed: float, title: str = "bpfnetlog capture") -> Table:
    t = Table(title=title, show_header=False)
    t.add_row("backend", f"{backend} ({getattr(s, 'attach_mode', '')})")
    t.add_row("interfaces", f"{getattr(s, 'nics_attached', 0)}")
    t.add_row("dropped (ring full)", f"{s.dropped:,}")
    if backend == "ebpf":
        t.add_row("headers only (L7 gave up)", f"{getattr(s, 'quiet', 0):,}")
        t.add_row("payload shed (ring over half full)", f"{getattr(s, 'shed', 0):,}")
    _pipeline_rows(t, pipe, elapsed)
    if s.errors:
        t.add_row("errors", "\n".join(s.errors[-5:]))
    return t


@app.command()
def query(
    text: Annotated[str, typer.Argument(help="Lucene-like query, e.g. 'source:bpf_net_l7_log AND http_status_code:>=500 AND NOT src_ip:10.0.0.0/8'.")],
    store: StoreOpt = Path("data"),
    fmt: Annotated[str, typer.Option("--format", help="table, json or jsonl (one object per record, every field).")] = "table",
    limit: Annotated[int, typer.Option(help="At most this many records (newest first).")] = 100,
    t_from: Annotated[Optional[str], typer.Option("--from", help="Start: ISO time, epoch ns, or relative like -15m.")] = None,
    t_to: Annotated[Optional[str], typer.Option("--to", help="End: ISO time, epoch ns, 'now' or relative.")] = None,
) -> None:
    """Search the logs in the store."""
    from bpfnetlog.query.output import query_command

    code = query_command(store, text, fmt, limit, t_from, t_to)
    if code:
        raise typer.Exit(code)
