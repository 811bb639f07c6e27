"""Inner packets too big for the path to their remote, and whether the kernel's bridged vxlan
answers each with an ICMP (``skb_tunnel_check_pmtu``): measured on this machine against a
kernel vxlan with a 1400-byte underlay, replies compared byte for byte with
``dataplane.tunnel.pmtud_icmp``. Shared by the unit tests (both cores) and the functional
test that asks a real kernel VTEP the same questions next to vxdp."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoRequest, ICMPv6ND_Redirect, IPv6,
                                IPv6ExtHdrFragment, IPv6ExtHdrHopByHop)
from scapy.packet import Packet, Raw


def kernel_cases(src4: str, dst4: str, src6: str, dst6: str
                 ) -> list[tuple[str, Packet, bool]]:
    """(name, inner packet, answered?) from ``src*`` to ``dst*``, every packet longer than a
    1400-byte route MTU allows over either underlay family. The IPv6 extension header cases
    rely on the third and fourth bytes of ``dst6`` being 00 55 (fd00:55::/64): the kernel
    walks the extension headers from there (tunnel._ipv6_skip_exthdr says why)."""
    a4, a6, pad = {"src": src4, "dst": dst4}, {"src": src6, "dst": dst6}, Raw(bytes(1380))
    return [
        ("df", IP(**a4, flags="DF", ttl=33, tos=0xB9) / UDP(sport=1, dport=2)
         / Raw((bytes(range(256)) * 6)[:1400]), True),
        ("df_fits", IP(**a4, flags="DF") / UDP() / Raw(bytes(1250)), False),
        ("no_df", IP(**a4) / UDP() / pad, False),
        ("df_and_mf", IP(**a4, flags="DF+MF") / UDP() / pad, False),
        ("icmp_error_behind_options", IP(**a4, flags="DF", options=b"\x01\x01\x01\x00")
         / ICMP(type=3) / pad, False),
        ("icmp_echo", IP(**a4, flags="DF") / ICMP() / pad, True),
        ("icmp_time_exceeded", IP(**a4, flags="DF") / ICMP(type=11) / pad, False),
        ("multicast_dst", IP(src=src4, dst="239.1.1.1", flags="DF") / UDP() / pad, False),
        ("loopback_src", IP(src="127.0.0.1", dst=dst4, flags="DF") / UDP() / pad, False),
        ("v6", IPv6(**a6, hlim=7, tc=0xB9, fl=12345) / UDP(sport=1, dport=2)
         / Raw((bytes(range(256)) * 6)[:1390]), True),
        ("v6_echo", IPv6(**a6) / ICMPv6EchoRequest() / pad, True),
        ("v6_icmp_error", IPv6(**a6) / ICMPv6DestUnreach() / pad, False),
        ("v6_redirect", IPv6(**a6) / ICMPv6ND_Redirect() / Raw(bytes(1340)), False),
        ("v6_src_any", IPv6(src="::", dst=dst6) / UDP() / pad, False),
        # ipv6_addr_type() masks the scope off: ::1 is LOOPBACK|UNICAST and ff02:: is
        # MULTICAST|LINKLOCAL, neither equal to what iptunnel_pmtud_check_icmpv6 compares with
        ("v6_src_loopback", IPv6(src="::1", dst=dst6) / UDP() / pad, True),
        ("v6_src_ff02", IPv6(src="ff02::1", dst=dst6) / UDP() / pad, True),
        ("v6_src_ff0e", IPv6(src="ff0e::1", dst=dst6) / UDP() / pad, False),
        # ipv6_skip_exthdr walks from skb->data + 40, the Ethernet header in front: from the
        # destination's third byte, not from the first extension header
        ("v6_hop_by_hop_zeros", IPv6(**a6) / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=2)
         / Raw(bytes(1380)), False),
        ("v6_hop_by_hop_0x11", IPv6(**a6) / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=2)
         / Raw(b"\x11" * 1380), True),
        ("v6_later_fragment", IPv6(**a6) / IPv6ExtHdrFragment(offset=100, nh=17, id=7)
         / Raw(bytes(1380)), True),
        ("v6_first_fragment", IPv6(**a6) / IPv6ExtHdrFragment(offset=0, m=1, nh=17, id=7)
         / Raw(bytes(1380)), False),
    ]
