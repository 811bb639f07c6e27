"""A ``netns`` that does not exist: an error naming it, unless the config (``netns_create``)
or the request (``--netns-create``) says to create it — then it is created where the host
sees it (``/run/netns/NAME``, usable by ``ip -n NAME``), removed when the VTEP is done with
it, and a SIGKILL never leaves a mount point ``ip netns`` cannot use.

It used to be created silently, and under ``ip netns exec`` (a private mount namespace) only
vxdp saw it: the host got an empty mode-0000 file that stayed after a SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dataplane import netns
from dataplane.lab import VxdpProcess, cleanup_prefix
from dataplane.lab.vxdp import to_toml
from tests.functional.vxdp_world import MANAGER, ROOT, VNI, World

pytestmark = pytest.mark.privileged

IP, MAC = "192.168.55.21", "02:42:c0:a8:37:15"
IP2, MAC2 = "192.168.55.22", "02:42:c0:a8:37:16"


@pytest.fixture
def names(world: World) -> Iterator[tuple[str, str]]:
    """Two namespace names in the lab's prefix that nobody has made; whatever is left under
    them is removed afterwards (the lab fixture then checks nothing of its prefix remains)."""
    a, b = world.prefix + "n1", world.prefix + "n2"
    yield a, b
    cleanup_prefix(a)
    cleanup_prefix(b)


def endpoint(ns: str, mac: str = MAC, ip: str = IP, create: bool | None = None) -> dict:
    ep = {"name": ns, "mac": mac, "address": f"{ip}/24", "netns": ns, "ifname": "eth0"}
    if create is not None:
        ep["netns_create"] = create
    return ep


def config(w: World, *endpoints: dict) -> dict:
    return w.vtep_config("manager", MANAGER, [{"name": "mynet", "vni": VNI,
                                              "endpoint": list(endpoints)}])


def host_sees(ns: str) -> bool:
    """`ip -n NS link show eth0` from the test (the host's mount namespace) works."""
    p = subprocess.run(["ip", "-n", ns, "link", "show", "eth0"], capture_output=True,
                       text=True)
    return p.returncode == 0


def usable_or_absent(ns: str) -> bool:
    """What a crash may leave: nothing, or a namespace `ip netns` can use."""
    path = netns.netns_path(ns)
    if not os.path.lexists(path):
        return True
    return subprocess.run(["ip", "-n", ns, "link", "show", "lo"],
                          capture_output=True).returncode == 0


def test_missing_netns_in_the_config_is_an_error_naming_it(world: World,
                                                            names: tuple[str, str]) -> None:
    w = world
    w.hosts(("manager", MANAGER))
    ns = names[0]
    path = w.write_config("manager", config(w, endpoint(ns)))
    p = w.lab.run("manager", [sys.executable, "-m", "dataplane", "run", path], cwd=ROOT,
                  check=False, timeout=30)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, p.stderr
    assert f"netns {ns} does not exist" in lines[0] and "netns_create" in lines[0]
    assert "Traceback" not in p.stderr
    assert not os.path.lexists(netns.netns_path(ns))
    assert w.links("manager", kind="tun") == []


def test_netns_create_makes_it_for_the_host_and_removes_it_on_sigterm(
        world: World, names: tuple[str, str]) -> None:
    w = world
    w.hosts(("manager", MANAGER))
    a, b = names
    v = w.start_vxdp("manager", config(w, endpoint(a, create=True),
                                       endpoint(b, MAC2, IP2, create=True)))
    for ns in (a, b):
        assert netns.netns_exists(ns) and host_sees(ns)
    # Both ends are vxdp's: traffic crosses it.
    p = netns.run_in_netns(a, ["ping", "-c", "2", "-i", "0.2", "-W", "2", IP2], check=False)
    assert p.returncode == 0, p.stdout
    v.stop()
    for ns in (a, b):
        assert not os.path.lexists(netns.netns_path(ns))


def test_endpoint_add_refuses_a_missing_netns_unless_asked_to_create_it(
        world: World, names: tuple[str, str]) -> None:
    w = world
    w.hosts(("manager", MANAGER))
    a, b = names
    v = w.start_vxdp("manager", config(w))
    args = ["endpoint", "add", "--network", "mynet", "--name", a, "--mac", MAC, "--address",
            f"{IP}/24", "--netns", a, "--ifname", "eth0"]
    p = v.cli(*args, check=False)
    assert p.returncode == 1 and f"netns {a} does not exist" in p.stderr, p.stderr
    assert not os.path.lexists(netns.netns_path(a))
    v.cli(*args, "--netns-create")
    assert host_sees(a)
    # A second endpoint in the namespace vxdp made shares it: it goes with the last one.
    v.cli("endpoint", "add", "--network", "mynet", "--name", b, "--mac", MAC2, "--address",
          f"{IP2}/24", "--netns", a, "--ifname", "eth1")
    v.cli("endpoint", "del", a)
    assert netns.netns_exists(a)
    v.cli("endpoint", "del", b)
    assert not os.path.lexists(netns.netns_path(a))
    assert v.alive()
    v.stop()
    assert "Traceback" not in v.log()


def test_sigkill_leaves_nothing_ip_netns_cannot_use(world: World,
                                                   names: tuple[str, str]) -> None:
    w = world
    w.hosts(("manager", MANAGER))
    a, _ = names
    v = w.start_vxdp("manager", config(w, endpoint(a, create=True)))
    assert host_sees(a)
    v.proc.send_signal(signal.SIGKILL)
    v.proc.wait(10)
    v.returncode = v.proc.returncode
    assert usable_or_absent(a)


def _start_under_ip_netns_exec(w: World, cfg: dict, host_mounts: str | None) -> VxdpProcess:
    """`ip netns exec HOST vxdp run CFG`: vxdp in a private copy of the host's mounts, the
    way the finding was made. ``host_mounts``: VXDP_HOST_MOUNT_NS for it."""
    path = w.write_config("manager", to_toml(cfg))
    log = os.path.join(w.tmp, "manager.log")
    env = dict(os.environ)
    env.pop("VXDP_HOST_MOUNT_NS", None)
    if host_mounts is not None:
        env["VXDP_HOST_MOUNT_NS"] = host_mounts
    with open(log, "wb") as f:
        proc = subprocess.Popen(["ip", "netns", "exec", w.lab.ns("manager"), sys.executable,
                                 "-m", "dataplane", "run", path], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f)
    v = VxdpProcess(w.lab, w.lab.ns("manager"), "manager", proc, cfg["vtep"]["control"], path,
                    log)
    w.vteps.append(v)
    return v


def test_under_ip_netns_exec_it_is_refused_where_the_host_is_out_of_reach(
        world: World, names: tuple[str, str]) -> None:
    """From a private mount namespace, with the host's (VXDP_HOST_MOUNT_NS) not enterable:
    refused, naming the namespace — never a mount point only vxdp can see."""
    w = world
    w.hosts(("manager", MANAGER))
    a, _ = names
    v = _start_under_ip_netns_exec(w, config(w, endpoint(a, create=True)),
                                   os.path.join(w.tmp, "no-such-mount-ns"))
    v.proc.wait(20)
    err = v.log().strip().splitlines()
    assert v.proc.returncode == 1 and len(err) == 1, v.log()
    assert f"cannot create netns {a}: vxdp runs in a private mount namespace" in err[0], err
    assert not os.path.lexists(netns.netns_path(a))


@pytest.mark.parametrize("end", ["sigterm", "sigkill"])
def test_under_ip_netns_exec_it_is_made_in_the_hosts_mounts(
        world: World, names: tuple[str, str], end: str) -> None:
    """From a private mount namespace vxdp makes the namespace in the host's (here: this
    test's own mount namespace, as VXDP_HOST_MOUNT_NS; PID 1's by default): the host sees
    it, SIGTERM removes it there, SIGKILL leaves nothing ip netns cannot use."""
    w = world
    w.hosts(("manager", MANAGER))
    a, _ = names
    v = _start_under_ip_netns_exec(w, config(w, endpoint(a, create=True)),
                                   f"/proc/{os.getpid()}/ns/mnt")
    v.wait_ready()
    assert host_sees(a)
    if end == "sigterm":
        v.stop()
        assert not os.path.lexists(netns.netns_path(a))
    else:
        v.proc.send_signal(signal.SIGKILL)
        v.proc.wait(10)
        v.returncode = v.proc.returncode
        assert usable_or_absent(a)
