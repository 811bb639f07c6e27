# The FDB of all networks in one table (dataplane/fdb.py is the reference): entries keyed on
# (network slot + 1) << 48 | MAC, remote lists for the all-zeros and multicast MACs, the
# kernel's learning rules.

# One FDB entry: 24 bytes. The key packs the network *slot* (+1, so that key 0 marks an empty
# bucket) in the top 16 bits and the MAC in the low 48: a VNI (24 bits) and a MAC (48) do not
# fit in 64 bits together, a slot index does.
ctypedef struct fdb_ent:
    uint64_t key
    double updated               # ageing clock (`now` of the last refresh)
    uint32_t remote              # remote id (remote.pxd), or a remote list's index (FL_LIST)
    int16_t port                 # local port id, -1 = remote entry
    uint8_t state
    uint8_t flags

# Remote lists of the all-zeros / multicast MACs that have more than one remote (head-end
# replication lists).
ctypedef struct rlist:
    uint32_t n
    uint32_t cap                 # 0 = free pool slot
    uint32_t *a                  # remote ids, append order

ctypedef struct fdb_t:
    table_t tab
    rlist *rl
    uint32_t rl_cap

cdef enum:
    FDB_MIN_CAP = 64
    FDB_KEY_SHIFT = 48

cdef inline uint64_t fdb_key(uint32_t slot, uint64_t mac) noexcept nogil:
    return (<uint64_t>(slot + 1) << FDB_KEY_SHIFT) | mac

cdef inline uint32_t fdb_key_slot(uint64_t key) noexcept nogil:
    return <uint32_t>(key >> FDB_KEY_SHIFT) - 1

cdef inline fdb_ent *fdb_find(fdb_t *f, uint64_t key) noexcept nogil:
    return <fdb_ent*>tab_find(&f.tab, key, sizeof(fdb_ent))

cdef inline uint32_t ent_nremotes(const fdb_t *f, const fdb_ent *e) noexcept nogil:
    if e.port >= 0:
        return 0
    if e.flags & FL_LIST:
        return f.rl[e.remote].n
    return 1

cdef inline uint32_t *ent_remotes(fdb_t *f, fdb_ent *e) noexcept nogil:
    if e.flags & FL_LIST:
        return f.rl[e.remote].a
    return &e.remote

cdef inline uint32_t ent_first_remote(const fdb_t *f, const fdb_ent *e) noexcept nogil:
    if e.flags & FL_LIST:
        return f.rl[e.remote].a[0]
    return e.remote

cdef int fdb_init(fdb_t *f) noexcept nogil
cdef void fdb_free(fdb_t *f) noexcept nogil
cdef void ent_clear_remotes(sw_t *s, fdb_ent *e) noexcept nogil
cdef void ent_set_remote(sw_t *s, fdb_ent *e, uint32_t rid) noexcept nogil
cdef int ent_add_remote(sw_t *s, fdb_ent *e, uint32_t rid) noexcept nogil
cdef int ent_del_remote(sw_t *s, fdb_ent *e, uint32_t rid) noexcept nogil
cdef fdb_ent *fdb_new(sw_t *s, uint32_t slot, uint64_t mac, uint8_t state, int32_t port,
                      uint32_t remote, double now) noexcept nogil
cdef void fdb_delete(sw_t *s, fdb_ent *e) noexcept nogil
cdef uint64_t fdb_purge(sw_t *s, uint32_t slot, int32_t port, bint keep_permanent,
                        bint dynamic_only) noexcept nogil
cdef int learn(sw_t *s, uint32_t slot, uint64_t mac, double now, int32_t port,
               const uint8_t *src) noexcept nogil
