"""The control commands a VTEP serves (DESIGN.md §4), one table: command name → handler.

Every handler takes the :class:`~dataplane.vtep.Vtep` and the request's arguments and returns
what the client prints (``vxdp ... --json`` shows it as is). Streams (``events``, ``trace``,
``capture``) are not here: they are served by :meth:`dataplane.observe.Observer.streams`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dataplane.config import endpoint_from_args
from dataplane.errors import ConfigError, InvalidArgument

if TYPE_CHECKING:
    from dataplane.vtep import Vtep

Handler = Callable[["Vtep", dict[str, Any]], Any]
OK = {"ok": True}


def _vni(v: Vtep, args: dict[str, Any]) -> int:
    """The network a table command is about: ``vni N``, or the only one served."""
    vni = args.get("vni")
    served = ", ".join(str(n) for n in sorted(v.by_vni))
    if vni is None:
        if len(v.by_vni) == 1:
            return next(iter(v.by_vni))
        raise InvalidArgument("this VTEP serves several networks: say which with 'vni N' "
                              f"(one of {served})")
    vni = int(vni)
    if vni not in v.by_vni:
        raise InvalidArgument(f"no network with VNI {vni} here (serving {served})")
    return vni


def fdb_change(op: str) -> Handler:
    def handler(v: Vtep, args: dict[str, Any]) -> Any:
        getattr(v.switch, "fdb_" + op)(_vni(v, args), args["mac"], args["dst"],
                                       args.get("state", "permanent"), time.monotonic())
        return OK
    return handler


def fdb_del(v: Vtep, args: dict[str, Any]) -> Any:
    v.switch.fdb_del(_vni(v, args), args["mac"], args.get("dst"))
    return OK


def neigh_change(op: str) -> Handler:
    def handler(v: Vtep, args: dict[str, Any]) -> Any:
        getattr(v.switch, "neigh_" + op)(_vni(v, args), args["ip"], args["lladdr"],
                                         args.get("state", "permanent"))
        return OK
    return handler


def neigh_del(v: Vtep, args: dict[str, Any]) -> Any:
    v.switch.neigh_del(_vni(v, args), args["ip"])
    return OK


async def endpoint_add(v: Vtep, args: dict[str, Any]) -> Any:
    net = v.networks.get(args.get("network", ""))
    if net is None:
        raise InvalidArgument(f"no network {args.get('network')!r} here "
                              f"(have: {', '.join(sorted(v.networks))})")
    try:
        ep = endpoint_from_args(net.name, args["name"], args["mac"], args["address"],
                                args.get("netns"), args.get("ifname"),
                                args.get("netns_create") is True)
    except ConfigError as err:
        raise InvalidArgument(err.detail if err.key is None
                              else f"{err.key}: {err.detail}") from None
    attached = await v.attach(ep, net)
    return {"name": ep.name, "network": net.name, "vni": net.vni, "port": attached.port_id}


def endpoint_del(v: Vtep, args: dict[str, Any]) -> Any:
    v.detach(args["name"])
    return OK


def endpoint_show(v: Vtep, args: dict[str, Any]) -> Any:
    return [{"name": n, "network": e.network.name, "vni": e.network.vni, "mac": e.cfg.mac,
             "address": str(e.cfg.address), "netns": e.cfg.netns, "ifname": e.cfg.ifname or n}
            for n, e in sorted(v.endpoints.items())]


COMMANDS: dict[str, Handler] = {
    "fdb.show": lambda v, args: v.observe.fdb_rows(),
    "fdb.add": fdb_change("add"),
    "fdb.append": fdb_change("append"),
    "fdb.replace": fdb_change("replace"),
    "fdb.del": fdb_del,
    "neigh.show": lambda v, args: v.observe.neigh_rows(),
    "neigh.add": neigh_change("add"),
    "neigh.replace": neigh_change("replace"),
    "neigh.del": neigh_del,
    # the containers' side of the TAPs: netlink in their namespaces, off the loop
    "stats": lambda v, args: v.observe.stats_async(),
    "explain": lambda v, args: v.observe.explain(args),
    "endpoint.add": endpoint_add,
    "endpoint.del": endpoint_del,
    "endpoint.show": endpoint_show,
}


async def dispatch(v: Vtep, cmd: str, args: dict[str, Any]) -> Any:
    """Run control command `cmd` (the ControlServer's handler)."""
    handler = COMMANDS.get(cmd)
    if handler is None:
        raise InvalidArgument(f"unknown command {cmd!r}")
    result = handler(v, args)
    if isinstance(result, Awaitable):
        result = await result
    return result
