"""A two-host Docker world for the functional tests: lab hosts with a private dockerd each
(:class:`dataplane.lab.docker.DockerHost`), a ``vxdp run`` with ``[docker]`` in each (in the
host's network and mount namespaces, so its plugin socket is the real
``/run/docker/plugins/vxdp.sock`` of that dockerd), and optionally a real etcd between them.

Built once per test module (dockerd and image import cost ~1 s per host) and torn down in the
order Docker needs: containers and networks first while the plugins still answer, then the
VTEPs (checked clean), then dockerd and everything it left, then etcd and the namespaces.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from dataplane.lab import EtcdServer, Lab, VxdpProcess, start_vxdp
from dataplane.lab.docker import DockerHost
from dataplane.netns import list_netns

ETCD_ADDR = "198.18.0.100"
HOSTS = {"h1": "198.18.0.1", "h2": "198.18.0.2"}
SUBNET = "192.168.55.0/24"
VNI = 4097
CREATE = ("network", "create", "-d", "vxdp", "--ipam-driver", "vxdp")


def needs_docker() -> None:
    """A skip from a fixture (a failure in CI, see tests/conftest.py) when Docker's pieces
    are missing."""
    for tool in ("dockerd", "etcd", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (`make deps` installs docker.io, "
                        "busybox-static, etcd-server)")
    if not shutil.which("busybox") and not __import__("os").path.exists("/bin/busybox"):
        pytest.skip("busybox-static is not installed")


@dataclass
class DockerWorld:
    lab: Lab
    tmp: str
    etcd: EtcdServer | None = None
    docker: dict[str, DockerHost] = field(default_factory=dict)
    vxdp: dict[str, VxdpProcess] = field(default_factory=dict)

    def config(self, host: str) -> dict[str, Any]:
        cfg: dict[str, Any] = {"vtep": {"name": host, "local": HOSTS[host],
                                        "control": f"{self.tmp}/{host}.sock",
                                        "state": f"{self.tmp}/{host}.json",
                                        "allow": ["198.18.0.0/24"]},
                               "docker": {"plugin": "vxdp"}}
        if self.etcd is not None:
            cfg["store"] = {"etcd": [self.etcd.url], "ttl": 3}
        return cfg

    def start_vxdp(self, host: str) -> VxdpProcess:
        v = start_vxdp(self.lab, host, self.config(host), self.tmp,
                       preexec_fn=self.docker[host].enter())
        self.vxdp[host] = v
        return v

    def create(self, *args: str, hosts: tuple[str, ...] = tuple(HOSTS)) -> None:
        """The same ``docker network create -d vxdp --ipam-driver vxdp ARGS`` on each host."""
        for h in hosts:
            self.docker[h].docker(*CREATE, *args)

    def address(self, host: str, container: str, network: str = "mynet") -> str:
        return self.docker[host].inspect(
            container, "{{(index .NetworkSettings.Networks \"%s\").IPAddress}}" % network)

    def ping(self, host: str, container: str, ip: str, count: int = 3) -> str:
        p = self.docker[host].exec(container, "ping", "-c", str(count), "-W", "2", ip,
                                   check=False)
        assert p.returncode == 0, f"{container}@{host} -> {ip}: {p.stdout}{p.stderr}"
        return p.stdout

    def ipam_keys(self) -> dict[str, dict[str, Any]]:
        """The IPAM keys in etcd: key -> value (no lease on them)."""
        assert self.etcd is not None
        p = self.lab.run("etcd", ["python3", "-c", _DUMP, self.etcd.url], check=True)
        return json.loads(p.stdout)

    def close(self) -> None:
        errors = []
        for h, v in list(self.vxdp.items()):
            if not v.alive() and v.returncode is None:
                # A test failed with this VTEP down: Docker would spend 15 s of retries on
                # each call the clean-up makes. Bring it back to hear them.
                with contextlib.suppress(Exception):
                    self.start_vxdp(h)
        for d in self.docker.values():
            with contextlib.suppress(Exception):
                d.clear()
        for v in self.vxdp.values():
            v.terminate()
        for h, v in self.vxdp.items():
            try:
                v.stop()
            except Exception as exc:  # noqa: BLE001 - report after the rest is gone
                errors.append(f"vxdp {h}: {exc}")
        for d in self.docker.values():
            try:
                d.close()
            except Exception as exc:  # noqa: BLE001
                errors.append(str(exc))
        if self.etcd is not None:
            self.etcd.stop()
        prefix = self.lab.prefix
        self.lab.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        left = [n for n in list_netns() if n.startswith(prefix)]
        assert not left, f"namespaces left behind: {left}"
        assert not errors, "; ".join(errors)


# etcd's v3 JSON gateway from the etcd host (python3 of the system: no venv needed there)
_DUMP = r"""
import base64, json, sys, urllib.request
url = sys.argv[1] + "/v3/kv/range"
body = json.dumps({"key": base64.b64encode(b"/vxdp/ipam/").decode(),
                   "range_end": base64.b64encode(b"/vxdp/ipam0").decode()}).encode()
with urllib.request.urlopen(urllib.request.Request(url, body), timeout=5) as r:
    kvs = json.loads(r.read()).get("kvs", [])
print(json.dumps({base64.b64decode(kv["key"]).decode():
                  json.loads(base64.b64decode(kv["value"])) for kv in kvs}))
"""


@contextlib.contextmanager
def docker_world(store: bool = True,
                 hosts: tuple[str, ...] = tuple(HOSTS)) -> Iterator[DockerWorld]:
    needs_docker()
    lab = Lab()
    w = DockerWorld(lab, tempfile.mkdtemp(prefix="vxdp-docker-"))
    try:
        lab.underlay("198.18.0.0/24")
        if store:
            lab.host("etcd", ETCD_ADDR)
            w.etcd = EtcdServer(lab, "etcd", ETCD_ADDR, f"{w.tmp}/etcd")
            w.etcd.start()
        for h in hosts:
            lab.host(h, HOSTS[h])
            w.docker[h] = DockerHost.create(lab, h)
            w.start_vxdp(h)
        yield w
    finally:
        w.close()


@dataclass
class Transfer:
    nbytes: int
    seconds: float
    sha_sent: str
    sha_received: str


def tcp_transfer(w: DockerWorld, src: tuple[str, str], dst: tuple[str, str], dst_ip: str,
                 mib: int = 4, port: int = 5001, timeout: float = 60.0) -> Transfer:
    """``mib`` MiB of random data from container ``src`` (host, name) to ``dst`` over TCP
    with busybox nc; the SHA-256 of what was sent and of what arrived."""
    sh, dh = w.docker[src[0]], w.docker[dst[0]]
    sent = sh.exec(src[1], "sh", "-c", f"dd if=/dev/urandom of=/tmp/tx bs=1048576 "
                   f"count={mib} 2>/dev/null && sha256sum /tmp/tx").stdout.split()[0]
    # busybox's small nc, listening with its stdin at EOF, stops after its first 1 KiB read:
    # the receiver is a program nc runs with the connection as its stdin (-e).
    dh.exec(dst[1], "sh", "-c", "rm -f /tmp/rx /tmp/done && printf '#!/bin/sh\\ncat > /tmp/rx"
            "\\n' > /tmp/rcv && chmod +x /tmp/rcv")
    dh.docker("exec", "-d", dst[1], "sh", "-c",
              f"nc -l -p {port} -e /tmp/rcv; touch /tmp/done")
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:     # the listener may not be up yet: retry while the connect is refused
        p = sh.exec(src[1], "sh", "-c", f"nc -w 5 {dst_ip} {port} < /tmp/tx", check=False,
                    timeout=timeout)
        if p.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    while dh.exec(dst[1], "test", "-e", "/tmp/done", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the receiver never finished"
        time.sleep(0.1)
    seconds = time.monotonic() - t0
    out = dh.exec(dst[1], "sh", "-c", "wc -c < /tmp/rx; sha256sum /tmp/rx").stdout.split()
    return Transfer(int(out[0]), seconds, sent, out[1])


def tap_flags(d: DockerHost, container: str, ifname: str = "eth0") -> int:
    return int(d.exec(container, "cat", f"/sys/class/net/{ifname}/tun_flags").stdout, 16)


def links(d: DockerHost, container: str) -> dict[str, dict[str, str]]:
    """``ip -o link`` inside a container: name -> {"mtu", "mac", "flags"}."""
    out = d.exec(container, "ip", "-o", "link").stdout
    res = {}
    for line in out.splitlines():
        m = re.match(r"\d+: ([^:@]+)[^:]*: <([^>]*)> mtu (\d+).*link/\S+ ([0-9a-f:]+)", line)
        if m:
            res[m.group(1)] = {"flags": m.group(2), "mtu": m.group(3), "mac": m.group(4)}
    return res
