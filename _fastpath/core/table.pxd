# One open-addressing hash table for the FDB and the neighbour table (and any later keyed
# table): linear probing, backward-shift deletion (no tombstones), power-of-two capacity,
# grown at 70% load and shrunk below 1/8 after bulk removals. Entries are fixed-size structs
# whose first field is the uint64_t key; key 0 marks an empty bucket, so every key scheme
# keeps it out of use (the FDB and neighbour keys carry network slot + 1 in their top bits).
#
# The lookups are inline and take the entry size as an argument: the typed wrappers
# (fdb_find, nb_find) pass sizeof(their entry), which the compiler folds into the address
# arithmetic, so a generic table costs nothing over a typed one on the forwarding path.

ctypedef struct table_t:
    uint8_t *slots
    uint64_t cap                 # power of two
    uint64_t mask
    uint64_t count
    uint64_t mincap              # never shrunk below this
    uint32_t shift               # 64 - log2(cap): home bucket = mix64(key) >> shift
    uint32_t esize               # bytes per entry (the key is the first 8)

cdef inline uint64_t tab_key_at(const table_t *t, uint64_t i, size_t esize) noexcept nogil:
    return (<const uint64_t*>(t.slots + i * esize))[0]

cdef inline void *tab_find(const table_t *t, uint64_t key, size_t esize) noexcept nogil:
    """The entry with `key`, or NULL."""
    cdef uint64_t i = vx_mix64(key) >> t.shift
    cdef uint64_t k
    while True:
        k = tab_key_at(t, i, esize)
        if k == key:
            return t.slots + i * esize
        if k == 0:
            return NULL
        i = (i + 1) & t.mask

cdef inline uint64_t tab_home(const table_t *t, uint64_t key) noexcept nogil:
    """The bucket `key`'s probe sequence starts at (for prefetching a burst's lookups)."""
    return vx_mix64(key) >> t.shift

cdef int tab_init(table_t *t, size_t esize, uint64_t mincap) noexcept nogil
cdef void tab_free(table_t *t) noexcept nogil
cdef void *tab_insert(table_t *t, uint64_t key) noexcept nogil
cdef void tab_remove(table_t *t, void *e) noexcept nogil
cdef void tab_maybe_shrink(table_t *t) noexcept nogil
cdef uint64_t *tab_keys(const table_t *t, uint32_t shift, uint64_t tag, uint64_t *n) noexcept nogil
cdef uint64_t tab_bytes(const table_t *t) noexcept nogil
cdef int cmp_u64(const void *a, const void *b) noexcept nogil
