# TSO segmentation and TCP/IPv4 coalescing (dataplane/offload.py is the readable reference).


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


cdef int tso_headers(const uint8_t *h, const uint8_t *f, uint32_t n, uint32_t *l3,
                     uint32_t *l4, uint32_t *doff) noexcept nogil:
    """Where a TSO super-frame's IP and TCP headers are, checked as tcp_gso_segment and
    inet_gso_segment / ipv6_gso_segment check them. Returns -1, or the VE_ reason."""
    cdef uint32_t gso = h[1] & 0x7F, et, tags, ihl
    cdef bint v4
    if gso == 1:
        v4 = True
    elif gso == 4:
        v4 = False
    else:
        return VE_UNSUPPORTED_GSO
    if n < ETH_HLEN:
        return VE_BAD_IP
    l3[0] = L3
    # Up to two VLAN tags (802.1Q, 802.1ad): a VLAN device on the TAP inherits its TSO
    # (tun's vlan_features) and tun_put_user writes the tag inline.
    et = vx_be16(f + ETH_TYPE)
    for tags in range(2):
        if et != 0x8100 and et != 0x88A8:
            break
        if n < l3[0] + 4:
            return VE_BAD_IP
        et = vx_be16(f + l3[0] + 2)
        l3[0] += 4
    if et != (<uint32_t>0x0800 if v4 else <uint32_t>0x86DD):
        return VE_GSO_MISMATCH
    if v4:
        if n < l3[0] + IP4_HLEN or (f[l3[0]] >> 4) != 4:
            return VE_BAD_IP
        ihl = (f[l3[0]] & 0x0F) * 4
        if ihl < IP4_HLEN or l3[0] + ihl > n or f[l3[0] + 9] != 6:
            return VE_BAD_IP
        l4[0] = l3[0] + ihl
    else:
        if n < l3[0] + 40 or (f[l3[0]] >> 4) != 6 or f[l3[0] + 6] != 6:
            return VE_BAD_IP
        l4[0] = l3[0] + 40
    if l4[0] + TCP_HLEN > n:
        return VE_BAD_TCP
    doff[0] = (f[l4[0] + TCP_DOFF] >> 4) * 4
    if doff[0] < TCP_HLEN or l4[0] + doff[0] > n:
        return VE_BAD_TCP
    return -1


ctypedef struct tso_t:
    # One TSO super-frame's geometry and the header fields every segment derives its own from
    # (tso_prepare), shared by the copying and the in-place segmentation.
    uint32_t l3, l4, doff, hl, ihl, g, plen, nseg, seq0, id0
    uint64_t addrs               # pseudo-header address words
    uint8_t fl                   # TCP flags of the super-frame
    bint v4


cdef int tso_prepare(const uint8_t *h, const uint8_t *f, uint32_t n, tso_t *t) noexcept nogil:
    """tso_headers() plus the checks of tso_segment(); fills `t`. Returns -1, or the VE_
    reason."""
    cdef int err = tso_headers(h, f, n, &t.l3, &t.l4, &t.doff)
    if err >= 0:
        return err
    t.v4 = (h[1] & 0x7F) == 1
    t.g = le16(h + 4)
    t.ihl = 0
    t.id0 = 0
    if t.v4:
        t.ihl = t.l4 - t.l3
        t.addrs = addr_sum(f + t.l3 + 12, 8)
        t.id0 = vx_be16(f + t.l3 + 4)
    else:
        t.addrs = addr_sum(f + t.l3 + 8, 32)
    t.hl = t.l4 + t.doff
    if t.g == 0:
        return VE_ZERO_GSO
    t.plen = n - t.hl
    if t.plen == 0:
        return VE_EMPTY_GSO
    t.nseg = (t.plen + t.g - 1) // t.g
    if t.nseg > MAX_TSO_SEGS:
        return VE_TOO_MANY
    t.seq0 = vx_be32(f + t.l4 + TCP_SEQ)
    t.fl = f[t.l4 + TCP_FLAGS]
    return -1


cdef inline uint32_t tso_clen(const tso_t *t, uint32_t i) noexcept nogil:
    return t.g if i < t.nseg - 1 else t.plen - i * t.g


cdef void tso_header(const tso_t *t, const uint8_t *hdr, uint8_t *o, uint32_t i,
                     uint64_t ps) noexcept nogil:
    """Segment i's headers at `o` (its payload already at o + hl, summed into `ps`), from the
    super-frame's headers `hdr`: IPv4 total length, ID (+1 per segment) and header checksum
    or IPv6 payload length, TCP sequence number, flags (FIN/PSH only on the last, CWR only on
    the first) and the complete TCP checksum."""
    cdef uint32_t clen = tso_clen(t, i), tcplen, l3 = t.l3, l4 = t.l4
    cdef uint8_t b
    if o != hdr:
        memcpy(o, hdr, t.hl)
    tcplen = t.doff + clen
    if t.v4:
        vx_put_be16(o + l3 + 2, t.ihl + tcplen)
        vx_put_be16(o + l3 + 4, (t.id0 + i) & 0xFFFF)
        o[l3 + 10] = 0
        o[l3 + 11] = 0
        vx_put_be16(o + l3 + 10, csum_done(data_sum(o + l3, t.ihl)))
        ps += t.addrs + 6 + (tcplen & 0xFFFF)   # the pseudo-header length is 16 bits
    else:
        vx_put_be16(o + l3 + 4, tcplen)
        ps += t.addrs + 6 + (tcplen >> 16) + (tcplen & 0xFFFF)
    vx_put_be32(o + l4 + TCP_SEQ, t.seq0 + i * t.g)
    b = t.fl
    if i < t.nseg - 1:
        b &= ~(<uint8_t>0x09)            # FIN, PSH: last segment only
    if i > 0:
        b &= ~(<uint8_t>0x80)            # CWR: first segment only
    o[l4 + TCP_FLAGS] = b
    o[l4 + TCP_CSUM] = 0
    o[l4 + TCP_CSUM + 1] = 0
    ps += data_sum(o + l4, t.doff)
    vx_put_be16(o + l4 + TCP_CSUM, csum_done(ps))


cdef int tso_segment(const uint8_t *h, const uint8_t *f, uint32_t n, uint8_t *out,
                     uint32_t *offs, uint32_t *lens) noexcept nogil:
    """offload.segment() for GSO_TCPV4/GSO_TCPV6 (tcp_gso_segment + inet_gso_segment /
    ipv6_gso_segment): cut a TSO super-frame into gso_size payload chunks, each behind a copy
    of the headers (tso_header). Segment k is written at out + offs[k] with HEADROOM free
    bytes in front (room for encapsulation); `out` holds SEG_BUF bytes. Returns the number
    of segments, or -(1 + VE_ reason). tso_inplace() does the same without copying the
    payload, when the read already put the chunks where the segments need them."""
    cdef tso_t t
    cdef uint32_t i, clen, stride
    cdef uint64_t ps
    cdef uint8_t *o
    cdef int err = tso_prepare(h, f, n, &t)
    if err >= 0:
        return -(1 + err)
    stride = (HEADROOM + t.hl + t.g + 63) & ~(<uint32_t>63)
    if <uint64_t>t.nseg * stride > SEG_BUF:      # cannot happen within the limits above
        return -(1 + VE_TOO_MANY)
    for i in range(t.nseg):
        clen = tso_clen(&t, i)
        offs[i] = i * stride + HEADROOM
        lens[i] = t.hl + clen
        o = out + offs[i]
        # the chunk's sum comes with its copy (doff is a multiple of 4, so the chunk starts
        # at an even offset of the TCP segment and its sum can be added on its own)
        ps = vx_csum_be(vx_csum_copy(0, o + t.hl, f + t.hl + i * t.g, clen))
        tso_header(&t, f, o, i, ps)
    return <int>t.nseg


cdef int tso_inplace(const uint8_t *h, uint8_t *f, uint32_t n, uint32_t stride,
                     uint32_t *offs, uint32_t *lens) noexcept nogil:
    """tso_segment() for a super-frame whose payload chunks are already in place: chunk 0
    right behind the headers at f, chunk i (i >= 1) at f + i * stride + hl, i.e. behind the
    room its own headers need, with HEADROOM bytes in front of those (rx.pyx vlayout()
    scatters a TAP read that way). Only the headers are written (segment 0's over the
    super-frame's own, after a copy of them is taken) and each chunk is read once, for its
    checksum: no payload byte is copied in user space. Segment i is at f + offs[i] (offs[0]
    = 0), the same bytes as tso_segment's. The caller has checked hl and gso_size against
    the layout (tso_prepare) and that the segments do not outnumber it."""
    cdef tso_t t
    cdef uint32_t i, clen
    cdef uint64_t ps
    cdef uint8_t *o
    cdef uint8_t hdr[TSO_HDR_MAX]
    cdef int err = tso_prepare(h, f, n, &t)
    if err >= 0:
        return -(1 + err)
    if t.hl > TSO_HDR_MAX:                       # cannot happen: tso_headers bounds it
        return -(1 + VE_BAD_TCP)
    memcpy(hdr, f, t.hl)
    for i in range(t.nseg):
        clen = tso_clen(&t, i)
        offs[i] = i * stride
        lens[i] = t.hl + clen
        o = f + offs[i]
        ps = data_sum(o + t.hl, clen)
        tso_header(&t, hdr, o, i, ps)
    return <int>t.nseg


cdef inline uint32_t tcp_doff(const uint8_t *f) noexcept nogil:
    return (f[L4 + TCP_DOFF] >> 4) * 4


cdef int tcp4_coalescible(const uint8_t *f, uint32_t n, bint verified) noexcept nogil:
    """offload.coalesce()'s test for a frame that may join a run: plain IPv4 (no options,
    not a fragment, no Ethernet padding, valid header checksum), TCP with data and only
    ACK or ACK|PSH, and a valid TCP checksum — a merged frame goes up with F_NEEDS_CSUM,
    which the receiving stack takes as "verified" (CHECKSUM_PARTIAL), so a corrupt segment
    must never be merged: like tcp4_gro_receive, check before merging. `verified`: the
    TCP checksum was checked on receipt already (rx_csum), so it is not summed again."""
    cdef uint32_t doff, fl
    if n < L4 + TCP_HLEN or f[ETH_TYPE] != 0x08 or f[ETH_TYPE + 1] != 0x00 \
            or f[L3] != 0x45 or f[IP4_PROTO] != 6:
        return CO_NO
    if (vx_be16(f + IP4_FRAG) & 0x3FFF) != 0 or vx_be16(f + IP4_TOTLEN) != n - ETH_HLEN:
        return CO_NO
    if vx_csum_fold(vx_csum_add(0, f + L3, IP4_HLEN)) != 0xFFFF:
        return CO_NO
    if f[L4 + TCP_DOFF] & 0x0F:
        return CO_NO        # AccECN's AE bit / reserved bits: merging would lose them
    doff = tcp_doff(f)
    if doff < TCP_HLEN or L4 + doff >= n:
        return CO_NO
    fl = f[L4 + TCP_FLAGS]
    if not (fl & 0x10) or (fl & ~(<uint32_t>0x18)):
        return CO_NO
    if not verified and vx_csum_fold(addr_sum(f + IP4_SADDR, 8) + 6 + (n - L4)
                                     + data_sum(f + L4, n - L4)) != 0xFFFF:
        return CO_BAD_CSUM
    return CO_YES


cdef bint run_extends(const run_t *run, const uint8_t *h, const uint8_t *q,
                      uint32_t qn) noexcept nogil:
    """offload.coalesce(): does frame q (coalescible) continue the run headed by h? Same
    Ethernet header, TOS, TTL, DF, addresses, ports, ACK, window and options; the next
    sequence number; and the run not closed by a short or PSH member."""
    cdef uint32_t doff = tcp_doff(q)
    cdef uint32_t qp = qn - L4 - doff
    if run.last_psh or not run.last_full or doff != run.doff or qp > run.g:
        return False
    if run.n >= COALESCE_MAX or IP4_HLEN + doff + run.bytes + qp > 65535:
        return False
    if vx_be32(q + L4 + TCP_SEQ) != run.next_seq:
        return False
    if memcmp(q, h, ETH_HLEN) != 0 or q[IP4_TOS] != h[IP4_TOS] or q[IP4_TTL] != h[IP4_TTL] \
            or (q[IP4_FRAG] & 0x40) != (h[IP4_FRAG] & 0x40) \
            or memcmp(q + IP4_SADDR, h + IP4_SADDR, 8) != 0:
        return False
    if memcmp(q + L4, h + L4, 4) != 0 or memcmp(q + L4 + TCP_ACK, h + L4 + TCP_ACK, 4) != 0 \
            or memcmp(q + L4 + TCP_WIN, h + L4 + TCP_WIN, 2) != 0 \
            or memcmp(q + L4 + TCP_HLEN, h + L4 + TCP_HLEN, doff - TCP_HLEN) != 0:
        return False
    return True


cdef void run_add(run_t *run, const uint8_t *q, uint32_t qn) noexcept nogil:
    cdef uint32_t qp = qn - L4 - run.doff
    run.n += 1
    run.bytes += qp
    run.next_seq = vx_be32(q + L4 + TCP_SEQ) + qp
    run.last_psh = (q[L4 + TCP_FLAGS] & 0x08) != 0
    run.last_full = qp == run.g


cdef void run_start(run_t *run, int32_t idx, const uint8_t *h, uint32_t hn) noexcept nogil:
    run.head = idx
    run.tail = idx
    run.n = 0
    run.bytes = 0
    run.doff = <uint16_t>tcp_doff(h)
    run.g = hn - L4 - run.doff
    run_add(run, h, hn)


cdef uint32_t run_header(const run_t *run, const uint8_t *h, uint8_t *vh,
                         uint8_t *out) noexcept nogil:
    """The merged frame's headers for a run of >= 2 (into `out`, L4 + doff bytes) and its
    virtio_net_hdr (into `vh`, 10 bytes): total length and IPv4 checksum for the merged size,
    PSH if the last member had it, and the TCP checksum field left as the pseudo-header sum
    (not complemented) with F_NEEDS_CSUM and csum_start/offset pointing at it, as
    tcp_v4_send_check leaves a CHECKSUM_PARTIAL packet — the form virtio_net_hdr_to_skb
    expects (wireguard-go's tun offload does the same). Returns the header length."""
    cdef uint32_t hl = L4 + run.doff
    cdef uint32_t tcplen = run.doff + run.bytes
    memcpy(out, h, hl)
    vx_put_be16(out + IP4_TOTLEN, IP4_HLEN + tcplen)
    out[IP4_CSUM] = 0
    out[IP4_CSUM + 1] = 0
    vx_put_be16(out + IP4_CSUM, csum_done(data_sum(out + L3, IP4_HLEN)))
    if run.last_psh:
        out[L4 + TCP_FLAGS] |= 0x08
    vx_put_be16(out + L4 + TCP_CSUM, vx_csum_fold(addr_sum(h + IP4_SADDR, 8) + 6 + tcplen))
    vh[0] = 1                                  # VIRTIO_NET_HDR_F_NEEDS_CSUM
    vh[1] = 1                                  # VIRTIO_NET_HDR_GSO_TCPV4
    vh[2] = <uint8_t>hl                        # hdr_len
    vh[3] = <uint8_t>(hl >> 8)
    vh[4] = <uint8_t>run.g                     # gso_size
    vh[5] = <uint8_t>(run.g >> 8)
    vh[6] = L4                                 # csum_start: the TCP header
    vh[7] = 0
    vh[8] = TCP_CSUM                           # csum_offset: TCP checksum field
    vh[9] = 0
    return hl


# -- frames from the underlay: offload.receive() ------------------------------------------------

cdef int l4_locate(const uint8_t *f, uint32_t n, l4info_t *li) noexcept nogil:
    """Find the TCP/UDP header of an untagged IPv4 or IPv6 frame (no IPv6 extension headers,
    not a fragment, lengths that fit the frame); -1 when there is none to check."""
    cdef uint32_t et, ihl, tot
    if n < ETH_HLEN:
        return -1
    et = vx_be16(f + ETH_TYPE)
    li.l3 = L3
    if et == 0x0800:
        if n < L3 + IP4_HLEN or (f[L3] >> 4) != 4:
            return -1
        ihl = (f[L3] & 0x0F) * 4
        tot = vx_be16(f + IP4_TOTLEN)
        if ihl < IP4_HLEN or tot < ihl or L3 + tot > n or (vx_be16(f + IP4_FRAG) & 0x3FFF):
            return -1
        li.proto = f[IP4_PROTO]
        li.l4 = L3 + ihl
        li.l4len = tot - ihl
        li.v6 = 0
    elif et == 0x86DD:
        if n < L3 + 40 or (f[L3] >> 4) != 6:
            return -1
        tot = vx_be16(f + L3 + 4)
        if L3 + 40 + tot > n:
            return -1
        li.proto = f[L3 + 6]
        li.l4 = L3 + 40
        li.l4len = tot
        li.v6 = 1
    else:
        return -1
    li.end = li.l4 + li.l4len
    if li.proto == 6:
        if li.l4len < TCP_HLEN:
            return -1
        li.doff = (f[li.l4 + TCP_DOFF] >> 4) * 4
        if li.doff < TCP_HLEN or li.doff > li.l4len:
            return -1
        return 0
    if li.proto == 17 and li.l4len >= 8:
        li.doff = 8
        return 0
    return -1


cdef int rx_csum(uint8_t *f, uint32_t n, l4info_t *li) noexcept nogil:
    """offload.receive()'s checksum verdict for an inner TCP/UDP frame from the underlay.

    A kernel VTEP sends its containers' TCP and UDP with CHECKSUM_PARTIAL: the field holds
    the folded pseudo-header sum, not complemented, and a veth (or virtio between VMs on one
    host) hands the packet over without ever filling it in; a kernel receiver keeps that
    state with the skb and trusts it. A UDP socket only sees bytes, so the state is
    recognised here: a checksum that fails, in a field equal to the pseudo-header sum, is
    partial and completed in place (as skb_checksum_help would: a 0 goes out as 0xFFFF). A
    checksum that fails otherwise is corruption on the way, left for the container to drop."""
    cdef uint32_t off, field
    cdef uint64_t p, sm
    cdef uint16_t c
    if l4_locate(f, n, li) < 0:
        return RX_NONE
    off = li.l4 + (TCP_CSUM if li.proto == 6 else 6)
    field = vx_be16(f + off)
    if li.proto == 17 and field == 0:
        return RX_NONE                  # IPv4 UDP without a checksum (RFC 768)
    if li.v6:
        p = addr_sum(f + li.l3 + 8, 32) + (li.l4len >> 16)
    else:
        p = addr_sum(f + IP4_SADDR, 8)
    p += li.proto + (li.l4len & 0xFFFF)
    sm = data_sum(f + li.l4, li.l4len)
    if vx_csum_fold(p + sm) == 0xFFFF:
        return RX_VALID
    if field != vx_csum_fold(p):
        return RX_BAD
    c = csum_done(sm)                   # the field (= p) is already in the sum
    vx_put_be16(f + off, c if c != 0 else 0xFFFF)
    return RX_PARTIAL


cdef int rx_segment(const uint8_t *f, const l4info_t *li, uint32_t mtu, uint8_t *out,
                    uint32_t *offs, uint32_t *lens) noexcept nogil:
    """Cut a TCP super-frame from the underlay into wire segments for a network of `mtu`.
    A kernel VTEP on a veth underlay sends its containers' TSO frames as ONE VXLAN datagram
    of up to 64 KB (no UDP_GRO cmsg: it is a tunnel GSO skb, queued whole); the sender's MSS
    travels nowhere, so the segments are as large as the MTU allows. Returns the number of
    segments (tso_segment's), or -1 when this is not a TCP frame that can be cut."""
    cdef uint8_t hb[VNET_HDR_MIN]
    cdef uint32_t hl = li.l4 + li.doff, g
    cdef int k
    if li.proto != 6 or mtu <= hl - li.l3 or li.end <= hl:
        return -1
    g = mtu - (hl - li.l3)
    memset(hb, 0, VNET_HDR_MIN)
    hb[0] = 1                           # F_NEEDS_CSUM (tso_segment computes every checksum)
    hb[1] = 4 if li.v6 else 1           # GSO_TCPV6 / GSO_TCPV4
    hb[2] = <uint8_t>hl
    hb[4] = <uint8_t>g
    hb[5] = <uint8_t>(g >> 8)
    k = tso_segment(hb, f, li.end, out, offs, lens)
    return k if k > 0 else -1
