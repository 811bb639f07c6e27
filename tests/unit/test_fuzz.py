"""Robustness of both cores (``impl``) and of the wire parsers against hostile input: random
bytes, bit flips, every truncation, junk appended. Nothing may raise; every input is either
forwarded or counted under at most one drop reason; nothing crosses from one VNI to another;
every encapsulation carries a well-formed VXLAN header with the right VNI."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane import wire
from tests.strategies import (
    BROADCAST,
    HEALTH,
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
    VNI_B,
    arp_frames,
    arp_request,
    bad_src_macs,
    eth,
    ip_frames,
    ipv4_frame,
    mutations,
    unicast_macs,
    vxlan_hdr,
    walkthrough_network,
)


B4_MAC = bytes.fromhex("02000000b004")
B5_MAC = bytes.fromhex("02000000b005")
B_PEER_MAC = bytes.fromhex("02000000b0ff")
R5, R6 = IPv4Address("198.18.0.5"), IPv4Address("198.18.0.6")

PORTS = {VNI: {1, 2, 3}, VNI_B: {4, 5}}
PORT_VNI = {p: v for v, ps in PORTS.items() for p in ps}
REMOTES = {VNI: {REMOTE, REMOTE2, REMOTE3}, VNI_B: {R5, R6}}   # disjoint on purpose
SPORT_RANGE = (40000, 40999)
MACS = [C1_MAC, C2_MAC, PEER_MAC, B4_MAC, B5_MAC, B_PEER_MAC, BROADCAST,
        bytes.fromhex("02000000cafe")]


def topology(impl: Any, *, strict: bool = True, learning: bool = False) -> Any:
    """Two networks with disjoint ports and disjoint remote VTEPs."""
    sw = walkthrough_network(impl.Switch(LOCAL, strict=strict, src_port_range=SPORT_RANGE),
                             learning=learning)
    sw.add_port(3, VNI)
    sw.neigh_add(VNI, C1_IP, C1_MAC)
    sw.add_network(VNI_B, mtu=1500, proxy=False, learning=learning)
    sw.add_port(4, VNI_B, B4_MAC)
    sw.add_port(5, VNI_B, B5_MAC)
    sw.fdb_add(VNI_B, B_PEER_MAC, R6)
    sw.fdb_append(VNI_B, "00:00:00:00:00:00", R5)
    sw.neigh_add(VNI_B, PEER_IP, B_PEER_MAC)
    return sw


def total_drops(sw: Any) -> int:
    return sum(sw.counters()["drops"].values())


def counted_once(sw: Any, step: Any) -> tuple[list[Any], int]:
    """``step()``'s actions and how many drops it counted: at most one, and a counted drop
    forwards nothing."""
    before = total_drops(sw)
    acts = step()
    delta = total_drops(sw) - before
    assert 0 <= delta <= 1
    if delta:
        assert acts == []
    return acts, delta


def check_from_port(sw: Any, port: int, frame: bytes, now: float = 0.0,
                    learned_remotes: bool = False) -> list[Any]:
    acts, delta = counted_once(sw, lambda: sw.from_port(port, frame, now))
    vni = PORT_VNI.get(port)
    if vni is None:
        assert acts == [] and delta == 1
        return acts
    hdr = vxlan_hdr(vni)
    for a in acts:
        if a[0] == "port":
            _, p, out = a
            assert p in PORTS[vni], f"frame from VNI {vni} leaked to port {p}"
            if p == port:   # only the ARP proxy writes back to the ingress port
                assert len(out) == 42 and out[12:14] == b"\x08\x06" and out[20:22] == b"\x00\x02"
                assert out[0:6] == frame[22:28]            # to the requester's sha
            else:
                assert out == frame
        else:
            assert a[0] == "vtep"
            _, dst, sport, payload, _outer = a
            assert learned_remotes or dst in REMOTES[vni], f"VNI {vni} frame sent to {dst}"
            assert SPORT_RANGE[0] <= sport <= SPORT_RANGE[1]
            assert payload[:8] == hdr and payload[8:] == frame
            assert wire.parse_vxlan(payload) == (None, vni)
            assert not wire.reserved_bits_set(payload)
    return acts


def check_from_underlay(sw: Any, source: IPv4Address, datagram: bytes,
                        now: float = 0.0) -> list[Any]:
    acts, _ = counted_once(sw, lambda: sw.from_underlay(source, datagram, now))
    if acts:
        vni = int.from_bytes(datagram[4:7], "big")
        assert vni in PORTS
        for a in acts:
            assert a[0] == "port", "split horizon: nothing from the underlay goes back to it"
            assert a[1] in PORTS[vni], f"VNI {vni} datagram leaked to port {a[1]}"
            assert a[2] == datagram[8:]
    return acts


# --------------------------------------------------------------------------- strategies

macs = st.sampled_from(MACS) | unicast_macs
srcs = st.sampled_from(MACS[:6]) | unicast_macs | bad_src_macs
valid_frames = st.one_of(
    arp_frames(sha=st.sampled_from(MACS[:6]), dst=st.sampled_from([BROADCAST, PEER_MAC, C1_MAC])),
    ip_frames(dst=macs, src=srcs),
    st.builds(eth, macs, srcs, st.sampled_from([0x88B5, 0x86DD, 0x0806, 0x0800]),
              st.binary(max_size=40)),
)
any_frames = st.one_of(valid_frames, valid_frames.flatmap(mutations), st.binary(max_size=80))
vnis = st.sampled_from([VNI, VNI_B, VNI, VNI_B, 4099])


@st.composite
def any_datagrams(draw: st.DrawFn) -> bytes:
    base = vxlan_hdr(draw(vnis)) + draw(valid_frames)
    return draw(st.one_of(st.just(base), mutations(base), st.binary(max_size=90)))


def _run(n: int, strategy: st.SearchStrategy[Any], body: Any) -> None:
    @settings(max_examples=n, suppress_health_check=HEALTH)
    @given(strategy)
    def inner(x: Any) -> None:
        body(x)

    inner()


# --------------------------------------------------------------------------- both cores


@pytest.mark.parametrize("strict", [True, False])
def test_fuzz_from_underlay(impl: Any, strict: bool) -> None:
    def body(args: tuple[IPv4Address, bytes]) -> None:
        check_from_underlay(topology(impl, strict=strict), *args)

    _run(300, st.tuples(st.sampled_from([REMOTE, R5, IPv4Address("10.0.0.1")]),
                        any_datagrams()), body)


def test_fuzz_from_port(impl: Any) -> None:
    def body(args: tuple[int, bytes]) -> None:
        check_from_port(topology(impl), *args)

    _run(300, st.tuples(st.sampled_from([1, 2, 3, 4, 5, 6]), any_frames), body)


def test_fuzz_sequences_with_learning(impl: Any) -> None:
    """Interleaved traffic with learning on: entries move between ports and VTEPs, age, and the
    invariants still hold at every step."""
    op = st.one_of(
        st.tuples(st.just("port"), st.sampled_from([1, 2, 3, 4, 5]), any_frames),
        st.tuples(st.just("underlay"), st.sampled_from([REMOTE, REMOTE2, R5, R6]),
                  any_datagrams()),
        st.tuples(st.just("age"), st.just(0), st.just(b"")),
    )

    def body(ops: list[tuple[str, Any, bytes]]) -> None:
        sw = topology(impl, learning=True)
        for t, (kind, where, data) in enumerate(ops):
            now = 100.0 * t
            if kind == "port":
                check_from_port(sw, where, data, now, learned_remotes=True)
            elif kind == "underlay":
                check_from_underlay(sw, where, data, now)
            else:
                sw.age(now)
        for ev in sw.events():
            assert ev[0] in ("l2miss", "l3miss", "learned", "moved", "aged") and ev[1] in PORTS

    _run(60, st.lists(op, max_size=30), body)


def _valid_arp_datagram() -> bytes:
    return vxlan_hdr(VNI) + arp_request(PEER_MAC, PEER_IP, C1_IP)


def _valid_udp_datagram() -> bytes:
    return vxlan_hdr(VNI) + ipv4_frame(C1_MAC, PEER_MAC, PEER_IP, C1_IP, payload=b"0123456789")


@pytest.mark.parametrize("make", [_valid_arp_datagram, _valid_udp_datagram], ids=["arp", "udp"])
def test_every_truncation_of_a_valid_datagram(impl: Any, make: Any) -> None:
    full = make()
    is_arp = full[8 + 12:8 + 14] == b"\x08\x06"
    for n in range(len(full) + 1):
        sw = topology(impl)
        acts = check_from_underlay(sw, REMOTE, full[:n])
        drops = {k: v for k, v in sw.counters()["drops"].items() if v}
        if n < 8:
            expected = {"short_header": 1}
        elif n < 8 + 14:
            expected = {"runt": 1}
        elif is_arp and n < 8 + 14 + 28:
            expected = {"bad_arp": 1}
        else:
            expected = {}
        assert drops == expected, f"length {n}"
        if not expected:
            ports = [1, 2, 3] if is_arp else [1]   # the ARP request is a broadcast
            assert acts == [("port", p, full[8:n]) for p in ports], f"length {n}"


@pytest.mark.parametrize("frame", [
    arp_request(C1_MAC, C1_IP, PEER_IP),                               # proxied
    ipv4_frame(PEER_MAC, C1_MAC, C1_IP, PEER_IP, payload=b"0123456789"),  # encapsulated
], ids=["arp", "udp"])
def test_every_truncation_of_a_valid_frame_from_a_port(impl: Any, frame: bytes) -> None:
    is_arp = frame[12:14] == b"\x08\x06"
    for n in range(len(frame) + 1):
        sw = topology(impl)
        acts = check_from_port(sw, 1, frame[:n])
        drops = {k: v for k, v in sw.counters()["drops"].items() if v}
        if n < 14:
            assert drops == {"runt": 1}, f"length {n}"
        elif is_arp and n < 42:
            assert drops == {"bad_arp": 1}, f"length {n}"
        else:
            assert drops == {}, f"length {n}"
            assert acts, f"length {n}"


@pytest.mark.parametrize("strict", [True, False])
def test_every_header_bit_flip(impl: Any, strict: bool) -> None:
    full = _valid_udp_datagram()
    for bit in range(64):
        dg = bytearray(full)
        dg[bit // 8] ^= 0x80 >> (bit % 8)
        sw = topology(impl, strict=strict)
        acts = check_from_underlay(sw, REMOTE, bytes(dg))
        drops = {k: v for k, v in sw.counters()["drops"].items() if v}
        if bit == 4:                       # the I flag
            assert drops == {"bad_flags": 1}, bit
        elif 32 <= bit < 56:               # VNI: 4097 with one bit flipped is not served
            assert drops == {"unknown_vni": 1}, bit
        elif strict:
            assert drops == {"reserved_bits": 1}, bit
        else:
            assert drops == {} and acts == [("port", 1, full[8:])], bit


@pytest.mark.parametrize("junk", [b"\x00", b"\xff" * 7, bytes(range(64))])
def test_junk_appended_is_carried_unchanged(impl: Any, junk: bytes) -> None:
    for dg, ports in ((_valid_arp_datagram(), [1, 2, 3]), (_valid_udp_datagram(), [1])):
        sw = topology(impl)
        assert check_from_underlay(sw, REMOTE, dg + junk) == [
            ("port", p, dg[8:] + junk) for p in ports]


def test_random_bytes_from_unknown_port_and_any_source(impl: Any) -> None:
    def body(args: tuple[bytes, int]) -> None:
        data, addr = args
        sw = topology(impl)
        check_from_port(sw, 77, data)
        check_from_underlay(sw, IPv4Address(addr), data)

    _run(150, st.tuples(st.binary(max_size=120), st.integers(0, 2**32 - 1)), body)


# --------------------------------------------------------------------------- wire parsers


@settings(max_examples=500, suppress_health_check=HEALTH)
@given(st.binary(max_size=100))
def test_wire_parsers_never_raise(data: bytes) -> None:
    reason, vni = wire.parse_vxlan(data)
    assert (reason == "short_header") == (len(data) < 8)
    if len(data) >= 8:
        assert vni == int.from_bytes(data[4:7], "big")
        assert reason == (None if data[0] & 0x08 else "bad_flags")
        assert isinstance(wire.reserved_bits_set(data), bool)
    a = wire.parse_arp(data)
    if a is not None:
        assert len(data) >= 42
        assert (len(a.sha), len(a.spa), len(a.tha), len(a.tpa)) == (6, 4, 6, 4)
        assert len(wire.arp_reply(a, PEER_MAC)) == 42
    key = wire.flow_key(data)
    assert isinstance(key, bytes) and len(key) in (min(len(data), 12), 9, 13)
    p = wire.src_port(data, *SPORT_RANGE)
    assert SPORT_RANGE[0] <= p <= SPORT_RANGE[1]


@settings(max_examples=300, suppress_health_check=HEALTH)
@given(valid_frames.flatmap(mutations))
def test_wire_parsers_on_mutated_frames(frame: bytes) -> None:
    wire.parse_arp(frame)
    key = wire.flow_key(frame)
    assert isinstance(key, bytes)
    assert 49152 <= wire.src_port(frame) <= 65535
