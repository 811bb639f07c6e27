# Transmit (the I/O half of Switch._to_port / _to_vtep): TAP writes, TCP coalescing into GSO
# writes, sendmmsg batches, UDP GSO sends, and the per-source-port sockets they need.


cdef uint8_t ZERO_VNET[12]          # a virtio_net_hdr that asks for nothing
cdef uint8_t VALID_VNET[12]         # ... that says VIRTIO_NET_HDR_F_DATA_VALID
VALID_VNET[0] = 2


cdef int tx_init(tx_t *t) noexcept nogil:
    memset(t, 0, sizeof(tx_t))
    t.fam[0].fd = -1
    t.fam[1].fd = -1
    t.gso_refused = 0xFFFFFFFF
    t.wv = <iovec*>calloc(COALESCE_MAX + 2 + GSO_MAX_SEGS, sizeof(iovec))
    return 0 if t.wv != NULL else -1


cdef void tx_free(tx_t *t) noexcept nogil:
    cdef uint32_t f
    gso_close_all(t)
    for f in range(2):
        free(t.fam[f].gso_fd)
        free(t.fam[f].gso_used)
        free(t.fam[f].gso_df)
    free(t.ctl)
    free(t.msgs)
    free(t.iov)
    free(t.addr)
    free(t.rec)
    free(t.runs)
    free(t.run_ports)
    free(t.wv)
    memset(t, 0, sizeof(tx_t))
    t.fam[0].fd = -1
    t.fam[1].fd = -1


# -- TAP side ----------------------------------------------------------------------------------

cdef bint port_fd_gone(int err) noexcept nogil:
    """The one rule for "this endpoint went away": the TAP device was unregistered under our
    fd (container netns deleted, link deleted: tun_get() fails, EBADFD) or the fd is not
    ours any more. EIO is not removal: the link is down (tun_get_user/tun_do_read refuse
    I/O while the device is not running) and comes back. Python removes gone ports
    (gone_ports())."""
    return err == EBADF or err == EBADFD or err == ENODEV or err == ENXIO


cdef inline void port_tx_error(tx_t *t, port_t *pt, int err, uint32_t frames) noexcept nogil:
    if err == EAGAIN:                   # == EWOULDBLOCK on Linux
        pt.tx_dropped += frames         # TAP queue full: a drop, like a full qdisc
        return
    pt.tx_errors += frames
    if port_fd_gone(err):
        pt.gone = 1
        pt.fd = -1
        t.gone_hint = 1


cdef void tap_write(tx_t *t, port_t *pt, const uint8_t *data, uint32_t n) noexcept nogil:
    """One frame to a plain TAP (no vnet header)."""
    cdef ssize_t w
    if pt.fd < 0 or pt.gone:
        pt.tx_dropped += 1
        return
    while True:
        w = write(pt.fd, data, n)
        if w >= 0:
            return
        if errno != EINTR:
            break
    port_tx_error(t, pt, errno, 1)


cdef void tap_writev(tx_t *t, port_t *pt, iovec *v, int cnt, uint32_t frames) noexcept nogil:
    """One writev() to a vnet TAP, counted per wire frame it carries."""
    if pt.fd < 0 or pt.gone:
        pt.tx_dropped += frames
        return
    if vx_writev(pt.fd, v, cnt) < 0:
        port_tx_error(t, pt, errno, frames)


cdef void tap_single(tx_t *t, port_t *pt, uint8_t *data, uint32_t n,
                     uint8_t csum) noexcept nogil:
    """A frame to a vnet TAP on its own: a virtio_net_hdr without offloads in front, with
    VIRTIO_NET_HDR_F_DATA_VALID when vxdp verified (or computed) the frame's L4 checksum
    itself (`csum` CSUM_GOOD), so the container's stack need not sum it again. (Linux 6.18's
    tun still ignores the flag on writes and checks the checksum anyway, measured with a
    bad-checksum probe; virtio-net receivers and later kernels honour it.)"""
    t.wv[0].iov_base = &VALID_VNET[0] if csum == CSUM_GOOD else &ZERO_VNET[0]
    t.wv[0].iov_len = pt.vnet
    t.wv[1].iov_base = data
    t.wv[1].iov_len = n
    tap_writev(t, pt, t.wv, 2, 1)


cdef void run_flush(sw_t *s, int32_t port) noexcept nogil:
    """Write port's open run: alone if it has one member, else as one GSO_TCPV4 frame."""
    cdef tx_t *t = &s.tx
    cdef run_t *run = &t.runs[port]
    cdef port_t *pt = &s.ports[port]
    cdef txrec *r
    cdef txrec *h
    cdef iovec *v = t.wv
    cdef uint8_t vh[12]
    cdef uint8_t hdr[128]
    cdef uint32_t hl, k = 2
    cdef int32_t i
    if run.head < 0:
        return
    h = &s.out[run.head]
    if run.n == 1:
        tap_single(t, pt, h.data, h.len, h.csum)
    else:
        memset(vh, 0, 12)
        hl = run_header(run, h.data, vh, hdr)
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
        tap_writev(t, pt, v, <int>k, run.n)
        s.offc[OC_COALESCED_FRAMES] += 1
        s.offc[OC_COALESCED_SEGMENTS] += run.n
    run.head = -1


cdef void tap_frame(sw_t *s, int32_t idx) noexcept nogil:
    """A record to a vnet TAP with coalescing on: extend the port's open run, or close it
    and start another, or write the frame alone (order per port is kept)."""
    cdef tx_t *t = &s.tx
    cdef txrec *r = &s.out[idx]
    cdef run_t *run = &t.runs[r.port]
    cdef port_t *pt = &s.ports[r.port]
    cdef int verdict = (CO_NO if r.csum == CSUM_BAD
                        else tcp4_coalescible(r.data, r.len, r.csum == CSUM_GOOD))
    r.next = -1
    if verdict != CO_YES:
        if verdict == CO_BAD_CSUM:
            s.offc[OC_CSUM_BAD] += 1
        run_flush(s, r.port)
        tap_single(t, pt, r.data, r.len, r.csum)
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
        t.run_ports[t.n_run_ports] = r.port
        t.n_run_ports += 1


cdef int runs_reserve(sw_t *s) noexcept nogil:
    """runs[] as long as ports[] (ports grow in add_port)."""
    cdef tx_t *t = &s.tx
    cdef run_t *grown
    cdef int32_t *pl
    cdef uint32_t i
    if t.runs_cap >= s.ports_cap:
        return 0
    grown = <run_t*>realloc(t.runs, s.ports_cap * sizeof(run_t))
    if grown == NULL:
        return -1
    t.runs = grown
    pl = <int32_t*>realloc(t.run_ports, s.ports_cap * sizeof(int32_t))
    if pl == NULL:
        return -1
    t.run_ports = pl
    for i in range(t.runs_cap, s.ports_cap):
        memset(&t.runs[i], 0, sizeof(run_t))
        t.runs[i].head = -1
    t.runs_cap = s.ports_cap
    return 0


cdef void tx_ports(sw_t *s) noexcept nogil:
    """Every port record of s.out, in order per port."""
    cdef tx_t *t = &s.tx
    cdef uint32_t i
    cdef txrec *r
    cdef port_t *pt
    cdef bint runs_ok = t.tap_coalesce and runs_reserve(s) == 0
    for i in range(s.n_out):
        r = &s.out[i]
        if r.port < 0:
            continue
        pt = &s.ports[r.port]
        if not pt.vnet:
            tap_write(&s.tx, pt, r.data, r.len)
        elif runs_ok:
            tap_frame(s, <int32_t>i)
        else:
            tap_single(t, pt, r.data, r.len, r.csum)
    if runs_ok:
        for i in range(t.n_run_ports):
            run_flush(s, t.run_ports[i])
            t.runs[t.run_ports[i]].listed = 0
        t.n_run_ports = 0


# -- underlay side -----------------------------------------------------------------------------
#
# Per address family (fam[0] IPv4, fam[1] IPv6): a raw socket takes whole datagrams (the
# headers encap() built, source port per flow), per-source-port UDP sockets carry UDP GSO runs.

cdef inline ulfam_t *fam_of(sw_t *s, const txrec *r) noexcept nogil:
    return &s.tx.fam[r.v6]


cdef inline const uint8_t *fam_local(sw_t *s, uint8_t v6) noexcept nogil:
    """The local address a family's per-source-port sockets bind (16 bytes)."""
    if v6:
        return &s.local6[0]
    return &s.local4m[0]


cdef int gso_tables(ulfam_t *f) noexcept nogil:
    """A family's per-source-port socket table (256 KiB + 256 KiB + 64 KiB), allocated on
    first need: by set_offload(udp_gso=True), or by the first datagram too big for the raw
    socket."""
    cdef int32_t *fds
    cdef uint32_t *used
    cdef uint8_t *dfs
    cdef uint32_t i
    if f.gso_fd != NULL:
        return 0
    fds = <int32_t*>malloc(65536 * sizeof(int32_t))
    used = <uint32_t*>calloc(65536, sizeof(uint32_t))
    dfs = <uint8_t*>calloc(65536, 1)
    if fds == NULL or used == NULL or dfs == NULL:
        free(fds)
        free(used)
        free(dfs)
        return -1
    for i in range(65536):
        fds[i] = -1
    f.gso_fd = fds
    f.gso_used = used
    f.gso_df = dfs
    return 0


cdef int gso_socket(sw_t *s, uint8_t v6, uint16_t sport) noexcept nogil:
    """The UDP socket that sends from (local, sport) in family `v6`, opened on first use; -1
    when there is none (bind refused: the port is someone else's; or GSO_SOCK_MAX reached)
    and the raw socket must be used instead."""
    cdef ulfam_t *f = &s.tx.fam[v6]
    cdef int fd
    if f.gso_fd == NULL and gso_tables(f) < 0:
        return -1
    fd = f.gso_fd[sport]
    if fd >= 0:
        f.gso_used[sport] = s.tx.gso_epoch
        return fd
    if fd == -2 or f.gso_nsock >= GSO_SOCK_MAX:
        return -1
    fd = vx_gso_socket(fam_local(s, v6), sport, 4 << 20)
    f.gso_used[sport] = s.tx.gso_epoch
    if fd < 0:
        f.gso_fd[sport] = -2        # retried after GSO_IDLE_TICKS (gso_gc)
        return -1
    f.gso_fd[sport] = fd
    f.gso_df[sport] = 0                 # vx_gso_socket opens it with DF clear
    f.gso_nsock += 1
    return fd


cdef inline void gso_df(ulfam_t *f, const txrec *r) noexcept nogil:
    """The per-source-port socket's DF setting for the next send (changed only when the
    flow's datagrams need the other one: `df inherit` can vary per packet). IPv4 only."""
    if not r.v6 and f.gso_df[r.sport] != r.df:
        vx_set_df(f.gso_fd[r.sport], r.df)
        f.gso_df[r.sport] = r.df


cdef void gso_close_all(tx_t *t) noexcept nogil:
    cdef uint32_t sp, i
    cdef ulfam_t *f
    for i in range(2):
        f = &t.fam[i]
        if f.gso_fd == NULL:
            continue
        for sp in range(65536):
            if f.gso_fd[sp] >= 0:
                vx_close(f.gso_fd[sp])
            f.gso_fd[sp] = -1
        f.gso_nsock = 0


cdef void gso_gc(tx_t *t) noexcept nogil:
    """Close the per-source-port sockets unused for GSO_IDLE_TICKS calls (called once a
    second) and forget failed binds after as long."""
    cdef uint32_t sp, i
    cdef int32_t fd
    cdef ulfam_t *f
    t.gso_epoch += 1
    if t.gso_epoch % GSO_IDLE_TICKS == 0:
        t.gso_refused = 0xFFFFFFFF      # the path MTU may have grown: try GSO again
    for i in range(2):
        f = &t.fam[i]
        if f.gso_fd == NULL:
            continue
        for sp in range(65536):
            fd = f.gso_fd[sp]
            if fd == -1 or t.gso_epoch - f.gso_used[sp] < GSO_IDLE_TICKS:
                continue
            if fd >= 0:
                vx_close(fd)
                f.gso_nsock -= 1
            f.gso_fd[sp] = -1


cdef uint32_t gso_run(sw_t *s, uint32_t i) noexcept nogil:
    """How many underlay records from s.out[i] on can go out as one UDP_SEGMENT send:
    contiguous, same destination and source port, equal UDP payload lengths (the last may
    be shorter), at most GSO_MAX_SEGS and 64 KB of UDP payload in all, the same outer
    fields. An IPv6 record with a flow label goes alone: a UDP socket sends a label only
    under a lease (IPV6_FLOWLABEL_MGR), the raw socket writes it as it is."""
    cdef txrec *r = &s.out[i]
    cdef txrec *q
    cdef uint32_t k = 1, total = r.len
    if r.label:
        return 1
    while i + k < s.n_out and k < GSO_MAX_SEGS:
        q = &s.out[i + k]
        if q.port >= 0 or q.rid != r.rid or q.sport != r.sport or q.len > r.len \
                or total + q.len > 65507 or q.tos != r.tos or q.ttl != r.ttl \
                or q.df != r.df or q.label != 0:
            break
        total += q.len
        k += 1
        if q.len < r.len:
            break
    return k


cdef inline void ul_tx_error(sw_t *s, int err, uint32_t n) noexcept nogil:
    if err == EAGAIN or err == ENOBUFS:
        s.ul_tx_dropped += n        # socket buffer or qdisc full: a drop
    else:
        s.ul_tx_errors += n


cdef void raw_queue(sw_t *s, uint32_t nb, uint32_t idx) noexcept nogil:
    """Queue underlay record s.out[idx] as message `nb` of the next sendmmsg() batch (all
    messages of a batch are of one family: raw_flush goes to that family's socket)."""
    cdef tx_t *t = &s.tx
    cdef mmsghdr *m = &t.msgs[nb]
    cdef iovec *v = &t.iov[2 * nb]
    cdef txrec *r = &s.out[idx]
    cdef ulfam_t *f = fam_of(s, r)
    t.rec[nb] = idx
    if f.raw:
        outer_csum(s, r)
    memset(&m.msg_hdr, 0, sizeof(msghdr))
    m.msg_hdr.msg_name = &t.addr[nb]
    # a raw socket takes port 0 (IPv6: the protocol, 0 = the socket's own)
    m.msg_hdr.msg_namelen = vx_sockaddr_set(&t.addr[nb], r.dst, 0 if f.raw else r.dport)
    m.msg_hdr.msg_iov = v
    if not f.raw:               # UDP socket: the kernel adds IP + UDP
        v[0].iov_base = r.data
        v[0].iov_len = r.len
        m.msg_hdr.msg_iovlen = 1
        m.msg_hdr.msg_control = t.ctl + <size_t>nb * VX_TX_CMSG_SPACE
        m.msg_hdr.msg_controllen = VX_TX_CMSG_SPACE
        vx_tos_ttl(&m.msg_hdr, CMSG_FIRSTHDR(&m.msg_hdr), r.v6, r.tos, r.ttl)
    elif r.inline_hdr:
        v[0].iov_base = r.hdr
        v[0].iov_len = r.hlen
        v[1].iov_base = r.data
        v[1].iov_len = r.len
        m.msg_hdr.msg_iovlen = 2
    else:
        v[0].iov_base = r.data - r.hlen
        v[0].iov_len = r.len + r.hlen
        m.msg_hdr.msg_iovlen = 1


cdef bint udp_one(sw_t *s, txrec *r) noexcept nogil:
    """A datagram the raw socket refused as too big for the path (raw_send_hdrinc /
    rawv6_send_hdrinc: EMSGSIZE) goes out on the flow's UDP socket instead, where the kernel
    fragments it — what the kernel's vxlan does with `df unset` (its default; IPv6 has no
    DF), offloads or not. True if it was sent."""
    cdef int fd
    if r.df and not r.v6:
        return False            # DF set: the kernel does not fragment either (IpFragFails)
    fd = gso_socket(s, r.v6, r.sport)
    if fd < 0:
        return False
    gso_df(fam_of(s, r), r)
    return vx_send_one(fd, r.dst, r.dport, r.data, r.len, r.tos, r.ttl) >= 0


cdef uint32_t raw_flush(sw_t *s, uint32_t nb) noexcept nogil:
    """sendmmsg() the `nb` queued messages on their family's socket; returns 0 (the new
    queue length)."""
    cdef tx_t *t = &s.tx
    cdef uint32_t sent = 0
    cdef int rc, err
    cdef ulfam_t *f
    if nb == 0:
        return 0
    f = fam_of(s, &s.out[t.rec[0]])
    while sent < nb:
        rc = sendmmsg(f.fd, t.msgs + sent, nb - sent, MSG_DONTWAIT)
        if rc > 0:
            sent += <uint32_t>rc
            continue
        err = errno
        if rc < 0 and err == EINTR:
            continue
        if rc < 0 and (err == EAGAIN or err == ENOBUFS):
            s.ul_tx_dropped += nb - sent
            break
        if not (err == EMSGSIZE and f.raw and udp_one(s, &s.out[t.rec[sent]])):
            s.ul_tx_errors += 1     # this datagram failed (EMSGSIZE, unreachable...)
        sent += 1
    return 0


cdef void udp_each(sw_t *s, int fd, uint32_t i, uint32_t k) noexcept nogil:
    """Records s.out[i:i+k] one sendto() each on the flow's UDP socket (GSO refused)."""
    cdef uint32_t j
    cdef txrec *r
    for j in range(k):
        r = &s.out[i + j]
        if vx_send_one(fd, r.dst, r.dport, r.data, r.len, r.tos, r.ttl) < 0:
            ul_tx_error(s, errno, 1)


cdef bint gso_send(sw_t *s, int fd, uint32_t i, uint32_t k) noexcept nogil:
    """Records s.out[i:i+k] (a gso_run) as one UDP_SEGMENT send. False: the kernel refused
    GSO itself and the caller sends them one by one (udp_each). EIO (before Linux 6.11,
    udp_send_skb: the route's device cannot checksum) also switches udp_gso off, since every
    later send would fail the same way; EINVAL/EMSGSIZE (a segment bigger than the path MTU
    allows) remembers the size, so later runs that big skip the attempt."""
    cdef tx_t *t = &s.tx
    cdef iovec *v = t.wv
    cdef uint32_t j
    cdef int err
    cdef txrec *r = &s.out[i]
    for j in range(k):
        v[j].iov_base = s.out[i + j].data
        v[j].iov_len = s.out[i + j].len
    if vx_send_gso(fd, r.dst, r.dport, v, <int>k, <uint16_t>r.len, r.tos, r.ttl) >= 0:
        s.offc[OC_GSO_SENDS] += 1
        s.offc[OC_GSO_DATAGRAMS] += k
        return True
    err = errno
    if err == EIO or err == EINVAL or err == EMSGSIZE:
        s.offc[OC_GSO_FALLBACKS] += 1
        if err == EIO:
            t.udp_gso = 0
        elif r.len < t.gso_refused:
            t.gso_refused = r.len
        return False
    ul_tx_error(s, err, k)
    return True


cdef int tx_reserve(tx_t *t, uint32_t nv) noexcept nogil:
    """sendmmsg arrays for `nv` messages; -1 when memory ran out (they are then empty)."""
    cdef uint32_t ncap
    if nv <= t.cap:
        return 0
    ncap = nv if nv > 2 * t.cap else 2 * t.cap
    free(t.msgs)
    free(t.iov)
    free(t.addr)
    free(t.rec)
    free(t.ctl)
    t.msgs = <mmsghdr*>calloc(ncap, sizeof(mmsghdr))
    t.iov = <iovec*>calloc(2 * ncap, sizeof(iovec))
    t.addr = <vx_sockaddr*>calloc(ncap, sizeof(vx_sockaddr))
    t.rec = <uint32_t*>calloc(ncap, sizeof(uint32_t))
    t.ctl = <uint8_t*>calloc(ncap, VX_TX_CMSG_SPACE)
    if t.msgs == NULL or t.iov == NULL or t.addr == NULL or t.rec == NULL or t.ctl == NULL:
        free(t.msgs)
        free(t.iov)
        free(t.addr)
        free(t.rec)
        free(t.ctl)
        t.msgs = NULL
        t.iov = NULL
        t.addr = NULL
        t.rec = NULL
        t.ctl = NULL
        t.cap = 0
        return -1
    t.cap = ncap
    return 0


cdef void tx_underlay(sw_t *s, uint32_t nv) noexcept nogil:
    """The `nv` underlay records of s.out, in order: GSO runs on the flow's socket, the rest
    in sendmmsg batches on their family's raw socket (a batch ends where the family
    changes: sendmmsg() has one socket)."""
    cdef tx_t *t = &s.tx
    cdef uint32_t i = 0, j, k, nb = 0
    cdef int fd
    cdef txrec *r
    cdef ulfam_t *f
    cdef int8_t batch_fam = -1
    if tx_reserve(t, nv) < 0:
        s.ul_tx_dropped += nv
        return
    while i < s.n_out:
        r = &s.out[i]
        if r.port >= 0:
            i += 1
            continue
        f = fam_of(s, r)
        if f.fd < 0:
            s.ul_tx_dropped += 1        # no socket of this family (not registered yet)
            i += 1
            continue
        if batch_fam >= 0 and batch_fam != r.v6:
            nb = raw_flush(s, nb)
        batch_fam = r.v6
        if t.udp_gso:
            k = gso_run(s, i)
            if k >= 2:
                fd = gso_socket(s, r.v6, r.sport) if f.raw else f.fd
                if fd >= 0:
                    # datagrams queued for sendmmsg go first: per-flow order
                    nb = raw_flush(s, nb)
                    if f.raw:
                        gso_df(f, r)
                    if r.len >= t.gso_refused:
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
            if f.raw and f.gso_fd != NULL and f.gso_fd[r.sport] >= 0 and not r.label:
                # the flow has a socket of its own (it sent GSO runs lately): keep all its
                # datagrams on it, so that no per-socket queue or qdisc choice (fq, XPS)
                # can reorder them against its GSO runs
                f.gso_used[r.sport] = t.gso_epoch
                gso_df(f, r)
                udp_each(s, f.gso_fd[r.sport], i, 1)
                i += 1
                continue
        raw_queue(s, nb, i)
        nb += 1
        i += 1
    raw_flush(s, nb)


cdef void transmit(sw_t *s) noexcept nogil:
    """Write/send every record in s.out (TAP writes per port, batches to the underlay),
    count errors, and empty s.out."""
    cdef uint32_t i, nv = 0
    tx_ports(s)
    for i in range(s.n_out):
        if s.out[i].port < 0:
            nv += 1
    if nv:
        tx_underlay(s, nv)
    s.n_out = 0
    s.xoff = 0
