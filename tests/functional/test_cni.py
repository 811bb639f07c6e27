"""``vxdp-cni`` called exactly as libcni calls plugins (tests/functional/cni_call.py), with
``host-local`` (containernetworking-plugins) as the delegated IPAM.

h1 runs the VTEP the plugin talks to; h2 runs a VTEP with a static container c2, so the
CNI-attached containers are checked end to end (ping across the underlay). The attached
containers get static addresses through ``CNI_ARGS`` (``IP=`` for host-local, ``MAC=`` for
vxdp-cni), as podman passes ``--ip``/``--mac-address``, so h2's static peer matches them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dataplane import netns
from dataplane.lab import Lab
from tests.functional.cni_call import PluginError, Runtime, version
from tests.functional.vxdp_world import (ROOT, THIRD, Container, Vtep, World, network,
                                         wait_for)

pytestmark = [pytest.mark.privileged]

H1, H2 = "198.18.0.1", "198.18.0.2"
VNI = 4097
CNI_PLUGINS = "/usr/lib/cni"
P1 = ("192.168.55.50", "02:42:c0:a8:37:32")
P2 = ("192.168.55.51", "02:42:c0:a8:37:33")


@dataclass
class CniWorld:
    w: World
    h1: Vtep
    h2: Vtep
    c2: Container
    rt: Runtime
    ipam_dir: str
    config: dict[str, Any]

    def netns(self, name: str) -> str:
        """A container namespace made by the lab, as a runtime names it: a path."""
        return f"/run/netns/{self.w.lab.ns(name)}"

    def leases(self) -> set[str]:
        d = os.path.join(self.ipam_dir, "vxnet")
        return {f for f in os.listdir(d) if f[0].isdigit()} if os.path.isdir(d) else set()

    def restart_h1(self, kill: bool = False) -> None:
        if kill:
            self.h1.proc.kill()
            self.h1.proc.wait()
        else:
            self.h1.stop()
        self.h1 = self.w.start_vxdp("h1", self.config)


def plugin_dir(tmp: str) -> str:
    """A CNI bin directory with ``vxdp`` (the plugin's "type") running *this* tree's
    vxdp-cni, whatever the venv's console script points at."""
    d = os.path.join(tmp, "cnibin")
    os.makedirs(d, exist_ok=True)
    exe = os.path.join(d, "vxdp")
    with open(exe, "w") as f:
        f.write(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                "from dataplane.cni_plugin import main\nsys.exit(main())\n")
    os.chmod(exe, 0o755)
    return d


def conflist(sock: str, ipam_dir: str, network_name: str = "mynet") -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "vxnet", "plugins": [{
        "type": "vxdp", "socket": sock, "network": network_name, "vni": VNI,
        "ipam": {"type": "host-local", "dataDir": ipam_dir,
                 "ranges": [[{"subnet": "192.168.55.0/24", "rangeStart": "192.168.55.50",
                              "rangeEnd": "192.168.55.60", "gateway": "192.168.55.1"}]],
                 "routes": [{"dst": "192.168.77.0/24"}]}}]}


@pytest.fixture(scope="module")
def cw() -> Iterator[CniWorld]:
    if not os.access(os.path.join(CNI_PLUGINS, "host-local"), os.X_OK):
        pytest.skip("host-local is missing (apt-get install containernetworking-plugins; "
                    "`make deps` does)")
    with Lab() as lab, World(lab) as w:
        w.hosts(("h1", H1), ("h2", H2))
        c2 = w.container("h2", "c2", "192.168.55.3")
        lab.container("h1", "p1", P1[1], f"{P1[0]}/24")
        lab.container("h1", "p2", P2[1], f"{P2[0]}/24")
        # The state file in the test's directory (the default is /var/lib/vxdp/NAME.json).
        cfg1 = w.vtep_config("h1", H1, [network("mynet", VNI, peers=[(c2, H2)], flood=[H2])],
                             state=os.path.join(w.tmp, "h1.json"))
        h1 = w.start_vxdp("h1", cfg1)
        peers = [(Container("p1", "", "h1", *P1), H1), (Container("p2", "", "h1", *P2), H1)]
        h2 = w.start_vxdp("h2", w.vtep_config("h2", H2, [network(
            "mynet", VNI, endpoints=[c2], peers=peers, flood=[H1])]))
        ipam_dir = os.path.join(w.tmp, "ipam")
        rt = Runtime(conflist(h1.sock, ipam_dir), f"{plugin_dir(w.tmp)}:{CNI_PLUGINS}",
                     os.path.join(w.tmp, "cache"))
        cw = CniWorld(w, h1, h2, c2, rt, ipam_dir, cfg1)
        yield cw
        w.stop_all(cw.h1, h2)


def run_plugin(cw: CniWorld, command: str, stdin: Any) -> subprocess.CompletedProcess[bytes]:
    """The plugin by hand (no libcni): for malformed input."""
    env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID="x" * 64,
               CNI_NETNS=cw.netns("p1"), CNI_IFNAME="eth0", CNI_PATH=cw.rt.path)
    data = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
    return subprocess.run([os.path.join(cw.rt.path.split(":")[0], "vxdp")], input=data,
                          capture_output=True, env=env, timeout=30)


def ip_json(cw: CniWorld, ns: str, *args: str) -> Any:
    return json.loads(cw.w.lab.run(ns, ["ip", "-j", *args]).stdout or "[]")


def test_version(cw: CniWorld) -> None:
    exe = os.path.join(cw.rt.path.split(":")[0], "vxdp")
    got = version(exe)
    assert got["cniVersion"] == "1.0.0" and "1.0.0" in got["supportedVersions"]
    # The `vxdp` command itself is the plugin when a runtime runs it as "type": "vxdp".
    env = dict(os.environ, CNI_COMMAND="VERSION", CNI_NETNS="dummy", CNI_IFNAME="dummy",
               CNI_PATH="dummy", CNI_CONTAINERID="", CNI_ARGS="")
    p = subprocess.run([sys.executable, "-m", "dataplane"], input=b'{"cniVersion":"1.0.0"}',
                       capture_output=True, env=env, cwd=ROOT, timeout=30)
    assert json.loads(p.stdout) == got


def test_add_check_del(cw: CniWorld) -> None:
    cid, ns = "a" * 64, cw.netns("p1")
    args = f"IgnoreUnknown=1;IP={P1[0]};MAC={P1[1]}"
    res = cw.rt.add(cid, ns, args=args)
    assert res["cniVersion"] == "1.0.0"
    assert res["interfaces"] == [{"name": "eth0", "mac": P1[1], "sandbox": ns}]
    assert res["ips"] == [{"address": f"{P1[0]}/24", "gateway": "192.168.55.1", "interface": 0}]
    (eth0,) = ip_json(cw, "p1", "-d", "addr", "show", "eth0")
    assert eth0["address"] == P1[1] and eth0["mtu"] == 1450
    assert eth0["linkinfo"]["info_kind"] == "tun"
    assert [a["local"] for a in eth0["addr_info"]] == [P1[0]]
    assert any(r["dst"] == "192.168.77.0/24" and r.get("gateway") == "192.168.55.1"
               for r in ip_json(cw, "p1", "route"))
    assert P1[1] in {e["mac"] for e in cw.h1.endpoints()}
    cw.w.assert_ping("p1", cw.c2.ip)
    cw.rt.check(cid, ns, args=args)

    cw.w.lab.run("p1", ["ip", "addr", "flush", "dev", "eth0"])
    with pytest.raises(PluginError) as err:
        cw.rt.check(cid, ns, args=args)
    assert err.value.rc != 0 and err.value.error["code"] == 100
    assert f"{P1[0]}/24 missing on eth0" in err.value.error["msg"]

    cw.rt.delete(cid, ns, args=args)
    assert "eth0" not in cw.w.links("p1")
    assert P1[1] not in {e["mac"] for e in cw.h1.endpoints()}
    assert cw.leases() == set()
    assert not os.path.exists(cw.rt.cache_file(cid, "eth0"))
    cw.rt.delete(cid, ns, args=args)                       # again: still a success
    assert not os.path.exists(cw.h1.config_path.replace(".toml", ".json"))   # nothing kept


def test_errors_are_cni_errors_and_leave_nothing(cw: CniWorld) -> None:
    conf = dict(cw.rt.conflist["plugins"][0], name="vxnet", cniVersion="1.0.0")
    cases = [
        ({**conf, "network": "nosuch"}, 100, "no network 'nosuch'"),
        ({**conf, "vni": 4242}, 100, "VNI 4097"),
        ({**conf, "cniVersion": "9.9.9"}, 1, "not supported"),
        ({k: v for k, v in conf.items() if k != "socket"}, 7, "socket"),
        ({**conf, "socket": "/nonexistent/vxdp.sock"}, 11, "no vxdp is listening"),
        (b"{not json", 6, "not JSON"),
    ]
    for stdin, code, msg in cases:
        p = run_plugin(cw, "ADD", stdin)
        err = json.loads(p.stdout)
        assert p.returncode != 0 and err["code"] == code and msg in err["msg"], err
        assert b"Traceback" not in p.stderr + p.stdout
    assert cw.leases() == set()                  # the failed ADDs gave their addresses back
    assert "eth0" not in cw.w.links("p1")


def test_del_when_everything_is_gone(cw: CniWorld) -> None:
    """DEL after the namespace went away, and DEL of a container never added: success."""
    cw.w.lab.container("h1", "gone", "02:42:c0:a8:37:3c", "192.168.55.60/24")
    ns = cw.netns("gone")
    cw.rt.add("b" * 64, ns)
    netns.remove_netns(cw.w.lab.ns("gone"))
    cw.rt.delete("b" * 64, ns)
    cw.rt.delete("c" * 64, ns)
    assert cw.leases() == set()
    wait_for(lambda: not [e for e in cw.h1.endpoints()], 5, "the port to go")


def test_vxdp_restart_reattaches(cw: CniWorld) -> None:
    """The VTEP restarts under an attached container: its eth0 stays (persistent TAP) and
    is re-attached; one whose namespace went away meanwhile is removed, said on the log."""
    cid1, cid2 = "d" * 64, "e" * 64
    cw.rt.add(cid1, cw.netns("p1"), args=f"IgnoreUnknown=1;IP={P1[0]};MAC={P1[1]}")
    cw.w.lab.container("h1", "p3", "02:42:c0:a8:37:3b", "192.168.55.59/24")
    cw.rt.add(cid2, cw.netns("p3"))
    try:
        for kill in (False, True):
            cw.h1.proc.kill() if kill else cw.h1.stop()
            cw.h1.proc.wait()
            assert "eth0" in cw.w.links("p1")
            if kill:
                netns.remove_netns(cw.w.lab.ns("p3"))       # a container goes meanwhile
            cw.h1 = cw.w.start_vxdp("h1", cw.config)
            wait_for(lambda: "re-attached" in cw.h1.log(), 10, "the re-attach")
            cw.w.assert_ping("p1", cw.c2.ip)
        wait_for(lambda: "went away" in cw.h1.log(), 10, "the stale endpoint's removal")
        assert len(cw.h1.endpoints()) == 1
        cw.rt.check(cid1, cw.netns("p1"))
    finally:
        cw.rt.delete(cid1, cw.netns("p1"))
        cw.rt.delete(cid2, cw.netns("p3"))
    assert cw.leases() == set()
