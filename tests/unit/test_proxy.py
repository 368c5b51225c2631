"""The fault proxy forwards bytes, and refuses connections while cut."""

from __future__ import annotations

import socket

from tests.proxy import TcpProxy, tcp_server


def _echo(conn: socket.socket) -> None:
    while data := conn.recv(1024):
        conn.sendall(data)


def _echo_server() -> socket.socket:
    return tcp_server(_echo)


def _roundtrip(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"ping")
        return s.recv(1024)


def _cut_roundtrip(port: int) -> bytes:
    try:
        return _roundtrip(port)
    except OSError:  # reset by the proxy: what a client of a dead server sees
        return b""


def test_forwards_until_cut_and_again_after_restore():
    server = _echo_server()
    proxy = TcpProxy("127.0.0.1", server.getsockname()[1])
    try:
        assert _roundtrip(proxy.port) == b"ping"
        proxy.cut()
        assert _cut_roundtrip(proxy.port) != b"ping"
        proxy.restore()
        assert _roundtrip(proxy.port) == b"ping"
    finally:
        proxy.close()
        server.close()
