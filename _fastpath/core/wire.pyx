# The outer header the core builds (dataplane/wire.py: outer_datagram, src_port).


cdef void build_ipudp(uint8_t *h, uint32_t src, uint32_t dst, uint16_t sport,
                      uint16_t dport, uint32_t plen, uint64_t psum, uint8_t tos, uint8_t ttl,
                      uint8_t df) noexcept nogil:
    """IPv4 + UDP headers in front of a `plen`-byte UDP payload whose (native-order) ones'
    complement sum is `psum`: byte for byte wire.outer_datagram() (ID 0 — the raw socket
    has the kernel pick one, as ip_select_ident does for the kernel's vxlan — the given TOS,
    TTL and DF, UDP checksum over the RFC 768 pseudo-header, a computed 0 sent as 0xFFFF).

    Both checksums are computed from the field values, not by re-reading the bytes just
    stored: reading back a header assembled from narrow stores stalls store-to-load
    forwarding (that alone was a third of the encapsulation time)."""
    cdef uint32_t hs = ntohl(src), hd = ntohl(dst)
    cdef uint32_t ulen = (plen + 8) & 0xFFFF, tot = (plen + IPUDP_HLEN) & 0xFFFF
    cdef uint64_t addrs = (hs >> 16) + (hs & 0xFFFF) + (hd >> 16) + (hd & 0xFFFF)
    cdef uint32_t frag = 0x4000 if df else 0
    cdef uint16_t ipc = <uint16_t>~vx_csum_fold(0x4500 + tos + tot + frag
                                                + (<uint32_t>ttl << 8) + 17 + addrs)
    cdef uint16_t uc = <uint16_t>~vx_csum_fold(vx_csum_be(psum) + addrs + 17 + ulen + sport
                                               + dport + ulen)
    if uc == 0:
        uc = 0xFFFF
    vx_put_be32(h, 0x45000000 | (<uint32_t>tos << 16) | tot)   # version/IHL, TOS, length
    vx_put_be32(h + 4, frag)                                    # ID 0, DF or not
    vx_put_be32(h + 8, (<uint32_t>ttl << 24) | 0x110000 | ipc)  # TTL, UDP, header checksum
    memcpy(h + 12, &src, 4)
    memcpy(h + 16, &dst, 4)
    vx_put_be32(h + 20, (<uint32_t>sport << 16) | dport)
    vx_put_be32(h + 24, (ulen << 16) | uc)


cdef inline uint32_t addr6_sum(const uint8_t *a) noexcept nogil:
    """The 16-bit big-endian words of an IPv6 address, summed (pseudo-header arithmetic)."""
    cdef uint32_t acc = 0, i
    for i in range(8):
        acc += (<uint32_t>a[2 * i] << 8) | a[2 * i + 1]
    return acc


cdef void build_ip6udp(uint8_t *h, const uint8_t *src, const uint8_t *dst, uint16_t sport,
                       uint16_t dport, uint32_t plen, uint64_t psum, uint8_t tclass,
                       uint8_t hlim, uint32_t label) noexcept nogil:
    """IPv6 + UDP headers in front of a `plen`-byte UDP payload whose (native-order) sum is
    `psum`: byte for byte wire.outer_datagram() over IPv6 (RFC 8200 §3: traffic class, flow
    label, hop limit as given, next header UDP; the UDP checksum over the §8.1
    pseudo-header, mandatory in IPv6 — udp_tunnel6_xmit_skb without udp6zerocsumtx — a
    computed 0 sent as 0xFFFF)."""
    cdef uint32_t ulen = (plen + 8) & 0xFFFF
    cdef uint16_t uc = <uint16_t>~vx_csum_fold(vx_csum_be(psum) + addr6_sum(src)
                                               + addr6_sum(dst) + ulen + 17 + sport + dport
                                               + ulen)
    if uc == 0:
        uc = 0xFFFF
    vx_put_be32(h, 0x60000000 | (<uint32_t>tclass << 20) | (label & 0xFFFFF))
    vx_put_be32(h + 4, (ulen << 16) | (17 << 8) | hlim)          # payload length, UDP, hlim
    memcpy(h + 8, src, 16)
    memcpy(h + 24, dst, 16)
    vx_put_be32(h + 40, (<uint32_t>sport << 16) | dport)
    vx_put_be32(h + 44, (ulen << 16) | uc)


cdef inline uint16_t flow_sport(sw_t *s, const uint8_t *f, uint32_t n) noexcept nogil:
    """wire.src_port: multiply-shift of the flow hash into [lo, hi] (udp_flow_src_port)."""
    return <uint16_t>(s.sport_lo + ((<uint64_t>vx_flow_hash(f, n) * s.sport_span) >> 32))


cdef void outer_csum(sw_t *s, txrec *r) noexcept nogil:
    """Fill in the UDP checksum encap() left out (RFC 768 / RFC 8200 §8.1 over the
    pseudo-header, a computed 0 sent as 0xFFFF): rebuild the record's IP+UDP header with the
    payload's sum, byte for byte wire.outer_datagram."""
    cdef uint8_t *h
    cdef uint32_t dst
    if not r.csum_todo:
        return
    h = &r.hdr[0] if r.inline_hdr else r.data - r.hlen
    if r.v6:
        build_ip6udp(h, s.local6, r.dst, r.sport, r.dport, r.len,
                     vx_csum_add(0, r.data, r.len), r.tos, r.ttl, r.label)
    else:
        memcpy(&dst, r.dst + 12, 4)
        build_ipudp(h, s.local, dst, r.sport, r.dport, r.len, vx_csum_add(0, r.data, r.len),
                    r.tos, r.ttl, r.df)
    r.csum_todo = 0
