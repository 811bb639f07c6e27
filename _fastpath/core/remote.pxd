# Remote VTEPs (fdb.Remote in the reference): every distinct (address, port, VNI) an FDB entry
# points at is kept once, with a reference count, and entries hold its id. An FDB entry stays
# 24 bytes whatever the address family, and encapsulation reads the destination from a pool
# that a VTEP's few dozen peers keep in cache.
#
# The pool also keeps the route MTU the control plane measured to each address (Switch
# .set_path_mtu; the reference's Switch._pmtu), in a small table of its own so that a remote
# made later (an FDB entry added, a VTEP learned) finds it, and as each remote's largest
# frame that fits (max_frame) where encapsulation reads it anyway: PMTU signalling costs the
# forwarding path one compare per remote.

ctypedef struct remote_t:
    uint8_t addr[16]             # IPv6, or IPv4-mapped (::ffff:a.b.c.d), network order
    uint32_t vni                 # VNI on the wire; 0 = the network's
    uint16_t port                # UDP destination; 0 = the VTEP's
    uint8_t v4                   # addr is IPv4-mapped
    uint8_t used
    uint32_t refs                # FDB references: entries and remote-list slots
    uint32_t next_free
    uint32_t max_frame           # longest inner frame the path carries (pmtu_max_frame);
                                 # 0: no route MTU known, no check

ctypedef struct remidx_t:        # the pool's index: table.pxd entries keyed on a hash
    uint64_t key
    uint32_t id
    uint32_t _pad

ctypedef struct pmtu_ent:        # route MTU to one underlay address: table.pxd entries
    uint64_t key                 # pmtu_key(addr)
    uint8_t addr[16]
    uint32_t mtu
    uint32_t _pad

ctypedef struct remotes_t:
    remote_t *r
    uint32_t cap
    uint32_t used
    uint32_t free_head           # first free id, NO_REMOTE when none
    uint64_t made                # descriptors made so far (remotes_made(): new VTEPs to measure)
    table_t index
    table_t pmtu                 # address -> route MTU (pmtu_ent)

cdef enum:
    NO_REMOTE = 0xFFFFFFFF
    REMOTES_MIN = 16

cdef inline uint32_t rem_v4(const remote_t *r) noexcept nogil:
    """The IPv4 address of an IPv4-mapped remote, network order (as in a sockaddr_in)."""
    cdef uint32_t a
    memcpy(&a, r.addr + 12, 4)
    return a

cdef int rem_init(remotes_t *p) noexcept nogil
cdef void rem_free(remotes_t *p) noexcept nogil
cdef uint32_t rem_find(remotes_t *p, const uint8_t *addr, uint16_t port,
                       uint32_t vni) noexcept nogil
cdef uint32_t rem_intern(remotes_t *p, const uint8_t *addr, uint16_t port,
                         uint32_t vni) noexcept nogil
cdef void rem_hold(remotes_t *p, uint32_t id) noexcept nogil
cdef void rem_drop(remotes_t *p, uint32_t id) noexcept nogil
cdef void addr_v4mapped(uint8_t *out, uint32_t v4) noexcept nogil
cdef uint32_t rem_path_mtu(remotes_t *p, const uint8_t *addr) noexcept nogil
cdef int rem_set_path_mtu(remotes_t *p, const uint8_t *addr, uint32_t mtu) noexcept nogil
