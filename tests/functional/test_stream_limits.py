"""Stream subscribers are capped (``[vtep] max_subscribers``) and give their memory back.

500 ``trace`` clients that never read used to be accepted without limit, slowed forwarding
down and left the VTEP's RSS at its peak after they closed. Here: a VTEP with two local
containers (traffic crosses the VTEP's switch), a cap of 500, 500 idle trace clients fed
by a ping flood, the 501st refused over the socket, and after they all close the RSS back
near where it started. Bounds are loose on purpose (memory is measured, not benchmarked).
"""

from __future__ import annotations

import json
import re
import socket
import time

import pytest

from dataplane.control import ControlClient
from dataplane.errors import ControlError
from tests.functional.vxdp_world import MANAGER, VNI, World, network, wait_for

pytestmark = pytest.mark.privileged

CLIENTS = 500
C1_IP, C2_IP = "192.168.55.11", "192.168.55.12"


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
    assert m, "no VmRSS"
    return int(m.group(1)) / 1024


def open_idle_trace(path: str) -> socket.socket:
    """A trace client that reads the header and then nothing more."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(b'{"cmd": "trace", "args": {}}\n')
    header = b""
    while not header.endswith(b"\n"):
        chunk = s.recv(1)
        assert chunk, "closed before the header"
        header += chunk
    assert json.loads(header) == {"ok": True, "stream": True}, header
    # A small receive buffer, so the VTEP's side fills up like a stuck reader's would.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return s


def flood(world: World, count: int = 2000) -> str:
    p = world.lab.run("c1", ["ping", "-q", "-c", str(count), "-i", "0.002", "-W", "1", C2_IP],
                      check=False, timeout=120)
    return p.stdout


def received(ping_output: str) -> int:
    m = re.search(r"(\d+) received", ping_output)
    return int(m.group(1)) if m else 0


def test_500_idle_trace_clients_are_capped_and_their_memory_returns(world: World) -> None:
    w = world
    w.hosts(("manager", MANAGER))
    c1 = w.container("manager", "c1", C1_IP)
    c2 = w.container("manager", "c2", C2_IP)
    v = w.start_vxdp("manager", w.vtep_config("manager", MANAGER, [
        network("mynet", VNI, endpoints=[c1, c2])], max_subscribers=CLIENTS))
    w.assert_ping(c1, C2_IP)
    flood(w, 500)                       # warm: first-use allocations are not the clients'
    time.sleep(1.0)
    before = rss_mib(v.pid)

    clients = [open_idle_trace(v.sock) for _ in range(CLIENTS)]
    try:
        assert v.stats()["vtep"]["streams"] == CLIENTS
        # Full house: the next one is refused over the socket, before any record.
        with pytest.raises(ControlError, match=r"too many stream clients .*max_subscribers "
                                               rf"= {CLIENTS} in \[vtep\]"):
            next(iter(ControlClient(v.sock).stream("trace")))
        with pytest.raises(ControlError, match="too many stream clients"):
            next(iter(ControlClient(v.sock).stream("events")))
        # Records pile up for readers that never read; forwarding goes on.
        out = flood(w)
        assert received(out) >= 1000, out
        peak = rss_mib(v.pid)
    finally:
        for s in clients:
            s.close()
    wait_for(lambda: v.stats()["vtep"]["streams"] == 0, 30, "the closed streams to go")
    # Loose: most of what the clients took is given back (the rest is the allocator's).
    bound = before + 0.5 * (peak - before) + 16
    wait_for(lambda: rss_mib(v.pid) <= bound, 15,
             f"the VTEP's RSS to come back under {bound:.0f} MiB (before {before:.0f}, "
             f"with {CLIENTS} clients {peak:.0f})")
    # And a stream can be opened again, and forwarding is intact.
    w.assert_ping(c1, C2_IP)
    assert v.stats()["vtep"]["streams"] == 0
    v.stop()
    assert "Traceback" not in v.log()
