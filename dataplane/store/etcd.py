"""The etcd back end: each VTEP registers itself and its endpoints, and follows everyone else's.

One background task per VTEP runs *sessions* against etcd (v3 API through ``aetcd``, gRPC):

1. lease: keep the one we had if etcd still knows it, else grant a new one (``ttl`` seconds);
2. full read of ``{prefix}/`` at one revision R (paged, every page pinned to R);
3. our own keys: whatever is missing, different, or on another lease is (re)written, whatever
   we no longer publish (an endpoint detached while etcd was away, a previous incarnation's
   leftovers) is deleted — by a writer task that batches puts/deletes into transactions;
4. other VTEPs' keys: diffed against what we applied before (:class:`RemoteTables`), so a
   resync removes exactly the stale entries and adds the new ones, nothing twice;
5. watch from R+1; keep the lease alive every ttl/3.

Any failure (etcd gone, lease lost, watch compacted) ends the session; the tables keep their
last-known entries, so forwarding continues, and the task retries with exponential backoff
(0.2 s … 5 s, jittered, rotating through the configured URLs). ``start()`` never waits for
etcd: a VTEP whose etcd is unreachable runs on its static config until it comes.

A real etcd in a lab namespace, for the tests, the benchmark and ``vxdp demo --store etcd``, is
lab equipment: :class:`dataplane.lab.EtcdServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from dataplane.config import EndpointConfig, NetworkConfig, StoreConfig
from dataplane.errors import VxdpError
from dataplane.store.keys import (EndpointRecord, KeyLayout, RemoteTables, StoreHost,
                                  VtepRecord, normalize_mac)

# A VTEP forks short-lived children (dataplane.netns.call_in_netns: sysctls and ethtool inside
# a container's namespace when an endpoint is attached). With gRPC's fork support on, its
# pthread_atfork handlers leave such a child unable to run ("cannot enter netns ... child
# failed"); the children never touch gRPC, so the handlers are switched off. Read by gRPC's
# core when it initialises, i.e. at the import below.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"

try:
    import aetcd
    from aetcd import exceptions as _exc
    from aetcd import rpc as _rpc
    from aetcd.utils import prefix_range_end
except ImportError:  # pragma: no cover - a runtime dependency; checked in EtcdStore()
    aetcd = None

__all__ = ["EtcdStore", "StoreError"]

log = logging.getLogger("vxdp.store")

BACKOFF_MIN = 0.2          # first retry after a failure (s); doubles up to BACKOFF_MAX
BACKOFF_MAX = 5.0
RPC_TIMEOUT = 5            # unary calls (lease, range, txn); the watch stream has none
CLOSE_TIMEOUT = 1.5        # revoke / channel close on shutdown: never hang on a dead etcd
TXN_MAX_OPS = 100          # etcd's default --max-txn-ops is 128
RANGE_PAGE = 5000          # keys per range request during a full read
APPLY_YIELD = 1000         # give the data path the loop back every N records of a full read

#: gRPC channel options. Keepalive pings detect a silently dead etcd (no RST: a partition, a
#: stopped process) on the watch stream; 10 s stays above etcd's enforcement minimum (5 s).
GRPC_OPTIONS: dict[str, Any] = {
    "grpc.max_receive_message_length": 64 << 20,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    # One connection per client even when several stores share a process (the benchmark's
    # agents): each VTEP is its own etcd client, as on separate hosts.
    "grpc.use_local_subchannel_pool": 1,
}


class StoreError(VxdpError):
    """A session with etcd ended (the store reconnects by itself)."""


class _Resync(StoreError):
    """The watch cannot continue from our revision (compacted): read everything again."""


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise StoreError(f"{url}: only http:// etcd endpoints are supported (aetcd has no TLS)")
    if not parts.hostname:
        raise StoreError(f"{url}: no host")
    return parts.hostname, parts.port or 2379


def _describe(exc: BaseException) -> str:
    """One line for status/logs: gRPC's details rather than a repr of the whole status."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not str(exc):
        return "TimeoutError: no answer in time"
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    details = getattr(cause, "details", None)
    if callable(details):
        with contextlib.suppress(Exception):
            text = details() or text
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class EtcdStore:
    """The etcd store of one VTEP (see the module docstring for the protocol).

    ``host`` is the :class:`dataplane.vtep.Vtep`, or anything else that is a
    :class:`~dataplane.store.keys.StoreHost`.
    """

    def __init__(self, config: StoreConfig, host: StoreHost) -> None:
        if aetcd is None:
            raise VxdpError("[store] etcd needs the 'aetcd' package (pip install aetcd, or "
                            "reinstall vxdp: it is a runtime dependency)")
        self.config = config
        self.host = host
        cfg = host.config
        # a VTEP of both families is known to the others by its IPv4 address
        self.local = str(cfg.vtep.local.primary)
        self.port = cfg.vtep.port       # published: peers on another port send here
        self.name = cfg.vtep.name
        self.layout = KeyLayout(config.prefix)
        self.ttl = int(config.ttl)
        self.urls = tuple(config.etcd)
        networks = {n.name: n.vni for n in cfg.networks}
        static_peers = [EndpointRecord(n.name, n.vni, normalize_mac(p.mac), str(p.address),
                                       str(p.vtep),
                                       ips=tuple(str(a) for a in p.addresses)
                                       if len(p.addresses) > 1 else ())
                        for n in cfg.networks for p in n.peers]
        static_flood = [(n.name, str(v)) for n in cfg.networks for v in n.flood]
        # Our endpoints' (network, MAC): a remote claim on one of them is refused.
        self._local_macs: set[tuple[str, str]] = set()
        self.tables = RemoteTables(host, self.layout, self.local, networks,
                                   local_macs=lambda: self._local_macs,
                                   static_peers=static_peers, static_flood=static_flood,
                                   emit=self._emit_event)
        reg = VtepRecord(self.local, self.name, tuple(sorted(networks.items())))
        self._vtep_key = self.layout.vtep_key(self.local)
        # What we want in etcd (key -> value) and what still has to be written there
        # (key -> generation; a key absent from _own is to be deleted).
        self._own: dict[bytes, bytes] = {self._vtep_key: self.layout.encode_vtep(reg)}
        self._dirty: dict[bytes, int] = {}
        self._gen = 0
        self._wake = asyncio.Event()
        # Set when the VTEP starts serving a network at run time: the records of a network
        # we did not serve were ignored, so the next session reads everything again.
        self._resync = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._lease_id: int | None = None
        self._closing = False
        self._closed = False
        # status
        self.connected = False
        self.url: str | None = None
        self.revision = 0
        self.sessions = 0          # sessions that reached the watch
        self.failures = 0
        self.leases = 0            # leases granted (1 + one per expiry)
        self.writes = 0
        self.last_error: str | None = None
        self.last_sync: dict[str, Any] = {}
        self._state_logged: str | None = None
        # Test/bench hook: called with (kind, key) after a remote change was applied.
        self.on_applied: Any = None

    # -- the interface the Vtep uses -------------------------------------------------------

    async def start(self) -> None:
        """Publish what is attached already and connect in the background (never blocks)."""
        for net, ep in self.host.local_endpoints():
            self.publish(net, ep)
        self._mark(self._vtep_key)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vxdp-store")

    def publish(self, net: NetworkConfig, ep: EndpointConfig) -> None:
        ips = tuple(str(a.ip) for a in ep.addresses)
        rec = EndpointRecord(net.name, net.vni, normalize_mac(ep.mac), ips[0],
                             self.local, ep.name, ips if len(ips) > 1 else (), self.port)
        key = self.layout.endpoint_key(rec.network, rec.vni, rec.vtep, rec.mac)
        self._own[key] = self.layout.encode_endpoint(rec)
        self._local_macs.add((rec.network, rec.mac))
        self.tables.forget_mac(rec.network, rec.mac)
        self._mark(key)

    def withdraw(self, net: NetworkConfig, ep: EndpointConfig) -> None:
        mac = normalize_mac(ep.mac)
        key = self.layout.endpoint_key(net.name, net.vni, self.local, mac)
        self._own.pop(key, None)
        self._local_macs.discard((net.name, mac))
        self._mark(key)

    def add_network(self, name: str, vni: int) -> None:
        """The VTEP serves network ``name`` from now on (``docker network create``): register
        it, and read the store again for the others' endpoints on it."""
        self.tables.add_network(name, vni)
        self._register()
        self._resync.set()

    def del_network(self, name: str) -> None:
        """The VTEP no longer serves ``name``: drop what was applied for it (before the
        network's tables go) and register without it."""
        self.tables.del_network(name)
        self._register()

    def _register(self) -> None:
        reg = VtepRecord(self.local, self.name, tuple(sorted(self.tables.local_networks.items())))
        self._own[self._vtep_key] = self.layout.encode_vtep(reg)
        self._mark(self._vtep_key)

    async def close(self) -> None:
        """Stop; revoke our lease so the others drop our endpoints now (bounded wait)."""
        if self._closed:
            return
        self._closed = self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._task), CLOSE_TIMEOUT)
        client, lease = self._client, self._lease_id
        self.connected = False
        self._client = None
        if client is not None:
            # Whether or not the session got as far as the watch: keys may be written under
            # this lease. A dead etcd fails the call fast, or CLOSE_TIMEOUT bounds it.
            if lease:
                try:
                    await asyncio.wait_for(client.revoke_lease(lease), CLOSE_TIMEOUT)
                except (asyncio.TimeoutError, Exception) as e:
                    log.info("store: could not revoke lease %x (%s); our keys expire in %ds",
                             lease, _describe(e), self.ttl)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(client.close(), CLOSE_TIMEOUT)

    def status(self) -> dict[str, Any]:
        """For ``vxdp stats``: connection, revision, what is published and applied."""
        return {
            "backend": "etcd",
            "etcd": list(self.urls),
            "url": self.url,
            "prefix": self.config.prefix,
            "ttl": self.ttl,
            "connected": self.connected,
            "revision": self.revision,
            "lease": f"{self._lease_id:x}" if self._lease_id else None,
            "published": len(self._own) - 1,
            "pending": len(self._dirty),
            "applied": self.tables.counts(),
            "sessions": self.sessions,
            "failures": self.failures,
            "leases": self.leases,
            "writes": self.writes,
            "last_sync": dict(self.last_sync),
            "last_error": self.last_error,
        }

    # -- internals: own keys ---------------------------------------------------------------

    def _mark(self, key: bytes) -> None:
        self._gen += 1
        self._dirty[key] = self._gen
        self._wake.set()

    def _reconcile_own(self, items: list[tuple[bytes, bytes, int, int]], lease: int) -> None:
        present: dict[bytes, tuple[bytes, int]] = {}
        for key, value, _rev, kv_lease in items:
            if self.layout.owner(key) == self.local:
                present[key] = (value, kv_lease)
        for key, (value, kv_lease) in present.items():
            if self._own.get(key) != value or kv_lease != lease:
                self._mark(key)     # stale (delete) or different (rewrite on our lease)
        for key in self._own:
            if key not in present:
                self._mark(key)

    async def _writer(self, client: Any, lease: int) -> None:
        tx = client.transactions
        while True:
            if not self._dirty:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(self._dirty.items())[:TXN_MAX_OPS]
            ops = []
            for key, _gen in batch:
                value = self._own.get(key)
                ops.append(tx.put(key, value, lease=lease) if value is not None
                           else tx.delete(key))
            await client.transaction(compare=[], success=ops, failure=[])
            self.writes += len(ops)
            for key, gen in batch:
                if self._dirty.get(key) == gen:   # not re-marked while in flight
                    del self._dirty[key]

    # -- internals: sessions ---------------------------------------------------------------

    async def _run(self) -> None:
        backoff = BACKOFF_MIN
        i = 0
        while not self._closing:
            url = self.urls[i % len(self.urls)]
            sessions = self.sessions
            try:
                await self._session(url)
            except asyncio.CancelledError:
                raise
            except _Resync as e:
                log.info("store: %s; reading everything again", e)
                continue
            except Exception as e:  # noqa: BLE001 - any failure: last-known tables, retry
                self.failures += 1
                self.last_error = f"{url}: {_describe(e)}"
                self._note_down(url, e)
            if self.sessions != sessions:
                backoff = BACKOFF_MIN      # we had a working session: retry promptly
            else:
                i += 1                     # never got through: try the next URL
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _note_down(self, url: str, exc: BaseException) -> None:
        state = f"down:{url}:{type(exc).__name__}"
        if self._state_logged == state:
            log.debug("store: %s still unreachable: %s", url, _describe(exc))
            return
        was_up = self._state_logged == "up"
        self._state_logged = state
        if was_up:
            log.warning("store: lost etcd %s (%s); forwarding on the last-known tables, "
                        "retrying", url, _describe(exc))
            self._emit_state("lost", f"store lost etcd {url}: {_describe(exc)}")
        else:
            log.warning("store: etcd %s unreachable (%s); running on the static config, "
                        "retrying with backoff", url, _describe(exc))

    def _emit_event(self, rec: dict[str, Any]) -> None:
        """Store changes on ``vxdp events`` (peer_add/peer_del/flood_add/flood_del)."""
        self.host.emit_event({**rec, "time": time.time()})

    def _emit_state(self, state: str, line: str) -> None:
        self.host.emit_event({"kind": "store", "state": state, "url": self.url,
                              "revision": self.revision, "time": time.time(), "line": line})

    async def _session(self, url: str) -> None:
        host, port = _host_port(url)
        client = aetcd.Client(host=host, port=port, timeout=RPC_TIMEOUT, options=GRPC_OPTIONS)
        self._client = client
        self.url = url
        tasks: list[asyncio.Task[None]] = []
        try:
            t0 = time.monotonic()
            lease = await self._ensure_lease(client)
            self._resync.clear()     # this read covers every network served so far
            items, rev = await self._read_all(client)
            t_read = time.monotonic()
            self._reconcile_own(items, lease)
            tasks.append(asyncio.create_task(self._writer(client, lease)))
            removed = await self._apply_snapshot(items)
            t_applied = time.monotonic()
            self.revision = rev
            watch = await client.watch_prefix(self.layout.root, start_revision=rev + 1)
            self.connected = True
            self.sessions += 1
            self.last_error = None
            self.last_sync = {"revision": rev, "keys": len(items), "removed": removed,
                              "read_s": round(t_read - t0, 4),
                              "apply_s": round(t_applied - t_read, 4),
                              "time": time.time()}
            self._state_logged = "up"
            counts = self.tables.counts()
            log.info("store: synced with etcd %s at revision %d: %d keys, %d peers, %d remote "
                     "VTEPs, %d stale removed", url, rev, len(items), counts["peers"],
                     counts["vteps"], removed)
            self._emit_state("connected", f"store synced with {url} at revision {rev}: "
                             f"{counts['peers']} peers, {removed} stale removed")
            tasks.append(asyncio.create_task(self._keepalive(client, lease)))
            tasks.append(asyncio.create_task(self._watch_loop(watch)))
            tasks.append(asyncio.create_task(self._resync_wait()))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
            raise StoreError("session ended")
        except _exc.RevisionCompactedError as e:
            raise _Resync(f"watch from revision {self.revision + 1} compacted") from e
        finally:
            self.connected = False
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if not self._closing:
                self._client = None
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(client.close(), CLOSE_TIMEOUT)

    async def _ensure_lease(self, client: Any) -> int:
        if self._lease_id:
            reply = await client.refresh_lease(self._lease_id)
            if reply is not None and reply.TTL > 0:
                return self._lease_id
            log.info("store: lease %x expired while we were away; registering again",
                     self._lease_id)
            self._lease_id = None
        lease = await client.lease(self.ttl)
        self._lease_id = lease.id
        self.leases += 1
        return lease.id

    async def _read_all(self, client: Any) -> tuple[list[tuple[bytes, bytes, int, int]], int]:
        """Every key under the prefix at one revision. aetcd's get_prefix exposes neither a
        limit nor a revision, so the pages go through its own KV stub with both set."""
        root = self.layout.root
        end = prefix_range_end(root)
        start, rev = root, 0
        out: list[tuple[bytes, bytes, int, int]] = []
        while True:
            req = _rpc.RangeRequest(key=start, range_end=end, limit=RANGE_PAGE, revision=rev)
            try:
                resp = await client.kvstub.Range(req, timeout=RPC_TIMEOUT,
                                                 metadata=client.metadata)
            except _rpc.AioRpcError as e:
                _exc._handle_exception(e)  # -> aetcd's ClientError family
                raise
            if rev == 0:
                rev = resp.header.revision
            out.extend((kv.key, kv.value, kv.mod_revision, kv.lease) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return out, rev
            start = resp.kvs[-1].key + b"\0"

    async def _apply_snapshot(self, items: list[tuple[bytes, bytes, int, int]]) -> int:
        tables = self.tables
        seen: set[bytes] = set()
        for n, (key, value, rev, _lease) in enumerate(items, 1):
            seen.add(key)
            tables.put(key, value, rev)
            if n % APPLY_YIELD == 0:
                await asyncio.sleep(0)
        stale = [k for k in (*tables.endpoints, *tables.vteps) if k not in seen]
        for k in stale:
            tables.delete(k)
        if self.on_applied is not None:
            self.on_applied("snapshot", None)
        return len(stale)

    async def _keepalive(self, client: Any, lease: int) -> None:
        interval = max(self.ttl / 3.0, 0.2)
        while True:
            await asyncio.sleep(interval)
            reply = await asyncio.wait_for(client.refresh_lease(lease),
                                           max(interval, 1.0))
            if reply is None or reply.TTL <= 0:
                self._lease_id = None
                raise StoreError(f"lease {lease:x} expired")

    async def _resync_wait(self) -> None:
        await self._resync.wait()
        raise _Resync("a network was added")

    async def _watch_loop(self, watch: Any) -> None:
        tables = self.tables
        local = self.local
        layout = self.layout
        hook = self.on_applied
        async for ev in watch:
            kv = ev.kv
            key = kv.key
            self.revision = kv.mod_revision
            if layout.owner(key) == local:
                if ev.kind == "DELETE" and key in self._own:
                    self._mark(key)   # someone removed a key of ours: write it back
                continue
            if ev.kind == "PUT":
                tables.put(key, kv.value, kv.mod_revision)
            else:
                tables.delete(key)
            if hook is not None:
                hook(ev.kind, key)
        raise StoreError("watch ended")


# --------------------------------------------------------------------------- inspection

async def dump(url: str, prefix: str = "/vxdp") -> list[tuple[str, str, int]]:
    """Every key under ``prefix`` at ``url``: (key, value, lease id) — what the demo shows."""
    if aetcd is None:
        raise VxdpError("needs the 'aetcd' package")
    host, port = _host_port(url)
    layout = KeyLayout(prefix)
    async with aetcd.Client(host=host, port=port, timeout=RPC_TIMEOUT) as client:
        got = await client.get_prefix(layout.root)
        return [(kv.key.decode(errors="replace"), kv.value.decode(errors="replace"), kv.lease)
                for kv in got]


def main(argv: list[str] | None = None) -> int:
    """``python -m dataplane.store.etcd dump URL [PREFIX]``: list vxdp's keys (like
    ``etcdctl get --prefix``, without needing etcd-client installed)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m dataplane.store.etcd")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("dump", help="list the keys vxdp keeps in etcd")
    p.add_argument("url")
    p.add_argument("prefix", nargs="?", default="/vxdp")
    args = ap.parse_args(argv)
    try:
        rows = asyncio.run(asyncio.wait_for(dump(args.url, args.prefix), 15))
    except (VxdpError, asyncio.TimeoutError, Exception) as e:  # noqa: BLE001 - one line out
        print(f"etcd dump: {_describe(e)}", file=sys.stderr)
        return 1
    for key, value, lease in rows:
        print(f"{key}  (lease {lease:x})" if lease else key)
        print(f"    {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
