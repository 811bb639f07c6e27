"""``vxdp demo --docker``: the walkthrough with real Docker containers, unattended (stdin not
a TTY), and what it leaves behind: nothing (namespaces, dockerd and containerd processes,
mounts, directories under /run and /var/lib, cgroups)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from dataplane import netns
from tests.functional.docker_world import needs_docker
from tests.functional.vxdp_world import ROOT

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

SECTIONS = ["1. The world", "2. Create an overlay network and containers",
            "3. The container's eth0 is a vxdp TAP", "4. FDB and ARP tables",
            "5. Ping across nodes", "6. ARP is answered locally (proxy)",
            "7. ARP between containers on one node", "8. One VXLAN datagram on the underlay",
            "9. Counters", "10. Containers and networks go"]


def test_demo_docker_runs_unattended_and_cleans_up() -> None:
    needs_docker()
    p = subprocess.run([sys.executable, "-m", "dataplane", "demo", "--docker"], cwd=ROOT,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
    out, err = p.stdout, p.stderr
    assert p.returncode == 0, f"exit {p.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    assert "Traceback" not in out + err and "WARNING" not in out
    positions = [out.find(f"── {s} ") for s in SECTIONS]
    assert all(x >= 0 for x in positions) and positions == sorted(positions), positions
    assert re.search(r"inet 192\.168\.55\.\d+/24", out)
    assert "3 packets transmitted, 3 packets received" in out
    assert "nothing here: no ARP reached c2" in out
    assert "VXLAN Network Identifier (VNI): 4097" in out
    prefix = re.search(r"Namespace prefix: (\S+)", out).group(1)   # type: ignore[union-attr]
    assert not [n for n in netns.list_netns() if n.startswith(prefix)]
    assert not [d for d in os.listdir("/run") if d.startswith(prefix)]
    assert not [d for d in os.listdir("/var/lib") if d.startswith(prefix)]
    with open("/proc/self/mountinfo") as f:
        assert prefix not in f.read()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    assert prefix.encode() not in f.read(), f"process {pid} left behind"
            except OSError:
                pass
