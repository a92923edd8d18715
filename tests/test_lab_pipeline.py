"""End to end: real traffic from the lab -> `bpfnetlog read` -> store -> `bpfnetlog query`,
compared with what tshark (and, where tshark is known to be wrong, the client) says.

Every value is compared exactly, and counts both ways: no record missing, none extra.
Bytes are L4 payload bytes (see groundtruth.py). The capture is taken on the client's
veth and `--local-ip` names the client, so the local side (src, tx) is the client.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import groundtruth as G
import pytest
from conftest import H2LOAD_REQUESTS, PIPELINE_REQUESTS, BnlRunner, LabPcap

pytestmark = pytest.mark.lab

Record = dict[str, Any]


@dataclass(frozen=True)
class Truth:
    """tshark's view of the lab pcap, computed once."""

    convs: list[G.Conversation]
    http: list[G.HttpExchange]
    dns: list[G.DnsTransaction]


@dataclass(frozen=True)
class Store:
    """What bpfnetlog stored for the lab pcap, as `query --format jsonl` prints it."""

    l4: list[Record]
    l7: list[Record]
    packets: list[Record]


@pytest.fixture(scope="module")
def truth(lab_pcap: LabPcap) -> Truth:
    convs = G.conversations(lab_pcap.path)
    return Truth(convs, G.http_exchanges(lab_pcap.path, lab_pcap.http_ports, convs), G.dns_transactions(lab_pcap.path))


def _query(bnl: BnlRunner, store: str, query: str) -> list[Record]:
    r = bnl(["query", query, "--store", store, "--format", "jsonl", "--limit", "100000"])
    assert r.returncode == 0, f"bpfnetlog query {query!r} failed ({r.returncode}): {r.stderr[-3000:]}"
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def store(lab_pcap: LabPcap, bnl: BnlRunner, tmp_path_factory: pytest.TempPathFactory) -> Store:
    path = str(tmp_path_factory.mktemp("labstore") / "store")
    r = bnl(["read", str(lab_pcap.path), "--store", path,
             "--local-ip", f"{lab_pcap.client_ip}/32", "--local-ip", f"{lab_pcap.client_ip6}/128"])  # fmt: skip
    assert r.returncode == 0, f"bpfnetlog read failed ({r.returncode}): {r.stderr[-3000:]}"
    l4 = _query(bnl, path, "source:bpf_net_l4_log")
    l7 = _query(bnl, path, "source:bpf_net_l7_log")
    packets = _query(bnl, path, "source:bpf_net_packet")
    assert {x["source"] for x in l4} <= {"bpf_net_l4_log"} and {x["source"] for x in l7} <= {"bpf_net_l7_log"}
    return Store(l4, l7, packets)


def _name(n: str | None) -> str | None:
    """DNS names compared without the final dot (tshark never prints it)."""
    return n[:-1] if n and n.endswith(".") else n


def _conn_key(r: Record) -> tuple[str, str, int, str, int]:
    return (r["l4_proto"], r["client_ip"], r["client_port"], r["server_ip"], r["server_port"])


def _expected_http(lab_pcap: LabPcap, truth: Truth) -> dict[tuple[int, int], dict[str, Any]]:
    """(client_port, req_seq) -> expected fields of each HTTP request's L7 record.

    tshark for every stream it decodes completely; for the pipelined stream where tshark
    loses responses after HEAD, the client's own output (its byte offsets + the SYN-ACK seq).
    """
    convs = {(c.l4, c.client_port): c for c in truth.convs}
    piped = {r.local_port: r for r in lab_pcap.pipelined}
    expected: dict[tuple[int, int], dict[str, Any]] = {}
    by_stream: dict[int, list[G.HttpExchange]] = defaultdict(list)
    for x in truth.http:
        by_stream[x.stream].append(x)
    for xs in by_stream.values():
        port = xs[0].client_port
        client = [r for r in lab_pcap.pipelined if r.local_port == port] if port in piped else None
        for i, x in enumerate(xs):
            status, resp_seq = x.status, x.resp_seq
            if not x.responses_complete:
                assert client is not None, f"tshark lost responses on stream {x.stream}, not the pipelining client's"
                synack, offset = convs[("tcp", port)].synack_seq, client[i].resp_offset
                assert synack is not None and offset is not None
                status, resp_seq = client[i].status, (synack + 1 + offset) % G.MOD
            expected[(port, x.req_seq)] = {
                "client_ip": x.client_ip, "server_ip": x.server_ip, "server_port": x.server_port,
                "http_method": x.method, "request_resource": x.target, "http_path": x.path,
                "http_status_code": status, "req_seq": x.req_seq, "resp_seq": resp_seq,
            }  # fmt: skip
    return expected


def _is_http(r: Record) -> bool:
    return str(r.get("l7_proto") or "").lower().startswith("http")


def _is_dns(r: Record) -> bool:
    return str(r.get("l7_proto") or "").lower() == "dns"


# --- the ground truth itself, checked against the clients (no bpfnetlog involved) ---------


def test_capture_is_complete(lab_pcap: LabPcap, truth: Truth) -> None:
    assert lab_pcap.capture.dropped == 0 and lab_pcap.capture.captured > 0
    assert sum(c.c2s_packets + c.s2c_packets for c in truth.convs) < 5000


def test_groundtruth_http_matches_clients(lab_pcap: LabPcap, truth: Truth) -> None:
    """tshark sees exactly the requests curl and h2load made, with the statuses they got."""
    piped_ports = {r.local_port for r in lab_pcap.pipelined}
    # a connection is (client port, server port): h2load's may reuse an ephemeral port curl used
    curl_conns = {(r.local_port, r.remote_port) for r in lab_pcap.curl}
    seen = Counter((x.client_port, x.method, x.target, x.status) for x in truth.http
                   if (x.client_port, x.server_port) in curl_conns)  # fmt: skip
    assert seen == Counter((r.local_port, r.method, r.target, r.status) for r in lab_pcap.curl)
    h2 = [x for x in truth.http if (x.client_port, x.server_port) not in curl_conns and x.client_port not in piped_ports]
    assert len({x.stream for x in h2}) == 1 and len(h2) == lab_pcap.h2load["total"] == H2LOAD_REQUESTS
    assert {(x.method, x.target, x.status) for x in h2} == {("GET", "/1k.bin", 200)} and lab_pcap.h2load["2xx"] == len(h2)
    assert all(x.responses_complete for x in truth.http if x.client_port not in piped_ports)


def test_groundtruth_pipeline_matches_client(lab_pcap: LabPcap, truth: Truth) -> None:
    """The pipelining client's byte offsets give the same seqs as tshark wherever tshark decodes."""
    (port,) = {r.local_port for r in lab_pcap.pipelined}
    conv = next(c for c in truth.convs if c.l4 == "tcp" and c.client_port == port)
    xs = [x for x in truth.http if x.client_port == port]
    assert [(x.method, x.target) for x in xs] == PIPELINE_REQUESTS
    assert len({x.req_start_frame for x in xs}) == 1  # all requests in one segment: real pipelining
    assert conv.syn_seq is not None and conv.synack_seq is not None
    for x, r in zip(xs, lab_pcap.pipelined, strict=True):
        assert r.req_offset is not None and r.resp_offset is not None
        assert x.req_seq == (conv.syn_seq + 1 + r.req_offset) % G.MOD
        if x.resp_seq is not None:  # tshark's responses up to the HEAD
            assert (x.status, x.resp_seq) == (r.status, (conv.synack_seq + 1 + r.resp_offset) % G.MOD)
    assert [r.status for r in lab_pcap.pipelined] == [200, 200, 200, 404, 200, 500]


def test_groundtruth_dns_matches_dig(lab_pcap: LabPcap, truth: Truth) -> None:
    got = [(t.l4, t.server_ip, t.id, t.qname, t.qtype, t.rcode, t.answers) for t in truth.dns]
    want = [("tcp" if d.tcp else "udp", d.server, d.id, _name(d.qname), d.qtype, d.rcode, tuple(map(_name, d.answers)))
            for d in lab_pcap.dig]  # fmt: skip
    assert got == want


def test_groundtruth_has_rst_and_retransmissions(lab_pcap: LabPcap, truth: Truth) -> None:
    closed = [c for c in truth.convs if c.server_port == lab_pcap.closed_port]
    assert [(c.c2s_packets, c.s2c_packets, c.s2c_rst, c.synack_seq) for c in closed] == [(1, 1, 1, None)]
    assert sum(c.s2c_retrans for c in truth.convs) > 0


# --- bpfnetlog against the ground truth ------------------------------------------------------


def test_http_records_match_tshark(lab_pcap: LabPcap, truth: Truth, store: Store) -> None:
    expected = _expected_http(lab_pcap, truth)
    records = [r for r in store.l7 if _is_http(r)]
    got: dict[tuple[int, int], dict[str, Any]] = {}
    for r in records:
        key = (r["client_port"], r["req_seq"])
        assert key not in got, f"two HTTP records for one request: {r}"
        got[key] = {k: r.get(k) for k in next(iter(expected.values()))}
    missing = sorted(expected.keys() - got.keys())
    extra = sorted(got.keys() - expected.keys())
    assert not missing and not extra, (
        f"missing: {[expected[k] for k in missing]}\nextra: {[got[k] for k in extra]}"
    )
    diffs = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not diffs, "\n".join(f"{k}: got {g}\n    want {w}" for k, (g, w) in diffs.items())
    assert len(records) == len(expected) == len(lab_pcap.curl) + len(lab_pcap.pipelined) + lab_pcap.h2load["total"]


def test_l7_traceid_is_req_and_resp_seq(store: Store) -> None:
    http = [r for r in store.l7 if _is_http(r)]
    assert http
    bad = [r for r in http if r["l7_traceid"] != f"{r['req_seq']}_{r['resp_seq']}"]
    assert not bad, bad[:3]


def test_dns_records_match_tshark(truth: Truth, store: Store) -> None:
    expected = {(t.l4, t.client_port, t.qname, t.qtype): (t.server_ip, t.rcode, t.answers) for t in truth.dns}
    assert len(expected) == len(truth.dns)  # the key identifies a query in this lab
    records = [r for r in store.l7 if _is_dns(r)]
    got = {}
    for r in records:
        key = (r["l4_proto"], r["client_port"], _name(r["dns_query"]), r["dns_qtype"])
        assert key not in got, f"two DNS records for one query: {r}"
        answers = tuple(_name(a.strip()) for a in (r["dns_answers"] or "").split(",") if a.strip())
        got[key] = (r["server_ip"], r["dns_rcode"], answers)
    assert got == expected


def test_only_http_and_dns_l7_records(store: Store) -> None:
    """Count equality for L7: every record is one of the compared HTTP or DNS records."""
    others = [r for r in store.l7 if not (_is_http(r) or _is_dns(r))]
    assert not others, others[:3]


def _conversations(store: Store) -> dict[tuple[str, str, int, str, int], Record]:
    """Chunks of each conn_id summed into one record per connection."""
    summed: dict[str, Record] = {}
    counters = ("tx_packets", "rx_packets", "tx_bytes", "rx_bytes", "tx_retrans", "rx_retrans", "tx_rst", "rx_rst",
                "packets")  # fmt: skip
    for r in store.l4:
        s = summed.setdefault(r["conn_id"], {**{c: 0 for c in counters}, "key": _conn_key(r), "chunks": 0, "first": r})
        assert s["key"] == _conn_key(r), f"conn {r['conn_id']}: endpoints change between chunks"
        s["chunks"] += 1
        for c in counters:
            s[c] += r[c] or 0
    by_key: dict[tuple[str, str, int, str, int], Record] = {}
    for conn_id, s in summed.items():
        assert s["key"] not in by_key, f"one connection split into two conn_ids: {conn_id}, {by_key[s['key']]['first']['conn_id']}"
        by_key[s["key"]] = s
    return by_key


@pytest.mark.parametrize("l4", ["tcp", "udp"])
def test_conversations_match_tshark(l4: str, lab_pcap: LabPcap, truth: Truth, store: Store) -> None:
    """Packets, payload bytes, retransmissions and RSTs per direction, per connection."""
    assert len({c.key for c in truth.convs}) == len(truth.convs), "a 5-tuple was reused: conversations ambiguous"
    expected = {c.key: {"tx_packets": c.c2s_packets, "rx_packets": c.s2c_packets, "tx_bytes": c.c2s_bytes,
                        "rx_bytes": c.s2c_bytes, "tx_retrans": c.c2s_retrans, "rx_retrans": c.s2c_retrans,
                        "tx_rst": c.c2s_rst, "rx_rst": c.s2c_rst, "packets": c.c2s_packets + c.s2c_packets}
                for c in truth.convs if c.l4 == l4}  # fmt: skip
    got = {k: {f: v[f] for f in next(iter(expected.values()))} for k, v in _conversations(store).items() if k[0] == l4}
    assert sorted(got.keys() - expected.keys()) == [], "connections tshark does not have"
    assert sorted(expected.keys() - got.keys()) == [], "connections bpfnetlog missed"
    diffs = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not diffs, f"in {lab_pcap.path} (kept by pytest):\n" + "\n".join(
        f"{k}: got {g}\n    want {w}" for k, (g, w) in diffs.items()
    )


_TCPDUMP_FLAGS = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "."), (0x20, "U"), (0x40, "E"), (0x80, "W"))
_RETRANS = {"retransmission", "fast_retransmission", "spurious_retransmission"}


def test_packet_rows_match_tshark(lab_pcap: LabPcap, truth: Truth, store: Store) -> None:
    """One packet row per TCP/UDP frame: direction, flags, seq, payload size, retransmission.

    The per-frame view of the conversation counters: when those differ, this names the frames.
    """
    want = {}
    for c in truth.convs:
        for f in c.frames:
            tx = (f.src, f.sport) == (c.client_ip, c.client_port)
            flags = "".join(ch for bit, ch in _TCPDUMP_FLAGS if f.flags & bit) if f.l4 == "tcp" else ""
            want[f.number] = {"txrx": "tx" if tx else "rx", "flags": flags, "seq": f.seq if f.l4 == "tcp" else None,
                              "payload_size": f.payload_len, "retransmission": f.retrans}  # fmt: skip
    got: dict[int, dict[str, Any]] = {}
    for p in store.packets:
        assert p["frame"] not in got, f"frame {p['frame']} in two packet rows"
        tcp = p["flags"] != ""
        got[p["frame"]] = {"txrx": p["txrx"], "flags": p["flags"], "seq": p["seq"] if tcp else None,
                           "payload_size": p["payload_size"],
                           "retransmission": bool(_RETRANS & set((p["analysis"] or "").split(",")))}  # fmt: skip
    assert sorted(want.keys() - got.keys()) == [], "frames without a packet row"
    assert sorted(got.keys() - want.keys()) == [], "packet rows of frames tshark has no TCP/UDP for"
    diffs = {n: (got[n], w) for n, w in sorted(want.items()) if got[n] != w}
    assert not diffs, f"{len(diffs)} frames differ in {lab_pcap.path} (kept by pytest):\n" + "\n".join(
        f"frame {n}: got {g}\n    want {w}" for n, (g, w) in list(diffs.items())[:20]
    )


def test_local_side_is_client(lab_pcap: LabPcap, store: Store) -> None:
    """--local-ip names the client, so every record is outgoing, seen from the client."""
    clients = {lab_pcap.client_ip, lab_pcap.client_ip6}
    bad = [r for r in store.l4 + store.l7
           if not (r["src_ip"] in clients and r["direction"] == "outgoing" and r["conn_side"] == "client"
                   and (r["src_ip"], r["src_port"]) == (r["client_ip"], r["client_port"]))]  # fmt: skip
    assert not bad, bad[:3]


def test_nic_traceid_is_syn_and_synack_seq(truth: Truth, store: Store) -> None:
    want = {c.key: f"{c.syn_seq}_{c.synack_seq}" for c in truth.convs if c.syn_seq is not None and c.synack_seq is not None}
    got: dict[tuple[str, str, int, str, int], set[str]] = defaultdict(set)
    for r in store.l4 + store.l7:
        if _conn_key(r) in want:
            got[_conn_key(r)].add(r["nic_traceid"])
    assert got == {k: {v} for k, v in want.items()}
