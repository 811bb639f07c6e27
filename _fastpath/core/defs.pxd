# Constants shared by every part of the core: buffer geometry, frame offsets, and the C enums
# that index the counter tables (their Python names are checked against dataplane/ at import,
# in core.pyx, so a renamed counter fails loudly instead of miscounting).

cdef enum:
    # Buffer geometry. A frame sits HEADROOM bytes into its rx slot so that the outer
    # IPv4 (20) or IPv6 (40) + UDP (8) + VXLAN (8) headers can be written in front of it: a
    # unicast encapsulation sends the rx slot itself and never copies the inner frame.
    HEADROOM = 64
    VXLAN_HLEN = 8               # RFC 7348 §5: flags, reserved, VNI, reserved
    OUTER_HLEN = 56              # IPv6 + UDP + VXLAN, the most encapsulation prepends
    IPUDP_HLEN = 28              # IPv4 + UDP, what the raw socket needs in front of VXLAN
    IP6UDP_HLEN = 48             # IPv6 + UDP (RFC 8200 §3: a 40-byte fixed header)
    MAX_FRAME = 65535            # largest frame a TAP read or a UDP datagram can carry
    SLOT_STRIDE = 65664          # HEADROOM + 65536 + 64 spare, a multiple of 64
    SCRATCH_STRIDE = 128         # per-frame scratch (synthesised ARP reply 42 bytes, NA 86)
    MAX_PORT = 32767             # port ids are small integers 0..MAX_PORT (int16 in entries)
    MAX_NETS = 65535             # network slots: the FDB key carries slot+1 in 16 bits
    TRACE_RING_C = 4096          # dataplane.switch.TRACE_RING (checked at import)
    TRACE_SNAP_C = 2048          # dataplane.switch.TRACE_SNAP
    TRACE_FLAGS = 8              # decisions without output recorded per frame
    # Offloads (dataplane/offload.py is the reference)
    MAX_TSO_SEGS = 1024          # offload.MAX_TSO_SEGS: segments of one TSO super-frame
    SEG_BUF = 524288             # TSO output: 1024 * (HEADROOM + 142 + 63) + 2 * 65600 fits
    COALESCE_MAX = 64            # offload.MAX_SEGS: segments merged into one TAP write
    GSO_MAX_SEGS = 64            # datagrams in one UDP_SEGMENT send (UDP_MAX_SEGMENTS >= 64)
    GSO_SOCK_MAX = 256           # per-source-port UDP sockets open at once
    GSO_IDLE_TICKS = 30          # offload_gc() calls a GSO socket may stay unused
    VNET_HDR_MIN = 10            # struct virtio_net_hdr (12 with num_buffers)
    XBUF_SIZE = 262144           # copy arena of a burst (encap copies with their own VXLAN VNI)

cdef enum:
    # Frame offsets (untagged Ethernet, RFC 894; IPv4 RFC 791; TCP RFC 9293). The TCP
    # offsets are relative to the TCP header; L4 is where it starts in a frame whose IPv4
    # header has no options (the only frames the coalescing path merges).
    ETH_ALEN = 6
    ETH_SRC = 6
    ETH_TYPE = 12
    ETH_HLEN = 14
    L3 = 14                      # the IP header, untagged
    IP4_TOS = L3 + 1
    IP4_TOTLEN = L3 + 2
    IP4_ID = L3 + 4
    IP4_FRAG = L3 + 6            # flags + fragment offset
    IP4_TTL = L3 + 8
    IP4_PROTO = L3 + 9
    IP4_CSUM = L3 + 10
    IP4_SADDR = L3 + 12          # source then destination: the pseudo-header's 8 bytes
    IP4_DADDR = L3 + 16
    IP4_HLEN = 20
    L4 = L3 + IP4_HLEN           # 34: TCP/UDP behind an option-less IPv4 header
    TCP_SEQ = 4
    TCP_ACK = 8
    TCP_DOFF = 12                # data offset (high nibble) + AE/reserved bits (low nibble)
    TCP_FLAGS = 13
    TCP_WIN = 14
    TCP_CSUM = 16
    TCP_URG = 18
    TCP_HLEN = 20
    # ARP for IPv4 over Ethernet (RFC 826), behind the Ethernet header
    ARP_HTYPE = L3
    ARP_PTYPE = L3 + 2
    ARP_HLEN_F = L3 + 4
    ARP_PLEN_F = L3 + 5
    ARP_OP = L3 + 6
    ARP_SHA = L3 + 8
    ARP_SPA = L3 + 14
    ARP_THA = L3 + 18
    ARP_TPA = L3 + 24
    ARP_FRAME = L3 + 28          # 42: a whole ARP frame without padding
    # IPv6 Neighbor Discovery (RFC 4861) behind an untagged Ethernet header
    IP6_PLEN = L3 + 4
    IP6_NEXT = L3 + 6
    IP6_HLIM = L3 + 7
    IP6_SRC = L3 + 8
    IP6_DST = L3 + 24
    ND_ICMP = L3 + 40            # 54: the ICMPv6 header right behind the fixed IPv6 one
    NS_MIN_FRAME = ND_ICMP + 24  # 78: what the kernel pulls before neigh_reduce
    NA_FRAME = ND_ICMP + 32      # 86: vxlan_na_create's advertisement

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
    DR_ECN_NOT_ECT_CE = 13
    DR_BAD_ND = 14
    N_DROPS = 15

cdef enum:  # event counters, wire.EVENT_COUNTERS order
    EC_PROXY_REPLIES = 0
    EC_L2MISS = 1
    EC_L3MISS = 2
    EC_LEARNED = 3
    EC_MOVED = 4
    EC_AGED = 5
    EC_FDB_FULL = 6
    EC_LEARN_LIMIT = 7
    EC_FRAG_NEEDED = 8
    EC_PKT_TOO_BIG = 9
    N_EVC = 10

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
    OC_CSUM_PARTIAL_RX = 12
    OC_RX_SUPERFRAMES = 13
    OC_RX_SUPERFRAME_SEGMENTS = 14
    N_OFFC = 15

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
    N_VE = 9

cdef enum:  # event kinds (Switch.events(): "l2miss", "l3miss", "learned", "moved", "aged")
    EV_L2MISS = 0
    EV_L3MISS = 1
    EV_LEARNED = 2
    EV_MOVED = 3
    EV_AGED = 4
    EV_LEARN_LIMIT = 5

cdef enum:  # trace flags: decisions that leave no output (Switch._flag names)
    TF_LEARNED = 0
    TF_MOVED = 1
    TF_FDB_FULL = 2
    TF_ARP_CONSUMED = 3
    TF_L3MISS = 4
    TF_ARP_LOCAL = 5
    TF_PROXY_REPLY = 6
    TF_L2MISS = 7
    TF_CSUM_PARTIAL = 8          # from the rx step in front of the core (rx notes)
    TF_SEGMENTED = 9
    TF_LEARN_LIMIT = 10
    TF_ND_CONSUMED = 11
    TF_ND_DAD = 12
    TF_ND_LOCAL = 13
    TF_FRAG_NEEDED = 14          # a PMTU reply written back (once per frame and kind)
    TF_PKT_TOO_BIG = 15

cdef enum:  # where an event or trace record points
    LOC_NONE = 0
    LOC_PORT = 1
    LOC_IP = 2

cdef enum:  # fdb.FDB_STATES order, and entry flags
    ST_PERMANENT = 0
    ST_STATIC = 1
    ST_LEARNED = 2
    FL_LIST = 1                  # fdb_ent.remote is an index into the remote-list pool

cdef enum:  # learn() results (fdb.LearnResult)
    LR_NEW = 0
    LR_REFRESH = 1
    LR_MOVED = 2
    LR_CONFLICT = 3
    LR_FULL = 4
    LR_KEPT = 5
    LR_LIMITED = 6
