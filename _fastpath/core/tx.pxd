# Transmit: the output records of a burst written to the TAPs (one write per frame, or one
# writev per coalesced TCP run) and sent to the underlay (one sendmmsg per batch, or one
# sendmsg(UDP_SEGMENT) per run of equal datagrams to one VTEP and source port).

# One address family's way out: the raw socket (or the UDP fallback) and the per-source-port
# UDP sockets of UDP GSO, bound to that family's local address.
ctypedef struct ulfam_t:
    int fd                       # raw IPPROTO_RAW socket (or UDP fallback), -1 = none
    uint8_t raw                  # 1: fd takes whole IP datagrams; 0: UDP payloads
    int32_t *gso_fd              # 65536: per source port UDP socket, -1 none, -2 bind failed
    uint32_t *gso_used           # 65536: gso_epoch of the last use
    uint8_t *gso_df              # 65536: the DF setting the socket has now (IPv4)
    uint32_t gso_nsock

ctypedef struct tx_t:
    ulfam_t fam[2]               # [0] IPv4, [1] IPv6
    mmsghdr *msgs                # cap
    iovec *iov                   # 2 * cap
    vx_sockaddr *addr            # cap
    uint32_t *rec                # cap: s.out index of each queued sendmmsg message
    uint8_t *ctl                 # cap * VX_TX_CMSG_SPACE: TOS/TTL of each message (UDP socket)
    uint32_t cap
    iovec *wv                    # COALESCE_MAX + 2 (TAP writev) + GSO_MAX_SEGS (UDP GSO)
    # offloads
    uint8_t udp_gso              # runs to one (dst, sport) go out with UDP_SEGMENT
    uint8_t tap_coalesce         # TCP runs to vnet ports are written as one GSO frame
    uint32_t gso_epoch
    uint32_t gso_refused         # smallest datagram a GSO send was refused for (EINVAL)
    run_t *runs                  # runs_cap, indexed by port id
    uint32_t runs_cap
    int32_t *run_ports           # ports with an open run (runs_cap)
    uint32_t n_run_ports
    uint8_t gone_hint            # a port was marked gone since the readiness path last looked

cdef int tx_init(tx_t *t) noexcept nogil
cdef void tx_free(tx_t *t) noexcept nogil
cdef void transmit(sw_t *s) noexcept nogil
cdef int gso_tables(ulfam_t *f) noexcept nogil
cdef void gso_close_all(tx_t *t) noexcept nogil
cdef void gso_gc(tx_t *t) noexcept nogil
cdef bint port_fd_gone(int err) noexcept nogil
