"""Forwarding behaviour (DESIGN.md §2) of both cores: ``impl`` is ``dataplane.switch`` (py) or
``_fastpath.core`` (c); every test builds ``impl.Switch`` and drives only the shared API.

The topology is the walkthrough's (reference/docker-overlay-walkthrough.txt): VNI 4097, two local
endpoints c1 (port 1) and c2 (port 2), one remote peer 192.168.55.3 behind 198.18.0.2, all
programmed as permanent FDB + neighbour entries the way Docker's peerAdd does.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from dataplane import wire
from dataplane.tunnel import Outer
from dataplane.errors import EntryExists, EntryNotFound, InvalidArgument
from tests.strategies import (
    BROADCAST,
    C1_IP,
    C1_MAC,
    C2_IP,
    C2_MAC,
    LOCAL,
    MCAST_MAC,
    PEER_IP,
    PEER_MAC,
    REMOTE,
    REMOTE2,
    REMOTE3,
    STRANGER,
    UNKNOWN_IP,
    UNKNOWN_MAC,
    VNI,
    VNI_B,
    ZERO_MAC,
    arp_frame,
    arp_request,
    eth,
    ipv4_frame,
    mac_text,
    sized_frame,
    vxlan_datagram,
    vxlan_hdr,
)

HDR = vxlan_hdr(VNI)
X_MAC = bytes.fromhex("02000000aa01")   # a MAC nobody configured (learning tests)


OUT = Outer()      # the outer header rules' defaults: the VTEP's port, TOS 0, TTL 64, no DF


def walkthrough(impl: Any, *, proxy: bool = True, learning: bool = False, strict: bool = True,
                allow: tuple[str, ...] = (), flood: tuple[IPv4Address, ...] = (),
                mtu: int = 1450, ageing: float = 300.0, maxaddress: int = 0,
                src_port_range: tuple[int, int] | None = None) -> Any:
    kw: dict[str, Any] = {"strict": strict, "allow": allow}
    if src_port_range is not None:
        kw["src_port_range"] = src_port_range
    sw = impl.Switch(LOCAL, **kw)
    sw.add_network(VNI, mtu=mtu, proxy=proxy, learning=learning, ageing=ageing,
                   maxaddress=maxaddress)
    sw.add_port(1, VNI, C1_MAC)
    sw.add_port(2, VNI, "02:42:c0:a8:37:05")
    sw.fdb_add(VNI, "02:42:c0:a8:37:03", "198.18.0.2")
    sw.neigh_add(VNI, "192.168.55.3", "02:42:c0:a8:37:03")
    sw.neigh_add(VNI, C1_IP, C1_MAC)            # Docker programs local endpoints too
    sw.neigh_add(VNI, str(C2_IP), C2_MAC)
    for r in flood:
        sw.fdb_append(VNI, ZERO_MAC, r)
    return sw


def drops(sw: Any) -> dict[str, int]:
    return {k: v for k, v in sw.counters()["drops"].items() if v}


def counts(sw: Any) -> dict[str, int]:
    return {k: v for k, v in sw.counters()["counters"].items() if v}


def dropped(sw: Any, actions: list[Any], reason: str) -> None:
    assert actions == []
    assert drops(sw) == {reason: 1}


def to_peer(payload: bytes = b"data") -> bytes:
    return ipv4_frame(PEER_MAC, C1_MAC, C1_IP, PEER_IP, payload=payload)


def from_peer(dst: bytes = C1_MAC, src: bytes = PEER_MAC, payload: bytes = b"back") -> bytes:
    return ipv4_frame(dst, src, PEER_IP, C1_IP, sport=5201, dport=40000, payload=payload)


def reply_bytes(requester: bytes, requester_ip: IPv4Address, answer: bytes,
                answer_ip: IPv4Address) -> bytes:
    return arp_frame(2, answer, answer_ip, requester_ip, tha=requester, dst=requester)


# --------------------------------------------------------------------------- API shape


def test_action_tuple_shapes(impl: Any) -> None:
    sw = walkthrough(impl, flood=(REMOTE2,))
    acts = sw.from_port(1, to_peer(), 0.0) + sw.from_port(1, eth(BROADCAST, C1_MAC, 0x88B5), 0.0)
    acts += sw.from_underlay(REMOTE, HDR + from_peer(), 0.0)
    kinds = [a[0] for a in acts]
    assert kinds == ["vtep", "port", "vtep", "port"]
    for a in acts:
        if a[0] == "port":
            assert len(a) == 3 and type(a[1]) is int and type(a[2]) is bytes
        else:
            assert len(a) == 5 and isinstance(a[1], IPv4Address) and type(a[2]) is int
            assert type(a[3]) is bytes and type(a[4]) is Outer


def test_counter_names(impl: Any) -> None:
    c = walkthrough(impl).counters()
    assert list(c["drops"]) == list(wire.DROP_REASONS)
    assert list(c["counters"]) == list(wire.EVENT_COUNTERS)
    assert set(c["underlay"]) == {"rx_packets", "rx_bytes", "tx_packets", "tx_bytes"}
    assert list(c["ports"]) == [1, 2]
    assert all(v == 0 for v in c["drops"].values()) and all(v == 0 for v in c["counters"].values())


def test_configuration_errors(impl: Any) -> None:
    sw = impl.Switch(LOCAL)
    for vni in (0, 0x1000000, -1):
        with pytest.raises(InvalidArgument):
            sw.add_network(vni)
    sw.add_network(VNI)
    with pytest.raises(InvalidArgument):
        sw.add_network(VNI)
    with pytest.raises(EntryNotFound):
        sw.add_port(1, VNI_B)
    sw.add_port(1, VNI, C1_MAC)
    with pytest.raises(InvalidArgument):
        sw.add_port(1, VNI)
    with pytest.raises(InvalidArgument):
        sw.add_port(-1, VNI)
    with pytest.raises(EntryNotFound):
        sw.del_port(7)
    with pytest.raises(EntryNotFound):
        sw.fdb_add(VNI_B, PEER_MAC, REMOTE)
    with pytest.raises(EntryNotFound):
        sw.neigh_add(VNI_B, PEER_IP, PEER_MAC)
    with pytest.raises(EntryNotFound):
        sw.del_network(VNI_B)
    sw.add_network(0xFFFFFF)   # the top of the 24-bit range is a valid VNI


@pytest.mark.parametrize("rng", [(0, 10), (10, 5), (1, 65536)])
def test_bad_src_port_range(impl: Any, rng: tuple[int, int]) -> None:
    with pytest.raises(InvalidArgument):
        impl.Switch(LOCAL, src_port_range=rng)


def test_table_errors_surface(impl: Any) -> None:
    sw = walkthrough(impl)
    with pytest.raises(EntryExists):
        sw.fdb_add(VNI, PEER_MAC, REMOTE2)
    with pytest.raises(InvalidArgument):
        sw.fdb_append(VNI, PEER_MAC, REMOTE2)
    with pytest.raises(InvalidArgument):
        sw.fdb_replace(VNI, ZERO_MAC, REMOTE2)
    with pytest.raises(EntryNotFound):
        sw.fdb_del(VNI, UNKNOWN_MAC)
    with pytest.raises(EntryExists):
        sw.neigh_add(VNI, PEER_IP, PEER_MAC)
    with pytest.raises(EntryNotFound):
        sw.neigh_del(VNI, UNKNOWN_IP)
    with pytest.raises(InvalidArgument):
        sw.neigh_add(VNI, UNKNOWN_IP, BROADCAST)
    with pytest.raises(InvalidArgument):
        sw.fdb_add(VNI, "not-a-mac", REMOTE)


def test_dumps(impl: Any) -> None:
    sw = walkthrough(impl, flood=(REMOTE2,))
    assert sw.fdb_dump() == [
        {"vni": VNI, "mac": "00:00:00:00:00:00", "state": "permanent", "updated": 0.0,
         "port": None, "dst": "198.18.0.3", "dst_port": None, "dst_vni": None},
        {"vni": VNI, "mac": "02:42:c0:a8:37:03", "state": "permanent", "updated": 0.0,
         "port": None, "dst": "198.18.0.2", "dst_port": None, "dst_vni": None},
        {"vni": VNI, "mac": "02:42:c0:a8:37:04", "state": "permanent", "updated": 0.0,
         "port": 1, "dst": None, "dst_port": None, "dst_vni": None},
        {"vni": VNI, "mac": "02:42:c0:a8:37:05", "state": "permanent", "updated": 0.0,
         "port": 2, "dst": None, "dst_port": None, "dst_vni": None},
    ]
    assert sw.neigh_dump() == [
        {"vni": VNI, "ip": "192.168.55.3", "lladdr": "02:42:c0:a8:37:03", "state": "permanent"},
        {"vni": VNI, "ip": "192.168.55.4", "lladdr": "02:42:c0:a8:37:04", "state": "permanent"},
        {"vni": VNI, "ip": "192.168.55.5", "lladdr": "02:42:c0:a8:37:05", "state": "permanent"},
    ]


def test_table_control_ops_change_forwarding(impl: Any) -> None:
    sw = walkthrough(impl)
    sw.fdb_replace(VNI, PEER_MAC, REMOTE3, "static")
    assert [a[1] for a in sw.from_port(1, to_peer(), 0.0)] == [REMOTE3]
    sw.fdb_del(VNI, PEER_MAC, REMOTE3)
    sw.fdb_append(VNI, ZERO_MAC, REMOTE)
    sw.fdb_append(VNI, ZERO_MAC, REMOTE2)
    assert [a[1] for a in sw.from_port(1, to_peer(), 0.0)] == [2, REMOTE, REMOTE2]
    assert sw.fdb_flush(VNI) == 0                 # all permanent
    assert sw.fdb_flush(VNI, keep_permanent=False) == 3   # flood list, c1, c2
    assert sw.fdb_dump() == []
    sw.neigh_replace(VNI, PEER_IP, X_MAC, "reachable")
    acts = sw.from_port(1, arp_request(C1_MAC, C1_IP, PEER_IP), 0.0)
    assert acts[-1] == ("port", 1, reply_bytes(C1_MAC, C1_IP, X_MAC, PEER_IP))
    assert sw.neigh_flush(VNI) == 3
    assert sw.neigh_dump() == []


# --------------------------------------------------------------------------- ARP proxy


def test_arp_for_remote_peer_is_answered_locally_and_never_tunnelled(impl: Any) -> None:
    sw = walkthrough(impl, flood=(REMOTE2, REMOTE3))
    req = arp_request(C1_MAC, C1_IP, PEER_IP)
    acts = sw.from_port(1, req, 1.0)
    assert acts == [("port", 2, req),                                    # br0 floods it
                    ("port", 1, reply_bytes(C1_MAC, C1_IP, PEER_MAC, PEER_IP))]
    assert len(acts[1][2]) == 42
    assert counts(sw) == {"proxy_replies": 1}
    assert drops(sw) == {} and sw.events() == []
    assert sw.counters()["underlay"]["tx_packets"] == 0


def test_unicast_arp_probe_to_remote_peer_is_answered(impl: Any) -> None:
    # arping's follow-up requests go unicast to the MAC it learned
    sw = walkthrough(impl, flood=(REMOTE2,))
    req = arp_request(C1_MAC, C1_IP, PEER_IP, dst=PEER_MAC)
    assert sw.from_port(1, req, 0.0) == [
        ("port", 1, reply_bytes(C1_MAC, C1_IP, PEER_MAC, PEER_IP))]


def test_padded_arp_request_answered_with_42_bytes(impl: Any) -> None:
    sw = walkthrough(impl)
    req = arp_request(C2_MAC, C2_IP, PEER_IP, pad=18)
    assert sw.from_port(2, req, 0.0) == [
        ("port", 1, req), ("port", 2, reply_bytes(C2_MAC, C2_IP, PEER_MAC, PEER_IP))]


def test_arp_for_local_endpoint_is_not_proxied(impl: Any) -> None:
    sw = walkthrough(impl, flood=(REMOTE2,))
    req = arp_request(C2_MAC, C2_IP, C1_IP)
    assert sw.from_port(2, req, 0.0) == [("port", 1, req)]  # c1 answers for itself
    unicast = arp_request(C2_MAC, C2_IP, C1_IP, dst=C1_MAC)
    assert sw.from_port(2, unicast, 0.0) == [("port", 1, unicast)]
    assert counts(sw) == {} and sw.events() == [] and drops(sw) == {}


def test_arp_without_neighbour_is_l3miss(impl: Any) -> None:
    sw = walkthrough(impl, flood=(REMOTE2,))
    req = arp_request(C1_MAC, C1_IP, UNKNOWN_IP)
    assert sw.from_port(1, req, 0.0) == [("port", 2, req)]
    assert counts(sw) == {"l3miss": 1}
    assert sw.events() == [("l3miss", VNI, "192.168.55.99", "", "")]


@pytest.mark.parametrize("tip", ["127.0.0.1", "224.0.0.1", "239.1.2.3"])
def test_arp_for_loopback_or_multicast_is_silently_consumed(impl: Any, tip: str) -> None:
    sw = walkthrough(impl, flood=(REMOTE2,))
    sw.neigh_add(VNI, tip, X_MAC)
    req = arp_request(C1_MAC, C1_IP, tip)
    assert sw.from_port(1, req, 0.0) == [("port", 2, req)]
    assert counts(sw) == {} and sw.events() == []


def test_proxy_off_arp_is_replicated_to_flood_list(impl: Any) -> None:
    sw = walkthrough(impl, proxy=False, flood=(REMOTE2, REMOTE3))
    req = arp_request(C1_MAC, C1_IP, PEER_IP)
    sport = wire.src_port(req)
    assert sw.from_port(1, req, 0.0) == [("port", 2, req), ("vtep", REMOTE2, sport, HDR + req, OUT),
                                         ("vtep", REMOTE3, sport, HDR + req, OUT)]
    miss = arp_request(C1_MAC, C1_IP, UNKNOWN_IP)
    assert len(sw.from_port(1, miss, 0.0)) == 3
    assert counts(sw) == {} and sw.events() == []   # no proxy: no l3miss either


def test_proxy_off_unicast_arp_goes_to_the_peer(impl: Any) -> None:
    sw = walkthrough(impl, proxy=False)
    req = arp_request(C1_MAC, C1_IP, PEER_IP, dst=PEER_MAC)
    assert sw.from_port(1, req, 0.0) == [("vtep", REMOTE, wire.src_port(req), HDR + req, OUT)]


def test_arp_request_from_underlay_is_delivered_not_answered(impl: Any) -> None:
    sw = walkthrough(impl)
    req = arp_request(PEER_MAC, PEER_IP, C1_IP)
    assert sw.from_underlay(REMOTE, HDR + req, 0.0) == [("port", 1, req), ("port", 2, req)]
    assert counts(sw) == {}


# --------------------------------------------------------------------------- from a port


@pytest.mark.parametrize("rng", [None, (49152, 65535), (6000, 6100), (4789, 4789)])
def test_unicast_to_remote_is_encapsulated_once(impl: Any, rng: tuple[int, int] | None) -> None:
    sw = walkthrough(impl, flood=(REMOTE2,), src_port_range=rng)
    frame = to_peer(b"x" * 100)
    acts = sw.from_port(1, frame, 0.0)
    assert len(acts) == 1
    kind, dst, sport, payload, _outer = acts[0]
    lo, hi = rng or (49152, 65535)
    assert (kind, dst) == ("vtep", REMOTE)
    assert lo <= sport <= hi and sport == wire.src_port(frame, lo, hi)
    assert payload[:8] == bytes.fromhex("0800000000100100") and payload[8:] == frame


def test_same_flow_same_sport_different_flows_spread(impl: Any) -> None:
    sw = walkthrough(impl)
    sports = set()
    for i in range(64):
        f = ipv4_frame(PEER_MAC, C1_MAC, C1_IP, PEER_IP, sport=30000 + i, dport=80)
        a = sw.from_port(1, f, 0.0)
        b = sw.from_port(1, f, 0.0)
        assert a[0][2] == b[0][2]
        sports.add(a[0][2])
    assert len(sports) > 32


def test_unicast_to_local_port(impl: Any) -> None:
    sw = walkthrough(impl, flood=(REMOTE2,))
    f = ipv4_frame(C2_MAC, C1_MAC, C1_IP, C2_IP)
    assert sw.from_port(1, f, 0.0) == [("port", 2, f)]
    assert sw.counters()["underlay"]["tx_packets"] == 0


def test_unknown_unicast_floods_and_replicates_in_list_order(impl: Any) -> None:
    sw = walkthrough(impl)
    for r in (REMOTE3, REMOTE, REMOTE2):   # appended order, not sorted
        sw.fdb_append(VNI, ZERO_MAC, r)
    f = ipv4_frame(UNKNOWN_MAC, C1_MAC, C1_IP, UNKNOWN_IP)
    sport = wire.src_port(f)
    assert sw.from_port(1, f, 0.0) == [
        ("port", 2, f), ("vtep", REMOTE3, sport, HDR + f, OUT), ("vtep", REMOTE, sport, HDR + f, OUT),
        ("vtep", REMOTE2, sport, HDR + f, OUT)]
    assert counts(sw) == {} and sw.events() == []


def test_unknown_unicast_without_flood_list_is_l2miss(impl: Any) -> None:
    sw = walkthrough(impl)
    f = ipv4_frame(UNKNOWN_MAC, C1_MAC, C1_IP, UNKNOWN_IP)
    assert sw.from_port(1, f, 0.0) == [("port", 2, f)]   # br0 still floods locally
    assert counts(sw) == {"l2miss": 1}
    assert sw.events() == [("l2miss", VNI, "02:42:c0:a8:37:ee", "", "")]
    assert drops(sw) == {}


def test_broadcast_goes_to_other_ports_and_flood_list(impl: Any) -> None:
    sw = walkthrough(impl, flood=(REMOTE2, REMOTE3))
    sw.add_port(5, VNI)
    f = ipv4_frame(BROADCAST, C2_MAC, C2_IP, "192.168.55.255")
    sport = wire.src_port(f)
    assert sw.from_port(2, f, 0.0) == [("port", 1, f), ("port", 5, f),
                                       ("vtep", REMOTE2, sport, HDR + f, OUT),
                                       ("vtep", REMOTE3, sport, HDR + f, OUT)]


def test_broadcast_without_flood_list_is_not_a_miss(impl: Any) -> None:
    sw = walkthrough(impl)
    f = eth(BROADCAST, C1_MAC, 0x88B5, b"hello")
    m = eth(MCAST_MAC, C1_MAC, 0x88B5, b"hello")
    assert sw.from_port(1, f, 0.0) == [("port", 2, f)]
    assert sw.from_port(1, m, 0.0) == [("port", 2, m)]
    assert counts(sw) == {} and sw.events() == []


def test_multicast_mac_entry_takes_precedence_over_flood_list(impl: Any) -> None:
    sw = walkthrough(impl, flood=(REMOTE2,))
    sw.fdb_append(VNI, MCAST_MAC, REMOTE3)
    f = eth(MCAST_MAC, C1_MAC, 0x88B5, b"group")
    assert sw.from_port(1, f, 0.0) == [("port", 2, f),
                                       ("vtep", REMOTE3, wire.src_port(f), HDR + f, OUT)]


def test_hairpin_is_dropped(impl: Any) -> None:
    sw = walkthrough(impl, flood=(REMOTE2,))
    f = ipv4_frame(C1_MAC, C1_MAC, C1_IP, C1_IP)
    dropped(sw, sw.from_port(1, f, 0.0), "hairpin")


def test_unknown_port(impl: Any) -> None:
    sw = walkthrough(impl)
    dropped(sw, sw.from_port(9, to_peer(), 0.0), "unknown_port")
    assert 9 not in sw.counters()["ports"]


@pytest.mark.parametrize("n", [0, 1, 13])
def test_runt_from_port(impl: Any, n: int) -> None:
    sw = walkthrough(impl)
    dropped(sw, sw.from_port(1, to_peer()[:n], 0.0), "runt")
    assert sw.counters()["ports"][1]["rx_packets"] == 1


@pytest.mark.parametrize("mtu", [1450, 100])
def test_oversize_from_port(impl: Any, mtu: int) -> None:
    sw = walkthrough(impl, mtu=mtu)
    ok = sized_frame(PEER_MAC, C1_MAC, mtu + 14)
    assert sw.from_port(1, ok, 0.0) == [("vtep", REMOTE, wire.src_port(ok), HDR + ok, OUT)]
    dropped(sw, sw.from_port(1, sized_frame(PEER_MAC, C1_MAC, mtu + 15), 0.0), "oversize")


@pytest.mark.parametrize("src", [ZERO_MAC, BROADCAST, MCAST_MAC, bytes.fromhex("330000000001")])
def test_bad_src_mac_from_port(impl: Any, src: bytes) -> None:
    sw = walkthrough(impl)
    dropped(sw, sw.from_port(1, ipv4_frame(PEER_MAC, src, C1_IP, PEER_IP), 0.0), "bad_src_mac")
    assert sw.fdb_dump() == walkthrough(impl).fdb_dump()


@pytest.mark.parametrize("frame", [
    arp_request(C1_MAC, C1_IP, PEER_IP)[:41],
    arp_request(C1_MAC, C1_IP, PEER_IP)[:14],
    arp_request(C1_MAC, C1_IP, PEER_IP, hlen=8),
    arp_request(C1_MAC, C1_IP, PEER_IP, ptype=0x86DD),
    arp_request(C1_MAC, C1_IP, PEER_IP, htype=6),
])
def test_bad_arp_from_port(impl: Any, frame: bytes) -> None:
    sw = walkthrough(impl, flood=(REMOTE2,))
    dropped(sw, sw.from_port(1, frame, 0.0), "bad_arp")
    assert counts(sw) == {} and sw.events() == []


def test_port_learning(impl: Any) -> None:
    sw = walkthrough(impl)
    f = ipv4_frame(PEER_MAC, X_MAC, "192.168.55.50", PEER_IP)
    sw.from_port(2, f, 7.0)
    assert sw.events() == [("learned", VNI, "02:00:00:00:aa:01", "", "port:2")]
    assert counts(sw) == {"learned": 1}
    back = ipv4_frame(X_MAC, PEER_MAC, PEER_IP, "192.168.55.50")
    assert sw.from_underlay(REMOTE, HDR + back, 8.0) == [("port", 2, back)]
    to_x = ipv4_frame(X_MAC, C1_MAC, C1_IP, "192.168.55.50")
    assert sw.from_port(1, to_x, 8.0) == [("port", 2, to_x)]
    # the endpoint moves to port 1
    sw.from_port(1, f, 9.0)
    assert sw.events() == [("moved", VNI, "02:00:00:00:aa:01", "port:2", "port:1")]
    assert {"vni": VNI, "mac": "02:00:00:00:aa:01", "state": "learned", "updated": 9.0,
            "port": 1, "dst": None, "dst_port": None, "dst_vni": None} in sw.fdb_dump()


def test_port_learning_does_not_move_static_endpoint(impl: Any) -> None:
    sw = walkthrough(impl)
    f = ipv4_frame(BROADCAST, C1_MAC, C1_IP, "192.168.55.255")
    assert sw.from_port(2, f, 0.0) == [("port", 1, f)]   # forwarded, entry kept
    assert sw.events() == [] and counts(sw) == {}
    assert sw.fdb_dump() == walkthrough(impl).fdb_dump()


def test_port_without_mac_learns_it(impl: Any) -> None:
    sw = walkthrough(impl)
    sw.add_port(3, VNI)
    f = eth(BROADCAST, X_MAC, 0x88B5)
    assert sw.from_port(3, f, 0.0) == [("port", 1, f), ("port", 2, f)]
    assert sw.events() == [("learned", VNI, "02:00:00:00:aa:01", "", "port:3")]


# --------------------------------------------------------------------------- from the underlay


def test_underlay_unicast_to_local_endpoint(impl: Any) -> None:
    sw = walkthrough(impl)
    f = from_peer()
    assert sw.from_underlay(REMOTE, HDR + f, 0.0) == [("port", 1, f)]
    assert sw.from_underlay("198.18.0.2", HDR + f, 0.0) == [("port", 1, f)]


def test_underlay_broadcast_and_unknown_go_to_all_local_ports(impl: Any) -> None:
    sw = walkthrough(impl, flood=(REMOTE2,))
    b = eth(BROADCAST, PEER_MAC, 0x88B5, b"x")
    u = from_peer(dst=UNKNOWN_MAC)
    assert sw.from_underlay(REMOTE, HDR + b, 0.0) == [("port", 1, b), ("port", 2, b)]
    assert sw.from_underlay(REMOTE, HDR + u, 0.0) == [("port", 1, u), ("port", 2, u)]
    # split horizon: never back to the underlay, no miss events from the underlay side
    assert sw.counters()["underlay"]["tx_packets"] == 0
    assert counts(sw) == {} and sw.events() == []


def test_underlay_minimal_frame_accepted(impl: Any) -> None:
    sw = walkthrough(impl)
    f = eth(C1_MAC, PEER_MAC, 0x88B5)  # exactly 14 bytes
    assert sw.from_underlay(REMOTE, HDR + f, 0.0) == [("port", 1, f)]


def test_not_allowed(impl: Any) -> None:
    sw = walkthrough(impl, allow=("198.18.0.0/24",))
    f = from_peer()
    assert sw.from_underlay(REMOTE, HDR + f, 0.0) == [("port", 1, f)]
    dropped(sw, sw.from_underlay(STRANGER, HDR + f, 0.0), "not_allowed")
    # checked first: a short datagram from outside is not_allowed, not short_header
    assert sw.from_underlay("10.0.0.1", b"\x08", 0.0) == []
    assert drops(sw) == {"not_allowed": 2}


def test_allow_list_several_networks(impl: Any) -> None:
    sw = walkthrough(impl, allow=("10.0.0.0/8", "198.18.0.2/32"))
    f = from_peer()
    assert sw.from_underlay(REMOTE, HDR + f, 0.0) == [("port", 1, f)]
    assert sw.from_underlay("10.9.9.9", HDR + f, 0.0) == [("port", 1, f)]
    assert sw.from_underlay(REMOTE2, HDR + f, 0.0) == []
    assert drops(sw) == {"not_allowed": 1}


def test_empty_allow_accepts_anyone(impl: Any) -> None:
    sw = walkthrough(impl)
    f = from_peer()
    assert sw.from_underlay(STRANGER, HDR + f, 0.0) == [("port", 1, f)]


@pytest.mark.parametrize("n", range(8))
def test_short_header(impl: Any, n: int) -> None:
    sw = walkthrough(impl)
    dropped(sw, sw.from_underlay(REMOTE, HDR[:n], 0.0), "short_header")


@pytest.mark.parametrize("flags", [0x00, 0x80, 0x04, 0xF7])
def test_bad_flags(impl: Any, flags: int) -> None:
    for strict in (True, False):
        sw = walkthrough(impl, strict=strict)
        dg = vxlan_datagram(VNI, from_peer(), flags=flags)
        dropped(sw, sw.from_underlay(REMOTE, dg, 0.0), "bad_flags")


def test_unknown_vni(impl: Any) -> None:
    sw = walkthrough(impl)
    dropped(sw, sw.from_underlay(REMOTE, vxlan_datagram(VNI_B, from_peer()), 0.0), "unknown_vni")


def test_unknown_vni_checked_before_reserved_bits(impl: Any) -> None:
    sw = walkthrough(impl)
    dg = vxlan_datagram(VNI_B, from_peer(), rsvd2=1)
    dropped(sw, sw.from_underlay(REMOTE, dg, 0.0), "unknown_vni")


RESERVED = [{"flags": 0x88}, {"flags": 0x09}, {"flags": 0x0C}, {"rsvd1": b"\x01\x00\x00"},
            {"rsvd1": b"\x00\x00\x80"}, {"rsvd2": 0x01}, {"rsvd2": 0x80}]


@pytest.mark.parametrize("kw", RESERVED)
def test_reserved_bits_strict_drops_lenient_accepts(impl: Any, kw: dict[str, Any]) -> None:
    f = from_peer()
    dg = vxlan_datagram(VNI, f, **kw)
    strict = walkthrough(impl, strict=True)
    dropped(strict, strict.from_underlay(REMOTE, dg, 0.0), "reserved_bits")
    lenient = walkthrough(impl, strict=False)
    assert lenient.from_underlay(REMOTE, dg, 0.0) == [("port", 1, f)]
    assert drops(lenient) == {}


@pytest.mark.parametrize("n", [0, 1, 13])
def test_runt_from_underlay(impl: Any, n: int) -> None:
    sw = walkthrough(impl)
    dropped(sw, sw.from_underlay(REMOTE, HDR + from_peer()[:n], 0.0), "runt")


@pytest.mark.parametrize("mtu", [1450, 100])
def test_oversize_from_underlay(impl: Any, mtu: int) -> None:
    sw = walkthrough(impl, mtu=mtu)
    ok = sized_frame(C1_MAC, PEER_MAC, mtu + 14)
    assert sw.from_underlay(REMOTE, HDR + ok, 0.0) == [("port", 1, ok)]
    big = sized_frame(C1_MAC, PEER_MAC, mtu + 15)
    dropped(sw, sw.from_underlay(REMOTE, HDR + big, 0.0), "oversize")


@pytest.mark.parametrize("src", [ZERO_MAC, BROADCAST, MCAST_MAC])
def test_bad_src_mac_from_underlay(impl: Any, src: bytes) -> None:
    sw = walkthrough(impl, learning=True)
    dropped(sw, sw.from_underlay(REMOTE, HDR + from_peer(src=src), 0.0), "bad_src_mac")
    assert sw.events() == []


@pytest.mark.parametrize("frame", [
    arp_request(PEER_MAC, PEER_IP, C1_IP)[:30],
    arp_request(PEER_MAC, PEER_IP, C1_IP, plen=16),
    arp_request(PEER_MAC, PEER_IP, C1_IP, htype=0),
])
def test_bad_arp_from_underlay(impl: Any, frame: bytes) -> None:
    sw = walkthrough(impl)
    dropped(sw, sw.from_underlay(REMOTE, HDR + frame, 0.0), "bad_arp")


def test_remote_dest_split_horizon(impl: Any) -> None:
    sw = walkthrough(impl, flood=(REMOTE2,))
    f = ipv4_frame(PEER_MAC, bytes.fromhex("02aa00000001"), "192.168.55.60", PEER_IP)
    dropped(sw, sw.from_underlay(REMOTE2, HDR + f, 0.0), "remote_dest")


# --------------------------------------------------------------------------- underlay learning


def test_learning_on_learns_moves_and_forwards(impl: Any) -> None:
    sw = walkthrough(impl, learning=True)
    f = from_peer(src=X_MAC)
    assert sw.from_underlay("198.18.0.7", HDR + f, 10.0) == [("port", 1, f)]
    assert sw.events() == [("learned", VNI, "02:00:00:00:aa:01", "", "198.18.0.7")]
    assert {"vni": VNI, "mac": "02:00:00:00:aa:01", "state": "learned", "updated": 10.0,
            "port": None, "dst": "198.18.0.7", "dst_port": None, "dst_vni": None} in sw.fdb_dump()
    out = ipv4_frame(X_MAC, C1_MAC, C1_IP, "192.168.55.60")
    assert [a[:2] for a in sw.from_port(1, out, 11.0)] == [("vtep", IPv4Address("198.18.0.7"))]
    sw.from_underlay("198.18.0.7", HDR + f, 12.0)        # refresh: no event
    assert sw.events() == []
    sw.from_underlay("198.18.0.8", HDR + f, 13.0)        # migration
    assert sw.events() == [("moved", VNI, "02:00:00:00:aa:01", "198.18.0.7", "198.18.0.8")]
    assert [a[:2] for a in sw.from_port(1, out, 14.0)] == [("vtep", IPv4Address("198.18.0.8"))]
    assert counts(sw) == {"learned": 1, "moved": 1}


def test_learned_remote_moves_to_a_port_and_back(impl: Any) -> None:
    sw = walkthrough(impl, learning=True)
    sw.from_underlay(REMOTE2, HDR + from_peer(src=X_MAC), 0.0)
    sw.from_port(2, eth(BROADCAST, X_MAC, 0x88B5), 1.0)
    sw.from_underlay(REMOTE3, HDR + from_peer(src=X_MAC), 2.0)
    assert sw.events() == [
        ("learned", VNI, "02:00:00:00:aa:01", "", "198.18.0.3"),
        ("moved", VNI, "02:00:00:00:aa:01", "198.18.0.3", "port:2"),
        ("moved", VNI, "02:00:00:00:aa:01", "port:2", "198.18.0.4"),
    ]


def test_learning_ageing(impl: Any) -> None:
    sw = walkthrough(impl, learning=True, ageing=30.0)
    y_mac = bytes.fromhex("02000000aa02")
    sw.from_underlay(REMOTE2, HDR + from_peer(src=X_MAC), 0.0)
    sw.from_underlay(REMOTE3, HDR + from_peer(src=y_mac), 0.0)
    sw.from_underlay(REMOTE2, HDR + from_peer(src=X_MAC), 25.0)   # X refreshed by traffic
    sw.events()
    assert sw.age(29.9) == 0
    assert sw.age(30.0) == 1
    assert sw.events() == [("aged", VNI, "02:00:00:00:aa:02", "198.18.0.4", "")]
    assert sw.age(54.9) == 0
    assert sw.age(55.0) == 1
    assert sw.events() == [("aged", VNI, "02:00:00:00:aa:01", "198.18.0.3", "")]
    assert counts(sw) == {"learned": 2, "aged": 2}
    assert sw.fdb_dump() == walkthrough(impl).fdb_dump()   # permanent entries never age
    assert sw.age(1e9) == 0


def test_ageing_port_learned_entries(impl: Any) -> None:
    sw = walkthrough(impl, ageing=10.0)
    sw.from_port(2, eth(BROADCAST, X_MAC, 0x88B5), 5.0)
    sw.events()
    assert sw.age(14.0) == 0 and sw.age(15.0) == 1
    assert sw.events() == [("aged", VNI, "02:00:00:00:aa:01", "port:2", "")]


def test_ageing_in_steps_expires_what_one_sweep_does(impl: Any) -> None:
    """age_step: a sweep in slices of the table ends with exactly the entries a whole sweep
    (age) leaves, whatever the budget; the compiled core takes several steps for a table
    larger than the budget, the reference one."""
    def filled() -> Any:
        sw = walkthrough(impl, ageing=100.0)
        for i in range(3000):
            # learned entries refreshed at 0..2999 ms, static ones never age
            sw.fdb_add(VNI, f"02:00:00:01:{i >> 8:02x}:{i & 255:02x}", "198.18.0.2",
                       "learned" if i % 3 else "static", i / 1000)
        sw.events()
        return sw

    whole = filled()
    assert whole.age(101.5) == 1000          # two in three are learned, half of them due
    aged_whole = sorted(whole.events())
    for budget in (0, 1, 64, 1000):
        sw = filled()
        steps, total, done = 0, 0, False
        while not done:
            n, done = sw.age_step(101.5, budget)
            total += n
            steps += 1
            assert steps < 100_000
        assert total == 1000
        assert sorted(sw.events()) == aged_whole
        assert sw.fdb_dump() == whole.fdb_dump()
        assert counts(sw)["aged"] == 1000
        if budget in (1, 64) and impl.__name__ != "dataplane.switch":
            assert steps > 1
        else:
            assert steps >= 1
    with pytest.raises(InvalidArgument):
        filled().age_step(1.0, -1)


def test_learning_off_learns_nothing_from_underlay(impl: Any) -> None:
    sw = walkthrough(impl, learning=False)
    before = sw.fdb_dump()
    f = from_peer(src=X_MAC)
    assert sw.from_underlay("198.18.0.7", HDR + f, 0.0) == [("port", 1, f)]
    assert sw.fdb_dump() == before and sw.events() == [] and counts(sw) == {}
    # the unknown MAC is still unknown: flooded, and an l2miss without flood list
    out = ipv4_frame(X_MAC, C1_MAC, C1_IP, "192.168.55.60")
    assert sw.from_port(1, out, 1.0) == [("port", 2, out)]
    assert counts(sw) == {"l2miss": 1}


@pytest.mark.parametrize("state", ["permanent", "static"])
def test_fdb_conflict(impl: Any, state: str) -> None:
    sw = walkthrough(impl, learning=True)
    sw.fdb_add(VNI, X_MAC, REMOTE3, state)
    # a local endpoint's MAC arriving from the underlay
    dropped(sw, sw.from_underlay(REMOTE, HDR + from_peer(src=C1_MAC, dst=C2_MAC), 0.0),
            "fdb_conflict")
    # a static remote arriving from another VTEP
    assert sw.from_underlay(REMOTE2, HDR + from_peer(src=X_MAC), 0.0) == []
    assert drops(sw) == {"fdb_conflict": 2}
    # from where the entry says: fine
    f = from_peer(src=X_MAC)
    assert sw.from_underlay(REMOTE3, HDR + f, 0.0) == [("port", 1, f)]
    assert sw.events() == [] and counts(sw) == {}


def test_learning_full(impl: Any) -> None:
    """maxaddress bounds the remote entries (1 permanent peer + 1 here); local learning is
    bounded separately and does not count against it."""
    sw = walkthrough(impl, learning=True, maxaddress=2)
    f1 = from_peer(src=X_MAC)
    f2 = from_peer(src=bytes.fromhex("02000000aa02"))
    assert sw.from_underlay(REMOTE2, HDR + f1, 0.0) == [("port", 1, f1)]
    assert sw.from_underlay(REMOTE2, HDR + f2, 0.0) == [("port", 1, f2)]  # still delivered
    assert counts(sw) == {"learned": 1, "fdb_full": 1}
    assert len(sw.fdb_dump()) == 4
    sw.from_port(2, eth(BROADCAST, bytes.fromhex("02000000aa03"), 0x88B5), 0.0)
    assert counts(sw) == {"learned": 2, "fdb_full": 1}


# --------------------------------------------------------------------------- VNI isolation


def two_networks(impl: Any) -> Any:
    sw = impl.Switch(LOCAL)
    sw.add_network(VNI)
    sw.add_network(VNI_B, learning=True)
    sw.add_port(1, VNI, C1_MAC)
    sw.add_port(2, VNI, C2_MAC)
    sw.add_port(3, VNI_B, bytes.fromhex("02000000b003"))
    sw.add_port(4, VNI_B, bytes.fromhex("02000000b004"))
    sw.fdb_append(VNI, ZERO_MAC, REMOTE)
    sw.fdb_append(VNI_B, ZERO_MAC, REMOTE2)
    sw.fdb_add(VNI_B, PEER_MAC, REMOTE3)
    sw.neigh_add(VNI_B, PEER_IP, PEER_MAC)
    return sw


def test_vni_isolation_from_ports(impl: Any) -> None:
    sw = two_networks(impl)
    b = eth(BROADCAST, C1_MAC, 0x88B5, b"A")
    assert sw.from_port(1, b, 0.0) == [("port", 2, b),
                                       ("vtep", REMOTE, wire.src_port(b), HDR + b, OUT)]
    # a MAC that lives in B is unknown in A
    to_b = eth(bytes.fromhex("02000000b003"), C1_MAC, 0x88B5, b"A")
    assert [a[:2] for a in sw.from_port(1, to_b, 0.0)] == [("port", 2), ("vtep", REMOTE)]
    # A's neighbour table does not know B's peer
    req = arp_request(C1_MAC, C1_IP, PEER_IP)
    assert sw.from_port(1, req, 0.0) == [("port", 2, req)]
    assert sw.events() == [("l3miss", VNI, "192.168.55.3", "", "")]
    # and B's does
    req_b = arp_request(bytes.fromhex("02000000b003"), C1_IP, PEER_IP)
    acts = sw.from_port(3, req_b, 0.0)
    assert [a[:2] for a in acts] == [("port", 4), ("port", 3)]
    # B's unicast to its peer is encapsulated with B's VNI
    f = eth(PEER_MAC, bytes.fromhex("02000000b004"), 0x88B5, b"B")
    assert sw.from_port(4, f, 0.0) == [("vtep", REMOTE3, wire.src_port(f), vxlan_hdr(VNI_B) + f, OUT)]


def test_vni_isolation_from_underlay(impl: Any) -> None:
    sw = two_networks(impl)
    b = eth(BROADCAST, PEER_MAC, 0x88B5, b"x")
    assert sw.from_underlay(REMOTE, vxlan_hdr(VNI) + b, 0.0) == [("port", 1, b), ("port", 2, b)]
    # (B learns: its peer's MAC is permanent behind REMOTE3, so it must come from there)
    assert sw.from_underlay(REMOTE3, vxlan_hdr(VNI_B) + b, 0.0) == [("port", 3, b), ("port", 4, b)]
    # unicast to a port of A carried on B's VNI: unknown in B, flooded in B only
    u = from_peer(dst=C1_MAC, src=X_MAC)
    assert sw.from_underlay(REMOTE2, vxlan_hdr(VNI_B) + u, 0.0) == [("port", 3, u), ("port", 4, u)]
    # learning in B does not leak into A
    assert sw.events() == [("learned", VNI_B, "02:00:00:00:aa:01", "", "198.18.0.3")]
    out = eth(X_MAC, C1_MAC, 0x88B5)
    assert [a[:2] for a in sw.from_port(1, out, 0.0)] == [("port", 2), ("vtep", REMOTE)]


def test_same_mac_in_two_networks(impl: Any) -> None:
    sw = two_networks(impl)
    sw.fdb_add(VNI, X_MAC, REMOTE)
    sw.fdb_add(VNI_B, X_MAC, REMOTE3)
    f = eth(X_MAC, C1_MAC, 0x88B5)
    g = eth(X_MAC, bytes.fromhex("02000000b003"), 0x88B5)
    assert [a[:2] for a in sw.from_port(1, f, 0.0)] == [("vtep", REMOTE)]
    assert [a[:2] for a in sw.from_port(3, g, 0.0)] == [("vtep", REMOTE3)]
    sw.fdb_del(VNI, X_MAC)
    assert [a[:2] for a in sw.from_port(3, g, 0.0)] == [("vtep", REMOTE3)]


def test_del_network(impl: Any) -> None:
    sw = two_networks(impl)
    sw.del_network(VNI_B)
    assert list(sw.counters()["ports"]) == [1, 2]
    assert all(r["vni"] == VNI for r in sw.fdb_dump())
    assert sw.neigh_dump() == []
    dropped(sw, sw.from_underlay(REMOTE, vxlan_hdr(VNI_B) + from_peer(), 0.0), "unknown_vni")
    assert sw.from_port(3, eth(BROADCAST, C1_MAC, 0x88B5), 0.0) == []
    assert drops(sw) == {"unknown_vni": 1, "unknown_port": 1}
    sw.add_network(VNI_B)   # the VNI can be served again
    sw.add_port(3, VNI_B)


# --------------------------------------------------------------------------- bookkeeping


def test_counters_exact(impl: Any) -> None:
    sw = walkthrough(impl, flood=(REMOTE2,))
    req = arp_request(C1_MAC, C1_IP, PEER_IP)                       # 42 bytes
    uni = to_peer(b"u" * 58)                                        # 14+20+8+58 = 100
    back = from_peer(payload=b"b" * 18)                             # 60
    bcast = eth(BROADCAST, C2_MAC, 0x88B5, b"z" * 66)               # 80
    assert (len(req), len(uni), len(back), len(bcast)) == (42, 100, 60, 80)
    assert len(sw.from_port(1, req, 0.0)) == 2
    assert len(sw.from_port(1, uni, 0.0)) == 1
    assert len(sw.from_underlay(REMOTE, HDR + back, 0.0)) == 1
    assert sw.from_underlay(REMOTE, b"\x08\x00\x00", 0.0) == []
    assert sw.from_port(2, b"\x00" * 10, 0.0) == []
    assert len(sw.from_port(2, bcast, 0.0)) == 2
    assert sw.from_port(9, bcast, 0.0) == []
    c = sw.counters()
    assert c["ports"] == {
        1: {"rx_packets": 2, "rx_bytes": 142, "tx_packets": 3, "tx_bytes": 42 + 60 + 80},
        2: {"rx_packets": 2, "rx_bytes": 90, "tx_packets": 1, "tx_bytes": 42},
    }
    assert c["underlay"] == {"rx_packets": 2, "rx_bytes": 68 + 3,
                             "tx_packets": 2, "tx_bytes": 108 + 88}
    assert drops(sw) == {"short_header": 1, "runt": 1, "unknown_port": 1}
    assert counts(sw) == {"proxy_replies": 1}


def test_counters_are_snapshots(impl: Any) -> None:
    sw = walkthrough(impl)
    c = sw.counters()
    c["drops"]["runt"] = 99
    c["ports"][1]["rx_packets"] = 99
    assert sw.counters()["drops"]["runt"] == 0
    assert sw.counters()["ports"][1]["rx_packets"] == 0


def test_del_port_removes_its_entries(impl: Any) -> None:
    sw = walkthrough(impl)
    sw.from_port(1, eth(BROADCAST, X_MAC, 0x88B5), 0.0)   # learned on port 1
    sw.del_port(1)
    macs = {r["mac"] for r in sw.fdb_dump()}
    assert macs == {"02:42:c0:a8:37:03", "02:42:c0:a8:37:05"}
    assert all(r["port"] != 1 for r in sw.fdb_dump())
    assert list(sw.counters()["ports"]) == [2]
    # c1's MAC is now unknown: flooded to what is left
    f = from_peer()
    assert sw.from_underlay(REMOTE, HDR + f, 0.0) == [("port", 2, f)]
    dropped(sw, sw.from_port(1, f, 0.0), "unknown_port")
    sw.add_port(1, VNI, C1_MAC)                            # and it can come back
    assert sw.from_underlay(REMOTE, HDR + f, 0.0) == [("port", 1, f)]
    assert sw.counters()["ports"][1]["tx_packets"] == 1    # fresh counters


def test_events_drained_once(impl: Any) -> None:
    sw = walkthrough(impl)
    sw.from_port(1, arp_request(C1_MAC, C1_IP, UNKNOWN_IP), 0.0)
    sw.from_port(1, ipv4_frame(UNKNOWN_MAC, C1_MAC, C1_IP, UNKNOWN_IP), 0.0)
    assert sw.events() == [("l3miss", VNI, "192.168.55.99", "", ""),
                           ("l2miss", VNI, mac_text(UNKNOWN_MAC), "", "")]
    assert sw.events() == []
    sw.from_port(1, arp_request(C1_MAC, C1_IP, UNKNOWN_IP), 0.0)
    assert len(sw.events()) == 1   # every miss is reported, not only the first
    assert counts(sw) == {"l3miss": 2, "l2miss": 1}


def test_local_learning_limits_count_and_tell_once_per_port(impl: Any) -> None:
    """A container sending from many source MACs fills only its own bound: frames still go
    out, learn_limit is counted, one event per port until it is below its bound again, and
    an endpoint attached afterwards is never refused."""
    sw = impl.Switch("198.18.0.1")
    sw.add_network(VNI, max_learned=4, max_learned_per_port=2)
    sw.add_port(1, VNI, C1_MAC)
    sw.add_port(2, VNI, C2_MAC)
    out = [sw.from_port(1, eth(BROADCAST, bytes((2, 9, 0, 0, 0, i)), 0x0800, bytes(46)), 1.0)
           for i in range(5)]
    assert all(o == [("port", 2, o[0][2])] for o in out)        # every frame flooded on
    c = sw.counters()["counters"]
    assert (c["learned"], c["learn_limit"]) == (2, 3)
    assert [e[0] for e in sw.events()] == ["learned", "learned", "learn_limit"]
    assert sw.events() == []
    sw.fdb_del(VNI, bytes((2, 9, 0, 0, 0, 0)))                 # below its bound again
    sw.from_port(1, eth(BROADCAST, bytes((2, 9, 0, 0, 0, 7)), 0x0800, bytes(46)), 2.0)
    sw.from_port(1, eth(BROADCAST, bytes((2, 9, 0, 0, 0, 8)), 0x0800, bytes(46)), 2.0)
    assert [e[0] for e in sw.events()] == ["learned", "learn_limit"]
    sw.add_port(3, VNI, bytes.fromhex("0242c0a83799"))          # endpoints never count


def test_a_failing_ageing_step_does_not_end_ageing() -> None:
    """Vtep's ageing sweep (one step per turn of the loop): a step that raises ends that sweep,
    and the next tick starts another; the tick itself is rescheduled whatever happens."""
    from dataplane.vtep import Vtep

    class Loop:
        def __init__(self) -> None:
            self.soon: list[Any] = []
            self.later: list[Any] = []

        def call_soon(self, fn: Any, *args: Any) -> None:
            self.soon.append((fn, args))

        def call_later(self, delay: float, fn: Any, *args: Any) -> str:
            self.later.append(fn)
            return "handle"

    class Core:
        def __init__(self) -> None:
            self.calls = 0

        def age_step(self, now: float) -> tuple[int, bool]:
            self.calls += 1
            if self.calls == 2:
                raise MemoryError("out of memory in a step")
            return 0, self.calls % 3 == 0

    class Stub:
        _age_step = Vtep._age_step
        _age_more = Vtep._age_more
        _age = Vtep._age

        def __init__(self) -> None:
            self.switch = Core()
            self._loop = Loop()
            self._stopped = False
            self._sweeping = False
            self.pmtu_ticks = 0

        def _pmtu_due(self, now: float) -> None:
            self.pmtu_ticks += 1
            raise OSError("the path measurement failed")

    v = Stub()
    with pytest.raises(OSError):
        v._age()                            # step 1, not done: the sweep goes on
    assert v._sweeping and len(v._loop.soon) == 1 and len(v._loop.later) == 1
    fn, args = v._loop.soon.pop()
    with pytest.raises(MemoryError):
        fn(*args)                           # step 2 raises: this sweep is over
    assert not v._sweeping
    with pytest.raises(OSError):
        v._age()                            # the next tick starts a new sweep
    assert v.switch.calls == 3 and len(v._loop.later) == 2
