"""Diagnostics do not pause forwarding: ``explain`` and ``fdb show`` on a VTEP with a
200,000-entry FDB while a ping crosses it.

``explain`` used to copy the whole live FDB and neighbour table into a reference switch:
1.9-2.3 s of a stopped loop at 200k entries (80 % of a 50 ms ping lost); ``fdb show`` took
650-730 ms in one go. Here a ping every 10 ms runs between two containers of the VTEP
while explain (several times) and fdb show run: asserted loosely — forwarding goes on
(at most a few pings lost, none answered later than 200 ms). Figures: benchmarks/bench_pause.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from dataplane.control import ControlClient
from tests.functional.vxdp_world import MANAGER, VNI, World, network

pytestmark = pytest.mark.privileged

ENTRIES = 200_000
C1_IP, C3_IP = "192.168.55.41", "192.168.55.43"


def fill(sock: str, n: int) -> None:
    """n remote FDB entries through the control socket, 1024 per batch request."""
    client = ControlClient(sock, timeout=60)
    for lo in range(0, n, 1024):
        reqs = [{"cmd": "fdb.add", "args": {
            "mac": "02:5b:" + ":".join(f"{b:02x}" for b in (i >> 16 & 255, i >> 8 & 255,
                                                             i & 255, 1)),
            "dst": f"198.18.1.{10 + i % 240}"}} for i in range(lo, min(n, lo + 1024))]
        assert client.request("batch", requests=reqs) == {"applied": len(reqs), "errors": []}


def test_explain_and_fdb_show_at_200k_entries_while_a_ping_runs(world: World) -> None:
    w = world
    w.hosts(("manager", MANAGER))
    c1 = w.container("manager", "c1", C1_IP)
    c3 = w.container("manager", "c3", C3_IP)
    v = w.start_vxdp("manager", w.vtep_config("manager", MANAGER, [
        network("mynet", VNI, endpoints=[c1, c3])]))
    fill(v.sock, ENTRIES)
    w.assert_ping(c1, C3_IP)
    ping = w.lab.popen(c1.name, ["ping", "-q", "-i", "0.01", "-c", "500", "-W", "1", C3_IP],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    explained = [v.cli("explain", "--from", c1.tap, "--to", C3_IP).stdout for _ in range(5)]
    rows = v.cli_json("fdb", "show")
    explained.append(v.cli("explain", "--from", c1.tap, "--to", "02:5b:00:00:07:01").stdout)
    out, _ = ping.communicate(timeout=60)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    sent, got = int(m.group(1)), int(m.group(2))
    assert sent == 500 and sent - got <= 5, out
    rtt = re.search(r"rtt min/avg/max/mdev = [\d.]+/[\d.]+/([\d.]+)/", out)
    assert rtt and float(rtt.group(1)) < 200.0, out
    # And the answers are right at that size.
    assert len(rows) == ENTRIES + 2
    for text in explained[:5]:
        assert f"deliver to port {c3.tap}" in text, text
    assert "encapsulate VNI 4097" in explained[5] and "198.18.1.17" in explained[5], explained[5]
    v.stop()
