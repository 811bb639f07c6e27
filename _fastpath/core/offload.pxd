# TSO segmentation and TCP coalescing (dataplane/offload.py is the reference, held to these
# byte for byte by the differential tests). Pure functions over buffers: the forwarding core
# never sees a super-frame — a TSO frame from a TAP is cut into wire-sized segments in front
# of it (tcp_gso_segment), and segments to a TAP are merged again behind it
# (tcp_gro_receive), so every decision, counter and trace record stays per wire frame.

# A TCP run being coalesced for one port during transmit(): the member records are chained
# through txrec.next, head first.
ctypedef struct run_t:
    int32_t head                 # index in sw_t.out, -1 = no open run
    int32_t tail
    uint32_t n
    uint32_t bytes               # payload bytes of all members
    uint32_t g                   # the head's payload length (gso_size)
    uint32_t next_seq            # sequence number the next member must carry
    uint16_t doff
    uint8_t last_psh
    uint8_t last_full            # the last member's payload length == g
    uint8_t listed               # port is in tx_t.run_ports

# Where an inner frame's L4 header is (rx_csum), for checksum checks and segmentation.
ctypedef struct l4info_t:
    uint32_t l3                  # IP header offset (untagged: ETH_HLEN)
    uint32_t l4                  # TCP/UDP header offset
    uint32_t l4len               # L4 length from the IP header
    uint32_t end                 # ETH_HLEN + IP length: the frame without Ethernet padding
    uint32_t doff                # TCP header length
    uint8_t proto                # 6 or 17
    uint8_t v6

cdef enum:  # rx_csum() verdicts (offload.RX_VERDICTS order)
    RX_NONE = 0                  # no L4 checksum to look at (not TCP/UDP, fragment, UDP 0...)
    RX_VALID = 1
    RX_PARTIAL = 2               # left partial by a kernel sender; completed in place
    RX_BAD = 3                   # neither: corrupted on the way (left as it is)

cdef enum:  # txrec.csum: what is known of a frame's L4 checksum on its way to a TAP
    CSUM_UNKNOWN = 0
    CSUM_GOOD = 1                # verified (or computed) by vxdp
    CSUM_BAD = 2                 # verified wrong: never merged into a coalesced frame

cdef enum:  # tcp4_coalescible() verdicts
    CO_NO = 0                    # not a candidate (flags, options, fragment...)
    CO_YES = 1
    CO_BAD_CSUM = 2              # a candidate whose checksum is wrong: never merged

cdef enum:
    TSO_HDR_MAX = 256            # > the longest headers tso_headers() lets through (142)

cdef int vnet_csum(const uint8_t *h, uint8_t *f, uint32_t n) noexcept nogil
cdef int tso_headers(const uint8_t *h, const uint8_t *f, uint32_t n, uint32_t *l3,
                     uint32_t *l4, uint32_t *doff) noexcept nogil
cdef int tso_inplace(const uint8_t *h, uint8_t *f, uint32_t n, uint32_t stride,
                     uint32_t *offs, uint32_t *lens) noexcept nogil
cdef int tso_segment(const uint8_t *h, const uint8_t *f, uint32_t n, uint8_t *out,
                     uint32_t *offs, uint32_t *lens) noexcept nogil
cdef int tcp4_coalescible(const uint8_t *f, uint32_t n, bint verified) noexcept nogil
cdef bint run_extends(const run_t *run, const uint8_t *h, const uint8_t *q,
                      uint32_t qn) noexcept nogil
cdef void run_add(run_t *run, const uint8_t *q, uint32_t qn) noexcept nogil
cdef void run_start(run_t *run, int32_t idx, const uint8_t *h, uint32_t hn) noexcept nogil
cdef uint32_t run_header(const run_t *run, const uint8_t *h, uint8_t *vh,
                         uint8_t *out) noexcept nogil
cdef int l4_locate(const uint8_t *f, uint32_t n, l4info_t *li) noexcept nogil
cdef int rx_csum(uint8_t *f, uint32_t n, l4info_t *li) noexcept nogil
cdef int rx_segment(const uint8_t *f, const l4info_t *li, uint32_t mtu, uint8_t *out,
                    uint32_t *offs, uint32_t *lens) noexcept nogil
