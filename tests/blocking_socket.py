"""Whole Diameter messages read from a blocking socket, for thread-driven tests and benches."""

from __future__ import annotations

import socket


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def recv_message(sock: socket.socket) -> bytes:
    """One message: the 20-byte header, then the rest of its Message Length (RFC 6733 §3)."""
    head = recv_exactly(sock, 20)
    return head + recv_exactly(sock, int.from_bytes(head[1:4], "big") - 20)
