"""The control commands a VTEP serves (DESIGN.md §4): one table of handlers, and next to it
the schema every request is checked against before a handler sees it.

Every handler takes the :class:`~dataplane.vtep.Vtep` and the request's *checked* arguments
and returns what the client prints (``vxdp ... --json`` shows it as is). Streams (``events``,
``trace``, ``capture``) are served by :meth:`dataplane.observe.Observer.streams`, with their
arguments checked here too (:func:`check_args`).

The schema: per command, each argument's rule (a :mod:`dataplane.validate` parser behind a
JSON type check: a VNI is an integer, not ``true``, ``"4097"``, ``4097.5`` or NaN; strings are
bounded; no list or object where a scalar belongs), whether it is required, and no other
argument. A bad request gets one line naming the command, the argument and what is wrong
(``fdb.add: vni: "4097" is not a VNI (an integer 1..16777215)``), never a traceback.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dataplane.config import MTU_MAX, MTU_MIN, endpoint_from_args
from dataplane.control import Rows
from dataplane.docker.cni import COMMANDS as RUNTIME_COMMANDS
from dataplane.errors import ConfigError, InvalidArgument, VxdpError
from dataplane.neigh import NEIGH_STATES
from dataplane.validate import (
    VNI_MAX,
    VNI_MIN,
    check_choice,
    check_ifname,
    check_netns,
    check_network_name,
    parse_interface,
    parse_interfaces,
    parse_mac,
    parse_neigh_ip,
    parse_underlay_ip,
    parse_unicast_mac,
    parse_vni,
    show,
)

if TYPE_CHECKING:
    from dataplane.vtep import Vtep

Handler = Callable[["Vtep", dict[str, Any]], Any]
Rule = Callable[[Any], Any]
OK = {"ok": True}

MAX_STRING = 256           # characters of any string argument (names and addresses are shorter)
COUNT_MAX = (1 << 31) - 1  # trace/capture/events --count
BATCH_MAX = 1024           # table changes in one "batch" request
BATCH_SLICE = 32           # batch changes applied between two turns of the event loop


# --------------------------------------------------------------------------------------------
# Argument rules: JSON types first, then the value rules of dataplane.validate
# --------------------------------------------------------------------------------------------

def _shown(value: Any) -> str:
    """A request value in an error message, short whatever was sent."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    text = show(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(rule: Rule, what: str) -> Rule:
    """A string of at most MAX_STRING characters that ``rule`` accepts."""
    def check(value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"{_shown(value)} is not {what} (expected a string)")
        if len(value) > MAX_STRING:
            raise ValueError(f"a string of {len(value)} characters is not {what} "
                             f"(at most {MAX_STRING})")
        return rule(value)
    return check


def _integer(lo: int, hi: int, what: str) -> Rule:
    def check(value: Any) -> int:
        # bool is an int in Python, never in a request: "vni": true is no VNI 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{_shown(value)} is not {what} (an integer {lo}..{hi})")
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range for {what} ({lo}..{hi})")
        return value
    return check


def _vni(value: Any) -> int:
    """parse_vni for JSON: an integer only (parse_vni also takes the digit strings a command
    line gives it)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{_shown(value)} is not a VNI (an integer {VNI_MIN}..{VNI_MAX})")
    return parse_vni(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{_shown(value)} is not true or false")
    return value


def _choice(choices: tuple[str, ...], what: str) -> Rule:
    return _text(lambda v: check_choice(v, choices, what), what)


def _vtep(value: str) -> str:
    addr = parse_underlay_ip(value)
    if addr.is_multicast:
        raise ValueError(f"{show(value)} is a multicast address, not a VTEP")
    return str(addr)


def _replace_mac(value: str) -> str:
    """The kernel's vxlan refuses NLM_F_REPLACE on the all-zeros and multicast MACs, to create
    such an entry or to rewrite one (vxlan_fdb_update_create / _existing: EOPNOTSUPP): they
    are head-end replication lists, changed one VTEP at a time with append and del. add and
    append take them, as the kernel does (a multicast MAC's own list is looked up before the
    all-zeros one, as in vxlan_xmit)."""
    mac = parse_mac(value)
    if mac == "00:00:00:00:00:00" or int(mac[:2], 16) & 1:
        kind = "all-zeros" if mac == "00:00:00:00:00:00" else "multicast"
        raise ValueError(f"{mac} is the {kind} MAC, a flood list: replace cannot change it, "
                         "as with the kernel's vxlan (use append and del)")
    return mac


def _to(value: str) -> str:
    """explain --to: a MAC or an overlay IPv4 or IPv6 address (what the CLI sends)."""
    try:
        return parse_mac(value)
    except ValueError:
        pass
    try:
        return str(parse_neigh_ip(value))
    except ValueError:
        raise ValueError(f"{show(value)} is neither an IP address nor a MAC address") \
            from None


def _addresses(value: Any) -> str | list[str]:
    """endpoint.add address: one ``A/P``, or a list of them (dual stack), as given."""
    items = value if isinstance(value, list) else [value]
    if not items or len(items) > 16:
        raise ValueError(f"{_shown(value)} is not 1..16 addresses with prefix lengths")
    for item in items:
        if not isinstance(item, str) or len(item) > MAX_STRING:
            raise ValueError(f"{_shown(item)} is not an address/prefix (a string)")
    out = [str(a) for a in parse_interfaces(items)]
    return out if isinstance(value, list) else out[0]


def _ipv4_interface(value: str) -> str:
    """cni.add address: the runtime's IPAM result, IPv4 (vxdp-cni's IPv6 is not there yet)."""
    iface = parse_interface(value)
    if iface.version != 4:
        raise ValueError(f"{show(value)}: IPv6 container addresses are not supported by "
                         "vxdp-cni yet")
    return str(iface)


def _nonempty(value: str) -> str:
    if not value:
        raise ValueError('"" is empty')
    return value


def _path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{show(value)} is not an absolute path")
    return value


def _routes(value: Any) -> list[list[str | None]]:
    """cni.add routes: up to 64 ``[dst, gateway or null]`` pairs of strings."""
    if not isinstance(value, list) or len(value) > 64:
        raise ValueError(f"{_shown(value)} is not a list of at most 64 [dst, gateway] pairs")
    for item in value:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or not isinstance(item[1], (str, type(None)))
                or any(isinstance(x, str) and len(x) > MAX_STRING for x in item)):
            raise ValueError(f"{_shown(item)} is not a [dst, gateway] pair of strings")
    return value


MAC = _text(parse_mac, "a MAC address")
VTEP = _text(_vtep, "a VTEP address")
NEIGH_IP = _text(lambda v: str(parse_neigh_ip(v)), "an IPv4 or IPv6 address")
NETWORK = _text(check_network_name, "a network name")
UDP_PORT = _integer(1, 65535, "a UDP port")
#: FDB states as the CLI writes them (``bridge fdb``'s words): dynamic is a learned entry.
FDB_STATE_WORDS = {"permanent": "permanent", "static": "static", "dynamic": "learned",
                   "learned": "learned"}
LLADDR = _text(lambda v: parse_unicast_mac(v, what="a neighbour entry"), "a MAC address")
IFNAME = _text(check_ifname, "an interface name")
COUNT = _integer(0, COUNT_MAX, "a count")


@dataclass(frozen=True)
class Arg:
    """One argument of a command: its rule (returns the canonical value or raises ValueError
    with one line, the :mod:`dataplane.validate` contract) and whether it must be given."""

    rule: Rule
    required: bool = False


Schema = Mapping[str, Arg]


def _fdb_state(value: str) -> str:
    check_choice(value, tuple(FDB_STATE_WORDS), "FDB state")
    return FDB_STATE_WORDS[value]


#: Where a table command applies: ``vni N`` or ``dev NET`` (the network's name), or the only
#: network served.
_WHERE: Schema = {"vni": Arg(_vni), "dev": Arg(NETWORK)}
#: A remote VTEP as ``bridge fdb`` names one: dst, and its port and VNI when they differ.
_REMOTE: Schema = {"port": Arg(UDP_PORT), "remote_vni": Arg(_vni)}


def _fdb_change_schema(op: str) -> Schema:
    return {"mac": Arg(_text(_replace_mac, "a MAC address") if op == "replace" else MAC, True),
            "dst": Arg(VTEP, True), **_REMOTE,
            "state": Arg(_text(_fdb_state, "an FDB state")), **_WHERE}


_NEIGH_CHANGE: Schema = {"ip": Arg(NEIGH_IP, True), "lladdr": Arg(LLADDR, True),
                         "state": Arg(_choice(NEIGH_STATES, "neighbour state")), **_WHERE}

#: What each command (and stream) takes. Batchable commands are the table changes.
SCHEMAS: dict[str, Schema] = {
    "fdb.show": {},
    "fdb.add": _fdb_change_schema("add"),
    "fdb.append": _fdb_change_schema("append"),
    "fdb.replace": _fdb_change_schema("replace"),
    "fdb.del": {"mac": Arg(MAC, True), "dst": Arg(VTEP), **_REMOTE, **_WHERE},
    "fdb.flush": {**_WHERE, "dynamic": Arg(_boolean)},
    "neigh.show": {},
    "neigh.add": _NEIGH_CHANGE,
    "neigh.replace": _NEIGH_CHANGE,
    "neigh.del": {"ip": Arg(NEIGH_IP, True), "lladdr": Arg(LLADDR), **_WHERE},
    "stats": {},
    "explain": {"from": Arg(IFNAME, True), "to": Arg(_text(_to, "an IP or MAC address"),
                                                      True)},
    "endpoint.add": {
        "network": Arg(_text(check_network_name, "a network name"), True),
        "name": Arg(IFNAME, True), "mac": Arg(_text(parse_unicast_mac, "a MAC address"), True),
        "address": Arg(_addresses, True),
        "netns": Arg(_text(check_netns, "a netns name")), "ifname": Arg(IFNAME),
        "netns_create": Arg(_boolean)},
    "endpoint.del": {"name": Arg(IFNAME, True)},
    "endpoint.show": {},
    "batch": {"requests": Arg(lambda v: _batch_items(v), True)},
    # what vxdp-cni sends (dataplane.docker.cni checks the values further)
    "cni.add": {"network": Arg(_text(check_network_name, "a network name"), True),
                "container_id": Arg(_text(_nonempty, "a container id"), True),
                "ifname": Arg(IFNAME, True), "netns": Arg(_text(_path, "a netns path"), True),
                "address": Arg(_text(_ipv4_interface, "an IPv4 address/prefix"),
                               True),
                "mac": Arg(_text(parse_unicast_mac, "a MAC address")),
                "mtu": Arg(_integer(MTU_MIN, MTU_MAX, "an MTU")), "vni": Arg(_vni),
                "routes": Arg(_routes)},
    "cni.del": {"container_id": Arg(_text(_nonempty, "a container id"), True),
                "ifname": Arg(IFNAME, True)},
    "cni.check": {"container_id": Arg(_text(_nonempty, "a container id"), True),
                  "ifname": Arg(IFNAME, True),
                  "netns": Arg(_text(_path, "a netns path"), True)},
    "docker.show": {},
    "trace": {"count": Arg(COUNT), "port": Arg(IFNAME), "vni": Arg(_vni)},
    "capture": {"count": Arg(COUNT), "port": Arg(IFNAME)},
    "events": {"count": Arg(COUNT)},
}

BATCHABLE = ("fdb.add", "fdb.append", "fdb.replace", "fdb.del", "neigh.add", "neigh.replace",
             "neigh.del")


def _batch_items(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """``batch``'s requests: a list of 1..BATCH_MAX ``{"cmd": C, "args": {...}}`` with C a
    table change. Each one's arguments are checked when it is applied (so a long batch is
    checked a slice at a time too)."""
    if not isinstance(value, list):
        raise ValueError(f"{_shown(value)} is not a list of requests")
    if not 1 <= len(value) <= BATCH_MAX:
        raise ValueError(f"a batch has 1..{BATCH_MAX} requests, not {len(value)}")
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"cmd", "args"}:
            raise ValueError(f"[{i}] is not {{\"cmd\": C, \"args\": {{...}}}}")
        cmd, args = item.get("cmd"), item.get("args", {})
        if cmd not in BATCHABLE:
            raise ValueError(f"[{i}]: {_shown(cmd)} cannot be batched (only "
                             f"{', '.join(BATCHABLE)})")
        if not isinstance(args, dict):
            raise ValueError(f"[{i}]: args must be an object, not {_shown(args)}")
        items.append((cmd, args))
    return items


def check_args(cmd: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` of command ``cmd`` checked against its schema: the canonical values, absent
    optional arguments left out (null counts as absent, as the client never sends it), or
    InvalidArgument with one line naming the command and the argument."""
    schema = SCHEMAS.get(cmd)
    if schema is None:
        raise InvalidArgument(f"unknown command {cmd!r} (known: {', '.join(sorted(SCHEMAS))})")
    extra = sorted(k for k in args if k not in schema)
    if extra:
        takes = ", ".join(schema) or "no arguments"
        raise InvalidArgument(f"{cmd}: unknown argument {_shown(extra[0])} (takes: {takes})")
    out: dict[str, Any] = {}
    for name, arg in schema.items():
        value = args.get(name)
        if value is None:
            if arg.required:
                raise InvalidArgument(f"{cmd}: missing required argument {name!r}"
                                      + (" (null)" if name in args else ""))
            continue
        try:
            out[name] = arg.rule(value)
        except ValueError as exc:
            raise InvalidArgument(f"{cmd}: {name}: {exc}") from None
    return out


# --------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------

def _vni_of(v: Vtep, args: dict[str, Any]) -> int:
    """The network a table command is about: ``vni N``, ``dev NET``, or the only one
    served."""
    vni = args.get("vni")
    dev = args.get("dev")
    if dev is not None:
        if vni is not None:
            raise InvalidArgument("give the network once: vni N or dev NET, not both")
        net = v.networks.get(dev)
        if net is None:
            raise InvalidArgument(f"no network {dev!r} here (have: "
                                  f"{', '.join(sorted(v.networks)) or 'none'})")
        return net.vni
    served = ", ".join(str(n) for n in sorted(v.by_vni))
    if vni is None:
        if len(v.by_vni) == 1:
            return next(iter(v.by_vni))
        raise InvalidArgument("this VTEP serves several networks: say which with 'vni N' "
                              f"(one of {served})")
    if vni not in v.by_vni:
        raise InvalidArgument(f"no network with VNI {vni} here (serving {served})")
    return int(vni)


def fdb_change(op: str) -> Handler:
    def handler(v: Vtep, args: dict[str, Any]) -> Any:
        getattr(v.switch, "fdb_" + op)(_vni_of(v, args), args["mac"], args["dst"],
                                       args.get("state", "permanent"), time.monotonic(),
                                       dst_port=args.get("port", 0),
                                       dst_vni=args.get("remote_vni", 0))
        return OK
    return handler


def fdb_del(v: Vtep, args: dict[str, Any]) -> Any:
    if args.get("dst") is None and ("port" in args or "remote_vni" in args):
        raise InvalidArgument("port and remote_vni name one destination: give its dst too")
    v.switch.fdb_del(_vni_of(v, args), args["mac"], args.get("dst"),
                     dst_port=args.get("port", 0), dst_vni=args.get("remote_vni", 0))
    return OK


def fdb_flush(v: Vtep, args: dict[str, Any]) -> Any:
    """``bridge fdb flush``: the dynamic and static entries of one network, or with
    ``dynamic`` only the learned ones; permanent entries (endpoints, peers) stay."""
    n = v.switch.fdb_flush(_vni_of(v, args), True, dynamic_only=args.get("dynamic", False))
    return {"flushed": n}


def neigh_change(op: str) -> Handler:
    def handler(v: Vtep, args: dict[str, Any]) -> Any:
        getattr(v.switch, "neigh_" + op)(_vni_of(v, args), args["ip"], args["lladdr"],
                                         args.get("state", "permanent"))
        return OK
    return handler


def neigh_del(v: Vtep, args: dict[str, Any]) -> Any:
    # `ip neigh del IP lladdr MAC`: the lladdr is checked for form and otherwise ignored, as
    # the kernel's neigh_delete ignores NDA_LLADDR
    v.switch.neigh_del(_vni_of(v, args), args["ip"])
    return OK


async def batch(v: Vtep, args: dict[str, Any]) -> Any:
    """Up to BATCH_MAX table changes in one request (filling large tables: the benchmarks),
    each checked and applied as if sent alone, BATCH_SLICE at a time between turns of the
    loop. One failure does not stop the others: the reply counts what was applied and lists
    what was refused, by index."""
    applied = 0
    errors: list[dict[str, Any]] = []
    for i, (cmd, item) in enumerate(args["requests"]):
        if i and i % BATCH_SLICE == 0:
            await asyncio.sleep(0)
        try:
            COMMANDS[cmd](v, check_args(cmd, item))
        except VxdpError as exc:
            errors.append({"index": i, "error": str(exc)})
        else:
            applied += 1
    return {"applied": applied, "errors": errors}


async def endpoint_add(v: Vtep, args: dict[str, Any]) -> Any:
    net = v.networks.get(args["network"])
    if net is None:
        raise InvalidArgument(f"no network {args['network']!r} here "
                              f"(have: {', '.join(sorted(v.networks))})")
    try:
        ep = endpoint_from_args(net.name, args["name"], args["mac"], args["address"],
                                args.get("netns"), args.get("ifname"),
                                args.get("netns_create", False))
    except ConfigError as err:
        raise InvalidArgument(err.detail if err.key is None
                              else f"{err.key}: {err.detail}") from None
    attached = await v.attach(ep, net)
    return {"name": ep.name, "network": net.name, "vni": net.vni, "port": attached.port_id}


def endpoint_del(v: Vtep, args: dict[str, Any]) -> Any:
    v.detach(args["name"])
    return OK


def fdb_show(v: Vtep, args: dict[str, Any]) -> Any:
    # A slice at a time: a large table never holds the loop (Observer.table_slices).
    return Rows(v.observe.table_slices("fdb"))


def neigh_show(v: Vtep, args: dict[str, Any]) -> Any:
    return Rows(v.observe.table_slices("neigh"))


def stats(v: Vtep, args: dict[str, Any]) -> Any:
    # the containers' side of the TAPs: netlink in their namespaces, off the loop
    return v.observe.stats_async()


def explain(v: Vtep, args: dict[str, Any]) -> Any:
    return v.observe.explain(args)


def endpoint_show(v: Vtep, args: dict[str, Any]) -> Any:
    return [{"name": n, "network": e.network.name, "vni": e.network.vni, "mac": e.cfg.mac,
             "address": str(e.cfg.address), "netns": e.cfg.netns, "ifname": e.cfg.ifname or n,
             **({"addresses": [str(a) for a in e.cfg.addresses]}
                if len(e.cfg.addresses) > 1 else {})}
            for n, e in sorted(v.endpoints.items())]


COMMANDS: dict[str, Handler] = {
    "fdb.show": fdb_show,
    "fdb.add": fdb_change("add"),
    "fdb.append": fdb_change("append"),
    "fdb.replace": fdb_change("replace"),
    "fdb.del": fdb_del,
    "fdb.flush": fdb_flush,
    "neigh.show": neigh_show,
    "neigh.add": neigh_change("add"),
    "neigh.replace": neigh_change("replace"),
    "neigh.del": neigh_del,
    "stats": stats,
    "explain": explain,
    "endpoint.add": endpoint_add,
    "endpoint.del": endpoint_del,
    "endpoint.show": endpoint_show,
    "batch": batch,
    # containers from runtimes: what vxdp-cni sends, what the Docker driver and it hold
    **RUNTIME_COMMANDS,
}


async def dispatch(v: Vtep, cmd: str, args: dict[str, Any]) -> Any:
    """Run control command `cmd` (the ControlServer's handler) on its checked arguments."""
    handler = COMMANDS.get(cmd)
    if handler is None:
        raise InvalidArgument(f"unknown command {cmd!r}")
    result = handler(v, check_args(cmd, args))
    if isinstance(result, Awaitable):
        result = await result
    return result
