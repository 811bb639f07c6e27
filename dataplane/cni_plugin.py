"""``vxdp-cni``: a CNI plugin (spec 1.0.0: ADD, DEL, CHECK, VERSION) that puts a container on
a vxdp network.

Network configuration (in a conflist, as a runtime passes it on stdin)::

    {"cniVersion": "1.0.0", "name": "vxnet", "type": "vxdp",
     "socket": "/run/vxdp/NAME.sock", "network": "mynet",
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "192.168.55.0/24"}]]}}

optionally with ``"vni"`` / ``"mtu"`` (checked against the VTEP's network) and ``"mac"``.

How a call goes (the spec, and libcni's conventions as podman 4.3 uses them):

* the runtime runs the plugin with ``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_NETNS`` (a
  path), ``CNI_IFNAME``, ``CNI_ARGS`` (``K=V;...``; ``MAC=`` is honoured), ``CNI_PATH``, and
  the configuration on stdin; it answers on stdout: a result, or an error object
  ``{"cniVersion", "code", "msg", "details"}`` with a non-zero exit;
* IPAM is delegated the standard way: the ``ipam.type`` executable found in ``CNI_PATH`` runs
  with the same environment and the same stdin, and its result's addresses and routes are used;
* the interface is made by the running VTEP (``cni.add`` on its control socket): a CNI plugin
  lives for one call, and a TAP only as long as some process holds its fd;
* DEL succeeds when things are already gone (the VTEP down, the namespace deleted, a second
  DEL), and always releases the IPAM allocation; an ADD that fails after IPAM releases it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import IPv4Interface, ip_interface
from typing import Any, NoReturn

SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")

# CNI spec error codes
E_VERSION, E_FIELD, E_ENV, E_IO, E_DECODE, E_CONFIG, E_TRY_AGAIN = 1, 2, 4, 5, 6, 7, 11
E_VXDP = 100            # plugin-specific (>= 100): the VTEP refused


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def fail(code: int, msg: str, details: str = "") -> NoReturn:
    raise CniError(code, msg, details)


# -- input ----------------------------------------------------------------------------------------

def env(name: str, required: bool = True) -> str:
    value = os.environ.get(name, "")
    if required and not value:
        fail(E_ENV, f"{name} is not set")
    return value


def cni_args() -> dict[str, str]:
    out = {}
    for item in os.environ.get("CNI_ARGS", "").split(";"):
        key, sep, value = item.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def read_config(raw: bytes) -> dict[str, Any]:
    try:
        conf = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        fail(E_DECODE, "the network configuration on stdin is not JSON", str(exc))
    if not isinstance(conf, dict):
        fail(E_DECODE, "the network configuration on stdin is not a JSON object")
    version = str(conf.get("cniVersion", ""))
    if version not in SUPPORTED:
        fail(E_VERSION, f"cniVersion {version!r} is not supported",
             f"supported: {', '.join(SUPPORTED)}")
    for key in ("socket", "network"):
        if not isinstance(conf.get(key), str) or not conf[key]:
            fail(E_CONFIG, f"the network configuration needs \"{key}\" (a string)")
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict) or not isinstance(ipam.get("type"), str):
        fail(E_CONFIG, "the network configuration needs \"ipam\" with a \"type\" "
                       "(e.g. host-local)")
    for key in ("vni", "mtu"):
        if key in conf and (not isinstance(conf[key], int) or isinstance(conf[key], bool)):
            fail(E_CONFIG, f"\"{key}\" must be an integer")
    return conf


# -- IPAM delegation ------------------------------------------------------------------------------

def find_plugin(name: str) -> str:
    if "/" in name:
        fail(E_CONFIG, f"ipam type {name!r} must be a plugin name, not a path")
    for d in env("CNI_PATH").split(":"):
        path = os.path.join(d, name)
        if d and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    fail(E_CONFIG, f"failed to find plugin {name!r} in path {env('CNI_PATH')!r}")


def delegate(ipam_type: str, raw: bytes, command: str | None = None) -> dict[str, Any]:
    """Run the IPAM plugin as libcni runs plugins (same environment, same stdin; the
    command may be overridden, for the clean-up of a failed ADD)."""
    exe = find_plugin(ipam_type)
    e = dict(os.environ)
    if command:
        e["CNI_COMMAND"] = command
    try:
        p = subprocess.run([exe], input=raw, capture_output=True, env=e, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(E_IO, f"ipam plugin {ipam_type} could not run", str(exc))
    out = p.stdout.decode(errors="replace").strip()
    if p.returncode != 0:
        try:
            err = json.loads(out)
            fail(int(err.get("code", E_IO)), f"ipam {ipam_type}: {err.get('msg', out)}",
                 str(err.get("details", "")))
        except (ValueError, AttributeError):
            fail(E_IO, f"ipam {ipam_type} failed", out or p.stderr.decode(errors="replace"))
    if not out:
        return {}
    try:
        res = json.loads(out)
    except ValueError:
        fail(E_DECODE, f"ipam {ipam_type} printed something that is not JSON", out[:200])
    return res if isinstance(res, dict) else {}


# -- the VTEP -----------------------------------------------------------------------------------

def vtep(conf: dict[str, Any], cmd: str, **args: Any) -> Any:
    from dataplane.control import ControlClient
    from dataplane.errors import VxdpError
    try:
        return ControlClient(conf["socket"], timeout=30).request(cmd, **args)
    except VxdpError as exc:
        code = E_TRY_AGAIN if "no vxdp is listening" in str(exc) else E_VXDP
        fail(code, f"vxdp: {exc}")


# -- commands -------------------------------------------------------------------------------------

def add(conf: dict[str, Any], raw: bytes) -> dict[str, Any]:
    netns, ifname, cid = env("CNI_NETNS"), env("CNI_IFNAME"), env("CNI_CONTAINERID")
    ipam_type = conf["ipam"]["type"]
    res = delegate(ipam_type, raw)
    try:
        ips = [ip for ip in res.get("ips") or [] if isinstance(ip, dict)]
        v4 = [ip for ip in ips
              if isinstance(ip_interface(str(ip.get("address", ""))), IPv4Interface)]
        if not v4:
            fail(E_CONFIG, f"ipam {ipam_type} returned no IPv4 address (vxdp networks are IPv4)")
        gw = v4[0].get("gateway")
        routes = [[r["dst"], r.get("gw") or gw] for r in res.get("routes") or []
                  if isinstance(r, dict) and "dst" in r and ":" not in r["dst"]]
        mac = ((conf.get("runtimeConfig") or {}).get("mac") or cni_args().get("MAC")
               or conf.get("mac"))
        got = vtep(conf, "cni.add", network=conf["network"], container_id=cid, ifname=ifname,
                   netns=netns, address=v4[0]["address"], mac=mac, mtu=conf.get("mtu"),
                   vni=conf.get("vni"), routes=routes)
    except BaseException:
        # Nothing left behind: the address goes back.
        try:
            delegate(ipam_type, raw, "DEL")
        except CniError:
            pass
        raise
    old = conf["cniVersion"] != "1.0.0"     # 0.3.x/0.4.0 results carry "version" per IP
    return {"cniVersion": conf["cniVersion"],
            "interfaces": [{"name": ifname, "mac": got["mac"], "sandbox": netns}],
            "ips": [{**({"version": "4"} if old else {}), "address": v4[0]["address"],
                     **({"gateway": gw} if gw else {}), "interface": 0}],
            "routes": res.get("routes") or [], "dns": res.get("dns") or conf.get("dns") or {}}


def delete(conf: dict[str, Any], raw: bytes) -> None:
    try:
        vtep(conf, "cni.del", container_id=env("CNI_CONTAINERID"), ifname=env("CNI_IFNAME"))
    except CniError as exc:
        # The spec: DEL succeeds when the resources are gone. A stopped VTEP left at most a
        # TAP without carrier in the namespace, which goes with it.
        print(f"vxdp-cni: DEL: {exc.msg} (continuing)", file=sys.stderr)
    delegate(conf["ipam"]["type"], raw)


def check(conf: dict[str, Any], raw: bytes) -> None:
    prev = conf.get("prevResult")
    if not isinstance(prev, dict):
        fail(E_CONFIG, "CHECK needs prevResult")
    delegate(conf["ipam"]["type"], raw)
    got = vtep(conf, "cni.check", container_id=env("CNI_CONTAINERID"),
               ifname=env("CNI_IFNAME"), netns=env("CNI_NETNS"))
    want = {str(ip.get("address")) for ip in prev.get("ips") or [] if isinstance(ip, dict)}
    missing = sorted(want - set(got.get("addresses") or ()))
    if missing:
        fail(E_VXDP, f"address {', '.join(missing)} missing on {env('CNI_IFNAME')}")


def run(command: str, raw: bytes) -> dict[str, Any] | None:
    if command == "VERSION":
        return {"cniVersion": "1.0.0", "supportedVersions": list(SUPPORTED)}
    conf = read_config(raw)
    if command == "ADD":
        return add(conf, raw)
    if command == "DEL":
        delete(conf, raw)
        return None
    if command == "CHECK":
        check(conf, raw)
        return None
    fail(E_ENV, f"CNI_COMMAND {command!r} is not supported", "ADD, DEL, CHECK, VERSION")


def main() -> int:
    raw = sys.stdin.buffer.read()
    version = "1.0.0"
    try:
        try:
            version = str(json.loads(raw).get("cniVersion") or version)
        except (ValueError, AttributeError, UnicodeDecodeError):
            pass
        out = run(os.environ.get("CNI_COMMAND", ""), raw)
    except CniError as exc:
        out, rc = {"cniVersion": version, "code": exc.code, "msg": exc.msg}, 1
        if exc.details:
            out["details"] = exc.details
    except Exception as exc:  # noqa: BLE001 - stdout is the runtime's: JSON, never a traceback
        out, rc = {"cniVersion": version, "code": E_IO, "msg": f"vxdp-cni: {exc!r}"}, 1
    else:
        rc = 0
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
