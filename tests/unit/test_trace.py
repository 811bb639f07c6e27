"""Trace records (both cores), their rendering, pcapng blocks and explain."""

from __future__ import annotations

import io
from ipaddress import IPv4Address
from typing import Any

from dataplane import switch as reference
from dataplane import trace as tr
from dataplane import wire
from dataplane.validate import parse_locals

LOCAL = IPv4Address("198.18.0.1")
REMOTE = "198.18.0.2"
VNI = 4097
A = wire.mac_to_bytes("02:42:c0:a8:37:04")
B = wire.mac_to_bytes("02:42:c0:a8:37:03")
C = wire.mac_to_bytes("02:42:c0:a8:37:05")


def world(impl: Any) -> Any:
    sw = impl.Switch(LOCAL)
    sw.add_network(VNI)
    sw.add_port(0, VNI, A)
    sw.add_port(1, VNI, C)
    sw.fdb_add(VNI, B, REMOTE)
    sw.neigh_add(VNI, "192.168.55.3", B)
    return sw


def icmp(dst: bytes, src: bytes) -> bytes:
    body = b"\x08\x00\x00\x00\x00\x01\x00\x01" + bytes(16)
    return dst + src + b"\x08\x00" + wire.ipv4_header(
        IPv4Address("192.168.55.4"), IPv4Address("192.168.55.3"), len(body), proto=1) + body


def test_trace_off_records_nothing(impl: Any) -> None:
    sw = world(impl)
    sw.from_port(0, icmp(B, A), 1.0)
    assert sw.trace_drain() == []
    assert not sw.trace_on


def test_trace_records_decisions(impl: Any) -> None:
    sw = world(impl)
    sw.set_trace(True)
    req = wire.arp_request(A, "192.168.55.4", "192.168.55.3")
    sw.from_port(0, req, 1.0)
    frame = icmp(B, A)
    (out,) = sw.from_port(0, frame, 2.0)
    sw.from_underlay(REMOTE, b"\x00" * 4, 3.0)
    r1, r2, r3 = sw.trace_drain()
    assert r1[1] == "port:0" and r1[2] == VNI and r1[4] == req
    assert "proxy_reply" in r1[7] and ("port", 0) in r1[6] and ("port", 1) in r1[6]
    assert r2 == (2.0, "port:0", VNI, len(frame), frame, "", (("vtep", REMOTE, out[2]),), ())
    assert r3[1] == REMOTE and r3[5] == "short_header" and r3[6] == ()
    assert sw.trace_drain() == []


def test_trace_ring_is_bounded_and_counts_losses(impl: Any) -> None:
    sw = world(impl)
    sw.set_trace(True)
    frame = icmp(B, A)
    for _ in range(reference.TRACE_RING + 10):
        sw.from_port(0, frame, 1.0)
    assert len(sw.trace_drain()) == reference.TRACE_RING
    assert sw.trace_lost == 10


def test_trace_snaps_long_frames(impl: Any) -> None:
    sw = impl.Switch(LOCAL)
    sw.add_network(VNI, mtu=9000)
    sw.add_port(0, VNI, A)
    sw.fdb_add(VNI, B, REMOTE)
    sw.set_trace(True)
    frame = icmp(B, A) + bytes(5000)
    sw.from_port(0, frame, 1.0)
    (rec,) = sw.trace_drain()
    assert rec[3] == len(frame) and rec[4] == frame[:reference.TRACE_SNAP]


def test_describe_names_vtep_and_inner_addresses() -> None:
    sw = world(reference)
    sw.set_trace(True)
    sw.from_port(0, icmp(B, A), 1.0)
    (rec,) = sw.trace_drain()
    d = tr.describe(rec, lambda p: f"c{p}", lambda v: "mynet")
    assert d["decode"] == "ICMP echo-request 192.168.55.4 > 192.168.55.3"
    assert d["to"][0]["vtep"] == REMOTE and d["to"][0]["vni"] == VNI
    assert any("FDB hit 02:42:c0:a8:37:03" in s for s in d["decisions"])
    assert REMOTE in d["line"] and d["verdict"] == "forwarded"


def test_capture_blocks_read_back_by_scapy() -> None:
    from scapy.layers.inet import ICMP, UDP
    from scapy.layers.vxlan import VXLAN
    from scapy.utils import PcapNgReader

    sw = world(reference)
    sw.set_trace(True)
    sw.from_port(0, icmp(B, A), 1.0)
    (rec,) = sw.trace_drain()
    data = tr.pcapng_header([("c0", tr.LINKTYPE_ETHERNET), ("c1", tr.LINKTYPE_ETHERNET),
                             ("underlay", tr.LINKTYPE_IPV4)])
    data += b"".join(tr.capture_blocks(rec, {0: 0, 1: 1}.get, 2, parse_locals(LOCAL), 0.0))
    pkts = list(PcapNgReader(io.BytesIO(data)))
    assert len(pkts) == 2
    assert ICMP in pkts[0]
    outer = pkts[1]
    assert UDP in outer and outer[UDP].dport == 4789
    assert VXLAN(bytes(outer[UDP].payload)).vni == VNI


def test_explain_agrees_with_trace(impl: Any) -> None:
    sw = world(impl)
    out = tr.explain(sw, 0, VNI, "02:42:c0:a8:37:04", "192.168.55.4", "192.168.55.3",
                     lambda p: f"c{p}", lambda v: "mynet", {VNI: {}}, [(0, VNI), (1, VNI)],
                     LOCAL, wire.DEFAULT_SRC_PORT_RANGE)
    assert out["verdict"] == "forwarded"
    sw.set_trace(True)
    frame = icmp(B, A)
    sw.from_port(0, frame, 1.0)
    (rec,) = sw.trace_drain()
    # Same inner addresses and protocol → same flow → same outer source port.
    assert out["to"] == [{"vtep": REMOTE, "sport": rec[6][0][2], "vni": VNI}]
