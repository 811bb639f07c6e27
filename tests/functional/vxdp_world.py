"""Worlds for the functional VTEP tests: namespaces from :class:`dataplane.lab.Lab`, one
``vxdp run CONFIG`` process per "node", and the probes the tests make (ping, arping, tcpdump,
the ``vxdp`` CLI).

Typical use (see ``conftest.py`` for the ``world`` fixture)::

    w = World(lab)
    lab.underlay(); lab.host("manager", MANAGER); lab.host("worker", WORKER)
    c1 = w.container("manager", "c1", C1_IP)
    c2 = w.container("worker", "c2", C2_IP)
    m = w.start_vxdp("manager", w.vtep_config("manager", MANAGER,
                     [network("mynet", VNI, endpoints=[c1], peers=[(c2, WORKER)],
                              flood=[WORKER])]))
    ...
    m.stop()   # SIGTERM: checks exit 0, control socket and TAPs gone

VTEPs are started by the lab's launcher (:func:`dataplane.lab.start_vxdp`), so a test runs
``vxdp run`` exactly as the demo and the benchmarks do.

Everything is addressed inside the lab: underlay 198.18.0.0/24, overlay 192.168.55.0/24.
Names: a container's namespace is ``<lab prefix><short name>`` (made by the lab) and its
host-side TAP name is the same string (<= 15 bytes), so names never collide between tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dataplane.lab import (
    Capture,
    KernelVtep,
    Lab,
    VxdpProcess,
    docker_mac,
    start_vxdp,
    to_toml,
)
from dataplane.lab.vxdp import PACKAGE_ROOT
from dataplane.netns import list_netns

#: The repository root: the working directory of every ``python -m dataplane`` a test starts.
ROOT = PACKAGE_ROOT

MANAGER = "198.18.0.1"
WORKER = "198.18.0.2"
THIRD = "198.18.0.3"
UNDERLAY = "198.18.0.0/24"
VNI = 4097
VXLAN_PORT = 4789
#: The walkthrough's containers: c1 and c3 on the manager, c2 on the worker.
C1_IP, C2_IP, C3_IP = "192.168.55.4", "192.168.55.3", "192.168.55.5"
C1_MAC, C2_MAC, C3_MAC = docker_mac(C1_IP), docker_mac(C2_IP), docker_mac(C3_IP)

#: Short, bounded probes: no long pings, no timing asserts (DESIGN.md §5).
PING = ("ping", "-c", "3", "-i", "0.2", "-W", "2")
ARPING = ("arping", "-c", "3", "-W", "0.2")

T = TypeVar("T")
#: What World.start_all starts: (host, config) or (host, config, env).
StartSpec = (tuple[str, Mapping[str, Any] | str]
             | tuple[str, Mapping[str, Any] | str, Mapping[str, str] | None])


def wait_for(pred: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``pred`` until it returns something truthy; AssertionError naming ``what`` after
    ``timeout`` seconds. A deadline, never a speed assertion."""
    deadline = time.monotonic() + timeout
    last: T = pred()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} "
                                 f"(last value: {last!r})")
        time.sleep(interval)
        last = pred()
    return last


# --------------------------------------------------------------------------- model

@dataclass(frozen=True)
class Container:
    """A Docker-style container namespace (made by the lab) and its endpoint description."""
    name: str           # short name, e.g. "c1"
    ns: str             # full netns name (<prefix><name>)
    host: str           # short host name
    ip: str
    mac: str
    prefixlen: int = 24

    @property
    def tap(self) -> str:
        """Host-side TAP name (the VTEP config's endpoint ``name``): the netns name."""
        return self.ns

    def endpoint(self) -> dict[str, Any]:
        return {"name": self.tap, "mac": self.mac, "address": f"{self.ip}/{self.prefixlen}",
                "netns": self.ns, "ifname": "eth0"}

    def peer(self, vtep: str) -> dict[str, Any]:
        return {"mac": self.mac, "address": self.ip, "vtep": vtep}


def network(name: str, vni: int, *, endpoints: Iterable[Container] = (),
            peers: Iterable[tuple[Container, str]] = (), flood: Sequence[str] = (),
            **options: Any) -> dict[str, Any]:
    """A ``[[network]]`` table: local ``endpoints``, ``peers`` as (container, its VTEP)."""
    net: dict[str, Any] = {"name": name, "vni": vni, **options}
    if flood:
        net["flood"] = list(flood)
    eps = [c.endpoint() for c in endpoints]
    if eps:
        net["endpoint"] = eps
    prs = [c.peer(vtep) for c, vtep in peers]
    if prs:
        net["peer"] = prs
    return net


# --------------------------------------------------------------------------- running VTEPs

#: One running ``vxdp run CONFIG`` in a host namespace (the lab's launcher).
Vtep = VxdpProcess


class Sniffer:
    """A running tcpdump whose output can be awaited line by line.

    Delivery to a packet socket is asynchronous (a TAP write is received in softirq), and
    tcpdump exits on SIGINT without draining what is still queued: so positive checks wait for
    the line they expect (:meth:`wait_for`), and :meth:`stop` first keeps reading for a short
    settle time, so "saw nothing" is not an artefact of stopping too early.
    """

    def __init__(self, cap: Capture) -> None:
        self.cap = cap
        self._buf = b""
        self.text = ""

    def _pump(self, timeout: float) -> None:
        out = self.cap.proc.stdout
        if out is None:
            return
        fd = out.fileno()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            self._buf += chunk
            return

    def lines(self) -> list[str]:
        return [ln for ln in self._buf.decode(errors="replace").splitlines() if ln.strip()]

    def wait_for(self, pred: Callable[[list[str]], bool] | str, timeout: float = 5.0) -> list[str]:
        """Read until ``pred(lines)`` holds (a string: some line contains it); the lines."""
        check = (lambda ls: any(pred in ln for ln in ls)) if isinstance(pred, str) else pred
        deadline = time.monotonic() + timeout
        while not check(self.lines()):
            left = deadline - time.monotonic()
            if left <= 0 or self.cap.proc.poll() is not None:
                raise AssertionError(f"tcpdump did not show {pred!r} within {timeout:.0f}s; "
                                     f"it showed:\n" + "\n".join(self.lines()))
            self._pump(min(left, 0.2))
        return self.lines()

    def stop(self, settle: float = 0.3) -> str:
        """Keep reading for ``settle`` seconds, stop tcpdump, return everything it printed."""
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline and self.cap.proc.poll() is None:
            self._pump(deadline - time.monotonic())
        rest = self.cap.stop()
        self.text = self._buf.decode(errors="replace") + rest
        return self.text


class World:
    """Containers, configs and VTEP processes on top of one :class:`Lab`."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.prefix = lab.prefix
        # Short path: unix socket paths are limited to 107 bytes (pytest's tmp_path is long).
        self.tmp = tempfile.mkdtemp(prefix="vxw-")
        self.vteps: list[Vtep] = []
        self.containers: dict[str, Container] = {}

    # -- topology ------------------------------------------------------------------------

    def hosts(self, *addrs: tuple[str, str], tx_csum_off: bool = False) -> None:
        """Underlay plus hosts, e.g. ``hosts(("manager", MANAGER), ("worker", WORKER))``."""
        if self.lab.underlay_ns is None:
            self.lab.underlay(UNDERLAY)
        for name, addr in addrs:
            self.lab.host(name, addr, tx_csum_off=tx_csum_off)

    def container(self, host: str, name: str, ip: str, mac: str | None = None) -> Container:
        """A container namespace on ``host`` (its eth0 comes from the VTEP's endpoint)."""
        mac = mac or docker_mac(ip)
        ns = self.lab.container(host, name, mac, f"{ip}/24")
        assert len(ns.encode()) <= 15, f"TAP name {ns!r} is longer than 15 bytes"
        c = Container(name=name, ns=ns, host=host, ip=ip, mac=mac)
        self.containers[name] = c
        return c

    # -- configs -------------------------------------------------------------------------

    def sock_path(self, name: str) -> str:
        return os.path.join(self.tmp, f"{name}.sock")

    def vtep_config(self, name: str, local: str, networks: Sequence[Mapping[str, Any]],
                    **vtep_options: Any) -> dict[str, Any]:
        """A full config dict: ``[vtep]`` (control socket in this world's tmp dir) + networks."""
        vtep = {"name": name, "local": local, "control": self.sock_path(name), **vtep_options}
        return {"vtep": vtep, "network": list(networks)}

    def write_config(self, name: str, config: Mapping[str, Any] | str) -> str:
        path = os.path.join(self.tmp, f"{name}.toml")
        text = config if isinstance(config, str) else to_toml(config)
        Path(path).write_text(text)
        return path

    # -- processes -----------------------------------------------------------------------

    def start_vxdp(self, host: str, config: Mapping[str, Any] | str,
                   timeout: float = 20.0, wait: bool = True,
                   env: Mapping[str, str] | None = None) -> Vtep:
        """:func:`dataplane.lab.start_vxdp` in this world's tmp dir: write ``config`` (dict or
        TOML text), start ``vxdp run`` in ``host``'s namespace and (unless ``wait=False``)
        wait until its control socket answers. ``env``: variables added to (or overriding)
        this process's environment for the VTEP only, e.g. ``{"VXDP_NO_EXTENSIONS": "1"}``
        for the pure-Python path."""
        text = config if isinstance(config, str) else to_toml(config)
        assert tomllib.loads(text).get("vtep", {}).get("control"), \
            "give the VTEP a control socket in this world (World.vtep_config does)"
        v = start_vxdp(self.lab, host, text, self.tmp, env=env, wait=False)
        self.vteps.append(v)
        if wait:
            v.wait_ready(timeout)
        return v

    def start_all(self, *configs: StartSpec, timeout: float = 20.0) -> list[Vtep]:
        """Start one VTEP per (host, config) or (host, config, env) side by side, then wait
        for all of them."""
        vteps = [self.start_vxdp(spec[0], spec[1], wait=False,
                                 env=spec[2] if len(spec) > 2 else None)
                 for spec in configs]
        for v in vteps:
            v.wait_ready(timeout)
        return vteps

    def stop_all(self, *vteps: Vtep) -> list[int]:
        """SIGTERM to all of them at once, then :meth:`Vtep.stop` (with its checks) each."""
        for v in vteps:
            if v.returncode is None and v._stopping is None:
                v.terminate()
        return [v.stop() for v in vteps]

    def links(self, ns: str, kind: str | None = None) -> list[str]:
        """Interface names in a lab namespace, optionally of one kind (see :meth:`Lab.links`)."""
        return self.lab.links(ns, kind)

    # -- probes --------------------------------------------------------------------------

    def ping(self, src: Container | str, dst_ip: str, *extra: str, count: int = 3,
             wait: float = 2) -> subprocess.CompletedProcess[str]:
        """``ping -c COUNT -i 0.2 -W WAIT [EXTRA] DST`` in ``src``'s namespace (no check)."""
        ns = src.name if isinstance(src, Container) else src
        argv = ["ping", "-c", str(count), "-i", "0.2", "-W", str(wait), *extra, dst_ip]
        return self.lab.run(ns, argv, check=False, timeout=30)

    def assert_ping(self, src: Container | str, dst_ip: str, count: int = 3) -> str:
        p = self.ping(src, dst_ip, count=count)
        assert p.returncode == 0, f"ping {dst_ip} from {src} failed:\n{p.stdout}{p.stderr}"
        m = re.search(r"(\d+) packets transmitted, (\d+) received", p.stdout)
        assert m and int(m.group(2)) == count, f"ping {dst_ip} from {src} lost packets:\n{p.stdout}"
        return p.stdout

    def arping(self, src: Container | str, dst_ip: str, count: int = 3,
               ) -> subprocess.CompletedProcess[str]:
        ns = src.name if isinstance(src, Container) else src
        argv = ["arping", "-c", str(count), "-W", "0.2", "-i", "eth0", dst_ip]
        return self.lab.run(ns, argv, check=False, timeout=30)

    def tcpdump(self, c: Container | str, filter: str = "", iface: str = "eth0",
                extra: Sequence[str] = ("-q",)) -> Sniffer:
        """A listening tcpdump in a container (or any lab namespace), text output."""
        ns = c.name if isinstance(c, Container) else c
        return Sniffer(self.lab.tcpdump(ns, iface, filter, extra=extra))

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop what is still running (no assertions: tests assert on stop themselves)."""
        for v in self.vteps:
            if v.returncode is None and v._stopping is None:
                try:
                    v.terminate()
                except Exception:
                    pass
        for v in self.vteps:
            try:
                v.stop(check=False)
            except Exception:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def open_world() -> Iterator[World]:
    """A fresh Lab + World, always torn down; asserts no namespace of the lab is left."""
    with Lab() as lab:
        prefix = lab.prefix
        with World(lab) as world:
            yield world
    left = [n for n in list_netns() if n.startswith(prefix)]
    assert not left, f"namespaces left behind: {left}"


def tshark_rows(world: World, ns: str, pcap: str, fields: Sequence[str],
                vxlan_ports: Sequence[int] = (4789,)) -> list[dict[str, list[str]]]:
    """tshark's ``fields`` for every packet of ``pcap`` (read in namespace ``ns``), UDP 4789
    decoded as VXLAN and every IPv4/UDP/TCP checksum validated (``*.checksum.status``: 1 good,
    0 bad). One dict per packet; a field repeated in a packet (outer and inner IP) is a list."""
    argv = ["tshark", "-r", pcap, "-n", *(a for p in vxlan_ports
                                          for a in ("-d", f"udp.port=={p},vxlan")),
            "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
            "-o", "tcp.check_checksum:TRUE",
            "-T", "fields", "-E", "separator=/t", "-E", "aggregator=,"]
    for f in fields:
        argv += ["-e", f]
    p = world.lab.run(ns, argv, check=True, timeout=120)
    rows = []
    for line in p.stdout.splitlines():
        cols = line.split("\t")
        rows.append({f: (cols[i].split(",") if i < len(cols) and cols[i] else [])
                     for i, f in enumerate(fields)})
    return rows


# --------------------------------------------------------------------------- the walkthrough

@dataclass
class Walkthrough:
    """The reference walkthrough: manager (c1 .4, c3 .5) and worker (c2 .3), VNI 4097."""
    world: World
    c1: Container
    c2: Container
    c3: Container
    manager: Vtep
    worker: Vtep
    extra: dict[str, Any] = field(default_factory=dict)


def walkthrough_configs(w: World, c1: Container, c2: Container, c3: Container,
                        **net_options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    opts = {"mtu": 1450, "proxy": True, "learning": False, **net_options}
    m = w.vtep_config("manager", MANAGER, [network(
        "mynet", VNI, endpoints=[c1, c3], peers=[(c2, WORKER)], flood=[WORKER], **opts)],
        allow=[UNDERLAY])
    k = w.vtep_config("worker", WORKER, [network(
        "mynet", VNI, endpoints=[c2], peers=[(c1, MANAGER), (c3, MANAGER)], flood=[MANAGER],
        **opts)], allow=[UNDERLAY])
    return m, k


def build_walkthrough(w: World, *, manager: Mapping[str, Any] | None = None,
                      worker: Mapping[str, Any] | None = None,
                      manager_env: Mapping[str, str] | None = None,
                      worker_env: Mapping[str, str] | None = None,
                      **net_options: Any) -> Walkthrough:
    """The walkthrough's containers and VTEPs, on hosts made here unless the lab has them
    already (a test that tunes their links first). ``manager`` / ``worker``: extra ``[vtep]``
    keys (e.g. ``{"offload": False}``); ``*_env``: the VTEP's environment additions (e.g. the
    pure-Python path); ``net_options``: extra ``[[network]]`` keys for both."""
    if not w.lab.hosts:
        w.hosts(("manager", MANAGER), ("worker", WORKER))
    c1 = w.container("manager", "c1", C1_IP)
    c3 = w.container("manager", "c3", C3_IP)
    c2 = w.container("worker", "c2", C2_IP)
    mcfg, kcfg = walkthrough_configs(w, c1, c2, c3, **net_options)
    mcfg["vtep"].update(manager or {})
    kcfg["vtep"].update(worker or {})
    m, k = w.start_all(("manager", mcfg, manager_env), ("worker", kcfg, worker_env))
    return Walkthrough(w, c1, c2, c3, m, k)


# --------------------------------------------------------------------------- the kernel as peer

@dataclass
class Interop:
    """vxdp on the manager (c1), the kernel's vxlan (Docker-style) on the worker (c2)."""
    world: World
    c1: Container       # behind vxdp (manager)
    c2: Container       # behind the kernel (worker)
    vxdp: Vtep
    kernel: KernelVtep


def interop_containers(w: World) -> tuple[Container, Container]:
    """Hosts on an underlay of veths with their default offloads, as users' machines have
    them (the kernel VTEP's inner checksums then arrive partial and its TSO frames whole:
    vxdp's rx step copes), c1 on the manager and c2 on the worker."""
    w.hosts(("manager", MANAGER), ("worker", WORKER))
    return w.container("manager", "c1", C1_IP), w.container("worker", "c2", C2_IP)


def start_interop_vxdp(w: World, c1: Container, c2: Container,
                       env: Mapping[str, str] | None = None, **net_options: Any) -> Vtep:
    """The manager's vxdp: c1 as its endpoint, c2 as a peer behind the worker's kernel VTEP,
    which is also its flood list."""
    return w.start_vxdp("manager", w.vtep_config("manager", MANAGER, [network(
        "mynet", VNI, endpoints=[c1], peers=[(c2, WORKER)], flood=[WORKER], **net_options)],
        allow=[UNDERLAY]), env=env)


# --------------------------------------------------------------------------- TCP transfer

_TCP_SERVER = r"""
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(60)
print("ready", flush=True)
c, peer = s.accept()
c.settimeout(60)
h = hashlib.sha256()
n = 0
while True:
    d = c.recv(1 << 16)
    if not d:
        break
    h.update(d)
    n += len(d)
c.sendall(h.hexdigest().encode())
c.close()
print(n, h.hexdigest(), peer[0], flush=True)
"""

_TCP_CLIENT = r"""
import hashlib, random, socket, sys
data = random.Random(int(sys.argv[4])).randbytes(int(sys.argv[3]))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
c.sendall(data)
c.shutdown(socket.SHUT_WR)
reply = b""
while True:
    chunk = c.recv(256)
    if not chunk:
        break
    reply += chunk
print(len(data), hashlib.sha256(data).hexdigest(), reply.decode(), flush=True)
"""


@dataclass
class Transfer:
    sent: int
    sent_sha: str
    received: int
    received_sha: str
    echoed_sha: str
    peer: str


def tcp_transfer(world: World, server: Container, client: Container, nbytes: int,
                 port: int = 5201, seed: int = 7, timeout: float = 60.0,
                 address: str | None = None) -> Transfer:
    """Send ``nbytes`` of seeded random data over TCP from ``client`` to ``server``; both ends
    hash what they saw (sha256), the server echoes its hash back. ``address``: the server's
    address to use instead of its ``ip`` (an IPv6 one a test added)."""
    lab = world.lab
    ip = address or server.ip
    srv = lab.popen(server.name, [sys.executable, "-c", _TCP_SERVER, ip, str(port)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert srv.stdout is not None
    first = srv.stdout.readline().strip()
    assert first == "ready", f"TCP server in {server.name} did not start: {first!r}"
    cl = lab.run(client.name, [sys.executable, "-c", _TCP_CLIENT, ip, str(port),
                               str(nbytes), str(seed)], check=False, timeout=timeout)
    try:
        out, err = srv.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        srv.kill()
        out, err = srv.communicate()
    assert cl.returncode == 0, f"TCP client in {client.name} failed: {cl.stderr.strip()}"
    assert srv.returncode == 0, f"TCP server in {server.name} failed: {err.strip()}"
    sent, sent_sha, echoed = cl.stdout.split()
    received, received_sha, peer = out.split()
    return Transfer(int(sent), sent_sha, int(received), received_sha, echoed, peer)


def snmp(w: World, ns: str) -> dict[str, dict[str, int]]:
    """/proc/net/snmp of a lab namespace (procfs shows the reader's network namespace)."""
    lines = w.lab.run(ns, ["cat", "/proc/net/snmp"]).stdout.splitlines()
    out: dict[str, dict[str, int]] = {}
    for head, vals in zip(lines[::2], lines[1::2]):
        proto, *names = head.split()
        out[proto.rstrip(":")] = dict(zip(names, map(int, vals.split()[1:])))
    return out


def assert_no_checksum_errors(w: World, *cs: Container) -> None:
    """The containers' own kernels found no bad inner checksum in what vxdp wrote to them:
    IPv4 header (InHdrErrors), TCP and UDP (InCsumErrors)."""
    for c in cs:
        m = snmp(w, c.name)
        assert m["Ip"]["InHdrErrors"] == 0, (c.name, m["Ip"])
        assert m["Tcp"]["InCsumErrors"] == 0, (c.name, m["Tcp"])
        assert m["Udp"]["InCsumErrors"] == 0, (c.name, m["Udp"])
