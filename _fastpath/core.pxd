# Declarations of the fast path's core module: the parts' C structures and functions (one
# .pxd per part under core/, included here in dependency order, as uvloop's loop.pxd does)
# and the Switch class. _fastpath/testing.pyx cimports them; the product never does.

from libc.stdint cimport int8_t, uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t
from libc.string cimport memcpy, memcmp

from _fastpath.includes.libc_net cimport iovec, mmsghdr, msghdr, sockaddr_in
from _fastpath.includes.vxbits cimport vx_mix64, vx_unlikely, vx_put_be32
from _fastpath.includes.vxsock cimport vx_sockaddr

# The switch state is defined last (it embeds every part's state); the parts' functions
# take a pointer to it.
cdef struct sw_s
ctypedef sw_s sw_t

include "core/defs.pxd"
include "core/table.pxd"
include "core/remote.pxd"
include "core/fdb.pxd"
include "core/neigh.pxd"
include "core/forward.pxd"
include "core/tunnel.pxd"
include "core/wire.pxd"
include "core/trace.pxd"
include "core/offload.pxd"
include "core/tx.pxd"
include "core/rx.pxd"

cdef struct sw_s:
    # configuration
    uint32_t local               # IPv4 underlay address, network order (has4)
    uint8_t local6[16]           # IPv6 underlay address (has6)
    uint8_t local4m[16]          # the IPv4 one IPv4-mapped (per-source-port sockets)
    uint8_t has4
    uint8_t has6
    uint32_t sport_lo
    uint64_t sport_span          # hi - lo + 1
    uint16_t dport               # host order
    uint8_t strict
    uint32_t n_allow             # [vtep] allow as 16-byte prefixes (IPv4: IPv4-mapped /96+n)
    uint64_t *allow_net          # 2 per prefix: the address's two halves, masked
    uint64_t *allow_mask         # 2 per prefix
    # networks and the VNI -> slot map (open addressing, rebuilt by the control plane)
    net_t *nets
    uint32_t nets_cap
    uint64_t *vmap               # (vni << 32) | slot; 0 = empty (VNI 0 is never served)
    uint32_t vmap_mask
    uint32_t vmap_shift
    # ports, indexed by port id
    port_t *ports
    uint32_t ports_cap
    # tables
    remotes_t rem
    fdb_t fdb
    table_t nb
    # counters (wire.DROP_REASONS, wire.EVENT_COUNTERS, OFFLOAD_COUNTERS order)
    uint64_t drops[N_DROPS]
    uint64_t evc[N_EVC]
    uint64_t offc[N_OFFC]
    uint64_t ul_rx_packets
    uint64_t ul_rx_bytes
    uint64_t ul_tx_packets
    uint64_t ul_tx_bytes
    uint64_t ul_tx_errors        # burst I/O only
    uint64_t ul_tx_dropped       # burst I/O only (EAGAIN / ENOBUFS)
    uint64_t ul_rx_errors        # burst I/O only
    # what the rx step in front of the core knows of the frame being processed
    uint8_t cur_csum             # CSUM_ state, copied into its port records
    uint8_t rx_note              # TF_ + 1 of what the rx step did (0: nothing), for trace
    events_t ev
    trace_t tr
    # the outputs of the burst being processed
    txrec *out
    uint32_t n_out
    uint32_t out_cap
    uint8_t *xbuf                # copy arena (encap copies with a VXLAN header of their own)
    uint32_t xoff
    rx_t rx
    tx_t tx


cdef inline txrec *out_push(sw_t *s) noexcept nogil:
    """One more output record (grown on demand); NULL when memory ran out (the output is
    lost, nothing else)."""
    if vx_unlikely(s.n_out == s.out_cap) and out_reserve(s) < 0:
        return NULL
    s.n_out += 1
    return &s.out[s.n_out - 1]


cdef class Switch:
    cdef sw_t *s
    # Python-side mirrors of the reference's attributes (returned as given)
    cdef object _locals
    cdef object _src_port_range
    cdef object _strict
    cdef object _allow
    cdef dict _networks          # VNI (as given to add_network) -> slot
    cdef list _pynet             # slot -> (vni, maxaddress) as given, for messages; or None
    cdef list _pending           # events already converted to tuples (ageing, drained ring)
    cdef dict _ipcache           # 16-byte address -> IPv4Address / IPv6Address
    cdef dict _dumps             # dumps in slices: token -> KeySnap
    cdef uint64_t _dump_token
    cdef object _attention       # set_readiness(): Python's part after a burst, when needed
    cdef uint64_t _age_pos       # age_step(): the next FDB table slot of the ageing sweep

    cdef _set_locals(self, object locals_)
    cdef object _addr(self, const uint8_t *addr)
    cdef int _net(self, object vni) except -1
    cdef void _drain(self)
    cdef int _after_ready(self) except -1
    cdef object _loc(self, uint8_t kind, uint32_t port, const uint8_t *addr)
    cdef object _remote(self, object vni, object dst, object dst_port, object dst_vni)
    cdef list _collect(self, uint32_t n, bint outer)
