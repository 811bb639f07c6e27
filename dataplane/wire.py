"""Wire formats, in readable pure Python: the reference the Cython fast path must equal byte for
byte, and the oracle the tests hold both against (with scapy as the independent third opinion).

Everything here is I/O-free and works on ``bytes``. Layouts:

VXLAN header, RFC 7348 §5.1 (8 bytes, network byte order)::

    |R|R|R|R|I|R|R|R|   Reserved (24 bits)  |
    |        VNI (24 bits)      | Reserved  |

The I flag (0x08) must be 1 for a valid VNI; every R bit is "set to zero on transmission and
ignored on receipt" by the RFC, but Linux's vxlan drops a datagram with any unparsed flag or
reserved bit (``vxlan_rcv``: "treat this as a malformed packet"). vxdp defaults to the kernel's
strict behaviour and offers the RFC's lenient one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from dataplane.validate import VNI_MAX, ipv4, mac_bytes

VXLAN_PORT = 4789          # IANA-assigned, RFC 7348 §5
VXLAN_HLEN = 8
VXLAN_FLAG_I = 0x08
ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ARP_HLEN = 28              # Ethernet/IPv4 ARP body (RFC 826)
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
ETH_P_IPV6 = 0x86DD
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_SCTP = 132
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_SOLICIT = 135  # RFC 4861 §4.3
ND_NEIGHBOR_ADVERT = 136   # RFC 4861 §4.4
ND_OPT_SOURCE_LL = 1       # RFC 4861 §4.6.1
ND_OPT_TARGET_LL = 2
NS_MIN_FRAME = ETH_HLEN + 40 + 24  # what the kernel pulls before neigh_reduce (78 bytes)
OUTER_OVERHEAD = 20 + 8 + VXLAN_HLEN + ETH_HLEN  # 50: why Docker's overlay MTU is 1450

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
DEFAULT_SRC_PORT_RANGE = (49152, 65535)  # IANA dynamic range, RFC 7348 §5 recommends it

# Drop reasons, in the order both implementations report them. One name per reason a frame
# or datagram is discarded; `vxdp stats` shows all of them, zeros included.
DROP_REASONS: tuple[str, ...] = (
    "not_allowed",     # outer source outside [vtep] allow
    "short_header",    # UDP payload shorter than the 8-byte VXLAN header
    "bad_flags",       # I flag clear (RFC 7348 §5.1: VNI not valid)
    "unknown_vni",     # no network with this VNI here
    "reserved_bits",   # strict mode: a reserved flag/field bit set (kernel behaviour)
    "runt",            # inner frame shorter than an Ethernet header
    "oversize",        # inner frame longer than the endpoint MTU + 14
    "bad_src_mac",     # source MAC multicast/broadcast or all-zeros (bridge drops these too)
    "bad_arp",         # ARP frame that is not well-formed Ethernet/IPv4 ARP
    "fdb_conflict",    # learning would move a permanent/static entry (kernel: drop)
    "hairpin",         # unicast back to its ingress port (bridge never does that)
    "remote_dest",     # from the underlay to a MAC that lives on another VTEP (split horizon)
    "unknown_port",    # frame from a port the switch does not know (detached meanwhile)
    "ecn_not_ect_ce",  # RFC 6040: a not-ECT inner frame under an outer CE (kernel: drop)
    "bad_nd",          # a Neighbor Solicitation no host would accept (RFC 4861 §7.1.1)
)

# Other counters: decisions that are not drops.
EVENT_COUNTERS: tuple[str, ...] = (
    "proxy_replies",   # ARP requests answered from the neighbour table
    "l2miss",          # unicast with no FDB entry and no flood list (kernel l2miss)
    "l3miss",          # ARP request with no neighbour entry (kernel l3miss)
    "learned",         # new FDB entries from learning
    "moved",           # learned entries that moved (MAC migration)
    "aged",            # learned entries removed by ageing
    "fdb_full",        # learning refused: maxaddress reached
    "learn_limit",     # local learning refused: a port's or the network's learned MACs full
    "frag_needed",     # PMTU: an inner IPv4 DF packet too big for the path, ICMP sent back
    "pkt_too_big",     # PMTU: an inner IPv6 packet too big for the path, ICMPv6 sent back
)


# --- addresses -------------------------------------------------------------------------------

# Parsing follows dataplane.validate's rules, under the names the wire reference, the tests and
# the compiled core use.
mac_to_bytes = mac_bytes
ip4 = ipv4


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def is_multicast_mac(mac: bytes) -> bool:
    """Group bit (I/G, the least significant bit of the first octet); broadcast included."""
    return bool(mac[0] & 1)


def is_zero_mac(mac: bytes) -> bool:
    return mac == ZERO_MAC


def is_valid_src_mac(mac: bytes) -> bool:
    """The kernel's ``is_valid_ether_addr``: neither a group address nor all zeros."""
    return not is_multicast_mac(mac) and not is_zero_mac(mac)


# --- VXLAN (RFC 7348 §5) ---------------------------------------------------------------------

def vxlan_header(vni: int) -> bytes:
    """The 8-byte header: I flag set, every reserved field zero (RFC 7348 §5.1)."""
    if not 0 <= vni <= VNI_MAX:   # 0 is legal on the wire, only configs refuse it
        raise ValueError(f"VNI {vni} does not fit in 24 bits")
    return struct.pack("!II", VXLAN_FLAG_I << 24, vni << 8)


def encapsulate(vni: int, frame: bytes) -> bytes:
    """UDP payload for ``frame`` on ``vni``."""
    return vxlan_header(vni) + frame


def parse_vxlan(datagram: bytes, strict: bool = True) -> tuple[str | None, int]:
    """Check a UDP payload's VXLAN header. Returns ``(drop_reason, vni)``; reason ``None`` when
    the header is acceptable. The VNI is returned whenever it could be read (also for drops
    detected after reading it), so the caller can look the network up before the strict check,
    in the kernel's order (``vxlan_rcv``: length, I flag, VNI lookup, then leftover bits)."""
    if len(datagram) < VXLAN_HLEN:
        return "short_header", -1
    flags = datagram[0]
    vni = (datagram[4] << 16) | (datagram[5] << 8) | datagram[6]
    if not flags & VXLAN_FLAG_I:
        return "bad_flags", vni
    return None, vni


def reserved_bits_set(datagram: bytes) -> bool:
    """Any bit other than I in the flags byte, the 24 reserved bits after it, or the reserved
    byte after the VNI (RFC 7348 §5.1 "Reserved")."""
    return bool((datagram[0] & ~VXLAN_FLAG_I) | datagram[1] | datagram[2] | datagram[3]
                | datagram[7])


# --- ARP (RFC 826, Ethernet/IPv4 only) -------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Arp:
    op: int
    sha: bytes     # sender hardware address
    spa: bytes     # sender protocol address (4 bytes)
    tha: bytes
    tpa: bytes


def parse_arp(frame: bytes) -> Arp | None:
    """Ethernet/IPv4 ARP body of ``frame`` (which must carry ethertype ARP), or ``None`` when it
    is not well-formed: short, or hardware/protocol type or length not Ethernet(1)/IPv4(4).
    The kernel's ``arp_reduce`` applies the same checks before answering."""
    if len(frame) < ETH_HLEN + ARP_HLEN:
        return None
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, ETH_HLEN)
    if htype != 1 or ptype != ETH_P_IP or hlen != 6 or plen != 4:
        return None
    b = ETH_HLEN + 8
    return Arp(op, frame[b:b + 6], frame[b + 6:b + 10], frame[b + 10:b + 16], frame[b + 16:b + 20])


def arp_reply(request: Arp, answer_mac: bytes) -> bytes:
    """The reply the kernel's ``arp_reduce`` synthesises for a proxied request:
    ``arp_create(ARPOP_REPLY, ETH_P_ARP, sip, dev, tip, sha, n->ha, sha)`` — Ethernet from the
    answered MAC to the requester, ARP sender = (answer MAC, target IP), target = requester.
    42 bytes, unpadded (padding is a physical-link matter; a TAP takes short frames)."""
    eth = request.sha + answer_mac + struct.pack("!H", ETH_P_ARP)
    body = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, ARPOP_REPLY)
    return eth + body + answer_mac + request.tpa + request.sha + request.spa


def arp_request(sha: bytes, spa: IPv4Address | str, tpa: IPv4Address | str,
                dst: bytes = BROADCAST_MAC) -> bytes:
    """An ARP who-has (for tests, benchmarks and the demo)."""
    body = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, ARPOP_REQUEST)
    return (dst + sha + struct.pack("!H", ETH_P_ARP) + body + sha + ip4(spa).packed
            + ZERO_MAC + ip4(tpa).packed)


# --- IPv6 Neighbor Discovery (RFC 4861): what the ND proxy reads and writes -----------------

@dataclass(frozen=True, slots=True)
class NeighSolicit:
    tclass: int     # the IPv6 traffic class of the solicitation
    src: bytes      # IPv6 source (16 bytes; all zeros for duplicate address detection)
    dst: bytes      # IPv6 destination
    target: bytes   # the address asked for
    sllao: bytes | None   # source link-layer address option (6 bytes), if any

    @property
    def dad(self) -> bool:
        """From the unspecified address: duplicate address detection (RFC 4862 §5.4.2)."""
        return self.src == bytes(16)


def is_ns(frame: bytes) -> bool:
    """What the kernel's vxlan_xmit hands to neigh_reduce with ``proxy`` on: IPv6 at least 40 +
    24 bytes long, ICMPv6 right after the fixed header, type 135 code 0. Anything else IPv6
    (NA, RS, MLD, an NS behind an extension header or with another code) is forwarded."""
    return (len(frame) >= NS_MIN_FRAME and frame[12] == 0x86 and frame[13] == 0xDD
            and frame[20] == IPPROTO_ICMPV6 and frame[54] == ND_NEIGHBOR_SOLICIT
            and frame[55] == 0)


def icmp6_checksum(src: bytes, dst: bytes, body: bytes) -> int:
    """RFC 4443 §2.3: over the RFC 8200 §8.1 pseudo-header and the ICMPv6 message."""
    return inet_checksum(src + dst + struct.pack("!I3xB", len(body), IPPROTO_ICMPV6) + body)


SOLICITED_NODE_PREFIX = IPv6Address("ff02::1:ff00:0").packed[:13]   # RFC 4291 §2.7.1, /104


def _solicited_node(addr: bytes) -> bool:
    """ff02::1:ffXX:XXXX: the multicast group of the addresses ending in XX:XXXX."""
    return addr[:13] == SOLICITED_NODE_PREFIX


def parse_ns(frame: bytes) -> NeighSolicit | None:
    """An intercepted NS (``is_ns``) checked the way a receiving host checks one (RFC 4861
    §7.1.1, the kernel's ndisc_recv_ns): hop limit 255, length and payload length consistent,
    ICMPv6 checksum right, target not multicast, every option of non-zero length inside the
    message, a source link-layer option exactly 8 bytes (Ethernet), and for DAD (source ::)
    a solicited-node destination and no source link-layer option. None when it fails: the
    proxy then drops it and counts ``bad_nd`` (the kernel's proxy answers some of these; a
    host would not accept them, so vxdp does not answer them either)."""
    plen = (frame[18] << 8) | frame[19]
    if frame[21] != 255 or plen < 24 or 54 + plen > len(frame):
        return None
    src, dst, body = frame[22:38], frame[38:54], frame[54:54 + plen]
    if icmp6_checksum(src, dst, body) != 0:
        return None
    target = body[8:24]
    if target[0] == 0xFF:
        return None
    sllao = None
    i = 24
    while i < plen:
        if i + 2 > plen:
            return None
        olen = body[i + 1] * 8
        if olen == 0 or i + olen > plen:
            return None
        if body[i] == ND_OPT_SOURCE_LL and sllao is None:
            if olen != 8:
                return None
            sllao = body[i + 2:i + 8]
        i += olen
    tclass = ((frame[14] & 0x0F) << 4) | (frame[15] >> 4)
    ns = NeighSolicit(tclass, src, dst, target, sllao)
    if ns.dad and (sllao is not None or not _solicited_node(dst)):
        return None
    return ns


def na_reply(ns: NeighSolicit, requester_mac: bytes, answer_mac: bytes,
             router: bool = False) -> bytes:
    """The Neighbor Advertisement the kernel's vxlan_na_create synthesises for a proxied NS
    (86 bytes): Ethernet to the NS's source link-layer address (else its Ethernet source)
    from the answered MAC; IPv6 from the target to the NS's source, traffic class = the NS's
    upper nibble only (``priority``), flow label 0, hop limit 255; NA with R (the FDB
    entry's router flag; vxdp has none), S and O set, the target, and a target link-layer
    address option."""
    eth = (ns.sllao or requester_mac) + answer_mac + struct.pack("!H", ETH_P_IPV6)
    body = bytearray(struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0,
                                 (0x80000000 if router else 0) | 0x60000000)
                     + ns.target + bytes((ND_OPT_TARGET_LL, 1)) + answer_mac)
    struct.pack_into("!H", body, 2, icmp6_checksum(ns.target, ns.src, bytes(body)))
    ip6 = struct.pack("!IHBB", (6 << 28) | ((ns.tclass & 0xF0) << 20), len(body),
                      IPPROTO_ICMPV6, 255) + ns.target + ns.src
    return eth + ip6 + bytes(body)


def neighbor_solicit(sha: bytes, src: IPv6Address | str, target: IPv6Address | str, *,
                     dst: IPv6Address | str | None = None, sllao: bool = True,
                     hlim: int = 255, tclass: int = 0) -> bytes:
    """An NS for tests, benchmarks and the demo: to the target's solicited-node address (or
    ``dst``) and its multicast MAC, with a source link-layer option unless ``sllao`` is
    False (as for DAD)."""
    t = IPv6Address(target).packed
    d = IPv6Address(dst).packed if dst is not None else SOLICITED_NODE_PREFIX + t[13:]
    s = IPv6Address(src).packed
    body = bytearray(struct.pack("!BBHI", ND_NEIGHBOR_SOLICIT, 0, 0, 0) + t
                     + (bytes((ND_OPT_SOURCE_LL, 1)) + sha if sllao else b""))
    struct.pack_into("!H", body, 2, icmp6_checksum(s, d, bytes(body)))
    mac = b"\x33\x33" + d[12:]
    return (mac + sha + struct.pack("!H", ETH_P_IPV6)
            + struct.pack("!IHBB", (6 << 28) | (tclass << 20), len(body), IPPROTO_ICMPV6, hlim)
            + s + d + bytes(body))


# --- flow hash → outer UDP source port (RFC 7348 §5: "hash of fields from the inner packet") --

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193
M32 = 0xFFFFFFFF


def _fnv1a(key: bytes) -> int:
    h = FNV_OFFSET
    for b in key:
        h = ((h ^ b) * FNV_PRIME) & M32
    return h


def _fmix32(h: int) -> int:
    """MurmurHash3's finaliser: FNV alone spreads short keys poorly over a port range."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    h ^= h >> 16
    return h


def flow_key(frame: bytes) -> bytes:
    """The inner-flow fields hashed for the source port, like the kernel's flow dissector:
    IPv4 addresses + protocol, plus TCP/UDP/SCTP ports when the datagram is not a fragment;
    IPv6 addresses + next header + flow label, plus the ports of a TCP/UDP/SCTP header right
    behind the fixed header when the flow label is 0 (``skb_get_hash`` stops at a non-zero
    label: FLOW_DISSECTOR_F_STOP_AT_FLOW_LABEL); otherwise (ARP, anything else) the two MAC
    addresses."""
    n = len(frame)
    if n >= ETH_HLEN + 20 and frame[12] == 0x08 and frame[13] == 0x00 and frame[14] >> 4 == 4:
        ihl = (frame[14] & 0x0F) * 4
        if ihl >= 20 and n >= ETH_HLEN + ihl:
            proto = frame[23]
            key = frame[26:34] + bytes((proto,))
            frag = ((frame[20] << 8) | frame[21]) & 0x3FFF  # MF flag + fragment offset
            l4 = ETH_HLEN + ihl
            if (frag == 0 and proto in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP)
                    and n >= l4 + 4):
                key += frame[l4:l4 + 4]
            return key
    if n >= ETH_HLEN + 40 and frame[12] == 0x86 and frame[13] == 0xDD and frame[14] >> 4 == 6:
        nexthdr = frame[20]
        label = bytes((frame[15] & 0x0F,)) + frame[16:18]
        key = frame[22:54] + bytes((nexthdr,)) + label
        if label == b"\0\0\0" and nexthdr in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP) \
                and n >= 54 + 4:
            key += frame[54:58]
        return key
    return frame[0:12]


def flow_hash(frame: bytes) -> int:
    return _fmix32(_fnv1a(flow_key(frame)))


def src_port(frame: bytes, lo: int = DEFAULT_SRC_PORT_RANGE[0],
             hi: int = DEFAULT_SRC_PORT_RANGE[1]) -> int:
    """Outer UDP source port in ``[lo, hi]``: scaled like the kernel's ``udp_flow_src_port``
    (multiply-shift, no modulo bias), so one flow keeps one port and ECMP spreads flows."""
    return lo + ((flow_hash(frame) * (hi - lo + 1)) >> 32)


# --- outer IPv4/UDP (what goes on the underlay) ----------------------------------------------

def inet_checksum(data: bytes) -> int:
    """RFC 1071 ones' complement sum."""
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_header(src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, sport: int,
               dport: int, payload: bytes) -> bytes:
    """UDP header with the checksum filled in over the RFC 768 (IPv4) or RFC 8200 §8.1 (IPv6)
    pseudo-header. IPv4 could send 0, but the kernel's vxlan sends udpcsum by default and
    tshark-visible correctness is part of the job; over IPv6 it is mandatory (a zero one is
    dropped unless the receiver allows it: udp6zerocsumrx)."""
    length = 8 + len(payload)
    if src.version == 6:
        pseudo = src.packed + dst.packed + struct.pack("!I3xB", length, IPPROTO_UDP)
    else:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_UDP, length)
    hdr = struct.pack("!HHHH", sport, dport, length, 0)
    csum = inet_checksum(pseudo + hdr + payload)
    if csum == 0:
        csum = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    return struct.pack("!HHHH", sport, dport, length, csum)


def ipv4_header(src: IPv4Address, dst: IPv4Address, payload_len: int, ident: int = 0,
                ttl: int = 64, proto: int = IPPROTO_UDP, tos: int = 0, df: bool = False) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + payload_len, ident,
                      0x4000 if df else 0, ttl, proto, 0, src.packed, dst.packed)
    return hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:]


def ipv6_header(src: IPv6Address, dst: IPv6Address, payload_len: int, hlim: int = 64,
                nexthdr: int = IPPROTO_UDP, tclass: int = 0, label: int = 0) -> bytes:
    """A fixed IPv6 header (RFC 8200 §3): traffic class and flow label as given."""
    return struct.pack("!IHBB16s16s", (6 << 28) | (tclass << 20) | (label & 0xFFFFF),
                       payload_len, nexthdr, hlim, src.packed, dst.packed)


def outer_datagram(src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, sport: int,
                   payload: bytes, dport: int = VXLAN_PORT, ident: int = 0, ttl: int = 64,
                   tos: int = 0, df: bool = False, label: int = 0) -> bytes:
    """IPv4 or IPv6 (by ``src``'s family) + UDP + ``payload`` (VXLAN header + inner frame),
    checksums complete; ``tos``, ``ttl``, ``df`` and ``label`` as dataplane.tunnel gives
    them — ``tos`` is the IPv6 traffic class and ``ttl`` its hop limit, ``df`` means nothing
    to IPv6 and ``label`` nothing to IPv4 (the kernel's udp_tunnel6_xmit_skb and
    iptunnel_xmit)."""
    udp = udp_header(src, dst, sport, dport, payload)
    if src.version == 6:
        return ipv6_header(src, dst, len(udp) + len(payload), ttl,  # type: ignore[arg-type]
                           tclass=tos, label=label) + udp + payload
    return ipv4_header(src, dst, len(udp) + len(payload), ident, ttl,  # type: ignore[arg-type]
                       tos=tos, df=df) + udp + payload
