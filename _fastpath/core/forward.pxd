# The forwarding core (dataplane/switch.py is the reference): networks, ports, the output
# records a burst produces, the event ring, and the per-frame decisions.

ctypedef struct net_t:
    uint32_t vni
    uint8_t used
    uint8_t proxy
    uint8_t learning
    uint8_t limited              # maxaddress set (truthy)
    int64_t maxlen               # mtu + 14, clamped to int64
    int64_t maxaddress           # remote entries at most, when limited (the kernel's addrmax)
    int64_t max_learned          # local learned entries at most (0: unlimited)
    int64_t max_learned_port     # local learned entries per port at most (0: unlimited)
    double ageing
    uint64_t count               # FDB entries of this network
    uint64_t remotes             # ... of them pointing at remote VTEPs
    uint64_t learned_local       # ... of them learned on local ports
    uint64_t ncount              # neighbour entries of this network
    int32_t *ports               # ascending
    uint32_t nports
    uint32_t ports_cap
    uint8_t hdr[8]               # prebuilt VXLAN header (RFC 7348 §5.1)
    int16_t ttl                  # outer header rules (tunnel.pxd): 0 auto, 1..255, -1 inherit
    int16_t tos                  # 0..255, -1 inherit
    uint8_t df                   # DF_UNSET / DF_SET / DF_INHERIT
    int32_t label                # IPv6 flow label 0..0xFFFFF, -1 inherit

ctypedef struct port_t:
    int32_t net                  # network slot, -1 = not attached
    int32_t fd                   # TAP fd for burst I/O, -1 = none
    uint64_t rx_packets
    uint64_t rx_bytes
    uint64_t tx_packets
    uint64_t tx_bytes
    uint64_t tx_errors           # write() failed (burst I/O only)
    uint64_t tx_dropped          # write() said EAGAIN, or no fd (burst I/O only)
    uint64_t learned             # FDB entries learned on this port
    uint8_t limited              # learning refused since it was last below its bound
    uint8_t gone                 # fd reported EBADF/EBADFD/ENODEV/ENXIO; see gone_ports()
    uint8_t vnet                 # virtio_net_hdr length on the fd (0, 10 or 12)

# One output of the core. Port outputs: `data`/`len` is the frame. Underlay outputs: `data`
# points at the VXLAN header, `len` is the UDP payload length, and the IPv4+UDP (28 bytes)
# or IPv6+UDP (48) header is either right in front of `data` (contiguous: the first copy,
# written into the rx slot's headroom) or in `hdr` (further head-end-replication copies
# share the payload).
ctypedef struct txrec:
    uint8_t *data
    uint32_t len
    int32_t port                 # >= 0: local port; -1: underlay
    uint32_t rid                 # underlay: the remote (remote.pxd) sent to
    uint8_t dst[16]              # ... its address (IPv4-mapped for IPv4), network order
    uint16_t dport               # ... its UDP port
    uint16_t sport
    uint8_t v6                   # IPv6 underlay (hlen 48), else IPv4 (hlen 28)
    uint8_t hlen                 # IPUDP_HLEN or IP6UDP_HLEN
    uint8_t inline_hdr           # 1: IP+UDP header in `hdr`, 0: at data - hlen
    uint8_t csum_todo            # the UDP checksum is not filled in yet (outer_csum)
    uint8_t csum                 # port records: CSUM_ state of the frame's L4 checksum
    uint8_t tos                  # underlay records: the outer TOS, TTL and DF (tunnel.pyx)
    uint8_t ttl
    uint8_t df
    uint32_t label               # ... and the IPv6 flow label
    int32_t next                 # port records in a coalescing run: the next member
    uint8_t hdr[IP6UDP_HLEN]

# Fixed-size event record, turned into the reference's tuples only in Switch.events().
ctypedef struct event_t:
    uint8_t kind                 # EV_
    uint8_t okind                # LOC_ of the old location
    uint8_t nkind                # LOC_ of the new location
    uint8_t _pad
    uint32_t vni
    uint64_t mac                 # the MAC the event is about (48 bits), or:
    uint8_t ip[16]               # the address (l3miss), IPv4-mapped for IPv4
    uint32_t oport               # old location: a port id (LOC_PORT) ...
    uint32_t nport
    uint8_t oaddr[16]            # ... or a VTEP's address (LOC_IP)
    uint8_t naddr[16]

# Bounded event ring: a full ring loses events (counted), the dataplane never waits.
ctypedef struct events_t:
    event_t *ring
    uint32_t cap                 # power of two
    uint32_t head
    uint32_t count
    uint64_t lost

cdef enum:
    EVENTS_MAX_C = 65536

cdef int out_reserve(sw_t *s) noexcept nogil
cdef void ev_push(sw_t *s, uint8_t kind, uint32_t vni, uint64_t mac, const uint8_t *ip,
                  uint8_t okind, uint32_t oport, const uint8_t *oaddr, uint8_t nkind,
                  uint32_t nport, const uint8_t *naddr) noexcept nogil
cdef int core_port(sw_t *s, int32_t port, uint8_t *f, uint32_t n, double now,
                   uint8_t *scratch) noexcept nogil
cdef int32_t underlay_slot(sw_t *s, const uint8_t *src, const uint8_t *d,
                          uint32_t n) noexcept nogil
cdef int core_underlay(sw_t *s, const uint8_t *src, uint8_t *d, uint32_t n,
                       double now, uint8_t tos) noexcept nogil
cdef void core_from_port(sw_t *s, int32_t port, int64_t tsrc, uint8_t *f, uint32_t n,
                         double now, uint8_t *scratch) noexcept nogil
cdef void core_from_underlay(sw_t *s, const uint8_t *src, uint8_t *d, uint32_t n,
                             double now, uint8_t tos) noexcept nogil
