"""dataplane.fdb: the forwarding database with the kernel vxlan driver's semantics, as listed in
the module docstring (add/append/replace/del/flush, learning, ageing, maxaddress)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from dataplane.errors import EntryExists, EntryNotFound, InvalidArgument, TableError, TableFull
from dataplane.fdb import Fdb, FdbEntry, Remote, is_group_mac
from tests.strategies import BROADCAST, MCAST_MAC, PEER_MAC, ZERO_MAC

A, B, C = IPv4Address("198.18.0.2"), IPv4Address("198.18.0.3"), IPv4Address("198.18.0.4")
M1 = bytes.fromhex("020000000001")
M2 = bytes.fromhex("020000000002")
M3 = bytes.fromhex("020000000003")
M4 = bytes.fromhex("020000000004")
GROUPS = [ZERO_MAC, BROADCAST, MCAST_MAC]


def rs(*addrs: IPv4Address) -> list[Remote]:
    """Remotes at the VTEP's own port and the network's VNI (the common case)."""
    return [Remote(a) for a in addrs]


def snapshot(fdb: Fdb) -> list[tuple[bytes, str, int | None, list[Remote], float]]:
    return [(e.mac, e.state, e.port, list(e.remotes), e.updated) for e in fdb]


@pytest.fixture
def fdb() -> Fdb:
    return Fdb(4097)


def test_errors_are_table_errors() -> None:
    assert issubclass(EntryExists, TableError) and issubclass(EntryNotFound, TableError)
    assert issubclass(TableFull, TableError)


# --------------------------------------------------------------------------- add


def test_add_remote_and_local(fdb: Fdb) -> None:
    fdb.add(PEER_MAC, dst=A)
    fdb.add("02:00:00:00:00:01", port=3, state="static", now=5.0)
    e = fdb.lookup(PEER_MAC)
    assert e is not None and e.remotes == rs(A) and e.port is None and e.state == "permanent"
    assert not e.is_local and e.location() == "198.18.0.2"
    loc = fdb.lookup(M1)
    assert loc is not None and loc.port == 3 and loc.is_local and loc.state == "static"
    assert loc.updated == 5.0 and loc.location() == "port:3"
    assert len(fdb) == 2


def test_add_accepts_string_dst(fdb: Fdb) -> None:
    fdb.add(M1, dst="198.18.0.2")
    e = fdb.lookup(M1)
    assert e is not None and e.remotes == rs(A) and isinstance(e.remotes[0].addr, IPv4Address)


def test_add_existing_is_eexist(fdb: Fdb) -> None:
    fdb.add(M1, dst=A)
    with pytest.raises(EntryExists):
        fdb.add(M1, dst=B)
    with pytest.raises(EntryExists):
        fdb.add(M1, port=1)
    e = fdb.lookup(M1)
    assert e is not None and e.remotes == rs(A)


def test_add_existing_group_is_eexist(fdb: Fdb) -> None:
    fdb.add(ZERO_MAC, dst=A)
    with pytest.raises(EntryExists):
        fdb.add(ZERO_MAC, dst=B)
    assert fdb.lookup(ZERO_MAC).remotes == rs(A)  # type: ignore[union-attr]


@pytest.mark.parametrize("kw", [{}, {"dst": A, "port": 1}])
def test_add_needs_exactly_one_destination(fdb: Fdb, kw: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        fdb.add(M1, **kw)  # type: ignore[arg-type]
    assert len(fdb) == 0


@pytest.mark.parametrize("group", GROUPS)
def test_add_group_mac_to_port_refused(fdb: Fdb, group: bytes) -> None:
    with pytest.raises(InvalidArgument):
        fdb.add(group, port=1)
    assert len(fdb) == 0


@pytest.mark.parametrize("bad", ["nonsense", "02:00:00:00:00", b"\x02" * 5])
def test_bad_mac_is_invalid_argument(fdb: Fdb, bad: str | bytes) -> None:
    for op in (lambda: fdb.add(bad, dst=A), lambda: fdb.append(bad, A),
               lambda: fdb.replace(bad, dst=A), lambda: fdb.delete(bad)):
        with pytest.raises(InvalidArgument):
            op()


@pytest.mark.parametrize("bad", ["198.18.0", "fe80::1", "not an ip"])
def test_bad_dst_is_invalid_argument(fdb: Fdb, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        fdb.add(M1, dst=bad)
    with pytest.raises(InvalidArgument):
        fdb.append(ZERO_MAC, bad)
    with pytest.raises(InvalidArgument):
        fdb.replace(M1, dst=bad)
    assert len(fdb) == 0


def test_bad_state_is_invalid_argument(fdb: Fdb) -> None:
    with pytest.raises(InvalidArgument):
        fdb.add(M1, dst=A, state="reachable")
    with pytest.raises(InvalidArgument):
        fdb.append(ZERO_MAC, A, state="bogus")
    with pytest.raises(InvalidArgument):
        fdb.replace(M1, dst=A, state="")
    assert len(fdb) == 0


# --------------------------------------------------------------------------- append


@pytest.mark.parametrize("group", GROUPS)
def test_append_builds_a_flood_list_in_order(fdb: Fdb, group: bytes) -> None:
    fdb.append(group, C)
    fdb.append(group, A)
    fdb.append(group, B)
    assert fdb.lookup(group).remotes == rs(C, A, B)  # type: ignore[union-attr]
    rows = fdb.rows()
    assert [r["dst"] for r in rows] == ["198.18.0.4", "198.18.0.2", "198.18.0.3"]


def test_append_existing_remote_is_noop(fdb: Fdb) -> None:
    fdb.append(ZERO_MAC, A)
    fdb.append(ZERO_MAC, B)
    before = snapshot(fdb)
    fdb.append(ZERO_MAC, "198.18.0.2")
    assert snapshot(fdb) == before


def test_append_creates_unicast_entry_when_absent(fdb: Fdb) -> None:
    fdb.append(M1, A, state="static", now=2.0)
    e = fdb.lookup(M1)
    assert e is not None and e.remotes == rs(A) and e.state == "static" and e.updated == 2.0


def test_append_to_existing_unicast_is_invalid(fdb: Fdb) -> None:
    fdb.add(M1, dst=A)
    with pytest.raises(InvalidArgument):
        fdb.append(M1, B)
    with pytest.raises(InvalidArgument):
        fdb.append(M1, A)  # even the same remote: unicast entries have exactly one
    assert fdb.lookup(M1).remotes == rs(A)  # type: ignore[union-attr]


def test_append_to_local_unicast_is_invalid(fdb: Fdb) -> None:
    fdb.add(M1, port=1)
    with pytest.raises(InvalidArgument):
        fdb.append(M1, A)
    e = fdb.lookup(M1)
    assert e is not None and e.port == 1 and e.remotes == rs()


# --------------------------------------------------------------------------- replace


def test_replace_creates(fdb: Fdb) -> None:
    fdb.replace(M1, dst=A, state="static", now=1.5)
    assert snapshot(fdb) == [(M1, "static", None, rs(A), 1.5)]


def test_replace_rewrites_remote_state_and_time(fdb: Fdb) -> None:
    fdb.add(M1, dst=A, state="permanent")
    fdb.replace(M1, dst=B, state="static", now=9.0)
    assert snapshot(fdb) == [(M1, "static", None, rs(B), 9.0)]


def test_replace_never_points_a_local_endpoint_at_a_remote(fdb: Fdb) -> None:
    """An endpoint's MAC pointed at a remote VTEP would black-hole the container: refused
    (on a kernel host the bridge's FDB is apart from the vxlan device's). A remote entry
    can still become local, and a learned local one can move to a remote."""
    fdb.add(M1, port=4)
    with pytest.raises(InvalidArgument, match="MAC of a local endpoint"):
        fdb.replace(M1, dst=A)
    assert snapshot(fdb) == [(M1, "permanent", 4, [], 0.0)]
    fdb.replace(M2, dst=A)
    fdb.replace(M2, port=5)
    assert snapshot(fdb)[1] == (M2, "permanent", 5, [], 0.0)
    fdb.learn(M3, 1.0, port=6)
    fdb.replace(M3, dst=B)
    assert snapshot(fdb)[2] == (M3, "permanent", None, rs(B), 0.0)


def test_replace_learned_entry_makes_it_static(fdb: Fdb) -> None:
    fdb.learn(M1, 1.0, dst=Remote(A))
    fdb.replace(M1, dst=B, state="permanent", now=2.0)
    assert snapshot(fdb) == [(M1, "permanent", None, rs(B), 2.0)]
    assert fdb.age(10_000.0) == []


@pytest.mark.parametrize("group", GROUPS)
def test_replace_refused_on_group_macs(fdb: Fdb, group: bytes) -> None:
    fdb.append(group, A)
    with pytest.raises(InvalidArgument):
        fdb.replace(group, dst=B)
    assert fdb.lookup(group).remotes == rs(A)  # type: ignore[union-attr]


@pytest.mark.parametrize("group", GROUPS)
def test_replace_refused_on_absent_group_macs(fdb: Fdb, group: bytes) -> None:
    with pytest.raises(InvalidArgument):
        fdb.replace(group, dst=B)
    assert len(fdb) == 0


def test_replace_needs_exactly_one_destination(fdb: Fdb) -> None:
    with pytest.raises(InvalidArgument):
        fdb.replace(M1)
    with pytest.raises(InvalidArgument):
        fdb.replace(M1, dst=A, port=1)


# --------------------------------------------------------------------------- delete / flush


def test_delete_whole_entry(fdb: Fdb) -> None:
    fdb.add(M1, dst=A)
    fdb.append(ZERO_MAC, A)
    fdb.append(ZERO_MAC, B)
    fdb.delete(M1)
    fdb.delete(ZERO_MAC)  # without dst: every remote
    assert len(fdb) == 0


def test_delete_one_remote_then_the_last(fdb: Fdb) -> None:
    for r in (A, B, C):
        fdb.append(ZERO_MAC, r)
    fdb.delete(ZERO_MAC, B)
    assert fdb.lookup(ZERO_MAC).remotes == rs(A, C)  # type: ignore[union-attr]
    fdb.delete(ZERO_MAC, "198.18.0.2")
    assert fdb.lookup(ZERO_MAC).remotes == rs(C)  # type: ignore[union-attr]
    fdb.delete(ZERO_MAC, C)
    assert fdb.lookup(ZERO_MAC) is None and len(fdb) == 0


def test_delete_unicast_with_its_remote(fdb: Fdb) -> None:
    fdb.add(M1, dst=A)
    fdb.delete(M1, A)
    assert fdb.lookup(M1) is None


def test_delete_absent_is_enoent(fdb: Fdb) -> None:
    with pytest.raises(EntryNotFound):
        fdb.delete(M1)
    fdb.append(ZERO_MAC, A)
    with pytest.raises(EntryNotFound):
        fdb.delete(ZERO_MAC, B)
    assert fdb.lookup(ZERO_MAC).remotes == rs(A)  # type: ignore[union-attr]


def test_delete_local_entry_with_dst_is_enoent(fdb: Fdb) -> None:
    fdb.add(M1, port=1)
    with pytest.raises(EntryNotFound):
        fdb.delete(M1, A)
    assert fdb.lookup(M1) is not None


def test_flush_keeps_permanent(fdb: Fdb) -> None:
    fdb.add(M1, dst=A, state="permanent")
    fdb.add(M2, dst=A, state="static")
    fdb.learn(M3, 0.0, dst=Remote(B))
    fdb.append(ZERO_MAC, C)
    assert fdb.flush() == 2
    assert [e.mac for e in fdb] == [ZERO_MAC, M1]
    assert fdb.flush(keep_permanent=False) == 2
    assert len(fdb) == 0


def test_remove_port(fdb: Fdb) -> None:
    fdb.add(M1, port=1)
    fdb.learn(M2, 0.0, port=1)
    fdb.learn(M3, 0.0, port=2)
    fdb.add(PEER_MAC, dst=A)
    assert fdb.remove_port(1) == 2
    assert [e.mac for e in fdb] == [M3, PEER_MAC]  # sorted by MAC
    assert fdb.remove_port(1) == 0


# --------------------------------------------------------------------------- learning


def test_learn_new_remote_and_local(fdb: Fdb) -> None:
    assert fdb.learn(M1, 3.0, dst=Remote(A)) == ("new", None)
    assert fdb.learn(M2, 4.0, port=7) == ("new", None)
    assert snapshot(fdb) == [(M1, "learned", None, rs(A), 3.0), (M2, "learned", 7, [], 4.0)]


def test_learn_refresh_updates_time(fdb: Fdb) -> None:
    fdb.learn(M1, 3.0, dst=Remote(A))
    assert fdb.learn(M1, 8.0, dst=Remote(A)) == ("refresh", None)
    fdb.learn(M2, 3.0, port=1)
    assert fdb.learn(M2, 9.0, port=1) == ("refresh", None)
    assert snapshot(fdb) == [(M1, "learned", None, rs(A), 8.0), (M2, "learned", 1, [], 9.0)]


def test_learn_moved_returns_old_copy(fdb: Fdb) -> None:
    fdb.learn(M1, 1.0, dst=Remote(A))
    result, old = fdb.learn(M1, 2.0, dst=Remote(B))
    assert result == "moved"
    assert isinstance(old, FdbEntry)
    assert (old.mac, old.state, old.port, old.remotes, old.updated) == (M1, "learned", None, rs(A), 1.0)
    assert snapshot(fdb) == [(M1, "learned", None, rs(B), 2.0)]
    # remote → local port → another port → remote
    assert fdb.learn(M1, 3.0, port=1)[0] == "moved"
    assert snapshot(fdb) == [(M1, "learned", 1, [], 3.0)]
    r, old = fdb.learn(M1, 4.0, port=2)
    assert r == "moved" and old is not None and old.port == 1 and old.location() == "port:1"
    r, old = fdb.learn(M1, 5.0, dst=Remote(C))
    assert r == "moved" and old is not None and old.port == 2
    assert snapshot(fdb) == [(M1, "learned", None, rs(C), 5.0)]


@pytest.mark.parametrize("state", ["permanent", "static"])
def test_learn_never_moves_static_remote(fdb: Fdb, state: str) -> None:
    fdb.add(M1, dst=A, state=state, now=1.0)
    assert fdb.learn(M1, 5.0, dst=Remote(B)) == ("conflict", None)
    assert fdb.learn(M1, 5.0, port=3) == ("kept", None)
    assert snapshot(fdb) == [(M1, state, None, rs(A), 1.0)]


@pytest.mark.parametrize("state", ["permanent", "static"])
def test_learn_never_moves_static_local(fdb: Fdb, state: str) -> None:
    fdb.add(M1, port=1, state=state, now=1.0)
    assert fdb.learn(M1, 5.0, dst=Remote(B)) == ("conflict", None)
    assert fdb.learn(M1, 5.0, port=2) == ("kept", None)
    assert snapshot(fdb) == [(M1, state, 1, [], 1.0)]


@pytest.mark.parametrize("state", ["permanent", "static"])
def test_learn_same_place_as_static_is_refresh_without_touching(fdb: Fdb, state: str) -> None:
    fdb.add(M1, dst=A, state=state, now=1.0)
    fdb.add(M2, port=1, state=state, now=1.0)
    assert fdb.learn(M1, 5.0, dst=Remote(A)) == ("refresh", None)
    assert fdb.learn(M2, 5.0, port=1) == ("refresh", None)
    assert snapshot(fdb) == [(M1, state, None, rs(A), 1.0), (M2, state, 1, [], 1.0)]


def test_learn_full_at_maxaddress() -> None:
    """maxaddress bounds the remote entries only (the kernel's addrmax counts the vxlan
    device's entries; the bridge's local ones are another table)."""
    fdb = Fdb(4097, maxaddress=2)
    assert fdb.learn(M1, 0.0, dst=Remote(A))[0] == "new"
    assert fdb.learn(M2, 0.0, port=1)[0] == "new"      # local: not counted
    assert fdb.learn(M3, 0.0, dst=Remote(A))[0] == "new"
    assert fdb.learn(M4, 0.0, dst=Remote(A)) == ("full", None)
    assert fdb.lookup(M4) is None
    # a full table still refreshes and moves what it has among remotes
    assert fdb.learn(M1, 1.0, dst=Remote(A))[0] == "refresh"
    assert fdb.learn(M1, 2.0, dst=Remote(B))[0] == "moved"
    # but a local entry cannot move to a remote: that would add one
    assert fdb.learn(M2, 3.0, dst=Remote(A)) == ("full", None)
    assert len(fdb) == 3


def test_maxaddress_bounds_control_plane_too() -> None:
    fdb = Fdb(4097, maxaddress=1)
    fdb.add(M1, dst=A)
    with pytest.raises(TableFull):
        fdb.add(M2, dst=A)
    with pytest.raises(TableFull):
        fdb.append(ZERO_MAC, A)
    with pytest.raises(TableFull):
        fdb.replace(M2, dst=A)
    fdb.replace(M1, dst=B)  # rewriting an existing entry needs no room
    fdb.add(M3, port=2)     # local entries do not count
    assert snapshot(fdb) == [(M1, "permanent", None, rs(B), 0.0), (M3, "permanent", 2, [], 0.0)]


def test_a_configured_entry_takes_the_place_of_the_oldest_learned_one() -> None:
    """Learned entries filling maxaddress never make a permanent or static add fail: the
    oldest learned remote entry gives way (it would age out anyway)."""
    fdb = Fdb(4097, maxaddress=2)
    fdb.learn(M1, 5.0, dst=Remote(A))
    fdb.learn(M2, 3.0, dst=Remote(A))
    fdb.add(M3, dst=B, state="static")
    assert [m for m, *_ in snapshot(fdb)] == [M1, M3]       # M2 (older) went
    fdb.replace(M4, dst=B)
    assert [m for m, *_ in snapshot(fdb)] == [M3, M4]
    with pytest.raises(TableFull, match="2 remote entries"):
        fdb.append(ZERO_MAC, A)                             # nothing learned left to evict


def test_local_learning_is_bounded_per_port_and_per_network() -> None:
    """No container can fill the table with random source MACs: learned local entries are
    bounded per port and per network ("limited"); endpoints (permanent) never count."""
    fdb = Fdb(4097, max_learned=5, max_learned_per_port=3)
    fdb.add(M1, port=1)
    macs = [bytes((2, 0, 0, 9, 0, i)) for i in range(10)]
    assert [fdb.learn(m, 0.0, port=1)[0] for m in macs[:4]] == ["new"] * 3 + ["limited"]
    fdb.limited_ports.add(1)                                  # as the switch notes it
    assert [fdb.learn(m, 0.0, port=2)[0] for m in macs[4:7]] == ["new", "new", "limited"]
    assert fdb.learned_local == 5 and fdb.learned_by_port == {1: 3, 2: 2}
    assert fdb.learn(macs[0], 1.0, port=2)[0] == "moved"     # the network's count is unchanged
    assert fdb.learn(macs[1], 1.0, port=2)[0] == "limited"   # ... but port 2 is full now
    assert fdb.learned_by_port == {1: 2, 2: 3}
    assert 1 not in fdb.limited_ports                         # below its bound again
    fdb.delete(macs[0])
    assert fdb.learn(macs[8], 1.0, port=1)[0] == "new"
    assert fdb.remove_port(1) == 4 and fdb.learned_local == 2


def test_learning_limits_zero_are_unbounded() -> None:
    fdb = Fdb(4097, max_learned=0, max_learned_per_port=0)
    for i in range(3000):
        assert fdb.learn(bytes((2, 0, 0, 0, i >> 8, i & 0xFF)), 0.0, port=1)[0] == "new"


def test_maxaddress_zero_is_unbounded() -> None:
    fdb = Fdb(4097, maxaddress=0)
    for i in range(300):
        assert fdb.learn(bytes((2, 0, 0, 0, i >> 8, i & 0xFF)), 0.0, dst=A)[0] == "new"
    assert len(fdb) == 300


# --------------------------------------------------------------------------- ageing


def test_age_by_updated_and_now() -> None:
    fdb = Fdb(4097, ageing=300.0)
    fdb.learn(M1, 10.0, dst=Remote(A))
    fdb.learn(M2, 20.0, port=1)
    assert fdb.age(309.9) == []
    gone = fdb.age(310.0)  # updated + ageing <= now
    assert [e.mac for e in gone] == [M1]
    assert gone[0].location() == "198.18.0.2"
    assert [e.mac for e in fdb] == [M2]
    assert [e.mac for e in fdb.age(320.0)] == [M2]
    assert len(fdb) == 0


def test_refreshed_entry_survives_ageing() -> None:
    fdb = Fdb(4097, ageing=30.0)
    fdb.learn(M1, 0.0, dst=Remote(A))
    fdb.learn(M2, 0.0, dst=Remote(A))
    fdb.learn(M1, 25.0, dst=Remote(A))          # traffic from M1 refreshes it
    assert [e.mac for e in fdb.age(40.0)] == [M2]
    assert [e.mac for e in fdb] == [M1]
    assert fdb.age(54.9) == []
    assert [e.mac for e in fdb.age(55.0)] == [M1]


def test_moved_entry_ages_from_the_move() -> None:
    fdb = Fdb(4097, ageing=30.0)
    fdb.learn(M1, 0.0, dst=Remote(A))
    fdb.learn(M1, 20.0, dst=Remote(B))
    assert fdb.age(45.0) == []
    assert len(fdb.age(50.0)) == 1


def test_permanent_and_static_never_age() -> None:
    fdb = Fdb(4097, ageing=1.0)
    fdb.add(M1, dst=A, state="permanent")
    fdb.add(M2, dst=A, state="static")
    fdb.add(M3, port=1, state="static")
    fdb.append(ZERO_MAC, A)
    assert fdb.age(1e9) == []
    assert len(fdb) == 4


def test_learned_state_through_control_plane_ages() -> None:
    fdb = Fdb(4097, ageing=10.0)
    fdb.add(M1, dst=A, state="learned", now=5.0)
    assert fdb.age(14.0) == []
    assert [e.mac for e in fdb.age(15.0)] == [M1]


# --------------------------------------------------------------------------- dumps


def test_rows_one_per_destination_sorted_by_mac() -> None:
    fdb = Fdb(77)
    fdb.add(M2, port=3, state="static", now=1.0)
    fdb.append(ZERO_MAC, B)
    fdb.append(ZERO_MAC, A)
    fdb.add(M1, dst=C)
    assert fdb.rows() == [
        {"vni": 77, "mac": "00:00:00:00:00:00", "state": "permanent", "updated": 0.0,
         "port": None, "dst": "198.18.0.3", "dst_port": None, "dst_vni": None},
        {"vni": 77, "mac": "00:00:00:00:00:00", "state": "permanent", "updated": 0.0,
         "port": None, "dst": "198.18.0.2", "dst_port": None, "dst_vni": None},
        {"vni": 77, "mac": "02:00:00:00:00:01", "state": "permanent", "updated": 0.0,
         "port": None, "dst": "198.18.0.4", "dst_port": None, "dst_vni": None},
        {"vni": 77, "mac": "02:00:00:00:00:02", "state": "static", "updated": 1.0,
         "port": 3, "dst": None, "dst_port": None, "dst_vni": None},
    ]


def test_is_group_mac() -> None:
    assert all(is_group_mac(g) for g in GROUPS)
    assert not is_group_mac(M1)
