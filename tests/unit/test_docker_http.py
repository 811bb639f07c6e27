"""The plugin HTTP server on a real unix socket (no root): keep-alive, errors, junk."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from typing import Any

import pytest

from dataplane.docker.http import PluginServer, claim_socket_path
from dataplane.errors import VxdpError


async def echo(path: str, req: Any) -> tuple[int, Any]:
    if path == "/404":
        return 404, {"Err": "nope"}
    return 200, {"path": path, "req": req}


def exchange(sock_path: str, raw: bytes, replies: int = 1) -> list[bytes]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock_path)
    s.sendall(raw)
    data = b""
    out: list[bytes] = []
    while len(out) < replies:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            n = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) < n:
                break
            out.append(head + b"\r\n\r\n" + rest[:n])
            data = rest[n:]
    s.close()
    return out


def serve(tmp_path: Any, client: Any) -> Any:
    path = str(tmp_path / "p.sock")

    async def main() -> Any:
        srv = PluginServer(path, echo)
        await srv.start()
        try:
            return await asyncio.to_thread(client, path)
        finally:
            await srv.close()
            assert not os.path.exists(path)
    return asyncio.run(main())


def body(reply: bytes) -> Any:
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])


def test_keep_alive_and_chunked(tmp_path: Any) -> None:
    req = (b"POST /Plugin.Activate HTTP/1.1\r\nHost: \r\nContent-Length: 0\r\n\r\n"
           b"POST /X HTTP/1.1\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
           b"POST /Y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\n{\"b\r\n4\r\n\":2}\r\n0\r\n\r\n")
    out = serve(tmp_path, lambda p: exchange(p, req, 3))
    assert [body(r) for r in out] == [{"path": "/Plugin.Activate", "req": None},
                                      {"path": "/X", "req": {"a": 1}},
                                      {"path": "/Y", "req": {"b": 2}}]
    assert b"application/vnd.docker.plugins.v1.2+json" in out[0]


def test_bad_requests_get_400(tmp_path: Any) -> None:
    for raw, status in ((b"garbage\r\n\r\n", b"400"),
                        (b"POST /X HTTP/1.1\r\nContent-Length: 3\r\n\r\n{x}", b"400"),
                        (b"POST /X HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413"),
                        (b"POST /404 HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"404")):
        (reply,) = serve(tmp_path, lambda p, raw=raw: exchange(p, raw))
        assert reply.split(b" ")[1] == status, reply


def test_socket_path_is_claimed_safely(tmp_path: Any) -> None:
    path = str(tmp_path / "x.sock")
    with open(path, "w") as f:
        f.write("not a socket")
    with pytest.raises(VxdpError, match="not a socket"):
        claim_socket_path(path)
    os.unlink(path)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()                      # a socket file nobody listens on: removed
    claim_socket_path(path)
    assert not os.path.exists(path)
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen(1)
    with pytest.raises(VxdpError, match="already serving"):
        claim_socket_path(path)
    live.close()
