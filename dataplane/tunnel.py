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
  incrementally (``IP_ECN_set_ce``), so a bad one stays bad.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from dataplane.wire import ETH_HLEN

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


def _be16(b: bytes, at: int) -> int:
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
