# The neighbour tables (dataplane/neigh.py is the reference) and the control-plane operations
# behind Switch.neigh_*.


cdef uint64_t nb_purge(sw_t *s, uint32_t slot) noexcept nogil:
    """Drop every neighbour of network `slot` (NeighTable.flush); -1 cast when out of memory."""
    cdef uint64_t i, n
    cdef uint64_t *keys = tab_keys(&s.nb, NB_KEY_SHIFT, slot + 1, &n)
    cdef nb_ent *e
    if keys == NULL:
        return <uint64_t>-1
    for i in range(n):
        e = nb_find(&s.nb, keys[i])
        if e != NULL:
            tab_remove(&s.nb, e)
    free(keys)
    s.nets[slot].ncount = 0
    tab_maybe_shrink(&s.nb)
    return n


cdef int nb_api_set(Switch sw, uint32_t slot, object key, bytes lladdr, str state) except -1:
    """Create or overwrite (ip neigh replace; add checked absence first)."""
    cdef sw_t *s = sw.s
    cdef uint64_t k = nb_key(slot, int(key))
    cdef nb_ent *e = nb_find(&s.nb, k)
    if e == NULL:
        e = <nb_ent*>tab_insert(&s.nb, k)
        if e == NULL:
            raise MemoryError()
        s.nets[slot].ncount += 1
    memcpy(e.mac, <const unsigned char*>lladdr, 6)
    e.state = NEIGH_STATES.index(state)
    return 0


cdef int nb_api_add(Switch sw, uint32_t slot, object ip, object lladdr, object state) except -1:
    """``ip neigh add``: NLM_F_CREATE|NLM_F_EXCL — fails when the address is there."""
    key = _ip(ip)
    if nb_find(&sw.s.nb, nb_key(slot, int(key))) != NULL:
        raise EntryExists(f"neighbour {key} already exists in VNI {sw._pynet[slot][0]}")
    return nb_api_set(sw, slot, key, _lladdr(lladdr), _neigh_state(state))


cdef int nb_api_del(Switch sw, uint32_t slot, object ip) except -1:
    cdef sw_t *s = sw.s
    cdef nb_ent *e
    key = _ip(ip)
    e = nb_find(&s.nb, nb_key(slot, int(key)))
    if e == NULL:
        raise EntryNotFound(f"no neighbour {key} in VNI {sw._pynet[slot][0]}")
    tab_remove(&s.nb, e)
    s.nets[slot].ncount -= 1
    return 0


cdef list nb_api_dump(Switch sw):
    """All neighbours, ordered by VNI then address."""
    cdef sw_t *s = sw.s
    cdef uint64_t i, n
    cdef nb_ent *e
    cdef uint64_t *keys = tab_keys(&s.nb, 64, 0, &n)
    if keys == NULL:
        raise MemoryError()
    rows = []
    try:
        qsort(keys, n, sizeof(uint64_t), cmp_u64)
        bounds = slot_bounds(keys, n, NB_KEY_SHIFT)
        for vni in sorted(sw._networks):
            b = bounds.get(sw._networks[vni])
            if b is None:
                continue
            for i in range(<uint64_t>b[0], <uint64_t>b[1]):
                rows.append(nb_row(sw, vni, nb_find(&s.nb, keys[i])))
    finally:
        free(keys)
    return rows


cdef dict nb_row(Switch sw, object vni, nb_ent *e):
    """A neighbour entry as neigh.NeighEntry.as_dict."""
    cdef uint8_t a[16]
    addr_v4mapped(a, htonl(<uint32_t>(e.key & 0xFFFFFFFF)))
    return {"vni": vni, "ip": str(sw._addr(a)), "lladdr": mac48_str(vx_mac48(e.mac)),
            "state": NEIGH_STATES[e.state]}
