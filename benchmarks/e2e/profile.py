"""Where the vxdp VTEPs spend their time under TCP load: ``py-spy record --native`` (Python and
Cython frames, time by leaf function), then ``perf record`` of the two processes (user vs
kernel, the syscalls' inclusive shares, top symbols) with ``perf stat`` syscall counts against
the VTEPs' packet counters (how well the bursts batch), when those tools are there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.e2e import traffic
from benchmarks.e2e.world import World

_HEX = re.compile(r"^0x[0-9a-f]+$")


def _frame_name(frame: str) -> str:
    """py-spy frame "func (file.py:123)" / "func (libc.so.6)" → "func (file.py)"."""
    m = re.match(r"(.*?) \(([^():]*?)(?::\d+)?\)$", frame.strip())
    if not m:
        return frame.strip()
    func, where = m.group(1), os.path.basename(m.group(2))
    if _HEX.match(func):
        func = "?"
    return f"{func} ({where})"


def _ours(frame: str) -> bool:
    # Frames of the project (vtep.py, core.pyx, ...), minus Cython helper frames py-spy
    # attributes to inlined code (__Pyx_*, Py_DECREF...).
    return (".py)" in frame or ".pyx)" in frame) and not frame.startswith(("__Pyx", "Py_")) \
        and "(<frozen" not in frame and "(runners.py)" not in frame \
        and "(__init__.py)" not in frame and "(cli.py)" not in frame \
        and "(__main__.py)" not in frame


def pyspy_summary(path: str, top: int = 10) -> dict[str, Any]:
    """Collapsed stacks of the main (event loop) thread → share of samples by leaf frame, each
    with the project frames that led to it; epoll waits are counted as idle. Other threads
    (asyncio's executor, idle) are left out."""
    where: Counter[str] = Counter()
    total = idle = other_threads = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not any(f.startswith("run_main (vtep.py)") for f in frames):
            other_threads += count
            continue
        total += count
        leaf = frames[-1]
        if leaf.startswith(("epoll_wait", "epoll_pwait")):
            idle += count
            continue
        path_: list[str] = []
        for f in frames[:-1]:
            name = f.split(" (")[0]
            if _ours(f) and (not path_ or path_[-1] != name):
                path_.append(name)
        # The last two project frames, innermost first.
        chain = " ← ".join(reversed(path_[-3:])) if path_ else "(event loop)"
        where[f"{leaf} ← {chain}"] += count
    pct = (lambda c: round(100.0 * c / total, 1)) if total else (lambda c: 0.0)
    return {"samples": total, "idle_pct": pct(idle),
            "busy_pct": round(100.0 - pct(idle), 1) if total else 0.0,
            "where": [(f, pct(c)) for f, c in where.most_common(top)],
            "other_thread_samples": other_threads}


#: Kernel entry points whose inclusive share (perf --children) says where the VTEP's CPU goes.
PERF_ENTRIES = (
    ("__sys_sendmsg", "sendmsg with UDP_SEGMENT (GSO runs): UDP out, veth, underlay bridge, "
                      "the peer's UDP socket (softirq run in the sender's context)"),
    ("__sys_sendmmsg", "sendmmsg on the raw socket (single datagrams, no-GSO fallback)"),
    ("tun_chr_write_iter", "write()/writev() to a TAP: into the container's stack (its "
                           "TCP/UDP receive)"),
    ("tun_chr_read_iter", "read() from a TAP"),
    ("do_recvmmsg", "recvmmsg on the underlay UDP socket"),
    ("do_epoll_wait", "epoll_wait (uvloop)"),
    ("tcp_v4_rcv", "  of which: container TCP receive (tcp_v4_rcv)"),
    ("br_handle_frame", "  of which: underlay bridge (br_handle_frame, incl. br_netfilter)"),
    ("rep_movs_alternative+_copy_to_iter+_copy_from_iter",
     "  of which: copies user<->kernel (rep_movs_alternative, _copy_to_iter, _copy_from_iter)"),
)


def perf_summary(data: str, pids: dict[str, int], top: int = 12) -> dict[str, Any]:
    """``perf report`` of a ``perf record -g -p``: kernel vs user, per process, the inclusive
    share of the syscalls the fast path makes, and the top symbols."""
    def report(*opts: str) -> list[tuple[str, float]]:
        p = subprocess.run(["perf", "report", "-i", data, "--stdio", "-q", "-g", "none",
                            "--percent-limit", "0.3", *opts],
                           capture_output=True, text=True, timeout=120)
        rows = []
        for ln in p.stdout.splitlines():
            m = re.match(r"\s*([0-9.]+)%\s+(?:([0-9.]+)%\s+)?(.*\S)", ln)
            if m:
                rows.append((re.sub(r"\s{2,}", "  ", m.group(3)), float(m.group(1))))
        return rows
    by_dso = report("--no-children", "--sort", "dso")
    kernel = sum(p for d, p in by_dso if d.startswith("[kernel") or d == "[unknown]")
    node_of = {str(pid): node for node, pid in pids.items()}
    by_proc = []
    for name, p in report("--no-children", "--sort", "pid"):
        pid = name.split(":")[0].strip()
        by_proc.append((node_of.get(pid, name), p))
    children = {}
    for sym, p in report("--children", "--sort", "sym"):
        children[sym.split("] ", 1)[-1].strip()] = p
    # "a+b": leaf functions summed (the copy routine the kernel picks depends on the iovecs)
    entries = [(label, round(sum(children.get(x, 0.0) for x in sym.split("+")), 1), sym)
               for sym, label in PERF_ENTRIES]
    return {"kernel_pct": round(kernel, 1), "by_dso": by_dso[:8], "by_process": by_proc,
            "entries": entries, "top_self": report("--no-children", "--sort", "dso,sym")[:top]}


SYSCALL_EVENTS = ("syscalls:sys_enter_read", "syscalls:sys_enter_readv",
                  "syscalls:sys_enter_write",
                  "syscalls:sys_enter_writev", "syscalls:sys_enter_sendmsg",
                  "syscalls:sys_enter_sendmmsg", "syscalls:sys_enter_recvmmsg",
                  "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait",
                  "context-switches")


def syscall_summary(perf_stat_csv: str, before: dict[str, Any], after: dict[str, Any],
                    ) -> dict[str, Any]:
    """``perf stat -x,`` counts of the VTEPs' syscalls vs the frames they moved: how much
    batching the bursts get."""
    counts: dict[str, int] = {}
    for ln in perf_stat_csv.splitlines():
        f = ln.split(",")
        if len(f) > 2 and f[0].strip().isdigit():
            counts[f[2].split(":")[-1].replace("sys_enter_", "")] = int(f[0])
    if not counts:
        return {"error": perf_stat_csv.strip()[-300:]}

    def tot(section: str, key: str) -> int:
        n = 0
        for node in after:
            a, b = after[node], before.get(node, {})
            if section == "ports":
                for ep, pc in a.get("ports", {}).items():
                    n += int(pc.get(key, 0)) - int(b.get("ports", {}).get(ep, {}).get(key, 0))
            else:
                n += int(a.get(section, {}).get(key, 0)) - int(b.get(section, {}).get(key, 0))
        return n

    tap_rx, tap_tx = tot("ports", "rx_packets"), tot("ports", "tx_packets")
    ul_tx, ul_rx = tot("underlay", "tx_packets"), tot("underlay", "rx_packets")
    frames = tap_rx + ul_rx
    epoll = counts.get("epoll_wait", 0) + counts.get("epoll_pwait", 0)

    def per(a: int, b: int) -> float | None:
        return round(a / b, 2) if b else None

    sends = counts.get("sendmmsg", 0) + counts.get("sendmsg", 0)
    writes = counts.get("write", 0) + counts.get("writev", 0)
    # With offloads a TAP read returns a TSO super-frame (many wire frames) and a UDP_GRO
    # receive many datagrams: calls per frame fall below 1.
    return {"counts": counts, "tap_rx": tap_rx, "tap_tx": tap_tx, "underlay_tx": ul_tx,
            "underlay_rx": ul_rx,
            "datagrams_per_send": per(ul_tx, sends),
            "datagrams_per_recvmmsg": per(ul_rx, counts.get("recvmmsg", 0)),
            "read_calls_per_tap_frame": per(counts.get("read", 0) + counts.get("readv", 0),
                                            tap_rx),
            "write_calls_per_tap_frame": per(writes, tap_tx),
            "frames_per_epoll_wait": per(frames, epoll),
            "context_switches_per_frame": per(counts.get("context-switches", 0), frames)}


def _finish(proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    """Wait for a bounded profiler; its stderr (killed if it overstays)."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return (err or b"").decode(errors="replace")


def profile_vxdp(world: World, seconds: float, tmp: str) -> dict[str, Any]:
    """py-spy on both VTEPs during one TCP stream c1 → c2, then perf during another (each
    profiler perturbs the process, so neither run's throughput is part of the table)."""
    out: dict[str, Any] = {}
    pids = {node: p.pid for node, p in world.vteps.items()}
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    dur = max(1, int(seconds) - 1)        # inside the iperf3 run, past its start
    started: list[subprocess.Popen[bytes]] = []
    try:
        if os.path.exists(pyspy):
            runs = []
            for node, pid in pids.items():
                f = os.path.join(tmp, f"pyspy-{node}.txt")
                proc = subprocess.Popen(
                    [pyspy, "record", "--native", "-r", "100", "-d", str(dur), "-p", str(pid),
                     "--format", "raw", "-o", f],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                started.append(proc)
                runs.append((node, proc, f))
            tcp = traffic.tcp(world, 1, seconds)
            out["pyspy"] = {}
            for node, proc, f in runs:
                err = _finish(proc)
                out["pyspy"][node] = (pyspy_summary(f) if proc.returncode == 0 and os.path.exists(f)
                                      else f"py-spy failed: {err[-300:]}")
            out["tcp1_gbps_under_pyspy"] = tcp["gbps"]
        else:
            out["pyspy"] = "py-spy not installed (pip install py-spy)"
        if shutil.which("perf") and not world.args.no_perf:
            data = os.path.join(tmp, "perf.data")
            pid_list = ",".join(str(p) for p in pids.values())
            proc = subprocess.Popen(["perf", "record", "-q", "-F", "999", "-g", "-o", data,
                                     "-p", pid_list, "--", "sleep", str(dur)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            started.append(proc)
            # Syscall counts over the whole TCP run, against the VTEPs' own packet counters.
            stat = subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(SYSCALL_EVENTS),
                                     "-p", pid_list, "--", "sleep", f"{seconds + 1.5:g}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            started.append(stat)
            time.sleep(0.2)     # perf attached before the first packet
            before = world.vtep_stats()
            tcp = traffic.tcp(world, 1, seconds)
            err = _finish(proc)
            stat_err = _finish(stat)
            after = world.vtep_stats()
            if os.path.exists(data):
                try:
                    out["perf"] = perf_summary(data, pids)
                except (OSError, subprocess.SubprocessError) as exc:
                    out["perf"] = f"perf report failed: {exc}"
            else:
                out["perf"] = f"perf record failed: {err[-300:]}"
            out["syscalls"] = syscall_summary(stat_err, before, after)
            out["tcp1_gbps_under_perf"] = tcp["gbps"]
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    return out
