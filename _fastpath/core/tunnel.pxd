# The outer header rules of Linux tunnels (dataplane/tunnel.py is the reference): RFC 6040
# ECN on encapsulation and decapsulation, the configurable TTL / TOS / DF / flow label, and
# the ICMP a bridged tunnel answers an inner packet too big for the path with.

cdef enum:
    TTL_INHERIT_C = -1           # net_t.ttl: 0 = auto (64), 1..255 fixed, -1 inherit
    TOS_INHERIT_C = -1           # net_t.tos: 0..255 fixed, -1 inherit
    DF_UNSET = 0                 # net_t.df (tunnel.DF_MODES order)
    DF_SET = 1
    DF_INHERIT = 2
    DEFAULT_TTL_C = 64
    LABEL_INHERIT_C = -1         # net_t.label: 0..0xFFFFF fixed, -1 inherit
    ICMP_MIN_MTU = 576           # tunnel.ICMP_MIN_MTU / ICMP_QUOTE
    ICMP_QUOTE = 548
    IPV6_MIN_MTU = 1280          # tunnel.IPV6_MIN_MTU / ICMP6_QUOTE
    ICMP6_QUOTE = 1232
    PMTU_REPLY_MAX = ETH_HLEN + 40 + 8 + ICMP6_QUOTE    # 1294: the longest reply

cdef void outer_fields(const net_t *net, const uint8_t *f, uint32_t n, uint8_t *tos,
                       uint8_t *ttl, uint8_t *df, uint32_t *label) noexcept nogil
cdef int ecn_decap(uint8_t *f, uint32_t n, uint8_t outer_tos) noexcept nogil
cdef uint32_t pmtud_icmp(const uint8_t *f, uint32_t n, int32_t limit,
                         uint8_t *out) noexcept nogil
