"""The outer header rules every Linux tunnel applies, in readable pure Python (the reference of
``_fastpath/core/tunnel.pyx``): ECN per RFC 6040, the configurable TTL, TOS and DF, and the ICMP
fragmentation-needed a bridged tunnel sends back for an inner DF packet that cannot fit.

They are the kernel's, from ``include/net/ip_tunnels.h``, ``include/net/inet_ecn.h``,
``drivers/net/vxlan/vxlan_core.c`` (``vxlan_xmit_one``, ``vxlan_ecn_decapsulate``) and
``net/ipv4/ip_tunnel_core.c`` (``skb_tunnel_check_pmtu``), checked against a real vxlan device:

* encapsulation (``outer_fields``): outer DSCP from the network's ``tos`` (or the inner one
  with ``inherit``), outer ECN from the inner per RFC 6040 §4.1 (a CE inner leaves as ECT(0));
  outer TTL ``auto`` (64), N, or the inner TTL / hop limit (``inherit``; 64 when the frame is
  not IP); DF ``unset``, ``set``, or ``inherit`` (set for inner IPv6 and for inner IPv4 with
  DF). Inheritance looks through up to two VLAN tags, except DF's, which looks at the
  Ethernet type only (``eth_hdr(skb)->h_proto``);
* the outer IPv6 flow label (``outer_label``): the network's ``flowlabel`` (0 unless set), or
  the inner IPv6 one with ``inherit``;
* decapsulation (``ecn_decap``): RFC 6040 §4.2's table — an outer CE marks an ECT inner CE, an
  outer ECT(1) turns an inner ECT(0) into ECT(1), and a Not-ECT inner under an outer CE is
  dropped (the kernel counts it in rx_frame_errors; vxdp as ``ecn_not_ect_ce``). Untagged IPv4
  and IPv6 only: anything else passes unchanged. The IPv4 header checksum is adjusted
  incrementally (``IP_ECN_set_ce``), so a bad one stays bad;
* PMTU signalling (``pmtu_exceeded``, ``pmtud_icmp``): ``skb_tunnel_check_pmtu`` for a bridged
  tunnel. An inner packet longer than the route MTU to its remote minus the encapsulation
  (50 bytes over IPv4, 70 over IPv6) is answered, when the kernel would answer it, with the
  ICMP fragmentation-needed (RFC 1191) or ICMPv6 Packet Too Big (RFC 8201) that
  ``iptunnel_pmtud_build_icmp`` / ``_icmpv6`` build from it, written back to the sender instead
  of being sent; otherwise it is sent anyway (and fragmented on the way, or lost).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from dataplane.wire import ETH_HLEN, inet_checksum, icmp6_checksum

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8)

TTL_AUTO = 0            # the route's hop limit: ip4_dst_hoplimit, net.ipv4.ip_default_ttl
TTL_INHERIT = -1
TOS_INHERIT = -1
DEFAULT_TTL = 64
DF_MODES = ("unset", "set", "inherit")
LABEL_INHERIT = -1      # flowlabel "inherit" (IFLA_VXLAN_LABEL_POLICY 1)
LABEL_MAX = 0xFFFFF     # 20 bits (RFC 6437)

ECN_NOT_ECT, ECN_ECT_1, ECN_ECT_0, ECN_CE = 0, 1, 2, 3


class Outer(NamedTuple):
    """What an encapsulation sends beyond the addresses and source port: the UDP destination
    port (0: the VTEP's own, 4789 unless configured), the outer TOS (IPv4) / traffic class
    (IPv6), TTL / hop limit, DF, flow label."""

    dport: int = 0
    tos: int = 0
    ttl: int = DEFAULT_TTL
    df: bool = False
    label: int = 0


class _InnerIP(NamedTuple):
    version: int     # 4 or 6
    l3: int          # offset of the IP header


def _be16(b: bytes | bytearray, at: int) -> int:
    return (b[at] << 8) | b[at + 1]


def inner_ip(frame: bytes, through_tags: bool = True) -> _InnerIP | None:
    """The inner IP header, if ``frame`` carries IPv4 (20 bytes at least) or IPv6 (40) —
    behind up to two VLAN tags unless ``through_tags`` is False (``skb_protocol(skb, true)``
    walks in-band tags; ``eth_hdr(skb)->h_proto`` does not)."""
    n = len(frame)
    if n < ETH_HLEN:
        return None
    l3, et = ETH_HLEN, _be16(frame, 12)
    for _ in range(2 if through_tags else 0):
        if et not in VLAN_TPIDS or n < l3 + 4:
            break
        et, l3 = _be16(frame, l3 + 2), l3 + 4
    if et == ETH_P_IP and n >= l3 + 20 and frame[l3] >> 4 == 4:
        return _InnerIP(4, l3)
    if et == ETH_P_IPV6 and n >= l3 + 40 and frame[l3] >> 4 == 6:
        return _InnerIP(6, l3)
    return None


def inner_dsfield(frame: bytes) -> int:
    """``ip_tunnel_get_dsfield``: the inner IPv4 TOS / IPv6 traffic class, 0 if not IP."""
    ip = inner_ip(frame)
    if ip is None:
        return 0
    if ip.version == 4:
        return frame[ip.l3 + 1]
    return ((frame[ip.l3] & 0x0F) << 4) | (frame[ip.l3 + 1] >> 4)


def inner_ttl(frame: bytes) -> int:
    """``ip_tunnel_get_ttl``: the inner IPv4 TTL / IPv6 hop limit, 0 if not IP."""
    ip = inner_ip(frame)
    if ip is None:
        return 0
    return frame[ip.l3 + 8] if ip.version == 4 else frame[ip.l3 + 7]


def ecn_encap(base: int, inner: int) -> int:
    """``INET_ECN_encapsulate``: ``base``'s DSCP with the inner ECN, CE sent as ECT(0)."""
    ecn = inner & 3
    return (base & 0xFC) | (ECN_ECT_0 if ecn == ECN_CE else ecn)


def outer_fields(frame: bytes, tos: int, ttl: int, df: str) -> tuple[int, int, bool]:
    """The outer (TOS, TTL, DF) for inner ``frame`` on a network configured with ``tos``
    (0..255 or TOS_INHERIT), ``ttl`` (TTL_AUTO, 1..255 or TTL_INHERIT) and ``df``
    (one of DF_MODES), as vxlan_xmit_one computes them."""
    dsfield = inner_dsfield(frame)
    out_tos = ecn_encap(dsfield if tos == TOS_INHERIT else tos, dsfield)
    if ttl == TTL_INHERIT:
        out_ttl = inner_ttl(frame) or DEFAULT_TTL
    else:
        out_ttl = ttl or DEFAULT_TTL
    if df == "set":
        out_df = True
    elif df == "inherit":
        ip = inner_ip(frame, through_tags=False)
        out_df = ip is not None and (ip.version == 6 or bool(frame[ip.l3 + 6] & 0x40))
    else:
        out_df = False
    return out_tos, out_ttl, out_df


def outer_label(frame: bytes, label: int) -> int:
    """The outer IPv6 flow label for inner ``frame`` on a network configured with ``label``
    (0..LABEL_MAX or LABEL_INHERIT): the fixed label (0 by default — udp_tunnel6_xmit_skb
    makes none up), or with ``inherit`` the inner IPv6 one, 0 for anything else
    (``ip_tunnel_get_flowlabel``)."""
    if label != LABEL_INHERIT:
        return label
    ip = inner_ip(frame)
    if ip is None or ip.version != 6:
        return 0
    l3 = ip.l3
    return ((frame[l3 + 1] & 0x0F) << 16) | (frame[l3 + 2] << 8) | frame[l3 + 3]


def _ones_add(a: int, b: int) -> int:
    s = a + b
    return (s + (s >= 0xFFFF)) & 0xFFFF


def ecn_decap(frame: bytes, outer_tos: int) -> bytes | None:
    """``INET_ECN_decapsulate`` on the inner ``frame`` under an outer TOS / traffic class:
    the frame to deliver, or None to drop it (a Not-ECT inner under an outer CE)."""
    outer = outer_tos & 3
    if outer == ECN_NOT_ECT:
        return frame
    ip = inner_ip(frame, through_tags=False)
    if ip is None:
        return frame            # ARP, tagged frames...: never looked at
    l3 = ip.l3
    inner = frame[l3 + 1] & 3 if ip.version == 4 else (frame[l3 + 1] >> 4) & 3
    if inner == ECN_NOT_ECT:
        return None if outer == ECN_CE else frame
    if outer == ECN_CE:
        new = ECN_CE
    elif outer == ECN_ECT_1 and inner == ECN_ECT_0:
        new = ECN_ECT_1
    else:
        return frame
    if new == inner:
        return frame
    b = bytearray(frame)
    if ip.version == 4:
        # IP_ECN_set_ce / IP_ECN_set_ect1: the header checksum follows incrementally (RFC
        # 1624), so one that was wrong stays exactly as wrong
        check = _be16(b, l3 + 10)
        if new == ECN_CE:
            check = _ones_add(check, 0xFFFE if inner == ECN_ECT_0 else 0xFFFD)
        else:
            check = _ones_add(check, 1)
        b[l3 + 1] = (b[l3 + 1] & 0xFC) | new
        struct.pack_into("!H", b, l3 + 10, check)
    else:
        b[l3 + 1] = (b[l3 + 1] & 0xCF) | (new << 4)
    return bytes(b)


# --------------------------------------------------------------------------- PMTU signalling

#: skb_tunnel_check_pmtu's headroom, vxlan_headroom(): outer IP + UDP + VXLAN + the inner
#: Ethernet header, which the inner MTU does not count.
PMTU_HEADROOM = {4: 20 + 8 + 8 + ETH_HLEN, 6: 40 + 8 + 8 + ETH_HLEN}
ICMP_MIN_MTU = 576      # iptunnel_pmtud_check_icmp: no frag-needed below (RFC 791's 576)
IPV6_MIN_MTU = 1280     # RFC 8200 §5; iptunnel_pmtud_check_icmpv6: no Packet Too Big below
ICMP_QUOTE = ICMP_MIN_MTU - 20 - 8          # 548: the reply is a 576-byte IP datagram at most
ICMP6_QUOTE = IPV6_MIN_MTU - 40 - 8         # 1232: and a 1280-byte IPv6 packet at most
ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})  # icmp_is_err: never answer an error with one
ICMP6_ERRORS = frozenset({1, 2, 3, 4})      # icmpv6_is_err
NDISC_REDIRECT = 137
IPV6_EXT_HDRS = frozenset({0, 43, 44, 51, 59, 60})   # ipv6_ext_hdr(): hop, rt, frag, AH, none, dst
NEXTHDR_NONE, NEXTHDR_FRAGMENT, NEXTHDR_AUTH = 59, 44, 51


def pmtu_limit(route_mtu: int, version: int) -> int:
    """The longest inner IP packet (``skb->len - skb_network_offset(skb)``) that fits a route
    MTU to an IPv``version`` remote, ``dst_mtu(encap_dst) - headroom``; -1 when no check
    applies (MTU unknown, 0; or below the headroom, where the kernel's u32 wraps around)."""
    limit = route_mtu - PMTU_HEADROOM[version]
    return limit if route_mtu and limit >= 0 else -1


def pmtu_exceeded(frame: bytes, limit: int) -> bool:
    """Is ``frame``'s inner packet longer than ``limit`` (pmtu_limit)? The kernel compares
    every frame, IP or not; only IP ones can be answered."""
    return limit >= 0 and len(frame) - ETH_HLEN > limit


def _ipv6_addr_type_refused(src: bytes) -> bool:
    """iptunnel_pmtud_check_icmpv6's source test: ``ipv6_addr_type()`` (the scope bits masked
    off) equal to exactly IPV6_ADDR_ANY, MULTICAST or LOOPBACK. ``::1`` is LOOPBACK|UNICAST
    and a multicast address of interface-, link- or site-local scope carries its scope's
    LOOPBACK/LINKLOCAL/SITELOCAL bit too, so only ``::`` and multicast of the other scopes
    compare equal (__ipv6_addr_type)."""
    if src == bytes(16):
        return True
    return src[0] == 0xFF and (src[1] & 0x0F) not in (1, 2, 5)


def _ipv6_skip_exthdr(frame: bytes) -> tuple[int, int, int]:
    """``ipv6_skip_exthdr(skb, sizeof(struct ipv6hdr), &proto, &frag_off)`` as
    iptunnel_pmtud_check_icmpv6 calls it: (offset, proto, frag_off), offset -1 when the walk
    fails. ``start`` is relative to ``skb->data``, which is the inner Ethernet header at this
    point (the bridge pushed it back), so a walk starts 14 bytes short of the first extension
    header and its offset is then used from the IPv6 header on: exactly the kernel's
    arithmetic, so that vxdp answers the same packets."""
    n = len(frame)
    nexthdr, start, frag_off = frame[ETH_HLEN + 6], 40, 0
    while nexthdr in IPV6_EXT_HDRS:
        if nexthdr == NEXTHDR_NONE or start + 2 > n:
            return -1, nexthdr, frag_off
        if nexthdr == NEXTHDR_FRAGMENT:
            if start + 4 > n:
                return -1, nexthdr, frag_off
            frag_off = _be16(frame, start + 2)
            if frag_off & ~7:
                break
            hdrlen = 8
        elif nexthdr == NEXTHDR_AUTH:
            hdrlen = (frame[start + 1] + 2) << 2
        else:
            hdrlen = (frame[start + 1] + 1) << 3
        nexthdr = frame[start]
        start += hdrlen
    return start, nexthdr, frag_off


def _icmp_frag_needed(frame: bytes, mtu: int) -> bytes | None:
    """iptunnel_pmtud_check_icmp + iptunnel_pmtud_build_icmp (IPv4 inner, untagged)."""
    l3 = ETH_HLEN
    if mtu < ICMP_MIN_MTU or _be16(frame, l3 + 6) != 0x4000:     # DF exactly: no MF, offset 0
        return None
    saddr, daddr = frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20]
    if daddr == b"\xff" * 4 or daddr[0] >> 4 == 0xE:            # lbcast, multicast
        return None
    if saddr[0] in (0, 127) or saddr == b"\xff" * 4 or saddr[0] >> 4 == 0xE:
        return None                                                # zeronet, loopback...
    if frame[l3 + 9] == 1 and frame[l3 + (frame[l3] & 0x0F) * 4] in ICMP_ERRORS:
        return None
    quote = frame[l3:l3 + ICMP_QUOTE]
    icmp = bytearray(struct.pack("!BBHHH", 3, 4, 0, 0, mtu & 0xFFFF) + quote)
    struct.pack_into("!H", icmp, 2, inet_checksum(bytes(icmp)))
    # tos 0, id 0, DF, TTL = the original's (not a policy value), addresses swapped
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0x4000,
                               frame[l3 + 8], 1, 0, daddr, saddr))
    struct.pack_into("!H", ip, 10, inet_checksum(bytes(ip)))
    return frame[6:12] + frame[0:6] + frame[12:14] + bytes(ip) + bytes(icmp)


def _icmp6_packet_too_big(frame: bytes, mtu: int) -> bytes | None:
    """iptunnel_pmtud_check_icmpv6 + iptunnel_pmtud_build_icmpv6 (IPv6 inner, untagged)."""
    l3 = ETH_HLEN
    src, dst = frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40]
    if mtu < IPV6_MIN_MTU or _ipv6_addr_type_refused(src):
        return None
    offset, proto, frag_off = _ipv6_skip_exthdr(frame)
    if offset < 0 or frag_off & ~7:           # a non-first fragment is never answered
        return None
    if proto == 58:
        if l3 + offset + 1 > len(frame):
            return None
        t = frame[l3 + offset]
        if t in ICMP6_ERRORS or t == NDISC_REDIRECT:
            return None
    quote = frame[l3:l3 + ICMP6_QUOTE]
    icmp = bytearray(struct.pack("!BBHI", 2, 0, 0, mtu) + quote)
    struct.pack_into("!H", icmp, 2, icmp6_checksum(dst, src, bytes(icmp)))
    # traffic class and flow label 0, hop limit = the original's, addresses swapped
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), 58, frame[l3 + 7]) + dst + src
    return frame[6:12] + frame[0:6] + frame[12:14] + ip6 + bytes(icmp)


def pmtud_icmp(frame: bytes, limit: int) -> bytes | None:
    """What a bridged vxlan answers an inner ``frame`` too long for the path (pmtu_exceeded)
    with, when it answers: the frame to write back to its sender — ICMP "fragmentation
    needed and DF set" for IPv4, Packet Too Big for IPv6, next-hop MTU ``limit`` — or None,
    and the frame is then sent as it is. Only untagged IPv4 / IPv6 by the Ethernet type
    (``skb->protocol``); the reply goes from the original destination (MAC and IP) to the
    original source, quoting as much of the original packet as fits a 576-byte IPv4
    datagram (a 1280-byte IPv6 packet)."""
    et = _be16(frame, 12)
    if et == ETH_P_IP and len(frame) >= ETH_HLEN + 20:
        return _icmp_frag_needed(frame, limit)
    if et == ETH_P_IPV6 and len(frame) >= ETH_HLEN + 40:
        return _icmp6_packet_too_big(frame, limit)
    return None
