# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Hooks into the compiled core for tests and benchmarks. Built with the product, never
imported by it: ``dataplane`` only uses ``_fastpath.core``.

Everything here drives the core's own C functions (cimported from ``_fastpath.core``), so a
benchmark times the product's code paths and a differential test compares the product's
bytes: the burst path with several frames per burst, complete outer datagrams as the raw
socket would send them, TSO segmentation and coalescing through ``transmit()`` itself, the
FDB hash table, and its geometry.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, calloc, free
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

from _fastpath.includes.vxbits cimport vx_mix64, vx_now_ns, vx_prefetch, vx_csum_add, vx_flow_hash
from _fastpath.includes.libc_net cimport htonl, iovec
from _fastpath.core cimport (
    Switch, sw_t, txrec, port_t, table_t, fdb_ent, rx_frame, rx_datagram, out_push,
    process_port_burst, process_underlay_burst, outer_csum, build_ipudp, build_ip6udp, transmit,
    tso_segment, vnet_csum, vlayout, vnet_segments, VSLOT_STRIDE, VIOV_MAX, l4info_t, rx_csum, rx_segment, RX_PARTIAL, RX_VALID, tab_init, tab_insert, tab_free, tab_find, tab_home, tab_key_at,
    fdb_key, fdb_find, ent_nremotes, addr_v4mapped,
    HEADROOM, IPUDP_HLEN, IP6UDP_HLEN, MAX_FRAME, VXLAN_HLEN, SEG_BUF, MAX_TSO_SEGS, FDB_MIN_CAP,
    N_VE, VE_SHORT_HEADER, CSUM_UNKNOWN,
)

from ipaddress import IPv4Address

from dataplane.errors import InvalidArgument
from dataplane.switch import source_address
from dataplane.wire import ip4
from _fastpath.core import VNET_ERRORS

cdef uint64_t MAC_MASK = 0xFFFFFFFFFFFF


cdef uint32_t addr32(object addr) except? 0:
    """An IPv4 address (str or IPv4Address) as a network-order u32."""
    try:
        return htonl(<uint32_t>int(ip4(addr)))
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


cdef bytes addr16_of(object addr):
    """An IPv4 or IPv6 address (str or object) as 16 bytes, IPv4-mapped for IPv4."""
    a = source_address(addr)
    return (bytes(10) + b"\xff\xff" + a.packed) if a.version == 4 else a.packed


cdef int32_t port_arg(object port):
    return <int32_t>port if isinstance(port, int) and 0 <= port <= 32767 else -1


def flow_hash(frame) -> int:
    """wire.flow_hash computed by the C code the fast path uses."""
    cdef bytes b = bytes(frame)
    cdef const unsigned char *p = b
    return vx_flow_hash(p, len(b))


# -- the burst path, outputs as the reference's actions ----------------------------------------

cdef list run_bursts(Switch sw, list frames, int32_t port, list sources, double now,
                     bint outer):
    """The frames (UDP payloads when `sources` is given) through the burst path, `burst` of
    them per process_*_burst() call, and the actions they produced."""
    cdef sw_t *s = sw.s
    cdef uint32_t k = 0, i
    cdef bytes b
    cdef uint32_t limit = MAX_FRAME + (VXLAN_HLEN if sources is not None else 0)
    cdef bytes a
    out = []
    s.n_out = 0
    try:
        for i in range(len(frames)):
            b = frames[i]
            if len(b) > limit:
                raise ValueError(f"frame longer than {limit} bytes")
            if sources is None:
                memcpy(rx_frame(&s.rx, k), <const unsigned char*>b, len(b))
            else:
                a = addr16_of(sources[i][0])
                memcpy(s.rx.src + 16 * k, <const char*>a, 16)
                s.rx.tos[k] = <uint8_t>sources[i][1]
                memcpy(rx_datagram(&s.rx, k), <const unsigned char*>b, len(b))
            s.rx.len[k] = len(b)
            k += 1
            if k == s.rx.burst or i == len(frames) - 1:
                if sources is None:
                    process_port_burst(s, port, k, now)
                else:
                    process_underlay_burst(s, k, now, False)
                out.extend(sw._collect(s.n_out, outer))
                s.n_out = 0
                s.xoff = 0      # as transmit() does: the copy arena goes with the outputs
                k = 0
    finally:
        s.n_out = 0
        s.xoff = 0
    return out


def from_port_burst(Switch sw, port, frames, double now, *, outer=False):
    """``Switch.from_port`` for several frames through the burst path (rx slots, one
    process_port_burst() per ``burst`` frames): the same actions as from_port on each
    frame in turn. ``outer=True`` returns complete outer IPv4/IPv6 datagrams in the "vtep"
    actions (what the raw socket would send)."""
    return run_bursts(sw, [bytes(f) for f in frames], port_arg(port), None, now, outer)


def from_underlay_burst(Switch sw, datagrams, double now, *, outer=False):
    """``Switch.from_underlay`` for several ``(source, datagram)`` or ``(source, datagram,
    tos)`` items through the burst path (the core alone: without the rx step that
    rx_udp_burst runs in front of it)."""
    items = [tuple(x) for x in datagrams]
    return run_bursts(sw, [bytes(x[1]) for x in items], -1,
                      [(x[0], x[2] if len(x) > 2 else 0) for x in items], now, outer)


def build_outer(Switch sw, dst, sport, payload, uint8_t tos=0, uint8_t ttl=64,
                bint df=False, uint32_t label=0) -> bytes:
    """IPv4 or IPv6 (``dst``'s family) + UDP + ``payload`` from the switch's local address
    of that family to ``dst``, built by the C encapsulation code: equal to
    ``wire.outer_datagram(local, dst, sport, payload, dstport, tos=, ttl=, df=, label=)``."""
    cdef bytes b = bytes(payload)
    cdef size_t n = len(b)
    cdef bytes d16 = addr16_of(dst)
    cdef bint v6 = d16[:12] != bytes(10) + b"\xff\xff"
    cdef uint32_t hl = IP6UDP_HLEN if v6 else IPUDP_HLEN
    cdef bytes out
    cdef uint8_t *p
    if not 0 <= sport <= 65535:
        raise ValueError(f"source port {sport} is not within 0-65535")
    if n + hl > 65535:
        raise ValueError(f"a {n}-byte payload does not fit in a datagram")
    out = PyBytes_FromStringAndSize(NULL, n + hl)
    p = <uint8_t*>PyBytes_AS_STRING(out)
    memcpy(p + hl, <const unsigned char*>b, n)
    if v6:
        build_ip6udp(p, sw.s.local6, <const uint8_t*>d16, <uint16_t>sport, sw.s.dport,
                     <uint32_t>n, vx_csum_add(0, p + hl, n), tos, ttl, label)
    else:
        build_ipudp(p, sw.s.local, addr32(dst), <uint16_t>sport, sw.s.dport, <uint32_t>n,
                    vx_csum_add(0, p + hl, n), tos, ttl, df)
    return out


# -- in-memory benchmarks of the forwarding path -------------------------------------------------

def bench_port(Switch sw, port, frame, long count, double now) -> int:
    """Process ``count`` copies of ``frame`` from ``port`` in bursts, as rx_tap_burst would
    (copy into the rx slot, classify, look up, encapsulate) plus the outer checksum the raw
    socket path adds per datagram, and discard the outputs. Returns the number of output
    records produced."""
    cdef sw_t *s = sw.s
    cdef bytes b = bytes(frame)
    cdef const unsigned char *src = b
    cdef uint32_t n = len(b), k, i
    cdef int32_t p = port_arg(port)
    cdef long done = 0
    cdef uint64_t total = 0
    if n > MAX_FRAME:
        raise ValueError(f"frame longer than {MAX_FRAME} bytes")
    s.n_out = 0
    while done < count:
        k = <uint32_t>min(<long>s.rx.burst, count - done)
        for i in range(k):
            memcpy(rx_frame(&s.rx, i), src, n)
            s.rx.len[i] = n
        total += process_port_burst(s, p, k, now)
        for i in range(s.n_out):
            outer_csum(s, &s.out[i])
        s.n_out = 0
        s.xoff = 0
        done += k
    return total


def bench_underlay(Switch sw, source, datagram, long count, double now) -> int:
    """Like bench_port for UDP payloads (VXLAN header + frame) from ``source``, through the
    rx step and the core as rx_udp_burst runs them."""
    cdef sw_t *s = sw.s
    cdef bytes b = bytes(datagram)
    cdef const unsigned char *src = b
    cdef uint32_t n = len(b), k, i
    cdef bytes a = addr16_of(source)
    cdef long done = 0
    cdef uint64_t total = 0
    if n > MAX_FRAME + VXLAN_HLEN:
        raise ValueError(f"datagram longer than {MAX_FRAME + VXLAN_HLEN} bytes")
    s.n_out = 0
    while done < count:
        k = <uint32_t>min(<long>s.rx.burst, count - done)
        for i in range(k):
            memcpy(rx_datagram(&s.rx, i), src, n)
            s.rx.len[i] = n
            memcpy(s.rx.src + 16 * i, <const char*>a, 16)
        total += process_underlay_burst(s, k, now, True)
        s.n_out = 0
        s.xoff = 0
        done += k
    return total


# -- the FDB hash table ---------------------------------------------------------------------------

def fdb_stats(Switch sw) -> dict:
    """Sizes and probe lengths of the FDB and neighbour hash tables."""
    cdef sw_t *s = sw.s
    cdef table_t *t = &s.fdb.tab
    cdef uint64_t i, home, dist, key, total = 0, worst = 0
    for i in range(t.cap):
        key = tab_key_at(t, i, sizeof(fdb_ent))
        if key != 0:
            dist = (i - tab_home(t, key)) & t.mask
            total += dist + 1
            worst = max(worst, dist + 1)
    return {"entries": t.count, "capacity": t.cap, "entry_bytes": sizeof(fdb_ent),
            "table_bytes": t.cap * sizeof(fdb_ent),
            "load": t.count / <double>t.cap,
            "avg_probe": total / <double>t.count if t.count else 0.0,
            "max_probe": worst,
            "neigh_entries": s.nb.count, "neigh_capacity": s.nb.cap,
            "neigh_entry_bytes": s.nb.esize,
            "remote_lists": sum(1 for i in range(s.fdb.rl_cap) if s.fdb.rl[i].cap)}


def fdb_bytes_per_entry(Switch sw) -> int:
    """Honest memory cost: bucket array (+ remote lists) divided by live entries."""
    cdef sw_t *s = sw.s
    cdef uint64_t total = s.fdb.tab.cap * sizeof(fdb_ent) + s.fdb.rl_cap * 16
    cdef uint32_t i
    for i in range(s.fdb.rl_cap):
        total += s.fdb.rl[i].cap * sizeof(uint32_t)
    return total // s.fdb.tab.count if s.fdb.tab.count else total


def bench_fdb_lookup(uint64_t n_entries, uint64_t n_lookups, uint64_t working_set=0,
                     uint32_t batch=0) -> dict:
    """Time FDB lookups (fdb_find) on a private table of ``n_entries`` random MACs (one
    network), grown exactly as learning grows it. Lookups pick uniformly random keys among
    all entries (``working_set`` = 0) or among the first ``working_set`` ones; ``batch`` > 0
    hashes and prefetches that many keys before probing them (how a burst can hide cache
    misses). Returns ns per lookup and the table's geometry."""
    cdef table_t t
    cdef uint64_t i, j, k, hits = 0, ws, rng = 0x9E3779B97F4A7C15, inserted = 0
    cdef uint64_t keys[64]
    cdef double t0, t1
    cdef fdb_ent *e
    if n_entries < 1 or batch > 64:
        raise ValueError("n_entries >= 1 and batch <= 64")
    if tab_init(&t, sizeof(fdb_ent), FDB_MIN_CAP) < 0:
        raise MemoryError()
    i = 0
    while inserted < n_entries:
        k = fdb_key(0, vx_mix64(i + 1) & MAC_MASK)
        i += 1
        if tab_find(&t, k, sizeof(fdb_ent)) != NULL:
            continue
        e = <fdb_ent*>tab_insert(&t, k)
        if e == NULL:
            tab_free(&t)
            raise MemoryError()
        e.port = <int>(inserted & 0x7FFF)
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
            if tab_find(&t, k, sizeof(fdb_ent)) != NULL:
                hits += 1
    else:
        i = 0
        while i < n_lookups:
            for j in range(batch):
                rng ^= rng << 13
                rng ^= rng >> 7
                rng ^= rng << 17
                keys[j] = fdb_key(0, vx_mix64(((rng >> 32) * ws >> 32) + 1) & MAC_MASK)
                vx_prefetch(t.slots + tab_home(&t, keys[j]) * sizeof(fdb_ent))
            for j in range(batch):
                if tab_find(&t, keys[j], sizeof(fdb_ent)) != NULL:
                    hits += 1
            i += batch
    t1 = vx_now_ns()
    n_done = n_lookups if batch == 0 else ((n_lookups + batch - 1) // batch) * batch
    result = {"ns_per_lookup": (t1 - t0) / n_done if n_done else 0.0,
              "lookups": n_done, "hits": hits, "entries": t.count, "capacity": t.cap,
              "bytes_per_entry": t.cap * sizeof(fdb_ent) / <double>t.count}
    tab_free(&t)
    return result


# -- offloads: the C path's segmentation and coalescing ------------------------------------------

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


def offload_segment_scatter(hdr, frame, uint32_t hl, uint32_t g):
    """offload_segment() as rx_tap_burst does it for a vnet TAP: the read scattered with the
    layout for headers of `hl` bytes and chunks of `g` (rx.pyx vlayout; readv's filling of
    the iovecs done here by copying), then vnet_segments() (in place when the frame fits the
    layout, else moved back together and segmented by copying). Returns (what
    offload_segment returns, whether the segments were made in place)."""
    cdef bytes hb = bytes(hdr)
    cdef bytes fb = bytes(frame)
    cdef uint32_t vnet = 12 if len(hb) >= 12 else 10
    cdef uint32_t n = len(fb), cnt, j, k_, left, take, pos = 0
    cdef bytes src
    cdef uint8_t *slot
    cdef uint8_t *f
    cdef uint8_t *seg
    cdef uint8_t *base = NULL
    cdef uint32_t *offs
    cdef uint32_t *lens
    cdef iovec *iov
    cdef uint32_t hlen = 0
    cdef int k, rc
    if len(hb) < 10:
        raise ValueError(VNET_ERRORS[VE_SHORT_HEADER])
    src = (hb + bytes(12))[:vnet] + fb
    slot = <uint8_t*>calloc(VSLOT_STRIDE, 1)
    seg = <uint8_t*>malloc(SEG_BUF)
    offs = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
    lens = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
    iov = <iovec*>calloc(VIOV_MAX, sizeof(iovec))
    try:
        if slot == NULL or seg == NULL or offs == NULL or lens == NULL or iov == NULL:
            raise MemoryError()
        f = slot + HEADROOM
        cnt = vlayout(f, vnet, hl, g, iov)
        left = len(src)
        for j in range(cnt):                      # what readv() would do
            take = iov[j].iov_len if iov[j].iov_len < left else left
            memcpy(iov[j].iov_base, PyBytes_AS_STRING(src) + pos, take)
            pos += take
            left -= take
        if left:
            raise ValueError("frame larger than a vnet slot")
        k = vnet_segments(f, n, <const uint8_t*><const char*>hb, hl, g, cnt, iov, vnet, seg,
                          offs, lens, &base, &hlen)
        if k == 0:
            if hb[0] & 1:
                rc = vnet_csum(<const uint8_t*><const char*>hb, f, n)
                if rc >= 0:
                    raise ValueError(VNET_ERRORS[rc])
            return [PyBytes_FromStringAndSize(<char*>f, n)], False
        if k < 0:
            raise ValueError(VNET_ERRORS[-k - 1])
        return ([PyBytes_FromStringAndSize(<char*>base + offs[k_], lens[k_])
                 for k_ in range(<uint32_t>k)], base == f)
    finally:
        free(slot)
        free(seg)
        free(offs)
        free(lens)
        free(iov)


RX_VERDICTS = ("none", "valid", "partial", "bad")


def offload_receive(frame, uint32_t mtu):
    """dataplane.offload.receive() through the C functions the underlay path uses (rx_csum,
    rx_segment): ``(frames, verdict)`` for an inner frame from the underlay."""
    cdef bytearray buf = bytearray(frame)
    cdef uint32_t n = len(buf)
    cdef l4info_t li
    cdef int v, k
    cdef uint8_t *out
    cdef uint32_t *offs
    cdef uint32_t *lens
    v = rx_csum(<uint8_t*><char*>buf, n, &li)
    if (v != RX_VALID and v != RX_PARTIAL) or n <= mtu + 14:
        return [bytes(buf)], RX_VERDICTS[v]
    out = <uint8_t*>malloc(SEG_BUF)
    offs = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
    lens = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
    try:
        if out == NULL or offs == NULL or lens == NULL:
            raise MemoryError()
        k = rx_segment(<const uint8_t*><char*>buf, &li, mtu, out, offs, lens)
        if k < 0:
            return [bytes(buf)], RX_VERDICTS[v]
        return ([PyBytes_FromStringAndSize(<char*>out + offs[i], lens[i]) for i in range(k)],
                RX_VERDICTS[v])
    finally:
        free(out)
        free(offs)
        free(lens)


cdef int queue_frames(Switch sw, list frames, int fd) except -1:
    """Make the frames output records to port 0 — a vnet TAP with a 10-byte header whose fd
    is `fd` (-1: none, every write counted as tx_dropped instead) — with coalescing on."""
    cdef sw_t *s = sw.s
    cdef txrec *r
    cdef bytes b
    s.ports[0].net = 0          # transmit() never looks at the network
    s.ports[0].fd = fd
    s.ports[0].vnet = 10
    s.tx.tap_coalesce = 1
    for b in frames:
        r = out_push(s)
        if r == NULL:
            raise MemoryError()
        r.data = <uint8_t*><const char*>b
        r.len = <uint32_t>len(b)
        r.port = 0
        r.csum = CSUM_UNKNOWN       # as frames from a TAP: the coalescer checks them
    return 0


def offload_coalesce(frames):
    """dataplane.offload.coalesce() through transmit() itself: the frames become output
    records to one port whose "TAP" is a SOCK_SEQPACKET socket pair (one message per
    writev, like a TAP), with a 10-byte virtio_net_hdr; returns the (hdr, frame) messages."""
    import socket
    cdef list keep = [bytes(f) for f in frames]
    cdef Switch sw = Switch("198.18.0.1")
    cdef sw_t *s = sw.s
    a, z = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        for sock, opt, force in ((a, socket.SO_SNDBUF, 32), (z, socket.SO_RCVBUF, 33)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, 64 << 20)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, opt, 64 << 20)
        a.setblocking(False)
        z.setblocking(False)
        queue_frames(sw, keep, a.fileno())
        transmit(s)
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
    (copies, per-segment headers and TCP checksums), without I/O."""
    cdef bytes hb = bytes(hdr)
    cdef bytes fb = bytes(frame)
    cdef uint8_t *out = <uint8_t*>malloc(SEG_BUF)
    cdef uint32_t *offs = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
    cdef uint32_t *lens = <uint32_t*>malloc(MAX_TSO_SEGS * sizeof(uint32_t))
    cdef const uint8_t *h = <const uint8_t*><const char*>hb
    cdef const uint8_t *f = <const uint8_t*><const char*>fb
    cdef uint32_t n = len(fb)
    cdef long i
    cdef double t0, t1
    try:
        if out == NULL or offs == NULL or lens == NULL:
            raise MemoryError()
        if len(hb) < 10 or tso_segment(h, f, n, out, offs, lens) < 0:
            raise ValueError("not a valid TSO super-frame")
        with nogil:
            t0 = vx_now_ns()
            for i in range(count):
                tso_segment(h, f, n, out, offs, lens)
            t1 = vx_now_ns()
        return (t1 - t0) * 1e-9
    finally:
        free(out)
        free(offs)
        free(lens)


def bench_coalesce(frames, long count) -> float:
    """Seconds to run transmit() ``count`` times over ``frames`` (one vnet port's records):
    the coalescing decisions (checksum checks, run extension), the merged frames' headers
    and virtio headers — everything but the writev itself, which a port without an fd
    skips (counting the frames as dropped)."""
    cdef list keep = [bytes(f) for f in frames]
    cdef Switch sw = Switch("198.18.0.1")
    cdef sw_t *s = sw.s
    cdef long i
    cdef double t = 0.0, t0
    try:
        for i in range(count):
            queue_frames(sw, keep, -1)
            t0 = vx_now_ns()
            transmit(s)
            t += vx_now_ns() - t0
        return t * 1e-9
    finally:
        s.ports[0].net = -1
