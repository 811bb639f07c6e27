"""The lab itself: namespaces for an underlay, hosts and containers, and the processes run in
them, all removed again at the end.

The walkthrough (reference/docker-overlay-walkthrough.txt) on one machine::

      <prefix>ul  (underlay: bridge br0, 198.18.0.0/24 [and 2001:db8:18::/64])
        ├─ v-h1 ══ eth0 198.18.0.1/24  <prefix>h1  (a "node": vxdp run, or kernel br/vxlan)
        └─ v-h2 ══ eth0 198.18.0.2/24  <prefix>h2
                                         └─ veth/TAP ══ eth0 192.168.55.x  <prefix>c1 (container)

Every namespace is ``<prefix><name>``; interfaces live *inside* those namespaces, so their
names carry no prefix (and stay within 15 bytes) and nothing is ever created in the caller's
own namespace. :meth:`Lab.close` (also run from ``atexit``) kills what the lab started and
removes every namespace it made; :func:`cleanup_prefix` does the same from names alone, for a
lab whose process died.

pyroute2 for links, addresses, FDB and neighbours; programs run through
:mod:`dataplane.netns` (setns in ``preexec_fn``), never ``ip netns exec``. The kernel's vxlan as
a peer is :mod:`dataplane.lab.kernel`; tcpdump and link features are :mod:`dataplane.lab.tools`.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import (IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface,
                       IPv6Network, ip_address)
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from dataplane import netns as _netns
from dataplane.errors import VxdpError
from dataplane.lab import kernel
from dataplane.lab.kernel import KernelVtep
from dataplane.lab.tools import Capture, disable_tx_checksum, end_process
from dataplane.validate import VNI_MAX, VNI_MIN, check_ifname, is_vni

__all__ = ["ContainerInfo", "HostInfo", "Lab", "UNDERLAY_SPACE", "UNDERLAY6_SPACE",
           "cleanup_prefix", "docker_mac", "install_signal_exit"]

#: The lab's underlay must stay inside the RFC 2544 benchmarking range (network safety: the
#: lab never uses addresses that could be routed anywhere real), and for IPv6 inside the
#: documentation prefix (RFC 3849).
UNDERLAY_SPACE = IPv4Network("198.18.0.0/15")
UNDERLAY6_SPACE = IPv6Network("2001:db8::/32")
IFA_F_NODAD = 0x02      # <linux/if_addr.h>: the address is usable at once (no DAD)

_lock = threading.Lock()
_instances = 0


def _default_prefix() -> str:
    """``vx<pid % 100000>-`` (or ``vx<pid>n<k>-`` for a further concurrent lab in one process).

    The trailing ``-`` keeps ``cleanup_prefix("vx123-")`` from matching ``vx1234-h1``; a prefix
    whose namespaces already exist (pid % 100000 can repeat) is skipped.
    """
    global _instances
    pid = os.getpid() % 100000
    existing = _netns.list_netns()
    with _lock:
        while True:
            n = _instances
            _instances += 1
            prefix = f"vx{pid}-" if n == 0 else f"vx{pid}n{n}-"
            if not any(name.startswith(prefix) for name in existing):
                return prefix


def _kill_pids(pids: Iterable[int], grace: float = 1.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Never ourselves."""
    me = os.getpid()
    pids = [p for p in pids if p != me]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if os.path.exists(f"/proc/{p}") and not _is_zombie(p)]
        if alive:
            time.sleep(0.02)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def cleanup_prefix(prefix: str) -> list[str]:
    """Remove every namespace (and our-kind link in this namespace) whose name starts with prefix.

    For leftovers of a lab whose process was killed: processes inside those namespaces are
    terminated first (they would keep a namespace alive after its mount is gone). Safe to call
    repeatedly, from ``atexit`` or after a signal. Returns the namespaces removed.
    """
    if len(prefix) < 4:
        # "vx" would match the host's own vxlan0 and every other lab: refuse.
        raise VxdpError(f"cleanup prefix {prefix!r} is too short to be unique")
    removed: list[str] = []
    for name in _netns.list_netns():
        if not name.startswith(prefix):
            continue
        _kill_pids(_netns.pids_in_netns(name))
        _netns.remove_netns(name)
        removed.append(name)
    # Links in the caller's namespace named with the prefix (e.g. TAPs a test created here).
    # Only virtual kinds: a physical NIC is never deleted by name matching.
    try:
        with _netns.ns_iproute(None) as ipr:
            for link in ipr.link("dump"):
                ifname = link.get("ifname") or ""
                info = link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
                if ifname.startswith(prefix) and info in ("veth", "vxlan", "bridge", "tun", "dummy"):
                    try:
                        ipr.link("del", index=link["index"])
                    except NetlinkError:
                        pass
    except VxdpError:
        pass  # inside a running asyncio loop: namespaces are what matters
    return removed


def docker_mac(ip: str) -> str:
    """Docker's container MAC: 02:42 followed by the four octets of the IPv4 address."""
    return "02:42:" + ":".join(f"{int(o):02x}" for o in ip.split("."))


@dataclass
class HostInfo:
    name: str
    ns: str
    address: IPv4Interface
    ifname: str = "eth0"
    next_veth: int = 0
    address6: IPv6Interface | None = None


@dataclass
class ContainerInfo:
    name: str
    ns: str
    host: str
    mac: str
    address: IPv4Interface
    mtu: int


class Lab:
    """A set of namespaces (underlay, hosts, containers) and processes, all removed at close.

    Use as a context manager. ``ipv6=False`` (default) disables IPv6 in every namespace the lab
    makes, so captures show only the traffic a test sends (no RS/MLD/DAD), as Docker containers
    on IPv4-only networks.
    """

    def __init__(self, prefix: str | None = None, *, ipv6: bool = False,
                 handle_signals: bool = False) -> None:
        _netns.require_root("building a namespace lab")
        if prefix is not None and len(prefix) < 4:
            raise VxdpError(f"lab prefix {prefix!r} is too short to be unique")
        self.prefix = prefix if prefix is not None else _default_prefix()
        self.ipv6 = ipv6
        self.underlay_ns: str | None = None
        self.subnet: IPv4Network | None = None
        self.hosts: dict[str, HostInfo] = {}
        self.containers: dict[str, ContainerInfo] = {}
        self.vteps: dict[tuple[str, int], KernelVtep] = {}
        self._netns: list[str] = []            # creation order
        self._procs: list[subprocess.Popen[Any]] = []
        self._closed = False
        # atexit covers normal exit and uncaught exceptions, not SIGTERM/SIGHUP (their default
        # action kills without unwinding); handle_signals turns those into SystemExit.
        atexit.register(self.close)
        if handle_signals:
            install_signal_exit()

    # ------------------------------------------------------------------ naming
    def ns(self, name: str) -> str:
        """Full netns name for a lab-made namespace given its short (or full) name."""
        if name in self._netns:
            return name
        full = self.prefix + name
        if full in self._netns:
            return full
        raise VxdpError(f"no namespace {name!r} in lab {self.prefix}")

    @property
    def namespaces(self) -> list[str]:
        return list(self._netns)

    def _new_ns(self, short: str) -> str:
        if self._closed:
            raise VxdpError("lab is closed")
        full = self.prefix + short
        if full in self._netns or _netns.netns_exists(full):
            raise VxdpError(f"netns {full} already exists")
        _netns.ensure_netns(full)
        self._netns.append(full)
        if not self.ipv6:
            _netns.call_in_netns(full, _disable_ipv6_defaults)
        with _netns.ns_iproute(full) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return full

    # ------------------------------------------------------------------ topology
    def underlay(self, subnet: str | IPv4Network = "198.18.0.0/24") -> str:
        """Create ``<prefix>ul`` with bridge ``br0`` (up): the wire between the hosts."""
        net = IPv4Network(subnet)
        if not net.subnet_of(UNDERLAY_SPACE):
            raise VxdpError(f"underlay {net} is outside {UNDERLAY_SPACE} (lab safety rule)")
        if self.underlay_ns is not None:
            raise VxdpError("the lab already has an underlay")
        ns = self._new_ns("ul")
        with _netns.ns_iproute(ns) as ipr:
            # STP is off by default, so ports forward as soon as they are up.
            ipr.link("add", ifname="br0", kind="bridge")
            ipr.link("set", index=ipr.link_lookup(ifname="br0")[0], state="up")
        self.underlay_ns = ns
        self.subnet = net
        return ns

    def host(self, name: str, address: str | IPv4Address | IPv4Interface, *,
             address6: str | IPv6Address | IPv6Interface | None = None,
             tx_csum_off: bool = False) -> str:
        """Namespace ``<prefix><name>`` with ``eth0`` = ``address`` on the underlay bridge.

        The bridge side is ``v-<name>`` in the underlay namespace. ``address6`` (inside
        2001:db8::/32, /64 unless given) adds an IPv6 underlay address, usable at once (no
        DAD), with IPv6 enabled in that host namespace. ``tx_csum_off`` turns tx checksum
        offload off on ``eth0`` (see :func:`disable_tx_checksum`).
        """
        if self.underlay_ns is None or self.subnet is None:
            self.underlay()
        assert self.underlay_ns is not None and self.subnet is not None
        iface = self._underlay_address(address)
        iface6 = self._underlay_address6(address6) if address6 is not None else None
        port = f"v-{name}"
        try:
            check_ifname(port)
        except ValueError as exc:
            raise VxdpError(f"lab host {name}: bridge port {port}: {exc}") from None
        ns = self._new_ns(name)
        try:
            with _netns.ns_iproute(ns) as ipr:
                # Created inside the host namespace, peer born directly in the underlay one:
                # nothing transits the caller's namespace.
                ipr.link("add", ifname="eth0", kind="veth",
                         peer={"ifname": port, "net_ns_fd": self.underlay_ns})
                idx = ipr.link_lookup(ifname="eth0")[0]
                ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
                ipr.link("set", index=idx, state="up")
            if iface6 is not None:
                _netns.call_in_netns(ns, _enable_ipv6)
                with _netns.ns_iproute(ns) as ipr:
                    idx = ipr.link_lookup(ifname="eth0")[0]
                    ipr.addr("add", index=idx, address=str(iface6.ip),
                             prefixlen=iface6.network.prefixlen, flags=IFA_F_NODAD)
            with _netns.ns_iproute(self.underlay_ns) as ipr:
                br = ipr.link_lookup(ifname="br0")[0]
                pidx = ipr.link_lookup(ifname=port)[0]
                ipr.link("set", index=pidx, master=br, state="up")
        except NetlinkError as exc:
            raise VxdpError(f"lab host {name}: {os.strerror(exc.code)}") from exc
        if tx_csum_off:
            disable_tx_checksum(ns, "eth0")
        self.hosts[name] = HostInfo(name=name, ns=ns, address=iface, address6=iface6)
        return ns

    def _underlay_address6(self, address: str | IPv6Address | IPv6Interface) -> IPv6Interface:
        if isinstance(address, IPv6Interface):
            iface = address
        elif isinstance(address, str) and "/" in address:
            iface = IPv6Interface(address)
        else:
            iface = IPv6Interface(f"{address}/64")
        if iface.ip not in UNDERLAY6_SPACE:
            raise VxdpError(f"host address {iface.ip} is outside {UNDERLAY6_SPACE} (lab safety "
                            "rule)")
        return iface

    def _underlay_address(self, address: str | IPv4Address | IPv4Interface) -> IPv4Interface:
        assert self.subnet is not None
        if isinstance(address, IPv4Interface):
            iface = address
        elif isinstance(address, str) and "/" in address:
            iface = IPv4Interface(address)
        else:
            iface = IPv4Interface(f"{address}/{self.subnet.prefixlen}")
        if iface.ip not in self.subnet:
            raise VxdpError(f"host address {iface.ip} is not in the underlay {self.subnet}")
        return iface

    def container(self, host: str, name: str, mac: str, address: IPv4Interface | str,
                  mtu: int = 1450) -> str:
        """Docker-style container namespace ``<prefix><name>`` (lo up, no eth0 yet).

        Its ``eth0`` comes from whoever attaches it: a vxdp VTEP (TAP, ``netns`` = the returned
        name) or :meth:`kernel_vtep`. The MAC/address/MTU are recorded for the latter.
        """
        self._host(host)
        ns = self._new_ns(name)
        self.containers[name] = ContainerInfo(name=name, ns=ns, host=host, mac=mac.lower(),
                                              address=IPv4Interface(address), mtu=mtu)
        return ns

    def kernel_vtep(self, host: str, vni: int,
                    local: str | IPv4Address | IPv6Address | None = None, *,
                    network: str = "mynet", mtu: int = 1450, dstport: int = 4789,
                    containers: Sequence[tuple[str, str, IPv4Interface | str]] = (),
                    peers: Sequence[tuple[str, IPv4Address | str, Any]] = (),
                    flood: Sequence[IPv4Address | IPv6Address | str] = (),
                    tx_csum_off: bool = False, **vxlan: Any) -> KernelVtep:
        """Docker's kernel overlay (walkthrough) inside host namespace ``host``.

        Bridge ``br<vni>`` + ``vxlan<vni>`` (id vni, dstport, local, proxy, nolearning, l2miss,
        l3miss, ageing 300, MTU ``mtu``), one veth per container (host side ``veth<k>`` on the
        bridge, container side ``eth0`` with the container's MAC/address/MTU), each peer as a
        permanent ``self`` FDB entry plus a permanent neighbour on the vxlan device (Docker's
        peerAdd), and each flood VTEP as an all-zeros FDB entry (see
        :mod:`dataplane.lab.kernel`). ``tx_csum_off`` disables tx checksum offload on the
        container veths (see :func:`disable_tx_checksum`). ``local`` may be the host's IPv6
        underlay address (a vxlan device over IPv6); ``vxlan``: further pyroute2 vxlan
        attributes (``vxlan_ttl``, ``vxlan_label``, ``vxlan_udp_zero_csum6_tx``...).

        ``containers`` items are (name, mac, address); a name already made with
        :meth:`container` reuses that namespace.
        """
        h = self._host(host)
        if not is_vni(vni):
            raise VxdpError(f"vni {vni} out of range {VNI_MIN}..{VNI_MAX}")
        if (host, vni) in self.vteps:
            raise VxdpError(f"host {host} already has a kernel vtep for vni {vni}")
        local_ip = ip_address(str(local)) if local is not None else h.address.ip
        kv = KernelVtep(host=host, ns=h.ns, network=network, vni=vni, local=local_ip,
                        bridge=f"br{vni}", vxlan=f"vxlan{vni}", mtu=mtu, dstport=dstport,
                        extra=dict(vxlan))
        kernel.create(kv)
        self.vteps[(host, vni)] = kv
        for cname, mac, address in containers:
            self.kernel_attach(host, vni, cname, mac, address, tx_csum_off=tx_csum_off)
        for mac, ip, vtep in peers:
            self.kernel_peer_add(host, vni, mac, ip, vtep)
        for vtep in flood:
            self.kernel_flood_add(host, vni, vtep)
        return kv

    def kernel_attach(self, host: str, vni: int, name: str, mac: str,
                      address: IPv4Interface | str, *, tx_csum_off: bool = False) -> str:
        """Plug container ``name`` into the kernel vtep: veth, eth0 in the container netns."""
        kv = self._vtep(host, vni)
        h = self.hosts[host]
        iface = IPv4Interface(address)
        if name in self.containers:
            cns = self.containers[name].ns
        else:
            cns = self.container(host, name, mac, iface, kv.mtu)
        veth = f"veth{h.next_veth}"
        h.next_veth += 1
        kernel.attach(kv, cns, name, veth, mac, iface)
        if tx_csum_off:
            disable_tx_checksum(cns, "eth0")
            disable_tx_checksum(h.ns, veth)
        return cns

    def kernel_peer_add(self, host: str, vni: int, mac: str, ip: IPv4Address | str,
                        vtep: IPv4Address | str) -> None:
        """Docker's peerAdd on the kernel vtep (see :func:`dataplane.lab.kernel.peer_add`)."""
        kernel.peer_add(self._vtep(host, vni), mac, ip, vtep)

    def kernel_flood_add(self, host: str, vni: int, vtep: IPv4Address | IPv6Address | str,
                         ) -> None:
        """One more VTEP in the kernel vtep's flood list (head-end replication)."""
        kernel.flood_add(self._vtep(host, vni), vtep)

    def _host(self, host: str) -> HostInfo:
        try:
            return self.hosts[host]
        except KeyError:
            raise VxdpError(f"no host {host!r} in lab {self.prefix}") from None

    def _vtep(self, host: str, vni: int) -> KernelVtep:
        try:
            return self.vteps[(host, vni)]
        except KeyError:
            raise VxdpError(f"no kernel vtep for vni {vni} on host {host!r}") from None

    # ------------------------------------------------------------------ processes
    def _resolve(self, ns: str | None) -> str | None:
        # Only namespaces of this lab (or None = ours, explicitly): a typo must not end up
        # running traffic generators somewhere else.
        return None if ns is None else self.ns(ns)

    def run(self, ns: str | None, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """:func:`dataplane.netns.run_in_netns` in a lab namespace (short or full name)."""
        return _netns.run_in_netns(self._resolve(ns), argv, **kwargs)

    def popen(self, ns: str | None, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in a lab namespace; terminated (then killed) by :meth:`close`."""
        if self._closed:
            raise VxdpError("lab is closed")
        proc = _netns.popen_in_netns(self._resolve(ns), argv, **kwargs)
        self._procs.append(proc)
        return proc

    def tcpdump(self, ns: str, iface: str, filter: str = "", count: int | None = None,
                extra: Sequence[str] = ("-q",), wait: bool = True) -> Capture:
        """``tcpdump -l -nn -i IFACE [EXTRA] [-c COUNT] FILTER`` in ``ns``; returns once it listens."""
        argv = ["tcpdump", "-l", "-nn", "-i", iface, *extra]
        if count is not None:
            argv += ["-c", str(count)]
        if filter:
            argv += filter.split()
        cap = Capture(self.popen(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        if wait:
            cap.wait_listening()
        return cap

    def links(self, ns: str, kind: str | None = None) -> list[str]:
        """Interface names in a lab namespace (``ip -j -d link``), optionally of one kind
        (``tun``, ``veth``, ``vxlan``...)."""
        p = self.run(ns, ["ip", "-j", "-d", "link", "show"], check=True)
        return [link["ifname"] for link in json.loads(p.stdout or "[]")
                if kind is None or link.get("linkinfo", {}).get("info_kind") == kind]

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Kill the lab's processes and remove its namespaces (reverse order). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            atexit.unregister(self.close)
        except Exception:
            pass
        errors: list[str] = []
        for proc in reversed(self._procs):
            try:
                end_process(proc, timeout=1.0)
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        stream.close()
            except Exception as exc:  # keep tearing down
                errors.append(f"process {proc.args!r}: {exc}")
        self._procs.clear()
        for ns in reversed(self._netns):
            try:
                # Processes someone else started in our namespaces (vxdp run, iperf3...) would
                # keep the namespace alive after its mount is gone.
                _kill_pids(_netns.pids_in_netns(ns))
                _netns.remove_netns(ns)
            except Exception as exc:
                errors.append(f"netns {ns}: {exc}")
        self._netns.clear()
        if errors:
            raise VxdpError("lab cleanup incomplete: " + "; ".join(errors))

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Last resort only; close() is the contract.
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass


_MAIN_PID = os.getpid()


def _signal_exit(signum: int, frame: object) -> None:
    # pyroute2 forks helpers (netns sockets) that inherit this handler and are stopped with
    # SIGTERM: a fork must just vanish, never unwind into the parent's cleanup code.
    if os.getpid() != _MAIN_PID:
        os._exit(0)
    raise SystemExit(128 + signum)


def install_signal_exit(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> None:
    """Make SIGTERM/SIGHUP raise SystemExit so ``with Lab()`` blocks and atexit still clean up.

    Only on the main thread and only where the handler is still the default: an application
    (``vxdp run``) that handles its signals itself keeps its handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in signals:
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _signal_exit)


def _enable_ipv6() -> None:
    # A host namespace with an IPv6 underlay address: IPv6 back on for what is there now
    # (writing "all" applies to every existing interface) and what comes later.
    for key in ("all", "default"):
        with open(f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6", "w") as f:
            f.write("0")


def _disable_ipv6_defaults() -> None:
    # Runs in a child inside the namespace: "default" covers interfaces created or moved in
    # later (TAPs, veths), "all"/"lo" the ones already there.
    for key in ("default", "all", "lo"):
        try:
            with open(f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6", "w") as f:
                f.write("1")
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # no IPv6 in this kernel: nothing to disable
                raise
