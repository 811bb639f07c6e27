"""TAP offloads in readable pure Python: TSO segmentation and checksum completion for frames read
from a TAP, TCP coalescing for frames written to one.

Why this exists: vxdp opens its TAPs with ``IFF_VNET_HDR`` (``TUNSETVNETHDRSZ`` 12) and turns
on ``TUNSETOFFLOAD``, so the kernel hands it TCP super-frames of up to 64 KiB whose checksum is
only half done, and takes such frames back. The Cython fast path does this work on every TAP
read and write (``_fastpath/core.pyx``); this module is the specification it is held to, byte
for byte and error for error, by ``tests/unit/test_offload_differential.py``, the way
``dataplane/wire.py`` is for the wire formats. The rules below are the contract both follow;
each says which kernel function (or wireguard-go's) it mirrors.

virtio_net_hdr (``include/uapi/linux/virtio_net.h``), little-endian like the host (x86, the TUN
default without ``TUNSETVNETBE``)::

    u8 flags | u8 gso_type | u16 hdr_len | u16 gso_size | u16 csum_start | u16 csum_offset
    [u16 num_buffers]   (the 12-byte VIRTIO_NET_F_MRG_RXBUF form: ignored on read, 0 on write)

Direction by direction:

* read (``segment``): what the kernel's ``virtio_net_hdr_to_skb`` + ``skb_gso_segment`` would do
  with the frame, so the core only ever sees wire-sized frames with complete checksums:
  ``tcp_gso_segment``/``inet_gso_segment`` for GSO_TCPV4/6 and ``skb_checksum_help`` for a
  CHECKSUM_PARTIAL frame (GSO_NONE + NEEDS_CSUM).
* write (``coalesce``): ``tcp_gro_receive`` in miniature, after wireguard-go's TUN offload
  (``tun/tcp_offload_linux.go``: ``tcpPacketsCanCoalesce``, ``applyCoalesceAccounting``):
  consecutive in-order segments of one TCP/IPv4 flow become one GSO_TCPV4 super-frame that the
  kernel segments again only if it has to.

Everything here is I/O-free and works on ``bytes``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

# --- virtio_net_hdr constants (include/uapi/linux/virtio_net.h) ------------------------------

F_NEEDS_CSUM = 1     # VIRTIO_NET_HDR_F_NEEDS_CSUM: sum from csum_start, store at +csum_offset
F_DATA_VALID = 2     # VIRTIO_NET_HDR_F_DATA_VALID: checksum already verified (rx side only)

GSO_NONE = 0         # VIRTIO_NET_HDR_GSO_NONE
GSO_TCPV4 = 1        # VIRTIO_NET_HDR_GSO_TCPV4 (TSO)
GSO_UDP = 3          # VIRTIO_NET_HDR_GSO_UDP (UFO, IP fragmentation): not supported
GSO_TCPV6 = 4        # VIRTIO_NET_HDR_GSO_TCPV6
GSO_UDP_L4 = 5       # VIRTIO_NET_HDR_GSO_UDP_L4 (USO): not supported (never enabled on our TAPs)
GSO_ECN = 0x80       # VIRTIO_NET_HDR_GSO_ECN: the super-frame carries ECN (CWR); a modifier bit

VNET_HDR_LEN = 10        # sizeof(struct virtio_net_hdr)
VNET_HDR_MRG_LEN = 12    # sizeof(struct virtio_net_hdr_mrg_rxbuf): what vxdp's TAPs use

MAX_SEGS = 64            # most segments one coalesced frame carries (the kernel's UDP GRO has
                         # the same cap, UDP_GRO_CNT_MAX): bounds the work one write amortises
MAX_TSO_SEGS = 1024      # most segments one super-frame may expand to: a hostile gso_size of 1
                         # must not turn one read into 65 thousand frames

# segment()'s ValueError reasons, exactly the strings the compiled segmentation raises too (the
# differential tests compare them).
SEGMENT_ERRORS: tuple[str, ...] = (
    "short header",          # fewer than 10 bytes of virtio_net_hdr
    "bad csum offsets",      # NEEDS_CSUM with csum_start/csum_offset outside the frame
    "gso type mismatch",     # GSO_TCPV4 on a non-IPv4 frame, GSO_TCPV6 on a non-IPv6 one
    "unsupported gso type",  # UFO, USO, anything unknown
    "bad ip header",         # short, wrong version, bad IHL, not TCP
    "bad tcp header",        # short, data offset < 5 words or past the end
    "zero gso size",         # virtio_net_hdr_to_skb: gso_size 0 is -EINVAL
    "empty gso frame",       # headers only: nothing to segment
    "too many segments",     # more than MAX_TSO_SEGS
)

ETH_HLEN = 14
VLAN_TPIDS = (0x8100, 0x88A8)   # 802.1Q, 802.1ad: tags segment() looks through (two at most)
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
IPPROTO_TCP = 6

TCP_FIN = 0x01
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_CWR = 0x80

_VNET = struct.Struct("<BBHHHH")
_M32 = 0xFFFFFFFF


class VnetHdr(NamedTuple):
    """``struct virtio_net_hdr``; the 12-byte form's ``num_buffers`` is not kept (it only
    matters to a receiver merging buffers, and vxdp writes it as 0)."""

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @classmethod
    def parse(cls, b: bytes) -> VnetHdr:
        """The first 10 bytes of ``b`` (anything after them, e.g. num_buffers, is ignored)."""
        if len(b) < VNET_HDR_LEN:
            raise ValueError("short header")
        return cls(*_VNET.unpack_from(b))

    def pack(self, len: int = VNET_HDR_LEN) -> bytes:  # noqa: A002 - the spec's name for it
        """10 bytes, or 12 with ``num_buffers`` = 0 (``len`` is the TAP's TUNSETVNETHDRSZ)."""
        if len not in (VNET_HDR_LEN, VNET_HDR_MRG_LEN):
            raise ValueError(f"a virtio_net_hdr is 10 or 12 bytes, not {len}")
        return _VNET.pack(*self) + bytes(len - VNET_HDR_LEN)


NO_OFFLOAD = VnetHdr().pack()   # bytes(10): "a plain, complete frame"


# --- RFC 1071 checksum -----------------------------------------------------------------------

def fold(s: int) -> int:
    """A ones' complement accumulator folded to 16 bits by end-around carries (``csum_fold``
    without its final complement). Ones' complement addition is addition modulo 0xFFFF in
    which a nonzero multiple of 0xFFFF reads as 0xFFFF ("negative zero"): any ``s > 0`` folds
    into 1..0xFFFF, only ``s == 0`` folds to 0. Computing it as a remainder keeps it one
    operation however large ``s`` is."""
    return 0 if s == 0 else 1 + (s - 1) % 0xFFFF


def csum(data: bytes | bytearray, initial: int = 0) -> int:
    """RFC 1071 ones' complement sum of ``data`` as big-endian 16-bit words (an odd trailing
    byte padded with a zero byte), plus ``initial``, folded, *not* complemented.

    ``data`` read as one big-endian integer is ``sum(word_i * 0x10000**k_i)``, and
    0x10000 == 1 (mod 0xFFFF), so it is congruent to the plain sum of its words: one
    ``int.from_bytes`` replaces the word loop. A checksum field is ``~csum(...) & 0xFFFF``;
    data with a correct checksum in it sums to 0xFFFF."""
    if len(data) & 1:
        data = bytes(data) + b"\x00"
    return fold(int.from_bytes(data, "big") + initial)


def _pseudo4(addrs: bytes | bytearray, l4_len: int) -> int:
    """IPv4 pseudo-header sum (RFC 793 §3.1): src, dst (``addrs``, 8 bytes), 0, protocol 6,
    TCP length as 16 bits."""
    return csum(addrs + struct.pack("!BBH", 0, IPPROTO_TCP, l4_len & 0xFFFF))


def _pseudo6(addrs: bytes | bytearray, l4_len: int) -> int:
    """IPv6 pseudo-header sum (RFC 8200 §8.1): src, dst (``addrs``, 32 bytes), upper-layer
    length as 32 bits, three zero bytes, next header 6."""
    return csum(addrs + struct.pack("!I3xB", l4_len, IPPROTO_TCP))


def _be16(b: bytes, at: int) -> int:
    return (b[at] << 8) | b[at + 1]


def _be32(b: bytes, at: int) -> int:
    return int.from_bytes(b[at:at + 4], "big")


# --- read path: segment() --------------------------------------------------------------------

def segment(hdr: bytes, frame: bytes) -> list[bytes]:
    """The wire-sized frames a TAP read of ``hdr`` (virtio_net_hdr) + ``frame`` stands for.

    * GSO_NONE: the frame itself, its checksum completed first when NEEDS_CSUM says the kernel
      left it CHECKSUM_PARTIAL (``complete_csum``).
    * GSO_TCPV4 / GSO_TCPV6 (the ECN bit ignored): TSO, ``tso_segments``.
    * anything else: ``ValueError("unsupported gso type")``.

    Raises ``ValueError`` with one of ``SEGMENT_ERRORS`` for anything the C path counts as a
    ``bad_vnet`` drop, and nothing else, whatever the bytes."""
    h = VnetHdr.parse(hdr)
    gso = h.gso_type & ~GSO_ECN
    if gso == GSO_NONE:
        if h.flags & F_NEEDS_CSUM:
            return [complete_csum(frame, h.csum_start, h.csum_offset)]
        return [frame]
    if gso in (GSO_TCPV4, GSO_TCPV6):
        return tso_segments(frame, gso, h.gso_size)
    raise ValueError("unsupported gso type")


def complete_csum(frame: bytes, csum_start: int, csum_offset: int) -> bytes:
    """``skb_checksum_help``: the field at ``csum_start + csum_offset`` holds the pseudo-header
    partial (as ``tcp_v4_send_check``/``udp4_hwcsum`` leave it); sum everything from
    ``csum_start`` with that field as it is, store the complement. A result of 0 is stored as
    0xFFFF (``CSUM_MANGLED_0``): for UDP a zero checksum means "none" (RFC 768), for TCP the
    two are the same number in ones' complement."""
    n = len(frame)
    if not (csum_start < n and csum_start + csum_offset + 2 <= n):
        raise ValueError("bad csum offsets")
    c = ~csum(frame[csum_start:]) & 0xFFFF
    if c == 0:
        c = 0xFFFF
    at = csum_start + csum_offset
    return frame[:at] + c.to_bytes(2, "big") + frame[at + 2:]


def _tso_headers(frame: bytes, gso: int) -> tuple[int, int, int]:
    """Where a super-frame's IP and TCP headers are: (IP offset, TCP offset, TCP header
    length), checked as inet_gso_segment/ipv6_gso_segment and tcp_gso_segment check them."""
    n = len(frame)
    if n < ETH_HLEN:
        raise ValueError("bad ip header")
    l3, ethertype = ETH_HLEN, _be16(frame, 12)
    for _ in range(2):
        if ethertype not in VLAN_TPIDS:
            break
        if n < l3 + 4:
            raise ValueError("bad ip header")
        ethertype = _be16(frame, l3 + 2)
        l3 += 4
    if ethertype != (ETH_P_IP if gso == GSO_TCPV4 else ETH_P_IPV6):
        raise ValueError("gso type mismatch")
    v4 = gso == GSO_TCPV4
    if v4:
        ihl = (frame[l3] & 0x0F) * 4 if n >= l3 + 20 else 0
        if (n < l3 + 20 or frame[l3] >> 4 != 4 or ihl < 20 or l3 + ihl > n
                or frame[l3 + 9] != IPPROTO_TCP):
            raise ValueError("bad ip header")
        l4 = l3 + ihl
    else:
        # No extension headers: the TCP header must follow the fixed 40-byte header.
        if n < l3 + 40 or frame[l3] >> 4 != 6 or frame[l3 + 6] != IPPROTO_TCP:
            raise ValueError("bad ip header")
        l4 = l3 + 40
    if l4 + 20 > n:
        raise ValueError("bad tcp header")
    doff = (frame[l4 + 12] >> 4) * 4
    hl = l4 + doff
    if doff < 20 or hl > n:
        raise ValueError("bad tcp header")
    return l3, l4, doff


def tso_segments(frame: bytes, gso: int, gso_size: int) -> list[bytes]:
    """``inet_gso_segment``/``ipv6_gso_segment`` + ``tcp_gso_segment`` on an Ethernet frame:
    cut the TCP payload into ``gso_size`` chunks, each under a copy of the headers with its
    own lengths, IPv4 id (+1 per segment), sequence number, flags and checksums.

    Up to two VLAN tags (802.1Q 0x8100, 802.1ad 0x88A8) may precede the IP header: a VLAN
    device on top of the TAP inherits its TSO (tun's ``vlan_features``) and ``tun_put_user``
    writes the tag inline, so the container's tagged TCP arrives as tagged super-frames.

    The super-frame's own length fields and TCP checksum are ignored (the kernel never fills
    them in for a GSO skb); so are virtio_net_hdr's hdr_len and csum fields. Flags follow
    ``tcp_gso_segment``: FIN and PSH only on the last segment, CWR only on the first."""
    l3, l4, doff = _tso_headers(frame, gso)
    v4 = gso == GSO_TCPV4
    ihl = l4 - l3
    hl = l4 + doff
    if gso_size == 0:
        raise ValueError("zero gso size")
    payload = frame[hl:]
    if not payload:
        raise ValueError("empty gso frame")
    nseg = -(-len(payload) // gso_size)
    if nseg > MAX_TSO_SEGS:
        raise ValueError("too many segments")

    ip_id0 = _be16(frame, l3 + 4) if v4 else 0
    seq0 = _be32(frame, l4 + 4)
    flags0 = frame[l4 + 13]
    segments = []
    for i in range(nseg):
        chunk = payload[i * gso_size:(i + 1) * gso_size]
        h = bytearray(frame[:hl])
        tcp_len = doff + len(chunk)
        if v4:
            struct.pack_into("!HH", h, l3 + 2, (ihl + tcp_len) & 0xFFFF, (ip_id0 + i) & 0xFFFF)
            h[l3 + 10:l3 + 12] = b"\x00\x00"
            struct.pack_into("!H", h, l3 + 10, ~csum(h[l3:l4]) & 0xFFFF)
            pseudo = _pseudo4(h[l3 + 12:l3 + 20], tcp_len)
        else:
            struct.pack_into("!H", h, l3 + 4, tcp_len & 0xFFFF)
            pseudo = _pseudo6(h[l3 + 8:l3 + 40], tcp_len)
        struct.pack_into("!I", h, l4 + 4, (seq0 + i * gso_size) & _M32)
        flags = flags0
        if i < nseg - 1:
            flags &= ~(TCP_FIN | TCP_PSH)
        if i > 0:
            flags &= ~TCP_CWR
        h[l4 + 13] = flags
        h[l4 + 16:l4 + 18] = b"\x00\x00"
        # Header and pseudo-header are even-length, so summing the parts equals summing the
        # concatenation; no mangling of 0 for TCP (tcp_gso_segment stores ~csum as it is).
        check = ~csum(chunk, csum(bytes(h[l4:]), pseudo)) & 0xFFFF
        struct.pack_into("!H", h, l4 + 16, check)
        segments.append(bytes(h) + chunk)
    return segments


# --- write path: coalesce() ------------------------------------------------------------------

class _Seg(NamedTuple):
    """A coalescible frame and the fields the run rules look at."""

    frame: bytes
    doff: int      # TCP header length in bytes
    seq: int
    flags: int     # TCP flags byte: ACK or ACK|PSH
    p: int         # TCP payload length, > 0


def _coalescible(f: bytes) -> _Seg | None:
    """``f`` as a run member, or None. Only plain in-order data segments qualify, the way
    ``tcp_gro_receive`` flushes on SYN/FIN/RST/URG/CWR/ECE and wireguard-go's ``tcpGRO`` takes
    only ACK or ACK|PSH: IPv4 without options, not a fragment, no Ethernet padding, both
    checksums valid (a merged frame gets a fresh checksum, which would launder a corrupt
    segment into a good one: ``tcpChecksumValid``)."""
    n = len(f)
    if n < 54 or f[12] != 0x08 or f[13] != 0x00 or f[14] != 0x45 or f[23] != IPPROTO_TCP:
        return None
    if _be16(f, 20) & 0x3FFF:            # MF or a fragment offset; DF is fine
        return None
    if _be16(f, 16) != n - ETH_HLEN:     # padded (or truncated): lengths would not add up
        return None
    if csum(f[14:34]) != 0xFFFF:
        return None
    if f[46] & 0x0F:
        # the AccECN AE bit and the reserved bits: tcp_gro_receive flushes on any flag
        # difference but CWR/FIN/PSH, and a merged frame would keep only the head's
        return None
    doff = (f[46] >> 4) * 4
    if doff < 20 or 34 + doff > n:
        return None
    p = n - 34 - doff
    if p <= 0:
        return None
    flags = f[47]
    if not flags & TCP_ACK or flags & ~(TCP_ACK | TCP_PSH):
        return None
    if csum(f[34:], _pseudo4(f[26:34], n - 34)) != 0xFFFF:
        return None
    return _Seg(f, doff, _be32(f, 38), flags, p)


def _extends(run: list[_Seg], total: int, q: _Seg) -> bool:
    """Whether ``q`` may be appended to ``run`` (``total`` = its payload bytes so far): the
    same flow and header fields (``tcpPacketsCanCoalesce``: TOS, TTL, DF, ack, window, equal
    options), the next sequence number, and a run not ended by PSH or a short segment."""
    head, last = run[0], run[-1]
    h, f = head.frame, q.frame
    end = 34 + head.doff
    return (f[0:14] == h[0:14] and f[15] == h[15] and f[22] == h[22]
            and (f[20] & 0x40) == (h[20] & 0x40) and f[26:34] == h[26:34]
            and f[34:38] == h[34:38] and f[42:46] == h[42:46] and q.doff == head.doff
            and f[48:50] == h[48:50] and f[54:end] == h[54:end]
            and q.seq == (last.seq + last.p) & _M32
            and not last.flags & TCP_PSH and last.p == head.p
            and q.p <= head.p and len(run) < MAX_SEGS
            and 20 + head.doff + total + q.p <= 0xFFFF)


def _emit(run: list[_Seg], total: int) -> tuple[bytes, bytes]:
    """One output pair for a run: a lone frame goes out as it came; a longer run becomes one
    GSO_TCPV4 super-frame under the head's headers, its TCP checksum left as the pseudo-header
    partial that NEEDS_CSUM asks the kernel to finish (``applyCoalesceAccounting``)."""
    head = run[0]
    if len(run) == 1:
        return NO_OFFLOAD, head.frame
    hl = 34 + head.doff
    out = bytearray(head.frame[:hl])
    struct.pack_into("!H", out, 16, 20 + head.doff + total)     # id stays the head's
    out[24:26] = b"\x00\x00"
    struct.pack_into("!H", out, 24, ~csum(out[14:34]) & 0xFFFF)
    out[47] = head.flags | (run[-1].flags & TCP_PSH)
    struct.pack_into("!H", out, 50, _pseudo4(out[26:34], head.doff + total))
    frame = bytes(out) + b"".join(m.frame[34 + m.doff:] for m in run)
    hdr = VnetHdr(F_NEEDS_CSUM, GSO_TCPV4, hl, head.p, 34, 16).pack()
    return hdr, frame


def coalesce(frames: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """``(virtio_net_hdr, frame)`` pairs, in order, for ``frames`` (the ordered frames to one
    TAP): runs of consecutive coalescible segments of one flow merged (``_extends``), every
    other frame passed through unchanged under a zero header. The header is always 10 bytes;
    the caller widens it to its TAP's header size. Never raises on any bytes."""
    out: list[tuple[bytes, bytes]] = []
    run: list[_Seg] = []
    total = 0
    for frame in frames:
        q = _coalescible(frame)
        if run and q is not None and _extends(run, total, q):
            run.append(q)
            total += q.p
            continue
        if run:
            out.append(_emit(run, total))
            run, total = [], 0
        if q is not None:
            run, total = [q], q.p
        else:
            out.append((NO_OFFLOAD, frame))
    if run:
        out.append(_emit(run, total))
    return out


# --- underlay path: receive() ----------------------------------------------------------------

RX_VERDICTS: tuple[str, ...] = ("none", "valid", "partial", "bad")
IPPROTO_UDP = 17


class L4(NamedTuple):
    """Where an inner frame's TCP/UDP header is."""

    l3: int        # IP header offset
    l4: int        # TCP/UDP header offset
    l4_len: int    # from the IP header
    proto: int     # 6 or 17
    v6: bool
    doff: int      # TCP header length (8 for UDP)


def locate_l4(frame: bytes) -> L4 | None:
    """The TCP/UDP header of an untagged IPv4 or IPv6 frame, or None: not IP, a fragment,
    IPv6 with extension headers, or lengths that do not fit the frame (Ethernet padding past
    the IP length is fine)."""
    n = len(frame)
    if n < ETH_HLEN:
        return None
    ethertype = _be16(frame, 12)
    if ethertype == ETH_P_IP:
        if n < 34 or frame[14] >> 4 != 4:
            return None
        ihl, tot = (frame[14] & 0x0F) * 4, _be16(frame, 16)
        if ihl < 20 or tot < ihl or 14 + tot > n or _be16(frame, 20) & 0x3FFF:
            return None
        l3, l4, l4_len, proto, v6 = 14, 14 + ihl, tot - ihl, frame[23], False
    elif ethertype == ETH_P_IPV6:
        if n < 54 or frame[14] >> 4 != 6 or 54 + _be16(frame, 18) > n:
            return None
        l3, l4, l4_len, proto, v6 = 14, 54, _be16(frame, 18), frame[20], True
    else:
        return None
    if proto == IPPROTO_TCP and l4_len >= 20:
        doff = (frame[l4 + 12] >> 4) * 4
        return L4(l3, l4, l4_len, proto, v6, doff) if 20 <= doff <= l4_len else None
    if proto == IPPROTO_UDP and l4_len >= 8:
        return L4(l3, l4, l4_len, proto, v6, 8)
    return None


def _pseudo(frame: bytes, h: L4) -> int:
    """The pseudo-header sum of ``h`` (RFC 793 §3.1 / RFC 8200 §8.1), folded."""
    if h.v6:
        return csum(frame[h.l3 + 8:h.l3 + 40] + struct.pack("!I3xB", h.l4_len, h.proto))
    return csum(frame[h.l3 + 12:h.l3 + 20] + struct.pack("!BBH", 0, h.proto, h.l4_len))


def rx_checksum(frame: bytes) -> tuple[bytes, str]:
    """The frame (its checksum completed if it was partial) and its verdict, one of
    ``RX_VERDICTS``:

    * ``valid``: the TCP/UDP checksum is right;
    * ``partial``: a kernel VTEP sent it CHECKSUM_PARTIAL and a veth or virtio underlay handed
      it over unfinished — the field holds the folded pseudo-header sum, not complemented
      (``tcp_v4_send_check``); completed here as ``skb_checksum_help`` would (0 → 0xFFFF);
    * ``bad``: wrong, and not partial: corrupted on the way; left as it is, so that the
      container's stack drops it and counts it — never laundered;
    * ``none``: nothing to check (not TCP/UDP over untagged IP, a fragment, UDP over IPv4
      without a checksum)."""
    h = locate_l4(frame)
    if h is None:
        return frame, "none"
    at = h.l4 + (16 if h.proto == IPPROTO_TCP else 6)
    field = _be16(frame, at)
    if h.proto == IPPROTO_UDP and field == 0:
        return frame, "none"
    pseudo = _pseudo(frame, h)
    s = csum(frame[h.l4:h.l4 + h.l4_len])
    if fold(pseudo + s) == 0xFFFF:
        return frame, "valid"
    if field != pseudo:
        return frame, "bad"
    c = ~s & 0xFFFF or 0xFFFF            # the field (the pseudo sum) is in s already
    return frame[:at] + c.to_bytes(2, "big") + frame[at + 2:], "partial"


def receive(frame: bytes, mtu: int) -> tuple[list[bytes], str]:
    """The wire frames an inner ``frame`` from the underlay stands for, on a network of
    ``mtu``, and its checksum verdict (``rx_checksum``).

    A kernel VTEP on a veth underlay (default offloads) hands its containers' TSO frames to
    the UDP stack as one VXLAN datagram of up to 64 KB: a tunnel GSO skb, queued whole, with
    no UDP_GRO cmsg and no trace of the sender's MSS. A TCP frame larger than ``mtu`` + 14
    with a valid or partial checksum is therefore cut into segments as large as the MTU
    allows (``tso_segments``, every checksum computed); anything else comes back as it is
    (the core then drops an oversized one)."""
    frame, verdict = rx_checksum(frame)
    h = locate_l4(frame)
    if (verdict not in ("valid", "partial") or len(frame) <= mtu + ETH_HLEN or h is None
            or h.proto != IPPROTO_TCP):
        return [frame], verdict
    hl = h.l4 + h.doff
    end = h.l4 + h.l4_len
    if mtu <= hl - h.l3 or end <= hl:
        return [frame], verdict
    gso = GSO_TCPV6 if h.v6 else GSO_TCPV4
    try:
        return tso_segments(frame[:end], gso, mtu - (hl - h.l3)), verdict
    except ValueError:          # more than MAX_TSO_SEGS: left whole (an oversize drop)
        return [frame], verdict
