"""A real etcd (Debian's ``etcd-server``) in a lab namespace: the store the functional tests,
``benchmarks/bench_store`` and ``vxdp demo --store etcd`` run their VTEPs against.

Lab equipment, not product: the product only ever talks to etcd as a client
(:mod:`dataplane.store.etcd`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import KW_ONLY, dataclass

from dataplane.errors import VxdpError
from dataplane.lab.namespaces import Lab
from dataplane.lab.tools import end_process, read_log

__all__ = ["EtcdServer"]

_HEALTH = r"""
import json, sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
last = ""
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as r:
            if json.loads(r.read()).get("health") == "true":
                sys.exit(0)
    except Exception as e:
        last = repr(e)
    time.sleep(0.05)
print(last, file=sys.stderr)
sys.exit(1)
"""


@dataclass(eq=False)
class EtcdServer:
    """A real etcd (Debian's ``etcd-server``) in a lab namespace, for tests, benchmarks and the
    demo: clients on ``address:port`` only (never 0.0.0.0), peers on the namespace's loopback.
    The data directory survives :meth:`kill`, so :meth:`start` again restarts the same member
    with its data (revisions, leases)."""

    lab: Lab
    host: str            # the lab host (namespace) it runs in
    address: str         # its client address there
    data_dir: str
    _: KW_ONLY
    port: int = 2379
    name: str = "s1"
    log_path: str = ""   # default: DATA_DIR.log
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.log_path = self.log_path or self.data_dir + ".log"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def argv(self) -> list[str]:
        peer = "http://127.0.0.1:2380"
        return ["etcd", "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"{self.name}={peer}",
                "--logger", "zap", "--log-level", "warn"]

    def start(self, wait: bool = True, timeout: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise VxdpError("etcd is already running")
        with open(self.log_path, "ab") as logf:
            self.proc = self.lab.popen(self.host, self.argv(), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=logf)
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 20.0) -> None:
        p = self.lab.run(self.host, [sys.executable, "-c", _HEALTH, self.url, str(timeout)],
                         check=False, timeout=timeout + 10)
        if p.returncode != 0:
            alive = self.proc is not None and self.proc.poll() is None
            raise VxdpError(f"etcd at {self.url} not healthy within {timeout:.0f}s "
                            f"({'running' if alive else 'exited'}): {(p.stderr or '').strip()} "
                            f"{self.log_tail()}")

    def log_tail(self, n: int = 5) -> str:
        return " | ".join(read_log(self.log_path).strip().splitlines()[-n:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop it abruptly (SIGKILL: no goodbye to the clients beyond the kernel's RSTs)."""
        if self.proc is not None:
            end_process(self.proc, sig)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
