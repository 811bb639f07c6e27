"""End to end over the walkthrough topology: kernel vxlan (Docker-style) vs vxdp vs its Python path.

    python -m benchmarks.bench_e2e [--json] [--worlds kernel,vxdp,python] [--rounds 3]
                                   [--seconds 3] [--from-json FILE]

The same two-node topology is built for each world, one world after the other (never two at
once), each in namespaces of its own (``dataplane.lab.Lab``, unique prefix, always removed).
The kernel and vxdp worlds run ``--rounds`` times, alternating, and the medians are reported
(the machine may be shared: ratios measured in the same run are what matters); the Python path
runs once. About two minutes with the defaults.

    underlay 198.18.0.0/24:  manager 198.18.0.1  ──br0──  worker 198.18.0.2
    overlay 192.168.55.0/24, VNI 4097:  c1 192.168.55.4 (on manager)   c2 192.168.55.3 (on worker)

- ``kernel``: Docker's overlay: bridge + vxlan (proxy, nolearning, static FDB/neighbours) and a
  veth per container, in each host namespace (:meth:`Lab.kernel_vtep`);
- ``relay``: the floor, ``benchmarks/relay/vxrelay.c`` (built here with ``cc`` when missing;
  ``make relay``): one minimal C VTEP per host with vxdp's system calls and TAP/socket
  settings and nothing else; only round trips are measured through it. What vxdp adds to the
  kernel's round trip per crossing is set against what the relay adds (``doc["latency"]``);
- ``vxdp``: one ``vxdp run`` per host with the compiled fast path (TAP per container, one UDP
  socket, recvmmsg/sendmmsg in Cython);
- ``kernel6``, ``vxdp6``: the kernel's vxlan and vxdp again, the VTEPs talking over an IPv6
  underlay (2001:db8:18::1, ::2; the same IPv4 overlay, network MTU 1430);
- ``python``: the same with ``VXDP_NO_EXTENSIONS=1`` (the readable reference path, frame by
  frame): the baseline the fast path is measured against; shorter runs.

Per world, from c1 to c2: iperf3 TCP with 1 and 4 streams (Gbit/s received), iperf3 UDP with
a 22-byte payload (= a 64-byte inner Ethernet frame: 14 + 20 + 8 + 22, no FCS) sent as fast
as iperf3 can (``-b 0``) → packets per second *delivered* to c2 (sent minus lost, iperf3's own
sequence numbers), ping RTT p50/p99 (idle world, 5 ms interval; then again with ping and
every VTEP process pinned to one CPU, ``--pin-cpu``), and CPU seconds per Gbit of
TCP goodput: the whole machine's busy time from /proc/stat (all cores minus idle, iowait and
steal: where the kernel's VTEP works, in softirq), raw and minus the background load (sampled with
the world idle, before and after its tests), and for vxdp the two ``vxdp run`` processes' own
utime+stime. Around the UDP test, packet counters along the path (interfaces, UDP MIBs of the
namespaces, ``vxdp stats``) give a loss budget: where the packets that were not delivered died.

For the vxdp world, a profile of both VTEPs under one TCP stream: ``py-spy record --native``
(Python and Cython frames, time by leaf function), then ``perf record`` of the two processes
(user vs kernel, the syscalls' inclusive shares, top symbols) with ``perf stat`` syscall
counts against the VTEPs' packet counters (how well the bursts batch), when those tools are
there.

Results: a table and ratios to the kernel (and to the Python path) on stdout, or one JSON
document with ``--json``; the table, ratios vs the goals (vxdp against the kernel, see
``GOALS``) and the profile summary are written between markers in
``benchmarks/RESULTS_e2e.md`` (text outside the markers is kept), the table and goals also
between the summary markers of ``benchmarks/RESULTS.md``, and a bar chart in
``benchmarks/e2e.png`` (matplotlib, if installed).

Needs root (namespaces, TAPs), iperf3 and ping. Everything stays inside the lab's namespaces;
every traffic generator is bounded in time.

This module runs the rounds and aggregates them; the parts are in :mod:`benchmarks.e2e`
(world, traffic, profile, render). The worlds' VTEPs are started with the lab's launcher
(:func:`dataplane.lab.start_vxdp`), as the demo and the functional tests start theirs.
"""


from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from benchmarks.e2e import traffic
from benchmarks.e2e.common import (
    ADDED_RTT_GOAL,
    LATENCY_LABELS,
    LATENCY_MODES,
    CPU_GOAL,
    CROSSINGS,
    FRAME,
    GOALS,
    LABELS,
    METRICS,
    ROOT,
    RTT_ONLY,
    UDP_PAYLOAD,
    WORLDS,
    BenchError,
    log,
)
from benchmarks.e2e.profile import profile_vxdp
from benchmarks.e2e.relay import relay_binary
from benchmarks.e2e.render import (
    BEGIN,
    END,
    PLOT,
    RESULTS,
    SUM_BEGIN,
    SUM_END,
    SUMMARY,
    plot,
    print_text,
    write_results,
    write_summary,
)
from benchmarks.e2e.world import World

# What tests/unit/test_bench_render.py and older callers reach through this module.
__all__ = ["BEGIN", "END", "ROOT", "SUM_BEGIN", "SUM_END", "main", "write_results",
           "write_summary"]


# --------------------------------------------------------------------------- one world

def run_world(kind: str, args: argparse.Namespace, rnd: int, profile: bool) -> dict[str, Any]:
    """One round of one world: build it, measure, maybe profile, tear it down."""
    short = kind == "python"
    secs = args.python_seconds if short else args.seconds
    t_start = time.monotonic()
    world = World(kind, f"{kind[0]}{kind[-1] if kind.endswith('6') else ''}{rnd}", args)
    res: dict[str, Any] = {"world": kind, "round": rnd, "prefix": world.prefix,
                           "seconds_per_test": secs}
    try:
        log(f"{kind}: round {rnd + 1}: building (prefix {world.prefix})")
        world.build()
        bg = [traffic.background_busy(1.0)]
        pings = args.pings // (2 if short else 1)
        log(f"{kind}: ping")
        res["ping"] = traffic.ping(world, pings, 0.005)
        log(f"{kind}: ping, every process pinned to CPU {args.pin_cpu}")
        res["ping_pinned"] = traffic.ping(world, pings, 0.005, cpu=args.pin_cpu)
        if args.flood_pings:
            log(f"{kind}: ping -f, every process pinned to CPU {args.pin_cpu}")
            res["ping_flood_pinned"] = traffic.ping_flood(
                world, args.flood_pings // (4 if short else 1), args.pin_cpu)
        if kind not in RTT_ONLY:
            log(f"{kind}: TCP 1 stream, {secs:g}s")
            res["tcp1"] = traffic.tcp(world, 1, secs)
            log(f"{kind}: TCP 4 streams, {secs:g}s")
            res["tcp4"] = traffic.tcp(world, 4, secs)
            log(f"{kind}: UDP {FRAME}-byte frames, -b 0, {secs:g}s")
            res["udp64"] = traffic.udp64(world, secs)
            time.sleep(0.3)     # let the UDP backlog drain before sampling the idle load again
        bg.append(traffic.background_busy(1.0))
        res["background_busy_cores_samples"] = bg
        res["background_busy_cores"] = statistics.fmean(bg)
        if world.vteps:
            res["vtep_stats"] = world.vtep_stats()
        if profile:
            log(f"{kind}: profiling the VTEPs under TCP load")
            pdir = args.profile_dir or world.tmp
            os.makedirs(pdir, exist_ok=True)
            res["profile"] = profile_vxdp(world, secs, pdir)
    finally:
        log(f"{kind}: tearing down")
        world.close()
    if world.relays:
        res["relay_counters"] = {n: r.counters for n, r in world.relays.items()}
    res["wall_s"] = time.monotonic() - t_start
    res["metrics"] = traffic.metrics_of(res)
    return res


# --------------------------------------------------------------------------- aggregation

def aggregate(kind: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One world's rounds → median of each metric; details (UDP budget, stats) of round 1,
    the profile from the round that recorded it."""
    out: dict[str, Any] = {"world": kind, "label": LABELS[kind], "rounds": len(runs),
                           "metrics": {}, "round_metrics": [r["metrics"] for r in runs]}
    for k in METRICS:
        vals = [r["metrics"].get(k) for r in runs]
        vals = [v for v in vals if v is not None and v == v]
        out["metrics"][k] = statistics.median(vals) if vals else None
    out["background_busy_cores"] = statistics.fmean(r["background_busy_cores"] for r in runs)
    out["retransmits"] = [(r["tcp1"]["retransmits"], r["tcp4"]["retransmits"]) for r in runs
                          if "tcp1" in r]
    out["runs"] = runs
    out["udp64"] = runs[0].get("udp64") or {}
    out["profile"] = next((r["profile"] for r in runs if "profile" in r), None)
    return out


def ratios(worlds: dict[str, dict[str, Any]], num: str, den: str) -> dict[str, float | None]:
    """Ratio of the medians, per metric."""
    if num not in worlds or den not in worlds:
        return {}
    a, b = worlds[num]["metrics"], worlds[den]["metrics"]
    out: dict[str, float | None] = {}
    for k in METRICS:
        x, y = a.get(k), b.get(k)
        out[k] = None if x is None or y is None or y == 0 else x / y
    return out


def round_ratios(worlds: dict[str, dict[str, Any]], num: str, den: str) -> dict[str, list[float]]:
    """Per-round ratios (round i of ``num`` over round i of ``den``): the spread."""
    if num not in worlds or den not in worlds:
        return {}
    out: dict[str, list[float]] = {}
    for k in METRICS:
        out[k] = [a[k] / b[k] for a, b in zip(worlds[num]["round_metrics"],
                                              worlds[den]["round_metrics"])
                  if a.get(k) is not None and b.get(k)]
    return out


def added_latency(worlds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What each userspace world adds to the kernel's round trip, per VTEP crossing (a ping
    crosses a VTEP four times), unpinned and with every process on one CPU; and vxdp's added
    round trip over the relay's (the floor), from the medians and round by round."""
    out: dict[str, Any] = {}
    if "kernel" not in worlds:
        return out
    for mode, key in LATENCY_MODES:
        base = worlds["kernel"]["metrics"].get(key)
        if base is None:
            continue
        rows: dict[str, Any] = {"kernel": {"p50_ms": base}}
        for w in ("relay", "vxdp", "python"):
            v = worlds.get(w, {}).get("metrics", {}).get(key)
            if v is not None:
                rows[w] = {"p50_ms": v, "added_rtt_ms": v - base,
                           "per_crossing_us": (v - base) * 1000 / CROSSINGS}
        entry: dict[str, Any] = {"metric": key, "worlds": rows}
        if "relay" in rows and "vxdp" in rows:
            ra, va = rows["relay"]["added_rtt_ms"], rows["vxdp"]["added_rtt_ms"]
            entry["vxdp_over_relay"] = va / ra if ra > 0 else None
            per = []
            for k_m, r_m, v_m in zip(worlds["kernel"]["round_metrics"],
                                     worlds["relay"]["round_metrics"],
                                     worlds["vxdp"]["round_metrics"]):
                kb, rb, vb = k_m.get(key), r_m.get(key), v_m.get(key)
                if None not in (kb, rb, vb) and rb - kb > 0:
                    per.append((vb - kb) / (rb - kb))
            entry["per_round"] = per
        out[mode] = entry
    return out


def goal_status(r: dict[str, float | None], spread: dict[str, list[float]],
                worlds: dict[str, dict[str, Any]] | None = None,
                latency: dict[str, Any] | None = None) -> dict[str, Any]:
    """The goals of issue 14: ratios to the kernel (``GOALS``), vxdp's added round trip
    against the relay's (``ADDED_RTT_GOAL``) and the VTEPs' CPU per Gbit (``CPU_GOAL``)."""
    out: dict[str, Any] = {}
    for k, (op, target) in GOALS.items():
        v = r.get(k)
        met = None if v is None else (v >= target if op == ">=" else v <= target)
        out[k] = {"label": f"{METRICS[k][0]} (vxdp / kernel)", "ratio": v,
                  "goal": f"{op} {target}", "met": met, "per_round": spread.get(k, [])}
    for mode, st in (latency or {}).items():
        if "vxdp_over_relay" not in st:
            continue
        v = st["vxdp_over_relay"]
        out[f"added_rtt_{mode}"] = {
            "label": f"added RTT over the kernel's, {LATENCY_LABELS[mode]}: vxdp / relay",
            "ratio": v, "goal": f"<= {ADDED_RTT_GOAL}",
            "met": None if v is None else v <= ADDED_RTT_GOAL, "per_round": st["per_round"]}
    key, bound = CPU_GOAL
    vx = (worlds or {}).get("vxdp")
    if vx is not None and vx["metrics"].get(key) is not None:
        v = vx["metrics"][key]
        out[key] = {"label": f"{METRICS[key][0]}, s", "ratio": v, "goal": f"<= {bound}",
                    "unit": "s", "met": v <= bound,
                    "per_round": [m[key] for m in vx["round_metrics"] if m.get(key) is not None]}
    return out


# --------------------------------------------------------------------------- main

def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    mem = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    iperf = subprocess.run(["iperf3", "--version"], capture_output=True, text=True).stdout
    from dataplane import fastpath
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem, "kernel": platform.release(),
            "python": platform.python_version(), "iperf3": iperf.splitlines()[0] if iperf else "?",
            "fastpath": fastpath.NAME, "hostname": socket.gethostname(),
            "loadavg_before": " ".join(Path("/proc/loadavg").read_text().split()[:3])}


def parse_opts(items: list[str]) -> dict[str, str]:
    """KEY=VALUE (VALUE a TOML literal: 128, true, "text") → dict for the config tables; the
    values stay as written (they are recorded in the JSON document that way)."""
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", k):
            raise SystemExit(f"bench_e2e: option {it!r} is not KEY=VALUE")
        try:
            tomllib.loads(f"v = {v}")
        except tomllib.TOMLDecodeError:
            raise SystemExit(f"bench_e2e: option {it!r}: {v!r} is not a TOML value") from None
        out[k] = v
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_e2e",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--worlds", default=",".join(WORLDS),
                    help=f"comma-separated subset of {','.join(WORLDS)} (all)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of the kernel and vxdp worlds, medians reported (3); the "
                         "Python path runs once")
    ap.add_argument("--seconds", type=float, default=3.0, help="iperf3 seconds per test (3)")
    ap.add_argument("--python-seconds", type=float, default=2.0,
                    help="iperf3 seconds per test for the pure-Python world (2)")
    ap.add_argument("--pings", type=int, default=400, help="ping probes, 5 ms apart (400)")
    ap.add_argument("--flood-pings", type=int, default=20000,
                    help="ping -f round trips, pinned, for the mean RTT (20000; 0 = none)")
    ap.add_argument("--pin-cpu", type=int, default=0,
                    help="the CPU ping and every VTEP process share for the pinned round "
                         "trips (0)")
    ap.add_argument("--no-profile", action="store_true", help="skip py-spy/perf on the VTEPs")
    ap.add_argument("--no-perf", action="store_true", help="py-spy only, no perf record")
    ap.add_argument("--profile-dir", help="keep the raw profiles (py-spy stacks, perf.data) here")
    ap.add_argument("--vtep-option", action="append", default=[], metavar="KEY=VALUE",
                    help="extra [vtep] setting for both vxdp worlds (TOML literal), repeatable")
    ap.add_argument("--network-option", action="append", default=[], metavar="KEY=VALUE",
                    help="extra [[network]] setting for both vxdp worlds, repeatable")
    ap.add_argument("--results", default=str(RESULTS),
                    help=f"markdown file to update between markers ({RESULTS.relative_to(ROOT)})")
    ap.add_argument("--plot", default=str(PLOT), help=f"PNG bar chart ({PLOT.relative_to(ROOT)})")
    ap.add_argument("--summary", default=str(SUMMARY),
                    help=f"overview whose table/goals section (between markers) is updated "
                         f"({SUMMARY.relative_to(ROOT)})")
    ap.add_argument("--no-write", action="store_true", help="write neither results nor plot")
    ap.add_argument("--from-json", metavar="FILE",
                    help="measure nothing: re-render results and plot from a saved --json output")
    return ap


def _cannot_run(kinds: list[str]) -> tuple[int, str] | None:
    """Why the measurement cannot start here (exit code, message), or None."""
    bad = [w for w in kinds if w not in WORLDS]
    if bad or not kinds:
        return 2, f"unknown world(s) {bad}; choose from {WORLDS}"
    if os.geteuid() != 0:
        return 1, "needs root (network namespaces, TAP devices)"
    for tool in ("iperf3", "ping", "ss", "taskset"):
        if shutil.which(tool) is None:
            return 1, f"{tool} not found"
    return None


def _measure(args: argparse.Namespace, kinds: list[str], doc: dict[str, Any]) -> int:
    """The rounds, one world after the other, never at once; the rounds alternate the worlds
    so that drift in the machine's other load spreads over all of them. The Python path runs
    once. Fills ``doc`` with the aggregated worlds, the ratios and the goals."""
    from dataplane.netns import list_netns

    t0 = time.monotonic()
    pid_tag = f"vxe{os.getpid() % 10000}"
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    try:
        for rnd in range(args.rounds):
            for kind in kinds:
                if kind == "python" and rnd > 0:
                    continue
                profile = kind == "vxdp" and rnd == 0 and not args.no_profile
                runs[kind].append(run_world(kind, args, rnd, profile))
    except KeyboardInterrupt:
        print("bench_e2e: interrupted; namespaces removed", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench_e2e: {exc}", file=sys.stderr)
        return 1
    finally:
        left = [n for n in list_netns() if n.startswith(pid_tag)]
        if left:
            print(f"bench_e2e: WARNING namespaces left behind: {left}", file=sys.stderr)
    doc["wall_s"] = time.monotonic() - t0
    doc["worlds"] = {k: aggregate(k, v) for k, v in runs.items() if v}
    doc["ratios"] = {k: v for k, v in {
        "vxdp/kernel": ratios(doc["worlds"], "vxdp", "kernel"),
        "relay/kernel": ratios(doc["worlds"], "relay", "kernel"),
        "vxdp6/kernel6": ratios(doc["worlds"], "vxdp6", "kernel6"),
        "vxdp/python": ratios(doc["worlds"], "vxdp", "python"),
        "python/kernel": ratios(doc["worlds"], "python", "kernel"),
    }.items() if v}
    doc["latency"] = added_latency(doc["worlds"])
    if "vxdp/kernel" in doc["ratios"]:
        doc["ratios_per_round"] = {"vxdp/kernel": round_ratios(doc["worlds"], "vxdp", "kernel"),
                                   "vxdp6/kernel6": round_ratios(doc["worlds"], "vxdp6",
                                                                 "kernel6")}
        doc["goals"] = goal_status(doc["ratios"]["vxdp/kernel"],
                                   doc["ratios_per_round"]["vxdp/kernel"], doc["worlds"],
                                   doc["latency"])
    return 0


def _write(doc: dict[str, Any], args: argparse.Namespace, note: bool) -> None:
    """Plot and the generated sections; ``note``: record in ``doc`` where they went."""
    why = plot(doc, Path(args.plot))
    if why:
        log(why)
    elif note:
        doc["plot"] = str(Path(args.plot))
    write_results(doc, Path(args.results))
    write_summary(doc, Path(args.summary))
    if note:
        doc["results"] = str(Path(args.results))


def _show(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print_text(doc)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        if not args.no_write:
            _write(saved, args, note=False)
        _show(saved, args.json)
        return 0
    args.vtep_opts = parse_opts(args.vtep_option)
    args.net_opts = parse_opts(args.network_option)
    kinds = [w.strip() for w in args.worlds.split(",") if w.strip()]
    problem = _cannot_run(kinds)
    if problem is not None:
        print(f"bench_e2e: {problem[1]}", file=sys.stderr)
        return problem[0]
    if "relay" in kinds:
        try:
            relay_binary()
        except BenchError as exc:
            print(f"bench_e2e: {exc}", file=sys.stderr)
            return 1
    os.chdir(ROOT)
    doc: dict[str, Any] = {
        "command": "python -m benchmarks.bench_e2e " + " ".join(argv if argv is not None
                                                                 else sys.argv[1:]),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(), "rounds": args.rounds, "seconds": args.seconds,
        "python_seconds": args.python_seconds,
        "pings": args.pings, "flood_pings": args.flood_pings, "pin_cpu": args.pin_cpu, "frame_bytes": FRAME, "udp_payload": UDP_PAYLOAD,
        "vtep_options": args.vtep_opts, "network_options": args.net_opts, "worlds": {},
    }
    if "vxdp" in kinds and doc["machine"]["fastpath"] != "c":
        print("bench_e2e: the compiled fast path is not importable here (make build); the vxdp "
              "world would be the Python path", file=sys.stderr)
        return 1
    rc = _measure(args, kinds, doc)
    if rc:
        return rc
    if not args.no_write:
        _write(doc, args, note=True)
    _show(doc, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
