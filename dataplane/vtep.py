"""One VTEP process: config → forwarding core + TAP endpoints + underlay sockets, wired on uvloop.

Per-packet work: each readiness callback makes ONE call into the core's burst interface
(``rx_tap_burst`` / ``rx_udp_burst``, see ``dataplane.fastpath``), which reads a burst,
forwards it and transmits in batches — in C with the compiled fast path, frame by frame in
Python with ``VXDP_NO_EXTENSIONS=1`` (slow, but the same decisions). Python then only hands
the core's events and trace records to ``dataplane.observe``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dataplane import commands, fastpath
from dataplane.config import Config, EndpointConfig, NetworkConfig, load_config
from dataplane.control import ControlServer
from dataplane.errors import ConfigError, EntryNotFound, InvalidArgument, VxdpError
from dataplane.observe import Observer
from dataplane.pmtu import PathMtu
from dataplane.ports import VNET_HDR_LEN, TapPort
from dataplane.underlay import Underlay
from dataplane.validate import ipaddr
from dataplane.wire import ZERO_MAC

log = logging.getLogger("vxdp")

AGEING_INTERVAL = 1.0      # seconds between ageing sweeps (the kernel's vxlan sweeps every ~10s)
BUSY_POLL_SLICE = 0.002    # longest busy_poll call: the loop (control, timers) gets its turn


@dataclass
class Endpoint:
    cfg: EndpointConfig
    network: NetworkConfig
    port_id: int
    tap: TapPort


class Vtep:
    """One ``vxdp run``: the networks of ``config``, their endpoints, the underlay sockets."""

    def __init__(self, config: Config) -> None:
        self.config = config
        v = config.vtep
        self.impl: str = fastpath.NAME
        self.switch: Any = fastpath.Switch(v.local, src_port_range=v.src_port_range,
                                           strict=v.strict, allow=v.allow, burst=v.burst,
                                           dstport=v.port)
        self.underlay = Underlay(v.local, v.port, v.udp6zerocsumrx)
        # the route MTU to each remote VTEP, for the core's PMTU signalling (pmtu.py)
        self.pmtu = PathMtu(self.switch, v.local, v.port)
        self.endpoints: dict[str, Endpoint] = {}
        self.ports: dict[int, Endpoint] = {}          # port id -> endpoint
        self.networks: dict[str, NetworkConfig] = {}
        self.by_vni: dict[int, NetworkConfig] = {}
        self.observe = Observer(self)
        self.control: ControlServer | None = None
        self.store: Any = None      # dataplane.store.etcd.EtcdStore when [store] is configured
        # dataplane.docker.runtime.Containers: Docker's driver ([docker]) and CNI's endpoints
        self.containers: Any = None
        # The offloads in use, decided once in start(): only what both the config and the
        # core allow (the pure-Python core has none), then what the kernel grants.
        self.tap_offload = False    # endpoints get IFF_VNET_HDR + TUNSETOFFLOAD
        self.tap_coalesce = False
        self._gso_on = False        # UDP GSO on as far as we have logged
        self._busy_poll = 0.0       # [vtep] busy_poll in seconds
        self._next_port = 0
        self._metrics: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ageing: asyncio.TimerHandle | None = None
        self._sweeping = False     # an ageing sweep is under way (_age_step)
        self._pmtu_task: asyncio.Future[None] | None = None   # path MTUs being measured
        self._stopped = False

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        v = self.config.vtep
        for net in self.config.networks:
            self.add_network(net)
        want = v.offload & self.switch.OFFLOADS
        self.underlay.open(gro="udp_gro" in want, gso="udp_gso" in want)
        try:
            # Without CAP_NET_RAW there is no raw socket: datagrams then leave from the UDP
            # socket itself (fixed source port, said in stats).
            for fam in self.underlay.families:
                self.switch.set_tx_socket(self.underlay.tx_socket(fam).fileno())
            # Every TAP of this VTEP gets a vnet header when "tap" is on, so coalescing
            # (which the core applies only to ports with a vnet header) is on with it.
            self.tap_offload = self.tap_coalesce = "tap" in want
            self._gso_on = self.underlay.udp_gso
            self.switch.set_offload(udp_gso=self.underlay.udp_gso,
                                    udp_gro=self.underlay.udp_gro,
                                    tap_coalesce=self.tap_coalesce)
            if v.busy_poll and not self.switch.BUSY_POLL:
                log.warning("vxdp %s: busy_poll needs the Cython fast path; ignored", v.name)
            elif v.busy_poll:
                self._busy_poll = v.busy_poll * 1e-6
            # The readiness callbacks are the core's own (no Python frame per burst): it
            # reads the clock, runs the burst, busy-polls when asked, and calls _after_burst
            # only when Python has something to do (events, trace records, a TAP gone).
            self.switch.set_readiness(self._after_burst, busy_poll=self._busy_poll,
                                      busy_limit=BUSY_POLL_SLICE,
                                      sock_fds=self.underlay.rx_fds())
            # the configured peers' paths are known before the first frame
            self._pmtu_tick(time.monotonic())
            for net in self.config.networks:
                for ep in net.endpoints:
                    await self.attach(ep, net)
            self.control = ControlServer(v.control, self.handle, self.observe.streams())
            await self.control.start()
            if v.metrics:
                from dataplane import metrics
                self._metrics = metrics.start(v.metrics, self.observe.stats_with_taps)
            if self.config.store is not None:
                # Never blocks start-up: an unreachable etcd leaves the static tables in
                # force while the store retries in the background.
                from dataplane.store.etcd import EtcdStore
                self.store = EtcdStore(self.config.store, self)
                await self.store.start()
            # After the store: the networks and endpoints it restores are published at once.
            from dataplane.docker.runtime import Containers
            self.containers = Containers(self)
            await self.containers.start()
        except BaseException:
            await self.stop()
            raise
        for fd in self.underlay.rx_fds():
            self._loop.add_reader(fd, self.switch.udp_ready, fd)
        self._ageing = self._loop.call_later(AGEING_INTERVAL, self._age)
        self.observe.warm_up()
        log.info("vxdp %s: serving %d network(s) on %s (%s fast path)", v.name,
                 len(self.networks), " and ".join(
                     f"[{a}]:{v.port}" if a.version == 6 else f"{a}:{v.port}"
                     for a in v.local if a is not None), self.impl)

    async def stop(self) -> None:
        """Remove everything this process created: TAPs, control socket, sockets."""
        if self._stopped:
            return
        self._stopped = True
        if self.containers is not None:
            # The plugin socket goes; the containers' TAPs are persistent and stay for the
            # next start to re-attach (dataplane.docker.endpoints).
            await self.containers.stop()
        if self.store is not None:
            await self.store.close()
        if self._ageing is not None:
            self._ageing.cancel()
        if self._loop is not None:
            for fd in self.underlay.rx_fds():
                self._loop.remove_reader(fd)
        for name in list(self.endpoints):
            self.detach(name)
        # End live streams first so their clients see a clean end, then close the server.
        self.observe.end_streams()
        await asyncio.sleep(0)
        if self.control is not None:
            await self.control.close()
        if self._metrics is not None:
            server = self._metrics[0] if isinstance(self._metrics, tuple) else self._metrics
            server.shutdown()
        self.switch.close()
        self.underlay.close()

    def add_network(self, net: NetworkConfig) -> None:
        """Serve ``net``: at start-up from the config, or at run time (``docker network
        create``); a store then follows the network too."""
        if net.name in self.networks:
            raise InvalidArgument(f"network {net.name} already exists")
        sw = self.switch
        sw.add_network(net.vni, mtu=net.mtu, proxy=net.proxy, learning=net.learning,
                       ageing=net.ageing, maxaddress=net.maxaddress,
                       max_learned=net.max_learned,
                       max_learned_per_port=net.max_learned_per_port,
                       ttl=net.ttl, tos=net.tos, df=net.df, flowlabel=net.flowlabel)
        # Docker's peerAdd: one permanent FDB entry + one permanent neighbour entry per peer.
        for p in net.peers:
            sw.fdb_add(net.vni, p.mac, p.vtep, "permanent")
            for ip in p.addresses:      # one neighbour entry per address (dual stack)
                sw.neigh_add(net.vni, ip, p.mac, "permanent")
        # The flood list: all-zeros entries, one remote each (bridge fdb append 00:00:..).
        for vtep in net.flood:
            sw.fdb_append(net.vni, ZERO_MAC, vtep, "permanent")
        self.networks[net.name] = net
        self.by_vni[net.vni] = net
        if self.store is not None:
            self.store.add_network(net.name, net.vni)

    def del_network(self, name: str) -> None:
        """Stop serving network ``name`` at run time (``docker network rm``): its endpoints
        are detached, the store stops following it, the core drops its tables."""
        net = self.networks.get(name)
        if net is None:
            raise EntryNotFound(f"no network {name}")
        for ep_name in [n for n, e in self.endpoints.items() if e.network.name == name]:
            self.detach(ep_name)
        if self.store is not None:
            self.store.del_network(name)    # withdraws what it applied while we still can
        self.switch.del_network(net.vni)
        del self.networks[name]
        del self.by_vni[net.vni]

    async def attach(self, ep: EndpointConfig, net: NetworkConfig) -> Endpoint:
        if ep.name in self.endpoints:
            raise InvalidArgument(f"endpoint {ep.name} already exists")
        # pyroute2's synchronous IPRoute refuses to run on a thread with a running loop:
        # create_async does the netlink work in a worker thread.
        tap = await TapPort.create_async(ep.name, ep.mac, net.mtu, ep.addresses, ep.netns,
                                         ep.ifname, vnet_hdr=self.tap_offload,
                                         offload=self.tap_offload,
                                         create_netns=ep.netns_create)
        return self.attach_tap(ep, net, tap)

    def attach_tap(self, ep: EndpointConfig, net: NetworkConfig, tap: TapPort) -> Endpoint:
        """Make an open TAP a port of ``net``: one :meth:`attach` created, or one the Docker
        driver or a re-attach after a restart opened (``dataplane.docker``). On failure the
        TAP is closed."""
        if ep.name in self.endpoints:
            tap.close()
            raise InvalidArgument(f"endpoint {ep.name} already exists")
        pid = self._next_port
        self._next_port += 1
        try:
            self.switch.add_port(pid, net.vni, ep.mac, time.monotonic())
        except BaseException:
            tap.close()
            raise
        e = Endpoint(ep, net, pid, tap)
        self.endpoints[ep.name] = e
        self.ports[pid] = e
        self.switch.set_port_fd(pid, tap.fd, vnet_hdr_len=VNET_HDR_LEN if tap.vnet_hdr else 0)
        if self._loop is not None:
            self._loop.add_reader(tap.fd, self.switch.tap_ready, pid, tap.fd)
        if self.store is not None:
            self.store.publish(net, ep)
        return e

    def detach(self, name: str) -> None:
        e = self.endpoints.pop(name, None)
        if e is None:
            raise EntryNotFound(f"no endpoint {name}")
        self.ports.pop(e.port_id, None)
        if self._loop is not None:
            self._loop.remove_reader(e.tap.fd)
        try:
            self.switch.del_port(e.port_id)
        except EntryNotFound:
            pass
        e.tap.close()
        if self.store is not None and not self._stopped:
            self.store.withdraw(e.network, e.cfg)

    # -- remote state (static config, or pushed by the store: dataplane.store.StoreHost) -----

    def local_endpoints(self) -> list[tuple[NetworkConfig, EndpointConfig]]:
        return [(e.network, e.cfg) for e in self.endpoints.values()]

    def peer_add(self, network: str, mac: str, ip: str | Sequence[str], vtep: str,
                 port: int = 0) -> bool:
        """A remote endpoint appeared: permanent FDB + neighbour entries (Docker's peerAdd),
        one neighbour entry per address (dual stack); ``port``: its VTEP's UDP port when
        known. Idempotent (replace); False when this VTEP does not serve ``network``."""
        net = self.networks.get(network)
        if net is None:
            return False
        self.switch.fdb_replace(net.vni, mac, vtep, "permanent", time.monotonic(),
                                dst_port=port)
        for a in [ip] if isinstance(ip, str) else ip:
            self.switch.neigh_replace(net.vni, a, mac, "permanent")
        return True

    def peer_del(self, network: str, mac: str, ip: str | Sequence[str]) -> bool:
        """A remote endpoint went away (Docker's peerDelete). Missing entries are fine."""
        net = self.networks.get(network)
        if net is None:
            return False
        vni = net.vni
        ops: list[Callable[[], object]] = [functools.partial(self.switch.fdb_del, vni, mac)]
        ops += [functools.partial(self.switch.neigh_del, vni, a)
                for a in ([ip] if isinstance(ip, str) else ip)]
        for op in ops:
            try:
                op()
            except EntryNotFound:
                pass
        return True

    def flood_add(self, network: str, vtep: str) -> bool:
        """Another VTEP serves ``network``: head-end replication to it (append is idempotent)."""
        net = self.networks.get(network)
        if net is None or ipaddr(vtep) in self.config.vtep.local:
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

    def emit_event(self, rec: dict[str, Any]) -> None:
        """An event from outside the dataplane (the store's state changes) for `vxdp events`."""
        self.observe.emit(rec)

    # -- data path ----------------------------------------------------------------------------

    def _after_burst(self) -> None:
        """Python's part after a burst (the core calls it only when there is any)."""
        for gone in self.switch.gone_ports():
            self._port_gone(gone)
        self.observe.publish_events()
        if self.observe.tracers:
            self.observe.publish_trace()

    def _port_gone(self, pid: int) -> None:
        """The container (its netns) went away with our TAP in it: drop the port, keep going."""
        e = self.ports.get(pid)
        if e is None:
            return
        log.warning("endpoint %s disappeared; removing its port", e.cfg.name)
        self.detach(e.cfg.name)
        self.observe.emit({"kind": "port_gone", "network": e.network.name,
                           "vni": e.network.vni, "endpoint": e.cfg.name,
                           "line": f"endpoint {e.cfg.name} gone (network {e.network.name})"})

    def _pmtu_tick(self, now: float) -> None:
        """Measure the paths to the remote VTEPs now if due, in this thread (at start: the
        configured peers are covered before the first frame)."""
        self._pmtu_report(self.pmtu.tick(now))

    def _pmtu_due(self, now: float) -> None:
        """The one-second tick's part: when a measurement is due, run it in a worker thread
        (a socket per remote VTEP, ~12 µs each: 50 ms for 4096 of them, which the loop must
        not wait for) and apply the results back on the loop."""
        if self._pmtu_task is not None and not self._pmtu_task.done():
            return
        want = self.pmtu.due(now)
        if want:
            self._pmtu_task = asyncio.ensure_future(self._pmtu_measure(want))
        elif want is not None:
            self._pmtu_report(self.pmtu.apply(want, {}))

    async def _pmtu_measure(self, want: list[Any]) -> None:
        try:
            mtus = await asyncio.to_thread(self.pmtu.measure_all, want)
        except Exception as e:   # noqa: BLE001 - a failed round keeps what is known
            log.warning("vxdp %s: measuring the path MTUs failed: %s", self.config.vtep.name, e)
            return
        if not self._stopped:
            self._pmtu_report(self.pmtu.apply(want, mtus))

    def _pmtu_report(self, changes: list[Any]) -> None:
        """Log each path MTU change and tell it on ``vxdp events``."""
        for dst, old, new in changes:
            if new:
                line = (f"path MTU to VTEP {dst}: {new} (was {old or 'unknown'}); inner "
                        f"packets over {new - (70 if dst.version == 6 else 50)} bytes get "
                        f"an ICMP back")
            else:
                line = f"path MTU to VTEP {dst}: unknown (was {old}); no check"
            log.info("vxdp %s: %s", self.config.vtep.name, line)
            self.observe.emit({"kind": "pmtu", "vtep": str(dst), "mtu": new, "old": old,
                               "line": line})

    def _age(self) -> None:
        """The one-second tick. It is rescheduled whatever happens in it: an exception in one
        of its jobs (logged by the loop) must not end ageing and path measurements for good."""
        try:
            now = time.monotonic()
            if not self._sweeping:
                self._age_step(now)
            self._pmtu_due(now)
            self.switch.offload_gc()   # closes per-source-port GSO sockets idle for 30 ticks
            if self._gso_on and not self.switch.offload_state()["udp_gso"]:
                # the core switched UDP GSO off after the kernel refused a send with EIO
                self._gso_on = False
                log.warning("vxdp %s: UDP GSO refused by the kernel (the underlay device "
                            "cannot checksum); sending datagram by datagram from now on",
                            self.config.vtep.name)
            self.observe.publish_events()
        finally:
            if self._loop is not None and not self._stopped:
                self._ageing = self._loop.call_later(AGEING_INTERVAL, self._age)

    def _age_step(self, now: float) -> None:
        """One step of the FDB ageing sweep, the next one in the next turn of the loop: a
        sweep of a 1M-entry table in one call held forwarding for 7-8 ms every second. A step
        that raises ends this sweep (the next tick starts another), never ageing itself."""
        self._sweeping = False
        _, done = self.switch.age_step(now)
        if not done and self._loop is not None and not self._stopped:
            self._sweeping = True
            self._loop.call_soon(self._age_more, now)

    def _age_more(self, now: float) -> None:
        if self._stopped:
            self._sweeping = False
            return
        self._age_step(now)
        self.observe.publish_events()

    # -- control ------------------------------------------------------------------------------

    async def handle(self, cmd: str, args: dict[str, Any]) -> Any:
        return await commands.dispatch(self, cmd, args)


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

