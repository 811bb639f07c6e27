"""The HTTP/1.1 server a Docker plugin is: JSON over a unix socket, one handler per path.

dockerd's plugin client (observed with Docker 20.10, see the prototype's logs) sends
``POST /<Method>`` with ``Content-Length`` (0 for ``/Plugin.Activate``) and keeps one
connection alive for everything it asks, so the server loops over requests on a connection
until the client closes it or says ``Connection: close``. Chunked bodies are accepted too.
The reply is ``200`` with a JSON body in Docker's plugin media type; an unknown path is
``404``, which is how a plugin says "not implemented" to libnetwork.

A request that cannot be parsed gets ``400`` and the connection is closed; nothing a client
sends can raise past this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import Any

from dataplane.errors import VxdpError

log = logging.getLogger("vxdp.docker")

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_HEAD = 16 << 10
MAX_BODY = 1 << 20
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large",
           500: "Internal Server Error"}

#: handler(path, request JSON or None) -> (status, reply JSON)
Handler = Callable[[str, Any], Awaitable[tuple[int, Any]]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes] | None:
    """(path, headers, body) of the next request; None when the client closed cleanly."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadRequest(400, "truncated request head") from None
    except asyncio.LimitOverrunError:
        raise BadRequest(400, "request head too long") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, f"not an HTTP/1.x request line: {lines[0][:80]!r}")
    headers: dict[str, str] = {"_version": parts[2]}
    for line in lines[1:]:
        if line:
            key, sep, value = line.partition(":")
            if not sep:
                raise BadRequest(400, f"bad header line {line[:80]!r}")
            headers[key.strip().lower()] = value.strip()
    return parts[1], headers, await _read_body(reader, headers)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    try:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return body
                if len(body) + size > MAX_BODY:
                    raise BadRequest(413, "request body too large")
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        length = int(headers.get("content-length", "0"))
    except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise BadRequest(400, "bad or truncated request body") from None
    if length < 0 or length > MAX_BODY:
        raise BadRequest(413, "request body too large")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise BadRequest(400, "truncated request body") from None


def response(status: int, body: Any) -> bytes:
    out = json.dumps(body, separators=(",", ":")).encode()
    return (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {CONTENT_TYPE}\r\nContent-Length: {len(out)}\r\n\r\n"
            ).encode() + out


def _keep_alive(headers: dict[str, str]) -> bool:
    conn = headers.get("connection", "").lower()
    if headers.get("_version") == "HTTP/1.0":
        return conn == "keep-alive"
    return conn != "close"


class PluginServer:
    """Serves ``handler`` on the unix socket ``path`` until :meth:`close`."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self._inode: tuple[int, int] | None = None

    async def start(self) -> None:
        claim_socket_path(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
            os.fchmod(sock.fileno(), 0o600)      # dockerd runs as root; nobody else needs it
            sock.bind(self.path)
            sock.listen(64)
            sock.setblocking(False)
            st = os.stat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock,
                                                           limit=MAX_HEAD)
        except OSError as exc:
            sock.close()
            raise VxdpError(f"cannot listen on {self.path}: {exc.strerror or exc}") from None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            while True:
                try:
                    req = await read_request(reader)
                except BadRequest as exc:
                    writer.write(response(exc.status, {"Err": f"vxdp: {exc}"}))
                    await writer.drain()
                    return
                if req is None:
                    return
                path, headers, body = req
                try:
                    payload = json.loads(body) if body.strip() else None
                except ValueError:
                    status, reply = 400, {"Err": "vxdp: request body is not JSON"}
                else:
                    status, reply = await self.handler(path, payload)
                writer.write(response(status, reply))
                await writer.drain()
                if not _keep_alive(headers):
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        # Only our own socket: another plugin may have replaced it meanwhile.
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)


def claim_socket_path(path: str) -> None:
    """Refuse a path a live server listens on; remove a stale socket a crash left."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise VxdpError(f"cannot use {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise VxdpError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError:
        pass
    finally:
        probe.close()
    raise VxdpError(f"another plugin is already serving {path}")
