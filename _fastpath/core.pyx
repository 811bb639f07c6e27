# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The forwarding core of ``dataplane/switch.py`` in C structures, plus burst I/O
(DESIGN.md §2, §3).

``Switch`` has exactly the reference's public API and results (actions, events, counters,
dumps, exceptions and their messages); the differential tests hold the two to ``==``. On top
it has the burst interface the VTEP drives (``set_port_fd``, ``rx_tap_burst``,
``rx_udp_burst``, ``set_offload`` ...), which ``dataplane.fastpath`` also provides for the
pure-Python core. What is different is underneath, in the parts under ``core/`` — each
mirrors a module of ``dataplane/``:

* ``table``: one open-addressing hash table (linear probing, backward-shift deletion) for
  the FDB of *all* networks (24-byte entries keyed on network slot + MAC, ``fdb``) and the
  neighbour tables (16-byte entries keyed on slot + IPv4, ``neigh``);
* ``forward`` (``switch.py``): the per-frame decisions, C only and ``nogil``; counters are C
  arrays, events fixed-size records in a bounded ring, turned into the reference's tuples
  only when ``events()`` is called; ``wire`` the outer headers it writes;
* ``rx``/``tx``: frames live in preallocated rx slots with ``HEADROOM`` bytes in front, so
  encapsulation (RFC 7348 §5) writes the VXLAN, UDP and IPv4 headers in place and a unicast
  encapsulation transmits the rx slot itself; head-end replication shares one payload;
* ``offload`` (``offload.py``): TSO segmentation in front of the core, TCP coalescing
  behind it; ``trace`` (``trace.py``'s records): a bounded ring, off unless someone watches.

The single-frame methods ``from_port``/``from_underlay`` copy the frame into rx slot 0, call
the function the burst path calls, and convert its output records into tuples.
Control-plane methods parse their arguments with the reference's own helpers so that errors
match. Hooks for tests and benchmarks live in ``_fastpath/testing.pyx``.
"""

from libc.stdint cimport int8_t, uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t
from libc.string cimport memcpy, memmove, memset, memcmp
from libc.stdlib cimport malloc, calloc, realloc, free, qsort
cdef extern from "<sched.h>" nogil:
    int sched_yield()
from cpython.bytes cimport PyBytes_FromStringAndSize

from _fastpath.includes.vxbits cimport (
    vx_likely, vx_unlikely, vx_mac48, vx_be32, vx_be16, vx_put_be16, vx_put_be32, vx_mix64,
    vx_csum_add, vx_csum_copy, vx_csum_fold, vx_csum_be, vx_flow_hash, vx_now_ns,
    vx_table_alloc, vx_table_free,
)
from _fastpath.includes.libc_net cimport (
    ssize_t, iovec, msghdr, cmsghdr, CMSG_FIRSTHDR, mmsghdr, sockaddr_in, recvmmsg, sendmmsg,
    read, readv, write,
    htonl, htons, ntohl, errno, AF_INET, MSG_DONTWAIT, MSG_TRUNC, MSG_CTRUNC,
    EAGAIN, EINTR, EBADF, EBADFD, EIO, ENODEV, ENXIO, ENOBUFS, EINVAL, EMSGSIZE,
)
from _fastpath.includes.vxsock cimport (
    vx_sockaddr, vx_sockaddr_set, vx_sockaddr_get, vx_gso_socket, vx_send_gso, vx_send_one, VX_RX_CMSG_SPACE, vx_rx_cmsgs, vx_writev,
    vx_close, VX_TX_CMSG_SPACE, vx_tos_ttl, vx_set_df,
)

import math
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address

from dataplane.errors import EntryExists, EntryNotFound, InvalidArgument, TableError, TableFull
from dataplane.fdb import (
    Remote, _dst, _mac, _state as _fdb_state, DEFAULT_MAX_LEARNED, DEFAULT_MAX_LEARNED_PER_PORT,
    FDB_STATES, endpoint_mac_message, is_group_mac,
    remote_mac_message,
)
from dataplane.neigh import _ip, _lladdr, _state as _neigh_state, NEIGH_STATES
from dataplane.neigh import sort_key as neigh_sort_key
from dataplane import switch as _reference
from dataplane.tunnel import DF_MODES, Outer
from dataplane.underlay import socket_kind
from dataplane.validate import VNI_MAX
from dataplane.wire import (
    DEFAULT_SRC_PORT_RANGE, DROP_REASONS, EVENT_COUNTERS, VXLAN_PORT, ip4, mac_str,
    vxlan_header,
)

MAX_VNI = VNI_MAX
PORT_COUNTERS = _reference.PORT_COUNTERS
AGE_STEP_SLOTS = _reference.AGE_STEP_SLOTS
EVENTS_MAX = EVENTS_MAX_C
BURST_MAX = 1024
TRACE_RING = TRACE_RING_C
TRACE_SNAP = TRACE_SNAP_C
OFFLOAD_COUNTERS = ("tso_frames", "tso_segments", "csum_completed", "bad_vnet", "gso_sends",
                    "gso_datagrams", "gso_fallbacks", "gro_buffers", "gro_datagrams",
                    "coalesced_frames", "coalesced_segments", "csum_bad", "csum_partial_rx",
                    "rx_superframes", "rx_superframe_segments")
VNET_ERRORS = ("short header", "bad csum offsets", "gso type mismatch", "unsupported gso type",
               "bad ip header", "bad tcp header", "zero gso size", "empty gso frame",
               "too many segments")

# The C enums in core/defs.pxd index these tuples: a change in dataplane/ must fail loudly
# here rather than miscount silently.
if (len(DROP_REASONS), len(EVENT_COUNTERS), len(OFFLOAD_COUNTERS), len(VNET_ERRORS)) \
        != (N_DROPS, N_EVC, N_OFFC, N_VE) \
        or DROP_REASONS[DR_UNKNOWN_PORT] != "unknown_port" \
        or OFFLOAD_COUNTERS[OC_RX_SUPERFRAME_SEGMENTS] != "rx_superframe_segments" \
        or EVENT_COUNTERS[EC_LEARN_LIMIT] != "learn_limit" \
        or EVENT_COUNTERS[EC_PKT_TOO_BIG] != "pkt_too_big" \
        or FDB_STATES != ("permanent", "static", "learned") \
        or NEIGH_STATES != ("permanent", "static", "reachable") \
        or (_reference.TRACE_RING, _reference.TRACE_SNAP) != (TRACE_RING_C, TRACE_SNAP_C):
    raise ImportError("_fastpath.core: dataplane's counter/state names and core/defs.pxd "
                      "disagree; update defs.pxd")

cdef tuple _EV_KINDS = ("l2miss", "l3miss", "learned", "moved", "aged", "learn_limit")
cdef tuple _TF_NAMES = ("learned", "moved", "fdb_full", "arp_consumed", "l3miss", "arp_local",
                        "proxy_reply", "l2miss", "csum_partial", "segmented", "learn_limit",
                        "nd_consumed", "nd_dad", "nd_local", "frag_needed", "pkt_too_big")
cdef dict _TF_CODES = {name: i for i, name in enumerate(_TF_NAMES)}
cdef uint64_t MAC_MASK = 0xFFFFFFFFFFFF
cdef bytes V4MAPPED_PREFIX = bytes(10) + b"\xff\xff"      # ::ffff:0:0/96 (RFC 4291 §2.5.5.2)


# -- conversions between Python arguments and C values ---------------------------------------

cdef inline str mac48_str(uint64_t m):
    return "%02x:%02x:%02x:%02x:%02x:%02x" % (
        (m >> 40) & 0xFF, (m >> 32) & 0xFF, (m >> 24) & 0xFF,
        (m >> 16) & 0xFF, (m >> 8) & 0xFF, m & 0xFF)


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
    """An underlay source address (IPv4 or IPv6); a malformed one is InvalidArgument, as in
    the reference."""
    return _reference.source_address(source)


include "core/table.pyx"
include "core/remote.pyx"
include "core/trace.pyx"
include "core/fdb.pyx"
include "core/neigh.pyx"
include "core/wire.pyx"
include "core/tunnel.pyx"
include "core/forward.pyx"
include "core/offload.pyx"
include "core/tx.pyx"
include "core/rx.pyx"


cdef class Switch:
    """The forwarding core in C structures; the API and results of dataplane.switch.Switch,
    and the burst interface of dataplane.fastpath.

    Extra keyword arguments: ``burst`` (rx/tx slots, default 64), ``dstport`` (outer UDP
    destination, default 4789), ``events_max`` (event ring bound, default 65536; events past
    it are counted in ``events_lost``). Not thread-safe; one per VTEP.
    """

    #: Offloads this core can use (dataplane.config.OFFLOADS); the pure-Python core has none.
    OFFLOADS = frozenset({"tap", "udp_gso", "udp_gro"})
    #: busy_poll() really polls (the pure-Python core's returns at once).
    BUSY_POLL = True

    def __cinit__(self, *args, **kwargs):
        self.s = <sw_t*>calloc(1, sizeof(sw_t))
        if self.s == NULL:
            raise MemoryError()
        tx_init(&self.s.tx)
        rem_init(&self.s.rem)
        self._networks = {}
        self._pynet = []
        self._pending = []
        self._ipcache = {}
        self._dumps = {}

    def __init__(self, local, *, src_port_range=DEFAULT_SRC_PORT_RANGE, strict=True,
                 allow=(), burst=64, dstport=VXLAN_PORT, events_max=EVENTS_MAX):
        cdef sw_t *s = self.s
        cdef uint32_t i, cap = 1
        locals_, self.src_port_range, self.allow = _reference.underlay_args(
            local, src_port_range, allow)
        self._set_locals(locals_)
        self.strict = strict
        if not 1 <= burst <= BURST_MAX:
            raise InvalidArgument(f"burst {burst} is not within 1-{BURST_MAX}")
        if not 1 <= dstport <= 65535:
            raise InvalidArgument(f"destination port {dstport} is not within 1-65535")
        if not 1 <= events_max <= 1 << 24:
            raise InvalidArgument(f"events_max {events_max} is not within 1-{1 << 24}")
        if s.rx.slots != NULL:
            raise RuntimeError("Switch.__init__ called twice")
        s.dport = <uint16_t>dstport
        while cap < <uint32_t>events_max:
            cap <<= 1
        s.ev.cap = cap
        s.ev.ring = <event_t*>malloc(cap * sizeof(event_t))
        s.out_cap = 4 * <uint32_t>burst
        s.out = <txrec*>malloc(s.out_cap * sizeof(txrec))
        s.nets_cap = 8
        s.nets = <net_t*>calloc(s.nets_cap, sizeof(net_t))
        s.ports_cap = 64
        s.ports = <port_t*>calloc(s.ports_cap, sizeof(port_t))
        if (rx_init(&s.rx, <uint32_t>burst) < 0 or s.ev.ring == NULL or s.out == NULL
                or s.nets == NULL or s.ports == NULL or s.tx.wv == NULL
                or fdb_init(&s.fdb) < 0 or tab_init(&s.nb, sizeof(nb_ent), NB_MIN_CAP) < 0):
            raise MemoryError()
        for i in range(s.ports_cap):
            s.ports[i].net = -1
            s.ports[i].fd = -1
        rebuild_vmap(s)

    def __dealloc__(self):
        cdef sw_t *s = self.s
        cdef uint32_t i
        if s == NULL:
            return
        if s.nets != NULL:
            for i in range(s.nets_cap):
                free(s.nets[i].ports)
        free(s.nets)
        free(s.vmap)
        free(s.ports)
        fdb_free(&s.fdb)
        rem_free(&s.rem)
        free(s.xbuf)
        tab_free(&s.nb)
        free(s.allow_net)
        free(s.allow_mask)
        free(s.ev.ring)
        free(s.out)
        trace_free(&s.tr)
        rx_free(&s.rx)
        tx_free(&s.tx)
        free(s)
        self.s = NULL

    # -- attributes (plain attributes in the reference: kept as given, mirrored into C) ----

    @property
    def local(self):
        """The primary underlay address (the IPv4 one if there is one), as the reference."""
        return self._locals.primary

    @property
    def locals(self):
        """The underlay addresses, one per family (dataplane.switch.Locals)."""
        return self._locals

    cdef _set_locals(self, object locals_):
        cdef sw_t *s = self.s
        cdef bytes b
        s.has4 = locals_.v4 is not None
        s.has6 = locals_.v6 is not None
        s.local = u32_addr(locals_.v4) if s.has4 else 0
        addr_v4mapped(s.local4m, s.local)
        b = locals_.v6.packed if s.has6 else bytes(16)
        memcpy(s.local6, <const char*>b, 16)
        self._locals = locals_
        gso_close_all(&s.tx)   # per-source-port sockets are bound to the old addresses

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
        cdef bytes net, mask
        nets = list(value)
        n = len(nets)
        free(s.allow_net)
        free(s.allow_mask)
        s.allow_net = <uint64_t*>malloc((2 * n + 2) * sizeof(uint64_t))
        s.allow_mask = <uint64_t*>malloc((2 * n + 2) * sizeof(uint64_t))
        s.n_allow = 0
        if s.allow_net == NULL or s.allow_mask == NULL:
            raise MemoryError()
        for i in range(n):
            a = nets[i]
            if a.version == 4:      # ::ffff:a.b.c.d/96+n
                net = V4MAPPED_PREFIX + a.network_address.packed
                mask = b"\xff" * 12 + a.netmask.packed
            else:
                net = a.network_address.packed
                mask = a.netmask.packed
            memcpy(&s.allow_net[2 * i], <const char*>net, 16)
            memcpy(&s.allow_mask[2 * i], <const char*>mask, 16)
        s.n_allow = n
        self._allow = value

    @property
    def burst(self) -> int:
        return self.s.rx.burst

    @property
    def dstport(self) -> int:
        return self.s.dport

    @property
    def events_lost(self) -> int:
        """Events dropped because the ring (``events_max``) was full when they happened."""
        return self.s.ev.lost

    # -- configuration ------------------------------------------------------------------------

    def add_network(self, vni, *, mtu=1450, proxy=True, learning=False, ageing=300.0,
                    maxaddress=0, max_learned=DEFAULT_MAX_LEARNED,
                    max_learned_per_port=DEFAULT_MAX_LEARNED_PER_PORT, ttl="auto", tos=0,
                    df="unset", flowlabel=0):
        cdef net_t *net
        t, q, d, lab = _reference.outer_rules(ttl, tos, df, flowlabel)
        net_api_add(self, vni, mtu, proxy, learning, ageing, maxaddress)
        net = &self.s.nets[<uint32_t>self._networks[vni]]
        net.max_learned = clamp64(max_learned)
        net.max_learned_port = clamp64(max_learned_per_port)
        net.ttl = t
        net.tos = q
        net.df = DF_MODES.index(d)
        net.label = lab

    def del_network(self, vni):
        net_api_del(self, vni)

    def add_port(self, port, vni, mac=None, now=0.0):
        """Attach local port ``port`` to network ``vni``; with ``mac``, a permanent FDB entry
        for the endpoint (what the bridge keeps for a port it knows the address of)."""
        port_api_add(self, port, vni, mac, now)

    def del_port(self, port):
        port_api_del(self, port)

    cdef int _net(self, object vni) except -1:
        slot = self._networks.get(vni)
        if slot is None:
            raise EntryNotFound(f"no network with VNI {vni}")
        return slot

    # -- tables (control plane) ---------------------------------------------------------------

    cdef object _remote(self, object vni, object dst, object dst_port, object dst_vni):
        return _reference.make_remote(dst, dst_port, dst_vni, self.s.dport,
                                      self._pynet[self._net(vni)][0], self._locals)

    def fdb_add(self, vni, mac, dst, state="permanent", now=0.0, *, dst_port=0, dst_vni=0):
        cdef uint32_t slot = self._net(vni)
        fdb_api_add(self, slot, mac, self._remote(vni, dst, dst_port, dst_vni), None, state,
                    now)

    def fdb_append(self, vni, mac, dst, state="permanent", now=0.0, *, dst_port=0,
                   dst_vni=0):
        cdef uint32_t slot = self._net(vni)
        fdb_api_append(self, slot, mac, self._remote(vni, dst, dst_port, dst_vni), state, now)

    def fdb_replace(self, vni, mac, dst, state="permanent", now=0.0, *, dst_port=0,
                    dst_vni=0):
        cdef uint32_t slot = self._net(vni)
        fdb_api_replace(self, slot, mac, self._remote(vni, dst, dst_port, dst_vni), state,
                        now)

    def fdb_del(self, vni, mac, dst=None, *, dst_port=0, dst_vni=0):
        cdef uint32_t slot = self._net(vni)
        fdb_api_del(self, slot, mac,
                    None if dst is None else self._remote(vni, dst, dst_port, dst_vni))

    def fdb_flush(self, vni, keep_permanent=True, *, dynamic_only=False):
        """``bridge fdb flush``: drop dynamic and static entries (all with
        ``keep_permanent=False``, only the learned ones with ``dynamic_only``)."""
        cdef uint64_t gone = fdb_purge(self.s, self._net(vni), -1, bool(keep_permanent),
                                       bool(dynamic_only))
        if gone == <uint64_t>-1:
            raise MemoryError()
        return gone

    def fdb_dump(self):
        """All entries, one row per (MAC, destination), ordered by VNI then MAC."""
        return fdb_api_dump(self)

    def neigh_add(self, vni, ip, lladdr, state="permanent"):
        """``ip neigh add``: NLM_F_CREATE|NLM_F_EXCL — fails when the address is there."""
        nb_api_add(self, self._net(vni), ip, lladdr, state)

    def neigh_replace(self, vni, ip, lladdr, state="permanent"):
        """``ip neigh replace``: create or overwrite."""
        cdef uint32_t slot = self._net(vni)
        nb_api_set(self, slot, _ip(ip), _lladdr(lladdr), _neigh_state(state))

    def neigh_del(self, vni, ip):
        nb_api_del(self, self._net(vni), ip)

    def neigh_flush(self, vni):
        cdef uint64_t n = nb_purge(self.s, self._net(vni))
        if n == <uint64_t>-1:
            raise MemoryError()
        return n

    def neigh_dump(self):
        return nb_api_dump(self)

    # -- the underlay path (PMTU signalling; remote.pxd says where it is kept) ---------------

    def set_path_mtu(self, dst, mtu):
        """The route MTU to underlay destination ``dst`` as the control plane measured it, 0
        to forget it (switch.Switch.set_path_mtu)."""
        addr, m = _reference.path_mtu_args(dst, mtu)
        cdef bytes a = addr16(addr)
        if rem_set_path_mtu(&self.s.rem, <const uint8_t*>a, <uint32_t>m) < 0:
            raise MemoryError()

    def path_mtus(self):
        """The route MTUs set with set_path_mtu, by address (IPv4 first, then IPv6)."""
        cdef table_t *t = &self.s.rem.pmtu
        cdef uint64_t i
        cdef pmtu_ent *e
        got = []
        for i in range(t.cap):
            if tab_key_at(t, i, sizeof(pmtu_ent)) != 0:
                e = <pmtu_ent*>(t.slots + i * sizeof(pmtu_ent))
                got.append((self._addr(e.addr), e.mtu))
        got.sort(key=lambda am: (am[0].version, am[0].packed))
        return dict(got)

    def remotes_made(self):
        """How many remote descriptors the pool has made so far: a number that changes
        when an FDB entry may point at an address it did not before, cheap to ask every
        second (pmtu.PathMtu compares it before it lists remote_vteps())."""
        return self.s.rem.made

    def remote_vteps(self):
        """Every underlay address an FDB entry points at, once each (IPv4 first, then IPv6):
        the remote pool's addresses (switch.Switch.remote_vteps)."""
        cdef remotes_t *p = &self.s.rem
        cdef uint32_t i
        seen = set()
        for i in range(p.cap):
            if p.r[i].used:
                seen.add(PyBytes_FromStringAndSize(<const char*>p.r[i].addr, 16))
        return sorted((self._addr(a) for a in seen), key=lambda a: (a.version, a.packed))

    # -- lookups and dumps in slices (switch.py says why) -------------------------------------

    def fdb_get(self, vni, mac):
        """The rows of one MAC (fdb_dump's shape), [] when there is no entry."""
        cdef uint32_t slot = self._net(vni)
        cdef fdb_ent *e = fdb_find(&self.s.fdb, fdb_key(slot, mac_bytes48(_mac(mac))))
        rows = []
        if e != NULL:
            ent_rows(self, self._pynet[slot][0], e, rows)
        return rows

    def neigh_get(self, vni, ip):
        cdef uint32_t slot = self._net(vni)
        cdef nb_ent *e = nb_lookup(self, slot, _ip(ip))
        return nb_row(self, self._pynet[slot][0], e) if e != NULL else None

    def fdb_dump_chunk(self, cursor=0, limit=1024):
        """fdb_dump a slice at a time, in table order (switch.Switch.fdb_dump_chunk)."""
        return table_chunk(self, &self.s.fdb.tab, cursor, limit, True)

    def neigh_dump_chunk(self, cursor=0, limit=1024):
        return table_chunk(self, &self.s.nb, cursor, limit, False)

    # -- observability ------------------------------------------------------------------------

    cdef object _addr(self, const uint8_t *addr):
        """IPv4Address / IPv6Address for 16 address bytes (IPv4-mapped: IPv4), cached
        (actions, dumps and traces repeat a few VTEPs)."""
        cdef bytes b = PyBytes_FromStringAndSize(<const char*>addr, 16)
        a = self._ipcache.get(b)
        if a is None:
            if len(self._ipcache) >= 4096:
                self._ipcache.clear()
            a = IPv4Address(b[12:]) if b[:12] == V4MAPPED_PREFIX else IPv6Address(b)
            self._ipcache[b] = a
        return a

    cdef object _loc(self, uint8_t kind, uint32_t port, const uint8_t *addr):
        if kind == LOC_PORT:
            return f"port:{<int32_t>port}"
        if kind == LOC_IP:
            return str(self._addr(addr))
        return ""

    cdef void _drain(self):
        """Move the C event ring into the Python list, in order."""
        cdef events_t *q = &self.s.ev
        cdef uint32_t i
        cdef event_t *ev
        for i in range(q.count):
            ev = &q.ring[(q.head + i) & (q.cap - 1)]
            if ev.kind == EV_L3MISS:
                key = str(self._addr(ev.ip))
            else:
                key = mac48_str(ev.mac)
            self._pending.append((_EV_KINDS[ev.kind], ev.vni, key,
                                  self._loc(ev.okind, ev.oport, ev.oaddr),
                                  self._loc(ev.nkind, ev.nport, ev.naddr)))
        q.head = (q.head + q.count) & (q.cap - 1)
        q.count = 0

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
        """Burst-I/O counters (not in the reference): write/send failures, EAGAIN drops,
        lost events."""
        cdef sw_t *s = self.s
        cdef uint32_t i
        cdef port_t *pt
        ports = {}
        for i in range(s.ports_cap):
            pt = &s.ports[i]
            if pt.net >= 0:
                ports[i] = {"tx_errors": pt.tx_errors, "tx_dropped": pt.tx_dropped}
        return {"events_lost": s.ev.lost,
                "underlay": {"rx_errors": s.ul_rx_errors, "tx_errors": s.ul_tx_errors,
                             "tx_dropped": s.ul_tx_dropped},
                "ports": ports}

    def age(self, now):
        """Expire learned entries everywhere; returns how many went. Reported per VNI in
        ascending order, and within a VNI in creation order (the reference's dict order)."""
        self._drain()       # packet events so far come before the ageing events
        return fdb_api_age(self, now)

    def age_step(self, double now, budget=AGE_STEP_SLOTS):
        """One step of the ageing sweep in slices (fdb.pyx fdb_api_age_step): expire the
        learned entries among the next ``budget`` FDB table slots (0 = all the rest);
        returns (how many went, whether the sweep is complete). The VTEP runs one sweep a
        second this way, a turn of the event loop between steps, so a large table never
        holds forwarding for the whole walk."""
        if budget < 0:
            raise InvalidArgument("age_step: budget must be >= 0")
        self._drain()
        return fdb_api_age_step(self, now, budget)

    # -- forwarding (single frame: tests and the control plane) ------------------------------

    cdef list _collect(self, uint32_t n, bint outer):
        """Output records -> the reference's action tuples. With ``outer``, underlay actions
        carry the complete IPv4/IPv6 datagram the burst path built instead of the UDP
        payload."""
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
            hdr = Outer(0 if r.dport == s.dport else r.dport, r.tos, r.ttl, bool(r.df),
                        r.label)
            dst = self._addr(r.dst)
            if not outer:
                data = PyBytes_FromStringAndSize(<char*>r.data, r.len)
                out.append(("vtep", dst, r.sport, data, hdr))
                continue
            outer_csum(s, r)
            if r.inline_hdr:
                data = (PyBytes_FromStringAndSize(<char*>r.hdr, r.hlen)
                        + PyBytes_FromStringAndSize(<char*>r.data, r.len))
            else:
                data = PyBytes_FromStringAndSize(<char*>(r.data - r.hlen), r.len + r.hlen)
            out.append(("vtep", dst, r.sport, data, hdr))
        return out

    def from_port(self, port, frame, now):
        """A frame a local endpoint sent (read from its TAP)."""
        cdef sw_t *s = self.s
        cdef bytes b = frame if type(frame) is bytes else bytes(frame)
        cdef size_t n = len(b)
        cdef int32_t p = -1
        cdef uint8_t *base = s.rx.slots
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
        s.cur_csum = CSUM_UNKNOWN
        core_from_port(s, p, tsrc, base + HEADROOM, <uint32_t>n, now, s.rx.scratch)
        try:
            return self._collect(s.n_out, False)
        finally:
            s.n_out = 0
            s.xoff = 0          # the copy arena is the outputs' (transmit() empties both)
            free(tmp)

    def from_underlay(self, source, datagram, now, *, tos=0, note=""):
        """A UDP payload received on the VXLAN port from ``source`` (the outer IPv4 or IPv6
        source) under outer TOS / traffic class ``tos``. ``note``: what the rx step in front of the core did to it
        (a trace flag name, e.g. "csum_partial"), recorded in the trace."""
        cdef sw_t *s = self.s
        cdef bytes src = addr16(_source(source))
        cdef bytes b = datagram if type(datagram) is bytes else bytes(datagram)
        cdef size_t n = len(b)
        cdef uint8_t *base = s.rx.slots
        cdef uint8_t *tmp = NULL
        if n > MAX_FRAME + VXLAN_HLEN:
            tmp = <uint8_t*>malloc(n + HEADROOM)
            if tmp == NULL:
                raise MemoryError()
            base = tmp
        memcpy(base + HEADROOM - VXLAN_HLEN, <const unsigned char*>b, n)
        s.n_out = 0
        s.cur_csum = CSUM_UNKNOWN
        s.rx_note = _TF_CODES[note] + 1 if note else 0
        core_from_underlay(s, <const uint8_t*>src, base + HEADROOM - VXLAN_HLEN,
                           <uint32_t>n, now, <uint8_t>tos)
        s.rx_note = 0
        try:
            return self._collect(s.n_out, False)
        finally:
            s.n_out = 0
            free(tmp)

    # -- trace (vxdp trace / capture) --------------------------------------------------------

    def set_trace(self, on):
        cdef bint want = True if on else False
        if want and trace_alloc(&self.s.tr) < 0:
            raise MemoryError()
        self.s.tr.on = want

    @property
    def trace_on(self) -> bool:
        return bool(self.s.tr.on)

    @property
    def trace_lost(self) -> int:
        """Records dropped because the ring (TRACE_RING) was full between two drains."""
        return self.s.tr.lost

    @trace_lost.setter
    def trace_lost(self, value):
        self.s.tr.lost = value

    def trace_drain(self):
        """Records since the last call, exactly as ``dataplane.switch.Switch.trace_drain``."""
        return trace_api_drain(self)

    # -- burst interface (dataplane.fastpath) ---------------------------------------------------

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
        if vnet_hdr_len and rx_seg_alloc(&s.rx) < 0:
            raise MemoryError()
        s.ports[p].fd = fd
        s.ports[p].gone = 0
        s.ports[p].vnet = <uint8_t>vnet_hdr_len

    def set_tx_socket(self, int fd, *, family=None):
        """Register the socket that outer datagrams of its address family are sent on with
        sendmmsg(); -1 unregisters (the family then says which). The fd stays owned by the
        caller. A raw IPPROTO_RAW socket (header included) gets the complete IP + UDP +
        VXLAN datagram built here (per-flow source port, RFC 7348 §5); a UDP socket (the
        no-CAP_NET_RAW fallback) gets the VXLAN payload only and the kernel adds IP/UDP
        from its bound port."""
        cdef bint raw = True
        cdef int f
        if fd >= 0:
            family, raw = socket_kind(fd)
        elif family not in (4, 6):
            raise InvalidArgument("unregistering a tx socket needs its family (4 or 6)")
        f = 1 if family == 6 else 0
        if (f == 1 and not self.s.has6) or (f == 0 and not self.s.has4):
            raise InvalidArgument(f"an IPv{family} socket, and this VTEP has no IPv{family} "
                                  f"underlay address")
        self.s.tx.fam[f].raw = raw
        self.s.tx.fam[f].fd = fd

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

    def rx_tap_burst(self, port, int fd, double now) -> int:
        """Read up to ``burst`` frames from the TAP ``fd`` of ``port`` (until EAGAIN),
        forward them and transmit the outputs. Returns the number of frames read; never
        raises for I/O errors (a dead fd marks the port in gone_ports())."""
        cdef int32_t p = -1
        if not port_id(port, &p):
            p = -1
        return tap_burst(self.s, p, fd, now)

    def rx_udp_burst(self, int sock_fd, double now) -> int:
        """recvmmsg() up to ``burst`` VXLAN datagrams from the UDP socket, forward them and
        transmit the outputs. Returns the number of datagrams received (0 on EAGAIN)."""
        return udp_burst(self.s, sock_fd, now)

    # -- readiness path: what the event loop calls, with no Python frame per burst ----------

    def set_readiness(self, hook, *, double busy_poll=0.0, double busy_limit=0.002,
                      sock_fds=()):
        """Set up tap_ready()/udp_ready(), the callbacks a VTEP registers with its event loop
        in place of Python functions: ``hook()`` (no arguments) is called after a burst only
        when there is something for Python to do (events, trace records, a TAP gone);
        ``busy_poll`` > 0 keeps polling every TAP and the ``sock_fds`` (one per family) after
        each burst until nothing arrived for that many seconds, ``busy_limit`` at most."""
        cdef rx_t *r = &self.s.rx
        fds = list(sock_fds)
        if len(fds) > 2:
            raise InvalidArgument("at most one receive socket per address family")
        self._attention = hook
        r.busy_idle = busy_poll if busy_poll > 0 else 0.0
        r.busy_limit = busy_limit
        r.busy_fd[0] = fds[0] if len(fds) > 0 else -1
        r.busy_fd[1] = fds[1] if len(fds) > 1 else -1

    def tap_ready(self, int port, int fd):
        """The TAP ``fd`` of ``port`` is readable: rx_tap_burst at the current monotonic
        time, then busy polling and the hook (set_readiness) as needed."""
        tap_burst(self.s, port, fd, mono_now())
        self._after_ready()

    def udp_ready(self, int fd):
        """The underlay socket ``fd`` is readable: rx_udp_burst, as tap_ready."""
        udp_burst(self.s, fd, mono_now())
        self._after_ready()

    cdef int _after_ready(self) except -1:
        cdef sw_t *s = self.s
        if s.rx.busy_idle > 0:
            poll_all(s, s.rx.busy_fd[0], s.rx.busy_fd[1], s.rx.busy_idle, s.rx.busy_limit)
        if self._attention is not None and (s.ev.count or self._pending or s.tr.on
                                            or ports_gone(s)):
            self._attention()
        return 0

    def set_offload(self, *, udp_gso=False, udp_gro=False, tap_coalesce=False):
        """Switch the offloads on or off (dataplane/offload.py says what each does; the
        caller has probed that the kernel supports them):

        * ``udp_gso``: runs of equal-sized datagrams to one (destination, source port) go out
          with one sendmsg(UDP_SEGMENT) on a UDP socket bound to (local, source port),
          opened on first use (at most GSO_SOCK_MAX; the raw socket otherwise);
        * ``udp_gro``: the receive socket has UDP_GRO on; rx_udp_burst cuts what it glued
          together at the cmsg's segment size;
        * ``tap_coalesce``: consecutive segments of a TCP flow to a vnet TAP are written as
          one GSO_TCPV4 frame."""
        cdef sw_t *s = self.s
        if udp_gso and ((s.has4 and gso_tables(&s.tx.fam[0]) < 0)
                        or (s.has6 and gso_tables(&s.tx.fam[1]) < 0)):
            raise MemoryError()
        if not udp_gso:
            gso_close_all(&s.tx)
        s.tx.udp_gso = 1 if udp_gso else 0
        s.rx.udp_gro = 1 if udp_gro else 0
        s.tx.tap_coalesce = 1 if tap_coalesce else 0

    def offload_state(self) -> dict:
        """What is on now: udp_gso turns itself off when the kernel refuses a GSO send with
        EIO (the route's device cannot checksum, udp_send_skb)."""
        return {"udp_gso": bool(self.s.tx.udp_gso), "udp_gro": bool(self.s.rx.udp_gro),
                "tap_coalesce": bool(self.s.tx.tap_coalesce)}

    def offload_counters(self) -> dict:
        cdef sw_t *s = self.s
        cdef int i
        d = {OFFLOAD_COUNTERS[i]: s.offc[i] for i in range(N_OFFC)}
        d["gso_sockets"] = s.tx.fam[0].gso_nsock + s.tx.fam[1].gso_nsock
        return d

    def close(self):
        """Nothing to close: the fds registered here stay their owners' (the burst
        interface's close() is for a core that keeps duplicates)."""

    def offload_gc(self):
        """Close the per-source-port GSO sockets unused for GSO_IDLE_TICKS calls (call it
        once a second) and forget failed binds after as long."""
        gso_gc(&self.s.tx)
