"""What a real ``vxdp run`` does with bad input on its control socket (both cores): one clear
error reply per malformed request and no traceback in its log; the FDB rules the kernel has
(flood-list MACs, a local endpoint's MAC never pointed at a remote VTEP); a client that
finds the listen backlog full waits its turn; a config starting with a UTF-8 BOM runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dataplane.lab import VxdpProcess
from dataplane.lab.vxdp import to_toml
from tests.control_io import exchange
from tests.functional.vxdp_world import (
    MANAGER,
    ROOT,
    VNI,
    WORKER,
    Container,
    Vtep,
    World,
    network,
    open_world,
)

pytestmark = pytest.mark.privileged

C1_IP, C3_IP, C2_IP = "192.168.55.31", "192.168.55.33", "192.168.55.32"
C2_MAC = "02:42:c0:a8:37:20"
FDB_ADD = {"mac": "02:42:c0:a8:37:99", "dst": WORKER}


@dataclass
class Stand:
    world: World
    vtep: Vtep
    c1: Container
    c3: Container
    core: str


@pytest.fixture(scope="module", params=["c", "py"])
def stand(request: pytest.FixtureRequest) -> Iterator[Stand]:
    """One VTEP per core: c1 and c3 local, c2 a peer behind the worker (not started)."""
    env = {"VXDP_NO_EXTENSIONS": "1"} if request.param == "py" else None
    with open_world() as w:
        w.hosts(("manager", MANAGER))
        c1 = w.container("manager", "c1", C1_IP)
        c3 = w.container("manager", "c3", C3_IP)
        peer = Container("c2", "-", "worker", C2_IP, C2_MAC)
        v = w.start_vxdp("manager", w.vtep_config("manager", MANAGER, [network(
            "mynet", VNI, endpoints=[c1, c3], peers=[(peer, WORKER)], flood=[WORKER])]),
            env=env)
        assert v.impl == request.param
        yield Stand(w, v, c1, c3, request.param)
        v.stop()


def req(cmd: str, **args: object) -> bytes:
    return json.dumps({"cmd": cmd, "args": args}).encode() + b"\n"


NAN = b'{"cmd": "fdb.add", "args": {"mac": "02:42:c0:a8:37:99", "dst": "198.18.0.2", "vni": NaN}}\n'

#: (raw request line, words the one-line error must contain)
MALFORMED: list[tuple[bytes, str]] = [
    # types: nothing loosely taken
    (req("fdb.add", **FDB_ADD, vni=True), "fdb.add: vni: true is not a VNI"),
    (req("fdb.add", **FDB_ADD, vni="4097"), 'fdb.add: vni: "4097" is not a VNI'),
    (req("fdb.add", **FDB_ADD, vni=4097.5), "fdb.add: vni: 4097.5 is not a VNI"),
    (NAN, "fdb.add: vni: NaN is not a VNI"),
    (req("fdb.add", **FDB_ADD, vni=[4097]), "fdb.add: vni: an array is not a VNI"),
    (req("fdb.add", **FDB_ADD, vni=1 << 24), "vni: 16777216 is out of range"),
    (req("fdb.add", mac=5, dst=WORKER), "fdb.add: mac: 5 is not a MAC address"),
    (req("fdb.add", mac=None, dst=WORKER), "fdb.add: missing required argument 'mac'"),
    (req("fdb.add", mac="02:42:c0:a8:37:99"), "fdb.add: missing required argument 'dst'"),
    (req("fdb.add", **FDB_ADD, vnii=4097), 'fdb.add: unknown argument "vnii"'),
    (req("fdb.add", mac="02:42:c0:a8:37:99", dst={"ip": WORKER}), "dst: an object is not"),
    (req("fdb.add", mac="x" * 5000, dst=WORKER), "a string of 5000 characters"),
    (req("fdb.del", dst=WORKER), "fdb.del: missing required argument 'mac'"),
    # the kernel's vxlan: replace never touches a flood list
    (req("fdb.replace", mac="00:00:00:00:00:00", dst=WORKER), "all-zeros MAC, a flood list"),
    (req("fdb.replace", mac="01:00:5e:00:00:fb", dst=WORKER), "multicast MAC, a flood list"),
    # neighbours: unicast only
    (req("neigh.add", ip="0.0.0.0", lladdr=C2_MAC), 'ip: "0.0.0.0" is not a unicast IPv4'),
    (req("neigh.add", ip="255.255.255.255", lladdr=C2_MAC), "is not a unicast IPv4 address"),
    (req("neigh.add", ip="224.0.0.251", lladdr=C2_MAC), "is not a unicast IPv4 address"),
    (req("neigh.add", ip="192.168.55.77", lladdr="ff:ff:ff:ff:ff:ff"), "multicast MAC"),
    (req("neigh.add", ip="192.168.55.77", lladdr=None), "missing required argument 'lladdr'"),
    (req("neigh.del", ip=["192.168.55.77"]), "neigh.del: ip: an array is not"),
    # the rest of the table
    (req("explain", **{"from": 4, "to": C2_IP}), "explain: from: 4 is not an interface name"),
    (req("endpoint.add", network="mynet", name=["x"], mac="02:42:c0:a8:37:98",
         address="192.168.55.98/24"), "endpoint.add: name: an array is not"),
    (req("endpoint.add", network="mynet", name="x", mac="02:42:c0:a8:37:98",
         address="192.168.55.98/24", netns_create="yes"), 'netns_create: "yes" is not true'),
    (req("endpoint.del"), "endpoint.del: missing required argument 'name'"),
    (req("stats", verbose=True), 'stats: unknown argument "verbose"'),
    (req("batch", requests="fdb.add"), "batch: requests: "),
    (req("fdb.shwo"), "unknown command 'fdb.shwo'"),
    # streams refuse before they start
    (req("trace", count="10"), 'trace: count: "10" is not a count'),
    (req("capture", port=["c1"]), "capture: port: an array is not"),
    (req("events", count=-1), "events: count: -1 is out of range"),
    # the envelope
    (b"not json\n", "malformed request: not JSON"),
    (b'{"cmd": "stats", "args": [1]}\n', '"args" must be an object'),
    (b'{"cmd": 7}\n', "malformed request: expected"),
    (b'{"cmd": "stats", "argz": {}}\n', 'malformed request: unknown key "argz"'),
    (b'{"cmd": "stats", "args": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}\n",
     "JSON nested deeper than 8 levels"),
    (b"y" * ((1 << 20) + 10) + b"\n", "request too large"),
]


@pytest.mark.parametrize("payload, words", MALFORMED,
                         ids=[f"{i}" for i in range(len(MALFORMED))])
def test_malformed_request_gets_one_clear_error(stand: Stand, payload: bytes,
                                                words: str) -> None:
    before = stand.vtep.fdb()
    lines = exchange(stand.vtep.sock, payload)
    assert len(lines) == 1, lines[:3]
    reply = json.loads(lines[0])
    assert reply["ok"] is False and words in reply["error"], reply
    assert "internal error" not in reply["error"] and "\n" not in reply["error"]
    assert stand.vtep.fdb() == before         # nothing half-done
    assert "Traceback" not in stand.vtep.log() and "internal error" not in stand.vtep.log()


def test_flood_list_macs_as_the_kernel_has_them(stand: Stand) -> None:
    """add and append take the all-zeros and multicast MACs (per-group flood lists, looked up
    before the all-zeros one, as vxlan_xmit does); replace refuses them (EOPNOTSUPP)."""
    v = stand.vtep
    v.cli("fdb", "append", "00:00:00:00:00:00", "dst", "198.18.0.3")
    v.cli("fdb", "append", "01:00:5e:00:00:fb", "dst", "198.18.0.3")
    v.cli("fdb", "append", "01:00:5e:00:00:fb", "dst", "198.18.0.4")
    v.cli("fdb", "add", "ff:ff:ff:ff:ff:ff", "dst", "198.18.0.4")
    rows = {(r["mac"], r.get("dst")) for r in v.fdb()}
    assert {("00:00:00:00:00:00", WORKER), ("00:00:00:00:00:00", "198.18.0.3"),
            ("01:00:5e:00:00:fb", "198.18.0.3"), ("01:00:5e:00:00:fb", "198.18.0.4"),
            ("ff:ff:ff:ff:ff:ff", "198.18.0.4")} <= rows
    p = v.cli("fdb", "replace", "01:00:5e:00:00:fb", "dst", "198.18.0.5", check=False)
    assert p.returncode == 1 and "multicast MAC, a flood list" in p.stderr, p.stderr
    for mac, dst in (("00:00:00:00:00:00", "198.18.0.3"), ("01:00:5e:00:00:fb", "198.18.0.3"),
                     ("01:00:5e:00:00:fb", "198.18.0.4"), ("ff:ff:ff:ff:ff:ff", "198.18.0.4")):
        v.cli("fdb", "del", mac, "dst", dst)


def test_a_local_endpoints_mac_never_points_at_a_remote_vtep(stand: Stand) -> None:
    """fdb replace of c1's MAC to a remote VTEP used to be accepted and black-holed c1."""
    w, v, c1 = stand.world, stand.vtep, stand.c1
    p = v.cli("fdb", "replace", c1.mac, "dst", WORKER, check=False)
    assert p.returncode == 1, p
    assert f"{c1.mac} is the MAC of a local endpoint in VNI {VNI}" in p.stderr, p.stderr
    assert [r.get("ifname") for r in v.fdb() if r["mac"] == c1.mac] == [c1.tap]
    w.assert_ping(stand.c3, C1_IP)
    # ...and the reverse: an endpoint cannot take a MAC the FDB has for a remote VTEP.
    p = v.cli("endpoint", "add", "--network", "mynet", "--name", "vxq15x", "--mac", C2_MAC,
              "--address", "192.168.55.97/24", check=False)
    assert p.returncode == 1 and f"{C2_MAC} is in the FDB of VNI {VNI}" in p.stderr, p.stderr
    assert "vxq15x" not in v.stats()["ports"] and w.links("manager", kind="tun") == []


def test_a_full_backlog_makes_the_client_wait_not_fail(stand: Stand) -> None:
    """With the VTEP stopped (SIGSTOP), the listen backlog fills; a `vxdp stats` started then
    retries on EAGAIN and gets its answer once the VTEP runs again."""
    v = stand.vtep
    fillers = []
    os.kill(v.pid, signal.SIGSTOP)
    try:
        while len(fillers) < 1000:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(v.sock)
            except BlockingIOError:
                s.close()
                break
            fillers.append(s)
        assert 0 < len(fillers) < 1000
        cli = subprocess.Popen([sys.executable, "-m", "dataplane", "-s", v.sock, "stats",
                                "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        for s in fillers:
            s.close()
    finally:
        os.kill(v.pid, signal.SIGCONT)
    out, err = cli.communicate(timeout=30)
    assert cli.returncode == 0, err
    assert json.loads(out)["vtep"]["name"] == "manager"


def test_a_config_starting_with_a_utf8_bom_runs(world: World) -> None:
    w = world
    w.hosts(("manager", MANAGER))
    c1 = w.container("manager", "c1", C1_IP)
    cfg = w.vtep_config("manager", MANAGER, [network("mynet", VNI, endpoints=[c1])])
    path = os.path.join(w.tmp, "bom.toml")
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + to_toml(cfg).encode())
    log = os.path.join(w.tmp, "bom.log")
    with open(log, "wb") as f:
        proc = w.lab.popen("manager", [sys.executable, "-m", "dataplane", "run", path],
                           cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=f)
    v = VxdpProcess(w.lab, "manager", "manager", proc, cfg["vtep"]["control"], path, log)
    w.vteps.append(v)
    v.wait_ready()
    assert any(r.get("ifname") == c1.tap for r in v.fdb())
    v.stop()
