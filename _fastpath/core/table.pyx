# The open-addressing table of table.pxd: allocation, growth, insertion, deletion, key dumps.

cdef inline uint32_t log2u(uint64_t cap) noexcept nogil:
    cdef uint32_t k = 0
    while (<uint64_t>1 << k) < cap:
        k += 1
    return k


cdef inline uint64_t cap_for(uint64_t n, uint64_t mincap) noexcept nogil:
    """Smallest power of two >= mincap keeping n entries at most 35% full (room to grow)."""
    cdef uint64_t cap = mincap
    while n * 20 > cap * 7:
        cap <<= 1
    return cap


cdef int tab_alloc(table_t *t, uint64_t cap) noexcept nogil:
    """Point `t` at a fresh, empty array of `cap` buckets (the old array is not freed)."""
    cdef uint8_t *a = <uint8_t*>vx_table_alloc(cap * t.esize)
    if a == NULL:
        return -1
    t.slots = a
    t.cap = cap
    t.mask = cap - 1
    t.shift = 64 - log2u(cap)
    return 0


cdef int tab_init(table_t *t, size_t esize, uint64_t mincap) noexcept nogil:
    """An empty table of `esize`-byte entries; -1 when memory ran out."""
    memset(t, 0, sizeof(table_t))
    t.esize = <uint32_t>esize
    t.mincap = mincap
    return tab_alloc(t, mincap)


cdef void tab_free(table_t *t) noexcept nogil:
    if t.slots != NULL:
        vx_table_free(t.slots, t.cap * t.esize)
    t.slots = NULL
    t.count = 0


cdef inline uint8_t *tab_place(table_t *t, uint64_t key) noexcept nogil:
    """First free bucket on `key`'s probe sequence (the key must be absent)."""
    cdef uint64_t i = vx_mix64(key) >> t.shift
    while tab_key_at(t, i, t.esize) != 0:
        i = (i + 1) & t.mask
    return t.slots + i * t.esize


cdef int tab_resize(table_t *t, uint64_t cap) noexcept nogil:
    cdef uint8_t *old = t.slots
    cdef uint64_t oldcap = t.cap, oldmask = t.mask, i
    cdef uint32_t oldshift = t.shift
    cdef size_t es = t.esize
    if tab_alloc(t, cap) < 0:
        t.slots = old
        t.cap = oldcap
        t.mask = oldmask
        t.shift = oldshift
        return -1
    for i in range(oldcap):
        if (<uint64_t*>(old + i * es))[0] != 0:
            memcpy(tab_place(t, (<uint64_t*>(old + i * es))[0]), old + i * es, es)
    vx_table_free(old, oldcap * es)
    return 0


cdef void *tab_insert(table_t *t, uint64_t key) noexcept nogil:
    """Add `key` (absent) and return its zeroed entry; NULL when memory ran out. Grows the
    table at 70% load, so probe sequences stay short whatever the number of entries.
    Invalidates entry pointers taken before."""
    cdef uint8_t *e
    if (t.count + 1) * 10 > t.cap * 7:
        if tab_resize(t, t.cap * 2) < 0:
            return NULL
    e = tab_place(t, key)
    memset(e, 0, t.esize)
    (<uint64_t*>e)[0] = key
    t.count += 1
    return e


cdef void tab_remove(table_t *t, void *entry) noexcept nogil:
    """Backward-shift deletion (no tombstones): pull later members of the cluster into the
    hole when their home bucket allows it, so lookups never probe past dead buckets."""
    cdef size_t es = t.esize
    cdef uint64_t i = <uint64_t>((<uint8_t*>entry - t.slots) // es)
    cdef uint64_t j = i, k, key
    while True:
        j = (j + 1) & t.mask
        key = tab_key_at(t, j, es)
        if key == 0:
            break
        k = vx_mix64(key) >> t.shift
        if (j > i and (k <= i or k > j)) or (j < i and k <= i and k > j):
            memcpy(t.slots + i * es, t.slots + j * es, es)
            i = j
    (<uint64_t*>(t.slots + i * es))[0] = 0
    t.count -= 1


cdef void tab_maybe_shrink(table_t *t) noexcept nogil:
    """After bulk removals (flush, ageing, del_network): give memory back below 1/8 load."""
    cdef uint64_t cap
    if t.cap > t.mincap and t.count * 8 < t.cap:
        cap = cap_for(t.count, t.mincap)
        if cap < t.cap:
            tab_resize(t, cap)


cdef uint64_t *tab_keys(const table_t *t, uint32_t shift, uint64_t tag, uint64_t *n) noexcept nogil:
    """Keys whose top bits (key >> shift) equal `tag` (every key when shift is 64), unsorted,
    in a malloc'd array the caller frees; NULL (n = 0) when memory ran out."""
    cdef uint64_t i, k = 0, key
    cdef uint64_t *out = <uint64_t*>malloc((t.count + 1) * sizeof(uint64_t))
    if out == NULL:
        n[0] = 0
        return NULL
    for i in range(t.cap):
        key = tab_key_at(t, i, t.esize)
        if key != 0 and (shift >= 64 or (key >> shift) == tag):
            out[k] = key
            k += 1
    n[0] = k
    return out


cdef uint64_t tab_bytes(const table_t *t) noexcept nogil:
    return t.cap * t.esize


cdef int cmp_u64(const void *a, const void *b) noexcept nogil:
    """qsort order of u64 keys, or of (u64 sort key, payload) pairs by their first word."""
    cdef uint64_t x = (<const uint64_t*>a)[0], y = (<const uint64_t*>b)[0]
    return (x > y) - (x < y)
