# Receive: burst reads from a TAP (until EAGAIN or the burst limit) and recvmmsg() from the
# underlay socket into preallocated rx slots, TSO segmentation / checksum completion / GRO
# splitting in front of the core, then the core over the burst and transmit().

cdef enum:
    # A vnet TAP read lands in a slot of its own, big enough to be scattered as a TSO
    # super-frame's segments (vlayout): up to 64 KB of frame in chunks of gso_size, each
    # with HEADROOM + its headers of room in front.
    VSLOT_STRIDE = 131200        # 128 KiB + 128, a multiple of 64
    VIOV_MAX = 64                # iovecs of one scattered read (48 for a 1398-byte MSS)
    VLAYOUT_MIN = 256            # hl + gso_size below this: read whole (headers stay in iov 0)
    TSO_RECENT = 16              # bursts a TSO frame keeps scattered reads on for

ctypedef struct rx_t:
    uint32_t burst
    uint8_t *slots               # burst * SLOT_STRIDE
    uint32_t *len
    uint8_t *src                 # underlay sources: 16 bytes each, IPv4-mapped for IPv4
    uint8_t *scratch             # burst * SCRATCH_STRIDE
    mmsghdr *msgs                # burst
    iovec *iov                   # burst
    vx_sockaddr *addr            # burst: the sources recvmmsg() fills in (either family)
    uint8_t udp_gro              # the rx socket has UDP_GRO on: split by the cmsg gso_size
    uint32_t *gso                # burst: UDP GRO segment size of slot i, 0 = one datagram
    uint8_t *tos                 # burst: outer TOS of slot i (IP_RECVTOS), for ECN
    uint8_t *cmsg                # burst * VX_RX_CMSG_SPACE
    # readiness path (Switch.tap_ready / udp_ready): busy polling after a burst, when asked
    double busy_idle             # seconds without arrivals before going back to epoll; 0 = off
    double busy_limit            # seconds one poll may take at most (the loop's turn)
    int busy_fd[2]               # the underlay receive sockets polled with the TAPs (-1 = none)
    # vnet TAP reads (rx_seg_alloc): scattered as the last TSO super-frame's segments were
    uint8_t *vslots              # burst * VSLOT_STRIDE
    iovec *viov                  # burst * VIOV_MAX: the layout of each slot's read
    uint32_t tso_hl, tso_g       # headers length and gso_size of the last TSO frame read
    uint32_t tso_recent          # > 0: a TSO frame came lately, scatter the reads
    uint32_t lay_hl, lay_g, lay_cnt   # the layout viov holds (lay_cnt 1: a plain read)
    uint32_t lay_vnet                 # ... and the vnet header length it was made for
    uint8_t *seg                 # SEG_BUF bytes: the segments of one TSO super-frame
    uint32_t *seg_off            # MAX_TSO_SEGS
    uint32_t *seg_len

cdef inline uint8_t *rx_frame(rx_t *r, uint32_t i) noexcept nogil:
    """Where the frame of rx slot i starts (HEADROOM bytes in, room for the outer headers)."""
    return r.slots + <size_t>i * SLOT_STRIDE + HEADROOM

cdef inline uint8_t *rx_vframe(rx_t *r, uint32_t i) noexcept nogil:
    """Where the frame of vnet read i starts (its virtio_net_hdr just in front)."""
    return r.vslots + <size_t>i * VSLOT_STRIDE + HEADROOM

cdef inline uint8_t *rx_datagram(rx_t *r, uint32_t i) noexcept nogil:
    """Where a UDP payload (VXLAN header + frame) of rx slot i starts: its inner frame then
    sits exactly where rx_frame() puts one, so decapsulation never moves it."""
    return r.slots + <size_t>i * SLOT_STRIDE + HEADROOM - VXLAN_HLEN

cdef int rx_init(rx_t *r, uint32_t burst) noexcept nogil
cdef void rx_free(rx_t *r) noexcept nogil
cdef int rx_seg_alloc(rx_t *r) noexcept nogil
cdef uint32_t process_port_burst(sw_t *s, int32_t port, uint32_t n, double now) noexcept nogil
cdef uint32_t process_underlay_burst(sw_t *s, uint32_t n, double now,
                                     bint rx_step) noexcept nogil
cdef uint32_t tap_burst(sw_t *s, int32_t p, int fd, double now) noexcept nogil
cdef uint32_t udp_burst(sw_t *s, int sock_fd, double now) noexcept nogil
cdef uint64_t poll_all(sw_t *s, int sock_fd, int sock_fd2, double idle,
                       double limit) noexcept nogil
cdef double mono_now() noexcept nogil
cdef uint32_t vlayout(uint8_t *f, uint32_t vnet, uint32_t hl, uint32_t g,
                      iovec *iov) noexcept nogil
cdef void vlinearize(const iovec *iov, uint32_t cnt, uint32_t got) noexcept nogil
cdef int vnet_segments(uint8_t *f, uint32_t ln, const uint8_t *hb, uint32_t lay_hl,
                       uint32_t lay_g, uint32_t lay_cnt, const iovec *iov, uint32_t vnet,
                       uint8_t *seg, uint32_t *offs, uint32_t *lens,
                       uint8_t **base, uint32_t *hl) noexcept nogil
cdef bint ports_gone(sw_t *s) noexcept nogil
