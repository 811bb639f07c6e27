"""vxdp as Docker's network and IPAM driver, with real dockerds: two lab hosts, each with its
own dockerd and ``vxdp run`` (``[docker]``), and a real etcd between them (``[store]``).

The module shares one world; each test leaves it as it found it (the ``mynet`` network on
both hosts, no containers), so the tests also run one by one. Deadlines, not timings.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Iterator

import pytest

from tests.functional.docker_world import (SUBNET, DockerWorld, docker_world, links,
                                           tap_flags, tcp_transfer)
from tests.functional.vxdp_world import wait_for

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

IFF_TAP, IFF_NO_PI, IFF_PERSIST = 0x0002, 0x1000, 0x0800


@pytest.fixture(scope="module")
def w() -> Iterator[DockerWorld]:
    with docker_world(store=True) as world:
        world.create("--subnet", SUBNET, "-o", "vni=4097", "mynet")
        yield world


@pytest.fixture
def pair(w: DockerWorld) -> Iterator[tuple[str, str]]:
    """c1 on h1 and c2 on h2 on mynet; their addresses."""
    w.docker["h1"].run("c1", "mynet")
    w.docker["h2"].run("c2", "mynet")
    yield w.address("h1", "c1"), w.address("h2", "c2")
    for h, c in (("h1", "c1"), ("h2", "c2")):
        w.docker[h].docker("rm", "-f", c, check=False)


def remote_macs(w: DockerWorld, host: str) -> set[str]:
    return {r["mac"] for r in w.vxdp[host].fdb()
            if "dst" in r and r["mac"] != "00:00:00:00:00:00"}


def test_container_gets_a_vxdp_tap(w: DockerWorld, pair: tuple[str, str]) -> None:
    ip1, ip2 = pair
    d = w.docker["h1"]
    eth = links(d, "c1")
    assert set(eth) == {"lo", "eth0"}, eth           # no docker_gwbridge interface
    assert eth["eth0"]["mtu"] == "1450"
    mac = "02:42:" + ":".join(f"{int(o):02x}" for o in ip1.split("."))
    assert eth["eth0"]["mac"] == mac
    flags = tap_flags(d, "c1")
    assert flags & (IFF_TAP | IFF_NO_PI | IFF_PERSIST) == IFF_TAP | IFF_NO_PI | IFF_PERSIST
    assert "default" not in d.exec("c1", "ip", "route").stdout   # DisableGatewayService
    assert ip1 != ip2 and ip1.startswith("192.168.55.") and ip2.startswith("192.168.55.")
    ep = {e["mac"]: e for e in w.vxdp["h1"].endpoints()}[mac]
    assert ep["vni"] == 4097 and ep["address"] == f"{ip1}/24"


def test_ping_and_tcp_both_ways(w: DockerWorld, pair: tuple[str, str]) -> None:
    ip1, ip2 = pair
    macs = {h: links(w.docker[h], c)["eth0"]["mac"] for h, c in (("h1", "c1"), ("h2", "c2"))}
    wait_for(lambda: macs["h2"] in remote_macs(w, "h1") and macs["h1"] in remote_macs(w, "h2"),
             10, "the store to publish both containers")
    w.ping("h1", "c1", ip2)
    w.ping("h2", "c2", ip1)
    for src, dst, ip in ((("h1", "c1"), ("h2", "c2"), ip2), (("h2", "c2"), ("h1", "c1"), ip1)):
        t = tcp_transfer(w, src, dst, ip, mib=4)
        print(f"tcp {src[0]}->{dst[0]}: {t.nbytes} bytes in {t.seconds:.2f}s, "
              f"sha256 {t.sha_received}")
        assert t.nbytes == 4 << 20 and t.sha_received == t.sha_sent


def test_no_duplicate_addresses_across_hosts(w: DockerWorld) -> None:
    """Containers started at the same time on both hosts: every address once, in etcd."""
    names = [(h, f"m{h}{i}") for i in range(6) for h in ("h1", "h2")]
    before = set(w.ipam_keys())
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda hc: w.docker[hc[0]].run(hc[1], "mynet"), names))
    try:
        ips = [w.address(h, c) for h, c in names]
        assert len(set(ips)) == len(ips), ips
        keys = set(w.ipam_keys()) - before
        assert {k.rsplit("/", 1)[1] for k in keys} == set(ips)
    finally:
        for h, c in names:
            w.docker[h].docker("rm", "-f", c)
    assert set(w.ipam_keys()) == before        # all released


def test_static_ip_and_mac(w: DockerWorld) -> None:
    d1, d2 = w.docker["h1"], w.docker["h2"]
    d1.run("s1", "mynet", ip="192.168.55.77", mac="02:00:00:00:00:77")
    try:
        assert links(d1, "s1")["eth0"]["mac"] == "02:00:00:00:00:77"
        assert w.address("h1", "s1") == "192.168.55.77"
        d2.run("s2", "mynet")
        wait_for(lambda: "02:00:00:00:00:77" in remote_macs(w, "h2"), 10, "s1 on h2")
        w.ping("h2", "s2", "192.168.55.77")
        with pytest.raises(Exception, match=r"192\.168\.55\.77 is already in use"):
            d2.run("s3", "mynet", ip="192.168.55.77")
    finally:
        for d, c in ((d1, "s1"), (d2, "s2"), (d2, "s3")):
            d.docker("rm", "-f", c, check=False)


@pytest.mark.parametrize("args, message", [
    (("--subnet", "192.168.60.0/24", "bad1"), r"-o vni=N is required"),
    (("--subnet", "192.168.60.0/24", "-o", "vni=0", "bad2"), r"vni=0"),
    (("--subnet", "192.168.60.0/24", "-o", "vni=abc", "bad3"), r"vni=abc"),
    (("--subnet", "192.168.60.0/24", "-o", "vni=4200", "-o", "vin=1", "bad4"),
     r"unknown option -o vin"),
    (("--subnet", "192.168.60.0/24", "-o", "vni=4200", "-o", "mtu=20", "bad5"), r"mtu=20"),
    (("-o", "vni=4200", "bad6"), r"--subnet is required"),
    (("--subnet", "192.168.55.0/25", "-o", "vni=4200", "bad7"), r"overlaps"),
    (("--subnet", "192.168.60.0/24", "-o", "vni=4097", "bad8"), r"VNI 4097 is already used"),
    (("--ipv6", "--subnet", "192.168.60.0/24", "--subnet", "fd00:60::/64", "-o", "vni=4200",
      "bad9"), r"IPv6"),
])
def test_bad_options_are_docker_errors(w: DockerWorld, args: tuple[str, ...],
                                       message: str) -> None:
    p = w.docker["h1"].docker("network", "create", "-d", "vxdp", "--ipam-driver", "vxdp",
                              *args, check=False)
    assert p.returncode != 0 and re.search(message, p.stderr), p.stderr
    assert "Traceback" not in w.vxdp["h1"].log()


def test_publishing_ports_is_refused(w: DockerWorld) -> None:
    d = w.docker["h1"]
    p = d.docker("run", "-d", "--name", "p1", "--network", "mynet", "-p", "8080:80",
                 "vxdp-busybox", "sleep", "100", check=False)
    d.docker("rm", "-f", "p1", check=False)
    assert p.returncode != 0 and "publishing ports" in p.stderr, p.stderr


def test_connect_disconnect(w: DockerWorld, pair: tuple[str, str]) -> None:
    w.create("--subnet", "192.168.56.0/24", "-o", "vni=4098", "-o", "mtu=1400",
             "-o", "name=net2", "net2")
    d1, d2 = w.docker["h1"], w.docker["h2"]
    try:
        d1.docker("network", "connect", "net2", "c1")
        d2.docker("network", "connect", "net2", "c2")
        eth1 = links(d1, "c1")["eth1"]
        assert eth1["mtu"] == "1400"
        ip2 = w.address("h2", "c2", "net2")
        wait_for(lambda: any(e["network"] == "net2" for e in w.vxdp["h1"].endpoints()), 5,
                 "the endpoint on net2")
        w.ping("h1", "c1", ip2)
        d1.docker("network", "disconnect", "net2", "c1")
        assert "eth1" not in links(d1, "c1")
        assert not any(e["network"] == "net2" for e in w.vxdp["h1"].endpoints())
        w.ping("h1", "c1", pair[1])          # eth0 untouched
    finally:
        d2.docker("network", "disconnect", "net2", "c2", check=False)
        for d in (d1, d2):
            d.docker("network", "rm", "net2")
    assert all("net2" not in w.vxdp[h].request("docker.show")["networks"].__repr__()
               for h in ("h1", "h2"))
    assert not any("192.168.56.0" in k for k in w.ipam_keys())


def test_pool_exhausted_across_hosts(w: DockerWorld) -> None:
    """A /29: gateway + 5 containers, wherever they run; the sixth gets a clear error."""
    w.create("--subnet", "192.168.57.0/29", "-o", "vni=4099", "tiny")
    started: list[tuple[str, str]] = []
    try:
        for i in range(5):
            h = "h1" if i % 2 else "h2"
            w.docker[h].run(f"t{i}", "tiny")
            started.append((h, f"t{i}"))
        p = w.docker["h1"].docker("run", "-d", "--name", "t5", "--network", "tiny",
                                  "vxdp-busybox", "sleep", "100", check=False)
        started.append(("h1", "t5"))
        assert p.returncode != 0 and "exhausted" in p.stderr, p.stderr
    finally:
        for h, c in started:
            w.docker[h].docker("rm", "-f", c, check=False)
        for h in ("h1", "h2"):
            w.docker[h].docker("network", "rm", "tiny", check=False)


def test_stop_start(w: DockerWorld, pair: tuple[str, str]) -> None:
    d1 = w.docker["h1"]
    d1.docker("stop", "c1")
    assert not w.vxdp["h1"].endpoints()
    d1.docker("start", "c1")
    w.ping("h2", "c2", w.address("h1", "c1"))


def test_dockerd_restart(w: DockerWorld, pair: tuple[str, str]) -> None:
    """Without --live-restore dockerd stops its containers (telling the driver: Leave,
    DeleteEndpoint, ReleaseAddress); the new dockerd only activates the plugin again, and a
    ``docker start`` gets a new endpoint that works. With --live-restore the container and
    its endpoint carry on through the restart, and Docker tells the driver nothing."""
    d1 = w.docker["h1"]
    d1.restart()
    assert not [e for e in w.vxdp["h1"].endpoints()]
    d1.docker("start", "c1")
    ip1 = w.address("h1", "c1")
    w.ping("h2", "c2", ip1)
    w.ping("h1", "c1", pair[1])
    d1.args = ("--live-restore",)
    try:
        d1.restart()                  # stops c1 (the running dockerd has no live-restore)
        d1.docker("start", "c1")
        before = w.vxdp["h1"].endpoints()
        d1.restart()                  # c1 keeps running
        assert w.vxdp["h1"].endpoints() == before
        w.ping("h2", "c2", w.address("h1", "c1"))
    finally:
        d1.args = ()
        d1.restart()


def test_vxdp_restart_reattaches(w: DockerWorld, pair: tuple[str, str]) -> None:
    """vxdp stops (SIGTERM) and is killed (SIGKILL) with c1 running: its eth0 stays (a
    persistent TAP, no carrier), and the next vxdp opens it again inside the container."""
    ip1, ip2 = pair
    d1 = w.docker["h1"]
    w.ping("h2", "c2", ip1)
    for how in ("term", "kill"):
        v = w.vxdp["h1"]
        try:
            if how == "term":
                v.stop()
            else:
                v.proc.kill()
                v.proc.wait()
            eth = links(d1, "c1")
            assert "eth0" in eth and "LOWER_UP" not in eth["eth0"]["flags"], eth
        finally:
            t0 = time.monotonic()
            v = w.start_vxdp("h1")
        wait_for(lambda: "re-attached" in v.log(), 10, "the re-attach")
        wait_for(lambda: "LOWER_UP" in links(d1, "c1")["eth0"]["flags"], 5, "carrier")
        w.ping("h1", "c1", ip2)
        w.ping("h2", "c2", ip1)
        print(f"vxdp {how}: re-attached and pinging after {time.monotonic() - t0:.2f}s")


def test_network_rm_releases_the_pool(w: DockerWorld) -> None:
    w.create("--subnet", "192.168.58.0/24", "-o", "vni=4100", "gone")
    assert any("192.168.58.0_24" in k for k in w.ipam_keys())
    for h in ("h1", "h2"):
        w.docker[h].docker("network", "rm", "gone")
        assert 4100 not in [e.get("vni") for e in w.vxdp[h].fdb()]
    assert not any("192.168.58.0_24" in k for k in w.ipam_keys())
