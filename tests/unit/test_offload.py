"""The offload reference (``dataplane.offload``) against the kernel behaviour it mirrors, with
scapy as the independent oracle for every byte a segment or a completed checksum carries.

* ``segment``: TSO super-frames (IPv4 with and without options, IPv6, timestamps, sequence and
  IP id wrap-around, FIN|PSH|CWR on the super-frame) cut into segments that scapy, rebuilding
  them from their fields with the checksums deleted, reproduces byte for byte; CHECKSUM_PARTIAL
  completion for TCP and UDP, including UDP's 0 -> 0xFFFF; every error reason reachable.
* ``coalesce``: segments merge back into the super-frame they came from, and every rule that
  ends a run (flow, sequence, PSH, short segment, bad checksums, IP options, fragments, flags,
  padding, MAX_SEGS, 64 KiB, header fields, options) is exercised.
* hypothesis: nothing but ValueError from ``segment``, nothing at all from ``coalesce``, whose
  output always re-segments into exactly its input's payload, and
  ``segment(coalesce(segment(x)))`` round-trips.

The hand builders below pack headers with ``struct`` and sum them with
``tests.strategies.ones_complement`` (a word loop), not with ``dataplane.offload``: they are
fast enough for hypothesis and a second opinion on the layouts; scapy is the third.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from dataplane import offload
from dataplane.offload import (
    F_DATA_VALID,
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    GSO_UDP_L4,
    MAX_SEGS,
    MAX_TSO_SEGS,
    SEGMENT_ERRORS,
    VnetHdr,
    coalesce,
    segment,
)
from tests.strategies import HEALTH, TS_OPTS, frame_sequences, mutations, ones_complement, vnet
from tests.strategies import patch_byte as _patched

SRC_MAC = bytes.fromhex("0242c0a83704")
DST_MAC = bytes.fromhex("0242c0a83705")
SRC4, DST4 = IPv4Address("192.168.55.4"), IPv4Address("192.168.55.5")
SRC6, DST6 = IPv6Address("fd00:55::4"), IPv6Address("fd00::55:5")
MAC_S, MAC_D = "02:42:c0:a8:37:04", "02:42:c0:a8:37:05"
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80


# --------------------------------------------------------------------------- builders


def tso4(gso_size: int) -> bytes:
    return vnet(0, GSO_TCPV4, 0, gso_size)


def _fold_partial(pseudo: bytes) -> int:
    """The pseudo-header partial the kernel leaves in a CHECKSUM_PARTIAL frame: the folded sum,
    not complemented (``~tcp_v4_check(len, saddr, daddr, 0)``)."""
    return ~ones_complement(pseudo) & 0xFFFF


def tcp4(payload: bytes = b"", *, seq: int = 1000, ack: int = 1, flags: int = ACK,
         options: bytes = b"", ip_id: int = 1, ttl: int = 64, tos: int = 0,
         frag: int = 0x4000, win: int = 502, urg: int = 0, src: IPv4Address = SRC4,
         dst: IPv4Address = DST4, sport: int = 40000, dport: int = 5201,
         ip_options: bytes = b"", total_len: int | None = None, pad: bytes = b"",
         tcp_csum: int | None = None) -> bytes:
    """Ethernet + IPv4 + TCP, checksums filled (``tcp_csum`` overrides the TCP one)."""
    assert len(options) % 4 == 0 and len(ip_options) % 4 == 0
    doff = 20 + len(options)
    th = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack, (doff // 4) << 4,
                     flags, win, 0, urg) + options
    tcp_len = doff + len(payload)
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 6, tcp_len)
    c = ones_complement(pseudo + th + payload) if tcp_csum is None else tcp_csum
    th = th[:16] + struct.pack("!H", c) + th[18:]
    ihl = 20 + len(ip_options)
    length = ihl + tcp_len if total_len is None else total_len
    ih = struct.pack("!BBHHHBBH4s4s", 0x40 | (ihl // 4), tos, length, ip_id, frag, ttl, 6, 0,
                     src.packed, dst.packed) + ip_options
    ih = ih[:10] + struct.pack("!H", ones_complement(ih)) + ih[12:]
    return DST_MAC + SRC_MAC + b"\x08\x00" + ih + th + payload + pad


def tcp6(payload: bytes = b"", *, seq: int = 1000, ack: int = 1, flags: int = ACK,
         options: bytes = b"", src: IPv6Address = SRC6, dst: IPv6Address = DST6,
         sport: int = 40000, dport: int = 5201, hlim: int = 64) -> bytes:
    doff = 20 + len(options)
    th = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack, (doff // 4) << 4,
                     flags, 502, 0, 0) + options
    tcp_len = doff + len(payload)
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", tcp_len, 6)
    th = th[:16] + struct.pack("!H", ones_complement(pseudo + th + payload)) + th[18:]
    ih = struct.pack("!IHBB16s16s", 6 << 28, tcp_len, 6, hlim, src.packed, dst.packed)
    return DST_MAC + SRC_MAC + b"\x86\xdd" + ih + th + payload


def fix(frame: bytes | bytearray) -> bytes:
    """Recompute the IPv4 header and TCP checksums of a hand-edited frame (lengths as they
    are)."""
    b = bytearray(frame)
    ihl = (b[14] & 15) * 4
    b[24:26] = b"\x00\x00"
    b[24:26] = struct.pack("!H", ones_complement(bytes(b[14:14 + ihl])))
    l4 = 14 + ihl
    b[l4 + 16:l4 + 18] = b"\x00\x00"
    pseudo = bytes(b[26:34]) + struct.pack("!BBH", 0, 6, len(b) - l4)
    b[l4 + 16:l4 + 18] = struct.pack("!H", ones_complement(pseudo + bytes(b[l4:])))
    return bytes(b)


def payload_bytes(n: int, salt: int = 0) -> bytes:
    return bytes((i * 7 + salt) & 0xFF for i in range(n))


def scapy_rebuilt(seg: bytes) -> Packet:
    """Dissect ``seg`` with scapy, delete the IP and TCP checksums, let scapy compute them
    again, and insist the result is ``seg`` byte for byte: every field we wrote survives a
    round trip through scapy's model and both checksums are the ones scapy computes."""
    p = Ether(seg)
    q = p.copy()
    if IP in q:
        del q[IP].chksum
    del q[TCP].chksum
    assert bytes(q) == seg
    return p


def run_lengths(out: list[tuple[bytes, bytes]]) -> list[int]:
    """How many input frames each output pair stands for."""
    return [1 if h == bytes(10) else len(segment(h, f)) for h, f in out]


def check_conservation(inputs: list[bytes], out: list[tuple[bytes, bytes]]) -> None:
    """``out`` is ``inputs`` in order: a pass-through pair is its input unchanged; a coalesced
    pair re-segments into as many frames as it consumed, each with its input's Ethernet
    header, addresses, ports, sequence number and payload."""
    i = 0
    for hdr, frame in out:
        assert len(hdr) == 10
        if hdr == bytes(10):
            assert frame == inputs[i]
            i += 1
            continue
        h = VnetHdr.parse(hdr)
        assert (h.flags, h.gso_type, h.csum_start, h.csum_offset) == (F_NEEDS_CSUM, GSO_TCPV4,
                                                                    34, 16)
        segs = segment(hdr, frame)
        assert len(segs) >= 2
        for s in segs:
            q = inputs[i]
            i += 1
            doff = (q[46] >> 4) * 4
            assert h.hdr_len == 34 + doff
            assert s[:14] == q[:14] and s[26:42] == q[26:42]
            assert s[34 + doff:] == q[34 + doff:]
    assert i == len(inputs)


# --------------------------------------------------------------------------- virtio_net_hdr


def test_vnet_hdr_parse_and_pack() -> None:
    raw = struct.pack("<BBHHHH", 1, 0x81, 66, 1448, 34, 16)
    h = VnetHdr.parse(raw + b"\x07\x00")       # 12-byte form: num_buffers ignored
    assert h == VnetHdr(1, 0x81, 66, 1448, 34, 16)
    assert h.pack() == raw and h.pack(10) == raw
    assert h.pack(12) == raw + b"\x00\x00"
    assert VnetHdr().pack() == bytes(10) == offload.NO_OFFLOAD
    with pytest.raises(ValueError, match="short header"):
        VnetHdr.parse(raw[:9])
    with pytest.raises(ValueError):
        h.pack(11)


def test_constants_match_linux_virtio_net_h() -> None:
    assert (F_NEEDS_CSUM, F_DATA_VALID) == (1, 2)
    assert (GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4, GSO_ECN) == (0, 1, 3, 4, 5, 0x80)
    assert (MAX_SEGS, MAX_TSO_SEGS) == (64, 1024)


@settings(max_examples=200, suppress_health_check=HEALTH)
@given(st.binary(max_size=300), st.integers(0, 2**20))
def test_csum_equals_the_rfc1071_word_loop(data: bytes, initial: int) -> None:
    padded = data + b"\x00" * (len(data) % 2)
    s = initial + sum(int.from_bytes(padded[i:i + 2], "big") for i in range(0, len(padded), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    assert offload.csum(data, initial) == s
    assert ~offload.csum(data) & 0xFFFF == ones_complement(data)


def test_fold_edges() -> None:
    assert [offload.fold(s) for s in (0, 1, 0xFFFF, 0x10000, 0x1FFFE, 0xFFFF * 7)] == [
        0, 1, 0xFFFF, 1, 0xFFFF, 0xFFFF]


# --------------------------------------------------------------------------- TSO


def scapy_super4(payload: bytes, flags: str = "A", *, seq: int = 0xFFFFF000, ip_id: int = 0xFFF0,
                 options: Any = (("NOP", None), ("NOP", None), ("Timestamp", (7, 9))),
                 ip_options: Any = ()) -> bytes:
    return bytes(Ether(src=MAC_S, dst=MAC_D)
                 / IP(src=str(SRC4), dst=str(DST4), id=ip_id, flags="DF", ttl=61, tos=0x28,
                      options=list(ip_options))
                 / TCP(sport=40000, dport=5201, seq=seq, ack=77, flags=flags, window=1234,
                       options=list(options))
                 / Raw(payload))


def scapy_super6(payload: bytes, flags: str = "A", *, seq: int = 0xFFFFF000) -> bytes:
    return bytes(Ether(src=MAC_S, dst=MAC_D)
                 / IPv6(src=str(SRC6), dst=str(DST6), hlim=63, tc=0x28)
                 / TCP(sport=40000, dport=5201, seq=seq, ack=77, flags=flags, window=1234,
                       options=[("NOP", None), ("NOP", None), ("Timestamp", (7, 9))])
                 / Raw(payload))


SIZES = [(1, 1448), (7, 1448), (1447, 1448), (1448, 1448), (1449, 1448), (2896, 1448),
         (10001, 1448), (60000, 1448), (3000, 536), (300, 1), (64, 64 * 1024 - 1)]


def _check_tso(super_frame: bytes, gso_type: int, g: int, v4: bool) -> list[bytes]:
    sp = Ether(super_frame)
    payload = bytes(sp[TCP].payload)
    segs = segment(vnet(0, gso_type, 0, g), super_frame)
    assert len(segs) == -(-len(payload) // g)
    seq0, flags0 = sp[TCP].seq, int(sp[TCP].flags)
    opts = sp[TCP].options
    for i, seg in enumerate(segs):
        p = scapy_rebuilt(seg)
        chunk = payload[i * g:(i + 1) * g]
        assert bytes(p[TCP].payload) == chunk
        assert p[TCP].seq == (seq0 + i * g) % 2**32
        assert p[TCP].options == opts and p[TCP].ack == 77 and p[TCP].window == 1234
        want = flags0
        if i < len(segs) - 1:
            want &= ~(FIN | PSH)
        if i > 0:
            want &= ~CWR
        assert int(p[TCP].flags) == want
        if v4:
            assert p[IP].len == len(seg) - 14
            assert p[IP].id == (sp[IP].id + i) % 2**16
            assert (p[IP].ttl, p[IP].tos, str(p[IP].flags)) == (61, 0x28, "DF")
        else:
            assert p[IPv6].plen == len(seg) - 54
            assert (p[IPv6].hlim, p[IPv6].tc) == (63, 0x28)
    assert b"".join(s[len(s) - len(bytes(Ether(s)[TCP].payload)):] for s in segs) == payload
    return segs


@pytest.mark.parametrize(("size", "g"), SIZES)
def test_tso_v4_segments_are_what_scapy_builds(size: int, g: int) -> None:
    _check_tso(scapy_super4(payload_bytes(size), "A"), GSO_TCPV4, g, v4=True)


@pytest.mark.parametrize(("size", "g"), SIZES[:8])
def test_tso_v6_segments_are_what_scapy_builds(size: int, g: int) -> None:
    _check_tso(scapy_super6(payload_bytes(size), "A"), GSO_TCPV6, g, v4=False)


@pytest.mark.parametrize("tags", [(0x8100,), (0x88A8, 0x8100)])
@pytest.mark.parametrize("v4", [True, False])
def test_tso_through_vlan_tags(tags: tuple[int, ...], v4: bool) -> None:
    """A VLAN device on the TAP inherits its TSO (tun's vlan_features), so the container's
    tagged TCP arrives tagged and segmented by nobody: segment() looks through one or two
    tags, keeps them on every segment, and scapy (Dot1Q/Dot1AD) agrees on every field."""
    from scapy.layers.l2 import Dot1AD, Dot1Q

    data = payload_bytes(5000)
    inner = Ether(scapy_super4(data, "PA") if v4 else scapy_super6(data, "PA"))
    pkt = Ether(src=MAC_S, dst=MAC_D)
    for i, tpid in enumerate(tags):
        pkt = pkt / (Dot1AD(vlan=10 + i) if tpid == 0x88A8 else Dot1Q(vlan=10 + i))
    sf = bytes(pkt / inner.payload)
    segs = segment(vnet(0, GSO_TCPV4 if v4 else GSO_TCPV6, 0, 1400), sf)
    assert len(segs) == 4
    l3 = 14 + 4 * len(tags)
    for i, seg in enumerate(segs):
        assert seg[:l3] == sf[:l3]                     # the tags are kept as they were
        p = Ether(seg)
        q = p.copy()
        if IP in q:
            del q[IP].chksum
        del q[TCP].chksum
        assert bytes(q) == seg                          # scapy computes the same checksums
        assert bytes(p[TCP].payload) == data[i * 1400:(i + 1) * 1400]
        assert p[TCP].seq == (inner[TCP].seq + i * 1400) % 2**32
    # a third tag is one too many, as is a tag cut short
    with pytest.raises(ValueError, match="gso type mismatch"):
        segment(vnet(0, GSO_TCPV4, 0, 1400), sf[:12] + b"\x81\x00\x00\x01" * 3 + sf[12:])
    with pytest.raises(ValueError, match="bad ip header"):
        segment(vnet(0, GSO_TCPV4, 0, 1400), sf[:16])


def test_coalesce_keeps_segments_apart_that_differ_in_the_ae_bit() -> None:
    """AccECN's AE bit (and the reserved bits) live in the low nibble of TCP byte 12;
    tcp_gro_receive flushes on any flag difference but CWR/FIN/PSH, and a merged frame
    would carry only the head's bits. Such segments are written as they are."""
    segs = segment(tso4(1000), scapy_super4(payload_bytes(4000), "A"))
    plain = coalesce(segs)
    assert run_lengths(plain) == [4]
    marked = [fix(s[:46] + bytes([s[46] | 0x01]) + s[47:]) if i == 2 else s
              for i, s in enumerate(segs)]
    out = coalesce(marked)
    assert run_lengths(out) == [2, 1, 1]
    assert out[1] == (bytes(10), marked[2])


@pytest.mark.parametrize("flags", ["FPAC", "FPA", "PA", "AC", "AEC", "AU", "FPAECU"])
@pytest.mark.parametrize("v4", [True, False])
def test_tso_flag_rules(flags: str, v4: bool) -> None:
    """tcp_gso_segment: FIN and PSH only on the last segment, CWR only on the first; every
    other flag (ACK, ECE, URG) on all of them."""
    data = payload_bytes(5000)
    sf = scapy_super4(data, flags) if v4 else scapy_super6(data, flags)
    segs = _check_tso(sf, GSO_TCPV4 if v4 else GSO_TCPV6, 1448, v4)
    assert len(segs) == 4
    one = _check_tso(sf, GSO_TCPV4 if v4 else GSO_TCPV6, 5000, v4)   # a single segment
    assert int(Ether(one[0])[TCP].flags) == int(Ether(sf)[TCP].flags)


def test_tso_ecn_bit_and_ignored_header_fields() -> None:
    """GSO_ECN is a modifier; hdr_len, csum_start/offset and NEEDS_CSUM do not matter."""
    sf = scapy_super4(payload_bytes(4000), "AC")
    plain = segment(vnet(0, GSO_TCPV4, 0, 1000), sf)
    assert segment(vnet(F_NEEDS_CSUM | F_DATA_VALID, GSO_TCPV4 | GSO_ECN, 9, 1000, 3, 999),
                   sf) == plain
    assert segment(vnet(0, GSO_TCPV4 | GSO_ECN, 0, 1000) + b"\x05\x00", sf) == plain


def test_tso_ignores_superframe_lengths_and_checksums() -> None:
    """The kernel never fills in a GSO skb's total length or TCP checksum properly (the length
    may even exceed 16 bits): only the headers' other fields are copied."""
    sf = bytearray(scapy_super4(payload_bytes(3000)))
    want = segment(tso4(1448), bytes(sf))
    sf[16:18] = b"\x00\x00"               # total length
    sf[24:26] = b"\xde\xad"               # IP checksum
    sf[34 + 16:34 + 18] = b"\xbe\xef"     # TCP checksum
    assert segment(tso4(1448), bytes(sf)) == want
    sf6 = bytearray(scapy_super6(payload_bytes(3000)))
    want6 = segment(vnet(0, GSO_TCPV6, 0, 1448), bytes(sf6))
    sf6[18:20] = b"\xff\xff"
    sf6[54 + 16:54 + 18] = b"\x12\x34"
    assert segment(vnet(0, GSO_TCPV6, 0, 1448), bytes(sf6)) == want6


def test_tso_v4_with_ip_options() -> None:
    sf = scapy_super4(payload_bytes(3500), "PA", ip_options=[IPOption_Router_Alert()])
    assert sf[14] == 0x46
    segs = _check_tso(sf, GSO_TCPV4, 1448, v4=True)
    assert all(Ether(s)[IP].options == Ether(sf)[IP].options for s in segs)


def test_tso_without_tcp_options_and_odd_chunks() -> None:
    sf = scapy_super4(payload_bytes(1001), "PA", options=())
    segs = _check_tso(sf, GSO_TCPV4, 333, v4=True)
    assert [len(s) - 54 for s in segs] == [333, 333, 333, 2]


def test_tso_max_segments() -> None:
    sf = scapy_super4(payload_bytes(MAX_TSO_SEGS), options=())
    assert len(segment(tso4(1), sf)) == MAX_TSO_SEGS
    with pytest.raises(ValueError, match="^too many segments$"):
        segment(tso4(1), scapy_super4(payload_bytes(MAX_TSO_SEGS + 1), options=()))


# --------------------------------------------------------------------------- checksum completion


def _partial_tcp4(payload: bytes) -> tuple[bytes, bytes]:
    """(scapy's frame with a full checksum, the same frame as CHECKSUM_PARTIAL)."""
    full = bytes(Ether(src=MAC_S, dst=MAC_D) / IP(src=str(SRC4), dst=str(DST4))
                 / TCP(sport=1234, dport=80, flags="PA", options=[("MSS", 1460)]) / Raw(payload))
    tcp_len = len(full) - 34
    partial = _fold_partial(SRC4.packed + DST4.packed + struct.pack("!BBH", 0, 6, tcp_len))
    return full, full[:50] + struct.pack("!H", partial) + full[52:]


@pytest.mark.parametrize("size", [0, 1, 2, 3, 100, 1459, 9000])
def test_needs_csum_completes_tcp4_like_scapy(size: int) -> None:
    full, partial = _partial_tcp4(payload_bytes(size, salt=size))
    assert Ether(full)[TCP].chksum != 0   # else 0xFFFF (CSUM_MANGLED_0) would be expected
    assert segment(vnet(F_NEEDS_CSUM, GSO_NONE, 0, 0, 34, 16), partial) == [full]


@pytest.mark.parametrize("size", [0, 1, 777])
def test_needs_csum_completes_tcp6_like_scapy(size: int) -> None:
    full = bytes(Ether(src=MAC_S, dst=MAC_D) / IPv6(src=str(SRC6), dst=str(DST6))
                 / TCP(sport=1234, dport=80, flags="A") / Raw(payload_bytes(size)))
    tcp_len = len(full) - 54
    partial = _fold_partial(SRC6.packed + DST6.packed + struct.pack("!I3xB", tcp_len, 6))
    frame = full[:70] + struct.pack("!H", partial) + full[72:]
    assert segment(vnet(F_NEEDS_CSUM, GSO_NONE, 0, 0, 54, 16), frame) == [full]


@pytest.mark.parametrize("size", [0, 1, 2, 513])
def test_needs_csum_completes_udp4_like_scapy(size: int) -> None:
    full = bytes(Ether(src=MAC_S, dst=MAC_D) / IP(src=str(SRC4), dst=str(DST4))
                 / UDP(sport=5000, dport=4789) / Raw(payload_bytes(size, salt=3)))
    udp_len = len(full) - 34
    partial = _fold_partial(SRC4.packed + DST4.packed + struct.pack("!BBH", 0, 17, udp_len))
    frame = full[:40] + struct.pack("!H", partial) + full[42:]
    assert segment(vnet(F_NEEDS_CSUM, GSO_NONE, 0, 0, 34, 6), frame) == [full]


def test_needs_csum_udp_zero_is_sent_as_ffff() -> None:
    """A checksum that computes to 0 is stored as 0xFFFF (skb_checksum_help's CSUM_MANGLED_0;
    RFC 768: 0 would mean "no checksum"), which is what scapy puts there too."""
    body = bytearray(payload_bytes(40, salt=9))
    body[0:2] = b"\x00\x00"
    udp_len = 8 + len(body)
    pseudo = SRC4.packed + DST4.packed + struct.pack("!BBH", 0, 17, udp_len)
    hdr = struct.pack("!HHHH", 5000, 4789, udp_len, 0)
    rest = 0xFFFF & ~ones_complement(pseudo + hdr + bytes(body))     # the folded sum so far
    body[0:2] = struct.pack("!H", 0xFFFF - rest)   # now everything sums to 0xFFFF: checksum 0
    assert ones_complement(pseudo + hdr + bytes(body)) == 0
    full = bytes(Ether(src=MAC_S, dst=MAC_D) / IP(src=str(SRC4), dst=str(DST4))
                 / UDP(sport=5000, dport=4789) / Raw(bytes(body)))
    assert Ether(full)[UDP].chksum == 0xFFFF      # scapy mangles the same way
    frame = full[:40] + struct.pack("!H", _fold_partial(pseudo)) + full[42:]
    assert segment(vnet(F_NEEDS_CSUM, GSO_NONE, 0, 0, 34, 6), frame) == [full]
    # The helper itself: data summing to 0xFFFF (or all zeros) completes to 0xFFFF.
    assert offload.complete_csum(b"\xff\xff\x00\x00", 0, 2) == b"\xff\xff\xff\xff"
    assert offload.complete_csum(b"\x00\x00\x00\x00", 0, 2) == b"\x00\x00\xff\xff"
    assert offload.complete_csum(b"\x12\x34\x00\x00", 0, 2) == b"\x12\x34\xed\xcb"


def test_needs_csum_offsets_at_the_edges() -> None:
    f = bytes(range(20))
    assert len(segment(vnet(F_NEEDS_CSUM, 0, 0, 0, 18, 0), f)[0]) == 20      # field = last 2
    assert len(segment(vnet(F_NEEDS_CSUM, 0, 0, 0, 0, 18), f)[0]) == 20
    # Offsets are unsigned: a huge csum_offset never wraps back into the frame.
    for start, off in [(20, 0), (19, 0), (18, 1), (0, 19), (19, 65535), (65535, 65535),
                       (25, 0)]:
        with pytest.raises(ValueError, match="^bad csum offsets$"):
            segment(vnet(F_NEEDS_CSUM, 0, 0, 0, start, off), f)


@pytest.mark.parametrize("flags", [0, F_DATA_VALID, 0xFE])
def test_gso_none_without_needs_csum_is_untouched(flags: int) -> None:
    for frame in (b"", b"\x01", tcp4(b"abc", tcp_csum=0xDEAD), bytes(100)):
        assert segment(vnet(flags, GSO_NONE | GSO_ECN, 7, 8, 9, 10), frame) == [frame]


# --------------------------------------------------------------------------- errors

GOOD4 = tcp4(payload_bytes(3000), options=TS_OPTS)
GOOD6 = tcp6(payload_bytes(3000), options=TS_OPTS)


ERROR_CASES: list[tuple[str, bytes, bytes]] = [
    ("short header", b"", GOOD4),
    ("short header", tso4(1448)[:9], GOOD4),
    ("bad csum offsets", vnet(F_NEEDS_CSUM, GSO_NONE, 0, 0, len(GOOD4), 0), GOOD4),
    ("bad csum offsets", vnet(F_NEEDS_CSUM, GSO_NONE, 0, 0, 34, 65535), GOOD4),
    ("bad csum offsets", vnet(F_NEEDS_CSUM, GSO_NONE, 0, 0, 0, 0), b""),
    ("gso type mismatch", tso4(1448), GOOD6),
    ("gso type mismatch", vnet(0, GSO_TCPV6, 0, 1448), GOOD4),
    ("gso type mismatch", tso4(1448), GOOD4[:12] + b"\x08\x06" + GOOD4[14:]),
    ("unsupported gso type", vnet(0, GSO_UDP, 0, 1448), GOOD4),
    ("unsupported gso type", vnet(0, GSO_UDP_L4, 0, 1448), GOOD4),
    ("unsupported gso type", vnet(0, 2, 0, 1448), GOOD4),
    ("unsupported gso type", vnet(0, 0x7F | GSO_ECN, 0, 1448), b""),
    ("bad ip header", tso4(1448), GOOD4[:13]),
    ("bad ip header", tso4(1448), GOOD4[:33]),
    ("bad ip header", tso4(1448), _patched(GOOD4, 14, 0x65)),          # version 6
    ("bad ip header", tso4(1448), _patched(GOOD4, 14, 0x44)),          # IHL 16 bytes
    ("bad ip header", tso4(1448), _patched(GOOD4, 14, 0x4F)[:50]),     # IHL past the end
    ("bad ip header", tso4(1448), _patched(GOOD4, 23, 17)),            # UDP
    ("bad ip header", vnet(0, GSO_TCPV6, 0, 1448), GOOD6[:53]),
    ("bad ip header", vnet(0, GSO_TCPV6, 0, 1448), _patched(GOOD6, 14, 0x40)),
    ("bad ip header", vnet(0, GSO_TCPV6, 0, 1448), _patched(GOOD6, 20, 0)),  # hop-by-hop
    ("bad tcp header", tso4(1448), GOOD4[:53]),
    ("bad tcp header", tso4(1448), _patched(GOOD4, 46, 0x40)),         # doff 16 bytes
    ("bad tcp header", tso4(1448), _patched(GOOD4, 46, 0xF0)[:80]),    # doff past the end
    ("bad tcp header", vnet(0, GSO_TCPV6, 0, 1448), GOOD6[:73]),
    ("bad tcp header", vnet(0, GSO_TCPV6, 0, 1448), _patched(GOOD6, 66, 0x10)),
    ("zero gso size", tso4(0), GOOD4),
    ("empty gso frame", tso4(1448), GOOD4[:66]),
    ("empty gso frame", vnet(0, GSO_TCPV6, 0, 1448), GOOD6[:86]),
    ("too many segments", tso4(2), GOOD4),
]


@pytest.mark.parametrize(("reason", "hdr", "frame"), ERROR_CASES,
                         ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(ERROR_CASES)])
def test_segment_error_reasons(reason: str, hdr: bytes, frame: bytes) -> None:
    with pytest.raises(ValueError) as exc:
        segment(hdr, frame)
    assert str(exc.value) == reason


def test_every_error_reason_is_covered() -> None:
    assert {r for r, _, _ in ERROR_CASES} == set(SEGMENT_ERRORS)


def test_limits_just_inside_are_accepted() -> None:
    assert len(segment(tso4(3), GOOD4)) == 1000
    assert len(segment(tso4(1448), GOOD4[:67])) == 1
    assert len(segment(tso4(1), _patched(GOOD4, 46, 0x50)[:54 + 5])) == 5   # doff 20: 5 bytes


# --------------------------------------------------------------------------- coalesce


def flow(n: int, g: int = 1000, *, last: int | None = None, seq: int = 5000, psh_last: bool = False,
         options: bytes = TS_OPTS, salt: int = 0, **kw: Any) -> list[bytes]:
    """``n`` in-order segments of one flow: ``g`` payload bytes each (``last`` for the last),
    IP ids counting up."""
    out = []
    for i in range(n):
        size = last if (last is not None and i == n - 1) else g
        flags = ACK | (PSH if psh_last and i == n - 1 else 0)
        out.append(tcp4(payload_bytes(size, salt=salt + i), seq=seq + i * g, flags=flags,
                        options=options, ip_id=(100 + i) & 0xFFFF, **kw))
    return out


def test_coalesce_merges_what_segment_split() -> None:
    data = payload_bytes(10000, salt=5)
    sf = scapy_super4(data, "PA", seq=0xFFFFFF00, ip_id=0xFFFE)
    segs = segment(tso4(1448), sf)
    out = coalesce(segs)
    assert len(out) == 1
    hdr, frame = out[0]
    doff = (frame[46] >> 4) * 4
    assert VnetHdr.parse(hdr) == VnetHdr(F_NEEDS_CSUM, GSO_TCPV4, 34 + doff, 1448, 34, 16)
    assert frame[34 + doff:] == data and frame[:14] == sf[:14]
    p = Ether(frame)
    assert p[IP].len == len(frame) - 14 and p[IP].id == 0xFFFE
    assert p[TCP].seq == 0xFFFFFF00 and int(p[TCP].flags) == ACK | PSH
    q = p.copy()
    del q[IP].chksum
    assert Ether(bytes(q))[IP].chksum == p[IP].chksum
    # The TCP field holds the pseudo-header partial, not complemented ...
    tcp_len = len(frame) - 34
    assert p[TCP].chksum == _fold_partial(SRC4.packed + DST4.packed
                                          + struct.pack("!BBH", 0, 6, tcp_len))
    # ... which NEEDS_CSUM completion turns into the checksum scapy computes ...
    done = segment(vnet(F_NEEDS_CSUM, GSO_NONE, 0, 0, 34, 16), frame)[0]
    scapy_rebuilt(done)
    # ... and TSO of the coalesced frame gives back exactly the segments.
    assert segment(hdr, frame) == segs
    # The 12-byte header form is the 10-byte one plus num_buffers 0.
    assert VnetHdr.parse(hdr).pack(12) == hdr + b"\x00\x00"


def test_coalesce_single_and_non_tcp_frames_pass_through() -> None:
    one = flow(1)
    assert coalesce(one) == [(bytes(10), one[0])]
    arp = bytes.fromhex("ffffffffffff0242c0a837040806") + bytes(28)
    junk = [b"", b"\x00", arp, GOOD6, tcp4(b"")]   # tcp4(b""): a pure ACK, no payload
    assert coalesce(junk) == [(bytes(10), f) for f in junk]
    assert coalesce([]) == []


def test_coalesce_short_last_segment_and_psh_end_a_run() -> None:
    segs = flow(4, last=10, psh_last=True) + flow(3, seq=8010, salt=50)
    out = coalesce(segs)
    assert run_lengths(out) == [4, 3]
    assert int(Ether(out[0][1])[TCP].flags) == ACK | PSH
    assert int(Ether(out[1][1])[TCP].flags) == ACK
    check_conservation(segs, out)


def test_coalesce_psh_in_the_middle_ends_the_run() -> None:
    segs = flow(5)
    segs[1] = fix(_patched(segs[1], 47, ACK | PSH))
    out = coalesce(segs)
    assert run_lengths(out) == [2, 3]
    check_conservation(segs, out)


def test_coalesce_short_segment_in_the_middle_ends_the_run() -> None:
    a = flow(2, 1000, last=400)                   # 1000 + 400
    b = [tcp4(payload_bytes(1000), seq=5000 + 1400 + i * 1000, options=TS_OPTS)
         for i in range(3)]                        # in sequence, but after a short one
    out = coalesce(a + b)
    assert run_lengths(out) == [2, 3]
    check_conservation(a + b, out)


def test_coalesce_larger_segment_ends_the_run() -> None:
    segs = [tcp4(payload_bytes(500), seq=1000, options=TS_OPTS),
            tcp4(payload_bytes(501), seq=1500, options=TS_OPTS)]
    assert run_lengths(coalesce(segs)) == [1, 1]


def test_coalesce_interleaved_flows() -> None:
    a, b = flow(3), flow(3, sport=40001, salt=9)
    assert run_lengths(coalesce([a[0], b[0], a[1], b[1], a[2], b[2]])) == [1] * 6
    out = coalesce(a + b)
    assert run_lengths(out) == [3, 3]
    check_conservation(a + b, out)


def test_coalesce_sequence_gap_and_duplicate() -> None:
    segs = flow(6)
    gap = segs[:2] + segs[3:]
    assert run_lengths(coalesce(gap)) == [2, 3]
    dup = segs[:3] + segs[2:]
    assert run_lengths(coalesce(dup)) == [3, 4]
    reordered = [segs[0], segs[2], segs[1], segs[2], segs[3]]   # retransmission after a gap
    assert run_lengths(coalesce(reordered)) == [1, 1, 3]


def test_coalesce_sequence_wraps() -> None:
    segs = flow(4, seq=2**32 - 2500)
    out = coalesce(segs)
    assert run_lengths(out) == [4]
    check_conservation(segs, out)


@pytest.mark.parametrize("where", ["tcp", "ip"])
def test_coalesce_bad_checksum_is_emitted_alone_unchanged(where: str) -> None:
    segs = flow(5)
    at = 50 if where == "tcp" else 24
    bad = segs[2][:at] + bytes((segs[2][at] ^ 0x40,)) + segs[2][at + 1:]
    segs[2] = bad
    out = coalesce(segs)
    assert run_lengths(out) == [2, 1, 2]
    assert out[1] == (bytes(10), bad)


@pytest.mark.parametrize("frag", [0x2000, 0x0001, 0x2000 | 0x4000, 0x1FFF])
def test_coalesce_fragments_are_not_coalesced(frag: int) -> None:
    segs = flow(3)
    segs[1] = tcp4(payload_bytes(1000, salt=1), seq=6000, options=TS_OPTS, frag=frag)
    assert run_lengths(coalesce(segs)) == [1, 1, 1]


def test_coalesce_df_and_no_df_and_ip_id_do_not_matter_within_a_kind() -> None:
    for frag in (0, 0x4000):
        segs = flow(3, frag=frag)
        segs[1] = tcp4(payload_bytes(1000, salt=1), seq=6000, options=TS_OPTS, frag=frag,
                       ip_id=0xBEEF)
        out = coalesce(segs)
        assert run_lengths(out) == [3]
        assert Ether(out[0][1])[IP].id == 100     # the head's id


def test_coalesce_ip_options_are_not_coalesced() -> None:
    segs = flow(3, ip_options=b"\x94\x04\x00\x00")   # Router Alert
    assert segs[0][14] == 0x46
    assert run_lengths(coalesce(segs)) == [1, 1, 1]


@pytest.mark.parametrize("flags", [SYN | ACK, FIN | ACK, RST | ACK, URG | ACK, ECE | ACK,
                                   CWR | ACK, PSH, 0, ACK | PSH | FIN])
def test_coalesce_other_flags_are_not_coalesced(flags: int) -> None:
    segs = flow(5)
    segs[2] = fix(_patched(segs[2], 47, flags))
    out = coalesce(segs)
    assert run_lengths(out) == [2, 1, 2]
    assert out[1] == (bytes(10), segs[2])


def test_coalesce_ethernet_padding_is_not_coalesced() -> None:
    segs = flow(3)
    segs[1] = tcp4(payload_bytes(1000, salt=1), seq=6000, options=TS_OPTS, pad=b"\x00" * 6)
    assert run_lengths(coalesce(segs)) == [1, 1, 1]
    # A total length longer than the frame (truncated) is refused as well.
    segs[1] = tcp4(payload_bytes(1000, salt=1), seq=6000, options=TS_OPTS, total_len=1053)
    assert run_lengths(coalesce(segs)) == [1, 1, 1]


def test_coalesce_max_segs() -> None:
    segs = flow(MAX_SEGS * 2 + 3, 100, options=b"")
    out = coalesce(segs)
    assert run_lengths(out) == [MAX_SEGS, MAX_SEGS, 3]
    check_conservation(segs, out)


def test_coalesce_64k_limit() -> None:
    """20 + 32 + 45 * 1448 = 65212 fits in an IPv4 total length; a 46th segment would not."""
    segs = flow(47, 1448)
    out = coalesce(segs)
    assert run_lengths(out) == [45, 2]
    assert max(len(f) - 14 for _, f in out) == 65212
    check_conservation(segs, out)
    big = flow(3, 32000, options=b"")               # 20 + 20 + 2 * 32000 = 64040 fits
    assert run_lengths(coalesce(big)) == [2, 1]


@pytest.mark.parametrize("field", ["tos", "ttl", "df", "ack", "win", "tsval", "doff",
                                   "dst_mac", "src_ip", "dport"])
def test_coalesce_header_differences_end_the_run(field: str) -> None:
    variants: dict[str, dict[str, Any]] = {
        "tos": {"tos": 0x10}, "ttl": {"ttl": 63}, "df": {"frag": 0}, "ack": {"ack": 2},
        "win": {"win": 501},
        "tsval": {"options": TS_OPTS[:4] + struct.pack("!II", 0x01020305, 0x0A0B0C0D)},
        "doff": {"options": TS_OPTS + b"\x01\x01\x01\x01"},
        "dst_mac": {}, "src_ip": {"src": IPv4Address("192.168.55.9")}, "dport": {"dport": 5202},
    }
    changed = variants[field]
    kw: dict[str, Any] = {"options": TS_OPTS, **changed}
    mid = tcp4(payload_bytes(1000, salt=1), seq=6000, **kw)
    if field == "dst_mac":
        mid = b"\x02" * 6 + mid[6:]
    segs = flow(3)
    segs[1] = mid
    assert run_lengths(coalesce(segs)) == [1, 1, 1]


def test_coalesce_urgent_pointer_and_ip_reserved_bit_follow_the_head() -> None:
    """Neither is compared by the run rules (of the IP flags only DF is, as in wireguard-go's
    ``tcpPacketsCanCoalesce``; without URG the pointer means nothing): the merged frame keeps
    the first segment's."""
    segs = flow(3)
    segs[1] = tcp4(payload_bytes(1000, salt=1), seq=6000, options=TS_OPTS, urg=7,
                   frag=0x4000 | 0x8000)
    out = coalesce(segs)
    assert run_lengths(out) == [3]
    merged = out[0][1]
    assert merged[52:54] == b"\x00\x00" and merged[20] == 0x40


# --------------------------------------------------------------------------- hypothesis

gso_types = st.sampled_from([GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4, 2, 0x7F,
                             GSO_TCPV4 | GSO_ECN, GSO_TCPV6 | GSO_ECN])


@st.composite
def vnet_hdrs(draw: st.DrawFn) -> bytes:
    raw = vnet(draw(st.sampled_from([0, 1, 2, 3])), draw(gso_types), draw(st.integers(0, 99)),
               draw(st.sampled_from([0, 1, 2, 7, 64, 536, 1448, 65535])),
               draw(st.integers(0, 120)), draw(st.integers(0, 120)))
    return draw(st.one_of(st.just(raw), st.just(raw + b"\x01\x00"), mutations(raw)))


@st.composite
def super_frames(draw: st.DrawFn) -> bytes:
    data = draw(st.binary(max_size=3000))
    opts = draw(st.sampled_from([b"", TS_OPTS, b"\x02\x04\x05\xb4", b"\x01" * 40]))
    seq = draw(st.integers(0, 2**32 - 1))
    flags = draw(st.sampled_from([ACK, ACK | PSH, ACK | FIN | PSH | CWR, ACK | ECE, 0xFF]))
    if draw(st.booleans()):
        return tcp6(data, seq=seq, flags=flags, options=opts)
    return tcp4(data, seq=seq, flags=flags, options=opts,
                ip_id=draw(st.integers(0, 65535)),
                ip_options=draw(st.sampled_from([b"", b"", b"\x94\x04\x00\x00", b"\x01" * 40])))


@settings(max_examples=300, suppress_health_check=HEALTH)
@given(st.one_of(st.binary(max_size=12), vnet_hdrs()),
       st.one_of(st.binary(max_size=200), super_frames(), super_frames().flatmap(mutations)))
def test_segment_raises_only_value_error(hdr: bytes, frame: bytes) -> None:
    try:
        segs = segment(hdr, frame)
    except ValueError as exc:
        assert str(exc) in SEGMENT_ERRORS
        return
    assert isinstance(segs, list) and segs
    assert all(isinstance(s, bytes) for s in segs)
    assert 1 <= len(segs) <= MAX_TSO_SEGS


@settings(max_examples=200, suppress_health_check=HEALTH)
@given(st.one_of(frame_sequences(), st.lists(st.binary(max_size=120), max_size=6)))
def test_coalesce_never_raises_and_conserves_payload(frames: list[bytes]) -> None:
    out = coalesce(frames)
    check_conservation(frames, out)


@settings(max_examples=150, suppress_health_check=HEALTH)
@given(st.integers(1, 20000), st.sampled_from([1, 7, 100, 536, 1448, 9000]),
       st.sampled_from([ACK, ACK | PSH]), st.sampled_from([b"", TS_OPTS]),
       st.integers(0, 2**32 - 1), st.integers(0, 65535))
def test_coalesce_of_segment_round_trips(size: int, g: int, flags: int, opts: bytes, seq: int,
                                         ip_id: int) -> None:
    data = payload_bytes(size, salt=size)
    sf = tcp4(data, seq=seq, flags=flags, options=opts, ip_id=ip_id)
    try:
        segs = segment(tso4(g), sf)
    except ValueError as exc:
        assert str(exc) == "too many segments" and -(-size // g) > MAX_TSO_SEGS
        return
    out = coalesce(segs)
    assert run_lengths(out) == [min(MAX_SEGS, len(segs) - i)
                                for i in range(0, len(segs), MAX_SEGS)]
    again = [s for h, f in out for s in (segment(h, f) if h != bytes(10) else [f])]
    assert again == segs
    doff = 20 + len(opts)
    assert b"".join(f[34 + doff:] for _, f in out) == data
