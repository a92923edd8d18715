"""What tshark says about a pcap, as plain Python values: the reference bpfnetlog is held to.

Three tshark passes over the file (frames, HTTP, DNS); nothing here depends on bpfnetlog.

Conventions (the tests rely on them):
- `client` is the side that sent the SYN (TCP) or the first datagram (UDP); per-direction
  counters are `c2s_*` (client to server) and `s2c_*`.
- bytes are L4 PAYLOAD bytes (tcp.len, udp.length - 8), not frame bytes: they do not depend
  on the link layer or on IP/TCP options, so a capture on any NIC gives the same numbers.
- retransmissions are frames tshark flags `tcp.analysis.retransmission` (this includes fast
  and spurious retransmissions, which tshark flags as retransmissions too).
- HTTP `req_seq` / `resp_seq` are raw TCP sequence numbers of the first byte of the message.
  tshark reports each message on the frame that ENDS it (after reassembly) and gives no byte
  offset inside a frame, which pipelining needs. So each direction's byte stream is rebuilt
  from tshark's `tcp.payload` + `tcp.seq_raw`, each message tshark found is located in it in
  order, and the position is checked to lie inside the payload of the frame that holds it or
  of one of its reassembled segments (`tcp.segment`): tshark's framing and the search agree,
  or `GroundTruthError` is raised.
- Requests and responses of a stream are paired in stream order (HTTP/1.x answers in
  order). tshark's HTTP dissector loses responses after a HEAD inside a pipeline; such a
  stream has `responses_complete == False` and its responses must come from the client.
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.rcode
import dns.rdatatype

SEP = "\t"
AGG = "\x1f"  # joins several occurrences of one field in a frame; never in a URI or host
MOD = 1 << 32


class GroundTruthError(AssertionError):
    """tshark's view is not self-consistent, so it cannot serve as the reference."""


def tshark(pcap: Path, args: Sequence[str], timeout: float = 300.0) -> str:
    """Run tshark on `pcap` (no name resolution) and return stdout; errors raise."""
    argv = ["tshark", "-n", "-r", str(pcap), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr}")
    return proc.stdout


def _fields(pcap: Path, names: Sequence[str], display_filter: str, extra: Sequence[str] = ()) -> list[dict[str, str]]:
    args = ["-Y", display_filter, "-T", "fields", "-E", f"separator={SEP}", "-E", f"aggregator={AGG}", "-E", "occurrence=a"]
    for n in names:
        args += ["-e", n]
    out = tshark(pcap, [*extra, *args])
    return [dict(zip(names, line.split(SEP), strict=True)) for line in out.splitlines() if line]


# tshark 4.0 does not reassemble out-of-order segments by default: after a loss it then
# silently skips whole HTTP responses. The lab's loss makes this pref necessary.
REASSEMBLE = ["-o", "tcp.reassemble_out_of_order:TRUE"]


def _decode_as(http_ports: Sequence[int]) -> list[str]:
    """Ports to dissect as HTTP besides tshark's defaults (e.g. http.server's 8000)."""
    return [*REASSEMBLE, *(a for p in http_ports for a in ("-d", f"tcp.port=={p},http"))]


@dataclass(frozen=True)
class Frame:
    """One TCP or UDP frame: addresses, L4 header values and the payload bytes."""

    number: int
    time: float
    l4: str
    stream: int
    src: str
    sport: int
    dst: str
    dport: int
    payload_len: int
    seq: int  # raw; 0 for UDP
    flags: int  # TCP flags byte; 0 for UDP
    retrans: bool
    payload: bytes


_FRAME_FIELDS = [
    "frame.number", "frame.time_epoch", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
    "tcp.stream", "tcp.srcport", "tcp.dstport", "tcp.len", "tcp.seq_raw", "tcp.flags",
    "tcp.analysis.retransmission", "tcp.payload",
    "udp.stream", "udp.srcport", "udp.dstport", "udp.length", "udp.payload",
]  # fmt: skip


def frames(pcap: Path) -> list[Frame]:
    """Every TCP and UDP frame of the pcap, in file order."""
    result = []
    for r in _fields(pcap, _FRAME_FIELDS, "(tcp or udp) and not icmp and not icmpv6"):
        if AGG in r["tcp.stream"] + r["udp.stream"] or (r["tcp.stream"] and r["udp.stream"]):
            raise GroundTruthError(f"frame {r['frame.number']}: tunnelled or nested L4, not in the lab's traffic")
        tcp = r["tcp.stream"] != ""
        p = "tcp" if tcp else "udp"
        result.append(
            Frame(
                number=int(r["frame.number"]),
                time=float(r["frame.time_epoch"]),
                l4=p,
                stream=int(r[f"{p}.stream"]),
                src=r["ip.src"] or r["ipv6.src"],
                sport=int(r[f"{p}.srcport"]),
                dst=r["ip.dst"] or r["ipv6.dst"],
                dport=int(r[f"{p}.dstport"]),
                payload_len=int(r["tcp.len"]) if tcp else int(r["udp.length"]) - 8,
                seq=int(r["tcp.seq_raw"]) if tcp else 0,
                flags=int(r["tcp.flags"], 16) if tcp else 0,
                retrans=r["tcp.analysis.retransmission"] != "",
                payload=bytes.fromhex(r["tcp.payload" if tcp else "udp.payload"].replace(":", "")),
            )
        )
    return result


SYN, RST, ACK = 0x02, 0x04, 0x10


@dataclass
class Conversation:
    """One tshark TCP or UDP stream, counted per direction (payload bytes, see module doc)."""

    l4: str
    stream: int
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    c2s_packets: int = 0
    s2c_packets: int = 0
    c2s_bytes: int = 0
    s2c_bytes: int = 0
    c2s_retrans: int = 0
    s2c_retrans: int = 0
    c2s_rst: int = 0
    s2c_rst: int = 0
    syn_seq: int | None = None  # raw seq of the client's SYN
    synack_seq: int | None = None  # raw seq of the server's SYN-ACK
    frames: list[Frame] = field(default_factory=list, repr=False)

    @property
    def key(self) -> tuple[str, str, int, str, int]:
        return (self.l4, self.client_ip, self.client_port, self.server_ip, self.server_port)


def conversations(pcap: Path, all_frames: list[Frame] | None = None) -> list[Conversation]:
    """Every TCP and UDP stream of the pcap with per-direction packets, bytes, retrans, RSTs."""
    by_stream: dict[tuple[str, int], list[Frame]] = defaultdict(list)
    for f in frames(pcap) if all_frames is None else all_frames:
        by_stream[(f.l4, f.stream)].append(f)
    result = []
    for (l4, stream), fs in sorted(by_stream.items()):
        syn = next((f for f in fs if f.flags & (SYN | ACK) == SYN), None)
        first = syn or fs[0]
        conv = Conversation(l4, stream, first.src, first.sport, first.dst, first.dport, frames=fs)
        for f in fs:
            d = "c2s" if (f.src, f.sport) == (conv.client_ip, conv.client_port) else "s2c"
            setattr(conv, f"{d}_packets", getattr(conv, f"{d}_packets") + 1)
            setattr(conv, f"{d}_bytes", getattr(conv, f"{d}_bytes") + f.payload_len)
            setattr(conv, f"{d}_retrans", getattr(conv, f"{d}_retrans") + f.retrans)
            setattr(conv, f"{d}_rst", getattr(conv, f"{d}_rst") + bool(f.flags & RST))
            if f.flags & (SYN | ACK) == SYN and d == "c2s" and conv.syn_seq is None:
                conv.syn_seq = f.seq
            if f.flags & (SYN | ACK) == SYN | ACK and d == "s2c" and conv.synack_seq is None:
                conv.synack_seq = f.seq
        result.append(conv)
    return result


class _Stream:
    """One direction of a TCP connection rebuilt from captured payloads, indexed by raw seq."""

    def __init__(self, isn: int, fs: list[Frame]) -> None:
        self.base = (isn + 1) % MOD
        size = max(((f.seq - self.base) % MOD + f.payload_len for f in fs if f.payload_len), default=0)
        self.data = bytearray(size)
        self.have = bytearray(size)
        for f in fs:
            if f.payload_len:
                off = (f.seq - self.base) % MOD
                self.data[off : off + len(f.payload)] = f.payload
                self.have[off : off + len(f.payload)] = b"\x01" * len(f.payload)

    def find(self, needle: bytes, start: int) -> int:
        """Offset of `needle` at or after `start`, made only of captured bytes."""
        pos = self.data.find(needle, start)
        if pos < 0 or 0 in self.have[pos : pos + len(needle)]:
            raise GroundTruthError(f"{needle!r} not in the captured stream after offset {start}")
        return pos


@dataclass(frozen=True)
class HttpExchange:
    """One HTTP request as tshark saw it, with its response when tshark found it."""

    stream: int
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    method: str
    target: str  # the full request target (http.request.uri)
    version: str
    host: str | None
    req_frame: int  # frame tshark reports the request on (its last segment)
    req_start_frame: int  # first frame that carries the request's first byte
    req_seq: int
    status: int | None = None
    resp_frame: int | None = None
    resp_start_frame: int | None = None
    resp_seq: int | None = None
    responses_complete: bool = True  # False: tshark lost responses on this stream (see module doc)

    @property
    def path(self) -> str:
        """The target without its query string (what records call http_path)."""
        return self.target.split("?", 1)[0]


_HTTP_FIELDS = [
    "frame.number", "tcp.stream", "tcp.segment", "http.request.method", "http.request.uri",
    "http.request.version", "http.host", "http.response.version", "http.response.code",
]  # fmt: skip


def _locate(stream: _Stream, needle: bytes, cursor: int, candidates: list[Frame]) -> tuple[int, int, int]:
    """Find `needle` from `cursor`; check a candidate frame holds its first byte; (offset, seq, frame)."""
    off = stream.find(needle, cursor)
    seq = (stream.base + off) % MOD
    for f in sorted(candidates, key=lambda f: f.number):
        if f.payload_len and 0 <= (seq - f.seq) % MOD < f.payload_len:
            return off, seq, f.number
    raise GroundTruthError(f"{needle!r} at seq {seq} is in none of frames {[f.number for f in candidates]}: "
                           "tshark skipped a message before it")  # fmt: skip


def http_exchanges(pcap: Path, http_ports: Sequence[int] = (), convs: list[Conversation] | None = None) -> list[HttpExchange]:
    """Every HTTP request tshark decodes, paired in stream order with the responses it decodes."""
    convs = conversations(pcap) if convs is None else convs
    tcp = {c.stream: c for c in convs if c.l4 == "tcp"}
    frame_by_no = {f.number: f for c in convs for f in c.frames}
    reqs: dict[int, list[tuple[dict[str, str], int]]] = defaultdict(list)
    resps: dict[int, list[tuple[dict[str, str], int]]] = defaultdict(list)
    for r in _fields(pcap, _HTTP_FIELDS, "http.request or http.response", _decode_as(http_ports)):
        stream = int(r["tcp.stream"].split(AGG)[0])
        methods = r["http.request.method"].split(AGG) if r["http.request.method"] else []
        hosts = r["http.host"].split(AGG) if r["http.host"] else []
        for i, method in enumerate(methods):
            reqs[stream].append(({"method": method, "uri": r["http.request.uri"].split(AGG)[i],
                                  "version": r["http.request.version"].split(AGG)[i],
                                  "host": hosts[i] if len(hosts) == len(methods) else "",
                                  "frame": r["frame.number"], "segments": r["tcp.segment"]}, i))  # fmt: skip
        for i, code in enumerate(r["http.response.code"].split(AGG) if r["http.response.code"] else []):
            resps[stream].append(({"code": code, "version": r["http.response.version"].split(AGG)[i],
                                   "frame": r["frame.number"], "segments": r["tcp.segment"]}, i))  # fmt: skip
    result: list[HttpExchange] = []
    for stream_no in sorted(reqs.keys() | resps.keys()):
        conv = tcp[stream_no]
        if conv.syn_seq is None or conv.synack_seq is None:
            raise GroundTruthError(f"tcp stream {stream_no}: handshake not captured, seqs unknown")
        c2s = [f for f in conv.frames if (f.src, f.sport) == (conv.client_ip, conv.client_port)]
        s2c = [f for f in conv.frames if (f.src, f.sport) != (conv.client_ip, conv.client_port)]
        up, down = _Stream(conv.syn_seq, c2s), _Stream(conv.synack_seq, s2c)

        def candidates(info: dict[str, str]) -> list[Frame]:
            nos = {int(info["frame"])} | {int(s) for s in info["segments"].replace(AGG, ",").split(",") if s}
            return [frame_by_no[n] for n in nos if n in frame_by_no]

        located_reqs = []
        cursor = 0
        for info, _ in reqs[stream_no]:
            needle = f"{info['method']} {info['uri']} {info['version']}\r\n".encode()
            off, seq, start = _locate(up, needle, cursor, candidates(info))
            located_reqs.append((info, seq, start))
            cursor = off + 1
        located_resps = []
        cursor = 0
        for info, _ in resps[stream_no]:
            off, seq, start = _locate(down, f"{info['version']} {info['code']} ".encode(), cursor, candidates(info))
            located_resps.append((info, seq, start))
            cursor = off + 1
        complete = len(located_resps) == len(located_reqs)
        if len(located_resps) > len(located_reqs):
            raise GroundTruthError(f"tcp stream {stream_no}: more responses than requests")
        for k, (info, seq, start) in enumerate(located_reqs):
            resp = located_resps[k] if k < len(located_resps) else None
            result.append(
                HttpExchange(
                    stream=stream_no,
                    client_ip=conv.client_ip,
                    client_port=conv.client_port,
                    server_ip=conv.server_ip,
                    server_port=conv.server_port,
                    method=info["method"],
                    target=info["uri"],
                    version=info["version"],
                    host=info["host"] or None,
                    req_frame=int(info["frame"]),
                    req_start_frame=start,
                    req_seq=seq,
                    status=int(resp[0]["code"]) if resp else None,
                    resp_frame=int(resp[0]["frame"]) if resp else None,
                    resp_start_frame=resp[2] if resp else None,
                    resp_seq=resp[1] if resp else None,
                    responses_complete=complete,
                )
            )
    return result


@dataclass(frozen=True)
class DnsTransaction:
    """One DNS query and its response (if any), as tshark decodes them."""

    l4: str
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    id: int
    qname: str  # without the final dot, as tshark prints names
    qtype: str  # mnemonic, e.g. "AAAA"
    query_frame: int
    response_frame: int | None = None
    rcode: str | None = None  # mnemonic, e.g. "NXDOMAIN"
    answers: tuple[str, ...] = ()  # rdata text in packet order, names without the final dot


def _keep_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json hook: tshark repeats keys (two DNS messages in a frame, equal answers); keep all."""
    out: dict[str, object] = {}
    for k, v in pairs:
        prev = out.get(k)
        if k not in out:
            out[k] = v
        elif isinstance(prev, _Dup):
            prev.append(v)
        else:
            out[k] = _Dup([prev, v])
    return out


class _Dup(list):  # type: ignore[type-arg]
    """A list made of repeated JSON keys (as opposed to a JSON array)."""


def _all(v: object) -> list[object]:
    return list(v) if isinstance(v, _Dup) else [v]


_RDATA_KEYS = ("dns.a", "dns.aaaa", "dns.cname", "dns.ptr.domain_name", "dns.ns", "dns.txt")


def _answer_text(rr: dict[str, object]) -> str:
    for k in _RDATA_KEYS:
        if k in rr:
            return str(rr[k])
    if "dns.mx.mail_exchange" in rr:
        return f"{rr['dns.mx.preference']} {rr['dns.mx.mail_exchange']}"
    raise GroundTruthError(f"answer type {rr.get('dns.resp.type')} not handled: {rr}")


def dns_transactions(pcap: Path) -> list[DnsTransaction]:
    """Every DNS query (UDP and TCP) with the response of the same 5-tuple and id, if seen."""
    packets = json.loads(tshark(pcap, [*REASSEMBLE, "-Y", "dns", "-T", "json"]), object_pairs_hook=_keep_duplicates)
    queries: dict[tuple[object, ...], DnsTransaction] = {}
    order: list[tuple[object, ...]] = []
    for pkt in packets:
        layers = pkt["_source"]["layers"]
        frame = int(layers["frame"]["frame.number"])
        ip = layers.get("ip") or layers["ipv6"]
        fam = "ip" if "ip" in layers else "ipv6"
        l4 = "tcp" if "tcp" in layers else "udp"
        src, dst = ip[f"{fam}.src"], ip[f"{fam}.dst"]
        sport, dport = int(layers[l4][f"{l4}.srcport"]), int(layers[l4][f"{l4}.dstport"])
        for msg in _all(layers["dns"]):
            assert isinstance(msg, dict)
            flags = msg["dns.flags_tree"]
            (qdesc, q), *_ = msg["Queries"].items()
            is_resp = flags["dns.flags.response"] == "1"
            key = (l4, dst, dport, src, sport, int(msg["dns.id"], 16)) if is_resp else (l4, src, sport, dst, dport, int(msg["dns.id"], 16))
            if not is_resp:
                queries[key] = DnsTransaction(l4, src, sport, dst, dport, int(msg["dns.id"], 16), q["dns.qry.name"],
                                              dns.rdatatype.to_text(dns.rdatatype.RdataType.make(int(q["dns.qry.type"]))), frame)  # fmt: skip
                order.append(key)
                continue
            if key not in queries:
                raise GroundTruthError(f"frame {frame}: DNS response without its query ({qdesc})")
            answers = [rr for v in msg.get("Answers", {}).values() for rr in _all(v) if isinstance(rr, dict)]
            t = queries[key]
            queries[key] = DnsTransaction(**{**t.__dict__, "response_frame": frame,
                                             "rcode": dns.rcode.to_text(dns.rcode.Rcode.make(int(flags["dns.flags.rcode"]))),
                                             "answers": tuple(_answer_text(rr) for rr in answers)})  # fmt: skip
    return [queries[k] for k in order]
