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

cdef enum:  # tcp4_coalescible() verdicts
    CO_NO = 0                    # not a candidate (flags, options, fragment...)
    CO_YES = 1
    CO_BAD_CSUM = 2              # a candidate whose checksum is wrong: never merged

cdef int vnet_csum(const uint8_t *h, uint8_t *f, uint32_t n) noexcept nogil
cdef int tso_segment(const uint8_t *h, const uint8_t *f, uint32_t n, uint8_t *out,
                     uint32_t *offs, uint32_t *lens) noexcept nogil
cdef int tcp4_coalescible(const uint8_t *f, uint32_t n) noexcept nogil
cdef bint run_extends(const run_t *run, const uint8_t *h, const uint8_t *q,
                      uint32_t qn) noexcept nogil
cdef void run_add(run_t *run, const uint8_t *q, uint32_t qn) noexcept nogil
cdef void run_start(run_t *run, int32_t idx, const uint8_t *h, uint32_t hn) noexcept nogil
cdef uint32_t run_header(const run_t *run, const uint8_t *h, uint8_t *vh,
                         uint8_t *out) noexcept nogil
