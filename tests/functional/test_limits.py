"""Tables no container can fill (a real ``vxdp run``, the C path): a container that sends frames
from thousands of random source MACs fills only its own learned-MAC bound, is counted and told
about once, never slows the others down to a stop, and never makes an endpoint or a permanent
FDB entry fail; ``maxaddress`` bounds the remote entries only, as the kernel's does."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

import pytest

from tests.functional.vxdp_world import (
    MANAGER,
    ROOT,
    VNI,
    WORKER,
    network,
    open_world,
    wait_for,
)

pytestmark = pytest.mark.privileged

# Frames from random source MACs to the broadcast address, written on the container's eth0
# by an AF_PACKET socket: what a misbehaving (or hostile) container can do.
FLOOD = r"""
import os, socket, sys
n = int(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for i in range(n):
    src = bytes([0x02]) + os.urandom(5)
    s.send(b"\xff" * 6 + src + b"\x88\xb5" + bytes(46))
print(n)
"""


def flood_macs(w: object, c: object, n: int) -> None:
    p = w.lab.run(c.name, [sys.executable, "-c", FLOOD, str(n)], timeout=60)  # type: ignore[attr-defined]
    assert p.returncode == 0, p.stderr


def test_a_container_flooding_source_macs_fills_only_its_own_bound() -> None:
    with open_world() as w:
        w.hosts(("manager", MANAGER), ("worker", WORKER))
        c1 = w.container("manager", "c1", "192.168.55.4")
        c3 = w.container("manager", "c3", "192.168.55.5")
        c2 = w.container("worker", "c2", "192.168.55.3")
        m, _k = w.start_all(
            ("manager", w.vtep_config("manager", MANAGER, [network(
                "mynet", VNI, endpoints=[c1, c3], peers=[(c2, WORKER)], flood=[WORKER],
                learning=True, maxaddress=100, max_learned=5000,
                max_learned_per_port=300)])),
            ("worker", w.vtep_config("worker", WORKER, [network(
                "mynet", VNI, endpoints=[c2], peers=[(c1, MANAGER), (c3, MANAGER)])])))
        with tempfile.TemporaryFile() as out:
            events = subprocess.Popen([sys.executable, "-m", "dataplane", "-s", m.sock,
                                       "events", "--json"], cwd=ROOT, stdout=out,
                                      stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            try:
                time.sleep(0.5)                  # subscribed before the flood starts
                flood_macs(w, c1, 5000)
                # Every frame vxdp read was learned or counted as refused (frames beyond
                # the TAP's queue are dropped by the container's kernel first:
                # tap_queue_dropped).
                def settled() -> bool:
                    st = m.stats()
                    rx = st["ports"][c1.tap]["rx_packets"]
                    c = st["counters"]
                    return rx > 600 and c["learned"] + c["learn_limit"] == rx
                wait_for(settled, 20, "every frame learned or counted as learn_limit")
                time.sleep(0.5)
            finally:
                events.terminate()
                events.wait(10)
            out.seek(0)
            lines = [json.loads(ln)["line"] for ln in out.read().decode().splitlines() if ln]
        learned = [r for r in m.fdb() if r["state"] == "learned"]
        assert len(learned) == 300, len(learned)
        assert all(r.get("ifname") == c1.tap for r in learned)
        assert sum("learn_limit" in line for line in lines) == 1, lines
        # The others still talk, and configured state is never refused.
        w.assert_ping(c3, "192.168.55.3")
        m.cli("fdb", "add", "02:42:c0:a8:37:63", "dst", WORKER)
        c4 = w.container("manager", "c4", "192.168.55.6")
        m.cli("endpoint", "add", "--network", "mynet", "--name", c4.tap, "--mac", c4.mac,
              "--address", "192.168.55.6/24", "--netns", c4.ns, "--ifname", "eth0")
        w.assert_ping(c4, "192.168.55.4")
        # maxaddress counts remote entries only: the 300 local ones never filled it
        assert sum(1 for r in m.fdb() if "dst" in r and r["mac"] != "00:00:00:00:00:00") == 2
