"""The kernel's offloads, used the way a virtio-net guest does, end to end: TSO super-frames
from the containers' TAPs, UDP GSO sends, UDP GRO receives and TCP coalescing into the
destination TAP (README "Offloads").

What is checked here (the unit and differential tests hold segment()/coalesce() byte for byte):

* vxdp <-> vxdp with the default config (``offload`` unset = all on): hash-verified TCP
  transfers across hosts, on one host, several at once, UDP bursts and full-size DF pings;
  the stats say every offload is on, the counters prove the bulk of the data went through
  them, and nothing was dropped or found broken, neither by vxdp nor by the containers'
  kernels (their checksum-error MIBs).
* vxdp against the kernel's vxlan with the kernel's offloads on: the kernel's TCP super-frames
  segmented by the kernel, its datagrams glued together again by GRO in front of vxdp's socket.
* checksums on the wire under load, read by tshark from a capture of the underlay link whose
  sender side does its segmentation and checksums in software.
* ``offload = false``, offload lists, and the pure-Python path.

Worlds are the walkthrough's (manager 198.18.0.1 with c1 .4 and c3 .5, worker 198.18.0.2 with
c2 .3, VNI 4097, MTU 1450); all traffic stays in the lab. Offloads exist only in the compiled
fast path, so the C VTEPs are started with ``VXDP_NO_EXTENSIONS=0`` explicitly, and the module
follows the ``impl`` fixture's policy (tests/conftest.py): VXDP_NO_EXTENSIONS=1 in the
environment or an unbuilt extension is a skip on a developer's machine, a failure in CI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import struct
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dataplane.lab import ethtool_features
from tests.functional.vxdp_world import (
    C1_IP,
    C2_IP,
    MANAGER,
    VNI,
    WORKER,
    Container,
    Interop,
    Transfer,
    Vtep,
    Walkthrough,
    World,
    assert_no_checksum_errors,
    build_walkthrough,
    open_world,
    snmp,
    start_interop_vxdp,
    tcp_transfer,
    tshark_rows,
    wait_for,
)

# Offloads exist only in the compiled path: every test needs _fastpath.core (conftest policy).
pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("c_core")]

C_PATH = {"VXDP_NO_EXTENSIONS": "0"}
PY_PATH = {"VXDP_NO_EXTENSIONS": "1"}

MIB = 1 << 20
MTU = 1450
#: Largest MSS on a 1450-byte overlay (no TCP options); with timestamps it is 1398. Dividing a
#: transfer by it gives a lower bound on its number of data segments.
MSS_MAX = MTU - 40

OFFLOAD_COUNTERS = ("tso_frames", "tso_segments", "csum_completed", "bad_vnet", "gso_sends",
                    "gso_datagrams", "gso_fallbacks", "gso_sockets", "gro_buffers",
                    "gro_datagrams", "coalesced_frames", "coalesced_segments", "csum_bad",
                    "csum_partial_rx", "rx_superframes", "rx_superframe_segments")

#: tshark's checksum status values (epan/proto.h: PROTO_CHECKSUM_E_BAD/GOOD/UNVERIFIED...).
BAD, GOOD = "0", "1"


# --------------------------------------------------------------------------- helpers

def offload(v: Vtep) -> dict[str, Any]:
    return v.stats()["offload"]


def counters(v: Vtep) -> dict[str, int]:
    return dict(offload(v)["counters"])


def delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def assert_intact(t: Transfer, nbytes: int, client: Container) -> None:
    assert t.sent == t.received == nbytes, t
    assert t.sent_sha == t.received_sha == t.echoed_sha, t
    assert t.peer == client.ip, t


def assert_no_drops(v: Vtep) -> dict[str, Any]:
    """No drop by reason, no underlay error, still running. Returns the stats it looked at."""
    s = v.stats()
    assert not any(s["drops"].values()), (v.name, s["drops"])
    ul = s["underlay"]   # rx_errors: a counter of the C receive loop only
    assert ul.get("rx_errors", 0) == 0 and ul["tx_errors"] == 0, (v.name, ul)
    assert v.alive(), v.log()
    return s


def assert_healthy(v: Vtep, *, gso_fallbacks_allowed: bool = False) -> dict[str, Any]:
    """:func:`assert_no_drops`, and no offload went wrong: no malformed vnet header from a TAP,
    no segment with a bad checksum on its way to a TAP, no GSO send refused by the kernel."""
    s = assert_no_drops(v)
    c = s["offload"]["counters"]
    assert c["bad_vnet"] == 0, (v.name, c)
    assert c["csum_bad"] == 0, (v.name, c)
    if not gso_fallbacks_allowed:
        assert c["gso_fallbacks"] == 0, (v.name, c)
    return s


def assert_counter_shapes(c: Mapping[str, int]) -> None:
    """Relations the counters must satisfy whatever the load: a GSO send carries a run of >= 2
    datagrams, a counted GRO buffer was cut into >= 2, a coalesced frame merges >= 2 segments,
    a TSO frame became more than one segment."""
    assert c["gso_datagrams"] >= 2 * c["gso_sends"], c
    assert c["gro_datagrams"] >= 2 * c["gro_buffers"], c
    assert c["coalesced_segments"] >= 2 * c["coalesced_frames"], c
    assert c["tso_segments"] > c["tso_frames"] or c["tso_frames"] == 0, c


def ethtool_set(w: World, ns: str, dev: str, **features: bool) -> dict[str, str]:
    """``ethtool -K DEV name on|off ...`` in ``ns``; the features afterwards."""
    argv = ["ethtool", "-K", dev]
    for name, on in features.items():
        argv += [name.replace("_", "-"), "on" if on else "off"]
    w.lab.run(ns, argv)
    return ethtool_features(w.lab.ns(ns), dev)


def kernel_release() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    assert m, os.uname().release
    return int(m.group(1)), int(m.group(2))


def segments(nbytes: int) -> int:
    """A lower bound on the data segments ``nbytes`` of TCP take on the overlay."""
    return nbytes // MSS_MAX


def walkthrough(w: World, manager: Mapping[str, Any] | None = None,
                worker: Mapping[str, Any] | None = None,
                manager_env: Mapping[str, str] = C_PATH,
                worker_env: Mapping[str, str] = C_PATH, **net_options: Any) -> Walkthrough:
    """The walkthrough (:func:`build_walkthrough`), on the compiled path unless told
    otherwise: the offloads exist only there."""
    return build_walkthrough(w, manager=manager, worker=worker, manager_env=manager_env,
                             worker_env=worker_env, **net_options)


# --------------------------------------------------------------------------- vxdp <-> vxdp

@pytest.fixture(scope="module")
def wt() -> Iterator[Walkthrough]:
    """The walkthrough with the default config: no ``offload`` key at all, so all of them."""
    with open_world() as w:
        w.hosts(("manager", MANAGER), ("worker", WORKER))
        wt = walkthrough(w)
        yield wt
        w.stop_all(wt.manager, wt.worker)


def test_default_config_turns_every_offload_on(wt: Walkthrough) -> None:
    assert wt.manager.impl == wt.worker.impl == "c"
    assert "offload" not in Path(wt.manager.config_path).read_text()
    for v, eps in ((wt.manager, (wt.c1, wt.c3)), (wt.worker, (wt.c2,))):
        o = offload(v)
        assert set(o["tap"]) >= {"csum", "tso4"}, o
        assert set(o["tap_ports"]) == {c.tap for c in eps}, o
        assert all(set(f) >= {"csum", "tso4"} for f in o["tap_ports"].values()), o
        assert o["udp_gso"] is True and o["udp_gro"] is True and o["tap_coalesce"] is True, o
        assert "off" not in o and "reason" not in o, o
        assert set(o["counters"]) == set(OFFLOAD_COUNTERS), o
        # The kernel's own view from inside each container: its eth0 (our TAP) offers
        # checksum and TCP segmentation offload, so the stack hands over super-frames.
        for c in eps:
            feats = ethtool_features(wt.world.lab.ns(c.name), "eth0")
            assert feats["tx-checksumming"] == "on", feats
            assert feats["tcp-segmentation-offload"] == "on", feats


def test_tcp_transfers_intact_and_offloads_used(wt: Walkthrough) -> None:
    """32-64 MiB each way across hosts and between two containers of one host, sha256 at both
    ends; each VTEP's counters show the bulk of the segments went through TSO, GSO, GRO and
    coalescing (not merely "> 0": at least half of the transfer's segments)."""
    w, m, k = wt.world, wt.manager, wt.worker
    runs = [("c1->c2", wt.c2, wt.c1, 48 * MIB, m, k),
            ("c2->c1", wt.c1, wt.c2, 32 * MIB, k, m),
            ("c1->c3", wt.c3, wt.c1, 32 * MIB, m, m)]
    for i, (what, server, client, n, tx, rx) in enumerate(runs):
        before = {v.name: (counters(v), v.stats()["underlay"]) for v in (m, k)}
        t = tcp_transfer(w, server, client, n, port=5201 + i, seed=11 + i)
        assert_intact(t, n, client)
        d = {v.name: delta(counters(v), before[v.name][0]) for v in (m, k)}
        want = segments(n) // 2
        # Sender's TAP: the container handed over super-frames, vxdp cut them.
        assert d[tx.name]["tso_frames"] > 0 and d[tx.name]["tso_segments"] >= want, (what, d)
        # Receiver's TAP: the segments were merged into GSO_TCPV4 writes.
        assert d[rx.name]["coalesced_frames"] > 0, (what, d)
        assert d[rx.name]["coalesced_segments"] >= want, (what, d)
        if tx is rx:
            # One host: TAP to TAP, the underlay is not involved at all.
            ul = tx.stats()["underlay"]
            assert ul["tx_packets"] - before[tx.name][1]["tx_packets"] < 100, (what, ul)
            assert d[tx.name]["gso_datagrams"] < 100, (what, d)
        else:
            # Across: one UDP_SEGMENT send per run, glued by the receiver's UDP GRO.
            assert d[tx.name]["gso_sends"] > 0, (what, d)
            assert d[tx.name]["gso_datagrams"] >= want, (what, d)
            assert d[rx.name]["gro_buffers"] > 0, (what, d)
            assert d[rx.name]["gro_datagrams"] >= want, (what, d)
    for v in (m, k):
        s = assert_healthy(v)
        c = s["offload"]["counters"]
        for key in ("tso_frames", "gso_sends", "gro_buffers", "coalesced_frames",
                    "csum_completed"):
            assert c[key] > 0, (v.name, key, c)
        assert c["coalesced_segments"] > c["coalesced_frames"], c
        assert_counter_shapes(c)
        # A per-source-port GSO socket exists for a flow in use (closed after 30 idle s).
        assert c["gso_sockets"] >= 1, c
        # Still on after all that (udp_gso would have switched itself off on EIO).
        o = s["offload"]
        assert o["udp_gso"] and o["udp_gro"] and o["tap_coalesce"], o
    assert_no_checksum_errors(w, wt.c1, wt.c2, wt.c3)


def test_concurrent_flows_are_not_mixed(wt: Walkthrough) -> None:
    """Three transfers at once: two flows into c2 (from c1 and from c3, so one TAP gets the
    interleaved segments of two flows to coalesce) and one the other way. Coalescing across
    flows, or a run that swallowed a segment of another flow, would corrupt a hash."""
    w = wt.world
    before = {v.name: counters(v) for v in (wt.manager, wt.worker)}
    n = 16 * MIB
    jobs = [(wt.c2, wt.c1, 5211, 21), (wt.c2, wt.c3, 5212, 22), (wt.c1, wt.c2, 5213, 23)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futs = [pool.submit(tcp_transfer, w, srv, cl, n, port, seed)
                for srv, cl, port, seed in jobs]
        results = [f.result() for f in futs]
    for (_, cl, _, _), t in zip(jobs, results):
        assert_intact(t, n, cl)
    assert len({t.sent_sha for t in results}) == 3   # three different payloads
    d = delta(counters(wt.worker), before[wt.worker.name])
    assert d["coalesced_segments"] >= segments(2 * n) // 2, d
    for v in (wt.manager, wt.worker):
        assert_counter_shapes(assert_healthy(v)["offload"]["counters"])
    assert_no_checksum_errors(w, wt.c1, wt.c2, wt.c3)


def test_full_size_ping_with_df(wt: Walkthrough) -> None:
    """1450-byte IP packets with DF (1422 bytes of ICMP payload): the overlay MTU is usable to
    the byte in both directions and on one host, with offloads on."""
    w = wt.world
    for src, dst in ((wt.c1, wt.c2), (wt.c2, wt.c1), (wt.c1, wt.c3)):
        p = w.ping(src, dst.ip, "-s", "1422", "-M", "do", count=3)
        assert p.returncode == 0 and " 3 received" in p.stdout, p.stdout + p.stderr
        assert "1430 bytes from" in p.stdout, p.stdout
    for v in (wt.manager, wt.worker):
        assert_healthy(v)


def iperf3_udp(w: World, client: Container, server: Container, port: int,
               *args: str) -> subprocess.CompletedProcess[str]:
    """One second of iperf3 UDP from ``client`` to a one-shot server in ``server``; the
    client's result (asserted successful)."""
    srv = w.lab.popen(server.name, ["iperf3", "-s", "-1", "-B", server.ip, "-p", str(port)],
                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            ss = w.lab.run(server.name, ["ss", "-Hltn", f"sport = :{port}"], check=False)
            return bool(ss.stdout.strip())
        wait_for(listening, 10, f"iperf3 server in {server.name}")
        p = w.lab.run(client.name, ["iperf3", "-c", server.ip, "-p", str(port), "-u", "-t", "1",
                                    "--connect-timeout", "3000", *args],
                      check=False, timeout=30)
    finally:
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    return p


def test_udp_burst_is_glued_by_gro_and_nothing_is_bad(wt: Walkthrough) -> None:
    """A 1-second iperf3 UDP burst c1 -> c2 of equal-sized datagrams: their partial checksums
    are completed (the TAP has TUN_F_CSUM), runs go out as GSO sends and the worker receives
    them as GRO buffers; no malformed vnet header, no bad UDP checksum at c2. (Loss is not
    asserted: the machine is shared, and a full socket is not a correctness problem.)"""
    w = wt.world
    before_m, before_k = counters(wt.manager), counters(wt.worker)
    udp_before = snmp(w, wt.c2.name)["Udp"]
    p = iperf3_udp(w, wt.c1, wt.c2, 5301, "-b", "1G", "-l", "1400", "-J")
    res = json.loads(p.stdout)["end"]["sum"]
    delivered = res["packets"] - res["lost_packets"]
    assert delivered > 1000, res
    dm = delta(counters(wt.manager), before_m)
    dk = delta(counters(wt.worker), before_k)
    assert dm["csum_completed"] >= delivered // 2, (dm, res)
    assert dm["gso_sends"] > 0 and dk["gro_buffers"] > 0, (dm, dk)
    assert dk["gro_datagrams"] >= 2 * dk["gro_buffers"], dk
    assert dm["bad_vnet"] == dk["bad_vnet"] == 0, (dm, dk)
    # c2's UDP saw the burst; whatever it did not deliver was for a full socket buffer
    # (iperf3 reading too slowly), never for a checksum or anything else.
    udp = delta(snmp(w, wt.c2.name)["Udp"], udp_before)
    assert udp["InDatagrams"] > 1000, udp
    assert udp["InCsumErrors"] == 0 and udp["InErrors"] == udp["RcvbufErrors"], udp
    for v in (wt.manager, wt.worker):
        assert_healthy(v)


def link_drops(w: World, c: Container) -> tuple[int, int]:
    """(tx_dropped, rx_dropped) of the container's eth0 as `ip -s -j link` reports them."""
    out = w.lab.run(c.name, ["ip", "-s", "-j", "link", "show", "dev", "eth0"], check=True)
    st = json.loads(out.stdout)[0]["stats64"]
    return st["tx"]["dropped"], st["rx"]["dropped"]


def test_stats_show_the_containers_side_of_the_taps(wt: Walkthrough) -> None:
    """Under overload the first packets lost are the ones a container sends while vxdp has
    not read its TAP yet: the TAP's queue drops them (the container's eth0 tx_dropped) before
    vxdp ever sees them. `vxdp stats` reports them per endpoint (tap_queue_dropped, and
    tap_rx_dropped for what the container's stack refused), equal to what `ip -s link` in the
    container says, in JSON and as table columns."""
    w = wt.world
    # a 64-byte UDP flood c1 -> c2 at full offered load: more than one VTEP reads, so c1's
    # TAP queue usually overflows (the figure is not asserted, its equality is)
    iperf3_udp(w, wt.c1, wt.c2, 5399, "-b", "0", "-l", "22")
    for v, cs in ((wt.manager, (wt.c1, wt.c3)), (wt.worker, (wt.c2,))):
        ports = v.stats()["ports"]
        for c in cs:
            tx_dropped, rx_dropped = link_drops(w, c)
            assert ports[c.tap]["tap_queue_dropped"] == tx_dropped, (ports[c.tap], tx_dropped)
            assert ports[c.tap]["tap_rx_dropped"] == rx_dropped, (ports[c.tap], rx_dropped)
    text = wt.manager.cli("stats").stdout
    assert "TAP_QUEUE_DROPPED" in text and "TAP_RX_DROPPED" in text, text


def test_stats_text_and_json_report_offloads(wt: Walkthrough) -> None:
    text = wt.manager.cli("stats").stdout
    js = wt.manager.cli_json("stats")["offload"]
    lines = text.splitlines()
    head = [ln for ln in lines if ln.startswith("offload:")]
    assert head == [f"offload: tap {','.join(js['tap'])}, udp_gso on, udp_gro on, "
                    "tap_coalesce on"], text
    # The non-zero counters follow, with the same values as the JSON (the world is idle).
    block = lines[lines.index(head[0]) + 1:]
    shown = {}
    for ln in block:
        m = re.fullmatch(r"  (\w+)\s+(\d+)", ln)
        if not m:
            break
        shown[m.group(1)] = int(m.group(2))
    assert shown == {k: v for k, v in js["counters"].items() if v}, (shown, js)
    assert {"tso_frames", "gso_sends", "gro_buffers", "coalesced_frames"} <= set(shown)


# --------------------------------------------------------------------------- the kernel as peer

@dataclass
class OffloadInterop(Interop):
    kernel_gso: bool    # the kernel takes UDP_SEGMENT sends on the manager's eth0 (tx csum off)


@pytest.fixture(scope="module")
def interop() -> Iterator[OffloadInterop]:
    """vxdp on the manager, the kernel's vxlan on the worker, with the kernel's offloads on.

    * c2's veth keeps its offloads (TSO, checksum): the kernel's TCP hands super-frames to the
      bridge and the vxlan device, which sends them as UDP tunnel GSO packets.
    * The hosts' eth0 play the NIC: tx checksum offload off, so the kernel segments those GSO
      packets and finishes every checksum in software before they leave. (With it on, veth
      would hand the other namespace CHECKSUM_PARTIAL packets whose inner checksums were
      never written; a real wire never carries those, and a userspace reader cannot tell.)
    * GRO on the receiving side of each link (eth0, NAPI), TSO off on the bridge ports (veth
      only hands a bridged packet to the peer's GRO when the sending side has no TSO,
      veth_skb_is_eligible_for_gro): the kernel's datagrams reach vxdp's socket glued
      together by UDP GRO. The vxlan device has ``udpcsum`` (created anew, it cannot be
      changed), because the kernel's UDP GRO skips datagrams without a checksum
      (udp_gro_receive_segment); Docker's default, no outer checksum, is test_interop's.
    """
    with open_world() as w:
        lab = w.lab
        # Tx checksumming off on the hosts' eth0: the kernel VTEP then segments and
        # checksums its datagrams in software, and GRO glues them in front of vxdp's socket
        # (this test is about that path; test_interop has the default offloads, where the
        # kernel's TSO frames arrive whole instead).
        w.hosts(("manager", MANAGER), ("worker", WORKER), tx_csum_off=True)
        c1, c2 = w.container("manager", "c1", C1_IP), w.container("worker", "c2", C2_IP)
        kv = lab.kernel_vtep("worker", VNI, WORKER,
                             containers=[(c2.name, c2.mac, f"{c2.ip}/24")])
        lab.run("worker", ["ip", "link", "del", kv.vxlan])
        lab.run("worker", ["ip", "link", "add", kv.vxlan, "type", "vxlan", "id", str(VNI),
                           "dstport", "4789", "local", WORKER, "nolearning", "proxy", "l2miss",
                           "l3miss", "ageing", "300", "udpcsum"])
        lab.run("worker", ["ip", "link", "set", kv.vxlan, "mtu", str(MTU), "master", kv.bridge,
                           "up"])
        lab.kernel_peer_add("worker", VNI, c1.mac, c1.ip, MANAGER)
        lab.kernel_flood_add("worker", VNI, MANAGER)
        for host in ("manager", "worker"):
            assert ethtool_set(w, host, "eth0", gro=True)["generic-receive-offload"] == "on"
            feats = ethtool_set(w, "ul", f"v-{host}", tso=False)
            assert feats["tcp-segmentation-offload"] == "off", feats
        gso = kernel_takes_gso(w, "manager", WORKER)
        v = start_interop_vxdp(w, c1, c2, env=C_PATH, mtu=MTU)
        yield OffloadInterop(w, c1, c2, v, kv, gso)
        v.stop()


def test_kernel_peer_has_offloads_on(interop: OffloadInterop) -> None:
    w = interop.world
    feats = ethtool_features(w.lab.ns(interop.c2.name), "eth0")
    assert feats["tx-checksumming"] == "on" and feats["tcp-segmentation-offload"] == "on", feats
    text = w.lab.run("worker", ["ip", "-d", "link", "show", interop.kernel.vxlan]).stdout
    assert f"vxlan id {VNI}" in text and " udpcsum" in text and "nolearning proxy" in text, text
    o = offload(interop.vxdp)
    assert o["udp_gso"] and o["udp_gro"] and o["tap_coalesce"] and "tso4" in o["tap"], o


def test_ping_both_ways_with_the_kernel(interop: OffloadInterop) -> None:
    w = interop.world
    w.assert_ping(interop.c1, interop.c2.ip)
    w.assert_ping(interop.c2, interop.c1.ip)
    for src, dst in ((interop.c1, interop.c2.ip), (interop.c2, interop.c1.ip)):
        p = w.ping(src, dst, "-s", "1422", "-M", "do", count=2)
        assert p.returncode == 0 and " 2 received" in p.stdout, p.stdout + p.stderr
    assert_healthy(interop.vxdp, gso_fallbacks_allowed=not interop.kernel_gso)


@pytest.mark.parametrize("direction", ["vxdp_to_kernel", "kernel_to_vxdp"])
def test_tcp_with_the_kernel_intact(interop: OffloadInterop, direction: str) -> None:
    w, c1, c2 = interop.world, interop.c1, interop.c2
    server, client = (c2, c1) if direction == "vxdp_to_kernel" else (c1, c2)
    n = 24 * MIB
    before = counters(interop.vxdp)
    t = tcp_transfer(w, server, client, n, port=5221, seed=31 if server is c2 else 32)
    assert_intact(t, n, client)
    d = delta(counters(interop.vxdp), before)
    want = segments(n) // 2
    if direction == "vxdp_to_kernel":
        # vxdp cut c1's super-frames and sent runs with UDP_SEGMENT, which the kernel
        # segmented in software on eth0 (see test_checksums_on_the_wire_under_load).
        assert d["tso_segments"] >= want, d
        if interop.kernel_gso:
            assert d["gso_datagrams"] >= want and d["gso_fallbacks"] == 0, d
        else:
            assert not offload(interop.vxdp)["udp_gso"], d
    else:
        # The kernel's segments, glued by GRO in front of vxdp's socket: vxdp cut them at the
        # cmsg's segment size and merged them again for c1's TAP.
        assert d["gro_buffers"] > 0 and d["gro_datagrams"] >= want, d
        assert d["coalesced_segments"] >= want, d
    s = assert_healthy(interop.vxdp, gso_fallbacks_allowed=not interop.kernel_gso)
    assert_counter_shapes(s["offload"]["counters"])
    assert_no_checksum_errors(w, c1, c2)


# --------------------------------------------------------------------------- checksums on the wire

_GSO_PROBE = r"""
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(17, 103, 1000)    # SOL_UDP, UDP_SEGMENT: 1000-byte segments
try:
    s.sendto(bytes(2000), (sys.argv[1], 9))    # two datagrams, to the discard port
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
else:
    print("ok")
"""

_TSHARK_FIELDS = ["frame.len", "ip.src", "ip.dst", "ip.checksum.status", "udp.dstport",
                  "udp.checksum", "udp.checksum.status", "vxlan.vni", "tcp.len",
                  "tcp.checksum.status"]


def kernel_takes_gso(w: World, host: str, dst: str) -> bool:
    """Whether a plain UDP_SEGMENT send from ``host`` to ``dst`` is accepted by the kernel
    (False: refused with EIO, the pre-6.11 "device cannot checksum" verdict); asserted to be
    True on Linux >= 6.11, where udp_send_skb no longer refuses (see the wire test)."""
    probe = w.lab.run(host, [sys.executable, "-c", _GSO_PROBE, dst]).stdout.strip()
    assert probe in ("ok", "EIO"), probe
    if kernel_release() >= (6, 11):
        assert probe == "ok", f"Linux {os.uname().release} refused UDP GSO: {probe}"
    return probe == "ok"


def test_checksums_on_the_wire_under_load() -> None:
    """tshark validates every outer IPv4 and UDP checksum and every inner IPv4 and TCP checksum
    of two bulk transfers (one each way) captured on the underlay.

    The sending side of each underlay link does everything in software (``ethtool -K eth0 tx
    off tso off gso off tx-udp-segmentation off``): otherwise the capture would show GSO
    super-datagrams and CHECKSUM_PARTIAL packets whose checksums nobody has written yet.

    What vxdp does then depends on the kernel's udp_send_skb. Up to Linux 6.10 a UDP_SEGMENT
    send through a device without checksum offload fails with EIO (``skb->ip_summed !=
    CHECKSUM_PARTIAL``), so vxdp must fall back to its raw socket, count a gso_fallback and
    switch udp_gso off. Since 6.11 (10154dbded6d, "udp: Allow GSO transmit from devices with
    no checksum offload") that check is gone and the GSO stack segments and checksums in
    software (__udp_gso_segment), so the send succeeds and vxdp must keep using GSO. Which
    one applies is measured here with a plain UDP_SEGMENT socket on the same link, checked
    against the kernel version (a newer kernel must accept), and vxdp must agree with it.
    """
    n = 8 * MIB
    with open_world() as w:
        w.hosts(("manager", MANAGER), ("worker", WORKER))
        for host in ("manager", "worker"):
            feats = ethtool_set(w, host, "eth0", tx=False, tso=False, gso=False,
                                tx_udp_segmentation=False)
            for k in ("tx-checksumming", "tcp-segmentation-offload",
                      "generic-segmentation-offload", "tx-udp-segmentation"):
                assert feats[k] == "off", (host, k, feats)
        kernel_gso = kernel_takes_gso(w, "manager", WORKER)
        wt = walkthrough(w)
        pcap = os.path.join(w.tmp, "underlay.pcap")
        # On the manager's bridge port: its datagrams arrive there, the worker's leave there.
        cap = w.lab.tcpdump("ul", "v-manager", "udp port 4789",
                            extra=("-q", "-U", "-B", "65536", "-w", pcap))
        t1 = tcp_transfer(w, wt.c2, wt.c1, n, port=5231, seed=41)
        t2 = tcp_transfer(w, wt.c1, wt.c2, n, port=5232, seed=42)
        cap.stop()
        assert_intact(t1, n, wt.c1)
        assert_intact(t2, n, wt.c2)
        captured = re.search(rb"(\d+) packets captured", cap.stderr)
        assert captured, cap.stderr

        for v in (wt.manager, wt.worker):
            s = assert_healthy(v, gso_fallbacks_allowed=not kernel_gso)
            o, c = s["offload"], s["offload"]["counters"]
            if kernel_gso:
                assert c["gso_fallbacks"] == 0 and c["gso_sends"] > 0, c
                assert o["udp_gso"] is True, o
            else:
                assert c["gso_fallbacks"] >= 1, c
                assert o["udp_gso"] is False and "GSO send" in o["off"]["udp_gso"], o
            assert c["tso_segments"] >= segments(n) // 2, c   # inner checksums are ours

        rows = tshark_rows(w, "ul", pcap, _TSHARK_FIELDS)
        data: dict[str, list[dict[str, list[str]]]] = {MANAGER: [], WORKER: []}
        for r in rows:
            # Nothing unsegmented and nothing undecoded: every datagram is one wire frame
            # (1514 bytes at most: 1450 inner IP + 14 + 50 of encapsulation) of VNI 4097.
            assert int(r["frame.len"][0]) <= 14 + MTU + 50, r
            assert r["udp.dstport"] == ["4789"] and r["vxlan.vni"] == [str(VNI)], r
            # Two IPv4 headers (outer, inner), the outer UDP, the inner TCP: all Good. vxdp
            # always writes an outer UDP checksum, so "Unverified" would be a failure too.
            assert r["ip.checksum.status"] and set(r["ip.checksum.status"]) == {GOOD}, r
            assert r["udp.checksum.status"] == [GOOD], r
            assert r["udp.checksum"] != ["0x0000"], r
            if r["tcp.checksum.status"]:
                assert len(r["ip.checksum.status"]) == 2, r
                assert r["tcp.checksum.status"] == [GOOD], r
                if int(r["tcp.len"][0]) > 0:
                    data[r["ip.src"][0]].append(r)
        for src, dst, client, server in ((MANAGER, WORKER, wt.c1, wt.c2),
                                         (WORKER, MANAGER, wt.c2, wt.c1)):
            got = data[src]
            # Most of the transfer is in the capture (tcpdump may lose some under load).
            assert len(got) >= segments(n) // 2, (src, len(got), captured.group(0))
            assert all(r["ip.dst"] == [dst, server.ip] and r["ip.src"] == [src, client.ip]
                       for r in got)
            assert sum(int(r["frame.len"][0]) == 14 + MTU + 50 for r in got) >= len(got) // 2
        assert not any(BAD in r[f] for r in rows for f in
                       ("ip.checksum.status", "udp.checksum.status", "tcp.checksum.status"))
        assert_no_checksum_errors(w, wt.c1, wt.c2)
        w.stop_all(wt.manager, wt.worker)


# --------------------------------------------------------------------------- offloads off

@pytest.fixture(scope="module")
def offworld() -> Iterator[Walkthrough]:
    """Manager: the C path with ``offload = false``. Worker: the pure-Python path."""
    with open_world() as w:
        w.hosts(("manager", MANAGER), ("worker", WORKER))
        wt = walkthrough(w, manager={"offload": False}, worker_env=PY_PATH)
        yield wt
        w.stop_all(wt.manager, wt.worker)


def test_offload_false_turns_everything_off(offworld: Walkthrough) -> None:
    wt, w = offworld, offworld.world
    assert wt.manager.impl == "c"
    n = 4 * MIB
    assert_intact(tcp_transfer(w, wt.c2, wt.c1, n, port=5241, seed=51), n, wt.c1)
    assert_intact(tcp_transfer(w, wt.c3, wt.c1, 16 * MIB, port=5242, seed=52), 16 * MIB, wt.c1)
    s = assert_healthy(wt.manager)
    o = s["offload"]
    assert o["tap"] == [] and o["udp_gso"] is False and o["udp_gro"] is False, o
    assert o["tap_coalesce"] is False, o
    assert o["tap_ports"] == {wt.c1.tap: [], wt.c3.tap: []}, o
    assert o["off"] == {k: "disabled by [vtep] offload" for k in ("tap", "udp_gso", "udp_gro")}
    assert o["counters"] == {k: 0 for k in OFFLOAD_COUNTERS}, o
    for c in (wt.c1, wt.c3):
        feats = ethtool_features(w.lab.ns(c.name), "eth0")
        assert feats["tx-checksumming"] == "off", feats
        assert feats["tcp-segmentation-offload"] == "off", feats
    text = wt.manager.cli("stats").stdout
    assert "offload: off (disabled by [vtep] offload)" in text.splitlines(), text
    assert_no_checksum_errors(w, wt.c1, wt.c3)


def test_pure_python_path_reports_offloads_off(offworld: Walkthrough) -> None:
    wt, w = offworld, offworld.world
    assert wt.worker.impl == "py"
    n = 4 * MIB
    assert_intact(tcp_transfer(w, wt.c1, wt.c2, n, port=5243, seed=53), n, wt.c2)
    s = assert_no_drops(wt.worker)
    o = s["offload"]
    assert o["reason"] == "pure-Python path", o
    assert o["tap"] == [] and o["tap_ports"] == {wt.c2.tap: []}, o
    assert not o["udp_gso"] and not o["udp_gro"] and not o["tap_coalesce"], o
    assert not any(o.get("counters", {}).values()), o
    feats = ethtool_features(w.lab.ns(wt.c2.name), "eth0")
    assert feats["tx-checksumming"] == "off" and feats["tcp-segmentation-offload"] == "off"
    text = wt.worker.cli("stats").stdout
    assert "offload: off (pure-Python path)" in text.splitlines(), text
    assert_no_checksum_errors(w, wt.c2)


def test_offload_lists_select_offloads_per_vtep() -> None:
    """``offload = ["tap"]`` on one VTEP and ``["udp_gso", "udp_gro"]`` on the other: each uses
    exactly what it was given, says why the rest is off, and they still interoperate."""
    with open_world() as w:
        w.hosts(("manager", MANAGER), ("worker", WORKER))
        wt = walkthrough(w, manager={"offload": ["tap"]},
                         worker={"offload": ["udp_gso", "udp_gro"]})
        n = 16 * MIB
        assert_intact(tcp_transfer(w, wt.c2, wt.c1, n, port=5251, seed=61), n, wt.c1)
        assert_intact(tcp_transfer(w, wt.c1, wt.c2, n, port=5252, seed=62), n, wt.c2)
        om = assert_healthy(wt.manager)["offload"]
        assert "tso4" in om["tap"] and om["tap_coalesce"] is True, om
        assert om["udp_gso"] is False and om["udp_gro"] is False, om
        assert om["off"] == {"udp_gso": "disabled by [vtep] offload",
                             "udp_gro": "disabled by [vtep] offload"}, om
        cm = om["counters"]
        assert cm["tso_segments"] >= segments(n) // 2, cm
        assert cm["coalesced_segments"] >= segments(n) // 2, cm
        assert cm["gso_sends"] == cm["gro_buffers"] == cm["gso_sockets"] == 0, cm
        ok = assert_healthy(wt.worker)["offload"]
        assert ok["tap"] == [] and ok["tap_coalesce"] is False, ok
        assert ok["udp_gso"] is True and ok["udp_gro"] is True, ok
        assert ok["off"] == {"tap": "disabled by [vtep] offload"}, ok
        ck = ok["counters"]
        assert ck["tso_frames"] == ck["csum_completed"] == ck["coalesced_frames"] == 0, ck
        tso = "tcp-segmentation-offload"
        assert ethtool_features(w.lab.ns(wt.c2.name), "eth0")[tso] == "off"
        assert ethtool_features(w.lab.ns(wt.c1.name), "eth0")[tso] == "on"
        assert_no_checksum_errors(w, wt.c1, wt.c2)
        w.stop_all(wt.manager, wt.worker)


# --------------------------------------------------------------------------- busy polling

def test_busy_poll_serves_traffic_and_the_control_socket() -> None:
    """``busy_poll`` keeps each VTEP polling after a burst instead of going back to epoll. It
    must not change what is forwarded, and under sustained load (where it never finds an idle
    moment) it must still hand the event loop its turn: the control socket answers while a
    transfer runs."""
    with open_world() as w:
        w.hosts(("manager", MANAGER), ("worker", WORKER))
        wt = walkthrough(w, manager={"busy_poll": 500}, worker={"busy_poll": 500})
        w.assert_ping(wt.c1, wt.c2.ip)
        n = 48 * MIB
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(tcp_transfer, w, wt.c2, wt.c1, n, 5261, 71)
            answers = 0
            while not job.done():
                st = wt.manager.stats()          # ControlClient raises if it gets no answer
                assert st["vtep"]["name"] == "manager"
                answers += 1
            assert_intact(job.result(), n, wt.c1)
        assert answers >= 1
        assert_intact(tcp_transfer(w, wt.c1, wt.c3, 16 * MIB, port=5262, seed=72), 16 * MIB,
                      wt.c3)
        for v in (wt.manager, wt.worker):
            o = assert_healthy(v)["offload"]
            # busy polling goes through the same burst functions: the offloads stay in use
            assert o["udp_gso"] and o["udp_gro"] and o["tap_coalesce"], o
        cm, cw = counters(wt.manager), counters(wt.worker)      # c1 (manager) sent to c2
        assert cm["tso_segments"] >= segments(n) // 2 and cm["gso_sends"] > 0, cm
        assert cw["gro_buffers"] > 0 and cw["coalesced_segments"] >= segments(n) // 2, cw
        assert_no_checksum_errors(w, wt.c1, wt.c2, wt.c3)
        w.stop_all(wt.manager, wt.worker)


# --------------------------------------------------------------------------- oversized datagrams

# 1472-byte datagrams without DF, 32 at a time (UDP_SEGMENT: the container's kernel cuts
# them in software in front of the TAP, which reaches vxdp as one burst, so runs of them)
NO_DF_BURST = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# IP_MTU_DISCOVER = IP_PMTUDISC_INTERFACE: DF clear, and the link's MTU whatever the path
# MTU learned meanwhile (the frag-needed above)
s.setsockopt(socket.IPPROTO_IP, 10, 4)
s.setsockopt(17, 103, 1472)                 # UDP_SEGMENT
for _ in range(int(sys.argv[3]) // 32):
    s.sendto(bytes(1472 * 32), (sys.argv[1], int(sys.argv[2])))
"""


def test_network_mtu_too_big_for_the_underlay_fragments_like_the_kernel() -> None:
    """A network MTU of 1500 on a 1500-byte underlay: full-size frames make 1550-byte outer
    packets. What the kernel's vxlan does with them (``df`` unset, its default), vxdp does:
    an inner packet with DF (ping -M do, TCP) is answered with frag-needed, mtu 1450 (PMTU
    signalling, test_pmtu_e2e.py), and the sender adapts; one without DF is sent and the
    outer datagram fragmented. For those, vxdp's GSO send is refused (segment + headers
    over the path MTU: EINVAL), the run goes out datagram by datagram on the flow's UDP
    socket, which fragments (IP_PMTUDISC_DONT); a single datagram the raw socket refuses
    (EMSGSIZE) takes the same way. Nothing is lost."""
    with open_world() as w:
        wt = walkthrough(w, mtu=1500)
        c1, c2, m, k = wt.c1, wt.c2, wt.manager, wt.worker
        # 1472 + 28 = a 1500-byte inner packet with DF: it cannot cross unfragmented
        out = w.lab.run(c1.name, ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1472",
                                  c2.ip], check=False)
        assert "Frag needed and DF set (mtu = 1450)" in out.stdout, out.stdout + out.stderr
        # without DF only the outer packet fragments, one datagram (raw socket: EMSGSIZE)...
        out = w.lab.run(c1.name, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-M", "dont",
                                  "-s", "1472", c2.ip], check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        # ... or runs of them (GSO refused)
        before = snmp(w, c2.name)["Udp"]["NoPorts"]
        w.lab.run(c1.name, [sys.executable, "-c", NO_DF_BURST, c2.ip, "9", "256"])
        wait_for(lambda: snmp(w, c2.name)["Udp"]["NoPorts"] - before == 256, 10,
                 "256 reassembled datagrams at c2")
        n = 16 * MIB
        assert_intact(tcp_transfer(w, c2, c1, n, port=5271, seed=81), n, c1)
        assert_intact(tcp_transfer(w, c1, c2, n, port=5272, seed=82), n, c2)
        for v in (m, k):
            st = v.stats()
            assert st["underlay"]["tx_errors"] == 0, st["underlay"]
            o = st["offload"]
            assert o["udp_gso"] is True, o       # refused for this size only, not switched off
        assert m.stats()["offload"]["counters"]["gso_fallbacks"] >= 1
        assert m.stats()["counters"]["frag_needed"] >= 1
        assert_no_checksum_errors(w, c1, c2)
        w.stop_all(m, k)


# --------------------------------------------------------------------------- corrupt segments

GSO_SENDER = r"""
import socket, struct, sys
dst, seg, blob = (sys.argv[1], 4789), int(sys.argv[2]), bytes.fromhex(sys.stdin.read().strip())
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# one UDP_SEGMENT send: the datagrams arrive together (one GRO buffer on the VTEP's socket)
s.sendmsg([blob], [(17, 103, struct.pack("H", seg))], 0, dst)
print(len(blob) // seg)
"""


def test_a_corrupt_segment_is_never_merged_into_a_good_frame(wt: Walkthrough) -> None:
    """A merged frame goes to the container marked "checksum to be completed", which its
    stack takes as verified; merging a segment whose TCP checksum is wrong would launder
    it. A hostile (or broken) peer sends eight back-to-back segments of one flow in one GSO
    burst, the fourth with a payload byte flipped: vxdp merges the good ones around it, counts
    the bad one (csum_bad) and writes it alone and unchanged, so c1's own TCP stack finds the
    error (InCsumErrors + 1) instead of accepting corrupt data."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    w = wt.world
    size = 1000
    frames = []
    for i in range(8):
        f = bytearray(bytes(
            Ether(src=wt.c2.mac, dst=wt.c1.mac)
            / IP(src=wt.c2.ip, dst=wt.c1.ip, flags="DF", id=100 + i)
            / TCP(sport=40123, dport=9, seq=7_000_000 + i * size, ack=1, flags="A",
                  window=500)
            / bytes((i * 31 + k) & 0xFF for k in range(size))))
        if i == 3:
            f[-100] ^= 0x01                      # payload corrupted, checksum left as it was
        frames.append(bytes(f))
    vxlan_hdr = struct.pack("!II", 0x08000000, VNI << 8)
    blob = b"".join(vxlan_hdr + f for f in frames)
    before = counters(wt.manager)
    tcp_before = snmp(w, wt.c1.name)["Tcp"]
    out = w.lab.run("worker", [sys.executable, "-c", GSO_SENDER, MANAGER,
                               str(len(vxlan_hdr) + len(frames[0]))],
                    input=blob.hex(), check=False, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "8", out.stdout + out.stderr

    def delivered() -> dict[str, int]:
        return delta(counters(wt.manager), before)
    d = wait_for(lambda: (lambda x: x if x["coalesced_segments"] >= 7 else None)(delivered()),
                 5, "the burst to reach c1")
    assert d["csum_bad"] == 1, d
    assert d["gro_buffers"] >= 1, d
    # three good segments before the bad one, four after: two merged frames, one lone one
    assert d["coalesced_frames"] == 2 and d["coalesced_segments"] == 7, d
    tcp = delta(snmp(w, wt.c1.name)["Tcp"], tcp_before)
    assert tcp["InCsumErrors"] == 1, tcp
