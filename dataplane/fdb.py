"""Forwarding database of one network (VNI), with the Linux kernel's semantics and no I/O.

Docker's overlay has two tables: the bridge's (``br0``: MAC → local veth, learned) and the vxlan
device's (``vxlan0``: MAC → remote VTEP, permanent entries pushed by Docker). vxdp collapses the
bridge and the vxlan port into one switch, so one entry is either *local* (``port``: an endpoint
TAP) or *remote* (``remotes``: one or more VTEP addresses).

Semantics mirrored from ``drivers/net/vxlan/vxlan_core.c``:

- ``add`` (NLM_F_CREATE|NLM_F_EXCL) fails when the MAC is present (EEXIST).
- ``append`` (NLM_F_APPEND) adds a remote; extra remotes exist only on the all-zeros MAC and
  multicast MACs — the head-end replication lists. An already-listed remote is a no-op.
- ``replace`` (NLM_F_REPLACE) creates or rewrites a unicast entry's (first) remote; on the
  all-zeros/multicast MACs it is refused (EOPNOTSUPP).
- ``delete`` removes one remote (the entry goes with its last remote) or the whole entry.
- learned entries age out ``ageing`` seconds after they were last refreshed by traffic from
  that MAC (``vxlan_cleanup`` checks ``f->updated``); permanent and static entries never do.
- learning never moves a permanent or static entry: the kernel drops the packet instead
  (``vxlan_snoop``: "Don't migrate static entries, drop packets"); a learned one migrates.
- ``maxaddress`` bounds the remote entries, the vxlan device's own (``addrmax``: learning
  refused when full). The bridge's learned local entries never count against it; they have
  their own bounds, per network and per port (the bridge's ``fdb_max_learned``, Linux 6.5+,
  is per bridge), so that no container can fill a table with random source MACs. A
  permanent or static entry is never refused because learned ones filled the table: the
  oldest learned remote entry gives way (it would age out anyway); only a table full of
  entries someone configured refuses another one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Literal, NamedTuple

from dataplane.errors import EntryExists, EntryNotFound, InvalidArgument, TableFull
from dataplane.validate import check_choice, ipaddr, mac_bytes
from dataplane.wire import is_multicast_mac, is_zero_mac, mac_str

FDB_STATES = ("permanent", "static", "learned")
LearnResult = Literal["new", "refresh", "moved", "conflict", "full", "kept", "limited"]
DEFAULT_MAX_LEARNED = 16384         # local learned entries per network
DEFAULT_MAX_LEARNED_PER_PORT = 1024


class Remote(NamedTuple):
    """Where a remote entry sends (the kernel's ``struct vxlan_rdst``): the VTEP's address and,
    per entry, the UDP destination port and the VNI on the wire — 0 for the VTEP's own port
    and the network's VNI (``bridge fdb add ... dst IP port P vni N``)."""

    addr: IPv4Address | IPv6Address
    port: int = 0
    vni: int = 0

    def __str__(self) -> str:
        return str(self.addr)


@dataclass(slots=True)
class FdbEntry:
    mac: bytes
    state: str
    port: int | None = None                       # local endpoint port id
    remotes: list[Remote] = field(default_factory=list)
    updated: float = 0.0                          # last refresh by learning (ageing clock)

    @property
    def is_local(self) -> bool:
        return self.port is not None

    def location(self) -> str:
        """Where the entry points, as events spell it: ``port:N`` or the first VTEP."""
        return f"port:{self.port}" if self.port is not None else str(self.remotes[0])

    def rows(self, vni: int) -> list[dict[str, object]]:
        """One dict per (MAC, destination), like one ``bridge fdb show`` line each."""
        base: dict[str, object] = {"vni": vni, "mac": mac_str(self.mac), "state": self.state,
                                   "updated": self.updated}
        if self.port is not None:
            return [{**base, "port": self.port, "dst": None, "dst_port": None,
                     "dst_vni": None}]
        return [{**base, "port": None, "dst": str(r.addr), "dst_port": r.port or None,
                 "dst_vni": r.vni or None} for r in self.remotes]


# The argument rules of dataplane.validate, refused the way the kernel refuses them (EINVAL).
# The compiled core imports these three as they are.

def _mac(mac: str | bytes) -> bytes:
    return InvalidArgument.check(mac_bytes, mac)


def _dst(dst: Remote | IPv4Address | IPv6Address | str) -> Remote:
    """A remote: a Remote as it is, or an address with the VTEP's port and the network's VNI."""
    r = dst if isinstance(dst, Remote) else Remote(InvalidArgument.check(ipaddr, dst))
    if r.addr.version == 6 and r.addr.is_link_local:
        # the kernel takes a link-local remote only with its device (``via``); vxdp sends
        # from a routed socket and keeps no scope per remote
        raise InvalidArgument(f"{r.addr} is link-local: a remote VTEP needs a routable address")
    return r


def _state(state: str) -> str:
    return InvalidArgument.check(lambda v: check_choice(v, FDB_STATES, "FDB state"), state)


def _one_destination(dst: object, port: object) -> None:
    """An entry points either at a remote VTEP (``dst``) or at a local port, never both."""
    if (dst is None) == (port is None):
        raise InvalidArgument("an FDB entry needs exactly one of dst (remote) or port (local)")


def endpoint_mac_message(mac: bytes, vni: int) -> str:
    """Why an FDB change may not point a local endpoint's MAC at a remote VTEP: every frame
    to the container would leave for the underlay (and be dropped as remote_dest on the way
    back). On a kernel host the bridge's FDB and the vxlan device's are apart, so this
    cannot happen there."""
    return (f"{mac_str(mac)} is the MAC of a local endpoint in VNI {vni}: it cannot point at "
            f"a remote VTEP (detach the endpoint first)")


def remote_mac_message(mac: bytes, vni: int, where: str, state: str) -> str:
    """Why an endpoint may not take a MAC the FDB has as a remote's (the reverse case)."""
    return (f"{mac_str(mac)} is in the FDB of VNI {vni} as a {state} entry for {where}: "
            f"delete it (vxdp fdb del) before attaching an endpoint with this MAC")


def is_group_mac(mac: bytes) -> bool:
    """The MACs that may carry several remotes: all-zeros (default flood) and multicast."""
    return is_zero_mac(mac) or is_multicast_mac(mac)


class Fdb:
    def __init__(self, vni: int, maxaddress: int = 0, ageing: float = 300.0, *,
                 max_learned: int = DEFAULT_MAX_LEARNED,
                 max_learned_per_port: int = DEFAULT_MAX_LEARNED_PER_PORT) -> None:
        self.vni = vni
        self.maxaddress = maxaddress
        self.ageing = ageing
        self.max_learned = max_learned                      # 0: unlimited
        self.max_learned_per_port = max_learned_per_port    # 0: unlimited
        self._entries: dict[bytes, FdbEntry] = {}
        self.n_remote = 0                   # entries pointing at remote VTEPs (maxaddress)
        self.learned_local = 0              # learned entries pointing at local ports
        self.learned_by_port: dict[int, int] = {}
        self.limited_ports: set[int] = set()   # ports refused learning since last below limit

    def _count(self, e: FdbEntry, delta: int) -> None:
        """Keep the counts the limits look at; called with -1 before an entry changes or
        goes and with +1 after it appears or changed."""
        if e.port is None:
            self.n_remote += delta
        elif e.state == "learned":
            self.learned_local += delta
            n = self.learned_by_port.get(e.port, 0) + delta
            self.learned_by_port[e.port] = n
            if delta < 0 and e.port in self.limited_ports and not self._port_full(e.port):
                self.limited_ports.discard(e.port)

    def _port_full(self, port: int) -> bool:
        return (bool(self.max_learned_per_port)
                and self.learned_by_port.get(port, 0) >= self.max_learned_per_port) \
            or (bool(self.max_learned) and self.learned_local >= self.max_learned)

    def _put(self, e: FdbEntry) -> FdbEntry:
        self._entries[e.mac] = e
        self._count(e, +1)
        return e

    def _drop(self, mac: bytes) -> FdbEntry:
        e = self._entries.pop(mac)
        self._count(e, -1)
        return e

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[FdbEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.mac))

    def lookup(self, mac: bytes) -> FdbEntry | None:
        return self._entries.get(mac)

    def _remotes_full(self) -> bool:
        return bool(self.maxaddress) and self.n_remote >= self.maxaddress

    def _make_room(self, state: str) -> None:
        """Room for one more remote entry: a configured (permanent/static) one takes the
        place of the oldest learned remote entry when maxaddress is reached."""
        if not self._remotes_full():
            return
        if state != "learned":
            learned = [e for e in self._entries.values()
                       if e.port is None and e.state == "learned"]
            if learned:
                self._drop(min(learned, key=lambda e: (e.updated, e.mac)).mac)
                return
        raise TableFull(f"FDB of VNI {self.vni} is full ({self.maxaddress} remote entries)")

    def _new(self, mac: bytes, state: str, now: float, port: int | None,
             dst: Remote | None) -> FdbEntry:
        if port is None:
            self._make_room(state)
        return self._put(FdbEntry(mac, state, port, [dst] if dst is not None else [], now))

    # -- control-plane operations (bridge fdb add/append/replace/del/flush) --------------------

    def add(self, mac: str | bytes, *, dst: Remote | IPv4Address | str | None = None,
            port: int | None = None, state: str = "permanent", now: float = 0.0) -> None:
        m = _mac(mac)
        state = _state(state)
        _one_destination(dst, port)
        if port is not None and is_group_mac(m):
            raise InvalidArgument(f"{mac_str(m)} is not a unicast MAC: cannot point at a port")
        if m in self._entries:
            raise EntryExists(f"FDB entry {mac_str(m)} already exists in VNI {self.vni}")
        self._new(m, state, now, port, _dst(dst) if dst is not None else None)

    def append(self, mac: str | bytes, dst: Remote | IPv4Address | str, state: str = "permanent",
               now: float = 0.0) -> None:
        m = _mac(mac)
        d = _dst(dst)
        state = _state(state)
        e = self._entries.get(m)
        if e is None:
            self._new(m, state, now, None, d)
            return
        if not is_group_mac(m):
            raise InvalidArgument(
                f"append adds extra remotes only to 00:00:00:00:00:00 or a multicast MAC; "
                f"use replace for {mac_str(m)}")
        if e.port is not None:
            raise InvalidArgument(f"{mac_str(m)} points at a local port")
        if d not in e.remotes:   # the kernel ignores an already-listed remote
            e.remotes.append(d)

    def replace(self, mac: str | bytes, *, dst: Remote | IPv4Address | str | None = None,
                port: int | None = None, state: str = "permanent", now: float = 0.0) -> None:
        m = _mac(mac)
        state = _state(state)
        _one_destination(dst, port)
        if is_group_mac(m):
            raise InvalidArgument(
                f"replace is not supported on {mac_str(m)} (kernel: EOPNOTSUPP); "
                f"use append/del for flood lists")
        d = _dst(dst) if dst is not None else None
        e = self._entries.get(m)
        if e is None:
            self._new(m, state, now, port, d)
            return
        if e.port is not None and e.state != "learned" and d is not None:
            raise InvalidArgument(endpoint_mac_message(m, self.vni))
        self._drop(m)
        if port is None and e.port is not None:
            try:
                self._make_room(state)
            except TableFull:
                self._put(e)
                raise
        e.state = state
        e.updated = now
        e.port = port
        e.remotes = [d] if d is not None else []
        self._put(e)

    def delete(self, mac: str | bytes, dst: Remote | IPv4Address | str | None = None) -> None:
        m = _mac(mac)
        e = self._entries.get(m)
        if e is None:
            raise EntryNotFound(f"no FDB entry {mac_str(m)} in VNI {self.vni}")
        if dst is None:
            self._drop(m)
            return
        d = _dst(dst)
        if d not in e.remotes:
            raise EntryNotFound(f"FDB entry {mac_str(m)} in VNI {self.vni} has no remote {d}")
        e.remotes.remove(d)
        if not e.remotes:
            self._drop(m)

    def flush(self, *, keep_permanent: bool = True, dynamic_only: bool = False) -> int:
        """``bridge fdb flush``: drop the static and learned entries (every entry with
        ``keep_permanent=False``; only learned ones with ``dynamic_only``)."""
        doomed = [m for m, e in self._entries.items()
                  if (e.state == "learned" if dynamic_only
                      else not keep_permanent or e.state != "permanent")]
        for m in doomed:
            self._drop(m)
        return len(doomed)

    def remove_port(self, port: int) -> int:
        """A port went away: its entries go too (the bridge flushes a deleted port's entries)."""
        doomed = [m for m, e in self._entries.items() if e.port == port]
        for m in doomed:
            self._drop(m)
        self.learned_by_port.pop(port, None)
        self.limited_ports.discard(port)
        return len(doomed)

    # -- data-plane operations ----------------------------------------------------------------

    def learn(self, mac: bytes, now: float, *, port: int | None = None,
              dst: Remote | None = None) -> tuple[LearnResult, FdbEntry | None]:
        """Source learning (``vxlan_snoop`` for the underlay, ``br_fdb_update`` for ports).

        Returns what happened and, for ``moved``, a copy of the entry as it was before.
        ``conflict`` — a permanent/static entry points elsewhere: remote traffic is dropped by
        the caller (kernel behaviour); ``kept`` — same for a port, where the bridge forwards
        the frame but keeps its static entry.
        """
        e = self._entries.get(mac)
        if e is not None:
            # vxlan_snoop compares the address only: a learned entry keeps its port and VNI
            same = (e.port == port) if port is not None else (
                e.port is None and dst is not None and e.remotes[0].addr == dst.addr)
            if same:
                if e.state == "learned":
                    e.updated = now
                return "refresh", None
            if e.state != "learned":
                return ("conflict" if port is None else "kept"), None
        refused = self._learn_refused(port, e)
        if refused:
            return refused, None
        if e is None:
            self._put(FdbEntry(mac, "learned", port, [dst] if dst is not None else [], now))
            return "new", None
        old = FdbEntry(e.mac, e.state, e.port, list(e.remotes), e.updated)
        self._drop(mac)
        e.port = port
        e.remotes = [dst] if dst is not None else []
        e.updated = now
        self._put(e)
        return "moved", old

    def _learn_refused(self, port: int | None, e: FdbEntry | None
                       ) -> Literal["full", "limited", ""]:
        """Why learning may not make entry `e` (None: a new one, else a learned one moving)
        point at `port` (a remote when None): maxaddress bounds the remotes, the per-port and
        per-network bounds the local learned entries — only what the change adds counts."""
        if port is None:
            return "full" if (e is None or e.port is not None) and self._remotes_full() else ""
        if self.max_learned_per_port and \
                self.learned_by_port.get(port, 0) >= self.max_learned_per_port:
            return "limited"
        if (e is None or e.port is None) and self.max_learned \
                and self.learned_local >= self.max_learned:
            return "limited"
        return ""

    def age(self, now: float) -> list[FdbEntry]:
        """Remove learned entries not refreshed for ``ageing`` seconds; return them."""
        doomed = sorted((e for e in self._entries.values()
                         if e.state == "learned" and e.updated + self.ageing <= now),
                        key=lambda e: e.mac)   # a deterministic order for the events
        for e in doomed:
            self._drop(e.mac)
        return doomed

    def rows(self) -> list[dict[str, object]]:
        return [row for e in self for row in e.rows(self.vni)]
