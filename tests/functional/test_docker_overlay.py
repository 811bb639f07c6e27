"""Docker's own overlay network as vxdp's VXLAN peer: the real thing the project rebuilds.

Host s1 runs dockerd in swarm mode with an attachable overlay network on VNI 4097
(``-o com.docker.network.driver.overlay.vxlanid_list=4097``) and a container o1 on it; host
v1 runs vxdp with a container c1 (a TAP endpoint) and o1 as a static peer. Docker's side gets
what its peerAdd would program for c1, in the overlay's namespace:
``bridge fdb replace MAC dev vxlan0 dst VTEP self permanent`` and
``ip neigh replace IP lladdr MAC dev vxlan0 nud permanent``.

The underlay is a plain veth pair per host with its *default* offloads: Docker's kernel VTEP
hands vxdp checksum-partial inner frames and TSO super-frames (a veth passes GSO packets
across intact), which vxdp's rx step must complete and cut (``dataplane.offload.receive``).
Ping and TCP both ways, every transfer checked by SHA-256.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dataplane.lab import Lab, VxdpProcess
from dataplane.lab.docker import DockerHost
from tests.functional.docker_world import needs_docker
from tests.functional.vxdp_world import World, network

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

S1, V1 = "198.18.0.11", "198.18.0.12"
C1_IP, C1_MAC = "192.168.55.100", "02:42:c0:a8:37:64"
MIB = 4


@dataclass
class Overlay:
    w: World
    d: DockerHost
    v: VxdpProcess
    o1_ip: str
    sandbox: str


@pytest.fixture(scope="module")
def ov() -> Iterator[Overlay]:
    needs_docker()
    with Lab() as lab, World(lab) as w:
        w.hosts(("s1", S1), ("v1", V1))
        d = DockerHost.create(lab, "s1")
        try:
            d.docker("swarm", "init", "--advertise-addr", S1, "--listen-addr", f"{S1}:2377")
            d.docker("network", "create", "-d", "overlay", "--attachable", "-o",
                     "com.docker.network.driver.overlay.vxlanid_list=4097",
                     "--subnet", "192.168.55.0/24", "ovnet")
            d.run("o1", "ovnet")
            o1_ip = d.inspect("o1", '{{(index .NetworkSettings.Networks "ovnet").IPAddress}}')
            o1_mac = d.inspect("o1", '{{(index .NetworkSettings.Networks "ovnet").MacAddress}}')
            sandbox = d.overlay_sandbox("ovnet")
            # Docker's peerAdd for c1, as its gossip would have programmed it.
            d.in_sandbox(sandbox, ["bridge", "fdb", "replace", C1_MAC, "dev", "vxlan0", "dst",
                                   V1, "self", "permanent"])
            d.in_sandbox(sandbox, ["ip", "neigh", "replace", C1_IP, "lladdr", C1_MAC, "dev",
                                   "vxlan0", "nud", "permanent"])
            c1 = w.container("v1", "c1", C1_IP, C1_MAC)
            o1 = type(c1)("o1", "", "s1", o1_ip, o1_mac)
            v = w.start_vxdp("v1", w.vtep_config("v1", V1, [network(
                "mynet", 4097, endpoints=[c1], peers=[(o1, S1)], flood=[S1])]))
            yield Overlay(w, d, v, o1_ip, sandbox)
            w.stop_all(v)
        finally:
            d.close()


def report(ov: Overlay) -> str:
    """What to look at when traffic does not pass: both sides' counters."""
    vx = ov.v.cli("stats").stdout
    dk = ov.d.in_sandbox(ov.sandbox, ["ip", "-s", "link", "show", "vxlan0"], check=False).stdout
    s1 = ov.w.lab.run("s1", ["ip", "-s", "link", "show", "eth0"], check=False).stdout
    v1 = ov.w.lab.run("v1", ["ip", "-s", "link", "show", "eth0"], check=False).stdout
    csum = ov.w.lab.run("c1", ["nstat", "-az", "TcpInCsumErrors", "UdpInCsumErrors"],
                        check=False).stdout
    o1 = ov.d.exec("o1", "cat", "/proc/net/snmp", check=False).stdout
    return (f"vxdp stats:\n{vx}\nDocker vxlan0:\n{dk}\ns1 eth0:\n{s1}\nv1 eth0:\n{v1}\n"
            f"c1 checksum errors:\n{csum}\no1 /proc/net/snmp:\n{o1}")


def test_ping_both_ways(ov: Overlay) -> None:
    p = ov.d.exec("o1", "ping", "-c", "3", "-W", "2", C1_IP, check=False)
    assert p.returncode == 0, f"o1 -> c1:\n{p.stdout}\n{report(ov)}"
    q = ov.w.ping("c1", ov.o1_ip)
    assert q.returncode == 0, f"c1 -> o1:\n{q.stdout}\n{report(ov)}"


def _sha(path: str) -> str:
    return subprocess.run(["sha256sum", path], capture_output=True, text=True,
                          check=True).stdout.split()[0]


def test_tcp_both_ways(ov: Overlay) -> None:
    tmp = ov.w.tmp
    tx = os.path.join(tmp, "tx")
    with open(tx, "wb") as f:
        f.write(os.urandom(MIB << 20))
    want = _sha(tx)
    # c1 -> o1: o1 receives with busybox nc (-e: see docker_world.tcp_transfer)
    ov.d.exec("o1", "sh", "-c", "rm -f /tmp/rx /tmp/done; printf '#!/bin/sh\\ncat > /tmp/rx\\n'"
              " > /tmp/rcv; chmod +x /tmp/rcv")
    ov.d.docker("exec", "-d", "o1", "sh", "-c", "nc -l -p 5001 -e /tmp/rcv; touch /tmp/done")
    t0 = time.monotonic()
    _retry(lambda: ov.w.lab.run("c1", ["sh", "-c", f"busybox nc -w 5 {ov.o1_ip} 5001 < {tx}"],
                                check=False, timeout=60).returncode == 0)
    _retry(lambda: ov.d.exec("o1", "test", "-e", "/tmp/done", check=False).returncode == 0)
    got = ov.d.exec("o1", "sha256sum", "/tmp/rx").stdout.split()[0]
    print(f"c1 (vxdp) -> o1 (Docker overlay): {MIB} MiB in {time.monotonic() - t0:.2f}s")
    assert got == want, f"c1 -> o1: sha256 differs\n{report(ov)}"
    # o1 -> c1
    rx, done = os.path.join(tmp, "rx"), os.path.join(tmp, "done")
    rcv = os.path.join(tmp, "rcv")
    with open(rcv, "w") as f:
        f.write(f"#!/bin/sh\ncat > {rx}\n")
    os.chmod(rcv, 0o755)
    srv = ov.w.lab.popen("c1", ["sh", "-c", f"busybox nc -l -p 5002 -e {rcv}; touch {done}"])
    ov.d.docker("cp", tx, "o1:/tmp/tx")
    t0 = time.monotonic()
    _retry(lambda: ov.d.exec("o1", "sh", "-c", f"nc -w 5 {C1_IP} 5002 < /tmp/tx",
                             check=False).returncode == 0)
    _retry(lambda: os.path.exists(done))
    srv.wait(10)
    print(f"o1 (Docker overlay) -> c1 (vxdp): {MIB} MiB in {time.monotonic() - t0:.2f}s")
    print(ov.v.cli("stats").stdout)
    assert _sha(rx) == want, f"o1 -> c1: sha256 differs\n{report(ov)}"


def _retry(pred: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
