"""The IPv6 ND proxy (the kernel's ``neigh_reduce`` / ``vxlan_na_create`` with vxlan
``proxy``) in both cores, and the IPv6 neighbour table it reads.

A Neighbor Solicitation for an address in the network's neighbour table is answered with a
Neighbor Advertisement written back to the ingress port and never crosses the underlay; with
no entry it raises an l3miss; a local target is left to the endpoint; DAD is left to the
local containers; one a receiving host would refuse (RFC 4861 §7.1.1) is dropped as
``bad_nd``. The NA bytes are the kernel's, down to the checksum (captured from a real vxlan,
/work/notes/kernel-semantics.md §6.3), and scapy decodes them.
"""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane import wire
from tests.strategies import (
    C1_MAC,
    C2_MAC,
    LOCAL,
    PEER_MAC,
    REMOTE,
    VNI,
    ZERO_MAC,
    ipv6_frame,
    ns_frame,
    ns_frames,
    vxlan_hdr,
)

C1_6, C2_6, PEER_6, NOBODY_6 = (IPv6Address("fd00:55::4"), IPv6Address("fd00:55::5"),
                                IPv6Address("fd00:55::3"), IPv6Address("fd00:55::99"))


def nd_switch(impl: Any, *, proxy: bool = True, flood: bool = False) -> Any:
    """c1 (port 1) and c2 (port 2) local, the peer behind REMOTE; neighbour entries for all
    three, as Docker programs them."""
    sw = impl.Switch(LOCAL)
    sw.add_network(VNI, proxy=proxy)
    sw.add_port(1, VNI, C1_MAC)
    sw.add_port(2, VNI, C2_MAC)
    sw.fdb_add(VNI, PEER_MAC, REMOTE)
    if flood:
        sw.fdb_append(VNI, ZERO_MAC, REMOTE)
    for ip, mac in ((PEER_6, PEER_MAC), (C1_6, C1_MAC), (C2_6, C2_MAC)):
        sw.neigh_add(VNI, ip, mac)
    return sw


def drops(sw: Any) -> dict[str, int]:
    return {k: v for k, v in sw.counters()["drops"].items() if v}


def test_kernel_bytes() -> None:
    """NS from fd00:55::1 (02:42:c0:a8:37:01) for fd00:55::2 (02:42:c0:a8:37:02): the NA the
    kernel's vxlan sent, byte for byte (checksum 0x23b0)."""
    a, b = bytes.fromhex("0242c0a83701"), bytes.fromhex("0242c0a83702")
    ns = wire.parse_ns(ns_frame(a, "fd00:55::1", "fd00:55::2"))
    assert ns is not None
    assert wire.na_reply(ns, a, b) == bytes.fromhex(
        "0242c0a837010242c0a8370286dd6000000000203afffd000055000000000000000000000002fd00"
        "0055000000000000000000000001880023b060000000fd00005500000000000000000000000202010242"
        "c0a83702")


def test_answered_from_the_neighbour_table(impl: Any) -> None:
    sw = nd_switch(impl)
    f = ns_frame(C1_MAC, C1_6, PEER_6)
    acts = sw.from_port(1, f, 0.0)
    # the bridge floods the multicast NS to c2; the proxy answers c1; nothing is tunnelled
    assert [a[:2] for a in acts] == [("port", 2), ("port", 1)]
    na = acts[1][2]
    assert na == wire.na_reply(wire.parse_ns(f), C1_MAC, PEER_MAC)  # type: ignore[arg-type]
    assert sw.counters()["counters"]["proxy_replies"] == 1 and drops(sw) == {}


def test_scapy_decodes_the_advertisement(impl: Any) -> None:
    inet6 = pytest.importorskip("scapy.layers.inet6")
    l2 = pytest.importorskip("scapy.layers.l2")
    sw = nd_switch(impl)
    na = sw.from_port(1, ns_frame(C1_MAC, C1_6, PEER_6, tclass=0xb8), 0.0)[-1][2]
    p = l2.Ether(na)
    ip6, adv = p[inet6.IPv6], p[inet6.ICMPv6ND_NA]
    assert (p.dst, p.src) == (C1_MAC.hex(":"), PEER_MAC.hex(":"))
    assert (ip6.src, ip6.dst, ip6.hlim, ip6.tc, ip6.fl) == (str(PEER_6), str(C1_6), 255, 0xb0, 0)
    assert (adv.R, adv.S, adv.O, adv.tgt) == (0, 1, 1, str(PEER_6))
    assert p[inet6.ICMPv6NDOptDstLLAddr].lladdr == PEER_MAC.hex(":")
    chk = adv.cksum
    del adv.cksum
    assert l2.Ether(bytes(p))[inet6.ICMPv6ND_NA].cksum == chk


def test_without_sllao_the_answer_goes_to_the_ethernet_source(impl: Any) -> None:
    sw = nd_switch(impl)
    na = sw.from_port(1, ns_frame(C1_MAC, C1_6, PEER_6, sllao=False), 0.0)[-1][2]
    assert na[:12] == C1_MAC + PEER_MAC


def test_sllao_names_the_answers_destination(impl: Any) -> None:
    sw = nd_switch(impl)
    other = bytes.fromhex("02000000beef")
    # an unknown option first, then the source link-layer option: the first SLLAO counts
    f = ns_frame(C1_MAC, C1_6, PEER_6, options=b"\x0e\x01" + bytes(6) + b"\x01\x01" + other)
    na = sw.from_port(1, f, 0.0)[-1][2]
    assert na[:6] == other


def test_unicast_solicitation(impl: Any) -> None:
    sw = nd_switch(impl)
    f = ns_frame(C1_MAC, C1_6, PEER_6, dst=PEER_6)
    f = PEER_MAC + f[6:]            # to the peer's MAC, as NUD probes are
    acts = sw.from_port(1, f, 0.0)
    assert [a[:2] for a in acts] == [("port", 1)]


def test_unknown_target_is_an_l3miss(impl: Any) -> None:
    sw = nd_switch(impl)
    acts = sw.from_port(1, ns_frame(C1_MAC, C1_6, NOBODY_6), 0.0)
    assert [a[:2] for a in acts] == [("port", 2)]      # the local flood only
    assert sw.events() == [("l3miss", VNI, str(NOBODY_6), "", "")]
    assert sw.counters()["counters"]["l3miss"] == 1


def test_local_target_is_left_to_the_endpoint(impl: Any) -> None:
    sw = nd_switch(impl)
    sw.set_trace(True)
    acts = sw.from_port(1, ns_frame(C1_MAC, C1_6, C2_6), 0.0)
    assert [a[:2] for a in acts] == [("port", 2)]      # c2 answers itself
    assert sw.trace_drain()[0][7] == ("nd_local",)
    assert sw.counters()["counters"]["proxy_replies"] == 0


def test_dad_is_left_to_the_local_containers(impl: Any) -> None:
    sw = nd_switch(impl)
    sw.set_trace(True)
    acts = sw.from_port(1, ns_frame(C1_MAC, "::", PEER_6, sllao=False), 0.0)
    assert [a[:2] for a in acts] == [("port", 2)]
    assert sw.trace_drain()[0][7] == ("nd_dad",)
    assert sw.events() == []


def test_loopback_destination_is_consumed(impl: Any) -> None:
    sw = nd_switch(impl)
    sw.set_trace(True)
    acts = sw.from_port(1, ns_frame(C1_MAC, C1_6, PEER_6, dst="::1"), 0.0)
    assert [a[:2] for a in acts] == [("port", 2)]     # 33:33:00:00:00:01: flooded locally
    assert sw.trace_drain()[0][7] == ("nd_consumed",)


def test_never_tunnelled_even_with_a_flood_list(impl: Any) -> None:
    sw = nd_switch(impl, flood=True)
    for f in (ns_frame(C1_MAC, C1_6, PEER_6), ns_frame(C1_MAC, C1_6, NOBODY_6),
              ns_frame(C1_MAC, "::", NOBODY_6, sllao=False)):
        assert all(a[0] == "port" for a in sw.from_port(1, f, 0.0))
    assert sw.counters()["underlay"]["tx_packets"] == 0


def test_without_proxy_solicitations_cross(impl: Any) -> None:
    sw = nd_switch(impl, proxy=False, flood=True)
    acts = sw.from_port(1, ns_frame(C1_MAC, C1_6, PEER_6), 0.0)
    assert [a[0] for a in acts] == ["port", "vtep"]


def test_other_icmpv6_is_forwarded(impl: Any) -> None:
    """NA, RS, MLD or an NS with code 1 are not the proxy's: the FDB path, as the kernel."""
    sw = nd_switch(impl, flood=True)
    na = ipv6_frame(PEER_MAC, C1_MAC, C1_6, PEER_6, nexthdr=58,
                    l4=bytes([136, 0, 0, 0]) + bytes(20))
    assert [a[0] for a in sw.from_port(1, na, 0.0)] == ["vtep"]
    code1 = ns_frame(C1_MAC, C1_6, PEER_6, code=1)
    assert [a[0] for a in sw.from_port(1, code1, 0.0)] == ["port", "vtep"]


@pytest.mark.parametrize("bad", [
    dict(hlim=64), dict(hlim=0), dict(options=b"\x01\x00" + C1_MAC),
    dict(options=b"\x01\x02" + C1_MAC), dict(options=b"\x01\x02" + C1_MAC + bytes(8)),
    dict(options=b"\x05"), dict(target="ff02::1"), dict(src="::"),
    dict(src="::", sllao=False, dst="fd00:55::3"),
], ids=["hlim64", "hlim0", "optlen0", "opt-overrun", "sllao-16-bytes", "opt-1-byte",
        "multicast-target", "dad-with-sllao", "dad-not-solicited-node"])
def test_malformed_solicitations_are_dropped(impl: Any, bad: dict[str, Any]) -> None:
    sw = nd_switch(impl, flood=True)
    kw = {"src": C1_6, "target": PEER_6, **bad}
    f = ns_frame(C1_MAC, kw.pop("src"), kw.pop("target"), **kw)
    assert sw.from_port(1, f, 0.0) == []
    assert drops(sw) == {"bad_nd": 1}


@pytest.mark.parametrize("how", ["checksum", "payload-too-long", "payload-too-short"])
def test_broken_lengths_and_checksum_are_dropped(impl: Any, how: str) -> None:
    sw = nd_switch(impl)
    f = bytearray(ns_frame(C1_MAC, C1_6, PEER_6))
    if how == "checksum":
        f[57] ^= 1
    elif how == "payload-too-long":
        f[19] += 8
    else:
        f[19] = 16
    assert sw.from_port(1, bytes(f), 0.0) == []
    assert drops(sw) == {"bad_nd": 1}


def test_from_the_underlay(impl: Any) -> None:
    """A peer without a proxy floods its NS: good ones reach the local ports (the endpoint
    answers), malformed ones are dropped there too."""
    sw = nd_switch(impl)
    good = ns_frame(PEER_MAC, PEER_6, C1_6)
    assert [a[:2] for a in sw.from_underlay(REMOTE, vxlan_hdr(VNI) + good, 0.0)] == \
        [("port", 1), ("port", 2)]
    bad = ns_frame(PEER_MAC, PEER_6, C1_6, hlim=64)
    assert sw.from_underlay(REMOTE, vxlan_hdr(VNI) + bad, 0.0) == []
    assert drops(sw) == {"bad_nd": 1}


def test_neighbour_table_of_both_families(impl: Any) -> None:
    sw = nd_switch(impl)
    sw.neigh_add(VNI, "192.168.55.3", PEER_MAC)
    sw.neigh_add(VNI, "fe80::42:c0ff:fea8:3703", PEER_MAC, "reachable")
    rows = sw.neigh_dump()
    assert [r["ip"] for r in rows] == ["192.168.55.3", "fd00:55::3", "fd00:55::4",
                                       "fd00:55::5", "fe80::42:c0ff:fea8:3703"]
    assert sw.neigh_get(VNI, "fd00:55:0::3") == {"vni": VNI, "ip": "fd00:55::3",
                                                  "lladdr": PEER_MAC.hex(":"),
                                                  "state": "permanent"}
    sw.neigh_replace(VNI, PEER_6, C2_MAC)
    assert sw.neigh_get(VNI, PEER_6)["lladdr"] == C2_MAC.hex(":")
    sw.neigh_del(VNI, "fd00:55::3")
    assert sw.neigh_get(VNI, PEER_6) is None
    # the same address in another network is another entry
    sw.add_network(4098)
    sw.neigh_add(4098, C1_6, C1_MAC)
    assert sw.neigh_flush(VNI) == 4 and [r["ip"] for r in sw.neigh_dump()] == [str(C1_6)]


def test_dump_in_slices_has_both_families(impl: Any) -> None:
    sw = nd_switch(impl)
    for i in range(300):
        sw.neigh_add(VNI, f"fd00:55::1:{i:x}", PEER_MAC)
        sw.neigh_add(VNI, f"192.168.56.{i % 250}" if i < 250 else f"192.168.57.{i - 250}",
                     PEER_MAC)
    rows, cursor = [], 0
    while cursor != -1:
        chunk, cursor = sw.neigh_dump_chunk(cursor, 64)
        rows += chunk
    assert sorted(r["ip"] for r in rows) == sorted(r["ip"] for r in sw.neigh_dump())
    assert len(rows) == 603


@settings(max_examples=300, deadline=None)
@given(ns_frames(sha=st.sampled_from([C1_MAC, C2_MAC, PEER_MAC]),
                 target=st.sampled_from([PEER_6, C1_6, C2_6, NOBODY_6,
                                         IPv6Address("ff02::1")])))
def test_both_cores_agree_on_solicitations(frame: bytes) -> None:
    core = pytest.importorskip("_fastpath.core")
    from dataplane import switch as reference

    a, b = nd_switch(reference, flood=True), nd_switch(core, flood=True)
    for sw in (a, b):
        sw.set_trace(True)
    port = 1 if frame[6:12] != C2_MAC else 2
    assert a.from_port(port, frame, 0.0) == b.from_port(port, frame, 0.0)
    assert a.counters() == b.counters() and a.events() == b.events()
    assert a.trace_drain() == b.trace_drain()
    dg = vxlan_hdr(VNI) + frame
    assert a.from_underlay(REMOTE, dg, 1.0) == b.from_underlay(REMOTE, dg, 1.0)
    assert a.counters() == b.counters()


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=78, max_size=140))
def test_parse_ns_never_raises(data: bytes) -> None:
    f = data[:12] + b"\x86\xdd\x60" + data[15:20] + b"\x3a\xff" + data[22:54] + b"\x87\x00" \
        + data[56:]
    assert wire.is_ns(f)
    ns = wire.parse_ns(f)
    if ns is not None:
        assert len(ns.target) == 16 and ns.target[0] != 0xFF
        assert len(wire.na_reply(ns, C1_MAC, PEER_MAC)) == 86
