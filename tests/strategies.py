"""Shared frame builders and hypothesis strategies for the unit tests.

The builders pack every header by hand with ``struct`` (they do not call ``dataplane.wire``), so
they are a second opinion on the layouts the reference encodes; scapy is the third one
(``test_scapy_oracle.py``). Only the TCP segment streams for the coalescing tests are cut by the
reference's ``offload.segment()`` (which is tested against scapy on its own), so that their
checksums are right. Import as ``from tests.strategies import ...`` (the repository root
is on ``sys.path`` through ``pythonpath = ["."]`` in pyproject.toml).
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from hypothesis import HealthCheck
from hypothesis import strategies as st

from dataplane import offload

# --------------------------------------------------------------------------- walkthrough values
# reference/docker-overlay-walkthrough.txt: VNI 4097, overlay 192.168.55.0/24, MACs 02:42:c0:a8:37:xx
# (Docker derives them from the IP). Underlay from 198.18.0.0/15 (DESIGN.md §5).

VNI = 4097
VNI_B = 4098
LOCAL = IPv4Address("198.18.0.1")
REMOTE = IPv4Address("198.18.0.2")
REMOTE2 = IPv4Address("198.18.0.3")
REMOTE3 = IPv4Address("198.18.0.4")
STRANGER = IPv4Address("203.0.113.9")        # outside any allow list the tests configure

C1_MAC = bytes.fromhex("0242c0a83704")       # local endpoint c1, 192.168.55.4, port 1
C2_MAC = bytes.fromhex("0242c0a83705")       # local endpoint c2, 192.168.55.5, port 2
PEER_MAC = bytes.fromhex("0242c0a83703")     # remote endpoint, 192.168.55.3 behind REMOTE
C1_IP = IPv4Address("192.168.55.4")
C2_IP = IPv4Address("192.168.55.5")
PEER_IP = IPv4Address("192.168.55.3")
UNKNOWN_IP = IPv4Address("192.168.55.99")
UNKNOWN_MAC = bytes.fromhex("0242c0a837ee")

BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
MCAST_MAC = bytes.fromhex("01005e000001")    # IPv4 multicast 224.0.0.1

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
SRC_PORT_LO, SRC_PORT_HI = 49152, 65535


#: Hypothesis health checks the frame strategies trip by design (big, slow-to-draw examples).
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]


def walkthrough_network(sw: Any, *, proxy: bool = True, learning: bool = False) -> Any:
    """Network VNI on a core (``impl.Switch``) as the manager sees it in the walkthrough: c1 on
    port 1, c2 on port 2, the peer behind REMOTE (permanent FDB + neighbour entry, Docker's
    peerAdd) and REMOTE2, REMOTE3 in the flood list. Returns ``sw``."""
    sw.add_network(VNI, proxy=proxy, learning=learning)
    sw.add_port(1, VNI, C1_MAC)
    sw.add_port(2, VNI, C2_MAC)
    sw.fdb_add(VNI, PEER_MAC, REMOTE)
    sw.fdb_append(VNI, "00:00:00:00:00:00", REMOTE2)
    sw.fdb_append(VNI, "00:00:00:00:00:00", REMOTE3)
    sw.neigh_add(VNI, PEER_IP, PEER_MAC)
    return sw


def mac(text: str) -> bytes:
    return bytes(int(p, 16) for p in text.split(":"))


def mac_text(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


# --------------------------------------------------------------------------- frame builders

def eth(dst: bytes, src: bytes, ethertype: int, payload: bytes = b"") -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def arp_body(op: int, sha: bytes, spa: IPv4Address | str, tha: bytes, tpa: IPv4Address | str, *,
             htype: int = 1, ptype: int = ETH_P_IP, hlen: int = 6, plen: int = 4) -> bytes:
    return (struct.pack("!HHBBH", htype, ptype, hlen, plen, op) + sha
            + IPv4Address(spa).packed + tha + IPv4Address(tpa).packed)


def arp_frame(op: int, sha: bytes, spa: IPv4Address | str, tpa: IPv4Address | str, *,
              tha: bytes = ZERO_MAC, dst: bytes = BROADCAST, src: bytes | None = None,
              pad: int = 0, **kw: Any) -> bytes:
    """Ethernet + ARP (28-byte body), optionally padded with ``pad`` zero bytes."""
    return eth(dst, sha if src is None else src, ETH_P_ARP,
               arp_body(op, sha, spa, tha, tpa, **kw)) + b"\x00" * pad


def arp_request(sha: bytes, spa: IPv4Address | str, tpa: IPv4Address | str,
                dst: bytes = BROADCAST, **kw: Any) -> bytes:
    return arp_frame(1, sha, spa, tpa, dst=dst, **kw)


def ones_complement(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: IPv4Address | str, dst: IPv4Address | str, proto: int, payload: bytes, *,
         frag: int = 0, ident: int = 1, ttl: int = 64, options: bytes = b"") -> bytes:
    """IPv4 header (checksum filled) + payload. ``frag`` = flags(3 bits) << 13 | offset/8."""
    assert len(options) % 4 == 0
    ihl = 5 + len(options) // 4
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), ident, frag, ttl,
                      proto, 0, IPv4Address(src).packed, IPv4Address(dst).packed) + options
    csum = ones_complement(hdr)
    return hdr[:10] + struct.pack("!H", csum) + hdr[12:] + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 1024, 0, 0) + payload


def ipv4_frame(dst: bytes, src: bytes, sip: IPv4Address | str, dip: IPv4Address | str, *,
               proto: int = 17, sport: int = 40000, dport: int = 5201, payload: bytes = b"",
               frag: int = 0, l4: bytes | None = None, options: bytes = b"") -> bytes:
    """Ethernet + IPv4 + UDP/TCP (``l4`` overrides the transport bytes entirely)."""
    if l4 is None:
        l4 = tcp(sport, dport, payload) if proto == 6 else udp(sport, dport, payload)
    return eth(dst, src, ETH_P_IP, ipv4(sip, dip, proto, l4, frag=frag, options=options))


def ipv6(src: IPv6Address | str, dst: IPv6Address | str, nexthdr: int, payload: bytes, *,
         tclass: int = 0, label: int = 0, hlim: int = 64) -> bytes:
    """A fixed IPv6 header (RFC 8200 §3) + payload."""
    return struct.pack("!IHBB16s16s", (6 << 28) | (tclass << 20) | label, len(payload),
                       nexthdr, hlim, IPv6Address(src).packed,
                       IPv6Address(dst).packed) + payload


def ipv6_frame(dst: bytes, src: bytes, sip: IPv6Address | str, dip: IPv6Address | str, *,
               nexthdr: int = 17, sport: int = 40000, dport: int = 5201, payload: bytes = b"",
               tclass: int = 0, label: int = 0, hlim: int = 64,
               l4: bytes | None = None) -> bytes:
    """Ethernet + IPv6 + UDP/TCP (``l4`` overrides the transport bytes entirely)."""
    if l4 is None:
        l4 = tcp(sport, dport, payload) if nexthdr == 6 else udp(sport, dport, payload)
    return eth(dst, src, ETH_P_IPV6, ipv6(sip, dip, nexthdr, l4, tclass=tclass, label=label,
                                          hlim=hlim))


def icmp6_csum(src: bytes, dst: bytes, body: bytes) -> int:
    """RFC 4443 §2.3 over the RFC 8200 §8.1 pseudo-header (body with a zero checksum)."""
    return ones_complement(src + dst + struct.pack("!I3xB", len(body), 58) + body)


def ns_frame(sha: bytes, src: IPv6Address | str, target: IPv6Address | str, *,
             dst: IPv6Address | str | None = None, sllao: bool = True, hlim: int = 255,
             tclass: int = 0, code: int = 0, options: bytes | None = None) -> bytes:
    """An RFC 4861 §4.3 Neighbor Solicitation, packed by hand: to the target's solicited-node
    group (ff02::1:ffXX:XXXX, MAC 33:33:ff:XX:XX:XX) unless ``dst``; a source link-layer
    option unless ``sllao`` is False; ``options`` replaces the options entirely."""
    t = IPv6Address(target).packed
    d = IPv6Address(dst).packed if dst is not None else \
        IPv6Address("ff02::1:ff00:0").packed[:13] + t[13:]
    s = IPv6Address(src).packed
    opts = options if options is not None else (b"\x01\x01" + sha if sllao else b"")
    body = struct.pack("!BBHI", 135, code, 0, 0) + t + opts
    body = body[:2] + struct.pack("!H", icmp6_csum(s, d, body)) + body[4:]
    return eth(b"\x33\x33" + d[12:], sha, ETH_P_IPV6,
               ipv6(s, d, 58, body, tclass=tclass, hlim=hlim))


def sized_frame(dst: bytes, src: bytes, size: int, ethertype: int = 0x88B5) -> bytes:
    """An Ethernet frame of exactly ``size`` bytes (local experimental ethertype by default)."""
    assert size >= 14
    return eth(dst, src, ethertype, bytes(i & 0xFF for i in range(size - 14)))


def vxlan_hdr(vni: int, *, flags: int = 0x08, rsvd1: bytes = b"\x00\x00\x00",
              rsvd2: int = 0) -> bytes:
    """RFC 7348 §5.1 header packed by hand: flags, 24 reserved bits, VNI, 8 reserved bits."""
    return bytes((flags,)) + rsvd1 + (vni & 0xFFFFFF).to_bytes(3, "big") + bytes((rsvd2,))


def vxlan_datagram(vni: int, frame: bytes, **kw: Any) -> bytes:
    return vxlan_hdr(vni, **kw) + frame


# --------------------------------------------------------------------------- strategies

def _unicast(b: bytes) -> bytes:
    return bytes((b[0] & 0xFE,)) + b[1:]


unicast_macs = st.binary(min_size=6, max_size=6).map(_unicast).filter(lambda m: m != ZERO_MAC)
group_macs = st.one_of(
    st.just(BROADCAST), st.just(MCAST_MAC),
    st.binary(min_size=6, max_size=6).map(lambda b: bytes((b[0] | 1,)) + b[1:]))
bad_src_macs = st.one_of(st.just(ZERO_MAC), group_macs)
any_macs = st.binary(min_size=6, max_size=6)
ipv4_addrs = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6_addrs = st.one_of(st.integers(0, 2**128 - 1).map(IPv6Address),
                       st.integers(1, 254).map(lambda i: IPv6Address(f"fd00:55::{i:x}")))
overlay_ips = st.integers(1, 254).map(lambda i: IPv4Address(f"192.168.55.{i}"))
ports16 = st.integers(0, 65535)


@st.composite
def ip_frames(draw: st.DrawFn, dst: st.SearchStrategy[bytes] = any_macs,
              src: st.SearchStrategy[bytes] = unicast_macs) -> bytes:
    """IPv4 frames: UDP/TCP/ICMP/other, sometimes fragmented, sometimes with options."""
    proto = draw(st.sampled_from([6, 17, 132, 1, 47]))
    frag = draw(st.sampled_from([0, 0, 0, 0x4000, 0x2000, 0x2000 | 185, 185]))
    options = draw(st.sampled_from([b"", b"", b"\x01\x01\x01\x00"]))
    payload = draw(st.binary(max_size=40))
    if proto in (6, 17, 132):
        l4 = struct.pack("!HH", draw(ports16), draw(ports16)) + payload
    else:
        l4 = payload
    return ipv4_frame(draw(dst), draw(src), draw(ipv4_addrs), draw(ipv4_addrs), proto=proto,
                      frag=frag, l4=l4, options=options)


@st.composite
def ip6_frames(draw: st.DrawFn, dst: st.SearchStrategy[bytes] = any_macs,
               src: st.SearchStrategy[bytes] = unicast_macs) -> bytes:
    """IPv6 frames: UDP/TCP/SCTP/ICMPv6/other next headers, with or without a flow label
    and traffic class, sometimes cut short."""
    nh = draw(st.sampled_from([6, 17, 132, 58, 0, 44]))
    payload = draw(st.binary(max_size=40))
    l4 = (struct.pack("!HH", draw(ports16), draw(ports16)) + payload
          if nh in (6, 17, 132) else payload)
    f = ipv6_frame(draw(dst), draw(src), draw(ipv6_addrs), draw(ipv6_addrs), nexthdr=nh,
                   l4=l4, tclass=draw(st.sampled_from([0, 0, 0xb8, 0x01, 0x02, 0x03, 0xff])),
                   label=draw(st.sampled_from([0, 0, 0x12345, 0xFFFFF, 1])),
                   hlim=draw(st.sampled_from([64, 255, 1, 0])))
    if draw(st.integers(0, 7)) == 0:
        f = f[:draw(st.integers(14, len(f)))]
    return f


#: Inner sources and destinations PMTU signalling treats apart (iptunnel_pmtud_check_icmp*).
PMTU_SRC4 = ["192.168.55.4"] * 6 + ["0.1.2.3", "127.0.0.1", "255.255.255.255",
             "224.0.0.5", "10.9.8.7"]
PMTU_DST4 = ["192.168.55.3"] * 6 + ["255.255.255.255", "239.1.1.1", "10.1.1.1"]
PMTU_SRC6 = ["fd00:55::4"] * 6 + ["::", "::1", "ff02::1", "ff05::2", "ff0e::1",
             "fe80::1"]
#: the kernel walks extension headers from the destination's third byte on: vary it
PMTU_DST6 = ["fd00:55::3", "fd00:55::2", "fd00:2c11::3", "fd00:3b00::1", "ff02::1"]


@st.composite
def pmtu_frames(draw: st.DrawFn, dst: st.SearchStrategy[bytes] = any_macs,
                src: st.SearchStrategy[bytes] = unicast_macs) -> bytes:
    """IP frames of 560-1530 bytes, around the sizes a path MTU cuts at, with what decides
    whether the kernel's vxlan answers one with an ICMP: DF exactly (or MF, an offset, no
    DF), sources and destinations it never answers, ICMP errors (behind IP options too);
    IPv6 behind extension headers (hop-by-hop, routing, fragments, AH, destination options,
    no next header), ICMPv6 errors and redirects, odd sources; sometimes cut short or a
    VLAN tag in front."""
    # either side of the limits (route MTU - 50 or - 70 + 14) the differential tests set
    size = draw(st.one_of(st.sampled_from([590, 591, 609, 610, 1293, 1294, 1313, 1314, 1364,
                                           1365, 1464, 1514]), st.integers(560, 1530)))
    d, s = draw(dst), draw(src)
    fill = bytes((draw(st.sampled_from([0, 0x11, 0x2c, 0xff])),))
    if draw(st.booleans()):
        proto = draw(st.sampled_from([17, 6, 1, 1]))
        options = draw(st.sampled_from([b"", b"", b"\x01\x01\x01\x00"]))
        head = (bytes((draw(st.sampled_from([0, 3, 4, 5, 8, 11, 12, 13])), 0)) + bytes(6)
                if proto == 1 else struct.pack("!HH", draw(ports16), draw(ports16)))
        body = head + fill * max(0, size - 34 - len(options) - len(head))
        f = ipv4_frame(d, s, draw(st.sampled_from(PMTU_SRC4)), draw(st.sampled_from(PMTU_DST4)),
                       proto=proto, l4=body, options=options,
                       frag=draw(st.sampled_from([0x4000, 0x4000, 0x4000, 0, 0x6000, 0x4001,
                                                  0x2000, 0x8000 | 0x4000])))
        f = f[:22] + bytes((draw(st.sampled_from([64, 1, 33, 255])),)) + f[23:]   # TTL
    else:
        chain = draw(st.one_of(st.just([]), st.lists(st.sampled_from([0, 43, 44, 51, 60, 59]),
                                                     max_size=3)))
        last = draw(st.sampled_from([17, 6, 58, 58]))
        ext = b""
        for i, h in enumerate(chain):
            nxt = chain[i + 1] if i + 1 < len(chain) else last
            if h == 44:
                off = draw(st.sampled_from([0, 1, 100 << 3, (100 << 3) | 1]))
                ext += struct.pack("!BBHI", nxt, 0, off, 7)
            elif h == 51:
                ext += struct.pack("!BB", nxt, 1) + bytes(6)
            else:
                ext += struct.pack("!BB", nxt, 0) + bytes(6)
        head = (bytes((draw(st.sampled_from([1, 2, 3, 4, 128, 129, 135, 137])), 0)) + bytes(6)
                if last == 58 else struct.pack("!HH", draw(ports16), draw(ports16)))
        nh0 = chain[0] if chain else last
        body = ext + head + fill * max(0, size - 54 - len(ext) - len(head))
        f = ipv6_frame(d, s, draw(st.sampled_from(PMTU_SRC6)), draw(st.sampled_from(PMTU_DST6)),
                       nexthdr=nh0, l4=body, hlim=draw(st.sampled_from([64, 1, 44, 255])),
                       tclass=draw(st.sampled_from([0, 0xb9])),
                       label=draw(st.sampled_from([0, 0x12345])))
    cut = draw(st.integers(0, 9))
    if cut == 0:
        f = f[:draw(st.integers(14, len(f)))]
    elif cut == 1:
        f = f[:12] + b"\x81\x00\x00\x0a" + f[12:]
    return f


@st.composite
def ns_frames(draw: st.DrawFn, sha: st.SearchStrategy[bytes] = unicast_macs,
              target: st.SearchStrategy[IPv6Address] | None = None) -> bytes:
    """Neighbor Solicitations: mostly well-formed (with or without a source link-layer option,
    DAD, unicast), sometimes with what a host refuses (hop limit, checksum, options, lengths)
    or cut short."""
    s = draw(sha)
    t = draw(target) if target is not None else draw(st.sampled_from(
        [IPv6Address(f"fd00:55::{i:x}") for i in range(1, 8)]
        + [IPv6Address("fe80::2"), IPv6Address("ff02::1")]))
    kind = draw(st.sampled_from(["ok"] * 6 + ["nosllao", "dad", "unicast", "loop", "hlim",
                                              "csum", "opt0", "optlong", "sllao2", "short",
                                              "tclass", "code1"]))
    src = IPv6Address(f"fd00:55::{draw(st.integers(1, 9)):x}")
    if kind == "dad":
        return ns_frame(s, "::", t, sllao=False)
    if kind == "unicast":
        return ns_frame(s, src, t, dst=t)
    if kind == "loop":
        return ns_frame(s, src, t, dst="::1")
    if kind == "hlim":
        return ns_frame(s, src, t, hlim=draw(st.sampled_from([64, 1, 0, 254])))
    if kind == "tclass":
        return ns_frame(s, src, t, tclass=draw(st.integers(0, 255)))
    if kind == "opt0":
        return ns_frame(s, src, t, options=b"\x01\x00" + s)
    if kind == "optlong":
        return ns_frame(s, src, t, options=b"\x01\x02" + s)
    if kind == "sllao2":
        return ns_frame(s, src, t, options=b"\x01\x02" + s + bytes(8))
    if kind == "code1":
        return ns_frame(s, src, t, code=1)
    f = bytearray(ns_frame(s, src, t, sllao=kind != "nosllao"))
    if kind == "csum":
        f[56] ^= 0x40
    elif kind == "short":
        f = f[:draw(st.integers(14, len(f) - 1))]
    return bytes(f)


@st.composite
def arp_frames(draw: st.DrawFn, sha: st.SearchStrategy[bytes] = unicast_macs,
               tpa: st.SearchStrategy[IPv4Address] = overlay_ips,
               dst: st.SearchStrategy[bytes] = st.just(BROADCAST)) -> bytes:
    """Mostly well-formed ARP requests, sometimes replies, odd ops, padding or bad fields."""
    s = draw(sha)
    kind = draw(st.sampled_from(["request"] * 6 + ["reply", "op", "pad", "bad", "short"]))
    spa, t = draw(overlay_ips), draw(tpa)
    d = draw(dst)
    if kind == "request":
        return arp_request(s, spa, t, dst=d)
    if kind == "reply":
        return arp_frame(2, s, spa, t, tha=draw(unicast_macs), dst=d)
    if kind == "op":
        return arp_frame(draw(st.integers(0, 65535)), s, spa, t, dst=d)
    if kind == "pad":
        return arp_request(s, spa, t, dst=d, pad=18)
    if kind == "bad":
        field = draw(st.sampled_from(["htype", "ptype", "hlen", "plen"]))
        value = draw(st.integers(0, 255))
        good = {"htype": 1, "ptype": ETH_P_IP, "hlen": 6, "plen": 4}[field]
        if value == good:
            value += 1
        return arp_request(s, spa, t, dst=d, **{field: value})
    full = arp_request(s, spa, t, dst=d)
    return full[:draw(st.integers(14, len(full) - 1))]


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with bit flips, a truncation, junk appended, or a mix."""
    b = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        what = draw(st.sampled_from(["flip", "truncate", "extend", "byte"]))
        if what == "flip" and b:
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif what == "byte" and b:
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        elif what == "truncate":
            del b[draw(st.integers(0, len(b))):]
        else:
            b += draw(st.binary(min_size=1, max_size=24))
    return bytes(b)


# --------------------------------------------------------------------------- TCP segment streams
# Inputs for the coalescing tests (dataplane.offload.coalesce and the compiled core's): the
# segments of a few TCP/IPv4 flows as TSO cuts them, interleaved, some damaged. Lengths and
# checksums of the super-frames are left as they come: segment() ignores them and fills in
# the segments'.

TS_OPTS = b"\x01\x01\x08\x0a" + struct.pack("!II", 0x01020304, 0x0A0B0C0D)   # NOP NOP TS
_FIN, _PSH, _ACK, _CWR = 0x01, 0x08, 0x10, 0x80
_MAC_S, _MAC_D = bytes.fromhex("0242c0a83704"), bytes.fromhex("0242c0a83705")


def vnet(flags: int = 0, gso_type: int = offload.GSO_NONE, hdr_len: int = 0, gso_size: int = 0,
         csum_start: int = 0, csum_offset: int = 0) -> bytes:
    """A struct virtio_net_hdr (10 bytes, little-endian), as a TAP with IFF_VNET_HDR uses."""
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def data(n: int, salt: int = 0) -> bytes:
    """``n`` payload bytes, different for each ``salt``."""
    return bytes((i * 13 + salt) & 0xFF for i in range(n))


def super4(payload: bytes, *, seq: int = 1000, ack: int = 1, flags: int = _ACK,
           options: bytes = TS_OPTS, ip_id: int = 1, ttl: int = 64, tos: int = 0,
           frag: int = 0x4000, win: int = 502, sport: int = 40000, dport: int = 5201,
           ip_options: bytes = b"", src: bytes = b"\xc0\xa8\x37\x04",
           dst: bytes = b"\xc0\xa8\x37\x05") -> bytes:
    """Ethernet + IPv4 + TCP + ``payload``, checksums left zero (a TSO super-frame)."""
    doff = 20 + len(options)
    ihl = 20 + len(ip_options)
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | (ihl // 4), tos, (ihl + doff + len(payload))
                     & 0xFFFF, ip_id, frag, ttl, 6, 0, src, dst) + ip_options
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (doff // 4) << 4, flags, win, 0,
                      0) + options
    return _MAC_D + _MAC_S + b"\x08\x00" + ip + tcp + payload


def refix(frame: bytes) -> bytes:
    """``frame`` with valid IPv4 and TCP checksums and lengths, via the reference (one TSO
    segment of itself); unchanged when it does not parse as TCP/IPv4."""
    try:
        return offload.segment(vnet(0, offload.GSO_TCPV4, 0, 65535), frame)[0]
    except ValueError:
        return frame


def patch_byte(frame: bytes, at: int, value: int) -> bytes:
    """``frame`` with byte ``at`` set to ``value``."""
    return frame[:at] + bytes((value,)) + frame[at + 1:]


@st.composite
def tcp_flows(draw: st.DrawFn, k: int) -> list[bytes]:
    """One flow's segments as TSO cuts them: 1-12 of them, or a full run (MAX_SEGS and a bit
    more), sometimes past the 64 KiB limit; a source port of its own (``40000 + k``) or a
    shared one."""
    g = draw(st.sampled_from([1, 3, 5, 100, 536, 1448]))
    n = draw(st.one_of(st.integers(1, 12),
                       st.sampled_from([offload.MAX_SEGS, offload.MAX_SEGS + 2])))
    if g == 1448 and draw(st.integers(0, 9)) == 0:
        n = 46                                      # past the 64 KiB limit
    size = draw(st.integers((n - 1) * g + 1, n * g))
    kw: dict[str, Any] = {
        "seq": draw(st.integers(0, 2**32 - 1)),
        "flags": draw(st.sampled_from([_ACK, _ACK, _ACK, _ACK | _PSH, _ACK | _FIN,
                                       _ACK | _CWR, _PSH])),
        "sport": draw(st.sampled_from([40000 + k, 40000])),
        "options": draw(st.sampled_from([b"", TS_OPTS, TS_OPTS])),
        "ip_id": draw(st.integers(0, 65535)),
        "frag": draw(st.sampled_from([0, 0x4000, 0x4000])),
        "tos": draw(st.sampled_from([0, 0, 0x28])),
    }
    return offload.segment(vnet(0, offload.GSO_TCPV4, 0, g), super4(data(size, k), **kw))


@st.composite
def frame_sequences(draw: st.DrawFn) -> list[bytes]:
    """Segments of 1-3 flows (sometimes the same flow twice), in order or interleaved at
    random but each flow in its own order, then a few damaged: a header field changed (and
    the checksums made valid again, so only the run rules can object), PSH set, bits
    mutated, a segment dropped, duplicated, padded or swapped with the next, junk added."""
    per_flow = [draw(tcp_flows(k)) for k in range(draw(st.integers(1, 3)))]
    tags = [k for k, segs in enumerate(per_flow) for _ in segs]
    if draw(st.booleans()):
        tags = draw(st.permutations(tags))
    cursor = [0] * len(per_flow)
    frames: list[bytes] = []
    for k in tags:
        frames.append(per_flow[k][cursor[k]])
        cursor[k] += 1
    for _ in range(draw(st.integers(0, 4))):
        if not frames:
            break
        i = draw(st.integers(0, len(frames) - 1))
        what = draw(st.sampled_from(["tweak", "tweak", "psh", "mutate", "drop", "dup", "junk",
                                     "pad", "swap"]))
        frames[i:i + 2] = _damage(draw, what, frames[i:i + 2])
    return frames


def _damage(draw: st.DrawFn, what: str, pair: list[bytes]) -> list[bytes]:
    """One of frame_sequences' damages to ``pair`` (a frame and the one after it, if any)."""
    f, rest = pair[0], pair[1:]
    if what == "tweak" and len(f) > 54:
        at = draw(st.sampled_from([15, 19, 20, 22, 26, 33, 34, 37, 38, 41, 42, 45, 47, 48,
                                   49, 52, 53, 54, 57, 61, 65]))
        return [refix(patch_byte(f, at, draw(st.integers(0, 255)))), *rest]
    if what == "psh" and len(f) > 54:
        return [refix(patch_byte(f, 47, f[47] | _PSH)), *rest]
    if what == "mutate":
        return [draw(mutations(f)), *rest]
    if what == "drop":
        return rest
    if what == "dup":
        return [f, f, *rest]
    if what == "junk":
        return [draw(st.binary(max_size=80)), f, *rest]
    if what == "pad":
        return [f + bytes(draw(st.integers(1, 8))), *rest]
    if what == "swap" and rest:
        return [rest[0], f]
    return pair
