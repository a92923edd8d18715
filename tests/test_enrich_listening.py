"""LISTEN sockets (sock_diag), and how they decide the server of a mid-stream connection."""

from __future__ import annotations

import socket

from bpfnetlog.enrich.listening import ANY, listening_here, listening_sockets, server_side


def _listen(family: int, addr: str) -> socket.socket:
    s = socket.socket(family)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if addr.startswith("::ffff:") else 1)
    s.bind((addr, 0))
    s.listen()
    return s


def test_lists_listening_sockets_of_this_namespace_only_in_listen_state() -> None:
    """IPv4 and IPv6, wildcard and specific, v4-mapped shown as IPv4; a connected socket is not listed."""
    socks = [_listen(socket.AF_INET, "0.0.0.0"), _listen(socket.AF_INET, "127.0.0.1"),
             _listen(socket.AF_INET6, "::"), _listen(socket.AF_INET6, "::1"),
             _listen(socket.AF_INET6, "::ffff:127.0.0.1")]  # fmt: skip
    client = socket.create_connection(("127.0.0.1", socks[1].getsockname()[1]))
    try:
        want = {(ANY, socks[0].getsockname()[1]), ("127.0.0.1", socks[1].getsockname()[1]),
                (ANY, socks[2].getsockname()[1]), ("::1", socks[3].getsockname()[1]),
                ("127.0.0.1", socks[4].getsockname()[1])}  # fmt: skip
        found = listening_here()
        assert want <= found
        assert not any(port == client.getsockname()[1] for _, port in found)
    finally:
        client.close()
        for s in socks:
            s.close()


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
