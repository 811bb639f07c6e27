"""IPAM in etcd: one pool per subnet shared by every host, no address handed out twice.

Keys, under the store's prefix (the store's own watcher ignores them)::

    {prefix}/ipam/pools/{subnet}        {"subnet", "range", "gateway", "users": [vtep, ...]}
    {prefix}/ipam/addrs/{subnet}/{ip}   {"vtep", "kind"}          ("/" in a subnet is "_")

An address is taken by a transaction that creates its key only if it does not exist (etcd
compares the key's version with 0), so two hosts asking at once cannot both get it: the
loser moves on to the next free address. A pool record changes by compare-and-swap on its
mod revision. None of these keys has a lease: allocations must outlive a VTEP restart (Docker
never asks again), and are released only when Docker releases them (or, for a container that
went away while vxdp was down, at the next start). The gateway belongs to the pool: every
host's ``docker network create`` gets the same one, and it goes with the last user.

etcd unreachable means no allocation: the error says so, and Docker shows it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from ipaddress import ip_network
from typing import Any

from dataplane.config import StoreConfig
from dataplane.docker.ipam import (IpamError, PoolSpec, is_gateway_request, refuse_v6,
                                   subnet_of_pool_id)
from dataplane.store.etcd import RPC_TIMEOUT, _describe, _host_port, aetcd

log = logging.getLogger("vxdp.docker")

CAS_TRIES = 20          # compare-and-swap rounds before giving up (a busy pool)


def _key_part(subnet: str) -> str:
    return subnet.replace("/", "_")


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def _decode(value: bytes) -> dict[str, Any]:
    try:
        d = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return {}
    return d if isinstance(d, dict) else {}


class EtcdIpam:
    """The IPAM of the VTEP at ``vtep`` (its underlay address names its allocations)."""

    def __init__(self, config: StoreConfig, vtep: str) -> None:
        if aetcd is None:
            raise IpamError("vxdp: IPAM with [store] needs the 'aetcd' package")
        base = "" if config.prefix == "/" else config.prefix.rstrip("/")
        self.root = f"{base}/ipam"
        self.urls = tuple(config.etcd)
        self.vtep = vtep
        self._client: Any = None
        self._url = 0

    # -- etcd -----------------------------------------------------------------------------------

    async def _call(self, what: str, fn: Any) -> Any:
        """``fn(client)``; on failure try the next URL once each, then IpamError."""
        last = ""
        for _ in range(len(self.urls)):
            if self._client is None:
                host, port = _host_port(self.urls[self._url % len(self.urls)])
                self._client = aetcd.Client(host=host, port=port, timeout=RPC_TIMEOUT)
            try:
                return await asyncio.wait_for(fn(self._client), RPC_TIMEOUT + 1)
            except IpamError:
                raise
            except Exception as exc:  # noqa: BLE001 - any etcd failure: next URL, then say so
                last = _describe(exc)
                await self._drop_client()
                self._url += 1
        raise IpamError(f"vxdp: etcd ({', '.join(self.urls)}) unreachable, cannot {what} "
                        f"across hosts: {last}")

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), 1.5)
            except Exception:  # noqa: BLE001 - closing a broken channel
                pass

    async def close(self) -> None:
        await self._drop_client()

    def _pool_key(self, subnet: str) -> bytes:
        return f"{self.root}/pools/{_key_part(subnet)}".encode()

    def _addr_prefix(self, subnet: str) -> bytes:
        return f"{self.root}/addrs/{_key_part(subnet)}/".encode()

    # -- pools ------------------------------------------------------------------------------------

    async def _update_pool(self, subnet: str, change: Any, what: str) -> dict[str, Any] | None:
        """Compare-and-swap the pool record: ``change(record or None)`` returns the new record
        (None: delete it; the same object: leave it)."""
        key = self._pool_key(subnet)

        async def attempt(c: Any) -> tuple[bool, dict[str, Any] | None]:
            got = await c.get(key)
            old = _decode(got.value) if got is not None else None
            new = change(None if old is None else dict(old))
            if new == old:
                return True, new
            tx = c.transactions
            cmp = [tx.mod(key) == got.mod_revision] if got is not None else [tx.version(key) == 0]
            op = tx.delete(key) if new is None else tx.put(key, _encode(new))
            ok, _ = await c.transaction(compare=cmp, success=[op], failure=[])
            return bool(ok), new

        for _ in range(CAS_TRIES):
            ok, rec = await self._call(what, attempt)
            if ok:
                return rec
        raise IpamError(f"vxdp: pool {subnet} is too busy to {what}; try again")

    async def request_pool(self, pool: str, subpool: str, v6: bool) -> tuple[str, str]:
        refuse_v6(v6)
        spec = PoolSpec.parse(pool, subpool)
        subnet, rng = str(spec.subnet), str(spec.range) if spec.range else None
        prefix = f"{self.root}/pools/".encode()
        others = await self._call("check pools", lambda c: c.get_prefix(prefix))
        for kv in others:
            value = kv.value
            other = _decode(value).get("subnet", "")
            try:
                overlaps = other != subnet and spec.subnet.overlaps(ip_network(other))
            except ValueError:
                continue
            if overlaps:
                raise IpamError(f"vxdp: {subnet} overlaps pool {other} (in use by "
                                f"{', '.join(_decode(value).get('users', [])) or 'nobody'})")

        def join(rec: dict[str, Any] | None) -> dict[str, Any]:
            if rec is None:
                return {"subnet": subnet, "range": rng, "gateway": None, "users": [self.vtep]}
            if rec.get("range") != rng:
                raise IpamError(f"vxdp: pool {subnet} has --ip-range {rec.get('range')} on "
                                f"the other hosts, not {rng}")
            if self.vtep in rec.get("users", []):
                # One network per subnet per host, as Docker's own IPAM.
                raise IpamError(f"vxdp: {subnet} is already used by another network on "
                                "this host")
            return {**rec, "users": sorted({*rec.get("users", []), self.vtep})}

        await self._update_pool(subnet, join, "create the pool")
        return spec.pool_id(), subnet

    async def release_pool(self, pool_id: str) -> None:
        subnet = subnet_of_pool_id(pool_id)

        def leave(rec: dict[str, Any] | None) -> dict[str, Any] | None:
            if rec is None:
                return None
            users = [u for u in rec.get("users", []) if u != self.vtep]
            return {**rec, "users": users} if users else None

        await self._update_pool(subnet, leave, "release the pool")

    # -- addresses --------------------------------------------------------------------------------

    async def request_address(self, pool_id: str, address: str, options: Any) -> str:
        subnet = subnet_of_pool_id(pool_id)
        got = await self._call("read the pool", lambda c: c.get(self._pool_key(subnet)))
        rec = _decode(got.value) if got is not None else None
        if rec is None:
            raise IpamError(f"vxdp: unknown pool {pool_id} (not in etcd: remove the network "
                            "and create it again)")
        spec = PoolSpec.parse(subnet, rec.get("range") or "")
        if is_gateway_request(options):
            return spec.cidr(await self._gateway(spec, address))
        gateway = rec.get("gateway")
        if address:
            ip = str(spec.check(address, "--ip"))
            if ip == gateway:
                raise IpamError(f"vxdp: {ip} is the network's gateway address")
            if not await self._take(subnet, ip):
                owner = await self._owner(subnet, ip)
                raise IpamError(f"vxdp: address {ip} is already in use (VTEP {owner})")
            return spec.cidr(ip)
        for _ in range(CAS_TRIES):
            taken = await self._taken(subnet)
            ip = str(spec.first_free(taken, gateway))
            if await self._take(subnet, ip):
                return spec.cidr(ip)
        raise IpamError(f"vxdp: pool {subnet} is too busy; try again")

    async def _gateway(self, spec: PoolSpec, address: str) -> str:
        want = str(spec.check(address, "--gateway")) if address else None

        def claim(rec: dict[str, Any] | None) -> dict[str, Any]:
            if rec is None:
                raise IpamError(f"vxdp: pool {spec.subnet} vanished")
            have = rec.get("gateway")
            if have and want and have != want:
                raise IpamError(f"vxdp: pool {spec.subnet} has gateway {have} on the other "
                                f"hosts, not {want}")
            if have:
                return rec
            return {**rec, "gateway": want or str(spec.default_gateway())}

        rec = await self._update_pool(str(spec.subnet), claim, "set the gateway")
        assert rec is not None
        gw = str(rec["gateway"])
        if await self._owner(str(spec.subnet), gw) is not None:
            raise IpamError(f"vxdp: gateway {gw} is already a container's address")
        return gw

    async def _taken(self, subnet: str) -> set[str]:
        prefix = self._addr_prefix(subnet)
        got = await self._call("read the pool", lambda c: c.get_prefix(prefix, keys_only=True))
        return {kv.key[len(prefix):].decode() for kv in got}

    async def _take(self, subnet: str, ip: str) -> bool:
        key = self._addr_prefix(subnet) + ip.encode()
        value = _encode({"vtep": self.vtep, "kind": "container"})

        async def txn(c: Any) -> bool:
            tx = c.transactions
            ok, _ = await c.transaction(compare=[tx.version(key) == 0],
                                        success=[tx.put(key, value)], failure=[])
            return bool(ok)

        return bool(await self._call("allocate an address", txn))

    async def _owner(self, subnet: str, ip: str) -> str | None:
        key = self._addr_prefix(subnet) + ip.encode()
        got = await self._call("read an address", lambda c: c.get(key))
        return None if got is None else str(_decode(got.value).get("vtep", "?"))

    async def release_address(self, pool_id: str, address: str) -> None:
        subnet = subnet_of_pool_id(pool_id)
        ip = address.split("/")[0]
        key = self._addr_prefix(subnet) + ip.encode()

        async def txn(c: Any) -> None:
            got = await c.get(key)
            if got is None:
                return           # the gateway (pool-owned), or released already
            if _decode(got.value).get("vtep") != self.vtep:
                log.warning("docker: not releasing %s: VTEP %s holds it", ip,
                            _decode(got.value).get("vtep"))
                return
            tx = c.transactions
            await c.transaction(compare=[tx.mod(key) == got.mod_revision],
                                success=[tx.delete(key)], failure=[])

        await self._call("release an address", txn)
