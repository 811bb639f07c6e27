"""What a VTEP shows of itself (DESIGN.md §4): tables, counters, events, live traces, captures
and dry runs. The wiring (``dataplane.vtep``) forwards; this half only reads what the core
recorded, renders it and hands it to subscribers — and never makes the dataplane wait for them:
every subscriber has a bounded queue, and a full queue loses records (counted), not time.

Nothing here holds the event loop (which forwards) for long, whatever the size of the tables:
table dumps go a slice at a time (:meth:`Observer.table_slices`), ``explain`` copies only the
entries its frame can read, trace records are rendered a few per turn of the loop, the trace
decoder (scapy) is imported in a thread at start-up, and the number of stream subscribers is
capped (``[vtep] max_subscribers``).
"""

from __future__ import annotations

import asyncio
import base64
import collections
from array import array
from bisect import bisect_left
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any

from dataplane.errors import InvalidArgument, VxdpError
from dataplane.neigh import sort_key as neigh_sort_key
from dataplane.netns import link_stats64

if TYPE_CHECKING:
    from dataplane.vtep import Vtep

TRACE_BUDGET = 5000.0      # trace records rendered per second at most (the rest: counted lost)
TRACE_SLICE = 16           # records rendered per turn of the loop (tens of µs each, scapy)
TRACE_PENDING = 4096       # records drained from the core, not rendered yet (more: lost)
EVENT_QUEUE = 4096         # per subscriber; a slow reader loses events, the dataplane never waits
DUMP_SLICE = 256           # table entries per dump slice (core + rows: ~0.3 ms)
# fdb/neigh show sort their rows when the whole table has at most this many: sorting is one
# call, ~0.4 ms per 1000 rows here, so a larger table comes in table order (a dump of 1M
# entries sorted would hold the loop for seconds; `| sort` does it in the reader's process).
SORT_MAX = 2048
DUMPS_AT_ONCE = 8          # table dumps in progress at once (the cores keep 16 cursors)
SEEN_SHARDS = 4096         # arrays the rows a dump has sent are remembered in (see _slices)
FORGET_SLICE = 512         # of those freed per turn of the loop after the dump
TRIM_DELAY = 0.5           # seconds after a stream closes before freed memory is given back

Stream = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]


def _forget(seen: list[array[int]]) -> None:
    """Free a finished dump's memory of rows a few arrays per turn of the loop."""
    del seen[-FORGET_SLICE:]
    if seen:
        asyncio.get_running_loop().call_soon(_forget, seen)


def _fdb_order(row: dict[str, Any]) -> tuple[int, str]:
    # Stable sort on (VNI, MAC): the rows of one entry (a flood list's VTEPs) keep their
    # order, as in the cores' fdb_dump.
    return row["vni"], row["mac"]


def _neigh_order(row: dict[str, Any]) -> tuple[int, tuple[int, int]]:
    # the cores' order: IPv4 before IPv6, each by address (neigh.sort_key)
    return row["vni"], neigh_sort_key(ip_address(row["ip"]))


@dataclass
class Subscriber:
    queue: asyncio.Queue[dict[str, Any]]
    lost: int = 0
    port: str | None = None       # trace/capture filters
    vni: int | None = None
    capture: bool = False
    ifaces: dict[int, int] = field(default_factory=dict)   # capture: port id -> pcapng iface


class Observer:
    """The observability half of one :class:`~dataplane.vtep.Vtep`."""

    def __init__(self, vtep: Vtep) -> None:
        self.vtep = vtep
        self.subscribers: list[Subscriber] = []   # events, and the end of every stream
        self.tracers: list[Subscriber] = []       # trace and capture
        self.open_streams = 0                     # trace/capture/events clients (the cap)
        self.wall_offset = time.time() - time.monotonic()
        self._trace_tokens = 0.0
        self._trace_refill = 0.0
        self._pending: collections.deque[Any] = collections.deque()   # drained, not rendered
        self._render_scheduled = False
        self._dumps = asyncio.Semaphore(DUMPS_AT_ONCE)
        self._trim: asyncio.TimerHandle | None = None

    def warm_up(self) -> None:
        """Import the trace decoder (scapy: a quarter of a second) in a thread, at start-up,
        so that neither the first ``explain`` nor the first ``trace`` stalls forwarding; then
        freeze what start-up made (see :func:`_warm_up`)."""
        threading.Thread(target=_warm_up, name="vxdp-warm-up", daemon=True).start()

    # -- names --------------------------------------------------------------------------------

    def port_name(self, pid: int) -> str:
        e = self.vtep.ports.get(pid)
        return e.cfg.name if e else f"port{pid}"

    def network_name(self, vni: int) -> str:
        net = self.vtep.by_vni.get(vni)
        return net.name if net else str(vni)

    def _location(self, loc: str) -> str:
        if loc.startswith("port:"):
            e = self.vtep.ports.get(int(loc[5:]))
            return f"port {e.cfg.name}" if e else loc
        return f"dst {loc}" if loc else ""

    # -- tables -------------------------------------------------------------------------------

    def fdb_row(self, r: dict[str, Any], now: float) -> dict[str, Any]:
        """A core's FDB row as ``fdb show --json`` has it (network and endpoint by name)."""
        row: dict[str, Any] = {"mac": r["mac"], "vni": r["vni"],
                               "network": self.network_name(r["vni"]), "state": r["state"]}
        if r["port"] is not None:
            row["ifname"] = self.port_name(r["port"])
        else:
            row["dst"] = r["dst"]
            # a remote's own UDP port and VNI on the wire, only where they differ from this
            # VTEP's port and the network's VNI (``bridge fdb show`` prints them likewise)
            if r.get("dst_port"):
                row["port"] = r["dst_port"]
            if r.get("dst_vni"):
                row["remote_vni"] = r["dst_vni"]
        if r["state"] == "learned":
            row["age"] = round(now - r["updated"], 1)
        return row

    def neigh_row(self, r: dict[str, Any], now: float) -> dict[str, Any]:
        return {"ip": r["ip"], "lladdr": r["lladdr"], "vni": r["vni"],
                "network": self.network_name(r["vni"]), "state": r["state"]}

    async def table_slices(self, table: str) -> AsyncGenerator[list[dict[str, Any]], None]:
        """``fdb show`` / ``neigh show`` (``table`` "fdb" or "neigh") a slice at a time, from
        the core's dump in slices (``*_dump_chunk``) with a turn of the loop after each: the
        loop is never held for the table, whatever its size. A row seen twice is sent once.
        Sorted (VNI, then MAC or address) when the whole table has at most SORT_MAX rows,
        else in table order: the first SORT_MAX rows are held back until that is known."""
        chunk = getattr(self.vtep.switch, f"{table}_dump_chunk")
        shape, order = ((self.fdb_row, _fdb_order) if table == "fdb"
                        else (self.neigh_row, _neigh_order))
        async with self._dumps:
            seen: list[array[int]] = [array("q") for _ in range(SEEN_SHARDS)]
            try:
                async for rows in self._slices(chunk, shape, order, seen):
                    yield rows
            finally:
                asyncio.get_running_loop().call_soon(_forget, seen)

    async def _slices(self, chunk: Callable[[int, int], tuple[list[dict[str, Any]], int]],
                      shape: Callable[[dict[str, Any], float], dict[str, Any]],
                      order: Callable[[dict[str, Any]], Any], seen: list[array[int]]
                      ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The rows of a dump, SORT_MAX of them held back as table_slices says. Each row sent
        is remembered by its hash (two distinct rows of a million share one with odds of
        about 1e-8, and only that one would be left out), in sorted arrays of machine
        integers, SEEN_SHARDS of them: no Python object per row, so nothing for the cyclic
        collector to walk (a set of a million ints cost a 40 ms collection in the middle of
        a dump, and an arena munmap each when freed), and no big table to resize."""
        held: list[dict[str, Any]] | None = []
        cursor = 0
        while cursor != -1:
            raw, cursor = chunk(cursor, DUMP_SLICE)
            now = time.monotonic()
            rows = []
            for r in raw:
                key = hash((r.get("vni"), r.get("mac"), r.get("ip"), r.get("dst"),
                            r.get("port"), r.get("dst_port"), r.get("dst_vni")))
                shard = seen[key % SEEN_SHARDS]
                at = bisect_left(shard, key)
                if at == len(shard) or shard[at] != key:
                    shard.insert(at, key)
                    rows.append(shape(r, now))
            if held is not None:
                held += rows
                rows, held = (held, None) if len(held) > SORT_MAX else ([], held)
            if rows:
                yield rows
            if cursor != -1:
                await asyncio.sleep(0)
        if held is not None:
            held.sort(key=order)
            yield held

    # -- counters -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        v = self.vtep
        c = v.switch.counters()
        io = v.switch.io_counters()
        ports: dict[str, Any] = {}
        for pid, pc in c["ports"].items():
            e = v.ports.get(pid)
            if e is not None:
                ports[e.cfg.name] = {"network": e.network.name, "vni": e.network.vni, **pc,
                                     **io["ports"].get(pid, {})}
        vc = v.config.vtep
        return {
            "vtep": {"name": vc.name, "local": str(vc.local), "port": vc.port,
                     "fastpath": v.impl, "flow_src_ports": v.underlay.flow_src_ports,
                     "streams": self.open_streams, "max_subscribers": vc.max_subscribers},
            "ports": ports,
            "underlay": {**c["underlay"], **io["underlay"]},
            "drops": c["drops"],
            "counters": {**c["counters"], "events_lost": io["events_lost"],
                         "trace_lost": v.switch.trace_lost},
            "offload": self.offload_stats(),
            "paths": self.path_stats(),
            **({"store": v.store.status()} if v.store is not None else {}),
        }

    def path_stats(self) -> dict[str, dict[str, int]]:
        """The route MTU measured to each remote VTEP (pmtu.py) and the longest inner packet
        that fits it, past which an inner DF packet gets an ICMP back (RFC 7348 §4.3: VTEPs
        must not fragment; the kernel's skb_tunnel_check_pmtu)."""
        return {str(a): {"mtu": mtu, "inner_max": mtu - (70 if a.version == 6 else 50)}
                for a, mtu in sorted(self.vtep.pmtu.known.items(),
                                     key=lambda kv: (kv[0].version, kv[0].packed))}

    def tap_targets(self) -> list[tuple[str, str | None, int]]:
        """(endpoint, namespace, ifindex) of every TAP, taken on the loop's thread."""
        return [(name, e.tap.netns, e.tap.ifindex) for name, e in list(self.vtep.endpoints.items())]

    def stats_with_taps(self) -> dict[str, Any]:
        """stats() plus the containers' side of the TAPs; for callers off the event loop (the
        metrics thread): the netlink queries take about a millisecond per endpoint."""
        st = self.stats()
        add_tap_counters(st, tap_counters(self.tap_targets()))
        return st

    async def stats_async(self) -> dict[str, Any]:
        """stats() plus the TAP counters, the netlink part in a worker thread."""
        st = self.stats()
        add_tap_counters(st, await asyncio.to_thread(tap_counters, self.tap_targets()))
        return st

    def offload_stats(self) -> dict[str, Any]:
        """What is really in use (probed), why anything is off, and the core's counters.

        ``tap`` lists the TUNSETOFFLOAD features every endpoint got (their intersection, so a
        listed feature holds for all of them); ``tap_ports`` has each endpoint's own set.
        """
        v = self.vtep
        per_port = {name: sorted(e.tap.offloads) for name, e in sorted(v.endpoints.items())}
        common: set[str] | None = None
        for feats in per_port.values():
            common = set(feats) if common is None else common & set(feats)
        out: dict[str, Any] = {
            "tap": sorted(common or ()),
            "tap_ports": per_port,
            "udp_gso": v.underlay.udp_gso,
            "udp_gro": v.underlay.udp_gro,
            "tap_coalesce": v.tap_coalesce,
        }
        if not v.switch.OFFLOADS:
            out["reason"] = "pure-Python path"
            out["counters"] = dict(v.switch.offload_counters())
            return out
        # The core may drop an offload at run time (udp_gso goes off when a GSO send fails
        # with EIO: the route's device cannot checksum), so report its live state.
        out.update(v.switch.offload_state())
        configured = v.config.vtep.offload
        off: dict[str, str] = {}
        gso_why = ("kernel refused a GSO send (the underlay device cannot checksum)"
                   if v.underlay.udp_gso else "kernel refused UDP_SEGMENT")
        for name, active, refused in (
                ("tap", v.tap_offload and (not per_port or bool(common)),
                 "kernel refused TUNSETOFFLOAD"),
                ("udp_gso", out["udp_gso"], gso_why),
                ("udp_gro", out["udp_gro"], "kernel refused UDP_GRO")):
            if not active:
                off[name] = refused if name in configured else "disabled by [vtep] offload"
        if off:
            out["off"] = off
        out["counters"] = dict(v.switch.offload_counters())
        return out

    # -- events -------------------------------------------------------------------------------

    def event_record(self, ev: tuple[str, int, str, str, str]) -> dict[str, Any]:
        kind, vni, key, old, new = ev
        name = self.network_name(vni)
        rec: dict[str, Any] = {"kind": kind, "vni": vni, "network": name, "time": time.time()}
        if kind == "l3miss":
            rec["ip"] = key
        else:
            rec["mac"] = key
        where = ""
        if kind in ("learned", "learn_limit"):
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

    def publish_events(self) -> None:
        """The core's events since the last call, to every events subscriber (rendered only
        when someone listens: a flood of learning events costs nothing here otherwise)."""
        events = self.vtep.switch.events()
        if self.subscribers:
            for ev in events:
                self.emit(self.event_record(ev))

    def emit(self, rec: dict[str, Any]) -> None:
        for s in self.subscribers:
            try:
                s.queue.put_nowait(rec)
            except asyncio.QueueFull:
                s.lost += 1

    def end_streams(self) -> None:
        """Tell every open stream to end (the VTEP is stopping)."""
        for s in self.subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                s.queue.put_nowait({"end": True})

    async def _events(self, args: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        sub = Subscriber(asyncio.Queue(EVENT_QUEUE))
        self.subscribers.append(sub)
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
            self.subscribers.remove(sub)

    # -- streams: opened under the subscriber cap ---------------------------------------------

    def streams(self) -> dict[str, Stream]:
        """The stream factories for the control server: ``events``, ``trace``, ``capture``."""
        return {"events": self._opener("events", lambda a: self._events(a)),
                "trace": self._opener("trace", lambda a: self._trace(a, capture=False)),
                "capture": self._opener("capture", lambda a: self._trace(a, capture=True))}

    def _opener(self, cmd: str, records: Callable[[dict[str, Any]],
                                                  AsyncGenerator[dict[str, Any], None]]
                ) -> Stream:
        def open_stream(args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
            # Called by the server before it answers, so everything refused here (bad
            # arguments, a full house) is a plain {"ok": false, "error": ...} reply.
            from dataplane.commands import check_args

            checked = check_args(cmd, args)
            limit = self.vtep.config.vtep.max_subscribers
            if self.open_streams >= limit:
                raise VxdpError(f"{cmd}: too many stream clients ({self.open_streams} "
                                "trace/capture/events streams are open, max_subscribers = "
                                f"{limit} in [vtep]): close one or raise the limit")
            if cmd != "events":
                self._trace_subscriber(checked, cmd == "capture")   # refuses a bad port/VNI
            self.open_streams += 1
            return _Opened(records(checked), self._stream_closed)
        return open_stream

    def _stream_closed(self) -> None:
        """A stream went: its queue and socket buffers are free again, but glibc keeps freed
        pages for reuse, so the RSS would stay at its peak (500 idle trace clients: 65 →
        140 MB, and 127 MB after they closed). Hand them back TRIM_DELAY after the last of a
        wave of closes, in a thread (trimming a big heap takes a while)."""
        self.open_streams -= 1
        if self._trim is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._trim = loop.call_later(TRIM_DELAY, self._trim_now)

    def _trim_now(self) -> None:
        self._trim = None
        threading.Thread(target=_trim_heap, name="vxdp-trim", daemon=True).start()

    # -- trace and capture (off unless someone watches) ---------------------------------------

    def _trace_budget(self, n: int) -> int:
        """How many of `n` new records may be rendered now: rendering (scapy decode) costs tens
        of µs a record, on the loop that forwards, so a token bucket bounds it; the rest are
        counted as lost for every watcher instead of slowing the dataplane down."""
        now = time.monotonic()
        self._trace_tokens = min(TRACE_BUDGET, self._trace_tokens
                                 + (now - self._trace_refill) * TRACE_BUDGET)
        self._trace_refill = now
        keep = min(n, int(self._trace_tokens))
        if keep < n:
            for sub in self.tracers:
                sub.lost += n - keep
        self._trace_tokens -= keep
        return keep

    def publish_trace(self) -> None:
        """Hand the core's raw records to the watchers, TRACE_SLICE rendered per turn of the
        loop (the rest are rendered in the next turns, so a full ring never holds the loop).
        Formatting happens once per record, and only for records some watcher wants; a full
        queue loses the record for that watcher (counted) — the dataplane never waits for a
        reader."""
        recs = self.vtep.switch.trace_drain()
        recs = recs[:self._trace_budget(len(recs))]
        room = TRACE_PENDING - len(self._pending)
        if len(recs) > room:
            for sub in self.tracers:
                sub.lost += len(recs) - room
            recs = recs[:room]
        self._pending.extend(recs)
        self._render_some()

    def _render_some(self) -> None:
        from dataplane import trace as tr

        self._render_scheduled = False
        for _ in range(min(TRACE_SLICE, len(self._pending))):
            rec = self._pending.popleft()
            described: dict[str, Any] | None = None
            blocks: list[bytes] | None = None
            for sub in self.tracers:
                if not self._wants(sub, rec):
                    continue
                if sub.capture:
                    if blocks is None:
                        blocks = tr.capture_blocks(rec, sub.ifaces.get, len(sub.ifaces),
                                                   self.vtep.config.vtep.local,
                                                   self.wall_offset)
                    item: dict[str, Any] = {"pcapng": b"".join(blocks)}
                else:
                    if described is None:
                        described = tr.describe(rec, self.port_name, self.network_name,
                                                self.wall_offset, self._neigh_of)
                    item = described
                try:
                    sub.queue.put_nowait(item)
                except asyncio.QueueFull:
                    sub.lost += 1
        if self._pending and not self._render_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:    # driven by hand (tests): the next publish goes on
                return
            self._render_scheduled = True
            loop.call_soon(self._render_some)

    def _neigh_of(self, vni: int, ip: str) -> str | None:
        """The neighbour entry a proxy reply used, for the trace line: one lookup."""
        try:
            n = self.vtep.switch.neigh_get(vni, ip)
        except VxdpError:
            return None
        return f"{n['lladdr']} {n['state'].upper()}" if n is not None else None

    def _wants(self, sub: Subscriber, rec: Any) -> bool:
        """Does `sub` want trace record `rec` (its VNI / endpoint filters, room in its queue)?"""
        if sub.vni is not None and rec[2] != sub.vni:
            return False
        if sub.queue.full():
            sub.lost += 1       # nobody to take it: do not even render it
            return False
        if sub.port is not None:
            src_port = int(rec[1][5:]) if rec[1].startswith("port:") else None
            touched = {src_port} | {o[1] for o in rec[6] if o[0] == "port"}
            e = self.vtep.endpoints.get(sub.port)
            if e is None or e.port_id not in touched:
                return False
        return True

    def _trace_subscriber(self, args: dict[str, Any], capture: bool) -> Subscriber:
        v = self.vtep
        port = args.get("port")
        if port is not None and port not in v.endpoints:
            raise InvalidArgument(f"no endpoint {port!r} (have: {', '.join(sorted(v.endpoints))})")
        vni = args.get("vni")
        if vni is not None and int(vni) not in v.by_vni:
            raise InvalidArgument(f"no network with VNI {vni} here "
                                  f"(serving {', '.join(str(n) for n in sorted(v.by_vni))})")
        return Subscriber(asyncio.Queue(EVENT_QUEUE), port=port,
                          vni=int(vni) if vni is not None else None, capture=capture)

    async def _trace(self, args: dict[str, Any], capture: bool
                     ) -> AsyncGenerator[dict[str, Any], None]:
        from dataplane import trace as tr
        from dataplane.control import StreamEnd

        sub = self._trace_subscriber(args, capture)
        count = int(args.get("count") or 0)
        if capture:
            names = []
            for i, (name, e) in enumerate(sorted(self.vtep.endpoints.items())):
                sub.ifaces[e.port_id] = i
                names.append((name, tr.LINKTYPE_ETHERNET))
            names.append(("underlay", tr.LINKTYPE_IPV4 if self.vtep.config.vtep.local.v6 is None
                                      else tr.LINKTYPE_RAW))
            yield {"pcapng": base64.b64encode(tr.pcapng_header(names)).decode()}
        else:
            # scapy (the decoder) takes ~0.3 s to import: warm_up() did it in a thread at
            # start-up; should it not be done yet, wait for it off the loop.
            await asyncio.to_thread(tr.warm_up)
        switch = self.vtep.switch
        self.tracers.append(sub)
        switch.set_trace(True)
        lost_before = switch.trace_lost
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
            self.tracers.remove(sub)
            if not self.tracers:
                switch.set_trace(False)
                self._pending.clear()
        yield StreamEnd(records=sent, lost=sub.lost, ring_lost=switch.trace_lost - lost_before)

    # -- explain ------------------------------------------------------------------------------

    async def explain(self, args: dict[str, Any]) -> dict[str, Any]:
        """The dry run of trace.explain, its phases in separate turns of the loop."""
        from dataplane import trace as tr

        v = self.vtep
        name = args.get("from")
        e = v.endpoints.get(name or "")
        if e is None:
            raise InvalidArgument(f"no endpoint {name!r} (have: {', '.join(sorted(v.endpoints))})")
        to = str(args.get("to") or "")
        try:
            tr._target(to)
        except ValueError:
            raise InvalidArgument(f"--to {to!r} is neither an IP address nor a MAC address") \
                from None
        kwargs = {n.vni: {"mtu": n.mtu, "proxy": n.proxy, "learning": n.learning,
                          "ageing": n.ageing, "maxaddress": n.maxaddress,
                          "max_learned": n.max_learned,
                          "max_learned_per_port": n.max_learned_per_port,
                          "ttl": n.ttl, "tos": n.tos, "df": n.df, "flowlabel": n.flowlabel}
                  for n in v.networks.values()}
        ports = [(x.port_id, x.network.vni) for x in v.endpoints.values()]
        vc = v.config.vtep
        steps = tr.explain_steps(v.switch, e.port_id, e.network.vni, e.cfg.mac,
                                 [str(a.ip) for a in e.cfg.addresses], to, self.port_name,
                                 self.network_name, kwargs, ports, vc.local, vc.src_port_range,
                                 {str(a.ip): (n, x.cfg.mac)
                                  for n, x in v.endpoints.items()
                                  if x.network.vni == e.network.vni for a in x.cfg.addresses})
        while True:
            try:
                next(steps)
            except StopIteration as done:
                out: dict[str, Any] = done.value
                break
            await asyncio.sleep(0)
        out.pop("records", None)
        return out


def _warm_up() -> None:
    """Import the trace decoder, then move every object start-up made (modules, scapy's
    layers: ~50k objects) out of the cyclic collector's way (gc.freeze): a full collection
    walked them all, 28 ms on the loop here, at moments no one chooses — e.g. in the middle
    of a trace once enough rows had come and gone. They live as long as the process."""
    import gc

    from dataplane import trace as tr

    tr.warm_up()
    gc.freeze()


class _Opened:
    """An open stream: it holds one of the ``max_subscribers`` slots from the moment it is
    opened (before any await, so a burst of clients cannot overshoot the cap) until
    :meth:`aclose`, which the control server always calls, iterated or not."""

    def __init__(self, records: AsyncGenerator[dict[str, Any], None],
                 release: Callable[[], None]) -> None:
        self._records = records
        self._release: Callable[[], None] | None = release

    def __aiter__(self) -> _Opened:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self._records.__anext__()

    async def aclose(self) -> None:
        try:
            await self._records.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


def _trim_heap() -> None:
    """glibc's malloc_trim(0): return the free parts of the C heap to the system. Nothing
    where the C library has no such call."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


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
