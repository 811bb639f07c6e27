"""Starting ``vxdp run`` from code: one VTEP process in a lab host namespace, the way the demo,
the functional tests and the end-to-end benchmark run theirs.

    cfg = {"vtep": {"name": "manager", "local": "198.18.0.1", "control": sock},
           "network": [{"name": "mynet", "vni": 4097, "endpoint": [...], "peer": [...]}]}
    v = start_vxdp(lab, "manager", cfg, workdir)   # returns once the control socket answers
    v.request("fdb.show"); v.cli("stats")
    v.stop()   # SIGTERM; checks exit 0 and that what it created is gone

The config (a mapping, or TOML text) is written to ``WORKDIR/NAME.toml`` and the process's
stderr, its log, to ``WORKDIR/NAME.log`` (a file, never a pipe nobody reads: a chatty VTEP must
never block). It runs as ``python -m dataplane run`` with this package's parent directory as
its working directory, so the VTEP runs the same code as its caller.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dataplane
from dataplane.config import default_control_path
from dataplane.control import ControlClient
from dataplane.errors import ControlError, VxdpError
from dataplane.lab.namespaces import Lab
from dataplane.lab.tools import read_log

__all__ = ["PACKAGE_ROOT", "VxdpProcess", "start_vxdp", "to_toml"]

#: Where ``python -m dataplane`` finds this very package.
PACKAGE_ROOT = Path(dataplane.__file__).resolve().parents[1]


# --------------------------------------------------------------------------- TOML

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string of ASCII text is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _table(path: str, table: Mapping[str, Any], out: list[str], array: bool) -> None:
    out.append(f"[[{path}]]" if array else f"[{path}]")
    for k, v in table.items():
        if v is None or isinstance(v, Mapping) or _is_table_array(v):
            continue
        out.append(f"{k} = {_toml_value(v)}")
    out.append("")
    for k, v in table.items():
        if isinstance(v, Mapping):
            _table(f"{path}.{k}", v, out, False)
        elif _is_table_array(v):
            for item in v:
                _table(f"{path}.{k}", item, out, True)


def to_toml(config: Mapping[str, Any]) -> str:
    """The small subset of TOML vxdp configs use: top-level tables and arrays of tables,
    nested arrays of tables (``[[network.endpoint]]``), scalars and lists of scalars.
    ``None`` values are left out (the key's default applies)."""
    out: list[str] = []
    for k, v in config.items():
        if isinstance(v, Mapping):
            _table(k, v, out, False)
        elif _is_table_array(v):
            for item in v:
                _table(k, item, out, True)
        elif isinstance(v, (list, tuple)) and not v:
            continue
        else:
            raise TypeError(f"top-level key {k!r} must be a table or an array of tables")
    return "\n".join(out)


# --------------------------------------------------------------------------- processes

@dataclass(eq=False)
class VxdpProcess:
    """One running ``vxdp run CONFIG`` in a lab host namespace (see :func:`start_vxdp`)."""

    lab: Lab
    host: str
    name: str
    proc: subprocess.Popen[bytes]
    sock: str
    config_path: str
    log_path: str
    returncode: int | None = None
    impl: str | None = None            # "c" or "py", known once it answered
    killed: bool = False               # it ignored SIGTERM and was killed
    _stopping: list[dict[str, Any]] | None = None   # endpoints noted by terminate()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __repr__(self) -> str:
        return f"<VxdpProcess {self.name} on {self.host} pid={self.pid}>"

    # -- observation ---------------------------------------------------------------------

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        """What the process wrote to stderr so far (its log)."""
        return read_log(self.log_path)

    def request(self, cmd: str, **args: Any) -> Any:
        """A control-socket request straight through :class:`ControlClient`."""
        return ControlClient(self.sock).request(cmd, **args)

    def stats(self) -> dict[str, Any]:
        return self.request("stats")

    def fdb(self) -> list[dict[str, Any]]:
        """What ``vxdp fdb show --json`` prints (straight from the socket: no CLI start-up)."""
        return self.request("fdb.show")

    def neigh(self) -> list[dict[str, Any]]:
        """What ``vxdp neigh show --json`` prints."""
        return self.request("neigh.show")

    def endpoints(self) -> list[dict[str, Any]]:
        return self.request("endpoint.show")

    def counter(self, section: str, key: str) -> int:
        return int(self.stats()[section][key])

    def cli(self, *args: str, check: bool = True, timeout: float = 20.0,
            ) -> subprocess.CompletedProcess[str]:
        """``python -m dataplane -s SOCK ARGS...`` (the CLI only needs the unix socket, so it
        runs in the caller's namespace). ``check``: VxdpError unless it exits 0."""
        argv = [sys.executable, "-m", "dataplane", "-s", self.sock, *args]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           cwd=PACKAGE_ROOT)
        if check and p.returncode != 0:
            raise VxdpError(f"vxdp {' '.join(args)} on {self.name} exited {p.returncode}: "
                            f"{p.stderr.strip()}")
        return p

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    # -- life cycle ----------------------------------------------------------------------

    def wait_ready(self, timeout: float = 20.0) -> str:
        """Wait until the control socket answers; the core it runs ("c" or "py")."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise VxdpError(f"vxdp run on {self.host} exited with {self.proc.returncode}: "
                                f"{self.log().strip()}")
            try:
                stats = self.stats()
            except ControlError:
                if time.monotonic() > deadline:
                    raise VxdpError(f"vxdp run on {self.host} did not answer on {self.sock} "
                                    f"within {timeout:.0f}s: {self.log().strip()}") from None
                time.sleep(0.05)
                continue
            self.impl = str(stats.get("vtep", {}).get("fastpath"))
            return self.impl

    def terminate(self) -> None:
        """Note the endpoints, then send SIGTERM without waiting (see :meth:`stop`), so that
        several VTEPs can shut down side by side."""
        eps: list[dict[str, Any]] = []
        if self.alive():
            try:
                eps = self.endpoints()
            except ControlError:
                eps = []
            self.proc.send_signal(signal.SIGTERM)
        self._stopping = eps

    def stop(self, timeout: float = 10.0, check: bool = True) -> int:
        """SIGTERM (``vxdp run``'s contract: remove what it created, exit 0) and wait; SIGKILL
        after ``timeout`` seconds. With ``check``, VxdpError unless it exited 0 without a
        traceback, removed its control socket and every endpoint's TAP (in its container
        namespace, or in the host namespace), with no TAP left in the host namespace at all."""
        if self.returncode is not None:
            return self.returncode
        if self._stopping is None:
            self.terminate()
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.killed = True
            if check:
                raise VxdpError(f"vxdp run on {self.host} ignored SIGTERM for "
                                f"{timeout:.0f}s") from None
            rc = self.proc.returncode
        self.returncode = rc
        if check:
            self._check_clean(rc, self._stopping or [])
        return rc

    def _check_clean(self, rc: int, endpoints: list[dict[str, Any]]) -> None:
        def fail(what: str) -> None:
            raise VxdpError(f"vxdp run on {self.host}: {what}")

        if rc != 0:
            fail(f"exited {rc} after SIGTERM: {self.log().strip()}")
        if "Traceback" in self.log():
            fail(f"traceback in its log: {self.log()}")
        if os.path.exists(self.sock):
            fail(f"control socket {self.sock} left behind")
        for ep in endpoints:
            where = ep.get("netns")
            ifname = ep.get("ifname") or ep["name"]
            if where and where in self.lab.namespaces and ifname in self.lab.links(where):
                fail(f"{ifname} still exists in {where} after vxdp stopped")
            if ep["name"] in self.lab.links(self.host):
                fail(f"TAP {ep['name']} still exists in host {self.host} after vxdp stopped")
        left = self.lab.links(self.host, kind="tun")
        if left:
            fail(f"TAP devices left in {self.host}: {left}")


def start_vxdp(lab: Lab, host: str, config: Mapping[str, Any] | str, workdir: str, *,
               env: Mapping[str, str] | None = None, wait: bool = True,
               timeout: float = 20.0, preexec_fn: Any = None) -> VxdpProcess:
    """Write ``config`` (a mapping or TOML text) to ``WORKDIR/NAME.toml``, start ``vxdp run``
    in ``host``'s namespace with its log in ``WORKDIR/NAME.log`` and (unless ``wait=False``)
    wait until its control socket answers. ``env``: variables added to (or overriding) this
    process's environment for the VTEP only, e.g. ``{"VXDP_NO_EXTENSIONS": "1"}`` for the
    pure-Python path. ``preexec_fn`` runs in the child after it joined ``host``'s network
    namespace (a Docker lab host also puts it into its dockerd's mount namespace)."""
    text = config if isinstance(config, str) else to_toml(config)
    vtep = tomllib.loads(text).get("vtep", {})
    name = vtep.get("name", "vxdp")
    sock = vtep.get("control") or default_control_path(name)
    config_path = os.path.join(workdir, f"{name}.toml")
    Path(config_path).write_text(text)
    log_path = os.path.join(workdir, f"{name}.log")
    with open(log_path, "wb") as log:
        proc = lab.popen(host, [sys.executable, "-m", "dataplane", "run", config_path],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                         cwd=PACKAGE_ROOT, env=None if env is None else {**os.environ, **env},
                         preexec_fn=preexec_fn)
    v = VxdpProcess(lab, host, name, proc, sock, config_path, log_path)
    if wait:
        v.wait_ready(timeout)
    return v
