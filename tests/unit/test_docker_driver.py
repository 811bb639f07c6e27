"""The Docker driver's request handling without Docker or root: option parsing, error keys,
the IPAM calls over the local back end, networks made and removed on a fake VTEP."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from dataplane.config import NetworkConfig
from dataplane.docker.driver import Driver, DriverError, docker_mac, network_options
from dataplane.docker.endpoints import Held
from dataplane.docker.ipam import GATEWAY_TYPE, LocalIpam
from dataplane.docker.state import State

GENERIC = "com.docker.network.generic"


def opts(**generic: str) -> dict[str, Any]:
    return {GENERIC: generic, "com.docker.network.enable_ipv6": False}


def test_network_options() -> None:
    o = network_options(opts(vni="4097", mtu="1400", name="mynet"))
    assert (o.vni, o.mtu, o.name) == (4097, 1400, "mynet")
    o = network_options(opts(**{"com.docker.network.driver.overlay.vxlanid_list": "4098"}))
    assert (o.vni, o.mtu, o.name) == (4098, None, None)
    assert network_options(opts(vni="7", **{"com.docker.network.driver.mtu": "9000"})).mtu == 9000
    for generic, msg in (({}, "vni=N is required"), ({"vni": "0"}, "vni=0"),
                         ({"vni": "16777216"}, "vni=16777216"), ({"vni": "x"}, "vni=x"),
                         ({"vni": "1,2"}, "one VNI"), ({"vni": "5", "vin": "5"}, "-o vin"),
                         ({"vni": "5", "mtu": "50"}, "mtu=50"),
                         ({"vni": "5", "mtu": "1400", "com.docker.network.driver.mtu": "1300"},
                          "mtu"),
                         ({"vni": "5", "name": "a/b"}, "name=a/b")):
        with pytest.raises(DriverError, match=msg):
            network_options(opts(**generic))
    with pytest.raises(DriverError, match="IPv6"):
        network_options({GENERIC: {"vni": "5"}, "com.docker.network.enable_ipv6": True})


def test_docker_mac() -> None:
    assert docker_mac("192.168.55.2") == "02:42:c0:a8:37:02"


@dataclass
class FakeVtep:
    """What the driver touches for networks (no endpoints here: those need TAPs)."""

    networks: dict[str, NetworkConfig] = field(default_factory=dict)
    by_vni: dict[int, NetworkConfig] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    endpoints: dict[str, Any] = field(default_factory=dict)
    config: Any = None

    def add_network(self, net: NetworkConfig) -> None:
        self.networks[net.name] = net
        self.by_vni[net.vni] = net

    def del_network(self, name: str) -> None:
        net = self.networks.pop(name)
        del self.by_vni[net.vni]

    def emit_event(self, rec: dict[str, Any]) -> None:
        self.events.append(rec)


def driver(tmp_path: Any, *nets: NetworkConfig) -> tuple[Driver, FakeVtep]:
    v = FakeVtep(config=SimpleNamespace(store=object()))     # as with [store]
    for n in nets:
        v.add_network(n)
    st = State(str(tmp_path / "state.json"))
    st.open()
    return Driver(v, st, Held(v, st), LocalIpam(st)), v  # type: ignore[arg-type]


def call(d: Driver, path: str, req: Any = None) -> tuple[int, Any]:
    return asyncio.run(d.handle(path, req))


def create(d: Driver, nid: str, generic: dict[str, str], pool: str = "192.168.55.0/24",
           ) -> tuple[int, Any]:
    return call(d, "/NetworkDriver.CreateNetwork", {
        "NetworkID": nid, "Options": opts(**generic),
        "IPv4Data": [{"AddressSpace": "vxdp", "Pool": pool, "Gateway": "192.168.55.1/24"}]})


def test_activation_and_error_keys(tmp_path: Any) -> None:
    d, _ = driver(tmp_path)
    assert call(d, "/Plugin.Activate") == (200, {"Implements": ["NetworkDriver",
                                                                 "IpamDriver"]})
    assert call(d, "/NetworkDriver.GetCapabilities")[1]["Scope"] == "local"
    assert call(d, "/IpamDriver.GetCapabilities")[1]["RequiresRequestReplay"] is False
    status, body = call(d, "/NetworkDriver.Nope", {})
    assert status == 404 and "Err" in body
    # IPAM errors in "Error", network driver errors in "Err" (Docker reads only its key)
    assert "Error" in call(d, "/IpamDriver.RequestPool", {"Pool": ""})[1]
    assert "Err" in create(d, "n1", {})[1]
    status, body = call(d, "/NetworkDriver.CreateNetwork", {"Options": {}})
    assert status == 200 and "malformed" in body["Err"] and "NetworkID" in body["Err"]
    assert call(d, "/NetworkDriver.Join", "not a dict")[1]["Err"]   # never a crash


def test_ipam_over_the_driver(tmp_path: Any) -> None:
    d, _ = driver(tmp_path)
    _, pool = call(d, "/IpamDriver.RequestPool", {"AddressSpace": "vxdp",
                                                  "Pool": "192.168.55.0/24", "V6": False})
    pid = pool["PoolID"]
    gw = call(d, "/IpamDriver.RequestAddress", {"PoolID": pid, "Address": "",
                                                "Options": {"RequestAddressType":
                                                            GATEWAY_TYPE}})[1]
    assert gw == {"Address": "192.168.55.1/24", "Data": {}}
    a = call(d, "/IpamDriver.RequestAddress", {"PoolID": pid, "Address": "", "Options": None})
    assert a[1]["Address"] == "192.168.55.2/24"
    assert call(d, "/IpamDriver.ReleaseAddress", {"PoolID": pid,
                                                  "Address": "192.168.55.2"})[1] == {}
    assert call(d, "/IpamDriver.ReleasePool", {"PoolID": pid})[1] == {}


def test_networks_by_vni(tmp_path: Any) -> None:
    cfg = NetworkConfig(name="mynet", vni=4097, mtu=1450)
    d, v = driver(tmp_path, cfg)
    assert "mtu 1450" in create(d, "n0", {"vni": "4097", "mtu": "1400"})[1]["Err"]
    assert "not other" in create(d, "n0", {"vni": "4097", "name": "other"})[1]["Err"]
    assert create(d, "n1", {"vni": "4097"}) == (200, {})       # the config's network
    assert v.networks == {"mynet": cfg}
    assert "already used by Docker network n1" in create(d, "n2", {"vni": "4097"})[1]["Err"]
    assert create(d, "n3", {"vni": "4098", "mtu": "1400"}) == (200, {})
    assert v.networks["vni4098"].mtu == 1400 and v.networks["vni4098"].vni == 4098
    assert create(d, "n3", {"vni": "4098"}) == (200, {})       # repeated: idempotent
    assert "already used here" in create(d, "n5", {"vni": "5", "name": "mynet"})[1]["Err"]
    assert not any(e["kind"] == "warning" for e in v.events)
    call(d, "/NetworkDriver.CreateNetwork", {"NetworkID": "n6", "Options": opts(vni="6"),
                                             "IPv4Data": [{"AddressSpace": "LocalDefault",
                                                           "Pool": "10.6.0.0/16"}]})
    assert any("Docker's default IPAM" in e["line"] for e in v.events)
    call(d, "/NetworkDriver.DeleteNetwork", {"NetworkID": "n6"})
    call(d, "/NetworkDriver.DeleteNetwork", {"NetworkID": "n3"})
    call(d, "/NetworkDriver.DeleteNetwork", {"NetworkID": "n1"})
    assert list(v.networks) == ["mynet"]                       # the config's stays
    assert call(d, "/NetworkDriver.DeleteNetwork", {"NetworkID": "zz"}) == (200, {})
    # unknown endpoints: success, as Docker expects after a restart
    for path in ("Leave", "DeleteEndpoint"):
        assert call(d, f"/NetworkDriver.{path}", {"NetworkID": "n1", "EndpointID": "e"}) == \
            (200, {})
    assert call(d, "/NetworkDriver.EndpointOperInfo", {"EndpointID": "e"})[1] == {"Value": {}}
    assert "unknown network" in call(d, "/NetworkDriver.CreateEndpoint", {
        "NetworkID": "n9", "EndpointID": "e", "Interface": {"Address": "1.2.3.4/24"}})[1]["Err"]
