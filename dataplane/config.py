"""TOML configuration → typed, frozen dataclasses (DESIGN.md §4).

The file format is a contract driven by external tests, so this module only *reads* it: every
key is checked for type and range, unknown keys are refused (a typo such as ``learnig = true``
must not silently leave learning off), and every error is one line that names the file, the line
and the key, e.g. ``cfg.toml:12: network[0].endpoint[1].mac: "02:42:zz" is not a MAC address``.

tomllib does not report where a parsed value came from, so line numbers are recovered
best-effort by :class:`_Locator`, which re-scans the raw text for table headers (counting
``[[array]]`` occurrences) and ``key =`` lines.

The value rules themselves (MACs, VNIs, names, address kinds) live in :mod:`dataplane.validate`,
shared with the CLI, the tables and the store; this module adds the key, file and line to their
messages.
"""

from __future__ import annotations

import datetime
import difflib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from typing import Any, NoReturn

from dataplane.errors import ConfigError
from dataplane.fdb import DEFAULT_MAX_LEARNED, DEFAULT_MAX_LEARNED_PER_PORT
from dataplane.validate import (
    check_etcd_url,
    check_host_port,
    check_ifname,
    check_netns,
    check_network_name,
    check_socket_name,
    check_vtep_name,
    IPAddress,
    Locals,
    parse_allow,
    parse_interfaces,
    parse_locals,
    parse_neigh_ip,
    parse_underlay_ip,
    parse_unicast_mac,
    parse_vni,
    show,
)

# 68 is the IPv4 minimum MTU (RFC 791); 9000 is the usual jumbo-frame ceiling.
MTU_MIN = 68
MTU_MAX = 9000
DEFAULT_MTU = 1450  # 1500 - 50 bytes of outer Ethernet/IPv4/UDP/VXLAN headers (RFC 7348 §4)
DEFAULT_PORT = 4789  # IANA-assigned VXLAN port (RFC 7348 §5)
DEFAULT_SRC_PORT_RANGE = (49152, 65535)  # IANA dynamic range, RFC 7348 §5 recommendation
DEFAULT_AGEING = 300.0  # kernel vxlan default ageing time, seconds
DEFAULT_BURST = 64
BURST_MAX = 1024
UNIX_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1
DEFAULT_STORE_PREFIX = "/vxdp"
DEFAULT_STORE_TTL = 10
DEFAULT_DOCKER_PLUGIN = "vxdp"
# [vtep] busy_poll upper bound (µs): polling longer than this between bursts is a spin loop.
BUSY_POLL_MAX = 100_000
# [vtep] max_subscribers: trace/capture/events clients at once. Each holds a queue of up to
# 4096 records and a socket buffer; 64 is far more than people debugging one host open.
DEFAULT_MAX_SUBSCRIBERS = 64
MAX_SUBSCRIBERS_MAX = 4096

# Kernel offloads the VTEP may use, as a virtio-net guest or wireguard-go does: "tap" =
# IFF_VNET_HDR + TUNSETOFFLOAD on the endpoints (TCP super-frames in, coalesced segments out),
# "udp_gso" = UDP_SEGMENT sends, "udp_gro" = UDP_GRO on the receive socket. Each is still
# probed at start-up and left off when the kernel refuses it.
OFFLOADS: frozenset[str] = frozenset({"tap", "udp_gso", "udp_gro"})


# --------------------------------------------------------------------------------------------
# Typed configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointConfig:
    """A local container interface: a TAP the VTEP creates (optionally moved into ``netns``)."""

    name: str  # TAP name on the host, <= 15 bytes
    mac: str  # lower-case aa:bb:cc:dd:ee:ff, unicast
    address: IPv4Interface | IPv6Interface  # the first address/prefix on the interface
    netns: str | None = None  # named netns (ip netns add) to move the TAP into
    ifname: str | None = None  # name inside netns (e.g. eth0); None keeps ``name``
    # Create ``netns`` if it does not exist (and remove it again when the VTEP is done with
    # it); without this a missing namespace is an error naming it.
    netns_create: bool = False
    # Every address/prefix of the interface (dual stack: IPv4 and IPv6), ``address`` first;
    # () stands for (address,).
    addresses: tuple[IPv4Interface | IPv6Interface, ...] = ()

    def __post_init__(self) -> None:
        if not self.addresses:
            object.__setattr__(self, "addresses", (self.address,))

    @property
    def ipv6(self) -> bool:
        """Has IPv6 addresses: the interface keeps IPv6 on (else it is off, as Docker does
        for containers on networks without IPv6)."""
        return any(a.version == 6 for a in self.addresses)

@dataclass(frozen=True)
class PeerConfig:
    """A remote endpoint: one permanent FDB entry + one permanent neighbour entry."""

    mac: str
    address: IPAddress  # overlay address (neighbour entry), the first of ``addresses``
    vtep: IPAddress  # underlay address of the VTEP that hosts it (FDB dst), IPv4 or IPv6
    addresses: tuple[IPAddress, ...] = ()   # every overlay address (dual stack); () = address

    def __post_init__(self) -> None:
        if not self.addresses:
            object.__setattr__(self, "addresses", (self.address,))


@dataclass(frozen=True)
class NetworkConfig:
    """One overlay network = one VNI."""

    name: str
    vni: int
    mtu: int = DEFAULT_MTU
    proxy: bool = True
    learning: bool = False
    ageing: float = DEFAULT_AGEING
    maxaddress: int = 0  # remote entries at most; 0 = unlimited (kernel vxlan semantics)
    max_learned: int = DEFAULT_MAX_LEARNED  # local learned entries at most; 0 = unlimited
    max_learned_per_port: int = DEFAULT_MAX_LEARNED_PER_PORT
    ttl: int | str = "auto"  # outer TTL: "auto" (64), 1..255, "inherit" (the kernel's rules)
    tos: int | str = 0  # outer DSCP: 0..255 or "inherit"; ECN per RFC 6040 always
    df: str = "unset"  # outer DF: "unset", "set", "inherit"
    flowlabel: int | str = 0  # outer IPv6 flow label: 0..0xFFFFF or "inherit"
    flood: tuple[IPAddress, ...] = ()
    endpoints: tuple[EndpointConfig, ...] = ()
    peers: tuple[PeerConfig, ...] = ()


@dataclass(frozen=True, kw_only=True)
class VtepConfig:
    """The ``[vtep]`` table. Keyword-only because ``name`` has a default but ``local`` does not."""

    name: str = "vxdp"
    local: Locals  # underlay addresses, one per family; str() shows them
    port: int = DEFAULT_PORT
    control: str = ""  # "" → /run/vxdp/<name>.sock (filled in by __post_init__)
    allow: tuple[IPv4Network | IPv6Network, ...] = ()  # empty = accept VXLAN from any source
    udp6zerocsumrx: bool = False  # accept IPv6 VXLAN with a zero UDP checksum (kernel option)
    src_port_range: tuple[int, int] = DEFAULT_SRC_PORT_RANGE
    strict: bool = True  # drop datagrams with reserved bits set (kernel default)
    metrics: str | None = None  # "host:port" for a metrics listener, if any
    burst: int = DEFAULT_BURST
    offload: frozenset[str] = OFFLOADS  # subset of OFFLOADS; empty = no offloads at all
    busy_poll: int = 0  # microseconds of polling after a burst before sleeping; 0 = off
    max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS  # trace/capture/events clients at once
    # What must outlive the process (Docker networks and pools, the container endpoints it
    # re-attaches after a restart); "" → /var/lib/vxdp/<name>.json, written only when used.
    state: str = ""

    def __post_init__(self) -> None:
        # an address, its text or a list of them (code building a config) as one Locals
        object.__setattr__(self, "local", parse_locals(self.local))
        if not self.control:
            # frozen dataclass: the default depends on another field, so set it once here
            object.__setattr__(self, "control", default_control_path(self.name))
        if not self.state:
            object.__setattr__(self, "state", default_state_path(self.name))


@dataclass(frozen=True)
class StoreConfig:
    """The optional ``[store]`` table (multi-host state in etcd)."""

    etcd: tuple[str, ...]
    prefix: str = DEFAULT_STORE_PREFIX
    ttl: int = DEFAULT_STORE_TTL


@dataclass(frozen=True)
class DockerConfig:
    """The optional ``[docker]`` table: serve Docker's remote network + IPAM driver API
    (libnetwork's remote driver protocol) on ``socket``, under the driver name ``plugin``.
    What must outlive the VTEP (Docker's networks and pools: dockerd never replays them to
    a restarted plugin) goes to ``[vtep] state``."""

    plugin: str = DEFAULT_DOCKER_PLUGIN
    socket: str = ""  # "" → /run/docker/plugins/<plugin>.sock

    def __post_init__(self) -> None:
        if not self.socket:
            object.__setattr__(self, "socket", f"/run/docker/plugins/{self.plugin}.sock")


@dataclass(frozen=True)
class Config:
    vtep: VtepConfig
    networks: tuple[NetworkConfig, ...]
    store: StoreConfig | None = None
    path: str | None = None  # file it was read from, for messages
    docker: DockerConfig | None = None

    def network(self, name: str) -> NetworkConfig | None:
        """The network called ``name``, or None."""
        for net in self.networks:
            if net.name == name:
                return net
        return None

    def network_by_vni(self, vni: int) -> NetworkConfig | None:
        for net in self.networks:
            if net.vni == vni:
                return net
        return None


def default_control_path(vtep_name: str) -> str:
    return f"/run/vxdp/{vtep_name}.sock"


def default_state_path(vtep_name: str) -> str:
    return f"/var/lib/vxdp/{vtep_name}.json"


# --------------------------------------------------------------------------------------------
# Line locator
# --------------------------------------------------------------------------------------------

Ctx = tuple[str | int, ...]
_HEADER_RE = re.compile(r"""^\s*(\[\[|\[)\s*([A-Za-z0-9_\-."' ]+?)\s*(\]\]|\])\s*(?:#.*)?$""")


def _dotted(ctx: Ctx, key: str | int | None = None) -> str:
    """("network", 0, "endpoint", 1) + "mac" → "network[0].endpoint[1].mac"."""
    out = ""
    for part in (*ctx, *(() if key is None else (key,))):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class _Locator:
    """Maps (table context, key) back to a 1-based line of the raw TOML text, best-effort."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.ctx_of_line: list[Ctx] = []
        self.header_line: dict[Ctx, int] = {}
        aot_count: dict[Ctx, int] = {}
        ctx: Ctx = ()
        in_multiline: str | None = None
        for lineno, line in enumerate(self.lines, 1):
            if in_multiline is None:
                m = _HEADER_RE.match(line)
                if m and len(m.group(1)) == len(m.group(3)):
                    ctx = self._resolve(m.group(2), len(m.group(1)) == 2, aot_count)
                    self.header_line.setdefault(ctx, lineno)
            self.ctx_of_line.append(ctx)
            # Skip header detection inside multi-line strings (a `[x]` line there is text).
            for quote in ('"""', "'''"):
                if in_multiline in (None, quote) and line.count(quote) % 2 == 1:
                    in_multiline = quote if in_multiline is None else None

    @staticmethod
    def _resolve(name: str, is_array: bool, aot_count: dict[Ctx, int]) -> Ctx:
        parts = [p.strip().strip("\"'") for p in name.split(".")]
        resolved: list[str | int] = []
        for part in parts[:-1]:
            resolved.append(part)
            key = tuple(resolved)
            if key in aot_count:  # [[network]] then [network.x]: x belongs to the last element
                resolved.append(aot_count[key])
        resolved.append(parts[-1])
        if is_array:
            key = tuple(resolved)
            aot_count[key] = aot_count.get(key, -1) + 1
            resolved.append(aot_count[key])
        return tuple(resolved)

    def line_for(self, ctx: Ctx, key: str | int | None = None,
                 needle: str | None = None) -> int | None:
        if isinstance(key, str):
            pattern = re.compile(r"""^\s*(?:%s|"%s"|'%s')\s*=""" % ((re.escape(key),) * 3))
            for idx, line in enumerate(self.lines):
                if self.ctx_of_line[idx] == ctx and pattern.match(line):
                    if needle:
                        for j in range(idx, len(self.lines)):
                            if self.ctx_of_line[j] != ctx:
                                break
                            if needle in self.lines[j]:
                                return j + 1
                    return idx + 1
            # Not a key line: maybe a sub-table header ([vtpe], [[network.endpiont]]).
            for sub in ((*ctx, key), (*ctx, key, 0)):
                if sub in self.header_line:
                    return self.header_line[sub]
        return self.header_line.get(ctx)


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------

_TYPE_NAMES: dict[type, str] = {
    bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
    dict: "a table", datetime.datetime: "a date-time", datetime.date: "a date",
    datetime.time: "a time",
}

_VTEP_KEYS = ("name", "local", "port", "control", "allow", "src_port_range", "strict", "metrics",
              "burst", "offload", "busy_poll", "udp6zerocsumrx", "state", "max_subscribers")
_NETWORK_KEYS = ("name", "vni", "mtu", "proxy", "learning", "ageing", "maxaddress",
                 "max_learned", "max_learned_per_port", "ttl", "tos", "df", "flowlabel",
                 "flood", "endpoint", "peer")
_ENDPOINT_KEYS = ("name", "mac", "address", "netns", "ifname", "netns_create")
_PEER_KEYS = ("mac", "address", "vtep")
_STORE_KEYS = ("etcd", "prefix", "ttl")
_DOCKER_KEYS = ("plugin", "socket")
_TOP_KEYS = ("vtep", "network", "store", "docker")


def _type_name(value: Any) -> str:
    for typ, name in _TYPE_NAMES.items():
        if type(value) is typ:
            return name
    return type(value).__name__


def _check_plugin_name(value: Any) -> str:
    """A Docker plugin name: the socket file's name and the ``-d``/``--ipam-driver`` value."""
    return check_socket_name(value, "plugin name")


class _Parser:
    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.loc = _Locator(text)

    # -- errors -------------------------------------------------------------------------------

    def fail(self, ctx: Ctx, key: str | int | None, message: str,
             needle: str | None = None) -> NoReturn:
        line = self.loc.line_for(ctx, key if isinstance(key, str) else None, needle)
        raise ConfigError(message, path=self.path, line=line, key=_dotted(ctx, key) or None)

    def fail_item(self, ctx: Ctx, key: str, index: int, message: str, value: Any) -> NoReturn:
        """Error about element ``index`` of array ``key``: point at the line holding it."""
        needle = value if isinstance(value, str) and value else None
        line = self.loc.line_for(ctx, key, needle)
        raise ConfigError(message, path=self.path, line=line, key=_dotted(ctx, key) + f"[{index}]")

    # -- typed getters ------------------------------------------------------------------------

    def check_keys(self, ctx: Ctx, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = (f' (did you mean "{close[0]}"?)' if close
                        else f" (known keys: {', '.join(allowed)})")
                value = table[key]
                is_table = isinstance(value, dict) or (
                    isinstance(value, list) and bool(value)
                    and all(isinstance(v, dict) for v in value))
                self.fail(ctx, key, ("unknown table" if is_table else "unknown key") + hint)

    def table(self, ctx: Ctx, parent: Mapping[str, Any], key: str) -> dict[str, Any] | None:
        value = parent.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(ctx, key, f"must be a table ([{_dotted(ctx, key)}]), "
                                f"not {_type_name(value)}")
        return value

    def array_of_tables(self, ctx: Ctx, parent: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
        value = parent.get(key)
        if value is None:
            return []
        header = _dotted(tuple(p for p in ctx if isinstance(p, str)), key)
        if isinstance(value, dict):
            self.fail(ctx, key, f"must be an array of tables: write [[{header}]], not [{header}]")
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(ctx, key, f"must be an array of tables ([[{header}]])")
        return value

    def get(self, ctx: Ctx, table: Mapping[str, Any], key: str, types: type | tuple[type, ...],
            required: bool = False) -> Any:
        if key not in table:
            if required:
                self.fail(ctx, key, "missing required key")
            return None
        value = table[key]
        types_t = types if isinstance(types, tuple) else (types,)
        # bool is an int subclass in Python; TOML keeps them apart, so must we.
        ok = isinstance(value, types_t) and not (isinstance(value, bool) and bool not in types_t)
        if not ok:
            want = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types_t)
            self.fail(ctx, key, f"must be {want}, not {_type_name(value)} ({show(value)})",
                      needle=None)
        return value

    def convert(self, ctx: Ctx, table: Mapping[str, Any], key: str, parser: Any,
                required: bool = False) -> Any:
        """Fetch a string value and run one of the public parsers on it, keyed errors."""
        value = self.get(ctx, table, key, str, required)
        if value is None:
            return None
        try:
            return parser(value)
        except ValueError as exc:
            self.fail(ctx, key, str(exc), needle=value)

    def int_range(self, ctx: Ctx, table: Mapping[str, Any], key: str, lo: int, hi: int | None,
                  default: int, why: str = "") -> int:
        value = self.get(ctx, table, key, int)
        if value is None:
            return default
        if value < lo or (hi is not None and value > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            self.fail(ctx, key, f"{value} is out of range (must be {rng}{why})")
        return int(value)

    # -- sections -----------------------------------------------------------------------------

    def parse(self, data: dict[str, Any], config_path: str | None) -> Config:
        self.check_keys((), data, _TOP_KEYS)
        vtep_tbl = self.table((), data, "vtep")
        if vtep_tbl is None:
            raise ConfigError("missing required table [vtep] (it needs at least local = ...)",
                              path=self.path, key="vtep")
        vtep = self.vtep(vtep_tbl)
        nets_raw = self.array_of_tables((), data, "network")
        docker_tbl = self.table((), data, "docker")
        if not nets_raw and docker_tbl is None:
            # With [docker], `docker network create` makes networks at run time.
            raise ConfigError("no [[network]] defined (at least one is required, unless "
                              "[docker] creates them at run time)",
                              path=self.path, key="network")
        networks: list[NetworkConfig] = []
        seen_names: dict[str, int] = {}
        seen_vnis: dict[int, int] = {}
        seen_endpoints: dict[str, str] = {}
        seen_netns_if: dict[tuple[str, str], str] = {}
        for i, raw in enumerate(nets_raw):
            ctx: Ctx = ("network", i)
            networks.append(self.network(ctx, raw, vtep, seen_names, seen_vnis, seen_endpoints,
                                         seen_netns_if))
        store_tbl = self.table((), data, "store")
        store = self.store(store_tbl) if store_tbl is not None else None
        docker = self.docker(docker_tbl) if docker_tbl is not None else None
        return Config(vtep=vtep, networks=tuple(networks), store=store, path=config_path,
                      docker=docker)

    def vtep(self, tbl: dict[str, Any]) -> VtepConfig:
        ctx: Ctx = ("vtep",)
        self.check_keys(ctx, tbl, _VTEP_KEYS)
        name = self.convert(ctx, tbl, "name", check_vtep_name) or "vxdp"
        local = self.locals(ctx, tbl)
        port = self.int_range(ctx, tbl, "port", 1, 65535, DEFAULT_PORT)
        control = self.get(ctx, tbl, "control", str)
        if control is not None:
            if not control.strip():
                self.fail(ctx, "control", "must not be empty")
            if len(control.encode()) > UNIX_PATH_MAX:
                self.fail(ctx, "control", f"{show(control)} is too long for a unix socket path "
                                          f"(at most {UNIX_PATH_MAX} bytes)")
        allow: list[IPv4Network | IPv6Network] = []
        allow_raw = self.get(ctx, tbl, "allow", list)
        for j, item in enumerate(allow_raw or ()):
            try:
                allow.append(parse_allow(item))
            except ValueError as exc:
                self.fail_item(ctx, "allow", j, str(exc), item)
        spr = self.get(ctx, tbl, "src_port_range", list)
        src_port_range = DEFAULT_SRC_PORT_RANGE
        if spr is not None:
            if (len(spr) != 2 or not all(isinstance(p, int) and not isinstance(p, bool)
                                         for p in spr)):
                self.fail(ctx, "src_port_range", f"{show(spr)} must be two integers [low, high]")
            lo, hi = spr
            if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
                self.fail(ctx, "src_port_range", f"{show(spr)}: ports must be 1..65535")
            if lo > hi:
                self.fail(ctx, "src_port_range", f"{show(spr)}: low port is above high port")
            src_port_range = (lo, hi)
        strict = self.get(ctx, tbl, "strict", bool)
        metrics = self.get(ctx, tbl, "metrics", str)
        if metrics is not None:
            try:
                check_host_port(metrics)
            except ValueError as exc:
                self.fail(ctx, "metrics", str(exc), needle=metrics)
        burst = self.int_range(ctx, tbl, "burst", 1, BURST_MAX, DEFAULT_BURST)
        offload = self.offload(ctx, tbl)
        busy_poll = self.int_range(ctx, tbl, "busy_poll", 0, BUSY_POLL_MAX, 0,
                                   " microseconds")
        max_subscribers = self.int_range(ctx, tbl, "max_subscribers", 1, MAX_SUBSCRIBERS_MAX,
                                         DEFAULT_MAX_SUBSCRIBERS,
                                         " trace/capture/events clients at once")
        zero6 = self.get(ctx, tbl, "udp6zerocsumrx", bool)
        if zero6 and local.v6 is None:
            self.fail(ctx, "udp6zerocsumrx", "needs an IPv6 local address (it is about IPv6 "
                                             "VXLAN with a zero UDP checksum)")
        state = self.path_value(ctx, tbl, "state", 4095)
        return VtepConfig(name=name, local=local, port=port, control=control or "",
                          allow=tuple(allow), src_port_range=src_port_range,
                          strict=True if strict is None else strict, metrics=metrics,
                          burst=burst, offload=offload, busy_poll=busy_poll,
                          udp6zerocsumrx=bool(zero6), state=state or "",
                          max_subscribers=max_subscribers)

    def locals(self, ctx: Ctx, tbl: Mapping[str, Any]) -> Locals:
        """``local``: an IPv4 or IPv6 address, or a list of one per family."""
        raw = self.get(ctx, tbl, "local", (str, list), required=True)
        items = raw if isinstance(raw, list) else [raw]
        for item in items:
            if not isinstance(item, str):
                self.fail(ctx, "local", f"{show(item)} is not an address (a string)")
        try:
            return parse_locals(items)
        except ValueError as exc:
            self.fail(ctx, "local", str(exc), needle=items[0] if items else None)
        raise AssertionError("unreachable")

    def offload(self, ctx: Ctx, tbl: Mapping[str, Any]) -> frozenset[str]:
        """``offload = true`` (default: all), ``false`` (none) or a list of names from
        :data:`OFFLOADS`. A misspelt name is an error, not silently "off"."""
        known = sorted(OFFLOADS)
        value = tbl.get("offload")
        if value is None or value is True:
            return OFFLOADS
        if value is False:
            return frozenset()
        if not isinstance(value, list):
            self.fail(ctx, "offload", f"must be true, false or an array of names from "
                                      f"{', '.join(known)}, not {_type_name(value)} "
                                      f"({show(value)})")
        names: list[str] = []
        for j, item in enumerate(value):
            if not isinstance(item, str):
                self.fail_item(ctx, "offload", j, f"{show(item)} is not an offload name "
                                                  f"(one of {', '.join(known)})", item)
            if item not in OFFLOADS:
                close = difflib.get_close_matches(item, known, n=1, cutoff=0.6)
                hint = (f'did you mean "{close[0]}"?' if close
                        else f"known: {', '.join(known)}")
                self.fail_item(ctx, "offload", j, f"{show(item)} is not an offload ({hint})",
                               item)
            if item in names:
                self.fail_item(ctx, "offload", j, f"{show(item)} is listed twice", item)
            names.append(item)
        return frozenset(names)

    def network(self, ctx: Ctx, tbl: dict[str, Any], vtep: VtepConfig,
                seen_names: dict[str, int], seen_vnis: dict[int, int],
                seen_endpoints: dict[str, str],
                seen_netns_if: dict[tuple[str, str], str]) -> NetworkConfig:
        self.check_keys(ctx, tbl, _NETWORK_KEYS)
        index = ctx[-1]
        assert isinstance(index, int)
        name = self.convert(ctx, tbl, "name", check_network_name, required=True)
        if name in seen_names:
            self.fail(ctx, "name", f"duplicate network name {show(name)} "
                                   f"(also network[{seen_names[name]}])", needle=name)
        seen_names[name] = index
        vni_raw = self.get(ctx, tbl, "vni", int, required=True)
        try:
            vni = parse_vni(vni_raw)
        except ValueError as exc:
            self.fail(ctx, "vni", str(exc))
        if vni in seen_vnis:
            self.fail(ctx, "vni", f"duplicate VNI {vni} (also network[{seen_vnis[vni]}])")
        seen_vnis[vni] = index
        mtu = self.int_range(ctx, tbl, "mtu", MTU_MIN, MTU_MAX, DEFAULT_MTU)
        proxy = self.get(ctx, tbl, "proxy", bool)
        learning = self.get(ctx, tbl, "learning", bool)
        ageing = self.get(ctx, tbl, "ageing", (int, float))
        if ageing is not None and not ageing > 0:  # also rejects nan
            self.fail(ctx, "ageing", f"{show(ageing)} must be a positive number of seconds")
        if ageing is not None and ageing == float("inf"):
            self.fail(ctx, "ageing", "must be finite")
        maxaddress = self.int_range(ctx, tbl, "maxaddress", 0, None, 0, " (0 = unlimited)")
        max_learned = self.int_range(ctx, tbl, "max_learned", 0, None, DEFAULT_MAX_LEARNED,
                                     " (0 = unlimited)")
        max_learned_per_port = self.int_range(ctx, tbl, "max_learned_per_port", 0, None,
                                              DEFAULT_MAX_LEARNED_PER_PORT, " (0 = unlimited)")
        ttl, tos, df, flowlabel = self.outer_rules(ctx, tbl)
        flood = self.flood(ctx, tbl, vtep)
        macs: dict[str, str] = {}
        ips: dict[IPAddress, str] = {}
        endpoints = self.endpoints(ctx, tbl, macs, ips, seen_endpoints, seen_netns_if)
        peers = self.peers(ctx, tbl, vtep, macs, ips)
        return NetworkConfig(
            name=name, vni=vni, mtu=mtu, proxy=True if proxy is None else proxy,
            learning=False if learning is None else learning,
            ageing=DEFAULT_AGEING if ageing is None else float(ageing), maxaddress=maxaddress,
            max_learned=max_learned, max_learned_per_port=max_learned_per_port,
            ttl=ttl, tos=tos, df=df, flowlabel=flowlabel, flood=flood,
            endpoints=endpoints, peers=peers)

    def flood(self, ctx: Ctx, tbl: Mapping[str, Any], vtep: VtepConfig) -> tuple[IPAddress, ...]:
        """``flood``: VTEPs of a family this VTEP has an address in, not itself, each once."""
        flood: list[IPAddress] = []
        for j, item in enumerate(self.get(ctx, tbl, "flood", list) or ()):
            try:
                addr = parse_underlay_ip(item)
            except ValueError as exc:
                self.fail_item(ctx, "flood", j, str(exc), item)
            if addr in vtep.local:
                self.fail_item(ctx, "flood", j, f"{show(item)} is this VTEP's own local "
                                                "address", item)
            if vtep.local.of(addr.version) is None:
                self.fail_item(ctx, "flood", j, f"{show(item)} is an IPv{addr.version} VTEP "
                                                f"and [vtep] local has no IPv{addr.version} "
                                                "address", item)
            if addr in flood:
                self.fail_item(ctx, "flood", j, f"{show(item)} is listed twice", item)
            flood.append(addr)
        return tuple(flood)

    def endpoints(self, ctx: Ctx, tbl: Mapping[str, Any], macs: dict[str, str],
                  ips: dict[IPAddress, str], seen_endpoints: dict[str, str],
                  seen_netns_if: dict[tuple[str, str], str]) -> tuple[EndpointConfig, ...]:
        """``[[network.endpoint]]``: names unique across networks, one interface name per
        netns, MACs and addresses unique in the network."""
        endpoints: list[EndpointConfig] = []
        for j, raw in enumerate(self.array_of_tables(ctx, tbl, "endpoint")):
            ectx: Ctx = (*ctx, "endpoint", j)
            ep = self.endpoint(ectx, raw)
            here = _dotted(ectx)
            if ep.name in seen_endpoints:
                self.fail(ectx, "name", f"duplicate endpoint name {show(ep.name)} "
                                        f"(also {seen_endpoints[ep.name]})", needle=ep.name)
            seen_endpoints[ep.name] = here
            if ep.netns is not None:
                inner = (ep.netns, ep.ifname or ep.name)
                if inner in seen_netns_if:
                    self.fail(ectx, "ifname" if ep.ifname else "name",
                              f"interface {show(inner[1])} in netns {show(inner[0])} is "
                              f"already used by {seen_netns_if[inner]}")
                seen_netns_if[inner] = here
            self._unique(ectx, "mac", ep.mac, macs, here)
            for a in ep.addresses:
                self._unique(ectx, "address", a.ip, ips, here)
            endpoints.append(ep)
        return tuple(endpoints)

    def peers(self, ctx: Ctx, tbl: Mapping[str, Any], vtep: VtepConfig, macs: dict[str, str],
              ips: dict[IPAddress, str]) -> tuple[PeerConfig, ...]:
        """``[[network.peer]]``: behind another VTEP of a family this one has, MACs and
        addresses unique in the network."""
        peers: list[PeerConfig] = []
        for j, raw in enumerate(self.array_of_tables(ctx, tbl, "peer")):
            pctx: Ctx = (*ctx, "peer", j)
            peer = self.peer(pctx, raw)
            if peer.vtep in vtep.local:
                self.fail(pctx, "vtep", f"{show(str(peer.vtep))} is this VTEP's own local "
                                        "address; list local containers as [[network.endpoint]]",
                          needle=str(peer.vtep))
            if vtep.local.of(peer.vtep.version) is None:
                self.fail(pctx, "vtep", f"{show(str(peer.vtep))} is an IPv{peer.vtep.version} "
                                        f"VTEP and [vtep] local has no IPv{peer.vtep.version} "
                                        "address", needle=str(peer.vtep))
            here = _dotted(pctx)
            self._unique(pctx, "mac", peer.mac, macs, here)
            for a in peer.addresses:
                self._unique(pctx, "address", a, ips, here)
            peers.append(peer)
        return tuple(peers)

    def outer_rules(self, ctx: Ctx, tbl: Mapping[str, Any]
                    ) -> tuple[int | str, int | str, str, int | str]:
        """``ttl``, ``tos``, ``df`` and ``flowlabel`` of a network: the outer header rules of
        the kernel's vxlan (``ip link add ... ttl auto|N|inherit tos N|inherit
        df unset|set|inherit flowlabel N|inherit``)."""
        ttl = self.get(ctx, tbl, "ttl", (int, str))
        if ttl is None:
            ttl = "auto"
        elif isinstance(ttl, str) and ttl not in ("auto", "inherit"):
            self.fail(ctx, "ttl", f"{show(ttl)} is not \"auto\", \"inherit\" or 1..255")
        elif isinstance(ttl, int) and not 1 <= ttl <= 255:
            self.fail(ctx, "ttl", f"{ttl} is out of range (1..255, or \"auto\"/\"inherit\")")
        tos = self.get(ctx, tbl, "tos", (int, str))
        if tos is None:
            tos = 0
        elif isinstance(tos, str) and tos != "inherit":
            self.fail(ctx, "tos", f"{show(tos)} is not \"inherit\" or 0..255")
        elif isinstance(tos, int) and not 0 <= tos <= 255:
            self.fail(ctx, "tos", f"{tos} is out of range (0..255, or \"inherit\")")
        df = self.get(ctx, tbl, "df", str)
        if df is None:
            df = "unset"
        elif df not in ("unset", "set", "inherit"):
            self.fail(ctx, "df", f"{show(df)} is not \"unset\", \"set\" or \"inherit\"")
        flowlabel = self.get(ctx, tbl, "flowlabel", (int, str))
        if flowlabel is None:
            flowlabel = 0
        elif isinstance(flowlabel, str) and flowlabel != "inherit":
            self.fail(ctx, "flowlabel", f"{show(flowlabel)} is not \"inherit\" or "
                                        "0..1048575 (20 bits)")
        elif isinstance(flowlabel, int) and not 0 <= flowlabel <= 0xFFFFF:
            self.fail(ctx, "flowlabel", f"{flowlabel} is out of range (0..1048575, or "
                                        "\"inherit\")")
        return ttl, tos, df, flowlabel

    def _unique(self, ctx: Ctx, key: str, value: Any, seen: dict[Any, str], here: str) -> None:
        """One MAC (FDB) and one IP (neighbour table) per network, across endpoints and peers:
        two owners would make forwarding or the ARP proxy answer depend on table order."""
        if value in seen:
            what = "MAC" if key == "mac" else "address"
            self.fail(ctx, key, f"duplicate {what} {show(str(value))} in this network "
                                f"(also {seen[value]})")
        seen[value] = here

    def address_list(self, ctx: Ctx, tbl: Mapping[str, Any], parse: Any) -> tuple[Any, ...]:
        """``address``: one string or a list of them (dual stack), through ``parse``."""
        raw = self.get(ctx, tbl, "address", (str, list), required=True)
        items = raw if isinstance(raw, list) else [raw]
        for item in items:
            if not isinstance(item, str):
                self.fail(ctx, "address", f"{show(item)} is not an address (a string)")
        try:
            return tuple(parse(items))
        except ValueError as exc:
            self.fail(ctx, "address", str(exc), needle=items[0] if items else None)
        raise AssertionError("unreachable")

    def endpoint(self, ctx: Ctx, tbl: dict[str, Any]) -> EndpointConfig:
        self.check_keys(ctx, tbl, _ENDPOINT_KEYS)
        name = self.convert(ctx, tbl, "name", check_ifname, required=True)
        mac = self.convert(ctx, tbl, "mac", parse_unicast_mac, required=True)
        addresses = self.address_list(ctx, tbl, parse_interfaces)
        netns = self.convert(ctx, tbl, "netns", check_netns)
        ifname = self.convert(ctx, tbl, "ifname", check_ifname)
        if ifname is not None and netns is None:
            self.fail(ctx, "ifname", "ifname needs netns (without netns the TAP keeps its "
                                     f"host name {show(name)})")
        netns_create = self.get(ctx, tbl, "netns_create", bool)
        if netns_create and netns is None:
            self.fail(ctx, "netns_create", "netns_create needs netns (the namespace to create)")
        return EndpointConfig(name=name, mac=mac, address=addresses[0], netns=netns,
                              ifname=ifname, netns_create=bool(netns_create),
                              addresses=addresses)

    def peer(self, ctx: Ctx, tbl: dict[str, Any]) -> PeerConfig:
        self.check_keys(ctx, tbl, _PEER_KEYS)
        mac = self.convert(ctx, tbl, "mac", parse_unicast_mac, required=True)
        addresses = self.address_list(ctx, tbl, _parse_peer_ips)
        vtep = self.convert(ctx, tbl, "vtep", parse_underlay_ip, required=True)
        if vtep.is_multicast:
            self.fail(ctx, "vtep", f"{show(str(vtep))} is a multicast address, not a VTEP")
        return PeerConfig(mac=mac, address=addresses[0], vtep=vtep, addresses=addresses)

    def store(self, tbl: dict[str, Any]) -> StoreConfig:
        ctx: Ctx = ("store",)
        self.check_keys(ctx, tbl, _STORE_KEYS)
        etcd_raw = self.get(ctx, tbl, "etcd", list, required=True)
        if not etcd_raw:
            self.fail(ctx, "etcd", "needs at least one URL (e.g. \"http://198.18.0.100:2379\")")
        urls: list[str] = []
        for j, item in enumerate(etcd_raw):
            try:
                urls.append(check_etcd_url(item))
            except ValueError as exc:
                self.fail_item(ctx, "etcd", j, str(exc), item)
        prefix = self.get(ctx, tbl, "prefix", str)
        if prefix is None:
            prefix = DEFAULT_STORE_PREFIX
        elif not prefix.startswith("/") or re.search(r"\s", prefix):
            self.fail(ctx, "prefix", f"{show(prefix)} must start with '/' and contain no "
                                     "whitespace", needle=prefix)
        elif len(prefix) > 1:
            prefix = prefix.rstrip("/") or "/"
        ttl = self.int_range(ctx, tbl, "ttl", 1, None, DEFAULT_STORE_TTL, " seconds")
        return StoreConfig(etcd=tuple(urls), prefix=prefix, ttl=ttl)


    def docker(self, tbl: dict[str, Any]) -> DockerConfig:
        ctx: Ctx = ("docker",)
        self.check_keys(ctx, tbl, _DOCKER_KEYS)
        # The plugin name is the socket's file name and the name users give to
        # `docker network create -d NAME --ipam-driver NAME`.
        plugin = self.convert(ctx, tbl, "plugin", _check_plugin_name) or DEFAULT_DOCKER_PLUGIN
        socket = self.path_value(ctx, tbl, "socket", UNIX_PATH_MAX)
        return DockerConfig(plugin=plugin, socket=socket or "")

    def path_value(self, ctx: Ctx, tbl: Mapping[str, Any], key: str, limit: int) -> str | None:
        """An absolute path of at most ``limit`` bytes (a socket, the state file)."""
        value = self.get(ctx, tbl, key, str)
        if value is not None:
            if not value.startswith("/"):
                self.fail(ctx, key, f"{show(value)} must be an absolute path", needle=value)
            if len(value.encode()) > limit:
                self.fail(ctx, key, f"{show(value)} is too long (at most {limit} bytes)",
                          needle=value)
        return value


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------

_TOML_POS_RE = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$")


def parse_config(text: str, path: str = "<config>") -> Config:
    """Parse and validate TOML ``text``; ``path`` is only used in messages (and Config.path)."""
    text = text.removeprefix("\ufeff")  # a byte order mark (see load_config)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS_RE.match(msg)
        if m:
            line: int | None = int(m.group(2))
            msg = f"{m.group(1)} (column {m.group(3)})"
        else:
            # "(at end of document)": point at the last line
            msg = msg.replace(" (at end of document)", " at end of document")
            line = max(1, len(text.splitlines()))
        raise ConfigError(f"TOML syntax error: {msg}", path=path, line=line) from None
    config_path = None if path == "<config>" else path
    return _Parser(text, path).parse(data, config_path)


def load_config(path: str) -> Config:
    """Read and validate the TOML file at ``path``. Every problem is a one-line ConfigError."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        # A UTF-8 byte order mark (Windows editors write one) is not TOML text: skip it, as
        # Python's own utf-8-sig codec does.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError("not valid UTF-8 (TOML files must be UTF-8)", path=path,
                          line=line) from None
    return parse_config(text, path)


def _parse_peer_ips(items: list[str]) -> tuple[IPAddress, ...]:
    """A peer's ``address``: its overlay addresses (neighbour entries), each once."""
    out: list[IPAddress] = []
    for item in items:
        ip = parse_neigh_ip(item)
        if ip in out:
            raise ValueError(f"{show(str(ip))} is listed twice")
        out.append(ip)
    if not out:
        raise ValueError("an empty list: a peer needs an address")
    return tuple(out)


def endpoint_from_args(network: str, name: str, mac: str, address: str | Sequence[str],
                       netns: str | None = None, ifname: str | None = None,
                       netns_create: bool = False) -> EndpointConfig:
    """Validate ``vxdp endpoint add`` arguments with the config file's rules.

    Errors name the command-line option (``--mac: ...``) since that is what the user typed; the
    server may reuse this for the ``endpoint.add`` control command with the same result.
    """
    def check(option: str, fn: Callable[[Any], Any], value: Any) -> Any:
        try:
            return fn(value)
        except ValueError as exc:
            raise ConfigError(str(exc), key=option) from None

    check("--network", check_network_name, network)
    ep_name = check("--name", check_ifname, name)
    ep_mac = check("--mac", parse_unicast_mac, mac)
    ep_addresses = check("--address", parse_interfaces, address)
    ep_netns = check("--netns", check_netns, netns) if netns is not None else None
    ep_ifname = check("--ifname", check_ifname, ifname) if ifname is not None else None
    if ep_ifname is not None and ep_netns is None:
        raise ConfigError("--ifname needs --netns (without a netns the TAP keeps its host name)",
                          key=None)
    if netns_create and ep_netns is None:
        raise ConfigError("--netns-create needs --netns (the namespace to create)", key=None)
    return EndpointConfig(name=ep_name, mac=ep_mac, address=ep_addresses[0], netns=ep_netns,
                          ifname=ep_ifname, netns_create=netns_create, addresses=ep_addresses)
