"""``vxdp demo``: the Docker overlay walkthrough (shared/reference/) rebuilt in userspace.

Two nodes, ``manager`` and ``worker``, on an underlay (198.18.0.0/24); overlay network ``mynet``
(192.168.55.0/24, VNI 4097); two containers on manager and one on worker, with Docker-style MACs
(02:42 + the IPv4 address). One ``vxdp run`` per node plays Docker's ``br0`` + ``vxlan0``. Every
observation of the walkthrough is then made with the real tools and their real output.

``--ipv6``: the same walkthrough in IPv6: the nodes talk over an IPv6 underlay (2001:db8:18::/64),
the containers are dual stack (fd00:55::/64 next to their IPv4 addresses), and the proxy answers
Neighbor Solicitations the way it answers ARP.

Everything lives in network namespaces this command creates (unique prefix) and removes on the
way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from typing import Any

from dataplane.errors import VxdpError
from dataplane.lab import EtcdServer, Lab, VxdpProcess, docker_mac, start_vxdp

VNI = 4097
UNDERLAY = "198.18.0.0/24"
NODES = {"manager": "198.18.0.1", "worker": "198.18.0.2"}
UNDERLAY6 = "2001:db8:18::/64"
NODES6 = {"manager": "2001:db8:18::1", "worker": "2001:db8:18::2"}
MTU6 = 1430      # over an IPv6 underlay: 1500 - 70, what the kernel gives vxlan over IPv6


@dataclass(frozen=True)
class Container:
    name: str
    node: str
    ip: str

    @property
    def mac(self) -> str:
        return docker_mac(self.ip)

    @property
    def ip6(self) -> str:
        """Its IPv6 address with --ipv6: fd00:55:: and the last octet, as Docker numbers."""
        return f"fd00:55::{int(self.ip.rsplit('.', 1)[1]):x}"


CONTAINERS = (
    Container("c1", "manager", "192.168.55.4"),
    Container("c3", "manager", "192.168.55.5"),
    Container("c2", "worker", "192.168.55.3"),
)


def node_config(node: str, prefix: str, sock: str, store: str | None = None,
                ipv6: bool = False) -> dict[str, Any]:
    """The config a node's VTEP runs with: its own containers as endpoints, the others as peers
    (what Docker's peerAdd pushes), the other node in the flood list.

    With ``store`` (an etcd URL): only its own containers plus ``[store]``; peers and flood
    list come from etcd, published by the other node. With ``ipv6``: an IPv6 underlay and
    dual-stack containers."""
    nodes = NODES6 if ipv6 else NODES
    net: dict[str, Any] = {"name": "mynet", "vni": VNI, "mtu": MTU6 if ipv6 else 1450,
                           "proxy": True, "learning": False}
    if store is None:
        net["flood"] = [a for n, a in nodes.items() if n != node]
    net["endpoint"] = [{"name": f"{prefix}{c.name}", "mac": c.mac,
                        "address": [f"{c.ip}/24", f"{c.ip6}/64"] if ipv6 else f"{c.ip}/24",
                        "netns": f"{prefix}{c.name}", "ifname": "eth0"}
                       for c in CONTAINERS if c.node == node]
    if store is None:
        net["peer"] = [{"mac": c.mac, "address": [c.ip, c.ip6] if ipv6 else c.ip,
                        "vtep": nodes[c.node]}
                       for c in CONTAINERS if c.node != node]
    config: dict[str, Any] = {"vtep": {"name": node, "local": nodes[node], "control": sock,
                                       "allow": [UNDERLAY6 if ipv6 else UNDERLAY]}}
    if store is not None:
        config["store"] = {"etcd": [store], "prefix": "/vxdp", "ttl": STORE_TTL}
    config["network"] = [net]
    return config


ETCD_NODE = "etcd"
ETCD_ADDR = "198.18.0.100"
STORE_TTL = 5


#: ``--store etcd``: a container that joins at run time (``vxdp endpoint add`` on worker).
LATECOMER = Container("c4", "worker", "192.168.55.6")


class Walkthrough:
    def __init__(self, interactive: bool, store: str = "static", ipv6: bool = False) -> None:
        self.interactive = interactive
        self.store = store
        self.ipv6 = ipv6
        self.etcd: EtcdServer | None = None   # with --store etcd
        self.lab = Lab(prefix=f"vxd{os.getpid() % 10000}-")
        self.prefix = self.lab.prefix
        self.tmp = tempfile.TemporaryDirectory(prefix="vxdp-demo-")
        self.vteps: dict[str, VxdpProcess] = {}
        self.step_no = 0

    # -- presentation -------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(textwrap.fill(textwrap.dedent(text).strip(), width=96))
        print()

    def step(self, title: str, text: str) -> None:
        self.step_no += 1
        if self.interactive and self.step_no > 1:
            try:
                input("[press Enter for the next step, Ctrl-C to stop] ")
            except EOFError:
                self.interactive = False
        bar = f"── {self.step_no}. {title} "
        print("\n" + bar + "─" * max(0, 96 - len(bar)))
        self.say(text)

    def show(self, where: str, argv: list[str], output: str) -> None:
        shown = " ".join(shlex.quote(a) for a in argv)
        print(f"[{where}]$ {shown}")
        out = output.rstrip()
        if out:
            print(textwrap.indent(out, "    "))
        print()

    def vxdp(self, node: str, *args: str) -> str:
        v = self.vteps[node]
        p = v.cli(*args, check=False)
        self.show(f"{node}", ["vxdp", "-s", v.sock, *args], p.stdout + p.stderr)
        if p.returncode != 0:
            raise VxdpError(f"vxdp {' '.join(args)} failed on {node}: {p.stderr.strip()}")
        return p.stdout

    def run(self, ns_short: str, argv: list[str], timeout: float = 20) -> str:
        p = self.lab.run(ns_short, argv, timeout=timeout, check=False)
        # tshark's "Running as user root ... could be dangerous" is noise here.
        err = "\n".join(line for line in (p.stderr or "").splitlines()
                        if "Running as user" not in line)
        self.show(ns_short, argv, (p.stdout or "") + err)
        return p.stdout or ""

    # -- world --------------------------------------------------------------------------------

    def build(self) -> None:
        under = f"{UNDERLAY6} (IPv6)" if self.ipv6 else UNDERLAY
        self.step("The world", f"""
            Namespaces stand in for the walkthrough's machines: nodes manager and worker on an
            underlay {under}, and Docker-style container namespaces{', dual stack' if self.ipv6
            else ''}. Each node runs one 'vxdp run' process that plays Docker's br0 + vxlan0
            pair in userspace: a TAP device per container (its eth0) and one UDP socket on port
            4789. Namespace prefix: {self.prefix}""")
        self.lab.underlay(UNDERLAY)
        nodes = NODES6 if self.ipv6 else NODES
        for node, addr in NODES.items():
            self.lab.host(node, addr, address6=NODES6[node] if self.ipv6 else None)
        for c in CONTAINERS:
            self.lab.container(c.node, c.name, c.mac, f"{c.ip}/24")
        url = self._start_etcd() if self.store == "etcd" else None
        for node in NODES:
            sock = os.path.join(self.tmp.name, f"{node}.sock")
            self.vteps[node] = start_vxdp(self.lab, node,
                                          node_config(node, self.prefix, sock, url, self.ipv6),
                                          self.tmp.name, wait=False)
        for v in self.vteps.values():
            v.wait_ready()
        if self.ipv6:
            self._wait_dad()
        for c in CONTAINERS:
            six = f" {c.ip6}/64" if self.ipv6 else ""
            print(f"  {c.name:3} on {c.node:8} eth0 {c.mac}  {c.ip}/24{six}   "
                  f"(netns {self.prefix}{c.name})")
        print(f"  VTEPs: manager {nodes['manager']}, worker {nodes['worker']}, VNI {VNI}, "
              "UDP 4789")
        if url is not None:
            print(f"  etcd: {url} (node {ETCD_NODE}); node configs list only their own containers")
        print()

    def _wait_dad(self, timeout: float = 10.0) -> None:
        """The containers' IPv6 addresses out of duplicate address detection (about a
        second: the kernel's default, one probe)."""
        deadline = time.monotonic() + timeout
        for c in CONTAINERS:
            while True:
                p = self.lab.run(c.name, ["ip", "-6", "addr", "show", "dev", "eth0",
                                          "tentative"], check=False)
                if not (p.stdout or "").strip():
                    break
                if time.monotonic() > deadline:
                    raise VxdpError(f"{c.name}: IPv6 addresses still tentative after "
                                    f"{timeout:.0f}s")
                time.sleep(0.1)

    # -- the store (--store etcd) -----------------------------------------------------------

    def _start_etcd(self) -> str:
        self.lab.host(ETCD_NODE, ETCD_ADDR)
        data = os.path.join(self.tmp.name, "etcd")
        etcd = EtcdServer(self.lab, ETCD_NODE, ETCD_ADDR, data,
                          log_path=os.path.join(self.tmp.name, "etcd.log"))
        etcd.start()
        self.etcd = etcd
        return etcd.url

    def _remote_macs(self, node: str) -> set[str]:
        rows = self.vteps[node].fdb()
        return {r["mac"] for r in rows if r.get("dst") and r["mac"] != "00:00:00:00:00:00"}

    def _wait_tables(self, expect: dict[str, set[str]], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            have = {n: self._remote_macs(n) for n in expect}
            if have == expect:
                return
            if time.monotonic() > deadline:
                raise VxdpError(f"the store did not {what} within {timeout:.0f}s: "
                                f"have {have}, want {expect}")
            time.sleep(0.1)

    def _expected(self, containers: tuple[Container, ...]) -> dict[str, set[str]]:
        return {n: {c.mac for c in containers if c.node != n} for n in NODES}

    def store_keys(self) -> None:
        assert self.etcd is not None
        url = self.etcd.url
        self.step("The store fills the tables", f"""
            Neither node's config lists a peer or a flood entry. Each VTEP registers itself and
            publishes its containers in etcd ({url}) under a lease it keeps alive (ttl
            {STORE_TTL}s), watches the prefix, and turns the other node's keys into permanent
            FDB + neighbour entries and a flood-list entry: Docker's peerAdd, driven by the
            store. These are the keys:""")
        self._wait_tables(self._expected(CONTAINERS), "fill the tables")
        argv = [sys.executable, "-m", "dataplane.store.etcd", "dump", url, "/vxdp"]
        p = self.lab.run(ETCD_NODE, argv, timeout=20, check=False)
        self.show(ETCD_NODE, ["python", "-m", "dataplane.store.etcd", "dump", url, "/vxdp"],
                  (p.stdout or "") + (p.stderr or ""))

    def churn(self) -> None:
        c, w = LATECOMER, "worker"
        self.step("Containers come and go", f"""
            A container {c.name} ({c.ip}) joins on {w} at run time with 'vxdp endpoint add'.
            The worker publishes it at once; the manager's watch turns it into a peer, and c1
            can reach it. Then it leaves ('vxdp endpoint del'): its key is deleted and the
            manager's entries go with it.""")
        self.lab.container(c.node, c.name, c.mac, f"{c.ip}/24")
        name = f"{self.prefix}{c.name}"
        self.vxdp(w, "endpoint", "add", "--network", "mynet", "--name", name, "--mac", c.mac,
                  "--address", f"{c.ip}/24", "--netns", name, "--ifname", "eth0")
        self._wait_tables(self._expected(CONTAINERS + (c,)), f"propagate {c.name}")
        self.vxdp("manager", "fdb", "show")
        self.run("c1", ["ping", "-c", "2", "-i", "0.2", "-W", "2", c.ip])
        self.vxdp(w, "endpoint", "del", name)
        self._wait_tables(self._expected(CONTAINERS), f"withdraw {c.name}")
        self.vxdp("manager", "fdb", "show")

    # -- the walkthrough's observations -------------------------------------------------------

    def tables(self) -> None:
        self.step("FDB and ARP tables", """
            Docker pushes one permanent FDB entry and one permanent neighbour entry per remote
            container (its peerAdd). vxdp holds the same tables in memory: remote MACs point
            at the other node's VTEP ('dst ... self permanent'), local containers at their TAP
            port; the all-zeros entry is the flood list for broadcasts. Compare with
            'bridge fdb show' and 'ip neigh show' in the walkthrough.""")
        self.vxdp("manager", "fdb", "show")
        self.vxdp("manager", "neigh", "show")

    def ping(self) -> None:
        self.step("Ping across nodes", """
            c1 (manager) pings c2 (worker). The frame leaves c1's eth0 (a TAP), the manager's
            VTEP finds c2's MAC in its FDB and encapsulates it in VXLAN (VNI 4097) to the
            worker's VTEP, which decapsulates it into c2's TAP.""")
        self.run("c1", ["ping", "-c", "3", "-i", "0.2", "-W", "2", "192.168.55.3"])

    def arp_proxy(self) -> None:
        self.step("ARP is answered locally (proxy)", """
            c1 arpings c2 while tcpdump listens for ARP inside c2. Replies come back, yet c2
            sees nothing: the manager's VTEP answers from its neighbour table (the vxlan
            'proxy' flag) and an ARP request never crosses the underlay.""")
        cap = self.lab.tcpdump("c2", "eth0", "arp")
        self.run("c1", ["arping", "-c", "3", "-W", "0.2", "-i", "eth0", "192.168.55.3"])
        time.sleep(0.3)
        seen = cap.stop()
        self.show("c2", ["tcpdump", "-qlni", "eth0", "arp"],
                  seen if seen.strip() else "# nothing here: no ARP reached c2")
        stats = self.vteps["manager"].stats()
        replies = stats.get("counters", {}).get("proxy_replies", 0)
        self.say(f"The manager's VTEP counts {replies} proxy replies ('vxdp stats'). "
                 "'vxdp trace' shows the decision for one more request, as it happens:")
        self.trace_one("manager", "c1", ["arping", "-c", "1", "-i", "eth0", "192.168.55.3"])

    def trace_one(self, node: str, ns_short: str, argv: list[str]) -> None:
        """Run ``argv`` in a container while ``vxdp trace --count 1`` watches its port."""
        port = f"{self.prefix}{ns_short}"
        sock = self.vteps[node].sock
        targv = [sys.executable, "-m", "dataplane", "-s", sock, "trace",
                 "--count", "1", "--port", port]
        tracer = subprocess.Popen(targv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        time.sleep(1.0)   # let the trace subscription (and its decoder) start
        self.lab.run(ns_short, argv, check=False)
        try:
            out, _ = tracer.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            tracer.kill()
            out, _ = tracer.communicate()
        # One record per line; its decisions are '; '-separated: one per line reads better.
        text = "\n".join(line.replace(": ", ":\n    ", 1).replace("; ", "\n    ")
                         for line in out.splitlines())
        self.show(node, ["vxdp", "-s", sock, "trace", "--count", "1",
                         "--port", port], text)

    def arp_same_node(self) -> None:
        self.step("ARP between containers on one node", """
            c3 and c1 both live on manager. c3 arpings c1 while tcpdump listens in c1: the
            broadcast request is flooded to every local port (as br0 does) and c1 answers
            itself; the VTEP's proxy stays silent for a neighbour that is local.""")
        cap = self.lab.tcpdump("c1", "eth0", "arp")
        self.run("c3", ["arping", "-c", "2", "-W", "0.2", "-i", "eth0", "192.168.55.4"])
        time.sleep(0.3)
        self.show("c1", ["tcpdump", "-qlni", "eth0", "arp"], cap.stop())

    def underlay(self) -> None:
        self.step("One VXLAN datagram on the underlay", """
            On the worker's underlay link, one datagram of c1's ping, decoded by tshark:
            outer IPv4 198.18.0.1 > 198.18.0.2, UDP to 4789 from a source port hashed from
            the inner flow (RFC 7348 §5), the 8-byte VXLAN header (I flag, VNI 4097) and the
            untouched inner Ethernet frame.""")
        pcap = os.path.join(self.tmp.name, "underlay.pcap")
        cap = self.lab.tcpdump("worker", "eth0", "udp port 4789", count=1,
                               extra=("-q", "-w", pcap))
        self.lab.run("c1", ["ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.55.3"],
                     check=False)
        cap.wait(timeout=5)
        self.run("worker", ["tshark", "-r", pcap, "-d", "udp.port==4789,vxlan", "-O", "vxlan"])

    # -- the walkthrough in IPv6 (--ipv6) -----------------------------------------------------

    def ping6(self) -> None:
        self.step("Ping6 across nodes", """
            The same path in IPv6: c1 pings c2's fd00:55::3. The outer headers are IPv6 too
            (the underlay), and the UDP checksum, mandatory over IPv6, is vxdp's.""")
        self.run("c1", ["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "fd00:55::3"])

    def nd_proxy(self) -> None:
        self.step("Neighbor Solicitations are answered locally (proxy)", """
            c1 forgets c2's link-layer address and pings it again while tcpdump listens for
            ICMPv6 from c1 inside c2. The pings arrive, the solicitation does not: the
            manager's VTEP answers it from its neighbour table with a Neighbor Advertisement
            (the kernel's neigh_reduce), as it answers ARP.""")
        self.lab.run("c1", ["ip", "-6", "neigh", "flush", "dev", "eth0"], check=False)
        c1 = CONTAINERS[0]
        cap = self.lab.tcpdump("c2", "eth0", f"icmp6 and ether src {c1.mac}")
        self.run("c1", ["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "fd00:55::3"])
        time.sleep(0.3)
        seen = cap.stop()
        self.show("c2", ["tcpdump", "-qlni", "eth0", f"icmp6 and ether src {c1.mac}"], seen)
        self.say("Only echo requests from c1 reached c2; 'vxdp trace' shows the proxy's "
                 "decision for one more solicitation:")
        self.lab.run("c1", ["ip", "-6", "neigh", "flush", "dev", "eth0"], check=False)
        self.trace_one("manager", "c1", ["ping", "-6", "-c", "1", "-W", "1", "fd00:55::3"])

    def nd_same_node(self) -> None:
        self.step("Neighbor Discovery between containers on one node", """
            c3 pings c1, both on manager, while tcpdump listens for solicitations in c1: the
            multicast NS is flooded to every local port (as br0 does), c1 answers itself and
            the proxy stays silent for a local neighbour.""")
        self.lab.run("c3", ["ip", "-6", "neigh", "flush", "dev", "eth0"], check=False)
        cap = self.lab.tcpdump("c1", "eth0", "icmp6 and ip6[40] == 135")
        self.run("c3", ["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "fd00:55::4"])
        time.sleep(0.3)
        self.show("c1", ["tcpdump", "-qlni", "eth0", "icmp6 and ip6[40] == 135"], cap.stop())

    def underlay6(self) -> None:
        self.step("One VXLAN datagram on the IPv6 underlay", """
            On the worker's underlay link, one datagram of c1's ping6, decoded by tshark:
            outer IPv6 2001:db8:18::1 > 2001:db8:18::2 (flow label 0, the kernel's default),
            UDP to 4789 with its checksum, VXLAN (I flag, VNI 4097), and the inner IPv6
            packet.""")
        pcap = os.path.join(self.tmp.name, "underlay6.pcap")
        cap = self.lab.tcpdump("worker", "eth0", "ip6 and udp port 4789", count=1,
                               extra=("-q", "-w", pcap))
        self.lab.run("c1", ["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "fd00:55::3"],
                     check=False)
        cap.wait(timeout=5)
        self.run("worker", ["tshark", "-r", pcap, "-d", "udp.port==4789,vxlan", "-O",
                            "vxlan,udp", "-o", "udp.check_checksum:TRUE"])

    def counters(self) -> None:
        self.step("Counters", """
            Every port's traffic, every drop by reason, and the proxy's replies, as the
            manager's VTEP saw them.""")
        self.vxdp("manager", "stats")

    # -- teardown -----------------------------------------------------------------------------

    def close(self) -> None:
        for v in self.vteps.values():   # side by side: each removes its TAPs and socket
            v.terminate()
        for v in self.vteps.values():
            v.stop(check=False)
        if self.etcd is not None:
            self.etcd.stop()  # after the VTEPs revoked their leases
        self.lab.close()
        self.tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vxdp demo", description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["static", "etcd"], default="static",
                        help="where the VTEPs get their peers from (default: static config)")
    parser.add_argument("--ipv6", action="store_true",
                        help="the walkthrough in IPv6: an IPv6 underlay, dual-stack "
                             "containers, Neighbor Discovery answered by the proxy")
    parser.add_argument("--docker", action="store_true",
                        help="with real Docker containers: a dockerd per node, vxdp as its "
                             "network and IPAM driver, etcd between the nodes")
    args = parser.parse_args(argv)
    for tool, package in (("dockerd", "docker.io"), ("etcd", "etcd-server")):
        if args.docker and shutil.which(tool) is None:
            print(f"vxdp demo: --docker needs {tool} (Debian: apt-get install {package}, or "
                  "'make deps')", file=sys.stderr)
            return 1
    if args.docker and args.ipv6:
        print("vxdp demo: --ipv6 is the static walkthrough in IPv6; the Docker driver's "
              "networks are IPv4 (docker network create --ipv6 is refused)", file=sys.stderr)
        return 2
    if args.store == "etcd" and shutil.which("etcd") is None:
        print("vxdp demo: --store etcd needs etcd (Debian: apt-get install etcd-server, or "
              "'make deps')", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("vxdp demo: needs root to build network namespaces and TAP devices "
              "(try: sudo make demo)", file=sys.stderr)
        return 1
    interactive = sys.stdin.isatty()
    # SIGTERM → SystemExit, so the finally below tears the world down. pyroute2's forked netns
    # helpers inherit the handler and get SIGTERM when done: they must leave, not tear down.
    main_pid = os.getpid()

    def on_sigterm(*_: object) -> None:
        if os.getpid() != main_pid:
            os._exit(0)
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    w: Walkthrough | None = None
    try:
        if args.docker:
            from dataplane.demo_docker import DockerWalkthrough, walk
            w = DockerWalkthrough(interactive)
            walk(w)
            return 0
        w = Walkthrough(interactive, args.store, args.ipv6)
        w.build()
        if args.store == "etcd":
            w.store_keys()
        w.tables()
        if args.ipv6:
            w.ping6()
            w.nd_proxy()
            w.nd_same_node()
            w.underlay6()
        else:
            w.ping()
            w.arp_proxy()
            w.arp_same_node()
            w.underlay()
        if args.store == "etcd":
            w.churn()
        w.counters()
        print("\nDone: the walkthrough's observations, reproduced without the kernel's vxlan"
              + (" in IPv6" if args.ipv6 else "")
              + (", with etcd filling the tables." if args.store == "etcd" else "."))
        return 0
    except KeyboardInterrupt:
        print("\nvxdp demo: interrupted, cleaning up", file=sys.stderr)
        return 130
    except VxdpError as e:
        print(f"vxdp demo: {e}", file=sys.stderr)
        return 1
    finally:
        if w is not None:
            w.close()

