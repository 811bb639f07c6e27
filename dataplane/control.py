"""Control socket: JSON lines over a unix stream socket (server on asyncio/uvloop, blocking client).

Protocol (one connection per request, so a stuck or dead client can only ever hold its own
connection):

    client → ``{"cmd": "fdb.show", "args": {...}}\\n``
    server → ``{"ok": true, "result": ...}\\n`` or ``{"ok": false, "error": "one line"}\\n``, close

A list result may be large (``fdb show`` of a million entries): a handler returns it as
:class:`Rows`, slices of the list made one at a time, and the server encodes and writes each
slice as it comes, giving the event loop a turn in between. The client still reads one line,
``{"ok": true, "result": [...]}``; only the server never holds the whole list, nor the loop
for the time it takes to encode it. A long plain list is sent the same way.

Streaming commands (``trace``, ``capture``, ``events``) answer ``{"ok": true, "stream": true}\\n``,
then ``{"record": {...}}\\n`` lines, then ``{"end": true, ...stats}\\n`` (``"error"`` in the end
line when the stream failed). The stream stops when the producer ends it or the client closes
its side, whichever comes first, so an abandoned ``vxdp trace`` does not keep a subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import ipaddress
import json
import logging
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping
from typing import Any

from dataplane.errors import ControlError, VxdpError

log = logging.getLogger("vxdp.control")

MAX_REQUEST = 1 << 20  # 1 MiB: the largest request is a batch of table changes, far smaller
MAX_DEPTH = 8          # JSON nesting of a request: {"args": {"requests": [{"args": {}}]}} is 5
ENCODE_SLICE = 256     # list items encoded per write of a long result (~0.3 ms of json.dumps)
REQUEST_TIMEOUT = 5.0  # seconds a client has to send its request line
REPLY_TIMEOUT = 5.0  # seconds a (non-stream) reply may take to drain to the client
CLIENT_TIMEOUT = 10.0  # seconds the blocking client waits for connect and the reply
BACKLOG_RETRY = 5.0    # seconds the client keeps retrying a connect refused by a full backlog
PROBE_TIMEOUT = 1.0  # seconds to decide whether an existing socket has a live server

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]
StreamFactory = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]


class StreamEnd(dict):  # type: ignore[type-arg]
    """Yield one of these from a stream to end it with statistics: ``{"end": true, **self}``."""


class Rows:
    """A list result made a slice at a time: a handler returns ``Rows(slices)`` where
    ``slices`` is an async iterator of lists, and the client gets one list, their
    concatenation. The first slice is awaited before anything is sent, so an error there is
    an ordinary error reply; an error later can only cut the reply short (logged), so a
    producer should fail, if at all, before its first slice."""

    def __init__(self, slices: AsyncIterator[list[Any]]) -> None:
        self.slices = slices

    async def aclose(self) -> None:
        aclose = getattr(self.slices, "aclose", None)
        if aclose is not None:
            await aclose()


def unknown_command(cmd: str, known: Iterable[str]) -> VxdpError:
    """The error a handler should raise for a command it does not know (lists the known ones)."""
    return VxdpError(f"unknown command {cmd!r} (known: {', '.join(sorted(known))})")


def _json_default(obj: Any) -> Any:
    """Let handlers return the project's typed values (addresses, dataclasses...) as they are."""
    if isinstance(obj, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network,
                        ipaddress.IPv6Network, ipaddress.IPv4Interface,
                        ipaddress.IPv6Interface)):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def encode(message: Any) -> bytes:
    """One protocol line. ensure_ascii keeps every line plain ASCII, whatever names contain."""
    return json.dumps(message, default=_json_default, separators=(",", ":")).encode() + b"\n"


def encode_items(items: list[Any]) -> bytes:
    """The JSON of ``items`` without its brackets: a piece of a list sent in slices."""
    return json.dumps(items, default=_json_default, separators=(",", ":")).encode()[1:-1]


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "error"


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Is ``value`` (parsed JSON) nested more than ``limit`` arrays/objects deep? Iterative:
    the check itself must not recurse."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _parse_request(line: bytes) -> tuple[str, dict[str, Any]] | str:
    """A request line → (cmd, args), or the one-line error to answer."""
    try:
        request = json.loads(line)
    except RecursionError:
        # The C scanner stops at the interpreter's recursion limit: deeper than anything a
        # request needs, so refused like any over-deep request.
        return f"malformed request: JSON nested deeper than {MAX_DEPTH} levels"
    except (ValueError, UnicodeDecodeError) as exc:
        return f"malformed request: not JSON ({exc})"
    # Counting brackets is C-fast; the walk runs only when there are enough of them.
    if (line.count(b"[") + line.count(b"{") > MAX_DEPTH
            and isinstance(request, (dict, list)) and too_deep(request)):
        return f"malformed request: JSON nested deeper than {MAX_DEPTH} levels"
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        return 'malformed request: expected {"cmd": "NAME", "args": {...}}'
    extra = sorted(k for k in request if k not in ("cmd", "args"))
    if extra:
        return (f'malformed request: unknown key {json.dumps(extra[0])[:40]} '
                '(expected {"cmd": "NAME", "args": {...}})')
    args = request.get("args")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return 'malformed request: "args" must be an object'
    return request["cmd"], args


class ControlServer:
    """Serves ``handler(cmd, args)`` and ``streams[cmd](args)`` on a unix socket at ``path``."""

    def __init__(self, path: str, handler: Handler,
                 streams: Mapping[str, StreamFactory] | None = None) -> None:
        self.path = path
        self._handler = handler
        self._streams: dict[str, StreamFactory] = dict(streams or {})
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self._inode: tuple[int, int] | None = None

    @property
    def stream_commands(self) -> tuple[str, ...]:
        return tuple(self._streams)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("ControlServer already started")
        self._claim_path()
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise VxdpError(f"cannot create {parent}: {exc.strerror or exc}") from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Linux gives the inode bind() creates the socket inode's mode, so setting 0600 here
            # closes the window in which the socket would be reachable with umask permissions.
            os.fchmod(sock.fileno(), 0o600)
            sock.bind(self.path)
            os.chmod(self.path, 0o600)  # and again for kernels/filesystems that ignore the above
            sock.listen(64)
            sock.setblocking(False)
            st = os.stat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            self._server = await asyncio.start_unix_server(
                self._on_client, sock=sock, limit=MAX_REQUEST + 1)
        except OSError as exc:
            sock.close()
            raise VxdpError(f"cannot listen on {self.path}: {exc.strerror or exc}") from None
        log.debug("control socket listening on %s", self.path)

    def _claim_path(self) -> None:
        """Refuse to steal a live server's socket; remove a stale one left by a crash."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise VxdpError(f"cannot use {self.path}: {exc.strerror or exc}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise VxdpError(f"{self.path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(PROBE_TIMEOUT)
        try:
            probe.connect(self.path)
        except ConnectionRefusedError:
            pass  # nobody listening: stale
        except TimeoutError:
            # A full backlog means someone is there, just busy.
            raise VxdpError(f"another vxdp is already serving {self.path}") from None
        except OSError as exc:
            raise VxdpError(f"cannot check {self.path}: {exc.strerror or exc}") from None
        else:
            raise VxdpError(f"another vxdp is already serving {self.path}")
        finally:
            probe.close()
        log.info("removing stale control socket %s", self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def close(self) -> None:
        """Stop listening, end open connections (streams included) and remove the socket."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        me = asyncio.current_task()
        conns = [t for t in self._conns if t is not me]
        for task in conns:
            task.cancel()
        if conns:
            await asyncio.gather(*conns, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._unlink()

    def _unlink(self) -> None:
        # Only remove the file we bound: a successor may already have replaced it.
        if self._inode is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        except OSError:
            pass
        self._inode = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connections --------------------------------------------------------------------------

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # close() cancels open connections (streams). This task is the top of its own
            # stack: ending normally keeps Python 3.11's StreamReaderProtocol from logging
            # the cancellation as an error ("Exception in callback ...").
            pass
        except (ConnectionError, asyncio.TimeoutError):
            pass  # the client went away or stopped reading: its problem, not the server's
        except Exception:  # noqa: BLE001 - one bad connection must never take the server down
            log.exception("control connection failed")
        finally:
            if task is not None:
                self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _send(self, writer: asyncio.StreamWriter, message: Any,
                    timeout: float | None = REPLY_TIMEOUT) -> None:
        writer.write(encode(message))
        if timeout is None:
            await writer.drain()  # streams: back-pressure, the producer sees a slow reader
        else:
            await asyncio.wait_for(writer.drain(), timeout)

    async def _error(self, writer: asyncio.StreamWriter, message: str) -> None:
        await self._send(writer, {"ok": False, "error": _one_line(message)})

    async def _refuse(self, writer: asyncio.StreamWriter, exc: Exception, what: str) -> None:
        """Answer a command (or the start of a stream) that raised: a VxdpError is the user's
        one-line error; anything else is a bug, logged with its traceback and answered as an
        internal error, and never takes the server down."""
        if isinstance(exc, VxdpError):
            await self._error(writer, str(exc))
            return
        log.error("%s", what, exc_info=exc)
        await self._error(writer, f"internal error: {type(exc).__name__}: {exc}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
        except asyncio.TimeoutError:
            await self._error(writer, f"timed out waiting for the request ({REQUEST_TIMEOUT:g} s)")
            return
        except ValueError:  # StreamReader limit overrun: a line longer than MAX_REQUEST
            await self._error(writer, f"request too large (limit {MAX_REQUEST // (1 << 20)} MiB)")
            return
        if not line.strip():
            return  # connect-and-close (e.g. another server probing for liveness)
        parsed = _parse_request(line)
        if isinstance(parsed, str):
            await self._error(writer, parsed)
            return
        cmd, args = parsed
        if cmd in self._streams:
            await self._serve_stream(cmd, args, reader, writer)
            return
        try:
            result = await self._handler(cmd, args)
        except Exception as exc:  # noqa: BLE001 - answered, see _refuse
            await self._refuse(writer, exc, f"control command {cmd!r} failed")
            return
        if isinstance(result, list) and len(result) > ENCODE_SLICE:
            result = Rows(_slices_of(result))
        if isinstance(result, Rows):
            await self._send_rows(cmd, result, writer)
            return
        try:
            data = encode({"ok": True, "result": result})
        except (TypeError, ValueError) as exc:
            log.error("control command %r returned a non-JSON result: %s", cmd, exc)
            await self._error(writer, f"internal error: {type(exc).__name__}: {exc}")
            return
        writer.write(data)
        await asyncio.wait_for(writer.drain(), REPLY_TIMEOUT)

    async def _send_rows(self, cmd: str, rows: Rows, writer: asyncio.StreamWriter) -> None:
        """``{"ok":true,"result":[`` + the slices, ENCODE_SLICE items per write with a turn of
        the loop after each + ``]}``: one reply line, never one long call."""
        slices = rows.slices.__aiter__()
        try:
            try:
                first: list[Any] | None = await slices.__anext__()
            except StopAsyncIteration:
                first = None
            except Exception as exc:  # noqa: BLE001 - answered, see _refuse
                await self._refuse(writer, exc, f"control command {cmd!r} failed")
                return
            writer.write(b'{"ok":true,"result":[')
            sep = b""
            batch = first
            while batch is not None:
                for i in range(0, len(batch), ENCODE_SLICE):
                    piece = encode_items(batch[i:i + ENCODE_SLICE])
                    if piece:
                        writer.write(sep + piece)
                        sep = b","
                    await asyncio.wait_for(writer.drain(), REPLY_TIMEOUT)
                    await asyncio.sleep(0)
                try:
                    batch = await slices.__anext__()
                except StopAsyncIteration:
                    batch = None
            writer.write(b"]}\n")
            await asyncio.wait_for(writer.drain(), REPLY_TIMEOUT)
        except (VxdpError, TypeError, ValueError) as exc:
            # Half a reply is out: nothing to do but cut it (the client says so).
            log.error("control command %r failed in the middle of its reply: %s", cmd, exc)
        finally:
            with contextlib.suppress(Exception):
                await rows.aclose()

    async def _serve_stream(self, cmd: str, args: dict[str, Any], reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        try:
            records = self._streams[cmd](args)
        except Exception as exc:  # noqa: BLE001 - answered, see _refuse
            await self._refuse(writer, exc, f"control stream {cmd!r} failed to start")
            return
        pump: asyncio.Task[None] | None = None
        watch: asyncio.Task[None] | None = None
        try:
            await self._send(writer, {"ok": True, "stream": True})
            pump = asyncio.ensure_future(self._pump(cmd, records, writer))
            watch = asyncio.ensure_future(self._wait_eof(reader))
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                if task is not None and not task.done():
                    task.cancel()
            for task in (pump, watch):
                if task is not None:
                    with contextlib.suppress(BaseException):
                        await task
            # Run the producer's cleanup (unsubscribe) even if it never got to start.
            aclose = getattr(records, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    @staticmethod
    async def _wait_eof(reader: asyncio.StreamReader) -> None:
        """Returns when the client closes its side: the stream has nobody left to feed."""
        while await reader.read(4096):
            pass

    async def _pump(self, cmd: str, records: AsyncIterator[dict[str, Any]],
                    writer: asyncio.StreamWriter) -> None:
        try:
            async for record in records:
                if isinstance(record, StreamEnd):
                    await self._send(writer, {**record, "end": True}, timeout=None)
                    return
                await self._send(writer, {"record": record}, timeout=None)
        except ConnectionError:
            return
        except VxdpError as exc:
            await self._send(writer, {"end": True, "error": _one_line(str(exc))}, timeout=None)
            return
        except Exception as exc:  # noqa: BLE001
            log.exception("control stream %r failed", cmd)
            await self._send(writer, {"end": True, "error": _one_line(
                f"internal error: {type(exc).__name__}: {exc}")}, timeout=None)
            return
        await self._send(writer, {"end": True}, timeout=None)


async def _slices_of(items: list[Any]) -> AsyncIterator[list[Any]]:
    yield items


class ControlClient:
    """Blocking client for the CLI (plain ``socket``: no event loop needed for one request)."""

    def __init__(self, path: str, timeout: float = CLIENT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self.end: dict[str, Any] | None = None  # the last stream's {"end": true, ...} line

    def _connect(self) -> socket.socket:
        """A connected socket. A full listen backlog (a burst of clients: connect() on a unix
        socket then fails with EAGAIN at once instead of waiting) is retried for up to
        BACKLOG_RETRY seconds (within the client's timeout), backing off from 1 ms."""
        deadline = time.monotonic() + min(BACKLOG_RETRY, self.timeout)
        pause = 0.001
        while True:
            try:
                return self._connect_once()
            except BlockingIOError:
                if time.monotonic() + pause > deadline:
                    raise ControlError(f"vxdp on {self.path} is not accepting connections "
                                       f"(its backlog stayed full for "
                                       f"{min(BACKLOG_RETRY, self.timeout):g} s)") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)

    def _connect_once(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except BlockingIOError:
            sock.close()
            raise
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise ControlError(f"no vxdp is listening on {self.path} (is 'vxdp run' running? "
                               "use -s PATH or VXDP_SOCKET)") from None
        except PermissionError:
            sock.close()
            raise ControlError(f"permission denied on {self.path} (the control socket belongs "
                               "to the user running vxdp: try sudo)") from None
        except TimeoutError:
            sock.close()
            raise ControlError(f"timed out connecting to {self.path}") from None
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot connect to {self.path}: {exc.strerror or exc}") from None
        return sock

    def _send(self, sock: socket.socket, cmd: str, args: dict[str, Any]) -> None:
        # Absent and None mean the same thing to every command; keep requests minimal.
        payload = {"cmd": cmd, "args": {k: v for k, v in args.items() if v is not None}}
        try:
            sock.sendall(encode(payload))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may have answered early (e.g. request too large): read it
        except TimeoutError:
            raise ControlError(f"timed out sending to vxdp on {self.path}") from None

    def _read(self, reader: Any) -> dict[str, Any] | None:
        try:
            line = reader.readline()
        except TimeoutError:
            raise ControlError(f"vxdp on {self.path} did not answer within "
                               f"{self.timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"connection to {self.path} failed: "
                               f"{exc.strerror or exc}") from None
        if not line:
            return None
        if not line.endswith(b"\n"):
            raise ControlError(f"vxdp on {self.path} closed the connection in the middle of "
                               "its reply")
        try:
            message = json.loads(line)
        except ValueError:
            raise ControlError(f"garbled reply from vxdp on {self.path}") from None
        if not isinstance(message, dict):
            raise ControlError(f"garbled reply from vxdp on {self.path}")
        return message

    def request(self, cmd: str, **args: Any) -> Any:
        """Send one command and return its result; server-side errors raise ControlError."""
        sock = self._connect()
        try:
            self._send(sock, cmd, args)
            with sock.makefile("rb") as reader:
                reply = self._read(reader)
        finally:
            sock.close()
        if reply is None:
            raise ControlError(f"vxdp on {self.path} closed the connection without answering")
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error") or "request failed"))
        if reply.get("stream"):
            raise ControlError(f"{cmd!r} is a streaming command")
        return reply.get("result")

    def stream(self, cmd: str, **args: Any) -> Generator[dict[str, Any], None, None]:
        """Yield the records of streaming command ``cmd`` until the server ends the stream or
        closes; the final ``end`` line is kept in ``self.end``. Closing the iterator closes the
        connection, which ends the stream on the server side."""
        self.end = None
        sock = self._connect()
        try:
            self._send(sock, cmd, args)
            with sock.makefile("rb") as reader:
                header = self._read(reader)
                if header is None:
                    raise ControlError(f"vxdp on {self.path} closed the connection without "
                                       "answering")
                if not header.get("ok"):
                    raise ControlError(str(header.get("error") or "request failed"))
                if not header.get("stream"):
                    raise ControlError(f"{cmd!r} is not a streaming command")
                sock.settimeout(None)  # records arrive when packets do: wait as long as needed
                while True:
                    message = self._read(reader)
                    if message is None:
                        return
                    if "record" in message:
                        yield message["record"]
                    elif message.get("end"):
                        self.end = message
                        if message.get("error"):
                            raise ControlError(str(message["error"]))
                        return
        finally:
            sock.close()
