# The FDB (dataplane/fdb.py is the reference): entries, remote lists, learning, and the
# control-plane operations behind Switch.fdb_* with the reference's checks, in its order, and
# its messages.


cdef int fdb_init(fdb_t *f) noexcept nogil:
    f.rl = NULL
    f.rl_cap = 0
    return tab_init(&f.tab, sizeof(fdb_ent), FDB_MIN_CAP)


cdef void fdb_free(fdb_t *f) noexcept nogil:
    cdef uint32_t i
    if f.rl != NULL:
        for i in range(f.rl_cap):
            free(f.rl[i].a)
    free(f.rl)
    f.rl = NULL
    f.rl_cap = 0
    tab_free(&f.tab)


# -- remote lists: entries hold remote ids (remote.pxd) with a reference each ---------------

cdef void ent_clear_remotes(sw_t *s, fdb_ent *e) noexcept nogil:
    """Let go of every remote of a remote entry (and of its list)."""
    cdef rlist *l
    cdef uint32_t i
    if e.port >= 0:
        return
    if e.flags & FL_LIST:
        l = &s.fdb.rl[e.remote]
        for i in range(l.n):
            rem_drop(&s.rem, l.a[i])
        free(l.a)
        l.a = NULL
        l.n = 0
        l.cap = 0
        e.flags &= ~FL_LIST
    else:
        rem_drop(&s.rem, e.remote)
    e.remote = 0


cdef void ent_set_remote(sw_t *s, fdb_ent *e, uint32_t rid) noexcept nogil:
    """Make a remote entry point at `rid` alone (held); the caller cleared it before."""
    rem_hold(&s.rem, rid)
    e.remote = rid


cdef int rl_take(fdb_t *f) noexcept nogil:
    """A free remote-list slot (the pool grows by doubling); -1 when memory ran out."""
    cdef uint32_t i, ncap
    cdef rlist *grown
    for i in range(f.rl_cap):
        if f.rl[i].cap == 0:
            return <int>i
    ncap = f.rl_cap * 2 if f.rl_cap else 8
    grown = <rlist*>realloc(f.rl, ncap * sizeof(rlist))
    if grown == NULL:
        return -1
    memset(grown + f.rl_cap, 0, (ncap - f.rl_cap) * sizeof(rlist))
    f.rl = grown
    i = f.rl_cap
    f.rl_cap = ncap
    return <int>i


cdef int ent_add_remote(sw_t *s, fdb_ent *e, uint32_t rid) noexcept nogil:
    """Append remote `rid` (the caller checked it is not listed): a second remote moves the
    entry's remotes into a pool list. -1 when memory ran out."""
    cdef fdb_t *f = &s.fdb
    cdef int idx
    cdef rlist *l
    cdef uint32_t *a
    if not (e.flags & FL_LIST):
        idx = rl_take(f)
        if idx < 0:
            return -1
        a = <uint32_t*>malloc(4 * sizeof(uint32_t))
        if a == NULL:
            return -1
        l = &f.rl[idx]
        l.a = a
        l.cap = 4
        l.n = 2
        a[0] = e.remote
        a[1] = rid
        e.remote = <uint32_t>idx
        e.flags |= FL_LIST
        rem_hold(&s.rem, rid)
        return 0
    l = &f.rl[e.remote]
    if l.n == l.cap:
        a = <uint32_t*>realloc(l.a, l.cap * 2 * sizeof(uint32_t))
        if a == NULL:
            return -1
        l.a = a
        l.cap *= 2
    l.a[l.n] = rid
    l.n += 1
    rem_hold(&s.rem, rid)
    return 0


cdef int ent_del_remote(sw_t *s, fdb_ent *e, uint32_t rid) noexcept nogil:
    """Remove one listed remote, keeping the others' order. Returns the number of remotes
    left (0: the caller deletes the entry, which still holds `rid`), or -1 when `rid` is
    not listed."""
    cdef uint32_t i, j, first
    cdef rlist *l
    if e.port >= 0 or rid == NO_REMOTE:
        return -1
    if not (e.flags & FL_LIST):
        return 0 if e.remote == rid else -1
    l = &s.fdb.rl[e.remote]
    for i in range(l.n):
        if l.a[i] == rid:
            for j in range(i + 1, l.n):
                l.a[j - 1] = l.a[j]
            l.n -= 1
            rem_drop(&s.rem, rid)
            if l.n > 1:
                return <int>l.n
            first = l.a[0]                  # one left: stored in the entry again
            free(l.a)
            l.a = NULL
            l.n = 0
            l.cap = 0
            e.flags &= ~FL_LIST
            e.remote = first
            return 1
    return -1


# -- entries -----------------------------------------------------------------------------------

cdef inline bint port_learn_full(const net_t *net, const port_t *pt) noexcept nogil:
    return (net.max_learned_port > 0 and <int64_t>pt.learned >= net.max_learned_port) \
        or (net.max_learned > 0 and <int64_t>net.learned_local >= net.max_learned)


cdef void ent_count(sw_t *s, const fdb_ent *e, int delta) noexcept nogil:
    """fdb.Fdb._count: the counts the limits look at, -1 before an entry changes or goes,
    +1 after it appears or changed."""
    cdef net_t *net = &s.nets[fdb_key_slot(e.key)]
    cdef port_t *pt
    net.count += delta
    if e.port < 0:
        net.remotes += delta
    elif e.state == ST_LEARNED:
        pt = &s.ports[e.port]
        net.learned_local += delta
        pt.learned += delta
        if delta < 0 and pt.limited and not port_learn_full(net, pt):
            pt.limited = 0


cdef fdb_ent *fdb_new(sw_t *s, uint32_t slot, uint64_t mac, uint8_t state, int32_t port,
                      uint32_t rid, double now) noexcept nogil:
    """Create an entry pointing at local `port`, or (port < 0) at remote `rid`, which it
    holds (the caller checked absence and room). NULL when out of memory."""
    cdef fdb_ent *e = <fdb_ent*>tab_insert(&s.fdb.tab, fdb_key(slot, mac))
    if e == NULL:
        return NULL
    e.state = state
    e.port = <int16_t>port
    e.remote = 0
    if port < 0:
        ent_set_remote(s, e, rid)
    e.updated = now
    ent_count(s, e, 1)
    return e


cdef void fdb_delete(sw_t *s, fdb_ent *e) noexcept nogil:
    ent_clear_remotes(s, e)
    ent_count(s, e, -1)
    tab_remove(&s.fdb.tab, e)


cdef inline bint remotes_full(const net_t *net) noexcept nogil:
    return net.limited and <int64_t>net.remotes >= net.maxaddress


cdef int make_room(sw_t *s, uint32_t slot, uint8_t state) noexcept nogil:
    """fdb.Fdb._make_room: room for one more remote entry — a configured one takes the place
    of the oldest learned remote entry (by update time, then MAC) when maxaddress is reached.
    -1 when there is none to give way. Invalidates entry pointers taken before."""
    cdef table_t *t = &s.fdb.tab
    cdef fdb_ent *e
    cdef fdb_ent *old = NULL
    cdef uint64_t i
    if not remotes_full(&s.nets[slot]):
        return 0
    if state == ST_LEARNED:
        return -1
    for i in range(t.cap):
        e = <fdb_ent*>(t.slots + i * sizeof(fdb_ent))
        if e.key != 0 and fdb_key_slot(e.key) == slot and e.port < 0 and e.state == ST_LEARNED:
            if old == NULL or e.updated < old.updated or (
                    e.updated == old.updated and (e.key & MAC_MASK) < (old.key & MAC_MASK)):
                old = e
    if old == NULL:
        return -1
    fdb_delete(s, old)
    return 0


cdef uint64_t fdb_purge(sw_t *s, uint32_t slot, int32_t port, bint keep_permanent,
                        bint dynamic_only) noexcept nogil:
    """Delete network `slot`'s entries that point at `port` (every entry when port < 0), but
    not the permanent ones when `keep_permanent`, only the learned ones when `dynamic_only`
    (Fdb.remove_port, Fdb.flush, the bridge's flush of a deleted port). Returns how many
    went; -1 cast when memory ran out."""
    cdef uint64_t i, n, gone = 0
    cdef uint64_t *keys = tab_keys(&s.fdb.tab, FDB_KEY_SHIFT, slot + 1, &n)
    cdef fdb_ent *e
    if keys == NULL:
        return <uint64_t>-1
    for i in range(n):
        e = fdb_find(&s.fdb, keys[i])
        if e == NULL or (port >= 0 and e.port != port) \
                or (keep_permanent and e.state == ST_PERMANENT) \
                or (dynamic_only and e.state != ST_LEARNED):
            continue
        fdb_delete(s, e)
        gone += 1
    free(keys)
    tab_maybe_shrink(&s.fdb.tab)
    return gone


cdef bint learn_refused(sw_t *s, net_t *net, int32_t port, fdb_ent *e) noexcept nogil:
    """fdb.Fdb._learn_refused: may learning make `e` (NULL: a new entry) point at `port`
    (a remote when < 0)? Only what the change adds counts against the bounds."""
    if port < 0:
        return (e == NULL or e.port >= 0) and remotes_full(net)
    if net.max_learned_port > 0 and <int64_t>s.ports[port].learned >= net.max_learned_port:
        return True
    return (e == NULL or e.port < 0) and net.max_learned > 0 \
        and <int64_t>net.learned_local >= net.max_learned


cdef int learn_refusal(sw_t *s, net_t *net, uint64_t mac, int32_t port) noexcept nogil:
    """Count a refused learning: fdb_full for the underlay, learn_limit (with one event per
    port until it is below its bound again) for a local port. The frame goes on."""
    if port < 0:
        tflag(s, TF_FDB_FULL)
        s.evc[EC_FDB_FULL] += 1
        return LR_FULL
    tflag(s, TF_LEARN_LIMIT)
    s.evc[EC_LEARN_LIMIT] += 1
    if not s.ports[port].limited:
        s.ports[port].limited = 1
        ev_push(s, EV_LEARN_LIMIT, net.vni, mac, NULL, LOC_NONE, 0, NULL, LOC_PORT,
                <uint32_t>port, NULL)
    return LR_LIMITED


cdef int learn(sw_t *s, uint32_t slot, uint64_t mac, double now, int32_t port,
               const uint8_t *src) noexcept nogil:
    """Fdb.learn + Switch._note_learning (br_fdb_update for ports, vxlan_snoop for the
    underlay): `port` >= 0 learns a local port, else the remote VTEP at address `src`."""
    cdef net_t *net = &s.nets[slot]
    cdef fdb_ent *e = fdb_find(&s.fdb, fdb_key(slot, mac))
    cdef uint32_t rid = NO_REMOTE, old = NO_REMOTE
    cdef int32_t oport = -1
    cdef bint same
    if port < 0:
        rid = rem_find(&s.rem, src, 0, 0)   # the remote a learned entry would point at
    if e != NULL:
        if port >= 0:
            same = e.port == port
        else:
            same = e.port < 0 and rid != NO_REMOTE and ent_first_remote(&s.fdb, e) == rid
        if same:
            if e.state == ST_LEARNED:
                e.updated = now
            return LR_REFRESH
        if e.state != ST_LEARNED:
            # kernel: a permanent/static entry never migrates (vxlan_snoop drops the packet;
            # the bridge forwards but keeps its entry)
            return LR_KEPT if port >= 0 else LR_CONFLICT
    if learn_refused(s, net, port, e):
        return learn_refusal(s, net, mac, port)
    if port < 0 and rid == NO_REMOTE:
        rid = rem_intern(&s.rem, src, 0, 0)
        if rid == NO_REMOTE:
            return learn_refusal(s, net, mac, port)     # out of memory: as a full table
    if e == NULL:
        if fdb_new(s, slot, mac, ST_LEARNED, port, rid, now) == NULL:
            return learn_refusal(s, net, mac, port)
        tflag(s, TF_LEARNED)
        s.evc[EC_LEARNED] += 1
        ev_push(s, EV_LEARNED, net.vni, mac, NULL, LOC_NONE, 0, NULL,
                LOC_PORT if port >= 0 else LOC_IP, <uint32_t>port, src)
        return LR_NEW
    # a learned entry moves: the event names where it was
    if e.port >= 0:
        oport = e.port
    else:
        old = ent_first_remote(&s.fdb, e)
        rem_hold(&s.rem, old)               # kept for the event, let go below
    ent_clear_remotes(s, e)
    ent_count(s, e, -1)
    e.port = <int16_t>port
    if port < 0:
        ent_set_remote(s, e, rid)
    e.updated = now
    ent_count(s, e, 1)
    tflag(s, TF_MOVED)
    s.evc[EC_MOVED] += 1
    ev_push(s, EV_MOVED, net.vni, mac, NULL,
            LOC_PORT if oport >= 0 else LOC_IP, <uint32_t>oport,
            s.rem.r[old].addr if old != NO_REMOTE else NULL,
            LOC_PORT if port >= 0 else LOC_IP, <uint32_t>port, src)
    if old != NO_REMOTE:
        rem_drop(&s.rem, old)
    return LR_MOVED


# -- control plane (Switch.fdb_*): the reference's checks, order and messages -----------------

cdef inline uint64_t mac_bytes48(bytes m):
    cdef const unsigned char *p = m
    return vx_mac48(p)


cdef int check_room(Switch sw, uint32_t slot, str state) except -1:
    """make_room() for a control-plane remote entry, TableFull when there is none."""
    if make_room(sw.s, slot, FDB_STATES.index(state)) < 0:
        vni, maxaddress = sw._pynet[slot]
        raise TableFull(f"FDB of VNI {vni} is full ({maxaddress} remote entries)")
    return 0


cdef bytes addr16(object addr):
    """An IPv4 or IPv6 address as the 16 bytes a remote_t holds (IPv4-mapped for IPv4)."""
    if addr.version == 4:
        return V4MAPPED_PREFIX + addr.packed
    return addr.packed


cdef int64_t remote_held(Switch sw, object remote) except -1:
    """The pool id of `remote` (an fdb.Remote), made if needed and held once for the caller,
    who drops it when done (the entries it gave the id to hold their own references)."""
    cdef bytes a = addr16(remote.addr)
    cdef uint32_t rid = rem_intern(&sw.s.rem, <const uint8_t*>a, <uint16_t>remote.port,
                                   <uint32_t>remote.vni)
    if rid == NO_REMOTE:
        raise MemoryError()
    rem_hold(&sw.s.rem, rid)
    return rid


cdef int fdb_api_add(Switch sw, uint32_t slot, object mac, object dst, object port,
                     object state, object now) except -1:
    """Fdb.add, with its checks in its order; `dst` an fdb.Remote."""
    cdef sw_t *s = sw.s
    cdef uint32_t rid = NO_REMOTE
    m = _mac(mac)
    state = _fdb_state(state)
    if (dst is None) == (port is None):
        raise InvalidArgument("an FDB entry needs exactly one of dst (remote) or port (local)")
    if port is not None and is_group_mac(m):
        raise InvalidArgument(f"{mac_str(m)} is not a unicast MAC: cannot point at a port")
    if fdb_find(&s.fdb, fdb_key(slot, mac_bytes48(m))) != NULL:
        raise EntryExists(
            f"FDB entry {mac_str(m)} already exists in VNI {sw._pynet[slot][0]}")
    if port is None:
        check_room(sw, slot, state)
        rid = remote_held(sw, dst)
    try:
        if fdb_new(s, slot, mac_bytes48(m), FDB_STATES.index(state),
                   <int32_t>port if port is not None else -1, rid, now) == NULL:
            raise MemoryError()
    finally:
        if rid != NO_REMOTE:
            rem_drop(&s.rem, rid)
    return 0


cdef int fdb_create_remote(Switch sw, uint32_t slot, bytes m, str state, object d,
                           object now) except -1:
    """A new remote entry (append or replace of an absent MAC), if the network has room."""
    cdef uint32_t rid
    check_room(sw, slot, state)
    rid = remote_held(sw, d)
    try:
        if fdb_new(sw.s, slot, mac_bytes48(m), FDB_STATES.index(state), -1, rid,
                   now) == NULL:
            raise MemoryError()
    finally:
        rem_drop(&sw.s.rem, rid)
    return 0


cdef int fdb_api_append(Switch sw, uint32_t slot, object mac, object dst, object state,
                        object now) except -1:
    """Fdb.append: a new entry, or one more remote on the all-zeros / a multicast MAC."""
    cdef sw_t *s = sw.s
    cdef fdb_ent *e
    cdef uint32_t rid, i, cnt
    cdef uint32_t *rem
    m = _mac(mac)
    state = _fdb_state(state)
    e = fdb_find(&s.fdb, fdb_key(slot, mac_bytes48(m)))
    if e == NULL:
        return fdb_create_remote(sw, slot, m, state, dst, now)
    if not is_group_mac(m):
        raise InvalidArgument(
            f"append adds extra remotes only to 00:00:00:00:00:00 or a multicast MAC; "
            f"use replace for {mac_str(m)}")
    if e.port >= 0:
        raise InvalidArgument(f"{mac_str(m)} points at a local port")
    rid = remote_held(sw, dst)
    try:
        cnt = ent_nremotes(&s.fdb, e)
        rem = ent_remotes(&s.fdb, e)
        for i in range(cnt):
            if rem[i] == rid:
                return 0        # the kernel ignores an already-listed remote
        if ent_add_remote(s, e, rid) < 0:
            raise MemoryError()
    finally:
        rem_drop(&s.rem, rid)
    return 0


cdef int fdb_api_replace(Switch sw, uint32_t slot, object mac, object dst, object state,
                         object now) except -1:
    """Fdb.replace: create, or point an existing entry at `dst` alone."""
    cdef sw_t *s = sw.s
    cdef fdb_ent *e
    cdef uint32_t rid
    m = _mac(mac)
    state = _fdb_state(state)
    if dst is None:
        raise InvalidArgument("an FDB entry needs exactly one of dst (remote) or port (local)")
    if is_group_mac(m):
        raise InvalidArgument(
            f"replace is not supported on {mac_str(m)} (kernel: EOPNOTSUPP); "
            f"use append/del for flood lists")
    e = fdb_find(&s.fdb, fdb_key(slot, mac_bytes48(m)))
    if e == NULL:
        return fdb_create_remote(sw, slot, m, state, dst, now)
    if e.port >= 0 and e.state != ST_LEARNED:
        raise InvalidArgument(endpoint_mac_message(m, sw._pynet[slot][0]))
    if e.port >= 0:
        check_room(sw, slot, state)     # a learned local entry becomes a remote one
        e = fdb_find(&s.fdb, fdb_key(slot, mac_bytes48(m)))
    rid = remote_held(sw, dst)
    ent_count(s, e, -1)
    ent_clear_remotes(s, e)
    e.state = FDB_STATES.index(state)
    e.updated = now
    e.port = -1
    ent_set_remote(s, e, rid)
    ent_count(s, e, 1)
    rem_drop(&s.rem, rid)
    return 0


cdef int fdb_api_del(Switch sw, uint32_t slot, object mac, object dst) except -1:
    """Fdb.delete: the entry, or one remote of it (the entry goes with its last remote)."""
    cdef sw_t *s = sw.s
    cdef fdb_ent *e
    cdef int left
    cdef bytes a
    m = _mac(mac)
    e = fdb_find(&s.fdb, fdb_key(slot, mac_bytes48(m)))
    if e == NULL:
        raise EntryNotFound(f"no FDB entry {mac_str(m)} in VNI {sw._pynet[slot][0]}")
    if dst is None:
        fdb_delete(s, e)
        return 0
    a = addr16(dst.addr)
    left = ent_del_remote(s, e, rem_find(&s.rem, <const uint8_t*>a, <uint16_t>dst.port,
                                         <uint32_t>dst.vni))
    if left < 0:
        raise EntryNotFound(
            f"FDB entry {mac_str(m)} in VNI {sw._pynet[slot][0]} has no remote {dst}")
    if left == 0:
        fdb_delete(s, e)
    return 0


cdef dict slot_bounds(uint64_t *keys, uint64_t n, uint32_t shift):
    """Sorted keys grouped by their network tag: {slot: (start, end)}."""
    cdef uint64_t i, start = 0
    bounds = {}
    for i in range(1, n + 1):
        if i == n or (keys[i] >> shift) != (keys[start] >> shift):
            bounds[<uint32_t>(keys[start] >> shift) - 1] = (start, i)
            start = i
    return bounds


cdef list fdb_api_dump(Switch sw):
    """All entries, one row per (MAC, destination), ordered by VNI then MAC."""
    cdef sw_t *s = sw.s
    cdef uint64_t i, n
    cdef uint32_t j, cnt
    cdef uint32_t *rem
    cdef fdb_ent *e
    cdef uint64_t *keys = tab_keys(&s.fdb.tab, 64, 0, &n)
    if keys == NULL:
        raise MemoryError()
    rows = []
    try:
        # sorting the packed keys groups them by slot, and by MAC within a slot
        qsort(keys, n, sizeof(uint64_t), cmp_u64)
        bounds = slot_bounds(keys, n, FDB_KEY_SHIFT)
        for vni in sorted(sw._networks):
            b = bounds.get(sw._networks[vni])
            if b is None:
                continue
            for i in range(<uint64_t>b[0], <uint64_t>b[1]):
                ent_rows(sw, vni, fdb_find(&s.fdb, keys[i]), rows)
    finally:
        free(keys)
    return rows


cdef int ent_rows(Switch sw, object vni, fdb_ent *e, list rows) except -1:
    """Append entry e's rows to `rows`: one per (MAC, destination), as fdb.FdbEntry.rows."""
    cdef uint32_t j, cnt
    cdef uint32_t *rem
    cdef remote_t *r
    mac = mac48_str(e.key & MAC_MASK)
    state = FDB_STATES[e.state]
    if e.port >= 0:
        rows.append({"vni": vni, "mac": mac, "state": state, "updated": e.updated,
                     "port": e.port, "dst": None, "dst_port": None, "dst_vni": None})
        return 0
    cnt = ent_nremotes(&sw.s.fdb, e)
    rem = ent_remotes(&sw.s.fdb, e)
    for j in range(cnt):
        r = &sw.s.rem.r[rem[j]]
        rows.append({"vni": vni, "mac": mac, "state": state, "updated": e.updated,
                     "port": None, "dst": str(sw._addr(r.addr)), "dst_port": r.port or None,
                     "dst_vni": r.vni or None})
    return 0


cdef class KeySnap:
    """The keys of one dump in slices (Switch.fdb_dump_chunk / neigh_dump_chunk): first taken
    from the bucket array a slice at a time (a resize meanwhile starts that over), then turned
    into rows a slice at a time, each key looked up afresh — so a long dump never holds the
    loop, and no resize can make it skip entries that were there throughout."""
    cdef uint64_t *keys
    cdef uint64_t n, room, scan, tcap, pos
    cdef bint fdb

    def __dealloc__(self):
        free(self.keys)


cdef int snap_scan(KeySnap k, table_t *t, uint64_t buckets) except -1:
    """Collect the keys of up to `buckets` more buckets; restart if the table was resized."""
    cdef uint64_t end, key
    cdef uint64_t *grown
    if k.tcap != t.cap:
        k.tcap = t.cap
        k.scan = 0
        k.n = 0
    end = min(k.scan + buckets, t.cap)
    while k.scan < end:
        key = tab_key_at(t, k.scan, t.esize)
        k.scan += 1
        if key == 0:
            continue
        if k.n == k.room:
            k.room = k.room * 2 if k.room else 1024
            grown = <uint64_t*>realloc(k.keys, k.room * sizeof(uint64_t))
            if grown == NULL:
                raise MemoryError()
            k.keys = grown
        k.keys[k.n] = key
        k.n += 1
    return 0


cdef tuple table_chunk(Switch sw, table_t *t, object cursor, uint32_t limit, bint fdb):
    """One slice of a dump in slices: (rows, cursor to go on with, or -1 at the end)."""
    cdef KeySnap k
    cdef uint32_t slot
    cdef uint64_t key
    cdef uint8_t *e
    rows = []
    if not cursor:
        k = KeySnap()
        k.fdb = fdb
        sw._dump_token += 1
        sw._dumps[sw._dump_token] = k
        while len(sw._dumps) > 16:      # dumps abandoned by their readers
            del sw._dumps[min(sw._dumps)]
        cursor = sw._dump_token
    k = sw._dumps.get(cursor)
    if k is None or k.fdb != fdb:
        raise InvalidArgument(f"dump cursor {cursor} is not (or no longer) valid")
    if k.scan < t.cap or k.tcap != t.cap:
        snap_scan(k, t, <uint64_t>limit * 16)
        return rows, cursor
    while k.pos < k.n and len(rows) < limit:
        key = k.keys[k.pos]
        k.pos += 1
        e = <uint8_t*>tab_find(t, key, t.esize)
        if e == NULL:
            continue
        if fdb:
            slot = fdb_key_slot(key)
            if sw._pynet[slot] is not None:
                ent_rows(sw, sw._pynet[slot][0], <fdb_ent*>e, rows)
        else:
            slot = (<nb_ent*>e).slot
            if sw._pynet[slot] is not None:
                rows.append(nb_row(sw, sw._pynet[slot][0], <nb_ent*>e))
    if k.pos >= k.n:
        del sw._dumps[cursor]
        return rows, -1
    return rows, cursor


cdef uint64_t fdb_api_age(Switch sw, double now) except? 0xFFFFFFFFFFFFFFFF:
    """Expire learned entries everywhere; returns how many went. Reported per VNI in
    ascending order, and within a VNI in MAC order (as the reference sorts them)."""
    cdef uint64_t n = fdb_age_range(sw, now, 0, sw.s.fdb.tab.cap)
    tab_maybe_shrink(&sw.s.fdb.tab)
    return n


cdef object fdb_api_age_step(Switch sw, double now, uint64_t budget):
    """One step of a sweep in slices: expire the learned entries among the next ``budget``
    table slots; (how many went, whether the sweep is complete). A whole sweep in one call
    walks every slot (~24 MB at 1M entries: 7-8 ms, a forwarding pause each second); in
    slices the event loop forwards between them. A removal shifts later entries back
    (table.pyx tab_remove), possibly from beyond the slice into it, so a slice that lost
    entries is walked again before the sweep moves on. Between steps, a resize or a removal
    by someone else (fdb del, a network deleted) can still move an entry behind the cursor:
    it then ages at the next sweep, a second late (the kernel's vxlan_cleanup gives no
    tighter promise: it runs every ~10 s). Events come in VNI, MAC order within a step, so a
    sweep in several steps reports them in a different order than age() does."""
    cdef table_t *t = &sw.s.fdb.tab
    cdef uint64_t lo = sw._age_pos, hi, n
    if lo >= t.cap:
        lo = 0          # the table shrank since the last step
    hi = t.cap if budget == 0 or budget >= t.cap - lo else lo + budget
    n = fdb_age_range(sw, now, lo, hi)
    if n:
        sw._age_pos = lo
        return n, False
    if hi >= t.cap:
        sw._age_pos = 0
        tab_maybe_shrink(t)
        return n, True
    sw._age_pos = hi
    return n, False


cdef uint64_t fdb_age_range(Switch sw, double now, uint64_t lo,
                            uint64_t hi) except? 0xFFFFFFFFFFFFFFFF:
    """Expire the learned entries in table slots [lo, hi): collected first and removed after,
    because a removal shifts later entries back (table.pyx tab_remove). Reported per VNI in
    ascending order, then in MAC order."""
    cdef sw_t *s = sw.s
    cdef table_t *t = &s.fdb.tab
    cdef uint64_t i, n = 0, key
    cdef uint32_t slot
    cdef fdb_ent *e
    cdef uint64_t *pairs
    cdef uint64_t *rank = <uint64_t*>calloc(s.nets_cap + 1, sizeof(uint64_t))
    if rank == NULL:
        raise MemoryError()
    order = sorted(sw._networks)
    for i, vni in enumerate(order):
        rank[<uint32_t>sw._networks[vni]] = i
    # at most one pair per slot of the range (a step of 64k slots: 1 MiB, not the table's)
    pairs = <uint64_t*>malloc((min(t.count, hi - lo) + 1) * 2 * sizeof(uint64_t))
    if pairs == NULL:
        free(rank)
        raise MemoryError()
    for i in range(lo, hi):
        e = <fdb_ent*>(t.slots + i * sizeof(fdb_ent))
        if e.key != 0 and e.state == ST_LEARNED:
            slot = fdb_key_slot(e.key)
            if e.updated + s.nets[slot].ageing <= now:
                # Reported in VNI order, then MAC order (as the reference sorts them).
                pairs[2 * n] = (rank[slot] << 48) | (e.key & MAC_MASK)
                pairs[2 * n + 1] = e.key
                n += 1
    free(rank)
    qsort(pairs, n, 2 * sizeof(uint64_t), cmp_u64)
    try:
        for i in range(n):
            key = pairs[2 * i + 1]
            e = fdb_find(&s.fdb, key)
            loc = (f"port:{e.port}" if e.port >= 0
                   else str(sw._addr(s.rem.r[ent_first_remote(&s.fdb, e)].addr)))
            sw._pending.append(("aged", order[pairs[2 * i] >> 48],
                                mac48_str(key & MAC_MASK), loc, ""))
            fdb_delete(s, e)
            s.evc[EC_AGED] += 1
    finally:
        free(pairs)
    return n
