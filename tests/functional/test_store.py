"""Multi-host control plane on etcd (``[store]``), against a real etcd (Debian's etcd-server).

Three VTEPs whose configs list only their own endpoints (no peers, no flood list) plus
``[store]`` with ttl = 3; etcd runs in its own lab namespace on the underlay (198.18.0.100).
The tables are filled by the store alone, and the faults the store must survive are made real:
etcd killed (SIGKILL) and restarted on the same data dir, a VTEP killed with SIGKILL and
restarted, etcd not there yet when the VTEPs start.

The module shares one world (etcd + three VTEPs) between the tests that follow each other;
each test leaves the world as it found it (same endpoints, everyone connected), and the
unreachable-at-start test builds its own. Deadlines are generous, never speed assertions.
"""

from __future__ import annotations

import json
import os
import shutil
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dataplane import netns
from dataplane.lab import EtcdServer, Lab
from tests.functional.vxdp_world import ROOT, VNI, Container, Vtep, World, network, wait_for

pytestmark = [pytest.mark.privileged, pytest.mark.slow]


@pytest.fixture(autouse=True, scope="module")
def _needs_etcd() -> None:
    # A skip from a fixture, not at collection: in CI (strict mode) tests/conftest.py turns
    # it into a failure, so a box without etcd cannot pass by skipping the whole module.
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (apt-get install etcd-server; `make deps` does)")


ETCD_ADDR = "198.18.0.100"
HOSTS = {"h1": "198.18.0.1", "h2": "198.18.0.2", "h3": "198.18.0.3"}
TTL = 3
ZERO = "00:00:00:00:00:00"
NET = "mynet"
# Deadlines (not speed assertions): convergence after a change, and lease expiry + margin.
CONVERGE = 10.0
EXPIRY = TTL + 5.0


# --------------------------------------------------------------------------- helpers

def store_config(w: World, host: str, endpoints: list[Container], url: str) -> dict[str, Any]:
    cfg = w.vtep_config(host, HOSTS[host], [network(NET, VNI, endpoints=endpoints)],
                        allow=["198.18.0.0/24"])
    cfg["store"] = {"etcd": [url], "ttl": TTL}
    return cfg


def remote(v: Vtep) -> dict[str, str]:
    """Remote unicast FDB entries: MAC -> dst (asserting the store made them permanent)."""
    out = {}
    for r in v.fdb():
        if "dst" in r and r["mac"] != ZERO:
            assert r["state"] == "permanent", r
            out[r["mac"]] = r["dst"]
    return out


def flood(v: Vtep) -> set[str]:
    return {r["dst"] for r in v.fdb() if r["mac"] == ZERO}


def neigh(v: Vtep) -> dict[str, str]:
    return {r["ip"]: r["lladdr"] for r in v.neigh()}


def no_duplicates(v: Vtep) -> None:
    rows = v.fdb()
    keys = [(r["mac"], r["vni"], r.get("dst"), r.get("ifname")) for r in rows]
    assert len(keys) == len(set(keys)), f"duplicate FDB rows on {v.name}: {rows}"
    nrows = v.neigh()
    nkeys = [(r["ip"], r["vni"]) for r in nrows]
    assert len(nkeys) == len(set(nkeys)), f"duplicate neighbour rows on {v.name}: {nrows}"


def endpoint_add(v: Vtep, c: Container) -> None:
    v.cli("endpoint", "add", "--network", NET, "--name", c.tap, "--mac", c.mac,
          "--address", f"{c.ip}/24", "--netns", c.ns, "--ifname", "eth0")


def endpoint_del(v: Vtep, c: Container) -> None:
    v.cli("endpoint", "del", c.tap)


@dataclass
class Cluster:
    world: World
    etcd: EtcdServer
    vteps: dict[str, Vtep]
    placed: dict[str, list[Container]]       # host -> containers attached there now
    extra: dict[str, Container]              # spare container namespaces, attached by tests

    def expected(self, host: str) -> tuple[dict[str, str], dict[str, str], set[str]]:
        """What ``host`` should have from the store: remote MAC -> VTEP, IP -> MAC, flood."""
        macs, ips = {}, {}
        for h, cs in self.placed.items():
            if h == host:
                continue
            for c in cs:
                macs[c.mac] = HOSTS[h]
                ips[c.ip] = c.mac
        return macs, ips, {HOSTS[h] for h in self.vteps if h != host}

    def converged(self, hosts: list[str] | None = None) -> bool:
        for h in hosts or list(self.vteps):
            v = self.vteps[h]
            macs, ips, fl = self.expected(h)
            if remote(v) != macs or flood(v) != fl:
                return False
            n = neigh(v)
            if {ip: n.get(ip) for ip in ips} != ips or set(n) - set(ips) - self.local_ips(h):
                return False
        return True

    def local_ips(self, host: str) -> set[str]:
        return {c.ip for c in self.placed[host]}

    def wait_converged(self, what: str, timeout: float = CONVERGE,
                       hosts: list[str] | None = None) -> None:
        try:
            wait_for(lambda: self.converged(hosts), timeout, what)
        except AssertionError:
            detail = {h: (remote(v), sorted(flood(v))) for h, v in self.vteps.items()
                      if v.alive()}
            want = {h: self.expected(h)[0] for h in self.vteps}
            raise AssertionError(f"{what}: not converged within {timeout:.0f}s\n"
                                 f"have {detail}\nwant {want}") from None
        for h in hosts or list(self.vteps):
            no_duplicates(self.vteps[h])

    def ping_all(self) -> None:
        cs = [c for cs in self.placed.values() for c in cs]
        for i, a in enumerate(cs):
            for b in cs[i + 1:]:
                self.world.assert_ping(a, b.ip, count=2)

    def start_vtep(self, host: str) -> Vtep:
        v = self.world.start_vxdp(host, store_config(self.world, host, self.placed[host],
                                                     self.etcd.url))
        self.vteps[host] = v
        return v


def make_etcd(w: World) -> EtcdServer:
    w.lab.host("etcd", ETCD_ADDR)
    data = os.path.join(w.tmp, "etcd-data")
    return EtcdServer(w.lab, "etcd", ETCD_ADDR, data, log_path=os.path.join(w.tmp, "etcd.log"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Lab() as lab:
        prefix = lab.prefix
        with World(lab) as w:
            w.hosts(*HOSTS.items())
            etcd = make_etcd(w)
            etcd.start()
            placed = {
                "h1": [w.container("h1", "c1", "192.168.55.11"),
                       w.container("h1", "c4", "192.168.55.14")],
                "h2": [w.container("h2", "c2", "192.168.55.12")],
                "h3": [w.container("h3", "c3", "192.168.55.13")],
            }
            extra = {n: w.container(h, n, ip) for n, h, ip in (
                ("c5", "h2", "192.168.55.15"), ("c6", "h3", "192.168.55.16"),
                ("c7", "h1", "192.168.55.17"))}
            started = w.start_all(*((h, store_config(w, h, placed[h], etcd.url))
                                    for h in HOSTS))
            cl = Cluster(w, etcd, dict(zip(HOSTS, started)), placed, extra)
            yield cl
            for v in cl.vteps.values():
                if v.alive():
                    v.stop()        # asserts a clean exit (lease revoked, TAPs gone)
                    assert "Traceback" not in v.log(), v.log()
            etcd.stop()
    assert not [n for n in netns.list_netns() if n.startswith(prefix)]


# --------------------------------------------------------------------------- tests

def test_store_fills_the_tables_and_everyone_reaches_everyone(cluster: Cluster) -> None:
    # No config lists a peer or a flood entry: everything remote comes from etcd.
    cluster.wait_converged("initial sync of three VTEPs")
    h1 = cluster.vteps["h1"]
    c2 = cluster.placed["h2"][0]
    row = next(r for r in h1.fdb() if r["mac"] == c2.mac)
    assert row == {**row, "dst": HOSTS["h2"], "vni": VNI, "state": "permanent"}
    assert neigh(h1)[c2.ip] == c2.mac
    cluster.ping_all()


def test_endpoints_added_and_removed_at_run_time(cluster: Cluster) -> None:
    c5 = cluster.extra["c5"]
    h2 = cluster.vteps["h2"]
    h1 = cluster.vteps["h1"]
    # `vxdp events` on h1 shows what the store did.
    events = subprocess.Popen([sys.executable, "-m", "dataplane", "-s", h1.sock, "events",
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT)
    time.sleep(0.5)
    endpoint_add(h2, c5)
    cluster.placed["h2"].append(c5)
    cluster.wait_converged("endpoint c5 added on h2 → present on h1 and h3")
    c1, c3 = cluster.placed["h1"][0], cluster.placed["h3"][0]
    cluster.world.assert_ping(c1, c5.ip, count=2)
    cluster.world.assert_ping(c3, c5.ip, count=2)

    endpoint_del(h2, c5)
    cluster.placed["h2"].remove(c5)
    cluster.wait_converged("endpoint c5 removed on h2 → gone from h1 and h3")
    for h in ("h1", "h3"):
        assert c5.mac not in remote(cluster.vteps[h])
        assert c5.ip not in neigh(cluster.vteps[h])
    # h2 still serves the network (its registration): it stays in the others' flood lists.
    assert HOSTS["h2"] in flood(cluster.vteps["h1"])
    events.terminate()
    out, _ = events.communicate(timeout=10)
    recs = [json.loads(line) for line in out.splitlines() if line.strip()]
    mine = [(r["kind"], r.get("vtep")) for r in recs if r.get("mac") == c5.mac]
    assert mine == [("peer_add", HOSTS["h2"]), ("peer_del", HOSTS["h2"])], recs
    assert all(r.get("source") == "store" for r in recs if r.get("mac") == c5.mac)


def test_etcd_lost_then_back_resyncs_without_stale_or_duplicates(cluster: Cluster) -> None:
    cluster.wait_converged("healthy before the outage")
    etcd = cluster.etcd
    etcd.kill(signal.SIGKILL)
    h1, h3 = cluster.vteps["h1"], cluster.vteps["h3"]
    c1, c4 = cluster.placed["h1"]
    c2, c3 = cluster.placed["h2"][0], cluster.placed["h3"][0]
    # Forwarding continues on the last-known tables.
    cluster.world.assert_ping(c1, c2.ip, count=2)
    cluster.world.assert_ping(c3, c4.ip, count=2)
    # Changes during the outage: c4 leaves h1, c6 joins h3. Nobody can hear of it yet...
    endpoint_del(h1, c4)
    c6 = cluster.extra["c6"]
    endpoint_add(h3, c6)
    time.sleep(1.0)
    assert c4.mac in remote(cluster.vteps["h2"]), "h2 forgot c4 while etcd was away"
    assert c6.mac not in remote(cluster.vteps["h2"])
    cluster.world.assert_ping(c2, c3.ip, count=2)
    for v in cluster.vteps.values():
        assert v.alive(), v.log()

    # ...until etcd is back (same data dir): the pending changes land, the others resync.
    etcd.start()
    cluster.placed["h1"].remove(c4)
    cluster.placed["h3"].append(c6)
    cluster.wait_converged("resync after etcd came back")
    assert c4.mac not in remote(cluster.vteps["h2"]) and c4.mac not in remote(h3)
    cluster.world.assert_ping(c1, c6.ip, count=2)

    # A change made after the return propagates as usual; then restore the world.
    endpoint_add(h1, c4)
    cluster.placed["h1"].append(c4)
    cluster.wait_converged("endpoint added after etcd returned")
    endpoint_del(h3, c6)
    cluster.placed["h3"].remove(c6)
    cluster.wait_converged("world restored")
    for v in cluster.vteps.values():
        assert "Traceback" not in v.log(), v.log()
    cluster.ping_all()


def test_killed_vtep_vanishes_within_ttl_and_comes_back(cluster: Cluster) -> None:
    cluster.wait_converged("healthy before the kill")
    h3 = cluster.vteps["h3"]
    c3 = cluster.placed["h3"][0]
    os.kill(h3.pid, signal.SIGKILL)
    h3.proc.wait(timeout=10)
    h3.returncode = h3.proc.returncode
    t0 = time.monotonic()
    others = ["h1", "h2"]

    def gone() -> bool:
        return all(c3.mac not in remote(cluster.vteps[h]) and
                   HOSTS["h3"] not in flood(cluster.vteps[h]) and
                   c3.ip not in neigh(cluster.vteps[h]) for h in others)

    wait_for(gone, EXPIRY, f"h3's endpoints gone from h1, h2 within ttl ({TTL}s) + margin")
    took = time.monotonic() - t0
    print(f"h3 killed: its endpoints vanished from the others after {took:.1f}s (ttl {TTL}s)")
    for h in others:
        no_duplicates(cluster.vteps[h])
    cluster.world.assert_ping(cluster.placed["h1"][0], cluster.placed["h2"][0].ip, count=2)

    # Restarted with the same config: it registers again and traffic to c3 resumes.
    cluster.start_vtep("h3")
    cluster.wait_converged("h3 restarted and re-registered")
    cluster.world.assert_ping(cluster.placed["h1"][0], c3.ip, count=2)
    cluster.world.assert_ping(c3, cluster.placed["h2"][0].ip, count=2)


def test_clean_stop_withdraws_at_once(cluster: Cluster) -> None:
    """SIGTERM revokes the lease: the others drop its endpoints without waiting for the TTL
    (checked by waiting less than the TTL)."""
    cluster.wait_converged("healthy before the stop")
    h2 = cluster.vteps["h2"]
    c2 = cluster.placed["h2"][0]
    h2.stop()
    wait_for(lambda: all(c2.mac not in remote(cluster.vteps[h]) for h in ("h1", "h3")),
             TTL - 1.0, "h2's endpoints withdrawn by lease revocation (before its TTL)")
    cluster.start_vtep("h2")
    cluster.wait_converged("h2 back")


def test_etcd_unreachable_at_start_then_converges() -> None:
    with Lab() as lab:
        prefix = lab.prefix
        with World(lab) as w:
            w.hosts(("h1", HOSTS["h1"]), ("h2", HOSTS["h2"]))
            etcd = make_etcd(w)
            c1 = w.container("h1", "c1", "192.168.55.11")
            c2 = w.container("h2", "c2", "192.168.55.12")
            # Before etcd exists: the VTEPs come up and serve their static config.
            v1, v2 = w.start_all(("h1", store_config(w, "h1", [c1], etcd.url)),
                                 ("h2", store_config(w, "h2", [c2], etcd.url)))
            time.sleep(1.0)
            for v in (v1, v2):
                assert v.alive(), v.log()
                assert not remote(v) and not flood(v)
                assert [e["name"] for e in v.endpoints()] == [c1.tap if v is v1 else c2.tap]
            assert "unreachable" in v1.log(), v1.log()
            assert w.ping(c1, c2.ip, count=1, wait=1).returncode != 0

            etcd.start()
            wait_for(lambda: remote(v1) == {c2.mac: HOSTS["h2"]} and
                     remote(v2) == {c1.mac: HOSTS["h1"]} and
                     flood(v1) == {HOSTS["h2"]} and flood(v2) == {HOSTS["h1"]},
                     CONVERGE + 5.0, "both VTEPs synced once etcd came up")
            # The failed ping above left c1's kernel resolving (then failing) 192.168.55.12 on
            # its own schedule; start c1 from a clean neighbour table.
            lab.run(c1.ns, ["ip", "neigh", "flush", "dev", "eth0"])
            w.assert_ping(c1, c2.ip, count=2)
            w.stop_all(v1, v2)
            etcd.stop()
    assert not [n for n in netns.list_netns() if n.startswith(prefix)]


def test_demo_with_the_store() -> None:
    """``vxdp demo --store etcd``, unattended: the walkthrough with etcd filling the tables,
    and nothing left behind (namespaces, etcd, VTEPs)."""
    p = subprocess.run([sys.executable, "-m", "dataplane", "demo", "--store", "etcd"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180,
                       cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr
    out = p.stdout
    for title in ("The store fills the tables", "FDB and ARP tables", "Ping across nodes",
                  "Containers come and go", "Counters"):
        assert title in out, out
    # The keys in etcd, and the peer they became on the manager.
    assert "/vxdp/vteps/198.18.0.2" in out and "/vxdp/endpoints/mynet/4097/198.18.0.2/" in out
    assert "02:42:c0:a8:37:03 dev mynet dst 198.18.0.2 vni 4097 self permanent" in out
    assert "02:42:c0:a8:37:06 dev mynet dst 198.18.0.2 vni 4097 self permanent" in out
    assert " 0% packet loss" in out and "Traceback" not in out + p.stderr
    # nothing left with the demo's own prefix (other suites may run on the machine meanwhile)
    pm = re.search(r"prefix:\s+(vxd\d+-)", out)
    assert pm, "the demo did not print its namespace prefix"
    assert not [n for n in netns.list_netns() if n.startswith(pm.group(1))]
