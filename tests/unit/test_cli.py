"""The ``vxdp`` command against a real ControlServer (background thread, asyncio loop)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from dataplane import cli, fmt
from dataplane.cli import main
from dataplane.control import ControlClient, ControlServer, StreamEnd, unknown_command
from dataplane.errors import ConfigError, ControlError, EntryExists

FDB = [
    {"mac": "02:42:c0:a8:37:04", "vni": 4097, "network": "mynet", "state": "permanent",
     "ifname": "c1"},
    {"mac": "02:42:c0:a8:37:03", "vni": 4097, "network": "mynet", "state": "permanent",
     "dst": "198.18.0.2"},
    {"mac": "00:00:00:00:00:00", "vni": 4097, "network": "mynet", "state": "permanent",
     "dst": "198.18.0.2"},
    {"mac": "02:42:c0:a8:37:09", "vni": 4097, "network": "mynet", "state": "learned",
     "dst": "198.18.0.3", "age": 4.2},
    {"mac": "02:42:c0:a8:37:05", "vni": 4097, "network": "mynet", "state": "learned",
     "ifname": "c2"},
    {"mac": "02:42:c0:a8:37:07", "vni": 4097, "network": "mynet", "state": "static",
     "dst": "198.18.0.4"},
    {"mac": "02:42:c0:a8:37:08", "vni": 4097, "network": "mynet", "state": "permanent",
     "dst": "2001:db8:18::2", "port": 8472, "remote_vni": 5000},
]
FDB_TEXT = """\
02:42:c0:a8:37:04 dev c1 vni 4097 master mynet permanent
02:42:c0:a8:37:03 dev mynet dst 198.18.0.2 vni 4097 self permanent
00:00:00:00:00:00 dev mynet dst 198.18.0.2 vni 4097 self permanent
02:42:c0:a8:37:09 dev mynet dst 198.18.0.3 vni 4097 self
02:42:c0:a8:37:05 dev c2 vni 4097 master mynet
02:42:c0:a8:37:07 dev mynet dst 198.18.0.4 vni 4097 self static
02:42:c0:a8:37:08 dev mynet dst 2001:db8:18::2 port 8472 remote_vni 5000 vni 4097 self permanent
"""
NEIGH = [
    {"ip": "192.168.55.3", "lladdr": "02:42:c0:a8:37:03", "vni": 4097, "network": "mynet",
     "state": "permanent"},
    {"ip": "192.168.55.4", "lladdr": "02:42:c0:a8:37:04", "vni": 4097, "network": "mynet",
     "state": "permanent"},
]
NEIGH_TEXT = """\
192.168.55.3 dev mynet lladdr 02:42:c0:a8:37:03 PERMANENT
192.168.55.4 dev mynet lladdr 02:42:c0:a8:37:04 PERMANENT
"""
STATS = {
    "vtep": {"name": "manager", "local": "198.18.0.1", "port": 4789},
    "ports": {"c1": {"network": "mynet", "vni": 4097, "rx_packets": 3, "rx_bytes": 294,
                     "tx_packets": 12, "tx_bytes": 1176}},
    "underlay": {"rx_packets": 5, "rx_bytes": 700, "tx_packets": 6, "tx_bytes": 800},
    "drops": {"not_allowed": 0, "bad_flags": 2, "unknown_vni": 1},
    "counters": {"proxy_replies": 4, "l2miss": 0, "l3miss": 1, "learned": 0},
}
STATS_TEXT = """\
vtep manager 198.18.0.1:4789

PORT        NETWORK   VNI  RX_PACKETS  RX_BYTES  TX_PACKETS  TX_BYTES
c1          mynet    4097           3       294          12      1176
(underlay)  -           -           5       700           6       800

drops:
  not_allowed  0
  bad_flags    2
  unknown_vni  1
  total        3

counters:
  proxy_replies  4
  l2miss         0
  l3miss         1
  learned        0"""


def pcapng_block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


SHB = pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
IDB = pcapng_block(1, struct.pack("<HHI", 1, 0, 0))
EPB = pcapng_block(6, struct.pack("<IIIII", 0, 0, 0, 4, 4) + b"abcd")


class FakeVtep:
    """Handler + streams with canned answers; records every request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.stats: Any = STATS

    async def handle(self, cmd: str, args: dict[str, Any]) -> Any:
        self.calls.append((cmd, args))
        if cmd == "fdb.show":
            return FDB
        if cmd == "neigh.show":
            return NEIGH
        if cmd == "stats":
            return self.stats
        if cmd == "explain":
            return {"steps": [f"frame from {args['from']} to {args['to']}",
                              "neighbour entry found", "encapsulate to 198.18.0.2"]}
        if cmd == "fdb.add" and args.get("mac") == "02:42:c0:a8:37:04":
            raise EntryExists("02:42:c0:a8:37:04 is already in the FDB of VNI 4097")
        if cmd == "fdb.flush":
            return {"flushed": 0}
        if cmd in ("fdb.add", "fdb.append", "fdb.replace", "fdb.del", "neigh.add", "neigh.del",
                   "endpoint.del"):
            return {"ok": True}
        if cmd == "endpoint.add":
            return {"name": args["name"], "network": args["network"], "vni": 4097, "port": 3}
        if cmd == "endpoint.show":
            return [{"name": "c1", "network": "mynet", "vni": 4097, "mac": "02:42:c0:a8:37:04",
                     "address": "192.168.55.4/24", "netns": "c1", "ifname": "eth0"}]
        if cmd == "garbage":
            return [1, 2]
        raise unknown_command(cmd, ["fdb.show", "neigh.show", "stats"])

    async def trace(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("trace", args))
        for i in range(args.get("count") or 3):
            if i == 1:
                yield {"time": 1.5, "port": "c1", "action": "flood"}  # no "line"
            else:
                yield {"line": f"c1 -> mynet: packet {i}", "n": i}
        yield StreamEnd()

    async def events(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("events", args))
        yield {"kind": "l3miss", "ip": "192.168.55.9", "line": "l3miss 192.168.55.9 dev mynet"}
        yield {"kind": "learned", "mac": "02:00:00:00:00:01", "line": "learned 02:00:00:00:00:01"}

    async def capture(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("capture", args))
        yield {"pcapng": base64.b64encode(SHB + IDB).decode()}
        yield {"pcapng": base64.b64encode(EPB).decode(), "port": "c1"}
        yield {"pcapng": base64.b64encode(EPB + EPB).decode(), "port": "c1"}
        yield StreamEnd(packets=3)

    def streams(self) -> dict[str, Any]:
        return {"trace": self.trace, "events": self.events, "capture": self.capture}


class ServerThread:
    def __init__(self, path: str, vtep: FakeVtep) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = ControlServer(path, vtep.handle, vtep.streams())
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def sockdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="vxl", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def vtep(sockdir: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeVtep]:
    """A fake VTEP reachable through $VXDP_SOCKET."""
    fake = FakeVtep()
    path = os.path.join(sockdir, "v.sock")
    srv = ServerThread(path, fake)
    monkeypatch.setenv("VXDP_SOCKET", path)
    try:
        yield fake
    finally:
        srv.stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


# ------------------------------------------------------------------------------------------
# show commands
# ------------------------------------------------------------------------------------------


def test_fdb_show_text(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "fdb", "show") == (0, FDB_TEXT, "")
    assert vtep.calls == [("fdb.show", {})]


def test_fdb_show_json(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "fdb", "show", "--json")
    assert rc == 0 and err == ""
    assert json.loads(out) == FDB


def test_neigh_show(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "neigh", "show") == (0, NEIGH_TEXT, "")
    rc, out, _ = run(capsys, "neigh", "show", "--json")
    assert rc == 0 and json.loads(out) == NEIGH


def test_stats_text_and_json(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "stats") == (0, STATS_TEXT + "\n", "")
    rc, out, _ = run(capsys, "stats", "--json")
    assert rc == 0 and json.loads(out) == STATS


def test_stats_tolerates_missing_sections(vtep: FakeVtep,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    vtep.stats = {"drops": {"bad_flags": 0}, "offloads": {"gso": True, "segments": 3}}
    rc, out, _ = run(capsys, "stats")
    assert rc == 0
    assert out == "drops:\n  bad_flags  0\n  total      0\n\noffloads:\n  gso       on\n" \
                  "  segments   3\n"
    vtep.stats = {}
    assert run(capsys, "stats") == (0, "\n", "")
    # extra integer counters become extra columns; other extra keys are ignored
    vtep.stats = {"ports": {"c1": {"network": "n", "vni": 5, "rx_packets": 1, "tx_errors": 7,
                                   "note": "x"}},
                  "underlay": {"rx_packets": 2}}
    rc, out, _ = run(capsys, "stats")
    assert out.splitlines() == [
        "PORT        NETWORK  VNI  RX_PACKETS  RX_BYTES  TX_PACKETS  TX_BYTES  TX_ERRORS",
        "c1          n          5           1         -           -         -          7",
        "(underlay)  -          -           2         -           -         -          -"]


def test_endpoint_show(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "endpoint", "show")
    assert rc == 0
    assert out == ("c1 network mynet vni 4097 mac 02:42:c0:a8:37:04 address 192.168.55.4/24 "
                   "netns c1 ifname eth0\n")


# ------------------------------------------------------------------------------------------
# fdb / neigh changes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["add", "append", "replace"])
def test_fdb_change(vtep: FakeVtep, capsys: pytest.CaptureFixture[str], action: str) -> None:
    assert run(capsys, "fdb", action, "02:42:C0:A8:37:03", "dst", "198.18.0.2", "vni",
               "4097") == (0, "", "")
    assert vtep.calls == [(f"fdb.{action}", {"mac": "02:42:c0:a8:37:03", "dst": "198.18.0.2",
                                            "vni": 4097})]


def test_fdb_change_without_vni_and_any_order(vtep: FakeVtep,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "fdb", "append", "00:00:00:00:00:00", "dst", "198.18.0.3")[0] == 0
    assert run(capsys, "fdb", "add", "02:00:00:00:00:01", "vni", "7", "dst", "198.18.0.3")[0] == 0
    assert vtep.calls == [
        ("fdb.append", {"mac": "00:00:00:00:00:00", "dst": "198.18.0.3"}),
        ("fdb.add", {"mac": "02:00:00:00:00:01", "vni": 7, "dst": "198.18.0.3"})]


def test_fdb_del(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "fdb", "del", "02:42:c0:a8:37:03")[0] == 0
    assert run(capsys, "fdb", "del", "02:42:c0:a8:37:03", "dst", "198.18.0.2", "vni", "4097")[0] \
        == 0
    assert vtep.calls == [
        ("fdb.del", {"mac": "02:42:c0:a8:37:03"}),
        ("fdb.del", {"mac": "02:42:c0:a8:37:03", "dst": "198.18.0.2", "vni": 4097})]


def test_fdb_remote_descriptor_network_name_and_state(vtep: FakeVtep,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """DESIGN §4: ``MAC dst IP [port P] [remote_vni N] [vni N | dev NET]
    [permanent|static|dynamic]``, in any order after the MAC."""
    assert run(capsys, "fdb", "add", "02:42:c0:a8:37:03", "static", "dst", "2001:DB8:18::2",
               "remote_vni", "5000", "port", "8472", "dev", "mynet") == (0, "", "")
    assert run(capsys, "fdb", "replace", "02:42:c0:a8:37:03", "dst", "198.18.0.2",
               "dynamic")[0] == 0
    assert run(capsys, "fdb", "del", "02:42:c0:a8:37:03", "dst", "2001:db8:18::2", "port",
               "8472", "remote_vni", "5000", "vni", "4097")[0] == 0
    assert vtep.calls == [
        ("fdb.add", {"mac": "02:42:c0:a8:37:03", "state": "static", "dst": "2001:db8:18::2",
                     "remote_vni": 5000, "port": 8472, "dev": "mynet"}),
        ("fdb.replace", {"mac": "02:42:c0:a8:37:03", "dst": "198.18.0.2",
                         "state": "dynamic"}),
        ("fdb.del", {"mac": "02:42:c0:a8:37:03", "dst": "2001:db8:18::2", "port": 8472,
                     "remote_vni": 5000, "vni": 4097})]


def test_fdb_flush(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "fdb", "flush")[0] == 0
    assert run(capsys, "fdb", "flush", "dev", "mynet", "dynamic")[0] == 0
    assert run(capsys, "fdb", "flush", "dynamic", "vni", "4097")[0] == 0
    assert vtep.calls == [("fdb.flush", {}), ("fdb.flush", {"dev": "mynet", "dynamic": True}),
                          ("fdb.flush", {"dynamic": True, "vni": 4097})]


def test_neigh_ipv6_and_dev(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "neigh", "add", "FD00:55::3", "lladdr", "02:42:c0:a8:37:03", "dev",
               "mynet")[0] == 0
    assert run(capsys, "neigh", "del", "fe80::42:c0ff:fea8:3703")[0] == 0
    assert vtep.calls == [
        ("neigh.add", {"ip": "fd00:55::3", "lladdr": "02:42:c0:a8:37:03", "dev": "mynet"}),
        ("neigh.del", {"ip": "fe80::42:c0ff:fea8:3703"})]


def test_server_refusal_exits_1(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "fdb", "add", "02:42:c0:a8:37:04", "dst", "198.18.0.2")
    assert (rc, out) == (1, "")
    assert err == "vxdp: 02:42:c0:a8:37:04 is already in the FDB of VNI 4097\n"


def test_neigh_change(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "neigh", "add", "192.168.55.3", "lladdr", "02:42:C0:a8:37:03", "vni",
               "4097")[0] == 0
    assert run(capsys, "neigh", "del", "192.168.55.3")[0] == 0
    assert run(capsys, "neigh", "del", "192.168.55.3", "lladdr", "02:42:c0:a8:37:03")[0] == 0
    assert vtep.calls == [
        ("neigh.add", {"ip": "192.168.55.3", "lladdr": "02:42:c0:a8:37:03", "vni": 4097}),
        ("neigh.del", {"ip": "192.168.55.3"}),
        ("neigh.del", {"ip": "192.168.55.3", "lladdr": "02:42:c0:a8:37:03"})]


BAD_ARGS = [
    (["fdb", "add", "02:42:zz", "dst", "198.18.0.2"], '"02:42:zz" is not a MAC address'),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "198.18.0.300"], "not an IPv4 address"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "fe80::1"], "link-local"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "198.18.0.2", "vni", "16777216"], "1..16777215"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "198.18.0.2", "vni", "0"], "1..16777215"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "198.18.0.2", "vni", "-1"], "not a VNI"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "198.18.0.2", "vni", "abc"], "not a VNI"),
    (["fdb", "add", "02:42:c0:a8:37:03"], "missing dst"),
    (["fdb", "add"], "missing MAC"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst"], "dst needs a value"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "1.2.3.4", "via", "x"], "unexpected 'via'"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "1.2.3.4", "dev", "a b"], "dev:"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "1.2.3.4", "vni", "5", "dev", "n"],
     "vni and dev exclude each other"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "1.2.3.4", "static", "dynamic"],
     "static and dynamic exclude each other"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "1.2.3.4", "port", "0"], "not a UDP port"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "1.2.3.4", "port", "65536"], "not a UDP port"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "1.2.3.4", "remote_vni", "0"], "1..16777215"),
    (["fdb", "flush", "dynamic", "static"], "unexpected 'static'"),
    (["fdb", "flush", "02:42:c0:a8:37:03"], "unexpected '02:42:c0:a8:37:03'"),
    (["fdb", "add", "02:42:c0:a8:37:03", "dst", "1.2.3.4", "dst", "1.2.3.5"], "given twice"),
    (["neigh", "add", "192.168.55.3"], "missing lladdr"),
    (["neigh", "add", "192.168.55", "lladdr", "02:42:c0:a8:37:03"], "not an IPv4 address"),
    (["neigh", "add", "192.168.55.3", "lladdr", "02:42"], "not a MAC address"),
    (["neigh", "add", "ff02::1", "lladdr", "02:42:c0:a8:37:03"], "not a unicast IPv6"),
    (["trace", "--vni", "99999999"], "1..16777215"),
    (["trace", "--count", "0"], "at least 1"),
    (["trace", "--count", "x"], "not a whole number"),
    (["explain", "--from", "c1", "--to", "nowhere"], "neither an IP address nor a MAC"),
    (["endpoint", "add", "--network", "mynet", "--name", "c3", "--mac", "02:42:zz",
      "--address", "192.168.55.6/24"], '--mac: "02:42:zz" is not a MAC address'),
    (["endpoint", "add", "--network", "mynet", "--name", "c3", "--mac", "02:42:c0:a8:37:06",
      "--address", "192.168.55.6"], "--address"),
    (["endpoint", "add", "--network", "mynet", "--name", "c3", "--mac", "02:42:c0:a8:37:06",
      "--address", "192.168.55.6/24", "--ifname", "eth0"], "--ifname needs --netns"),
    (["endpoint", "del", "way-too-long-name-here"], "too long"),
    (["fdb", "show", "--bogus"], "unrecognized arguments: --bogus"),
    (["fdb", "frob"], "invalid choice"),
    (["capture", "--count", "3"], "-w"),
    ([], "required"),
]


@pytest.mark.parametrize(("argv", "words"), BAD_ARGS, ids=[" ".join(a[0]) for a in BAD_ARGS])
def test_bad_arguments(vtep: FakeVtep, capsys: pytest.CaptureFixture[str], argv: list[str],
                       words: str) -> None:
    rc, out, err = run(capsys, *argv)
    assert rc == 2, err
    assert out == ""
    assert words in err
    assert err.strip().splitlines()[-1].startswith("vxdp")
    assert vtep.calls == []  # rejected before anything was sent


def test_value_errors_are_one_line(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "fdb", "add", "zz", "dst", "1.2.3.4")
    assert err == 'vxdp: fdb add: "zz" is not a MAC address (expected aa:bb:cc:dd:ee:ff)\n'


# ------------------------------------------------------------------------------------------
# socket selection
# ------------------------------------------------------------------------------------------


def test_socket_option_and_env(sockdir: str, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    a, b = FakeVtep(), FakeVtep()
    pa, pb = os.path.join(sockdir, "a.sock"), os.path.join(sockdir, "b.sock")
    sa, sb = ServerThread(pa, a), ServerThread(pb, b)
    try:
        monkeypatch.setenv("VXDP_SOCKET", pa)
        assert run(capsys, "fdb", "show")[0] == 0
        assert run(capsys, "-s", pb, "neigh", "show")[0] == 0
        assert run(capsys, "--socket", pb, "stats")[0] == 0
        assert [c[0] for c in a.calls] == ["fdb.show"]
        assert [c[0] for c in b.calls] == ["neigh.show", "stats"]
    finally:
        sa.stop()
        sb.stop()


def test_default_socket_path(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def fake_request(self: ControlClient, cmd: str, **args: Any) -> Any:
        seen.append(self.path)
        return []

    monkeypatch.delenv("VXDP_SOCKET", raising=False)
    monkeypatch.setattr(ControlClient, "request", fake_request)
    assert main(["fdb", "show"]) == 0
    monkeypatch.setenv("VXDP_SOCKET", "")
    assert main(["fdb", "show"]) == 0
    assert seen == ["/run/vxdp/vxdp.sock", "/run/vxdp/vxdp.sock"]


def test_missing_socket(sockdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(sockdir, "nobody.sock")
    rc, out, err = run(capsys, "-s", path, "fdb", "show")
    assert (rc, out) == (1, "")
    assert err == (f"vxdp: no vxdp is listening on {path} (is 'vxdp run' running? use -s PATH "
                   "or VXDP_SOCKET)\n")
    rc, _, err = run(capsys, "-s", path, "trace")
    assert rc == 1 and "no vxdp is listening" in err


def test_unknown_command_from_server(vtep: FakeVtep) -> None:
    client = ControlClient(os.environ["VXDP_SOCKET"])
    with pytest.raises(ControlError, match="unknown command 'nope'"):
        client.request("nope")


# ------------------------------------------------------------------------------------------
# streams
# ------------------------------------------------------------------------------------------


def test_trace_text(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "trace")
    assert rc == 0
    assert out == ("c1 -> mynet: packet 0\n"
                   "time=1.5 port=c1 action=flood\n"
                   "c1 -> mynet: packet 2\n")
    assert vtep.calls == [("trace", {})]


def test_trace_json_count_filters(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "trace", "--json", "--count", "2", "--port", "c1", "--vni", "4097")
    assert rc == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"line": "c1 -> mynet: packet 0", "n": 0}, {"time": 1.5, "port": "c1", "action": "flood"}]
    assert vtep.calls == [("trace", {"count": 2, "port": "c1", "vni": 4097})]


def test_events(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "events") == (
        0, "l3miss 192.168.55.9 dev mynet\nlearned 02:00:00:00:00:01\n", "")
    rc, out, _ = run(capsys, "events", "--json")
    assert [json.loads(x)["kind"] for x in out.splitlines()] == ["l3miss", "learned"]


def test_stream_ctrl_c_exits_0(monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(self: ControlClient, cmd: str, **args: Any) -> Iterator[dict[str, Any]]:
        yield {"line": "first"}
        raise KeyboardInterrupt

    monkeypatch.setattr(ControlClient, "stream", interrupted)
    assert run(capsys, "-s", "/x", "trace") == (0, "first\n", "")
    assert run(capsys, "-s", "/x", "events") == (0, "first\n", "")


def test_request_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(self: ControlClient, cmd: str, **args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(ControlClient, "request", interrupted)
    assert run(capsys, "-s", "/x", "fdb", "show") == (130, "", "")


def test_capture(vtep: FakeVtep, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "c.pcapng"
    rc, out, err = run(capsys, "capture", "-w", str(out_file), "--port", "c1")
    assert (rc, err) == (0, "")
    assert out == f"3 packets written to {out_file}\n"
    assert out_file.read_bytes() == SHB + IDB + EPB + EPB + EPB
    assert vtep.calls == [("capture", {"port": "c1"})]


def test_capture_count_stops_client_side(vtep: FakeVtep, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    out_file = tmp_path / "c.pcapng"
    rc, out, _ = run(capsys, "capture", "-w", str(out_file), "--count", "1")
    assert rc == 0 and out == f"1 packet written to {out_file}\n"
    assert out_file.read_bytes() == SHB + IDB + EPB
    assert vtep.calls == [("capture", {"count": 1})]


def test_capture_unwritable(vtep: FakeVtep, capsys: pytest.CaptureFixture[str],
                            tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir.pcapng"
    rc, out, err = run(capsys, "capture", "-w", str(target))
    assert rc == 1 and err.startswith(f"vxdp: cannot write {target}: ")
    assert vtep.calls == []


def test_pcapng_packet_count_big_endian() -> None:
    def be(btype: int, body: bytes) -> bytes:
        return struct.pack(">II", btype, 12 + len(body)) + body + struct.pack(">I",
                                                                              12 + len(body))

    shb = be(0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))
    epb = be(6, struct.pack(">IIIII", 0, 0, 0, 4, 4) + b"abcd")
    count, order = cli.pcapng_packet_count(shb + epb)
    assert (count, order) == (1, ">")
    assert cli.pcapng_packet_count(epb + epb, order) == (2, ">")
    assert cli.pcapng_packet_count(b"\x06\x00\x00\x00garbage") == (0, "<")


# ------------------------------------------------------------------------------------------
# explain, endpoint
# ------------------------------------------------------------------------------------------


def test_explain(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "explain", "--from", "c1", "--to", "192.168.55.3")
    assert rc == 0
    assert out == ("1. frame from c1 to 192.168.55.3\n2. neighbour entry found\n"
                   "3. encapsulate to 198.18.0.2\n")
    assert run(capsys, "explain", "--from", "c1", "--to", "02:42:C0:A8:37:03")[0] == 0
    assert vtep.calls == [("explain", {"from": "c1", "to": "192.168.55.3"}),
                          ("explain", {"from": "c1", "to": "02:42:c0:a8:37:03"})]


def test_endpoint_add_dual_stack(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "endpoint", "add", "--network", "mynet", "--name", "c5",
                       "--mac", "02:42:c0:a8:37:08", "--address", "192.168.55.8/24",
                       "--address", "FD00:55::8/64")
    assert (rc, err) == (0, "")
    assert out == ("endpoint c5 added to network mynet (02:42:c0:a8:37:08 192.168.55.8/24 "
                   "fd00:55::8/64)\n")
    assert vtep.calls == [("endpoint.add", {"network": "mynet", "name": "c5",
                                            "mac": "02:42:c0:a8:37:08",
                                            "address": ["192.168.55.8/24", "fd00:55::8/64"]})]


def test_endpoint_add_and_del(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "endpoint", "add", "--network", "mynet", "--name", "c3", "--mac",
                     "02:42:C0:A8:37:06", "--address", "192.168.55.6/24", "--netns", "c3",
                     "--ifname", "eth0")
    assert rc == 0
    assert out == ("endpoint c3 added to network mynet (02:42:c0:a8:37:06 192.168.55.6/24) "
                   "in netns c3 as eth0\n")
    rc, out, _ = run(capsys, "endpoint", "add", "--network", "mynet", "--name", "c4", "--mac",
                     "02:42:c0:a8:37:07", "--address", "192.168.55.7/24")
    assert rc == 0 and out.startswith("endpoint c4 added to network mynet")
    assert run(capsys, "endpoint", "del", "c3") == (0, "endpoint c3 removed\n", "")
    assert vtep.calls == [
        ("endpoint.add", {"network": "mynet", "name": "c3", "mac": "02:42:c0:a8:37:06",
                          "address": "192.168.55.6/24", "netns": "c3", "ifname": "eth0"}),
        ("endpoint.add", {"network": "mynet", "name": "c4", "mac": "02:42:c0:a8:37:07",
                          "address": "192.168.55.7/24"}),
        ("endpoint.del", {"name": "c3"})]


# ------------------------------------------------------------------------------------------
# run, demo, help, robustness
# ------------------------------------------------------------------------------------------


def test_run_delegates(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[str] = []

    def run_main(path: str) -> int:
        seen.append(path)
        return 0

    monkeypatch.setitem(sys.modules, "dataplane.vtep", types.SimpleNamespace(run_main=run_main))
    assert run(capsys, "run", "cfg.toml") == (0, "", "")
    assert seen == ["cfg.toml"]


def test_run_config_error_exits_2(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    def run_main(path: str) -> int:
        raise ConfigError("missing required key", path=path, line=3, key="vtep.local")

    monkeypatch.setitem(sys.modules, "dataplane.vtep", types.SimpleNamespace(run_main=run_main))
    assert run(capsys, "run", "cfg.toml") == (2, "", "vxdp: cfg.toml:3: vtep.local: missing "
                                                       "required key\n")


def test_demo_passes_options_through(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[list[str]] = []

    def demo_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    monkeypatch.setitem(sys.modules, "dataplane.demo", types.SimpleNamespace(main=demo_main))
    assert run(capsys, "demo")[0] == 0
    assert run(capsys, "demo", "--store", "etcd")[0] == 0
    assert run(capsys, "demo", "--help")[0] == 0
    assert seen == [[], ["--store", "etcd"], ["--help"]]


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "examples:" in out and "VXDP_SOCKET" in out
    for command in ("run", "demo", "fdb", "neigh", "stats", "trace", "capture", "explain",
                    "events", "endpoint"):
        assert command in out
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and out.startswith("vxdp ")
    for argv in (["fdb", "add", "--help"], ["trace", "--help"], ["endpoint", "add", "--help"],
                 ["capture", "--help"]):
        rc, out, _ = run(capsys, *argv)
        assert rc == 0 and "usage: vxdp" in out


def test_every_option_has_help() -> None:
    def walk(parser: Any) -> Iterator[Any]:
        for action in parser._actions:
            yield action
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for sub in action.choices.values():
                    yield from walk(sub)

    for action in walk(cli.build_parser()):
        assert action.help, action


def test_unexpected_result_shape_is_not_a_traceback(vtep: FakeVtep,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ControlClient, "request",
                        lambda self, cmd, **a: [1, 2])  # not a list of objects
    rc, _, err = run(capsys, "fdb", "show")
    assert rc == 1 and err.startswith("vxdp: internal error: AttributeError")


def test_broken_pipe_is_silent(vtep: FakeVtep, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["fdb", "show"]) == 0
    _, err = capsys.readouterr()
    assert err == ""


def test_python_dash_m_entry_point(sockdir: str) -> None:
    """`python -m dataplane` works, and a pipe closed early (| head) prints nothing extra."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-m", "dataplane", "-s",
                           os.path.join(sockdir, "none.sock"), "fdb", "show"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("vxdp: no vxdp is listening on ")
    assert proc.stdout == ""


def test_fmt_is_pure_and_tolerant() -> None:
    assert fmt.format_fdb([{"mac": "02:00:00:00:00:01", "state": "permanent", "dst": "1.2.3.4",
                            "vni": 5}]) == ["02:00:00:00:00:01 dev vni5 dst 1.2.3.4 vni 5 self "
                                            "permanent"]
    assert fmt.format_neigh([{"ip": "10.0.0.9", "network": "n", "state": "failed"}]) == [
        "10.0.0.9 dev n FAILED"]
    assert fmt.format_stats({}) == ""
    assert fmt.format_explain({"steps": [str(i) for i in range(10)], "verdict": "drop"})[-2:] \
        == ["10. 9", "=> drop"]
    assert fmt.format_record({"line": "x", "a": 1}) == "x"
    assert fmt.format_record({"a": {"b": 1}, "ts": 2}) == 'ts=2 a={"b":1}'


OFFLOAD_C = {
    "tap": ["csum", "tso4", "tso6"],
    "tap_ports": {"c1": ["csum", "tso4", "tso6"], "c2": ["csum", "tso4", "tso6"]},
    "udp_gso": True, "udp_gro": False, "tap_coalesce": True,
    "off": {"udp_gro": "kernel refused UDP_GRO"},
    "counters": {"tso_frames": 12, "tso_segments": 530, "csum_completed": 0, "bad_vnet": 0,
                 "gso_sends": 7, "gso_datagrams": 140},
}


def test_stats_offload_section(vtep: FakeVtep, capsys: pytest.CaptureFixture[str]) -> None:
    vtep.stats = {**STATS, "offload": OFFLOAD_C}
    rc, out, _ = run(capsys, "stats")
    assert rc == 0
    assert out == STATS_TEXT + "\n\n" + """\
offload: tap csum,tso4,tso6, udp_gso on, udp_gro off (kernel refused UDP_GRO), tap_coalesce on
  tso_frames      12
  tso_segments   530
  gso_sends        7
  gso_datagrams  140
"""
    rc, out, _ = run(capsys, "stats", "--json")
    assert rc == 0 and json.loads(out)["offload"] == OFFLOAD_C  # raw, counters and all


@pytest.mark.parametrize(("offload", "lines"), [
    # pure-Python path: everything off, one reason
    ({"tap": [], "tap_ports": {"c1": []}, "udp_gso": False, "udp_gro": False,
      "tap_coalesce": False, "reason": "pure-Python path"},
     ["offload: off (pure-Python path)"]),
    # offload = false
    ({"tap": [], "tap_ports": {"c1": []}, "udp_gso": False, "udp_gro": False,
      "tap_coalesce": False, "counters": {"gso_sends": 0},
      "off": {k: "disabled by [vtep] offload" for k in ("tap", "udp_gso", "udp_gro")}},
     ["offload: off (disabled by [vtep] offload)"]),
    # endpoints that disagree are listed one by one; zero counters are not shown
    ({"tap": ["csum"], "tap_ports": {"c1": ["csum", "tso4"], "c2": ["csum"]},
      "udp_gso": False, "udp_gro": True, "tap_coalesce": True,
      "off": {"udp_gso": "disabled by [vtep] offload"}, "counters": {"bad_vnet": 0}},
     ["offload: tap c1=csum,tso4 c2=csum, udp_gso off (disabled by [vtep] offload), "
      "udp_gro on, tap_coalesce on"]),
    ({"tap": [], "tap_ports": {}, "udp_gso": True, "udp_gro": True, "tap_coalesce": True,
      "counters": {"gro_buffers": 3}},
     ["offload: tap on (no endpoints yet), udp_gso on, udp_gro on, tap_coalesce on",
      "  gro_buffers  3"]),
])
def test_format_offload(offload: dict[str, Any], lines: list[str]) -> None:
    assert fmt.format_offload(offload) == lines
    assert fmt.format_stats({"offload": offload}) == "\n".join(lines)


def test_format_paths() -> None:
    assert fmt.format_paths({"198.18.0.2": {"mtu": 1400, "inner_max": 1350},
                             "2001:db8:18::2": {"mtu": 1400, "inner_max": 1330},
                             "198.18.0.3": "odd"}) == [
        "paths (route MTU to each remote VTEP):",
        "  198.18.0.2      mtu 1400, inner packets up to 1350",
        "  2001:db8:18::2  mtu 1400, inner packets up to 1330",
        "  198.18.0.3      mtu -, inner packets up to -",
    ]


def test_format_offload_tolerates_odd_input() -> None:
    assert fmt.format_stats({"offload": {}}) == ""
    assert fmt.format_offload({"udp_gso": True}) == ["offload: tap off, udp_gso on"]
    assert fmt.format_offload({"udp_gso": 1, "counters": "x", "off": 3, "tap_ports": 4}) == [
        "offload: tap off, udp_gso on"]
