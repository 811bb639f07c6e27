# Receive bursts: TAP reads and recvmmsg() into the rx slots, then the core and transmit().


cdef int rx_init(rx_t *r, uint32_t burst) noexcept nogil:
    cdef uint32_t i
    memset(r, 0, sizeof(rx_t))
    r.burst = burst
    # rx slots: pages are only touched as far as frames reach (huge pages from 2 MiB)
    r.slots = <uint8_t*>vx_table_alloc(<size_t>burst * SLOT_STRIDE)
    r.len = <uint32_t*>calloc(burst, sizeof(uint32_t))
    r.src = <uint8_t*>calloc(burst, 16)
    r.scratch = <uint8_t*>calloc(burst, SCRATCH_STRIDE)
    r.msgs = <mmsghdr*>calloc(burst, sizeof(mmsghdr))
    r.iov = <iovec*>calloc(burst, sizeof(iovec))
    r.addr = <vx_sockaddr*>calloc(burst, sizeof(vx_sockaddr))
    r.gso = <uint32_t*>calloc(burst, sizeof(uint32_t))
    r.tos = <uint8_t*>calloc(burst, 1)
    r.cmsg = <uint8_t*>calloc(burst, VX_RX_CMSG_SPACE)
    r.busy_fd[0] = -1
    r.busy_fd[1] = -1
    if (r.slots == NULL or r.len == NULL or r.src == NULL or r.scratch == NULL
            or r.msgs == NULL or r.iov == NULL or r.addr == NULL or r.gso == NULL
            or r.tos == NULL or r.cmsg == NULL):
        return -1
    for i in range(burst):
        rx_msg_init(r, i)
    return 0


cdef inline void rx_msg_init(rx_t *r, uint32_t i) noexcept nogil:
    """recvmmsg() message i: its slot, address and control buffer never change, so they are
    set once here; the kernel rewrites only the lengths and flags of the messages it filled,
    and udp_burst resets just those (no per-burst work for the slots a burst did not use)."""
    cdef mmsghdr *m = &r.msgs[i]
    r.iov[i].iov_base = rx_datagram(r, i)
    r.iov[i].iov_len = SLOT_STRIDE - HEADROOM + VXLAN_HLEN
    memset(&m.msg_hdr, 0, sizeof(msghdr))
    m.msg_hdr.msg_iov = &r.iov[i]
    m.msg_hdr.msg_iovlen = 1
    m.msg_hdr.msg_name = &r.addr[i]
    m.msg_hdr.msg_namelen = sizeof(vx_sockaddr)
    m.msg_hdr.msg_control = r.cmsg + <size_t>i * VX_RX_CMSG_SPACE
    m.msg_hdr.msg_controllen = VX_RX_CMSG_SPACE
    m.msg_len = 0


cdef void rx_free(rx_t *r) noexcept nogil:
    vx_table_free(r.slots, <size_t>r.burst * SLOT_STRIDE)
    free(r.len)
    free(r.src)
    free(r.scratch)
    free(r.msgs)
    free(r.iov)
    free(r.addr)
    free(r.gso)
    free(r.tos)
    free(r.cmsg)
    free(r.seg)
    free(r.seg_off)
    free(r.seg_len)
    vx_table_free(r.vslots, <size_t>r.burst * VSLOT_STRIDE)
    free(r.viov)
    memset(r, 0, sizeof(rx_t))


cdef int rx_seg_alloc(rx_t *r) noexcept nogil:
    """The TSO segment buffer and the vnet read slots, on the first TAP with a vnet header
    (all of them or none)."""
    if r.seg != NULL:
        return 0
    r.seg = <uint8_t*>malloc(SEG_BUF)
    r.seg_off = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
    r.seg_len = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
    r.vslots = <uint8_t*>vx_table_alloc(<size_t>r.burst * VSLOT_STRIDE)
    r.viov = <iovec*>calloc(<size_t>r.burst * VIOV_MAX, sizeof(iovec))
    if r.seg == NULL or r.seg_off == NULL or r.seg_len == NULL or r.vslots == NULL \
            or r.viov == NULL:
        free(r.seg)
        free(r.seg_off)
        free(r.seg_len)
        vx_table_free(r.vslots, <size_t>r.burst * VSLOT_STRIDE)
        free(r.viov)
        r.seg = NULL
        r.seg_off = NULL
        r.seg_len = NULL
        r.vslots = NULL
        r.viov = NULL
        return -1
    r.lay_cnt = 0
    return 0


# -- vnet TAP reads scattered as TSO segments -----------------------------------------------
#
# A TSO super-frame read into one buffer must be copied chunk by chunk to give every segment
# its own headers in front (tso_segment). Read instead with readv() into iovecs laid out as
# the segments will be — the headers and chunk 0 together, then each further gso_size chunk
# behind HEADROOM + hl bytes left free — and the chunks are where the segments need them:
# tso_inplace() writes only the headers and reads each chunk once, for its checksum, and
# the UDP GSO send gathers the segments straight from this buffer. The layout is a guess
# (the headers length and gso_size of the last TSO frame: a TCP flow keeps them), used only
# while TSO frames come (TSO_RECENT bursts); a frame that does not fit it is moved back
# together (vlinearize) and takes the copying path, which is what every frame did before.

cdef uint32_t vlayout(uint8_t *f, uint32_t vnet, uint32_t hl, uint32_t g,
                      iovec *iov) noexcept nogil:
    """The iovecs of a read into the vnet slot whose frame starts at `f`, for headers of
    `hl` bytes and chunks of `g`; returns how many. hl 0 (or a layout too small to hold any
    frame's headers in iov 0, or chunks smaller than the room between them): one iovec, the
    whole slot. The last iovec takes the rest of the slot, so a 64 KB frame always fits."""
    cdef uint8_t *end = f - HEADROOM + VSLOT_STRIDE
    cdef uint8_t *p
    cdef uint32_t stride = HEADROOM + hl + g, cnt = 1, need
    iov[0].iov_base = f - vnet
    if hl == 0 or hl + g < VLAYOUT_MIN or g < HEADROOM + hl:
        iov[0].iov_len = <size_t>(end - (f - vnet))
        return 1
    iov[0].iov_len = vnet + hl + g
    need = (MAX_FRAME + 22 - hl + g - 1) // g     # chunks of the largest frame (2 VLAN tags)
    while True:
        p = f + <size_t>cnt * stride + hl
        if p >= end:
            return cnt
        iov[cnt].iov_base = p
        if cnt + 1 >= VIOV_MAX or cnt >= need or p + g >= end:
            iov[cnt].iov_len = <size_t>(end - p)
            return cnt + 1
        iov[cnt].iov_len = g
        cnt += 1


cdef void vlinearize(const iovec *iov, uint32_t cnt, uint32_t got) noexcept nogil:
    """Move the `got` bytes a scattered read left in `iov` back together behind iov 0 (every
    piece moves down, in order, so nothing is overwritten before it moved)."""
    cdef uint8_t *dst = <uint8_t*>iov[0].iov_base + iov[0].iov_len
    cdef size_t left, take
    cdef uint32_t j
    if got <= iov[0].iov_len:
        return
    left = got - iov[0].iov_len
    for j in range(1, cnt):
        take = iov[j].iov_len if iov[j].iov_len < left else left
        if dst != <uint8_t*>iov[j].iov_base:
            memmove(dst, iov[j].iov_base, take)
        dst += take
        left -= take
        if left == 0:
            return


cdef int vnet_segments(uint8_t *f, uint32_t ln, const uint8_t *hb, uint32_t lay_hl,
                       uint32_t lay_g, uint32_t lay_cnt, const iovec *iov, uint32_t vnet,
                       uint8_t *seg, uint32_t *offs, uint32_t *lens,
                       uint8_t **base, uint32_t *hl) noexcept nogil:
    """A frame of `ln` bytes read at `f` with the layout (lay_hl, lay_g, lay_cnt, iov):
    a TSO super-frame that matches it is segmented in place (segments at base[0] + offs[k]
    = f + ...), any other is first moved back together; then a super-frame is segmented
    by copying into `seg`. Returns the number of segments (hl[0]: their headers length),
    0 for a frame without GSO (now whole at f), or -(1 + VE_ reason)."""
    cdef uint32_t gso = hb[1] & 0x7F, l3, l4, doff
    cdef int k
    if gso != 0 and lay_cnt > 1 and le16(hb + 4) == lay_g \
            and tso_headers(hb, f, ln, &l3, &l4, &doff) < 0 and l4 + doff == lay_hl \
            and ln > lay_hl and (ln - lay_hl + lay_g - 1) // lay_g <= lay_cnt:
        base[0] = f
        hl[0] = lay_hl
        return tso_inplace(hb, f, ln, HEADROOM + lay_hl + lay_g, offs, lens)
    if lay_cnt > 1 and ln > lay_hl + lay_g:
        vlinearize(iov, lay_cnt, ln + vnet)
    if gso == 0:
        return 0
    base[0] = seg
    k = tso_segment(hb, f, ln, seg, offs, lens)
    if k > 0 and tso_headers(hb, f, ln, &l3, &l4, &doff) < 0:
        hl[0] = l4 + doff
    return k


cdef void vlayout_all(rx_t *r, uint32_t vnet) noexcept nogil:
    """Every vnet slot's iovecs for the layout the next reads should use: the last TSO
    frame's while they keep coming, else a plain read."""
    cdef uint32_t i, hl = 0, g = 0, cnt = 1
    if r.tso_recent:
        hl = r.tso_hl
        g = r.tso_g
    if r.lay_cnt and hl == r.lay_hl and g == r.lay_g and vnet == r.lay_vnet:
        return
    for i in range(r.burst):
        cnt = vlayout(rx_vframe(r, i), vnet, hl, g, r.viov + <size_t>i * VIOV_MAX)
    r.lay_hl = hl
    r.lay_g = g
    r.lay_vnet = vnet
    r.lay_cnt = cnt


# -- the core over a burst ---------------------------------------------------------------------

cdef uint32_t process_port_burst(sw_t *s, int32_t port, uint32_t n, double now) noexcept nogil:
    """Rx slots 0..n-1 (lengths in rx.len) from `port` through the core; returns the number
    of output records now in s.out."""
    cdef uint32_t i
    s.cur_csum = CSUM_UNKNOWN
    for i in range(n):
        core_from_port(s, port, port, rx_frame(&s.rx, i), s.rx.len[i], now,
                       s.rx.scratch + <size_t>i * SCRATCH_STRIDE)
    return s.n_out


cdef void underlay_in(sw_t *s, const uint8_t *src, uint8_t *d, uint32_t n, double now,
                      uint8_t tos) noexcept nogil:
    """One datagram from the underlay through offload.receive() in front of the core — a
    partial inner checksum completed, a TCP super-frame cut into wire segments (rx_csum,
    rx_segment say why) — and then through the core, frame by frame."""
    cdef int32_t sl = underlay_slot(s, src, d, n)
    cdef l4info_t li
    cdef int v = RX_NONE, k, j
    cdef uint8_t *f = d + VXLAN_HLEN
    cdef uint8_t *sd
    s.rx_note = 0
    if sl >= 0:
        v = rx_csum(f, n - VXLAN_HLEN, &li)
    if v == RX_PARTIAL:
        s.offc[OC_CSUM_PARTIAL_RX] += 1
        s.rx_note = TF_CSUM_PARTIAL + 1
    elif v == RX_BAD:
        s.offc[OC_CSUM_BAD] += 1
    if (v == RX_VALID or v == RX_PARTIAL) and <int64_t>(n - VXLAN_HLEN) > s.nets[sl].maxlen \
            and rx_seg_alloc(&s.rx) == 0:
        k = rx_segment(f, &li, <uint32_t>(s.nets[sl].maxlen - ETH_HLEN), s.rx.seg,
                       s.rx.seg_off, s.rx.seg_len)
        if k > 0:
            s.offc[OC_RX_SUPERFRAMES] += 1
            s.offc[OC_RX_SUPERFRAME_SEGMENTS] += <uint64_t>k
            s.cur_csum = CSUM_GOOD
            s.rx_note = TF_SEGMENTED + 1
            for j in range(k):
                sd = s.rx.seg + s.rx.seg_off[j] - VXLAN_HLEN
                memcpy(sd, d, VXLAN_HLEN)
                core_from_underlay(s, src, sd, s.rx.seg_len[j] + VXLAN_HLEN, now, tos)
            transmit(s)                 # the segment buffer is reused by the next one
            s.rx_note = 0
            return
    if v == RX_VALID or v == RX_PARTIAL:
        s.cur_csum = CSUM_GOOD
    else:
        s.cur_csum = CSUM_BAD if v == RX_BAD else CSUM_UNKNOWN
    core_from_underlay(s, src, d, n, now, tos)
    s.rx_note = 0


cdef uint32_t process_underlay_burst(sw_t *s, uint32_t n, double now,
                                     bint rx_step) noexcept nogil:
    """Rx slots 0..n-1 (UDP payloads from rx.src) through the core, behind the rx step
    (underlay_in) unless `rx_step` is off (the core alone, as Switch.from_underlay)."""
    cdef uint32_t i
    for i in range(n):
        if rx_step:
            underlay_in(s, s.rx.src + 16 * i, rx_datagram(&s.rx, i), s.rx.len[i], now,
                        s.rx.tos[i])
        else:
            s.cur_csum = CSUM_UNKNOWN
            core_from_underlay(s, s.rx.src + 16 * i, rx_datagram(&s.rx, i), s.rx.len[i], now,
                               s.rx.tos[i])
    return s.n_out


cdef void process_vnet_burst(sw_t *s, int32_t port, uint32_t n, double now) noexcept nogil:
    """process_port_burst for a TAP with a virtio_net_hdr (reads in the vnet slots): complete
    partial checksums and cut TSO super-frames into wire segments in front of the core, in
    place when the read's layout fits (vnet_segments), transmitting after each super-frame
    (its segments are gathered from its slot, or from the segment buffer the next one
    reuses)."""
    cdef rx_t *r = &s.rx
    cdef uint32_t i, j, ln, hl = 0
    cdef int k
    cdef bint tso = False
    cdef uint8_t hb[VNET_HDR_MIN]
    cdef uint8_t *f
    cdef uint8_t *base
    cdef uint8_t *scratch
    cdef uint8_t vnet = s.ports[port].vnet
    s.cur_csum = CSUM_UNKNOWN
    for i in range(n):
        f = rx_vframe(r, i)
        scratch = r.scratch + <size_t>i * SCRATCH_STRIDE
        ln = r.len[i]
        memcpy(hb, f - vnet, VNET_HDR_MIN)  # encapsulation writes over the headroom
        k = vnet_segments(f, ln, hb, r.lay_hl, r.lay_g, r.lay_cnt,
                          r.viov + <size_t>i * VIOV_MAX, vnet, r.seg, r.seg_off, r.seg_len,
                          &base, &hl)
        if k == 0:
            if hb[0] & 1:
                if vnet_csum(hb, f, ln) >= 0:
                    s.offc[OC_BAD_VNET] += 1
                    continue
                s.offc[OC_CSUM_COMPLETED] += 1
            core_from_port(s, port, port, f, ln, now, scratch)
            continue
        if k < 0:
            s.offc[OC_BAD_VNET] += 1
            continue
        s.offc[OC_TSO_FRAMES] += 1
        s.offc[OC_TSO_SEGMENTS] += <uint64_t>k
        # the layout for the next reads: this frame's headers length and gso_size
        r.tso_g = le16(hb + 4)
        r.tso_hl = hl
        tso = True
        for j in range(<uint32_t>k):
            core_from_port(s, port, port, base + r.seg_off[j], r.seg_len[j], now, scratch)
        transmit(s)
    if tso:
        r.tso_recent = TSO_RECENT
    elif r.tso_recent:
        r.tso_recent -= 1


cdef void process_gro_burst(sw_t *s, uint32_t n, double now) noexcept nogil:
    """process_underlay_burst for buffers that UDP GRO may have glued together: each is cut
    at its segment size (udp_rcv_segment's cut, done here instead of in the kernel) and
    every datagram goes through the core on its own."""
    cdef rx_t *r = &s.rx
    cdef uint32_t i, off, g, ln, pl
    cdef uint8_t *d
    for i in range(n):
        d = rx_datagram(r, i)
        ln = r.len[i]
        g = r.gso[i]
        if g == 0 or g >= ln:
            underlay_in(s, r.src + 16 * i, d, ln, now, r.tos[i])
            continue
        s.offc[OC_GRO_BUFFERS] += 1
        off = 0
        while off < ln:
            pl = ln - off if ln - off < g else g
            underlay_in(s, r.src + 16 * i, d + off, pl, now, r.tos[i])
            s.offc[OC_GRO_DATAGRAMS] += 1
            off += pl


# -- burst I/O ---------------------------------------------------------------------------------

cdef inline bint port_ok(sw_t *s, int32_t p) noexcept nogil:
    return 0 <= p < <int32_t>s.ports_cap and s.ports[p].net >= 0


cdef uint32_t tap_burst(sw_t *s, int32_t p, int fd, double now) noexcept nogil:
    """Read up to `burst` frames from TAP `fd` of port p (until EAGAIN), forward them and
    transmit the outputs. Returns the number of frames read."""
    cdef rx_t *r = &s.rx
    cdef uint32_t n = 0
    cdef ssize_t got
    cdef int err
    cdef uint32_t vnet = s.ports[p].vnet if port_ok(s, p) and r.vslots != NULL else 0
    if vnet:
        vlayout_all(r, vnet)
    while n < r.burst:
        if vnet:
            # the virtio_net_hdr lands in the headroom, the frame at HEADROOM as always;
            # a TSO super-frame (up to 64 KB of IP) is scattered as its segments will be
            # when the layout guess holds (vlayout), else fills the slot
            if r.lay_cnt > 1:
                got = readv(fd, r.viov + <size_t>n * VIOV_MAX, <int>r.lay_cnt)
            else:
                got = read(fd, rx_vframe(r, n) - vnet, VSLOT_STRIDE - HEADROOM + vnet)
            if got > 0 and <uint32_t>got <= vnet:
                s.offc[OC_BAD_VNET] += 1
                continue
            if got > 0:
                got -= vnet
        else:
            got = read(fd, rx_frame(r, n), MAX_FRAME)
        if got > 0:
            r.len[n] = <uint32_t>got
            n += 1
            continue
        if got == 0:
            break
        err = errno
        if err == EINTR:
            continue
        if err != EAGAIN and port_ok(s, p) and port_fd_gone(err):
            s.ports[p].gone = 1
            s.ports[p].fd = -1
            s.tx.gone_hint = 1
        break
    if n:
        if vnet:
            process_vnet_burst(s, p, n, now)
        else:
            process_port_burst(s, p, n, now)
        transmit(s)
    return n


cdef uint32_t udp_burst(sw_t *s, int sock_fd, double now) noexcept nogil:
    """recvmmsg() up to `burst` VXLAN datagrams, forward them and transmit the outputs.
    Returns the number of datagrams received (0 on EAGAIN)."""
    cdef rx_t *r = &s.rx
    cdef uint32_t i, k = 0
    cdef int rc
    cdef mmsghdr *m
    while True:
        rc = recvmmsg(sock_fd, r.msgs, r.burst, MSG_DONTWAIT, NULL)
        if rc >= 0 or errno != EINTR:
            break
    if rc < 0:
        if errno != EAGAIN:
            s.ul_rx_errors += 1
        return 0
    for i in range(<uint32_t>rc):
        if r.msgs[i].msg_hdr.msg_flags & (MSG_TRUNC | MSG_CTRUNC) \
                or not vx_sockaddr_get(&r.addr[i], r.src + 16 * k):
            s.ul_rx_errors += 1
            continue
        if k != i:
            memcpy(rx_datagram(r, k), rx_datagram(r, i), r.msgs[i].msg_len)
        r.len[k] = r.msgs[i].msg_len
        vx_rx_cmsgs(&r.msgs[i].msg_hdr, &r.gso[k], &r.tos[k])
        k += 1
    for i in range(<uint32_t>rc):         # what recvmmsg() rewrote, ready for the next call
        m = &r.msgs[i]
        m.msg_hdr.msg_namelen = sizeof(vx_sockaddr)
        m.msg_hdr.msg_controllen = VX_RX_CMSG_SPACE
        m.msg_hdr.msg_flags = 0
        m.msg_len = 0
    if k:
        if r.udp_gro:
            process_gro_burst(s, k, now)
        else:
            process_underlay_burst(s, k, now, True)
        transmit(s)
    return <uint32_t>rc


cdef uint64_t poll_all(sw_t *s, int sock_fd, int sock_fd2, double idle,
                       double limit) noexcept nogil:
    """Serve every registered TAP fd and the UDP socket `sock_fd` (and `sock_fd2`, the other
    family's, when >= 0) without sleeping until
    nothing has arrived for `idle` seconds (or `limit` seconds have passed in all, so the
    event loop still gets its turn under sustained load).

    The adaptive polling of NAPI busy-poll (net.core.busy_poll) or DPDK's interrupt mode:
    a VTEP that goes back to epoll after every frame pays a scheduler wake-up (~15-30 us on
    a VM) for the next one, and a request/response crossing two VTEPs pays four of them.
    Polling a little after each burst catches the answer while it is still on its way.
    sched_yield() between idle rounds gives the CPU to anything runnable (the containers'
    own processes on a small machine). Returns the number of frames and datagrams."""
    cdef double t0 = vx_now_ns(), last = t0, t
    cdef double idle_ns = idle * 1e9, limit_ns = limit * 1e9
    cdef uint64_t total = 0
    cdef uint32_t got, p
    while True:
        got = 0
        for p in range(s.ports_cap):
            if s.ports[p].net >= 0 and s.ports[p].fd >= 0 and not s.ports[p].gone:
                got += tap_burst(s, <int32_t>p, s.ports[p].fd, last * 1e-9)
        if sock_fd >= 0:
            got += udp_burst(s, sock_fd, last * 1e-9)
        if sock_fd2 >= 0:
            got += udp_burst(s, sock_fd2, last * 1e-9)
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


cdef double mono_now() noexcept nogil:
    """time.monotonic() without a Python call: the same clock (CLOCK_MONOTONIC, vDSO)."""
    return vx_now_ns() * 1e-9


cdef bint ports_gone(sw_t *s) noexcept nogil:
    """Has a port's TAP gone away (port_fd_gone) since the readiness path last looked? Every
    place that marks a port gone raises tx.gone_hint too, so this is one load instead of a
    walk over every port's cache line after each burst; Python's gone_ports() then walks."""
    if s.tx.gone_hint:
        s.tx.gone_hint = 0
        return True
    return False
