"""The etcd key layout and the I/O-free half of the store: records in, table operations out.

Layout under the configured prefix (``/vxdp`` by default)::

    {prefix}/vteps/{vtep_ip}                              {"name", "vtep", "networks": {name: vni}}
    {prefix}/endpoints/{network}/{vni}/{vtep_ip}/{mac}    {"network", "vni", "mac", "ip", "vtep",
                                                           "ips"?, "port"?, "name"?}

(``ips``: every overlay address of a dual-stack endpoint, ``ip`` first; ``port``: the UDP port
its VTEP listens on, so peers whose own port differs send there.)

Every key is written under the owning VTEP's lease, so a VTEP that dies takes its keys with it
when the lease runs out, and a clean shutdown (lease revoked) removes them at once. The network
name *and* the VNI are part of the endpoint key: two sites that disagree on a network's VNI
never program each other's endpoints (the record is ignored and logged).

:class:`RemoteTables` turns the other VTEPs' keys into calls on a :class:`StoreHost` (the
``Vtep``): ``peer_add``/``peer_del`` (Docker's peerAdd/peerDelete: one permanent FDB + one
permanent neighbour entry) and ``flood_add``/``flood_del`` (head-end replication list). It
remembers exactly what it applied, per key, so a resync after an outage is a diff (stale
entries removed, new ones added, nothing applied twice), and a MAC or IP claimed by two keys at
once (a container moving between hosts) follows the newest claim instead of being deleted by
the older one's removal. Nothing here does I/O or knows about etcd; ``etcd.py`` feeds it.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dataplane.validate import (VNI_MAX, VNI_MIN, is_vni, parse_ipv4, parse_neigh_ip,
                                parse_underlay_ip, parse_unicast_mac)

if TYPE_CHECKING:
    from dataplane.config import Config, EndpointConfig, NetworkConfig

__all__ = ["EndpointRecord", "KeyLayout", "RemoteTables", "StoreHost", "VtepRecord",
           "RecordError", "normalize_mac"]

log = logging.getLogger("vxdp.store")

class RecordError(ValueError):
    """A key or value in the store that is not ours to apply (malformed, or inconsistent)."""


class StoreHost(Protocol):
    """What the store needs from a VTEP (``dataplane.vtep.Vtep`` implements it).

    :class:`RemoteTables` only programs the tables (``peer_*``, ``flood_*``); the etcd store
    also reads the config, publishes the attached endpoints and reports on ``vxdp events``.
    """

    config: Config

    def local_endpoints(self) -> list[tuple[NetworkConfig, EndpointConfig]]: ...
    def peer_add(self, network: str, mac: str, ip: str | Sequence[str], vtep: str,
                 port: int = 0) -> bool: ...
    def peer_del(self, network: str, mac: str, ip: str | Sequence[str]) -> bool: ...
    def flood_add(self, network: str, vtep: str) -> bool: ...
    def flood_del(self, network: str, vtep: str) -> bool: ...
    def emit_event(self, rec: dict[str, Any]) -> None:
        """Hand one event record (``{"kind": ..., "line": ...}``) to ``vxdp events``."""


def normalize_mac(mac: str) -> str:
    """An endpoint's MAC as the store writes it (canonical, unicast): the config's rule."""
    try:
        return parse_unicast_mac(mac, what="an endpoint")
    except ValueError as exc:
        raise RecordError(str(exc)) from None


def _ipv4(value: Any, what: str) -> str:
    """Canonical dotted quad. inet_aton + inet_ntoa (C) first, instead of ipaddress (10x
    slower, and a 10,000-endpoint sync parses 20,000 of them); the round trip refuses
    inet_aton's legacy forms ("10.1", "0x7f.1") that are not canonical, and anything else
    goes through the config's rule."""
    if isinstance(value, str):
        try:
            if socket.inet_ntoa(socket.inet_aton(value)) == value:
                return value
        except OSError:
            pass
    try:
        return str(parse_ipv4(value))   # e.g. leading zeros: let the rule decide
    except ValueError as exc:
        raise RecordError(f"{what}: {exc}") from None


def _either(value: Any, what: str, parse6: Callable[[str], Any]) -> str:
    """An address in canonical form: the dotted quad as _ipv4, or compressed IPv6 through
    ``parse6`` (the config's rule for that kind of address)."""
    if isinstance(value, str) and ":" in value:
        try:
            return str(parse6(value))
        except ValueError as exc:
            raise RecordError(f"{what}: {exc}") from None
    return _ipv4(value, what)


def _vtep_addr(value: Any, what: str) -> str:
    """A VTEP address (IPv4 or IPv6) in canonical form."""
    return _either(value, what, parse_underlay_ip)


def _overlay_addr(value: Any, what: str) -> str:
    """An endpoint's overlay address (IPv4 or IPv6) in canonical form."""
    return _either(value, what, parse_neigh_ip)


def _json_object(key: bytes, value: bytes) -> dict[str, Any]:
    """A record's value: a JSON object, else RecordError naming the key."""
    try:
        d = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise RecordError(f"{key.decode(errors='replace')}: value is not JSON") from None
    if not isinstance(d, dict):
        raise RecordError(f"{key.decode(errors='replace')}: value is not a JSON object")
    return d


@dataclass(frozen=True)
class EndpointRecord:
    network: str
    vni: int
    mac: str
    ip: str
    vtep: str
    name: str = ""       # endpoint (TAP) name on its VTEP: informational
    ips: tuple[str, ...] = ()    # every overlay address (dual stack), ip first; () = (ip,)
    port: int = 0        # its VTEP's UDP port; 0 = unknown (the receiving VTEP's own)

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.ips or (self.ip,)

    def same_target(self, other: EndpointRecord) -> bool:
        return (self.network, self.vni, self.mac, self.addresses, self.vtep, self.port) == \
               (other.network, other.vni, other.mac, other.addresses, other.vtep, other.port)


@dataclass(frozen=True)
class VtepRecord:
    vtep: str
    name: str
    networks: tuple[tuple[str, int], ...]   # (network name, vni), sorted


@dataclass(frozen=True)
class KeyLayout:
    """Key names under ``prefix`` (``/`` allowed: keys then start at ``/vteps``)."""

    prefix: str = "/vxdp"

    @property
    def base(self) -> str:
        return "" if self.prefix == "/" else self.prefix.rstrip("/")

    @property
    def root(self) -> bytes:
        """Everything vxdp owns: watched and read as one range (the trailing / keeps
        ``/vxdp2/...`` out of ``/vxdp``'s range)."""
        return (self.base + "/").encode()

    def vtep_key(self, vtep: str) -> bytes:
        return f"{self.base}/vteps/{vtep}".encode()

    def endpoint_key(self, network: str, vni: int, vtep: str, mac: str) -> bytes:
        return f"{self.base}/endpoints/{network}/{vni}/{vtep}/{mac}".encode()

    def endpoints_prefix(self, network: str | None = None) -> bytes:
        if network is None:
            return f"{self.base}/endpoints/".encode()
        return f"{self.base}/endpoints/{network}/".encode()

    # -- parsing ---------------------------------------------------------------------------

    def classify(self, key: bytes) -> tuple[str | None, str | None]:
        """(``"vtep"`` | ``"endpoint"`` | None, owning VTEP address | None) in one parse."""
        parts = self._parts(key)
        if parts is None:
            return None, None
        if parts[0] == "vteps" and len(parts) == 2:
            return "vtep", parts[1]
        if parts[0] == "endpoints" and len(parts) == 5:
            return "endpoint", parts[3]
        return None, None

    def owner(self, key: bytes) -> str | None:
        """The VTEP address a key belongs to (None: not a key of this layout)."""
        return self.classify(key)[1]

    def _parts(self, key: bytes) -> list[str] | None:
        try:
            text = key.decode()
        except UnicodeDecodeError:
            return None
        base = self.base + "/"
        if not text.startswith(base):
            return None
        return text[len(base):].split("/")

    def kind(self, key: bytes) -> str | None:
        """``"vtep"``, ``"endpoint"`` or None (some other key under the prefix: ignored)."""
        return self.classify(key)[0]

    # -- records ---------------------------------------------------------------------------

    @staticmethod
    def encode_endpoint(rec: EndpointRecord) -> bytes:
        d: dict[str, Any] = {"network": rec.network, "vni": rec.vni, "mac": rec.mac,
                             "ip": rec.ip, "vtep": rec.vtep}
        if rec.name:
            d["name"] = rec.name
        if len(rec.addresses) > 1:
            d["ips"] = list(rec.addresses)
        if rec.port:
            d["port"] = rec.port
        return json.dumps(d, separators=(",", ":"), sort_keys=True).encode()

    @staticmethod
    def encode_vtep(rec: VtepRecord, **extra: Any) -> bytes:
        d = {"name": rec.name, "vtep": rec.vtep,
             "networks": {n: v for n, v in rec.networks}, **extra}
        return json.dumps(d, separators=(",", ":"), sort_keys=True).encode()

    def decode_endpoint(self, key: bytes, value: bytes) -> EndpointRecord:
        """The record, checked against its key (a value that disagrees with its key is refused:
        the key decides ownership and removal, the value must not point elsewhere)."""
        parts = self._parts(key)
        if parts is None or parts[0] != "endpoints" or len(parts) != 5:
            raise RecordError(f"{key!r} is not an endpoint key")
        _, k_net, k_vni, k_vtep, k_mac = parts
        d = _json_object(key, value)
        try:
            network = str(d["network"])
            vni = d["vni"]
            mac = normalize_mac(str(d["mac"]))
            ip = _overlay_addr(d["ip"], "ip")
            vtep = _vtep_addr(d["vtep"], "vtep")
            ips = tuple(_overlay_addr(a, "ips") for a in d.get("ips") or ())
            port = d.get("port", 0)
        except KeyError as e:
            raise RecordError(f"{key.decode(errors='replace')}: value lacks "
                              f"{e.args[0]!r}") from None
        except TypeError:
            raise RecordError(f"{key.decode(errors='replace')}: ips is not a list") from None
        if ips and (ips[0] != ip or len(set(ips)) != len(ips) or len(ips) > 16):
            raise RecordError(f"{key.decode(errors='replace')}: ips must start with ip and "
                              "list at most 16 distinct addresses")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise RecordError(f"{key.decode(errors='replace')}: port {port!r} is not a UDP port")
        if not is_vni(vni):
            raise RecordError(f"{key.decode(errors='replace')}: vni {vni!r} is not a VNI "
                              f"({VNI_MIN}..{VNI_MAX})")
        if (network, str(vni), vtep, mac) != (k_net, k_vni, k_vtep, k_mac):
            raise RecordError(f"{key.decode(errors='replace')}: value "
                              f"({network} vni {vni} {vtep} {mac}) disagrees with its key")
        return EndpointRecord(network, vni, mac, ip, vtep, str(d.get("name", "")),
                              ips if len(ips) > 1 else (), port)

    def decode_vtep(self, key: bytes, value: bytes) -> VtepRecord:
        parts = self._parts(key)
        if parts is None or parts[0] != "vteps" or len(parts) != 2:
            raise RecordError(f"{key!r} is not a VTEP key")
        d = _json_object(key, value)
        vtep = _vtep_addr(d.get("vtep", parts[1]), "vtep")
        if vtep != parts[1]:
            raise RecordError(f"{key.decode(errors='replace')}: value names VTEP {vtep}")
        nets = d.get("networks", {})
        if not isinstance(nets, dict):
            raise RecordError(f"{key.decode(errors='replace')}: networks is not an object")
        out = []
        for n, v in nets.items():
            if not is_vni(v):
                raise RecordError(f"{key.decode(errors='replace')}: network {n}: bad vni {v!r}")
            out.append((str(n), v))
        return VtepRecord(vtep=vtep, name=str(d.get("name", "")), networks=tuple(sorted(out)))


Emit = Callable[[dict[str, Any]], None]


class RemoteTables:
    """Applies other VTEPs' keys to a :class:`StoreHost`, remembering exactly what it applied.

    ``local_networks`` maps the networks this VTEP serves to their VNI (records for other
    networks are not ours; records whose VNI disagrees are refused and logged once per key).
    ``static_peers`` / ``static_flood`` come from the config file: the store never deletes them,
    and when the last store claim on a statically configured MAC/IP goes away the static entry
    is put back (the file stays the embedded default).
    """

    def __init__(self, host: StoreHost, layout: KeyLayout, local_vtep: str,
                 local_networks: dict[str, int], *,
                 local_macs: Callable[[], set[tuple[str, str]]] | None = None,
                 static_peers: Iterable[EndpointRecord] = (),
                 static_flood: Iterable[tuple[str, str]] = (),
                 emit: Emit | None = None) -> None:
        self.host = host
        self.layout = layout
        self.local_vtep = local_vtep
        self.local_networks = dict(local_networks)
        self._local_macs = local_macs
        self._emit = emit
        # key -> what we applied for it
        self.endpoints: dict[bytes, EndpointRecord] = {}
        self.vteps: dict[bytes, VtepRecord] = {}
        self._rev: dict[bytes, int] = {}
        # claims: (network, mac) / (network, ip) -> keys claiming it
        self._by_mac: dict[tuple[str, str], set[bytes]] = {}
        self._by_ip: dict[tuple[str, str], set[bytes]] = {}
        # flood list: (network, vtep) -> keys (endpoints and registrations) that put it there
        self._flood: dict[tuple[str, str], set[bytes]] = {}
        self._static_by_mac = {(p.network, p.mac): p for p in static_peers}
        self._static_by_ip = {(p.network, p.ip): p for p in self._static_by_mac.values()}
        self._static_flood = set(static_flood)
        self._refused: set[bytes] = set()
        self.ignored = 0       # records refused (bad, VNI mismatch, local MAC conflict)

    # -- counts ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        return {"peers": len(self.endpoints), "vteps": len(self.vteps),
                "flood": sum(1 for k in self._flood if self._flood[k]), "ignored": self.ignored}

    def flood_targets(self) -> set[tuple[str, str]]:
        return {k for k, v in self._flood.items() if v}

    # -- entry points ----------------------------------------------------------------------

    def put(self, key: bytes, value: bytes, revision: int = 0) -> None:
        kind, owner = self.layout.classify(key)
        if kind is None or owner == self.local_vtep:
            return
        try:
            if kind == "endpoint":
                self._put_endpoint(key, self.layout.decode_endpoint(key, value), revision)
            else:
                self._put_vtep(key, self.layout.decode_vtep(key, value))
        except RecordError as e:
            self._refuse(key, str(e))
            self._drop(key)   # whatever the key said before no longer holds

    def delete(self, key: bytes) -> None:
        self._refused.discard(key)
        self._drop(key)

    def _drop(self, key: bytes) -> None:
        if key in self.endpoints:
            self._remove_endpoint(key)
        elif key in self.vteps:
            self._remove_vtep(key)

    def snapshot(self, items: Iterable[tuple[bytes, bytes, int]]) -> tuple[int, int]:
        """Make the applied state equal to a full read: keys we applied that are gone are
        removed, everything present is (re)applied, unchanged keys are left alone.
        Returns (removed, seen)."""
        seen: set[bytes] = set()
        n = 0
        for key, value, rev in items:
            seen.add(key)
            self.put(key, value, rev)
            n += 1
        stale = [k for k in (*self.endpoints, *self.vteps) if k not in seen]
        for k in stale:
            self.delete(k)
        return len(stale), n

    def forget_mac(self, network: str, mac: str) -> int:
        """A local endpoint now owns ``(network, mac)`` (a container moved here): stop tracking
        remote claims on it *without* touching the tables — the local port's entry replaced
        the remote one, and the claim's later removal must not delete it. Returns how many
        claims were dropped."""
        keys = list(self._by_mac.get((network, mac), ()))
        for key in keys:
            rec = self.endpoints.pop(key)
            self._rev.pop(key, None)
            self._unclaim(key, rec)
            self._flood_unref(rec.network, rec.vtep, key)
        return len(keys)

    def add_network(self, name: str, vni: int) -> None:
        """This VTEP serves ``name`` from now on. The VTEPs' registrations already applied
        that list it put their VTEP in its flood list at once; endpoint records of a network
        not served were not kept, so the caller reads the store again for them."""
        self.local_networks[name] = vni
        for key, rec in self.vteps.items():
            if (name, vni) in rec.networks:
                self._flood_ref(name, rec.vtep, key)

    def del_network(self, name: str) -> None:
        """This VTEP no longer serves ``name``: remove what was applied for it."""
        for key in [k for k, r in self.endpoints.items() if r.network == name]:
            self._remove_endpoint(key)
        for (net, vtep), refs in list(self._flood.items()):
            if net == name:
                refs.clear()
                del self._flood[(net, vtep)]
                if (net, vtep) not in self._static_flood:
                    self.host.flood_del(net, vtep)
        self.local_networks.pop(name, None)

    def clear(self) -> None:
        """Remove everything the store applied (not the static config)."""
        for k in list(self.endpoints) + list(self.vteps):
            self.delete(k)

    # -- internals -------------------------------------------------------------------------

    def _refuse(self, key: bytes, why: str) -> None:
        self.ignored += 1
        if key not in self._refused:
            self._refused.add(key)
            log.warning("store: ignoring %s", why)

    def _put_endpoint(self, key: bytes, rec: EndpointRecord, rev: int) -> None:
        vni = self.local_networks.get(rec.network)
        if vni is None:
            # A network this VTEP does not serve: not ours (and not worth a log line).
            if key in self.endpoints:
                self._remove_endpoint(key)
            return
        if vni != rec.vni:
            raise RecordError(f"{key.decode()}: network {rec.network} has VNI {vni} here, "
                              f"the store says {rec.vni}")
        if self._local_macs is not None and (rec.network, rec.mac) in self._local_macs():
            raise RecordError(f"{key.decode()}: MAC {rec.mac} is a local endpoint here")
        old = self.endpoints.get(key)
        if old is not None and old.same_target(rec):
            self.endpoints[key] = rec
            return
        if old is not None:
            self._unclaim(key, old)
        self.endpoints[key] = rec
        self._rev[key] = rev
        macs = self._by_mac.setdefault((rec.network, rec.mac), set())
        macs.add(key)
        ips = self._by_ip.setdefault((rec.network, rec.ip), set())
        ips.add(key)
        if len(macs) == 1 and len(ips) == 1:
            # The common case (nobody else claims this MAC or IP): no winner to pick.
            self.host.peer_add(rec.network, rec.mac, rec.addresses, rec.vtep, rec.port)
            self._event("peer_add", rec)
        else:
            self._reprogram({(rec.network, rec.mac)}, {(rec.network, rec.ip)})
        # New reference first, so a record that stays on the same VTEP never blips the
        # flood list.
        self._flood_ref(rec.network, rec.vtep, key)
        if old is not None:
            if (old.network, old.vtep) != (rec.network, rec.vtep):
                self._flood_unref(old.network, old.vtep, key)
            # Identities the old record held and the new one does not.
            self._settle(old)

    def _unclaim(self, key: bytes, rec: EndpointRecord) -> None:
        for index, ident in ((self._by_mac, (rec.network, rec.mac)),
                             (self._by_ip, (rec.network, rec.ip))):
            s = index.get(ident)
            if s is not None:
                s.discard(key)
                if not s:
                    del index[ident]

    def _remove_endpoint(self, key: bytes) -> None:
        rec = self.endpoints.pop(key)
        self._rev.pop(key, None)
        self._unclaim(key, rec)
        self._flood_unref(rec.network, rec.vtep, key)
        self._settle(rec)

    def _settle(self, gone: EndpointRecord) -> None:
        """After ``gone`` lost its claims: delete what nobody claims, re-program what others
        (or the static config) still claim."""
        mac_id, ip_id = (gone.network, gone.mac), (gone.network, gone.ip)
        mac_claimed = bool(self._by_mac.get(mac_id))
        ip_claimed = bool(self._by_ip.get(ip_id))
        if not mac_claimed or not ip_claimed:
            self.host.peer_del(gone.network, gone.mac, gone.addresses)
            self._event("peer_del", gone)
        self._reprogram({mac_id}, {ip_id})

    def _reprogram(self, macs: set[tuple[str, str]], ips: set[tuple[str, str]]) -> None:
        """Program the winning claim for each identity: the newest key (highest revision)
        wins, as etcd's last write would; no store claim left → the static peer, if any."""
        recs: dict[bytes, EndpointRecord] = {}
        statics: list[EndpointRecord] = []
        for index, static, ids in ((self._by_mac, self._static_by_mac, macs),
                                   (self._by_ip, self._static_by_ip, ips)):
            for ident in ids:
                keys = index.get(ident)
                if keys:
                    k = max(keys, key=lambda k: (self._rev.get(k, 0), k))
                    recs[k] = self.endpoints[k]
                elif ident in static:
                    statics.append(static[ident])
        for p in statics:
            self.host.peer_add(p.network, p.mac, p.addresses, p.vtep, p.port)
        for k in sorted(recs, key=lambda k: (self._rev.get(k, 0), k)):
            r = recs[k]
            self.host.peer_add(r.network, r.mac, r.addresses, r.vtep, r.port)
            self._event("peer_add", r)

    def _put_vtep(self, key: bytes, rec: VtepRecord) -> None:
        old = self.vteps.get(key)
        if old == rec:
            return
        mine = []
        for net, vni in rec.networks:
            local = self.local_networks.get(net)
            if local is None:
                continue
            if local != vni:
                self._refuse(key + b"#" + net.encode(),
                             f"VTEP {rec.vtep} serves network {net} with VNI {vni}, "
                             f"here it is {local}")
                continue
            mine.append(net)
        self.vteps[key] = rec
        for net in mine:
            self._flood_ref(net, rec.vtep, key)
        if old is not None:
            for net, _ in old.networks:
                if net not in mine:
                    self._flood_unref(net, old.vtep, key)

    def _remove_vtep(self, key: bytes) -> None:
        rec = self.vteps.pop(key)
        for net, _ in rec.networks:
            self._flood_unref(net, rec.vtep, key)

    def _flood_ref(self, network: str, vtep: str, key: bytes) -> None:
        if vtep == self.local_vtep or network not in self.local_networks:
            return
        refs = self._flood.setdefault((network, vtep), set())
        if not refs:
            self.host.flood_add(network, vtep)
            self._event_flood("flood_add", network, vtep)
        refs.add(key)

    def _flood_unref(self, network: str, vtep: str, key: bytes) -> None:
        refs = self._flood.get((network, vtep))
        if refs is None or key not in refs:
            return
        refs.discard(key)
        if not refs:
            del self._flood[(network, vtep)]
            if (network, vtep) not in self._static_flood:
                self.host.flood_del(network, vtep)
                self._event_flood("flood_del", network, vtep)

    def _event(self, kind: str, r: EndpointRecord) -> None:
        if self._emit is None:
            return
        if kind == "peer_add":
            line = (f"peer_add {r.mac} {' '.join(r.addresses)} dev {r.network} vni {r.vni} "
                    f"dst {r.vtep} (store)")
        else:
            line = (f"peer_del {r.mac} {' '.join(r.addresses)} dev {r.network} vni {r.vni} "
                    f"dst {r.vtep} (store)")
        self._emit({"kind": kind, "network": r.network, "vni": r.vni, "mac": r.mac,
                    "ip": r.ip, "vtep": r.vtep, "source": "store", "line": line})

    def _event_flood(self, kind: str, network: str, vtep: str) -> None:
        if self._emit is None:
            return
        vni = self.local_networks.get(network)
        self._emit({"kind": kind, "network": network, "vni": vni, "vtep": vtep,
                    "source": "store",
                    "line": f"{kind} 00:00:00:00:00:00 dev {network} vni {vni} dst {vtep} (store)"})
