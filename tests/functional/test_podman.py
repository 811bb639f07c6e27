"""``vxdp-cni`` under a real runtime: Podman 4.3 with its CNI backend, every directory it
uses private to the test (``notes/docker-cni.md`` §5), in lab host h1's namespace.

A conflist of ``"type": "vxdp"`` with host-local IPAM; ``podman run --ip --mac-address``
(podman passes them as ``CNI_ARGS`` ``IP=``/``MAC=``) so that h2's static peer matches; the
container pings c2 on h2 across the underlay; ``podman stop``/``start``/``rm`` run DEL/ADD/DEL,
and nothing is left: no interface, no endpoint, no lease, no state file.

Podman writes a few things outside its configured directories whatever the configuration:
libcni's result cache (/var/lib/cni), an image blob cache (/var/lib/containers/cache) and its
cgroups (``libpod_parent`` at the top of each hierarchy). They are removed afterwards when
this test made them.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dataplane.lab import Lab
from dataplane.lab.docker import busybox_rootfs
from tests.functional.test_cni import CNI_PLUGINS, plugin_dir
from tests.functional.vxdp_world import Container, Vtep, World, network, wait_for

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

H1, H2 = "198.18.0.1", "198.18.0.2"
IP, MAC = "192.168.55.50", "02:42:c0:a8:37:32"
GLOBAL = ("/var/lib/cni", "/var/lib/containers")
IMAGE = "localhost/vxdp-busybox"


@dataclass
class Podman:
    w: World
    h1: Vtep
    c2: Container
    conf: str        # private directory: containers.conf, storage.conf, net.d, runroot, IPAM
    root: str        # graphroot

    def __call__(self, *args: str, check: bool = True, input: bytes | None = None,
                 ) -> subprocess.CompletedProcess[Any]:
        env = dict(os.environ, CONTAINERS_CONF=f"{self.conf}/containers.conf",
                   CONTAINERS_STORAGE_CONF=f"{self.conf}/storage.conf")
        argv = ["podman", "--root", f"{self.root}/root", "--runroot", f"{self.conf}/runroot",
                "--tmpdir", f"{self.conf}/tmp", "--network-config-dir", f"{self.conf}/net.d",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args]
        p = self.w.lab.run("h1", argv, env=env, check=False, input=input,
                           text=input is None, timeout=120)
        if check:
            assert p.returncode == 0, f"podman {' '.join(args)}: {p.stderr}"
        return p

    def leases(self) -> list[str]:
        d = f"{self.conf}/ipam/vxnet"
        return [f for f in os.listdir(d) if f[0].isdigit()] if os.path.isdir(d) else []


def _write_config(p: Podman, sock: str, bindir: str) -> None:
    for d in ("net.d", "tmp", "runroot"):
        os.makedirs(f"{p.conf}/{d}")
    # runc fails setting podman's default rlimits where the runner lacks CAP_SYS_RESOURCE
    # (NOFILE 1048576, NPROC above conmon's cap): ask for the hard limit we have.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(32768, resource.getrlimit(resource.RLIMIT_NPROC)[1])
    with open(f"{p.conf}/containers.conf", "w") as f:
        f.write(f"""[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{bindir}", "{CNI_PLUGINS}"]
network_config_dir = "{p.conf}/net.d"
default_network = "vxnet"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{p.conf}/events.log"
tmp_dir = "{p.conf}/tmp"
volume_path = "{p.root}/volumes"
runtime = "runc"
""")
    with open(f"{p.conf}/storage.conf", "w") as f:
        f.write(f'[storage]\ndriver = "vfs"\nrunroot = "{p.conf}/runroot"\n'
                f'graphroot = "{p.root}/root"\n')
    with open(f"{p.conf}/net.d/vxnet.conflist", "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "vxnet", "plugins": [{
            "type": "vxdp", "socket": sock, "network": "mynet",
            "ipam": {"type": "host-local", "dataDir": f"{p.conf}/ipam",
                     "ranges": [[{"subnet": "192.168.55.0/24", "rangeStart": "192.168.55.50",
                                  "rangeEnd": "192.168.55.60"}]]}}]}, f)


def _podman_cgroups() -> set[str]:
    """``libpod_parent`` at the top of each v1 hierarchy, or of the v2 tree."""
    tops = ["/sys/fs/cgroup"] + [os.path.join("/sys/fs/cgroup", t)
                                 for t in os.listdir("/sys/fs/cgroup")]
    return {p for p in (os.path.join(t, "libpod_parent") for t in tops) if os.path.isdir(p)}


def _remove_new(globals_before: set[str], cgroups_before: set[str]) -> None:
    for path in GLOBAL:
        if path not in globals_before:
            shutil.rmtree(path, ignore_errors=True)
    for cg in _podman_cgroups() - cgroups_before:
        for dirpath, _dirs, _files in sorted(os.walk(cg), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


@pytest.fixture(scope="module")
def pm() -> Iterator[Podman]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (`make deps` installs it)")
    globals_before = {p for p in GLOBAL if os.path.exists(p)}
    cgroups_before = _podman_cgroups()
    try:
        with Lab() as lab, World(lab) as w:
            w.hosts(("h1", H1), ("h2", H2))
            c2 = w.container("h2", "c2", "192.168.55.3")
            me = Container("pc1", "", "h1", IP, MAC)
            h1 = w.start_vxdp("h1", w.vtep_config(
                "h1", H1, [network("mynet", 4097, peers=[(c2, H2)], flood=[H2])],
                state=os.path.join(w.tmp, "h1.json")))
            h2 = w.start_vxdp("h2", w.vtep_config(
                "h2", H2, [network("mynet", 4097, endpoints=[c2], peers=[(me, H1)],
                                   flood=[H1])]))
            p = Podman(w, h1, c2, os.path.join(w.tmp, "pod"), os.path.join(w.tmp, "podroot"))
            _write_config(p, h1.sock, plugin_dir(w.tmp))
            p("import", "--change", 'CMD ["/bin/sh"]', "-", IMAGE, input=busybox_rootfs())
            try:
                yield p
            finally:
                p("rm", "-af", "-t", "0", check=False)
                p("system", "reset", "-f", check=False)
                w.stop_all(h1, h2)
    finally:
        _remove_new(globals_before, cgroups_before)


def test_podman_run_stop_start_rm(pm: Podman) -> None:
    pm("run", "-d", "--name", "pc1", "--network", "vxnet", "--ip", IP, "--mac-address", MAC,
       IMAGE, "sleep", "100000")
    out = pm("exec", "pc1", "ip", "-o", "addr", "show", "eth0").stdout
    assert f"{IP}/24" in out
    assert MAC in pm("exec", "pc1", "cat", "/sys/class/net/eth0/address").stdout
    assert pm("exec", "pc1", "cat", "/sys/class/net/eth0/mtu").stdout.strip() == "1450"
    assert [e["mac"] for e in pm.h1.endpoints()] == [MAC]
    ping = ("exec", "pc1", "ping", "-c", "2", "-W", "2", pm.c2.ip)
    pm(*ping)
    pm("stop", "-t", "0", "pc1")                 # CNI DEL
    assert pm.h1.endpoints() == [] and pm.leases() == []
    pm("start", "pc1")                           # CNI ADD in a new namespace
    wait_for(lambda: pm.h1.endpoints(), 5, "the endpoint again")
    pm(*ping)
    pm("rm", "-f", "-t", "0", "pc1")             # CNI DEL
    assert pm.h1.endpoints() == [] and pm.leases() == []
    assert not os.path.exists(os.path.join(pm.w.tmp, "h1.json"))     # nothing kept
