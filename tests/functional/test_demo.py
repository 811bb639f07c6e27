"""``vxdp demo``: the walkthrough, unattended (stdin not a TTY), end to end as a user runs it,
and what it leaves behind: nothing (no namespace with its prefix, no ``vxdp run`` child, no
temporary directory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from dataplane import demo, netns
from tests.functional.vxdp_world import ROOT

pytestmark = pytest.mark.privileged

SECTIONS = [
    "1. The world",
    "2. FDB and ARP tables",
    "3. Ping across nodes",
    "4. ARP is answered locally (proxy)",
    "5. ARP between containers on one node",
    "6. One VXLAN datagram on the underlay",
    "7. Counters",
]


def _children(pid: int) -> dict[int, str]:
    """Live children of ``pid`` whose command line runs ``dataplane run``."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat[1]) == pid and "dataplane run" in cmd:
            out[int(entry)] = cmd
    return out


def _alive(pid: int, cmd: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            now = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return state != "Z" and now == cmd


def test_demo_runs_unattended_and_cleans_up() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "dataplane", "demo"], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # Watch the demo's children while it runs: its two `vxdp run` VTEPs.
    seen: dict[int, str] = {}
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        seen.update(_children(proc.pid))
        time.sleep(0.05)
    try:
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"vxdp demo did not finish within 90 s:\n{out[-3000:]}\n{err[-2000:]}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    assert "Traceback" not in out + err

    # Every section, in order.
    positions = [out.find(f"── {s} ") for s in SECTIONS]
    assert all(p >= 0 for p in positions), [s for s, p in zip(SECTIONS, positions) if p < 0]
    assert positions == sorted(positions)
    assert "Done: the walkthrough's observations" in out
    # The observations themselves.
    assert "3 packets transmitted, 3 received, 0% packet loss" in out
    assert "02:42:c0:a8:37:03 dev mynet dst 198.18.0.2 vni 4097 self permanent" in out
    assert "192.168.55.3 dev mynet lladdr 02:42:c0:a8:37:03 PERMANENT" in out
    proxy = out[positions[3]:positions[4]]
    assert "nothing here" in proxy and "3 packets received" in proxy, proxy
    same_node = out[positions[4]:positions[5]]
    assert "Request who-has 192.168.55.4" in same_node, same_node
    underlay = out[positions[5]:positions[6]]
    assert "VXLAN Network Identifier (VNI): 4097" in underlay, underlay
    m = re.search(r"proxy_replies\s+(\d+)", out)
    assert m and int(m.group(1)) >= 3, out[positions[6]:]

    # Nothing left behind: namespaces, VTEP processes, the temporary directory.
    pm = re.search(r"prefix:\s+(vxd\d+-)", out)
    assert pm, "the demo did not print its namespace prefix"
    prefix = pm.group(1)
    assert not [n for n in netns.list_netns() if n.startswith(prefix)]
    assert len(seen) == 2, f"expected the demo to run two VTEPs, saw {seen}"
    assert not [pid for pid, cmd in seen.items() if _alive(pid, cmd)], seen
    tm = re.search(r"(/tmp/vxdp-demo-[^/\s]+)/", out)
    assert tm and not os.path.exists(tm.group(1))


def test_demo_needs_root(monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    prefix = f"vxd{os.getpid() % 10000}-"        # what the demo's Lab would have used
    assert demo.main([]) == 1
    err = capsys.readouterr().err
    assert "needs root" in err and err.count("\n") == 1, err
    # only our own prefix: other suites on the machine may add namespaces meanwhile
    assert not [n for n in netns.list_netns() if n.startswith(prefix)]


SECTIONS6 = ["1. The world", "2. FDB and ARP tables", "3. Ping6 across nodes",
             "4. Neighbor Solicitations are answered locally (proxy)",
             "5. Neighbor Discovery between containers on one node",
             "6. One VXLAN datagram on the IPv6 underlay", "7. Counters"]


def test_demo_ipv6() -> None:
    """``vxdp demo --ipv6``: the walkthrough's observations in IPv6, over an IPv6 underlay."""
    p = subprocess.run([sys.executable, "-m", "dataplane", "demo", "--ipv6"], cwd=ROOT,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    out, err = p.stdout, p.stderr
    assert p.returncode == 0, f"exit {p.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    assert "Traceback" not in out + err
    positions = [out.find(f"── {s} ") for s in SECTIONS6]
    assert all(x >= 0 for x in positions), [s for s, x in zip(SECTIONS6, positions) if x < 0]
    assert positions == sorted(positions)
    assert "02:42:c0:a8:37:03 dev mynet dst 2001:db8:18::2 vni 4097 self permanent" in out
    assert "fd00:55::3 dev mynet lladdr 02:42:c0:a8:37:03 PERMANENT" in out
    assert "3 packets transmitted, 3 received, 0% packet loss" in out
    proxy = out[positions[3]:positions[4]]
    assert "echo request" in proxy and "neighbor solicitation" not in proxy.split("tcpdump")[1] \
        .split("vxdp trace")[0], proxy
    assert "proxy Neighbor Advertisement written back" in proxy, proxy
    same_node = out[positions[4]:positions[5]]
    assert "who has fd00:55::4" in same_node, same_node
    underlay = out[positions[5]:positions[6]]
    assert "Src: 2001:db8:18::1, Dst: 2001:db8:18::2" in underlay, underlay
    assert "[Checksum Status: Good]" in underlay and "VNI): 4097" in underlay, underlay
    pm = re.search(r"prefix:\s+(vxd\d+-)", out)
    assert pm and not [n for n in netns.list_netns() if n.startswith(pm.group(1))]


def test_demo_ipv6_and_docker_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--ipv6", "--docker"]) == 2
    assert "--ipv6" in capsys.readouterr().err
