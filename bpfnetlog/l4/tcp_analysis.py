"""Per-packet TCP analysis and chunking, compiled with numba.

This is the hot loop of L4: every packet of a batch passes through
`analyze_batch` once, in capture order, with the state of its flow kept in
plain integer arrays (one row per flow slot). The rules follow Wireshark's
`tcp_analyze_sequence_number` (packet-tcp.c) so that our counts agree with
what an engineer sees in Wireshark: retransmission, fast and spurious
retransmission, out of order, duplicate ACK, zero window (probe), keep-alive,
window update, lost segment (previous segment not captured), ACKed unseen
segment; plus RTT samples (Karn: never from a retransmitted segment),
handshake/teardown timestamps, Zeek history letters and chunk numbers.
"""

from __future__ import annotations

import numpy as np

from bpfnetlog.compiled import entry, kernel

# Analysis bits of one packet (the `analysis` column of the packet series).
A_RETRANS = 1
A_FAST_RETRANS = 2
A_SPURIOUS = 4
A_OUT_OF_ORDER = 8
A_DUP_ACK = 16
A_ZERO_WIN = 32
A_LOST_SEG = 64
A_KEEP_ALIVE = 128
A_WIN_UPDATE = 256
A_ZERO_WIN_PROBE = 512
A_ACK_UNSEEN = 1024

ANALYSIS_NAMES = {
    A_RETRANS: "retransmission",
    A_FAST_RETRANS: "fast_retransmission",
    A_SPURIOUS: "spurious_retransmission",
    A_OUT_OF_ORDER: "out_of_order",
    A_DUP_ACK: "dup_ack",
    A_ZERO_WIN: "zero_window",
    A_LOST_SEG: "lost_segment",
    A_KEEP_ALIVE: "keep_alive",
    A_WIN_UPDATE: "window_update",
    A_ZERO_WIN_PROBE: "zero_window_probe",
    A_ACK_UNSEEN: "ack_unseen_segment",
}
# Any of these makes a packet count as a retransmission (tshark sets
# tcp.analysis.retransmission on fast and spurious retransmissions too).
RETRANS_ANY = A_RETRANS | A_FAST_RETRANS | A_SPURIOUS

# Zeek history letters, lower case; upper case is applied for the originator.
HISTORY_LETTERS = "shadfrtwg"
H_SYN, H_SYNACK, H_ACK, H_DATA, H_FIN, H_RST, H_RETRANS, H_ZERO_WIN, H_GAP = range(9)
HISTORY_MAX = 24

# Per-flow state columns (int64 array `fl`, one row per slot).
F_USED = 0
F_PROTO = 1
F_FIRST_TS = 2
F_LAST_TS = 3
F_NPKTS = 4
F_CHUNK = 5
F_CHUNK_PKTS = 6
F_CHUNK_START = 7
F_SYN_SIDE = 8  # side that sent the first SYN without ACK, -1 if none seen
F_SYN_TS = 9
F_SYNACK_TS = 10
F_HS_DONE_TS = 11  # the client's ACK that completes the handshake
F_FIN1_TS = 12
F_FIN_DONE_TS = 13  # the ACK of the second FIN
F_CLOSED = 14  # 0 open, 1 closed by FINs, 2 closed by RST
F_CLOSE_TS = 15
F_RST_SIDE = 16
F_NEXT = 17  # slot of the next connection on the same 5-tuple (port reuse), -1
F_SYN_SEQ = 18  # raw seq of the SYN, -1
F_SYNACK_SEQ = 19  # raw seq of the SYN-ACK, -1
F_HIST_N = 20
F_FIRST_RTT = 21  # iRTT (ns): SYN -> ACK of SYN-ACK; Wireshark's out-of-order threshold
NF = 22

# Per-side state columns (int64 array `sd`, shape (slots, 2, NS)).
S_HAS_SEQ = 0
S_NEXT_SEQ = 1  # unwrapped seq after the highest byte sent (Wireshark's nextseq)
S_NEXT_TS = 2  # time of the packet that set NEXT_SEQ
S_HAS_ACK = 3
S_LAST_ACK = 4  # raw ack number last sent
S_WIN = 5  # scaled window last sent
S_DUP_ACKS = 6
S_LAST_ACK_TS = 7
S_PROBE_END = 8  # RTT probe: unwrapped end seq of a data segment awaiting its ACK
S_PROBE_TS = 9
S_PROBE_ON = 10
S_FIN_END = 11  # unwrapped seq just after the FIN, 0 if no FIN
S_WSCALE = 12  # window scale from the SYN, -1 if none
S_HIST_BITS = 13
S_FIN_ACKED = 14  # the other side acknowledged this side's FIN
S_MAXSEQ_TBA = 15  # Wireshark's maxseqtobeacked: highest contiguous seq expected to be acked
NS = 16

SEQ_BASE = 1 << 33  # unwrapped sequence numbers start here so they never go negative

FLAG_FIN, FLAG_SYN, FLAG_RST, FLAG_ACK = 0x01, 0x02, 0x04, 0x10


def new_state(slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empty state arrays for `slots` flows: (fl, sd, hist)."""
    fl = np.zeros((slots, NF), np.int64)
    sd = np.zeros((slots, 2, NS), np.int64)
    hist = np.zeros((slots, HISTORY_MAX), np.uint8)
    reset_slots(fl, sd, hist, np.arange(slots))
    return fl, sd, hist


def reset_slots(fl: np.ndarray, sd: np.ndarray, hist: np.ndarray, slots: np.ndarray) -> None:
    """Return slots to the unused state (the free list reuses them)."""
    fl[slots] = 0
    fl[slots, F_SYN_SIDE] = -1
    fl[slots, F_RST_SIDE] = -1
    fl[slots, F_NEXT] = -1
    fl[slots, F_SYN_SEQ] = -1
    fl[slots, F_SYNACK_SEQ] = -1
    sd[slots] = 0
    sd[slots, :, S_WSCALE] = -1
    hist[slots] = 0


@kernel(inline=True)
def _unwrap(ref: int, raw: int) -> int:
    d = (raw - ref) & 0xFFFFFFFF
    if d >= 0x80000000:
        d -= 0x100000000
    return ref + d


@kernel(inline=True)
def _history(fl, sd, hist, slot, side, letter):
    bit = 1 << letter
    if sd[slot, side, S_HIST_BITS] & bit:
        return
    sd[slot, side, S_HIST_BITS] |= bit
    n = fl[slot, F_HIST_N]
    if n < HISTORY_MAX:
        hist[slot, n] = letter * 2 + side
        fl[slot, F_HIST_N] = n + 1


@entry
def analyze_batch(
    slot_in, side_in, ts_in, proto_in, flags_in, seq_in, ack_in, win_in, wscale_in, plen_in,
    fl, sd, hist, keys, free_slots, free_top, start, chunk_max_pkts, chunk_max_ns,
    out_slot, out_chunk, out_idx, out_bits, out_rtt,
):  # fmt: skip
    """Analyze packets start..n-1; returns (next packet index, new free_top).

    Returns early (index < n) when a new connection on a reused 5-tuple
    needs a slot and `free_slots` is exhausted: the caller grows the state
    and calls again from that index.
    """
    n = len(slot_in)
    for i in range(start, n):
        slot = slot_in[i]
        if slot < 0:  # a packet the flow table could not place (hash collision)
            out_slot[i] = -1
            out_bits[i] = 0
            continue
        while fl[slot, F_NEXT] >= 0:
            slot = fl[slot, F_NEXT]
        s = side_in[i]
        o = 1 - s
        ts = ts_in[i]
        flags = flags_in[i]
        tcp = proto_in[i] == 6
        syn = tcp and (flags & FLAG_SYN) != 0
        ackf = tcp and (flags & FLAG_ACK) != 0
        fin = tcp and (flags & FLAG_FIN) != 0
        rst = tcp and (flags & FLAG_RST) != 0
        raw = np.int64(seq_in[i])

        # A SYN on a finished connection, or with a new ISN, starts a new connection.
        if syn and not ackf and fl[slot, F_USED] and (
            fl[slot, F_CLOSED] != 0 or (fl[slot, F_SYN_SEQ] >= 0 and fl[slot, F_SYN_SEQ] != raw)
        ):
            if free_top >= len(free_slots):
                return i, free_top
            new = free_slots[free_top]
            free_top += 1
            fl[slot, F_NEXT] = new
            for j in range(keys.shape[1]):
                keys[new, j] = keys[slot, j]
            slot = new

        if not fl[slot, F_USED]:
            fl[slot, F_USED] = 1
            fl[slot, F_PROTO] = proto_in[i]
            fl[slot, F_FIRST_TS] = ts
        fl[slot, F_LAST_TS] = ts

        # chunking: at most chunk_max_pkts packets and chunk_max_ns of time per chunk
        if fl[slot, F_CHUNK_PKTS] >= chunk_max_pkts or (
            fl[slot, F_CHUNK_PKTS] > 0 and ts - fl[slot, F_CHUNK_START] > chunk_max_ns
        ):
            fl[slot, F_CHUNK] += 1
            fl[slot, F_CHUNK_PKTS] = 0
        if fl[slot, F_CHUNK_PKTS] == 0:
            fl[slot, F_CHUNK_START] = ts
        fl[slot, F_CHUNK_PKTS] += 1
        out_slot[i] = slot
        out_chunk[i] = fl[slot, F_CHUNK]
        out_idx[i] = fl[slot, F_NPKTS]
        fl[slot, F_NPKTS] += 1
        out_rtt[i] = 0
        plen = np.int64(plen_in[i])

        if not tcp:
            out_bits[i] = 0
            if plen > 0:
                _history(fl, sd, hist, slot, s, H_DATA)
            continue

        bits = 0
        seglen = plen + (1 if syn else 0) + (1 if fin else 0)
        if syn:
            sd[slot, s, S_WSCALE] = wscale_in[i]
        ws = sd[slot, s, S_WSCALE] if (sd[slot, s, S_WSCALE] >= 0 and sd[slot, o, S_WSCALE] >= 0) else 0
        win = np.int64(win_in[i]) << ws if not syn else np.int64(win_in[i])
        has_seq = sd[slot, s, S_HAS_SEQ] != 0
        useq = _unwrap(sd[slot, s, S_NEXT_SEQ], raw) if has_seq else SEQ_BASE + raw
        nxt = sd[slot, s, S_NEXT_SEQ]
        other_win_known = sd[slot, o, S_HAS_ACK] != 0

        if seglen == 1 and has_seq and useq == nxt and other_win_known and sd[slot, o, S_WIN] == 0:
            bits |= A_ZERO_WIN_PROBE
        if win_in[i] == 0 and not (syn or fin or rst):
            bits |= A_ZERO_WIN
        if has_seq and useq > nxt and not rst:
            bits |= A_LOST_SEG
        if has_seq and seglen <= 1 and not (syn or fin or rst) and useq == nxt - 1:
            bits |= A_KEEP_ALIVE
        if (
            has_seq and seglen == 0 and ackf and not (syn or fin or rst) and sd[slot, s, S_HAS_ACK]
            and win != 0 and useq == nxt and np.int64(ack_in[i]) == sd[slot, s, S_LAST_ACK]
        ):
            if win == sd[slot, s, S_WIN]:
                bits |= A_DUP_ACK
                # -1 (after an "ACKed unseen segment") counts as the first dup ACK, as in Wireshark
                sd[slot, s, S_DUP_ACKS] = 1 if sd[slot, s, S_DUP_ACKS] < 0 else sd[slot, s, S_DUP_ACKS] + 1
            else:
                bits |= A_WIN_UPDATE
        if np.int64(ack_in[i]) != sd[slot, s, S_LAST_ACK]:  # only a new ack number ends a dup ACK run
            sd[slot, s, S_DUP_ACKS] = 0
        if ackf and sd[slot, o, S_MAXSEQ_TBA] and _unwrap(sd[slot, o, S_NEXT_SEQ], np.int64(ack_in[i])) > sd[slot, o, S_MAXSEQ_TBA]:
            if sd[slot, o, S_MAXSEQ_TBA] > sd[slot, o, S_NEXT_SEQ]:
                sd[slot, o, S_MAXSEQ_TBA] = sd[slot, o, S_NEXT_SEQ]
                bits |= A_ACK_UNSEEN
            else:
                if sd[slot, o, S_DUP_ACKS] == 0:
                    bits |= A_ACK_UNSEEN
                sd[slot, o, S_DUP_ACKS] = -1
        if seglen > 0 and has_seq and not (bits & A_KEEP_ALIVE):
            # Wireshark's order: spurious (data the receiver already acked), then fast
            # retransmission, out of order, plain retransmission
            not_advanced = useq < nxt and not (plen > 1 and useq == nxt - 1)  # new data after a ZW probe
            last_ack = sd[slot, o, S_LAST_ACK]
            if plen > 0 and last_ack and useq + plen <= _unwrap(nxt, last_ack):
                bits |= A_SPURIOUS
            elif not not_advanced:
                pass
            elif (
                sd[slot, o, S_DUP_ACKS] >= 2 and last_ack == raw and ts - sd[slot, o, S_LAST_ACK_TS] < 20_000_000
            ):
                bits |= A_FAST_RETRANS
            elif ts - sd[slot, s, S_NEXT_TS] < (fl[slot, F_FIRST_RTT] or 3_000_000) and nxt != useq + seglen:
                bits |= A_OUT_OF_ORDER
            else:
                bits |= A_RETRANS
            if bits & (RETRANS_ANY | A_OUT_OF_ORDER) and sd[slot, s, S_PROBE_ON] and useq < sd[slot, s, S_PROBE_END]:
                sd[slot, s, S_PROBE_ON] = 0  # Karn: no RTT sample across a retransmission

        # sequence bookkeeping
        end = useq + seglen
        if (not has_seq) or (end > nxt and not (bits & A_ZERO_WIN_PROBE)):
            sd[slot, s, S_NEXT_SEQ] = end
            sd[slot, s, S_NEXT_TS] = ts
            sd[slot, s, S_HAS_SEQ] = 1
            if plen > 0 and not sd[slot, s, S_PROBE_ON] and not (bits & RETRANS_ANY):
                sd[slot, s, S_PROBE_ON] = 1
                sd[slot, s, S_PROBE_END] = end
                sd[slot, s, S_PROBE_TS] = ts
        if (useq == sd[slot, s, S_MAXSEQ_TBA] or not sd[slot, s, S_MAXSEQ_TBA]) and not (bits & A_ZERO_WIN_PROBE):
            sd[slot, s, S_MAXSEQ_TBA] = sd[slot, s, S_NEXT_SEQ]
        sd[slot, s, S_LAST_ACK] = np.int64(ack_in[i])
        sd[slot, s, S_LAST_ACK_TS] = ts
        if ackf:
            sd[slot, s, S_HAS_ACK] = 1
            if sd[slot, o, S_HAS_SEQ]:
                uack = _unwrap(sd[slot, o, S_NEXT_SEQ], np.int64(ack_in[i]))
                if sd[slot, o, S_PROBE_ON] and uack >= sd[slot, o, S_PROBE_END]:
                    out_rtt[i] = ts - sd[slot, o, S_PROBE_TS]
                    sd[slot, o, S_PROBE_ON] = 0
        sd[slot, s, S_WIN] = win

        # handshake, teardown and Zeek history
        if syn and not ackf:
            _history(fl, sd, hist, slot, s, H_SYN)
            if fl[slot, F_SYN_SIDE] < 0:
                fl[slot, F_SYN_SIDE] = s
                fl[slot, F_SYN_TS] = ts
                fl[slot, F_SYN_SEQ] = raw
        elif syn:
            _history(fl, sd, hist, slot, s, H_SYNACK)
            if fl[slot, F_SYNACK_SEQ] < 0:
                fl[slot, F_SYNACK_TS] = ts
                fl[slot, F_SYNACK_SEQ] = raw
        elif ackf and plen == 0 and not (fin or rst):
            _history(fl, sd, hist, slot, s, H_ACK)
        if (
            ackf and not syn and fl[slot, F_HS_DONE_TS] == 0 and fl[slot, F_SYNACK_TS] > 0
            and s == fl[slot, F_SYN_SIDE]
        ):
            fl[slot, F_HS_DONE_TS] = ts
            fl[slot, F_FIRST_RTT] = ts - fl[slot, F_SYN_TS]
        if plen > 0:
            _history(fl, sd, hist, slot, s, H_DATA)
        if bits & RETRANS_ANY and plen > 0:
            _history(fl, sd, hist, slot, s, H_RETRANS)
        if bits & A_ZERO_WIN:
            _history(fl, sd, hist, slot, s, H_ZERO_WIN)
        if bits & A_LOST_SEG:
            _history(fl, sd, hist, slot, s, H_GAP)
        if fin:
            _history(fl, sd, hist, slot, s, H_FIN)
            if sd[slot, s, S_FIN_END] == 0:
                sd[slot, s, S_FIN_END] = end
            if fl[slot, F_FIN1_TS] == 0:
                fl[slot, F_FIN1_TS] = ts
        if rst:
            _history(fl, sd, hist, slot, s, H_RST)
            if fl[slot, F_RST_SIDE] < 0:
                fl[slot, F_RST_SIDE] = s
            if fl[slot, F_CLOSED] == 0:
                fl[slot, F_CLOSED] = 2
                fl[slot, F_CLOSE_TS] = ts
        if (
            ackf and sd[slot, o, S_FIN_END] > 0 and not sd[slot, o, S_FIN_ACKED]
            and _unwrap(sd[slot, o, S_NEXT_SEQ], np.int64(ack_in[i])) >= sd[slot, o, S_FIN_END]
        ):
            sd[slot, o, S_FIN_ACKED] = 1
            if sd[slot, s, S_FIN_ACKED] and fl[slot, F_FIN_DONE_TS] == 0:  # both FINs acknowledged
                fl[slot, F_FIN_DONE_TS] = ts
                if fl[slot, F_CLOSED] == 0:
                    fl[slot, F_CLOSED] = 1
                    fl[slot, F_CLOSE_TS] = ts
        out_bits[i] = bits
    return n, free_top
