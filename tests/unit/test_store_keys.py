"""The store's key layout and its I/O-free half (:class:`RemoteTables`), no etcd, no root.

A fake host keeps FDB / neighbour / flood tables with the semantics of ``Vtep.peer_add``
(replace both), ``peer_del`` (delete both, missing is fine) and ``flood_add/flood_del``, and
records every call, so the tests can check both the end state and that nothing was applied
twice."""

from __future__ import annotations

from collections.abc import Sequence

import asyncio
import logging
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from dataplane.config import (EndpointConfig, NetworkConfig, PeerConfig, StoreConfig,
                              VtepConfig, Config)
from dataplane.store.keys import (EndpointRecord, KeyLayout, RecordError, RemoteTables,
                                  VtepRecord)

ME = "198.18.0.1"
A = "198.18.0.2"
B = "198.18.0.3"
L = KeyLayout("/vxdp")


@dataclass
class FakeHost:
    networks: set[str] = field(default_factory=lambda: {"mynet"})
    local: str = ME
    fdb: dict[tuple[str, str], str] = field(default_factory=dict)
    neigh: dict[tuple[str, str], str] = field(default_factory=dict)
    flood: dict[str, set[str]] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def peer_add(self, network: str, mac: str, ips: str | Sequence[str], vtep: str,
                 port: int = 0) -> bool:
        ips = (ips,) if isinstance(ips, str) else tuple(ips)
        # single-address calls recorded as before: most tests name one address
        self.calls.append(("peer_add", network, mac, ips[0] if len(ips) == 1 else ips, vtep)
                          + ((port,) if port else ()))
        if network not in self.networks:
            return False
        self.fdb[(network, mac)] = vtep
        for ip in ips:
            self.neigh[(network, ip)] = mac
        return True

    def peer_del(self, network: str, mac: str, ips: str | Sequence[str]) -> bool:
        ips = (ips,) if isinstance(ips, str) else tuple(ips)
        self.calls.append(("peer_del", network, mac, ips[0] if len(ips) == 1 else ips))
        if network not in self.networks:
            return False
        self.fdb.pop((network, mac), None)
        for ip in ips:
            self.neigh.pop((network, ip), None)
        return True

    def flood_add(self, network: str, vtep: str) -> bool:
        self.calls.append(("flood_add", network, vtep))
        if network not in self.networks or vtep == self.local:
            return False
        self.flood.setdefault(network, set()).add(vtep)
        return True

    def flood_del(self, network: str, vtep: str) -> bool:
        self.calls.append(("flood_del", network, vtep))
        self.flood.get(network, set()).discard(vtep)
        return True


def ep(mac: str, ip: str, vtep: str, network: str = "mynet", vni: int = 4097,
       ) -> tuple[bytes, bytes]:
    rec = EndpointRecord(network, vni, mac, ip, vtep)
    return L.endpoint_key(network, vni, vtep, mac), L.encode_endpoint(rec)


def reg(vtep: str, networks: dict[str, int] | None = None) -> tuple[bytes, bytes]:
    nets = networks if networks is not None else {"mynet": 4097}
    return L.vtep_key(vtep), L.encode_vtep(VtepRecord(vtep, "n", tuple(sorted(nets.items()))))


def tables(host: FakeHost, **kw: Any) -> RemoteTables:
    return RemoteTables(host, L, ME, {"mynet": 4097}, **kw)


M1, M2, M3 = "02:42:c0:a8:37:02", "02:42:c0:a8:37:03", "02:42:c0:a8:37:04"


# --------------------------------------------------------------------------- layout

def test_key_layout_and_parsing() -> None:
    k = L.endpoint_key("mynet", 4097, A, M1)
    assert k == f"/vxdp/endpoints/mynet/4097/{A}/{M1}".encode()
    assert L.kind(k) == "endpoint" and L.owner(k) == A
    assert L.vtep_key(A) == f"/vxdp/vteps/{A}".encode()
    assert L.kind(L.vtep_key(A)) == "vtep" and L.owner(L.vtep_key(A)) == A
    assert L.root == b"/vxdp/"
    # Someone else's prefix, or an unknown shape under ours: not ours.
    assert L.kind(b"/vxdp2/vteps/1.2.3.4") is None
    assert L.kind(b"/vxdp/other/x") is None and L.owner(b"/vxdp/other/x") is None
    root = KeyLayout("/")
    assert root.vtep_key(A) == f"/vteps/{A}".encode() and root.root == b"/"
    assert root.kind(root.endpoint_key("n", 1, A, M1)) == "endpoint"


def test_records_round_trip_and_are_checked_against_their_key() -> None:
    key, value = ep(M1, "192.168.55.2", A)
    rec = L.decode_endpoint(key, value)
    assert rec == EndpointRecord("mynet", 4097, M1, "192.168.55.2", A)
    vkey, vvalue = reg(A)
    assert L.decode_vtep(vkey, vvalue).networks == (("mynet", 4097),)
    with pytest.raises(RecordError, match="disagrees"):
        L.decode_endpoint(L.endpoint_key("mynet", 4097, B, M1), value)
    with pytest.raises(RecordError, match="not JSON"):
        L.decode_endpoint(key, b"{nope")
    with pytest.raises(RecordError, match="lacks"):
        L.decode_endpoint(key, b'{"network": "mynet"}')
    with pytest.raises(RecordError, match="multicast"):
        L.decode_endpoint(L.endpoint_key("mynet", 4097, A, "01:00:5e:00:00:01"),
                          L.encode_endpoint(EndpointRecord("mynet", 4097, "01:00:5e:00:00:01",
                                                           "192.168.55.9", A)))
    bad_vni = value.replace(b'"vni":4097', b'"vni":"4097"')
    with pytest.raises(RecordError, match="VNI"):
        L.decode_endpoint(key, bad_vni)
    with pytest.raises(RecordError):
        L.decode_vtep(vkey, b'{"vtep": "198.18.0.9"}')


# --------------------------------------------------------------------------- applying

def test_endpoints_become_peers_and_flood_entries_and_go_away() -> None:
    h = FakeHost()
    t = tables(h)
    t.put(*reg(A), 2)
    t.put(*ep(M1, "192.168.55.2", A), 3)
    assert h.fdb == {("mynet", M1): A} and h.neigh == {("mynet", "192.168.55.2"): M1}
    assert h.flood == {"mynet": {A}}
    t.delete(ep(M1, "192.168.55.2", A)[0])
    assert h.fdb == {} and h.neigh == {}
    assert h.flood == {"mynet": {A}}, "A still serves the network (registration)"
    t.delete(reg(A)[0])
    assert h.flood == {"mynet": set()}
    assert t.counts() == {"peers": 0, "vteps": 0, "flood": 0, "ignored": 0}


def test_own_keys_other_networks_and_garbage_are_not_applied(caplog: pytest.LogCaptureFixture,
                                                             ) -> None:
    h = FakeHost()
    t = tables(h)
    t.put(*ep(M1, "192.168.55.2", ME), 2)                      # our own key
    t.put(*ep(M2, "192.168.55.3", A, network="other", vni=7), 3)  # not served here
    t.put(L.endpoint_key("mynet", 4097, A, M3), b"garbage", 4)
    t.put(b"/vxdp/unrelated", b"x", 5)
    assert h.calls == [] and h.fdb == {}
    assert t.counts()["ignored"] == 1
    assert "not JSON" in caplog.text


def test_vni_mismatch_is_refused_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    h = FakeHost()
    t = tables(h)
    caplog.set_level(logging.WARNING, "vxdp.store")
    key, value = ep(M1, "192.168.55.2", A, vni=999)
    t.put(key, value, 2)
    t.put(key, value, 3)
    t.put(*reg(A, {"mynet": 999}), 4)
    assert h.fdb == {} and h.flood == {}
    assert t.counts()["ignored"] == 2 + 1
    assert caplog.text.count("has VNI 4097 here") == 1
    assert "serves network mynet with VNI 999" in caplog.text


def test_a_key_that_changes_value_moves_the_entry() -> None:
    h = FakeHost()
    t = tables(h)
    key, value = ep(M1, "192.168.55.2", A)
    t.put(key, value, 2)
    # Same key (same VTEP and MAC), new IP: the old neighbour entry must go.
    t.put(key, L.encode_endpoint(EndpointRecord("mynet", 4097, M1, "192.168.55.9", A)), 3)
    assert h.fdb == {("mynet", M1): A}
    assert h.neigh == {("mynet", "192.168.55.9"): M1}
    assert h.flood == {"mynet": {A}}
    assert ("flood_del", "mynet", A) not in h.calls, "flood list blipped on an update"


def test_moved_container_follows_the_newest_claim() -> None:
    """A container moves from A to B: B's key appears before A's goes. Removing A's key must
    not delete the entry that now points at B (whatever order the keys arrive in)."""
    for order in ("watch", "snapshot"):
        h = FakeHost()
        t = tables(h)
        ka, va = ep(M1, "192.168.55.2", A)
        kb, vb = ep(M1, "192.168.55.2", B)
        if order == "watch":
            t.put(ka, va, 5)
            t.put(kb, vb, 7)
        else:
            t.snapshot([(kb, vb, 7), (ka, va, 5)])   # key order: A < B, but rev decides
        assert h.fdb == {("mynet", M1): B}, order
        t.delete(ka)
        assert h.fdb == {("mynet", M1): B} and h.neigh == {("mynet", "192.168.55.2"): M1}
        assert h.flood == {"mynet": {B}}
        t.delete(kb)
        assert h.fdb == {} and h.neigh == {}


def test_snapshot_is_a_diff_no_stale_no_duplicates() -> None:
    h = FakeHost()
    t = tables(h)
    a1, b1, b2 = ep(M1, "192.168.55.2", A), ep(M2, "192.168.55.3", B), ep(M3, "192.168.55.4", B)
    t.snapshot([(*reg(A), 1), (*a1, 2), (*reg(B), 3), (*b1, 4)])
    assert h.fdb == {("mynet", M1): A, ("mynet", M2): B}
    # Outage: A vanished entirely, B gained M3. The resync removes exactly A's state.
    h.calls.clear()
    removed, seen = t.snapshot([(*reg(B), 3), (*b1, 4), (*b2, 9)])
    assert (removed, seen) == (2, 3)
    assert h.fdb == {("mynet", M2): B, ("mynet", M3): B}
    assert h.flood == {"mynet": {B}}
    assert ("peer_add", "mynet", M2, "192.168.55.3", B) not in h.calls, "re-applied"
    # The same snapshot again changes nothing at all.
    h.calls.clear()
    assert t.snapshot([(*reg(B), 3), (*b1, 4), (*b2, 9)]) == (0, 3)
    assert h.calls == []


def test_static_config_is_kept_under_the_store() -> None:
    h = FakeHost()
    static = EndpointRecord("mynet", 4097, M1, "192.168.55.2", A)
    h.peer_add("mynet", M1, "192.168.55.2", A)
    h.flood_add("mynet", A)
    t = tables(h, static_peers=[static], static_flood=[("mynet", A)])
    kb, vb = ep(M1, "192.168.55.2", B)
    t.put(kb, vb, 3)
    assert h.fdb[("mynet", M1)] == B
    t.delete(kb)
    assert h.fdb == {("mynet", M1): A}, "the static peer is back"
    t.put(*reg(A), 4)
    t.delete(reg(A)[0])
    assert h.flood == {"mynet": {A}}, "the static flood entry was deleted by the store"


def test_a_remote_claim_on_a_local_mac_is_refused() -> None:
    h = FakeHost()
    t = tables(h, local_macs=lambda: {("mynet", M1)})
    t.put(*ep(M1, "192.168.55.2", A), 2)
    assert h.fdb == {} and t.counts()["ignored"] == 1


def test_a_container_that_moves_here_is_not_deleted_by_its_old_key() -> None:
    h = FakeHost()
    local: set[tuple[str, str]] = set()
    t = tables(h, local_macs=lambda: local)
    ka, va = ep(M1, "192.168.55.2", A)
    t.put(ka, va, 5)
    # The container is attached here now (the local port replaces the FDB entry).
    local.add(("mynet", M1))
    assert t.forget_mac("mynet", M1) == 1
    h.calls.clear()
    t.delete(ka)                 # A withdraws it late
    t.put(ka, va, 9)             # or still claims it
    assert not [c for c in h.calls if c[0].startswith("peer")], h.calls


def test_events_name_what_the_store_did() -> None:
    h = FakeHost()
    events: list[dict[str, Any]] = []
    t = tables(h, emit=events.append)
    t.put(*ep(M1, "192.168.55.2", A), 2)
    t.delete(ep(M1, "192.168.55.2", A)[0])
    kinds = [e["kind"] for e in events]
    assert kinds == ["peer_add", "flood_add", "flood_del", "peer_del"]
    assert events[0]["line"] == f"peer_add {M1} 192.168.55.2 dev mynet vni 4097 dst {A} (store)"


# --------------------------------------------------------------------------- EtcdStore offline

class _Host(FakeHost):
    def __init__(self) -> None:
        super().__init__()
        ep1 = EndpointConfig("c1", "02:42:c0:a8:37:0b", IPv4Interface("192.168.55.11/24"))
        net = NetworkConfig("mynet", 4097, endpoints=(ep1,),
                            peers=(PeerConfig(M2, IPv4Address("192.168.55.3"),
                                              IPv4Address(A)),))
        self.net, self.ep1 = net, ep1
        self.config = Config(vtep=VtepConfig(name="n1", local=IPv4Address(ME)), networks=(net,))
        self.events: list[dict[str, Any]] = []

    def local_endpoints(self) -> list[tuple[NetworkConfig, EndpointConfig]]:
        return [(self.net, self.ep1)]

    def emit_event(self, rec: dict[str, Any]) -> None:
        self.events.append(rec)


def test_etcd_store_publishes_without_etcd_and_closes_promptly() -> None:
    pytest.importorskip("aetcd")
    from dataplane.store.etcd import EtcdStore

    async def main() -> dict[str, Any]:
        host = _Host()
        store = EtcdStore(StoreConfig(etcd=("http://198.18.0.100:2379",), ttl=3), host)
        assert store.status()["connected"] is False
        store._run = _never  # type: ignore[method-assign]  # no network in unit tests
        await asyncio.wait_for(store.start(), 1.0)
        st = store.status()
        assert st["published"] == 1 and st["pending"] == 2   # registration + c1
        ep2 = EndpointConfig("c2", "02:42:c0:a8:37:0c", IPv4Interface("192.168.55.12/24"))
        store.publish(host.net, ep2)
        store.withdraw(host.net, host.ep1)
        st = store.status()
        assert st["published"] == 1 and st["pending"] == 3   # c1's delete is pending too
        await asyncio.wait_for(store.close(), 2.0)
        return st

    st = asyncio.run(main())
    assert st["backend"] == "etcd" and st["ttl"] == 3


async def _never() -> None:
    await asyncio.Event().wait()


def test_dual_stack_records_and_their_port() -> None:
    """A dual-stack endpoint's record lists all its addresses; a VTEP on another UDP port
    says so; both reach the host's peer_add, and older records (neither key) still apply."""
    rec = EndpointRecord("mynet", 4097, M1, "192.168.55.2", A,
                         ips=("192.168.55.2", "fd00:55::2"), port=8472)
    key = L.endpoint_key("mynet", 4097, A, M1)
    assert L.decode_endpoint(key, L.encode_endpoint(rec)) == rec
    plain = EndpointRecord("mynet", 4097, M1, "192.168.55.2", A)
    assert b'"ips"' not in L.encode_endpoint(plain) and b'"port"' not in L.encode_endpoint(plain)
    h = FakeHost()
    t = tables(h)
    t.put(key, L.encode_endpoint(rec), 5)
    assert ("peer_add", "mynet", M1, ("192.168.55.2", "fd00:55::2"), A, 8472) in h.calls
    assert h.neigh[("mynet", "fd00:55::2")] == M1
    t.delete(key)
    assert ("mynet", "fd00:55::2") not in h.neigh and ("mynet", "192.168.55.2") not in h.neigh


@pytest.mark.parametrize("bad", [
    {"ips": ["192.168.55.9", "fd00:55::2"]},        # must start with ip
    {"ips": ["192.168.55.2", "192.168.55.2"]},
    {"ips": "fd00:55::2"},
    {"ips": ["192.168.55.2", "ff02::1"]},
    {"port": 70000}, {"port": "4789"}, {"port": True},
])
def test_bad_dual_stack_records(bad: dict[str, object]) -> None:
    import json

    key = L.endpoint_key("mynet", 4097, A, M1)
    d = {"network": "mynet", "vni": 4097, "mac": M1, "ip": "192.168.55.2", "vtep": A, **bad}
    with pytest.raises(RecordError):
        L.decode_endpoint(key, json.dumps(d).encode())
