# Wire formats the core writes and checks (dataplane/wire.py is the reference): the outer
# IPv4/IPv6 + UDP header, its checksums, the flow-hashed source port (RFC 7348 §5), ARP sanity.

cdef void build_ipudp(uint8_t *h, uint32_t src, uint32_t dst, uint16_t sport,
                      uint16_t dport, uint32_t plen, uint64_t psum, uint8_t tos, uint8_t ttl,
                      uint8_t df) noexcept nogil
cdef void build_ip6udp(uint8_t *h, const uint8_t *src, const uint8_t *dst, uint16_t sport,
                       uint16_t dport, uint32_t plen, uint64_t psum, uint8_t tclass,
                       uint8_t hlim, uint32_t label) noexcept nogil

cdef inline bint arp_ok(const uint8_t *f, uint32_t n) noexcept nogil:
    """wire.parse_arp: long enough, Ethernet(1)/IPv4(0x0800), hlen 6, plen 4."""
    return (n >= ARP_FRAME and f[ARP_HTYPE] == 0 and f[ARP_HTYPE + 1] == 1
            and f[ARP_PTYPE] == 0x08 and f[ARP_PTYPE + 1] == 0
            and f[ARP_HLEN_F] == ETH_ALEN and f[ARP_PLEN_F] == 4)

cdef inline bint is_arp(const uint8_t *f) noexcept nogil:
    return f[ETH_TYPE] == 0x08 and f[ETH_TYPE + 1] == 0x06

cdef inline void vxlan_put(uint8_t *d, uint32_t vni) noexcept nogil:
    """A VXLAN header for `vni` (RFC 7348 §5.1: I flag, reserved fields zero)."""
    vx_put_be32(d, 0x08000000)
    vx_put_be32(d + 4, vni << 8)

cdef inline uint32_t vxlan_vni(const uint8_t *d) noexcept nogil:
    """The 24-bit VNI of a VXLAN header (RFC 7348 §5, bytes 4-6)."""
    return (<uint32_t>d[4] << 16) | (<uint32_t>d[5] << 8) | d[6]
cdef void outer_csum(sw_t *s, txrec *r) noexcept nogil
