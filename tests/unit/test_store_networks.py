"""Networks served from run time on (``docker network create``/``rm``) and the store's
applied state: :meth:`RemoteTables.add_network` / :meth:`RemoteTables.del_network`."""

from __future__ import annotations

from tests.unit.test_store_keys import A, B, M1, M2, FakeHost, ep, reg, tables


def test_a_network_added_later_gets_flood_entries_from_known_registrations() -> None:
    h = FakeHost(networks={"mynet", "n2"})
    t = tables(h)
    t.put(*reg(A, {"mynet": 4097, "n2": 5000}), 2)
    t.put(*ep(M2, "192.168.56.3", A, network="n2", vni=5000), 3)     # not served yet: ignored
    assert h.flood == {"mynet": {A}} and ("n2", M2) not in h.fdb
    t.add_network("n2", 5000)
    assert h.flood == {"mynet": {A}, "n2": {A}}
    # the endpoint record comes with the re-read the store does after add_network
    t.put(*ep(M2, "192.168.56.3", A, network="n2", vni=5000), 3)
    assert h.fdb[("n2", M2)] == A


def test_a_network_removed_drops_what_was_applied_for_it() -> None:
    h = FakeHost(networks={"mynet", "n2"})
    t = tables(h)
    t.add_network("n2", 5000)
    t.put(*reg(A, {"mynet": 4097, "n2": 5000}), 2)
    t.put(*reg(B, {"n2": 5000}), 3)
    t.put(*ep(M1, "192.168.55.2", A), 4)
    t.put(*ep(M2, "192.168.56.3", B, network="n2", vni=5000), 5)
    t.del_network("n2")
    assert ("n2", M2) not in h.fdb and ("mynet", M1) in h.fdb
    assert h.flood.get("n2", set()) == set() and h.flood["mynet"] == {A}
    assert "n2" not in t.local_networks
    t.put(*ep(M2, "192.168.56.4", B, network="n2", vni=5000), 6)    # not ours any more
    assert ("n2", M2) not in h.fdb
