"""FDB entries that name a remote's own UDP port and VNI (``bridge fdb add ... dst IP port P
vni N``), programmed through ``vxdp fdb`` on a running VTEP, against the kernel's vxlan.

worker: a kernel vxlan device with id 5000 on UDP port 8472 (Linux's historical default), its
per-entry remote pointing back at vxdp on 4789 with VNI 4097. manager: ``vxdp run`` serving
VNI 4097 on 4789 with no peers; the test adds them with the CLI: ``fdb add MAC dst WORKER port
8472 remote_vni 5000 dev mynet`` and ``neigh add``. Ping and TCP cross, and the datagrams on
the wire carry VNI 5000 to port 8472 one way and VNI 4097 to 4789 the other.
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
    interop_containers,
    network,
    open_world,
    tcp_transfer,
    tshark_rows,
)

pytestmark = pytest.mark.privileged

KERNEL_VNI, KERNEL_PORT = 5000, 8472


@pytest.fixture(scope="module")
def translated() -> Iterator[Interop]:
    with open_world() as w:
        c1, c2 = interop_containers(w)
        kv = w.lab.kernel_vtep("worker", KERNEL_VNI, WORKER, dstport=KERNEL_PORT,
                               containers=[(c2.name, c2.mac, f"{c2.ip}/24")])
        # the kernel's per-entry port and VNI (test tooling may use iproute2; vxdp may not)
        w.lab.run("worker", ["bridge", "fdb", "add", c1.mac, "dev", kv.vxlan, "dst", MANAGER,
                             "port", "4789", "vni", str(VNI), "self", "permanent"], check=True)
        w.lab.run("worker", ["ip", "neigh", "add", c1.ip, "lladdr", c1.mac, "dev", kv.vxlan,
                             "nud", "permanent"], check=True)
        v = w.start_vxdp("manager", w.vtep_config("manager", MANAGER, [network(
            "mynet", VNI, endpoints=[c1])]))
        yield Interop(w, c1, c2, v, kv)
        v.stop()


def test_cli_programs_a_remote_with_its_port_and_vni(translated: Interop) -> None:
    v, c2 = translated.vxdp, translated.c2
    v.cli("fdb", "add", c2.mac, "dst", WORKER, "port", str(KERNEL_PORT), "remote_vni",
          str(KERNEL_VNI), "dev", "mynet")
    v.cli("neigh", "add", c2.ip, "lladdr", c2.mac, "dev", "mynet")
    rows = [r for r in v.cli_json("fdb", "show") if r["mac"] == c2.mac]
    assert rows == [{"mac": c2.mac, "vni": VNI, "network": "mynet", "state": "permanent",
                     "dst": WORKER, "port": KERNEL_PORT, "remote_vni": KERNEL_VNI}]
    text = v.cli("fdb", "show").stdout
    assert f"{c2.mac} dev mynet dst {WORKER} port {KERNEL_PORT} remote_vni {KERNEL_VNI} " \
           f"vni {VNI} self permanent" in text
    # the same remote named again is the same remote; a del names it whole
    p = v.cli("fdb", "del", c2.mac, "port", "8472", check=False)
    assert p.returncode != 0 and "give its dst too" in p.stderr


def test_ping_and_tcp_cross_with_translation(translated: Interop) -> None:
    w, c1, c2 = translated.world, translated.c1, translated.c2
    pcap = os.path.join(w.tmp, "translated.pcap")
    cap = w.lab.tcpdump("manager", "eth0", "udp", extra=("-q", "-U", "--immediate-mode",
                                                         "-w", pcap))
    w.assert_ping(c1, c2.ip)
    w.assert_ping(c2, c1.ip)
    time.sleep(0.3)
    cap.stop()
    t = tcp_transfer(w, c2, c1, 512 * 1024, seed=21)
    assert t.sent == t.received and t.sent_sha == t.received_sha == t.echoed_sha
    rows = tshark_rows(w, "manager", pcap, ["ip.src", "udp.dstport", "vxlan.vni", "icmp.type"],
                       vxlan_ports=(4789, KERNEL_PORT))
    out = [r for r in rows if r["ip.src"][:1] == [MANAGER]]
    back = [r for r in rows if r["ip.src"][:1] == [WORKER]]
    assert out and all(r["udp.dstport"] == [str(KERNEL_PORT)]
                       and r["vxlan.vni"] == [str(KERNEL_VNI)] for r in out), rows
    assert back and all(r["udp.dstport"] == ["4789"] and r["vxlan.vni"] == [str(VNI)]
                        for r in back), rows
    assert translated.vxdp.stats()["drops"]["unknown_vni"] == 0


def test_flush_keeps_permanent_and_drops_dynamic(translated: Interop) -> None:
    v = translated.vxdp
    v.cli("fdb", "add", "02:00:00:00:00:31", "dst", WORKER, "dynamic")
    v.cli("fdb", "add", "02:00:00:00:00:32", "dst", WORKER, "static")
    v.cli("fdb", "flush", "dynamic")
    macs = {r["mac"]: r["state"] for r in v.cli_json("fdb", "show")}
    assert "02:00:00:00:00:31" not in macs and macs["02:00:00:00:00:32"] == "static"
    v.cli("fdb", "flush", "dev", "mynet")
    macs = {r["mac"]: r["state"] for r in v.cli_json("fdb", "show")}
    assert "02:00:00:00:00:32" not in macs
    assert macs[translated.c2.mac] == "permanent" and macs[translated.c1.mac] == "permanent"
