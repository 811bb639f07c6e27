"""The etcd store: propagation latency across 50 VTEP agents, and a 10,000-endpoint initial sync.

    python -m benchmarks.bench_store [--json] [--agents 50] [--rounds 200] [--endpoints 10000]

Needs root (network namespaces) and Debian's ``etcd-server``. A real etcd runs in a lab
namespace on the underlay (198.18.0.100, data dir on disk unless ``--tmpfs``); the agents run in
worker processes in other lab namespaces on the same underlay. An *agent* is the real
:class:`dataplane.store.etcd.EtcdStore` with its own etcd client (own gRPC connection, lease,
watch), driving a stand-in VTEP: a real ``dataplane.vtep.Vtep`` with a real forwarding core
(``fastpath.Switch``: the Cython one when built) but no TAPs or sockets, whose
``peer_add``/``peer_del`` also note the time (CLOCK_MONOTONIC, shared by all processes).

1. Propagation: every ``--gap`` seconds one agent (round robin) attaches an endpoint
   (``store.publish``, what ``vxdp endpoint add`` calls) and half a gap later detaches it
   (``store.withdraw``). Latency of a round = publish → the FDB + neighbour entry present on
   *every* other agent (``--agents`` − 1); the same for the removal. Baseline in the same run:
   one bare aetcd watcher per worker process on the same prefix, i.e. etcd + gRPC's own floor.
2. Initial sync: etcd is seeded with ``--endpoints`` endpoint keys (100 per VTEP, synthetic
   overlay addresses from the RFC 2544 range 198.19.0.0/16: data only, never a packet) and
   their VTEP registrations; a fresh agent starts (``--trials`` times) and is timed from
   ``start()`` until every peer is programmed into its switch. Baseline: the bare range read of
   the same keys with aetcd.

Everything runs in namespaces the benchmark creates and removes (etcd included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ETCD_ADDR = "198.18.0.100"
NET, VNI = "bench", 4242
SYNC_NET, SYNC_VNI = "big", 4343
GOALS = {"p99_ms": 100.0, "sync_s": 2.0}


# --------------------------------------------------------------------------- agents

def _mac(i: int, tag: int) -> str:
    return "02:" + ":".join(f"{b:02x}" for b in (tag, i >> 24 & 255, i >> 16 & 255,
                                                   i >> 8 & 255, i & 255))


def _synthetic_ip(i: int) -> str:
    # 198.19.0.0/16: RFC 2544 benchmarking space (never routed); only ever data in etcd.
    return str(IPv4Address("198.19.0.0") + 1 + i)


class StandIn:
    """A VTEP without I/O: real ``Vtep`` table methods over a real forwarding core, timed."""

    def __init__(self, name: str, local: str, network: str, vni: int) -> None:
        from dataplane import fastpath
        from dataplane.config import Config, NetworkConfig, VtepConfig
        from dataplane.vtep import Vtep

        self.net = NetworkConfig(network, vni)
        self.config = Config(vtep=VtepConfig(name=name, local=IPv4Address(local)),
                             networks=(self.net,))
        self.vtep = Vtep(self.config)
        self.vtep.add_network(self.net)
        self.impl = fastpath.NAME
        self.added: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self.record = True

    def local_endpoints(self) -> list[Any]:
        return []

    def emit_event(self, rec: dict[str, Any]) -> None:
        """Nobody watches ``vxdp events`` here (a real VTEP with no subscriber drops them too)."""

    def peer_add(self, network: str, mac: str, ip: str, vtep: str) -> bool:
        ok = self.vtep.peer_add(network, mac, ip, vtep)
        if self.record and mac not in self.added:
            self.added[mac] = time.monotonic()
        return ok

    def peer_del(self, network: str, mac: str, ip: str) -> bool:
        ok = self.vtep.peer_del(network, mac, ip)
        if self.record:
            self.deleted[mac] = time.monotonic()
        return ok

    def flood_add(self, network: str, vtep: str) -> bool:
        return self.vtep.flood_add(network, vtep)

    def flood_del(self, network: str, vtep: str) -> bool:
        return self.vtep.flood_del(network, vtep)


def _store_config(url: str, prefix: str, ttl: int = 10) -> Any:
    from dataplane.config import StoreConfig
    return StoreConfig(etcd=(url,), prefix=prefix, ttl=ttl)


async def _read_line() -> dict[str, Any]:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise SystemExit("bench_store worker: parent went away")
    return json.loads(line)


def _say(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_store worker: timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def worker_propagation(spec: dict[str, Any]) -> None:
    import aetcd
    from dataplane.config import EndpointConfig
    from dataplane.store.etcd import EtcdStore

    url, prefix, total = spec["url"], spec["prefix"], spec["total"]
    mine: list[int] = spec["agents"]
    stands = {k: StandIn(f"a{k}", f"198.18.1.{k + 1}", NET, VNI) for k in mine}
    stores = {k: EtcdStore(_store_config(url, prefix), stands[k]) for k in mine}
    for st in stores.values():
        await st.start()
    # Everyone connected and everyone sees every other agent's registration.
    await _wait(lambda: all(s.connected and s.tables.counts()["vteps"] == total - 1
                            for s in stores.values()), 60, "all agents registered")

    # Baseline: a bare aetcd watcher on the same prefix (etcd + gRPC, no vxdp).
    raw_added: dict[str, float] = {}
    raw_deleted: dict[str, float] = {}
    host, port = url.split("//")[1].split(":")
    raw = aetcd.Client(host=host, port=int(port))
    watch = await raw.watch_prefix((prefix + "/endpoints/").encode())

    async def raw_loop() -> None:
        async for ev in watch:
            mac = ev.kv.key.decode().rsplit("/", 1)[1]
            (raw_added if ev.kind == "PUT" else raw_deleted).setdefault(mac, time.monotonic())

    raw_task = asyncio.create_task(raw_loop())
    _say({"ready": True, "impl": next(iter(stands.values())).impl})
    go = await _read_line()
    t0, gap, rounds = go["t0"], go["gap"], go["rounds"]
    pub: dict[int, float] = {}
    wd: dict[int, float] = {}

    def ep(i: int) -> Any:
        return EndpointConfig(f"b{i}", _mac(i, 0x42), IPv4Interface(f"{_synthetic_ip(i)}/16"))

    async def drive(i: int, k: int) -> None:
        net = stands[k].net
        await asyncio.sleep(max(0.0, t0 + i * gap - time.monotonic()))
        pub[i] = time.monotonic()
        stores[k].publish(net, ep(i))
        await asyncio.sleep(max(0.0, t0 + (i + 0.5) * gap - time.monotonic()))
        wd[i] = time.monotonic()
        stores[k].withdraw(net, ep(i))

    await asyncio.gather(*(drive(i, i % total) for i in range(rounds) if i % total in stores))
    await asyncio.sleep(go["settle"])
    raw_task.cancel()
    _say({"pub": pub, "wd": wd, "raw_added": raw_added, "raw_deleted": raw_deleted,
          "added": {k: s.added for k, s in stands.items()},
          "deleted": {k: s.deleted for k, s in stands.items()},
          "errors": {k: s.last_error for k, s in stores.items() if s.failures}})
    await asyncio.gather(*(s.close() for s in stores.values()))
    await raw.close()


async def worker_sync(spec: dict[str, Any]) -> None:
    import aetcd
    from dataplane.store.etcd import EtcdStore
    from dataplane.store.keys import EndpointRecord, KeyLayout, VtepRecord

    url, prefix, n = spec["url"], spec["prefix"], spec["endpoints"]
    host, port = url.split("//")[1].split(":")
    layout = KeyLayout(prefix)
    seed = aetcd.Client(host=host, port=int(port), timeout=30)
    per_vtep = 100
    ops = []
    vteps = set()
    t_seed = time.monotonic()
    for i in range(n):
        vtep = str(IPv4Address("198.18.2.0") + 1 + i // per_vtep)
        if vtep not in vteps:
            vteps.add(vtep)
            ops.append(seed.transactions.put(layout.vtep_key(vtep), layout.encode_vtep(
                VtepRecord(vtep, f"v{len(vteps)}", ((SYNC_NET, SYNC_VNI),)))))
        rec = EndpointRecord(SYNC_NET, SYNC_VNI, _mac(i, 0x43), _synthetic_ip(i), vtep, f"e{i}")
        ops.append(seed.transactions.put(layout.endpoint_key(SYNC_NET, SYNC_VNI, vtep, rec.mac),
                                         layout.encode_endpoint(rec)))
        if len(ops) >= 100:
            await seed.transaction(compare=[], success=ops, failure=[])
            ops = []
    if ops:
        await seed.transaction(compare=[], success=ops, failure=[])
    seeded = time.monotonic() - t_seed

    trials = []
    for t in range(spec["trials"]):
        # Baseline: the bare read (one range request, all keys).
        r0 = time.monotonic()
        got = await seed.get_prefix(layout.root)
        raw_read = time.monotonic() - r0
        assert len(got) == n + len(vteps), (t, len(got), n, len(vteps),
                                           [kv.key for kv in got if b"/198.18.2." not in kv.key])

        stand = StandIn(f"fresh{t}", "198.18.3.1", SYNC_NET, SYNC_VNI)
        stand.record = False
        store = EtcdStore(_store_config(url, prefix), stand)
        done = asyncio.get_running_loop().create_future()
        store.on_applied = lambda kind, key: (kind == "snapshot" and not done.done()
                                              and done.set_result(time.monotonic()))
        t0 = time.monotonic()
        await store.start()
        t1 = await asyncio.wait_for(done, 60)
        await _wait(lambda: store.connected, 10, "the watch after the sync")  # last_sync is set
        counts = store.tables.counts()
        fdb = stand.vtep.switch.fdb_dump()
        remote = sum(1 for r in fdb if r["port"] is None and r["mac"] != "00:00:00:00:00:00")
        flood = sum(1 for r in fdb if r["mac"] == "00:00:00:00:00:00")
        neigh = len(stand.vtep.switch.neigh_dump())
        assert counts["peers"] == n and remote == n and neigh == n, (counts, remote, neigh)
        assert flood == len(vteps), (flood, len(vteps))
        trials.append({"sync_s": t1 - t0, "read_s": store.last_sync.get("read_s"),
                       "apply_s": store.last_sync.get("apply_s"), "raw_read_s": raw_read,
                       "keys": store.last_sync.get("keys"), "fdb_remote": remote,
                       "neigh": neigh, "flood": flood})
        await store.close()
    _say({"seed_s": seeded, "vteps": len(vteps), "trials": trials, "impl": stand.impl})
    await seed.delete_prefix(layout.root)
    await seed.close()


def worker_main(spec: dict[str, Any]) -> int:
    import uvloop  # what `vxdp run` uses

    sys.path.insert(0, str(ROOT))
    fn = worker_propagation if spec["mode"] == "propagation" else worker_sync
    uvloop.run(fn(spec))
    return 0


# --------------------------------------------------------------------------- orchestration

def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _summary(xs: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in xs]
    return {"n": len(ms), "p50_ms": _pct(ms, 50), "p90_ms": _pct(ms, 90), "p99_ms": _pct(ms, 99),
            "max_ms": max(ms) if ms else float("nan"),
            "mean_ms": statistics.fmean(ms) if ms else float("nan")}


class _Worker:
    def __init__(self, lab: Any, ns: str, spec: dict[str, Any], log: str) -> None:
        with open(log, "ab") as logf:
            self.proc = lab.popen(ns, [sys.executable, "-m", "benchmarks.bench_store",
                                       "--worker", json.dumps(spec)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf,
                                  cwd=str(ROOT), text=True)
        self.log = log

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            tail = Path(self.log).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"bench_store worker gave no answer: {tail}")
        return json.loads(line)

    def send(self, doc: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(doc) + "\n")
        self.proc.stdin.flush()

    def wait(self) -> None:
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_propagation(lab: Any, url: str, tmp: str, agents: int, workers: int, rounds: int,
                    gap: float) -> dict[str, Any]:
    prefix = "/vxdp-bench"
    split = [list(range(agents))[w::workers] for w in range(workers)]
    ws = []
    for w, mine in enumerate(split):
        ns = f"w{w}"
        if ns not in lab.hosts:
            lab.host(ns, f"198.18.0.{10 + w}")
        ws.append(_Worker(lab, ns, {"mode": "propagation", "url": url, "prefix": prefix,
                                    "total": agents, "agents": mine},
                          os.path.join(tmp, f"worker{w}.log")))
    impl = None
    for w in ws:
        impl = w.read(120).get("impl")
    t0 = time.monotonic() + 0.5
    for w in ws:
        w.send({"t0": t0, "gap": gap, "rounds": rounds, "settle": 3.0})
    reports = [w.read(rounds * gap + 60) for w in ws]
    for w in ws:
        w.wait()
    pub: dict[int, float] = {}
    wd: dict[int, float] = {}
    added: dict[int, dict[str, float]] = {}
    deleted: dict[int, dict[str, float]] = {}
    raw_add: list[dict[str, float]] = []
    raw_del: list[dict[str, float]] = []
    errors = {}
    for r in reports:
        pub.update({int(k): v for k, v in r["pub"].items()})
        wd.update({int(k): v for k, v in r["wd"].items()})
        added.update({int(k): v for k, v in r["added"].items()})
        deleted.update({int(k): v for k, v in r["deleted"].items()})
        raw_add.append(r["raw_added"])
        raw_del.append(r["raw_deleted"])
        errors.update(r["errors"])
    all_add, all_del, each_add, raw_all_add, raw_all_del = [], [], [], [], []
    missing = 0
    for i in range(rounds):
        mac = _mac(i, 0x42)
        owner = i % agents
        others = [k for k in added if k != owner]
        ta = [added[k].get(mac) for k in others]
        td = [deleted[k].get(mac) for k in others]
        if any(t is None for t in ta) or any(t is None for t in td):
            missing += 1
            continue
        all_add.append(max(ta) - pub[i])  # type: ignore[type-var]
        all_del.append(max(td) - wd[i])   # type: ignore[type-var]
        each_add.extend(t - pub[i] for t in ta)  # type: ignore[operator]
        ra = [r.get(mac) for r in raw_add]
        rd = [r.get(mac) for r in raw_del]
        if all(t is not None for t in ra):
            raw_all_add.append(max(ra) - pub[i])  # type: ignore[type-var]
        if all(t is not None for t in rd):
            raw_all_del.append(max(rd) - wd[i])   # type: ignore[type-var]
    add_s, raw_s = _summary(all_add), _summary(raw_all_add)
    return {"agents": agents, "workers": workers, "rounds": rounds, "gap_s": gap,
            "rounds_incomplete": missing, "errors": errors, "fastpath": impl,
            "add_all_agents": add_s, "add_per_agent": _summary(each_add),
            "del_all_agents": _summary(all_del),
            "baseline_raw_watch_add": raw_s, "baseline_raw_watch_del": _summary(raw_all_del),
            "p99_vs_raw": add_s["p99_ms"] / raw_s["p99_ms"] if raw_s["n"] else None,
            "goal_p99_ms": GOALS["p99_ms"], "meets_goal": add_s["p99_ms"] <= GOALS["p99_ms"]}


def run_sync(lab: Any, url: str, tmp: str, endpoints: int, trials: int) -> dict[str, Any]:
    if "w0" not in lab.hosts:
        lab.host("w0", "198.18.0.10")
    w = _Worker(lab, "w0", {"mode": "sync", "url": url, "prefix": "/vxdp-sync",
                            "endpoints": endpoints, "trials": trials},
                os.path.join(tmp, "sync.log"))
    r = w.read(300)
    w.wait()
    ts = r["trials"]
    sync = [t["sync_s"] for t in ts]
    raw = [t["raw_read_s"] for t in ts]
    return {"endpoints": endpoints, "vteps": r["vteps"], "trials": ts, "seed_s": r["seed_s"],
            "fastpath": r["impl"],
            "sync_s_median": statistics.median(sync), "sync_s_min": min(sync),
            "sync_s_max": max(sync),
            "read_s_median": statistics.median(t["read_s"] for t in ts),
            "apply_s_median": statistics.median(t["apply_s"] for t in ts),
            "baseline_raw_read_s_median": statistics.median(raw),
            "sync_vs_raw_read": statistics.median(sync) / statistics.median(raw),
            "goal_s": GOALS["sync_s"], "meets_goal": max(sync) <= GOALS["sync_s"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_store",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--agents", type=int, default=50, help="control-plane agents (50)")
    ap.add_argument("--workers", type=int, default=2, help="processes hosting them (2)")
    ap.add_argument("--rounds", type=int, default=200, help="endpoints attached+detached (200)")
    ap.add_argument("--gap", type=float, default=0.05, help="seconds between rounds (0.05)")
    ap.add_argument("--endpoints", type=int, default=10_000, help="sync size (10000)")
    ap.add_argument("--trials", type=int, default=5, help="initial-sync repetitions (5)")
    ap.add_argument("--tmpfs", action="store_true", help="etcd data dir in /dev/shm (no disk)")
    ap.add_argument("--skip", choices=["propagation", "sync"], action="append", default=[])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(json.loads(args.worker))
    if os.geteuid() != 0:
        print("bench_store: needs root (network namespaces)", file=sys.stderr)
        return 1
    if shutil.which("etcd") is None:
        print("bench_store: etcd not found (apt-get install etcd-server)", file=sys.stderr)
        return 1
    from dataplane.lab import Lab
    from dataplane.lab import EtcdServer

    base = "/dev/shm" if args.tmpfs else None
    tmp = tempfile.mkdtemp(prefix="vxdp-bench-store-", dir=base)
    doc: dict[str, Any] = {}
    try:
        with Lab(handle_signals=True) as lab:
            lab.underlay("198.18.0.0/24")
            lab.host("etcd", ETCD_ADDR)
            etcd = EtcdServer(lab, "etcd", ETCD_ADDR, os.path.join(tmp, "etcd"),
                              log_path=os.path.join(tmp, "etcd.log"))
            etcd.start()
            if "propagation" not in args.skip:
                doc["propagation"] = run_propagation(lab, etcd.url, tmp, args.agents,
                                                     args.workers, args.rounds, args.gap)
            if "sync" not in args.skip:
                doc["initial_sync"] = run_sync(lab, etcd.url, tmp, args.endpoints, args.trials)
            etcd.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    etcd_version = subprocess.run(["etcd", "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[0]
    doc["machine"] = {"cpu": platform.processor() or platform.machine(),
                      "python": platform.python_version(), "cores": os.cpu_count(),
                      "etcd": etcd_version, "etcd_data": "tmpfs" if args.tmpfs else "disk"}
    doc["command"] = "python -m benchmarks.bench_store " + " ".join(argv or sys.argv[1:])
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    if "propagation" in doc:
        p = doc["propagation"]
        a, d, r = p["add_all_agents"], p["del_all_agents"], p["baseline_raw_watch_add"]
        print(f"propagation, {p['agents']} agents in {p['workers']} processes, {p['rounds']} "
              f"rounds every {p['gap_s'] * 1000:.0f} ms (fast path: {p['fastpath']}):")
        print(f"  endpoint added   -> on all {p['agents'] - 1} others: p50 {a['p50_ms']:.1f} ms, "
              f"p99 {a['p99_ms']:.1f} ms, max {a['max_ms']:.1f} ms "
              f"(goal p99 <= {GOALS['p99_ms']:.0f} ms: {'met' if p['meets_goal'] else 'MISSED'})")
        print(f"  endpoint removed -> gone on all others: p50 {d['p50_ms']:.1f} ms, "
              f"p99 {d['p99_ms']:.1f} ms")
        print(f"  baseline (bare aetcd watcher, same events): p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms; vxdp p99 / baseline p99 = {p['p99_vs_raw']:.2f}")
        if p["rounds_incomplete"] or p["errors"]:
            print(f"  incomplete rounds: {p['rounds_incomplete']}, errors: {p['errors']}")
    if "initial_sync" in doc:
        s = doc["initial_sync"]
        print(f"initial sync of {s['endpoints']} endpoints on {s['vteps']} VTEPs, "
              f"{len(s['trials'])} trials (fast path: {s['fastpath']}):")
        print(f"  start() -> all programmed: median {s['sync_s_median']:.3f} s "
              f"(min {s['sync_s_min']:.3f}, max {s['sync_s_max']:.3f}; read "
              f"{s['read_s_median']:.3f} s + apply {s['apply_s_median']:.3f} s) "
              f"(goal <= {GOALS['sync_s']:.0f} s: {'met' if s['meets_goal'] else 'MISSED'})")
        print(f"  baseline (bare aetcd range read): {s['baseline_raw_read_s_median']:.3f} s; "
              f"sync / read = {s['sync_vs_raw_read']:.1f}")
    print(f"etcd: {doc['machine']['etcd']} (data on {doc['machine']['etcd_data']}), "
          f"{doc['machine']['cores']} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
