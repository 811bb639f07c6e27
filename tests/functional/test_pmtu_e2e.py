"""PMTU signalling end to end, with the kernel's bridged vxlan as the oracle (issue 11).

manager (198.18.0.1): ``vxdp run``, container c1 (192.168.55.4, fd00:55::4) on a TAP.
worker  (198.18.0.2): kernel bridge + vxlan (Docker-style), container c2 (.3, fd00:55::3).

The underlay between them carries 1400-byte packets (both hosts' links and the underlay
bridge's ports at MTU 1400), the overlay 1450 as usual: an inner packet over 1350 bytes cannot
cross without fragmenting the outer one. The kernel's vxlan answers it with an ICMP
fragmentation-needed (IPv4, DF set) or Packet Too Big (IPv6) from the destination, so the
sender's TCP lowers its MSS (``skb_tunnel_check_pmtu``); vxdp does the same from the route
MTU it reads for each remote (``dataplane.pmtu``). Every offload stays at its default.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from scapy.layers.l2 import Ether

from dataplane import tunnel
from dataplane.lab import KernelVtep
from dataplane.pmtu import PMTU_INTERVAL
from tests.functional.vxdp_world import (
    MANAGER,
    VNI,
    WORKER,
    Container,
    World,
    assert_no_checksum_errors,
    interop_containers,
    open_world,
    Vtep,
    snmp,
    start_interop_vxdp,
    tcp_transfer,
)
from tests.pmtu_cases import kernel_cases

pytestmark = pytest.mark.privileged

UNDERLAY_MTU = 1400
LIMIT = UNDERLAY_MTU - 50              # the largest inner packet over an IPv4 underlay
C1_IP6, C2_IP6 = "fd00:55::4", "fd00:55::3"
#: second addresses for the pings: a path MTU the containers' kernels have not learned yet,
#: whatever the other tests left in their route caches
PING_IP = {"c1": ("192.168.55.14", "fd00:55::14"), "c2": ("192.168.55.13", "fd00:55::13")}
NBYTES = 8 * 1024 * 1024


@dataclass
class Narrow:
    world: World
    c1: Container       # behind vxdp
    c2: Container       # behind the kernel
    vxdp: Vtep
    kernel: KernelVtep


def enable_ipv6(w: World, ns: str) -> None:
    """IPv6 on in a lab namespace (the lab turns it off), for the container's eth0 too."""
    w.lab.run(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0",
                   "net.ipv6.conf.default.disable_ipv6=0"])


@pytest.fixture(scope="module")
def narrow() -> Iterator[Narrow]:
    with open_world() as w:
        c1, c2 = interop_containers(w)
        lab = w.lab
        assert lab.underlay_ns is not None
        for host in ("manager", "worker"):
            lab.run(host, ["ip", "link", "set", "dev", "eth0", "mtu", str(UNDERLAY_MTU)])
            lab.run(lab.underlay_ns, ["ip", "link", "set", "dev", f"v-{host}", "mtu",
                                      str(UNDERLAY_MTU)])
        kv = lab.kernel_vtep("worker", VNI, WORKER,
                             containers=[(c2.name, c2.mac, f"{c2.ip}/24")],
                             peers=[(c1.mac, c1.ip, MANAGER)], flood=[MANAGER])
        v = start_interop_vxdp(w, c1, c2)
        # dual-stack containers (the config has no IPv6 endpoint addresses yet): addresses
        # and static neighbours added inside the namespaces
        for ns in (c1.name, c2.name, "worker"):
            enable_ipv6(w, ns)
        for c, other, mine, peer in ((c1, c2, C1_IP6, C2_IP6), (c2, c1, C2_IP6, C1_IP6)):
            ping4, ping6 = PING_IP[c.name.removeprefix(lab.prefix)]
            lab.run(c.name, ["ip", "-6", "addr", "add", f"{mine}/64", "dev", "eth0", "nodad"])
            # deprecated (preferred_lft 0), so it is never picked as a source: the path MTU
            # the other container learns for it must not shrink the MSS it advertises to
            # the TCP tests' connections
            lab.run(c.name, ["ip", "-6", "addr", "add", f"{ping6}/64", "dev", "eth0", "nodad",
                             "preferred_lft", "0"])
            lab.run(c.name, ["ip", "addr", "add", f"{ping4}/24", "dev", "eth0"])
            # the other container's addresses, resolved without asking (neither proxy has
            # the second ones in its neighbour table)
            theirs = PING_IP[other.name.removeprefix(lab.prefix)]
            for a, fam in ((peer, "-6"), (theirs[1], "-6"), (theirs[0], "-4")):
                lab.run(c.name, ["ip", fam, "neigh", "replace", a, "lladdr", other.mac,
                                 "dev", "eth0", "nud", "permanent"])
        yield Narrow(w, c1, c2, v, kv)
        v.stop()


def counters(v: Vtep) -> dict[str, int]:
    return v.stats()["counters"]


def test_vxdp_knows_the_path_mtu_at_start(narrow: Narrow) -> None:
    """The route MTU to the configured peer's VTEP is measured before the first frame: the
    log says what it is and what it means, and vxdp stats shows it."""
    assert f"path MTU to VTEP {WORKER}: {UNDERLAY_MTU}" in narrow.vxdp.log()
    assert narrow.vxdp.stats()["paths"][str(WORKER)] == {"mtu": UNDERLAY_MTU,
                                                         "inner_max": UNDERLAY_MTU - 50}
    text = narrow.vxdp.cli("stats").stdout
    assert "paths (route MTU to each remote VTEP):" in text
    assert f"mtu {UNDERLAY_MTU}, inner packets up to {UNDERLAY_MTU - 50}" in text


def test_tcp_mss_adapts_and_data_arrives_intact(narrow: Narrow) -> None:
    """A fresh TCP connection from c1 starts with the MSS of a 1450-byte MTU. Its first full
    segments are answered with frag-needed by vxdp, c1's kernel keeps the path MTU (1350)
    and lowers the MSS, and the sha256-checked data arrives without one outer datagram
    fragmented. The other way too (c1 now advertises the smaller MSS itself)."""
    w, c1, c2 = narrow.world, narrow.c1, narrow.c2
    before = counters(narrow.vxdp)["frag_needed"]
    frags = {h: snmp(w, h)["Ip"]["FragCreates"] for h in ("manager", "worker")}
    for server, client, seed in ((c2, c1, 11), (c1, c2, 12)):
        t = tcp_transfer(w, server, client, NBYTES, port=5300 + seed, seed=seed)
        assert t.sent == t.received == NBYTES and t.sent_sha == t.received_sha == t.echoed_sha
        if client is c1:
            assert counters(narrow.vxdp)["frag_needed"] > before
            route = w.lab.run(c1.name, ["ip", "route", "get", c2.ip]).stdout
            assert f"mtu {LIMIT}" in route, route
    for h, n in frags.items():
        assert snmp(w, h)["Ip"]["FragCreates"] == n, f"{h} fragmented outer datagrams"
    assert_no_checksum_errors(w, c1, c2)


def frag_needed_line(w: World, src: Container, dst_ip: str, *extra: str) -> str:
    p = w.ping(src, dst_ip, *extra, "-M", "do", "-s", "1400", count=1)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("From ")]
    assert lines, p.stdout + p.stderr
    return lines[0]


def test_ping_with_df_is_told_the_mtu_like_the_kernel_says_it(narrow: Narrow) -> None:
    """``ping -M do -s 1400``: "Frag needed and DF set (mtu = 1350)" from the destination,
    from vxdp to c1 as from the kernel to c2 (notes §5.1, measured the same way)."""
    w, c1, c2 = narrow.world, narrow.c1, narrow.c2
    to_c2, to_c1 = PING_IP["c2"][0], PING_IP["c1"][0]
    before = counters(narrow.vxdp)["frag_needed"]
    ours = frag_needed_line(w, c1, to_c2)
    theirs = frag_needed_line(w, c2, to_c1)
    assert ours == f"From {to_c2} icmp_seq=1 Frag needed and DF set (mtu = {LIMIT})", ours
    assert theirs == f"From {to_c1} icmp_seq=1 Frag needed and DF set (mtu = {LIMIT})", theirs
    assert counters(narrow.vxdp)["frag_needed"] == before + 1


def test_ipv6_ping_is_told_packet_too_big_like_the_kernel_says_it(narrow: Narrow) -> None:
    """IPv6 has no DF: every packet over 1350 bytes gets a Packet Too Big, counted."""
    w, c1, c2 = narrow.world, narrow.c1, narrow.c2
    to_c2, to_c1 = PING_IP["c2"][1], PING_IP["c1"][1]
    before = counters(narrow.vxdp)["pkt_too_big"]
    ours = frag_needed_line(w, c1, to_c2, "-6")
    theirs = frag_needed_line(w, c2, to_c1, "-6")
    assert re.fullmatch(rf"From {to_c2} icmp_seq=1 Packet too big: mtu={LIMIT}", ours), ours
    assert re.fullmatch(rf"From {to_c1} icmp_seq=1 Packet too big: mtu={LIMIT}", theirs), \
        theirs
    assert counters(narrow.vxdp)["pkt_too_big"] == before + 1


def test_tcp_over_ipv6_adapts_too(narrow: Narrow) -> None:
    w, c1, c2 = narrow.world, narrow.c1, narrow.c2
    before = counters(narrow.vxdp)["pkt_too_big"]
    for server, client, addr, seed in ((c2, c1, C2_IP6, 21), (c1, c2, C1_IP6, 22)):
        t = tcp_transfer(w, server, client, NBYTES // 4, port=5300 + seed, seed=seed,
                         server_ip=addr)
        assert t.sent == t.received == NBYTES // 4
        assert t.sent_sha == t.received_sha == t.echoed_sha
        if client is c1:
            assert counters(narrow.vxdp)["pkt_too_big"] > before
            route = w.lab.run(c1.name, ["ip", "-6", "route", "get", C2_IP6]).stdout
            assert f"mtu {LIMIT}" in route, route


# A sender that writes raw frames to the container's eth0 and collects, for a while after,
# the frag-needed / Packet Too Big that come back to it (a packet socket sees every frame
# and its direction).
SEND_AND_COLLECT = r"""
import socket, sys, time
frames = [bytes.fromhex(x) for x in sys.stdin.read().split()]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 0))
for f in frames:
    s.send(f)
s.settimeout(0.1)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        d, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    if addr[2] != socket.PACKET_HOST:
        continue
    if (d[12:14] == b"\x08\x00" and d[23] == 1 and d[34:36] == b"\x03\x04") or \
            (d[12:14] == b"\x86\xdd" and d[20] == 58 and d[54] == 2):
        print(d.hex(), flush=True)
"""


def replies_to(w: World, c: Container, frames: list[bytes]) -> set[bytes]:
    p = w.lab.run(c.name, [sys.executable, "-c", SEND_AND_COLLECT, "1.5"],
                  input="\n".join(f.hex() for f in frames), timeout=30)
    return {bytes.fromhex(x) for x in p.stdout.split()}


def test_the_same_frames_get_the_same_answers_from_vxdp_and_the_kernel(narrow: Narrow) -> None:
    """Crafted frames from each container, every one over the path's size: the kernel's
    bridged vxlan and vxdp answer exactly the same ones, each reply byte for byte what
    tunnel.pmtud_icmp builds from the frame (so vxdp's replies equal the kernel's, given the
    same frame): DF or not, MF, ICMP errors behind IP options, multicast and loopback
    addresses, IPv6 sources of each address type, extension headers as the kernel walks
    them, fragments."""
    w, c1, c2 = narrow.world, narrow.c1, narrow.c2
    before = counters(narrow.vxdp)
    answered_by_vxdp: dict[bytes, str] = {}
    for sender, receiver in ((c1, c2), (c2, c1)):
        cases = kernel_cases(sender.ip, receiver.ip, C1_IP6 if sender is c1 else C2_IP6,
                             C2_IP6 if sender is c1 else C1_IP6)
        frames = [bytes(Ether(src=sender.mac, dst=receiver.mac) / pkt)
                  for _, pkt, _ in cases]
        expected = {}
        for (name, _, answered), f in zip(cases, frames):
            reply = tunnel.pmtud_icmp(f, LIMIT) if tunnel.pmtu_exceeded(f, LIMIT) else None
            assert (reply is not None) == answered, name     # the recorded kernel behaviour
            if reply is not None:
                expected[reply] = name
        got = replies_to(w, sender, frames)
        who = "vxdp" if sender is c1 else "the kernel"
        missing = [expected[r] for r in expected if r not in got]
        assert not missing and len(got) == len(expected), \
            f"{who}: no (or another) reply for {missing}; {len(got)} replies"
        if sender is c1:
            answered_by_vxdp = expected
    after = counters(narrow.vxdp)
    v4 = sum(1 for r in answered_by_vxdp if r[12:14] == b"\x08\x00")
    assert after["frag_needed"] - before["frag_needed"] == v4 > 0
    assert after["pkt_too_big"] - before["pkt_too_big"] == len(answered_by_vxdp) - v4 > 0
    assert narrow.vxdp.alive()


def test_a_route_mtu_change_reaches_the_core_while_it_runs(narrow: Narrow) -> None:
    """The periodic measurement (in a worker thread, applied on the loop): a route with a
    smaller MTU towards the peer VTEP shows in vxdp stats within an interval, and the
    link's MTU again once the route is gone."""
    lab, v = narrow.world.lab, narrow.vxdp
    route = [f"{WORKER}/32", "dev", "eth0", "mtu", "1300"]

    def path_mtu() -> int:
        return int(v.stats()["paths"].get(str(WORKER), {}).get("mtu", 0))

    def wait_for(mtu: int) -> None:
        deadline = time.monotonic() + 3 * PMTU_INTERVAL
        while path_mtu() != mtu:
            assert time.monotonic() < deadline, (mtu, v.stats()["paths"])
            time.sleep(0.2)

    lab.run("manager", ["ip", "route", "add", *route])
    try:
        wait_for(1300)
        assert f"path MTU to VTEP {WORKER}: 1300 (was {UNDERLAY_MTU})" in v.log()
    finally:
        lab.run("manager", ["ip", "route", "del", *route], check=False)
    wait_for(UNDERLAY_MTU)
