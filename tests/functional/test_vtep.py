"""vxdp VTEPs against each other: the walkthrough's observations as assertions, then isolation
between VNIs, head-end replication, learning/ageing, run-time endpoints and the process's life
cycle (DESIGN.md §2, §4).

Worlds: nodes are namespaces on a 198.18.0.0/24 underlay, containers are namespaces whose eth0
is a TAP owned by the node's ``vxdp run``; overlay 192.168.55.0/24.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys

import pytest

from dataplane import fastpath, netns
from tests.functional.vxdp_world import (
    C1_IP,
    C1_MAC,
    C2_IP,
    C2_MAC,
    C3_IP,
    C3_MAC,
    MANAGER,
    ROOT,
    THIRD,
    UNDERLAY,
    VNI,
    WORKER,
    Walkthrough,
    World,
    build_walkthrough,
    network,
    wait_for,
)

pytestmark = pytest.mark.privileged



def _arp_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " ARP, " in line]


# --------------------------------------------------------------------------- the walkthrough

def test_fdb_show_json_has_peer_and_local_endpoints(wt: Walkthrough) -> None:
    fdb = wt.manager.cli_json("fdb", "show")
    assert fdb == wt.manager.fdb()
    by_mac: dict[str, list[dict]] = {}
    for e in fdb:
        by_mac.setdefault(e["mac"], []).append(e)
    # Docker's peerAdd: the remote container behind the worker's VTEP, permanent.
    (peer,) = by_mac[C2_MAC]
    assert peer["dst"] == WORKER and peer["vni"] == VNI and peer["state"] == "permanent"
    assert "ifname" not in peer
    # Local containers hang off their TAP ports.
    for mac, c in ((C1_MAC, wt.c1), (C3_MAC, wt.c3)):
        (local,) = by_mac[mac]
        assert local["ifname"] == c.tap and local["vni"] == VNI
        assert local["state"] == "permanent" and "dst" not in local
    # The flood list (all-zeros entry) names the other node.
    assert [e["dst"] for e in by_mac["00:00:00:00:00:00"]] == [WORKER]
    # The worker mirrors it: both manager containers behind the manager's VTEP.
    wfdb = {e["mac"]: e for e in wt.worker.fdb()}
    assert wfdb[C1_MAC]["dst"] == MANAGER and wfdb[C3_MAC]["dst"] == MANAGER
    assert wfdb[C2_MAC]["ifname"] == wt.c2.tap
    # Text form: `bridge fdb show` shapes.
    text = wt.manager.cli("fdb", "show").stdout.splitlines()
    assert f"{C2_MAC} dev mynet dst {WORKER} vni {VNI} self permanent" in text
    assert f"{C1_MAC} dev {wt.c1.tap} vni {VNI} master mynet permanent" in text


def test_neigh_show_like_ip_neigh(wt: Walkthrough) -> None:
    lines = wt.manager.cli("neigh", "show").stdout.splitlines()
    # The walkthrough: "192.168.55.3 dev vxlan0 lladdr 02:42:c0:a8:37:03 PERMANENT"
    assert f"{C2_IP} dev mynet lladdr {C2_MAC} PERMANENT" in lines
    worker = wt.worker.cli("neigh", "show").stdout.splitlines()
    assert f"{C1_IP} dev mynet lladdr {C1_MAC} PERMANENT" in worker
    assert f"{C3_IP} dev mynet lladdr {C3_MAC} PERMANENT" in worker
    js = wt.worker.cli_json("neigh", "show")
    assert {(n["ip"], n["lladdr"], n["state"].lower()) for n in js} == {
        (C1_IP, C1_MAC, "permanent"), (C3_IP, C3_MAC, "permanent")}


def test_vtep_runs_the_selected_fast_path(wt: Walkthrough) -> None:
    """VXDP_NO_EXTENSIONS=1 selects the Python reference; otherwise the compiled core is used
    whenever it imports (a silent fall-back to Python would hide a broken build)."""
    if os.environ.get("VXDP_NO_EXTENSIONS", "") not in ("", "0"):
        want = "py"
    else:
        try:
            fastpath.implementation("c")
            want = "c"
        except ImportError:
            want = "py"
    assert wt.manager.impl == wt.worker.impl == want


def test_ping_across_nodes(wt: Walkthrough) -> None:
    w = wt.world
    w.assert_ping(wt.c1, C2_IP)
    w.assert_ping(wt.c2, C3_IP)
    # The container sees the remote container's Docker MAC (from the proxy's ARP answer).
    neigh = w.lab.run(wt.c1.name, ["ip", "neigh", "show", C2_IP]).stdout
    assert C2_MAC in neigh


def test_arp_across_nodes_is_answered_by_the_proxy(wt: Walkthrough) -> None:
    w = wt.world
    before = wt.manager.cli_json("stats")["counters"]["proxy_replies"]
    worker_rx = wt.worker.stats()["underlay"]["rx_packets"]
    cap = w.tcpdump(wt.c2, "arp")
    p = w.arping(wt.c1, C2_IP)
    seen = cap.stop()
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"3 packets transmitted, 3 packets received", p.stdout), p.stdout
    assert C2_MAC in p.stdout.lower()
    # "Nothing here!": no ARP reached the remote container...
    assert _arp_lines(seen) == [], seen
    # ...because the manager's VTEP answered every request itself.
    after = wt.manager.cli_json("stats")["counters"]["proxy_replies"]
    assert after - before >= 3
    # No ARP request crossed the underlay (arping sends ARP only).
    assert wt.worker.stats()["underlay"]["rx_packets"] == worker_rx


def test_arp_between_containers_on_one_node_reaches_the_target(wt: Walkthrough) -> None:
    w = wt.world
    before = wt.manager.counter("counters", "proxy_replies")
    cap = w.tcpdump(wt.c1, "arp")
    p = w.arping(wt.c3, C1_IP)
    cap.wait_for(lambda ls: sum(f"Request who-has {C1_IP}" in ln for ln in ls) >= 3)
    seen = cap.stop()
    assert p.returncode == 0, p.stdout + p.stderr
    assert C1_MAC in p.stdout.lower()
    requests = [line for line in _arp_lines(seen) if f"Request who-has {C1_IP}" in line]
    assert len(requests) >= 3, seen
    assert any(f"Reply {C1_IP} is-at {C1_MAC}" in line for line in _arp_lines(seen)), seen
    # The proxy stays silent for a neighbour that is local.
    assert wt.manager.counter("counters", "proxy_replies") == before


# --------------------------------------------------------------------------- isolation

def test_two_vnis_are_isolated(world: World) -> None:
    """Two networks on one pair of VTEPs, with the *same* IPs and MACs in both: traffic of one
    network never shows up in the other."""
    w = world
    w.hosts(("manager", MANAGER), ("worker", WORKER))
    a1 = w.container("manager", "a1", C1_IP)
    a2 = w.container("worker", "a2", C2_IP)
    b1 = w.container("manager", "b1", C1_IP)
    b2 = w.container("worker", "b2", C2_IP)
    m, k = w.start_all(
        ("manager", w.vtep_config("manager", MANAGER, [
            network("neta", 4097, endpoints=[a1], peers=[(a2, WORKER)], flood=[WORKER]),
            network("netb", 4098, endpoints=[b1], peers=[(b2, WORKER)], flood=[WORKER])])),
        ("worker", w.vtep_config("worker", WORKER, [
            network("neta", 4097, endpoints=[a2], peers=[(a1, MANAGER)], flood=[MANAGER]),
            network("netb", 4098, endpoints=[b2], peers=[(b1, MANAGER)], flood=[MANAGER])])))
    fdb = m.fdb()
    assert {(e["vni"], e.get("ifname")) for e in fdb if e["mac"] == C1_MAC} == {
        (4097, a1.tap), (4098, b1.tap)}

    # Unicast: ping within A works while B's containers see nothing at all.
    caps = {c.name: w.tcpdump(c) for c in (b1, b2)}
    w.assert_ping(a1, C2_IP)
    # Broadcast: a broadcast ping in A is flooded to A's remote container, never to B's.
    a2cap = w.tcpdump(a2, "icmp")
    w.ping(a1, "192.168.55.255", "-b", count=2, wait=0.5)
    a2cap.wait_for("192.168.55.255")
    seen_a2 = a2cap.stop()
    assert "192.168.55.255" in seen_a2, f"A's broadcast did not reach a2: {seen_a2!r}"
    for name, cap in caps.items():
        out = cap.stop()
        assert out.strip() == "", f"network B's {name} saw network A's traffic:\n{out}"
    # And B works on its own.
    w.assert_ping(b2, C1_IP)
    ports = m.stats()["ports"]
    assert ports[a1.tap]["vni"] == 4097 and ports[b1.tap]["vni"] == 4098
    assert w.stop_all(m, k) == [0, 0]


# --------------------------------------------------------------------------- flooding

def test_head_end_replication_to_every_flood_vtep(world: World) -> None:
    """Three nodes, ``proxy = false``: an ARP broadcast from one container is replicated to
    both other VTEPs (head-end replication) and reaches both remote containers."""
    w = world
    hosts = {"h1": MANAGER, "h2": WORKER, "h3": THIRD}
    w.hosts(*hosts.items())
    cs = {"h1": w.container("h1", "c1", C1_IP), "h2": w.container("h2", "c2", C2_IP),
          "h3": w.container("h3", "c3", C3_IP)}
    configs = []
    for h, addr in hosts.items():
        others = [(cs[o], hosts[o]) for o in hosts if o != h]
        configs.append((h, w.vtep_config(h, addr, [network(
            "mynet", VNI, endpoints=[cs[h]], peers=others,
            flood=[a for _, a in others], proxy=False)], allow=[UNDERLAY])))
    vteps = dict(zip(hosts, w.start_all(*configs)))
    caps = {h: w.tcpdump(cs[h], "arp") for h in ("h2", "h3")}
    p = w.arping(cs["h1"], C2_IP)
    def requests(lines: list[str]) -> list[str]:
        return [ln for ln in lines if f"Request who-has {C2_IP}" in ln and f"tell {C1_IP}" in ln]

    for cap in caps.values():
        cap.wait_for(lambda ls: len(requests(ls)) >= 3)   # arping broadcasts every request
    seen = {h: cap.stop() for h, cap in caps.items()}
    for h in ("h2", "h3"):
        assert len(requests(seen[h].splitlines())) == 3, f"{h}'s container saw:\n{seen[h]}"
        # Each VTEP got its own copy of every request over the underlay.
        assert vteps[h].stats()["underlay"]["rx_packets"] >= 3
    # c2 answers (unicast back through its VTEP's peer entry for c1).
    assert p.returncode == 0 and C2_MAC in p.stdout.lower(), p.stdout + p.stderr
    s1 = vteps["h1"].stats()
    assert s1["counters"]["proxy_replies"] == 0
    # One request, two copies: two datagrams per request went out of h1.
    assert s1["underlay"]["tx_packets"] >= 6
    assert w.stop_all(*vteps.values()) == [0, 0, 0]


def test_learning_and_ageing(world: World) -> None:
    """``learning = true``, no peers, flood lists only: traffic teaches each VTEP where the
    remote container lives (state "learned", right dst); after silence the entry ages out."""
    w = world
    w.hosts(("manager", MANAGER), ("worker", WORKER))
    c1 = w.container("manager", "c1", C1_IP)
    c2 = w.container("worker", "c2", C2_IP)
    opts = {"learning": True, "proxy": False, "ageing": 2}
    m, k = w.start_all(
        ("manager", w.vtep_config("manager", MANAGER, [network(
            "mynet", VNI, endpoints=[c1], flood=[WORKER], **opts)])),
        ("worker", w.vtep_config("worker", WORKER, [network(
            "mynet", VNI, endpoints=[c2], flood=[MANAGER], **opts)])))
    assert not [e for e in m.fdb() if e["mac"] == C2_MAC]
    w.assert_ping(c1, C2_IP)

    def learned(v, mac):  # type: ignore[no-untyped-def]
        return [e for e in v.fdb() if e["mac"] == mac]

    (e,) = learned(m, C2_MAC)
    assert e["state"] == "learned" and e["dst"] == WORKER and e["vni"] == VNI
    (e,) = learned(k, C1_MAC)
    assert e["state"] == "learned" and e["dst"] == MANAGER
    assert m.counter("counters", "learned") >= 1
    # Silence: the entry goes (ageing 2 s, swept every second). A deadline, not a speed test.
    wait_for(lambda: not learned(m, C2_MAC), 15, "the learned entry to age out")
    assert m.counter("counters", "aged") >= 1
    # Permanent entries (the local port, the flood list) never age.
    macs = {e["mac"] for e in m.fdb()}
    assert {C1_MAC, "00:00:00:00:00:00"} <= macs
    assert w.stop_all(m, k) == [0, 0]


# --------------------------------------------------------------------------- run time changes

def test_endpoint_add_and_del_at_run_time(world: World) -> None:
    w = world
    wt = build_walkthrough(w)
    c4 = w.container("manager", "c4", "192.168.55.6")
    out = wt.manager.cli("endpoint", "add", "--network", "mynet", "--name", c4.tap,
                         "--mac", c4.mac, "--address", f"{c4.ip}/24",
                         "--netns", c4.ns, "--ifname", "eth0").stdout
    assert c4.tap in out
    # Docker's peerAdd on the other node, at run time.
    wt.worker.cli("fdb", "add", c4.mac, "dst", MANAGER)
    wt.worker.cli("neigh", "add", c4.ip, "lladdr", c4.mac)
    link = w.lab.run(c4.name, ["ip", "-br", "link", "show", "eth0"]).stdout
    assert c4.mac in link and "UP" in link
    w.assert_ping(c4, C2_IP)
    assert any(e.get("ifname") == c4.tap and e["mac"] == c4.mac for e in wt.manager.fdb())
    assert c4.tap in wt.manager.stats()["ports"]

    wt.manager.cli("endpoint", "del", c4.tap)
    assert "eth0" not in w.links(c4.name)
    assert not any(e["mac"] == c4.mac for e in wt.manager.fdb())
    assert c4.tap not in wt.manager.stats()["ports"]
    assert w.ping(c4, C2_IP, count=1).returncode != 0
    # A second del is an error on stderr, not a crash.
    p = wt.manager.cli("endpoint", "del", c4.tap, check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr and p.stderr.startswith("vxdp:")
    assert wt.manager.alive()
    w.assert_ping(wt.c1, C2_IP)


def test_container_netns_deleted_port_disappears(world: World) -> None:
    w = world
    wt = build_walkthrough(w)
    assert wt.c3.tap in wt.manager.stats()["ports"]
    netns.remove_netns(wt.c3.ns)
    wait_for(lambda: wt.c3.tap not in wt.manager.stats()["ports"], 10,
             "the deleted container's port to leave stats")
    assert wt.manager.alive()
    assert not any(e.get("ifname") == wt.c3.tap for e in wt.manager.fdb())
    w.assert_ping(wt.c1, C2_IP)
    wt.manager.stop()


# --------------------------------------------------------------------------- life cycle

def test_sigterm_exits_0_and_removes_everything(world: World) -> None:
    w = world
    wt = build_walkthrough(w)
    w.assert_ping(wt.c1, C2_IP)
    assert "eth0" in w.links(wt.c1.name)
    # stop() also asserts: control socket removed, no TAP left anywhere.
    assert w.stop_all(wt.manager, wt.worker) == [0, 0]
    for c in (wt.c1, wt.c2, wt.c3):
        assert w.links(c.name) == ["lo"]


def test_container_link_down_is_not_removal(world: World) -> None:
    """A container setting its eth0 down (writes fail with EIO) keeps its port; once the link
    is up again, traffic flows again (ports.py: TAP_DOWN_ERRNOS)."""
    w = world
    wt = build_walkthrough(w)
    w.lab.run(wt.c2.name, ["ip", "link", "set", "eth0", "down"])
    rx = wt.worker.stats()["underlay"]["rx_packets"]
    assert w.ping(wt.c1, C2_IP, count=2, wait=0.5).returncode != 0
    wait_for(lambda: wt.worker.stats()["underlay"]["rx_packets"] - rx >= 2, 10,
             "the pings to reach the worker's VTEP")
    assert wt.worker.alive()
    assert "eth0" in w.links(wt.c2.name), "the VTEP removed the container's eth0"
    port = wt.worker.stats()["ports"].get(wt.c2.tap)
    assert port is not None, "the port of a container whose link is down was removed"
    w.lab.run(wt.c2.name, ["ip", "link", "set", "eth0", "up"])
    w.assert_ping(wt.c1, C2_IP)


def test_sigterm_with_an_open_event_stream(world: World) -> None:
    """``vxdp events`` attached while the VTEP gets SIGTERM: the VTEP exits 0 quietly (no
    traceback in its log), the client's stream ends and the client exits 0."""
    w = world
    w.hosts(("manager", MANAGER))
    c1 = w.container("manager", "c1", C1_IP)
    m = w.start_vxdp("manager", w.vtep_config("manager", MANAGER, [network(
        "mynet", VNI, endpoints=[c1])]))
    ev = subprocess.Popen([sys.executable, "-m", "dataplane", "-s", m.sock, "events"],
                          cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        # An ARP request for an address nobody knows: an l3miss event proves the stream is live.
        def saw_l3miss() -> bool:
            w.arping(c1, "192.168.55.77", count=1)
            ready, _, _ = select.select([ev.stdout], [], [], 0.5)
            return bool(ready) and "l3miss" in ev.stdout.readline()
        wait_for(saw_l3miss, 10, "an l3miss event on the stream")
        m.terminate()
        rc = m.proc.wait(timeout=10)
        out, err = ev.communicate(timeout=10)
    finally:
        if ev.poll() is None:
            ev.kill()
            ev.communicate()
    assert rc == 0, m.log()
    assert ev.returncode == 0, err
    assert "Traceback" not in m.log(), m.log()
    assert m.stop() == 0     # the usual checks: socket and TAPs gone


BAD_CONFIGS = [
    # (TOML, key the message must name)
    ('[vtep]\nlocal = "198.18.0.1"\n[[network]]\nname = "n"\nvni = 99999999\n',
     "network[0].vni"),
    ('[vtep]\nlocal = "198.18.0.1"\nbogus = 1\n', "vtep.bogus"),
    ('[vtep]\nname = "x"\n', "vtep.local"),
    ('[vtep]\nlocal = "198.18.0.1"\n[[network]]\nname = "n"\nvni = 5\n'
     '[[network.endpoint]]\nname = "this-name-is-too-long"\nmac = "02:42:c0:a8:37:04"\n'
     'address = "192.168.55.4/24"\n', "network[0].endpoint[0].name"),
    ('[vtep]\nlocal = "198.18.0.1"\n[[network]]\nname = "n"\nvni = 5\n'
     '[[network.peer]]\nmac = "ff:ff:ff:ff:ff:ff"\naddress = "192.168.55.3"\n'
     'vtep = "198.18.0.2"\n', "network[0].peer[0].mac"),
    ('[vtep]\nlocal = "198.18.0.1"\nallow = ["not-a-net"]\n', "vtep.allow"),
]


def test_bad_config_exits_2_with_one_line(world: World) -> None:
    w = world
    w.hosts(("manager", MANAGER))
    procs = []
    for i, (text, key) in enumerate(BAD_CONFIGS):
        cfg = w.write_config(f"bad{i}", text)
        procs.append((text, key, w.lab.popen(
            "manager", [sys.executable, "-m", "dataplane", "run", cfg], cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)))
    for text, key, proc in procs:
        out, err = proc.communicate(timeout=30)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (text, proc.returncode, err)
        assert len(lines) == 1, f"expected one line on stderr for {key}: {err!r}"
        assert key in lines[0] and "Traceback" not in err, (key, lines[0])
        assert lines[0].startswith("vxdp: ") and out == ""
    assert w.links("manager", kind="tun") == []
