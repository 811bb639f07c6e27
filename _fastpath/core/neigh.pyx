# The neighbour tables (dataplane/neigh.py is the reference) and the control-plane operations
# behind Switch.neigh_*.


cdef void nb_addr(const nb_ent *e, uint8_t *out) noexcept nogil:
    """The entry's address as 16 bytes (IPv4-mapped for IPv4)."""
    if e.v6:
        memcpy(out, e.addr, 16)
    else:
        addr_v4mapped(out, htonl(<uint32_t>e.key))         # the low 32 bits


cdef uint64_t nb_purge(sw_t *s, uint32_t slot) noexcept nogil:
    """Drop every neighbour of network `slot` (NeighTable.flush); -1 cast when out of memory.
    The keys are taken first: removing shifts entries back, a bucket walk would miss some."""
    cdef uint64_t i, n, gone = 0
    cdef uint64_t *keys = tab_keys(&s.nb, 64, 0, &n)
    cdef nb_ent *e
    if keys == NULL:
        return <uint64_t>-1
    for i in range(n):
        e = nb_find(&s.nb, keys[i])
        if e != NULL and e.slot == slot:
            tab_remove(&s.nb, e)
            gone += 1
    free(keys)
    s.nets[slot].ncount = 0
    tab_maybe_shrink(&s.nb)
    return gone


cdef nb_ent *nb_lookup(Switch sw, uint32_t slot, object key):
    """The entry of address `key` (IPv4Address / IPv6Address) in network `slot`, or NULL."""
    cdef bytes a
    if key.version == 4:
        return nb_find(&sw.s.nb, nb_key(slot, int(key)))
    a = key.packed
    return nb_find6(&sw.s.nb, slot, <const uint8_t*>a)


cdef int nb_api_set(Switch sw, uint32_t slot, object key, bytes lladdr, str state) except -1:
    """Create or overwrite (ip neigh replace; add checked absence first)."""
    cdef sw_t *s = sw.s
    cdef bytes a = b""
    cdef uint64_t k
    cdef nb_ent *e = nb_lookup(sw, slot, key)
    if e == NULL:
        if key.version == 4:
            k = nb_key(slot, int(key))
        else:
            a = key.packed
            k = nb_key6(slot, <const uint8_t*>a)
            if nb_find(&s.nb, k) != NULL:   # another address with this key: 2^-63 per pair
                raise TableError(f"neighbour {key}: hash collision in VNI "
                                 f"{sw._pynet[slot][0]}")
        e = <nb_ent*>tab_insert(&s.nb, k)
        if e == NULL:
            raise MemoryError()
        e.slot = slot
        e.v6 = key.version == 6
        if e.v6:
            memcpy(e.addr, <const char*>a, 16)
        s.nets[slot].ncount += 1
    memcpy(e.mac, <const unsigned char*>lladdr, 6)
    e.state = NEIGH_STATES.index(state)
    return 0


cdef int nb_api_add(Switch sw, uint32_t slot, object ip, object lladdr, object state) except -1:
    """``ip neigh add``: NLM_F_CREATE|NLM_F_EXCL — fails when the address is there."""
    key = _ip(ip)
    if nb_lookup(sw, slot, key) != NULL:
        raise EntryExists(f"neighbour {key} already exists in VNI {sw._pynet[slot][0]}")
    return nb_api_set(sw, slot, key, _lladdr(lladdr), _neigh_state(state))


cdef int nb_api_del(Switch sw, uint32_t slot, object ip) except -1:
    cdef sw_t *s = sw.s
    cdef nb_ent *e
    key = _ip(ip)
    e = nb_lookup(sw, slot, key)
    if e == NULL:
        raise EntryNotFound(f"no neighbour {key} in VNI {sw._pynet[slot][0]}")
    tab_remove(&s.nb, e)
    s.nets[slot].ncount -= 1
    return 0


cdef list nb_api_dump(Switch sw):
    """All neighbours, ordered by VNI, then IPv4 before IPv6, then address (neigh.sort_key)."""
    cdef sw_t *s = sw.s
    cdef uint64_t i, n
    cdef nb_ent *e
    cdef uint64_t *keys = tab_keys(&s.nb, 64, 0, &n)
    if keys == NULL:
        raise MemoryError()
    rows = []
    try:
        for i in range(n):
            e = nb_find(&s.nb, keys[i])
            if sw._pynet[e.slot] is not None:
                rows.append(nb_row(sw, sw._pynet[e.slot][0], e))
    finally:
        free(keys)
    rows.sort(key=_nb_order)
    return rows


def _nb_order(row):
    return row["vni"], neigh_sort_key(ip_address(row["ip"]))


cdef dict nb_row(Switch sw, object vni, nb_ent *e):
    """A neighbour entry as neigh.NeighEntry.as_dict."""
    cdef uint8_t a[16]
    nb_addr(e, a)
    return {"vni": vni, "ip": str(sw._addr(a)), "lladdr": mac48_str(vx_mac48(e.mac)),
            "state": NEIGH_STATES[e.state]}
