# The forwarding core (dataplane/switch.py is the reference): one frame from a local port or
# one datagram from the underlay in, output records (txrec) and events out. C only, nogil;
# the burst loops in rx.pyx call core_from_port/core_from_underlay per frame.


cdef inline int drop(sw_t *s, int reason) noexcept nogil:
    s.drops[reason] += 1
    return reason


cdef void ev_push(sw_t *s, uint8_t kind, uint32_t vni, uint64_t mac, const uint8_t *ip,
                  uint8_t okind, uint32_t oport, const uint8_t *oaddr, uint8_t nkind,
                  uint32_t nport, const uint8_t *naddr) noexcept nogil:
    """Record an event (about `mac`, or about address `ip` when it is not NULL; the old and
    new locations a port or a VTEP address); a full ring loses it (counted in events_lost),
    never blocks."""
    cdef events_t *q = &s.ev
    cdef event_t *ev
    if vx_unlikely(q.count == q.cap):
        q.lost += 1
        return
    ev = &q.ring[(q.head + q.count) & (q.cap - 1)]
    ev.kind = kind
    ev.okind = okind
    ev.nkind = nkind
    ev.vni = vni
    ev.mac = mac
    if ip != NULL:
        memcpy(ev.ip, ip, 16)
    ev.oport = oport
    ev.nport = nport
    if oaddr != NULL:
        memcpy(ev.oaddr, oaddr, 16)
    if naddr != NULL:
        memcpy(ev.naddr, naddr, 16)
    q.count += 1


cdef int out_reserve(sw_t *s) noexcept nogil:
    """Double the output records (out_push found them full); -1 when memory ran out."""
    cdef uint32_t ncap = s.out_cap * 2
    cdef txrec *grown = <txrec*>realloc(s.out, ncap * sizeof(txrec))
    if grown == NULL:
        return -1
    s.out = grown
    s.out_cap = ncap
    return 0


cdef inline void emit_port(sw_t *s, int32_t p, uint8_t *data, uint32_t n) noexcept nogil:
    """Switch._to_port: one frame to a local port (shared buffer, no copy)."""
    cdef txrec *r = out_push(s)
    cdef port_t *pt
    if r == NULL:
        return
    r.data = data
    r.len = n
    r.port = p
    r.csum = s.cur_csum
    pt = &s.ports[p]
    pt.tx_packets += 1
    pt.tx_bytes += n


cdef inline uint8_t *xroom(sw_t *s, uint32_t need) noexcept nogil:
    """`need` bytes at the copy arena's free end (not taken yet: xtake() takes them), NULL
    when the arena is full."""
    if s.xbuf == NULL:
        s.xbuf = <uint8_t*>malloc(XBUF_SIZE)
        if s.xbuf == NULL:
            return NULL
    if s.xoff + need > XBUF_SIZE:
        return NULL
    return s.xbuf + s.xoff


cdef inline void xtake(sw_t *s, uint32_t used) noexcept nogil:
    s.xoff += (used + 63) & ~(<uint32_t>63)


cdef uint8_t *xcopy(sw_t *s, const uint8_t *payload, uint32_t plen) noexcept nogil:
    """A copy of a VXLAN payload with HEADROOM in front, in the burst's copy arena (emptied
    by transmit()): for a head-end-replication copy whose VXLAN header differs (a remote
    with a VNI of its own). NULL when the arena is full."""
    cdef uint8_t *p = xroom(s, HEADROOM + plen)
    if p == NULL:
        return NULL
    xtake(s, HEADROOM + plen)
    p += HEADROOM
    memcpy(p, payload, plen)
    return p


cdef inline void tflag_once(sw_t *s, uint8_t flag) noexcept nogil:
    """tflag, unless the frame's record has the flag already."""
    cdef uint32_t i
    if vx_likely(not s.tr.on):
        return
    for i in range(s.tr.tf_n):
        if s.tr.tf[i] == flag:
            return
    tflag(s, flag)


cdef bint pmtu_reply(sw_t *s, int32_t port, const uint8_t *f, uint32_t n,
                     const remote_t *rm) noexcept nogil:
    """Switch._pmtu_reply for a frame longer than the remote's max_frame: the ICMP the
    kernel's vxlan answers it with (tunnel.pyx pmtud_icmp), written back to the ingress port,
    counted and flagged; True when it was (the frame is then not sent to this remote). With
    the copy arena full the frame is sent as it is, as if no route MTU were known."""
    cdef uint8_t *reply = xroom(s, PMTU_REPLY_MAX)
    cdef uint32_t len
    cdef txrec *r
    cdef port_t *pt
    if reply == NULL:
        return False
    len = pmtud_icmp(f, n, <int32_t>rm.max_frame - ETH_HLEN, reply)
    if len == 0:
        return False
    xtake(s, len)
    if f[ETH_TYPE + 1] == 0x00:                 # 0x0800 (or 0x86DD)
        s.evc[EC_FRAG_NEEDED] += 1
        tflag_once(s, TF_FRAG_NEEDED)
    else:
        s.evc[EC_PKT_TOO_BIG] += 1
        tflag_once(s, TF_PKT_TOO_BIG)
    # emit_port's work, written out: one more call site of emit_port made gcc stop inlining
    # it into core_underlay (-8 % of 64-byte decapsulation)
    r = out_push(s)
    if r != NULL:
        r.data = reply
        r.len = len
        r.port = port
        r.csum = CSUM_GOOD
        pt = &s.ports[port]
        pt.tx_packets += 1
        pt.tx_bytes += len
    return True


cdef inline void outer_hdr(sw_t *s, txrec *r, const remote_t *rm, uint8_t *data, bint own,
                           uint8_t df, uint32_t label) noexcept nogil:
    """The outer IPv4 or IPv6 + UDP header of one encap output record (r's addresses, ports,
    length, tos and ttl set): in the headroom in front of ``data`` when the record owns it,
    else in the record (udp_tunnel_xmit_skb / udp_tunnel6_xmit_skb's headers)."""
    if rm.v4:
        r.v6 = 0
        r.hlen = IPUDP_HLEN
        r.df = df
        r.label = 0                 # a flow label means nothing to IPv4
        build_ipudp(data - IPUDP_HLEN if own else r.hdr, s.local, rem_v4(rm), r.sport,
                    r.dport, r.len, 0, r.tos, r.ttl, df)
    else:
        r.v6 = 1
        r.hlen = IP6UDP_HLEN
        r.df = 0                    # nor DF to IPv6 (vxlan_xmit_one: AF_INET only)
        r.label = label
        build_ip6udp(data - IP6UDP_HLEN if own else r.hdr, s.local6, rm.addr, r.sport,
                     r.dport, r.len, 0, r.tos, r.ttl, label)


cdef void encap(sw_t *s, net_t *net, fdb_ent *e, int32_t port, uint8_t *f,
                uint32_t n) noexcept nogil:
    """The vxlan port's transmit (vxlan_xmit → vxlan_xmit_one, per remote): VXLAN header
    (RFC 7348 §5.1) written in the headroom in front of the frame, IPv4 or IPv6 + UDP headers per
    destination. The first copy's headers go into the headroom too (contiguous datagram =
    the rx slot), later copies carry theirs in the output record and share the payload —
    unless a remote has a VNI of its own (the kernel's per-entry vni), whose copy gets its
    own payload.

    The UDP checksum is left for outer_csum(): only a datagram that leaves through the raw
    socket (or is handed to Python) needs it; one sent with UDP GSO gets it from the kernel
    (or the NIC), and summing 64 KB of payload per super-frame for nothing was ~8 % of a
    core at 6 Gbit/s.

    Per remote, a frame longer than its path carries (max_frame, from the route MTU the
    control plane set) is answered with the kernel's PMTU reply to `port` instead
    (pmtu_reply: skb_tunnel_check_pmtu in vxlan_xmit_one); the first copy actually sent
    takes the headroom."""
    cdef uint8_t *payload = f - VXLAN_HLEN
    cdef uint8_t *data
    cdef uint32_t plen = n + VXLAN_HLEN
    cdef uint32_t cnt = ent_nremotes(&s.fdb, e), i, vni, vni0
    cdef uint32_t *rem = ent_remotes(&s.fdb, e)
    cdef remote_t *rm
    cdef uint16_t sport
    cdef uint8_t tos, ttl, df
    cdef uint32_t label
    cdef bint own, head = True
    cdef txrec *r
    sport = flow_sport(s, f, n)
    outer_fields(net, f, n, &tos, &ttl, &df, &label)
    rm = &s.rem.r[rem[0]]
    vni0 = rm.vni if rm.vni else net.vni
    if vni0 == net.vni:
        memcpy(payload, net.hdr, VXLAN_HLEN)
    else:
        vxlan_put(payload, vni0)
    for i in range(cnt):
        rm = &s.rem.r[rem[i]]
        if vx_unlikely(rm.max_frame != 0 and n > rm.max_frame) \
                and pmtu_reply(s, port, f, n, rm):
            continue
        vni = rm.vni if rm.vni else net.vni
        data = payload
        own = head
        if vni == vni0:
            head = False
        else:
            data = xcopy(s, payload, plen)
            if data == NULL:
                s.ul_tx_dropped += 1
                continue
            vxlan_put(data, vni)
            own = True
        r = out_push(s)
        if r == NULL:
            return
        r.data = data
        r.len = plen
        r.port = -1
        r.rid = rem[i]
        memcpy(r.dst, rm.addr, 16)
        r.dport = rm.port if rm.port else s.dport
        r.sport = sport
        r.csum_todo = 1
        r.tos = tos
        r.ttl = ttl
        r.inline_hdr = 0 if own else 1
        outer_hdr(s, r, rm, data, own, df, label)
        s.ul_tx_packets += 1
        s.ul_tx_bytes += plen


cdef bint proxy_answers(sw_t *s, uint32_t slot, net_t *net, const nb_ent *nb,
                        const uint8_t *ip, uint8_t local_flag) noexcept nogil:
    """Switch._proxy_answers: does the proxy answer for neighbour `nb` (of address `ip`, 16
    bytes)? No entry: an l3miss; a bridge-local neighbour: the endpoint answers itself."""
    cdef fdb_ent *fe
    if nb == NULL:
        s.evc[EC_L3MISS] += 1
        ev_push(s, EV_L3MISS, net.vni, 0, ip, LOC_NONE, 0, NULL, LOC_NONE, 0, NULL)
        tflag(s, TF_L3MISS)
        return False
    fe = fdb_find(&s.fdb, fdb_key(slot, vx_mac48(nb.mac)))
    if fe != NULL and fe.port >= 0:
        tflag(s, local_flag)
        return False
    s.evc[EC_PROXY_REPLIES] += 1
    tflag(s, TF_PROXY_REPLY)
    return True


cdef void arp_reduce(sw_t *s, uint32_t slot, net_t *net, int32_t port, const uint8_t *f,
                     uint8_t *reply) noexcept nogil:
    """The kernel's arp_reduce (vxlan `proxy`): answer an ARP request from the neighbour
    table with arp_create(ARPOP_REPLY, ...) and never tunnel it (wire.arp_reply layout)."""
    cdef uint32_t tip = vx_be32(f + ARP_TPA)
    cdef uint8_t ip[16]
    cdef nb_ent *nb
    if (tip >> 24) == 127 or (tip >> 28) == 14:
        tflag(s, TF_ARP_CONSUMED)
        return                  # loopback or multicast target: consumed without a word
    nb = nb_find(&s.nb, nb_key(slot, tip))
    addr_v4mapped(ip, htonl(tip))
    if not proxy_answers(s, slot, net, nb, ip, TF_ARP_LOCAL):
        return
    memcpy(reply, f + ARP_SHA, ETH_ALEN)               # Ethernet: to the requester
    memcpy(reply + ETH_SRC, nb.mac, ETH_ALEN)          # from the answered MAC
    reply[ETH_TYPE] = 0x08
    reply[ETH_TYPE + 1] = 0x06
    vx_put_be32(reply + ARP_HTYPE, 0x00010800)         # Ethernet, IPv4
    vx_put_be32(reply + ARP_HLEN_F, 0x06040002)        # hlen 6, plen 4, op reply
    memcpy(reply + ARP_SHA, nb.mac, ETH_ALEN)          # sha = answer
    memcpy(reply + ARP_SPA, f + ARP_TPA, 4)            # spa = requested IP
    memcpy(reply + ARP_THA, f + ARP_SHA, ETH_ALEN)     # tha = requester
    memcpy(reply + ARP_TPA, f + ARP_SPA, 4)            # tpa = requester's IP
    emit_port(s, port, reply, ARP_FRAME)


cdef void neigh_reduce(sw_t *s, uint32_t slot, net_t *net, int32_t port, const uint8_t *f,
                       const ns_t *ns, uint8_t *reply) noexcept nogil:
    """Switch._neigh_reduce: the kernel's neigh_reduce (vxlan `proxy`) for a checked NS —
    answered from the neighbour table with vxlan_na_create's NA to the ingress port, or
    consumed; never tunnelled. DAD is left to the local containers (switch.py says why)."""
    cdef nb_ent *nb
    if memcmp(ns.dst, LOOPBACK6, 16) == 0:
        tflag(s, TF_ND_CONSUMED)
        return
    if ns.dad:
        tflag(s, TF_ND_DAD)
        return
    nb = nb_find6(&s.nb, slot, ns.target)
    if not proxy_answers(s, slot, net, nb, ns.target, TF_ND_LOCAL):
        return
    na_build(reply, ns, f + ETH_SRC, nb.mac)
    emit_port(s, port, reply, NA_FRAME)


cdef int core_port(sw_t *s, int32_t port, uint8_t *f, uint32_t n, double now,
                   uint8_t *scratch) noexcept nogil:
    """Switch._from_port in C. `f` must have OUTER_HLEN writable bytes in front of it and
    `scratch` SCRATCH_STRIDE bytes for a proxy's reply; outputs are appended to s.out.
    Returns the drop reason, or -1."""
    cdef port_t *pt
    cdef uint32_t slot, i
    cdef net_t *net
    cdef uint64_t dst, src
    cdef bint mcast, arp, flood, nd = False
    cdef ns_t ns
    cdef fdb_ent *e
    cdef int32_t p
    if port < 0 or <uint32_t>port >= s.ports_cap or s.ports[port].net < 0:
        return drop(s, DR_UNKNOWN_PORT)
    pt = &s.ports[port]
    slot = <uint32_t>pt.net
    net = &s.nets[slot]
    pt.rx_packets += 1
    pt.rx_bytes += n
    if n < ETH_HLEN:
        return drop(s, DR_RUNT)
    if <int64_t>n > net.maxlen:
        return drop(s, DR_OVERSIZE)
    src = vx_mac48(f + ETH_SRC)
    if (f[ETH_SRC] & 1) or src == 0:          # is_valid_ether_addr
        return drop(s, DR_BAD_SRC_MAC)
    arp = is_arp(f)
    if arp and not arp_ok(f, n):
        return drop(s, DR_BAD_ARP)
    if is_ns(f, n):
        if not ns_parse(f, n, &ns):
            return drop(s, DR_BAD_ND)
        nd = True

    # Bridge learning: source MAC -> ingress port (br_fdb_update).
    learn(s, slot, src, now, port, NULL)

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
    # which answers requests and consumes everything else: ARP never crosses the underlay;
    # and every Neighbor Solicitation goes to neigh_reduce, answered or consumed.
    if net.proxy and arp:
        if f[ARP_OP] == 0 and f[ARP_OP + 1] == 1:
            arp_reduce(s, slot, net, port, f, scratch)
        else:
            tflag(s, TF_ARP_CONSUMED)
        return -1
    if net.proxy and nd:
        neigh_reduce(s, slot, net, port, f, &ns, scratch)
        return -1
    if e == NULL or e.port >= 0:
        e = fdb_find(&s.fdb, fdb_key(slot, 0))   # all-zeros entry: the flood list
    if e == NULL:
        if not mcast:
            s.evc[EC_L2MISS] += 1
            ev_push(s, EV_L2MISS, net.vni, dst, NULL, LOC_NONE, 0, NULL, LOC_NONE, 0, NULL)
            tflag(s, TF_L2MISS)
        return -1
    encap(s, net, e, port, f, n)
    return -1


cdef inline bint allowed(sw_t *s, const uint8_t *src) noexcept nogil:
    """Is the outer source in [vtep] allow? Prefixes of either family as 16-byte masks
    (an IPv4 /n is the IPv4-mapped /96+n), `src` 16 bytes."""
    cdef uint64_t hi, lo
    cdef uint32_t i
    memcpy(&hi, src, 8)
    memcpy(&lo, src + 8, 8)
    for i in range(s.n_allow):
        if (hi & s.allow_mask[2 * i]) == s.allow_net[2 * i] \
                and (lo & s.allow_mask[2 * i + 1]) == s.allow_net[2 * i + 1]:
            return True
    return False


cdef inline int32_t vmap_find(sw_t *s, uint32_t vni) noexcept nogil:
    """The network slot serving `vni`, or -1 (Fibonacci-hashed open addressing)."""
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


cdef int32_t underlay_slot(sw_t *s, const uint8_t *src, const uint8_t *d,
                          uint32_t n) noexcept nogil:
    """The network slot a datagram is for when core_underlay() will take it past its header
    checks (it checks and counts again), else -1: the rx step in front of the core only
    works on frames the core will look at."""
    if n < VXLAN_HLEN + ETH_HLEN or not (d[0] & 0x08):
        return -1
    if (s.n_allow and not allowed(s, src)) \
            or (s.strict and ((d[0] & ~0x08) | d[1] | d[2] | d[3] | d[7])):
        return -1
    return vmap_find(s, vxlan_vni(d))


cdef int core_underlay(sw_t *s, const uint8_t *src, uint8_t *d, uint32_t n,
                       double now, uint8_t tos) noexcept nogil:
    """Switch._from_underlay in C: `d` is the UDP payload (VXLAN header + frame) received
    from `src` (16 bytes, IPv4-mapped for IPv4); outputs are appended to s.out. Checks in
    vxlan_rcv's order
    (RFC 7348 §5.1, §4.1: decapsulate, learn, deliver; never back to the underlay).
    Returns the drop reason, or -1."""
    cdef int32_t sl
    cdef uint32_t slot, i, fl
    cdef net_t *net
    cdef uint8_t *f
    cdef uint64_t dst, smac
    cdef fdb_ent *e
    cdef ns_t ns
    s.ul_rx_packets += 1
    s.ul_rx_bytes += n
    if s.n_allow and not allowed(s, src):
        return drop(s, DR_NOT_ALLOWED)
    if n < VXLAN_HLEN:
        return drop(s, DR_SHORT_HEADER)
    if not (d[0] & 0x08):
        return drop(s, DR_BAD_FLAGS)
    sl = vmap_find(s, vxlan_vni(d))
    if sl < 0:
        return drop(s, DR_UNKNOWN_VNI)
    if s.strict and ((d[0] & ~0x08) | d[1] | d[2] | d[3] | d[7]):
        return drop(s, DR_RESERVED_BITS)
    slot = <uint32_t>sl
    net = &s.nets[slot]
    f = d + VXLAN_HLEN
    fl = n - VXLAN_HLEN
    if fl < ETH_HLEN:
        return drop(s, DR_RUNT)
    if <int64_t>fl > net.maxlen:
        return drop(s, DR_OVERSIZE)
    smac = vx_mac48(f + ETH_SRC)
    if (f[ETH_SRC] & 1) or smac == 0:
        return drop(s, DR_BAD_SRC_MAC)
    if is_arp(f) and not arp_ok(f, fl):
        return drop(s, DR_BAD_ARP)
    if is_ns(f, fl) and not ns_parse(f, fl, &ns):
        return drop(s, DR_BAD_ND)
    if net.learning:
        if learn(s, slot, smac, now, -1, src) == LR_CONFLICT:
            return drop(s, DR_FDB_CONFLICT)
    if (tos & 3) and ecn_decap(f, fl, tos) < 0:     # RFC 6040 §4.2, after learning
        return drop(s, DR_ECN_NOT_ECT_CE)
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


cdef void core_from_port(sw_t *s, int32_t port, int64_t tsrc, uint8_t *f, uint32_t n,
                         double now, uint8_t *scratch) noexcept nogil:
    """Switch.from_port: the core, plus the trace record when tracing is on. `tsrc` is the
    port as the caller named it (what the record's source says; = `port` on the burst
    path)."""
    cdef uint32_t first
    cdef int reason
    cdef int32_t vni = -1
    if vx_likely(not s.tr.on):
        core_port(s, port, f, n, now, scratch)
        return
    first = s.n_out
    s.tr.tf_n = 0
    reason = core_port(s, port, f, n, now, scratch)
    if port >= 0 and <uint32_t>port < s.ports_cap and s.ports[port].net >= 0:
        vni = <int32_t>s.nets[s.ports[port].net].vni
    trace_record(s, now, LOC_PORT, tsrc, NULL, vni, f, n, reason, first)


cdef void core_from_underlay(sw_t *s, const uint8_t *src, uint8_t *d, uint32_t n,
                             double now, uint8_t tos) noexcept nogil:
    """Switch.from_underlay: the core, plus the trace record when tracing is on."""
    cdef uint32_t first
    cdef int reason
    cdef int32_t vni = -1
    if vx_likely(not s.tr.on):
        core_underlay(s, src, d, n, now, tos)
        return
    first = s.n_out
    s.tr.tf_n = 0
    if s.rx_note:
        tflag(s, s.rx_note - 1)         # what the rx step did before (rx notes: TF_ + 1)
    reason = core_underlay(s, src, d, n, now, tos)
    if n >= VXLAN_HLEN:
        vni = <int32_t>vxlan_vni(d)
    trace_record(s, now, LOC_IP, -1, src, vni, d, n, reason, first)


# -- configuration (Switch.add_network / add_port ...): the reference's checks and messages -----

cdef int rebuild_vmap(sw_t *s) except -1:
    """The VNI -> slot map, rebuilt whenever a network comes or goes (at most 50% full)."""
    cdef uint32_t cap = 16, bits = 4, i, k, n = 0
    cdef uint64_t *m
    for i in range(s.nets_cap):
        if s.nets[i].used:
            n += 1
    while cap < 2 * n:
        cap <<= 1
        bits += 1
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


cdef uint32_t net_slot_free(sw_t *s) except? 0xFFFFFFFF:
    """A free network slot, growing the array when all are used."""
    cdef uint32_t i, ncap
    cdef net_t *grown
    for i in range(s.nets_cap):
        if not s.nets[i].used:
            return i
    if s.nets_cap >= MAX_NETS:
        raise InvalidArgument(f"too many networks (at most {MAX_NETS})")
    ncap = min(s.nets_cap * 2, <uint32_t>MAX_NETS)
    grown = <net_t*>realloc(s.nets, ncap * sizeof(net_t))
    if grown == NULL:
        raise MemoryError()
    memset(grown + s.nets_cap, 0, (ncap - s.nets_cap) * sizeof(net_t))
    s.nets = grown
    i = s.nets_cap
    s.nets_cap = ncap
    return i


cdef int net_api_add(Switch sw, object vni, object mtu, object proxy, object learning,
                     object ageing, object maxaddress) except -1:
    cdef sw_t *s = sw.s
    cdef uint32_t slot
    cdef net_t *net
    cdef bytes hdr
    if not 0 < vni <= MAX_VNI:
        raise InvalidArgument(f"VNI {vni} is not within 1-{MAX_VNI}")
    if vni in sw._networks:
        raise InvalidArgument(f"VNI {vni} is already served")
    hdr = vxlan_header(vni)
    maxlen = clamp64(math.floor(mtu + 14))
    limited = bool(maxaddress)
    maxaddr = clamp64(math.ceil(maxaddress)) if limited else 0
    age_s = float(ageing)
    slot = net_slot_free(s)
    net = &s.nets[slot]
    memset(net, 0, sizeof(net_t))
    net.vni = <uint32_t>int(vni)
    net.maxlen = maxlen
    net.proxy = 1 if proxy else 0
    net.learning = 1 if learning else 0
    net.limited = 1 if limited else 0
    net.maxaddress = maxaddr
    net.ageing = age_s
    memcpy(net.hdr, <const unsigned char*>hdr, VXLAN_HLEN)
    net.used = 1
    while len(sw._pynet) <= slot:
        sw._pynet.append(None)
    sw._pynet[slot] = (vni, maxaddress)
    sw._networks[vni] = slot
    return rebuild_vmap(s)


cdef int net_api_del(Switch sw, object vni) except -1:
    cdef sw_t *s = sw.s
    cdef uint32_t slot = sw._net(vni)
    cdef net_t *net = &s.nets[slot]
    cdef uint32_t i
    for p in [net.ports[i] for i in range(net.nports)]:
        port_api_del(sw, p)
    net = &s.nets[slot]
    if fdb_purge(s, slot, -1, False, False) == <uint64_t>-1 or nb_purge(s, slot) == <uint64_t>-1:
        raise MemoryError()
    free(net.ports)
    memset(net, 0, sizeof(net_t))
    del sw._networks[vni]
    sw._pynet[slot] = None
    return rebuild_vmap(s)


cdef int ports_grow(sw_t *s, int32_t p) except -1:
    """ports[] long enough to index port id p."""
    cdef uint32_t i, ncap = s.ports_cap
    cdef port_t *grown
    if <uint32_t>p < s.ports_cap:
        return 0
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
    return 0


cdef int net_port_insert(net_t *net, int32_t p) except -1:
    """Add p to the network's ascending port list: local deliveries go out in port order."""
    cdef uint32_t i, ncap
    cdef int32_t *pl
    if net.nports == net.ports_cap:
        ncap = net.ports_cap * 2 if net.ports_cap else 8
        pl = <int32_t*>realloc(net.ports, ncap * sizeof(int32_t))
        if pl == NULL:
            raise MemoryError()
        net.ports = pl
        net.ports_cap = ncap
    i = net.nports
    while i > 0 and net.ports[i - 1] > p:
        net.ports[i] = net.ports[i - 1]
        i -= 1
    net.ports[i] = p
    net.nports += 1
    return 0


cdef int port_api_add(Switch sw, object port, object vni, object mac, object now) except -1:
    """Attach local port `port` to network `vni`; with `mac`, a permanent FDB entry for the
    endpoint (what the bridge keeps for a port it knows the address of)."""
    cdef sw_t *s = sw.s
    cdef uint32_t slot = sw._net(vni)
    cdef int32_t p
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
        elif e != NULL and e.port < 0:
            raise EntryExists(remote_mac_message(
                _mac(mac), vni, f"dst {sw._addr(s.rem.r[ent_first_remote(&s.fdb, e)].addr)}",
                FDB_STATES[e.state]))
        fdb_api_add(sw, slot, mac, None, port, "permanent", now)
    ports_grow(s, p)
    net_port_insert(&s.nets[slot], p)
    memset(&s.ports[p], 0, sizeof(port_t))
    s.ports[p].net = <int32_t>slot
    s.ports[p].fd = -1
    return 0


cdef int port_api_del(Switch sw, object port) except -1:
    cdef sw_t *s = sw.s
    cdef int32_t p
    cdef uint32_t slot, i, j
    cdef net_t *net
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
    if fdb_purge(s, slot, p, False, False) == <uint64_t>-1:
        raise MemoryError()
    memset(&s.ports[p], 0, sizeof(port_t))
    s.ports[p].net = -1
    s.ports[p].fd = -1
    return 0
