"""dataplane.commands: the schema every control request is checked against (check_args)."""

from __future__ import annotations

from typing import Any

import pytest

from dataplane.commands import BATCH_MAX, COMMANDS, SCHEMAS, check_args
from dataplane.errors import InvalidArgument

MAC = "02:42:c0:a8:37:03"
FDB = {"mac": MAC, "dst": "198.18.0.2"}
NEIGH = {"ip": "192.168.55.3", "lladdr": MAC}
EP = {"network": "mynet", "name": "c4", "mac": "02:42:c0:a8:37:06",
      "address": "192.168.55.6/24"}


def refused(cmd: str, args: dict[str, Any]) -> str:
    with pytest.raises(InvalidArgument) as info:
        check_args(cmd, args)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_every_command_and_stream_has_a_schema() -> None:
    assert set(COMMANDS) <= set(SCHEMAS)
    assert {"trace", "capture", "events"} <= set(SCHEMAS)


@pytest.mark.parametrize("cmd, args, expected", [
    ("fdb.add", {**FDB, "vni": 4097}, {**FDB, "vni": 4097}),
    ("fdb.add", {"mac": "02-42-C0-A8-37-03", "dst": " 198.18.0.2"}, FDB),
    ("fdb.append", {"mac": "00:00:00:00:00:00", "dst": "198.18.0.3"},
     {"mac": "00:00:00:00:00:00", "dst": "198.18.0.3"}),
    ("fdb.append", {"mac": "01:00:5e:00:00:01", "dst": "198.18.0.3"},
     {"mac": "01:00:5e:00:00:01", "dst": "198.18.0.3"}),
    ("fdb.add", {"mac": "ff:ff:ff:ff:ff:ff", "dst": "198.18.0.3"},
     {"mac": "ff:ff:ff:ff:ff:ff", "dst": "198.18.0.3"}),
    ("fdb.replace", {**FDB, "state": "static"}, {**FDB, "state": "static"}),
    ("fdb.del", {"mac": MAC}, {"mac": MAC}),
    ("fdb.del", {"mac": MAC, "vni": None}, {"mac": MAC}),     # null = absent (optional)
    ("neigh.add", NEIGH, NEIGH),
    ("explain", {"from": "c1", "to": "192.168.55.3"}, {"from": "c1", "to": "192.168.55.3"}),
    ("explain", {"from": "c1", "to": "02:42:C0:A8:37:03"}, {"from": "c1", "to": MAC}),
    ("endpoint.add", {**EP, "netns": "c4", "ifname": "eth0", "netns_create": True},
     {**EP, "netns": "c4", "ifname": "eth0", "netns_create": True}),
    ("trace", {"count": 10, "port": "c1", "vni": 4097}, {"count": 10, "port": "c1",
                                                          "vni": 4097}),
    ("stats", {}, {}),
])
def test_good_requests(cmd: str, args: dict[str, Any], expected: dict[str, Any]) -> None:
    assert check_args(cmd, args) == expected


@pytest.mark.parametrize("cmd, args, words", [
    # VNI: an integer, nothing that merely looks like one
    ("fdb.add", {**FDB, "vni": True}, "fdb.add: vni: true is not a VNI (an integer 1..16777215)"),
    ("fdb.add", {**FDB, "vni": "4097"}, 'vni: "4097" is not a VNI'),
    ("fdb.add", {**FDB, "vni": 4097.5}, "vni: 4097.5 is not a VNI"),
    ("fdb.add", {**FDB, "vni": float("nan")}, "vni: NaN is not a VNI"),
    ("fdb.add", {**FDB, "vni": float("inf")}, "vni: Infinity is not a VNI"),
    ("fdb.add", {**FDB, "vni": [4097]}, "vni: an array is not a VNI"),
    ("fdb.add", {**FDB, "vni": {"n": 1}}, "vni: an object is not a VNI"),
    ("fdb.add", {**FDB, "vni": 0}, "vni: 0 is out of range"),
    ("fdb.add", {**FDB, "vni": 1 << 24}, "vni: 16777216 is out of range"),
    # MACs and addresses
    ("fdb.add", {**FDB, "mac": 5}, "fdb.add: mac: 5 is not a MAC address (expected a string)"),
    ("fdb.add", {**FDB, "mac": None}, "fdb.add: missing required argument 'mac' (null)"),
    ("fdb.add", {"dst": "198.18.0.2"}, "fdb.add: missing required argument 'mac'"),
    ("fdb.add", {**FDB, "mac": "02:42:zz:a8:37:03"}, "is not a MAC address"),
    ("fdb.add", {**FDB, "mac": "x" * 100_000}, "a string of 100000 characters is not a MAC"),
    ("fdb.add", {**FDB, "dst": "0.0.0.0"}, "dst: \"0.0.0.0\" is the unspecified address"),
    ("fdb.add", {**FDB, "dst": "239.1.1.1"}, "is a multicast address, not a VTEP"),
    ("fdb.add", {**FDB, "dst": ["198.18.0.2"]}, "dst: an array is not a VTEP address"),
    ("fdb.add", {**FDB, "state": "stale"}, "FDB state 'stale' is not one of"),
    ("fdb.add", {**FDB, "port": 0}, "port: 0 is out of range"),
    ("fdb.add", {**FDB, "remote_vni": "5"}, "remote_vni:"),
    ("fdb.flush", {"dynamic": "yes"}, "dynamic:"),
    ("fdb.add", {**FDB, "vnii": 4097}, "fdb.add: unknown argument \"vnii\" (takes: mac, dst,"),
    # the kernel's vxlan refuses replace on flood-list MACs (EOPNOTSUPP)
    ("fdb.replace", {**FDB, "mac": "00:00:00:00:00:00"}, "all-zeros MAC, a flood list"),
    ("fdb.replace", {**FDB, "mac": "01:00:5e:00:00:01"}, "multicast MAC, a flood list"),
    ("fdb.replace", {**FDB, "mac": "ff:ff:ff:ff:ff:ff"}, "multicast MAC, a flood list"),
    # neighbour entries: unicast overlay addresses, unicast MACs
    ("neigh.add", {**NEIGH, "ip": "0.0.0.0"}, "ip: \"0.0.0.0\" is not a unicast IPv4"),
    ("neigh.add", {**NEIGH, "ip": "255.255.255.255"}, "is not a unicast IPv4 address"),
    ("neigh.add", {**NEIGH, "ip": "224.0.0.5"}, "is not a unicast IPv4 address"),
    ("neigh.add", {**NEIGH, "lladdr": "ff:ff:ff:ff:ff:ff"}, "multicast MAC address"),
    ("neigh.add", {**NEIGH, "lladdr": "00:00:00:00:00:00"}, "all-zeros MAC address"),
    ("neigh.add", {"lladdr": MAC}, "neigh.add: missing required argument 'ip'"),
    # the rest
    ("explain", {"from": "c1", "to": "nowhere"}, "is neither an IP address nor a MAC"),
    ("explain", {"from": "c1"}, "missing required argument 'to'"),
    ("endpoint.add", {**EP, "netns_create": 1}, "netns_create: 1 is not true or false"),
    ("endpoint.add", {**EP, "name": "x" * 16}, "too long for an interface name"),
    ("endpoint.del", {}, "missing required argument 'name'"),
    ("stats", {"verbose": True}, "stats: unknown argument \"verbose\" (takes: no arguments)"),
    ("trace", {"count": -1}, "count: -1 is out of range"),
    ("trace", {"count": "10"}, "count: \"10\" is not a count"),
    ("batch", {"requests": []}, f"a batch has 1..{BATCH_MAX} requests, not 0"),
    ("batch", {"requests": [{"cmd": "stats"}]}, "\"stats\" cannot be batched"),
    ("batch", {"requests": [{"cmd": "fdb.add", "args": [1]}]}, "args must be an object"),
    ("batch", {"requests": "fdb.add"}, "is not a list of requests"),
])
def test_bad_requests(cmd: str, args: dict[str, Any], words: str) -> None:
    message = refused(cmd, args)
    assert words in message, message
    assert message.startswith(f"{cmd}: ") or message.startswith("unknown command")


def test_unknown_command_lists_the_known_ones() -> None:
    message = refused("fdb.shwo", {})
    assert "unknown command 'fdb.shwo'" in message and "fdb.show" in message


def test_batch_items_are_checked_when_applied() -> None:
    items = check_args("batch", {"requests": [{"cmd": "fdb.add", "args": {"mac": 5}}]})
    assert items == {"requests": [("fdb.add", {"mac": 5})]}
