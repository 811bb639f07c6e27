"""The control commands ``vxdp-cni`` sends (and ``docker.show``), served by the VTEP.

A CNI plugin is a process that lives for one call, and a TAP lives as long as some fd holds
it, so the plugin (``dataplane.cni_plugin``) asks the running VTEP to make the interface and
keep it:

``cni.add``   {network, container_id, ifname, netns (a path), address (CIDR), mac?, mtu?,
              vni?, routes?: [[dst, gw|null]...]} → a persistent TAP created *in* the
              container's namespace as ``ifname``, with MAC, MTU, address and routes; its port
              on ``network``; published by the store. Answers {name, mac, mtu, ifname,
              sandbox}.
``cni.del``   {container_id, ifname} → removed (and success when there is nothing: the spec
              wants DEL to succeed for what is already gone).
``cni.check`` {container_id, ifname, netns} → an error unless the endpoint is attached and
              its interface is still there with its MAC.

The endpoint's key is ``cni:<container id>:<ifname>`` (the spec's identity of an
attachment), recorded in the state file so a restarted VTEP re-attaches it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, ip_network
from typing import TYPE_CHECKING, Any

from dataplane.docker import sandbox
from dataplane.docker.state import EndpointRecord
from dataplane.errors import InvalidArgument, VxdpError
from dataplane.validate import check_ifname, parse_interface, parse_unicast_mac

if TYPE_CHECKING:
    from dataplane.docker.runtime import Containers
    from dataplane.vtep import Vtep



def _parse_ipv4_interface(value: str) -> IPv4Interface:
    """The IPAM result's address: IPv4 (the TAP and the store take IPv6 too, this path not
    yet)."""
    iface = parse_interface(value)
    if not isinstance(iface, IPv4Interface):
        raise ValueError(f"{value!r}: IPv6 container addresses are not supported by vxdp-cni "
                         "yet")
    return iface

def _containers(v: Vtep) -> Containers:
    if v.containers is None:
        raise VxdpError("the VTEP is still starting; try again")
    return v.containers  # type: ignore[no-any-return]


def _str(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{key}: missing or not a string")
    return value


def _check(fn: Callable[[Any], Any], value: Any, key: str) -> Any:
    try:
        return fn(value)
    except ValueError as exc:
        raise InvalidArgument(f"{key}: {exc}") from None


def endpoint_key(container_id: str, ifname: str) -> str:
    return f"cni:{container_id}:{ifname}"


def endpoint_name(key: str) -> str:
    """The port's name: 15 bytes like an interface name, unique per attachment."""
    return "cni" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _routes(raw: Any) -> list[tuple[str, str | None]]:
    routes: list[tuple[str, str | None]] = []
    for item in raw or ():
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise InvalidArgument(f"routes: {item!r} is not [dst, gateway]")
        dst = str(_check(lambda x: ip_network(x, strict=False), item[0], "routes"))
        gw = None if item[1] in (None, "") else str(_check(IPv4Address, item[1], "routes"))
        routes.append((dst, gw))
    return routes


async def cni_add(v: Vtep, args: dict[str, Any]) -> Any:
    c = _containers(v)
    network = _str(args, "network")
    net = v.networks.get(network)
    if net is None:
        raise InvalidArgument(f"no network {network!r} here (have: "
                              f"{', '.join(sorted(v.networks)) or 'none'})")
    for key, have in (("vni", net.vni), ("mtu", net.mtu)):
        if args.get(key) is not None and args[key] != have:
            raise InvalidArgument(f"network {network} has {key.upper()} {have} here, the CNI "
                                  f"configuration says {args[key]}")
    netns = _str(args, "netns")
    if not netns.startswith("/"):
        raise InvalidArgument(f"netns: {netns!r} is not a path")
    ifname = _check(check_ifname, _str(args, "ifname"), "ifname")
    address: IPv4Interface = _check(_parse_ipv4_interface, _str(args, "address"), "address")
    mac = args.get("mac") or "02:42:" + ":".join(f"{b:02x}" for b in address.ip.packed)
    mac = _check(parse_unicast_mac, mac, "mac")
    key = endpoint_key(_str(args, "container_id"), ifname)
    c.ensure_open()
    if key in c.state.endpoints:
        raise InvalidArgument(f"container {args['container_id'][:12]} already has {ifname} "
                              f"(DEL it first)")
    rec = EndpointRecord(key=key, kind="cni", name=endpoint_name(key), network=net.name,
                         tap=ifname, mac=mac, address=str(address), sandbox=netns,
                         ifname=ifname)
    await c.held.create_cni(rec, net, _routes(args.get("routes")))
    return {"name": rec.name, "mac": mac, "mtu": net.mtu, "ifname": ifname, "sandbox": netns,
            "network": net.name, "vni": net.vni}


def cni_del(v: Vtep, args: dict[str, Any]) -> Any:
    c = _containers(v)
    c.ensure_open()
    key = endpoint_key(_str(args, "container_id"), _str(args, "ifname"))
    rec = c.held.remove(key)
    return {"removed": rec is not None}


async def cni_check(v: Vtep, args: dict[str, Any]) -> Any:
    c = _containers(v)
    c.ensure_open()
    key = endpoint_key(_str(args, "container_id"), _str(args, "ifname"))
    rec = c.state.endpoints.get(key)
    if rec is None or not c.held.attached(rec):
        raise VxdpError(f"no endpoint for {args['ifname']} of this container here")
    netns = _str(args, "netns")
    if rec.sandbox != netns:
        raise VxdpError(f"{rec.ifname} was attached in {rec.sandbox}, not {netns}")
    found = await sandbox.call_async(netns, sandbox.find_by_mac, rec.mac)
    if found != rec.ifname:
        raise VxdpError(f"{rec.ifname} with MAC {rec.mac} is missing in {netns}")
    have = await sandbox.call_async(netns, sandbox.addresses, rec.ifname) or []
    return {"name": rec.name, "mac": rec.mac, "ifname": rec.ifname, "address": rec.address,
            "addresses": have}


def docker_show(v: Vtep, args: dict[str, Any]) -> Any:
    c = _containers(v)
    return c.show()


COMMANDS: dict[str, Callable[[Vtep, dict[str, Any]], Any]] = {
    "cni.add": cni_add,
    "cni.del": cni_del,
    "cni.check": cni_check,
    "docker.show": docker_show,
}
