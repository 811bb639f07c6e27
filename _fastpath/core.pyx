# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The forwarding core of ``dataplane/switch.py`` in C structures (DESIGN.md §2, §3).

``Switch`` has exactly the reference's public API and results (actions, events, counters,
dumps, exceptions and their messages); the differential tests hold the two to ``==``. What is
different is underneath:

* one open-addressing hash table (linear probing, backward-shift deletion, power-of-two
  capacity, grown at 70% load) holds the FDB entries of *all* networks, 32 bytes each, keyed
  on ``(network slot + 1) << 48 | MAC``; the neighbour table is the same scheme keyed on
  ``(slot + 1) << 32 | IPv4``, 16 bytes an entry;
* counters are C arrays, events are fixed-size records in a bounded ring, turned into the
  reference's tuples only when ``events()`` is called;
* frames live in preallocated rx slots with ``HEADROOM`` bytes in front, so encapsulation
  (RFC 7348 §5) writes the VXLAN, UDP and IPv4 headers in place and a unicast encapsulation
  transmits the rx slot itself; head-end replication shares one payload between copies.

The per-frame work (``core_from_port``, ``core_from_underlay``) is C only (``nogil``); the
single-frame methods ``from_port``/``from_underlay`` copy the frame into rx slot 0, call the
same function the burst path calls, and convert its output records into tuples. Control-plane
methods parse their arguments with the reference's own helpers so that errors match.
"""

from libc.stdint cimport int8_t, uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memcpy, memset, memcmp
from libc.stdlib cimport malloc, calloc, realloc, free, qsort
cdef extern from "<sched.h>" nogil:
    int sched_yield()
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

from _fastpath.includes.vxbits cimport (
    vx_likely, vx_unlikely, vx_prefetch, vx_mac48, vx_put_mac48, vx_be32, vx_be16,
    vx_put_be16, vx_put_be32, vx_mix64, vx_csum_add, vx_csum_copy, vx_csum_fold, vx_csum_be,
    vx_flow_hash, vx_now_ns, vx_table_alloc, vx_table_free,
)
from _fastpath.includes.libc_net cimport (
    ssize_t, iovec, msghdr, mmsghdr, sockaddr_in, recvmmsg, sendmmsg, read, write,
    htonl, htons, ntohl, errno, AF_INET, MSG_DONTWAIT, MSG_TRUNC, MSG_CTRUNC,
    EAGAIN, EINTR, EBADF, EBADFD, EIO, ENODEV, ENXIO, ENOBUFS, EINVAL, EMSGSIZE,
)
from _fastpath.includes.vxsock cimport (
    vx_gso_socket, vx_send_gso, vx_send_one, VX_GRO_CMSG_SPACE, vx_gro_size, vx_writev,
    vx_close,
)

import math
from ipaddress import IPv4Address, IPv4Network

from dataplane.errors import EntryExists, EntryNotFound, InvalidArgument, TableFull
from dataplane.fdb import _dst, _mac, _state as _fdb_state, FDB_STATES, is_group_mac
from dataplane.neigh import _ip, _lladdr, _state as _neigh_state, NEIGH_STATES
from dataplane.wire import (
    DEFAULT_SRC_PORT_RANGE,
    DROP_REASONS,
    EVENT_COUNTERS,
    VXLAN_PORT,
    ip4,
    mac_str,
    vxlan_header,
)

MAX_VNI = 0xFFFFFF
PORT_COUNTERS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")
EVENTS_MAX = 65536
BURST_MAX = 1024

# The C enums in core.pxd (DR_*, EC_*, ST_*) index these tuples: a change in wire.py, fdb.py
# or neigh.py must fail loudly here rather than miscount silently.
if DROP_REASONS != ("not_allowed", "short_header", "bad_flags", "unknown_vni", "reserved_bits",
                    "runt", "oversize", "bad_src_mac", "bad_arp", "fdb_conflict", "hairpin",
                    "remote_dest", "unknown_port"):
    raise ImportError("_fastpath.core: wire.DROP_REASONS changed; update core.pxd")
if EVENT_COUNTERS != ("proxy_replies", "l2miss", "l3miss", "learned", "moved", "aged",
                      "fdb_full"):
    raise ImportError("_fastpath.core: wire.EVENT_COUNTERS changed; update core.pxd")
if FDB_STATES != ("permanent", "static", "learned") \
        or NEIGH_STATES != ("permanent", "static", "reachable"):
    raise ImportError("_fastpath.core: table states changed; update core.pxd")

from dataplane import switch as _reference

if (getattr(_reference, "TRACE_RING", TRACE_RING_C),
        getattr(_reference, "TRACE_SNAP", TRACE_SNAP_C)) != (TRACE_RING_C, TRACE_SNAP_C):
    raise ImportError("_fastpath.core: switch.TRACE_RING/TRACE_SNAP changed; update core.pxd")
TRACE_RING = TRACE_RING_C
TRACE_SNAP = TRACE_SNAP_C

# Offload counters (the OC_ enum in core.pxd) and offload.segment()'s error reasons (VE_).
OFFLOAD_COUNTERS = ("tso_frames", "tso_segments", "csum_completed", "bad_vnet", "gso_sends",
                    "gso_datagrams", "gso_fallbacks", "gro_buffers", "gro_datagrams",
                    "coalesced_frames", "coalesced_segments", "csum_bad")
VNET_ERRORS = ("short header", "bad csum offsets", "gso type mismatch", "unsupported gso type",
               "bad ip header", "bad tcp header", "zero gso size", "empty gso frame",
               "too many segments")
if len(OFFLOAD_COUNTERS) != N_OFFC or len(VNET_ERRORS) != VE_TOO_MANY + 1:
    raise ImportError("_fastpath.core: OFFLOAD_COUNTERS/VNET_ERRORS and core.pxd disagree")

cdef tuple _EV_KINDS = ("l2miss", "l3miss", "learned", "moved", "aged")
cdef tuple _TF_NAMES = ("learned", "moved", "fdb_full", "arp_consumed", "l3miss", "arp_local",
                        "proxy_reply", "l2miss")
cdef uint64_t FDB_MIN_CAP = 64
cdef uint64_t NB_MIN_CAP = 16
cdef uint64_t MAC_MASK = 0xFFFFFFFFFFFF

# learn() results (fdb.LearnResult)
cdef enum:
    LR_NEW = 0
    LR_REFRESH = 1
    LR_MOVED = 2
    LR_CONFLICT = 3
    LR_FULL = 4
    LR_KEPT = 5


# =============================================================================== hash tables

cdef inline uint64_t fdb_key(uint32_t slot, uint64_t mac) noexcept nogil:
    return (<uint64_t>(slot + 1) << 48) | mac


cdef inline uint64_t nb_key(uint32_t slot, uint32_t ip) noexcept nogil:
    return (<uint64_t>(slot + 1) << 32) | ip


cdef inline uint32_t log2u(uint64_t cap) noexcept nogil:
    cdef uint32_t k = 0
    while (<uint64_t>1 << k) < cap:
        k += 1
    return k


cdef int fdb_alloc(fdb_tab *t, uint64_t cap) noexcept nogil:
    """Point `t` at a fresh, empty array of `cap` buckets (old array not freed)."""
    cdef fdb_ent *a = <fdb_ent*>vx_table_alloc(cap * sizeof(fdb_ent))
    if a == NULL:
        return -1
    t.slots = a
    t.cap = cap
    t.mask = cap - 1
    t.shift = 64 - log2u(cap)
    return 0


cdef inline fdb_ent *fdb_find(fdb_tab *t, uint64_t key) noexcept nogil:
    cdef uint64_t i = vx_mix64(key) >> t.shift
    cdef fdb_ent *e
    while True:
        e = &t.slots[i]
        if e.key == key:
            return e
        if e.key == 0:
            return NULL
        i = (i + 1) & t.mask


cdef inline fdb_ent *fdb_place(fdb_tab *t, uint64_t key) noexcept nogil:
    """First free bucket on `key`'s probe sequence (the key must be absent)."""
    cdef uint64_t i = vx_mix64(key) >> t.shift
    while t.slots[i].key != 0:
        i = (i + 1) & t.mask
    return &t.slots[i]


cdef int fdb_resize(fdb_tab *t, uint64_t cap) noexcept nogil:
    cdef fdb_ent *old = t.slots
    cdef uint64_t oldcap = t.cap, i
    cdef fdb_ent *d
    if fdb_alloc(t, cap) < 0:
        t.slots = old
        return -1
    for i in range(oldcap):
        if old[i].key != 0:
            d = fdb_place(t, old[i].key)
            d[0] = old[i]
    vx_table_free(old, oldcap * sizeof(fdb_ent))
    return 0


cdef inline uint64_t cap_for(uint64_t n, uint64_t mincap) noexcept nogil:
    """Smallest power of two >= mincap keeping n entries at most 35% full (room to grow)."""
    cdef uint64_t cap = mincap
    while n * 20 > cap * 7:
        cap <<= 1
    return cap


cdef fdb_ent *fdb_insert(fdb_tab *t, uint64_t key) noexcept nogil:
    """Add `key` (absent) and return its zeroed entry; NULL when memory ran out. Grows the
    table at 70% load, so probe sequences stay short whatever the number of entries.
    Invalidates entry pointers taken before."""
    cdef fdb_ent *e
    if (t.count + 1) * 10 > t.cap * 7:
        if fdb_resize(t, t.cap * 2) < 0:
            return NULL
    e = fdb_place(t, key)
    memset(e, 0, sizeof(fdb_ent))
    e.key = key
    t.count += 1
    return e


cdef void fdb_remove(fdb_tab *t, fdb_ent *e) noexcept nogil:
    """Backward-shift deletion (no tombstones): pull later members of the cluster into the
    hole when their home bucket allows it, so lookups never probe past dead buckets."""
    cdef uint64_t i = <uint64_t>(e - t.slots)
    cdef uint64_t j = i, k
    while True:
        j = (j + 1) & t.mask
        if t.slots[j].key == 0:
            break
        k = vx_mix64(t.slots[j].key) >> t.shift
        if (j > i and (k <= i or k > j)) or (j < i and k <= i and k > j):
            t.slots[i] = t.slots[j]
            i = j
    t.slots[i].key = 0
    t.count -= 1


cdef void fdb_maybe_shrink(fdb_tab *t) noexcept nogil:
    """After bulk removals (flush, ageing, del_network): give memory back below 1/8 load."""
    cdef uint64_t cap
    if t.cap > FDB_MIN_CAP and t.count * 8 < t.cap:
        cap = cap_for(t.count, FDB_MIN_CAP)
        if cap < t.cap:
            fdb_resize(t, cap)


cdef int nb_alloc(nb_tab *t, uint64_t cap) noexcept nogil:
    cdef nb_ent *a = <nb_ent*>vx_table_alloc(cap * sizeof(nb_ent))
    if a == NULL:
        return -1
    t.slots = a
    t.cap = cap
    t.mask = cap - 1
    t.shift = 64 - log2u(cap)
    return 0


cdef inline nb_ent *nb_find(nb_tab *t, uint64_t key) noexcept nogil:
    cdef uint64_t i = vx_mix64(key) >> t.shift
    cdef nb_ent *e
    while True:
        e = &t.slots[i]
        if e.key == key:
            return e
        if e.key == 0:
            return NULL
        i = (i + 1) & t.mask


cdef inline nb_ent *nb_place(nb_tab *t, uint64_t key) noexcept nogil:
    cdef uint64_t i = vx_mix64(key) >> t.shift
    while t.slots[i].key != 0:
        i = (i + 1) & t.mask
    return &t.slots[i]


cdef int nb_resize(nb_tab *t, uint64_t cap) noexcept nogil:
    cdef nb_ent *old = t.slots
    cdef uint64_t oldcap = t.cap, i
    cdef nb_ent *d
    if nb_alloc(t, cap) < 0:
        t.slots = old
        return -1
    for i in range(oldcap):
        if old[i].key != 0:
            d = nb_place(t, old[i].key)
            d[0] = old[i]
    vx_table_free(old, oldcap * sizeof(nb_ent))
    return 0


cdef nb_ent *nb_insert(nb_tab *t, uint64_t key) noexcept nogil:
    cdef nb_ent *e
    if (t.count + 1) * 10 > t.cap * 7:
        if nb_resize(t, t.cap * 2) < 0:
            return NULL
    e = nb_place(t, key)
    memset(e, 0, sizeof(nb_ent))
    e.key = key
    t.count += 1
    return e


cdef void nb_remove(nb_tab *t, nb_ent *e) noexcept nogil:
    cdef uint64_t i = <uint64_t>(e - t.slots)
    cdef uint64_t j = i, k
    while True:
        j = (j + 1) & t.mask
        if t.slots[j].key == 0:
            break
        k = vx_mix64(t.slots[j].key) >> t.shift
        if (j > i and (k <= i or k > j)) or (j < i and k <= i and k > j):
            t.slots[i] = t.slots[j]
            i = j
    t.slots[i].key = 0
    t.count -= 1


cdef void nb_maybe_shrink(nb_tab *t) noexcept nogil:
    cdef uint64_t cap
    if t.cap > NB_MIN_CAP and t.count * 8 < t.cap:
        cap = cap_for(t.count, NB_MIN_CAP)
        if cap < t.cap:
            nb_resize(t, cap)


cdef int cmp_u64(const void *a, const void *b) noexcept nogil:
    """qsort order of u64 keys, or of (u64 sort key, payload) pairs by their first word."""
    cdef uint64_t x = (<const uint64_t*>a)[0], y = (<const uint64_t*>b)[0]
    return (x > y) - (x < y)


# =============================================================================== FDB entries

cdef inline uint32_t ent_nremotes(sw_t *s, fdb_ent *e) noexcept nogil:
    if e.port >= 0:
        return 0
    if e.flags & FL_LIST:
        return s.rl[e.remote].n
    return 1


cdef inline uint32_t *ent_remotes(sw_t *s, fdb_ent *e) noexcept nogil:
    if e.flags & FL_LIST:
        return s.rl[e.remote].a
    return &e.remote


cdef inline uint32_t ent_first_remote(sw_t *s, fdb_ent *e) noexcept nogil:
    if e.flags & FL_LIST:
        return s.rl[e.remote].a[0]
    return e.remote


cdef void ent_drop_list(sw_t *s, fdb_ent *e) noexcept nogil:
    """Give an entry's remote list back to the pool (the entry keeps its first remote)."""
    cdef rlist *l
    if e.flags & FL_LIST:
        l = &s.rl[e.remote]
        e.remote = l.a[0]
        free(l.a)
        l.a = NULL
        l.n = 0
        l.cap = 0
        e.flags &= ~FL_LIST


cdef int ent_add_remote(sw_t *s, fdb_ent *e, uint32_t addr) noexcept nogil:
    """Append a remote (the caller checked it is not listed): a second remote moves the
    entry's remotes into a pool list. -1 when memory ran out."""
    cdef uint32_t i, idx, ncap
    cdef rlist *l
    cdef rlist *grown
    cdef uint32_t *a
    if not (e.flags & FL_LIST):
        idx = s.rl_cap
        for i in range(s.rl_cap):
            if s.rl[i].cap == 0:
                idx = i
                break
        if idx == s.rl_cap:
            ncap = s.rl_cap * 2 if s.rl_cap else 8
            grown = <rlist*>realloc(s.rl, ncap * sizeof(rlist))
            if grown == NULL:
                return -1
            memset(grown + s.rl_cap, 0, (ncap - s.rl_cap) * sizeof(rlist))
            s.rl = grown
            s.rl_cap = ncap
        a = <uint32_t*>malloc(4 * sizeof(uint32_t))
        if a == NULL:
            return -1
        l = &s.rl[idx]
        l.a = a
        l.cap = 4
        l.n = 2
        a[0] = e.remote
        a[1] = addr
        e.remote = idx
        e.flags |= FL_LIST
        return 0
    l = &s.rl[e.remote]
    if l.n == l.cap:
        a = <uint32_t*>realloc(l.a, l.cap * 2 * sizeof(uint32_t))
        if a == NULL:
            return -1
        l.a = a
        l.cap *= 2
    l.a[l.n] = addr
    l.n += 1
    return 0


cdef int ent_del_remote(sw_t *s, fdb_ent *e, uint32_t addr) noexcept nogil:
    """Remove one listed remote, keeping the others' order. Returns the number of remotes
    left, or -1 when `addr` is not listed."""
    cdef uint32_t i, j
    cdef rlist *l
    if e.port >= 0:
        return -1
    if not (e.flags & FL_LIST):
        return 0 if e.remote == addr else -1
    l = &s.rl[e.remote]
    for i in range(l.n):
        if l.a[i] == addr:
            for j in range(i + 1, l.n):
                l.a[j - 1] = l.a[j]
            l.n -= 1
            if l.n == 1:
                ent_drop_list(s, e)
            return <int>l.n if (e.flags & FL_LIST) else 1
    return -1


cdef fdb_ent *fdb_new(sw_t *s, uint32_t slot, uint64_t mac, uint8_t state, int32_t port,
                      uint32_t remote, double now) noexcept nogil:
    """Create an entry (the caller checked absence and room). NULL when out of memory."""
    cdef fdb_ent *e = fdb_insert(&s.fdb, fdb_key(slot, mac))
    if e == NULL:
        return NULL
    e.state = state
    e.port = port
    e.remote = remote if port < 0 else 0
    e.updated = now
    s.nets[slot].count += 1
    return e


cdef void fdb_delete(sw_t *s, fdb_ent *e) noexcept nogil:
    cdef uint32_t slot = <uint32_t>(e.key >> 48) - 1
    ent_drop_list(s, e)
    s.nets[slot].count -= 1
    fdb_remove(&s.fdb, e)


cdef uint64_t *fdb_keys(sw_t *s, int64_t slot, uint64_t *n) noexcept nogil:
    """Keys of the entries of network `slot` (all networks when -1), unsorted; malloc'd."""
    cdef fdb_tab *t = &s.fdb
    cdef uint64_t i, k = 0, key
    cdef uint64_t *out = <uint64_t*>malloc((t.count + 1) * sizeof(uint64_t))
    if out == NULL:
        n[0] = 0
        return NULL
    for i in range(t.cap):
        key = t.slots[i].key
        if key != 0 and (slot < 0 or (key >> 48) == <uint64_t>(slot + 1)):
            out[k] = key
            k += 1
    n[0] = k
    return out


# =============================================================================== events, outputs

cdef inline void ev_push(sw_t *s, uint8_t kind, uint32_t vni, uint64_t key, uint8_t okind,
                         uint32_t oval, uint8_t nkind, uint32_t nval) noexcept nogil:
    """Record an event; a full ring loses it (counted in events_lost), never blocks."""
    cdef event_t *ev
    if vx_unlikely(s.ev_count == s.ev_cap):
        s.ev_lost += 1
        return
    ev = &s.ev[(s.ev_head + s.ev_count) & (s.ev_cap - 1)]
    ev.kind = kind
    ev.okind = okind
    ev.nkind = nkind
    ev.vni = vni
    ev.key = key
    ev.oval = oval
    ev.nval = nval
    s.ev_count += 1


cdef inline txrec *out_push(sw_t *s) noexcept nogil:
    cdef txrec *grown
    cdef uint32_t ncap
    if vx_unlikely(s.n_out == s.out_cap):
        ncap = s.out_cap * 2
        grown = <txrec*>realloc(s.out, ncap * sizeof(txrec))
        if grown == NULL:
            return NULL
        s.out = grown
        s.out_cap = ncap
    s.n_out += 1
    return &s.out[s.n_out - 1]


cdef inline void emit_port(sw_t *s, int32_t p, uint8_t *data, uint32_t n) noexcept nogil:
    """Switch._to_port: one frame to a local port (shared buffer, no copy)."""
    cdef txrec *r = out_push(s)
    cdef port_t *pt
    if r == NULL:
        return
    r.data = data
    r.len = n
    r.port = p
    pt = &s.ports[p]
    pt.tx_packets += 1
    pt.tx_bytes += n


cdef inline void build_ipudp(uint8_t *h, uint32_t src, uint32_t dst, uint16_t sport,
                             uint16_t dport, uint32_t plen, uint64_t psum) noexcept nogil:
    """IPv4 + UDP headers in front of a `plen`-byte UDP payload whose (native-order) ones'
    complement sum is `psum`: byte for byte wire.outer_datagram() (ID 0, DF clear, TTL 64,
    UDP checksum over the RFC 768 pseudo-header, a computed 0 sent as 0xFFFF).

    Both checksums are computed from the field values, not by re-reading the bytes just
    stored: reading back a header assembled from narrow stores stalls store-to-load
    forwarding (that alone was a third of the encapsulation time)."""
    cdef uint32_t hs = ntohl(src), hd = ntohl(dst)
    cdef uint32_t ulen = (plen + 8) & 0xFFFF, tot = (plen + 28) & 0xFFFF
    cdef uint64_t addrs = (hs >> 16) + (hs & 0xFFFF) + (hd >> 16) + (hd & 0xFFFF)
    cdef uint16_t ipc = <uint16_t>~vx_csum_fold(0x4500 + tot + 0x4011 + addrs)
    cdef uint16_t uc = <uint16_t>~vx_csum_fold(vx_csum_be(psum) + addrs + 17 + ulen + sport
                                               + dport + ulen)
    if uc == 0:
        uc = 0xFFFF
    vx_put_be32(h, 0x45000000 | tot)     # version/IHL, TOS 0, total length
    vx_put_be32(h + 4, 0)                 # ID 0, flags/fragment 0
    vx_put_be32(h + 8, 0x40110000 | ipc)  # TTL 64, UDP, header checksum
    memcpy(h + 12, &src, 4)
    memcpy(h + 16, &dst, 4)
    vx_put_be32(h + 20, (<uint32_t>sport << 16) | dport)
    vx_put_be32(h + 24, (ulen << 16) | uc)


cdef void outer_csum(sw_t *s, txrec *r) noexcept nogil:
    """Fill in the UDP checksum encap() left out (RFC 768 over the pseudo-header, a computed
    0 sent as 0xFFFF): rebuild the record's IPv4+UDP header with the payload's sum, byte for
    byte what encap used to write (wire.outer_datagram)."""
    cdef uint8_t *h
    if not r.csum_todo:
        return
    h = &r.hdr[0] if r.inline_hdr else r.data - IPUDP_HLEN
    build_ipudp(h, s.local, r.dst, r.sport, s.dport, r.len, vx_csum_add(0, r.data, r.len))
    r.csum_todo = 0


cdef inline uint16_t flow_sport(sw_t *s, const uint8_t *f, uint32_t n) noexcept nogil:
    """wire.src_port: multiply-shift of the flow hash into [lo, hi] (udp_flow_src_port)."""
    return <uint16_t>(s.sport_lo + ((<uint64_t>vx_flow_hash(f, n) * s.sport_span) >> 32))


cdef void encap(sw_t *s, net_t *net, fdb_ent *e, uint8_t *f, uint32_t n) noexcept nogil:
    """The vxlan port's transmit (vxlan_xmit → vxlan_xmit_one, per remote): VXLAN header
    (RFC 7348 §5.1) written in the headroom in front of the frame, IPv4+UDP headers per
    destination. The first copy's headers go into the headroom too (contiguous datagram =
    the rx slot), later copies carry theirs in the output record and share the payload.

    The UDP checksum is left for outer_csum(): only a datagram that leaves through the raw
    socket (or is handed to Python) needs it; one sent with UDP GSO gets it from the kernel
    (or the NIC), and summing 64 KB of payload per super-frame for nothing was ~8 % of a
    core at 6 Gbit/s."""
    cdef uint8_t *payload = f - 8
    cdef uint32_t plen = n + 8
    cdef uint32_t cnt = ent_nremotes(s, e), i
    cdef uint32_t *rem = ent_remotes(s, e)
    cdef uint16_t sport
    cdef txrec *r
    memcpy(payload, net.hdr, 8)
    sport = flow_sport(s, f, n)
    for i in range(cnt):
        r = out_push(s)
        if r == NULL:
            return
        r.data = payload
        r.len = plen
        r.port = -1
        r.dst = rem[i]
        r.sport = sport
        r.csum_todo = 1
        if i == 0:
            r.inline_hdr = 0
            build_ipudp(payload - IPUDP_HLEN, s.local, rem[i], sport, s.dport, plen, 0)
        else:
            r.inline_hdr = 1
            build_ipudp(r.hdr, s.local, rem[i], sport, s.dport, plen, 0)
        s.ul_tx_packets += 1
        s.ul_tx_bytes += plen


# =============================================================================== forwarding

cdef inline bint arp_ok(const uint8_t *f, uint32_t n) noexcept nogil:
    """wire.parse_arp: long enough, Ethernet(1)/IPv4(0x0800), hlen 6, plen 4."""
    return (n >= 42 and f[14] == 0 and f[15] == 1 and f[16] == 0x08 and f[17] == 0
            and f[18] == 6 and f[19] == 4)


cdef inline void tflag(sw_t *s, uint8_t flag) noexcept nogil:
    """A decision that leaves no output, for the trace record (Switch._flag)."""
    if vx_unlikely(s.trace_on) and s.tf_n < 8:
        s.tf[s.tf_n] = flag
        s.tf_n += 1


cdef inline int drop(sw_t *s, int reason) noexcept nogil:
    s.drops[reason] += 1
    return reason


cdef int learn(sw_t *s, uint32_t slot, uint64_t mac, double now, int32_t port,
               uint32_t dst) noexcept nogil:
    """Fdb.learn + Switch._note_learning (br_fdb_update for ports, vxlan_snoop for the
    underlay): `port` >= 0 learns a local port, else the remote `dst` (network order)."""
    cdef net_t *net = &s.nets[slot]
    cdef fdb_ent *e = fdb_find(&s.fdb, fdb_key(slot, mac))
    cdef bint same
    cdef uint8_t okind, nkind
    cdef uint32_t oval, nval
    nkind = LOC_PORT if port >= 0 else LOC_IP
    nval = <uint32_t>port if port >= 0 else dst
    if e == NULL:
        if (net.limited and <int64_t>net.count >= net.maxaddress) \
                or fdb_new(s, slot, mac, ST_LEARNED, port, dst, now) == NULL:
            # full (addrmax: ENOSPC) — or out of memory, refused the same way
            tflag(s, TF_FDB_FULL)
            s.evc[EC_FDB_FULL] += 1
            return LR_FULL
        tflag(s, TF_LEARNED)
        s.evc[EC_LEARNED] += 1
        ev_push(s, EV_LEARNED, net.vni, mac, LOC_NONE, 0, nkind, nval)
        return LR_NEW
    if port >= 0:
        same = e.port == port
    else:
        same = e.port < 0 and ent_first_remote(s, e) == dst
    if same:
        if e.state == ST_LEARNED:
            e.updated = now
        return LR_REFRESH
    if e.state != ST_LEARNED:
        # kernel: a permanent/static entry never migrates (vxlan_snoop drops the packet;
        # the bridge forwards but keeps its entry)
        return LR_KEPT if port >= 0 else LR_CONFLICT
    if e.port >= 0:
        okind = LOC_PORT
        oval = <uint32_t>e.port
    else:
        okind = LOC_IP
        oval = ent_first_remote(s, e)
    ent_drop_list(s, e)
    e.port = port
    e.remote = dst if port < 0 else 0
    e.updated = now
    tflag(s, TF_MOVED)
    s.evc[EC_MOVED] += 1
    ev_push(s, EV_MOVED, net.vni, mac, okind, oval, nkind, nval)
    return LR_MOVED


cdef void arp_reduce(sw_t *s, uint32_t slot, net_t *net, int32_t port, const uint8_t *f,
                     uint8_t *scratch) noexcept nogil:
    """The kernel's arp_reduce (vxlan `proxy`): answer an ARP request from the neighbour
    table with arp_create(ARPOP_REPLY, ...) and never tunnel it (wire.arp_reply layout)."""
    cdef uint32_t tip = vx_be32(f + 38)
    cdef nb_ent *nb
    cdef fdb_ent *fe
    if (tip >> 24) == 127 or (tip >> 28) == 14:
        tflag(s, TF_ARP_CONSUMED)
        return                  # loopback or multicast target: consumed without a word
    nb = nb_find(&s.nb, nb_key(slot, tip))
    if nb == NULL:
        s.evc[EC_L3MISS] += 1
        ev_push(s, EV_L3MISS, net.vni, tip, LOC_NONE, 0, LOC_NONE, 0)
        tflag(s, TF_L3MISS)
        return
    fe = fdb_find(&s.fdb, fdb_key(slot, vx_mac48(nb.mac)))
    if fe != NULL and fe.port >= 0:
        tflag(s, TF_ARP_LOCAL)
        return                  # bridge-local neighbour: the endpoint itself answers
    s.evc[EC_PROXY_REPLIES] += 1
    tflag(s, TF_PROXY_REPLY)
    # Ethernet: to the requester (ARP sha), from the answered MAC, type ARP
    memcpy(scratch, f + 22, 6)
    memcpy(scratch + 6, nb.mac, 6)
    scratch[12] = 0x08
    scratch[13] = 0x06
    # htype 1, ptype IPv4, hlen 6, plen 4, op reply
    scratch[14] = 0
    scratch[15] = 1
    scratch[16] = 0x08
    scratch[17] = 0
    scratch[18] = 6
    scratch[19] = 4
    scratch[20] = 0
    scratch[21] = 2
    memcpy(scratch + 22, nb.mac, 6)       # sha = answer
    memcpy(scratch + 28, f + 38, 4)       # spa = requested IP
    memcpy(scratch + 32, f + 22, 6)       # tha = requester
    memcpy(scratch + 38, f + 28, 4)       # tpa = requester's IP
    emit_port(s, port, scratch, 42)


cdef int core_port(sw_t *s, int32_t port, uint8_t *f, uint32_t n, double now,
                   uint8_t *scratch) noexcept nogil:
    """Switch._from_port in C. `f` must have OUTER_HLEN writable bytes in front of it and
    `scratch` 42 bytes for an ARP reply; outputs are appended to s.out. Returns the drop
    reason, or -1."""
    cdef port_t *pt
    cdef uint32_t slot, i
    cdef net_t *net
    cdef uint64_t dst, src
    cdef bint mcast, is_arp, flood
    cdef fdb_ent *e
    cdef int32_t p
    if port < 0 or <uint32_t>port >= s.ports_cap or s.ports[port].net < 0:
        return drop(s, DR_UNKNOWN_PORT)
    pt = &s.ports[port]
    slot = <uint32_t>pt.net
    net = &s.nets[slot]
    pt.rx_packets += 1
    pt.rx_bytes += n
    if n < 14:
        return drop(s, DR_RUNT)
    if <int64_t>n > net.maxlen:
        return drop(s, DR_OVERSIZE)
    src = vx_mac48(f + 6)
    if (f[6] & 1) or src == 0:          # is_valid_ether_addr
        return drop(s, DR_BAD_SRC_MAC)
    is_arp = f[12] == 0x08 and f[13] == 0x06
    if is_arp and not arp_ok(f, n):
        return drop(s, DR_BAD_ARP)

    # Bridge learning: source MAC -> ingress port (br_fdb_update).
    learn(s, slot, src, now, port, 0)

    # Bridge part: which local ports, and does the frame reach the "vxlan port"?
    dst = vx_mac48(f)
    mcast = f[0] & 1
    e = fdb_find(&s.fdb, fdb_key(slot, dst))
    flood = True
    if not mcast and e != NULL:
        if e.port >= 0:
            if e.port == port:
                return drop(s, DR_HAIRPIN)
            emit_port(s, e.port, f, n)
            return -1
        flood = False                   # known remote: straight to the vxlan port
    if flood:
        for i in range(net.nports):
            p = net.ports[i]
            if p != port:
                emit_port(s, p, f, n)

    # The "vxlan port" (vxlan_xmit). With proxy on, every ARP frame goes to arp_reduce,
    # which answers requests and consumes everything else: ARP never crosses the underlay.
    if net.proxy and is_arp:
        if f[20] == 0 and f[21] == 1:
            arp_reduce(s, slot, net, port, f, scratch)
            return -1
        if s.arp_consume:
            tflag(s, TF_ARP_CONSUMED)
            return -1
    if e == NULL or e.port >= 0:
        e = fdb_find(&s.fdb, fdb_key(slot, 0))   # all-zeros entry: the flood list
    if e == NULL:
        if not mcast:
            s.evc[EC_L2MISS] += 1
            ev_push(s, EV_L2MISS, net.vni, dst, LOC_NONE, 0, LOC_NONE, 0)
            tflag(s, TF_L2MISS)
        return -1
    encap(s, net, e, f, n)
    return -1


cdef inline bint allowed(sw_t *s, uint32_t src) noexcept nogil:
    cdef uint32_t h = ntohl(src), i
    for i in range(s.n_allow):
        if (h & s.allow_mask[i]) == s.allow_net[i]:
            return True
    return False


cdef inline int32_t vmap_find(sw_t *s, uint32_t vni) noexcept nogil:
    cdef uint32_t i
    cdef uint64_t v
    if vni == 0:
        return -1
    i = (vni * <uint32_t>0x9E3779B1) >> s.vmap_shift
    while True:
        v = s.vmap[i]
        if v == 0:
            return -1
        if (v >> 32) == vni:
            return <int32_t>(v & 0xFFFFFFFFu)
        i = (i + 1) & s.vmap_mask


cdef int core_underlay(sw_t *s, uint32_t src, uint8_t *d, uint32_t n,
                       double now) noexcept nogil:
    """Switch._from_underlay in C: `d` is the UDP payload (VXLAN header + frame) received
    from `src` (network order); outputs are appended to s.out. Checks in vxlan_rcv's order
    (RFC 7348 §5.1, §4.1: decapsulate, learn, deliver; never back to the underlay).
    Returns the drop reason, or -1."""
    cdef int32_t sl
    cdef uint32_t slot, i, fl
    cdef net_t *net
    cdef uint8_t *f
    cdef uint64_t dst, smac
    cdef fdb_ent *e
    s.ul_rx_packets += 1
    s.ul_rx_bytes += n
    if s.n_allow and not allowed(s, src):
        return drop(s, DR_NOT_ALLOWED)
    if n < 8:
        return drop(s, DR_SHORT_HEADER)
    if not (d[0] & 0x08):
        return drop(s, DR_BAD_FLAGS)
    sl = vmap_find(s, (<uint32_t>d[4] << 16) | (<uint32_t>d[5] << 8) | d[6])
    if sl < 0:
        return drop(s, DR_UNKNOWN_VNI)
    if s.strict and ((d[0] & ~0x08) | d[1] | d[2] | d[3] | d[7]):
        return drop(s, DR_RESERVED_BITS)
    slot = <uint32_t>sl
    net = &s.nets[slot]
    f = d + 8
    fl = n - 8
    if fl < 14:
        return drop(s, DR_RUNT)
    if <int64_t>fl > net.maxlen:
        return drop(s, DR_OVERSIZE)
    smac = vx_mac48(f + 6)
    if (f[6] & 1) or smac == 0:
        return drop(s, DR_BAD_SRC_MAC)
    if f[12] == 0x08 and f[13] == 0x06 and not arp_ok(f, fl):
        return drop(s, DR_BAD_ARP)
    if net.learning:
        if learn(s, slot, smac, now, -1, src) == LR_CONFLICT:
            return drop(s, DR_FDB_CONFLICT)
    if not (f[0] & 1):
        dst = vx_mac48(f)
        e = fdb_find(&s.fdb, fdb_key(slot, dst))
        if e != NULL:
            if e.port >= 0:
                emit_port(s, e.port, f, fl)
                return -1
            return drop(s, DR_REMOTE_DEST)  # split horizon: never back to the underlay
    for i in range(net.nports):
        emit_port(s, net.ports[i], f, fl)
    return -1


# =============================================================================== trace

cdef int trace_alloc(sw_t *s) noexcept nogil:
    """The trace ring is only allocated the first time tracing is switched on."""
    if s.tr != NULL:
        return 0
    s.tr = <trace_rec*>calloc(TRACE_RING_C, sizeof(trace_rec))
    s.tr_data = <uint8_t*>vx_table_alloc(<size_t>TRACE_RING_C * TRACE_SNAP_C)
    s.tr_out_cap = TRACE_RING_C
    s.tr_out = <trace_out*>malloc(s.tr_out_cap * sizeof(trace_out))
    if s.tr == NULL or s.tr_data == NULL or s.tr_out == NULL:
        free(s.tr)
        vx_table_free(s.tr_data, <size_t>TRACE_RING_C * TRACE_SNAP_C)
        free(s.tr_out)
        s.tr = NULL
        s.tr_data = NULL
        s.tr_out = NULL
        s.tr_out_cap = 0
        return -1
    return 0


cdef void trace_record(sw_t *s, double now, uint8_t src_kind, int64_t src, int32_t vni,
                       const uint8_t *data, uint32_t n, int reason,
                       uint32_t first_out) noexcept nogil:
    """Switch._record: one record per frame or datagram into a bounded ring whose overflow
    is counted (trace_lost), never waited on; the data cut at TRACE_SNAP bytes."""
    cdef trace_rec *r
    cdef trace_out *grown
    cdef uint32_t i, k, ncap
    cdef uint32_t nout = s.n_out - first_out
    if s.tr_count >= TRACE_RING_C:
        s.tr_lost += 1
        return
    if s.tr_out_n + nout > s.tr_out_cap:
        ncap = s.tr_out_cap
        while s.tr_out_n + nout > ncap:
            ncap *= 2
        grown = <trace_out*>realloc(s.tr_out, ncap * sizeof(trace_out))
        if grown == NULL:
            s.tr_lost += 1
            return
        s.tr_out = grown
        s.tr_out_cap = ncap
    r = &s.tr[s.tr_count]
    r.now = now
    r.src = src
    r.src_kind = src_kind
    r.vni = vni
    r.length = n
    r.snap = n if n < TRACE_SNAP_C else TRACE_SNAP_C
    r.reason = <int8_t>reason
    r.nflags = s.tf_n
    for i in range(s.tf_n):
        r.flags[i] = s.tf[i]
    memcpy(s.tr_data + <size_t>s.tr_count * TRACE_SNAP_C, data, r.snap)
    r.out_start = s.tr_out_n
    r.out_count = nout
    for i in range(nout):
        k = s.tr_out_n + i
        s.tr_out[k].port = s.out[first_out + i].port
        s.tr_out[k].dst = s.out[first_out + i].dst
        s.tr_out[k].sport = s.out[first_out + i].sport
    s.tr_out_n += nout
    s.tr_count += 1


cdef void core_from_port(sw_t *s, int32_t port, int64_t tsrc, uint8_t *f, uint32_t n,
                         double now, uint8_t *scratch) noexcept nogil:
    """Switch.from_port: the core, plus the trace record when tracing is on. `tsrc` is the
    port as the caller named it (what the record's source says; = `port` on the burst
    path)."""
    cdef uint32_t first
    cdef int reason
    cdef int32_t vni = -1
    if vx_likely(not s.trace_on):
        core_port(s, port, f, n, now, scratch)
        return
    first = s.n_out
    s.tf_n = 0
    reason = core_port(s, port, f, n, now, scratch)
    if port >= 0 and <uint32_t>port < s.ports_cap and s.ports[port].net >= 0:
        vni = <int32_t>s.nets[s.ports[port].net].vni
    trace_record(s, now, LOC_PORT, tsrc, vni, f, n, reason, first)


cdef void core_from_underlay(sw_t *s, uint32_t src, uint8_t *d, uint32_t n,
                             double now) noexcept nogil:
    """Switch.from_underlay: the core, plus the trace record when tracing is on."""
    cdef uint32_t first
    cdef int reason
    cdef int32_t vni = -1
    if vx_likely(not s.trace_on):
        core_underlay(s, src, d, n, now)
        return
    first = s.n_out
    s.tf_n = 0
    reason = core_underlay(s, src, d, n, now)
    if n >= 8:
        vni = <int32_t>((<uint32_t>d[4] << 16) | (<uint32_t>d[5] << 8) | d[6])
    trace_record(s, now, LOC_IP, src, vni, d, n, reason, first)


# =============================================================================== offloads
#
# Issue #5, dataplane/offload.py is the readable reference and the differential tests hold
# these functions to it byte for byte. The forwarding core never sees a super-frame: a TSO
# frame from a TAP is cut into wire-sized segments in front of it (tcp_gso_segment), and
# segments to a TAP are merged again behind it (tcp_gro_receive), so every decision, counter
# and trace record stays per wire frame and equal to the reference's.

cdef inline uint32_t le16(const uint8_t *p) noexcept nogil:
    """virtio_net_hdr fields are little-endian (TUN's default on x86, no TUNSETVNETBE)."""
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8)


cdef inline uint16_t csum_done(uint64_t be_sum) noexcept nogil:
    """The checksum field value for a big-endian-arithmetic sum: folded, complemented."""
    return <uint16_t>(~vx_csum_fold(be_sum) & 0xFFFF)


cdef inline uint64_t data_sum(const uint8_t *p, size_t n) noexcept nogil:
    """Big-endian-arithmetic ones' complement sum of n bytes (p = an even offset)."""
    return vx_csum_be(vx_csum_add(0, p, n))


cdef inline uint64_t addr_sum(const uint8_t *p, uint32_t n) noexcept nogil:
    """Sum of the n/2 big-endian words at p (pseudo-header addresses)."""
    cdef uint64_t a = 0
    cdef uint32_t i = 0
    while i < n:
        a += vx_be16(p + i)
        i += 2
    return a


cdef int vnet_csum(const uint8_t *h, uint8_t *f, uint32_t n) noexcept nogil:
    """F_NEEDS_CSUM without GSO: finish the checksum the sender's stack left partial (the
    field holds the pseudo-header sum; sum from csum_start on and store it complemented at
    csum_start + csum_offset), as skb_checksum_help does before a device without checksum
    offload — including its CSUM_MANGLED_0: a computed 0 goes out as 0xFFFF (RFC 768).
    Returns -1, or the VE_ reason."""
    cdef uint32_t cs = le16(h + 6), co = le16(h + 8)
    cdef uint16_t c
    if cs >= n or cs + co + 2 > n:
        return VE_BAD_CSUM_OFFSETS
    c = csum_done(data_sum(f + cs, n - cs))
    vx_put_be16(f + cs + co, c if c != 0 else 0xFFFF)
    return -1


cdef int tso_segment(const uint8_t *h, const uint8_t *f, uint32_t n, uint8_t *out,
                     uint32_t *offs, uint32_t *lens) noexcept nogil:
    """offload.segment() for GSO_TCPV4/GSO_TCPV6 (tcp_gso_segment + inet_gso_segment /
    ipv6_gso_segment): cut a TSO super-frame into gso_size payload chunks, each behind a copy
    of the headers with its own IPv4 total length, ID (+1 per segment) and header checksum
    or IPv6 payload length, TCP sequence number, flags (FIN/PSH only on the last, CWR only on
    the first) and a complete TCP checksum. Segment k is written at out + offs[k] with
    HEADROOM free bytes in front (room for encapsulation); `out` holds SEG_BUF bytes.
    Returns the number of segments, or -(1 + VE_ reason)."""
    cdef uint32_t gso = h[1] & 0x7F, g = le16(h + 4)
    cdef uint32_t ihl = 0, l3 = 14, l4, doff, hl, plen, nseg, i, clen, tcplen, stride
    cdef uint32_t et, tags
    cdef uint32_t seq0, id0 = 0
    cdef uint64_t addrs, ps
    cdef uint8_t fl, b
    cdef uint8_t *o
    cdef bint v4
    if gso == 1:
        v4 = True
    elif gso == 4:
        v4 = False
    else:
        return -(1 + VE_UNSUPPORTED_GSO)
    if n < 14:
        return -(1 + VE_BAD_IP)
    # Up to two VLAN tags (802.1Q, 802.1ad): a VLAN device on the TAP inherits its TSO
    # (tun's vlan_features) and tun_put_user writes the tag inline.
    et = vx_be16(f + 12)
    for tags in range(2):
        if et != 0x8100 and et != 0x88A8:
            break
        if n < l3 + 4:
            return -(1 + VE_BAD_IP)
        et = vx_be16(f + l3 + 2)
        l3 += 4
    if et != (<uint32_t>0x0800 if v4 else <uint32_t>0x86DD):
        return -(1 + VE_GSO_MISMATCH)
    if v4:
        if n < l3 + 20 or (f[l3] >> 4) != 4:
            return -(1 + VE_BAD_IP)
        ihl = (f[l3] & 0x0F) * 4
        if ihl < 20 or l3 + ihl > n or f[l3 + 9] != 6:
            return -(1 + VE_BAD_IP)
        l4 = l3 + ihl
        addrs = addr_sum(f + l3 + 12, 8)
        id0 = vx_be16(f + l3 + 4)
    else:
        if n < l3 + 40 or (f[l3] >> 4) != 6 or f[l3 + 6] != 6:
            return -(1 + VE_BAD_IP)
        l4 = l3 + 40
        addrs = addr_sum(f + l3 + 8, 32)
    if l4 + 20 > n:
        return -(1 + VE_BAD_TCP)
    doff = (f[l4 + 12] >> 4) * 4
    if doff < 20 or l4 + doff > n:
        return -(1 + VE_BAD_TCP)
    hl = l4 + doff
    if g == 0:
        return -(1 + VE_ZERO_GSO)
    plen = n - hl
    if plen == 0:
        return -(1 + VE_EMPTY_GSO)
    nseg = (plen + g - 1) // g
    if nseg > MAX_TSO_SEGS:
        return -(1 + VE_TOO_MANY)
    stride = (HEADROOM + hl + g + 63) & ~(<uint32_t>63)
    if <uint64_t>nseg * stride > SEG_BUF:      # cannot happen within the limits above
        return -(1 + VE_TOO_MANY)
    seq0 = vx_be32(f + l4 + 4)
    fl = f[l4 + 13]
    for i in range(nseg):
        clen = g if i < nseg - 1 else plen - i * g
        offs[i] = i * stride + HEADROOM
        lens[i] = hl + clen
        o = out + offs[i]
        memcpy(o, f, hl)
        # the chunk's sum comes with its copy (doff is a multiple of 4, so the chunk starts
        # at an even offset of the TCP segment and its sum can be added on its own)
        ps = vx_csum_be(vx_csum_copy(0, o + hl, f + hl + i * g, clen))
        tcplen = doff + clen
        if v4:
            vx_put_be16(o + l3 + 2, ihl + tcplen)
            vx_put_be16(o + l3 + 4, (id0 + i) & 0xFFFF)
            o[l3 + 10] = 0
            o[l3 + 11] = 0
            vx_put_be16(o + l3 + 10, csum_done(data_sum(o + l3, ihl)))
            ps += addrs + 6 + (tcplen & 0xFFFF)   # the pseudo-header length is 16 bits
        else:
            vx_put_be16(o + l3 + 4, tcplen)
            ps += addrs + 6 + (tcplen >> 16) + (tcplen & 0xFFFF)
        vx_put_be32(o + l4 + 4, seq0 + i * g)
        b = fl
        if i < nseg - 1:
            b &= ~(<uint8_t>0x09)            # FIN, PSH: last segment only
        if i > 0:
            b &= ~(<uint8_t>0x80)            # CWR: first segment only
        o[l4 + 13] = b
        o[l4 + 16] = 0
        o[l4 + 17] = 0
        ps += data_sum(o + l4, doff)
        vx_put_be16(o + l4 + 16, csum_done(ps))
    return <int>nseg


cdef inline bint tcp4_coalescible(sw_t *s, const uint8_t *f, uint32_t n) noexcept nogil:
    """offload.coalesce()'s test for a frame that may join a run: plain IPv4 (no options,
    not a fragment, no Ethernet padding, valid header checksum), TCP with data and only
    ACK or ACK|PSH, and a valid TCP checksum — a merged frame goes up with F_NEEDS_CSUM,
    which the receiving stack takes as "verified" (CHECKSUM_PARTIAL), so a corrupt segment
    must never be merged: like tcp4_gro_receive, check before merging."""
    cdef uint32_t doff, fl
    if n < 54 or f[12] != 0x08 or f[13] != 0x00 or f[14] != 0x45 or f[23] != 6:
        return False
    if (vx_be16(f + 20) & 0x3FFF) != 0 or vx_be16(f + 16) != n - 14:
        return False
    if vx_csum_fold(vx_csum_add(0, f + 14, 20)) != 0xFFFF:
        return False
    if f[46] & 0x0F:
        return False        # AccECN's AE bit / reserved bits: merging would lose them
    doff = (f[46] >> 4) * 4
    if doff < 20 or 34 + doff >= n:
        return False
    fl = f[47]
    if not (fl & 0x10) or (fl & ~(<uint32_t>0x18)):
        return False
    if vx_csum_fold(addr_sum(f + 26, 8) + 6 + (n - 34) + data_sum(f + 34, n - 34)) != 0xFFFF:
        s.offc[OC_CSUM_BAD] += 1
        return False
    return True


cdef inline bint run_extends(run_t *run, const uint8_t *h, const uint8_t *q,
                             uint32_t qn) noexcept nogil:
    """offload.coalesce(): does frame q (coalescible) continue the run headed by h?"""
    cdef uint32_t doff = (q[46] >> 4) * 4
    cdef uint32_t qp = qn - 34 - doff
    if run.last_psh or not run.last_full or doff != run.doff or qp > run.g:
        return False
    if run.n >= COALESCE_MAX or 20 + doff + run.bytes + qp > 65535:
        return False
    if vx_be32(q + 38) != run.next_seq:
        return False
    if memcmp(q, h, 14) != 0 or q[15] != h[15] or q[22] != h[22] \
            or (q[20] & 0x40) != (h[20] & 0x40) or memcmp(q + 26, h + 26, 8) != 0:
        return False
    if memcmp(q + 34, h + 34, 4) != 0 or memcmp(q + 42, h + 42, 4) != 0 \
            or memcmp(q + 48, h + 48, 2) != 0 or memcmp(q + 54, h + 54, doff - 20) != 0:
        return False
    return True


cdef inline void run_add(run_t *run, const uint8_t *q, uint32_t qn) noexcept nogil:
    cdef uint32_t qp = qn - 34 - run.doff
    run.n += 1
    run.bytes += qp
    run.next_seq = vx_be32(q + 38) + qp
    run.last_psh = (q[47] & 0x08) != 0
    run.last_full = qp == run.g


cdef inline void run_start(run_t *run, int32_t idx, const uint8_t *h, uint32_t hn) noexcept nogil:
    run.head = idx
    run.tail = idx
    run.n = 0
    run.bytes = 0
    run.doff = (h[46] >> 4) * 4
    run.g = hn - 34 - run.doff
    run_add(run, h, hn)


cdef uint32_t run_header(run_t *run, const uint8_t *h, uint8_t last_psh, uint8_t *vh,
                         uint8_t *out) noexcept nogil:
    """The merged frame's headers for a run of >= 2 (into `out`, 34 + doff bytes) and its
    virtio_net_hdr (into `vh`, 10 bytes): total length and IPv4 checksum for the merged size,
    PSH if the last member had it, and the TCP checksum field left as the pseudo-header sum
    (not complemented) with F_NEEDS_CSUM and csum_start/offset pointing at it, as
    tcp_v4_send_check leaves a CHECKSUM_PARTIAL packet — the form virtio_net_hdr_to_skb
    expects (wireguard-go's tun offload does the same). Returns the header length."""
    cdef uint32_t hl = 34 + run.doff
    cdef uint32_t tcplen = run.doff + run.bytes
    memcpy(out, h, hl)
    vx_put_be16(out + 16, 20 + tcplen)
    out[24] = 0
    out[25] = 0
    vx_put_be16(out + 24, csum_done(data_sum(out + 14, 20)))
    if last_psh:
        out[47] |= 0x08
    vx_put_be16(out + 50, vx_csum_fold(addr_sum(h + 26, 8) + 6 + tcplen))
    vh[0] = 1                                  # VIRTIO_NET_HDR_F_NEEDS_CSUM
    vh[1] = 1                                  # VIRTIO_NET_HDR_GSO_TCPV4
    vh[2] = <uint8_t>hl
    vh[3] = <uint8_t>(hl >> 8)
    vh[4] = <uint8_t>run.g
    vh[5] = <uint8_t>(run.g >> 8)
    vh[6] = 34                                 # csum_start: the TCP header
    vh[7] = 0
    vh[8] = 16                                 # csum_offset: TCP checksum field
    vh[9] = 0
    return hl


cdef void tap_writev(sw_t *s, port_t *pt, iovec *v, int cnt, uint32_t frames) noexcept nogil:
    """One writev() to a TAP, counted per wire frame it carries (like transmit's write())."""
    cdef ssize_t w
    cdef int err
    if pt.fd < 0 or pt.gone:
        pt.tx_dropped += frames
        return
    w = vx_writev(pt.fd, v, cnt)
    if w >= 0:
        return
    err = errno
    if err == EAGAIN:
        pt.tx_dropped += frames
    elif err == EBADF or err == EBADFD or err == ENODEV or err == ENXIO:
        pt.tx_errors += frames
        pt.gone = 1
        pt.fd = -1
    else:
        pt.tx_errors += frames


cdef uint8_t ZERO_VNET[12]


cdef void tap_single(sw_t *s, port_t *pt, uint8_t *data, uint32_t n) noexcept nogil:
    """A frame to a vnet TAP on its own: a zero virtio_net_hdr (no offload) in front."""
    cdef iovec *v = s.wv
    v[0].iov_base = ZERO_VNET
    v[0].iov_len = pt.vnet
    v[1].iov_base = data
    v[1].iov_len = n
    tap_writev(s, pt, v, 2, 1)


cdef void run_flush(sw_t *s, int32_t port) noexcept nogil:
    """Write port's open run: alone if it has one member, else as one GSO_TCPV4 frame."""
    cdef run_t *run = &s.runs[port]
    cdef port_t *pt = &s.ports[port]
    cdef txrec *r
    cdef txrec *h
    cdef iovec *v = s.wv
    cdef uint8_t vh[12]
    cdef uint8_t hdr[128]
    cdef uint32_t hl, k = 2
    cdef int32_t i
    if run.head < 0:
        return
    h = &s.out[run.head]
    if run.n == 1:
        tap_single(s, pt, h.data, h.len)
    else:
        memset(vh, 0, 12)
        hl = run_header(run, h.data, run.last_psh, vh, hdr)
        v[0].iov_base = vh
        v[0].iov_len = pt.vnet
        v[1].iov_base = hdr
        v[1].iov_len = hl
        i = run.head
        while i >= 0:
            r = &s.out[i]
            v[k].iov_base = r.data + hl
            v[k].iov_len = r.len - hl
            k += 1
            i = r.next
        tap_writev(s, pt, v, <int>k, run.n)
        s.offc[OC_COALESCED_FRAMES] += 1
        s.offc[OC_COALESCED_SEGMENTS] += run.n
    run.head = -1


cdef void tap_frame(sw_t *s, int32_t idx) noexcept nogil:
    """transmit() for a record to a vnet TAP: extend the port's open run, or close it and
    start another, or write the frame alone (order per port is kept)."""
    cdef txrec *r = &s.out[idx]
    cdef run_t *run = &s.runs[r.port]
    cdef port_t *pt = &s.ports[r.port]
    r.next = -1
    if not s.tap_coalesce:
        tap_single(s, pt, r.data, r.len)
        return
    if not tcp4_coalescible(s, r.data, r.len):
        run_flush(s, r.port)
        tap_single(s, pt, r.data, r.len)
        return
    if run.head >= 0 and run_extends(run, s.out[run.head].data, r.data, r.len):
        s.out[run.tail].next = idx
        run.tail = idx
        run_add(run, r.data, r.len)
        return
    run_flush(s, r.port)
    run_start(run, idx, r.data, r.len)
    if not run.listed:
        run.listed = 1
        s.run_ports[s.n_run_ports] = r.port
        s.n_run_ports += 1


cdef int runs_reserve(sw_t *s) noexcept nogil:
    """runs[] as long as ports[] (ports grow in add_port)."""
    cdef run_t *grown
    cdef int32_t *pl
    cdef uint32_t i
    if s.runs_cap >= s.ports_cap:
        return 0
    grown = <run_t*>realloc(s.runs, s.ports_cap * sizeof(run_t))
    if grown == NULL:
        return -1
    s.runs = grown
    pl = <int32_t*>realloc(s.run_ports, s.ports_cap * sizeof(int32_t))
    if pl == NULL:
        return -1
    s.run_ports = pl
    for i in range(s.runs_cap, s.ports_cap):
        memset(&s.runs[i], 0, sizeof(run_t))
        s.runs[i].head = -1
    s.runs_cap = s.ports_cap
    return 0


cdef int gso_tables(sw_t *s) noexcept nogil:
    """The per-source-port socket table (256 KiB + 256 KiB), allocated on first need: by
    set_offload(udp_gso=True), or by the first datagram too big for the raw socket."""
    cdef int32_t *fds
    cdef uint32_t *used
    cdef uint32_t i
    if s.gso_fd != NULL:
        return 0
    fds = <int32_t*>malloc(65536 * sizeof(int32_t))
    used = <uint32_t*>calloc(65536, sizeof(uint32_t))
    if fds == NULL or used == NULL:
        free(fds)
        free(used)
        return -1
    for i in range(65536):
        fds[i] = -1
    s.gso_fd = fds
    s.gso_used = used
    return 0


cdef int gso_socket(sw_t *s, uint16_t sport) noexcept nogil:
    """The UDP socket that sends from (local, sport), opened on first use; -1 when there is
    none (bind refused: the port is someone else's; or GSO_SOCK_MAX reached) and the raw
    socket must be used instead."""
    cdef int fd = s.gso_fd[sport]
    if fd >= 0:
        s.gso_used[sport] = s.gso_epoch
        return fd
    if fd == -2 or s.gso_nsock >= GSO_SOCK_MAX:
        return -1
    fd = vx_gso_socket(s.local, sport, 4 << 20)
    if fd < 0:
        s.gso_fd[sport] = -2        # retried after GSO_IDLE_TICKS (offload_gc)
        s.gso_used[sport] = s.gso_epoch
        return -1
    s.gso_fd[sport] = fd
    s.gso_used[sport] = s.gso_epoch
    s.gso_nsock += 1
    return fd


cdef void gso_close_all(sw_t *s) noexcept nogil:
    cdef uint32_t sp
    if s.gso_fd == NULL:
        return
    for sp in range(65536):
        if s.gso_fd[sp] >= 0:
            vx_close(s.gso_fd[sp])
        s.gso_fd[sp] = -1
    s.gso_nsock = 0


cdef uint32_t gso_run(sw_t *s, uint32_t i) noexcept nogil:
    """How many underlay records from s.out[i] on can go out as one UDP_SEGMENT send:
    contiguous, same destination and source port, equal UDP payload lengths (the last may
    be shorter), at most GSO_MAX_SEGS and 64 KB of UDP payload in all."""
    cdef txrec *r = &s.out[i]
    cdef txrec *q
    cdef uint32_t k = 1, total = r.len
    while i + k < s.n_out and k < GSO_MAX_SEGS:
        q = &s.out[i + k]
        if q.port >= 0 or q.dst != r.dst or q.sport != r.sport or q.len > r.len \
                or total + q.len > 65507:
            break
        total += q.len
        k += 1
        if q.len < r.len:
            break
    return k


cdef void raw_queue(sw_t *s, uint32_t nb, uint32_t idx) noexcept nogil:
    """Queue underlay record s.out[idx] as message `nb` of the next sendmmsg() batch."""
    cdef mmsghdr *m = &s.tx_msgs[nb]
    cdef iovec *v = &s.tx_iov[2 * nb]
    cdef txrec *r = &s.out[idx]
    s.tx_rec[nb] = idx
    if s.tx_raw:
        outer_csum(s, r)
    s.tx_addr[nb].sin_family = AF_INET
    s.tx_addr[nb].sin_port = 0
    s.tx_addr[nb].sin_addr.s_addr = r.dst
    memset(&m.msg_hdr, 0, sizeof(msghdr))
    m.msg_hdr.msg_name = &s.tx_addr[nb]
    m.msg_hdr.msg_namelen = sizeof(sockaddr_in)
    m.msg_hdr.msg_iov = v
    if not s.tx_raw:            # UDP socket: the kernel adds IPv4 + UDP
        s.tx_addr[nb].sin_port = htons(s.dport)
        v[0].iov_base = r.data
        v[0].iov_len = r.len
        m.msg_hdr.msg_iovlen = 1
    elif r.inline_hdr:
        v[0].iov_base = r.hdr
        v[0].iov_len = IPUDP_HLEN
        v[1].iov_base = r.data
        v[1].iov_len = r.len
        m.msg_hdr.msg_iovlen = 2
    else:
        v[0].iov_base = r.data - IPUDP_HLEN
        v[0].iov_len = r.len + IPUDP_HLEN
        m.msg_hdr.msg_iovlen = 1


cdef uint32_t raw_flush(sw_t *s, uint32_t nb) noexcept nogil:
    """sendmmsg() the `nb` queued messages; returns 0 (the new queue length)."""
    cdef uint32_t sent = 0
    cdef int rc, err
    while sent < nb:
        rc = sendmmsg(s.tx_fd, s.tx_msgs + sent, nb - sent, MSG_DONTWAIT)
        if rc > 0:
            sent += <uint32_t>rc
            continue
        err = errno
        if rc < 0 and err == EINTR:
            continue
        if rc < 0 and (err == EAGAIN or err == ENOBUFS):
            s.ul_tx_dropped += nb - sent
            break
        if not (err == EMSGSIZE and s.tx_raw and udp_one(s, &s.out[s.tx_rec[sent]])):
            s.ul_tx_errors += 1     # this datagram failed (EMSGSIZE, unreachable...)
        sent += 1
    return 0


cdef bint udp_one(sw_t *s, txrec *r) noexcept nogil:
    """A datagram the raw socket refused as too big for the path (raw_send_hdrinc: EMSGSIZE)
    goes out on the flow's UDP socket instead, where the kernel fragments it — what the
    kernel's vxlan does with `df unset` (its default), offloads or not. True if it was sent."""
    cdef int fd
    if gso_tables(s) < 0:
        return False
    fd = gso_socket(s, r.sport)
    return fd >= 0 and vx_send_one(fd, r.dst, s.dport, r.data, r.len) >= 0


cdef void udp_each(sw_t *s, int fd, uint32_t i, uint32_t k) noexcept nogil:
    """Records s.out[i:i+k] one sendto() each on the flow's UDP socket (GSO refused)."""
    cdef uint32_t j
    cdef ssize_t w
    cdef int err
    cdef txrec *r
    for j in range(k):
        r = &s.out[i + j]
        w = vx_send_one(fd, r.dst, s.dport, r.data, r.len)
        if w < 0:
            err = errno
            if err == EAGAIN or err == ENOBUFS:
                s.ul_tx_dropped += 1
            else:
                s.ul_tx_errors += 1


cdef bint gso_send(sw_t *s, int fd, uint32_t i, uint32_t k) noexcept nogil:
    """Records s.out[i:i+k] (a gso_run) as one UDP_SEGMENT send. False: the kernel refused
    GSO itself and the caller sends them one by one (udp_each). EIO (before Linux 6.11,
    udp_send_skb: the route's device cannot checksum) also switches udp_gso off, since every
    later send would fail the same way; EINVAL/EMSGSIZE (a segment bigger than the path MTU
    allows) remembers the size, so later runs that big skip the attempt."""
    cdef iovec *v = s.wv
    cdef uint32_t j
    cdef ssize_t w
    cdef int err
    cdef txrec *r = &s.out[i]
    for j in range(k):
        v[j].iov_base = s.out[i + j].data
        v[j].iov_len = s.out[i + j].len
    w = vx_send_gso(fd, r.dst, s.dport, v, <int>k, <uint16_t>r.len)
    if w >= 0:
        s.offc[OC_GSO_SENDS] += 1
        s.offc[OC_GSO_DATAGRAMS] += k
        return True
    err = errno
    if err == EAGAIN or err == ENOBUFS:
        s.ul_tx_dropped += k
        return True
    if err == EIO or err == EINVAL or err == EMSGSIZE:
        s.offc[OC_GSO_FALLBACKS] += 1
        if err == EIO:
            s.udp_gso = 0
        elif r.len < s.gso_refused:
            s.gso_refused = r.len
        return False
    s.ul_tx_errors += k
    return True


# =============================================================================== helpers

cdef inline str mac48_str(uint64_t m):
    return "%02x:%02x:%02x:%02x:%02x:%02x" % (
        (m >> 40) & 0xFF, (m >> 32) & 0xFF, (m >> 24) & 0xFF,
        (m >> 16) & 0xFF, (m >> 8) & 0xFF, m & 0xFF)


cdef inline uint64_t mac_bytes48(bytes m):
    cdef const unsigned char *p = m
    return vx_mac48(p)


cdef int64_t clamp64(object x) except? -1:
    if x > 4611686018427387904:
        return 4611686018427387904
    if x < -4611686018427387904:
        return -4611686018427387904
    return int(x)


cdef uint32_t u32_addr(object addr) except? 0:
    """IPv4Address -> network-order u32."""
    return htonl(<uint32_t>int(addr))


cdef bint port_id(object port, int32_t *out):
    """A port argument as a C port id when it can name one (an int 0..MAX_PORT)."""
    if isinstance(port, int) and 0 <= port <= MAX_PORT:
        out[0] = <int32_t>port
        return True
    return False


cdef object _source(object source):
    """An underlay source address; a malformed one is InvalidArgument, as in the reference."""
    try:
        return ip4(source)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


def flow_hash(frame) -> int:
    """wire.flow_hash computed by the C code the fast path uses (for tests)."""
    cdef bytes b = bytes(frame)
    cdef const unsigned char *p = b
    return vx_flow_hash(p, len(b))


# =============================================================================== Switch

cdef class Switch:
    """The forwarding core in C structures; the API and results of dataplane.switch.Switch.

    Extra keyword arguments: ``burst`` (rx/tx slots, default 64), ``dstport`` (outer UDP
    destination, default 4789), ``events_max`` (event ring bound, default 65536; events past
    it are counted in ``events_lost``). Not thread-safe; one per VTEP.
    """

    def __cinit__(self, *args, **kwargs):
        self.s = <sw_t*>calloc(1, sizeof(sw_t))
        if self.s == NULL:
            raise MemoryError()
        self.s.tx_fd = -1
        self.s.gso_refused = 0xFFFFFFFF
        self._networks = {}
        self._pynet = []
        self._pending = []
        self._ipcache = {}

    def __init__(self, local, *, src_port_range=DEFAULT_SRC_PORT_RANGE, strict=True,
                 allow=(), burst=64, dstport=VXLAN_PORT, events_max=EVENTS_MAX):
        cdef sw_t *s = self.s
        cdef uint32_t i, cap
        try:
            self.local = ip4(local)
            self.allow = tuple(IPv4Network(a) for a in allow)
        except ValueError as e:  # AddressValueError/NetmaskValueError are ValueErrors
            raise InvalidArgument(str(e)) from None
        lo, hi = src_port_range
        if not 1 <= lo <= hi <= 65535:
            raise InvalidArgument(f"source port range {lo}-{hi} is not within 1-65535")
        self.src_port_range = (lo, hi)
        self.strict = strict
        s.arp_consume = 1   # with proxy on, every ARP frame is arp_reduce's (kernel)
        if not 1 <= burst <= BURST_MAX:
            raise InvalidArgument(f"burst {burst} is not within 1-{BURST_MAX}")
        if not 1 <= dstport <= 65535:
            raise InvalidArgument(f"destination port {dstport} is not within 1-65535")
        if not 1 <= events_max <= 1 << 24:
            raise InvalidArgument(f"events_max {events_max} is not within 1-{1 << 24}")
        if s.rx != NULL:
            raise RuntimeError("Switch.__init__ called twice")
        s.dport = <uint16_t>dstport
        s.burst = <uint32_t>burst
        cap = 1
        while cap < <uint32_t>events_max:
            cap <<= 1
        s.ev_cap = cap
        s.ev = <event_t*>malloc(cap * sizeof(event_t))
        # rx slots: pages are only touched as far as frames reach (huge pages from 2 MiB)
        s.rx = <uint8_t*>vx_table_alloc(<size_t>s.burst * SLOT_STRIDE)
        s.rx_len = <uint32_t*>calloc(s.burst, sizeof(uint32_t))
        s.rx_src = <uint32_t*>calloc(s.burst, sizeof(uint32_t))
        s.scratch = <uint8_t*>calloc(s.burst, SCRATCH_STRIDE)
        s.out_cap = 4 * s.burst
        s.out = <txrec*>malloc(s.out_cap * sizeof(txrec))
        s.rx_msgs = <mmsghdr*>calloc(s.burst, sizeof(mmsghdr))
        s.rx_iov = <iovec*>calloc(s.burst, sizeof(iovec))
        s.rx_addr = <sockaddr_in*>calloc(s.burst, sizeof(sockaddr_in))
        s.nets_cap = 8
        s.nets = <net_t*>calloc(s.nets_cap, sizeof(net_t))
        s.ports_cap = 64
        s.ports = <port_t*>calloc(s.ports_cap, sizeof(port_t))
        s.wv = <iovec*>calloc(COALESCE_MAX + 2 + GSO_MAX_SEGS, sizeof(iovec))
        if (s.ev == NULL or s.rx == NULL or s.rx_len == NULL or s.rx_src == NULL
                or s.scratch == NULL or s.out == NULL or s.rx_msgs == NULL
                or s.rx_iov == NULL or s.rx_addr == NULL or s.nets == NULL
                or s.ports == NULL or s.wv == NULL):
            raise MemoryError()
        for i in range(s.ports_cap):
            s.ports[i].net = -1
            s.ports[i].fd = -1
        if fdb_alloc(&s.fdb, FDB_MIN_CAP) < 0 or nb_alloc(&s.nb, NB_MIN_CAP) < 0:
            raise MemoryError()
        self._rebuild_vmap()

    def __dealloc__(self):
        cdef sw_t *s = self.s
        cdef uint32_t i
        if s == NULL:
            return
        if s.nets != NULL:
            for i in range(s.nets_cap):
                free(s.nets[i].ports)
        if s.rl != NULL:
            for i in range(s.rl_cap):
                free(s.rl[i].a)
        free(s.rl)
        free(s.nets)
        free(s.vmap)
        free(s.ports)
        vx_table_free(s.fdb.slots, s.fdb.cap * sizeof(fdb_ent))
        vx_table_free(s.nb.slots, s.nb.cap * sizeof(nb_ent))
        free(s.allow_net)
        free(s.allow_mask)
        free(s.ev)
        vx_table_free(s.rx, <size_t>s.burst * SLOT_STRIDE)
        free(s.rx_len)
        free(s.rx_src)
        free(s.scratch)
        free(s.out)
        free(s.rx_msgs)
        free(s.rx_iov)
        free(s.rx_addr)
        free(s.tx_msgs)
        free(s.tx_iov)
        free(s.tx_addr)
        free(s.tx_rec)
        free(s.tr)
        vx_table_free(s.tr_data, <size_t>TRACE_RING_C * TRACE_SNAP_C)
        free(s.tr_out)
        gso_close_all(self.s)
        free(s.gso_fd)
        free(s.gso_used)
        free(s.seg)
        free(s.seg_off)
        free(s.seg_len)
        free(s.runs)
        free(s.run_ports)
        free(s.wv)
        free(s.rx_gso)
        free(s.rx_cmsg)
        free(s)
        self.s = NULL

    # -- attributes (plain attributes in the reference: kept as given, mirrored into C) ----

    @property
    def local(self):
        return self._local

    @local.setter
    def local(self, value):
        self.s.local = u32_addr(ip4(value))
        self._local = value
        gso_close_all(self.s)       # per-source-port sockets are bound to the old address

    @property
    def src_port_range(self):
        return self._src_port_range

    @src_port_range.setter
    def src_port_range(self, value):
        lo, hi = value
        if not 1 <= lo <= hi <= 65535:
            raise InvalidArgument(f"source port range {lo}-{hi} is not within 1-65535")
        self.s.sport_lo = <uint32_t>lo
        self.s.sport_span = <uint64_t>(hi - lo + 1)
        self._src_port_range = value

    @property
    def strict(self):
        return self._strict

    @strict.setter
    def strict(self, value):
        self.s.strict = 1 if value else 0
        self._strict = value

    @property
    def allow(self):
        return self._allow

    @allow.setter
    def allow(self, value):
        cdef sw_t *s = self.s
        cdef uint32_t i, n
        nets = [IPv4Network(a) for a in value]
        n = len(nets)
        free(s.allow_net)
        free(s.allow_mask)
        s.allow_net = <uint32_t*>malloc((n + 1) * sizeof(uint32_t))
        s.allow_mask = <uint32_t*>malloc((n + 1) * sizeof(uint32_t))
        s.n_allow = 0
        if s.allow_net == NULL or s.allow_mask == NULL:
            raise MemoryError()
        for i in range(n):
            s.allow_net[i] = <uint32_t>int(nets[i].network_address)
            s.allow_mask[i] = <uint32_t>int(nets[i].netmask)
        s.n_allow = n
        self._allow = value

    @property
    def burst(self) -> int:
        return self.s.burst

    @property
    def dstport(self) -> int:
        return self.s.dport

    @property
    def events_lost(self) -> int:
        """Events dropped because the ring (``events_max``) was full when they happened."""
        return self.s.ev_lost

    # -- configuration ------------------------------------------------------------------------

    cdef int _rebuild_vmap(self) except -1:
        cdef sw_t *s = self.s
        cdef uint32_t cap = 16, bits, i, k, n = 0
        cdef uint64_t *m
        for i in range(s.nets_cap):
            if s.nets[i].used:
                n += 1
        while cap < 2 * n:
            cap <<= 1
        bits = log2u(cap)
        m = <uint64_t*>calloc(cap, sizeof(uint64_t))
        if m == NULL:
            raise MemoryError()
        for i in range(s.nets_cap):
            if s.nets[i].used:
                k = (s.nets[i].vni * <uint32_t>0x9E3779B1) >> (32 - bits)
                while m[k] != 0:
                    k = (k + 1) & (cap - 1)
                m[k] = (<uint64_t>s.nets[i].vni << 32) | i
        free(s.vmap)
        s.vmap = m
        s.vmap_mask = cap - 1
        s.vmap_shift = 32 - bits
        return 0

    def add_network(self, vni, *, mtu=1450, proxy=True, learning=False, ageing=300.0,
                    maxaddress=0):
        cdef sw_t *s = self.s
        cdef uint32_t slot, i, ncap
        cdef net_t *grown
        cdef net_t *net
        cdef bytes hdr
        if not 0 < vni <= MAX_VNI:
            raise InvalidArgument(f"VNI {vni} is not within 1-{MAX_VNI}")
        if vni in self._networks:
            raise InvalidArgument(f"VNI {vni} is already served")
        hdr = vxlan_header(vni)
        maxlen = clamp64(math.floor(mtu + 14))
        limited = bool(maxaddress)
        maxaddr = clamp64(math.ceil(maxaddress)) if limited else 0
        age_s = float(ageing)
        slot = s.nets_cap
        for i in range(s.nets_cap):
            if not s.nets[i].used:
                slot = i
                break
        if slot == s.nets_cap:
            if s.nets_cap >= MAX_NETS:
                raise InvalidArgument(f"too many networks (at most {MAX_NETS})")
            ncap = min(s.nets_cap * 2, <uint32_t>MAX_NETS)
            grown = <net_t*>realloc(s.nets, ncap * sizeof(net_t))
            if grown == NULL:
                raise MemoryError()
            memset(grown + s.nets_cap, 0, (ncap - s.nets_cap) * sizeof(net_t))
            s.nets = grown
            s.nets_cap = ncap
        net = &s.nets[slot]
        memset(net, 0, sizeof(net_t))
        net.vni = <uint32_t>int(vni)
        net.maxlen = maxlen
        net.proxy = 1 if proxy else 0
        net.learning = 1 if learning else 0
        net.limited = 1 if limited else 0
        net.maxaddress = maxaddr
        net.ageing = age_s
        memcpy(net.hdr, <const unsigned char*>hdr, 8)
        net.hdr_sum = vx_csum_add(0, net.hdr, 8)
        net.used = 1
        while len(self._pynet) <= slot:
            self._pynet.append(None)
        self._pynet[slot] = (vni, maxaddress)
        self._networks[vni] = slot
        self._rebuild_vmap()

    def del_network(self, vni):
        cdef sw_t *s = self.s
        cdef uint32_t slot = self._net(vni)
        cdef net_t *net = &s.nets[slot]
        cdef uint64_t i, n
        cdef uint64_t *keys
        cdef fdb_ent *e
        cdef nb_ent *ne
        for p in [net.ports[i] for i in range(net.nports)]:
            self.del_port(p)
        net = &s.nets[slot]
        keys = fdb_keys(s, slot, &n)
        if keys == NULL:
            raise MemoryError()
        for i in range(n):
            e = fdb_find(&s.fdb, keys[i])
            if e != NULL:
                fdb_delete(s, e)
        free(keys)
        fdb_maybe_shrink(&s.fdb)
        self._nb_purge(slot)
        free(net.ports)
        memset(net, 0, sizeof(net_t))
        del self._networks[vni]
        self._pynet[slot] = None
        self._rebuild_vmap()

    cdef uint64_t _nb_purge(self, uint32_t slot) except? 0xFFFFFFFFFFFFFFFF:
        cdef sw_t *s = self.s
        cdef uint64_t i, n = 0
        cdef uint64_t *keys = <uint64_t*>malloc((s.nb.count + 1) * sizeof(uint64_t))
        cdef nb_ent *ne
        if keys == NULL:
            raise MemoryError()
        for i in range(s.nb.cap):
            if s.nb.slots[i].key != 0 and (s.nb.slots[i].key >> 32) == slot + 1:
                keys[n] = s.nb.slots[i].key
                n += 1
        for i in range(n):
            ne = nb_find(&s.nb, keys[i])
            if ne != NULL:
                nb_remove(&s.nb, ne)
        free(keys)
        s.nets[slot].ncount = 0
        nb_maybe_shrink(&s.nb)
        return n

    def add_port(self, port, vni, mac=None, now=0.0):
        """Attach local port ``port`` to network ``vni``; with ``mac``, a permanent FDB entry
        for the endpoint (what the bridge keeps for a port it knows the address of)."""
        cdef sw_t *s = self.s
        cdef uint32_t slot = self._net(vni)
        cdef int32_t p
        cdef uint32_t i, ncap
        cdef port_t *grown
        cdef net_t *net
        cdef int32_t *pl
        cdef fdb_ent *e
        # Port ids index C arrays: the reference accepts any int >= 0, vxdp 0..MAX_PORT.
        if port < 0 or port > MAX_PORT or (port < s.ports_cap and s.ports[port].net >= 0):
            raise InvalidArgument(f"port {port} is already attached or invalid")
        p = <int32_t>port
        if mac is not None:
            # A MAC learned here before (the container lived on another host, or sent from
            # another port) gives way to the endpoint's permanent entry.
            e = fdb_find(&s.fdb, fdb_key(slot, mac_bytes48(_mac(mac))))
            if e != NULL and e.state == ST_LEARNED:
                fdb_delete(s, e)
            self._fdb_add(slot, mac, None, port, "permanent", now)
        if <uint32_t>p >= s.ports_cap:
            ncap = s.ports_cap
            while ncap <= <uint32_t>p:
                ncap *= 2
            grown = <port_t*>realloc(s.ports, ncap * sizeof(port_t))
            if grown == NULL:
                raise MemoryError()
            memset(grown + s.ports_cap, 0, (ncap - s.ports_cap) * sizeof(port_t))
            for i in range(s.ports_cap, ncap):
                grown[i].net = -1
                grown[i].fd = -1
            s.ports = grown
            s.ports_cap = ncap
        net = &s.nets[slot]
        if net.nports == net.ports_cap:
            ncap = net.ports_cap * 2 if net.ports_cap else 8
            pl = <int32_t*>realloc(net.ports, ncap * sizeof(int32_t))
            if pl == NULL:
                raise MemoryError()
            net.ports = pl
            net.ports_cap = ncap
        memset(&s.ports[p], 0, sizeof(port_t))
        s.ports[p].net = <int32_t>slot
        s.ports[p].fd = -1
        # keep ascending order: local deliveries go out in port order
        i = net.nports
        while i > 0 and net.ports[i - 1] > p:
            net.ports[i] = net.ports[i - 1]
            i -= 1
        net.ports[i] = p
        net.nports += 1

    def del_port(self, port):
        cdef sw_t *s = self.s
        cdef int32_t p
        cdef uint32_t slot, i, j
        cdef net_t *net
        cdef uint64_t k, n
        cdef uint64_t *keys
        cdef fdb_ent *e
        if not port_id(port, &p) or <uint32_t>p >= s.ports_cap or s.ports[p].net < 0:
            hash(port)      # an unhashable argument fails like the reference's dict.pop
            raise EntryNotFound(f"no port {port}")
        slot = <uint32_t>s.ports[p].net
        net = &s.nets[slot]
        j = 0
        for i in range(net.nports):
            if net.ports[i] != p:
                net.ports[j] = net.ports[i]
                j += 1
        net.nports = j
        # the bridge flushes a deleted port's entries (Fdb.remove_port)
        keys = fdb_keys(s, slot, &n)
        if keys == NULL:
            raise MemoryError()
        for k in range(n):
            e = fdb_find(&s.fdb, keys[k])
            if e != NULL and e.port == p:
                fdb_delete(s, e)
        free(keys)
        fdb_maybe_shrink(&s.fdb)
        memset(&s.ports[p], 0, sizeof(port_t))
        s.ports[p].net = -1
        s.ports[p].fd = -1

    cdef int _net(self, object vni) except -1:
        slot = self._networks.get(vni)
        if slot is None:
            raise EntryNotFound(f"no network with VNI {vni}")
        return slot

    # -- tables (control plane) ---------------------------------------------------------------

    cdef int _check_room(self, uint32_t slot) except -1:
        cdef net_t *net = &self.s.nets[slot]
        if net.limited and <int64_t>net.count >= net.maxaddress:
            vni, maxaddress = self._pynet[slot]
            raise TableFull(f"FDB of VNI {vni} is full ({maxaddress} entries)")
        return 0

    cdef int _fdb_add(self, uint32_t slot, object mac, object dst, object port, object state,
                      object now) except -1:
        """Fdb.add, with its checks in its order."""
        cdef sw_t *s = self.s
        m = _mac(mac)
        state = _fdb_state(state)
        if (dst is None) == (port is None):
            raise InvalidArgument("an FDB entry needs exactly one of dst (remote) or port (local)")
        if port is not None and is_group_mac(m):
            raise InvalidArgument(f"{mac_str(m)} is not a unicast MAC: cannot point at a port")
        if fdb_find(&s.fdb, fdb_key(slot, mac_bytes48(m))) != NULL:
            raise EntryExists(
                f"FDB entry {mac_str(m)} already exists in VNI {self._pynet[slot][0]}")
        d = _dst(dst) if dst is not None else None
        self._check_room(slot)
        if fdb_new(s, slot, mac_bytes48(m), FDB_STATES.index(state),
                   <int32_t>port if port is not None else -1,
                   u32_addr(d) if d is not None else 0, now) == NULL:
            raise MemoryError()
        return 0

    def fdb_add(self, vni, mac, dst, state="permanent", now=0.0):
        self._fdb_add(self._net(vni), mac, dst, None, state, now)

    def fdb_append(self, vni, mac, dst, state="permanent", now=0.0):
        cdef sw_t *s = self.s
        cdef uint32_t slot = self._net(vni)
        cdef fdb_ent *e
        cdef uint32_t a, i, cnt
        cdef uint32_t *rem
        m = _mac(mac)
        d = _dst(dst)
        state = _fdb_state(state)
        e = fdb_find(&s.fdb, fdb_key(slot, mac_bytes48(m)))
        if e == NULL:
            self._check_room(slot)
            if fdb_new(s, slot, mac_bytes48(m), FDB_STATES.index(state), -1, u32_addr(d),
                       now) == NULL:
                raise MemoryError()
            return
        if not is_group_mac(m):
            raise InvalidArgument(
                f"append adds extra remotes only to 00:00:00:00:00:00 or a multicast MAC; "
                f"use replace for {mac_str(m)}")
        if e.port >= 0:
            raise InvalidArgument(f"{mac_str(m)} points at a local port")
        a = u32_addr(d)
        cnt = ent_nremotes(s, e)
        rem = ent_remotes(s, e)
        for i in range(cnt):
            if rem[i] == a:
                return          # the kernel ignores an already-listed remote
        if ent_add_remote(s, e, a) < 0:
            raise MemoryError()

    def fdb_replace(self, vni, mac, dst, state="permanent", now=0.0):
        cdef sw_t *s = self.s
        cdef uint32_t slot = self._net(vni)
        cdef fdb_ent *e
        m = _mac(mac)
        state = _fdb_state(state)
        if dst is None:
            raise InvalidArgument("an FDB entry needs exactly one of dst (remote) or port (local)")
        if is_group_mac(m):
            raise InvalidArgument(
                f"replace is not supported on {mac_str(m)} (kernel: EOPNOTSUPP); "
                f"use append/del for flood lists")
        d = _dst(dst)
        e = fdb_find(&s.fdb, fdb_key(slot, mac_bytes48(m)))
        if e == NULL:
            self._check_room(slot)
            if fdb_new(s, slot, mac_bytes48(m), FDB_STATES.index(state), -1, u32_addr(d),
                       now) == NULL:
                raise MemoryError()
            return
        e.state = FDB_STATES.index(state)
        e.updated = now
        ent_drop_list(s, e)
        e.port = -1
        e.remote = u32_addr(d)

    def fdb_del(self, vni, mac, dst=None):
        cdef sw_t *s = self.s
        cdef uint32_t slot = self._net(vni)
        cdef fdb_ent *e
        cdef int left
        m = _mac(mac)
        e = fdb_find(&s.fdb, fdb_key(slot, mac_bytes48(m)))
        if e == NULL:
            raise EntryNotFound(f"no FDB entry {mac_str(m)} in VNI {self._pynet[slot][0]}")
        if dst is None:
            fdb_delete(s, e)
            return
        d = _dst(dst)
        left = ent_del_remote(s, e, u32_addr(d))
        if left < 0:
            raise EntryNotFound(
                f"FDB entry {mac_str(m)} in VNI {self._pynet[slot][0]} has no remote {d}")
        if left == 0:
            fdb_delete(s, e)

    def fdb_flush(self, vni, keep_permanent=True):
        """``bridge fdb flush``: drop dynamic entries (all with ``keep_permanent=False``)."""
        cdef sw_t *s = self.s
        cdef uint32_t slot = self._net(vni)
        cdef bint keep = True if keep_permanent else False
        cdef uint64_t i, n, gone = 0
        cdef uint64_t *keys = fdb_keys(s, slot, &n)
        cdef fdb_ent *e
        if keys == NULL:
            raise MemoryError()
        for i in range(n):
            e = fdb_find(&s.fdb, keys[i])
            if e != NULL and (not keep or e.state != ST_PERMANENT):
                fdb_delete(s, e)
                gone += 1
        free(keys)
        fdb_maybe_shrink(&s.fdb)
        return gone

    def fdb_dump(self):
        """All entries, one row per (MAC, destination), ordered by VNI then MAC."""
        cdef sw_t *s = self.s
        cdef uint64_t i, n, start
        cdef uint32_t j, cnt
        cdef uint32_t *rem
        cdef fdb_ent *e
        cdef uint64_t *keys = fdb_keys(s, -1, &n)
        if keys == NULL:
            raise MemoryError()
        # sorting the packed keys groups them by slot, and by MAC within a slot
        qsort(keys, n, sizeof(uint64_t), cmp_u64)
        bounds = {}
        start = 0
        for i in range(1, n + 1):
            if i == n or (keys[i] >> 48) != (keys[start] >> 48):
                bounds[<uint32_t>(keys[start] >> 48) - 1] = (start, i)
                start = i
        rows = []
        try:
            for vni in sorted(self._networks):
                b = bounds.get(self._networks[vni])
                if b is None:
                    continue
                for i in range(<uint64_t>b[0], <uint64_t>b[1]):
                    e = fdb_find(&s.fdb, keys[i])
                    mac = mac48_str(keys[i] & MAC_MASK)
                    state = FDB_STATES[e.state]
                    if e.port >= 0:
                        rows.append({"vni": vni, "mac": mac, "state": state,
                                     "updated": e.updated, "port": e.port, "dst": None})
                        continue
                    cnt = ent_nremotes(s, e)
                    rem = ent_remotes(s, e)
                    for j in range(cnt):
                        rows.append({"vni": vni, "mac": mac, "state": state,
                                     "updated": e.updated, "port": None,
                                     "dst": str(self._ip(rem[j]))})
        finally:
            free(keys)
        return rows

    def neigh_add(self, vni, ip, lladdr, state="permanent"):
        """``ip neigh add``: NLM_F_CREATE|NLM_F_EXCL — fails when the address is there."""
        cdef sw_t *s = self.s
        cdef uint32_t slot = self._net(vni)
        key = _ip(ip)
        if nb_find(&s.nb, nb_key(slot, int(key))) != NULL:
            raise EntryExists(f"neighbour {key} already exists in VNI {self._pynet[slot][0]}")
        self._nb_set(slot, key, _lladdr(lladdr), _neigh_state(state))

    def neigh_replace(self, vni, ip, lladdr, state="permanent"):
        """``ip neigh replace``: create or overwrite."""
        cdef uint32_t slot = self._net(vni)
        key = _ip(ip)
        self._nb_set(slot, key, _lladdr(lladdr), _neigh_state(state))

    cdef int _nb_set(self, uint32_t slot, object key, bytes lladdr, str state) except -1:
        cdef sw_t *s = self.s
        cdef uint64_t k = nb_key(slot, int(key))
        cdef nb_ent *e = nb_find(&s.nb, k)
        if e == NULL:
            e = nb_insert(&s.nb, k)
            if e == NULL:
                raise MemoryError()
            s.nets[slot].ncount += 1
        memcpy(e.mac, <const unsigned char*>lladdr, 6)
        e.state = NEIGH_STATES.index(state)
        return 0

    def neigh_del(self, vni, ip):
        cdef sw_t *s = self.s
        cdef uint32_t slot = self._net(vni)
        cdef nb_ent *e
        key = _ip(ip)
        e = nb_find(&s.nb, nb_key(slot, int(key)))
        if e == NULL:
            raise EntryNotFound(f"no neighbour {key} in VNI {self._pynet[slot][0]}")
        nb_remove(&s.nb, e)
        s.nets[slot].ncount -= 1

    def neigh_flush(self, vni):
        return self._nb_purge(self._net(vni))

    def neigh_dump(self):
        cdef sw_t *s = self.s
        cdef uint64_t i, n = 0, start
        cdef nb_ent *e
        cdef uint64_t *keys = <uint64_t*>malloc((s.nb.count + 1) * sizeof(uint64_t))
        if keys == NULL:
            raise MemoryError()
        for i in range(s.nb.cap):
            if s.nb.slots[i].key != 0:
                keys[n] = s.nb.slots[i].key
                n += 1
        qsort(keys, n, sizeof(uint64_t), cmp_u64)
        bounds = {}
        start = 0
        for i in range(1, n + 1):
            if i == n or (keys[i] >> 32) != (keys[start] >> 32):
                bounds[<uint32_t>(keys[start] >> 32) - 1] = (start, i)
                start = i
        rows = []
        try:
            for vni in sorted(self._networks):
                b = bounds.get(self._networks[vni])
                if b is None:
                    continue
                for i in range(<uint64_t>b[0], <uint64_t>b[1]):
                    e = nb_find(&s.nb, keys[i])
                    rows.append({"vni": vni,
                                 "ip": str(self._ip(htonl(<uint32_t>(keys[i] & 0xFFFFFFFF)))),
                                 "lladdr": mac48_str(vx_mac48(e.mac)),
                                 "state": NEIGH_STATES[e.state]})
        finally:
            free(keys)
        return rows

    # -- observability ------------------------------------------------------------------------

    cdef object _ip(self, uint32_t addr):
        """IPv4Address for a network-order u32, cached (actions and dumps repeat few VTEPs)."""
        a = self._ipcache.get(addr)
        if a is None:
            if len(self._ipcache) >= 4096:
                self._ipcache.clear()
            a = IPv4Address(ntohl(addr))
            self._ipcache[addr] = a
        return a

    cdef object _loc(self, uint8_t kind, uint32_t val):
        if kind == LOC_PORT:
            return f"port:{<int32_t>val}"
        if kind == LOC_IP:
            return str(self._ip(val))
        return ""

    cdef void _drain(self):
        """Move the C event ring into the Python list, in order."""
        cdef sw_t *s = self.s
        cdef uint32_t i
        cdef event_t *ev
        for i in range(s.ev_count):
            ev = &s.ev[(s.ev_head + i) & (s.ev_cap - 1)]
            if ev.kind == EV_L3MISS:
                key = str(self._ip(htonl(<uint32_t>ev.key)))
            else:
                key = mac48_str(ev.key)
            self._pending.append((_EV_KINDS[ev.kind], ev.vni, key,
                                  self._loc(ev.okind, ev.oval), self._loc(ev.nkind, ev.nval)))
        s.ev_head = (s.ev_head + s.ev_count) & (s.ev_cap - 1)
        s.ev_count = 0

    def events(self):
        """Drain the events raised since the last call."""
        self._drain()
        ev = self._pending
        self._pending = []
        return ev

    def counters(self):
        cdef sw_t *s = self.s
        cdef int i
        cdef uint32_t p
        cdef port_t *pt
        ports = {}
        for p in range(s.ports_cap):
            pt = &s.ports[p]
            if pt.net >= 0:
                ports[p] = {"rx_packets": pt.rx_packets, "rx_bytes": pt.rx_bytes,
                            "tx_packets": pt.tx_packets, "tx_bytes": pt.tx_bytes}
        return {
            "drops": {DROP_REASONS[i]: s.drops[i] for i in range(N_DROPS)},
            "counters": {EVENT_COUNTERS[i]: s.evc[i] for i in range(N_EVC)},
            "underlay": {"rx_packets": s.ul_rx_packets, "rx_bytes": s.ul_rx_bytes,
                         "tx_packets": s.ul_tx_packets, "tx_bytes": s.ul_tx_bytes},
            "ports": ports,
        }

    def io_counters(self):
        """Burst-I/O-only counters (not in the reference): write/send failures, EAGAIN drops,
        lost events."""
        cdef sw_t *s = self.s
        cdef uint32_t i
        cdef port_t *pt
        ports = {}
        for i in range(s.ports_cap):
            pt = &s.ports[i]
            if pt.net >= 0:
                ports[i] = {"tx_errors": pt.tx_errors, "tx_dropped": pt.tx_dropped}
        return {"events_lost": s.ev_lost,
                "underlay": {"rx_errors": s.ul_rx_errors, "tx_errors": s.ul_tx_errors,
                             "tx_dropped": s.ul_tx_dropped},
                "ports": ports}

    def age(self, now):
        """Expire learned entries everywhere; returns how many went. Reported per VNI in
        ascending order, and within a VNI in creation order (the reference's dict order)."""
        cdef sw_t *s = self.s
        cdef fdb_tab *t = &s.fdb
        cdef double tnow = now
        cdef uint64_t i, n = 0, key
        cdef uint32_t slot
        cdef fdb_ent *e
        cdef uint64_t *pairs
        cdef uint64_t *rank = <uint64_t*>calloc(s.nets_cap + 1, sizeof(uint64_t))
        if rank == NULL:
            raise MemoryError()
        self._drain()       # packet events so far come before the ageing events
        order = sorted(self._networks)
        for i, vni in enumerate(order):
            rank[<uint32_t>self._networks[vni]] = i
        pairs = <uint64_t*>malloc((t.count + 1) * 2 * sizeof(uint64_t))
        if pairs == NULL:
            free(rank)
            raise MemoryError()
        for i in range(t.cap):
            e = &t.slots[i]
            if e.key != 0 and e.state == ST_LEARNED:
                slot = <uint32_t>(e.key >> 48) - 1
                if e.updated + s.nets[slot].ageing <= tnow:
                    # Reported in VNI order, then MAC order (as the reference sorts them).
                    pairs[2 * n] = (rank[slot] << 48) | (e.key & MAC_MASK)
                    pairs[2 * n + 1] = e.key
                    n += 1
        free(rank)
        qsort(pairs, n, 2 * sizeof(uint64_t), cmp_u64)
        try:
            for i in range(n):
                key = pairs[2 * i + 1]
                e = fdb_find(t, key)
                loc = (f"port:{e.port}" if e.port >= 0
                       else str(self._ip(ent_first_remote(s, e))))
                self._pending.append(("aged", order[pairs[2 * i] >> 48],
                                      mac48_str(key & MAC_MASK), loc, ""))
                fdb_delete(s, e)
                s.evc[EC_AGED] += 1
        finally:
            free(pairs)
        fdb_maybe_shrink(t)
        return n

    # -- forwarding (single frame: tests and the control plane) ------------------------------

    cdef list _collect(self, uint32_t n, bint outer):
        """Output records -> the reference's action tuples. With ``outer``, underlay actions
        carry the complete IPv4 datagram the burst path built instead of the UDP payload."""
        cdef sw_t *s = self.s
        cdef uint32_t i
        cdef txrec *r
        cdef bytes data
        out = []
        for i in range(n):
            r = &s.out[i]
            if r.port >= 0:
                out.append(("port", r.port, PyBytes_FromStringAndSize(<char*>r.data, r.len)))
                continue
            if not outer:
                data = PyBytes_FromStringAndSize(<char*>r.data, r.len)
                out.append(("vtep", self._ip(r.dst), r.sport, data))
                continue
            outer_csum(s, r)
            if r.inline_hdr:
                data = (PyBytes_FromStringAndSize(<char*>r.hdr, IPUDP_HLEN)
                        + PyBytes_FromStringAndSize(<char*>r.data, r.len))
            else:
                data = PyBytes_FromStringAndSize(<char*>(r.data - IPUDP_HLEN),
                                                 r.len + IPUDP_HLEN)
            out.append(("vtep", self._ip(r.dst), r.sport, data))
        return out

    def from_port(self, port, frame, now):
        """A frame a local endpoint sent (read from its TAP)."""
        cdef sw_t *s = self.s
        cdef bytes b = frame if type(frame) is bytes else bytes(frame)
        cdef size_t n = len(b)
        cdef int32_t p = -1
        cdef double t = now
        cdef uint8_t *base = s.rx
        cdef uint8_t *tmp = NULL
        cdef int64_t tsrc = -1
        if not port_id(port, &p):
            p = -1
        if isinstance(port, int) and -(1 << 63) <= port < (1 << 63):
            tsrc = port         # the trace names the port as given, attached or not
        if n > MAX_FRAME:       # the reference takes any length; burst slots stop at 64 KiB
            tmp = <uint8_t*>malloc(n + HEADROOM)
            if tmp == NULL:
                raise MemoryError()
            base = tmp
        memcpy(base + HEADROOM, <const unsigned char*>b, n)
        s.n_out = 0
        core_from_port(s, p, tsrc, base + HEADROOM, <uint32_t>n, t, s.scratch)
        try:
            return self._collect(s.n_out, False)
        finally:
            s.n_out = 0
            free(tmp)

    def from_underlay(self, source, datagram, now):
        """A UDP payload received on the VXLAN port from ``source`` (the outer IPv4 source)."""
        cdef sw_t *s = self.s
        cdef uint32_t src = u32_addr(_source(source))
        cdef bytes b = datagram if type(datagram) is bytes else bytes(datagram)
        cdef size_t n = len(b)
        cdef double t = now
        cdef uint8_t *base = s.rx
        cdef uint8_t *tmp = NULL
        if n > MAX_FRAME + 8:
            tmp = <uint8_t*>malloc(n + HEADROOM)
            if tmp == NULL:
                raise MemoryError()
            base = tmp
        memcpy(base + HEADROOM - 8, <const unsigned char*>b, n)
        s.n_out = 0
        core_from_underlay(s, src, base + HEADROOM - 8, <uint32_t>n, t)
        try:
            return self._collect(s.n_out, False)
        finally:
            s.n_out = 0
            free(tmp)

    def from_port_burst(self, port, frames, now, *, outer=False):
        """``from_port`` for several frames through the burst path (rx slots, one
        process_port_burst() per ``burst`` frames): the same actions as calling from_port
        on each frame in turn. ``outer=True`` returns complete outer IPv4 datagrams in the
        "vtep" actions (what the raw socket would send)."""
        cdef sw_t *s = self.s
        cdef int32_t p = -1
        cdef double t = now
        cdef uint32_t k = 0
        cdef bytes b
        if not port_id(port, &p):
            p = -1
        out = []
        s.n_out = 0
        try:
            for fr in frames:
                b = fr if type(fr) is bytes else bytes(fr)
                if len(b) > MAX_FRAME:
                    raise ValueError(f"frame longer than {MAX_FRAME} bytes")
                memcpy(s.rx + <size_t>k * SLOT_STRIDE + HEADROOM, <const unsigned char*>b,
                       len(b))
                s.rx_len[k] = len(b)
                k += 1
                if k == s.burst:
                    self.process_port_burst(p, k, t)
                    out.extend(self._collect(s.n_out, outer))
                    s.n_out = 0
                    k = 0
            if k:
                self.process_port_burst(p, k, t)
                out.extend(self._collect(s.n_out, outer))
        finally:
            s.n_out = 0
        return out

    def from_underlay_burst(self, datagrams, now, *, outer=False):
        """``from_underlay`` for several ``(source, datagram)`` pairs through the burst path."""
        cdef sw_t *s = self.s
        cdef double t = now
        cdef uint32_t k = 0
        cdef bytes b
        out = []
        s.n_out = 0
        try:
            for source, dg in datagrams:
                s.rx_src[k] = u32_addr(_source(source))
                b = dg if type(dg) is bytes else bytes(dg)
                if len(b) > MAX_FRAME + 8:
                    raise ValueError(f"datagram longer than {MAX_FRAME + 8} bytes")
                memcpy(s.rx + <size_t>k * SLOT_STRIDE + HEADROOM - 8,
                       <const unsigned char*>b, len(b))
                s.rx_len[k] = len(b)
                k += 1
                if k == s.burst:
                    self.process_underlay_burst(k, t)
                    out.extend(self._collect(s.n_out, outer))
                    s.n_out = 0
                    k = 0
            if k:
                self.process_underlay_burst(k, t)
                out.extend(self._collect(s.n_out, outer))
        finally:
            s.n_out = 0
        return out

    def build_outer(self, dst, sport, payload) -> bytes:
        """IPv4 + UDP + ``payload`` from ``local`` to ``dst``, built by the C encapsulation
        code: equal to ``wire.outer_datagram(local, dst, sport, payload, dstport)``."""
        cdef bytes b = bytes(payload)
        cdef size_t n = len(b)
        cdef uint32_t d = u32_addr(ip4(dst))
        cdef uint16_t sp
        cdef bytes out
        cdef uint8_t *p
        if not 0 <= sport <= 65535:
            raise ValueError(f"source port {sport} is not within 0-65535")
        if n + IPUDP_HLEN > 65535:
            raise ValueError(f"a {n}-byte payload does not fit in an IPv4 datagram")
        sp = sport
        out = PyBytes_FromStringAndSize(NULL, n + IPUDP_HLEN)
        p = <uint8_t*>PyBytes_AS_STRING(out)
        memcpy(p + IPUDP_HLEN, <const unsigned char*>b, n)
        build_ipudp(p, self.s.local, d, sp, self.s.dport, <uint32_t>n,
                    vx_csum_add(0, p + IPUDP_HLEN, n))
        return out

    # -- burst path ---------------------------------------------------------------------------

    cdef uint32_t process_port_burst(self, int32_t port, uint32_t n, double now) noexcept nogil:
        cdef sw_t *s = self.s
        cdef uint32_t i
        for i in range(n):
            core_from_port(s, port, port, s.rx + <size_t>i * SLOT_STRIDE + HEADROOM,
                           s.rx_len[i], now, s.scratch + <size_t>i * SCRATCH_STRIDE)
        return s.n_out

    cdef uint32_t process_underlay_burst(self, uint32_t n, double now) noexcept nogil:
        cdef sw_t *s = self.s
        cdef uint32_t i
        for i in range(n):
            core_from_underlay(s, s.rx_src[i], s.rx + <size_t>i * SLOT_STRIDE + HEADROOM - 8,
                               s.rx_len[i], now)
        return s.n_out

    def bench_port(self, port, frame, long count, double now) -> int:
        """Process ``count`` copies of ``frame`` from ``port`` in bursts, as rx_tap_burst
        would (copy into the rx slot, classify, look up, encapsulate with checksums), and
        discard the outputs. Returns the number of output records produced."""
        cdef sw_t *s = self.s
        cdef bytes b = bytes(frame)
        cdef const unsigned char *src = b
        cdef uint32_t n = len(b), k, i
        cdef int32_t p = -1
        cdef long done = 0
        cdef uint64_t total = 0
        if n > MAX_FRAME:
            raise ValueError(f"frame longer than {MAX_FRAME} bytes")
        if not port_id(port, &p):
            p = -1
        s.n_out = 0
        while done < count:
            k = <uint32_t>min(<long>s.burst, count - done)
            for i in range(k):
                memcpy(s.rx + <size_t>i * SLOT_STRIDE + HEADROOM, src, n)
                s.rx_len[i] = n
            total += self.process_port_burst(p, k, now)
            for i in range(s.n_out):
                outer_csum(s, &s.out[i])        # what the raw-socket path adds per datagram
            s.n_out = 0
            done += k
        return total

    def bench_underlay(self, source, datagram, long count, double now) -> int:
        """Like bench_port for UDP payloads (VXLAN header + frame) from ``source``."""
        cdef sw_t *s = self.s
        cdef bytes b = bytes(datagram)
        cdef const unsigned char *src = b
        cdef uint32_t n = len(b), k, i
        cdef uint32_t a = u32_addr(_source(source))
        cdef long done = 0
        cdef uint64_t total = 0
        if n > MAX_FRAME + 8:
            raise ValueError(f"datagram longer than {MAX_FRAME + 8} bytes")
        s.n_out = 0
        while done < count:
            k = <uint32_t>min(<long>s.burst, count - done)
            for i in range(k):
                memcpy(s.rx + <size_t>i * SLOT_STRIDE + HEADROOM - 8, src, n)
                s.rx_len[i] = n
                s.rx_src[i] = a
            total += self.process_underlay_burst(k, now)
            s.n_out = 0
            done += k
        return total

    # -- trace (vxdp trace / capture) --------------------------------------------------------

    def set_trace(self, on):
        cdef bint want = True if on else False
        if want and trace_alloc(self.s) < 0:
            raise MemoryError()
        self.s.trace_on = want

    @property
    def trace_on(self) -> bool:
        return bool(self.s.trace_on)

    @property
    def trace_lost(self) -> int:
        """Records dropped because the ring (TRACE_RING) was full between two drains."""
        return self.s.tr_lost

    @trace_lost.setter
    def trace_lost(self, value):
        self.s.tr_lost = value

    def trace_drain(self):
        """Records since the last call: ``(now, source, vni, length, data, verdict, outputs,
        flags)``, exactly as ``dataplane.switch.Switch.trace_drain``."""
        cdef sw_t *s = self.s
        cdef uint32_t i, j
        cdef trace_rec *r
        cdef trace_out *o
        recs = []
        try:
            for i in range(s.tr_count):
                r = &s.tr[i]
                if r.src_kind == LOC_PORT:
                    source = f"port:{r.src}"
                else:
                    source = str(self._ip(<uint32_t>r.src))
                outputs = []
                for j in range(r.out_start, r.out_start + r.out_count):
                    o = &s.tr_out[j]
                    if o.port >= 0:
                        outputs.append(("port", o.port))
                    else:
                        outputs.append(("vtep", str(self._ip(o.dst)), o.sport))
                recs.append((r.now, source, r.vni, r.length,
                             PyBytes_FromStringAndSize(
                                 <char*>(s.tr_data + <size_t>i * TRACE_SNAP_C), r.snap),
                             DROP_REASONS[r.reason] if r.reason >= 0 else "",
                             tuple(outputs),
                             tuple([_TF_NAMES[r.flags[j]] for j in range(r.nflags)])))
        finally:
            s.tr_count = 0
            s.tr_out_n = 0
        return recs

    # -- table introspection (benchmarks, internals tests) -----------------------------------

    def fdb_bytes_per_entry(self) -> int:
        """Honest memory cost: bucket array (+ remote lists) divided by live entries."""
        cdef sw_t *s = self.s
        cdef uint64_t total = s.fdb.cap * sizeof(fdb_ent) + s.rl_cap * sizeof(rlist)
        cdef uint32_t i
        for i in range(s.rl_cap):
            total += s.rl[i].cap * sizeof(uint32_t)
        return total // s.fdb.count if s.fdb.count else total

    def fdb_stats(self) -> dict:
        """Sizes and probe lengths of the FDB and neighbour hash tables."""
        cdef sw_t *s = self.s
        cdef fdb_tab *t = &s.fdb
        cdef uint64_t i, home, dist, total = 0, worst = 0
        for i in range(t.cap):
            if t.slots[i].key != 0:
                home = vx_mix64(t.slots[i].key) >> t.shift
                dist = (i - home) & t.mask
                total += dist + 1
                worst = max(worst, dist + 1)
        return {"entries": t.count, "capacity": t.cap, "entry_bytes": sizeof(fdb_ent),
                "table_bytes": t.cap * sizeof(fdb_ent),
                "load": t.count / <double>t.cap,
                "avg_probe": total / <double>t.count if t.count else 0.0,
                "max_probe": worst,
                "neigh_entries": s.nb.count, "neigh_capacity": s.nb.cap,
                "neigh_entry_bytes": sizeof(nb_ent),
                "remote_lists": sum(1 for i in range(s.rl_cap) if s.rl[i].cap)}

    @staticmethod
    def bench_fdb_lookup(uint64_t n_entries, uint64_t n_lookups, uint64_t working_set=0,
                         uint32_t batch=0) -> dict:
        """Time FDB lookups in C on a private table of ``n_entries`` random MACs (one
        network), growing it exactly as learning would. Lookups pick uniformly random keys
        among all entries (``working_set`` = 0) or among the first ``working_set`` ones;
        ``batch`` > 0 hashes and prefetches that many keys before probing them (how a burst
        can hide cache misses). Returns ns per lookup and the table's geometry."""
        cdef fdb_tab t
        cdef uint64_t i, j, k, hits = 0, ws, rng = 0x9E3779B97F4A7C15, inserted = 0
        cdef uint64_t keys[64]
        cdef double t0, t1
        cdef fdb_ent *e
        if n_entries < 1 or batch > 64:
            raise ValueError("n_entries >= 1 and batch <= 64")
        if fdb_alloc(&t, FDB_MIN_CAP) < 0:
            raise MemoryError()
        t.count = 0
        i = 0
        while inserted < n_entries:
            k = fdb_key(0, vx_mix64(i + 1) & MAC_MASK)
            i += 1
            if fdb_find(&t, k) != NULL:
                continue
            e = fdb_insert(&t, k)
            if e == NULL:
                vx_table_free(t.slots, t.cap * sizeof(fdb_ent))
                raise MemoryError()
            e.port = <int32_t>(inserted & 0xFFFF)
            inserted += 1
        ws = working_set if 0 < working_set < n_entries else n_entries
        # the i-th inserted key is the i-th distinct value of the generator; with 48-bit MACs
        # collisions are vanishingly rare, so index -> key is recomputed, not stored
        t0 = vx_now_ns()
        if batch == 0:
            for i in range(n_lookups):
                rng ^= rng << 13
                rng ^= rng >> 7
                rng ^= rng << 17
                k = fdb_key(0, vx_mix64(((rng >> 32) * ws >> 32) + 1) & MAC_MASK)
                if fdb_find(&t, k) != NULL:
                    hits += 1
        else:
            i = 0
            while i < n_lookups:
                for j in range(batch):
                    rng ^= rng << 13
                    rng ^= rng >> 7
                    rng ^= rng << 17
                    keys[j] = fdb_key(0, vx_mix64(((rng >> 32) * ws >> 32) + 1) & MAC_MASK)
                    vx_prefetch(&t.slots[vx_mix64(keys[j]) >> t.shift])
                for j in range(batch):
                    if fdb_find(&t, keys[j]) != NULL:
                        hits += 1
                i += batch
        t1 = vx_now_ns()
        n_done = n_lookups if batch == 0 else ((n_lookups + batch - 1) // batch) * batch
        result = {"ns_per_lookup": (t1 - t0) / n_done if n_done else 0.0,
                  "lookups": n_done, "hits": hits, "entries": t.count, "capacity": t.cap,
                  "bytes_per_entry": t.cap * sizeof(fdb_ent) / <double>t.count}
        vx_table_free(t.slots, t.cap * sizeof(fdb_ent))
        return result

    # -- offloads (issue #5) -------------------------------------------------------------------

    def set_offload(self, *, udp_gso=False, udp_gro=False, tap_coalesce=False):
        """Switch the C path's offloads on or off (dataplane/offload.py says what each does;
        the caller has probed that the kernel supports them):

        * ``udp_gso``: runs of equal-sized datagrams to one (destination, source port) go out
          with one sendmsg(UDP_SEGMENT) on a UDP socket bound to (local, source port),
          opened here on first use (at most GSO_SOCK_MAX; the raw socket otherwise);
        * ``udp_gro``: the receive socket has UDP_GRO on; rx_udp_burst cuts what it glued
          together at the cmsg's segment size;
        * ``tap_coalesce``: consecutive segments of a TCP flow to a vnet TAP are written as
          one GSO_TCPV4 frame."""
        cdef sw_t *s = self.s
        cdef uint32_t i
        cdef uint32_t *gso_len
        cdef uint8_t *cmsg
        if udp_gso and gso_tables(s) < 0:
            raise MemoryError()
        if not udp_gso:
            gso_close_all(self.s)
        if udp_gro and s.rx_gso == NULL:
            # both or neither: rx_udp_burst uses rx_cmsg whenever rx_gso is there
            gso_len = <uint32_t*>calloc(s.burst, sizeof(uint32_t))
            cmsg = <uint8_t*>calloc(s.burst, VX_GRO_CMSG_SPACE)
            if gso_len == NULL or cmsg == NULL:
                free(gso_len)
                free(cmsg)
                raise MemoryError()
            s.rx_gso = gso_len
            s.rx_cmsg = cmsg
        s.udp_gso = 1 if udp_gso else 0
        s.udp_gro = 1 if udp_gro else 0
        s.tap_coalesce = 1 if tap_coalesce else 0

    def offload_state(self) -> dict:
        """What is on now: udp_gso turns itself off when the kernel refuses a GSO send with
        EIO (the route's device cannot checksum, udp_send_skb)."""
        return {"udp_gso": bool(self.s.udp_gso), "udp_gro": bool(self.s.udp_gro),
                "tap_coalesce": bool(self.s.tap_coalesce)}

    def offload_counters(self) -> dict:
        cdef sw_t *s = self.s
        cdef int i
        d = {OFFLOAD_COUNTERS[i]: s.offc[i] for i in range(N_OFFC)}
        d["gso_sockets"] = s.gso_nsock
        return d

    def offload_gc(self):
        """Close the per-source-port GSO sockets unused for GSO_IDLE_TICKS calls (call it
        once a second) and forget failed binds after as long."""
        cdef sw_t *s = self.s
        cdef uint32_t sp
        cdef int32_t fd
        if s.gso_fd == NULL:
            return
        s.gso_epoch += 1
        if s.gso_epoch % GSO_IDLE_TICKS == 0:
            s.gso_refused = 0xFFFFFFFF      # the path MTU may have grown: try GSO again
        for sp in range(65536):
            fd = s.gso_fd[sp]
            if fd == -1 or s.gso_epoch - s.gso_used[sp] < GSO_IDLE_TICKS:
                continue
            if fd >= 0:
                vx_close(fd)
                s.gso_nsock -= 1
            s.gso_fd[sp] = -1

    cdef void process_vnet_burst(self, int32_t port, uint32_t n, double now) noexcept nogil:
        cdef sw_t *s = self.s
        cdef uint32_t i, j, ln
        cdef int k
        cdef uint8_t hb[10]
        cdef uint8_t *f
        cdef uint8_t *scratch
        cdef uint8_t vnet = s.ports[port].vnet
        for i in range(n):
            f = s.rx + <size_t>i * SLOT_STRIDE + HEADROOM
            scratch = s.scratch + <size_t>i * SCRATCH_STRIDE
            ln = s.rx_len[i]
            memcpy(hb, f - vnet, 10)        # encapsulation writes over the headroom
            if (hb[1] & 0x7F) == 0:
                if hb[0] & 1:
                    if vnet_csum(hb, f, ln) >= 0:
                        s.offc[OC_BAD_VNET] += 1
                        continue
                    s.offc[OC_CSUM_COMPLETED] += 1
                core_from_port(s, port, port, f, ln, now, scratch)
                continue
            k = tso_segment(hb, f, ln, s.seg, s.seg_off, s.seg_len)
            if k < 0:
                s.offc[OC_BAD_VNET] += 1
                continue
            s.offc[OC_TSO_FRAMES] += 1
            s.offc[OC_TSO_SEGMENTS] += <uint64_t>k
            for j in range(<uint32_t>k):
                core_from_port(s, port, port, s.seg + s.seg_off[j], s.seg_len[j], now,
                               scratch)
            self.transmit()                 # the segment buffer is reused by the next one

    # -- burst I/O ------------------------------------------------------------------------------

    def set_port_fd(self, port, int fd, int vnet_hdr_len=0):
        """Register the TAP fd (non-blocking, IFF_TAP|IFF_NO_PI) that frames to ``port`` are
        written to; -1 unregisters. The fd stays owned by the caller. ``vnet_hdr_len`` (10
        or 12: IFF_VNET_HDR and TUNSETVNETHDRSZ) says every read and write on the fd starts
        with a struct virtio_net_hdr: reads are segmented/checksummed before the core,
        writes carry a zero header or a coalesced frame's GSO header."""
        cdef sw_t *s = self.s
        cdef int32_t p
        if not port_id(port, &p) or <uint32_t>p >= s.ports_cap or s.ports[p].net < 0:
            raise EntryNotFound(f"no port {port}")
        if vnet_hdr_len not in (0, 10, 12):
            raise InvalidArgument(f"vnet_hdr_len {vnet_hdr_len} is not 0, 10 or 12")
        cdef uint8_t *seg
        cdef uint32_t *seg_off
        cdef uint32_t *seg_len
        if vnet_hdr_len and s.seg == NULL:
            # all three or none: process_vnet_burst uses them together
            seg = <uint8_t*>malloc(SEG_BUF)
            seg_off = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
            seg_len = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
            if seg == NULL or seg_off == NULL or seg_len == NULL:
                free(seg)
                free(seg_off)
                free(seg_len)
                raise MemoryError()
            s.seg = seg
            s.seg_off = seg_off
            s.seg_len = seg_len
        s.ports[p].fd = fd
        s.ports[p].gone = 0
        s.ports[p].vnet = <uint8_t>vnet_hdr_len

    def set_tx_socket(self, int fd):
        """Register the socket that outer datagrams are sent on with sendmmsg(); -1
        unregisters. The fd stays owned by the caller. A raw IPPROTO_RAW socket (IP_HDRINCL)
        gets the complete IPv4 + UDP + VXLAN datagram built here (per-flow source port,
        RFC 7348 §5); a UDP socket (the no-CAP_NET_RAW fallback) gets the VXLAN payload only
        and the kernel adds IPv4/UDP from its bound port."""
        cdef bint raw = True
        if fd >= 0:
            import socket
            dup = socket.fromfd(fd, socket.AF_INET, socket.SOCK_RAW)
            try:
                raw = dup.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_RAW
            finally:
                dup.close()
        self.s.tx_raw = raw
        self.s.tx_fd = fd

    def gone_ports(self):
        """Ports whose TAP fd failed with EBADF/EBADFD/ENODEV/ENXIO since the last call:
        the caller should del_port() them. Their fd is unregistered."""
        cdef uint32_t i
        gone = []
        for i in range(self.s.ports_cap):
            if self.s.ports[i].gone:
                self.s.ports[i].gone = 0
                gone.append(i)
        return gone

    cdef void transmit(self) noexcept nogil:
        cdef sw_t *s = self.s
        cdef uint32_t i, j, k, nv = 0, nb = 0, ncap
        cdef txrec *r
        cdef port_t *pt
        cdef ssize_t w
        cdef int err, fd
        cdef bint runs_ok = s.tap_coalesce and runs_reserve(s) == 0
        for i in range(s.n_out):
            r = &s.out[i]
            if r.port < 0:
                nv += 1
                continue
            pt = &s.ports[r.port]
            if pt.fd < 0 or pt.gone:
                pt.tx_dropped += 1
                continue
            if pt.vnet:
                if runs_ok:
                    tap_frame(s, <int32_t>i)
                else:
                    tap_single(s, pt, r.data, r.len)
                continue
            while True:
                w = write(pt.fd, r.data, r.len)
                if w >= 0 or errno != EINTR:
                    break
            if w >= 0:
                continue
            err = errno
            if err == EAGAIN:                 # == EWOULDBLOCK on Linux
                pt.tx_dropped += 1          # TAP queue full: a drop, like a full qdisc
            elif err == EBADF or err == EBADFD or err == ENODEV or err == ENXIO:
                pt.tx_errors += 1
                pt.gone = 1                 # endpoint went away: Python removes the port
                pt.fd = -1
            else:
                pt.tx_errors += 1
        if runs_ok:
            for i in range(s.n_run_ports):
                run_flush(s, s.run_ports[i])
                s.runs[s.run_ports[i]].listed = 0
            s.n_run_ports = 0
        if nv and s.tx_fd < 0:
            s.ul_tx_dropped += nv
        elif nv:
            if nv > s.tx_cap:
                ncap = nv if nv > 2 * s.tx_cap else 2 * s.tx_cap
                free(s.tx_msgs)
                free(s.tx_iov)
                free(s.tx_addr)
                free(s.tx_rec)
                s.tx_msgs = <mmsghdr*>calloc(ncap, sizeof(mmsghdr))
                s.tx_iov = <iovec*>calloc(2 * ncap, sizeof(iovec))
                s.tx_addr = <sockaddr_in*>calloc(ncap, sizeof(sockaddr_in))
                s.tx_rec = <uint32_t*>calloc(ncap, sizeof(uint32_t))
                if s.tx_msgs == NULL or s.tx_iov == NULL or s.tx_addr == NULL \
                        or s.tx_rec == NULL:
                    free(s.tx_msgs)
                    free(s.tx_iov)
                    free(s.tx_addr)
                    free(s.tx_rec)
                    s.tx_msgs = NULL
                    s.tx_iov = NULL
                    s.tx_addr = NULL
                    s.tx_rec = NULL
                    s.tx_cap = 0
                    s.ul_tx_dropped += nv
                    s.n_out = 0
                    return
                s.tx_cap = ncap
            i = 0
            while i < s.n_out:
                r = &s.out[i]
                if r.port >= 0:
                    i += 1
                    continue
                if s.udp_gso:
                    k = gso_run(s, i)
                    if k >= 2:
                        fd = gso_socket(s, r.sport) if s.tx_raw else s.tx_fd
                        if fd >= 0:
                            # datagrams queued for sendmmsg go first: per-flow order
                            nb = raw_flush(s, nb)
                            if r.len >= s.gso_refused:
                                s.offc[OC_GSO_FALLBACKS] += 1
                                udp_each(s, fd, i, k)
                            elif not gso_send(s, fd, i, k):
                                udp_each(s, fd, i, k)
                            i += k
                            continue
                        s.offc[OC_GSO_FALLBACKS] += 1
                        for j in range(k):
                            raw_queue(s, nb, i + j)
                            nb += 1
                        i += k
                        continue
                    if s.tx_raw and s.gso_fd[r.sport] >= 0:
                        # the flow has a socket of its own (it sent GSO runs lately): keep
                        # all its datagrams on it, so that no per-socket queue or qdisc
                        # choice (fq, XPS) can reorder them against its GSO runs
                        s.gso_used[r.sport] = s.gso_epoch
                        udp_each(s, s.gso_fd[r.sport], i, 1)
                        i += 1
                        continue
                raw_queue(s, nb, i)
                nb += 1
                i += 1
            raw_flush(s, nb)
        s.n_out = 0

    def rx_tap_burst(self, port, int fd, double now) -> int:
        """Read up to ``burst`` frames from the TAP ``fd`` of ``port`` (until EAGAIN),
        forward them and transmit the outputs. Returns the number of frames read; never
        raises for I/O errors (a dead fd marks the port in gone_ports())."""
        cdef int32_t p = -1
        if not port_id(port, &p):
            p = -1
        return self.tap_burst(p, fd, now)

    cdef uint32_t tap_burst(self, int32_t p, int fd, double now) noexcept nogil:
        cdef sw_t *s = self.s
        cdef uint32_t n = 0
        cdef ssize_t r
        cdef int err
        cdef uint32_t vnet = 0
        if 0 <= p < <int32_t>s.ports_cap and s.ports[p].net >= 0:
            vnet = s.ports[p].vnet
        while n < s.burst:
            if vnet:
                # the virtio_net_hdr lands in the headroom, the frame at HEADROOM as always;
                # a TSO super-frame (up to 64 KB of IP) fills the slot to its end
                r = read(fd, s.rx + <size_t>n * SLOT_STRIDE + HEADROOM - vnet,
                         SLOT_STRIDE - HEADROOM + vnet)
                if r > 0 and <uint32_t>r <= vnet:
                    s.offc[OC_BAD_VNET] += 1
                    continue
                if r > 0:
                    r -= vnet
            else:
                r = read(fd, s.rx + <size_t>n * SLOT_STRIDE + HEADROOM, MAX_FRAME)
            if r > 0:
                s.rx_len[n] = <uint32_t>r
                n += 1
                continue
            if r == 0:
                break
            err = errno
            if err == EINTR:
                continue
            if err != EAGAIN and 0 <= p < <int32_t>s.ports_cap \
                    and s.ports[p].net >= 0:
                # EIO: the link is down (tun_get_user/tun_do_read refuse I/O while the
                # device is not running) — the endpoint is still there; not gone.
                if err == EBADF or err == EBADFD or err == ENODEV or err == ENXIO:
                    s.ports[p].gone = 1
                    s.ports[p].fd = -1
            break
        if n:
            if vnet:
                self.process_vnet_burst(p, n, now)
            else:
                self.process_port_burst(p, n, now)
            self.transmit()
        return n

    def rx_udp_burst(self, int sock_fd, double now) -> int:
        """recvmmsg() up to ``burst`` VXLAN datagrams from the UDP socket, forward them and
        transmit the outputs. Returns the number of datagrams received (0 on EAGAIN)."""
        return self.udp_burst(sock_fd, now)

    def busy_poll(self, int sock_fd, double idle, double limit) -> int:
        """Keep serving every registered TAP fd and the UDP socket ``sock_fd`` without
        sleeping until nothing has arrived for ``idle`` seconds (or ``limit`` seconds have
        passed in all, so the event loop still gets its turn under sustained load).

        The adaptive polling of NAPI busy-poll (net.core.busy_poll) or DPDK's interrupt
        mode: a VTEP that goes back to epoll after every frame pays a scheduler wake-up
        (~15-30 us on a VM) for the next one, and a request/response crossing two VTEPs
        pays four of them. Polling a little after each burst catches the answer while it
        is still on its way. sched_yield() between idle rounds gives the CPU to anything
        runnable (the containers' own processes on a small machine). Returns the number of
        frames and datagrams handled."""
        cdef sw_t *s = self.s
        cdef double t0 = vx_now_ns(), last = t0, t
        cdef double idle_ns = idle * 1e9, limit_ns = limit * 1e9
        cdef uint64_t total = 0
        cdef uint32_t got, p
        # the GIL stays held: the switch belongs to the event loop's thread
        while True:
            got = 0
            for p in range(s.ports_cap):
                if s.ports[p].net >= 0 and s.ports[p].fd >= 0 and not s.ports[p].gone:
                    got += self.tap_burst(<int32_t>p, s.ports[p].fd, last * 1e-9)
            if sock_fd >= 0:
                got += self.udp_burst(sock_fd, last * 1e-9)
            t = vx_now_ns()
            if got:
                total += got
                last = t
            elif t - last >= idle_ns:
                break
            else:
                sched_yield()
            if t - t0 >= limit_ns:
                break
        return total

    cdef uint32_t udp_burst(self, int sock_fd, double now) noexcept nogil:
        cdef sw_t *s = self.s
        cdef uint32_t i, k = 0
        cdef int rc
        cdef mmsghdr *m
        for i in range(s.burst):
            m = &s.rx_msgs[i]
            s.rx_iov[i].iov_base = s.rx + <size_t>i * SLOT_STRIDE + HEADROOM - 8
            s.rx_iov[i].iov_len = SLOT_STRIDE - HEADROOM + 8
            memset(&m.msg_hdr, 0, sizeof(msghdr))
            m.msg_hdr.msg_iov = &s.rx_iov[i]
            m.msg_hdr.msg_iovlen = 1
            m.msg_hdr.msg_name = &s.rx_addr[i]
            m.msg_hdr.msg_namelen = sizeof(sockaddr_in)
            if s.udp_gro:
                m.msg_hdr.msg_control = s.rx_cmsg + <size_t>i * VX_GRO_CMSG_SPACE
                m.msg_hdr.msg_controllen = VX_GRO_CMSG_SPACE
            m.msg_len = 0
        while True:
            rc = recvmmsg(sock_fd, s.rx_msgs, s.burst, MSG_DONTWAIT, NULL)
            if rc >= 0 or errno != EINTR:
                break
        if rc < 0:
            if errno != EAGAIN:
                s.ul_rx_errors += 1
            return 0
        for i in range(<uint32_t>rc):
            if s.rx_msgs[i].msg_hdr.msg_flags & (MSG_TRUNC | MSG_CTRUNC) \
                    or s.rx_addr[i].sin_family != AF_INET:
                s.ul_rx_errors += 1
                continue
            if k != i:
                memcpy(s.rx + <size_t>k * SLOT_STRIDE + HEADROOM - 8,
                       s.rx + <size_t>i * SLOT_STRIDE + HEADROOM - 8, s.rx_msgs[i].msg_len)
            s.rx_len[k] = s.rx_msgs[i].msg_len
            s.rx_src[k] = s.rx_addr[i].sin_addr.s_addr
            if s.udp_gro:
                s.rx_gso[k] = vx_gro_size(&s.rx_msgs[i].msg_hdr)
            k += 1
        if k and s.udp_gro:
            self.process_gro_burst(k, now)
            self.transmit()
        elif k:
            self.process_underlay_burst(k, now)
            self.transmit()
        return <uint32_t>rc

    cdef void process_gro_burst(self, uint32_t n, double now) noexcept nogil:
        """process_underlay_burst for buffers that UDP GRO may have glued together: each is
        cut at its segment size (udp_rcv_segment's cut, done here instead of in the kernel)
        and every datagram goes through the core on its own."""
        cdef sw_t *s = self.s
        cdef uint32_t i, off, g, ln, pl
        cdef uint8_t *d
        for i in range(n):
            d = s.rx + <size_t>i * SLOT_STRIDE + HEADROOM - 8
            ln = s.rx_len[i]
            g = s.rx_gso[i]
            if g == 0 or g >= ln:
                core_from_underlay(s, s.rx_src[i], d, ln, now)
                continue
            s.offc[OC_GRO_BUFFERS] += 1
            off = 0
            while off < ln:
                pl = ln - off if ln - off < g else g
                core_from_underlay(s, s.rx_src[i], d + off, pl, now)
                s.offc[OC_GRO_DATAGRAMS] += 1
                off += pl


# =============================================================================== offload hooks

def offload_segment(hdr, frame):
    """dataplane.offload.segment() through the C functions rx_tap_burst uses (vnet_csum,
    tso_segment), for the differential tests. Raises ValueError(reason) like the reference."""
    cdef bytes hb = bytes(hdr)
    cdef bytes fb = bytes(frame)
    cdef bytearray buf
    cdef uint8_t *out
    cdef uint32_t *offs
    cdef uint32_t *lens
    cdef int k, rc
    cdef uint32_t n = len(fb)
    if len(hb) < 10:
        raise ValueError(VNET_ERRORS[VE_SHORT_HEADER])
    if (hb[1] & 0x7F) == 0:
        if not (hb[0] & 1):
            return [fb]
        buf = bytearray(fb)
        rc = vnet_csum(<const uint8_t*><const char*>hb, <uint8_t*><char*>buf, n)
        if rc >= 0:
            raise ValueError(VNET_ERRORS[rc])
        return [bytes(buf)]
    out = <uint8_t*>malloc(SEG_BUF)
    offs = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
    lens = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
    try:
        if out == NULL or offs == NULL or lens == NULL:
            raise MemoryError()
        k = tso_segment(<const uint8_t*><const char*>hb, <const uint8_t*><const char*>fb, n,
                        out, offs, lens)
        if k < 0:
            raise ValueError(VNET_ERRORS[-k - 1])
        return [PyBytes_FromStringAndSize(<char*>out + offs[i], lens[i]) for i in range(k)]
    finally:
        free(out)
        free(offs)
        free(lens)


def offload_coalesce(frames):
    """dataplane.offload.coalesce() through transmit() itself: the frames become output
    records to one port whose "TAP" is a SOCK_SEQPACKET socket pair (one message per
    writev, like a TAP), with a 10-byte virtio_net_hdr; returns the (hdr, frame) messages."""
    import socket
    cdef list keep = [bytes(f) for f in frames]
    cdef Switch sw = Switch("198.18.0.1")
    cdef sw_t *s = sw.s
    cdef txrec *r
    cdef bytes b
    a, z = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        for sock, opt, force in ((a, socket.SO_SNDBUF, 32), (z, socket.SO_RCVBUF, 33)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, 64 << 20)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, opt, 64 << 20)
        a.setblocking(False)
        z.setblocking(False)
        s.ports[0].net = 0          # transmit() never looks at the network
        s.ports[0].fd = a.fileno()
        s.ports[0].vnet = 10
        s.tap_coalesce = 1
        for b in keep:
            r = out_push(s)
            if r == NULL:
                raise MemoryError()
            r.data = <uint8_t*><const char*>b
            r.len = <uint32_t>len(b)
            r.port = 0
        sw.transmit()
        if s.ports[0].tx_dropped or s.ports[0].tx_errors:
            raise RuntimeError("offload_coalesce: the socket pair refused a write")
        result = []
        while True:
            try:
                m = z.recv(1 << 20)
            except BlockingIOError:
                break
            result.append((m[:10], m[10:]))
        return result
    finally:
        s.ports[0].net = -1
        s.ports[0].fd = -1
        a.close()
        z.close()


def bench_tso(hdr, frame, long count) -> float:
    """Seconds to cut ``frame`` (a TSO super-frame with virtio header ``hdr``) into its
    segments ``count`` times with tso_segment, the work rx_tap_burst does per super-frame
    (copies, per-segment headers and TCP checksums), without I/O or Python per call."""
    cdef bytes hb = bytes(hdr)
    cdef bytes fb = bytes(frame)
    cdef uint8_t *out = <uint8_t*>malloc(SEG_BUF)
    cdef uint32_t *offs = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
    cdef uint32_t *lens = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
    cdef const uint8_t *h = <const uint8_t*><const char*>hb
    cdef const uint8_t *f = <const uint8_t*><const char*>fb
    cdef uint32_t n = len(fb)
    cdef long i
    cdef int k = 0
    cdef double t0, t1
    try:
        if out == NULL or offs == NULL or lens == NULL:
            raise MemoryError()
        if len(hb) < 10 or tso_segment(h, f, n, out, offs, lens) < 0:
            raise ValueError("not a valid TSO super-frame")
        with nogil:
            t0 = vx_now_ns()
            for i in range(count):
                k = tso_segment(h, f, n, out, offs, lens)
            t1 = vx_now_ns()
        return (t1 - t0) * 1e-9
    finally:
        free(out)
        free(offs)
        free(lens)


def bench_coalesce(frames, long count) -> float:
    """Seconds to run the coalescing decisions of transmit() (tcp4_coalescible: header and
    TCP checksum checks; run_extends/run_add; run_header for the merged frame) over
    ``frames`` (one port's records) ``count`` times, without the writev."""
    cdef list keep = [bytes(f) for f in frames]
    cdef Py_ssize_t m = len(keep), j
    cdef uint8_t **ptr = <uint8_t**>malloc((m + 1) * sizeof(uint8_t*))
    cdef uint32_t *ln = <uint32_t*>malloc((m + 1) * sizeof(uint32_t))
    cdef sw_t *dummy = <sw_t*>calloc(1, sizeof(sw_t))
    cdef run_t run
    cdef uint8_t vh[12]
    cdef uint8_t hdr[128]
    cdef uint8_t *head = NULL
    cdef long i
    cdef double t0, t1
    try:
        if ptr == NULL or ln == NULL or dummy == NULL:
            raise MemoryError()
        for j in range(m):
            ptr[j] = <uint8_t*><const char*>keep[j]
            ln[j] = <uint32_t>len(keep[j])
        with nogil:
            t0 = vx_now_ns()
            for i in range(count):
                run.head = -1
                for j in range(m):
                    if not tcp4_coalescible(dummy, ptr[j], ln[j]):
                        continue
                    if run.head >= 0 and run_extends(&run, head, ptr[j], ln[j]):
                        run_add(&run, ptr[j], ln[j])
                        continue
                    if run.head >= 0 and run.n > 1:
                        run_header(&run, head, run.last_psh, vh, hdr)
                    run_start(&run, <int32_t>j, ptr[j], ln[j])
                    head = ptr[j]
                if run.head >= 0 and run.n > 1:
                    run_header(&run, head, run.last_psh, vh, hdr)
            t1 = vx_now_ns()
        return (t1 - t0) * 1e-9
    finally:
        free(ptr)
        free(ln)
        free(dummy)
