# Outer header rules (dataplane/tunnel.py: outer_fields, outer_label, ecn_decap).


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
