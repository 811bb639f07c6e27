"""The traffic of the end-to-end benchmark, from c1 to c2 of one world: iperf3 TCP (1 and 4
streams) and UDP with 64-byte frames, ping, and the CPU accounting around them; then the
metrics of one round.

CPU seconds per Gbit of TCP goodput: the whole machine's busy time from /proc/stat (all cores
minus idle, iowait and steal: where the kernel's VTEP works, in softirq), raw and minus the
background load, and for vxdp the two ``vxdp run`` processes' own utime+stime.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.e2e.common import C2_IP, UDP_PAYLOAD, BenchError
from benchmarks.e2e.world import World

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- CPU accounting

def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot, all cores: user+nice+system+irq+softirq
    (guest time is already inside user; idle, iowait and steal are not work done here)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / CLK_TCK


def process_cpu_s(pids: Sequence[int]) -> float:
    """utime+stime (all threads) of ``pids``, seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(rest[11]) + int(rest[12])    # fields 14, 15 of stat(5)
    return total / CLK_TCK


def background_busy(seconds: float = 1.0) -> float:
    """Machine busy cores (CPU-s per s) while the world is idle: other people's load."""
    b0, t0 = machine_busy_s(), time.monotonic()
    time.sleep(seconds)
    return (machine_busy_s() - b0) / (time.monotonic() - t0)


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


# --------------------------------------------------------------------------- traffic

def _iperf3_server(world: World) -> tuple[subprocess.Popen[bytes], int]:
    """A one-off ``iperf3 -s -1`` in c2 on a fresh port, listening when this returns: a
    slow world still finishing the previous test can never make the next one "busy"."""
    world.port += 1
    port = world.port
    srv = world.lab.popen("c2", ["iperf3", "-s", "-1", "-B", C2_IP, "-p", str(port)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        ss = world.lab.run("c2", ["ss", "-Hltn", f"sport = :{port}"], check=False, timeout=10)
        if ss.stdout.strip():
            return srv, port
        if time.monotonic() > deadline or srv.poll() is not None:
            srv.kill()
            raise BenchError(f"{world.kind} world: iperf3 server did not start")
        time.sleep(0.05)


def iperf3(world: World, *extra: str, seconds: float) -> dict[str, Any]:
    """``iperf3 -c c2 -J EXTRA`` from c1 against a fresh server; its JSON document."""
    srv, port = _iperf3_server(world)
    argv = ["iperf3", "-c", C2_IP, "-p", str(port), "-t", f"{seconds:g}", "-J",
            "--connect-timeout", "3000", *extra]
    try:
        p = world.lab.run("c1", argv, check=False, timeout=seconds + 30)
    finally:
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait(timeout=5)
    try:
        doc = json.loads(p.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"{world.kind}: iperf3 {' '.join(extra)} printed no JSON "
                         f"(rc {p.returncode}): {p.stdout[-500:]}{p.stderr[-500:]}") from None
    if doc.get("error"):
        raise BenchError(f"{world.kind}: iperf3 {' '.join(extra)}: {doc['error']}")
    return doc


def tcp(world: World, streams: int, seconds: float) -> dict[str, Any]:
    """TCP goodput with ``streams`` streams, and the CPU it cost (machine and VTEPs)."""
    pids = world.vtep_pids()
    b0, v0, t0 = machine_busy_s(), process_cpu_s(pids), time.monotonic()
    doc = iperf3(world, "-P", str(streams), seconds=seconds)
    b1, v1, t1 = machine_busy_s(), process_cpu_s(pids), time.monotonic()
    recv = doc["end"]["sum_received"]
    sent = doc["end"]["sum_sent"]
    gbit = recv["bytes"] * 8 / 1e9
    return {"gbps": recv["bits_per_second"] / 1e9, "gbit": gbit,
            "seconds": recv["seconds"], "retransmits": sent.get("retransmits"),
            "wall_s": t1 - t0, "machine_busy_s": b1 - b0,
            "vtep_cpu_s": (v1 - v0) if pids else None,
            "iperf3_cpu_pct": {k: round(v, 1) for k, v in
                               doc["end"].get("cpu_utilization_percent", {}).items()
                               if k in ("host_total", "remote_total")}}


def udp64(world: World, seconds: float) -> dict[str, Any]:
    """UDP with 64-byte frames as fast as iperf3 can (``-b 0``): offered and delivered rates
    (iperf3's own sequence numbers) and where the lost packets died (the loss budget)."""
    before = world.counters()
    doc = iperf3(world, "-u", "-b", "0", "-l", str(UDP_PAYLOAD), seconds=seconds)
    s = doc["end"]["sum"]
    # iperf3 >= 3.? puts the sender's view in sum_sent and the receiver's in
    # sum_received; 3.12 has one "sum" whose packets are the sender's count and whose
    # lost_packets come from the server's report.
    rx = doc["end"].get("sum_received")
    sent_pkts = int(s["packets"])
    lost = int((rx or s)["lost_packets"])
    secs = float(s["seconds"]) or seconds
    delivered = max(0, sent_pkts - lost)
    budget = world.udp_budget(before, world.counters(), sent_pkts, delivered)
    return {"budget": budget, "offered_pps": sent_pkts / secs, "delivered_pps": delivered / secs,
            "sent_packets": sent_pkts, "lost_packets": lost,
            "loss_pct": 100.0 * lost / sent_pkts if sent_pkts else float("nan"),
            "seconds": secs}


def set_affinity(pids: Sequence[int], cpus: set[int]) -> None:
    """Every thread of ``pids`` onto ``cpus`` (a VTEP's executor threads too)."""
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass


def _ping(world: World, argv: list[str], cpu: int | None, timeout: float,
          ) -> subprocess.CompletedProcess[str]:
    """Run ping in c1; ``cpu``: with ping and every VTEP process pinned to that one CPU (a
    wake-up on the same CPU is cheap on a VM, one on another CPU dear: the pinned figure
    leaves mostly the work done per crossing), unpinned again afterwards."""
    pids = world.vtep_pids()
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
        set_affinity(pids, {cpu})
    try:
        return world.lab.run("c1", argv, check=False, timeout=timeout)
    finally:
        if cpu is not None:
            set_affinity(pids, os.sched_getaffinity(0))


def ping(world: World, count: int, interval: float, cpu: int | None = None) -> dict[str, Any]:
    """Round-trip times of ``count`` pings, ``interval`` seconds apart, in an idle world,
    pinned to ``cpu`` if given (see _ping)."""
    argv = ["ping", "-n", "-c", str(count), "-i", f"{interval:g}", "-W", "1", C2_IP]
    p = _ping(world, argv, cpu, count * interval + 30)
    rtts = [float(m) for m in re.findall(r"time=([0-9.]+) ms", p.stdout)]
    if not rtts:
        raise BenchError(f"{world.kind}: ping got no reply:\n{p.stdout}{p.stderr}")
    return {"p50_ms": percentile(rtts, 50), "p99_ms": percentile(rtts, 99),
            "mean_ms": statistics.fmean(rtts), "max_ms": max(rtts),
            "sent": count, "received": len(rtts)}


def ping_flood(world: World, count: int, cpu: int | None) -> dict[str, Any]:
    """``ping -f``: the next request leaves as soon as the reply is back, so ping's own wall
    time over ``count`` round trips is the mean round trip without the 1 µs rounding of each
    printed time (which makes a p50 of 35-40 µs move by a few percent per count: too coarse
    to compare two userspace VTEPs a microsecond apart). Pinned to ``cpu`` if given."""
    argv = ["ping", "-n", "-q", "-f", "-c", str(count), "-W", "1", C2_IP]
    p = _ping(world, argv, cpu, count * 0.01 + 30)
    m = re.search(r"(\d+) packets transmitted, (\d+) received.*time (\d+)ms", p.stdout)
    if not m or int(m.group(2)) == 0:
        raise BenchError(f"{world.kind}: ping -f got no reply:\n{p.stdout}{p.stderr}")
    sent, received, wall_ms = int(m.group(1)), int(m.group(2)), int(m.group(3))
    return {"mean_ms": wall_ms / sent, "sent": sent, "received": received, "wall_ms": wall_ms}


# --------------------------------------------------------------------------- one round's metrics

def metrics_of(r: dict[str, Any]) -> dict[str, float | None]:
    """One round's results (see ``run_world``) as the figures of :data:`METRICS`."""
    bg = r["background_busy_cores"]
    pinned = r.get("ping_pinned") or {}
    rtt = {"rtt_p50_ms": r["ping"]["p50_ms"], "rtt_p99_ms": r["ping"]["p99_ms"],
           "rtt_pinned_p50_ms": pinned.get("p50_ms"), "rtt_pinned_p99_ms": pinned.get("p99_ms"),
           "rtt_flood_pinned_ms": (r.get("ping_flood_pinned") or {}).get("mean_ms")}
    if "tcp1" not in r:         # the relay world: round trips only
        return rtt
    t1, t4 = r["tcp1"], r["tcp4"]

    def per_gbit(cpu: float | None, t: dict[str, Any]) -> float | None:
        return None if cpu is None or t["gbit"] <= 0 else cpu / t["gbit"]

    return {
        **rtt,
        "tcp1_gbps": t1["gbps"],
        "tcp4_gbps": t4["gbps"],
        "udp64_delivered_pps": r["udp64"]["delivered_pps"],
        "udp64_offered_pps": r["udp64"]["offered_pps"],
        "udp64_loss_pct": r["udp64"]["loss_pct"],
        "cpu_s_per_gbit_machine": per_gbit(t1["machine_busy_s"], t1),
        "cpu_s_per_gbit_machine_net": per_gbit(max(0.0, t1["machine_busy_s"] - bg * t1["wall_s"]),
                                               t1),
        "cpu_s_per_gbit_vtep": per_gbit(t1["vtep_cpu_s"], t1),
        "cpu_s_per_gbit_machine_tcp4": per_gbit(t4["machine_busy_s"], t4),
        "cpu_s_per_gbit_vtep_tcp4": per_gbit(t4["vtep_cpu_s"], t4),
    }
