"""Per-entry remote descriptors (``bridge fdb add MAC dev vxlan0 dst IP port P vni N``) in both
cores: an FDB remote is an address, a UDP port and a VNI as the kernel keeps them per rdst
(``struct vxlan_rdst``), with the VTEP's own port and the network's VNI as the defaults that
``vxlan_fdb_info`` leaves out of a dump.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from dataplane import wire
from dataplane.errors import EntryNotFound, InvalidArgument
from tests.strategies import (
    BROADCAST,
    C1_IP,
    C1_MAC,
    LOCAL,
    PEER_IP,
    PEER_MAC,
    REMOTE,
    REMOTE2,
    VNI,
    ZERO_MAC,
    eth,
    ipv4_frame,
    vxlan_hdr,
)

OTHER_VNI = 5000


def switch(impl: Any, *, dstport: int | None = None) -> Any:
    sw = impl.Switch(LOCAL) if dstport is None else impl.Switch(LOCAL, dstport=dstport)
    sw.add_network(VNI, proxy=True)
    sw.add_port(1, VNI, C1_MAC)
    return sw


def to_peer() -> bytes:
    return ipv4_frame(PEER_MAC, C1_MAC, C1_IP, PEER_IP, payload=b"data")


def entry(sw: Any, mac: bytes) -> dict[str, Any]:
    rows = [r for r in sw.fdb_dump() if r["mac"] == mac.hex(":")]
    assert rows, f"no FDB row for {mac.hex(':')}"
    return rows[0]


def test_defaults_stay_out_of_the_dump(impl: Any) -> None:
    sw = switch(impl)
    # the VTEP's own port and the network's VNI given explicitly are the defaults
    sw.fdb_add(VNI, PEER_MAC, REMOTE, dst_port=wire.VXLAN_PORT, dst_vni=VNI)
    row = entry(sw, PEER_MAC)
    assert (row["dst"], row["dst_port"], row["dst_vni"]) == (str(REMOTE), None, None)


def test_port_and_vni_reach_the_wire(impl: Any) -> None:
    sw = switch(impl)
    sw.fdb_add(VNI, PEER_MAC, REMOTE, dst_port=8472, dst_vni=OTHER_VNI)
    row = entry(sw, PEER_MAC)
    assert (row["dst_port"], row["dst_vni"]) == (8472, OTHER_VNI)
    [act] = sw.from_port(1, to_peer(), 0.0)
    kind, dst, _sport, payload, outer = act
    assert (kind, dst, outer.dport) == ("vtep", REMOTE, 8472)
    # RFC 7348 §5: the header carries the remote's VNI (the kernel's vni translation)
    assert payload[:8] == vxlan_hdr(OTHER_VNI) and payload[8:] == to_peer()


def test_vtep_port_is_the_default(impl: Any) -> None:
    sw = switch(impl, dstport=8472)
    sw.fdb_add(VNI, PEER_MAC, REMOTE)
    [act] = sw.from_port(1, to_peer(), 0.0)
    assert act[4].dport == 0        # 0: the VTEP's own port, resolved by the sender
    sw.fdb_replace(VNI, PEER_MAC, REMOTE, dst_port=4789)
    assert entry(sw, PEER_MAC)["dst_port"] == 4789
    assert sw.from_port(1, to_peer(), 0.0)[0][4].dport == 4789


def test_flood_list_mixes_descriptors(impl: Any) -> None:
    sw = switch(impl)
    sw.fdb_append(VNI, ZERO_MAC, REMOTE)
    sw.fdb_append(VNI, ZERO_MAC, REMOTE, dst_port=8472)       # same address, other port
    sw.fdb_append(VNI, ZERO_MAC, REMOTE2, dst_vni=OTHER_VNI)
    before = sw.fdb_dump()
    sw.fdb_append(VNI, ZERO_MAC, REMOTE, dst_port=8472)   # vxlan_fdb_append: already there
    assert sw.fdb_dump() == before
    frame = eth(BROADCAST, C1_MAC, 0x88B5, b"x" * 46)
    acts = sw.from_port(1, frame, 0.0)
    got = sorted((str(a[1]), a[4].dport, int.from_bytes(a[3][4:7], "big")) for a in acts)
    assert got == sorted([(str(REMOTE), 0, VNI), (str(REMOTE), 8472, VNI),
                          (str(REMOTE2), 0, OTHER_VNI)])
    # del takes the descriptor: only the remote at port 8472 goes
    sw.fdb_del(VNI, ZERO_MAC, REMOTE, dst_port=8472)
    acts = sw.from_port(1, frame, 0.0)
    assert sorted((str(a[1]), a[4].dport) for a in acts) == [(str(REMOTE), 0), (str(REMOTE2), 0)]
    with pytest.raises(EntryNotFound):
        sw.fdb_del(VNI, ZERO_MAC, REMOTE2)      # REMOTE2 is there with VNI 5000 only


@pytest.mark.parametrize("kw", [{"dst_port": 65536}, {"dst_port": -1}, {"dst_vni": 1 << 24},
                                {"dst_vni": -1}, {"dst_port": True}])
def test_bad_descriptor_is_invalid_argument(impl: Any, kw: dict[str, Any]) -> None:
    sw = switch(impl)
    with pytest.raises(InvalidArgument):
        sw.fdb_add(VNI, PEER_MAC, REMOTE, **kw)
    assert sw.fdb_dump() == [r for r in sw.fdb_dump() if r["mac"] != PEER_MAC.hex(":")]


def test_learning_keeps_defaults_and_moves_by_address(impl: Any) -> None:
    sw = impl.Switch(LOCAL)
    sw.add_network(VNI, learning=True)
    sw.add_port(1, VNI, C1_MAC)
    frame = ipv4_frame(C1_MAC, PEER_MAC, PEER_IP, C1_IP, payload=b"back")
    sw.from_underlay(REMOTE, vxlan_hdr(VNI) + frame, 0.0)
    row = entry(sw, PEER_MAC)
    assert (row["dst"], row["state"], row["dst_port"], row["dst_vni"]) == \
        (str(REMOTE), "learned", None, None)
    sw.from_underlay(REMOTE2, vxlan_hdr(VNI) + frame, 1.0)
    assert entry(sw, PEER_MAC)["dst"] == str(REMOTE2)


def test_ipv6_remote_is_kept(impl: Any) -> None:
    sw = impl.Switch([LOCAL, "2001:db8::1"])
    sw.add_network(VNI)
    v6 = IPv6Address("2001:db8::2")
    sw.fdb_add(VNI, PEER_MAC, v6)
    assert entry(sw, PEER_MAC)["dst"] == str(v6)
    with pytest.raises(InvalidArgument):
        sw.fdb_add(VNI, bytes.fromhex("020000000009"), "fe80::1")


def test_flush_dynamic_only(impl: Any) -> None:
    sw = impl.Switch(LOCAL)
    sw.add_network(VNI, learning=True)
    sw.add_port(1, VNI, C1_MAC)
    sw.fdb_add(VNI, PEER_MAC, REMOTE)
    sw.fdb_add(VNI, bytes.fromhex("020000000007"), REMOTE, state="static")
    sw.from_underlay(REMOTE2, vxlan_hdr(VNI) + ipv4_frame(
        C1_MAC, bytes.fromhex("020000000008"), PEER_IP, C1_IP, payload=b"x"), 0.0)
    sw.fdb_flush(VNI, keep_permanent=False, dynamic_only=True)
    left = {r["mac"]: r["state"] for r in sw.fdb_dump() if r["port"] is None}
    assert left == {PEER_MAC.hex(":"): "permanent", "02:00:00:00:00:07": "static"}
    assert isinstance(REMOTE, IPv4Address)
