"""Zeek's `history` and `conn_state` for a connection, from the kernel's event codes.

Engineers who know Zeek read `ShADadFf` and `SF` at a glance, so we give
them the same vocabulary: history letters in order of first occurrence,
upper case for the originator (the client), lower case for the responder.
"""

from __future__ import annotations

from bpfnetlog.l4.tcp_analysis import HISTORY_LETTERS

_S, _H, _A, _D, _F, _R = (HISTORY_LETTERS.index(c) for c in "shadfr")


def history(codes: list[int], client_side: int) -> str:
    """Letters of the history codes (letter * 2 + side); side == client_side is upper case."""
    out = []
    for code in codes:
        letter = HISTORY_LETTERS[code >> 1]
        out.append(letter.upper() if (code & 1) == (client_side if client_side >= 0 else 0) else letter)
    return "".join(out)


def conn_state(codes: list[int], client_side: int, proto: str) -> str:
    """Zeek conn_state (S0, S1, SF, REJ, S2, S3, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR, OTH)."""
    orig = client_side if client_side >= 0 else 0
    seen_o = {code >> 1 for code in codes if (code & 1) == orig}
    seen_r = {code >> 1 for code in codes if (code & 1) != orig}
    if proto == "udp":
        if seen_o and seen_r:
            return "SF"
        return "S0" if seen_o else "SHR"
    syn, synack = _S in seen_o, _H in seen_r
    fin_o, fin_r = _F in seen_o, _F in seen_r
    rst_o, rst_r = _R in seen_o, _R in seen_r
    established = syn and synack and (_A in seen_o or _D in seen_o or fin_o)
    if not syn and not synack:
        return "OTH"
    if rst_r and syn and not synack:
        return "REJ"
    if rst_o:
        if established or synack and syn:
            return "RSTO"
        if syn and not synack:
            return "RSTOS0"
    if rst_r:
        if synack and not syn:
            return "RSTRH"
        return "RSTR"
    if syn and not synack:
        return "SH" if fin_o else "S0"
    if synack and not syn:
        return "SHR" if fin_r else "OTH"
    if fin_o and fin_r:
        return "SF"
    if fin_o:
        return "S2"
    if fin_r:
        return "S3"
    return "S1"
