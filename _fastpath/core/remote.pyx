# The pool of remote VTEPs (remote.pxd says why).


cdef uint8_t V4MAPPED[12]
V4MAPPED[10] = 0xFF
V4MAPPED[11] = 0xFF


cdef void addr_v4mapped(uint8_t *out, uint32_t v4) noexcept nogil:
    """::ffff:a.b.c.d for a network-order IPv4 address."""
    memcpy(out, V4MAPPED, 12)
    memcpy(out + 12, &v4, 4)


cdef inline uint64_t rem_hash(const uint8_t *addr, uint16_t port, uint32_t vni) noexcept nogil:
    cdef uint64_t a, b
    memcpy(&a, addr, 8)
    memcpy(&b, addr + 8, 8)
    return vx_mix64(a ^ vx_mix64(b ^ (<uint64_t>port << 32 | vni))) | 1


cdef int rem_init(remotes_t *p) noexcept nogil:
    memset(p, 0, sizeof(remotes_t))
    p.free_head = NO_REMOTE
    if tab_init(&p.index, sizeof(remidx_t), REMOTES_MIN) < 0:
        return -1
    return tab_init(&p.pmtu, sizeof(pmtu_ent), REMOTES_MIN)


cdef void rem_free(remotes_t *p) noexcept nogil:
    free(p.r)
    tab_free(&p.index)
    tab_free(&p.pmtu)
    memset(p, 0, sizeof(remotes_t))
    p.free_head = NO_REMOTE


# -- route MTUs (Switch.set_path_mtu) ----------------------------------------------------------

cdef inline uint64_t pmtu_key(const uint8_t *addr) noexcept nogil:
    cdef uint64_t a, b
    memcpy(&a, addr, 8)
    memcpy(&b, addr + 8, 8)
    return vx_mix64(b ^ vx_mix64(a + 1)) | 1


cdef inline pmtu_ent *pmtu_slot(remotes_t *p, const uint8_t *addr) noexcept nogil:
    """The route MTU entry of `addr`, or NULL (a probe past keys that only collide)."""
    cdef table_t *t = &p.pmtu
    cdef uint64_t key = pmtu_key(addr)
    cdef uint64_t i = tab_home(t, key), k
    cdef pmtu_ent *e
    while True:
        k = tab_key_at(t, i, sizeof(pmtu_ent))
        if k == 0:
            return NULL
        e = <pmtu_ent*>(t.slots + i * sizeof(pmtu_ent))
        if k == key and memcmp(e.addr, addr, 16) == 0:
            return e
        i = (i + 1) & t.mask


cdef inline uint32_t pmtu_max_frame(uint32_t mtu, bint v4) noexcept nogil:
    """tunnel.pmtu_limit + the inner Ethernet header: the longest frame a route MTU carries
    to a remote of that family (dst_mtu - vxlan_headroom: 50 bytes over IPv4, 70 over
    IPv6); 0 (no check) when the MTU is unknown or below the headroom, where the kernel's
    u32 wraps around."""
    cdef uint32_t headroom = (20 if v4 else 40) + 8 + VXLAN_HLEN + ETH_HLEN
    if mtu == 0 or mtu < headroom:
        return 0
    return mtu - headroom + ETH_HLEN


cdef uint32_t rem_path_mtu(remotes_t *p, const uint8_t *addr) noexcept nogil:
    """The route MTU set for `addr`, 0 when none is."""
    cdef pmtu_ent *e = pmtu_slot(p, addr)
    return e.mtu if e != NULL else 0


cdef int rem_set_path_mtu(remotes_t *p, const uint8_t *addr, uint32_t mtu) noexcept nogil:
    """Switch.set_path_mtu: remember (0: forget) the route MTU to `addr` and give every
    remote at that address its max_frame now; -1 when memory ran out."""
    cdef pmtu_ent *e = pmtu_slot(p, addr)
    cdef uint32_t i
    cdef remote_t *r
    if mtu == 0:
        if e != NULL:
            tab_remove(&p.pmtu, e)
    else:
        if e == NULL:
            e = <pmtu_ent*>tab_insert(&p.pmtu, pmtu_key(addr))
            if e == NULL:
                return -1
            memcpy(e.addr, addr, 16)
        e.mtu = mtu
    for i in range(p.cap):
        r = &p.r[i]
        if r.used and memcmp(r.addr, addr, 16) == 0:
            r.max_frame = pmtu_max_frame(mtu, r.v4)
    return 0


cdef inline remidx_t *rem_slot(remotes_t *p, uint64_t key, const uint8_t *addr, uint16_t port,
                               uint32_t vni) noexcept nogil:
    """The index entry of (addr, port, vni), or NULL: a linear probe that goes past keys that
    only collide (the table's own lookup stops at the first equal key)."""
    cdef table_t *t = &p.index
    cdef uint64_t i = tab_home(t, key), k
    cdef remidx_t *x
    cdef remote_t *r
    while True:
        k = tab_key_at(t, i, sizeof(remidx_t))
        if k == 0:
            return NULL
        if k == key:
            x = <remidx_t*>(t.slots + i * sizeof(remidx_t))
            r = &p.r[x.id]
            if r.port == port and r.vni == vni and memcmp(r.addr, addr, 16) == 0:
                return x
        i = (i + 1) & t.mask


cdef uint32_t rem_find(remotes_t *p, const uint8_t *addr, uint16_t port,
                       uint32_t vni) noexcept nogil:
    """The id of (addr, port, vni), NO_REMOTE if no entry points there."""
    cdef remidx_t *x = rem_slot(p, rem_hash(addr, port, vni), addr, port, vni)
    return x.id if x != NULL else NO_REMOTE


cdef uint32_t rem_intern(remotes_t *p, const uint8_t *addr, uint16_t port,
                         uint32_t vni) noexcept nogil:
    """The id of (addr, port, vni), made if needed with no reference yet (the caller holds
    it at once); NO_REMOTE when memory ran out."""
    cdef uint64_t key = rem_hash(addr, port, vni)
    cdef remidx_t *x = rem_slot(p, key, addr, port, vni)
    cdef uint32_t id, ncap, i
    cdef remote_t *grown
    cdef remote_t *r
    if x != NULL:
        return x.id
    if p.free_head == NO_REMOTE:
        ncap = p.cap * 2 if p.cap else REMOTES_MIN
        grown = <remote_t*>realloc(p.r, ncap * sizeof(remote_t))
        if grown == NULL:
            return NO_REMOTE
        memset(grown + p.cap, 0, (ncap - p.cap) * sizeof(remote_t))
        for i in range(p.cap, ncap):
            grown[i].next_free = i + 1 if i + 1 < ncap else NO_REMOTE
        p.free_head = p.cap
        p.r = grown
        p.cap = ncap
    id = p.free_head
    x = <remidx_t*>tab_insert(&p.index, key)
    if x == NULL:
        return NO_REMOTE
    x.id = id
    r = &p.r[id]
    p.free_head = r.next_free
    memcpy(r.addr, addr, 16)
    r.port = port
    r.vni = vni
    r.v4 = memcmp(addr, V4MAPPED, 12) == 0
    r.used = 1
    r.refs = 0
    r.max_frame = pmtu_max_frame(rem_path_mtu(p, addr), r.v4)
    p.used += 1
    p.made += 1
    return id


cdef void rem_hold(remotes_t *p, uint32_t id) noexcept nogil:
    p.r[id].refs += 1


cdef void rem_drop(remotes_t *p, uint32_t id) noexcept nogil:
    """One reference less; the last one gives the id back."""
    cdef remote_t *r = &p.r[id]
    cdef remidx_t *x
    r.refs -= 1
    if r.refs:
        return
    x = rem_slot(p, rem_hash(r.addr, r.port, r.vni), r.addr, r.port, r.vni)
    if x != NULL:
        tab_remove(&p.index, x)
    r.used = 0
    r.next_free = p.free_head
    p.free_head = id
    p.used -= 1
