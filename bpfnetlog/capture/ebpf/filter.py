"""pcap-filter subset -> the kernel's filter maps (bpf/netlog.h `netlog_filter`).

Accepted: `host`, `net` (CIDR, `mask`, or pcap's short `net 10.1`), `port`,
`portrange`, each with optional `src`/`dst`/`src or dst`/`src and dst`;
protocols `tcp`, `udp`, `ip`, `ip6` (alone or as qualifiers: `tcp port 80`);
`and`/`&&`, `or`/`||`, `not`/`!`, parentheses; a bare value repeats the
previous qualifiers (`port 80 or 443`). Everything else is REJECTED with
`FilterError`: the kernel must not silently capture more or less than asked.

Compilation: every distinct primitive is an atom (one bit, at most 64); the
expression becomes a disjunction of at most 32 conjunctive clauses (pos/neg
bit masks). The BPF program computes a packet's atom bits with one LPM-trie
lookup per address and one array lookup per port, then tests the clauses.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field

import numpy as np

from bpfnetlog.capture.ebpf.record import FILTER, MAX_CLAUSES

MAX_ATOMS = 64
SUPPORTED = (
    "supported: host/net/port/portrange with src/dst, tcp/udp/ip/ip6, and/or/not, parentheses; "
    "use --backend afpacket for the full pcap-filter language"
)


class FilterError(ValueError):
    """The expression is outside the subset the kernel filter implements."""


@dataclass(frozen=True)
class Atom:
    kind: str  # "addr", "port" or "proto"
    dir: str = "any"  # "src", "dst" or "any"
    net: ipaddress.IPv6Network | None = None  # IPv4 as ::ffff:0:0/96 mapped
    lo: int = 0
    hi: int = 0
    proto: str = ""


_TOKEN = re.compile(r"\s*(\(|\)|&&|\|\||!|[^\s()!&|]+)")
_PROTOS = ("tcp", "udp", "ip", "ip6")
_TYPES = ("host", "net", "port", "portrange")


def _tokens(expr: str) -> list[str]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise FilterError(f"cannot parse filter at {expr[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _mapped(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> ipaddress.IPv6Network:
    if net.version == 6:
        return net
    base = int(ipaddress.IPv6Address("::ffff:0:0")) | int(net.network_address)
    return ipaddress.IPv6Network((base, 96 + net.prefixlen))


class _Parser:
    """Recursive descent over pcap-filter's grammar; returns nested tuples."""

    def __init__(self, tokens: list[str]):
        self.t, self.i = tokens, 0
        self.last: tuple[str, str, str] | None = None  # (proto, dir, type) for bare values

    def peek(self) -> str | None:
        return self.t[self.i].lower() if self.i < len(self.t) else None

    def take(self) -> str:
        if self.i >= len(self.t):
            raise FilterError("filter ends too early")
        self.i += 1
        return self.t[self.i - 1]

    def parse(self) -> tuple:
        node = self.expr()
        if self.peek() is not None:
            raise FilterError(f"unexpected {self.t[self.i]!r} in filter")
        return node

    def expr(self) -> tuple:
        """pcap: `and` and `or` have equal precedence and associate left to right."""
        node = self.factor()
        while self.peek() in ("and", "&&", "or", "||"):
            op = "and" if self.take().lower() in ("and", "&&") else "or"
            node = (op, [node, self.factor()])
        return node

    def factor(self) -> tuple:
        tok = self.peek()
        if tok in ("not", "!"):
            self.take()
            return ("not", self.factor())
        if tok == "(":
            self.take()
            node = self.expr()
            if self.peek() != ")":
                raise FilterError("missing ')' in filter")
            self.take()
            return node
        if tok is None:
            raise FilterError("filter ends too early")
        return self.primitive()

    def primitive(self) -> tuple:
        proto = dirq = typ = ""
        if self.peek() in _PROTOS:
            proto = self.take().lower()
        if self.peek() in ("src", "dst"):
            dirq = self.take().lower()
            if self.peek() in ("or", "and") and self.i + 1 < len(self.t) and self.t[self.i + 1].lower() in (
                "src",
                "dst",
            ):
                dirq = "any" if self.take().lower() == "or" else "both"
                self.take()
        if self.peek() in _TYPES:
            typ = self.take().lower()
        if not (proto or dirq or typ):
            tok = self.peek()
            if self.last is None or tok in ("and", "or", "&&", "||", ")") or not _looks_like_value(tok):
                raise FilterError(f"unsupported filter primitive {self.t[self.i]!r} ({SUPPORTED})")
            proto, dirq, typ = self.last
        elif proto and not (dirq or typ):
            return ("atom", Atom("proto", proto=proto))
        if not typ:
            typ = "host"
        self.last = (proto, dirq, typ)
        node = self.value(typ, dirq or "any")
        return ("and", [("atom", Atom("proto", proto=proto)), node]) if proto else node

    def value(self, typ: str, dirq: str) -> tuple:
        raw = self.take()
        if typ == "net" and self.peek() == "mask":
            self.take()
            raw = f"{raw}/{self.take()}"
        if typ in ("host", "net"):
            nets = _host(raw) if typ == "host" else [_net(raw)]
            atoms = [("addr", n) for n in nets]
        else:
            lo, hi = _portrange(raw) if typ == "portrange" else (_port(raw),) * 2
            atoms = [("port", (lo, hi))]
        alts = []
        for kind, v in atoms:
            mk = (lambda d: Atom("addr", d, net=v)) if kind == "addr" else (lambda d: Atom("port", d, lo=v[0], hi=v[1]))
            if dirq == "both":
                alts.append(("and", [("atom", mk("src")), ("atom", mk("dst"))]))
            else:
                alts.append(("atom", mk(dirq)))
        return alts[0] if len(alts) == 1 else ("or", alts)


def _looks_like_value(tok: str | None) -> bool:
    return tok is not None and bool(re.match(r"^[\w.:/-]+$", tok)) and tok not in _PROTOS + _TYPES


def _host(raw: str) -> list[ipaddress.IPv6Network]:
    try:
        return [_mapped(ipaddress.ip_network(raw))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(raw, None, proto=socket.IPPROTO_TCP)
    except OSError as e:
        raise FilterError(f"unknown host {raw!r}: {e}") from None
    return sorted({_mapped(ipaddress.ip_network(i[4][0])) for i in infos})


def _net(raw: str) -> ipaddress.IPv6Network:
    if re.fullmatch(r"\d+(\.\d+){0,2}", raw):  # pcap's `net 10.1` == 10.1.0.0/16
        parts = raw.split(".")
        raw = ".".join(parts + ["0"] * (4 - len(parts))) + f"/{8 * len(parts)}"
    try:
        return _mapped(ipaddress.ip_network(raw))
    except ValueError as e:
        raise FilterError(f"bad network {raw!r}: {e}") from None


def _port(raw: str) -> int:
    if raw.isdigit() and int(raw) < 65536:
        return int(raw)
    try:
        return socket.getservbyname(raw)
    except OSError:
        raise FilterError(f"bad port {raw!r}") from None


def _portrange(raw: str) -> tuple[int, int]:
    lo, sep, hi = raw.partition("-")
    if not sep:
        raise FilterError(f"bad portrange {raw!r}: expected LOW-HIGH")
    a, b = _port(lo), _port(hi)
    return min(a, b), max(a, b)


Clause = tuple[frozenset[Atom], frozenset[Atom]]


def _dnf(node: tuple, neg: bool = False) -> list[Clause]:
    """Clauses (pos atoms, neg atoms) whose disjunction equals `node` (negated if neg)."""
    op = node[0]
    if op == "atom":
        a = frozenset([node[1]])
        return [(frozenset(), a)] if neg else [(a, frozenset())]
    if op == "not":
        return _dnf(node[1], not neg)
    parts = [_dnf(p, neg) for p in node[1]]
    if (op == "or") != neg:  # a disjunction: concatenate
        return [c for p in parts for c in p]
    out: list[Clause] = [(frozenset(), frozenset())]  # a conjunction: distribute
    for p in parts:
        out = [(a[0] | b[0], a[1] | b[1]) for a in out for b in p]
        if len(out) > 4 * MAX_CLAUSES:
            raise FilterError(f"filter too complex for the kernel (more than {MAX_CLAUSES} clauses); {SUPPORTED}")
    return out


@dataclass
class CompiledFilter:
    """Contents of the filter maps: the `filter` struct, LPM entries, port bits."""

    header: np.ndarray  # one FILTER record
    lpm: list[tuple[int, bytes, int]] = field(default_factory=list)  # (prefixlen, 16-byte addr, bits)
    ports: dict[int, int] = field(default_factory=dict)  # port -> bits

    @property
    def enabled(self) -> bool:
        return bool(self.header[0]["enabled"])


def compile_filter(expr: str | None) -> CompiledFilter:
    """Compile `expr`; None/blank captures everything. Raises FilterError outside the subset."""
    header = np.zeros(1, FILTER)
    if not expr or not expr.strip():
        return CompiledFilter(header)
    clauses = _dnf(_Parser(_tokens(expr)).parse())
    clauses = list(dict.fromkeys(c for c in clauses if not (c[0] & c[1])))  # drop contradictions
    if len(clauses) > MAX_CLAUSES:
        raise FilterError(f"filter too complex for the kernel ({len(clauses)} clauses, max {MAX_CLAUSES}); {SUPPORTED}")
    atoms = sorted({a for c in clauses for a in c[0] | c[1]}, key=repr)
    if len(atoms) > MAX_ATOMS:
        raise FilterError(f"filter has {len(atoms)} primitives, the kernel filter holds {MAX_ATOMS}")
    bit = {a: 1 << i for i, a in enumerate(atoms)}
    h = header[0]
    h["enabled"], h["nclauses"] = 1, len(clauses)
    for i, (pos, neg) in enumerate(clauses):
        h["clauses"][i]["pos"] = sum(bit[a] for a in pos)
        h["clauses"][i]["neg"] = sum(bit[a] for a in neg)
    out = CompiledFilter(header)
    for a, b in bit.items():
        if a.kind == "proto":
            field_ = {"tcp": "m_tcp", "udp": "m_udp", "ip": "m_ip4", "ip6": "m_ip6"}[a.proto]
            h[field_] |= b
        else:
            h[f"m_{a.dir}_{a.kind}"] |= b
    addr_atoms = [a for a in atoms if a.kind == "addr"]
    for net in sorted({a.net for a in addr_atoms}, key=str):
        bits = sum(bit[a] for a in addr_atoms if net.subnet_of(a.net))  # inherit enclosing nets
        out.lpm.append((net.prefixlen, net.network_address.packed, bits))
    for a in atoms:
        if a.kind == "port":
            for p in range(a.lo, a.hi + 1):
                out.ports[p] = out.ports.get(p, 0) | bit[a]
    h["use_addr"], h["use_port"] = int(bool(out.lpm)), int(bool(out.ports))
    return out
