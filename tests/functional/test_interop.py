"""vxdp against the Linux kernel's vxlan, configured the way Docker configures it (DESIGN.md §5:
"the kernel's vxlan is the independent peer"), and tshark as the independent decoder.

manager (198.18.0.1): ``vxdp run``, container c1 (192.168.55.4) on a TAP.
worker  (198.18.0.2): kernel bridge + vxlan (VNI 4097, proxy nolearning, static fdb/neigh,
                      flood entry), container c2 (192.168.55.3) on a veth.

Both hosts are built with tx checksum offload off on their underlay link (and the kernel side's
container veths): otherwise veth hands CHECKSUM_PARTIAL frames across namespaces and vxdp (a
userspace reader) would see inner frames with unfinished checksums; and the capture on the
manager's eth0 then shows final bytes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.functional.vxdp_world import (
    MANAGER,
    VNI,
    WORKER,
    Interop,
    assert_no_checksum_errors,
    interop_containers,
    open_world,
    start_interop_vxdp,
    tcp_transfer,
    tshark_rows,
)

pytestmark = pytest.mark.privileged

NBYTES = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def interop() -> Iterator[Interop]:
    with open_world() as w:
        c1, c2 = interop_containers(w)
        kv = w.lab.kernel_vtep("worker", VNI, WORKER, containers=[(c2.name, c2.mac, f"{c2.ip}/24")],
                               peers=[(c1.mac, c1.ip, MANAGER)], flood=[MANAGER])
        v = start_interop_vxdp(w, c1, c2)
        yield Interop(w, c1, c2, v, kv)
        v.stop()


def test_kernel_peer_is_configured_like_docker(interop: Interop) -> None:
    lab = interop.world.lab
    text = lab.run("worker", ["ip", "-d", "link", "show", interop.kernel.vxlan]).stdout
    assert f"vxlan id {VNI}" in text and "nolearning proxy" in text
    fdb = lab.run("worker", ["bridge", "fdb", "show", "dev", interop.kernel.vxlan]).stdout
    assert f"{interop.c1.mac} dst {MANAGER} self permanent" in fdb


def test_ping_both_ways(interop: Interop) -> None:
    w = interop.world
    before = interop.vxdp.stats()
    w.assert_ping(interop.c1, interop.c2.ip)
    w.assert_ping(interop.c2, interop.c1.ip)
    # Full-size frames: 1450-byte IP packets, DF set, make 1500-byte outer datagrams.
    for src, dst in ((interop.c1, interop.c2.ip), (interop.c2, interop.c1.ip)):
        p = w.ping(src, dst, "-s", "1422", "-M", "do", count=2)
        assert p.returncode == 0 and "2 received" in p.stdout, p.stdout + p.stderr
    after = interop.vxdp.stats()
    # vxdp decapsulated the kernel's datagrams and encapsulated its own (>= 10 each way).
    assert after["underlay"]["rx_packets"] - before["underlay"]["rx_packets"] >= 10
    assert after["underlay"]["tx_packets"] - before["underlay"]["tx_packets"] >= 10
    assert sum(after["drops"].values()) == sum(before["drops"].values()), after["drops"]


@pytest.mark.parametrize("direction", ["vxdp_to_kernel", "kernel_to_vxdp"])
def test_tcp_data_intact(interop: Interop, direction: str) -> None:
    c1, c2 = interop.c1, interop.c2
    server, client = (c2, c1) if direction == "vxdp_to_kernel" else (c1, c2)
    t = tcp_transfer(interop.world, server, client, NBYTES,
                     seed=1 if direction == "vxdp_to_kernel" else 2)
    assert t.sent == t.received == NBYTES
    assert t.sent_sha == t.received_sha == t.echoed_sha
    assert t.peer == client.ip
    assert interop.vxdp.alive()
    # The kernel VTEP's underlay has its default offloads: its containers' TCP arrives with
    # partial checksums and as whole TSO frames; vxdp completed and cut them, and neither
    # container's stack found a bad checksum.
    c = interop.vxdp.stats()["offload"]["counters"]
    assert c["csum_partial_rx"] > 0, c
    if direction == "kernel_to_vxdp":
        assert c["rx_superframes"] > 0 and c["rx_superframe_segments"] > c["rx_superframes"], c
    assert_no_checksum_errors(interop.world, c1, c2)


def test_tshark_decodes_vxdp_datagrams_with_good_checksums(interop: Interop) -> None:
    w = interop.world
    pcap = os.path.join(w.tmp, "underlay.pcap")
    cap = w.lab.tcpdump("manager", "eth0", "udp port 4789", extra=("-q", "-U", "--immediate-mode", "-w", pcap))
    w.assert_ping(interop.c1, interop.c2.ip)
    time.sleep(0.3)             # the last reply into tcpdump's file before it stops
    cap.stop()
    fields = ["ip.src", "ip.dst", "udp.srcport", "udp.dstport", "vxlan.vni", "udp.checksum.status",
              "ip.checksum.status", "icmp.type", "icmp.checksum.status", "eth.src"]
    rows = tshark_rows(w, "manager", pcap, fields)
    # (the containers' own multicast — IGMP/MLD reports — crosses too: only ICMP counts)
    ours = [r for r in rows if r["ip.src"][:1] == [MANAGER] and r.get("icmp.type")]
    theirs = [r for r in rows if r["ip.src"][:1] == [WORKER] and r.get("icmp.type")]
    assert len(ours) >= 3 and len(theirs) >= 3, rows
    for r in ours:
        # Outer 198.18.0.1 > 198.18.0.2, inner c1 > c2: two IPv4 layers, one ICMP.
        assert r["ip.src"] == [MANAGER, interop.c1.ip] and r["ip.dst"] == [WORKER, interop.c2.ip]
        assert r["udp.dstport"] == ["4789"] and r["vxlan.vni"] == [str(VNI)]
        assert r["eth.src"][-1] == interop.c1.mac
        # Checksum status: 1 = Good (0 Bad, 2 Unverified): outer UDP, both IPv4 headers, ICMP.
        assert r["udp.checksum.status"] == ["1"], r
        assert r["ip.checksum.status"] == ["1", "1"], r
        assert r["icmp.type"] == ["8"] and r["icmp.checksum.status"] == ["1"], r
    # RFC 7348 §5: the source port is a hash of the inner flow, in 49152-65535; one ping is
    # one flow (ICMP: addresses + protocol), so one port.
    sports = {int(r["udp.srcport"][0]) for r in ours}
    assert len(sports) == 1 and all(49152 <= p <= 65535 for p in sports), sports
    # The kernel's echo replies decode the same way (VNI 4097, inner checksums good).
    for r in theirs:
        assert r["vxlan.vni"] == [str(VNI)] and r["icmp.type"] == ["0"], r
        assert r["icmp.checksum.status"] == ["1"], r
