"""Network labs in Linux network namespaces, for tests and benchmarks (root only).

Tests compare bpfnetlog with tshark on pcaps of REAL traffic (nginx, dnsmasq, curl,
dig, tcpdump), so the lab must be reproducible, isolated and leave nothing behind:

- every namespace name starts with a prefix unique to one run (pid + random), so parallel
  runs never collide; interfaces are created directly inside the namespaces (`ip -n`), so
  no interface name ever exists in the root namespace;
- every process is started by `Lab.spawn` in its own process group and is stopped by PID
  (its group id) when the lab closes, whatever happened; nothing is ever killed by name;
- every subprocess has a timeout; traffic only flows between the lab's namespaces.

Offloads are turned off on every veth by default so tcpdump sees wire-sized segments
(see FACTS.md: GSO super-packets otherwise).

Run as a script, this file is also the lab's pipelining HTTP client (see `pipelined`):
`ip netns exec NS python3 lab.py pipeline HOST PORT METHOD:TARGET...`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

# Tools the lab runs; the Debian package that ships each one (for skip messages and CI).
TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "ss": "iproute2",
    "ethtool": "ethtool",
    "nft": "nftables",
    "tcpdump": "tcpdump",
    "tshark": "tshark",
    "nginx": "nginx-light",
    "dnsmasq": "dnsmasq-base",
    "dig": "bind9-dnsutils",
    "curl": "curl",
    "h2load": "nghttp2-client",
}

DEFAULT_TIMEOUT = 20.0


def missing_tools(names: Sequence[str] = tuple(TOOLS)) -> list[str]:
    """Tools (with their Debian package) not on PATH, so callers can skip with a reason."""
    return [f"{n} (apt {TOOLS.get(n, n)})" for n in names if shutil.which(n) is None]


def run(argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command to completion with a timeout; failures raise with stderr attached."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


@dataclass(frozen=True)
class Netns:
    """A network namespace of a lab; `cmd` wraps argv so it runs inside it."""

    name: str

    def cmd(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(self.cmd(argv), timeout=timeout, check=check)

    def wait_listening(self, port: int, udp: bool = False, timeout: float = 10.0) -> None:
        """Block until a socket listens on `port` here: servers are ready before clients start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(["ss", "-Hln", "-u" if udp else "-t", f"sport = :{port}"], timeout=5).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise TimeoutError(f"nothing listens on {'udp' if udp else 'tcp'} port {port} in {self.name}")


@dataclass(frozen=True)
class Link:
    """One veth pair between two namespaces, with the addresses of each end."""

    a: Netns
    b: Netns
    a_if: str
    b_if: str
    a_ip: str
    b_ip: str
    a_ip6: str | None = None
    b_ip6: str | None = None


@dataclass(frozen=True)
class CaptureStats:
    """What tcpdump reported at exit; `dropped` > 0 means the pcap is incomplete."""

    captured: int
    received: int
    dropped: int


class Capture:
    """A running tcpdump; `stop()` ends it with SIGINT (by PID) and waits for the file."""

    def __init__(self, lab: Lab, proc: subprocess.Popen[str], path: Path) -> None:
        self.lab, self.proc, self.path = lab, proc, path
        self.stats: CaptureStats | None = None
        self._lines: list[str] = []
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.append(line)
            if "listening on" in line:
                self._listening.set()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """tcpdump prints "listening on" once the socket is bound: packets before it are lost."""
        if not self._listening.wait(timeout):
            raise TimeoutError(f"tcpdump did not start: {''.join(self._lines)}")
        time.sleep(0.2)  # the ring is live once bound; a short margin costs nothing here

    def stop(self, timeout: float = 30.0) -> CaptureStats:
        if self.stats is None:
            time.sleep(0.3)  # let the last packets in flight reach the ring
            self.lab.stop(self.proc, signal.SIGINT, timeout=timeout)
            self._reader.join(timeout)
            text = "".join(self._lines)

            def count(what: str) -> int:
                m = re.search(rf"(\d+) packets? {what}", text)
                return int(m.group(1)) if m else -1

            self.stats = CaptureStats(count("captured"), count("received by filter"), count("dropped by kernel"))
        return self.stats


_PREFIX_RE = re.compile(r"^bnl(\d+)x[0-9a-f]{4}")


def reap_stale() -> list[str]:
    """Delete the namespaces of labs whose process died without cleaning up (SIGKILL, crash).

    A lab's namespaces carry its creator's PID; when that PID is gone, the processes still
    inside them (servers that lab started, listed by `ip netns pids`) are killed by PID
    and the namespaces and tmp dirs deleted. Returns the namespaces removed.
    """
    removed = []
    for line in run(["ip", "netns", "list"], timeout=10).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        m = _PREFIX_RE.match(name)
        if not m or Path(f"/proc/{m.group(1)}").exists():
            continue
        for pid in run(["ip", "netns", "pids", name], timeout=10, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if run(["ip", "netns", "delete", name], timeout=10, check=False).returncode == 0:
            removed.append(name)
    for tmp in Path(tempfile.gettempdir()).glob("bnl*x*-*"):
        m = _PREFIX_RE.match(tmp.name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return removed


class Lab:
    """Namespaces, links and processes of one lab; `close()` (or the with-block) removes all."""

    def __init__(self, tmp: Path | None = None) -> None:
        reap_stale()
        self.prefix = f"bnl{os.getpid()}x{secrets.token_hex(2)}"
        self._own_tmp = tmp is None
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-")) if tmp is None else tmp
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.namespaces: list[Netns] = []
        self.procs: list[subprocess.Popen[str]] = []
        self._tables = 0  # nft tables made by `loss`, for unique names

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process (newest first), then delete every namespace; never raises early."""
        errors: list[str] = []
        for proc in reversed(self.procs):
            try:
                self.stop(proc)
            except Exception as e:  # noqa: BLE001 - keep cleaning: a leftover namespace is worse
                errors.append(f"pid {proc.pid}: {e}")
        for ns in reversed(self.namespaces):
            r = run(["ip", "netns", "delete", ns.name], check=False, timeout=10)
            if r.returncode != 0:
                errors.append(f"netns {ns.name}: {r.stderr.strip()}")
        self.namespaces.clear()
        if self._own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            raise RuntimeError("lab cleanup: " + "; ".join(errors))

    def netns(self, role: str) -> Netns:
        """Create namespace `<prefix><role>` with loopback up."""
        ns = Netns(f"{self.prefix}{role}")
        run(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)
        ns.run(["ip", "link", "set", "lo", "up"])
        return ns

    def link(
        self,
        a: Netns,
        b: Netns,
        a_ip: str,
        b_ip: str,
        prefixlen: int = 24,
        a_ip6: str | None = None,
        b_ip6: str | None = None,
        a_if: str = "veth0",
        b_if: str = "veth0",
        offloads: bool = False,
    ) -> Link:
        """A veth pair from `a` to `b` (created inside them), addresses, up, offloads off."""
        run(["ip", "-n", a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name])
        for ns, ifname, ip, ip6 in ((a, a_if, a_ip, a_ip6), (b, b_if, b_ip, b_ip6)):
            ns.run(["ip", "addr", "add", f"{ip}/{prefixlen}", "dev", ifname])
            if ip6:  # nodad: usable at once, no 2 s wait for duplicate address detection
                ns.run(["ip", "-6", "addr", "add", f"{ip6}/64", "dev", ifname, "nodad"])
            ns.run(["ip", "link", "set", ifname, "up"])
            if not offloads:
                ns.run(["ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off"])
        return Link(a, b, a_if, b_if, a_ip, b_ip, a_ip6, b_ip6)

    def spawn(self, ns: Netns | None, argv: Sequence[str], stderr_pipe: bool = False, log: str | None = None) -> subprocess.Popen[str]:
        """Start a process (in `ns`) in its own process group; the lab stops it by PID.

        Output goes to `log` under the lab's tmp dir (or nowhere), never to a pipe that
        nobody reads, so a chatty server cannot block on a full pipe.
        """
        out = open(self.tmp / log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        full = ns.cmd(argv) if ns else list(argv)
        proc = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE if stderr_pipe else subprocess.STDOUT if log else subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        if log:
            out.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal a spawned process's group (its PID is the group id), escalate to SIGKILL."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
            except ProcessLookupError:
                proc.wait(timeout)
        try:  # children left in the group (nginx workers) once the leader is gone
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.returncode

    def capture(self, ns: Netns, ifname: str, path: Path, snaplen: int = 262144, extra: Sequence[str] = ()) -> Capture:
        """Start tcpdump on `ifname` in `ns` writing `path`, and return once it captures.

        `-Z root` because tcpdump would otherwise drop to user tcpdump and may not write
        `path`; `-U` so the file holds every packet once tcpdump exits on SIGINT.
        """
        argv = ["tcpdump", "-i", ifname, "-w", str(path), "-s", str(snaplen), "-n", "-U", "-Z", "root",
                "--immediate-mode", *extra]  # fmt: skip
        proc = self.spawn(ns, argv, stderr_pipe=True)
        cap = Capture(self, proc, path)
        cap.wait_ready()
        return cap

    @contextmanager
    def loss(self, ns: Netns, ifname: str, percent: int, match: str = "") -> Iterator[None]:
        """Drop `percent`% of non-SYN TCP packets entering `ifname` in `ns` (nftables netdev).

        This kernel has no netem (FACTS.md). SYNs are spared so every connection is set up
        the same way; tcpdump on the same interface still sees the dropped packets (taps run
        before the ingress hook), and the retransmissions after them. `match` (an nft
        expression, e.g. "tcp dport 8081") limits the loss to some of the traffic.
        """
        self._tables += 1
        table = f"{self.prefix}loss{self._tables}"
        rules = (
            f"table netdev {table} {{\n"
            f"  chain in_{ifname} {{\n"
            f'    type filter hook ingress device "{ifname}" priority 0; policy accept;\n'
            f"    {match} tcp flags & syn == 0 numgen random mod 100 < {percent} drop\n"
            "  }\n}\n"
        )
        rules_file = self.tmp / f"{table}-{ns.name}.nft"
        rules_file.write_text(rules)
        ns.run(["nft", "-f", str(rules_file)])
        try:
            yield
        finally:
            ns.run(["nft", "delete", "table", "netdev", table], check=False)

    def nginx(self, ns: Netns, ports: Sequence[int] = (80, 8080), ipv6: bool = True, files: dict[str, int] | None = None) -> Nginx:
        """nginx in `ns` with its own config and docroot; see `Nginx` for what it serves."""
        root = self.tmp / f"nginx-{ns.name}"
        www = root / "www"
        www.mkdir(parents=True)
        files = dict(NGINX_FILES if files is None else files)
        for name, size in files.items():
            (www / name).parent.mkdir(parents=True, exist_ok=True)
            (www / name).write_bytes(body_bytes(size))
        listens = "".join(f"    listen {p} reuseport;\n" + (f"    listen [::]:{p} reuseport;\n" if ipv6 else "") for p in ports)
        temp = "".join(f"  {k}_temp_path {root}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = root / "nginx.conf"
        conf.write_text(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root root;\n"  # docroot may sit in a 0700 tmp dir
            f"pid {root}/nginx.pid;\nerror_log {root}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            f"  access_log off;\n{temp}"
            "  default_type application/octet-stream;\n"
            "  keepalive_timeout 65;\n  keepalive_requests 1000000;\n"
            "  server {\n"
            f"{listens}"
            f"    root {www};\n"
            "    location /notfound/ { return 404; }\n"
            "    location = /error { return 500; }\n"
            "  }\n}\n"
        )
        proc = self.spawn(ns, ["nginx", "-c", str(conf), "-p", str(root)], log=f"nginx-{ns.name}.log")
        for p in ports:
            ns.wait_listening(p)
        return Nginx(proc, www, tuple(ports), files)

    def http_server(self, ns: Netns, port: int, directory: Path, bind: str = "0.0.0.0") -> subprocess.Popen[str]:
        """`python3 -m http.server`: HTTP/1.0, one request per connection, server closes."""
        proc = self.spawn(ns, [sys.executable, "-m", "http.server", str(port), "--bind", bind, "--directory", str(directory)],
                          log=f"http-server-{ns.name}-{port}.log")  # fmt: skip
        ns.wait_listening(port)
        return proc

    def dnsmasq(self, ns: Netns, listen: Sequence[str], records: Sequence[str] = ()) -> subprocess.Popen[str]:
        """dnsmasq answering only from its command line (no /etc/hosts, no upstream), UDP+TCP 53.

        Serves DNS_ZONE: `example.test` (and subdomains) -> 10.9.9.9, host and CNAME records
        under `lab.test`, NXDOMAIN for other `lab.test` names (`--local`).
        """
        argv = ["dnsmasq", "--keep-in-foreground", "--no-hosts", "--no-resolv", "--conf-file=/dev/null",
                "--bind-interfaces", "--pid-file=", "--port=53", "--user=root", "--local=/lab.test/",
                *(f"--listen-address={ip}" for ip in listen), *DNS_ZONE, *records]  # fmt: skip
        proc = self.spawn(ns, argv, log=f"dnsmasq-{ns.name}.log")
        ns.wait_listening(53, udp=True)
        ns.wait_listening(53)
        return proc


def body_bytes(size: int) -> bytes:
    """File content that never contains "HTTP/", so a response start is unambiguous in a stream."""
    line = b"abcdefghijklmnopqrstuvwxyz0123456789-bpfnetlog-lab\n"
    return (line * (size // len(line) + 1))[:size]


# Static files nginx serves by default (name -> size in bytes).
NGINX_FILES: dict[str, int] = {
    "index.html": 612,
    "small.txt": 100,
    "1k.bin": 1024,
    "10k.bin": 10 * 1024,
    "64k.bin": 64 * 1024,
    "big.bin": 1024 * 1024,
    "dir/page.html": 3000,
}

DNS_ZONE: tuple[str, ...] = (
    "--address=/example.test/10.9.9.9",
    "--host-record=web.lab.test,10.77.0.80,fd77::80",
    "--host-record=db.lab.test,10.77.0.81",
    "--cname=alias.lab.test,web.lab.test",
)


@dataclass(frozen=True)
class Nginx:
    """A running nginx: `files` under `/`, `/notfound/*` -> 404, `/error` -> 500, keep-alive."""

    proc: subprocess.Popen[str]
    www: Path
    ports: tuple[int, ...]
    files: dict[str, int] = field(default_factory=dict)


def two_hosts(lab: Lab, ipv6: bool = True, subnet: str = "10.231.0.0/24", subnet6: str = "fd00:231::/64") -> Link:
    """Client namespace `a` and server namespace `b` on one veth pair (hosts 1 and 2 of the subnets)."""
    net, net6 = ipaddress.ip_network(subnet), ipaddress.ip_network(subnet6)
    client, server = lab.netns("c"), lab.netns("s")
    return lab.link(client, server, str(net[1]), str(net[2]), net.prefixlen,
                    str(net6[1]) if ipv6 else None, str(net6[2]) if ipv6 else None)  # fmt: skip


def url(host: str, port: int, target: str) -> str:
    """An http URL; IPv6 literals get their brackets."""
    h = f"[{host}]" if ":" in host else host
    return f"http://{h}:{port}{target}"


@dataclass(frozen=True)
class HttpResult:
    """One request as the client saw it: what it sent, what came back, on which connection."""

    method: str
    target: str
    status: int
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    req_offset: int | None = None  # byte offset of the request in the client->server stream
    resp_offset: int | None = None  # byte offset of the response in the server->client stream


_CURL_FORMAT = "%{method}\t%{response_code}\t%{local_ip}\t%{local_port}\t%{remote_ip}\t%{remote_port}\t%{url_effective}\n"


def curl(ns: Netns, urls: Sequence[str], extra: Sequence[str] = (), timeout: float = 20.0) -> list[HttpResult]:
    """curl all `urls` in one process: same host:port URLs reuse one keep-alive connection."""
    argv = ["curl", "-s", "--max-time", str(int(timeout)), "-w", _CURL_FORMAT, *extra]
    for u in urls:
        argv += [u, "-o", "/dev/null"]
    out = ns.run(argv, timeout=timeout + 5, check=False).stdout
    results = []
    for line in out.splitlines():
        method, code, lip, lport, rip, rport, eff = line.split("\t")
        target = re.sub(r"^https?://[^/]+", "", eff) or "/"
        results.append(HttpResult(method, target, int(code), lip, int(lport or 0), rip, int(rport or 0)))
    return results


def h2load_pipelined(ns: Netns, target_url: str, requests: int, depth: int = 5, timeout: float = 20.0) -> dict[str, int]:
    """`h2load --h1 -m depth` on one connection: HTTP/1.1 pipelining; returns its tallies."""
    out = ns.run(["h2load", "--h1", "-n", str(requests), "-c", "1", "-m", str(depth), "-T", str(int(timeout)), target_url],
                 timeout=timeout + 5).stdout  # fmt: skip
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not m or not s:
        raise RuntimeError(f"h2load output not understood: {out}")
    return {"total": int(m.group(1)), "done": int(m.group(3)), "succeeded": int(m.group(4)), "2xx": int(s.group(1)),
            "3xx": int(s.group(2)), "4xx": int(s.group(3)), "5xx": int(s.group(4))}  # fmt: skip


def pipelined(ns: Netns, host: str, port: int, requests: Sequence[tuple[str, str]], timeout: float = 10.0) -> list[HttpResult]:
    """Send all `requests` (method, target) in ONE write on one connection; parse the answers.

    Runs this file as a script inside `ns`; the result carries each message's byte offset,
    so the test knows req/resp seqs even where tshark loses track (responses after HEAD).
    """
    argv = [sys.executable, str(Path(__file__).resolve()), "pipeline", host, str(port), *(f"{m}:{t}" for m, t in requests)]
    out = ns.run(argv, timeout=timeout + 5).stdout
    return [HttpResult(**r) for r in json.loads(out)]


def _pipeline_client(host: str, port: int, requests: list[tuple[str, str]], timeout: float = 10.0) -> list[HttpResult]:
    """The in-namespace side of `pipelined`: one connection, one sendall, sequential parse."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    out: list[bytes] = []
    offsets = []
    pos = 0
    for method, target in requests:
        msg = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bnl-pipeline\r\n\r\n".encode()
        offsets.append(pos)
        pos += len(msg)
        out.append(msg)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        lip, lport = s.getsockname()[:2]
        s.sendall(b"".join(out))
        buf = b""
        results: list[HttpResult] = []
        cursor = 0
        for (method, target), req_off in zip(requests, offsets, strict=True):
            while b"\r\n\r\n" not in buf[cursor:]:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed before all responses")
                buf += chunk
            head_end = buf.index(b"\r\n\r\n", cursor) + 4
            head = buf[cursor:head_end].decode("latin-1")
            status = int(head.split(" ", 2)[1])
            m = re.search(r"(?im)^content-length:\s*(\d+)", head)
            body = 0 if method == "HEAD" or status in (204, 304) or status < 200 else int(m.group(1)) if m else 0
            while len(buf) < head_end + body:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed inside a body")
                buf += chunk
            results.append(HttpResult(method, target, status, lip, lport, host, port, req_off, cursor))
            cursor = head_end + body
    return results


@dataclass(frozen=True)
class DigResult:
    """One DNS exchange as dig printed it (id, rcode and answers' rdata, in order)."""

    qname: str
    qtype: str
    tcp: bool
    server: str
    id: int
    rcode: str
    answers: tuple[str, ...]


def dig(ns: Netns, server: str, queries: Sequence[tuple[str, str]], tcp: bool = False, timeout: float = 10.0) -> list[DigResult]:
    """Ask `server` every (name, type) in one dig run; with `tcp`, all over one kept-open connection."""
    argv = ["dig", f"@{server}", "+tries=1", "+time=2", "+nocookie", "+noall", "+comments", "+answer"]
    if tcp:
        argv += ["+tcp", "+keepopen"]
    for name, qtype in queries:
        argv += [name, qtype]
    out = ns.run(argv, timeout=timeout).stdout
    headers = list(re.finditer(r"->>HEADER<<- opcode: \w+, status: (\w+), id: (\d+)", out))
    if len(headers) != len(queries):
        raise RuntimeError(f"dig answered {len(headers)} of {len(queries)} queries: {out}")
    results = []
    for i, ((name, qtype), h) in enumerate(zip(queries, headers, strict=True)):
        block = out[h.end() : headers[i + 1].start() if i + 1 < len(headers) else len(out)]
        answers = tuple(
            line.split(None, 4)[4]
            for line in block.splitlines()
            if line and not line.startswith(";") and len(line.split(None, 4)) == 5
        )
        results.append(DigResult(name, qtype, tcp, server, int(h.group(2)), h.group(1), answers))
    return results


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "pipeline":
        reqs = [tuple(a.split(":", 1)) for a in sys.argv[4:]]
        res = _pipeline_client(sys.argv[2], int(sys.argv[3]), reqs)  # type: ignore[arg-type]
        print(json.dumps([r.__dict__ for r in res]))
    else:
        sys.exit("usage: lab.py pipeline HOST PORT METHOD:TARGET...")
