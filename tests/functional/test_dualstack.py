"""The walkthrough in IPv6 (issue 12): dual-stack containers on an IPv6 underlay, vxdp on one
node and the kernel's vxlan (Docker-style: proxy nolearning, permanent fdb and neigh entries
for both families) on the other.

manager  198.18.0.1 + 2001:db8:18::1   vxdp (local: both); c1 192.168.55.4 + fd00:55::4 and
                                       c3 192.168.55.5 + fd00:55::5, IPv6 on, DAD as usual
worker   198.18.0.2 + 2001:db8:18::2   kernel vxlan over IPv6; c2 192.168.55.3 + fd00:55::3

Proven: ping6 and sha256-checked TCP over IPv6 both ways; a Neighbor Solicitation is answered
by the local VTEP and nothing of it reaches the remote container (the seed's ARP proof, for
ND); same-node ND reaches the neighbour (as on a bridge); the containers' DAD completes; the
tables, trace and explain speak IPv6; tshark finds every checksum good.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dataplane.lab import KernelVtep
from tests.functional.vxdp_world import (
    VNI,
    Container,
    Vtep,
    World,
    assert_no_checksum_errors,
    network,
    open_world,
    tcp_transfer,
    tshark_rows,
    wait_for,
)

pytestmark = pytest.mark.privileged

M4, W4 = "198.18.0.1", "198.18.0.2"
M6, W6 = "2001:db8:18::1", "2001:db8:18::2"
MTU = 1430          # over an IPv6 underlay (1500 - 70), as the kernel sizes vxlan over IPv6


@dataclass
class DualStack:
    world: World
    c1: Container
    c2: Container
    c3: Container
    kernel: KernelVtep
    vxdp: Vtep


def tentative(w: World, c: Container) -> str:
    """IPv6 addresses still in DAD (or failed it) on the container's eth0."""
    p = w.lab.run(c.name, ["ip", "-6", "-o", "addr", "show", "dev", "eth0"], check=True)
    return "\n".join(line for line in p.stdout.splitlines()
                     if "tentative" in line or "dadfailed" in line)


@pytest.fixture(scope="module")
def ds() -> Iterator[DualStack]:
    with open_world() as w:
        w.lab.underlay("198.18.0.0/24")
        w.lab.host("manager", M4, address6=M6)
        w.lab.host("worker", W4, address6=W6)
        c1 = w.container("manager", "c1", "192.168.55.4", ip6="fd00:55::4")
        c3 = w.container("manager", "c3", "192.168.55.5", ip6="fd00:55::5")
        c2 = w.container("worker", "c2", "192.168.55.3", ip6="fd00:55::3")
        kv = w.lab.kernel_vtep("worker", VNI, W6, mtu=MTU,
                               containers=[(c2.name, c2.mac, f"{c2.ip}/24")],
                               flood=[M6])
        # c2's IPv6 address (no DAD: the kernel side is the oracle, not under test) and the
        # peers as Docker's peerAdd programs them for both families
        lab = w.lab
        lab.run(c2.name, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0",
                          "net.ipv6.conf.eth0.disable_ipv6=0"], check=True)
        lab.run(c2.name, ["ip", "-6", "addr", "add", f"{c2.ip6}/64", "dev", "eth0", "nodad"],
                check=True)
        for c in (c1, c3):
            lab.kernel_peer_add("worker", VNI, c.mac, c.ip, M6)
            lab.run("worker", ["ip", "-6", "neigh", "add", c.ip6, "lladdr", c.mac, "dev",
                               kv.vxlan, "nud", "permanent"], check=True)
        v = w.start_vxdp("manager", w.vtep_config("manager", [M4, M6], [network(
            "mynet", VNI, endpoints=[c1, c3], peers=[(c2, W6)], flood=[W6], mtu=MTU)]))
        wait_for(lambda: not tentative(w, c1) and not tentative(w, c3), 10,
                 "DAD of the vxdp containers' IPv6 addresses")
        yield DualStack(w, c1, c2, c3, kv, v)
        v.stop()


def test_tables_hold_both_families(ds: DualStack) -> None:
    v = ds.vxdp
    neigh = {r["ip"]: r["lladdr"] for r in v.cli_json("neigh", "show")}
    assert neigh == {ds.c2.ip: ds.c2.mac, ds.c2.ip6: ds.c2.mac}
    text = v.cli("neigh", "show").stdout
    assert f"{ds.c2.ip6} dev mynet lladdr {ds.c2.mac} PERMANENT" in text
    eps = {e["name"]: e for e in v.cli_json("endpoint", "show")}
    assert eps[ds.c1.tap]["addresses"] == [f"{ds.c1.ip}/24", f"{ds.c1.ip6}/64"]
    # the containers kept IPv6 on and got their link-local address, DAD passed
    p = ds.world.lab.run(ds.c1.name, ["ip", "-6", "-o", "addr", "show", "dev", "eth0"])
    assert "fe80::" in p.stdout and ds.c1.ip6 in p.stdout and not tentative(ds.world, ds.c1)


def test_ping6_both_ways(ds: DualStack) -> None:
    w = ds.world
    w.assert_ping(ds.c1, ds.c2.ip6)
    w.assert_ping(ds.c2, ds.c1.ip6)
    # full-size: 1430-byte IPv6 packets inside 1500-byte IPv6 outer datagrams
    p = w.ping(ds.c1, ds.c2.ip6, "-s", str(MTU - 48), "-M", "do", count=2)
    assert p.returncode == 0 and "2 received" in p.stdout, p.stdout + p.stderr
    w.assert_ping(ds.c1, ds.c2.ip)       # and IPv4 on the same containers


@pytest.mark.parametrize("direction", ["to_kernel", "from_kernel"])
def test_tcp_over_ipv6_overlay(ds: DualStack, direction: str) -> None:
    server, client = (ds.c2, ds.c1) if direction == "to_kernel" else (ds.c1, ds.c2)
    t = tcp_transfer(ds.world, server, client, 2 * 1024 * 1024, seed=31,
                     server_ip=server.ip6)
    assert t.sent == t.received and t.sent_sha == t.received_sha == t.echoed_sha
    assert t.peer == client.ip6
    assert_no_checksum_errors(ds.world, ds.c1, ds.c2)


def test_nd_is_answered_locally_and_never_crosses(ds: DualStack) -> None:
    """The seed's ARP proof, for ND: c1 forgets c2's link-layer address and pings it; the NS
    is answered by vxdp (proxy_replies counts it), and c2 — the container whose address was
    asked for — sees no solicitation from c1 at all."""
    w, lab = ds.world, ds.world.lab
    lab.run(ds.c1.name, ["ip", "-6", "neigh", "flush", "dev", "eth0"], check=True)
    before = ds.vxdp.stats()["counters"]["proxy_replies"]
    sniff = w.tcpdump(ds.c2, f"icmp6 and ether src {ds.c1.mac}", extra=("-l", "-nn", "-e"))
    pcap = os.path.join(w.tmp, "nd.pcap")
    wire = lab.tcpdump("manager", "eth0", "ip6 and udp port 4789",
                       extra=("-q", "-U", "--immediate-mode", "-w", pcap))
    w.assert_ping(ds.c1, ds.c2.ip6)
    time.sleep(0.3)
    wire.stop()
    out = sniff.stop()
    assert "neighbor solicitation" not in out, out
    assert "echo request" in out            # the pings themselves did arrive
    assert ds.vxdp.stats()["counters"]["proxy_replies"] > before
    # and on the underlay: echo requests from c1, not one solicitation
    rows = tshark_rows(w, "manager", pcap, ["ipv6.src", "icmpv6.type"])
    crossed = [r["icmpv6.type"] for r in rows if r["ipv6.src"][:1] == [M6]]
    assert ["128"] in crossed and not [t for t in crossed if "135" in t], crossed
    n = lab.run(ds.c1.name, ["ip", "-6", "neigh", "show", ds.c2.ip6]).stdout
    assert ds.c2.mac in n, n


def test_same_node_nd_reaches_the_neighbour(ds: DualStack) -> None:
    """c1 and c3 on one node: c1's NS for c3 is flooded to c3 (the bridge part), which
    answers itself; the proxy stays silent (c3 is a local endpoint)."""
    w, lab = ds.world, ds.world.lab
    lab.run(ds.c1.name, ["ip", "-6", "neigh", "flush", "dev", "eth0"], check=True)
    sniff = w.tcpdump(ds.c3, "icmp6 and ip6[40] == 135", extra=("-l", "-nn"))
    w.assert_ping(ds.c1, ds.c3.ip6)
    out = sniff.stop()
    assert f"who has {ds.c3.ip6}" in out, out


def test_trace_and_explain_speak_ipv6(ds: DualStack) -> None:
    v, w = ds.vxdp, ds.world
    out = v.cli("explain", "--from", ds.c1.tap, "--to", ds.c2.ip6).stdout
    assert "Neighbor Solicitation" in out and "answered locally" in out, out
    assert f"to VTEP {W6}" in out, out
    # a live trace of one NS and its answer
    w.lab.run(ds.c1.name, ["ip", "-6", "neigh", "flush", "dev", "eth0"], check=True)
    import subprocess
    import sys

    from dataplane.lab.vxdp import PACKAGE_ROOT
    tr = subprocess.Popen([sys.executable, "-m", "dataplane", "-s", v.sock, "trace",
                           "--count", "3", "--port", ds.c1.tap], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=PACKAGE_ROOT)
    time.sleep(0.5)
    w.ping(ds.c1, ds.c2.ip6, count=2)
    try:
        text, _ = tr.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        tr.terminate()
        text, _ = tr.communicate()
    assert f"ICMP6 neighbor-solicitation who-has {ds.c2.ip6}" in text, text
    assert "proxy Neighbor Advertisement written back" in text, text
    assert f"ICMP6 echo-request {ds.c1.ip6} > {ds.c2.ip6}" in text, text


def test_tshark_checksums_over_both_layers(ds: DualStack) -> None:
    w = ds.world
    pcap = os.path.join(w.tmp, "ds.pcap")
    cap = w.lab.tcpdump("manager", "eth0", "ip6 and udp port 4789",
                        extra=("-q", "-U", "--immediate-mode", "-w", pcap))
    w.assert_ping(ds.c1, ds.c2.ip6)
    time.sleep(0.3)
    cap.stop()
    rows = tshark_rows(w, "manager", pcap, ["ipv6.src", "udp.checksum.status",
                                            "icmpv6.type", "icmpv6.checksum.status"])
    ours = [r for r in rows if r["ipv6.src"][:1] == [M6] and r["icmpv6.type"] == ["128"]]
    assert len(ours) >= 3, rows
    for r in ours:
        assert r["ipv6.src"] == [M6, ds.c1.ip6], r
        assert r["udp.checksum.status"] == ["1"] and r["icmpv6.checksum.status"] == ["1"], r


def test_capture_speaks_ipv6(ds: DualStack) -> None:
    """vxdp capture: the inner IPv6 frame on c1's interface and the same packet inside an
    outer IPv6 datagram on the underlay interface (raw IP: either family), read by tshark."""
    import subprocess
    import sys

    from dataplane.lab.vxdp import PACKAGE_ROOT
    w = ds.world
    path = os.path.join(w.tmp, "ds.pcapng")
    cap = subprocess.Popen([sys.executable, "-m", "dataplane", "-s", ds.vxdp.sock, "capture",
                            "-w", path, "--count", "4", "--port", ds.c1.tap],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=PACKAGE_ROOT)
    time.sleep(0.5)
    w.ping(ds.c1, ds.c2.ip6, count=4)
    cap.communicate(timeout=15)
    fields = ["frame.interface_name", "ipv6.src", "ipv6.dst", "vxlan.vni", "icmpv6.type"]
    argv = ["tshark", "-r", path, "-d", "udp.port==4789,vxlan", "-T", "fields",
            "-E", "separator=|"]
    for f in fields:
        argv += ["-e", f]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    rows = [dict(zip(fields, ln.split("|"))) for ln in p.stdout.splitlines() if ln.strip()]
    inner = [r for r in rows if r["frame.interface_name"] == ds.c1.tap
             and r["ipv6.src"] == ds.c1.ip6 and r["icmpv6.type"] == "128"]
    outer = [r for r in rows if r["frame.interface_name"] == "underlay"
             and r["ipv6.src"].split(",") == [M6, ds.c1.ip6]
             and r["ipv6.dst"].split(",") == [W6, ds.c2.ip6]]
    assert inner and outer, p.stdout
    assert all(r["vxlan.vni"] == str(VNI) for r in outer), outer
