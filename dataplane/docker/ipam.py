"""IPAM for Docker's ``--ipam-driver vxdp``: pools and addresses, locally or across hosts.

libnetwork's remote IPAM protocol, as Docker 20.10 uses it (all observed):

* ``RequestPool`` {AddressSpace, Pool, SubPool, V6} at ``docker network create`` (``Pool`` is
  ``--subnet``, ``SubPool`` ``--ip-range``), answered with a PoolID that every later call
  carries; ``ReleasePool`` at ``docker network rm``;
* ``RequestAddress`` {PoolID, Address, Options}: first the network's gateway (Options
  ``RequestAddressType: com.docker.network.gateway``, Address "" unless ``--gateway``), then
  one per container endpoint (Address = ``--ip`` or ""); answered in CIDR form;
* ``ReleaseAddress`` {PoolID, Address} when an endpoint goes, and for the gateway before
  ReleasePool.
* nothing is replayed to a restarted plugin (RequiresRequestReplay stays false), so pools and
  allocations are kept: :class:`LocalIpam` in the VTEP's state file, :class:`EtcdIpam`
  (``dataplane.docker.ipam_etcd``) in etcd, where every host running the same
  ``docker network create`` shares one pool and no address is handed out twice.

The gateway is a property of the pool, not of a host: every host's create asks for it and
gets the same address (nothing answers on it; vxdp networks have no router, and the driver
tells Docker so with DisableGatewayService). Containers never get it.

Errors are :class:`IpamError`; the driver sends them to Docker as ``{"Error": ...}`` and the
user sees them verbatim (``Error response from daemon: ... vxdp: pool ... is exhausted``).
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import Any, Protocol

from dataplane.docker.state import PoolRecord, State
from dataplane.errors import VxdpError

ADDRESS_SPACE = "vxdp"
GATEWAY_TYPE = "com.docker.network.gateway"
#: Prefix lengths beyond this leave no room for a gateway and containers.
MAX_PREFIX = 30


class IpamError(VxdpError):
    """A refused IPAM request; the text goes to Docker's user as it is."""


@dataclass(frozen=True)
class PoolSpec:
    """A pool: the subnet, the ``--ip-range`` containers are allocated from (None: the whole
    subnet), and its gateway once known."""

    subnet: IPv4Network
    range: IPv4Network | None = None

    @classmethod
    def parse(cls, pool: str, subpool: str = "") -> PoolSpec:
        if not pool:
            raise IpamError("vxdp: --subnet is required (every host creating this network "
                            "must use the same one)")
        subnet = _net(pool, "--subnet")
        if subnet.prefixlen > MAX_PREFIX:
            raise IpamError(f"vxdp: subnet {subnet} is too small (at most /{MAX_PREFIX})")
        rng = _net(subpool, "--ip-range") if subpool else None
        if rng is not None and not rng.subnet_of(subnet):
            raise IpamError(f"vxdp: --ip-range {rng} is not inside --subnet {subnet}")
        return cls(subnet, rng)

    @property
    def key(self) -> str:
        """The pool's name in the state file and in etcd (one pool per subnet)."""
        return str(self.subnet)

    def pool_id(self) -> str:
        return f"{ADDRESS_SPACE}/{self.subnet}"

    def default_gateway(self) -> IPv4Address:
        return next(self.subnet.hosts())

    def check(self, address: str, what: str = "address") -> IPv4Address:
        """A requested address (``--ip``, ``--gateway``): in the subnet, not its network or
        broadcast address."""
        try:
            ip = IPv4Address(address.split("/")[0])
        except ValueError:
            raise IpamError(f"vxdp: {address!r} is not an IPv4 address") from None
        if ip not in self.subnet or ip in (self.subnet.network_address,
                                           self.subnet.broadcast_address):
            raise IpamError(f"vxdp: {what} {ip} is not a usable address of {self.subnet}")
        return ip

    def candidates(self) -> Iterator[IPv4Address]:
        """Addresses containers may get, in order (lazily: a /8 has 16 M)."""
        # Only the subnet's own network and broadcast addresses are unusable: a --ip-range
        # inside it may start or end on any address.
        edge = (self.subnet.network_address, self.subnet.broadcast_address)
        for ip in self.range or self.subnet:
            if ip not in edge:
                yield ip

    def first_free(self, taken: Container[str], gateway: str | None) -> IPv4Address:
        for ip in self.candidates():
            s = str(ip)
            if s != gateway and s not in taken:
                return ip
        raise IpamError(f"vxdp: no free address left in {self.range or self.subnet} "
                        f"(pool {self.subnet} is exhausted)")

    def cidr(self, ip: IPv4Address | str) -> str:
        return f"{ip}/{self.subnet.prefixlen}"


def _net(text: str, what: str) -> IPv4Network:
    try:
        net = ip_network(text, strict=False)
    except ValueError:
        raise IpamError(f"vxdp: {what} {text!r} is not a subnet") from None
    if not isinstance(net, IPv4Network):
        raise IpamError(f"vxdp: {what} {text}: IPv6 pools are not supported (IPv4 overlay)")
    if str(net.network_address) != text.split("/")[0]:
        raise IpamError(f"vxdp: {what} {text} has host bits set (did you mean {net}?)")
    return net


def subnet_of_pool_id(pool_id: str) -> str:
    """``vxdp/192.168.55.0/24`` → ``192.168.55.0/24``."""
    space, _, subnet = str(pool_id).partition("/")
    if space != ADDRESS_SPACE or not subnet:
        raise IpamError(f"vxdp: {pool_id!r} is not a pool of this driver")
    return subnet


def is_gateway_request(options: Any) -> bool:
    return isinstance(options, dict) and options.get("RequestAddressType") == GATEWAY_TYPE


class Ipam(Protocol):
    """What the driver needs from an IPAM back end (local or etcd)."""

    async def request_pool(self, pool: str, subpool: str, v6: bool) -> tuple[str, str]: ...
    async def release_pool(self, pool_id: str) -> None: ...
    async def request_address(self, pool_id: str, address: str, options: Any) -> str: ...
    async def release_address(self, pool_id: str, address: str) -> None: ...
    async def close(self) -> None: ...


def refuse_v6(v6: bool) -> None:
    if v6:
        raise IpamError("vxdp: IPv6 pools are not supported (vxdp networks are IPv4; "
                        "drop --ipv6)")


class LocalIpam:
    """Pools and allocations of this host only, saved in the VTEP's state file."""

    def __init__(self, state: State) -> None:
        self.state = state

    def _pool(self, pool_id: str) -> tuple[PoolSpec, PoolRecord]:
        rec = self.state.pools.get(subnet_of_pool_id(pool_id))
        if rec is None:
            raise IpamError(f"vxdp: unknown pool {pool_id} (not created through this vxdp, "
                            "or its state was lost: remove and create the network again)")
        return PoolSpec.parse(rec.subnet, rec.range or ""), rec

    async def request_pool(self, pool: str, subpool: str, v6: bool) -> tuple[str, str]:
        refuse_v6(v6)
        spec = PoolSpec.parse(pool, subpool)
        for other in self.state.pools.values():
            if spec.subnet.overlaps(ip_network(other.subnet)):
                # As Docker's default IPAM: one network per address range on a host.
                raise IpamError(f"vxdp: {spec.subnet} overlaps pool {other.subnet}, already "
                                "used by another network on this host")
        self.state.pools[spec.key] = PoolRecord(str(spec.subnet),
                                                str(spec.range) if spec.range else None)
        self.state.save()
        return spec.pool_id(), str(spec.subnet)

    async def release_pool(self, pool_id: str) -> None:
        if self.state.pools.pop(subnet_of_pool_id(pool_id), None) is not None:
            self.state.save()

    async def request_address(self, pool_id: str, address: str, options: Any) -> str:
        spec, rec = self._pool(pool_id)
        if is_gateway_request(options):
            gw = str(spec.check(address, "--gateway")) if address else \
                str(spec.default_gateway())
            if gw in rec.allocated and rec.allocated[gw] != "gateway":
                raise IpamError(f"vxdp: gateway {gw} is already in use")
            rec.gateway = gw
            rec.allocated[gw] = "gateway"
            self.state.save()
            return spec.cidr(gw)
        if address:
            ip = str(spec.check(address, "--ip"))
            if ip in rec.allocated:
                raise IpamError(f"vxdp: address {ip} is already in use "
                                f"({rec.allocated[ip]})")
        else:
            ip = str(spec.first_free(rec.allocated, rec.gateway))
        rec.allocated[ip] = "container"
        self.state.save()
        return spec.cidr(ip)

    async def release_address(self, pool_id: str, address: str) -> None:
        rec = self.state.pools.get(subnet_of_pool_id(pool_id))
        if rec is None:
            return
        ip = address.split("/")[0]
        # The gateway belongs to the pool: it goes with ReleasePool.
        if rec.allocated.get(ip) not in (None, "gateway"):
            del rec.allocated[ip]
            self.state.save()

    async def close(self) -> None:
        pass
