"""The Docker IPAM's pool rules and its local back end (state file), no root, no Docker."""

from __future__ import annotations

import asyncio
import json
import os
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from dataplane.docker.ipam import (GATEWAY_TYPE, IpamError, LocalIpam, PoolSpec,
                                   subnet_of_pool_id)
from dataplane.docker.state import State
from dataplane.errors import VxdpError

GW = {"RequestAddressType": GATEWAY_TYPE}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_pool_spec_rules() -> None:
    spec = PoolSpec.parse("192.168.55.0/24")
    assert spec.pool_id() == "vxdp/192.168.55.0/24"
    assert subnet_of_pool_id(spec.pool_id()) == "192.168.55.0/24"
    assert spec.default_gateway() == IPv4Address("192.168.55.1")
    assert spec.first_free({"192.168.55.2"}, "192.168.55.1") == IPv4Address("192.168.55.3")
    assert spec.cidr("192.168.55.3") == "192.168.55.3/24"
    ranged = PoolSpec.parse("192.168.55.0/24", "192.168.55.128/25")
    assert next(ranged.candidates()) == IPv4Address("192.168.55.128")
    assert list(ranged.candidates())[-1] == IPv4Address("192.168.55.254")   # not broadcast
    for args, msg in ((("",), "--subnet is required"), (("nope",), "not a subnet"),
                      (("192.168.55.1/24",), "host bits"), (("fd00::/64",), "IPv6"),
                      (("192.168.55.0/31",), "too small"),
                      (("192.168.55.0/24", "192.168.56.0/25"), "not inside")):
        with pytest.raises(IpamError, match=msg):
            PoolSpec.parse(*args)
    for bad in ("192.168.55.0", "192.168.55.255", "192.168.56.1", "x"):
        with pytest.raises(IpamError):
            spec.check(bad)
    with pytest.raises(IpamError, match="not a pool of this driver"):
        subnet_of_pool_id("LocalDefault/10.0.0.0/8")


def test_local_ipam_allocates_releases_and_keeps_state(tmp_path: Any) -> None:
    path = str(tmp_path / "state.json")
    st = State(path)
    ipam = LocalIpam(st)
    pid, pool = run(ipam.request_pool("192.168.55.0/29", "", False))
    assert (pid, pool) == ("vxdp/192.168.55.0/29", "192.168.55.0/29")
    assert run(ipam.request_address(pid, "", GW)) == "192.168.55.1/29"
    got = [run(ipam.request_address(pid, "", None)) for _ in range(4)]
    assert got == [f"192.168.55.{i}/29" for i in range(2, 6)]
    assert run(ipam.request_address(pid, "192.168.55.6", None)) == "192.168.55.6/29"
    with pytest.raises(IpamError, match="exhausted"):
        run(ipam.request_address(pid, "", None))
    with pytest.raises(IpamError, match="already in use"):
        run(ipam.request_address(pid, "192.168.55.6", None))
    run(ipam.release_address(pid, "192.168.55.3/29"))
    run(ipam.release_address(pid, "192.168.55.1/29"))       # the gateway stays with the pool
    st.close()
    # a restarted VTEP reads the same allocations back: .3 is the only free address
    st2 = State(path)
    st2.open()
    ipam2 = LocalIpam(st2)
    assert run(ipam2.request_address(pid, "", None)) == "192.168.55.3/29"
    with pytest.raises(IpamError, match="overlaps"):
        run(ipam2.request_pool("192.168.55.0/24", "", False))
    with pytest.raises(IpamError, match="IPv6"):
        run(ipam2.request_pool("fd00::/64", "", True))
    with pytest.raises(IpamError, match="unknown pool"):
        run(ipam2.request_address("vxdp/10.9.0.0/16", "", None))
    run(ipam2.release_pool(pid))
    assert not os.path.exists(path)             # nothing left to remember: no file
    st2.close()
    assert not os.path.exists(path + ".lock")


def test_state_is_locked_and_bad_state_is_one_line(tmp_path: Any) -> None:
    path = str(tmp_path / "s" / "state.json")
    a = State(path)
    a.open()
    with pytest.raises(VxdpError, match="in use by another vxdp"):
        State(path).open()
    a.close()
    with open(path, "w") as f:
        f.write("{garbage")
    with pytest.raises(VxdpError, match="unreadable"):
        State(path).open()
    with open(path, "w") as f:
        json.dump({"networks": {"x": {"what": 1}}}, f)
    with pytest.raises(VxdpError, match="unexpected content"):
        State(path).open()
