"""VTEPs over an IPv6 underlay, and VTEPs of both families (DESIGN.md §2, issue 12), in both
cores: ``local`` takes one address per family, FDB remotes and flood lists of either family,
the outer IPv6 header (traffic class and hop limit by the IPv4 TOS/TTL rules, the flow label
fixed or inherited, no DF, the UDP checksum always), IPv6 sources and allow prefixes, and the
inner-flow hash over IPv6 (RFC 7348 §5 entropy). The C outer headers are held to
``wire.outer_datagram`` byte for byte and scapy checks both checksums.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane import wire
from dataplane.errors import InvalidArgument
from dataplane.switch import Locals, parse_locals
from dataplane.tunnel import Outer
from tests.strategies import (
    BROADCAST,
    C1_MAC,
    PEER_MAC,
    VNI,
    ZERO_MAC,
    eth,
    ip6_frames,
    ipv4_frame,
    ipv6_frame,
    vxlan_hdr,
)

L4 = IPv4Address("198.18.0.1")
L6 = IPv6Address("2001:db8::1")
R6 = IPv6Address("2001:db8::2")
R6B = IPv6Address("2001:db8:1::3")
R4 = IPv4Address("198.18.0.2")
C1_6 = IPv6Address("fd00:55::4")
PEER_6 = IPv6Address("fd00:55::3")


def dual(impl: Any, **net: Any) -> Any:
    sw = impl.Switch([L4, L6])
    sw.add_network(VNI, **net)
    sw.add_port(1, VNI, C1_MAC)
    return sw


def to_peer6(label: int = 0, tclass: int = 0, hlim: int = 64) -> bytes:
    return ipv6_frame(PEER_MAC, C1_MAC, C1_6, PEER_6, payload=b"data", label=label,
                      tclass=tclass, hlim=hlim)


# --------------------------------------------------------------------------- local addresses

@pytest.mark.parametrize("given_, want", [
    ("198.18.0.1", Locals(L4, None)),
    ("2001:db8::1", Locals(None, L6)),
    (["2001:db8::1", "198.18.0.1"], Locals(L4, L6)),
    ((L4,), Locals(L4, None)),
])
def test_locals(given_: Any, want: Locals) -> None:
    got = parse_locals(given_)
    assert got == want and got.primary == (want.v4 or want.v6)


@pytest.mark.parametrize("bad", [[], ["198.18.0.1", "198.18.0.2"], ["2001:db8::1", "2001:db8::2"],
                                 "fe80::1", "ff02::1", "::", "0.0.0.0", "224.0.0.1",
                                 "not an address", "2001:db8::1/64"])
def test_bad_locals(impl: Any, bad: Any) -> None:
    with pytest.raises(InvalidArgument):
        impl.Switch(bad)


def test_local_property(impl: Any) -> None:
    assert impl.Switch([L6, L4]).local == L4
    assert impl.Switch(L6).local == L6
    assert impl.Switch([L6, L4]).locals == Locals(L4, L6)


# --------------------------------------------------------------------------- families

def test_remote_needs_a_local_of_its_family(impl: Any) -> None:
    v4 = impl.Switch(L4)
    v4.add_network(VNI)
    with pytest.raises(InvalidArgument, match="no IPv6 underlay address"):
        v4.fdb_add(VNI, PEER_MAC, R6)
    v6 = impl.Switch(L6)
    v6.add_network(VNI)
    with pytest.raises(InvalidArgument, match="no IPv4 underlay address"):
        v6.fdb_append(VNI, ZERO_MAC, R4)
    assert v4.fdb_dump() == [] and v6.fdb_dump() == []


def test_ipv6_remote_encap(impl: Any) -> None:
    sw = dual(impl, df="set")
    sw.fdb_add(VNI, PEER_MAC, R6)
    frame = ipv4_frame(PEER_MAC, C1_MAC, "192.168.55.4", "192.168.55.3", payload=b"x")
    [act] = sw.from_port(1, frame, 0.0)
    kind, dst, sport, payload, outer = act
    assert (kind, dst) == ("vtep", R6) and type(dst) is IPv6Address
    assert payload == vxlan_hdr(VNI) + frame
    # df means nothing to an IPv6 outer header (vxlan_xmit_one applies it for AF_INET only)
    assert outer == Outer(0, 0, 64, False, 0)
    assert sport == wire.src_port(frame)


@pytest.mark.parametrize("flowlabel, inner, want", [
    (0, 0x12345, 0),                 # fixed 0: the kernel makes no label up
    (0xabcde, 0x12345, 0xabcde),
    ("inherit", 0x12345, 0x12345),
    ("inherit", 0, 0),
])
def test_flow_label(impl: Any, flowlabel: Any, inner: int, want: int) -> None:
    sw = dual(impl, flowlabel=flowlabel)
    sw.fdb_add(VNI, PEER_MAC, R6)
    [act] = sw.from_port(1, to_peer6(label=inner), 0.0)
    assert act[4].label == want


def test_flow_label_inherit_from_ipv4_or_arp_is_zero(impl: Any) -> None:
    sw = dual(impl, flowlabel="inherit", proxy=False)
    sw.fdb_append(VNI, ZERO_MAC, R6)
    frame = ipv4_frame(BROADCAST, C1_MAC, "192.168.55.4", "192.168.55.3")
    assert [a[4].label for a in sw.from_port(1, frame, 0.0)] == [0]


def test_traffic_class_and_hop_limit_follow_the_ipv4_rules(impl: Any) -> None:
    sw = dual(impl, tos="inherit", ttl="inherit")
    sw.fdb_add(VNI, PEER_MAC, R6)
    [act] = sw.from_port(1, to_peer6(tclass=0xbb, hlim=33), 0.0)
    # RFC 6040 §4.1: CE inner leaves as ECT(0); DSCP inherited; hop limit inherited
    assert (act[4].tos, act[4].ttl) == (0xba, 33)


def test_flood_list_of_both_families(impl: Any) -> None:
    sw = dual(impl, proxy=False, df="set")
    sw.fdb_append(VNI, ZERO_MAC, R4)
    sw.fdb_append(VNI, ZERO_MAC, R6)
    sw.fdb_append(VNI, ZERO_MAC, R6B, dst_vni=5000)
    frame = eth(BROADCAST, C1_MAC, 0x88B5, b"y" * 46)
    acts = sw.from_port(1, frame, 0.0)
    assert [(a[1], a[4].df, int.from_bytes(a[3][4:7], "big")) for a in acts] == \
        [(R4, True, VNI), (R6, False, VNI), (R6B, False, 5000)]


def test_ipv6_source_learning_and_allow(impl: Any) -> None:
    sw = impl.Switch([L4, L6], allow=["2001:db8::/64", "198.18.0.0/24"])
    sw.add_network(VNI, learning=True)
    sw.add_port(1, VNI, C1_MAC)
    frame = ipv6_frame(C1_MAC, PEER_MAC, PEER_6, C1_6, payload=b"back")
    assert sw.from_underlay(R6, vxlan_hdr(VNI) + frame, 0.0) == [("port", 1, frame)]
    assert sw.from_underlay(str(R6B), vxlan_hdr(VNI) + frame, 0.0) == []
    assert sw.counters()["drops"]["not_allowed"] == 1
    row = [r for r in sw.fdb_dump() if r["mac"] == PEER_MAC.hex(":")][0]
    assert (row["dst"], row["state"]) == (str(R6), "learned")
    ev = sw.events()
    assert ("learned", VNI, PEER_MAC.hex(":"), "", str(R6)) in ev
    # the learned entry is used the other way
    [act] = sw.from_port(1, ipv6_frame(PEER_MAC, C1_MAC, C1_6, PEER_6), 1.0)
    assert act[1] == R6


def test_ipv6_source_moves_a_learned_entry(impl: Any) -> None:
    sw = impl.Switch([L4, L6])
    sw.add_network(VNI, learning=True)
    sw.add_port(1, VNI, C1_MAC)
    frame = ipv6_frame(C1_MAC, PEER_MAC, PEER_6, C1_6)
    sw.from_underlay(R4, vxlan_hdr(VNI) + frame, 0.0)
    sw.from_underlay(R6, vxlan_hdr(VNI) + frame, 1.0)
    assert ("moved", VNI, PEER_MAC.hex(":"), str(R4), str(R6)) in sw.events()


# --------------------------------------------------------------------------- flow hash

def test_flow_hash_over_ipv6() -> None:
    a = ipv6_frame(PEER_MAC, C1_MAC, C1_6, PEER_6, sport=1000, dport=80)
    b = ipv6_frame(PEER_MAC, C1_MAC, C1_6, PEER_6, sport=1001, dport=80)
    assert wire.flow_key(a) == C1_6.packed + PEER_6.packed + bytes((17, 0, 0, 0)) + \
        (1000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    assert wire.flow_hash(a) != wire.flow_hash(b)
    # a non-zero flow label ends the key there (the kernel's flow dissector stops at it)
    la = ipv6_frame(PEER_MAC, C1_MAC, C1_6, PEER_6, sport=1000, label=0x12345)
    lb = ipv6_frame(PEER_MAC, C1_MAC, C1_6, PEER_6, sport=1001, label=0x12345)
    assert wire.flow_hash(la) == wire.flow_hash(lb)


@settings(max_examples=300)
@given(ip6_frames())
def test_c_flow_hash_equals_wire_over_ipv6(frame: bytes) -> None:
    testing = pytest.importorskip("_fastpath.testing")
    assert testing.flow_hash(frame) == wire.flow_hash(frame)


# --------------------------------------------------------------------------- outer header bytes

def test_outer_ipv6_datagram_by_hand() -> None:
    payload = vxlan_hdr(VNI) + b"\x00" * 14
    d = wire.outer_datagram(L6, R6, 50000, payload, ttl=33, tos=0xb8, label=0xabcde)
    assert d[:4] == bytes.fromhex("6b8abcde")         # version 6, TC 0xb8, label 0xabcde
    assert int.from_bytes(d[4:6], "big") == 8 + len(payload) and d[6] == 17 and d[7] == 33
    assert d[8:24] == L6.packed and d[24:40] == R6.packed
    assert int.from_bytes(d[40:42], "big") == 50000 and int.from_bytes(d[42:44], "big") == 4789
    assert d[46:48] != b"\x00\x00"                    # UDP checksum is mandatory over IPv6


def test_outer_ipv6_scapy_agrees() -> None:
    inet6 = pytest.importorskip("scapy.layers.inet6")
    payload = wire.encapsulate(77, bytes(range(61)))
    d = wire.outer_datagram(L6, R6, 50000, payload, ttl=7, tos=0x02, label=0x54321)
    pkt = inet6.IPv6(d)
    assert (pkt.version, pkt.tc, pkt.fl, pkt.hlim, pkt.nh) == (6, 0x02, 0x54321, 7, 17)
    assert (pkt.src, pkt.dst) == (str(L6), str(R6))
    chk = pkt["UDP"].chksum
    del pkt["UDP"].chksum
    assert inet6.IPv6(bytes(pkt))["UDP"].chksum == chk


@settings(max_examples=200)
@given(st.binary(max_size=3000), st.integers(0, 65535),
       st.sampled_from([R6, R6B, IPv6Address("64:ff9b::102:304")]),
       st.integers(0, 255), st.integers(1, 255), st.integers(0, 0xFFFFF))
def test_c_build_outer_equals_wire_over_ipv6(payload: bytes, sport: int, dst: IPv6Address,
                                             tos: int, ttl: int, label: int) -> None:
    core = pytest.importorskip("_fastpath.core")
    testing = pytest.importorskip("_fastpath.testing")
    c = core.Switch([L4, L6])
    assert testing.build_outer(c, dst, sport, payload, tos, ttl, False, label) == \
        wire.outer_datagram(L6, dst, sport, payload, tos=tos, ttl=ttl, label=label)


def test_c_burst_outer_datagrams_of_both_families() -> None:
    """The burst path's complete datagrams (what the raw sockets send): IPv4 and IPv6 copies
    of one flood, contiguous in the headroom or with headers of their own."""
    core = pytest.importorskip("_fastpath.core")
    testing = pytest.importorskip("_fastpath.testing")
    c = dual(core, proxy=False, flowlabel="inherit", tos="inherit")
    for r in (R6, R4, R6B):
        c.fdb_append(VNI, ZERO_MAC, r)
    c.fdb_append(VNI, ZERO_MAC, R6, dst_port=8472, dst_vni=5000)
    frames = [ipv6_frame(BROADCAST, C1_MAC, C1_6, "ff02::1", label=0x777, tclass=0x41),
              eth(BROADCAST, C1_MAC, 0x88B5, b"z" * 100)]
    acts = testing.from_port_burst(c, 1, frames, 0.0, outer=True)
    assert len(acts) == 8
    for _, dst, sport, dgram, outer in acts:
        hl = 48 if dst.version == 6 else 28
        payload = dgram[hl:]
        src = L6 if dst.version == 6 else L4
        assert dgram == wire.outer_datagram(src, dst, sport, payload, outer.dport or 4789,
                                            tos=outer.tos, ttl=outer.ttl, df=outer.df,
                                            label=outer.label)
    assert [a[4].label for a in acts[:4]] == [0x777, 0, 0x777, 0x777]


def test_c_burst_sources_of_both_families() -> None:
    core = pytest.importorskip("_fastpath.core")
    testing = pytest.importorskip("_fastpath.testing")
    from dataplane import switch as reference

    frame = ipv6_frame(C1_MAC, PEER_MAC, PEER_6, C1_6)
    items = [(R6, vxlan_hdr(VNI) + frame), (R4, vxlan_hdr(VNI) + frame),
             (str(R6B), vxlan_hdr(VNI) + frame)]
    outs = []
    for sw in (dual(reference, learning=True), dual(core, learning=True)):
        if isinstance(sw, reference.Switch):
            acts = [a for src, d in items for a in sw.from_underlay(src, d, 0.0)]
        else:
            acts = testing.from_underlay_burst(sw, items, 0.0)
        outs.append((acts, sw.events(), sw.fdb_dump()))
    assert outs[0] == outs[1]
    assert [e[0] for e in outs[0][1]] == ["learned", "moved", "moved"]
