"""The outer header rules (``dataplane.tunnel``; C: ``_fastpath/core/tunnel.pyx``) through both
cores: RFC 6040 ECN on encapsulation and decapsulation with the kernel's exact table (the cases of
the kernel selftest ``vxlan_bridge_1d.sh``), ``ttl``, ``tos`` and ``df`` as ``vxlan_xmit_one``
computes them, and the outer IPv4 header bytes (scapy as the oracle)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from dataplane import tunnel, wire
from dataplane.errors import InvalidArgument
from tests.strategies import C1_MAC, LOCAL, PEER_MAC, REMOTE, VNI

MAC_A, MAC_P = wire.mac_str(C1_MAC), wire.mac_str(PEER_MAC)


def core(impl: Any, **net: Any) -> Any:
    sw = impl.Switch(LOCAL)
    sw.add_network(VNI, **net)
    sw.add_port(1, VNI, C1_MAC)
    sw.fdb_add(VNI, PEER_MAC, REMOTE)
    return sw


def ip4(tos: int = 0, ttl: int = 33, flags: str = "") -> bytes:
    return bytes(Ether(src=MAC_A, dst=MAC_P) / IP(src="192.168.55.4", dst="192.168.55.3",
                                                     tos=tos, ttl=ttl, flags=flags)
                 / UDP(sport=1, dport=2) / Raw(b"x" * 20))


def ip6(tc: int = 0, hlim: int = 44) -> bytes:
    return bytes(Ether(src=MAC_A, dst=MAC_P) / IPv6(src="fd00:55::4", dst="fd00:55::3", tc=tc,
                                                       hlim=hlim) / UDP() / Raw(b"y" * 20))


def other() -> bytes:
    """A frame that is not IP (IEEE local experimental ethertype; ARP is the proxy's and
    never crosses the underlay)."""
    return C1_MAC[:0] + PEER_MAC + C1_MAC + b"\x88\xb5" + bytes(46)


def arp() -> bytes:
    return bytes(Ether(src=MAC_A, dst=MAC_P) / ARP(op=2, hwsrc=MAC_A, psrc="192.168.55.4",
                                                     pdst="192.168.55.3"))


def tagged(inner: bytes) -> bytes:
    return inner[:12] + b"\x81\x00\x00\x0a" + inner[12:]


def outer_of(sw: Any, frame: bytes) -> tunnel.Outer:
    (act,) = sw.from_port(1, frame, 0.0)
    assert act[0] == "vtep"
    return act[4]


# --------------------------------------------------------------------------- encapsulation

@pytest.mark.parametrize(("inner", "want"), [(0, 0), (1, 1), (2, 2), (3, 2)])
def test_ecn_encap_copies_ect_and_sends_ce_as_ect0(impl: Any, inner: int, want: int) -> None:
    """vxlan_bridge_1d.sh test_ecn_encap: ping -Q 0x00/0x01/0x02/0x03 → outer 0x00/01/02/02,
    over IPv4 and IPv6 inner (tos inherit, so the outer DSCP is the inner's: 0 here)."""
    sw = core(impl, tos="inherit")
    assert outer_of(sw, ip4(tos=inner)).tos == want
    assert outer_of(sw, ip6(tc=inner)).tos == want


@pytest.mark.parametrize(("tos", "inner", "want"), [
    (0, 0xB8, 0x00), (0, 0xB9, 0x01), (0, 0xBB, 0x02),          # default: DSCP 0, ECN copied
    (0xFF, 0x00, 0xFC), (0xFF, 0x02, 0xFE), (0xFF, 0x03, 0xFE),  # fixed: its ECN bits dropped
    (0x1D, 0x00, 0x1C), (3, 0x00, 0x00),
    ("inherit", 0xB8, 0xB8), ("inherit", 0xBB, 0xBA), ("inherit", 0xFF, 0xFE),
    ("inherit", 0x14, 0x14),                                      # selftest test_tos
])
def test_tos(impl: Any, tos: Any, inner: int, want: int) -> None:
    sw = core(impl, tos=tos)
    assert outer_of(sw, ip4(tos=inner)).tos == want
    assert outer_of(sw, ip6(tc=inner)).tos == want


@pytest.mark.parametrize("tos", [0, 0xB8, "inherit"])
def test_tos_of_non_ip_and_tagged_frames(impl: Any, tos: Any) -> None:
    """Non-IP inner frames count as TOS 0; inheritance looks through VLAN tags."""
    sw = core(impl, tos=tos)
    base = 0 if tos == "inherit" else tos
    assert outer_of(sw, other()).tos == base
    assert outer_of(sw, tagged(ip4(tos=0xB9))).tos == (0xB9 if tos == "inherit" else base | 1)


@pytest.mark.parametrize(("ttl", "v4", "v6", "nonip"), [
    ("auto", 64, 64, 64), (0, 64, 64, 64), (100, 100, 100, 100), (1, 1, 1, 1),
    ("inherit", 33, 44, 64),       # not IP under inherit: 0, so the route's 64
])
def test_ttl(impl: Any, ttl: Any, v4: int, v6: int, nonip: int) -> None:
    sw = core(impl, ttl=ttl)
    assert (outer_of(sw, ip4(ttl=33)).ttl, outer_of(sw, ip6(hlim=44)).ttl,
            outer_of(sw, other()).ttl) == (v4, v6, nonip)
    if ttl == "inherit":
        assert outer_of(sw, tagged(ip4(ttl=77))).ttl == 77


@pytest.mark.parametrize(("df", "want"), [
    ("unset", (False, False, False, False, False)),
    ("set", (True, True, True, True, True)),
    ("inherit", (True, False, True, False, False)),   # tagged: eth->h_proto is 0x8100
])
def test_df(impl: Any, df: str, want: tuple[bool, ...]) -> None:
    sw = core(impl, df=df)
    frames = (ip4(flags="DF"), ip4(), ip6(), other(), tagged(ip4(flags="DF")))
    assert tuple(outer_of(sw, f).df for f in frames) == want


@pytest.mark.parametrize(("key", "bad"), [("ttl", 256), ("ttl", -1), ("ttl", "sometimes"),
                                          ("ttl", True), ("tos", 300), ("tos", "inherited"),
                                          ("df", "maybe")])
def test_bad_rules_are_refused(impl: Any, key: str, bad: Any) -> None:
    with pytest.raises(InvalidArgument, match=key):
        impl.Switch(LOCAL).add_network(VNI, **{key: bad})


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tos=st.integers(0, 255), ttl=st.integers(1, 255), df=st.booleans(),
       payload=st.binary(max_size=300))
def test_outer_header_bytes(c_core: Any, tos: int, ttl: int, df: bool, payload: bytes) -> None:
    """The C header builder equals wire.outer_datagram, and scapy reads the fields back."""
    from _fastpath import testing

    sw = c_core.Switch(LOCAL)
    got = testing.build_outer(sw, REMOTE, 50000, payload, tos, ttl, df)
    assert got == wire.outer_datagram(LOCAL, REMOTE, 50000, payload, tos=tos, ttl=ttl, df=df)
    p = IP(got)
    assert (p.tos, p.ttl, bool(p.flags.DF)) == (tos, ttl, df)
    ref = IP(bytes(p))
    del ref.chksum
    del ref[UDP].chksum
    assert bytes(IP(bytes(ref))) == got


# --------------------------------------------------------------------------- decapsulation

# (inner ECN, outer ECN) → delivered ECN, None = dropped: vxlan_bridge_1d.sh test_ecn_decap and
# test_ecn_decap_error, the kernel's INET_ECN_decapsulate with INET_ECN_set_ect1.
DECAP = {(i, o): i for i in range(4) for o in range(4)}
DECAP.update({(0, 3): None, (1, 3): 3, (2, 3): 3, (2, 1): 1})


def decap(sw: Any, frame: bytes, tos: int) -> bytes | None:
    """The frame as delivered to c1 (the peer sends it: the MACs turned round), or None."""
    frame = C1_MAC + PEER_MAC + frame[12:]
    acts = sw.from_underlay(REMOTE, wire.vxlan_header(VNI) + frame, 0.0, tos=tos)
    return acts[0][2] if acts else None


@pytest.mark.parametrize(("inner", "outer"), sorted(DECAP))
def test_ecn_decap_table(impl: Any, inner: int, outer: int) -> None:
    sw = core(impl)
    want = DECAP[(inner, outer)]
    for frame, tos_of in ((ip4(tos=0xB8 | inner), lambda f: IP(f[14:]).tos),
                          (ip6(tc=0xB8 | inner), lambda f: IPv6(f[14:]).tc)):
        got = decap(sw, frame, 0xA0 | outer)           # the outer DSCP is never copied in
        if want is None:
            assert got is None
        else:
            assert got is not None and tos_of(got) == 0xB8 | want
    drops = sw.counters()["drops"]["ecn_not_ect_ce"]
    assert drops == (2 if want is None else 0)


def test_ce_marking_keeps_the_ipv4_checksum_exactly_as_right_or_wrong(impl: Any) -> None:
    """IP_ECN_set_ce adjusts the checksum incrementally: a good one stays good, a bad one
    stays bad by the same amount (0x1234 → 0x1233 for ECT(0), as the kernel does)."""
    sw = core(impl)
    good = ip4(tos=2)
    out = decap(sw, good, 3)
    assert out is not None
    ref = IP(out[14:])
    del ref.chksum
    assert bytes(IP(bytes(ref)))[:20] == out[14:34]
    bad = bytearray(good)
    bad[24:26] = b"\x12\x34"
    assert decap(sw, bytes(bad), 3)[24:26] == b"\x12\x33"
    bad[15] = 1
    assert decap(sw, bytes(bad), 3)[24:26] == b"\x12\x32"


@pytest.mark.parametrize("frame", [arp(), tagged(ip4()), tagged(ip4(tos=2))],
                         ids=["arp", "tagged_not_ect", "tagged_ect0"])
def test_non_ip_and_tagged_frames_pass_under_ce(impl: Any, frame: bytes) -> None:
    sw = core(impl)
    assert decap(sw, frame, 3) == C1_MAC + PEER_MAC + frame[12:]


@settings(max_examples=200, deadline=None)
@given(frame=st.binary(min_size=14, max_size=120), tos=st.integers(0, 255))
def test_decap_on_garbage_is_the_reference(frame: bytes, tos: int) -> None:
    """The C decapsulation equals tunnel.ecn_decap on any bytes (the cores compared through
    their actions: same frame delivered, or both drop)."""
    from dataplane import fastpath
    try:
        c = fastpath.implementation("c")
    except ImportError:
        pytest.skip("fast path not built")
    frame = C1_MAC + PEER_MAC + frame[12:]
    want = tunnel.ecn_decap(frame, tos)
    got = decap(core(c), frame, tos)
    if want is None:
        assert got is None
    elif len(frame) <= 1450 + 14:
        assert got == want
