"""The control plane's half of PMTU signalling (``dataplane.pmtu``): the route MTU asked of the
kernel, and ``PathMtu`` keeping a core's path MTUs current — with a stand-in measurement, and
both cores."""

from __future__ import annotations

import errno
from ipaddress import IPv6Address, ip_address
from typing import Any

from dataplane.pmtu import PathMtu, route_mtu
from dataplane.validate import parse_locals
from tests.strategies import LOCAL, PEER_MAC, REMOTE, REMOTE2, VNI, ZERO_MAC

LOCAL6, REMOTE6 = IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2")


def test_route_mtu_of_loopback_is_capped() -> None:
    """lo's 65536 is larger than any IP packet: no limit, within what a core takes."""
    lo = ip_address("127.0.0.1")
    assert route_mtu(lo, lo, 4789) == 65535


def test_route_mtu_without_the_local_address_is_unknown() -> None:
    # 198.18.0.1 is configured in lab namespaces only, never here
    assert route_mtu(LOCAL, REMOTE, 4789) == 0


class Paths:
    """A stand-in for the kernel's routes: MTU per destination, 0 = no route."""

    def __init__(self) -> None:
        self.mtu: dict[Any, int] = {}
        self.asked: list[tuple[Any, Any, int]] = []
        self.fail: set[Any] = set()

    def __call__(self, local: Any, dst: Any, port: int) -> int:
        self.asked.append((local, dst, port))
        if dst in self.fail:
            raise OSError(errno.EMFILE, "Too many open files")
        return self.mtu.get(dst, 0)


def core(impl: Any) -> Any:
    sw = impl.Switch([LOCAL, LOCAL6])
    sw.add_network(VNI, mtu=1500)
    sw.fdb_add(VNI, PEER_MAC, REMOTE)
    sw.fdb_append(VNI, ZERO_MAC, REMOTE2, dst_port=8472)
    sw.fdb_append(VNI, ZERO_MAC, REMOTE6)
    return sw


def test_refresh_sets_what_the_routes_say(impl: Any) -> None:
    sw = core(impl)
    paths = Paths()
    paths.mtu = {REMOTE: 1400, REMOTE6: 1500}
    pm = PathMtu(sw, parse_locals([LOCAL, LOCAL6]), 4789, measure=paths)
    assert pm.refresh() == [(REMOTE, 0, 1400), (REMOTE6, 0, 1500)]
    assert sw.path_mtus() == {REMOTE: 1400, REMOTE6: 1500}
    # each remote asked once, from the local address of its family, on the VTEP's port
    assert sorted(paths.asked, key=lambda a: (a[1].version, a[1].packed)) == [
        (LOCAL, REMOTE, 4789), (LOCAL, REMOTE2, 4789), (LOCAL6, REMOTE6, 4789)]
    assert pm.refresh() == []                           # nothing changed, nothing set
    paths.mtu[REMOTE] = 1300
    paths.mtu[REMOTE6] = 0                              # route gone: unknown, no check
    assert pm.refresh() == [(REMOTE, 1400, 1300), (REMOTE6, 1500, 0)]
    assert sw.path_mtus() == {REMOTE: 1300}


def test_remotes_that_go_are_forgotten(impl: Any) -> None:
    sw = core(impl)
    paths = Paths()
    paths.mtu = {REMOTE: 1400, REMOTE2: 1400}
    pm = PathMtu(sw, parse_locals([LOCAL, LOCAL6]), 4789, measure=paths)
    pm.refresh()
    sw.fdb_del(VNI, PEER_MAC)
    assert pm.refresh() == [(REMOTE, 1400, 0)]
    assert sw.path_mtus() == {REMOTE2: 1400}


def test_a_question_that_cannot_be_asked_keeps_the_known_mtu(impl: Any) -> None:
    sw = core(impl)
    paths = Paths()
    paths.mtu = {REMOTE: 1400}
    pm = PathMtu(sw, parse_locals([LOCAL, LOCAL6]), 4789, measure=paths)
    pm.refresh()
    paths.fail.add(REMOTE)
    paths.mtu[REMOTE] = 1300
    assert pm.refresh() == []
    assert sw.path_mtus() == {REMOTE: 1400}


def test_a_family_without_local_address_is_not_measured(impl: Any) -> None:
    sw = impl.Switch(LOCAL)
    sw.add_network(VNI)
    sw.fdb_add(VNI, PEER_MAC, REMOTE)
    paths = Paths()
    paths.mtu = {REMOTE: 1400}
    pm = PathMtu(sw, parse_locals(LOCAL), 4789, measure=paths)
    assert pm.refresh() == [(REMOTE, 0, 1400)]
    assert [a[1] for a in paths.asked] == [REMOTE]


class Counting:
    """A core's counters as PathMtu reads them, settable."""

    def __init__(self, sw: Any) -> None:
        self.sw = sw
        self.tx_errors = 0
        self.gso_fallbacks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sw, name)

    def io_counters(self) -> dict[str, Any]:
        return {"underlay": {"tx_errors": self.tx_errors}}

    def offload_counters(self) -> dict[str, int]:
        return {"gso_fallbacks": self.gso_fallbacks}


def test_tick_measures_every_interval_and_after_refusals(impl: Any) -> None:
    sw = Counting(core(impl))
    paths = Paths()
    paths.mtu = {REMOTE: 1400}
    pm = PathMtu(sw, parse_locals([LOCAL, LOCAL6]), 4789, measure=paths, interval=5.0)
    assert pm.tick(100.0) == [(REMOTE, 0, 1400)]        # at once
    paths.mtu[REMOTE] = 1300
    assert pm.tick(101.0) == [] and pm.tick(104.9) == []
    assert pm.tick(105.0) == [(REMOTE, 1400, 1300)]     # interval over
    paths.mtu[REMOTE] = 1200
    sw.gso_fallbacks += 1                               # a GSO send refused for its size
    assert pm.tick(106.0) == [(REMOTE, 1300, 1200)]
    paths.mtu[REMOTE] = 1100
    sw.tx_errors += 2                                   # sends refused
    assert pm.tick(107.0) == [(REMOTE, 1200, 1100)]
    assert pm.tick(108.0) == []


def test_a_new_remote_is_measured_at_the_next_tick(impl: Any) -> None:
    """An address the FDB points at that the last round did not measure (fdb add, a peer, a
    store entry, a learned VTEP) is measured at the next tick, not an interval later; one
    without a route is not asked again every tick."""
    sw = Counting(core(impl))
    paths = Paths()
    paths.mtu = {REMOTE: 1400}
    pm = PathMtu(sw, parse_locals([LOCAL, LOCAL6]), 4789, measure=paths, interval=5.0)
    assert pm.tick(100.0) == [(REMOTE, 0, 1400)]
    new = ip_address("198.18.0.9")
    sw.fdb_add(VNI, "02:00:00:00:00:09", new)
    paths.mtu[new] = 1350
    assert pm.tick(101.0) == [(new, 0, 1350)]
    assert sw.path_mtus()[new] == 1350
    asked = len(paths.asked)
    assert pm.tick(102.0) == [] and pm.tick(103.0) == []
    assert len(paths.asked) == asked                    # REMOTE2 (no route) not re-asked


def test_ticks_list_the_remotes_only_when_the_core_made_new_ones(impl: Any) -> None:
    """remote_vteps() builds an address per VTEP (the reference walks every entry): a tick
    with nothing due asks the cheap remotes_made() and lists only when it changed."""
    class Listing(Counting):
        def __init__(self, sw: Any) -> None:
            super().__init__(sw)
            self.listed = 0

        def remote_vteps(self) -> Any:
            self.listed += 1
            return self.sw.remote_vteps()

    sw = Listing(core(impl))
    paths = Paths()
    pm = PathMtu(sw, parse_locals([LOCAL, LOCAL6]), 4789, measure=paths, interval=5.0)
    pm.tick(100.0)
    listed = sw.listed
    made = sw.remotes_made()
    for t in (101.0, 102.0, 103.0):
        assert pm.tick(t) == []
    assert sw.listed == listed                          # nothing new: never listed
    sw.fdb_add(VNI, "02:00:00:00:00:0a", ip_address("198.18.0.10"))
    assert sw.remotes_made() > made
    paths.mtu[ip_address("198.18.0.10")] = 1400
    assert pm.tick(104.0) == [(ip_address("198.18.0.10"), 0, 1400)]
