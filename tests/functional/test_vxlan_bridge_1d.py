"""The kernel selftests ``tools/testing/selftests/net/forwarding/vxlan_bridge_1d.sh`` and
``vxlan_bridge_1d_ipv6.sh`` — their ``test_ttl``, ``test_tos``, ``test_ecn_encap`` and
``test_ecn_decap`` — rebuilt with vxdp as the VTEP under test and the kernel's vxlan as the
peer (notes §10), header fields decoded by tshark; over an IPv4 underlay, then an IPv6 one
(outer traffic class and hop limit; the outer ECN read from IPV6_TCLASS).

manager (198.18.0.1 / 2001:db8:18::1): ``vxdp run`` (compiled core), a container per network:
    a1 VNI 4097 ``ttl = 100, tos = "inherit"``   (the selftest's vx1: tos inherit ttl 100)
    b1 VNI 4098 defaults (``ttl = "auto"``, ``tos = 0``)
    x1 VNI 4099 ``ttl = "inherit", tos = 0xb8``
third   (.3 / ::3): ``vxdp run`` on the pure-Python core, p1 in VNI 4097 (a1's settings).
worker  (.2 / ::2): the kernel: one bridge + vxlan per VNI, configured like vxdp's network of
                    that VNI, containers a2, b2, x2.

Encapsulation: every datagram either side sends is captured on the underlay and its outer
TTL and TOS checked against the rule (``tunnel.outer_fields``) for its inner packet and its
network's settings: the kernel's own datagrams show the rule holds on this kernel, vxdp's that
vxdp follows it; the selftest's expected values are asserted on top. Decapsulation: crafted
VXLAN datagrams with every (inner ECN, outer ECN) pair, as the selftest's mausezahn probes,
go to the kernel, to vxdp and to vxdp's Python core, and what each delivers to its container
is compared (RFC 6040 §4.2's table as INET_ECN_decapsulate applies it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from dataplane import tunnel, wire
from dataplane.switch import outer_rules
from tests.functional.vxdp_world import (
    MANAGER,
    THIRD,
    UNDERLAY,
    WORKER,
    Container,
    Vtep,
    World,
    network,
    open_world,
    tshark_rows,
)

pytestmark = pytest.mark.privileged

# (VNI, vxdp [[network]] keys, kernel vxlan attributes): the same rules on both sides
NETWORKS = {
    "a": (4097, {"ttl": 100, "tos": "inherit"}, {"vxlan_ttl": 100, "vxlan_tos": 1}),
    "b": (4098, {}, {}),
    "x": (4099, {"ttl": "inherit", "tos": 0xB8}, {"vxlan_ttl_inherit": True,
                                                   "vxlan_tos": 0xB8}),
}
RULES = {vni: (opts.get("tos", 0), opts.get("ttl", "auto")) for vni, opts, _ in
         NETWORKS.values()}
#: the hosts' underlay addresses per family; IPv6: the overlay MTU is 1500 - 70
HOSTS = {4: {"manager": MANAGER, "worker": WORKER, "third": THIRD},
         6: {"manager": "2001:db8:18::1", "worker": "2001:db8:18::2",
             "third": "2001:db8:18::3"}}


@dataclass
class Bridge1d:
    world: World
    fam: int                         # the underlay's IP version
    addr: dict[str, str]             # host -> its underlay address in that family
    c: dict[str, Container]          # a1 b1 x1 (vxdp), a2 b2 x2 (kernel), p1 (Python core)
    vxdp: Vtep
    py: Vtep


@pytest.fixture(scope="module", params=[4, 6], ids=["ipv4", "ipv6"])
def b1d(request: pytest.FixtureRequest) -> Iterator[Bridge1d]:
    fam: int = request.param
    addr = HOSTS[fam]
    mtu = {"mtu": 1430} if fam == 6 else {}
    with open_world() as w:
        w.lab.underlay(UNDERLAY)
        for host, a4 in HOSTS[4].items():
            w.lab.host(host, a4, address6=HOSTS[6][host] if fam == 6 else None)
        c: dict[str, Container] = {}
        for i, key in enumerate(NETWORKS):
            c[f"{key}1"] = w.container("manager", f"{key}1", f"192.168.55.{10 * i + 11}")
            c[f"{key}2"] = w.container("worker", f"{key}2", f"192.168.55.{10 * i + 12}")
        c["p1"] = w.container("third", "p1", "192.168.55.13")
        lab = w.lab
        for key, (vni, _, kopts) in NETWORKS.items():
            k2, v1 = c[f"{key}2"], c[f"{key}1"]
            peers = [(v1.mac, v1.ip, addr["manager"])] + (
                [(c["p1"].mac, c["p1"].ip, addr["third"])] if key == "a" else [])
            lab.kernel_vtep("worker", vni, addr["worker"],
                            containers=[(k2.name, k2.mac, f"{k2.ip}/24")],
                            peers=peers, flood=[p[2] for p in peers], **mtu, **kopts)
        nets = [network(f"n{key}", vni, endpoints=[c[f"{key}1"]],
                        peers=[(c[f"{key}2"], addr["worker"])], flood=[addr["worker"]],
                        **mtu, **opts)
                for key, (vni, opts, _) in NETWORKS.items()]
        vni_a, opts_a, _ = NETWORKS["a"]
        m, t = w.start_all(
            ("manager", w.vtep_config("manager", addr["manager"], nets)),
            ("third", w.vtep_config("third", addr["third"], [network(
                "na", vni_a, endpoints=[c["p1"]], peers=[(c["a2"], addr["worker"])],
                flood=[addr["worker"]], **mtu, **opts_a)]), {"VXDP_NO_EXTENSIONS": "1"}))
        yield Bridge1d(w, fam, addr, c, m, t)
        w.stop_all(m, t)


# --------------------------------------------------------------------------- encapsulation

ENCAP_FIELDS = ["ip.src", "ip.ttl", "ip.dsfield", "ipv6.src", "ipv6.hlim", "ipv6.tclass",
                "vxlan.vni", "icmp.type"]


@dataclass(frozen=True)
class Encap:
    """One echo request on the underlay: who sent it, its VNI, outer and inner TOS/TTL."""
    src: str
    vni: int
    outer_tos: int
    outer_ttl: int
    inner_tos: int
    inner_ttl: int


def encap_of(r: dict[str, list[str]], fam: int) -> Encap:
    ip_tos = [int(x, 16) for x in r["ip.dsfield"]]
    ip_ttl = [int(x) for x in r["ip.ttl"]]
    if fam == 6:            # outer IPv6 (traffic class, hop limit), inner IPv4
        return Encap(r["ipv6.src"][0], int(r["vxlan.vni"][0]), int(r["ipv6.tclass"][0], 16),
                     int(r["ipv6.hlim"][0]), ip_tos[0], ip_ttl[0])
    return Encap(r["ip.src"][0], int(r["vxlan.vni"][0]), ip_tos[0], ip_ttl[0], ip_tos[1],
                 ip_ttl[1])


def pings(b: Bridge1d) -> list[tuple[str, str, list[str]]]:
    """The selftest's pings (its test_ttl, test_tos, test_ecn_encap), from every container
    to its peer across the underlay, both ways: (source, destination, ping options)."""
    c = b.c
    out = []
    for src, dst in (("a1", "a2"), ("b1", "b2"), ("x1", "x2"), ("p1", "a2"),
                     ("a2", "a1"), ("b2", "b1"), ("x2", "x1")):
        for q in ("0x14", "0x18", "0x00", "0x01", "0x02", "0x03", "0xb9"):
            out.append((src, c[dst].ip, ["-Q", q]))
        out.append((src, c[dst].ip, ["-t", "33"]))
    return out


@pytest.fixture(scope="module")
def encap_rows(b1d: Bridge1d) -> list[Encap]:
    """Every echo request crossing the underlay while the selftest's pings run, decoded by
    tshark (captured on the worker's link: what the kernel receives from vxdp, and sends)."""
    w = b1d.world
    pcap = os.path.join(w.tmp, "encap.pcap")
    cap = w.lab.tcpdump("worker", "eth0", "udp port 4789",
                        extra=("-q", "-U", "--immediate-mode", "-s", "256", "-w", pcap))

    def run(src: str) -> None:          # one container's pings in turn, containers at once
        for s, dst, opts in pings(b1d):
            if s == src:
                p = w.ping(b1d.c[src], dst, *opts, count=2)
                assert " 2 received" in p.stdout, (src, dst, opts, p.stdout + p.stderr)

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(run, sorted({s for s, _, _ in pings(b1d)})))
        time.sleep(0.3)
    finally:
        cap.stop()
    return [encap_of(r, b1d.fam) for r in tshark_rows(w, "worker", pcap, ENCAP_FIELDS)
            if r["icmp.type"] == ["8"]]


def test_every_outer_header_follows_the_rule_on_both_sides(b1d: Bridge1d,
                                                           encap_rows: list[Encap]) -> None:
    """For each echo request on the wire, outer TTL and TOS = the rule for its inner header
    and its network's ``ttl``/``tos`` (tunnel.outer_fields, vxlan_xmit_one): the kernel's
    datagrams (from 198.18.0.2) prove the rule on this kernel, vxdp's (compiled core from
    .1, Python core from .3) follow it."""
    seen: dict[str, int] = {}
    for e in encap_rows:
        tos_cfg, ttl_cfg = RULES[e.vni]
        frame = bytes(Ether() / IP(tos=e.inner_tos, ttl=e.inner_ttl))
        t, q, d, _ = outer_rules(ttl_cfg, tos_cfg, "unset")
        want_tos, want_ttl, _ = tunnel.outer_fields(frame, q, t, d)
        assert (e.outer_tos, e.outer_ttl) == (want_tos, want_ttl), e
        seen[e.src] = seen.get(e.src, 0) + 1
    assert set(seen) == set(b1d.addr.values()), seen
    assert min(seen.values()) >= 2 * 8, seen


SENDERS, SENDER_IDS = ["manager", "third", "worker"], ["vxdp", "vxdp-py", "kernel"]


def outer_of(b: Bridge1d, rows: list[Encap], host: str, vni: int, inner_tos: int,
             inner_ttl: int = 64) -> set[tuple[int, int]]:
    """The outer (TOS, TTL) of the requests ``host`` sent in ``vni`` with that inner
    TOS/TTL."""
    return {(e.outer_tos, e.outer_ttl) for e in rows
            if e.src == b.addr[host] and e.vni == vni and e.inner_tos == inner_tos
            and e.inner_ttl == inner_ttl}


@pytest.mark.parametrize("src", SENDERS, ids=SENDER_IDS)
def test_ttl(b1d: Bridge1d, encap_rows: list[Encap], src: str) -> None:
    """test_ttl: ``ttl 100`` gives outer TTL 100 (the selftest sees 99 one router later);
    ``auto`` the route's 64; ``inherit`` the inner TTL (ping -t 33)."""
    assert outer_of(b1d, encap_rows, src, 4097, 0x14) == {(0x14, 100)}
    if src == "third":
        return                        # the Python core serves VNI 4097 only
    assert outer_of(b1d, encap_rows, src, 4098, 0x14) == {(0x00, 64)}
    assert outer_of(b1d, encap_rows, src, 4099, 0x00, inner_ttl=33) == {(0xB8, 33)}


@pytest.mark.parametrize("src", SENDERS, ids=SENDER_IDS)
def test_tos(b1d: Bridge1d, encap_rows: list[Encap], src: str) -> None:
    """test_tos: with ``tos inherit``, ping -Q 0x14 leaves with outer TOS 0x14 and -Q 0x18
    with 0x18 (the selftest's filter for 0x14 sees none of those); a fixed TOS replaces the
    inner DSCP, 0 (the default) clears it."""
    assert outer_of(b1d, encap_rows, src, 4097, 0x14) == {(0x14, 100)}
    assert outer_of(b1d, encap_rows, src, 4097, 0x18) == {(0x18, 100)}
    if src == "third":
        return
    assert {t for t, _ in outer_of(b1d, encap_rows, src, 4098, 0x18)} == {0x00}
    assert {t for t, _ in outer_of(b1d, encap_rows, src, 4099, 0x18, inner_ttl=64)} == {0xB8}


@pytest.mark.parametrize("src", SENDERS, ids=SENDER_IDS)
@pytest.mark.parametrize(("inner", "outer"), [(0x00, 0x00), (0x01, 0x01), (0x02, 0x02),
                                              (0x03, 0x02), (0xB9, 0xB9)])
def test_ecn_encap(b1d: Bridge1d, encap_rows: list[Encap], src: str, inner: int,
                   outer: int) -> None:
    """test_ecn_encap: ping -Q 0x00/0x01/0x02/0x03 → outer 0x00/0x01/0x02/0x02 (RFC 6040
    §4.1: ECT copied, CE sent as ECT(0)); the ECN bits follow under every ``tos``."""
    assert {t for t, _ in outer_of(b1d, encap_rows, src, 4097, inner)} == {outer}
    if src == "third":
        return
    assert {t for t, _ in outer_of(b1d, encap_rows, src, 4098, inner)} == {outer & 3}
    assert {t for t, _ in outer_of(b1d, encap_rows, src, 4099, inner)} == {0xB8 | (outer & 3)}


# --------------------------------------------------------------------------- decapsulation

#: test_ecn_decap's table (inner ECN, outer ECN) -> inner ECN delivered, "in accordance with
#: INET_ECN_decapsulate()" (02/01 -> 01: ECT(1) propagation, the kernel here); None: dropped
#: (test_ecn_decap_error: rx_errors on the kernel, ecn_not_ect_ce in vxdp)
DECAP = {(i, o): (None if (i, o) == (0, 3) else 3 if o == 3 and i else 1 if (i, o) == (2, 1)
                  else i) for i in range(4) for o in range(4)}

# Crafted VXLAN datagrams, as the selftest's mausezahn probes: each line "DST TOS HEX" is
# sent from a UDP socket with that outer TOS / traffic class (an IP_TOS or IPV6_TCLASS
# control message: a UDP socket keeps the ECN bits, only TCP's are the stack's own).
SEND_VXLAN = r"""
import socket, sys
v6 = ":" in sys.argv[1]
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
level, opt = ((socket.IPPROTO_IPV6, socket.IPV6_TCLASS) if v6
              else (socket.IPPROTO_IP, socket.IP_TOS))
for line in sys.stdin.read().splitlines():
    dst, tos, data = line.split()
    s.sendmsg([bytes.fromhex(data)], [(level, opt, int(tos).to_bytes(4, "little"))], 0,
              (dst, 4789))
"""

DSCP = 0xB8          # an inner DSCP the ECN changes must leave alone (never copied out)


def probes(src: Container, dst: Container, vni: int) -> list[tuple[int, bytes]]:
    """(outer TOS, VXLAN payload) for every table case, inner IPv4 and IPv6 (an echo request
    to ``dst`` from ``src``; ICMP sequence = case number, 100 + for IPv6)."""
    out = []
    for n, (inner, outer) in enumerate(sorted(DECAP)):
        eth = Ether(src=src.mac, dst=dst.mac)
        v4 = eth / IP(src=src.ip, dst=dst.ip, tos=DSCP | inner, ttl=4) / ICMP(seq=n)
        v6 = eth / IPv6(src="fd00:55::1", dst="fd00:55::2", tc=DSCP | inner, hlim=4) \
            / ICMPv6EchoRequest(seq=100 + n)
        for pkt in (v4, v6):
            out += [(DSCP | outer, wire.vxlan_header(vni) + bytes(pkt))] * 2
    return out


def delivered(w: World, receiver: Container, sender_ns: str, local: str, to: str,
              datagrams: list[tuple[int, bytes]]) -> dict[tuple[int, int], list[int]]:
    """Send the datagrams from ``sender_ns`` (bound to ``local``) to the VTEP ``to``; what
    ``receiver`` got, by case: {(family, case): [inner traffic class of each copy]}."""
    pcap = os.path.join(w.tmp, f"decap-{receiver.name}.pcap")
    # a small snapshot: in immediate mode libpcap sizes its ring slots by it, and 256 KB
    # slots lose most of a burst of 60 frames written back to back
    cap = w.lab.tcpdump(receiver.name, "eth0", "icmp or icmp6",
                        extra=("-q", "-U", "--immediate-mode", "-s", "256", "-Q", "in",
                               "-w", pcap))
    try:
        w.lab.run(sender_ns, [sys.executable, "-c", SEND_VXLAN, local],
                  input="\n".join(f"{to} {tos} {d.hex()}" for tos, d in datagrams))
        time.sleep(0.5)
    finally:
        cap.stop()
    got: dict[tuple[int, int], list[int]] = {}
    for r in tshark_rows(w, receiver.name, pcap, ["ip.dsfield", "icmp.type", "icmp.seq",
                                                   "ip.checksum.status", "ipv6.tclass",
                                                   "icmpv6.type", "icmpv6.echo.sequence_number"]):
        if r["icmp.type"] == ["8"]:
            assert r["ip.checksum.status"] == ["1"], r     # rewritten incrementally, right
            got.setdefault((4, int(r["icmp.seq"][0])), []).append(int(r["ip.dsfield"][0], 16))
        elif r["icmpv6.type"] == ["128"]:
            seq = int(r["icmpv6.echo.sequence_number"][0]) - 100
            got.setdefault((6, seq), []).append(int(r["ipv6.tclass"][0], 16))
    return got


def expected() -> dict[tuple[int, int], list[int]]:
    return {(fam, n): [DSCP | DECAP[case]] * 2 for n, case in enumerate(sorted(DECAP))
            for fam in (4, 6) if DECAP[case] is not None}


@pytest.fixture(scope="module")
def decap(b1d: Bridge1d) -> dict[str, dict[tuple[int, int], list[int]]]:
    """What the kernel (a2), vxdp (a1) and vxdp's Python core (p1) delivered of the same
    probes, and the drop counters around it."""
    w, c, a = b1d.world, b1d.c, b1d.addr
    vni = NETWORKS["a"][0]
    drops = {v.name: v.stats()["drops"]["ecn_not_ect_ce"] for v in (b1d.vxdp, b1d.py)}
    rx_errors = kernel_rx_errors(w, vni)
    got = {
        "kernel": delivered(w, c["a2"], "manager", a["manager"], a["worker"],
                            probes(c["a1"], c["a2"], vni)),
        "vxdp": delivered(w, c["a1"], "worker", a["worker"], a["manager"],
                          probes(c["a2"], c["a1"], vni)),
        "vxdp-py": delivered(w, c["p1"], "worker", a["worker"], a["third"],
                             probes(c["a2"], c["p1"], vni)),
    }
    got["drops"] = {v.name: v.stats()["drops"]["ecn_not_ect_ce"] - drops[v.name]  # type: ignore
                    for v in (b1d.vxdp, b1d.py)}
    got["rx_errors"] = kernel_rx_errors(w, vni) - rx_errors        # type: ignore
    return got


def kernel_rx_errors(w: World, vni: int) -> int:
    """rx_errors of the kernel's vxlan device (test_ecn_decap_error's link_stats_rx_errors_get)."""
    out = w.lab.run("worker", ["ip", "-s", "-j", "link", "show", f"vxlan{vni}"]).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["errors"])


@pytest.mark.parametrize("who", ["kernel", "vxdp", "vxdp-py"])
def test_ecn_decap(decap: dict[str, dict[tuple[int, int], list[int]]], who: str) -> None:
    """test_ecn_decap: the 15 delivered cases, inner IPv4 and IPv6 (outer CE marks an ECT
    inner CE, outer ECT(1) makes ECT(0) ECT(1), the inner DSCP untouched); the kernel,
    vxdp and its Python core deliver the same."""
    assert decap[who] == expected()


def test_ecn_decap_error(decap: dict[str, dict[tuple[int, int], list[int]]]) -> None:
    """test_ecn_decap_error: a not-ECT inner under an outer CE is dropped — rx_errors on the
    kernel's vxlan device, ``ecn_not_ect_ce`` in vxdp (two copies, IPv4 and IPv6 inner)."""
    assert decap["rx_errors"] == 4
    assert set(decap["drops"].values()) == {4}, decap["drops"]
