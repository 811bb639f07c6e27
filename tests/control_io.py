"""Raw bytes to a control socket, for the tests that send what the CLI never would."""

from __future__ import annotations

import socket


def exchange(path: str, payload: bytes, timeout: float = 10.0) -> list[bytes]:
    """Send ``payload`` to the unix socket at ``path``; every line the server sends back
    before it closes (a server that closes early is an answer too)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return data.splitlines()
