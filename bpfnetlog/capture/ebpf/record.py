"""numpy mirrors of bpf/netlog.h: the ONE place user space repeats its layouts.

tests/test_ebpf_layout.py checks every offset against the BTF of the built
object, so a change to netlog.h that is not made here fails the tests.
"""

from __future__ import annotations

import numpy as np

MAX_SNAPLEN = 4096
MAX_CLAUSES = 32
STAT_SKIPPED, STAT_FILTERED, STAT_RING_DROP, STAT_QUIET, STAT_SHED, STAT_MAX = range(6)
QUIET_NO_PAYLOAD = 1
QUIET_GEN_USER = 1  # user space's entry of quiet_gen (NETLOG_QUIET_GEN_USER)

REC = np.dtype(  # struct netlog_rec: an IPv6 packet's record; its first REC_HEAD bytes start every record
    [
        ("ts_ns", "<u8"),
        ("ifindex", "<u4"),
        ("netns_id", "<u4"),
        ("wire_len", "<u4"),
        ("payload_len", "<u4"),
        ("seq", "<u4"),
        ("ack", "<u4"),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("win", "<u2"),
        ("gso_segs", "<u2"),
        ("payload_cap", "<u2"),
        ("direction", "u1"),
        ("proto", "u1"),
        ("ip_version", "u1"),
        ("flags", "u1"),
        ("wscale", "i1"),
        ("_pad", "u1"),
        ("saddr", "u1", 16),
        ("daddr", "u1", 16),
    ]
)
# struct netlog_rec4, an IPv4 packet's record: u8 arrays, so no padding. It has no BTF of its own
# to check (no program signature names it); what it shares with REC is NETLOG_REC_HEAD, which
# netlog.bpf.c asserts is offsetof(struct netlog_rec, saddr), as here.
REC_HEAD = REC.fields["saddr"][1]
REC4 = np.dtype([("head", "u1", REC_HEAD), ("saddr", "u1", 4), ("daddr", "u1", 4)])

CONFIG = np.dtype([("snaplen", "<u4"), ("netns_id", "<u4"), ("filtered", "<u4")])

FLOW_KEY = np.dtype(
    [
        ("ifindex", "<u4"),
        ("netns_id", "<u4"),
        ("saddr", "u1", 16),
        ("daddr", "u1", 16),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("proto", "u1"),
        ("direction", "u1"),
        ("_pad", "u1", 2),
    ]
)

FLOW_VAL = np.dtype(
    [
        ("packets", "<u8"),
        ("bytes", "<u8"),
        ("payload_bytes", "<u8"),
        ("segs", "<u8"),
    ]
)

CLAUSE = np.dtype([("pos", "<u8"), ("neg", "<u8")])

FILTER = np.dtype(
    [
        ("enabled", "<u4"),
        ("nclauses", "<u4"),
        ("use_addr", "<u4"),
        ("use_port", "<u4"),
        ("m_src_addr", "<u8"),
        ("m_dst_addr", "<u8"),
        ("m_any_addr", "<u8"),
        ("m_src_port", "<u8"),
        ("m_dst_port", "<u8"),
        ("m_any_port", "<u8"),
        ("m_tcp", "<u8"),
        ("m_udp", "<u8"),
        ("m_ip4", "<u8"),
        ("m_ip6", "<u8"),
        ("clauses", CLAUSE, MAX_CLAUSES),
    ]
)

LPM_KEY = np.dtype([("prefixlen", "<u4"), ("addr", "u1", 16)])

# C struct name -> dtype, for the layout test.
STRUCTS = {
    "netlog_rec": REC,
    "netlog_config": CONFIG,
    "netlog_flow_key": FLOW_KEY,
    "netlog_flow_val": FLOW_VAL,
    "netlog_clause": CLAUSE,
    "netlog_filter": FILTER,
    "netlog_lpm_key": LPM_KEY,
}
