"""scapy as the independent oracle for the bytes both cores (``impl``) put on the wire: it must
decode our encapsulation and ARP replies, and our decapsulation must accept what it builds.

scapy binds VXLAN to UDP port 4789 in both directions (``scapy.layers.vxlan``), but its VXLAN
default flags are 0x08 only when nothing is stacked on it: ``VXLAN()/Ether()`` builds flags 0x0C
(the VXLAN-GPE "next protocol" bit), which the kernel, and vxdp in strict mode, drop. So every
datagram here spells ``flags=0x08`` out, and one test shows the difference.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from dataplane import wire
from tests.strategies import (
    C1_IP,
    C1_MAC,
    C2_MAC,
    LOCAL,
    PEER_IP,
    PEER_MAC,
    REMOTE,
    REMOTE2,
    REMOTE3,
    VNI,
    mac_text,
    walkthrough_network,
)

C1, C2, PEER = mac_text(C1_MAC), mac_text(C2_MAC), mac_text(PEER_MAC)


def switch(impl: Any, *, proxy: bool = True, strict: bool = True) -> Any:
    return walkthrough_network(impl.Switch(LOCAL, strict=strict), proxy=proxy)


def decode_vtep_action(action: tuple[Any, ...], frame: bytes) -> IP:
    """Wrap a "vtep" action in IPv4/UDP as the VTEP sends it, let scapy decode it, and check
    everything scapy can tell about it; returns the decoded packet."""
    kind, dst, sport, payload, _outer = action
    assert kind == "vtep"
    raw = wire.outer_datagram(LOCAL, dst, sport, payload)
    p = IP(raw)
    assert (p.src, p.dst, p.proto) == (str(LOCAL), str(dst), 17)
    u = p[UDP]
    assert (u.sport, u.dport, u.len) == (sport, 4789, 8 + len(payload))
    assert p.haslayer(VXLAN), "scapy did not bind UDP/4789 to VXLAN"
    v = p[VXLAN]
    assert int(v.flags) == 0x08 and v.vni == VNI and v.reserved1 == 0 and v.reserved2 == 0
    inner = v.payload
    assert isinstance(inner, Ether)
    assert bytes(inner) == frame
    # scapy's own checksums, recomputed from scratch, equal ours
    q = IP(raw)
    del q.chksum
    del q[UDP].chksum
    rebuilt = IP(bytes(q))
    assert (rebuilt.chksum, rebuilt[UDP].chksum) == (p.chksum, u.chksum)
    assert bytes(rebuilt) == raw
    return p


def test_unicast_encapsulation_decodes(impl: Any) -> None:
    frame = bytes(Ether(dst=PEER, src=C1) / IP(src=str(C1_IP), dst=str(PEER_IP))
                  / TCP(sport=40000, dport=5201, flags="S") / Raw(b"hello"))
    acts = switch(impl).from_port(1, frame, 0.0)
    assert len(acts) == 1
    p = decode_vtep_action(acts[0], frame)
    t = p[VXLAN][TCP]
    assert (t.sport, t.dport) == (40000, 5201) and bytes(t.payload) == b"hello"
    assert 49152 <= p[UDP].sport <= 65535


def test_flood_replicas_decode_identically(impl: Any) -> None:
    frame = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=C1) / IP(src=str(C1_IP), dst="192.168.55.255")
                  / UDP(sport=68, dport=67) / Raw(b"x" * 300))
    acts = switch(impl).from_port(1, frame, 0.0)
    assert acts[0] == ("port", 2, frame)
    vteps = acts[1:]
    assert [a[1] for a in vteps] == [REMOTE2, REMOTE3]
    for a in vteps:
        decode_vtep_action(a, frame)
    assert len({a[2] for a in vteps}) == 1   # one flow, one source port


@pytest.mark.parametrize("size", [60, 1000, 1464])
def test_large_and_odd_frames_decode(impl: Any, size: int) -> None:
    base = Ether(dst=PEER, src=C1) / IP(src=str(C1_IP), dst=str(PEER_IP)) / UDP(sport=1, dport=2)
    frame = bytes(base / Raw(b"\xa5" * (size - len(base))))
    assert len(frame) == size
    (a,) = switch(impl).from_port(1, frame, 0.0)
    decode_vtep_action(a, frame)


def test_arp_without_proxy_is_encapsulated_as_scapy_sees_it(impl: Any) -> None:
    req = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=C1)
                / ARP(op="who-has", hwsrc=C1, psrc=str(C1_IP), pdst=str(PEER_IP)))
    acts = switch(impl, proxy=False).from_port(1, req, 0.0)
    assert [a[0] for a in acts] == ["port", "vtep", "vtep"]
    for a in acts[1:]:
        p = decode_vtep_action(a, req)
        assert p[VXLAN][ARP].pdst == str(PEER_IP)


def test_proxy_reply_is_arp_is_at(impl: Any) -> None:
    req = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=C1)
                / ARP(op="who-has", hwsrc=C1, psrc=str(C1_IP), pdst=str(PEER_IP)))
    acts = switch(impl).from_port(1, req, 0.0)
    assert acts[0] == ("port", 2, req)
    kind, port, reply = acts[1]
    assert (kind, port) == ("port", 1)
    e = Ether(reply)
    assert (e.dst, e.src, e.type) == (C1, PEER, 0x0806)
    a = e[ARP]
    assert a.op == 2 and a.sprintf("%ARP.op%") == "is-at"
    assert (a.hwtype, a.ptype, a.hwlen, a.plen) == (1, 0x0800, 6, 4)
    assert (a.hwsrc, a.psrc, a.hwdst, a.pdst) == (PEER, str(PEER_IP), C1, str(C1_IP))
    assert len(reply) == 42 and not e.haslayer(Raw)
    # and scapy agrees it answers the request
    assert a.answers(Ether(req)[ARP])


def test_proxy_answers_scapy_request_with_padding(impl: Any) -> None:
    req = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=C2)
                / ARP(op=1, hwsrc=C2, psrc="192.168.55.5", pdst=str(PEER_IP)) / Raw(bytes(18)))
    assert len(req) == 60
    acts = switch(impl).from_port(2, req, 0.0)
    reply = Ether(acts[-1][2])[ARP]
    assert (reply.op, reply.hwsrc, reply.pdst, reply.hwdst) == (2, PEER, "192.168.55.5", C2)


@pytest.mark.parametrize("strict", [True, False])
def test_decapsulates_scapy_vxlan(impl: Any, strict: bool) -> None:
    inner = Ether(dst=C1, src=PEER) / IP(src=str(PEER_IP), dst=str(C1_IP)) / ICMP(id=7, seq=1)
    datagram = bytes(VXLAN(vni=4097, flags=0x08) / inner)
    assert datagram[:8] == bytes.fromhex("0800000000100100")
    sw = switch(impl, strict=strict)
    assert sw.from_underlay(REMOTE, datagram, 0.0) == [("port", 1, bytes(inner))]
    assert sum(sw.counters()["drops"].values()) == 0


def test_scapy_default_vxlan_flags_are_gpe_and_strict_drops_them(impl: Any) -> None:
    inner = Ether(dst=C1, src=PEER) / IP(src=str(PEER_IP), dst=str(C1_IP)) / ICMP()
    datagram = bytes(VXLAN(vni=4097) / inner)
    assert datagram[0] == 0x0C   # I + next-protocol: scapy's top-down binding for Ether
    strict = switch(impl, strict=True)
    assert strict.from_underlay(REMOTE, datagram, 0.0) == []
    assert strict.counters()["drops"]["reserved_bits"] == 1
    lenient = switch(impl, strict=False)
    assert lenient.from_underlay(REMOTE, datagram, 0.0) == [("port", 1, bytes(inner))]


def test_decapsulates_full_scapy_datagram(impl: Any) -> None:
    inner = (Ether(dst="ff:ff:ff:ff:ff:ff", src=PEER)
             / ARP(op=1, hwsrc=PEER, psrc=str(PEER_IP), pdst=str(C1_IP)))
    outer = (IP(src=str(REMOTE), dst=str(LOCAL)) / UDP(sport=55555, dport=4789)
             / VXLAN(vni=4097, flags=0x08) / inner)
    raw = bytes(outer)
    p = IP(raw)                              # what the VTEP's socket would hand over
    assert p[UDP].dport == 4789 and p.haslayer(VXLAN)
    udp_payload = bytes(p[UDP].payload)
    assert len(udp_payload) == p[UDP].len - 8
    acts = switch(impl).from_underlay(IPv4Address(p.src), udp_payload, 0.0)
    assert acts == [("port", 1, bytes(inner)), ("port", 2, bytes(inner))]


def test_round_trip_through_two_switches(impl: Any) -> None:
    """Host A encapsulates, scapy carries the datagram, host B decapsulates: the frame arrives
    unchanged at the right port."""
    a = switch(impl)
    b = impl.Switch(REMOTE)
    b.add_network(VNI)
    b.add_port(7, VNI, PEER_MAC)
    b.fdb_add(VNI, C1_MAC, LOCAL)
    frame = bytes(Ether(dst=PEER, src=C1) / IP(src=str(C1_IP), dst=str(PEER_IP))
                  / UDP(sport=9, dport=9) / Raw(b"round trip"))
    (act,) = a.from_port(1, frame, 0.0)
    wire_bytes = wire.outer_datagram(LOCAL, act[1], act[2], act[3])
    p = IP(wire_bytes)
    assert b.from_underlay(p.src, bytes(p[UDP].payload), 0.0) == [("port", 7, frame)]
