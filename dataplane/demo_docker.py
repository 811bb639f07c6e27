"""``vxdp demo --docker``: the walkthrough (shared/reference/) with real Docker containers.

Two nodes, each a lab namespace with its own dockerd (``dataplane.lab.docker``) and its own
``vxdp run`` serving Docker's network and IPAM driver API, and a real etcd between them (the
store joins the nodes, as swarm's gossip joins Docker's). Then, as in the walkthrough:
``docker network create`` on both nodes, ``docker run`` c1 and c3 on the manager and c2 on
the worker, the container's ``eth0`` (a vxdp TAP), the FDB and neighbour tables, a ping
across nodes, an arping answered by the proxy while tcpdump in the remote container sees
nothing, ARP between two containers of one node, one VXLAN datagram decoded by tshark, the
counters. Everything is removed at the end (Ctrl-C included): containers, networks, VTEPs,
dockerds and what they left, etcd, namespaces.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from dataplane.demo import NODES, UNDERLAY, VNI, Walkthrough
from dataplane.errors import VxdpError
from dataplane.lab import EtcdServer, start_vxdp
from dataplane.lab.docker import IMAGE, DockerHost

ETCD = ("etcd", "198.18.0.100")
SUBNET = "192.168.55.0/24"
#: (container, node), started in this order; addresses come from vxdp's IPAM (.2, .3, .4)
CONTAINERS = (("c1", "manager"), ("c2", "worker"), ("c3", "manager"))
CREATE = ["network", "create", "-d", "vxdp", "--ipam-driver", "vxdp", "--subnet", SUBNET,
          "-o", f"vni={VNI}", "mynet"]


class DockerWalkthrough(Walkthrough):
    def __init__(self, interactive: bool) -> None:
        super().__init__(interactive)
        self.docker: dict[str, DockerHost] = {}
        self.ips: dict[str, str] = {}
        self.etcd_server: EtcdServer | None = None

    # -- presentation -----------------------------------------------------------------------

    def dk(self, node: str, *args: str, check: bool = True) -> str:
        """``docker ARGS`` on ``node``, shown."""
        p = self.docker[node].docker(*args, check=False)
        self.show(node, ["docker", *args], p.stdout + p.stderr)
        if check and p.returncode != 0:
            raise VxdpError(f"docker {' '.join(args)} on {node}: {p.stderr.strip()}")
        return p.stdout

    def node_of(self, container: str) -> str:
        return dict(CONTAINERS)[container]

    def in_container(self, container: str, argv: list[str]) -> list[str]:
        """A host tool run in a container's network namespace (by its PID)."""
        pid = self.docker[self.node_of(container)].inspect(container, "{{.State.Pid}}")
        return ["nsenter", f"--net=/proc/{pid}/ns/net", "--", *argv]

    # -- the world --------------------------------------------------------------------------

    def build(self) -> None:
        self.step("The world", f"""
            Namespaces stand in for the walkthrough's machines: nodes manager and worker on an
            underlay {UNDERLAY}, each running its own dockerd and one 'vxdp run' with a
            [docker] section: vxdp is Docker's network driver and IPAM driver there
            (/run/docker/plugins/vxdp.sock). A real etcd on {ETCD[1]} is the store that joins
            the two nodes, as swarm's gossip joins Docker's own overlay. Namespace prefix:
            {self.prefix}""")
        self.lab.underlay(UNDERLAY)
        self.lab.host(*ETCD)
        self.etcd_server = EtcdServer(self.lab, *ETCD, os.path.join(self.tmp.name, "etcd"),
                                      log_path=os.path.join(self.tmp.name, "etcd.log"))
        self.etcd_server.start()
        for node, addr in NODES.items():
            self.lab.host(node, addr)
            self.docker[node] = DockerHost.create(self.lab, node)
        for node, addr in NODES.items():
            self.vteps[node] = start_vxdp(self.lab, node, self._config(node, addr),
                                          self.tmp.name, wait=False,
                                          preexec_fn=self.docker[node].enter())
        for v in self.vteps.values():
            v.wait_ready()
        for node, addr in NODES.items():
            print(f"  {node:8} {addr}  dockerd {self.docker[node].sock}")
        print(f"  image {IMAGE}: busybox, imported with 'docker import'\n")

    def _config(self, node: str, addr: str) -> dict[str, Any]:
        assert self.etcd_server is not None
        return {"vtep": {"name": node, "local": addr, "allow": [UNDERLAY],
                         "control": os.path.join(self.tmp.name, f"{node}.sock"),
                         "state": os.path.join(self.tmp.name, f"{node}.json")},
                "store": {"etcd": [self.etcd_server.url], "ttl": 5},
                "docker": {"plugin": "vxdp"}}

    def network_and_containers(self) -> None:
        self.step("Create an overlay network and containers", """
            The same 'docker network create' on each node: Docker asks vxdp's IPAM for the
            pool and its gateway, then vxdp's driver makes the network (VNI 4097 from -o vni).
            'docker run' then gets an address from the pool, shared by both nodes in etcd,
            and a vxdp TAP device as eth0.""")
        for node in NODES:
            self.dk(node, *CREATE)
        for name, node in CONTAINERS:
            self.dk(node, "run", "-d", "--name", name, "--network", "mynet", IMAGE,
                    "sleep", "1000000")
            self.ips[name] = self.docker[node].inspect(
                name, '{{(index .NetworkSettings.Networks "mynet").IPAddress}}')
        self.dk("manager", "ps", "--format", "table {{.ID}}\t{{.Image}}\t{{.Names}}")
        self.dk("manager", "network", "ls", "--filter", "driver=vxdp")

    def container_side(self) -> None:
        self.step("The container's eth0 is a vxdp TAP", """
            Inside c1: eth0 has the MAC Docker derives from the address (02:42 + the four
            octets), MTU 1450 and the address vxdp's IPAM handed out. Its tun_flags say what
            it is: IFF_TAP | IFF_NO_PI (0x1002), persistent (0x0800, so it survives a vxdp
            restart) with a vnet header (0x4000, offloads). There is no veth, no br0 and no
            vxlan0: the other end of this interface is a file descriptor in 'vxdp run'.""")
        self.dk("manager", "exec", "c1", "ip", "addr", "show", "eth0")
        self.dk("manager", "exec", "c1", "cat", "/sys/class/net/eth0/tun_flags")
        self.dk("manager", "exec", "c1", "ip", "route")
        self._wait_published()

    def _wait_published(self, timeout: float = 15.0) -> None:
        want = {n: {self._mac(c) for c, node in CONTAINERS if node != n} for n in NODES}
        deadline = time.monotonic() + timeout
        while {n: self._remote_macs(n) for n in NODES} != want:
            if time.monotonic() > deadline:
                raise VxdpError("the store did not publish the containers in time")
            time.sleep(0.1)

    def _mac(self, container: str) -> str:
        return "02:42:" + ":".join(f"{int(o):02x}" for o in self.ips[container].split("."))

    # -- the walkthrough's observations -------------------------------------------------------

    def ping(self) -> None:
        c2 = self.ips["c2"]
        self.step("Ping across nodes", f"""
            c1 (manager) pings c2 (worker, {c2}): the manager's VTEP encapsulates to the
            worker's in VXLAN, VNI {VNI}.""")
        self.dk("manager", "exec", "c1", "ping", "-c", "3", "-W", "2", c2)

    def arp_proxy(self) -> None:
        c2 = self.ips["c2"]
        self.step("ARP is answered locally (proxy)", """
            c1 arpings c2 while tcpdump listens for ARP in c2's namespace. Replies come
            back, yet c2 sees nothing: the manager's VTEP answers from its neighbour table,
            filled from etcd (the vxlan 'proxy' flag).""")
        cap = self._tcpdump("c2")
        self.dk("manager", "exec", "c1", "arping", "-c", "3", "-I", "eth0", c2)
        time.sleep(0.3)
        seen = self._stop(cap)
        self.show("worker", ["tcpdump", "-qlni", "eth0", "arp", "(in c2)"],
                  seen if seen.strip() else "# nothing here: no ARP reached c2")

    def arp_same_node(self) -> None:
        c1 = self.ips["c1"]
        self.step("ARP between containers on one node", """
            c3 and c1 both run on manager. c3 arpings c1 while tcpdump listens in c1: the
            broadcast is flooded to every local port and c1 answers itself.""")
        cap = self._tcpdump("c1")
        self.dk("manager", "exec", "c3", "arping", "-c", "2", "-I", "eth0", c1)
        time.sleep(0.3)
        self.show("manager", ["tcpdump", "-qlni", "eth0", "arp", "(in c1)"], self._stop(cap))

    def _tcpdump(self, container: str) -> subprocess.Popen[str]:
        argv = self.in_container(container, ["tcpdump", "-qlni", "eth0", "arp"])
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)     # tcpdump attaches
        return p

    @staticmethod
    def _stop(p: subprocess.Popen[str]) -> str:
        p.terminate()
        try:
            out, _ = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        return out

    def underlay(self) -> None:
        self.step("One VXLAN datagram on the underlay", """
            On the worker's underlay link, one datagram of c1's ping, decoded by tshark.""")
        pcap = os.path.join(self.tmp.name, "underlay.pcap")
        cap = self.lab.tcpdump("worker", "eth0", "udp port 4789", count=1,
                               extra=("-q", "-w", pcap))
        self.docker["manager"].exec("c1", "ping", "-c", "2", "-W", "2", self.ips["c2"],
                                    check=False)
        cap.wait(timeout=5)
        self.run("worker", ["tshark", "-r", pcap, "-d", "udp.port==4789,vxlan", "-O", "vxlan"])

    def goodbye(self) -> None:
        self.step("Containers and networks go", """
            'docker rm' and 'docker network rm' on each node: vxdp's driver deletes the TAPs,
            the IPAM releases the addresses and the pool in etcd, the store withdraws the
            endpoints from the other node.""")
        for name, node in CONTAINERS:
            self.dk(node, "rm", "-f", name)
        for node in NODES:
            self.dk(node, "network", "rm", "mynet")
        self.vxdp("manager", "fdb", "show")

    # -- teardown ---------------------------------------------------------------------------

    def close(self) -> None:
        for d in self.docker.values():       # while the plugins still answer
            try:
                d.clear()
            except VxdpError:
                pass
        for v in self.vteps.values():
            v.terminate()
        for v in self.vteps.values():
            v.stop(check=False)
        for d in self.docker.values():
            try:
                d.close()
            except VxdpError as exc:
                print(f"vxdp demo: {exc}")
        if self.etcd_server is not None:
            self.etcd_server.stop()
        self.vteps.clear()
        super().close()


def walk(w: DockerWalkthrough) -> None:
    w.build()
    w.network_and_containers()
    w.container_side()
    w.tables()
    w.ping()
    w.arp_proxy()
    w.arp_same_node()
    w.underlay()
    w.counters()
    w.goodbye()
    print("\nDone: the walkthrough with real Docker containers on vxdp networks.")
