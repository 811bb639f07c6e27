"""The forwarding core, readable pure-Python reference (DESIGN.md §2). I/O-free: frames in,
actions out, ``now`` passed in. ``_fastpath.core.Switch`` is the same core in C structures and
must produce identical actions, bytes, events and counters (the differential tests hold them to
it).

One ``Switch`` is one VTEP: it serves several networks (one VNI each) and owns the local ports
(endpoint TAPs, identified by small integers). Per network it keeps an FDB (``fdb.Fdb``) and a
neighbour table (``neigh.NeighTable``). It stands for Docker's ``br0`` + ``vxlan0`` pair: the
bridge part floods/learns among local ports, the "vxlan port" part encapsulates, proxies ARP and
replicates to the flood list.

Actions (plain tuples, so both implementations can be compared with ``==``)::

    ("port", port_id, frame)            write ``frame`` to local port ``port_id``
    ("vtep", dst, sport, payload, outer) send UDP ``sport`` → ``dst`` (IPv4 or IPv6),
                                         ``payload`` = VXLAN header + inner frame; ``outer``
                                         (tunnel.Outer): destination port, TOS/traffic
                                         class, TTL/hop limit, DF, flow label (the caller
                                         adds the IP and UDP headers)

Order of actions: local deliveries in ascending port id, then what the "vxlan port" does
(encapsulations in remote-list order, or the proxy's ARP reply to the ingress port). An
encapsulation the path to its remote is too small for becomes, in its place, the ICMP
fragmentation-needed / Packet Too Big the kernel's vxlan writes back to the ingress port
(``set_path_mtu``: PMTU signalling for bridged tunnels, skb_tunnel_check_pmtu).

Events (drained with ``events()``), tuples ``(kind, vni, key, old, new)``; locations are
``"port:N"`` or a VTEP address:

    ("l2miss", vni, mac, "", "")         unicast with no FDB entry and no flood list
    ("l3miss", vni, ip, "", "")          ARP request or Neighbor Solicitation for an address
                                         with no neighbour entry
    ("learned", vni, mac, "", loc)       new learned entry
    ("moved", vni, mac, old_loc, loc)    learned entry migrated
    ("aged", vni, mac, loc, "")          learned entry expired
    ("learn_limit", vni, mac, "", loc)   a port's (or its network's) learned MACs are full:
                                         once per port until it is below its bound again
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Union

from dataplane.errors import EntryExists, EntryNotFound, InvalidArgument
from dataplane.tunnel import (DF_MODES, LABEL_INHERIT, LABEL_MAX, TOS_INHERIT, TTL_AUTO,
                              TTL_INHERIT, Outer, ecn_decap, outer_fields, outer_label,
                              pmtu_exceeded, pmtu_limit, pmtud_icmp)
from dataplane.validate import VNI_MAX, IPAddress, Locals, ipaddr
from dataplane.validate import parse_locals as _parse_locals
from dataplane.fdb import (DEFAULT_MAX_LEARNED, DEFAULT_MAX_LEARNED_PER_PORT, Fdb, FdbEntry,
                           Remote, remote_mac_message)
from dataplane.fdb import _dst as _fdb_dst
from dataplane.neigh import NeighEntry, NeighTable
from dataplane.neigh import _ip as neigh_ip
from dataplane.fdb import _mac as parse_mac
from dataplane.wire import (
    VXLAN_PORT,
    ARPOP_REQUEST,
    Arp,
    NeighSolicit,
    DEFAULT_SRC_PORT_RANGE,
    DROP_REASONS,
    ETH_HLEN,
    EVENT_COUNTERS,
    ZERO_MAC,
    arp_reply,
    is_multicast_mac,
    is_ns,
    is_valid_src_mac,
    mac_str,
    na_reply,
    parse_arp,
    parse_ns,
    parse_vxlan,
    reserved_bits_set,
    src_port,
    vxlan_header,
)

PortAction = tuple[str, int, bytes]
VtepAction = tuple[str, IPAddress, int, bytes, Outer]
Action = Union[PortAction, VtepAction]
Event = tuple[str, int, str, str, str]
TraceRecord = tuple[float, str, int, int, bytes, str, tuple[tuple[object, ...], ...],
                    tuple[str, ...]]

TRACE_RING = 4096      # records held between two drains; more are counted in trace_lost
TRACE_SNAP = 2048      # bytes of each frame/datagram kept (a 1500-MTU frame fits whole)

DUMP_CHUNK = 1024     # entries per fdb/neigh dump slice: well under a millisecond of work
DUMPS_KEPT = 16      # dumps in slices open at once (older ones are forgotten)
# FDB table slots walked per ageing step in the compiled core: 64k slots of 24 bytes are
# 1.5 MB, a few hundred microseconds; a sweep of a 1M-entry table (2M slots) takes 32 steps.
AGE_STEP_SLOTS = 65536
MAX_VNI = VNI_MAX          # RFC 7348 §5: 24 bits (VNI 0 is never served)
_LOOPBACK6 = IPv6Address("::1").packed
PORT_COUNTERS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")


@dataclass
class Network:
    vni: int
    mtu: int
    proxy: bool
    learning: bool
    fdb: Fdb
    neigh: NeighTable
    ports: list[int] = field(default_factory=list)   # ascending
    header: bytes = b""                               # prebuilt VXLAN header for this VNI
    ttl: int = TTL_AUTO          # outer header rules (dataplane.tunnel): TTL_AUTO, 1..255,
    tos: int = 0                 # TTL_INHERIT; 0..255 or TOS_INHERIT; one of DF_MODES;
    df: str = "unset"            # 0..LABEL_MAX or LABEL_INHERIT (an IPv6 underlay's label)
    label: int = 0


def outer_rules(ttl: int | str, tos: int | str, df: str, flowlabel: int | str = 0
                ) -> tuple[int, int, str, int]:
    """A network's ``ttl`` ("auto", 0 = auto, 1..255, "inherit"), ``tos`` (0..255,
    "inherit"), ``df`` (DF_MODES) and ``flowlabel`` (0..0xFFFFF, "inherit") as
    tunnel.outer_fields / outer_label take them."""
    if ttl == "inherit":
        t = TTL_INHERIT
    elif ttl == "auto":
        t = TTL_AUTO
    elif isinstance(ttl, int) and not isinstance(ttl, bool) and 0 <= ttl <= 255:
        t = ttl
    else:
        raise InvalidArgument(f"ttl {ttl!r} is not auto, inherit or 1..255")
    if tos == "inherit":
        q = TOS_INHERIT
    elif isinstance(tos, int) and not isinstance(tos, bool) and 0 <= tos <= 255:
        q = tos
    else:
        raise InvalidArgument(f"tos {tos!r} is not inherit or 0..255")
    if df not in DF_MODES:
        raise InvalidArgument(f"df {df!r} is not one of {', '.join(DF_MODES)}")
    if flowlabel == "inherit":
        lab = LABEL_INHERIT
    elif isinstance(flowlabel, int) and not isinstance(flowlabel, bool) \
            and 0 <= flowlabel <= LABEL_MAX:
        lab = flowlabel
    else:
        raise InvalidArgument(f"flowlabel {flowlabel!r} is not inherit or 0..{LABEL_MAX:#x}")
    return t, q, df, lab


@dataclass
class PortCounters:
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0


def _frame_checks(frame: bytes, net: Network) -> tuple[str, Arp | NeighSolicit | None]:
    """The drop reason for an inner frame the bridge would refuse ("" when it is fine), and
    its ARP body if it is ARP, its solicitation if it is an NS the proxy would intercept:
    length (ETH_HLEN..MTU + 14), a usable source MAC (is_valid_ether_addr), a well-formed
    ARP, an NS a receiving host would accept (wire.parse_ns)."""
    if len(frame) < ETH_HLEN:
        return "runt", None
    if len(frame) > net.mtu + ETH_HLEN:
        return "oversize", None
    if not is_valid_src_mac(frame[6:12]):
        return "bad_src_mac", None
    if frame[12] == 0x08 and frame[13] == 0x06:
        arp = parse_arp(frame)
        return ("", arp) if arp is not None else ("bad_arp", None)
    if is_ns(frame):
        ns = parse_ns(frame)
        return ("", ns) if ns is not None else ("bad_nd", None)
    return "", None


def _loc(e: FdbEntry) -> str:
    return e.location()


def parse_locals(local: IPAddress | str | Locals | Sequence[IPAddress | str]) -> Locals:
    """``[vtep] local``: one address, or a list with one per family (IPv4, IPv6)."""
    try:
        return _parse_locals(local)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


def make_remote(dst: IPAddress | str, dst_port: int, dst_vni: int, dstport: int,
                net_vni: int, local: Locals | None = None) -> Remote:
    """``dst [port P] [vni N]`` as a Remote: P and N as the kernel keeps them per entry, the
    VTEP's own port (``dstport``) and the network's VNI stored as 0 (``vxlan_fdb_info``
    shows neither). With ``local``, a remote of a family the VTEP has no address in is
    refused (a kernel vxlan device is of one family: vxlan_fdb_parse's EAFNOSUPPORT). Both
    cores take their arguments through here."""
    if not isinstance(dst_port, int) or isinstance(dst_port, bool) \
            or not 0 <= dst_port <= 65535:
        raise InvalidArgument(f"port {dst_port!r} is not within 1-65535")
    if not isinstance(dst_vni, int) or isinstance(dst_vni, bool) \
            or not 0 <= dst_vni <= MAX_VNI:
        raise InvalidArgument(f"remote VNI {dst_vni!r} is not within 1-{MAX_VNI}")
    addr = _fdb_dst(dst).addr
    if local is not None and local.of(addr.version) is None:
        raise InvalidArgument(f"{addr} is an IPv{addr.version} VTEP and this VTEP has no "
                              f"IPv{addr.version} underlay address (local = {local})")
    return Remote(addr, 0 if dst_port == dstport else dst_port,
                  0 if dst_vni == net_vni else dst_vni)


def underlay_args(local: IPAddress | str | Locals | Sequence[IPAddress | str],
                  src_port_range: tuple[int, int],
                  allow: Sequence[IPv4Network | IPv6Network | str]
                  ) -> tuple[Locals, tuple[int, int], tuple[IPv4Network | IPv6Network, ...]]:
    """A switch's underlay arguments checked (both cores take them through here)."""
    locals_ = parse_locals(local)
    try:
        nets = tuple(IPv6Network(a) if ":" in str(a) else IPv4Network(a) for a in allow)
    except ValueError as e:  # AddressValueError/NetmaskValueError are ValueErrors
        raise InvalidArgument(str(e)) from None
    lo, hi = src_port_range
    if not 1 <= lo <= hi <= 65535:
        raise InvalidArgument(f"source port range {lo}-{hi} is not within 1-65535")
    return locals_, (lo, hi), nets


MTU_MAX = 65535     # a route MTU (IP_MTU, IPV6_MTU) never exceeds IP_MAX_MTU


def path_mtu_args(dst: IPAddress | str, mtu: int) -> tuple[IPAddress, int]:
    """``set_path_mtu``'s arguments checked (both cores take them through here)."""
    addr = source_address(dst)
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 0 <= mtu <= MTU_MAX:
        raise InvalidArgument(f"path MTU {mtu!r} is not within 0-{MTU_MAX}")
    return addr, mtu


def _addr_order(a: IPAddress) -> tuple[int, bytes]:
    return a.version, a.packed


def source_address(source: IPAddress | str) -> IPAddress:
    """An underlay source address (IPv4 or IPv6); malformed is InvalidArgument."""
    try:
        return ipaddr(source)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


class Switch:
    """The pure-Python forwarding core. Not thread-safe; one per VTEP."""

    def __init__(self, local: IPAddress | str | Locals | Sequence[IPAddress | str], *,
                 src_port_range: tuple[int, int] = DEFAULT_SRC_PORT_RANGE,
                 strict: bool = True,
                 allow: Sequence[IPv4Network | IPv6Network | str] = (),
                 dstport: int = VXLAN_PORT) -> None:
        self.locals, self.src_port_range, self.allow = underlay_args(local, src_port_range,
                                                                     allow)
        self.local = self.locals.primary
        if not 1 <= dstport <= 65535:
            raise InvalidArgument(f"destination port {dstport} is not within 1-65535")
        self.dstport = dstport
        self.strict = strict
        self._networks: dict[int, Network] = {}
        self._port_vni: dict[int, int] = {}
        self._port_counters: dict[int, PortCounters] = {}
        self._underlay = PortCounters()
        self._drops = dict.fromkeys(DROP_REASONS, 0)
        self._counters = dict.fromkeys(EVENT_COUNTERS, 0)
        self._events: list[Event] = []
        self._dumps: dict[int, tuple[str, list[tuple[int, Any]], list[int]]] = {}
        self._dump_token = 0
        # Route MTU to each underlay destination the control plane measured (the kernel's
        # dst_mtu(), which vxlan_xmit_one reads per packet): PMTU signalling. Not there: no
        # check, the datagram is sent whatever its size.
        self._pmtu: dict[IPAddress, int] = {}
        self._remotes_made = 0     # remotes_made(): grows when an entry may name a new VTEP
        # Trace (vxdp trace/capture): off by default and then free; when on, one record per
        # frame or datagram into a bounded ring whose overflow is counted, never waited on.
        self._trace_on = False
        self._trace: list[TraceRecord] = []
        self._flags: list[str] = []
        self._reason = ""
        self.trace_lost = 0

    # -- configuration ------------------------------------------------------------------------

    def add_network(self, vni: int, *, mtu: int = 1450, proxy: bool = True,
                    learning: bool = False, ageing: float = 300.0, maxaddress: int = 0,
                    max_learned: int = DEFAULT_MAX_LEARNED,
                    max_learned_per_port: int = DEFAULT_MAX_LEARNED_PER_PORT,
                    ttl: int | str = "auto", tos: int | str = 0, df: str = "unset",
                    flowlabel: int | str = 0) -> None:
        if not 0 < vni <= MAX_VNI:
            raise InvalidArgument(f"VNI {vni} is not within 1-{MAX_VNI}")
        if vni in self._networks:
            raise InvalidArgument(f"VNI {vni} is already served")
        t, q, d, lab = outer_rules(ttl, tos, df, flowlabel)
        fdb = Fdb(vni, maxaddress, ageing, max_learned=max_learned,
                  max_learned_per_port=max_learned_per_port)
        self._networks[vni] = Network(vni, mtu, proxy, learning, fdb, NeighTable(vni), [],
                                      vxlan_header(vni), t, q, d, lab)

    def del_network(self, vni: int) -> None:
        net = self._net(vni)
        for p in list(net.ports):
            self.del_port(p)
        del self._networks[vni]

    def add_port(self, port: int, vni: int, mac: str | bytes | None = None,
                 now: float = 0.0) -> None:
        """Attach local port ``port`` to network ``vni``; with ``mac``, a permanent FDB entry
        for the endpoint (what the bridge keeps for a port it knows the address of)."""
        net = self._net(vni)
        if port < 0 or port in self._port_vni:
            raise InvalidArgument(f"port {port} is already attached or invalid")
        if mac is not None:
            # A MAC learned here before (the container lived on another host, or sent from
            # another port) gives way to the endpoint's permanent entry.
            e = net.fdb.lookup(parse_mac(mac))
            if e is not None and e.state == "learned":
                net.fdb.delete(e.mac)
            elif e is not None and e.port is None:
                raise EntryExists(remote_mac_message(e.mac, vni, f"dst {e.remotes[0]}",
                                                     e.state))
            net.fdb.add(mac, port=port, state="permanent", now=now)
        self._port_vni[port] = vni
        self._port_counters[port] = PortCounters()
        net.ports.append(port)
        net.ports.sort()

    def del_port(self, port: int) -> None:
        vni = self._port_vni.pop(port, None)
        if vni is None:
            raise EntryNotFound(f"no port {port}")
        net = self._networks[vni]
        net.ports.remove(port)
        net.fdb.remove_port(port)
        del self._port_counters[port]

    def _net(self, vni: int) -> Network:
        net = self._networks.get(vni)
        if net is None:
            raise EntryNotFound(f"no network with VNI {vni}")
        return net

    # -- tables (control plane) ---------------------------------------------------------------

    def _remote(self, net: Network, dst: IPAddress | str, dst_port: int,
                dst_vni: int) -> Remote:
        self._remotes_made += 1
        return make_remote(dst, dst_port, dst_vni, self.dstport, net.vni, self.locals)

    def fdb_add(self, vni: int, mac: str | bytes, dst: IPAddress | str,
                state: str = "permanent", now: float = 0.0, *, dst_port: int = 0,
                dst_vni: int = 0) -> None:
        net = self._net(vni)
        net.fdb.add(mac, dst=self._remote(net, dst, dst_port, dst_vni), state=state, now=now)

    def fdb_append(self, vni: int, mac: str | bytes, dst: IPAddress | str,
                   state: str = "permanent", now: float = 0.0, *, dst_port: int = 0,
                   dst_vni: int = 0) -> None:
        net = self._net(vni)
        net.fdb.append(mac, self._remote(net, dst, dst_port, dst_vni), state=state, now=now)

    def fdb_replace(self, vni: int, mac: str | bytes, dst: IPAddress | str,
                    state: str = "permanent", now: float = 0.0, *, dst_port: int = 0,
                    dst_vni: int = 0) -> None:
        net = self._net(vni)
        net.fdb.replace(mac, dst=self._remote(net, dst, dst_port, dst_vni), state=state,
                        now=now)

    def fdb_del(self, vni: int, mac: str | bytes, dst: IPAddress | str | None = None, *,
                dst_port: int = 0, dst_vni: int = 0) -> None:
        net = self._net(vni)
        net.fdb.delete(mac, None if dst is None else self._remote(net, dst, dst_port, dst_vni))

    def fdb_flush(self, vni: int, keep_permanent: bool = True, *,
                  dynamic_only: bool = False) -> int:
        """``bridge fdb flush``: drop dynamic and static entries (all of them with
        ``keep_permanent=False``; only the learned ones with ``dynamic_only``)."""
        return self._net(vni).fdb.flush(keep_permanent=keep_permanent,
                                        dynamic_only=dynamic_only)

    def fdb_dump(self) -> list[dict[str, object]]:
        """All entries, one row per (MAC, destination), ordered by VNI then MAC."""
        return [row for vni in sorted(self._networks) for row in self._networks[vni].fdb.rows()]

    def neigh_add(self, vni: int, ip: IPv4Address | str, lladdr: str | bytes,
                  state: str = "permanent") -> None:
        self._net(vni).neigh.add(ip, lladdr, state)

    def neigh_replace(self, vni: int, ip: IPv4Address | str, lladdr: str | bytes,
                      state: str = "permanent") -> None:
        self._net(vni).neigh.replace(ip, lladdr, state)

    def neigh_del(self, vni: int, ip: IPv4Address | str) -> None:
        self._net(vni).neigh.delete(ip)

    def neigh_flush(self, vni: int) -> int:
        return self._net(vni).neigh.flush()

    def neigh_dump(self) -> list[dict[str, object]]:
        return [e.as_dict(vni) for vni in sorted(self._networks) for e in self._networks[vni].neigh]

    # -- the underlay path (PMTU signalling) --------------------------------------------------

    def set_path_mtu(self, dst: IPAddress | str, mtu: int) -> None:
        """The route MTU to underlay destination ``dst`` (what ``getsockopt(IP_MTU)`` reports
        for it, PMTU discovery's findings included), as the control plane last measured it;
        0 forgets it. An inner packet longer than it allows (tunnel.pmtu_limit) to a remote
        at ``dst`` is answered with an ICMP instead of being sent, when the kernel's vxlan
        would answer it (tunnel.pmtud_icmp)."""
        addr, mtu = path_mtu_args(dst, mtu)
        if mtu:
            self._pmtu[addr] = mtu
        else:
            self._pmtu.pop(addr, None)

    def path_mtus(self) -> dict[IPAddress, int]:
        """The route MTUs set with ``set_path_mtu``, by address (IPv4 first, then IPv6)."""
        return {a: self._pmtu[a] for a in sorted(self._pmtu, key=_addr_order)}

    def remotes_made(self) -> int:
        """A number that grows whenever an FDB entry may have come to point at an address it
        did not before (fdb add/append/replace, learning): cheap to compare every second
        before listing :meth:`remote_vteps`, which walks every entry. The compiled core counts
        the remote descriptors its pool made; the two numbers differ, only their changes
        matter."""
        return self._remotes_made

    def remote_vteps(self) -> list[IPAddress]:
        """Every underlay address an FDB entry points at, once each (IPv4 first, then IPv6):
        what the control plane measures the path MTU to."""
        addrs = {r.addr for net in self._networks.values()
                 for e in net.fdb._entries.values() for r in e.remotes}
        return sorted(addrs, key=_addr_order)

    # -- lookups and dumps in slices: what a reader may ask of a live table -------------------

    def fdb_get(self, vni: int, mac: str | bytes) -> list[dict[str, object]]:
        """The rows of one MAC (``fdb_dump``'s shape), [] when there is no entry."""
        e = self._net(vni).fdb.lookup(parse_mac(mac))
        return e.rows(vni) if e is not None else []

    def neigh_get(self, vni: int, ip: IPv4Address | str) -> dict[str, object] | None:
        n = self._net(vni).neigh.lookup(neigh_ip(ip))
        return n.as_dict(vni) if n is not None else None

    def fdb_dump_chunk(self, cursor: int = 0, limit: int = DUMP_CHUNK
                       ) -> tuple[list[dict[str, object]], int]:
        """``fdb_dump`` a slice at a time, for readers that must not hold the loop: the rows
        of at most ``limit`` entries and the cursor to go on with (0 starts a dump, -1 says
        it is over; a slice may have no rows yet). Order is the table's, not sorted. Entries
        present throughout the dump are in it once; one added or removed meanwhile may be
        in it or not."""
        return self._dump_chunk("fdb", cursor, limit)

    def neigh_dump_chunk(self, cursor: int = 0, limit: int = DUMP_CHUNK
                         ) -> tuple[list[dict[str, object]], int]:
        """``neigh_dump`` a slice at a time (see fdb_dump_chunk)."""
        return self._dump_chunk("neigh", cursor, limit)

    def _dump_chunk(self, table: str, cursor: int, limit: int
                    ) -> tuple[list[dict[str, object]], int]:
        # The keys are taken once per dump (a dict copy each, C calls), the rows made a slice
        # at a time from what is still there; the cursor names the dump.
        if cursor == 0:
            self._dump_token += 1
            cursor = self._dump_token
            self._dumps[cursor] = (table, [(vni, key) for vni in sorted(self._networks)
                                           for key in list(getattr(self._networks[vni],
                                                                   table)._entries)], [0])
            while len(self._dumps) > DUMPS_KEPT:
                del self._dumps[min(self._dumps)]
        dump = self._dumps.get(cursor)
        if dump is None or dump[0] != table:
            raise InvalidArgument(f"dump cursor {cursor} is not (or no longer) valid")
        _, keys, at = dump
        rows: list[dict[str, object]] = []
        while at[0] < len(keys) and len(rows) < limit:
            vni, key = keys[at[0]]
            at[0] += 1
            net = self._networks.get(vni)
            if net is None:
                continue
            if table == "fdb":
                e = net.fdb.lookup(key)
                rows += e.rows(vni) if e is not None else []
            else:
                n = net.neigh.lookup(key)
                rows += [n.as_dict(vni)] if n is not None else []
        if at[0] >= len(keys):
            del self._dumps[cursor]
            return rows, -1
        return rows, cursor

    # -- observability ------------------------------------------------------------------------

    def events(self) -> list[Event]:
        """Drain the events raised since the last call."""
        ev, self._events = self._events, []
        return ev

    def counters(self) -> dict[str, object]:
        return {
            "drops": dict(self._drops),
            "counters": dict(self._counters),
            "underlay": vars(self._underlay).copy(),
            "ports": {p: vars(c).copy() for p, c in sorted(self._port_counters.items())},
        }

    def age(self, now: float) -> int:
        """Expire learned entries everywhere; returns how many went."""
        n = 0
        for vni in sorted(self._networks):
            for e in self._networks[vni].fdb.age(now):
                self._counters["aged"] += 1
                self._events.append(("aged", vni, mac_str(e.mac), _loc(e), ""))
                n += 1
        return n

    def age_step(self, now: float, budget: int = AGE_STEP_SLOTS) -> tuple[int, bool]:
        """One step of the ageing sweep in slices: (how many went, whether the sweep is
        complete). The compiled core walks ``budget`` table slots per step so that a large
        table never holds the event loop for a whole sweep; this reference has no slots and
        sweeps everything in one step. A complete sweep expires what :meth:`age` would; the
        compiled core orders the ``aged`` events within each step, not across the sweep."""
        if budget < 0:
            raise InvalidArgument("age_step: budget must be >= 0")
        return self.age(now), True

    # -- forwarding ---------------------------------------------------------------------------

    def _drop(self, reason: str) -> list[Action]:
        self._drops[reason] += 1
        self._reason = reason
        return []

    def _flag(self, name: str) -> None:
        if self._trace_on:
            self._flags.append(name)

    # -- trace --------------------------------------------------------------------------------

    def set_trace(self, on: bool) -> None:
        self._trace_on = bool(on)

    @property
    def trace_on(self) -> bool:
        return self._trace_on

    def trace_drain(self) -> list[TraceRecord]:
        """Records since the last call: ``(now, source, vni, length, data, verdict, outputs,
        flags)`` — source ``"port:N"`` or the VTEP address; ``data`` the frame (from a port)
        or the UDP payload (from the underlay), cut at TRACE_SNAP bytes; verdict the drop
        reason or ""; outputs ``("port", N)`` / ``("vtep", addr, sport)``; flags the
        decisions that leave no output (proxy_reply, l3miss, l2miss, learned, moved,
        arp_consumed, arp_local, nd_consumed, nd_dad, nd_local, fdb_full, learn_limit;
        frag_needed and pkt_too_big, once each, when an output is a PMTU reply to the
        ingress port; csum_partial and segmented from the rx step)."""
        recs, self._trace = self._trace, []
        return recs

    def _record(self, now: float, source: str, vni: int, data: bytes,
                out: list[Action]) -> None:
        if len(self._trace) >= TRACE_RING:
            self.trace_lost += 1
            return
        outputs = tuple(("port", a[1]) if a[0] == "port" else ("vtep", str(a[1]), a[2])
                        for a in out)
        self._trace.append((now, source, vni, len(data), bytes(data[:TRACE_SNAP]),
                            self._reason, outputs, tuple(self._flags)))

    def _to_port(self, out: list[Action], port: int, frame: bytes) -> None:
        c = self._port_counters[port]
        c.tx_packets += 1
        c.tx_bytes += len(frame)
        out.append(("port", port, frame))

    def _to_vtep(self, out: list[Action], dst: IPAddress, sport: int, payload: bytes,
                 outer: Outer) -> None:
        self._underlay.tx_packets += 1
        self._underlay.tx_bytes += len(payload)
        out.append(("vtep", dst, sport, payload, outer))

    def from_port(self, port: int, frame: bytes, now: float) -> list[Action]:
        """A frame a local endpoint sent (read from its TAP)."""
        if not self._trace_on:
            return self._from_port(port, frame, now)
        self._reason, self._flags = "", []
        out = self._from_port(port, frame, now)
        self._record(now, f"port:{port}", self._port_vni.get(port, -1), frame, out)
        return out

    def _from_port(self, port: int, frame: bytes, now: float) -> list[Action]:
        vni = self._port_vni.get(port)
        if vni is None:
            return self._drop("unknown_port")
        net = self._networks[vni]
        c = self._port_counters[port]
        c.rx_packets += 1
        c.rx_bytes += len(frame)
        bad, parsed = _frame_checks(frame, net)
        if bad:
            return self._drop(bad)
        dst, src = frame[0:6], frame[6:12]

        # Bridge learning: source MAC → ingress port (br_fdb_update).
        result, old = net.fdb.learn(src, now, port=port)
        self._note_learning(net, src, result, old, f"port:{port}", port)

        out: list[Action] = []
        # Bridge part: which local ports, and does the frame reach the "vxlan port"?
        to_vxlan = True
        if is_multicast_mac(dst):
            local = net.ports
        else:
            e = net.fdb.lookup(dst)
            if e is not None and e.port is not None:
                if e.port == port:
                    return self._drop("hairpin")
                local = [e.port]
                to_vxlan = False
            elif e is not None:
                local = []          # known remote: straight to the vxlan port
            else:
                local = net.ports   # unknown unicast: flood
        for p in local:
            if p != port:
                self._to_port(out, p, frame)
        if not to_vxlan:
            return out

        # The "vxlan port" (vxlan_xmit). With proxy on, every ARP frame goes to arp_reduce,
        # which answers requests and consumes everything else: ARP never crosses the underlay;
        # and every Neighbor Solicitation goes to neigh_reduce, answered or consumed.
        if net.proxy and isinstance(parsed, Arp):
            if parsed.op == ARPOP_REQUEST:
                self._arp_reduce(net, port, parsed, out)
            else:
                self._flag("arp_consumed")
            return out
        if net.proxy and isinstance(parsed, NeighSolicit):
            self._neigh_reduce(net, port, frame, parsed, out)
            return out
        e = net.fdb.lookup(dst)
        if e is None or e.port is not None:
            e = net.fdb.lookup(ZERO_MAC)
        if e is None:
            if not is_multicast_mac(dst):
                self._counters["l2miss"] += 1
                self._events.append(("l2miss", vni, mac_str(dst), "", ""))
                self._flag("l2miss")
            return out
        lo, hi = self.src_port_range
        sport = src_port(frame, lo, hi)
        payload = net.header + frame
        tos, ttl, df = outer_fields(frame, net.tos, net.ttl, net.df)
        label = outer_label(frame, net.label)
        for r in e.remotes:
            mtu = self._pmtu.get(r.addr) if self._pmtu else None
            if mtu is not None and self._pmtu_reply(port, frame, mtu, r.addr.version, out):
                continue
            # a remote's own VNI (the kernel's per-entry vni: VNI translation) in its header
            body = payload if not r.vni else vxlan_header(r.vni) + frame
            # df means nothing to an IPv6 outer header, a flow label nothing to an IPv4 one
            if r.addr.version == 6:
                self._to_vtep(out, r.addr, sport, body, Outer(r.port, tos, ttl, False, label))
            else:
                self._to_vtep(out, r.addr, sport, body, Outer(r.port, tos, ttl, df))
        return out

    def _pmtu_reply(self, port: int, frame: bytes, route_mtu: int, version: int,
                    out: list[Action]) -> bool:
        """skb_tunnel_check_pmtu for one remote (vxlan_xmit_one checks each): an inner packet
        the path cannot carry is answered with tunnel.pmtud_icmp's ICMP, written back to the
        ingress port like a proxy reply, and not sent to this remote. True when it was;
        False: send it (it fits, or the kernel would send it anyway). Counted and flagged
        once per reply kind: ``frag_needed`` (IPv4), ``pkt_too_big`` (IPv6)."""
        limit = pmtu_limit(route_mtu, version)
        if not pmtu_exceeded(frame, limit):
            return False
        reply = pmtud_icmp(frame, limit)
        if reply is None:
            return False
        kind = "frag_needed" if frame[12] == 0x08 else "pkt_too_big"   # 0x0800 or 0x86DD
        self._counters[kind] += 1
        if kind not in self._flags:
            self._flag(kind)
        self._to_port(out, port, reply)
        return True

    def _neigh_reduce(self, net: Network, port: int, frame: bytes, ns: NeighSolicit,
                      out: list[Action]) -> None:
        """The kernel's ``neigh_reduce`` (vxlan ``proxy``): answer a Neighbor Solicitation
        from the neighbour table with vxlan_na_create's Neighbor Advertisement, written back
        to the ingress port, and never tunnel it. DAD (source ::) is left to the containers
        on this node, which the bridge part flooded it to: the kernel's proxy answers it
        with an NA to ``::`` that no host accepts, so DAD never fails because of the proxy
        there either, and vxdp does not send that packet (README "IPv6")."""
        if ns.dst == _LOOPBACK6:
            self._flag("nd_consumed")
            return          # the kernel consumes these without a word
        if ns.dad:
            self._flag("nd_dad")
            return
        n = self._proxy_answers(net, IPv6Address(ns.target), "nd_local")
        if n is not None:
            self._to_port(out, port, na_reply(ns, frame[6:12], n.lladdr))

    def _proxy_answers(self, net: Network, ip: IPv4Address | IPv6Address,
                       local_flag: str) -> NeighEntry | None:
        """The neighbour entry the proxy answers for ``ip`` with; None when it does not: no
        entry (an l3miss), or a bridge-local neighbour (the endpoint answers itself)."""
        n = net.neigh.lookup(ip)
        if n is None:
            self._counters["l3miss"] += 1
            self._events.append(("l3miss", net.vni, str(ip), "", ""))
            self._flag("l3miss")
            return None
        f = net.fdb.lookup(n.lladdr)
        if f is not None and f.port is not None:
            self._flag(local_flag)
            return None
        self._counters["proxy_replies"] += 1
        self._flag("proxy_reply")
        return n

    def _arp_reduce(self, net: Network, port: int, arp: Arp, out: list[Action]) -> None:
        """The kernel's ``arp_reduce`` (vxlan ``proxy``): answer from the neighbour table and
        never tunnel the request."""
        tip = IPv4Address(arp.tpa)
        if tip.is_loopback or tip.is_multicast:
            self._flag("arp_consumed")
            return          # the kernel consumes these without a word
        n = self._proxy_answers(net, tip, "arp_local")
        if n is not None:
            self._to_port(out, port, arp_reply(arp, n.lladdr))

    def _note_learning(self, net: Network, mac: bytes, result: str, old: FdbEntry | None,
                       loc: str, port: int | None) -> None:
        vni = net.vni
        if result == "new":
            self._flag("learned")
            self._counters["learned"] += 1
            self._events.append(("learned", vni, mac_str(mac), "", loc))
        elif result == "moved":
            assert old is not None
            self._flag("moved")
            self._counters["moved"] += 1
            self._events.append(("moved", vni, mac_str(mac), _loc(old), loc))
        elif result == "full":
            self._flag("fdb_full")
            self._counters["fdb_full"] += 1
        elif result == "limited":
            # The frame is still forwarded (the bridge does too); the event says so once per
            # port until the port is below its bound again.
            self._flag("learn_limit")
            self._counters["learn_limit"] += 1
            if port not in net.fdb.limited_ports:
                net.fdb.limited_ports.add(port)   # type: ignore[arg-type]
                self._events.append(("learn_limit", vni, mac_str(mac), "", loc))

    def from_underlay(self, source: IPAddress | str, datagram: bytes,
                      now: float, *, tos: int = 0, note: str = "") -> list[Action]:
        """A UDP payload received on the VXLAN port from ``source`` (the outer IPv4 or IPv6
        source) with outer TOS / traffic class ``tos`` (for RFC 6040 ECN decapsulation).
        ``note``: what the rx step in front of the core did to it (``offload.receive``:
        "csum_partial", "segmented"), recorded as the first trace flag."""
        src_ip = source_address(source)
        if not self._trace_on:
            return self._from_underlay(src_ip, datagram, now, tos)
        self._reason, self._flags = "", [note] if note else []
        out = self._from_underlay(src_ip, datagram, now, tos)
        vni = parse_vxlan(datagram)[1] if len(datagram) >= 8 else -1
        self._record(now, str(src_ip), vni, datagram, out)
        return out

    def _from_underlay(self, src_ip: IPAddress, datagram: bytes, now: float,
                       tos: int) -> list[Action]:
        self._underlay.rx_packets += 1
        self._underlay.rx_bytes += len(datagram)
        if self.allow and not any(src_ip in n for n in self.allow):
            return self._drop("not_allowed")
        reason, vni = parse_vxlan(datagram)
        if reason is not None:
            return self._drop(reason)
        net = self._networks.get(vni)
        if net is None:
            return self._drop("unknown_vni")
        if self.strict and reserved_bits_set(datagram):
            return self._drop("reserved_bits")
        frame = datagram[8:]
        bad, _ = _frame_checks(frame, net)
        if bad:
            return self._drop(bad)
        dst, src = frame[0:6], frame[6:12]
        if net.learning:
            result, old = net.fdb.learn(src, now, dst=Remote(src_ip))
            if result == "conflict":
                return self._drop("fdb_conflict")
            if result in ("new", "moved"):
                self._remotes_made += 1
            self._note_learning(net, src, result, old, str(src_ip), None)
        # RFC 6040 §4.2 after learning, as vxlan_rcv orders them
        decapped = ecn_decap(frame, tos)
        if decapped is None:
            return self._drop("ecn_not_ect_ce")
        frame = decapped

        out: list[Action] = []
        if is_multicast_mac(dst):
            local = net.ports
        else:
            e = net.fdb.lookup(dst)
            if e is not None and e.port is not None:
                local = [e.port]
            elif e is not None:
                return self._drop("remote_dest")   # split horizon: never back to the underlay
            else:
                local = net.ports
        for p in local:
            self._to_port(out, p, frame)
        return out

