"""The VTEP's side of container runtimes: one :class:`Containers` per ``vxdp run``.

Start-up order (``Vtep.start`` calls :meth:`Containers.start` once the store runs, so that
what is restored here is published at once):

1. the state file is opened when ``[docker]`` is configured or a previous run left one
   (CNI endpoints are re-attached without ``[docker]`` too); otherwise nothing is touched
   until a CNI request arrives;
2. the Docker networks of the state are served again (dockerd will not say them again);
3. every held endpoint is re-attached, or removed with its address released when its
   container went away meanwhile (:class:`~dataplane.docker.endpoints.Held`);
4. only then the plugin socket is served, so Docker's first call sees the restored state
   (while it is absent Docker retries each call for ~15 s).

On stop the plugin socket goes, and the endpoints' TAPs stay in their containers (persistent,
without carrier) for the next start to pick up.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from dataplane.config import NetworkConfig
from dataplane.docker.endpoints import Held
from dataplane.docker.ipam import Ipam, LocalIpam
from dataplane.docker.state import EndpointRecord, State
from dataplane.errors import VxdpError

if TYPE_CHECKING:
    from dataplane.docker.driver import Driver
    from dataplane.docker.http import PluginServer
    from dataplane.vtep import Vtep

log = logging.getLogger("vxdp.docker")


class Containers:
    def __init__(self, vtep: Vtep) -> None:
        self.vtep = vtep
        self.state = State(vtep.config.vtep.state)
        self.held = Held(vtep, self.state)
        self.ipam: Ipam | None = None
        self.driver: Driver | None = None
        self.server: PluginServer | None = None
        self._open = False

    async def start(self) -> None:
        cfg = self.vtep.config
        if cfg.docker is None and not self.state.exists:
            return
        self.ensure_open()
        if cfg.docker is not None:
            self.ipam = self._make_ipam()
            self._restore_networks()
        await self.held.restore(self._release_stale)
        if cfg.docker is not None:
            from dataplane.docker.driver import Driver
            from dataplane.docker.http import PluginServer
            assert self.ipam is not None
            self.driver = Driver(self.vtep, self.state, self.held, self.ipam)
            self.server = PluginServer(cfg.docker.socket, self.driver.handle)
            await self.server.start()
            log.info("docker: network and IPAM driver %r on %s (%s IPAM, state %s)",
                     cfg.docker.plugin, cfg.docker.socket,
                     "etcd" if cfg.store is not None else "local", self.state.path)

    def ensure_open(self) -> None:
        """Lock and read the state file (at start-up, or at the first CNI request)."""
        if not self._open:
            self.state.open()
            self._open = True

    def _make_ipam(self) -> Ipam:
        cfg = self.vtep.config
        if cfg.store is None:
            return LocalIpam(self.state)
        from dataplane.docker.ipam_etcd import EtcdIpam
        return EtcdIpam(cfg.store, str(cfg.vtep.local.primary))

    def _restore_networks(self) -> None:
        for rec in self.state.networks.values():
            served = self.vtep.networks.get(rec.name)
            if served is not None:
                if served.vni != rec.vni:
                    log.warning("docker network %s: vxdp network %s has VNI %d in the config "
                                "now, it was %d; containers on it are cut off from the old "
                                "VNI", rec.id[:12], rec.name, served.vni, rec.vni)
                continue
            if not rec.owned:
                log.warning("docker network %s used [[network]] %s, which is no longer in the "
                            "config: serving it for Docker (vni %d, mtu %d)", rec.id[:12],
                            rec.name, rec.vni, rec.mtu)
                rec.owned = True
            try:
                self.vtep.add_network(NetworkConfig(name=rec.name, vni=rec.vni, mtu=rec.mtu))
            except VxdpError as exc:
                log.warning("docker network %s (vxdp network %s, vni %d): cannot serve it "
                            "again: %s", rec.id[:12], rec.name, rec.vni, exc)

    async def _release_stale(self, rec: EndpointRecord) -> None:
        """The container of a Docker endpoint went away while we were down: Docker's
        ReleaseAddress failed then (after its retries) and is never sent again."""
        if rec.kind != "docker" or rec.pool is None or self.ipam is None:
            return
        try:
            await self.ipam.release_address(rec.pool, rec.address)
        except VxdpError as exc:
            log.warning("docker endpoint %s: address %s not released: %s", rec.name,
                        rec.address, exc)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self.ipam is not None:
            await self.ipam.close()
        self.state.close()
        self._open = False

    def show(self) -> dict[str, Any]:
        """``docker.show``: what the Docker driver and the CNI plugin have made here."""
        return {"state": self.state.path,
                "networks": [vars(r) for r in self.state.networks.values()],
                "endpoints": [vars(r) for r in self.state.endpoints.values()],
                "pools": [vars(r) for r in self.state.pools.values()]}
