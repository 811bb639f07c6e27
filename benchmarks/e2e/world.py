"""One world of the end-to-end benchmark: the walkthrough's two nodes and two containers in a
lab of their own, with the kernel's vxlan (Docker-style) or two ``vxdp run`` between them, and
the packet counters along its path (for the UDP loss budget).

    underlay 198.18.0.0/24:  manager 198.18.0.1  ──br0──  worker 198.18.0.2
    overlay 192.168.55.0/24, VNI 4097:  c1 192.168.55.4 (on manager)   c2 192.168.55.3 (on worker)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import tomllib
from typing import Any

from benchmarks.e2e.common import (
    C1_IP,
    C1_MAC,
    C2_IP,
    C2_MAC,
    IPERF_PORT,
    MANAGER,
    MANAGER6,
    MTU,
    MTU6,
    UNDERLAY,
    UNDERLAY6,
    UNDERLAY6_WORLDS,
    VNI,
    WORKER,
    WORKER6,
    BenchError,
    log,
)
from benchmarks.e2e.relay import Relay
from dataplane.errors import VxdpError
from dataplane.lab import Lab, VxdpProcess, start_vxdp


def _literal(text: str) -> Any:
    """A TOML literal given on the command line (``128``, ``true``, ``"text"``) as its value."""
    return tomllib.loads(f"v = {text}")["v"]


def vxdp_config(prefix: str, node: str, sock: str, vtep_opts: dict[str, str],
                net_opts: dict[str, str], ipv6: bool = False) -> dict[str, Any]:
    """One node's config: its own container as a TAP endpoint, the other one as a static peer
    (Docker's peerAdd), the other node in the flood list: the demo's walkthrough config, plus
    the ``--vtep-option`` / ``--network-option`` settings (TOML literals). ``ipv6``: the
    VTEPs talk over the IPv6 underlay (network MTU 1430)."""
    m, w = (MANAGER6, WORKER6) if ipv6 else (MANAGER, WORKER)
    local, other = (m, w) if node == "manager" else (w, m)
    (cname, cip, cmac), (pip, pmac) = (((("c1", C1_IP, C1_MAC)), (C2_IP, C2_MAC))
                                       if node == "manager" else
                                       ((("c2", C2_IP, C2_MAC)), (C1_IP, C1_MAC)))
    vtep = {"name": node, "local": local, "control": sock,
            "allow": [UNDERLAY6 if ipv6 else UNDERLAY],
            **{k: _literal(v) for k, v in vtep_opts.items()}}
    net = {"name": "mynet", "vni": VNI, "mtu": MTU6 if ipv6 else MTU, "proxy": True,
           "learning": False,
           "flood": [other], **{k: _literal(v) for k, v in net_opts.items()},
           "endpoint": [{"name": f"{prefix}{cname}", "mac": cmac, "address": f"{cip}/24",
                         "netns": f"{prefix}{cname}", "ifname": "eth0"}],
           "peer": [{"mac": pmac, "address": pip, "vtep": other}]}
    return {"vtep": vtep, "network": [net]}


class World:
    """One topology (kernel, relay, vxdp or python), its VTEPs and its packet counters; the
    traffic is :mod:`benchmarks.e2e.traffic`'s."""

    def __init__(self, kind: str, tag: str, args: argparse.Namespace) -> None:
        self.kind = kind
        self.args = args
        self.lab = Lab(prefix=f"vxe{os.getpid() % 10000}{tag}-", handle_signals=True)
        self.prefix = self.lab.prefix
        self.tmp = tempfile.mkdtemp(prefix="vxdp-e2e-")
        self.vteps: dict[str, VxdpProcess] = {}
        self.relays: dict[str, Relay] = {}
        self.port = IPERF_PORT        # the last iperf3 port used (each test takes a fresh one)

    # -- build ----------------------------------------------------------------------------

    def build(self) -> None:
        lab = self.lab
        v6 = self.kind in UNDERLAY6_WORLDS
        lab.underlay(UNDERLAY)
        lab.host("manager", MANAGER, address6=MANAGER6 if v6 else None)
        lab.host("worker", WORKER, address6=WORKER6 if v6 else None)
        m, w, mtu = (MANAGER6, WORKER6, MTU6) if v6 else (MANAGER, WORKER, MTU)
        if self.kind in ("kernel", "kernel6"):
            lab.kernel_vtep("manager", VNI, m if v6 else None,
                            containers=[("c1", C1_MAC, f"{C1_IP}/24")],
                            peers=[(C2_MAC, C2_IP, w)], flood=[w], mtu=mtu)
            lab.kernel_vtep("worker", VNI, w if v6 else None,
                            containers=[("c2", C2_MAC, f"{C2_IP}/24")],
                            peers=[(C1_MAC, C1_IP, m)], flood=[m], mtu=mtu)
        else:
            lab.container("manager", "c1", C1_MAC, f"{C1_IP}/24", mtu)
            lab.container("worker", "c2", C2_MAC, f"{C2_IP}/24", mtu)
            if self.kind == "relay":
                self._start_relays()
            else:
                self._start_vteps()
        # Connectivity (and ARP/neighbour warm-up) before anything is timed.
        p = lab.run("c1", ["ping", "-c", "3", "-i", "0.05", "-W", "2", C2_IP], check=False,
                    timeout=20)
        if p.returncode != 0:
            raise BenchError(f"{self.kind} world: c1 cannot ping c2:\n{p.stdout}{p.stderr}"
                             + self.vtep_logs())

    def _start_vteps(self) -> None:
        """One ``vxdp run`` per node, side by side, on the core this world measures."""
        env = {"VXDP_NO_EXTENSIONS": "1" if self.kind == "python" else "0"}
        for node in ("manager", "worker"):
            cfg = vxdp_config(self.prefix, node, os.path.join(self.tmp, f"{node}.sock"),
                              self.args.vtep_opts, self.args.net_opts,
                              ipv6=self.kind in UNDERLAY6_WORLDS)
            self.vteps[node] = start_vxdp(self.lab, node, cfg, self.tmp, env=env, wait=False)
        want = "py" if self.kind == "python" else "c"
        for node, v in self.vteps.items():
            try:
                impl = v.wait_ready()
            except VxdpError as exc:
                raise BenchError(str(exc)) from None
            if impl != want:
                raise BenchError(f"{self.kind} world: vxdp on {node} runs the {impl!r} "
                                 f"fast path, expected {want!r} (make build?)")

    def _start_relays(self) -> None:
        """One ``vxrelay`` per node (the floor), with vxdp's busy_poll when one is asked for
        the vxdp worlds; each TAP becomes its container's eth0."""
        busy = float(_literal(self.args.vtep_opts.get("busy_poll", "0")))
        for node, local, remote, c, ip, mac, pip, pmac in (
                ("manager", MANAGER, WORKER, "c1", C1_IP, C1_MAC, C2_IP, C2_MAC),
                ("worker", WORKER, MANAGER, "c2", C2_IP, C2_MAC, C1_IP, C1_MAC)):
            r = Relay(self.lab, node, f"{self.prefix}{c}", local, remote, VNI, busy)
            self.relays[node] = r
            r.wait_ready()
            r.attach(c, mac, f"{ip}/24", MTU, pip, pmac)

    def vtep_logs(self) -> str:
        out = ""
        for node, v in self.vteps.items():
            text = v.log().strip()
            if text:
                out += f"\n--- vxdp log ({node}) ---\n{text[-3000:]}"
        return out

    def vtep_pids(self) -> list[int]:
        return [v.pid for v in self.vteps.values()] + [r.pid for r in self.relays.values()]

    def vtep_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node, v in self.vteps.items():
            try:
                out[node] = v.stats()
            except Exception as exc:  # a stats failure must not lose the figures
                out[node] = {"error": str(exc)}
        return out

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        try:
            for node, r in self.relays.items():
                line = r.stop()
                if line:
                    log(f"relay on {node}: {line}")
            for v in self.vteps.values():
                v.terminate()
            for node, v in self.vteps.items():
                v.stop(check=False)
                if v.killed:
                    log(f"vxdp on {node} ignored SIGTERM; killed it")
        finally:
            try:
                self.lab.close()
            finally:
                shutil.rmtree(self.tmp, ignore_errors=True)

    # -- packet counters along the path (UDP loss budget) ---------------------------------

    def _link(self, ns: str, ifname: str) -> dict[str, int]:
        p = self.lab.run(ns, ["ip", "-s", "-j", "link", "show", "dev", ifname], check=False,
                         timeout=10)
        try:
            st = json.loads(p.stdout)[0]["stats64"]
        except (json.JSONDecodeError, IndexError, KeyError):
            return {}
        return {"rx_packets": st["rx"]["packets"], "rx_dropped": st["rx"]["dropped"],
                "tx_packets": st["tx"]["packets"], "tx_dropped": st["tx"]["dropped"]}

    def _udp_snmp(self, ns: str) -> dict[str, int]:
        p = self.lab.run(ns, ["cat", "/proc/net/snmp"], check=False, timeout=10)
        rows = [ln.split()[1:] for ln in p.stdout.splitlines() if ln.startswith("Udp:")]
        if len(rows) < 2:
            return {}
        return dict(zip(rows[0], (int(x) for x in rows[1])))

    def counters(self) -> dict[str, Any]:
        c: dict[str, Any] = {
            "c1_eth0": self._link("c1", "eth0"), "manager_eth0": self._link("manager", "eth0"),
            "worker_eth0": self._link("worker", "eth0"), "worker_udp": self._udp_snmp("worker"),
            "c2_eth0": self._link("c2", "eth0"), "c2_udp": self._udp_snmp("c2")}
        if self.kind in ("kernel", "kernel6"):
            c["manager_vxlan"] = self._link("manager", f"vxlan{VNI}")
            c["worker_vxlan"] = self._link("worker", f"vxlan{VNI}")
        else:
            c["vxdp"] = self.vtep_stats()
        return c

    def udp_budget(self, before: dict[str, Any], after: dict[str, Any],
                   sent: int, delivered: int) -> list[tuple[str, int]]:
        """Packets counted at each stage c1 → c2 during the UDP test (deltas), in path order."""
        def d(path: str) -> int | None:
            a: Any = after
            b: Any = before
            for k in path.split("."):
                if not isinstance(a, dict) or not isinstance(b, dict) or k not in a:
                    return None
                a, b = a[k], b.get(k, 0)
            return int(a) - int(b or 0)

        rows: list[tuple[str, int | None]] = [("iperf3 sent (c1)", sent),
                                              ("c1 eth0 tx_packets", d("c1_eth0.tx_packets")),
                                              ("c1 eth0 tx_dropped", d("c1_eth0.tx_dropped"))]
        if self.kind in ("kernel", "kernel6"):
            rows += [("manager vxlan tx_packets", d("manager_vxlan.tx_packets")),
                     ("manager vxlan tx_dropped", d("manager_vxlan.tx_dropped"))]
        else:
            ep1, ep2 = f"{self.prefix}c1", f"{self.prefix}c2"
            rows += [("manager vxdp: frames read from c1's TAP",
                      d(f"vxdp.manager.ports.{ep1}.rx_packets")),
                     ("manager vxdp: underlay tx_packets", d("vxdp.manager.underlay.tx_packets")),
                     ("manager vxdp: underlay tx_dropped + tx_errors",
                      (d("vxdp.manager.underlay.tx_dropped") or 0)
                      + (d("vxdp.manager.underlay.tx_errors") or 0))]
        rows += [("manager eth0 tx_packets (underlay)", d("manager_eth0.tx_packets")),
                 ("worker eth0 rx_packets (underlay)", d("worker_eth0.rx_packets")),
                 ("worker UDP RcvbufErrors (VTEP socket full)", d("worker_udp.RcvbufErrors"))]
        if self.kind in ("kernel", "kernel6"):
            rows += [("worker vxlan rx_packets", d("worker_vxlan.rx_packets")),
                     ("worker vxlan rx_dropped", d("worker_vxlan.rx_dropped"))]
        else:
            rows += [("worker vxdp: underlay rx_packets", d("vxdp.worker.underlay.rx_packets")),
                     ("worker vxdp: frames written to c2's TAP",
                      d(f"vxdp.worker.ports.{ep2}.tx_packets")),
                     ("worker vxdp: TAP tx_dropped + tx_errors",
                      (d(f"vxdp.worker.ports.{ep2}.tx_dropped") or 0)
                      + (d(f"vxdp.worker.ports.{ep2}.tx_errors") or 0))]
        rows += [("c2 eth0 rx_packets", d("c2_eth0.rx_packets")),
                 ("c2 eth0 rx_dropped", d("c2_eth0.rx_dropped")),
                 ("c2 UDP InDatagrams", d("c2_udp.InDatagrams")),
                 ("c2 UDP RcvbufErrors (iperf3 socket full)", d("c2_udp.RcvbufErrors")),
                 ("iperf3 delivered (c2)", delivered)]
        return [(k, v) for k, v in rows if v is not None]
