"""One VTEP process: config → switch + TAP endpoints + underlay sockets, wired on uvloop.

Per-packet work: with the compiled fast path, each readiness callback makes ONE call into
Cython (``rx_tap_burst`` / ``rx_udp_burst``), which reads a burst, forwards it and transmits in
batches; Python only drains events afterwards. With ``VXDP_NO_EXTENSIONS=1`` the same callbacks
run the readable reference (``dataplane.switch``) frame by frame — slow, but the same decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from dataplane import fastpath
from dataplane.config import Config, EndpointConfig, NetworkConfig, endpoint_from_args, load_config
from dataplane.control import ControlServer
from dataplane.errors import ConfigError, EntryNotFound, InvalidArgument, VxdpError
from dataplane.netns import link_stats64
from dataplane.ports import TAP_GONE_ERRNOS, VNET_HDR_LEN, TapPort
from dataplane.underlay import Underlay
from dataplane.wire import ZERO_MAC

log = logging.getLogger("vxdp")

AGEING_INTERVAL = 1.0      # seconds between ageing sweeps (the kernel's vxlan sweeps every ~10s)
TRACE_BUDGET = 5000.0      # trace records rendered per second at most (the rest: counted lost)
EVENT_QUEUE = 4096         # per subscriber; a slow reader loses events, the dataplane never waits
BUSY_POLL_SLICE = 0.002    # longest busy_poll call: the loop (control, timers) gets its turn


@dataclass
class Endpoint:
    cfg: EndpointConfig
    network: NetworkConfig
    port_id: int
    tap: TapPort
    tx_errors: int = 0


@dataclass
class Subscriber:
    queue: asyncio.Queue[dict[str, Any]]
    lost: int = 0
    port: str | None = None       # trace/capture filters
    vni: int | None = None
    capture: bool = False
    ifaces: dict[int, int] = field(default_factory=dict)   # capture: port id -> pcapng iface


@dataclass
class Vtep:
    config: Config
    switch: Any = field(init=False)
    underlay: Underlay = field(init=False)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    networks: dict[str, NetworkConfig] = field(default_factory=dict)
    by_vni: dict[int, NetworkConfig] = field(default_factory=dict)
    control: ControlServer | None = None
    store: Any = None          # dataplane.store.etcd.EtcdStore when [store] is configured
    impl: str = fastpath.NAME
    _ports: dict[int, Endpoint] = field(default_factory=dict)
    _next_port: int = 0
    _subscribers: list[Subscriber] = field(default_factory=list)
    _tracers: list[Subscriber] = field(default_factory=list)
    _wall_offset: float = field(default_factory=lambda: time.time() - time.monotonic())
    _metrics: Any = None
    _trace_tokens: float = 0.0
    _trace_refill: float = 0.0
    _loop: asyncio.AbstractEventLoop | None = None
    _ageing: asyncio.TimerHandle | None = None
    _stopped: bool = False
    tx_errors: int = 0
    # Offloads (issue #5): only the C path uses them; decided once in start().
    _tap_offload: bool = False     # endpoints get IFF_VNET_HDR + TUNSETOFFLOAD
    _tap_coalesce: bool = False
    _gso_on: bool = False          # UDP GSO on as far as we have logged
    _busy_poll: float = 0.0        # [vtep] busy_poll in seconds (C path only)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        v = self.config.vtep
        kwargs: dict[str, Any] = {"src_port_range": v.src_port_range, "strict": v.strict,
                                  "allow": v.allow}
        if self.impl == "c":
            kwargs.update(burst=v.burst, dstport=v.port)
        self.switch = fastpath.Switch(v.local, **kwargs)
        for net in self.config.networks:
            self._add_network(net)
        # Offloads are a C-path feature: the Python path reads one datagram per recvfrom (GRO
        # would glue several together) and one frame per TAP read (no vnet header parsing).
        want = v.offload if self.impl == "c" else frozenset()
        self.underlay = Underlay(v.local, v.port)
        self.underlay.open(gro="udp_gro" in want, gso="udp_gso" in want)
        try:
            if self.impl == "c":
                if self.underlay.tx is None:
                    raise VxdpError("the fast path sends through a raw socket and needs "
                                    "CAP_NET_RAW (or run with VXDP_NO_EXTENSIONS=1)")
                self.switch.set_tx_socket(self.underlay.tx.fileno())
                # Every TAP of this VTEP gets a vnet header when "tap" is on, so coalescing
                # (which the core applies only to ports with a vnet header) is on with it.
                self._tap_offload = self._tap_coalesce = "tap" in want
                self._gso_on = self.underlay.udp_gso
                self.switch.set_offload(udp_gso=self.underlay.udp_gso,
                                        udp_gro=self.underlay.udp_gro,
                                        tap_coalesce=self._tap_coalesce)
                self._busy_poll = v.busy_poll * 1e-6
            elif v.busy_poll:
                log.warning("vxdp %s: busy_poll needs the Cython fast path; ignored",
                            v.name)
            for net in self.config.networks:
                for ep in net.endpoints:
                    await self._attach(ep, net)
            self.control = ControlServer(v.control, self.handle, self.streams())
            await self.control.start()
            if v.metrics:
                from dataplane import metrics
                self._metrics = metrics.start(v.metrics, self.stats_with_taps)
            if self.config.store is not None:
                # Never blocks start-up: an unreachable etcd leaves the static tables in
                # force while the store retries in the background.
                from dataplane.store.etcd import EtcdStore
                self.store = EtcdStore(self.config.store, self)
                await self.store.start()
        except BaseException:
            await self.stop()
            raise
        self._loop.add_reader(self.underlay.rx.fileno(), self._on_underlay)
        self._ageing = self._loop.call_later(AGEING_INTERVAL, self._age)
        log.info("vxdp %s: serving %d network(s) on %s:%d (%s fast path)", v.name,
                 len(self.config.networks), v.local, v.port, self.impl)

    async def stop(self) -> None:
        """Remove everything this process created: TAPs, control socket, sockets."""
        if self._stopped:
            return
        self._stopped = True
        if self.store is not None:
            await self.store.close()
        if self._ageing is not None:
            self._ageing.cancel()
        loop = self._loop
        if loop is not None and hasattr(self, "underlay") and getattr(self.underlay, "rx", None):
            loop.remove_reader(self.underlay.rx.fileno())
        for name in list(self.endpoints):
            self._detach(name)
        # End live streams first so their clients see a clean end, then close the server.
        for s in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                s.queue.put_nowait({"end": True})
        await asyncio.sleep(0)
        if self.control is not None:
            await self.control.close()
        if self._metrics is not None:
            server = self._metrics[0] if isinstance(self._metrics, tuple) else self._metrics
            server.shutdown()
        if hasattr(self, "underlay"):
            self.underlay.close()

    def _add_network(self, net: NetworkConfig) -> None:
        sw = self.switch
        sw.add_network(net.vni, mtu=net.mtu, proxy=net.proxy, learning=net.learning,
                       ageing=net.ageing, maxaddress=net.maxaddress)
        # Docker's peerAdd: one permanent FDB entry + one permanent neighbour entry per peer.
        for p in net.peers:
            sw.fdb_add(net.vni, p.mac, p.vtep, "permanent")
            sw.neigh_add(net.vni, p.address, p.mac, "permanent")
        # The flood list: all-zeros entries, one remote each (bridge fdb append 00:00:..).
        for vtep in net.flood:
            sw.fdb_append(net.vni, ZERO_MAC, vtep, "permanent")
        self.networks[net.name] = net
        self.by_vni[net.vni] = net

    async def _attach(self, ep: EndpointConfig, net: NetworkConfig) -> Endpoint:
        if ep.name in self.endpoints:
            raise InvalidArgument(f"endpoint {ep.name} already exists")
        # pyroute2's synchronous IPRoute refuses to run on a thread with a running loop:
        # create_async does the netlink work in a worker thread.
        tap = await TapPort.create_async(ep.name, ep.mac, net.mtu, ep.address, ep.netns,
                                         ep.ifname, vnet_hdr=self._tap_offload,
                                         offload=self._tap_offload)
        pid = self._next_port
        self._next_port += 1
        try:
            self.switch.add_port(pid, net.vni, ep.mac, time.monotonic())
        except BaseException:
            tap.close()
            raise
        e = Endpoint(ep, net, pid, tap)
        self.endpoints[ep.name] = e
        self._ports[pid] = e
        if self.impl == "c":
            self.switch.set_port_fd(pid, tap.fd,
                                    vnet_hdr_len=VNET_HDR_LEN if tap.vnet_hdr else 0)
        if self._loop is not None:
            self._loop.add_reader(tap.fd, self._on_tap, pid)
        if self.store is not None:
            self.store.publish(net, ep)
        return e

    def _detach(self, name: str) -> None:
        e = self.endpoints.pop(name, None)
        if e is None:
            raise EntryNotFound(f"no endpoint {name}")
        self._ports.pop(e.port_id, None)
        if self._loop is not None:
            self._loop.remove_reader(e.tap.fd)
        try:
            self.switch.del_port(e.port_id)
        except EntryNotFound:
            pass
        e.tap.close()
        if self.store is not None and not self._stopped:
            self.store.withdraw(e.network, e.cfg)

    # -- remote state (static config, or pushed by the store) ------------------------------------

    def local_endpoints(self) -> list[tuple[NetworkConfig, EndpointConfig]]:
        return [(e.network, e.cfg) for e in self.endpoints.values()]

    def peer_add(self, network: str, mac: str, ip: str, vtep: str) -> bool:
        """A remote endpoint appeared: permanent FDB + neighbour entry (Docker's peerAdd).
        Idempotent (replace); False when this VTEP does not serve ``network``."""
        net = self.networks.get(network)
        if net is None:
            return False
        self.switch.fdb_replace(net.vni, mac, vtep, "permanent", time.monotonic())
        self.switch.neigh_replace(net.vni, ip, mac, "permanent")
        return True

    def peer_del(self, network: str, mac: str, ip: str) -> bool:
        """A remote endpoint went away (Docker's peerDelete). Missing entries are fine."""
        net = self.networks.get(network)
        if net is None:
            return False
        for op in (lambda: self.switch.fdb_del(net.vni, mac),
                   lambda: self.switch.neigh_del(net.vni, ip)):
            try:
                op()
            except EntryNotFound:
                pass
        return True

    def flood_add(self, network: str, vtep: str) -> bool:
        """Another VTEP serves ``network``: head-end replication to it (append is idempotent)."""
        net = self.networks.get(network)
        if net is None or vtep == str(self.config.vtep.local):
            return False
        self.switch.fdb_append(net.vni, ZERO_MAC, vtep, "permanent", time.monotonic())
        return True

    def flood_del(self, network: str, vtep: str) -> bool:
        net = self.networks.get(network)
        if net is None:
            return False
        try:
            self.switch.fdb_del(net.vni, ZERO_MAC, vtep)
        except EntryNotFound:
            pass
        return True

    # -- data path ----------------------------------------------------------------------------

    def _on_tap(self, pid: int) -> None:
        now = time.monotonic()
        if self.impl == "c":
            self.switch.rx_tap_burst(pid, self._ports[pid].tap.fd, now)
            if self._busy_poll:
                self.switch.busy_poll(self.underlay.rx.fileno(), self._busy_poll, BUSY_POLL_SLICE)
            for gone in self.switch.gone_ports():
                self._port_gone(gone)
        else:
            self._py_tap_burst(pid, now)
        self._publish_events()
        if self._tracers:
            self._publish_trace()

    def _on_underlay(self) -> None:
        now = time.monotonic()
        if self.impl == "c":
            self.switch.rx_udp_burst(self.underlay.rx.fileno(), now)
            if self._busy_poll:
                self.switch.busy_poll(self.underlay.rx.fileno(), self._busy_poll, BUSY_POLL_SLICE)
            for gone in self.switch.gone_ports():
                self._port_gone(gone)
        else:
            self._py_udp_burst(now)
        self._publish_events()
        if self._tracers:
            self._publish_trace()

    def _py_tap_burst(self, pid: int, now: float) -> None:
        e = self._ports.get(pid)
        if e is None:
            return
        for _ in range(self.config.vtep.burst):
            try:
                frame = os.read(e.tap.fd, 65536)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in TAP_GONE_ERRNOS:
                    self._port_gone(pid)
                return
            self._py_execute(self.switch.from_port(pid, frame, now))

    def _py_udp_burst(self, now: float) -> None:
        rx = self.underlay.rx
        for _ in range(self.config.vtep.burst):
            try:
                data, (src, _sport) = rx.recvfrom(65536)
            except BlockingIOError:
                return
            except OSError:
                return
            self._py_execute(self.switch.from_underlay(src, data, now))

    def _py_execute(self, actions: list[tuple[Any, ...]]) -> None:
        for a in actions:
            if a[0] == "port":
                e = self._ports.get(a[1])
                if e is None:
                    continue
                try:
                    os.write(e.tap.fd, a[2])
                except OSError:
                    e.tx_errors += 1
            else:
                if not self.underlay.send(a[1], a[2], a[3], self.config.vtep.port):
                    self.tx_errors += 1

    def _port_gone(self, pid: int) -> None:
        """The container (its netns) went away with our TAP in it: drop the port, keep going."""
        e = self._ports.get(pid)
        if e is None:
            return
        log.warning("endpoint %s disappeared; removing its port", e.cfg.name)
        self._detach(e.cfg.name)
        self._emit({"kind": "port_gone", "network": e.network.name, "vni": e.network.vni,
                    "endpoint": e.cfg.name,
                    "line": f"endpoint {e.cfg.name} gone (network {e.network.name})"})

    def _age(self) -> None:
        self.switch.age(time.monotonic())
        if self.impl == "c":
            self.switch.offload_gc()   # closes per-source-port GSO sockets idle for 30 ticks
            if self._gso_on and not self.switch.offload_state()["udp_gso"]:
                # the core switched UDP GSO off after the kernel refused a send with EIO
                self._gso_on = False
                log.warning("vxdp %s: UDP GSO refused by the kernel (the underlay device "
                            "cannot checksum); sending datagram by datagram from now on",
                            self.config.vtep.name)
        self._publish_events()
        if self._loop is not None and not self._stopped:
            self._ageing = self._loop.call_later(AGEING_INTERVAL, self._age)

    # -- events -------------------------------------------------------------------------------

    def _location(self, loc: str) -> str:
        if loc.startswith("port:"):
            e = self._ports.get(int(loc[5:]))
            return f"port {e.cfg.name}" if e else loc
        return f"dst {loc}" if loc else ""

    def event_record(self, ev: tuple[str, int, str, str, str]) -> dict[str, Any]:
        kind, vni, key, old, new = ev
        net = self.by_vni.get(vni)
        name = net.name if net else str(vni)
        rec: dict[str, Any] = {"kind": kind, "vni": vni, "network": name, "time": time.time()}
        if kind == "l3miss":
            rec["ip"] = key
        else:
            rec["mac"] = key
        where = ""
        if kind == "learned":
            rec["new"] = self._location(new)
            where = " " + rec["new"]
        elif kind == "moved":
            rec["old"], rec["new"] = self._location(old), self._location(new)
            where = f" from {rec['old']} to {rec['new']}"
        elif kind == "aged":
            rec["old"] = self._location(old)
            where = " " + rec["old"]
        rec["line"] = f"{kind} {key} dev {name} vni {vni}{where}"
        return rec

    def _publish_events(self) -> None:
        evs = self.switch.events()
        if not evs:
            return
        for ev in evs:
            rec = self.event_record(ev)
            log.debug("event: %s", rec["line"])
            self._emit(rec)

    def emit_event(self, rec: dict[str, Any]) -> None:
        self._emit(rec)

    def _emit(self, rec: dict[str, Any]) -> None:
        for s in self._subscribers:
            try:
                s.queue.put_nowait(rec)
            except asyncio.QueueFull:
                s.lost += 1

    async def _events_stream(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        sub = Subscriber(asyncio.Queue(EVENT_QUEUE))
        self._subscribers.append(sub)
        count = int(args.get("count") or 0)
        sent = 0
        try:
            while not count or sent < count:
                rec = await sub.queue.get()
                if rec.get("end"):
                    return
                yield rec
                sent += 1
        finally:
            self._subscribers.remove(sub)

    # -- trace and capture (DESIGN.md §4; off unless someone watches) --------------------------

    def _publish_trace(self) -> None:
        """Hand the core's raw records to the watchers. Formatting happens here, once per
        record, and only for records some watcher wants; a full queue loses the record for
        that watcher (counted) — the dataplane never waits for a reader."""
        from dataplane import trace as tr

        recs = self.switch.trace_drain()
        # Rendering (scapy decode) costs tens of µs a record, on the loop that forwards:
        # a token bucket bounds it, and records beyond the budget are counted as lost for
        # every watcher instead of slowing the dataplane down.
        now = time.monotonic()
        self._trace_tokens = min(TRACE_BUDGET, self._trace_tokens
                                 + (now - self._trace_refill) * TRACE_BUDGET)
        self._trace_refill = now
        if len(recs) > self._trace_tokens:
            over = len(recs) - int(self._trace_tokens)
            recs = recs[:int(self._trace_tokens)]
            for sub in self._tracers:
                sub.lost += over
        self._trace_tokens -= len(recs)
        neighbours: dict[tuple[int, str], str] | None = None

        def neigh_of(vni: int, ip: str) -> str | None:
            # The neighbour entry a proxy reply used, for the trace line: one table dump per
            # drain (only if a proxy reply is rendered), not one per record.
            nonlocal neighbours
            if neighbours is None:
                neighbours = {(r["vni"], r["ip"]): f"{r['lladdr']} {r['state'].upper()}"
                              for r in self.switch.neigh_dump()}
            return neighbours.get((vni, ip))

        for rec in recs:
            described: dict[str, Any] | None = None
            blocks: list[bytes] | None = None
            src_port = int(rec[1][5:]) if rec[1].startswith("port:") else None
            for sub in self._tracers:
                if sub.vni is not None and rec[2] != sub.vni:
                    continue
                if sub.queue.full():
                    sub.lost += 1       # nobody to take it: do not even render it
                    continue
                if sub.port is not None:
                    touched = {src_port} | {o[1] for o in rec[6] if o[0] == "port"}
                    e = self.endpoints.get(sub.port)
                    if e is None or e.port_id not in touched:
                        continue
                if sub.capture:
                    if blocks is None:
                        blocks = tr.capture_blocks(rec, sub.ifaces.get, len(sub.ifaces),
                                                   self.config.vtep.local, self._wall_offset)
                    item: dict[str, Any] = {"pcapng": b"".join(blocks)}
                else:
                    if described is None:
                        described = tr.describe(rec, self._port_name, self._network_name,
                                                self._wall_offset, neigh_of)
                    item = described
                try:
                    sub.queue.put_nowait(item)
                except asyncio.QueueFull:
                    sub.lost += 1

    def _port_name(self, pid: int) -> str:
        e = self._ports.get(pid)
        return e.cfg.name if e else f"port{pid}"

    def _network_name(self, vni: int) -> str:
        net = self.by_vni.get(vni)
        return net.name if net else str(vni)

    async def _trace_stream(self, args: dict[str, Any], capture: bool = False
                            ) -> AsyncIterator[dict[str, Any]]:
        import base64

        from dataplane import trace as tr
        from dataplane.control import StreamEnd

        if not hasattr(self.switch, "set_trace"):
            raise InvalidArgument("this fast path build has no trace support")
        port = args.get("port")
        if port is not None and port not in self.endpoints:
            raise InvalidArgument(f"no endpoint {port!r} (have: {', '.join(sorted(self.endpoints))})")
        vni = args.get("vni")
        if vni is not None and int(vni) not in self.by_vni:
            raise InvalidArgument(f"no network with VNI {vni} here "
                                  f"(serving {', '.join(str(v) for v in sorted(self.by_vni))})")
        sub = Subscriber(asyncio.Queue(EVENT_QUEUE), port=port,
                         vni=int(vni) if vni is not None else None, capture=capture)
        count = int(args.get("count") or 0)
        if capture:
            names = []
            for i, (name, e) in enumerate(sorted(self.endpoints.items())):
                sub.ifaces[e.port_id] = i
                names.append((name, tr.LINKTYPE_ETHERNET))
            names.append(("underlay", tr.LINKTYPE_IPV4))
            yield {"pcapng": base64.b64encode(tr.pcapng_header(names)).decode()}
        if not capture:
            # scapy (the decoder) takes ~0.3 s to import: do it off the loop, before tracing
            # starts, so the first records do not stall forwarding.
            await asyncio.to_thread(tr.warm_up)
        self._tracers.append(sub)
        self.switch.set_trace(True)
        lost_before = self.switch.trace_lost
        sent = 0
        try:
            while not count or sent < count:
                item = await sub.queue.get()
                if item.get("end"):
                    break
                if capture:
                    yield {"pcapng": base64.b64encode(item["pcapng"]).decode()}
                else:
                    yield item
                sent += 1
        finally:
            self._tracers.remove(sub)
            if not self._tracers:
                self.switch.set_trace(False)
        yield StreamEnd(records=sent, lost=sub.lost,
                        ring_lost=self.switch.trace_lost - lost_before)

    async def _capture_stream(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async for item in self._trace_stream(args, capture=True):
            yield item

    def streams(self) -> dict[str, Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]]:
        return {"events": self._events_stream, "trace": self._trace_stream,
                "capture": self._capture_stream}

    def explain(self, args: dict[str, Any]) -> dict[str, Any]:
        from dataplane import trace as tr

        name = args.get("from")
        e = self.endpoints.get(name or "")
        if e is None:
            raise InvalidArgument(f"no endpoint {name!r} (have: {', '.join(sorted(self.endpoints))})")
        to = str(args.get("to") or "")
        try:
            if ":" in to:
                tr.mac_to_bytes(to)
            else:
                tr.IPv4Address(to)
        except ValueError:
            raise InvalidArgument(f"--to {to!r} is neither an IPv4 nor a MAC address") from None
        kwargs = {n.vni: {"mtu": n.mtu, "proxy": n.proxy, "learning": n.learning,
                          "ageing": n.ageing, "maxaddress": n.maxaddress}
                  for n in self.networks.values()}
        ports = [(x.port_id, x.network.vni) for x in self.endpoints.values()]
        v = self.config.vtep
        out = tr.explain(self.switch, e.port_id, e.network.vni, e.cfg.mac,
                         str(e.cfg.address.ip), to, self._port_name, self._network_name,
                         kwargs, ports, v.local, v.src_port_range,
                         {str(x.cfg.address.ip): (n, x.cfg.mac) for n, x in self.endpoints.items()
                          if x.network.vni == e.network.vni})
        out.pop("records", None)
        return out

    # -- control ------------------------------------------------------------------------------

    def _vni(self, args: dict[str, Any]) -> int:
        vni = args.get("vni")
        if vni is None:
            if len(self.by_vni) == 1:
                return next(iter(self.by_vni))
            raise InvalidArgument("this VTEP serves several networks: say which with 'vni N' "
                                  f"(one of {', '.join(str(v) for v in sorted(self.by_vni))})")
        vni = int(vni)
        if vni not in self.by_vni:
            raise InvalidArgument(f"no network with VNI {vni} here "
                                  f"(serving {', '.join(str(v) for v in sorted(self.by_vni))})")
        return vni

    def fdb_rows(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        out = []
        for r in self.switch.fdb_dump():
            net = self.by_vni.get(r["vni"])
            row: dict[str, Any] = {"mac": r["mac"], "vni": r["vni"],
                                   "network": net.name if net else str(r["vni"]),
                                   "state": r["state"]}
            if r["port"] is not None:
                e = self._ports.get(r["port"])
                row["ifname"] = e.cfg.name if e else f"port{r['port']}"
            else:
                row["dst"] = r["dst"]
            if r["state"] == "learned":
                row["age"] = round(now - r["updated"], 1)
            out.append(row)
        return out

    def neigh_rows(self) -> list[dict[str, Any]]:
        out = []
        for r in self.switch.neigh_dump():
            net = self.by_vni.get(r["vni"])
            out.append({"ip": r["ip"], "lladdr": r["lladdr"], "vni": r["vni"],
                        "network": net.name if net else str(r["vni"]), "state": r["state"]})
        return out

    def stats(self) -> dict[str, Any]:
        c = self.switch.counters()
        v = self.config.vtep
        # I/O-side failures (TAP write errors, send errors) live outside the I/O-free core:
        # in C for the fast path, in this object for the Python path.
        if self.impl == "c":
            io = self.switch.io_counters()
        else:
            io = {"events_lost": 0,
                  "underlay": {"tx_errors": self.tx_errors},
                  "ports": {e.port_id: {"tx_errors": e.tx_errors} for e in self._ports.values()}}
        ports: dict[str, Any] = {}
        for pid, pc in c["ports"].items():
            e = self._ports.get(pid)
            if e is None:
                continue
            ports[e.cfg.name] = {"network": e.network.name, "vni": e.network.vni, **pc,
                                 **io["ports"].get(pid, {})}
        return {
            "vtep": {"name": v.name, "local": str(v.local), "port": v.port,
                     "fastpath": self.impl,
                     "flow_src_ports": self.underlay.flow_src_ports},
            "ports": ports,
            "underlay": {**c["underlay"], **io["underlay"]},
            "drops": c["drops"],
            "counters": {**c["counters"], "events_lost": io["events_lost"],
                         "trace_lost": getattr(self.switch, "trace_lost", 0)},
            "offload": self.offload_stats(),
            **({"store": self.store.status()} if self.store is not None else {}),
        }

    def tap_targets(self) -> list[tuple[str, str | None, int]]:
        """(endpoint, namespace, ifindex) of every TAP, taken on the loop's thread."""
        return [(name, e.tap.netns, e.tap.ifindex) for name, e in list(self.endpoints.items())]

    def stats_with_taps(self) -> dict[str, Any]:
        """stats() plus the containers' side of the TAPs; for callers off the event loop (the
        metrics thread): the netlink queries take about a millisecond per endpoint."""
        st = self.stats()
        add_tap_counters(st, tap_counters(self.tap_targets()))
        return st

    def offload_stats(self) -> dict[str, Any]:
        """What is really in use (probed), why anything is off, and the C counters.

        ``tap`` lists the TUNSETOFFLOAD features every endpoint got (their intersection, so a
        listed feature holds for all of them); ``tap_ports`` has each endpoint's own set.
        """
        per_port = {name: sorted(e.tap.offloads) for name, e in sorted(self.endpoints.items())}
        common: set[str] | None = None
        for feats in per_port.values():
            common = set(feats) if common is None else common & set(feats)
        out: dict[str, Any] = {
            "tap": sorted(common or ()),
            "tap_ports": per_port,
            "udp_gso": self.underlay.udp_gso,
            "udp_gro": self.underlay.udp_gro,
            "tap_coalesce": self._tap_coalesce,
        }
        if self.impl != "c":
            out["reason"] = "pure-Python path"
            return out
        # The core may drop an offload at run time (udp_gso goes off when a GSO send fails
        # with EIO: the route's device cannot checksum), so report its live state.
        out.update(self.switch.offload_state())
        configured = self.config.vtep.offload
        off: dict[str, str] = {}
        gso_why = ("kernel refused a GSO send (the underlay device cannot checksum)"
                   if self.underlay.udp_gso else "kernel refused UDP_SEGMENT")
        for name, active, refused in (
                ("tap", self._tap_offload and (not per_port or bool(common)),
                 "kernel refused TUNSETOFFLOAD"),
                ("udp_gso", out["udp_gso"], gso_why),
                ("udp_gro", out["udp_gro"], "kernel refused UDP_GRO")):
            if not active:
                off[name] = refused if name in configured else "disabled by [vtep] offload"
        if off:
            out["off"] = off
        out["counters"] = dict(self.switch.offload_counters())
        return out

    async def handle(self, cmd: str, args: dict[str, Any]) -> Any:
        now = time.monotonic()
        sw = self.switch
        if cmd == "fdb.show":
            return self.fdb_rows()
        if cmd in ("fdb.add", "fdb.append", "fdb.replace"):
            vni = self._vni(args)
            op = getattr(sw, "fdb_" + cmd.split(".")[1])
            op(vni, args["mac"], args["dst"], args.get("state", "permanent"), now)
            return {"ok": True}
        if cmd == "fdb.del":
            sw.fdb_del(self._vni(args), args["mac"], args.get("dst"))
            return {"ok": True}
        if cmd == "neigh.show":
            return self.neigh_rows()
        if cmd in ("neigh.add", "neigh.replace"):
            op = getattr(sw, "neigh_" + cmd.split(".")[1])
            op(self._vni(args), args["ip"], args["lladdr"], args.get("state", "permanent"))
            return {"ok": True}
        if cmd == "neigh.del":
            sw.neigh_del(self._vni(args), args["ip"])
            return {"ok": True}
        if cmd == "stats":
            st = self.stats()
            # the containers' side of the TAPs: netlink in their namespaces, off the loop
            add_tap_counters(st, await asyncio.to_thread(tap_counters, self.tap_targets()))
            return st
        if cmd == "endpoint.add":
            net = self.networks.get(args.get("network", ""))
            if net is None:
                raise InvalidArgument(f"no network {args.get('network')!r} here "
                                      f"(have: {', '.join(sorted(self.networks))})")
            try:
                ep = endpoint_from_args(net.name, args["name"], args["mac"], args["address"],
                                        args.get("netns"), args.get("ifname"))
            except ConfigError as err:
                raise InvalidArgument(err.detail if err.key is None
                                      else f"{err.key}: {err.detail}") from None
            attached = await self._attach(ep, net)
            return {"name": ep.name, "network": net.name, "vni": net.vni,
                    "port": attached.port_id}
        if cmd == "endpoint.del":
            self._detach(args["name"])
            return {"ok": True}
        if cmd == "explain":
            return self.explain(args)
        if cmd == "endpoint.show":
            return [{"name": n, "network": e.network.name, "vni": e.network.vni,
                     "mac": e.cfg.mac, "address": str(e.cfg.address), "netns": e.cfg.netns,
                     "ifname": e.cfg.ifname or n} for n, e in sorted(self.endpoints.items())]
        raise InvalidArgument(f"unknown command {cmd!r}")


def tap_counters(targets: list[tuple[str, str | None, int]]) -> dict[str, dict[str, int]]:
    """What the container's kernel counted on its side of each TAP (its eth0): frames its
    stack sent that the TAP's queue dropped because vxdp had not read them yet
    (``tap_queue_dropped``, the interface's tx_dropped: tun_net_xmit's drop when the ring is
    full) and frames vxdp wrote that its stack dropped (``tap_rx_dropped``). Under overload
    this is where packets go missing before vxdp ever sees them, so ``vxdp stats`` shows it
    next to vxdp's own counters. Endpoints whose namespace is gone are left out."""
    out: dict[str, dict[str, int]] = {}
    for name, ns, ifindex in targets:
        st = link_stats64(ns, ifindex)
        if st is not None:
            out[name] = {"tap_queue_dropped": st.get("tx_dropped", 0),
                         "tap_rx_dropped": st.get("rx_dropped", 0)}
    return out


def add_tap_counters(stats: dict[str, Any], taps: dict[str, dict[str, int]]) -> None:
    for name, counters in taps.items():
        port = stats["ports"].get(name)
        if port is not None:
            port.update(counters)


def raise_fd_limit(want: int = 65536) -> int:
    """Lift the soft RLIMIT_NOFILE towards the hard limit: a VTEP holds a TAP fd per endpoint
    plus, with UDP GSO, up to GSO_SOCK_MAX (256) per-source-port sockets, and the usual soft
    limit of 1024 is a distro default, not a decision. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


async def serve(config: Config) -> int:
    raise_fd_limit()
    vtep = Vtep(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    main_pid = os.getpid()

    def on_signal(signum: int, _frame: object) -> None:
        # Not loop.add_signal_handler: pyroute2 forks netns helpers (TAP set-up) and stops them
        # with SIGTERM; a fork inherits the loop's signal wakeup fd, so with add_signal_handler
        # a helper's SIGTERM reads as ours. A plain handler runs in the process that got the
        # signal, and a fork just leaves.
        if os.getpid() != main_pid:
            os._exit(0)
        log.info("%s: stopping", signal.Signals(signum).name)
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    await vtep.start()
    try:
        await stop.wait()
    finally:
        await vtep.stop()
    return 0


def run_main(config_path: str) -> int:
    """``vxdp run CONFIG``: foreground until SIGTERM/SIGINT; exit 0 after a clean teardown."""
    logging.basicConfig(level=logging.WARNING, format="vxdp: %(message)s", stream=sys.stderr)
    log.setLevel(os.environ.get("VXDP_LOG", "INFO").upper())
    try:
        config = load_config(config_path)
    except ConfigError as e:
        print(f"vxdp: {e}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("vxdp: 'vxdp run' needs root (it creates TAP devices and binds the VXLAN port)",
              file=sys.stderr)
        return 1
    try:
        import uvloop
        return uvloop.run(serve(config))
    except VxdpError as e:
        print(f"vxdp: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0

