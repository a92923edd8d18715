"""Frame decoder: link + IP + TCP/UDP headers of many frames in one numba call.

Every source hands this module a byte buffer and per-frame arrays (where each
frame starts, how much of it was captured, its link type, ...) and gets back
the columns of a `PacketBatch`. One compiled loop does all frames, because a
Python call per packet cannot reach millions of packets per second.

What is decoded: Ethernet (stacked 802.1Q/802.1ad tags), Linux cooked SLL and
SLL2, raw IP, BSD null/loopback; IPv4 (options; only the first fragment of a
datagram carries the L4 header, later fragments are skipped) and IPv6 with
hop-by-hop, routing, destination options, AH and fragment headers; TCP and UDP.
`payload_len` comes from the IP lengths, not from what was captured, so a
snaplen-cut frame still reports the true segment size; `payload_cap` is what
the buffer really holds at `payload_off`.
"""

from __future__ import annotations

import numpy as np

from bpfnetlog.compiled import entry, kernel
from bpfnetlog.packets import COLUMNS, DIR_UNKNOWN, SYN, Nic, PacketBatch, read_only

# Link types (LINKTYPE_* values as written in pcap/pcapng files).
LT_NULL, LT_ETHERNET, LT_RAW, LT_LOOP = 0, 1, 101, 108
LT_RAW_12, LT_RAW_14 = 12, 14  # DLT_RAW on some BSDs; same meaning as LT_RAW
LT_LINUX_SLL, LT_LINUX_SLL2, LT_IPV4, LT_IPV6 = 113, 276, 228, 229

# Outcome of one frame.
_KEPT, _SKIPPED, _MALFORMED = 0, 1, 2

_MAX_VLAN_TAGS = 8  # more stacked tags than this is not a real frame
_MAX_IP6_EXT = 16  # bound the extension-header walk on hostile input


@kernel(inline=True)
def _be16(buf: np.ndarray, p: int) -> int:
    return (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])


@kernel(inline=True)
def _be32(buf: np.ndarray, p: int) -> int:
    return (
        (np.int64(buf[p]) << 24)
        | (np.int64(buf[p + 1]) << 16)
        | (np.int64(buf[p + 2]) << 8)
        | np.int64(buf[p + 3])
    )


@kernel
def _link_to_l3(buf: np.ndarray, p: int, end: int, lt: int) -> tuple[int, int, int]:
    """(outcome, offset of the IP header, ethertype-ish 4/6) for one frame's link header."""
    etype = -1
    if lt == LT_ETHERNET:
        if end - p < 14:
            return _MALFORMED, 0, 0
        etype = _be16(buf, p + 12)
        p += 14
    elif lt == LT_LINUX_SLL:
        if end - p < 16:
            return _MALFORMED, 0, 0
        etype = _be16(buf, p + 14)
        p += 16
    elif lt == LT_LINUX_SLL2:
        if end - p < 20:
            return _MALFORMED, 0, 0
        etype = _be16(buf, p)
        p += 20
    elif lt == LT_NULL or lt == LT_LOOP:
        if end - p < 4:
            return _MALFORMED, 0, 0
        # LOOP is big-endian; NULL is in the writer's byte order: family fits 16 bits.
        fam = _be32(buf, p)
        if fam > 0xFFFF:
            fam = (
                np.int64(buf[p])
                | (np.int64(buf[p + 1]) << 8)
                | (np.int64(buf[p + 2]) << 16)
                | (np.int64(buf[p + 3]) << 24)
            )
        p += 4
        if fam == 2:
            return _KEPT, p, 4
        if fam == 10 or fam == 24 or fam == 28 or fam == 30:
            return _KEPT, p, 6
        return _SKIPPED, 0, 0
    elif lt == LT_RAW or lt == LT_RAW_12 or lt == LT_RAW_14:
        if end - p < 1:
            return _MALFORMED, 0, 0
        v = np.int64(buf[p] >> 4)
        if v == 4 or v == 6:
            return _KEPT, p, v
        return _MALFORMED, 0, 0
    elif lt == LT_IPV4:
        return _KEPT, p, 4
    elif lt == LT_IPV6:
        return _KEPT, p, 6
    else:
        return _SKIPPED, 0, 0
    # 802.1Q / 802.1ad / old QinQ tags, possibly stacked.
    tags = 0
    while etype == 0x8100 or etype == 0x88A8 or etype == 0x9100:
        tags += 1
        if tags > _MAX_VLAN_TAGS or end - p < 4:
            return _MALFORMED, 0, 0
        etype = _be16(buf, p + 2)
        p += 4
    if etype == 0x0800:
        return _KEPT, p, 4
    if etype == 0x86DD:
        return _KEPT, p, 6
    return _SKIPPED, 0, 0


@kernel
def _ip4(buf: np.ndarray, p: int, end: int, wire_end: int, src: np.ndarray, dst: np.ndarray,
         k: int) -> tuple[int, int, int, int]:
    """(outcome, L4 offset, L4 length from the IP header, protocol); fills src/dst row k."""
    if end - p < 20:
        return _MALFORMED, 0, 0, 0
    if buf[p] >> 4 != 4:
        return _MALFORMED, 0, 0, 0
    hl = (buf[p] & 0x0F) * 4
    if hl < 20 or end - p < hl:
        return _MALFORMED, 0, 0, 0
    tot = _be16(buf, p + 2)
    if tot == 0:  # TSO super-packet captured before segmentation: length unknown
        tot = wire_end - p
    if tot < hl:
        return _MALFORMED, 0, 0, 0
    if _be16(buf, p + 6) & 0x1FFF:  # not the first fragment: no L4 header here
        return _SKIPPED, 0, 0, 0
    proto = np.int64(buf[p + 9])
    if proto != 6 and proto != 17:
        return _SKIPPED, 0, 0, 0
    for j in range(10):
        src[k, j] = 0
        dst[k, j] = 0
    src[k, 10] = 0xFF
    src[k, 11] = 0xFF
    dst[k, 10] = 0xFF
    dst[k, 11] = 0xFF
    for j in range(4):
        src[k, 12 + j] = buf[p + 12 + j]
        dst[k, 12 + j] = buf[p + 16 + j]
    return _KEPT, p + hl, tot - hl, proto


@kernel
def _ip6(buf: np.ndarray, p: int, end: int, wire_end: int, src: np.ndarray, dst: np.ndarray,
         k: int) -> tuple[int, int, int, int]:
    """(outcome, L4 offset, L4 length, protocol) after walking the extension headers."""
    if end - p < 40:
        return _MALFORMED, 0, 0, 0
    if buf[p] >> 4 != 6:
        return _MALFORMED, 0, 0, 0
    plen = _be16(buf, p + 4)
    if plen == 0:  # jumbogram or TSO super-packet: take what the wire carried
        plen = wire_end - p - 40
    nh = np.int64(buf[p + 6])
    q = p + 40
    ip_end = q + plen
    for _ in range(_MAX_IP6_EXT):
        if nh == 6 or nh == 17:
            break
        if nh == 0 or nh == 43 or nh == 60 or nh == 51:
            if end - q < 2:
                return _MALFORMED, 0, 0, 0
            ln = (np.int64(buf[q + 1]) + 2) * 4 if nh == 51 else (np.int64(buf[q + 1]) + 1) * 8
            nh = np.int64(buf[q])
            q += ln
        elif nh == 44:
            if end - q < 8:
                return _MALFORMED, 0, 0, 0
            if _be16(buf, q + 2) >> 3:  # not the first fragment
                return _SKIPPED, 0, 0, 0
            nh = np.int64(buf[q])
            q += 8
        else:  # ICMPv6, no next header, ESP, ...
            return _SKIPPED, 0, 0, 0
    else:
        return _MALFORMED, 0, 0, 0
    if q > ip_end:
        return _MALFORMED, 0, 0, 0
    for j in range(16):
        src[k, j] = buf[p + 8 + j]
        dst[k, j] = buf[p + 24 + j]
    return _KEPT, q, ip_end - q, nh


@kernel
def _syn_wscale(buf: np.ndarray, p: int, hdr_end: int) -> int:
    """Window scale shift from a SYN's options, -1 if absent (capped at 14 as RFC 7323 says)."""
    q = p + 20
    while q < hdr_end:
        kind = buf[q]
        if kind == 0:
            break
        if kind == 1:
            q += 1
            continue
        if q + 1 >= hdr_end:
            break
        ln = np.int64(buf[q + 1])
        if ln < 2 or q + ln > hdr_end:
            break
        if kind == 3 and ln == 3:
            return min(np.int64(buf[q + 2]), 14)
        q += ln
    return -1


@entry
def decode_frames(
    buf: np.ndarray, off: np.ndarray, caplen: np.ndarray, wire_len: np.ndarray,
    linktype: np.ndarray, ts_ns: np.ndarray, frame_no: np.ndarray, nic: np.ndarray,
    direction: np.ndarray, gso_segs: np.ndarray,
    o_ts: np.ndarray, o_frame: np.ndarray, o_nic: np.ndarray, o_wire: np.ndarray,
    o_ipver: np.ndarray, o_proto: np.ndarray, o_sport: np.ndarray, o_dport: np.ndarray,
    o_flags: np.ndarray, o_seq: np.ndarray, o_ack: np.ndarray, o_win: np.ndarray,
    o_wscale: np.ndarray, o_plen: np.ndarray, o_poff: np.ndarray, o_pcap: np.ndarray,
    o_src: np.ndarray, o_dst: np.ndarray, o_dir: np.ndarray, o_gso: np.ndarray,
) -> tuple[int, int, int]:
    """Decode frames into the o_* arrays (compacted); returns (kept, skipped, malformed)."""
    k = 0
    skipped = 0
    malformed = 0
    for i in range(off.shape[0]):
        p = np.int64(off[i])
        end = p + np.int64(caplen[i])
        if p < 0 or end > buf.shape[0]:  # a source bug must not read outside the buffer
            malformed += 1
            continue
        wire_end = p + np.int64(wire_len[i])
        res, l3, ver = _link_to_l3(buf, p, end, np.int64(linktype[i]))
        l4 = l4len = proto = plen = hl = 0
        if res == _KEPT:
            if ver == 4:
                res, l4, l4len, proto = _ip4(buf, l3, end, wire_end, o_src, o_dst, k)
            else:
                res, l4, l4len, proto = _ip6(buf, l3, end, wire_end, o_src, o_dst, k)
        if res == _KEPT:
            if proto == 6:
                if end - l4 < 20:
                    res = np.int64(_MALFORMED)
                else:
                    hl = (buf[l4 + 12] >> 4) * 4
                    if hl < 20 or hl > l4len or end - l4 < hl:
                        res = np.int64(_MALFORMED)
                    else:
                        fl = buf[l4 + 13]
                        o_flags[k] = fl
                        o_seq[k] = _be32(buf, l4 + 4)
                        o_ack[k] = _be32(buf, l4 + 8)
                        o_win[k] = _be16(buf, l4 + 14)
                        o_wscale[k] = _syn_wscale(buf, l4, l4 + hl) if fl & SYN else -1
                        plen = l4len - hl
            else:
                if end - l4 < 8 or l4len < 8:
                    res = np.int64(_MALFORMED)
                else:
                    ulen = _be16(buf, l4 + 4)
                    # The UDP length is exact when sane; 0 means a jumbogram.
                    plen = ulen - 8 if 8 <= ulen <= l4len else l4len - 8
                    hl = 8
                    o_flags[k] = 0
                    o_seq[k] = 0
                    o_ack[k] = 0
                    o_win[k] = 0
                    o_wscale[k] = -1
        if res == _SKIPPED:
            skipped += 1
            continue
        if res == _MALFORMED:
            malformed += 1
            continue
        o_sport[k] = _be16(buf, l4)
        o_dport[k] = _be16(buf, l4 + 2)
        o_proto[k] = proto
        o_ipver[k] = ver
        o_plen[k] = plen
        poff = l4 + hl
        o_poff[k] = poff
        o_pcap[k] = max(0, min(plen, end - poff))
        o_ts[k] = ts_ns[i]
        o_frame[k] = frame_no[i]
        o_nic[k] = nic[i]
        o_wire[k] = wire_len[i]
        o_dir[k] = direction[i]
        o_gso[k] = gso_segs[i]
        k += 1
    return k, skipped, malformed


def decode(
    buf: np.ndarray, off: np.ndarray, caplen: np.ndarray, wire_len: np.ndarray,
    linktype: np.ndarray, ts_ns: np.ndarray, frame_no: np.ndarray, nic: np.ndarray,
    nics: list[Nic], direction: np.ndarray | None = None, gso_segs: np.ndarray | None = None,
) -> tuple[PacketBatch, int, int]:
    """Decode `len(off)` frames of `buf` into a PacketBatch; returns (batch, skipped, malformed).

    The batch's `data` is `buf` itself (no copy): payload offsets are offsets into it.
    Live sources pass per-frame `direction` (DIR_*) and `gso_segs`; files have
    neither (DIR_UNKNOWN, 1 segment).
    """
    n = len(off)
    if direction is None:
        direction = np.full(n, DIR_UNKNOWN, np.uint8)
    if gso_segs is None:
        gso_segs = np.ones(n, np.uint16)
    cols = {name: np.empty(n, dt) for name, dt in COLUMNS.items()}
    src = np.empty((n, 16), np.uint8)
    dst = np.empty((n, 16), np.uint8)
    kept, skipped, malformed = decode_frames(
        read_only(buf), off, caplen, wire_len, linktype.astype(np.int64, copy=False), ts_ns, frame_no, nic,
        direction, gso_segs,
        cols["ts"], cols["frame"], cols["nic"], cols["wire_len"], cols["ip_version"],
        cols["proto"], cols["sport"], cols["dport"], cols["flags"], cols["seq"], cols["ack"],
        cols["win"], cols["wscale"], cols["payload_len"], cols["payload_off"],
        cols["payload_cap"], src, dst, cols["direction"], cols["gso_segs"],
    )
    cols = {name: a[:kept] for name, a in cols.items()}
    batch = PacketBatch(cols=cols, src_ip=src[:kept], dst_ip=dst[:kept], data=buf, nics=nics)
    return batch, skipped, malformed
