"""The floor: ``benchmarks/relay/vxrelay.c``, a minimal VTEP in C (one TAP, one UDP socket, a
fixed VXLAN header, vxdp's system calls and offload settings, no tables, no Python), built here
with ``cc`` when its binary is missing or older than its source, and run as the VTEPs of the
``relay`` world. Its round trip is what a userspace VTEP costs on this machine at the least:
vxdp's added latency per crossing is measured against it.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.e2e.common import ROOT, BenchError

SOURCE = ROOT / "benchmarks" / "relay" / "vxrelay.c"
INCLUDES = ROOT / "_fastpath" / "includes"
#: Where `make relay` (part of `make build`) and the benchmark put the binary (build/ is ignored).
BINARY = ROOT / "build" / "vxrelay"
CFLAGS = ["-O2", "-Wall", "-Wextra"]


def relay_binary(path: Path = BINARY) -> Path:
    """The relay's binary, compiled first when it is missing or older than its sources."""
    deps = [SOURCE, INCLUDES / "vxbits.h"]
    if path.exists() and all(path.stat().st_mtime >= d.stat().st_mtime for d in deps):
        return path
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler (cc/gcc) to build benchmarks/relay/vxrelay.c "
                         "(make deps installs gcc)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    p = subprocess.run([cc, *CFLAGS, f"-I{INCLUDES}", "-o", str(tmp), str(SOURCE)],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise BenchError(f"building the relay failed:\n{p.stderr[-2000:]}")
    tmp.replace(path)
    return path


class Relay:
    """One ``vxrelay`` in a lab host's namespace; its TAP handed to a container as eth0."""

    def __init__(self, lab: Any, host: str, tap: str, local: str, remote: str, vni: int,
                 busy_poll_us: float = 0.0) -> None:
        self.lab = lab
        self.host = host
        self.tap = tap
        argv = [str(relay_binary()), tap, local, remote, str(vni), f"{busy_poll_us:g}"]
        self.proc = lab.popen(host, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        self.counters = ""

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def wait_ready(self, timeout: float = 10.0) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if r:
                line = self.proc.stdout.readline()
                if line.strip() == b"ready":
                    return
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise BenchError(f"vxrelay on {self.host} exited {self.proc.returncode}: {err}")
        raise BenchError(f"vxrelay on {self.host} did not get ready within {timeout:.0f}s")

    def attach(self, container_ns: str, mac: str, address: str, mtu: int,
               peer_ip: str, peer_mac: str) -> None:
        """Move the TAP into the container as ``eth0`` with its MAC, address and MTU, as vxdp
        does with an endpoint; a permanent neighbour entry for the peer (the relay answers no
        ARP)."""
        self.lab.run(self.host, ["ip", "link", "set", self.tap, "netns",
                                 self.lab.ns(container_ns)])
        c = container_ns
        self.lab.run(c, ["ip", "link", "set", self.tap, "name", "eth0", "address", mac,
                         "mtu", str(mtu)])
        self.lab.run(c, ["ip", "addr", "add", address, "dev", "eth0"])
        self.lab.run(c, ["ip", "link", "set", "eth0", "up"])
        self.lab.run(c, ["ip", "neigh", "replace", peer_ip, "lladdr", peer_mac, "dev", "eth0",
                         "nud", "permanent"])

    def stop(self) -> str:
        """SIGTERM; its counters line (stderr)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _out, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
        self.counters = (err or b"").decode(errors="replace").strip()
        return self.counters
