# Receive: burst reads from a TAP (until EAGAIN or the burst limit) and recvmmsg() from the
# underlay socket into preallocated rx slots, TSO segmentation / checksum completion / GRO
# splitting in front of the core, then the core over the burst and transmit().

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
    uint8_t *seg                 # SEG_BUF bytes: the segments of one TSO super-frame
    uint32_t *seg_off            # MAX_TSO_SEGS
    uint32_t *seg_len

cdef inline uint8_t *rx_frame(rx_t *r, uint32_t i) noexcept nogil:
    """Where the frame of rx slot i starts (HEADROOM bytes in, room for the outer headers)."""
    return r.slots + <size_t>i * SLOT_STRIDE + HEADROOM

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
cdef bint ports_gone(sw_t *s) noexcept nogil
