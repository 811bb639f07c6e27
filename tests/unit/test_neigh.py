"""dataplane.neigh: the neighbour table the ARP proxy reads, with ``ip neigh`` semantics."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from dataplane.errors import EntryExists, EntryNotFound, InvalidArgument
from dataplane.neigh import NeighTable
from tests.strategies import BROADCAST, C1_MAC, MCAST_MAC, PEER_IP, PEER_MAC, ZERO_MAC

IP2 = IPv4Address("192.168.55.7")


def dump(t: NeighTable) -> list[tuple[IPv4Address, bytes, str]]:
    return [(e.ip, e.lladdr, e.state) for e in t]


@pytest.fixture
def table() -> NeighTable:
    return NeighTable(4097)


def test_add_and_lookup(table: NeighTable) -> None:
    table.add("192.168.55.3", "02:42:c0:a8:37:03")
    e = table.lookup(PEER_IP)
    assert e is not None and e.lladdr == PEER_MAC and e.state == "permanent"
    assert table.lookup(IP2) is None
    assert len(table) == 1


def test_add_accepts_bytes_and_typed_address(table: NeighTable) -> None:
    table.add(PEER_IP, PEER_MAC, state="reachable")
    assert dump(table) == [(PEER_IP, PEER_MAC, "reachable")]


def test_add_existing_is_eexist(table: NeighTable) -> None:
    table.add(PEER_IP, PEER_MAC)
    with pytest.raises(EntryExists):
        table.add(PEER_IP, C1_MAC)
    assert dump(table) == [(PEER_IP, PEER_MAC, "permanent")]


def test_replace_creates_and_overwrites(table: NeighTable) -> None:
    table.replace(PEER_IP, PEER_MAC, "static")
    assert dump(table) == [(PEER_IP, PEER_MAC, "static")]
    table.replace("192.168.55.3", "02:42:c0:a8:37:04")
    assert dump(table) == [(PEER_IP, C1_MAC, "permanent")]


def test_delete_and_enoent(table: NeighTable) -> None:
    table.add(PEER_IP, PEER_MAC)
    table.delete("192.168.55.3")
    assert len(table) == 0
    with pytest.raises(EntryNotFound):
        table.delete(PEER_IP)


def test_flush_returns_count(table: NeighTable) -> None:
    table.add(PEER_IP, PEER_MAC)
    table.add(IP2, C1_MAC)
    assert table.flush() == 2
    assert len(table) == 0
    assert table.flush() == 0


@pytest.mark.parametrize("bad", [ZERO_MAC, BROADCAST, MCAST_MAC, "01:00:00:00:00:00",
                                 "zz:00:00:00:00:00", "02:00:00", b"\x02" * 7])
def test_lladdr_must_be_unicast_mac(table: NeighTable, bad: str | bytes) -> None:
    with pytest.raises(InvalidArgument):
        table.add(PEER_IP, bad)
    with pytest.raises(InvalidArgument):
        table.replace(PEER_IP, bad)
    assert len(table) == 0


@pytest.mark.parametrize("bad", ["192.168.55", "ff02::1", "::", "::ffff:1.2.3.4", "x",
                                 "256.1.1.1"])
def test_bad_ip_is_invalid_argument(table: NeighTable, bad: str) -> None:
    for op in (lambda: table.add(bad, PEER_MAC), lambda: table.replace(bad, PEER_MAC),
               lambda: table.delete(bad)):
        with pytest.raises(InvalidArgument):
            op()


def test_bad_state_is_invalid_argument(table: NeighTable) -> None:
    with pytest.raises(InvalidArgument):
        table.add(PEER_IP, PEER_MAC, state="stale")
    with pytest.raises(InvalidArgument):
        table.replace(PEER_IP, PEER_MAC, state="learned")
    assert len(table) == 0


def test_replace_with_bad_lladdr_keeps_old_entry(table: NeighTable) -> None:
    table.add(PEER_IP, PEER_MAC)
    with pytest.raises(InvalidArgument):
        table.replace(PEER_IP, ZERO_MAC)
    assert dump(table) == [(PEER_IP, PEER_MAC, "permanent")]


def test_iteration_sorted_numerically_and_as_dict() -> None:
    t = NeighTable(9)
    t.add("192.168.55.10", PEER_MAC)
    t.add("192.168.55.9", C1_MAC, "static")
    t.add("10.0.0.1", C1_MAC)
    assert [str(e.ip) for e in t] == ["10.0.0.1", "192.168.55.9", "192.168.55.10"]
    assert [e.as_dict(9) for e in t][1] == {
        "vni": 9, "ip": "192.168.55.9", "lladdr": "02:42:c0:a8:37:04", "state": "static"}
