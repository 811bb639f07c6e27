"""Docker's remote network driver and IPAM driver (libnetwork's remote driver protocol) on a
VTEP: ``docker network create -d vxdp --ipam-driver vxdp --subnet S -o vni=N [-o mtu=M]``
makes a vxdp network at run time, ``docker run --network`` gets a vxdp TAP as ``eth0``.

What each call does here, and the libnetwork behaviour behind it (Docker 20.10, observed):

* ``CreateNetwork``: ``-o`` options arrive as strings in ``com.docker.network.generic`` and
  the network's name does not arrive at all, so the vxdp network is found by VNI: the
  config's ``[[network]]`` with that VNI, else one made now and called ``-o name=`` or
  ``vni<N>`` (every host must agree on it: the store keys carry it).
  ``Scope`` is ``local`` (a ``global`` remote driver needs swarm, and swarm refuses legacy
  plugins): each host runs the same create, and the store joins them.
* ``CreateEndpoint``: the TAP is made here with the MAC and MTU: libnetwork sets the MAC it
  asked for but never the MTU of a remote driver's interface. A MAC is returned only when
  Docker sent none (returning one when Docker sent one is an error + rollback).
* ``Join``: the TAP's name and ``DstPrefix: eth``; libnetwork moves it into the container
  after Join returns (runc's prestart hook) and adds the address. No ``Gateway`` and
  ``DisableGatewayService: true``: an overlay has no router, and without the flag Docker
  would add a ``docker_gwbridge`` interface with the default route.
* ``Leave``: libnetwork has moved the TAP back (under its first name) already.
  ``DeleteEndpoint`` deletes it. Unknown IDs are answered with success: Docker calls them for
  endpoints a restarted plugin may never have seen, and a failure there only leaves warnings.
* Network driver errors go in ``"Err"``, IPAM errors in ``"Error"`` (Docker ignores the
  other key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dataplane.config import DEFAULT_MTU, MTU_MAX, MTU_MIN, NetworkConfig
from dataplane.docker.endpoints import Held
from dataplane.docker.ipam import ADDRESS_SPACE, Ipam, IpamError
from dataplane.docker.state import EndpointRecord, NetworkRecord, State
from dataplane.errors import VxdpError
from dataplane.validate import check_network_name, parse_unicast_mac, parse_vni

if TYPE_CHECKING:
    from dataplane.vtep import Vtep

log = logging.getLogger("vxdp.docker")

GENERIC = "com.docker.network.generic"
#: ``-o`` keys, and Docker's own spellings of the same things (the overlay driver's VNI list
#: and the generic driver MTU option), so commands written for the overlay driver work.
VNI_KEYS = ("vni", "com.docker.network.driver.overlay.vxlanid_list")
MTU_KEYS = ("mtu", "com.docker.network.driver.mtu")
KNOWN_OPTIONS = (*VNI_KEYS, *MTU_KEYS, "name")
PORTMAP = "com.docker.network.portmap"


class DriverError(VxdpError):
    """A refused network driver request (sent to Docker as ``Err``)."""


@dataclass(frozen=True)
class NetOptions:
    vni: int
    mtu: int | None
    name: str | None


def network_options(options: Any) -> NetOptions:
    """The vxdp meaning of ``docker network create -o`` options; DriverError for anything
    unknown or malformed (a typo must not silently create a different network)."""
    generic = (options or {}).get(GENERIC) or {}
    if not isinstance(generic, dict):
        raise DriverError("vxdp: malformed network options")
    unknown = sorted(k for k in generic if k not in KNOWN_OPTIONS)
    if unknown:
        raise DriverError(f"vxdp: unknown option {', '.join('-o ' + k for k in unknown)} "
                          "(known: vni, mtu, name)")
    if (options or {}).get("com.docker.network.enable_ipv6"):
        raise DriverError("vxdp: IPv6 is not supported on vxdp networks (drop --ipv6)")
    vnis = [str(generic[k]) for k in VNI_KEYS if k in generic]
    if not vnis:
        raise DriverError("vxdp: -o vni=N is required (the VXLAN network identifier, "
                          "1..16777215, the same on every host)")
    try:
        if len(set(vnis)) > 1 or "," in vnis[0]:
            raise ValueError("one VNI per network")
        vni = parse_vni(int(vnis[0].strip()))
    except ValueError as exc:
        raise DriverError(f"vxdp: -o vni={vnis[0]}: {exc}") from None
    mtu = None
    mtus = [str(generic[k]) for k in MTU_KEYS if k in generic]
    if mtus:
        try:
            mtu = int(mtus[0])
        except ValueError:
            mtu = -1
        if len(set(mtus)) > 1 or not MTU_MIN <= mtu <= MTU_MAX:
            raise DriverError(f"vxdp: -o mtu={mtus[0]}: must be {MTU_MIN}..{MTU_MAX}")
    name = generic.get("name")
    if name is not None:
        try:
            name = check_network_name(str(name))
        except ValueError as exc:
            raise DriverError(f"vxdp: -o name={name}: {exc}") from None
    return NetOptions(vni, mtu, name)


def docker_mac(ip: str) -> str:
    """Docker's MAC for a container address: 02:42 followed by the four IPv4 octets (unique
    as long as addresses are, which the IPAM makes sure of across hosts)."""
    return "02:42:" + ":".join(f"{int(o):02x}" for o in ip.split("."))


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Driver:
    """The handlers, one per ``/Method`` path; :meth:`handle` is the HTTP server's handler."""

    def __init__(self, vtep: Vtep, state: State, held: Held, ipam: Ipam) -> None:
        self.vtep = vtep
        self.state = state
        self.held = held
        self.ipam = ipam
        # One request at a time: a create spans several awaits (netlink, etcd) and the next
        # request must see its result. Docker's calls are few; none waits on another.
        self._lock = asyncio.Lock()
        self.routes: dict[str, Handler] = {
            "/Plugin.Activate": self.activate,
            "/NetworkDriver.GetCapabilities": self.net_capabilities,
            "/NetworkDriver.CreateNetwork": self.create_network,
            "/NetworkDriver.DeleteNetwork": self.delete_network,
            "/NetworkDriver.CreateEndpoint": self.create_endpoint,
            "/NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "/NetworkDriver.EndpointOperInfo": self.endpoint_info,
            "/NetworkDriver.Join": self.join,
            "/NetworkDriver.Leave": self.leave,
            "/IpamDriver.GetCapabilities": self.ipam_capabilities,
            "/IpamDriver.GetDefaultAddressSpaces": self.address_spaces,
            "/IpamDriver.RequestPool": self.request_pool,
            "/IpamDriver.ReleasePool": self.release_pool,
            "/IpamDriver.RequestAddress": self.request_address,
            "/IpamDriver.ReleaseAddress": self.release_address,
        }
        for path in ("AllocateNetwork", "FreeNetwork", "DiscoverNew", "DiscoverDelete",
                     "ProgramExternalConnectivity", "RevokeExternalConnectivity"):
            self.routes[f"/NetworkDriver.{path}"] = self.nothing

    async def handle(self, path: str, req: Any) -> tuple[int, Any]:
        handler = self.routes.get(path)
        key = "Error" if path.startswith("/IpamDriver.") else "Err"
        if handler is None:
            return 404, {key: f"vxdp: {path.lstrip('/')} is not implemented"}
        try:
            async with self._lock:
                reply = await handler(req if isinstance(req, dict) else {})
        except VxdpError as exc:
            log.info("docker %s refused: %s", path.lstrip("/"), exc)
            return 200, {key: str(exc)}
        except KeyError as exc:
            # A request without a field libnetwork always sends: say which, never crash.
            log.info("docker %s: malformed request (no %s)", path.lstrip("/"), exc)
            return 200, {key: f"vxdp: malformed {path.lstrip('/')} request (no {exc})"}
        except Exception as exc:  # noqa: BLE001 - a bug: logged in full, Docker gets one line
            log.error("docker %s failed", path.lstrip("/"), exc_info=True)
            return 200, {key: f"vxdp: internal error in {path.lstrip('/')}: {exc!r}"}
        log.debug("docker %s ok", path.lstrip("/"))
        return 200, reply

    # -- plugin and capabilities --------------------------------------------------------------

    async def activate(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"Implements": ["NetworkDriver", "IpamDriver"]}

    async def net_capabilities(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"Scope": "local", "ConnectivityScope": "global"}

    async def ipam_capabilities(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    async def address_spaces(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"LocalDefaultAddressSpace": ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": ADDRESS_SPACE}

    async def nothing(self, req: dict[str, Any]) -> dict[str, Any]:
        return {}

    # -- IPAM ---------------------------------------------------------------------------------

    async def request_pool(self, req: dict[str, Any]) -> dict[str, Any]:
        pool_id, pool = await self.ipam.request_pool(str(req.get("Pool") or ""),
                                                     str(req.get("SubPool") or ""),
                                                     bool(req.get("V6")))
        return {"PoolID": pool_id, "Pool": pool, "Data": {}}

    async def release_pool(self, req: dict[str, Any]) -> dict[str, Any]:
        await self.ipam.release_pool(str(req["PoolID"]))
        return {}

    async def request_address(self, req: dict[str, Any]) -> dict[str, Any]:
        addr = await self.ipam.request_address(str(req["PoolID"]),
                                               str(req.get("Address") or ""),
                                               req.get("Options"))
        return {"Address": addr, "Data": {}}

    async def release_address(self, req: dict[str, Any]) -> dict[str, Any]:
        await self.ipam.release_address(str(req["PoolID"]), str(req["Address"]))
        return {}

    # -- networks -----------------------------------------------------------------------------

    async def create_network(self, req: dict[str, Any]) -> dict[str, Any]:
        nid = str(req["NetworkID"])
        opts = network_options(req.get("Options"))
        v4 = req.get("IPv4Data") or []
        if len(v4) != 1 or not v4[0].get("Pool"):
            raise DriverError("vxdp: a vxdp network needs exactly one IPv4 --subnet")
        if nid in self.state.networks:
            return {}                                     # a repeated create: idempotent
        for other in self.state.networks.values():
            if other.vni == opts.vni:
                raise DriverError(f"vxdp: VNI {opts.vni} is already used by Docker network "
                                  f"{other.id[:12]} on this host")
        net, owned = self._network_for(opts)
        pool = None
        if v4[0].get("AddressSpace") == ADDRESS_SPACE:
            pool = f"{ADDRESS_SPACE}/{v4[0]['Pool']}"
        elif self.vtep.config.store is not None:
            self._event("warning", f"docker network {nid[:12]} (vni {opts.vni}) does not use "
                                   "--ipam-driver vxdp: Docker's default IPAM allocates per "
                                   "host, so containers on different hosts can get the same "
                                   "address")
        if owned:
            self.vtep.add_network(net)
        self.state.networks[nid] = NetworkRecord(nid, net.name, net.vni, net.mtu,
                                                 str(v4[0]["Pool"]), owned, pool)
        try:
            self.state.save()
        except VxdpError:
            self.state.networks.pop(nid)
            if owned:
                self.vtep.del_network(net.name)
            raise
        self._event("network_add", f"docker network {nid[:12]} is vxdp network {net.name} "
                                   f"(vni {net.vni}, mtu {net.mtu}, {v4[0]['Pool']})")
        return {}

    def _network_for(self, opts: NetOptions) -> tuple[NetworkConfig, bool]:
        """The vxdp network a Docker network with these options uses, and whether it is made
        for it (True) or a network the VTEP serves already ([[network]] of the config)."""
        served = self.vtep.by_vni.get(opts.vni)
        if served is not None:
            if opts.mtu is not None and opts.mtu != served.mtu:
                raise DriverError(f"vxdp: VNI {opts.vni} is network {served.name} with mtu "
                                  f"{served.mtu} here; -o mtu={opts.mtu} disagrees")
            if opts.name is not None and opts.name != served.name:
                raise DriverError(f"vxdp: VNI {opts.vni} is network {served.name} here, "
                                  f"not {opts.name}")
            return served, False
        name = opts.name or f"vni{opts.vni}"
        if name in self.vtep.networks:
            raise DriverError(f"vxdp: network name {name} is already used here by VNI "
                              f"{self.vtep.networks[name].vni}")
        return NetworkConfig(name=name, vni=opts.vni, mtu=opts.mtu or DEFAULT_MTU), True

    async def delete_network(self, req: dict[str, Any]) -> dict[str, Any]:
        rec = self.state.networks.pop(str(req["NetworkID"]), None)
        if rec is None:
            return {}
        for key, ep in list(self.state.endpoints.items()):
            if ep.docker_network == rec.id:
                self.held.remove(key)
        if rec.owned and rec.name in self.vtep.networks:
            self.vtep.del_network(rec.name)
        self.state.save()
        self._event("network_del", f"docker network {rec.id[:12]} (vxdp network {rec.name}) "
                                   "removed")
        return {}

    # -- endpoints ----------------------------------------------------------------------------

    async def create_endpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        nid, eid = str(req["NetworkID"]), str(req["EndpointID"])
        rec = self.state.networks.get(nid)
        net = self.vtep.networks.get(rec.name) if rec is not None else None
        if rec is None or net is None:
            raise DriverError(f"vxdp: unknown network {nid[:12]} (was vxdp's state lost? "
                              "remove the network and create it again)")
        if eid in self.state.endpoints:
            raise DriverError(f"vxdp: endpoint {eid[:12]} exists already")
        itf = req.get("Interface") or {}
        if itf.get("AddressIPv6"):
            raise DriverError("vxdp: IPv6 addresses are not supported on vxdp networks")
        address = str(itf.get("Address") or "")
        if not address:
            raise DriverError("vxdp: the endpoint has no IPv4 address")
        if (req.get("Options") or {}).get(PORTMAP):
            raise DriverError("vxdp: publishing ports (-p) is not supported on vxdp networks "
                              "(an overlay has no gateway to the host)")
        given = str(itf.get("MacAddress") or "")
        try:
            mac = parse_unicast_mac(given) if given else docker_mac(address.split("/")[0])
        except ValueError as exc:
            raise DriverError(f"vxdp: --mac-address {given}: {exc}") from None
        tap = "vx" + eid[:13]
        ep = EndpointRecord(key=eid, kind="docker", name=tap, network=net.name, tap=tap,
                            mac=mac, address=address, pool=rec.pool, docker_network=nid)
        await self.held.create_docker(ep, net)
        return {} if given else {"Interface": {"MacAddress": mac}}

    async def join(self, req: dict[str, Any]) -> dict[str, Any]:
        eid = str(req["EndpointID"])
        ep = self.state.endpoints.get(eid)
        if ep is None or not self.held.attached(ep):
            raise DriverError(f"vxdp: unknown endpoint {eid[:12]}")
        ep.sandbox = str(req.get("SandboxKey") or "") or None
        self.state.save()
        return {"InterfaceName": {"SrcName": ep.tap, "DstPrefix": "eth"},
                "DisableGatewayService": True}

    async def leave(self, req: dict[str, Any]) -> dict[str, Any]:
        ep = self.state.endpoints.get(str(req["EndpointID"]))
        if ep is not None and ep.sandbox is not None:
            ep.sandbox = None     # the TAP is back in our namespace
            self.state.save()
        return {}

    async def delete_endpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        self.held.remove(str(req["EndpointID"]))
        return {}

    async def endpoint_info(self, req: dict[str, Any]) -> dict[str, Any]:
        ep = self.state.endpoints.get(str(req["EndpointID"]))
        if ep is None:
            return {"Value": {}}
        net = self.vtep.networks.get(ep.network)
        return {"Value": {"vxdp.endpoint": ep.name, "vxdp.network": ep.network,
                          "vxdp.vni": str(net.vni) if net else "", "vxdp.mac": ep.mac}}

    def _event(self, kind: str, line: str) -> None:
        (log.warning if kind == "warning" else log.info)("%s", line)
        self.vtep.emit_event({"kind": kind, "runtime": "docker", "line": line})


__all__ = ["Driver", "DriverError", "IpamError", "NetOptions", "network_options"]
