"""Docker's kernel overlay in a lab host namespace: the independent peer vxdp is tested and
measured against (DESIGN.md §5).

What Docker's overlay driver programs, with pyroute2 instead of ``ip``/``bridge``: a bridge
and a vxlan device (``proxy nolearning l2miss l3miss``, ageing 300), one veth per container,
and per remote container a permanent ``self`` FDB entry plus a permanent neighbour entry
(Docker's peerAdd); all-zeros FDB entries are the flood list (head-end replication). Docker
keeps ``br0``/``vxlan0`` in a per-network namespace; here they live in the host namespace, and
their names carry the VNI so several networks can coexist.

:class:`~dataplane.lab.Lab` keeps the bookkeeping (which host, which namespace); the functions
here do the netlink work and turn its failures into one-line :class:`VxdpError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, ip_address
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from dataplane import netns as _netns
from dataplane.errors import VxdpError

__all__ = ["KernelVtep", "attach", "create", "flood_add", "peer_add", "recreate_vxlan"]

_ZERO_MAC = "00:00:00:00:00:00"


@dataclass
class KernelVtep:
    """What :meth:`Lab.kernel_vtep` built in a host namespace (names are in ``ns``)."""
    host: str
    ns: str
    network: str
    vni: int
    local: IPv4Address | IPv6Address
    bridge: str
    vxlan: str
    mtu: int
    dstport: int
    ports: dict[str, str] = field(default_factory=dict)  # container name -> host-side veth
    extra: dict[str, Any] = field(default_factory=dict)  # more IFLA_VXLAN_* (pyroute2 names)

    def _fail(self, doing: str, exc: NetlinkError) -> VxdpError:
        return VxdpError(f"kernel vtep {self.host}/{self.vni}: {doing}{os.strerror(exc.code)}")


def create(kv: KernelVtep) -> None:
    """Bridge ``kv.bridge`` and vxlan device ``kv.vxlan`` enslaved to it, both up."""
    try:
        with _netns.ns_iproute(kv.ns) as ipr:
            ipr.link("add", ifname=kv.bridge, kind="bridge")
            br = ipr.link_lookup(ifname=kv.bridge)[0]
            ipr.link("set", index=br, mtu=kv.mtu)
            _add_vxlan(ipr, kv, br)
            ipr.link("set", index=br, state="up")
    except NetlinkError as exc:
        raise kv._fail("", exc) from exc


def _add_vxlan(ipr: Any, kv: KernelVtep, br: int) -> None:
    local = ({"vxlan_local6": str(kv.local)} if kv.local.version == 6
             else {"vxlan_local": str(kv.local)})
    ipr.link("add", ifname=kv.vxlan, kind="vxlan",
             vxlan_id=kv.vni, vxlan_port=kv.dstport, **local,
             vxlan_learning=0, vxlan_proxy=1, vxlan_l2miss=1, vxlan_l3miss=1,
             vxlan_ageing=300, **kv.extra)
    vx = ipr.link_lookup(ifname=kv.vxlan)[0]
    ipr.link("set", index=vx, mtu=kv.mtu, master=br)
    ipr.link("set", index=vx, state="up")


def recreate_vxlan(kv: KernelVtep, **vxlan: Any) -> None:
    """The vxlan device made again with ``vxlan`` attributes added to ``kv.extra``: what a
    flag changelink refuses (udp6zerocsumtx, ttl inherit...) needs. Its FDB and neighbour
    entries go with it; add them again."""
    kv.extra.update(vxlan)
    try:
        with _netns.ns_iproute(kv.ns) as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname=kv.vxlan)[0])
            _add_vxlan(ipr, kv, ipr.link_lookup(ifname=kv.bridge)[0])
    except NetlinkError as exc:
        raise kv._fail("recreate: ", exc) from exc


def attach(kv: KernelVtep, container_ns: str, name: str, veth: str, mac: str,
           iface: IPv4Interface) -> None:
    """Veth ``veth`` on the bridge, its peer ``eth0`` in ``container_ns`` with the container's
    MAC, address and the network's MTU (what Docker does for each container)."""
    try:
        with _netns.ns_iproute(kv.ns) as ipr:
            # The peer is created directly in the container namespace under its final name.
            ipr.link("add", ifname=veth, kind="veth",
                     peer={"ifname": "eth0", "net_ns_fd": container_ns})
            vidx = ipr.link_lookup(ifname=veth)[0]
            br = ipr.link_lookup(ifname=kv.bridge)[0]
            ipr.link("set", index=vidx, mtu=kv.mtu, master=br)
            ipr.link("set", index=vidx, state="up")
        with _netns.ns_iproute(container_ns) as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=idx, address=mac, mtu=kv.mtu)
            ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            ipr.link("set", index=idx, state="up")
    except NetlinkError as exc:
        raise kv._fail(f"attach {name}: ", exc) from exc
    kv.ports[name] = veth


def peer_add(kv: KernelVtep, mac: str, ip: IPv4Address | str,
             vtep: IPv4Address | IPv6Address | str) -> None:
    """Docker's peerAdd: ``bridge fdb add MAC dev vxlan dst VTEP self permanent`` and
    ``ip neigh add IP lladdr MAC dev vxlan nud permanent``."""
    with _netns.ns_iproute(kv.ns) as ipr:
        vx = ipr.link_lookup(ifname=kv.vxlan)[0]
        try:
            # pyroute2 adds NUD_NOARP|NUD_PERMANENT and NTF_SELF by default for fdb().
            ipr.fdb("append", ifindex=vx, lladdr=mac.lower(), dst=str(ip_address(str(vtep))))
            ipr.neigh("add", ifindex=vx, dst=str(IPv4Address(ip)), lladdr=mac.lower(),
                      state=ndmsg.states["permanent"])
        except NetlinkError as exc:
            raise kv._fail(f"peer {mac} {ip} via {vtep}: ", exc) from exc


def flood_add(kv: KernelVtep, vtep: IPv4Address | IPv6Address | str) -> None:
    """``bridge fdb append 00:00:00:00:00:00 dev vxlan dst VTEP``: head-end replication."""
    with _netns.ns_iproute(kv.ns) as ipr:
        vx = ipr.link_lookup(ifname=kv.vxlan)[0]
        try:
            ipr.fdb("append", ifindex=vx, lladdr=_ZERO_MAC, dst=str(ip_address(str(vtep))))
        except NetlinkError as exc:
            raise kv._fail(f"flood {vtep}: ", exc) from exc
