"""vxdp over an IPv6 underlay against the Linux kernel's vxlan over IPv6 (issue 12), and one
VTEP serving both families at once.

manager   198.18.0.1 + 2001:db8:18::1   vxdp run (local: both), container c1 (192.168.55.4)
worker6   198.18.0.2 + 2001:db8:18::2   kernel vxlan over IPv6 (local 2001:db8:18::2),
                                        Docker-style: proxy nolearning, static fdb/neigh; c2
worker4   198.18.0.3                    kernel vxlan over IPv4; c3 (192.168.55.5)

The underlay veths keep their default offloads (the kernel's outer UDP checksums and inner
TCP checksums arrive partial, its TSO frames whole). tshark (``-d udp.port==4789,vxlan``)
decodes what vxdp sends: outer IPv6 with a good UDP checksum (mandatory over IPv6), the
network's flow label, inner checksums good. TCP in both directions crosses with the offloads
on: TSO frames cut and sent with UDP GSO over IPv6, the kernel's TSO frames cut on receive.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dataplane.lab import KernelVtep, kernel
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
)

pytestmark = pytest.mark.privileged

M4, W6_4, W4 = "198.18.0.1", "198.18.0.2", "198.18.0.3"
M6, W6 = "2001:db8:18::1", "2001:db8:18::2"
LABEL = 0xABCDE
NBYTES = 2 * 1024 * 1024
#: An IPv6 outer header is 20 bytes longer: 1500 - 70, what the kernel gives a vxlan device
#: over IPv6 (VXLAN6_HEADROOM) and what Docker would configure on such an underlay.
MTU = 1430


@dataclass
class Six:
    world: World
    c1: Container       # behind vxdp (manager)
    c2: Container       # behind the kernel over IPv6 (worker6)
    c3: Container       # behind the kernel over IPv4 (worker4)
    kernel6: KernelVtep
    vxdp: Vtep
    config: dict[str, Any]


def manager_config(w: World, c1: Container, c2: Container, c3: Container,
                   flowlabel: int | str = 0, **vtep: Any) -> dict[str, Any]:
    return w.vtep_config("manager", [M4, M6], [network(
        "mynet", VNI, endpoints=[c1], peers=[(c2, W6), (c3, W4)], flood=[W6, W4],
        flowlabel=flowlabel, mtu=MTU)], allow=["2001:db8:18::/64", "198.18.0.0/24"], **vtep)


def restart(six: Six, config: dict[str, Any], env: dict[str, str] | None = None) -> Vtep:
    six.vxdp.stop()
    six.vxdp = six.world.start_vxdp("manager", config, env=env)
    return six.vxdp


@pytest.fixture(scope="module")
def six() -> Iterator[Six]:
    with open_world() as w:
        w.lab.underlay("198.18.0.0/24")
        w.lab.host("manager", M4, address6=M6)
        w.lab.host("worker6", W6_4, address6=W6)
        w.lab.host("worker4", W4)
        c1 = w.container("manager", "c1", "192.168.55.4")
        c2 = w.container("worker6", "c2", "192.168.55.3")
        c3 = w.container("worker4", "c3", "192.168.55.5")
        k6 = w.lab.kernel_vtep("worker6", VNI, W6, containers=[(c2.name, c2.mac, f"{c2.ip}/24")],
                               peers=[(c1.mac, c1.ip, M6)], flood=[M6], mtu=MTU)
        w.lab.kernel_vtep("worker4", VNI, W4, containers=[(c3.name, c3.mac, f"{c3.ip}/24")],
                          peers=[(c1.mac, c1.ip, M4)], flood=[M4], mtu=MTU)
        cfg = manager_config(w, c1, c2, c3)
        v = w.start_vxdp("manager", cfg)
        yield Six(w, c1, c2, c3, k6, v, cfg)
        v.stop()


def test_kernel_peer_runs_over_ipv6(six: Six) -> None:
    lab = six.world.lab
    text = lab.run("worker6", ["ip", "-d", "link", "show", six.kernel6.vxlan]).stdout
    assert f"local {W6}" in text and "nolearning proxy" in text
    fdb = lab.run("worker6", ["bridge", "fdb", "show", "dev", six.kernel6.vxlan]).stdout
    assert f"{six.c1.mac} dst {M6} self permanent" in fdb


def test_fdb_shows_remotes_of_both_families(six: Six) -> None:
    rows = six.vxdp.request("fdb.show")
    dsts = {r["mac"]: r.get("dst") for r in rows if r.get("dst")}
    assert dsts[six.c2.mac] == W6 and dsts[six.c3.mac] == W4
    text = six.vxdp.cli("fdb", "show").stdout
    assert f"dst {W6}" in text and f"dst {W4}" in text


def test_ping_both_ways_over_each_family(six: Six) -> None:
    w = six.world
    before = six.vxdp.stats()
    for c in (six.c2, six.c3):
        w.assert_ping(six.c1, c.ip)
        w.assert_ping(c, six.c1.ip)
        # full-size frames: 1430-byte packets make 1500-byte outer IPv6 datagrams
        p = w.ping(six.c1, c.ip, "-s", str(MTU - 28), "-M", "do", count=2)
        assert p.returncode == 0 and "2 received" in p.stdout, p.stdout + p.stderr
    after = six.vxdp.stats()
    assert sum(after["drops"].values()) == sum(before["drops"].values()), after["drops"]


@pytest.mark.parametrize("direction", ["vxdp_to_kernel", "kernel_to_vxdp"])
def test_tcp_over_ipv6_underlay(six: Six, direction: str) -> None:
    c1, c2 = six.c1, six.c2
    server, client = (c2, c1) if direction == "vxdp_to_kernel" else (c1, c2)
    before = six.vxdp.stats()["offload"]["counters"]
    t = tcp_transfer(six.world, server, client, NBYTES, seed=11 if server is c2 else 12)
    after = six.vxdp.stats()["offload"]["counters"]
    if direction == "vxdp_to_kernel":
        # the container's TSO frames were cut, and went out as UDP GSO sends over IPv6
        assert after["tso_segments"] > before["tso_segments"], after
        assert after["gso_sends"] > before["gso_sends"], after
    else:
        # the kernel's TSO frames came whole, partial checksums completed, written coalesced
        assert after["rx_superframes"] > before["rx_superframes"], after
    assert t.sent == t.received == NBYTES
    assert t.sent_sha == t.received_sha == t.echoed_sha
    assert six.vxdp.alive()
    assert_no_checksum_errors(six.world, c1, c2)
    # the kernel's outer UDP checksums over IPv6 were good (or partial, i.e. never on a
    # wire): the manager's stack counted no UDPv6 checksum error
    assert snmp_udp6(six.world, "manager").get("Udp6InCsumErrors", 0) == 0


def snmp_udp6(w: World, ns: str) -> dict[str, int]:
    """/proc/net/snmp6 of a lab namespace."""
    out = {}
    for line in w.lab.run(ns, ["cat", "/proc/net/snmp6"]).stdout.splitlines():
        k, _, v = line.partition(" ")
        if k.startswith("Udp6"):
            out[k] = int(v.strip())
    return out


def test_tshark_decodes_ipv6_outer_headers(six: Six) -> None:
    w = six.world
    restart(six, manager_config(w, six.c1, six.c2, six.c3, flowlabel=LABEL))
    pcap = os.path.join(w.tmp, "underlay6.pcap")
    cap = w.lab.tcpdump("manager", "eth0", "ip6 and udp port 4789",
                        extra=("-q", "-U", "--immediate-mode", "-w", pcap))
    w.assert_ping(six.c1, six.c2.ip)
    time.sleep(0.3)
    cap.stop()
    fields = ["ipv6.src", "ipv6.dst", "ipv6.flow", "ipv6.hlim", "udp.srcport", "udp.dstport",
              "udp.checksum.status", "vxlan.vni", "ip.src", "icmp.type",
              "icmp.checksum.status"]
    rows = tshark_rows(w, "manager", pcap, fields)
    ours = [r for r in rows if r["ipv6.src"] == [M6] and r.get("icmp.type")]
    theirs = [r for r in rows if r["ipv6.src"] == [W6] and r.get("icmp.type")]
    assert len(ours) >= 3 and len(theirs) >= 3, rows
    for r in ours:
        assert r["ipv6.dst"] == [W6] and r["udp.dstport"] == ["4789"], r
        assert r["vxlan.vni"] == [str(VNI)] and r["ip.src"] == [six.c1.ip], r
        assert int(r["ipv6.flow"][0], 16) == LABEL and r["ipv6.hlim"] == ["64"], r
        # 1 = good: vxdp computes the UDP checksum every IPv6 datagram needs
        assert r["udp.checksum.status"] == ["1"], r
        assert r["icmp.checksum.status"] == ["1"], r
        assert 49152 <= int(r["udp.srcport"][0]) <= 65535
    for r in theirs:
        # the kernel sends the fixed label 0 by default; vxdp decoded its VNI and ICMP
        assert int(r["ipv6.flow"][0], 16) == 0 and r["vxlan.vni"] == [str(VNI)], r


def test_pure_python_path_over_ipv6(six: Six) -> None:
    """The reference core behind the burst interface sends and receives IPv6 too."""
    w = six.world
    py = restart(six, six.config, env={"VXDP_NO_EXTENSIONS": "1"})
    assert py.stats()["vtep"]["fastpath"] == "py"
    w.assert_ping(six.c1, six.c2.ip)
    w.assert_ping(six.c2, six.c1.ip)
    w.assert_ping(six.c1, six.c3.ip)
    t = tcp_transfer(w, six.c2, six.c1, 256 * 1024, seed=13)
    assert t.sent == t.received and t.sent_sha == t.received_sha == t.echoed_sha
    restart(six, six.config)


def test_zero_udp_checksum_needs_udp6zerocsumrx(six: Six) -> None:
    """A kernel peer with udp6zerocsumtx sends a zero outer checksum: dropped by the IPv6
    stack as the kernel's own vxlan drops it (Udp6InCsumErrors), accepted with
    ``udp6zerocsumrx = true``."""
    w = six.world
    kv = six.kernel6
    # changelink refuses the flag (vxlan_nl2flag): the device is made again with it
    kernel.recreate_vxlan(kv, vxlan_udp_zero_csum6_tx=1)
    kernel.peer_add(kv, six.c1.mac, six.c1.ip, M6)
    kernel.flood_add(kv, M6)
    assert "udp6zerocsumtx" in w.lab.run("worker6", ["ip", "-d", "link", "show",
                                                     kv.vxlan]).stdout
    before = snmp_udp6(w, "manager").get("Udp6InCsumErrors", 0)
    p = w.ping(six.c2, six.c1.ip, count=2)
    assert "0 received" in p.stdout, p.stdout
    assert snmp_udp6(w, "manager").get("Udp6InCsumErrors", 0) > before
    restart(six, manager_config(w, six.c1, six.c2, six.c3, udp6zerocsumrx=True))
    w.assert_ping(six.c2, six.c1.ip)
