"""Live streams when the VTEP stops: every client sees its stream end, none hangs."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.functional.vxdp_world import C2_IP, ROOT, World, build_walkthrough

pytestmark = pytest.mark.privileged


def test_trace_capture_and_events_clients_end_when_the_vtep_stops(world: World) -> None:
    """SIGTERM to a VTEP with a trace, a capture and an events client attached: each CLI
    exits by itself within seconds, without a traceback, and the VTEP exits cleanly."""
    wt = build_walkthrough(world)
    m = wt.manager
    clients = {cmd: subprocess.Popen([sys.executable, "-m", "dataplane", "-s", m.sock, *cmd],
                                     cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for cmd in (("trace",), ("capture", "-w", "/dev/null"), ("events",))}
    try:
        time.sleep(1.0)                        # subscribed
        world.assert_ping(wt.c1, C2_IP)
        assert all(p.poll() is None for p in clients.values())
        assert m.stop() == 0
        outs = {}
        for cmd, p in clients.items():
            out, err = p.communicate(timeout=10)
            assert "Traceback" not in err, (cmd, err)
            assert p.returncode == 0, (cmd, p.returncode, err)
            outs[cmd[0]] = out
        assert "ICMP echo-request" in outs["trace"], outs["trace"]
        assert "packets written to /dev/null" in outs["capture"], outs["capture"]
    finally:
        for p in clients.values():
            if p.poll() is None:
                p.kill()
                p.communicate()
