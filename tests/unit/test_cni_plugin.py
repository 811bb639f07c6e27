"""vxdp-cni's input handling and error output (no root, no VTEP): every failure is one CNI
error object on stdout with a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]      # run this tree's plugin

CONF = {"cniVersion": "1.0.0", "name": "vxnet", "type": "vxdp",
        "socket": "/nonexistent/vxdp.sock", "network": "mynet",
        "ipam": {"type": "host-local"}}


def plugin(command: str, stdin: Any, **env: str) -> tuple[int, Any, str]:
    e = {"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": command, "CNI_CONTAINERID": "c",
         "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent", **env}
    data = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
    p = subprocess.run([sys.executable, "-m", "dataplane.cni_plugin"], input=data,
                       capture_output=True, env=e, cwd=ROOT, timeout=30)
    out = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, out, p.stderr.decode()


def test_version() -> None:
    rc, out, _ = plugin("VERSION", {"cniVersion": "1.0.0"})
    assert rc == 0 and out == {"cniVersion": "1.0.0",
                               "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]}


@pytest.mark.parametrize("command, stdin, env, code, msg", [
    ("ADD", b"{", {}, 6, "not JSON"),
    ("ADD", [1], {}, 6, "JSON object"),
    ("ADD", {**CONF, "cniVersion": "2.0.0"}, {}, 1, "not supported"),
    ("ADD", {k: v for k, v in CONF.items() if k != "network"}, {}, 7, "network"),
    ("ADD", {**CONF, "ipam": {}}, {}, 7, "ipam"),
    ("ADD", {**CONF, "vni": "4097"}, {}, 7, "vni"),
    ("ADD", CONF, {}, 7, "failed to find plugin 'host-local'"),
    ("ADD", {**CONF, "ipam": {"type": "../x"}}, {}, 7, "not a path"),
    ("ADD", CONF, {"CNI_NETNS": ""}, 4, "CNI_NETNS"),
    ("CHECK", CONF, {}, 7, "prevResult"),
    ("GC", CONF, {}, 4, "not supported"),
])
def test_errors(command: str, stdin: Any, env: dict[str, str], code: int, msg: str) -> None:
    rc, out, err = plugin(command, stdin, **env)
    assert rc != 0 and out["code"] == code and msg in out["msg"], out
    assert "cniVersion" in out and "Traceback" not in err


def test_del_succeeds_with_nothing_there(tmp_path: Any) -> None:
    """DEL with the VTEP gone and an IPAM plugin that has nothing to release: success."""
    ipam = tmp_path / "noop"
    ipam.write_text("#!/bin/sh\nexit 0\n")
    ipam.chmod(0o755)
    rc, out, err = plugin("DEL", {**CONF, "ipam": {"type": "noop"}}, CNI_PATH=str(tmp_path))
    assert rc == 0 and out is None and "continuing" in err
