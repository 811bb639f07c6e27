# Outer header rules (dataplane/tunnel.py: outer_fields, outer_label, ecn_decap, pmtud_icmp).


cdef inline int inner_l3(const uint8_t *f, uint32_t n, bint through_tags) noexcept nogil:
    """Offset of the inner IP header (IPv4 of 20+ bytes or IPv6 of 40+), looking through up
    to two VLAN tags when `through_tags`; the IP version is at f[l3] >> 4. -1 if not IP."""
    cdef uint32_t l3 = ETH_HLEN, et, i
    if n < ETH_HLEN:
        return -1
    et = vx_be16(f + ETH_TYPE)
    if through_tags:
        for i in range(2):
            if (et != 0x8100 and et != 0x88A8) or n < l3 + 4:
                break
            et = vx_be16(f + l3 + 2)
            l3 += 4
    if et == 0x0800 and n >= l3 + IP4_HLEN and (f[l3] >> 4) == 4:
        return <int>l3
    if et == 0x86DD and n >= l3 + 40 and (f[l3] >> 4) == 6:
        return <int>l3
    return -1


cdef void outer_fields(const net_t *net, const uint8_t *f, uint32_t n, uint8_t *tos,
                       uint8_t *ttl, uint8_t *df, uint32_t *label) noexcept nogil:
    """tunnel.outer_fields and outer_label: the outer TOS (RFC 6040 §4.1 ECN), TTL, DF
    and IPv6 flow label for frame f."""
    cdef int l3 = inner_l3(f, n, True)
    cdef uint8_t ds = 0, ecn, it = 0
    cdef uint32_t fl = 0
    if l3 >= 0:
        if (f[l3] >> 4) == 4:
            ds = f[l3 + 1]
            it = f[l3 + 8]
        else:
            ds = ((f[l3] & 0x0F) << 4) | (f[l3 + 1] >> 4)
            it = f[l3 + 7]
            fl = ((<uint32_t>f[l3 + 1] & 0x0F) << 16) | (<uint32_t>f[l3 + 2] << 8) | f[l3 + 3]
    label[0] = fl if net.label == LABEL_INHERIT_C else <uint32_t>net.label
    ecn = ds & 3
    tos[0] = ((ds if net.tos == TOS_INHERIT_C else <uint8_t>net.tos) & 0xFC) \
        | (2 if ecn == 3 else ecn)
    if net.ttl == TTL_INHERIT_C:
        ttl[0] = it if it else DEFAULT_TTL_C
    else:
        ttl[0] = <uint8_t>net.ttl if net.ttl else DEFAULT_TTL_C
    if net.df == DF_SET:
        df[0] = 1
    elif net.df == DF_INHERIT:
        l3 = inner_l3(f, n, False)
        df[0] = l3 >= 0 and ((f[l3] >> 4) == 6 or (f[l3 + 6] & 0x40) != 0)
    else:
        df[0] = 0


cdef inline uint16_t ones_add(uint32_t a, uint32_t b) noexcept nogil:
    cdef uint32_t s = a + b
    return <uint16_t>((s + (s >= 0xFFFF)) & 0xFFFF)


cdef int ecn_decap(uint8_t *f, uint32_t n, uint8_t outer_tos) noexcept nogil:
    """tunnel.ecn_decap in place: 0 to deliver (the inner ECN updated as RFC 6040 §4.2
    says), -1 to drop (a Not-ECT inner under an outer CE). Untagged IPv4/IPv6 only."""
    cdef uint8_t outer = outer_tos & 3, inner, new
    cdef int l3
    if outer == 0:
        return 0
    l3 = inner_l3(f, n, False)
    if l3 < 0:
        return 0
    if (f[l3] >> 4) == 4:
        inner = f[l3 + 1] & 3
    else:
        inner = (f[l3 + 1] >> 4) & 3
    if inner == 0:
        return -1 if outer == 3 else 0
    if outer == 3:
        new = 3
    elif outer == 1 and inner == 2:
        new = 1
    else:
        return 0
    if new == inner:
        return 0
    if (f[l3] >> 4) == 4:
        # IP_ECN_set_ce / IP_ECN_set_ect1: the header checksum follows incrementally (RFC
        # 1624), so one that was wrong stays exactly as wrong
        vx_put_be16(f + l3 + 10, ones_add(vx_be16(f + l3 + 10),
                                          (0xFFFE if inner == 2 else 0xFFFD) if new == 3
                                          else 1))
        f[l3 + 1] = (f[l3 + 1] & 0xFC) | new
    else:
        f[l3 + 1] = (f[l3 + 1] & 0xCF) | (new << 4)
    return 0


# -- PMTU signalling for a bridged tunnel (tunnel.pmtud_icmp) ----------------------------------

cdef inline bint icmp_is_err(uint8_t t) noexcept nogil:
    """include/linux/icmp.h: dest unreachable, source quench, redirect, time exceeded,
    parameter problem."""
    return t == 3 or t == 4 or t == 5 or t == 11 or t == 12


cdef uint32_t icmp_frag_needed(const uint8_t *f, uint32_t n, int32_t mtu,
                               uint8_t *out) noexcept nogil:
    """iptunnel_pmtud_check_icmp + iptunnel_pmtud_build_icmp (tunnel._icmp_frag_needed)."""
    cdef const uint8_t *ip = f + L3
    cdef const uint8_t *sa = ip + 12
    cdef const uint8_t *da = ip + 16
    cdef uint8_t *oip = out + ETH_HLEN
    cdef uint8_t *icmp = oip + IP4_HLEN
    cdef uint32_t q = n - L3
    if mtu < ICMP_MIN_MTU or vx_be16(ip + 6) != 0x4000:     # DF exactly: no MF, offset 0
        return 0
    if vx_be32(da) == 0xFFFFFFFFu or (da[0] >> 4) == 0xE:   # lbcast, multicast
        return 0
    if sa[0] == 0 or sa[0] == 127 or vx_be32(sa) == 0xFFFFFFFFu or (sa[0] >> 4) == 0xE:
        return 0                                            # zeronet, loopback, ...
    if ip[9] == 1 and icmp_is_err(ip[(ip[0] & 0x0F) * 4]):
        return 0                                            # never an error for an error
    if q > ICMP_QUOTE:
        q = ICMP_QUOTE
    memcpy(icmp + 8, ip, q)
    vx_put_be32(icmp, 0x03040000)                           # type 3 code 4, checksum 0
    vx_put_be32(icmp + 4, <uint32_t>mtu & 0xFFFF)           # unused 0, next-hop MTU
    vx_put_be16(icmp + 2, <uint16_t>~vx_csum_be(vx_csum_add(0, icmp, 8 + q)))
    # tos 0, id 0, DF, TTL = the original's, ICMP, addresses swapped
    vx_put_be32(oip, 0x45000000 | (IP4_HLEN + 8 + q))
    vx_put_be32(oip + 4, 0x00004000)
    vx_put_be32(oip + 8, (<uint32_t>ip[8] << 24) | (1 << 16))
    memcpy(oip + 12, da, 4)
    memcpy(oip + 16, sa, 4)
    vx_put_be16(oip + 10, <uint16_t>~vx_csum_be(vx_csum_add(0, oip, IP4_HLEN)))
    memcpy(out, f + ETH_SRC, ETH_ALEN)                      # back to the sender
    memcpy(out + ETH_SRC, f, ETH_ALEN)                      # from whom it was for
    memcpy(out + ETH_TYPE, f + ETH_TYPE, 2)
    return ETH_HLEN + IP4_HLEN + 8 + q


cdef inline bint ipv6_src_refused(const uint8_t *a) noexcept nogil:
    """tunnel._ipv6_addr_type_refused: ipv6_addr_type() exactly ANY or MULTICAST (a
    multicast address not of scope 1, 2 or 5), never LOOPBACK (::1 is LOOPBACK|UNICAST)."""
    cdef uint32_t i
    if a[0] == 0xFF:
        return (a[1] & 0x0F) != 1 and (a[1] & 0x0F) != 2 and (a[1] & 0x0F) != 5
    for i in range(16):
        if a[i]:
            return False
    return True


cdef inline bint ipv6_ext_hdr(uint8_t nh) noexcept nogil:
    return nh == 0 or nh == 43 or nh == 44 or nh == 51 or nh == 59 or nh == 60


cdef uint32_t icmp6_packet_too_big(const uint8_t *f, uint32_t n, int32_t mtu,
                                   uint8_t *out) noexcept nogil:
    """iptunnel_pmtud_check_icmpv6 + iptunnel_pmtud_build_icmpv6
    (tunnel._icmp6_packet_too_big), ipv6_skip_exthdr's walk included: it starts at frame
    offset 40, relative to the Ethernet header (tunnel._ipv6_skip_exthdr says why)."""
    cdef const uint8_t *ip = f + L3
    cdef uint8_t *oip = out + ETH_HLEN
    cdef uint8_t *icmp = oip + 40
    cdef uint8_t nh = ip[6], t
    cdef uint64_t start = 40, hdrlen
    cdef uint32_t frag = 0, q = n - L3
    if mtu < IPV6_MIN_MTU or ipv6_src_refused(ip + 8):
        return 0
    while ipv6_ext_hdr(nh):
        if nh == 59 or start + 2 > n:
            return 0
        if nh == 44:
            if start + 4 > n:
                return 0
            frag = vx_be16(f + start + 2)
            if frag & ~(<uint32_t>7):
                break
            hdrlen = 8
        elif nh == 51:
            hdrlen = (<uint64_t>f[start + 1] + 2) << 2
        else:
            hdrlen = (<uint64_t>f[start + 1] + 1) << 3
        nh = f[start]
        start += hdrlen
    if frag & 0xFFF8:                           # a non-first fragment is never answered
        return 0
    if nh == 58:
        if L3 + start + 1 > n:
            return 0
        t = f[L3 + start]
        if t == 1 or t == 2 or t == 3 or t == 4 or t == 137:   # icmpv6_is_err, redirect
            return 0
    if q > ICMP6_QUOTE:
        q = ICMP6_QUOTE
    memcpy(icmp + 8, ip, q)
    vx_put_be32(icmp, 0x02000000)                           # Packet Too Big, code 0
    vx_put_be32(icmp + 4, <uint32_t>mtu)
    # traffic class and flow label 0, hop limit = the original's, addresses swapped
    vx_put_be32(oip, 0x60000000)
    vx_put_be32(oip + 4, ((8 + q) << 16) | (58 << 8) | ip[7])
    memcpy(oip + 8, ip + 24, 16)
    memcpy(oip + 24, ip + 8, 16)
    vx_put_be16(icmp + 2, <uint16_t>~icmp6_sum(oip + 8, oip + 24, icmp, 8 + q))
    memcpy(out, f + ETH_SRC, ETH_ALEN)
    memcpy(out + ETH_SRC, f, ETH_ALEN)
    memcpy(out + ETH_TYPE, f + ETH_TYPE, 2)
    return ETH_HLEN + 40 + 8 + q


cdef uint32_t pmtud_icmp(const uint8_t *f, uint32_t n, int32_t limit,
                         uint8_t *out) noexcept nogil:
    """tunnel.pmtud_icmp into `out` (PMTU_REPLY_MAX bytes): the reply's length, 0 when the
    kernel would send the frame as it is. Untagged IPv4 / IPv6 by the Ethernet type."""
    cdef uint32_t et = vx_be16(f + ETH_TYPE)
    if et == 0x0800 and n >= L3 + IP4_HLEN:
        return icmp_frag_needed(f, n, limit, out)
    if et == 0x86DD and n >= L3 + 40:
        return icmp6_packet_too_big(f, n, limit, out)
    return 0
