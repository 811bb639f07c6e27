"""Forwarding pauses while diagnostics run, at 0, 20k, 200k and 1M FDB entries: how long a
read command holds the VTEP's event loop, and the longest gap it leaves in a 1 ms probe
crossing a real ``vxdp run``.

    python -m benchmarks.bench_pause [--json] [--sizes 0,20000,200000,1000000]
                                     [--interval 0.001] [--idle 2] [--skip holds|probe]

1. Loop holds (``holds``): the VTEP's control path in this process — a real ``Vtep`` (its
   core: the compiled one unless ``VXDP_NO_EXTENSIONS=1``; one endpoint attached without a
   TAP), its ``ControlServer`` on a unix socket, and a task that does nothing but give the
   loop back and note how long each turn took: the longest turn while a command runs is
   the longest time anything held the loop. The command is the real CLI in its own process
   (``fdb show --json``, ``neigh show --json``, ``stats --json``, ``explain``), three times
   each (the worst is kept, all three in the JSON). Baseline: the same monitor with no
   command (idle). The table is filled with ``fdb_add`` directly.

2. Probe (``probe``): a lab host with ``vxdp run`` and two containers, c1 and c2, attached
   to it, so every probe crosses the VTEP's switch (TAP → core → TAP). c1 sends a UDP
   datagram every ``--interval`` seconds with its sequence number and send time; c2 notes
   each arrival (CLOCK_MONOTONIC, one clock for every namespace). The table is filled
   through the control socket with ``batch`` requests of 1024 ``fdb add`` each (MACs
   02:5a:xx:xx:xx:01, destinations spread over 240 underlay addresses 198.18.1.x that never
   receive anything). A config with that many ``[[network.peer]]`` would need an overlay
   address per peer (the overlay is one /24) and a pure-Python TOML parse of a 100 MB file.
   Baseline in the same windows: the same probe between two other lab hosts over the
   kernel's veth + bridge (no vxdp): this machine's own scheduling noise. Per size: an idle
   window, then every read command through the real CLI, one at a time — the four above,
   plus ``trace --count`` and ``capture --count`` (the probe is their traffic) and
   ``events`` for a second — with the VTEP alone on the last CPU and the CLI (nice 10) and
   the probes (nice -5) on the others (on a 2-core machine a CLI parsing a 150 MB reply
   otherwise takes the VTEP's CPU: the scheduler, not the VTEP holding its loop), then
   again unpinned with the CLI at nice 0. For each: the longest gap between two arrivals
   while it ran, the longest one-way delay of a probe sent while it ran (a probe waiting in
   the TAP queue for the loop), probes lost, the command's time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOST, LOCAL = "h1", "198.18.0.1"
VNI = 4097
C1_IP, C2_IP = "192.168.55.11", "192.168.55.12"
PROBE_PORT = 9999
GOAL_MS = 5.0
HOLD_RUNS = 3          # each command's loop holds are measured this many times (worst kept)
BATCH = 1024

_SENDER = r"""
import socket, struct, sys, time
dst, port, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
seq, nxt = 0, time.monotonic()
while True:
    now = time.monotonic()
    if now < nxt:
        time.sleep(nxt - now)
    try:
        s.sendto(struct.pack("!Qd", seq, time.monotonic()), (dst, port))
    except OSError:                     # the lab is being taken down
        sys.exit(0)
    seq += 1
    nxt += interval
    if nxt < time.monotonic() - 0.1:    # the sender itself was held up: no burst after it
        nxt = time.monotonic()
"""

_RECEIVER = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((sys.argv[1], int(sys.argv[2])))
out = sys.stdout.buffer
print("ready", flush=True)
while True:
    data = s.recv(64)
    now = time.monotonic()
    seq, sent = struct.unpack("!Qd", data[:16])
    out.write(struct.pack("!Qdd", seq, sent, now))
    out.flush()
"""


def _mac(i: int) -> str:
    return "02:" + ":".join(f"{b:02x}" for b in (0x5a, i >> 16 & 255, i >> 8 & 255, i & 255,
                                                   0x01))


def _dst(i: int) -> str:
    return f"198.18.1.{10 + i % 240}"


# --------------------------------------------------------------------------- 1. loop holds

class _NoTap:
    """An endpoint's TAP for a VTEP without I/O: stats asks for its counters and gets none."""

    netns: str | None = None
    ifindex = 0
    offloads: frozenset[str] = frozenset()


def _bench_vtep(sock: str) -> Any:
    """A real Vtep (core, observer, command table) with one network and one endpoint, c1,
    attached to the core without a TAP; nothing opened."""
    from ipaddress import IPv4Interface

    from dataplane.config import Config, EndpointConfig, NetworkConfig, VtepConfig
    from dataplane.lab import docker_mac
    from dataplane.validate import parse_locals
    from dataplane.vtep import Endpoint, Vtep

    net = NetworkConfig("mynet", VNI)
    vtep = Vtep(Config(vtep=VtepConfig(name="bench", local=parse_locals([LOCAL]),
                                       control=sock), networks=(net,)))
    vtep.add_network(net)
    for pid, (name, ip) in enumerate((("c1", C1_IP), ("c2", C2_IP))):
        ep = EndpointConfig(name, docker_mac(ip), IPv4Interface(f"{ip}/24"))
        vtep.switch.add_port(pid, VNI, ep.mac, time.monotonic())
        vtep.endpoints[name] = vtep.ports[pid] = Endpoint(ep, net, pid, _NoTap())  # type: ignore[arg-type]
    return vtep


async def _hold_during(argv: list[str]) -> dict[str, Any]:
    """Run ``argv`` (the CLI) while a task measures every turn of this loop: the longest
    turn in CPU time of the loop's thread (work done without giving the loop back) and in
    wall time (that, plus any time the OS gave the CPU to someone else), the command's time
    and the number of turns."""
    import asyncio

    done = False
    cpu = wall = 0.0
    turns = 0

    async def monitor() -> None:
        nonlocal cpu, wall, turns
        last_c, last_w = time.thread_time(), time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now_c, now_w = time.thread_time(), time.perf_counter()
            cpu, wall = max(cpu, now_c - last_c), max(wall, now_w - last_w)
            turns += 1
            last_c, last_w = now_c, now_w

    task = asyncio.ensure_future(monitor())
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    if argv:
        proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT,
                                                    stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.PIPE)
        # Spawning is this benchmark's work (fork in this thread), not the VTEP's: the CLI
        # connects some 80 ms later, once its interpreter is up.
        cpu = wall = 0.0
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {err.decode()}")
    else:
        cpu = wall = 0.0
        await asyncio.sleep(1.0)
    took = time.monotonic() - t0
    done = True
    await task
    return {"longest_hold_ms": round(cpu * 1e3, 2), "longest_turn_wall_ms": round(wall * 1e3, 2),
            "seconds": round(took, 3), "turns": turns}


async def _holds(sizes: list[int], tmp: str) -> list[dict[str, Any]]:
    from dataplane.control import ControlServer

    sock = os.path.join(tmp, "holds.sock")
    vtep = _bench_vtep(sock)
    vtep.observe.warm_up()
    server = ControlServer(sock, vtep.handle, vtep.observe.streams())
    await server.start()
    out = []
    filled = 0
    try:
        for size in sizes:
            for i in range(filled, size):
                vtep.switch.fdb_add(VNI, _mac(i), _dst(i), "permanent", 0.0)
            filled = size
            row: dict[str, Any] = {"fdb_entries": size}
            row["idle"] = await _hold_during([])
            for name, args in (("fdb show --json", ("fdb", "show", "--json")),
                               ("neigh show --json", ("neigh", "show", "--json")),
                               ("stats --json", ("stats", "--json")),
                               ("explain", ("explain", "--from", "c1", "--to", C2_IP))):
                runs = [await _hold_during([sys.executable, "-m", "dataplane", "-s", sock,
                                            *args]) for _ in range(HOLD_RUNS)]
                worst = max(runs, key=lambda r: r["longest_hold_ms"])
                row[name] = {**worst, "runs_longest_hold_ms": [r["longest_hold_ms"]
                                                               for r in runs]}
            out.append(row)
            print(f"bench_pause: holds at {size} entries done", file=sys.stderr, flush=True)
    finally:
        await server.close()
        vtep.switch.close()
    return out


def run_holds(sizes: list[int]) -> list[dict[str, Any]]:
    import uvloop

    tmp = tempfile.mkdtemp(prefix="vxdp-bench-holds-")
    try:
        return uvloop.run(_holds(sizes, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- 2. probe

@dataclass
class Probe:
    """The receiver's arrivals, (seq, sent, received), read in a thread."""

    proc: subprocess.Popen[bytes]
    arrivals: list[tuple[int, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sender: subprocess.Popen[bytes] | None = None

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] + ([self.sender.pid] if self.sender is not None else [])

    def start(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"probe receiver did not start: {line!r}")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            rec = self.proc.stdout.read(24)
            if len(rec) < 24:
                return
            with self.lock:
                self.arrivals.append(struct.unpack("!Qdd", rec))

    def window(self, t0: float, t1: float, settle: bool = True) -> dict[str, Any]:
        """What the probe saw while something ran from t0 to t1."""
        if settle:
            time.sleep(0.2)              # let the last probes of the window arrive
        with self.lock:
            arr = sorted(self.arrivals, key=lambda a: a[2])
        before = [a for a in arr if a[2] <= t0]
        inside = [a for a in arr if t0 < a[2] <= t1 + 0.05]
        last = before[-1][2] if before else t0
        gaps = []
        for a in inside:
            gaps.append(a[2] - last)
            last = a[2]
        sent_inside = [a for a in arr if t0 <= a[1] <= t1]
        seqs = [a[0] for a in sent_inside]
        lost = (max(seqs) - min(seqs) + 1 - len(set(seqs))) if seqs else 0
        return {"longest_gap_ms": round(max(gaps, default=0.0) * 1e3, 2),
                "max_delay_ms": round(max((a[2] - a[1] for a in sent_inside), default=0.0)
                                      * 1e3, 2),
                "probes": len(sent_inside), "lost": lost}


def _cpus() -> tuple[set[int], set[int]]:
    """(the VTEP's CPU, everyone else's) when pinned."""
    cpus = sorted(os.sched_getaffinity(0))
    return {cpus[-1]}, set(cpus[:-1]) or {cpus[-1]}


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


def _cli(sock: str, *args: str, out: str | None = None, seconds: float | None = None,
         nice: int = 0, cpus: set[int] | None = None) -> tuple[float, int]:
    """Run ``vxdp -s SOCK ARGS`` (stdout to ``out`` or nowhere); (seconds it took, exit)."""
    argv = ["nice", "-n", str(nice), sys.executable, "-m", "dataplane", "-s", sock, *args]
    with open(out or os.devnull, "wb") as f:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, cwd=ROOT, stdout=f, stderr=subprocess.PIPE,
                             preexec_fn=(lambda: os.sched_setaffinity(0, cpus))
                             if cpus else None)
        if seconds is not None:
            time.sleep(seconds)
            p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=600)
        took = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"vxdp {' '.join(args)} exited {p.returncode}: {err.decode()}")
    return took, p.returncode


def _fill(sock: str, start: int, end: int) -> float:
    from dataplane.control import ControlClient

    t0 = time.monotonic()
    for lo in range(start, end, BATCH):
        reqs = [{"cmd": "fdb.add", "args": {"mac": _mac(i), "dst": _dst(i)}}
                for i in range(lo, min(end, lo + BATCH))]
        res = ControlClient(sock, timeout=60).request("batch", requests=reqs)
        if res["errors"]:
            raise RuntimeError(f"fill: {res['errors'][:3]}")
    return time.monotonic() - t0


def _commands(tmp: str, c1: str) -> list[tuple[str, tuple[str, ...], float | None]]:
    return [("fdb show --json", ("fdb", "show", "--json"), None),
            ("neigh show --json", ("neigh", "show", "--json"), None),
            ("stats --json", ("stats", "--json"), None),
            ("explain", ("explain", "--from", c1, "--to", C2_IP), None),
            ("trace --count 300", ("trace", "--json", "--count", "300"), None),
            ("capture --count 300", ("capture", "-w", os.path.join(tmp, "cap.pcapng"),
                                     "--count", "300"), None),
            ("events (1 s)", ("events", "--json"), 1.0)]


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure_size(v: Any, probes: tuple[Probe, Probe], size: int, tmp: str, idle: float,
                 c1: str) -> dict[str, Any]:
    """The idle window, then every command twice (see the module's docstring); each window
    as the probe through vxdp and the kernel-path probe saw it."""
    mine, others = _cpus()
    through, kernel = probes
    helpers = through.pids + kernel.pids

    def window(t0: float, t1: float) -> dict[str, Any]:
        seen = through.window(t0, t1)
        k = kernel.window(t0, t1, settle=False)
        seen["kernel_path"] = {"longest_gap_ms": k["longest_gap_ms"],
                               "max_delay_ms": k["max_delay_ms"], "lost": k["lost"]}
        return seen

    _pin(v.pid, mine)
    for pid in helpers:
        _pin(pid, others)
    t0 = time.monotonic()
    time.sleep(idle)
    baseline = window(t0, time.monotonic())
    rows = []
    for name, args, seconds in _commands(tmp, c1):
        row: dict[str, Any] = {"command": name}
        for key, nice, pinned in (("pinned", 10, True), ("shared", 0, False)):
            _pin(v.pid, mine if pinned else mine | others)
            for pid in helpers:
                _pin(pid, others if pinned else mine | others)
            out = os.path.join(tmp, "out.json")
            t0 = time.monotonic()
            took, _ = _cli(v.sock, *args, out=out, seconds=seconds, nice=nice,
                           cpus=others if pinned else mine | others)
            seen = window(t0, t0 + took)
            seen["seconds"] = round(took, 3)
            if name.startswith("fdb show"):
                seen["rows"] = len(json.loads(Path(out).read_text()))
            row[key] = seen
            time.sleep(0.3)
        rows.append(row)
    return {"fdb_entries": size, "idle": baseline, "commands": rows,
            "vtep_rss_mib": round(_rss_mib(v.pid), 1)}


def _probe(lab: Any, src: str, dst: str, dst_ip: str, interval: float) -> Probe:
    """A receiver in ``dst`` and a sender in ``src`` (nice -5: they are the instrument)."""
    recv = lab.popen(dst, ["nice", "-n", "-5", sys.executable, "-c", _RECEIVER, dst_ip,
                           str(PROBE_PORT)], stdout=subprocess.PIPE)
    probe = Probe(recv)
    probe.start()
    probe.sender = lab.popen(src, ["nice", "-n", "-5", sys.executable, "-c", _SENDER, dst_ip,
                                   str(PROBE_PORT), str(interval)])
    return probe


def run_probe(sizes: list[int], interval: float, idle: float) -> dict[str, Any]:
    from dataplane.lab import Lab, docker_mac, start_vxdp

    tmp = tempfile.mkdtemp(prefix="vxdp-bench-pause-")
    doc: dict[str, Any] = {"interval_ms": interval * 1e3, "sizes": []}
    try:
        with Lab(handle_signals=True) as lab:
            lab.underlay("198.18.0.0/24")
            lab.host(HOST, LOCAL)
            # the baseline: the same probe over the kernel's veth + bridge, no vxdp
            k1, k2 = lab.host("k1", "198.18.0.11"), lab.host("k2", "198.18.0.12")
            eps = []
            for name, ip in (("c1", C1_IP), ("c2", C2_IP)):
                ns = lab.container(HOST, name, docker_mac(ip), f"{ip}/24")
                eps.append({"name": ns, "mac": docker_mac(ip), "address": f"{ip}/24",
                            "netns": ns, "ifname": "eth0"})
            cfg = {"vtep": {"name": "pause", "local": LOCAL,
                            "control": os.path.join(tmp, "pause.sock")},
                   "network": [{"name": "mynet", "vni": VNI, "endpoint": eps}]}
            v = start_vxdp(lab, HOST, cfg, tmp)
            doc["fastpath"] = v.impl
            probes = (_probe(lab, eps[0]["netns"], eps[1]["netns"], C2_IP, interval),
                      _probe(lab, k1, k2, "198.18.0.12", interval))
            time.sleep(1.0)
            filled = 0
            for size in sizes:
                fill_s = _fill(v.sock, filled, size)
                filled = size
                time.sleep(1.5)
                result = measure_size(v, probes, size, tmp, idle, eps[0]["name"])
                result["fill_seconds"] = round(fill_s, 1)
                doc["sizes"].append(result)
                print(f"bench_pause: probe at {size} entries done", file=sys.stderr,
                      flush=True)
            v.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return doc


def _render(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    if "holds" in doc:
        lines += [f"1. Longest hold of the event loop, worst of {HOLD_RUNS} runs (thread CPU "
                  "time; wall time incl. the OS in brackets)", "",
                  "| FDB entries | idle | fdb show --json | neigh show --json | stats --json "
                  "| explain | fdb show time |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for h in doc["holds"]:
            cells = [f"{h[k]['longest_hold_ms']:.1f} ms ({h[k]['longest_turn_wall_ms']:.1f})"
                     for k in ("idle", "fdb show --json", "neigh show --json", "stats --json",
                               "explain")]
            lines.append(f"| {h['fdb_entries']:,} | " + " | ".join(cells)
                         + f" | {h['fdb show --json']['seconds']:.2f} s |")
        lines.append("")
    if "probe" in doc:
        p = doc["probe"]
        lines += [f"2. Probe through vxdp ({p['fastpath']} core) every {p['interval_ms']:g} ms; "
                  "in brackets the same window on the kernel path (veth + bridge, no vxdp)", "",
                  "| FDB entries | command | longest gap | max probe delay | lost "
                  "| command time | unpinned, CLI at nice 0: gap / delay |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for s in p["sizes"]:
            i, ik = s["idle"], s["idle"]["kernel_path"]
            lines.append(f"| {s['fdb_entries']:,} | (idle) | {i['longest_gap_ms']:.1f} "
                         f"({ik['longest_gap_ms']:.1f}) ms | {i['max_delay_ms']:.1f} "
                         f"({ik['max_delay_ms']:.1f}) ms | {i['lost']} | — | — |")
            for c in s["commands"]:
                a, b = c["pinned"], c["shared"]
                ak = a["kernel_path"]
                lines.append(f"| {s['fdb_entries']:,} | `{c['command']}` | "
                             f"{a['longest_gap_ms']:.1f} ({ak['longest_gap_ms']:.1f}) ms | "
                             f"{a['max_delay_ms']:.1f} ({ak['max_delay_ms']:.1f}) ms | "
                             f"{a['lost']} | {a['seconds']:.2f} s | "
                             f"{b['longest_gap_ms']:.1f} / {b['max_delay_ms']:.1f} ms |")
    big = [v["longest_hold_ms"] for h in doc.get("holds", []) if h["fdb_entries"] >= 1_000_000
           for k, v in h.items() if isinstance(v, dict) and k != "idle"]
    if big:
        worst = max(big)
        lines += ["", f"longest loop hold under a read command at 1M entries: {worst:.1f} ms "
                      f"(goal <= {GOAL_MS:g} ms: {'met' if worst <= GOAL_MS else 'MISSED'})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_pause",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--sizes", default="0,20000,200000,1000000",
                    help="FDB sizes, comma separated (0,20000,200000,1000000)")
    ap.add_argument("--interval", type=float, default=0.001, help="probe interval (0.001 s)")
    ap.add_argument("--idle", type=float, default=2.0, help="idle window of the probe (2 s)")
    ap.add_argument("--skip", choices=["holds", "probe"], action="append", default=[])
    ap.add_argument("--from-json", metavar="FILE", help="render a --json document again")
    args = ap.parse_args(argv)
    if args.from_json:
        print(_render(json.loads(Path(args.from_json).read_text())))
        return 0
    if os.geteuid() != 0:
        print("bench_pause: needs root (network namespaces)", file=sys.stderr)
        return 1
    sizes = sorted(int(x) for x in args.sizes.split(","))
    doc: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    if "holds" not in args.skip:
        doc["holds"] = run_holds(sizes)
    if "probe" not in args.skip:
        doc["probe"] = run_probe(sizes, args.interval, args.idle)
    doc["machine"] = {"cpu": platform.processor() or platform.machine(),
                      "python": platform.python_version(), "cores": os.cpu_count()}
    doc["command"] = "python -m benchmarks.bench_pause " + " ".join(argv or sys.argv[1:])
    print(json.dumps(doc, indent=2) if args.json else _render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
