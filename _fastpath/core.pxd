# Declarations of _fastpath/core.pyx: the C structures of the forwarding core and the Switch
# class, so that a later Cython module (the VTEP's I/O glue) can `cimport _fastpath.core` and
# call the burst hooks without a Python call per burst.

from libc.stdint cimport int8_t, uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t, int16_t

from _fastpath.includes.libc_net cimport iovec, mmsghdr, sockaddr_in

cdef enum:
    # Buffer geometry. A frame sits HEADROOM bytes into its rx slot so that the outer
    # IPv4 (20) + UDP (8) + VXLAN (8) headers can be written in front of it: a unicast
    # encapsulation sends the rx slot itself and never copies the inner frame.
    HEADROOM = 64
    OUTER_HLEN = 36              # IPv4 + UDP + VXLAN, what encapsulation prepends
    IPUDP_HLEN = 28              # IPv4 + UDP, what the raw socket needs in front of VXLAN
    MAX_FRAME = 65535            # largest frame a TAP read or a UDP datagram can carry
    SLOT_STRIDE = 65664          # HEADROOM + 65536 + 64 spare, a multiple of 64
    SCRATCH_STRIDE = 64          # per-frame scratch (synthesised ARP reply: 42 bytes)
    MAX_PORT = 32767             # port ids are small integers 0..MAX_PORT (int16 in entries)
    MAX_NETS = 65535             # network slots: the FDB key carries slot+1 in 16 bits
    N_DROPS = 13                 # len(wire.DROP_REASONS)
    N_EVC = 7                    # len(wire.EVENT_COUNTERS)
    TRACE_RING_C = 4096          # dataplane.switch.TRACE_RING (checked at import)
    TRACE_SNAP_C = 2048          # dataplane.switch.TRACE_SNAP
    # Offloads (issue #5, dataplane/offload.py is the reference)
    MAX_TSO_SEGS = 1024          # offload.MAX_TSO_SEGS: segments of one TSO super-frame
    SEG_BUF = 524288             # TSO output: 1024 * (HEADROOM + 142 + 63) + 2 * 65600 fits
    COALESCE_MAX = 64            # offload.MAX_SEGS: segments merged into one TAP write
    GSO_MAX_SEGS = 64            # datagrams in one UDP_SEGMENT send (UDP_MAX_SEGMENTS >= 64)
    GSO_SOCK_MAX = 256           # per-source-port UDP sockets open at once
    GSO_IDLE_TICKS = 30          # offload_gc() calls a GSO socket may stay unused

    # FDB entry state (fdb.FDB_STATES order) and flags
    ST_PERMANENT = 0
    ST_STATIC = 1
    ST_LEARNED = 2
    FL_LIST = 1                  # `remote` is an index into the remote-list pool

cdef enum:  # drop reasons, wire.DROP_REASONS order
    DR_NOT_ALLOWED = 0
    DR_SHORT_HEADER = 1
    DR_BAD_FLAGS = 2
    DR_UNKNOWN_VNI = 3
    DR_RESERVED_BITS = 4
    DR_RUNT = 5
    DR_OVERSIZE = 6
    DR_BAD_SRC_MAC = 7
    DR_BAD_ARP = 8
    DR_FDB_CONFLICT = 9
    DR_HAIRPIN = 10
    DR_REMOTE_DEST = 11
    DR_UNKNOWN_PORT = 12

cdef enum:  # event counters, wire.EVENT_COUNTERS order
    EC_PROXY_REPLIES = 0
    EC_L2MISS = 1
    EC_L3MISS = 2
    EC_LEARNED = 3
    EC_MOVED = 4
    EC_AGED = 5
    EC_FDB_FULL = 6

cdef enum:  # offload counters, OFFLOAD_COUNTERS order in core.pyx
    OC_TSO_FRAMES = 0
    OC_TSO_SEGMENTS = 1
    OC_CSUM_COMPLETED = 2
    OC_BAD_VNET = 3
    OC_GSO_SENDS = 4
    OC_GSO_DATAGRAMS = 5
    OC_GSO_FALLBACKS = 6
    OC_GRO_BUFFERS = 7
    OC_GRO_DATAGRAMS = 8
    OC_COALESCED_FRAMES = 9
    OC_COALESCED_SEGMENTS = 10
    OC_CSUM_BAD = 11
    N_OFFC = 12

cdef enum:  # offload.segment() error reasons, VNET_ERRORS order in core.pyx
    VE_SHORT_HEADER = 0
    VE_BAD_CSUM_OFFSETS = 1
    VE_GSO_MISMATCH = 2
    VE_UNSUPPORTED_GSO = 3
    VE_BAD_IP = 4
    VE_BAD_TCP = 5
    VE_ZERO_GSO = 6
    VE_EMPTY_GSO = 7
    VE_TOO_MANY = 8

cdef enum:  # event kinds
    EV_L2MISS = 0
    EV_L3MISS = 1
    EV_LEARNED = 2
    EV_MOVED = 3
    EV_AGED = 4

cdef enum:  # trace flags: decisions that leave no output (Switch._flag names)
    TF_LEARNED = 0
    TF_MOVED = 1
    TF_FDB_FULL = 2
    TF_ARP_CONSUMED = 3
    TF_L3MISS = 4
    TF_ARP_LOCAL = 5
    TF_PROXY_REPLY = 6
    TF_L2MISS = 7

cdef enum:  # event location kinds
    LOC_NONE = 0
    LOC_PORT = 1
    LOC_IP = 2

# One FDB entry: 32 bytes, two per cache line. The key packs the network *slot* (+1, so that
# key 0 marks an empty bucket) in the top 16 bits and the MAC in the low 48: a VNI (24 bits)
# and a MAC (48) do not fit in 64 bits together, a slot index does.
ctypedef struct fdb_ent:
    uint64_t key
    double updated               # ageing clock (`now` of the last refresh)
    uint32_t remote              # first remote IPv4, network order; or list index (FL_LIST)
    int16_t port                 # local port id, -1 = remote entry
    uint8_t state
    uint8_t flags                # 24 bytes in all: 1M entries fit in <= 64 bytes each

ctypedef struct fdb_tab:
    fdb_ent *slots
    uint64_t cap                 # power of two
    uint64_t mask
    uint32_t shift               # 64 - log2(cap): index = mix64(key) >> shift
    uint64_t count

# Remote lists of the all-zeros / multicast MACs that have more than one remote (HER lists).
ctypedef struct rlist:
    uint32_t n
    uint32_t cap                 # 0 = free pool slot
    uint32_t *a                  # network order, append order

# Neighbour entry: 16 bytes. key = (slot+1) << 32 | IPv4 (host order).
ctypedef struct nb_ent:
    uint64_t key
    uint8_t mac[6]
    uint8_t state
    uint8_t _pad

ctypedef struct nb_tab:
    nb_ent *slots
    uint64_t cap
    uint64_t mask
    uint32_t shift
    uint64_t count

ctypedef struct net_t:
    uint32_t vni
    uint8_t used
    uint8_t proxy
    uint8_t learning
    uint8_t limited              # maxaddress set (truthy)
    int64_t maxlen               # mtu + 14, clamped to int64
    int64_t maxaddress           # meaningful when limited
    double ageing
    uint64_t count               # FDB entries of this network
    uint64_t ncount              # neighbour entries of this network
    int32_t *ports               # ascending
    uint32_t nports
    uint32_t ports_cap
    uint8_t hdr[8]               # prebuilt VXLAN header (RFC 7348 §5.1)
    uint64_t hdr_sum             # its ones' complement sum (native order)

ctypedef struct port_t:
    int32_t net                  # network slot, -1 = not attached
    int32_t fd                   # TAP fd for burst I/O, -1 = none
    uint64_t rx_packets
    uint64_t rx_bytes
    uint64_t tx_packets
    uint64_t tx_bytes
    uint64_t tx_errors           # write() failed (burst I/O only)
    uint64_t tx_dropped          # write() said EAGAIN (burst I/O only)
    uint8_t gone                 # fd reported EBADF/EBADFD/EIO/ENODEV; see gone_ports()
    uint8_t vnet                 # virtio_net_hdr length on the fd (0, 10 or 12)

# A TCP run being coalesced for one port during transmit() (offload.coalesce): the member
# records are chained through txrec.next, head first.
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
    uint8_t listed               # port is in sw_t.run_ports

# Fixed-size event record, turned into the reference's tuples only in Switch.events().
ctypedef struct event_t:
    uint8_t kind
    uint8_t okind
    uint8_t nkind
    uint8_t _pad
    uint32_t vni
    uint64_t key                 # MAC (48 bits) or IPv4 (host order)
    uint32_t oval                # old location: port id or IPv4 (network order)
    uint32_t nval                # new location

# One output of the core. Port outputs: `data`/`len` is the frame. Underlay outputs: `data`
# points at the VXLAN header, `len` is the UDP payload length, and the 28-byte IPv4+UDP
# header is either right in front of `data` (contiguous: the first copy, written into the
# rx slot's headroom) or in `hdr` (further head-end-replication copies share the payload).
ctypedef struct txrec:
    uint8_t *data
    uint32_t len
    int32_t port                 # >= 0: local port; -1: underlay
    uint32_t dst                 # underlay destination, network order
    uint16_t sport
    uint8_t inline_hdr           # 1: IPv4+UDP header in `hdr`, 0: at data - 28
    uint8_t csum_todo            # the UDP checksum is not filled in yet (outer_csum)
    int32_t next                 # port records in a coalescing run: the next member
    uint8_t hdr[28]

# Trace record (Switch.trace_drain): fixed part here, the data snapshot in sw_t.tr_data at
# index * TRACE_SNAP_C, the outputs in sw_t.tr_out[out_start : out_start + out_count].
ctypedef struct trace_rec:
    double now
    int64_t src                  # port id as named by the caller, or IPv4 (network order)
    int32_t vni                  # -1 when unknown
    uint32_t length
    uint32_t out_start
    uint32_t out_count
    uint16_t snap
    int8_t reason                # drop reason index, -1 = forwarded
    uint8_t src_kind             # LOC_PORT / LOC_IP
    uint8_t nflags
    uint8_t flags[8]

ctypedef struct trace_out:
    int32_t port                 # >= 0 port, -1 underlay
    uint32_t dst
    uint16_t sport

ctypedef struct sw_t:
    # configuration
    uint32_t local               # network order
    uint32_t sport_lo
    uint64_t sport_span          # hi - lo + 1
    uint16_t dport               # host order
    uint8_t strict
    uint8_t arp_consume          # proxy on: non-request ARP is consumed (see _LEGACY in .pyx)
    uint32_t n_allow
    uint32_t *allow_net          # host order
    uint32_t *allow_mask
    # networks, VNI -> slot map (open addressing, rebuilt by the control plane)
    net_t *nets
    uint32_t nets_cap
    uint64_t *vmap               # (vni << 32) | slot; 0 = empty (VNI 0 is never served)
    uint32_t vmap_mask
    uint32_t vmap_shift
    # ports, indexed by port id
    port_t *ports
    uint32_t ports_cap
    # tables
    fdb_tab fdb
    nb_tab nb
    rlist *rl
    uint32_t rl_cap
    # counters (wire.DROP_REASONS / wire.EVENT_COUNTERS order)
    uint64_t drops[13]
    uint64_t evc[7]
    uint64_t ul_rx_packets
    uint64_t ul_rx_bytes
    uint64_t ul_tx_packets
    uint64_t ul_tx_bytes
    uint64_t ul_tx_errors        # burst I/O only
    uint64_t ul_tx_dropped       # burst I/O only (EAGAIN / ENOBUFS)
    uint64_t ul_rx_errors        # burst I/O only
    # events ring
    event_t *ev
    uint32_t ev_cap              # power of two
    uint32_t ev_head
    uint32_t ev_count
    uint64_t ev_lost
    # trace (off by default: one predictable branch per frame)
    uint8_t trace_on
    uint8_t tf_n                 # flags of the frame being processed
    uint8_t tf[8]
    trace_rec *tr                # TRACE_RING_C records, allocated on first use
    uint8_t *tr_data             # TRACE_RING_C * TRACE_SNAP_C
    uint32_t tr_count
    uint64_t tr_lost
    trace_out *tr_out
    uint32_t tr_out_n
    uint32_t tr_out_cap
    # burst buffers
    uint32_t burst
    uint8_t *rx                  # burst * SLOT_STRIDE
    uint32_t *rx_len
    uint32_t *rx_src             # underlay sources, network order
    uint8_t *scratch             # burst * SCRATCH_STRIDE
    txrec *out
    uint32_t n_out
    uint32_t out_cap
    # burst I/O
    int tx_fd                    # raw IPPROTO_RAW socket (or UDP fallback), -1 = none
    uint8_t tx_raw               # 1: tx_fd takes IPv4 datagrams; 0: UDP payloads
    mmsghdr *rx_msgs             # burst
    iovec *rx_iov                # burst
    sockaddr_in *rx_addr         # burst
    mmsghdr *tx_msgs             # tx_cap
    iovec *tx_iov                # 2 * tx_cap
    sockaddr_in *tx_addr         # tx_cap
    uint32_t tx_cap
    # offloads (issue #5)
    uint8_t udp_gso              # runs to one (dst, sport) go out with UDP_SEGMENT
    uint8_t udp_gro              # the rx socket has UDP_GRO on: split by the cmsg gso_size
    uint8_t tap_coalesce         # TCP runs to vnet ports are written as one GSO frame
    uint64_t offc[12]            # N_OFFC
    int32_t *gso_fd              # 65536: per source port UDP socket, -1 none, -2 bind failed
    uint32_t *gso_used           # 65536: gso_epoch of the last use
    uint32_t gso_epoch
    uint32_t gso_nsock
    uint32_t gso_refused         # smallest datagram a GSO send was refused for (EINVAL)
    uint32_t *tx_rec             # tx_cap: s.out index of each queued sendmmsg message
    uint8_t *seg                 # SEG_BUF bytes: the segments of one TSO super-frame
    uint32_t *seg_off            # MAX_TSO_SEGS
    uint32_t *seg_len
    run_t *runs                  # runs_cap, indexed by port id
    uint32_t runs_cap
    int32_t *run_ports           # ports with an open run (runs_cap)
    uint32_t n_run_ports
    iovec *wv                    # COALESCE_MAX + 2 (TAP writev) / GSO_MAX_SEGS (UDP GSO)
    uint32_t *rx_gso             # burst: UDP GRO segment size of rx slot i, 0 = one datagram
    uint8_t *rx_cmsg             # burst * VX_GRO_CMSG_SPACE


cdef class Switch:
    cdef sw_t *s
    # Python-side mirrors of the reference's attributes (returned as given)
    cdef object _local
    cdef object _src_port_range
    cdef object _strict
    cdef object _allow
    cdef dict _networks          # VNI (as given to add_network) -> slot
    cdef list _pynet             # slot -> (vni, maxaddress) as given, for messages; or None
    cdef list _pending           # events already converted to tuples (ageing, drained ring)
    cdef dict _ipcache           # u32 (network order) -> IPv4Address

    # Burst hooks (the VTEP's I/O glue calls these; rx_tap_burst/rx_udp_burst use them too).
    # Process rx slots 0..n-1 (lengths in s.rx_len; underlay sources in s.rx_src) and append
    # output records to s.out; return the number of records now in s.out.
    cdef uint32_t process_port_burst(self, int32_t port, uint32_t n, double now) noexcept nogil
    cdef uint32_t process_underlay_burst(self, uint32_t n, double now) noexcept nogil
    # Write/send every record in s.out (TAP write() per port record, one sendmmsg() batch for
    # the underlay), count errors, and empty s.out.
    cdef void transmit(self) noexcept nogil
    # rx_tap_burst's per-slot work on a TAP with a virtio_net_hdr: checksum completion and
    # TSO segmentation in front of the core (transmits after each super-frame).
    cdef void process_vnet_burst(self, int32_t port, uint32_t n, double now) noexcept nogil
    # rx_tap_burst / rx_udp_burst without the Python call (busy_poll calls them in a loop)
    cdef uint32_t tap_burst(self, int32_t p, int fd, double now) noexcept nogil
    cdef uint32_t udp_burst(self, int sock_fd, double now) noexcept nogil
    # rx_udp_burst's per-buffer work when UDP GRO is on: cut glued datagrams apart.
    cdef void process_gro_burst(self, uint32_t n, double now) noexcept nogil

    cdef object _ip(self, uint32_t addr)
    cdef int _net(self, object vni) except -1
    cdef void _drain(self)
    cdef object _loc(self, uint8_t kind, uint32_t val)
    cdef list _collect(self, uint32_t n, bint outer)
    cdef int _rebuild_vmap(self) except -1
    cdef uint64_t _nb_purge(self, uint32_t slot) except? 0xFFFFFFFFFFFFFFFF
    cdef int _check_room(self, uint32_t slot) except -1
    cdef int _fdb_add(self, uint32_t slot, object mac, object dst, object port, object state,
                      object now) except -1
    cdef int _nb_set(self, uint32_t slot, object key, bytes lladdr, str state) except -1
