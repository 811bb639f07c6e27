"""Calling CNI plugins exactly as libcni (containernetworking/cni 1.x, as vendored by podman
4.3) does, for tests that need no container runtime (checked against podman's own calls:
``notes/docker-cni.md`` §5).

* plugin lookup: the first executable called ``type`` in ``CNI_PATH``;
* environment: the caller's plus ``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_NETNS``,
  ``CNI_ARGS``, ``CNI_IFNAME``, ``CNI_PATH``; argv is the plugin path alone;
* stdin for each plugin of a list: its object plus the list's ``name`` and ``cniVersion``,
  ``prevResult`` (the previous plugin's result on ADD; the cached ADD result on CHECK/DEL)
  and ``runtimeConfig`` with the capability arguments the plugin declares;
* ADD in order and the result cached; DEL in reverse order, cache removed; CHECK in order;
* VERSION: stdin ``{"cniVersion": "1.0.0"}``, ``CNI_NETNS``/``CNI_IFNAME``/``CNI_PATH`` =
  ``dummy``, the others empty;
* a non-zero exit: stdout holds the error object.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any


class PluginError(Exception):
    def __init__(self, plugin: str, rc: int, error: dict[str, Any], stderr: str) -> None:
        super().__init__(f"{plugin}: exit {rc}: {error}")
        self.rc, self.error, self.stderr = rc, error, stderr


def find(ptype: str, path: str) -> str:
    for d in path.split(":"):
        p = os.path.join(d, ptype)
        if d and os.access(p, os.X_OK):
            return p
    raise FileNotFoundError(f"failed to find plugin {ptype!r} in path {path!r}")


def exec_plugin(exe: str, stdin: dict[str, Any], env: dict[str, str]) -> Any:
    p = subprocess.run([exe], input=json.dumps(stdin).encode(), capture_output=True, env=env,
                       timeout=60)
    out = p.stdout.decode()
    if p.returncode != 0:
        try:
            err = json.loads(out)
        except ValueError:
            err = {"raw": out}
        raise PluginError(os.path.basename(exe), p.returncode, err, p.stderr.decode())
    return json.loads(out) if out.strip() else None


def version(exe: str) -> Any:
    env = dict(os.environ, CNI_COMMAND="VERSION", CNI_CONTAINERID="", CNI_NETNS="dummy",
               CNI_ARGS="", CNI_IFNAME="dummy", CNI_PATH="dummy")
    return exec_plugin(exe, {"cniVersion": "1.0.0"}, env)


@dataclass
class Runtime:
    """One conflist, called for containers as libcni would."""

    conflist: dict[str, Any]
    path: str                 # CNI_PATH
    cache: str                # libcni's result cache directory
    caps: dict[str, Any] = field(default_factory=dict)

    def _env(self, cmd: str, cid: str, netns: str, ifname: str, args: str) -> dict[str, str]:
        return dict(os.environ, CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_NETNS=netns,
                    CNI_ARGS=args, CNI_IFNAME=ifname, CNI_PATH=self.path)

    def _stdin(self, plugin: dict[str, Any], prev: Any) -> dict[str, Any]:
        conf = dict(plugin, name=self.conflist["name"], cniVersion=self.conflist["cniVersion"])
        if prev is not None:
            conf["prevResult"] = prev
        rc = {k: self.caps[k] for k, on in (plugin.get("capabilities") or {}).items()
              if on and k in self.caps}
        if rc:
            conf["runtimeConfig"] = rc
        return conf

    def cache_file(self, cid: str, ifname: str) -> str:
        return os.path.join(self.cache, "results", f"{self.conflist['name']}-{cid}-{ifname}")

    def _cached(self, cid: str, ifname: str) -> Any:
        try:
            with open(self.cache_file(cid, ifname)) as f:
                return json.load(f)["result"]
        except FileNotFoundError:
            return None

    def add(self, cid: str, netns: str, ifname: str = "eth0", args: str = "") -> Any:
        env = self._env("ADD", cid, netns, ifname, args)
        prev = None
        for pl in self.conflist["plugins"]:
            prev = exec_plugin(find(pl["type"], self.path), self._stdin(pl, prev), env)
        path = self.cache_file(cid, ifname)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"kind": "cniCacheV1", "containerId": cid, "ifName": ifname,
                       "networkName": self.conflist["name"], "cniArgs": args,
                       "result": prev}, f)
        return prev

    def check(self, cid: str, netns: str, ifname: str = "eth0", args: str = "") -> None:
        prev = self._cached(cid, ifname)
        if prev is None:
            raise FileNotFoundError("CHECK: no cached result for this container")
        env = self._env("CHECK", cid, netns, ifname, args)
        for pl in self.conflist["plugins"]:
            exec_plugin(find(pl["type"], self.path), self._stdin(pl, prev), env)

    def delete(self, cid: str, netns: str, ifname: str = "eth0", args: str = "") -> None:
        prev = self._cached(cid, ifname)
        env = self._env("DEL", cid, netns, ifname, args)
        for pl in reversed(self.conflist["plugins"]):
            exec_plugin(find(pl["type"], self.path), self._stdin(pl, prev), env)
        if os.path.exists(self.cache_file(cid, ifname)):
            os.unlink(self.cache_file(cid, ifname))
