"""LISTEN sockets from /proc/net/tcp{,6}, and how they decide the server of a mid-stream connection."""

from __future__ import annotations

import socket

from bpfnetlog.enrich.listening import ANY, listening_sockets, parse_proc_net_tcp, server_side

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 0 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 0 0
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 0 0
   3: 020A0A0A:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 0 0
"""
TCP6 = """  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 0A 0
   1: 000080FE00000000FF005450000000FE:2329 00000000000000000000000000000000:0000 0A 0
   2: 0000000000000000FFFF00000100007F:0BB8 00000000000000000000000000000000:0000 0A 0
"""


def test_parse_ipv4_listen_only() -> None:
    assert parse_proc_net_tcp(TCP, False) == {(ANY, 80), ("127.0.0.1", 8080), ("10.10.10.2", 443)}


def test_parse_ipv6_words_and_mapped() -> None:
    assert parse_proc_net_tcp(TCP6, True) == {(ANY, 53), ("fe80::5054:ff:fe00:0", 9001), ("127.0.0.1", 3000)}


def test_server_side() -> None:
    socks = {"42": frozenset({(ANY, 80), ("10.0.0.2", 5432)})}
    assert server_side(socks, "42", ("10.0.0.1", "10.0.0.2"), (51000, 80)) == 1
    assert server_side(socks, "42", ("10.0.0.2", "10.0.0.9"), (5432, 40000)) == 0
    assert server_side(socks, "42", ("10.0.0.1", "10.0.0.3"), (51000, 5432)) == -1  # 5432 only on .2
    assert server_side(socks, "43", ("10.0.0.1", "10.0.0.2"), (51000, 80)) == -1  # another namespace


def test_finds_a_real_listening_socket() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        port = s.getsockname()[1]
        found = listening_sockets()
        assert any(("127.0.0.1", port) in socks for socks in found.values())
    finally:
        s.close()
