"""Container endpoints vxdp creates for a runtime (Docker's driver, the CNI plugin) and keeps
across its own restarts.

Each is a *persistent* TAP (TUNSETPERSIST): when the VTEP stops or dies, the device stays in
the container (``eth0``, without carrier: frames are dropped while nobody holds the fd)
instead of vanishing with the last fd, and the container keeps its interface, addresses and
routes. The state file records where each one lives; at start-up :meth:`Held.restore` opens
every TAP again *inside* its container's namespace (TUNSETIFF by name there, found by MAC for
Docker, whose libnetwork renamed it) and makes it a port again, and the store publishes it
again. One whose container went away meanwhile is removed, its address released, and said so
on the log and on ``vxdp events``. Removing an endpoint turns persistence off first, so
closing the fd deletes the device as usual.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Interface
from typing import TYPE_CHECKING, Any

from dataplane.config import EndpointConfig, NetworkConfig
from dataplane.docker import sandbox
from dataplane.docker.state import EndpointRecord, State
from dataplane.errors import VxdpError
from dataplane.ports import TapPort

if TYPE_CHECKING:
    from dataplane.vtep import Vtep

log = logging.getLogger("vxdp.docker")

#: Called with an endpoint that could not be re-attached (its container is gone).
OnStale = Callable[[EndpointRecord], Awaitable[None]]


class Held:
    """The runtime endpoints of one VTEP, backed by ``state``."""

    def __init__(self, vtep: Vtep, state: State) -> None:
        self.vtep = vtep
        self.state = state

    # -- creation -----------------------------------------------------------------------------

    async def create_docker(self, rec: EndpointRecord, net: NetworkConfig) -> None:
        """A TAP in the VTEP's (= dockerd's) namespace, with the container's MAC and the
        network's MTU, for libnetwork to move and rename: it never sets the MTU of a remote
        driver's interface itself, and it adds the addresses after the move."""
        offload = self.vtep.tap_offload

        def make() -> TapPort:
            tap = TapPort.create(rec.tap, rec.mac, net.mtu, None, vnet_hdr=offload,
                                 offload=offload)
            return _persist(tap)

        tap = await sandbox.call_async(None, make)
        self._register(rec, net, tap)

    async def create_cni(self, rec: EndpointRecord, net: NetworkConfig,
                         routes: list[tuple[str, str | None]]) -> None:
        """A TAP created directly in the container's namespace as ``rec.ifname``, with MAC,
        MTU, address and routes (what the CNI spec asks of an interface plugin)."""
        offload = self.vtep.tap_offload
        assert rec.ifname is not None and rec.sandbox is not None

        def make() -> TapPort:
            tap = TapPort.create(rec.ifname or "", rec.mac, net.mtu, IPv4Interface(rec.address),
                                 vnet_hdr=offload, offload=offload)
            try:
                sandbox.add_routes(tap.ifname, routes)
            except BaseException:
                tap.close()
                raise
            return _persist(tap)

        tap = await sandbox.call_async(rec.sandbox, make)
        # Its ifindex is one of the container's namespace: say which, so nobody looks it up
        # in ours (the stats' container-side counters are read by namespace + ifindex).
        tap.netns = rec.sandbox
        self._register(rec, net, tap)

    def _register(self, rec: EndpointRecord, net: NetworkConfig, tap: TapPort) -> None:
        cfg = EndpointConfig(name=rec.name, mac=rec.mac, address=IPv4Interface(rec.address))
        try:
            self.vtep.attach_tap(cfg, net, tap)
        except BaseException:
            _unpersist_close(tap)
            raise
        self.state.endpoints[rec.key] = rec
        try:
            self.state.save()
        except VxdpError:
            self.state.endpoints.pop(rec.key, None)
            self._drop_port(rec)
            raise

    # -- removal ------------------------------------------------------------------------------

    def remove(self, key: str) -> EndpointRecord | None:
        """Delete the endpoint ``key`` (its TAP goes); None when it is not known (already
        removed, or made before a state loss): removal is idempotent, as Docker and CNI
        expect."""
        rec = self.state.endpoints.pop(key, None)
        if rec is None:
            return None
        self._drop_port(rec)
        self.state.save()
        return rec

    def _drop_port(self, rec: EndpointRecord) -> None:
        e = self.vtep.endpoints.get(rec.name)
        if e is None:
            return
        with contextlib.suppress(VxdpError):
            e.tap.set_persist(False)   # closing the last fd now deletes the device
        self.vtep.detach(rec.name)

    def attached(self, rec: EndpointRecord) -> bool:
        return rec.name in self.vtep.endpoints

    # -- restart ------------------------------------------------------------------------------

    async def restore(self, on_stale: OnStale) -> None:
        """Re-attach every endpoint of the state file (see the module docstring)."""
        for rec in list(self.state.endpoints.values()):
            net = self.vtep.networks.get(rec.network)
            try:
                where = await self._reopen(rec, net) if net is not None else None
            except VxdpError as exc:
                log.warning("%s endpoint %s: cannot re-attach: %s", rec.kind, rec.name, exc)
                where = None
            if where is not None:
                self._event("reattached", rec, f"{rec.kind} endpoint {rec.name} re-attached "
                                              f"({where})")
                continue
            self.state.endpoints.pop(rec.key, None)
            if rec.kind == "docker":
                # Only Docker's TAPs come back to our namespace (under the vx... name we gave
                # them); a CNI interface dies with its namespace.
                await sandbox.call_async(None, _delete_left_tap, rec.tap)
            self._event("endpoint_gone", rec,
                        f"{rec.kind} endpoint {rec.name} ({rec.address}, network {rec.network}): "
                        "its container went away while vxdp was down; removed")
            await on_stale(rec)
        self.state.save()

    async def _reopen(self, rec: EndpointRecord, net: NetworkConfig) -> str | None:
        """Open ``rec``'s TAP again and make it a port; where it was found, or None."""
        offload = self.vtep.tap_offload
        inside = rec.sandbox is not None and sandbox.is_netns(rec.sandbox)
        if rec.sandbox is not None and not inside:
            return None          # joined, and the namespace is gone: the container is gone

        def find(want: str | None, where: str | None) -> TapPort | None:
            name = want or sandbox.find_by_mac(rec.mac)
            if name is None or not sandbox.link_exists(name):
                return None
            return TapPort.reopen(name, rec.mac, net.mtu, vnet_hdr=offload, offload=offload,
                                  netns=where)

        tap = None
        if inside:
            tap = await sandbox.call_async(rec.sandbox, find, rec.ifname, rec.sandbox)
        if tap is None and rec.kind == "docker":
            # Not joined yet, or libnetwork has not moved it in (or moved it back) yet.
            tap = await sandbox.call_async(None, find, rec.tap, None)
            inside = False
        if tap is None:
            return None
        self._register(rec, net, tap)
        return f"{tap.ifname} in {rec.sandbox}" if inside else f"{tap.ifname} on the host"

    def _event(self, kind: str, rec: EndpointRecord, line: str) -> None:
        (log.info if kind == "reattached" else log.warning)("%s", line)
        self.vtep.emit_event({"kind": kind, "endpoint": rec.name, "network": rec.network,
                              "runtime": rec.kind, "address": rec.address, "line": line})


def _persist(tap: TapPort) -> TapPort:
    try:
        tap.set_persist(True)
    except BaseException:
        tap.close()
        raise
    return tap


def _unpersist_close(tap: TapPort) -> None:
    with contextlib.suppress(VxdpError):
        tap.set_persist(False)
    tap.close()


def _delete_left_tap(name: str) -> Any:
    """A persistent TAP libnetwork moved back to our namespace for a container that went away
    while we were down: attach, turn persistence off, close (the device goes)."""
    if not sandbox.link_exists(name):
        return None
    try:
        _unpersist_close(TapPort.reopen(name, "00:00:00:00:00:00", 0))
    except VxdpError as exc:
        log.warning("left-over TAP %s: %s", name, exc)
    return None
