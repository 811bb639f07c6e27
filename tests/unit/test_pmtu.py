"""PMTU signalling for a bridged tunnel (``dataplane.tunnel.pmtud_icmp``; C: ``tunnel.pyx``)
through both cores: which inner packets too big for the path to their remote are answered with
an ICMP fragmentation-needed / Packet Too Big written back to the sender, and its bytes.

The cases are the kernel's (``skb_tunnel_check_pmtu``, ``iptunnel_pmtud_check_icmp`` /
``_icmpv6``), each checked on this machine against a bridged kernel vxlan with a 1400-byte
underlay (the same frames sent from a container; the kernel's replies captured and compared
byte for byte with the reference's: /work/scratch/k11/pmtu_bytes.py, pmtu6.py, closing note of
issue 11). scapy decodes the replies here as the independent reader.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from dataplane import tunnel, wire
from dataplane.errors import InvalidArgument
from tests.pmtu_cases import kernel_cases
from tests.strategies import (C1_MAC, C2_MAC, HEALTH, LOCAL, PEER_MAC, REMOTE, REMOTE2, VNI,
                              ZERO_MAC, pmtu_frames)

MAC_A, MAC_P = wire.mac_str(C1_MAC), wire.mac_str(PEER_MAC)
LOCAL6, REMOTE6 = IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2")
ROUTE_MTU = 1400                   # the underlay of the kernel experiment
LIMIT4, LIMIT6 = ROUTE_MTU - 50, ROUTE_MTU - 70


def core(impl: Any, route_mtu: int | None = ROUTE_MTU, remote: Any = REMOTE,
         **net: Any) -> Any:
    """c1 on port 1 and c2 on port 2 of VNI, the peer behind ``remote``, whose route MTU
    the control plane measured as ``route_mtu``."""
    sw = impl.Switch([LOCAL, LOCAL6])
    sw.add_network(VNI, mtu=1500, **net)
    sw.add_port(1, VNI, C1_MAC)
    sw.add_port(2, VNI, C2_MAC)
    sw.fdb_add(VNI, PEER_MAC, remote)
    if route_mtu is not None:
        sw.set_path_mtu(remote, route_mtu)
    return sw


def frame(pkt: Packet, tag: bool = False) -> bytes:
    eth = Ether(src=MAC_A, dst=MAC_P)
    return bytes(eth / Dot1Q(vlan=10) / pkt if tag else eth / pkt)


A4 = {"src": "192.168.55.1", "dst": "192.168.55.2"}
A6 = {"src": "fd00:55::1", "dst": "fd00:55::2"}
PAD = Raw(bytes(1380))
#: what the kernel did with each one [exp]
KERNEL_CASES = kernel_cases(A4["src"], A4["dst"], A6["src"], A6["dst"])


@pytest.mark.parametrize(("name", "pkt", "answered"), KERNEL_CASES,
                         ids=[c[0] for c in KERNEL_CASES])
@pytest.mark.parametrize("remote", [REMOTE, REMOTE6])
def test_which_packets_the_kernel_answers(impl: Any, name: str, pkt: Packet, answered: bool,
                                          remote: Any) -> None:
    sw = core(impl, remote=remote)
    f = frame(pkt)
    out = sw.from_port(1, f, 0.0)
    limit = LIMIT4 if remote.version == 4 else LIMIT6
    if answered:
        assert [a[:2] for a in out] == [("port", 1)]
        assert out[0][2] == tunnel.pmtud_icmp(f, limit)
        kind = "frag_needed" if IP in pkt else "pkt_too_big"
        assert sw.counters()["counters"][kind] == 1
    else:
        # sent as it is (and fragmented by the underlay, or lost there), as the kernel does
        assert [a[:2] for a in out] == [("vtep", remote)]
        assert out[0][3][8:] == f
        c = sw.counters()["counters"]
        assert c["frag_needed"] == c["pkt_too_big"] == 0


def test_frag_needed_bytes(impl: Any) -> None:
    """iptunnel_pmtud_build_icmp, field by field (scapy reads it): back to the sender's MAC
    from the destination's, tos 0, id 0, DF, TTL = the original's, proto 1, addresses
    swapped, type 3 code 4, next-hop MTU route − 50, the first 548 bytes of the original
    packet quoted (a 576-byte IP datagram), both checksums right."""
    sw = core(impl)
    orig = IP(**A4, flags="DF", ttl=33, tos=0xB9, id=0x1234) / UDP(sport=1, dport=2) \
        / Raw((bytes(range(256)) * 6)[:1400])
    f = frame(orig)
    (act,) = sw.from_port(1, f, 0.0)
    reply = Ether(act[2])
    assert (reply.dst, reply.src, reply.type) == (MAC_A, MAC_P, 0x0800)
    ip, icmp = reply[IP], reply[ICMP]
    assert (ip.version, ip.ihl, ip.tos, ip.len, ip.id, int(ip.flags), ip.frag, ip.ttl,
            ip.proto) == (4, 5, 0, 576, 0, 2, 0, 33, 1)
    assert (ip.src, ip.dst) == ("192.168.55.2", "192.168.55.1")
    assert (icmp.type, icmp.code, icmp.nexthopmtu) == (3, 4, LIMIT4)
    assert act[2][14 + 20 + 4:14 + 20 + 6] == b"\x00\x00"            # unused
    assert act[2][14 + 28:] == f[14:14 + 548]
    assert len(act[2]) == 590
    assert wire.inet_checksum(act[2][14:34]) == 0
    assert wire.inet_checksum(act[2][34:]) == 0


def test_packet_too_big_bytes(impl: Any) -> None:
    """iptunnel_pmtud_build_icmpv6: traffic class and flow label 0, hop limit the
    original's, addresses swapped, type 2 code 0, MTU route − 70 over an IPv6 underlay,
    the first 1232 bytes quoted (a 1280-byte packet), checksum right."""
    sw = core(impl, remote=REMOTE6)
    f = frame(IPv6(**A6, hlim=7, tc=0xB9, fl=12345) / UDP(sport=1, dport=2)
              / Raw((bytes(range(256)) * 6)[:1390]))
    (act,) = sw.from_port(1, f, 0.0)
    reply = Ether(act[2])
    assert (reply.dst, reply.src, reply.type) == (MAC_A, MAC_P, 0x86DD)
    ip6, ptb = reply[IPv6], reply[ICMPv6PacketTooBig]
    assert (ip6.tc, ip6.fl, ip6.plen, ip6.nh, ip6.hlim) == (0, 0, 1240, 58, 7)
    assert (ip6.src, ip6.dst) == ("fd00:55::2", "fd00:55::1")
    assert (ptb.type, ptb.code, ptb.mtu) == (2, 0, LIMIT6)
    assert act[2][14 + 48:] == f[14:14 + 1232] and len(act[2]) == 1294
    body = act[2][54:]
    assert wire.icmp6_checksum(act[2][22:38], act[2][38:54], body) == 0


@pytest.mark.parametrize(("version", "route_mtu", "answered"), [
    (4, 625, False), (4, 626, True),        # 576: the smallest a frag-needed may say
    (6, 1329, False), (6, 1330, True),      # 1280 over an IPv4 underlay (+50)
])
def test_minimum_mtus(impl: Any, version: int, route_mtu: int, answered: bool) -> None:
    """No ICMP below 576 (IPv4) or 1280 (IPv6, RFC 8200 §5): the packet is sent."""
    sw = core(impl, route_mtu=route_mtu)
    pkt = IP(**A4, flags="DF") / UDP() / PAD if version == 4 else IPv6(**A6) / UDP() / PAD
    (act,) = sw.from_port(1, frame(pkt), 0.0)
    assert act[0] == ("port" if answered else "vtep")


@pytest.mark.parametrize("remote", [REMOTE, REMOTE6])
def test_the_limit_is_the_inner_packet_length(impl: Any, remote: Any) -> None:
    """skb->len − skb_network_offset: a packet of exactly route MTU − 50 (− 70 over IPv6)
    bytes still leaves; one byte more is answered."""
    limit = LIMIT4 if remote.version == 4 else LIMIT6
    sw = core(impl, remote=remote)
    for extra, kind in ((0, "vtep"), (1, "port")):
        f = frame(IP(**A4, flags="DF") / UDP() / Raw(bytes(limit + extra - 28)))
        assert len(f) - 14 == limit + extra
        (act,) = sw.from_port(1, f, 0.0)
        assert act[0] == kind


def test_tagged_and_non_ip_frames_are_sent(impl: Any) -> None:
    """Only untagged IPv4/IPv6 are answered (skb->protocol); anything else too big for the
    path is sent, as the kernel sends it."""
    sw = core(impl)
    for f in (frame(IP(**A4, flags="DF") / UDP() / PAD, tag=True),
              C1_MAC[:0] + PEER_MAC + C1_MAC + b"\x88\xb5" + bytes(1420)):
        (act,) = sw.from_port(1, f, 0.0)
        assert act[0] == "vtep"


def test_unknown_or_forgotten_path_mtu_means_no_check(impl: Any) -> None:
    sw = core(impl, route_mtu=None)
    f = frame(IP(**A4, flags="DF") / UDP() / PAD)
    assert sw.from_port(1, f, 0.0)[0][0] == "vtep"
    sw.set_path_mtu(REMOTE, ROUTE_MTU)
    assert sw.from_port(1, f, 0.0)[0][0] == "port"
    assert sw.path_mtus() == {REMOTE: ROUTE_MTU}
    sw.set_path_mtu(str(REMOTE), 0)
    assert sw.from_port(1, f, 0.0)[0][0] == "vtep"
    assert sw.path_mtus() == {}


def test_remotes_made_later_find_the_path_mtu(impl: Any) -> None:
    """The MTU belongs to the address, not to one FDB entry: an entry added after it was
    set, one deleted and added again, a remote with its own port and VNI, and a VTEP
    learned from traffic all get it."""
    sw = impl.Switch(LOCAL)
    sw.add_network(VNI, mtu=1500, learning=True)
    sw.add_port(1, VNI, C1_MAC)
    sw.set_path_mtu(REMOTE, ROUTE_MTU)
    sw.set_path_mtu(REMOTE2, ROUTE_MTU)
    f = frame(IP(**A4, flags="DF") / UDP() / PAD)
    sw.fdb_add(VNI, PEER_MAC, REMOTE, dst_port=8472, dst_vni=5000)
    assert [a[0] for a in sw.from_port(1, f, 0.0)] == ["port"]
    sw.fdb_del(VNI, PEER_MAC)
    sw.fdb_add(VNI, PEER_MAC, REMOTE)
    assert [a[0] for a in sw.from_port(1, f, 0.0)] == ["port"]
    sw.fdb_del(VNI, PEER_MAC)
    learned = bytes(Ether(src=MAC_P, dst=MAC_A) / IP(src="192.168.55.2", dst="192.168.55.1"))
    sw.from_underlay(REMOTE2, wire.vxlan_header(VNI) + learned, 0.0)
    out = sw.from_port(1, f, 0.0)
    assert [a[0] for a in out] == ["port"]
    assert sw.remote_vteps() == [REMOTE2]


def test_each_remote_of_a_flood_list_is_checked(impl: Any) -> None:
    """vxlan_xmit_one checks every remote: the one whose path is too small gets an ICMP back
    (one per such remote), the others the frame — with correct outer headers, also when the
    first copy (which owns the headroom in the compiled core) is the one answered."""
    sw = impl.Switch(LOCAL)
    sw.add_network(VNI, mtu=1500)
    sw.add_port(1, VNI, C1_MAC)
    for r in (REMOTE, REMOTE2, "198.18.0.4"):
        sw.fdb_append(VNI, ZERO_MAC, r)
    sw.set_path_mtu(REMOTE, ROUTE_MTU)
    sw.set_path_mtu("198.18.0.4", 1300)
    f = bytes(Ether(src=MAC_A, dst="02:00:00:00:00:99") / IP(**A4, flags="DF") / UDP() / PAD)
    out = sw.from_port(1, f, 0.0)
    assert [(a[0], str(a[1])) for a in out] == [("port", "1"), ("vtep", str(REMOTE2)),
                                                 ("port", "1")]
    assert Ether(out[0][2])[ICMP].nexthopmtu == 1350
    assert Ether(out[2][2])[ICMP].nexthopmtu == 1250
    assert sw.counters()["counters"]["frag_needed"] == 2
    assert sw.counters()["ports"][1]["tx_packets"] == 2


def test_flood_list_outer_datagrams_after_a_reply(impl: Any) -> None:
    """When the first remote is answered, the copies that leave are intact: in the compiled
    core the next one writes its headers in the headroom the answered one did not use; its
    burst path's complete outer datagrams are checked too."""
    sw = impl.Switch(LOCAL)
    sw.add_network(VNI, mtu=1500)
    sw.add_port(1, VNI, C1_MAC)
    sw.fdb_append(VNI, ZERO_MAC, REMOTE)
    sw.fdb_append(VNI, ZERO_MAC, REMOTE2)
    sw.fdb_append(VNI, ZERO_MAC, "198.18.0.4", dst_vni=5000)
    sw.set_path_mtu(REMOTE, ROUTE_MTU)
    f = bytes(Ether(src=MAC_A, dst="02:00:00:00:00:99") / IP(**A4, flags="DF") / UDP() / PAD)
    out = sw.from_port(1, f, 0.0)
    assert [a[0] for a in out] == ["port", "vtep", "vtep"]
    assert [a[3] for a in out[1:]] == [wire.vxlan_header(VNI) + f, wire.vxlan_header(5000) + f]
    if impl.__name__ != "_fastpath.core":
        return
    from _fastpath import testing
    out = testing.from_port_burst(sw, 1, [f] * 3, 0.0, outer=True)
    assert [a[0] for a in out] == ["port", "vtep", "vtep"] * 3
    for a in out[1::3] + out[2::3]:
        vni = 5000 if str(a[1]) == "198.18.0.4" else VNI
        assert a[3] == wire.outer_datagram(LOCAL, a[1], a[2], wire.vxlan_header(vni) + f)


def test_counted_and_traced_once_per_frame(impl: Any) -> None:
    sw = impl.Switch([LOCAL, LOCAL6])
    sw.add_network(VNI, mtu=1500)
    sw.add_port(1, VNI, C1_MAC)
    sw.fdb_append(VNI, ZERO_MAC, REMOTE)
    sw.fdb_append(VNI, ZERO_MAC, REMOTE6)
    sw.set_path_mtu(REMOTE, ROUTE_MTU)
    sw.set_path_mtu(REMOTE6, ROUTE_MTU)
    sw.set_trace(True)
    dst = {"dst": "02:00:00:00:00:99", "src": MAC_A}
    sw.from_port(1, bytes(Ether(**dst) / IP(**A4, flags="DF") / UDP() / PAD), 0.0)
    sw.from_port(1, bytes(Ether(**dst) / IPv6(**A6) / UDP() / PAD), 0.0)
    recs = sw.trace_drain()
    assert [r[7] for r in recs] == [("frag_needed",), ("pkt_too_big",)]
    assert [r[6] for r in recs] == [(("port", 1), ("port", 1))] * 2
    c = sw.counters()["counters"]
    assert (c["frag_needed"], c["pkt_too_big"]) == (2, 2)


def test_remote_vteps_lists_each_address_once(impl: Any) -> None:
    sw = impl.Switch([LOCAL, LOCAL6])
    sw.add_network(VNI)
    sw.add_network(VNI + 1)
    sw.fdb_add(VNI, PEER_MAC, REMOTE6)
    sw.fdb_add(VNI + 1, PEER_MAC, REMOTE, dst_port=8472)
    sw.fdb_append(VNI, ZERO_MAC, REMOTE)
    sw.fdb_append(VNI, ZERO_MAC, REMOTE2, dst_vni=77)
    assert sw.remote_vteps() == [REMOTE, REMOTE2, REMOTE6]
    sw.fdb_del(VNI, ZERO_MAC)
    assert sw.remote_vteps() == [REMOTE, REMOTE6]


@pytest.mark.parametrize(("dst", "mtu"), [
    ("198.18.0.300", 1400), ("", 1400), (REMOTE, -1), (REMOTE, 65536), (REMOTE, True),
    (REMOTE, "1400"), (REMOTE, 1400.0),
])
def test_bad_arguments_are_refused_alike(impl: Any, dst: Any, mtu: Any) -> None:
    with pytest.raises(InvalidArgument):
        impl.Switch(LOCAL).set_path_mtu(dst, mtu)


def test_path_mtus_are_ordered_by_family_and_address(impl: Any) -> None:
    sw = impl.Switch(LOCAL)
    for a, m in ((REMOTE6, 1500), (REMOTE2, 9000), (IPv4Address("10.0.0.1"), 1280)):
        sw.set_path_mtu(a, m)
    assert list(sw.path_mtus().items()) == [(IPv4Address("10.0.0.1"), 1280), (REMOTE2, 9000),
                                            (REMOTE6, 1500)]


@settings(max_examples=300, suppress_health_check=HEALTH)
@given(f=pmtu_frames(), route_mtu=st.sampled_from([626, 1350, 1400, 1500]),
       v6=st.booleans())
def test_reply_is_well_formed_whenever_there_is_one(f: bytes, route_mtu: int,
                                                    v6: bool) -> None:
    """Whatever the frame, a reply is a frame scapy reads as the right ICMP with valid
    checksums, from the destination to the source, quoting the start of the packet."""
    limit = tunnel.pmtu_limit(route_mtu, 6 if v6 else 4)
    reply = tunnel.pmtud_icmp(f, limit) if tunnel.pmtu_exceeded(f, limit) else None
    if reply is None:
        return
    assert reply[0:6] == f[6:12] and reply[6:12] == f[0:6] and reply[12:14] == f[12:14]
    if f[12:14] == b"\x08\x00":
        assert len(reply) == 590 and reply[42:] == f[14:562]
        assert wire.inet_checksum(reply[14:34]) == 0 and wire.inet_checksum(reply[34:]) == 0
        assert Ether(reply)[ICMP].nexthopmtu == limit
    else:
        assert len(reply) == 1294 and reply[62:] == f[14:1246]
        assert wire.icmp6_checksum(reply[22:38], reply[38:54], reply[54:]) == 0
        assert Ether(reply)[ICMPv6PacketTooBig].mtu == limit
