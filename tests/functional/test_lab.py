"""Lab topologies against the kernel: underlay, Docker-style kernel VTEPs, teardown.

Reproduces the walkthrough (reference/docker-overlay-walkthrough.txt) with two "nodes" on a
198.18.0.0/24 underlay and VNI 4097, and checks what ``ip``/``bridge`` report against it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dataplane import netns
from dataplane.errors import VxdpError
from dataplane.lab import Lab, cleanup_prefix

pytestmark = pytest.mark.privileged

C1 = ("c1", "02:42:c0:a8:37:04", "192.168.55.4/24")   # manager's container
C2 = ("c2", "02:42:c0:a8:37:03", "192.168.55.3/24")   # worker1's container
H1, H2 = "198.18.0.1", "198.18.0.2"
VNI = 4097


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        prefix = lab.prefix
        yield lab
    assert not [n for n in netns.list_netns() if n.startswith(prefix)]


def walkthrough(lab: Lab, *, tx_csum_off: bool = False) -> None:
    lab.underlay()
    lab.host("h1", H1, tx_csum_off=tx_csum_off)
    lab.host("h2", H2, tx_csum_off=tx_csum_off)
    lab.kernel_vtep("h1", VNI, H1, containers=[C1], peers=[(C2[1], C2[2].split("/")[0], H2)],
                    flood=[H2])
    lab.kernel_vtep("h2", VNI, H2, containers=[C2], peers=[(C1[1], C1[2].split("/")[0], H1)],
                    flood=[H1])


def test_underlay_hosts_ping(lab: Lab) -> None:
    ul = lab.underlay()
    assert ul == f"{lab.prefix}ul"
    assert lab.host("h1", H1) == f"{lab.prefix}h1"
    lab.host("h2", H2)
    out = lab.run("h1", ["ping", "-c", "1", "-W", "2", H2]).stdout
    assert " 0% packet loss" in out
    (eth0,) = json.loads(lab.run("h2", ["ip", "-j", "addr", "show", "dev", "eth0"]).stdout)
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"]] == [(H2, 24)]
    ports = json.loads(lab.run("ul", ["ip", "-j", "link", "show", "master", "br0"]).stdout)
    assert sorted(p["ifname"] for p in ports) == ["v-h1", "v-h2"]


def test_kernel_vteps_match_docker_and_ping_across_vxlan(lab: Lab) -> None:
    walkthrough(lab)
    # `ip -d link show vxlan0` in the walkthrough:
    #   vxlan id 4097 srcport 0 0 dstport 4789 proxy l2miss l3miss ageing 300, mtu 1450, master br0
    (vx,) = json.loads(lab.run("h1", ["ip", "-j", "-d", "link", "show", "vxlan4097"]).stdout)
    data = vx["linkinfo"]["info_data"]
    assert vx["mtu"] == 1450 and vx["master"] == "br4097"
    assert (data["id"], data["port"], data["local"], data["ageing"]) == (VNI, 4789, H1, 300)
    assert data["proxy"] is True and data["l2miss"] is True and data["l3miss"] is True
    assert data["learning"] is False
    text = lab.run("h1", ["ip", "-d", "link", "show", "vxlan4097"]).stdout
    assert "vxlan id 4097" in text and "dstport 4789 nolearning proxy l2miss l3miss" in text
    # `bridge fdb show`: the peer as "dst VTEP self permanent", plus the flood entry.
    fdb = lab.run("h1", ["bridge", "fdb", "show", "dev", "vxlan4097"]).stdout
    assert "02:42:c0:a8:37:03 dst 198.18.0.2 self permanent" in fdb
    assert "00:00:00:00:00:00 dst 198.18.0.2 self permanent" in fdb
    # `ip neigh show`: "192.168.55.3 dev vxlan0 lladdr 02:42:c0:a8:37:03 PERMANENT"
    neigh = lab.run("h1", ["ip", "neigh", "show", "dev", "vxlan4097"]).stdout
    assert "192.168.55.3 lladdr 02:42:c0:a8:37:03 PERMANENT" in neigh
    # The container's eth0: MAC, address, MTU 1450 (walkthrough `ip addr show eth0`).
    (eth0,) = json.loads(lab.run("c1", ["ip", "-j", "addr", "show", "dev", "eth0"]).stdout)
    assert eth0["address"] == C1[1] and eth0["mtu"] == 1450 and "UP" in eth0["flags"]
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"]] == [("192.168.55.4", 24)]
    ports = json.loads(lab.run("h1", ["ip", "-j", "link", "show", "master", "br4097"]).stdout)
    assert sorted(p["ifname"] for p in ports) == ["veth0", "vxlan4097"]

    out = lab.run("c1", ["ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.55.3"]).stdout
    assert " 0% packet loss" in out


def test_arp_is_answered_by_the_proxy_not_the_remote(lab: Lab) -> None:
    """The walkthrough's observation: arping gets replies, the remote container sees no ARP."""
    walkthrough(lab)
    cap = lab.tcpdump("c2", "eth0", "arp")
    res = lab.run("c1", ["arping", "-c", "3", "-W", "0.2", "-w", "3", "-i", "eth0", "192.168.55.3"],
                  check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("from 02:42:c0:a8:37:03 (192.168.55.3)") >= 3
    assert cap.stop().strip() == ""
    assert "0 packets captured" in cap.stderr.decode()


def test_same_node_arp_is_seen_by_the_target(lab: Lab) -> None:
    """Second part of the walkthrough: two containers on one node learn via br0 broadcasts."""
    walkthrough(lab)
    lab.kernel_attach("h1", VNI, "c3", "02:42:c0:a8:37:05", "192.168.55.5/24")
    cap = lab.tcpdump("c1", "eth0", "arp")
    res = lab.run("c3", ["arping", "-c", "2", "-W", "0.2", "-w", "3", "-i", "eth0", "192.168.55.4"],
                  check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    seen = cap.stop()
    assert "Request who-has 192.168.55.4 tell 192.168.55.5" in seen
    assert "Reply 192.168.55.4 is-at 02:42:c0:a8:37:04" in seen


INNER_CHECKSUM_PROBE = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 4789))
s.settimeout(5)
print("ready", flush=True)
data, _ = s.recvfrom(65535)
print(data.hex(), flush=True)
"""


def test_tx_csum_off_makes_kernel_vtep_inner_checksums_final(lab: Lab) -> None:
    """A userspace VTEP reads kernel-VTEP datagrams with a UDP socket: the inner L4 checksum is
    only complete if tx checksum offload is off on the sending host's underlay veth."""
    from scapy.layers.inet import UDP
    from scapy.layers.l2 import Ether

    lab.underlay()
    lab.host("h1", H1, tx_csum_off=True)
    lab.host("h2", H2)
    features = lab.run("h1", ["ethtool", "-k", "eth0"]).stdout
    assert "tx-checksumming: off" in features
    lab.kernel_vtep("h1", VNI, containers=[C1], peers=[(C2[1], "192.168.55.3", H2)])
    # No kernel vxlan on h2: a plain UDP socket stands in for vxdp's underlay socket.
    rx = lab.popen("h2", [sys.executable, "-c", INNER_CHECKSUM_PROBE, H2],
                   stdout=subprocess.PIPE, text=True)
    assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
    lab.run("c1", [sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, "
                   "socket.SOCK_DGRAM).sendto(b'x' * 100, ('192.168.55.3', 9999))"])
    out, _ = rx.communicate(timeout=5)
    inner = Ether(bytes.fromhex(out.strip())[8:])  # skip the 8-byte VXLAN header
    sent = inner[UDP].chksum
    del inner[UDP].chksum
    assert sent == Ether(bytes(inner))[UDP].chksum


def test_close_kills_processes_and_removes_namespaces() -> None:
    lab = Lab()
    prefix = lab.prefix
    walkthrough(lab)
    tracked = lab.popen("c1", ["sleep", "60"])
    # Started behind the lab's back (as a test would start `vxdp run`): killed too.
    stray = netns.popen_in_netns(lab.ns("h1"), ["sleep", "60"])
    assert len(lab.namespaces) == 5
    lab.close()
    assert tracked.poll() is not None
    assert stray.wait(timeout=5) is not None
    assert not [n for n in netns.list_netns() if n.startswith(prefix)]
    lab.close()  # idempotent
    with pytest.raises(VxdpError, match="closed"):
        lab.popen(None, ["true"])


def test_cleanup_prefix_removes_leftovers() -> None:
    prefix = f"vxt{os.getpid() % 100000}z-"
    for name in ("ul", "h1"):
        netns.ensure_netns(prefix + name)
    sleeper = netns.popen_in_netns(prefix + "h1", ["sleep", "60"])
    assert sorted(cleanup_prefix(prefix)) == [prefix + "h1", prefix + "ul"]
    assert sleeper.wait(timeout=5) is not None
    assert not [n for n in netns.list_netns() if n.startswith(prefix)]
    assert cleanup_prefix(prefix) == []
    with pytest.raises(VxdpError, match="too short"):
        cleanup_prefix("vx")


def test_lab_refuses_unsafe_or_unknown_input(lab: Lab) -> None:
    with pytest.raises(VxdpError, match="outside 198.18.0.0/15"):
        lab.underlay("10.0.0.0/24")
    lab.underlay()
    with pytest.raises(VxdpError, match="not in the underlay"):
        lab.host("h1", "198.19.0.1")
    with pytest.raises(VxdpError, match="no namespace 'nope'"):
        lab.run("nope", ["true"])
    with pytest.raises(VxdpError, match="no host"):
        lab.kernel_vtep("nope", VNI)
