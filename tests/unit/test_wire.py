"""dataplane.wire, the pure-Python reference for the bytes on the wire (DESIGN.md §2 "Wire
format"), checked against hand-packed layouts (tests/strategies.py) and scapy."""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN

from dataplane import wire
from tests.strategies import (
    BROADCAST,
    C1_IP,
    C1_MAC,
    ETH_P_ARP,
    ETH_P_IPV6,
    PEER_IP,
    PEER_MAC,
    SRC_PORT_HI,
    SRC_PORT_LO,
    ZERO_MAC,
    arp_request,
    eth,
    ipv4_frame,
    udp,
    vxlan_hdr,
)

# --------------------------------------------------------------------------- VXLAN header


@pytest.mark.parametrize("vni", [0, 1, 4097, 0x123456, 0xFFFFFF])
def test_vxlan_header_layout(vni: int) -> None:
    h = wire.vxlan_header(vni)
    assert h == vxlan_hdr(vni)
    assert len(h) == wire.VXLAN_HLEN == 8
    assert h[0] == 0x08 and h[1:4] == b"\x00\x00\x00" and h[7] == 0
    assert int.from_bytes(h[4:7], "big") == vni
    # scapy packs the same 8 bytes when the flags are spelled out (its default differs)
    assert bytes(VXLAN(flags=0x08, vni=vni)) == h


def test_vxlan_header_walkthrough_bytes() -> None:
    # VNI 4097 = 0x001001, the walkthrough's network
    assert wire.vxlan_header(4097) == bytes.fromhex("0800000000100100")


@pytest.mark.parametrize("vni", [-1, 0x1000000, 2**32])
def test_vxlan_header_rejects_vni_outside_24_bits(vni: int) -> None:
    with pytest.raises(ValueError):
        wire.vxlan_header(vni)


def test_encapsulate_is_header_plus_frame() -> None:
    frame = ipv4_frame(PEER_MAC, C1_MAC, C1_IP, PEER_IP, payload=b"hello")
    assert wire.encapsulate(4097, frame) == vxlan_hdr(4097) + frame


@pytest.mark.parametrize("n", range(8))
def test_parse_vxlan_short_header(n: int) -> None:
    data = vxlan_hdr(4097)[:n]
    assert wire.parse_vxlan(data) == ("short_header", -1)
    assert wire.parse_vxlan(data, strict=False) == ("short_header", -1)


@pytest.mark.parametrize("vni", [0, 1, 4097, 0xFFFFFF])
def test_parse_vxlan_good_header_returns_vni(vni: int) -> None:
    assert wire.parse_vxlan(vxlan_hdr(vni)) == (None, vni)
    assert wire.parse_vxlan(vxlan_hdr(vni) + b"\xaa" * 20) == (None, vni)


@pytest.mark.parametrize("flags", [0x00, 0x01, 0x04, 0x80, 0xF7])
def test_parse_vxlan_i_flag_clear_is_bad_flags_with_vni(flags: int) -> None:
    assert wire.parse_vxlan(vxlan_hdr(4097, flags=flags)) == ("bad_flags", 4097)


# Every reserved bit of the header: flags byte except I, the 24 bits after it, the last byte.
RESERVED_BITS = ([(0, b) for b in range(8) if 1 << b != 0x08]
                 + [(i, b) for i in (1, 2, 3, 7) for b in range(8)])


@pytest.mark.parametrize(("byte", "bit"), RESERVED_BITS)
def test_reserved_bits_each_one_detected(byte: int, bit: int) -> None:
    h = bytearray(vxlan_hdr(4097))
    h[byte] |= 1 << bit
    assert wire.reserved_bits_set(bytes(h)) is True
    # parse_vxlan leaves the strict check to the caller (kernel order: VNI lookup first)
    assert wire.parse_vxlan(bytes(h)) == (None, 4097)


def test_reserved_bits_clean_header_and_vni_bits_not_reserved() -> None:
    assert len(RESERVED_BITS) == 39
    assert wire.reserved_bits_set(vxlan_hdr(4097)) is False
    assert wire.reserved_bits_set(vxlan_hdr(0xFFFFFF)) is False  # VNI bits are not reserved


# --------------------------------------------------------------------------- ARP parse


def _arp(**kw: object) -> bytes:
    return arp_request(C1_MAC, C1_IP, PEER_IP, **kw)  # type: ignore[arg-type]


def test_parse_arp_fields() -> None:
    a = wire.parse_arp(_arp())
    assert a is not None
    assert (a.op, a.sha, a.spa, a.tha, a.tpa) == (1, C1_MAC, C1_IP.packed, ZERO_MAC, PEER_IP.packed)


def test_parse_arp_accepts_padding() -> None:
    a = wire.parse_arp(_arp(pad=18))  # 60 bytes, as a physical link pads it
    assert a is not None and a.tpa == PEER_IP.packed


@pytest.mark.parametrize("n", range(14 + 28))
def test_parse_arp_every_truncation_is_none(n: int) -> None:
    assert wire.parse_arp(_arp()[:n]) is None


@pytest.mark.parametrize(("field", "value"), [
    ("htype", 0), ("htype", 6), ("htype", 0x0100), ("htype", 0xFFFF),
    ("ptype", 0), ("ptype", ETH_P_IPV6), ("ptype", 0x0008), ("ptype", ETH_P_ARP),
    ("hlen", 0), ("hlen", 5), ("hlen", 7), ("hlen", 16), ("hlen", 255),
    ("plen", 0), ("plen", 3), ("plen", 5), ("plen", 16), ("plen", 255),
])
def test_parse_arp_invalid_types_and_lengths(field: str, value: int) -> None:
    assert wire.parse_arp(_arp(**{field: value})) is None


@pytest.mark.parametrize("op", [0, 1, 2, 3, 8, 0xFFFF])
def test_parse_arp_any_op_parses(op: int) -> None:
    # the op is the caller's business (only requests are proxied)
    frame = eth(BROADCAST, C1_MAC, ETH_P_ARP,
                struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + C1_MAC + C1_IP.packed
                + ZERO_MAC + PEER_IP.packed)
    a = wire.parse_arp(frame)
    assert a is not None and a.op == op


def test_arp_request_builder_matches_hand_packed_and_scapy() -> None:
    built = wire.arp_request(C1_MAC, C1_IP, PEER_IP)
    assert built == _arp()
    sc = Ether(dst="ff:ff:ff:ff:ff:ff", src="02:42:c0:a8:37:04") / ARP(
        op=1, hwsrc="02:42:c0:a8:37:04", psrc=str(C1_IP), hwdst="00:00:00:00:00:00",
        pdst=str(PEER_IP))
    assert bytes(sc) == built
    assert wire.arp_request(C1_MAC, "192.168.55.4", "192.168.55.3", dst=PEER_MAC)[:6] == PEER_MAC


# --------------------------------------------------------------------------- ARP reply


def test_arp_reply_bytes_exactly_as_arp_reduce() -> None:
    req = wire.parse_arp(_arp())
    assert req is not None
    reply = wire.arp_reply(req, PEER_MAC)
    expected = (
        C1_MAC + PEER_MAC + b"\x08\x06"                   # eth: to the requester, from answer
        + b"\x00\x01\x08\x00\x06\x04\x00\x02"             # Ethernet/IPv4, op 2 (reply)
        + PEER_MAC + PEER_IP.packed                       # sha = answer MAC, spa = target IP
        + C1_MAC + C1_IP.packed                           # tha = requester sha, tpa = its spa
    )
    assert reply == expected
    assert len(reply) == 42


def test_arp_reply_uses_request_fields_not_ethernet_source() -> None:
    # The kernel answers the ARP sender (sha/spa), even when the Ethernet source differs.
    other = bytes.fromhex("02aabbccddee")
    req = wire.parse_arp(arp_request(C1_MAC, C1_IP, PEER_IP, src=other, tha=b"\x11" * 6))
    assert req is not None
    reply = wire.arp_reply(req, PEER_MAC)
    assert reply[0:6] == C1_MAC and reply[6:12] == PEER_MAC
    assert reply[32:38] == C1_MAC and reply[38:42] == C1_IP.packed


def test_arp_reply_decodes_in_scapy() -> None:
    req = wire.parse_arp(_arp())
    assert req is not None
    p = Ether(wire.arp_reply(req, PEER_MAC))
    assert p.dst == "02:42:c0:a8:37:04" and p.src == "02:42:c0:a8:37:03" and p.type == 0x0806
    a = p[ARP]
    assert (a.hwtype, a.ptype, a.hwlen, a.plen, a.op) == (1, 0x0800, 6, 4, 2)
    assert (a.hwsrc, a.psrc, a.hwdst, a.pdst) == (
        "02:42:c0:a8:37:03", "192.168.55.3", "02:42:c0:a8:37:04", "192.168.55.4")


# --------------------------------------------------------------------------- flow hash


def _udp_flow(sip: str, dip: str, sport: int, dport: int, **kw: object) -> bytes:
    return ipv4_frame(PEER_MAC, C1_MAC, sip, dip, sport=sport, dport=dport, **kw)  # type: ignore[arg-type]


def test_same_flow_same_port_regardless_of_payload_and_macs() -> None:
    a = _udp_flow("192.168.55.4", "192.168.55.3", 40000, 5201, payload=b"x")
    b = ipv4_frame(bytes.fromhex("020000000001"), bytes.fromhex("020000000002"),
                   "192.168.55.4", "192.168.55.3", sport=40000, dport=5201,
                   payload=b"other payload, longer")
    assert wire.flow_key(a) == wire.flow_key(b)
    assert wire.src_port(a) == wire.src_port(b)
    assert wire.src_port(a) == wire.src_port(a)  # stable


def test_flow_key_ipv4_udp_fields() -> None:
    f = _udp_flow("10.0.0.1", "10.0.0.2", 0x1234, 0x5678)
    assert wire.flow_key(f) == (IPv4Address("10.0.0.1").packed + IPv4Address("10.0.0.2").packed
                                + bytes((17,)) + b"\x12\x34\x56\x78")


@pytest.mark.parametrize("proto", [6, 17, 132])
def test_ports_distinguish_flows(proto: int) -> None:
    a = ipv4_frame(PEER_MAC, C1_MAC, "10.0.0.1", "10.0.0.2", proto=proto, sport=1000, dport=80)
    b = ipv4_frame(PEER_MAC, C1_MAC, "10.0.0.1", "10.0.0.2", proto=proto, sport=1001, dport=80)
    assert wire.flow_key(a) != wire.flow_key(b)
    assert wire.src_port(a) != wire.src_port(b)


def test_ports_ignored_for_other_protocols() -> None:
    a = ipv4_frame(PEER_MAC, C1_MAC, "10.0.0.1", "10.0.0.2", proto=1, l4=b"\x08\x00\x00\x00ab")
    b = ipv4_frame(PEER_MAC, C1_MAC, "10.0.0.1", "10.0.0.2", proto=1, l4=b"\x00\x00\xff\xffcd")
    assert wire.flow_key(a) == wire.flow_key(b) == (
        IPv4Address("10.0.0.1").packed + IPv4Address("10.0.0.2").packed + b"\x01")


def test_ip_options_shift_the_ports() -> None:
    f = ipv4_frame(PEER_MAC, C1_MAC, "10.0.0.1", "10.0.0.2", sport=0x0102, dport=0x0304,
                   options=b"\x01\x01\x01\x00")
    assert wire.flow_key(f).endswith(b"\x11\x01\x02\x03\x04")


def test_fragments_of_one_flow_hash_together() -> None:
    payload = bytes(range(64))
    first = ipv4_frame(PEER_MAC, C1_MAC, "10.0.0.1", "10.0.0.2", sport=40000, dport=5201,
                       payload=payload, frag=0x2000)          # MF, offset 0: has the ports
    middle = ipv4_frame(PEER_MAC, C1_MAC, "10.0.0.1", "10.0.0.2", proto=17,
                        l4=payload[:40], frag=0x2000 | 9)    # MF, offset 72: no UDP header
    last = ipv4_frame(PEER_MAC, C1_MAC, "10.0.0.1", "10.0.0.2", proto=17,
                      l4=b"\x99" * 13, frag=18)               # last fragment: offset only
    other_ports = ipv4_frame(PEER_MAC, C1_MAC, "10.0.0.1", "10.0.0.2", sport=1, dport=2,
                             frag=0x2000)
    key = IPv4Address("10.0.0.1").packed + IPv4Address("10.0.0.2").packed + b"\x11"
    for f in (first, middle, last, other_ports):
        assert wire.flow_key(f) == key
    assert len({wire.src_port(f) for f in (first, middle, last, other_ports)}) == 1


def test_dont_fragment_bit_keeps_ports() -> None:
    df = ipv4_frame(PEER_MAC, C1_MAC, "10.0.0.1", "10.0.0.2", sport=0xABCD, dport=0x0102,
                    frag=0x4000)
    assert wire.flow_key(df).endswith(b"\xab\xcd\x01\x02")


@pytest.mark.parametrize("frame", [
    arp_request(C1_MAC, C1_IP, PEER_IP),
    eth(PEER_MAC, C1_MAC, ETH_P_IPV6, bytes(60)),
    eth(PEER_MAC, C1_MAC, 0x88B5, b"payload"),
    eth(PEER_MAC, C1_MAC, 0x0800, bytes([0x60]) + bytes(40)),   # ethertype IP, version 6
    eth(PEER_MAC, C1_MAC, 0x0800, bytes([0x44]) + bytes(40)),   # IHL 4 (< 20 bytes)
    eth(PEER_MAC, C1_MAC, 0x0800, bytes([0x4F]) + bytes(40)),   # IHL 15 > what is there
    ipv4_frame(PEER_MAC, C1_MAC, "10.0.0.1", "10.0.0.2")[:33],  # truncated IPv4 header
    C1_MAC + PEER_MAC,                                          # 12 bytes: only the MACs
])
def test_non_ip_frames_hash_on_macs(frame: bytes) -> None:
    assert wire.flow_key(frame) == frame[:12]


def test_arp_frames_between_same_macs_share_a_port() -> None:
    a = arp_request(C1_MAC, C1_IP, PEER_IP, dst=PEER_MAC)
    b = arp_request(C1_MAC, "192.168.55.77", "192.168.55.78", dst=PEER_MAC)
    c = arp_request(C1_MAC, C1_IP, PEER_IP, dst=bytes.fromhex("02000000beef"))
    assert wire.src_port(a) == wire.src_port(b)
    assert wire.flow_key(a) != wire.flow_key(c)


def test_truncated_l4_hashes_without_ports() -> None:
    full = ipv4_frame(PEER_MAC, C1_MAC, "10.0.0.1", "10.0.0.2", sport=7, dport=9)
    cut = full[:14 + 20 + 3]  # fewer than 4 bytes of UDP header
    assert wire.flow_key(cut) == full[26:34] + b"\x11"
    assert wire.flow_key(full[:14 + 20 + 4]) == full[26:34] + b"\x11" + full[34:38]


def _random_flows(rng: random.Random, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        proto = rng.choice((6, 17))
        out.append(ipv4_frame(PEER_MAC, C1_MAC, IPv4Address(rng.getrandbits(32)),
                              IPv4Address(rng.getrandbits(32)), proto=proto,
                              sport=rng.getrandbits(16), dport=rng.getrandbits(16)))
    return out


def _chi_square(ports: list[int], lo: int, hi: int, buckets: int = 16) -> float:
    counts = [0] * buckets
    width = hi - lo + 1
    for p in ports:
        assert lo <= p <= hi
        counts[(p - lo) * buckets // width] += 1
    expected = len(ports) / buckets
    return sum((c - expected) ** 2 / expected for c in counts)


# 15 degrees of freedom: p = 1e-6 at about 51; a fair hash with a fixed seed sits near 15.
CHI2_BOUND = 55.0


def test_random_flows_spread_evenly_over_the_port_range() -> None:
    rng = random.Random(4789)
    ports = [wire.src_port(f) for f in _random_flows(rng, 20_000)]
    assert _chi_square(ports, SRC_PORT_LO, SRC_PORT_HI) < CHI2_BOUND
    assert len(set(ports)) > 10_000  # not a handful of values


def test_sequential_client_ports_spread_evenly() -> None:
    # One client, one server, 20,000 consecutive source ports: low-entropy keys, the case
    # FNV alone spreads poorly over a range (why wire.py adds the murmur finaliser).
    ports = [wire.src_port(_udp_flow("10.0.0.1", "10.0.0.2", 20_000 + i, 80))
             for i in range(20_000)]
    assert _chi_square(ports, SRC_PORT_LO, SRC_PORT_HI) < CHI2_BOUND


def test_sequential_hosts_spread_evenly() -> None:
    ports = [wire.src_port(_udp_flow(str(IPv4Address("10.0.0.0") + i), "10.1.0.1", 5000, 80))
             for i in range(20_000)]
    assert _chi_square(ports, SRC_PORT_LO, SRC_PORT_HI) < CHI2_BOUND


@pytest.mark.parametrize(("lo", "hi"), [(49152, 65535), (1, 65535), (10000, 10015),
                                        (4000, 4001), (4789, 4789), (65535, 65535), (1, 1)])
def test_src_port_range_respected(lo: int, hi: int) -> None:
    rng = random.Random(lo * 65536 + hi)
    ports = [wire.src_port(f, lo, hi) for f in _random_flows(rng, 500)]
    assert all(lo <= p <= hi for p in ports)
    if hi - lo < 16:
        assert set(ports) == set(range(lo, hi + 1))  # both ends reachable, inclusive range


def test_src_port_default_range_is_iana_dynamic() -> None:
    assert wire.DEFAULT_SRC_PORT_RANGE == (49152, 65535)
    f = _udp_flow("10.0.0.1", "10.0.0.2", 1, 2)
    assert wire.src_port(f) == wire.src_port(f, 49152, 65535)


def test_src_port_is_multiply_shift_of_flow_hash() -> None:
    f = _udp_flow("10.0.0.1", "10.0.0.2", 1, 2)
    h = wire.flow_hash(f)
    assert 0 <= h < 2**32
    assert wire.src_port(f, 1000, 1999) == 1000 + (h * 1000 >> 32)


# --------------------------------------------------------------------------- outer datagram

SRC, DST = IPv4Address("198.18.0.1"), IPv4Address("198.18.0.2")


def _scapy_recomputed(raw: bytes) -> tuple[int, int]:
    p = IP(raw)
    del p.chksum
    del p[UDP].chksum
    q = IP(bytes(p))
    return q.chksum, q[UDP].chksum


@pytest.mark.parametrize("inner_len", [14, 15, 60, 61, 1464])
def test_outer_datagram_checksums_match_scapy(inner_len: int) -> None:
    frame = bytes((i * 7) & 0xFF for i in range(inner_len))
    payload = wire.encapsulate(4097, frame)
    raw = wire.outer_datagram(SRC, DST, 51234, payload)
    p = IP(raw)
    assert (p.version, p.ihl, p.len, p.proto, p.ttl, p.src, p.dst) == (
        4, 5, 20 + 8 + len(payload), 17, 64, "198.18.0.1", "198.18.0.2")
    assert (p[UDP].sport, p[UDP].dport, p[UDP].len) == (51234, 4789, 8 + len(payload))
    assert bytes(p[UDP].payload) == payload
    assert (p.chksum, p[UDP].chksum) == _scapy_recomputed(raw)
    assert wire.inet_checksum(raw[:20]) == 0  # a header with its checksum sums to zero


def test_outer_datagram_ident_ttl_dport() -> None:
    raw = wire.outer_datagram(SRC, DST, 50000, b"\x08" + bytes(7) + bytes(14), dport=8472,
                              ident=0xBEEF, ttl=3)
    p = IP(raw)
    assert (p.id, p.ttl, p[UDP].dport) == (0xBEEF, 3, 8472)
    assert (p.chksum, p[UDP].chksum) == _scapy_recomputed(raw)


def test_udp_checksum_zero_is_sent_as_all_ones() -> None:
    # Choose the last two payload bytes so the ones' complement sum is 0xffff: the computed
    # checksum is then 0, which RFC 768 transmits as 0xffff (0 means "no checksum").
    base = wire.encapsulate(4097, bytes(range(30)))
    trial = wire.udp_header(SRC, DST, 50000, 4789, base + b"\x00\x00")
    fill = struct.unpack("!H", trial[6:8])[0]
    payload = base + struct.pack("!H", fill)
    hdr = wire.udp_header(SRC, DST, 50000, 4789, payload)
    assert hdr[6:8] == b"\xff\xff"
    raw = wire.outer_datagram(SRC, DST, 50000, payload)
    assert _scapy_recomputed(raw)[1] == 0xFFFF  # scapy applies the same rule


def test_inet_checksum_known_values() -> None:
    # RFC 1071 §3 example words 0001 f203 f4f5 f6f7: sum 0xddf2 (after carries), checksum ~
    assert wire.inet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF
    assert wire.inet_checksum(b"\x01") == ~0x0100 & 0xFFFF  # odd length: padded with zero
    assert wire.inet_checksum(b"") == 0xFFFF


def test_udp_payload_of_outer_datagram_is_vxlan_for_scapy() -> None:
    frame = ipv4_frame(PEER_MAC, C1_MAC, C1_IP, PEER_IP, payload=b"ping")
    raw = wire.outer_datagram(SRC, DST, 50001, wire.encapsulate(4097, frame))
    p = IP(raw)
    assert p.haslayer(VXLAN) and p[VXLAN].vni == 4097 and int(p[VXLAN].flags) == 0x08
    assert bytes(p[VXLAN].payload) == frame


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize("text", ["02:42:c0:a8:37:04", "02-42-c0-a8-37-04", "2:42:c0:a8:37:4",
                                  "02:42:C0:A8:37:04"])
def test_mac_to_bytes_spellings(text: str) -> None:
    assert wire.mac_to_bytes(text) == C1_MAC
    assert wire.mac_str(wire.mac_to_bytes(text)) == "02:42:c0:a8:37:04"


@pytest.mark.parametrize("bad", ["", "02:42:c0:a8:37", "02:42:c0:a8:37:04:05", "0242c0a83704",
                                 "02:42:c0:a8:37:zz", "002:42:c0:a8:37:04", b"\x00" * 5,
                                 b"\x00" * 7])
def test_mac_to_bytes_rejects(bad: str | bytes) -> None:
    with pytest.raises(ValueError):
        wire.mac_to_bytes(bad)


def test_mac_classes() -> None:
    assert wire.is_multicast_mac(BROADCAST) and wire.is_multicast_mac(b"\x01" + bytes(5))
    assert not wire.is_multicast_mac(C1_MAC)
    assert wire.is_zero_mac(ZERO_MAC) and not wire.is_zero_mac(C1_MAC)
    assert wire.is_valid_src_mac(C1_MAC)
    assert not wire.is_valid_src_mac(ZERO_MAC) and not wire.is_valid_src_mac(BROADCAST)
    assert not wire.is_valid_src_mac(bytes.fromhex("333300000001"))


def test_udp_builder_used_by_tests_is_sane() -> None:
    # guards the hand-packed helper the other tests rely on
    assert udp(1, 2, b"ab") == b"\x00\x01\x00\x02\x00\x0a\x00\x00ab"
