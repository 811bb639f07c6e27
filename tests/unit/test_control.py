"""dataplane.control: a real ControlServer on a temporary unix socket (asyncio and uvloop)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import pytest

from dataplane import control
from dataplane.control import (
    ControlClient,
    ControlServer,
    Rows,
    StreamEnd,
    too_deep,
    unknown_command,
)
from dataplane.errors import ControlError, InvalidArgument, VxdpError
from tests.control_io import exchange

KNOWN = ("echo", "fail", "boom", "slow", "weird", "rows", "biglist", "rows_fail", "rows_cut")


class ServerThread:
    """A ControlServer running on its own event loop in a background thread."""

    def __init__(self, path: str, handler: control.Handler,
                 streams: Mapping[str, control.StreamFactory] | None = None,
                 loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
                 ) -> None:
        self.loop = loop_factory()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = ControlServer(path, handler, streams)

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ServerThread:
        self.call(self.server.start())
        return self

    def stop(self) -> None:
        try:
            self.call(self.server.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    uvloop = pytest.importorskip("uvloop")
    return uvloop.new_event_loop()  # type: ignore[no-any-return]


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    return asyncio.new_event_loop if request.param == "asyncio" else _uvloop_factory


@pytest.fixture
def sockdir() -> Iterator[str]:
    # Short paths: sun_path is 108 bytes and pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="vxc", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Recorder:
    """Fake handler + stream factories, recording what the server asked for."""

    def __init__(self) -> None:
        self.closed = threading.Event()  # set when the infinite stream's finally ran
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def handle(self, cmd: str, args: dict[str, Any]) -> Any:
        self.calls.append((cmd, args))
        if cmd == "echo":
            return {"cmd": cmd, "args": args}
        if cmd == "fail":
            raise InvalidArgument("no network with VNI 7 here")
        if cmd == "boom":
            raise RuntimeError("kaboom")
        if cmd == "slow":
            await asyncio.sleep(float(args.get("seconds", 0.3)))
            return "done"
        if cmd == "weird":
            return {"obj": object()}
        if cmd in ("rows", "rows_fail", "rows_cut"):
            return Rows(self.slices(cmd, int(args.get("n", 0))))
        if cmd == "biglist":
            return [{"i": i} for i in range(int(args["n"]))]
        raise unknown_command(cmd, (*KNOWN, *self.streams()))

    async def slices(self, cmd: str, n: int) -> AsyncIterator[list[Any]]:
        """n rows in slices of 100 (and empty slices in between, as a dump may give)."""
        if cmd == "rows_fail":
            raise InvalidArgument("dump cursor 3 is not (or no longer) valid")
        try:
            for start in range(0, n, 100):
                yield []
                yield [{"i": i} for i in range(start, min(n, start + 100))]
                if cmd == "rows_cut":
                    raise InvalidArgument("the table went away")
        finally:
            self.closed.set()

    async def counted(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        for i in range(int(args.get("count", 3))):
            yield {"n": i, "line": f"record {i}"}
        yield StreamEnd(dropped=2)

    async def forever(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            i = 0
            while True:
                yield {"n": i}
                i += 1
                await asyncio.sleep(0.01)
        finally:
            self.closed.set()

    async def idle(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            await asyncio.sleep(3600)
            yield {}
        finally:
            self.closed.set()

    async def broken(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        yield {"n": 0}
        raise VxdpError("capture buffer overflow")

    async def plain_end(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        yield {"n": 0}

    def refuse(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        raise InvalidArgument("no port named x")

    def streams(self) -> dict[str, control.StreamFactory]:
        return {"counted": self.counted, "forever": self.forever, "idle": self.idle,
                "broken": self.broken, "plain_end": self.plain_end, "refuse": self.refuse}


@pytest.fixture
def served(sockdir: str, loop_factory: Callable[[], asyncio.AbstractEventLoop],
           ) -> Iterator[tuple[ServerThread, Recorder, str]]:
    rec = Recorder()
    path = os.path.join(sockdir, "run", "v.sock")
    srv = ServerThread(path, rec.handle, rec.streams(), loop_factory).start()
    try:
        yield srv, rec, path
    finally:
        srv.stop()


def raw_exchange(path: str, payload: bytes, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Send raw bytes, read every reply line until the server closes."""
    return [json.loads(line) for line in exchange(path, payload, timeout)]


# ------------------------------------------------------------------------------------------
# request / response
# ------------------------------------------------------------------------------------------


def test_request_response(served: tuple[ServerThread, Recorder, str]) -> None:
    _, rec, path = served
    client = ControlClient(path)
    assert client.request("echo", mac="02:00:00:00:00:01", vni=4097, dst=None) == {
        "cmd": "echo", "args": {"mac": "02:00:00:00:00:01", "vni": 4097}}  # None is dropped
    assert rec.calls == [("echo", {"mac": "02:00:00:00:00:01", "vni": 4097})]


def test_wire_format(served: tuple[ServerThread, Recorder, str]) -> None:
    _, _, path = served
    assert raw_exchange(path, b'{"cmd": "echo", "args": {"a": 1}}\n') == [
        {"ok": True, "result": {"cmd": "echo", "args": {"a": 1}}}]
    # args may be omitted
    assert raw_exchange(path, b'{"cmd": "echo"}\n') == [
        {"ok": True, "result": {"cmd": "echo", "args": {}}}]


def test_handler_error_is_one_line(served: tuple[ServerThread, Recorder, str]) -> None:
    _, _, path = served
    with pytest.raises(ControlError) as info:
        ControlClient(path).request("fail")
    assert str(info.value) == "no network with VNI 7 here"
    assert raw_exchange(path, b'{"cmd": "fail"}\n') == [
        {"ok": False, "error": "no network with VNI 7 here"}]


def test_internal_error_does_not_kill_server(served: tuple[ServerThread, Recorder, str],
                                             caplog: pytest.LogCaptureFixture) -> None:
    _, _, path = served
    client = ControlClient(path)
    with pytest.raises(ControlError, match=r"^internal error: RuntimeError: kaboom$"):
        client.request("boom")
    with pytest.raises(ControlError, match=r"^internal error: TypeError: "):
        client.request("weird")  # result that is not JSON
    assert client.request("echo")["cmd"] == "echo"


def test_unknown_command_lists_known(served: tuple[ServerThread, Recorder, str]) -> None:
    _, _, path = served
    with pytest.raises(ControlError) as info:
        ControlClient(path).request("fdb.shwo")
    assert str(info.value).startswith("unknown command 'fdb.shwo' (known: ")
    assert "counted" in str(info.value) and "echo" in str(info.value)


@pytest.mark.parametrize(("payload", "words"), [
    (b"this is not json\n", "malformed request: not JSON"),
    (b"[1, 2]\n", "malformed request: expected"),
    (b'{"args": {}}\n', "malformed request: expected"),
    (b'{"cmd": 5}\n', "malformed request: expected"),
    (b'{"cmd": "echo", "args": [1]}\n', '"args" must be an object'),
    (b"\xff\xfe\n", "malformed request"),
])
def test_malformed_requests(served: tuple[ServerThread, Recorder, str], payload: bytes,
                            words: str) -> None:
    _, rec, path = served
    (reply,) = raw_exchange(path, payload)
    assert reply["ok"] is False and words in reply["error"]
    assert rec.calls == []
    assert ControlClient(path).request("echo")["cmd"] == "echo"  # still serving


def test_oversized_request(served: tuple[ServerThread, Recorder, str]) -> None:
    _, rec, path = served
    with pytest.raises(ControlError, match=r"request too large \(limit 1 MiB\)"):
        ControlClient(path).request("echo", blob="x" * (2 << 20))
    (reply,) = raw_exchange(path, b"y" * ((1 << 20) + 10) + b"\n")
    assert reply == {"ok": False, "error": "request too large (limit 1 MiB)"}
    assert rec.calls == []
    # just under the limit is fine
    assert ControlClient(path).request("echo", blob="z" * 1000)["args"]["blob"] == "z" * 1000


def test_silent_client_times_out_without_blocking_others(
        served: tuple[ServerThread, Recorder, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, path = served
    monkeypatch.setattr(control, "REQUEST_TIMEOUT", 2.0)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.settimeout(5)
        idle.connect(path)  # ...and never sends anything
        started = time.monotonic()
        assert ControlClient(path).request("echo")["cmd"] == "echo"
        assert time.monotonic() - started < 1.5  # not queued behind the idle client
        reply = json.loads(idle.makefile("rb").readline())
        assert reply["ok"] is False and "timed out waiting for the request" in reply["error"]


def test_slow_handler_does_not_block_others(served: tuple[ServerThread, Recorder, str]) -> None:
    _, _, path = served
    results: list[Any] = []
    t = threading.Thread(target=lambda: results.append(
        ControlClient(path).request("slow", seconds=2.0)))
    t.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert ControlClient(path).request("echo")["cmd"] == "echo"
    assert time.monotonic() - started < 1.5
    t.join(5)
    assert results == ["done"]


def test_client_timeout(served: tuple[ServerThread, Recorder, str]) -> None:
    _, _, path = served
    with pytest.raises(ControlError, match="did not answer within 0.2 s"):
        ControlClient(path, timeout=0.2).request("slow", seconds=1.0)


def test_request_on_stream_command(served: tuple[ServerThread, Recorder, str]) -> None:
    _, _, path = served
    with pytest.raises(ControlError, match="streaming command"):
        ControlClient(path).request("counted", count=1)
    with pytest.raises(ControlError, match="not a streaming command"):
        list(ControlClient(path).stream("echo"))


# ------------------------------------------------------------------------------------------
# streams
# ------------------------------------------------------------------------------------------


def test_stream_with_count_and_end_stats(served: tuple[ServerThread, Recorder, str]) -> None:
    _, _, path = served
    client = ControlClient(path)
    records = list(client.stream("counted", count=4))
    assert records == [{"n": i, "line": f"record {i}"} for i in range(4)]
    assert client.end == {"end": True, "dropped": 2}


def test_stream_wire_format(served: tuple[ServerThread, Recorder, str]) -> None:
    _, _, path = served
    assert raw_exchange(path, b'{"cmd": "counted", "args": {"count": 1}}\n') == [
        {"ok": True, "stream": True}, {"record": {"n": 0, "line": "record 0"}},
        {"end": True, "dropped": 2}]
    assert raw_exchange(path, b'{"cmd": "plain_end"}\n') == [
        {"ok": True, "stream": True}, {"record": {"n": 0}}, {"end": True}]


def test_stream_early_client_close(served: tuple[ServerThread, Recorder, str]) -> None:
    _, rec, path = served
    stream = ControlClient(path).stream("forever")
    got = [next(stream), next(stream)]
    assert got == [{"n": 0}, {"n": 1}]
    stream.close()  # closes the socket
    assert rec.closed.wait(5), "the producer was not closed after the client left"
    assert ControlClient(path).request("echo")["cmd"] == "echo"


def test_stream_client_leaves_while_nothing_happens(
        served: tuple[ServerThread, Recorder, str]) -> None:
    """A `trace` with no traffic must still notice the client has gone (unsubscribe)."""
    _, rec, path = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b'{"cmd": "idle"}\n')
        assert json.loads(s.makefile("rb").readline()) == {"ok": True, "stream": True}
    assert rec.closed.wait(5)


def test_stream_error_mid_way(served: tuple[ServerThread, Recorder, str]) -> None:
    _, _, path = served
    client = ControlClient(path)
    got = []
    with pytest.raises(ControlError, match="^capture buffer overflow$"):
        for record in client.stream("broken"):
            got.append(record)
    assert got == [{"n": 0}]
    assert client.end == {"end": True, "error": "capture buffer overflow"}


def test_stream_refused_at_start(served: tuple[ServerThread, Recorder, str]) -> None:
    _, _, path = served
    with pytest.raises(ControlError, match="^no port named x$"):
        list(ControlClient(path).stream("refuse"))


def test_close_ends_open_streams(sockdir: str) -> None:
    rec = Recorder()
    path = os.path.join(sockdir, "v.sock")
    srv = ServerThread(path, rec.handle, rec.streams()).start()
    stream = ControlClient(path).stream("idle")
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(list(stream)))
    t.start()
    time.sleep(0.2)
    srv.stop()
    t.join(5)
    assert result == [[]]  # the iterator simply ended
    assert rec.closed.is_set()
    assert not os.path.exists(path)


# ------------------------------------------------------------------------------------------
# socket file life cycle
# ------------------------------------------------------------------------------------------


def test_socket_permissions_and_cleanup(sockdir: str) -> None:
    rec = Recorder()
    path = os.path.join(sockdir, "a", "b", "v.sock")
    srv = ServerThread(path, rec.handle).start()
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) & 0o755 == 0o755
    finally:
        srv.stop()
    assert not os.path.exists(path)


def test_stale_socket_is_replaced(sockdir: str) -> None:
    path = os.path.join(sockdir, "v.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening: what a crashed vxdp leaves behind
    stale.close()
    assert os.path.exists(path)
    with pytest.raises(ControlError, match="no vxdp is listening"):
        ControlClient(path).request("echo")
    rec = Recorder()
    srv = ServerThread(path, rec.handle).start()
    try:
        assert ControlClient(path).request("echo")["cmd"] == "echo"
    finally:
        srv.stop()


def test_second_server_is_refused(served: tuple[ServerThread, Recorder, str]) -> None:
    srv, rec, path = served

    async def second() -> None:
        await ControlServer(path, rec.handle).start()

    with pytest.raises(VxdpError) as info:
        srv.call(second())
    assert str(info.value) == f"another vxdp is already serving {path}"
    # the first one is untouched
    assert os.path.exists(path)
    assert ControlClient(path).request("echo")["cmd"] == "echo"


def test_non_socket_file_is_not_replaced(sockdir: str) -> None:
    path = os.path.join(sockdir, "v.sock")
    with open(path, "w") as fh:
        fh.write("precious")
    rec = Recorder()
    srv = ServerThread(path, rec.handle)
    try:
        with pytest.raises(VxdpError, match="exists and is not a socket"):
            srv.call(srv.server.start())
    finally:
        srv.stop()
    assert open(path).read() == "precious"


def test_close_leaves_a_successors_socket_alone(sockdir: str) -> None:
    path = os.path.join(sockdir, "v.sock")
    rec = Recorder()
    first = ServerThread(path, rec.handle).start()
    os.unlink(path)  # someone removed ours and started another server on the same path
    second = ServerThread(path, rec.handle).start()
    try:
        first.stop()
        assert os.path.exists(path)
        assert ControlClient(path).request("echo")["cmd"] == "echo"
    finally:
        second.stop()


def test_async_context_manager(sockdir: str) -> None:
    path = os.path.join(sockdir, "v.sock")
    rec = Recorder()

    async def main() -> Any:
        async with ControlServer(path, rec.handle):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, lambda: ControlClient(path).request("echo"))

    assert asyncio.run(main())["cmd"] == "echo"
    assert not os.path.exists(path)


# ------------------------------------------------------------------------------------------
# client errors
# ------------------------------------------------------------------------------------------


def test_missing_socket_message(sockdir: str) -> None:
    path = os.path.join(sockdir, "nope.sock")
    with pytest.raises(ControlError) as info:
        ControlClient(path).request("echo")
    assert str(info.value) == (f"no vxdp is listening on {path} (is 'vxdp run' running? "
                               "use -s PATH or VXDP_SOCKET)")
    with pytest.raises(ControlError, match="no vxdp is listening"):
        list(ControlClient(path).stream("trace"))


def test_path_too_long(sockdir: str) -> None:
    with pytest.raises(ControlError, match="cannot connect to"):
        ControlClient(os.path.join(sockdir, "x" * 200)).request("echo")


def test_permission_denied(sockdir: str) -> None:
    """The socket is 0600: another user gets a clear message (run as nobody when we are root)."""
    path = os.path.join(sockdir, "v.sock")
    os.chmod(sockdir, 0o755)  # so that only the socket's own mode is in the way
    srv = ServerThread(path, Recorder().handle).start()
    try:
        if os.geteuid() != 0:
            os.chmod(path, 0)
            with pytest.raises(ControlError, match="permission denied"):
                ControlClient(path).request("echo")
            return
        # Root ignores file modes: check from a forked child that dropped to nobody (the
        # modules are already imported, so the child needs no access to the source tree).
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            message = "?"
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                ControlClient(path).request("echo")
                message = "no error"
            except BaseException as exc:  # noqa: BLE001
                message = str(exc)
            finally:
                os.write(wfd, message.encode())
                os._exit(0)
        os.close(wfd)
        with os.fdopen(rfd, "rb") as reader:
            message = reader.read().decode()
        os.waitpid(pid, 0)
        assert message.startswith(f"permission denied on {path}"), message
    finally:
        srv.stop()


def test_json_default_handles_project_types() -> None:
    from dataclasses import dataclass
    from ipaddress import IPv4Address, IPv4Interface

    @dataclass
    class Row:
        ip: IPv4Address

    line = control.encode({"a": IPv4Address("1.2.3.4"), "b": IPv4Interface("10.0.0.1/24"),
                           "c": (1, 2), "d": frozenset({3}), "e": Row(IPv4Address("5.6.7.8"))})
    assert json.loads(line) == {"a": "1.2.3.4", "b": "10.0.0.1/24", "c": [1, 2], "d": [3],
                                "e": {"ip": "5.6.7.8"}}
    assert line.endswith(b"\n") and line.count(b"\n") == 1


# ------------------------------------------------------------------------------------------
# long list results, written a slice at a time
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 99, 100, 2500])
def test_rows_arrive_as_one_list(served: tuple[ServerThread, Recorder, str], n: int) -> None:
    _, rec, path = served
    assert ControlClient(path).request("rows", n=n) == [{"i": i} for i in range(n)]
    assert rec.closed.wait(5)   # the producer was closed after its last slice
    (reply,) = raw_exchange(path, b'{"cmd": "rows", "args": {"n": 3}}\n')
    assert reply == {"ok": True, "result": [{"i": 0}, {"i": 1}, {"i": 2}]}


def test_a_long_plain_list_is_sent_in_slices_too(served: tuple[ServerThread, Recorder, str],
                                                 ) -> None:
    _, _, path = served
    assert ControlClient(path).request("biglist", n=3000) == [{"i": i} for i in range(3000)]


def test_rows_error_before_the_first_slice_is_a_plain_error(
        served: tuple[ServerThread, Recorder, str]) -> None:
    _, _, path = served
    with pytest.raises(ControlError, match=r"^dump cursor 3 is not \(or no longer\) valid$"):
        ControlClient(path).request("rows_fail")


def test_rows_cut_short_is_reported_by_the_client(served: tuple[ServerThread, Recorder, str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    _, _, path = served
    with pytest.raises(ControlError, match="closed the connection in the middle of its reply"):
        ControlClient(path).request("rows_cut", n=500)
    assert "the table went away" in caplog.text and "Traceback" not in caplog.text
    assert ControlClient(path).request("echo")["cmd"] == "echo"


# ------------------------------------------------------------------------------------------
# request envelope: nesting depth, unknown keys
# ------------------------------------------------------------------------------------------


def test_deeply_nested_json_gets_an_error_reply(served: tuple[ServerThread, Recorder, str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    """100k levels made the C JSON scanner raise RecursionError, which dropped the
    connection with a traceback in the log; now it is one error reply."""
    _, rec, path = served
    for depth in (100_000, 500, 9):
        payload = b'{"cmd": "echo", "args": {"x": ' + b"[" * depth + b"]" * depth + b"}}\n"
        (reply,) = raw_exchange(path, payload)
        assert reply == {"ok": False, "error": "malformed request: JSON nested deeper than 8 "
                                               "levels"}, depth
    assert rec.calls == [] and "Traceback" not in caplog.text
    assert ControlClient(path).request("echo", x=[[1]])["args"] == {"x": [[1]]}


def test_too_deep() -> None:
    assert not too_deep({"cmd": "x", "args": {"a": [1, {"b": 2}]}})
    assert too_deep([[[[[[[[[0]]]]]]]]])        # 9 levels
    assert not too_deep([[[[[[[[0]]]]]]]])      # 8
    deep: Any = []
    for _ in range(100_000):                     # iterative: no RecursionError
        deep = [deep]
    assert too_deep(deep)


def test_unknown_envelope_key(served: tuple[ServerThread, Recorder, str]) -> None:
    _, rec, path = served
    (reply,) = raw_exchange(path, b'{"cmd": "echo", "args": {}, "argz": 1}\n')
    assert reply["ok"] is False and 'unknown key "argz"' in reply["error"]
    assert rec.calls == []


# ------------------------------------------------------------------------------------------
# a full listen backlog
# ------------------------------------------------------------------------------------------


def test_client_retries_while_the_backlog_is_full(sockdir: str) -> None:
    """connect() on a unix socket whose backlog is full fails with EAGAIN at once: the
    client retries briefly instead of reporting it."""
    path = os.path.join(sockdir, "full.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    fillers = []
    try:
        while True:             # fill the backlog
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(path)
            except BlockingIOError:
                s.close()
                break
            fillers.append(s)
        assert fillers

        def serve() -> None:
            time.sleep(0.3)     # the client meets a full backlog for a while
            for s in fillers:   # (accepted below: they read as closed at once)
                s.close()
            while True:
                conn, _ = listener.accept()
                conn.settimeout(5)
                line = conn.makefile("rb").readline()
                if line:
                    conn.sendall(b'{"ok": true, "result": "late"}\n')
                conn.close()
                if line:
                    return

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        started = time.monotonic()
        assert ControlClient(path).request("echo") == "late"
        assert time.monotonic() - started >= 0.25
        t.join(5)
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_client_gives_up_on_a_backlog_that_stays_full(sockdir: str) -> None:
    path = os.path.join(sockdir, "stuck.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    fillers = []
    try:
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(path)
            except BlockingIOError:
                s.close()
                break
            fillers.append(s)
        with pytest.raises(ControlError, match="not accepting connections .*backlog stayed "
                                               "full for 0.5 s"):
            ControlClient(path, timeout=0.5).request("echo")
    finally:
        for s in fillers:
            s.close()
        listener.close()
