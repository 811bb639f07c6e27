"""Differential tests: the same random set-up and the same random operations applied to the
pure-Python reference (``dataplane.switch.Switch``) and the Cython core (``_fastpath.core.Switch``)
must give equal results at every step: return values (actions, bytes), exception types, events,
counters, ``fdb_dump`` and ``neigh_dump`` (DESIGN.md §3).

The tests take the shared ``impl`` fixture and compare the reference against ``impl``: ``[c]`` is
the real differential test (skipped when the extension is not built, a failure in CI per
tests/conftest.py); ``[py]`` compares the reference with a second reference instance, which
checks that the reference is deterministic and keeps this harness exercised everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataplane import switch as reference
from dataplane.errors import VxdpError
from tests.strategies import (
    BROADCAST,
    C1_MAC,
    C2_MAC,
    LOCAL,
    MCAST_MAC,
    PEER_MAC,
    STRANGER,
    UNKNOWN_MAC,
    ZERO_MAC,
    arp_frames,
    arp_request,
    eth,
    ip6_frames,
    ip_frames,
    ns_frames,
    mac_text,
    mutations,
    pmtu_frames,
    sized_frame,
    unicast_macs,
    vxlan_hdr,
)

VTEPS = [IPv4Address(f"198.18.0.{i}") for i in range(2, 8)] + [IPv4Address("10.1.2.3")] \
    + [IPv6Address("2001:db8::2"), IPv6Address("2001:db8:1::3")]
ALLOWS = [(), (), ("198.18.0.0/29",), ("198.18.0.4/30", "10.0.0.0/8"), ("198.18.0.2/32",),
          ("2001:db8::/64",), ("198.18.0.0/29", "2001:db8::/32")]
LOCAL6 = IPv6Address("2001:db8::1")
LOCALS = [(LOCAL,), (LOCAL,), (LOCAL, LOCAL6), (LOCAL6,)]   # v4, dual-stack, v6-only VTEPs
RANGES = [(49152, 65535), (49152, 65535), (1, 65535), (5000, 5000), (6000, 6007), (65535, 65535)]
VNIS = [1, 4097, 4098, 0xFFFFFF]
UNSERVED_VNI = 777
MTUS = [68, 100, 1450, 1450, 1500, 9000]
#: route MTUs to the VTEPs (set_path_mtu): either side of what a 576-byte ICMP and a
#: 1280-byte ICMPv6 reply need over each outer family (+50 / +70), typical paths, refusals
PATH_MTUS = [0, 625, 626, 645, 646, 1329, 1330, 1349, 1350, 1400, 1400, 1500, 9000, 65535,
             -1, 65536]
EXTRA_MACS = [bytes.fromhex(f"02000000aa0{i}") for i in range(1, 6)]
MAC_POOL = [C1_MAC, C2_MAC, PEER_MAC, *EXTRA_MACS]
GROUPS = [ZERO_MAC, BROADCAST, MCAST_MAC]
IP_POOL = [IPv4Address(f"192.168.55.{i}") for i in range(1, 11)] + [
    IPv4Address("127.0.0.1"), IPv4Address("224.0.0.1")]
IP6_POOL = [IPv6Address(f"fd00:55::{i:x}") for i in range(1, 8)] + [
    IPv6Address("fe80::2"), IPv6Address("ff02::1")]
FDB_STATES = ["permanent", "static", "learned"]
NEIGH_STATES = ["permanent", "static", "reachable"]

HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
          HealthCheck.data_too_large, HealthCheck.large_base_example]

Call = tuple[str, tuple[Any, ...], dict[str, Any]]


@dataclass
class Scenario:
    ctor: dict[str, Any]
    calls: list[Call] = field(default_factory=list)
    local: tuple[Any, ...] = (LOCAL,)

    def __repr__(self) -> str:  # readable falsifying examples
        lines = [f"Switch({[str(a) for a in self.local]}, {self.ctor})"]
        lines += [f"  {i}: {_short(c)}" for i, c in enumerate(self.calls)]
        return "\n".join(lines)


def _short(call: Call, limit: int = 400) -> str:
    text = f"{call[0]}{call[1]!r} {call[2] or ''}"
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------- generators


@st.composite
def mac_args(draw: st.DrawFn, pool: list[bytes]) -> str | bytes:
    """A MAC as the control plane may spell it: bytes, text, upper case, dashes, or garbage."""
    m = draw(st.sampled_from(pool + GROUPS + [UNKNOWN_MAC]))
    style = draw(st.sampled_from(["bytes", "bytes", "text", "text", "upper", "dash", "bad"]))
    if style == "bytes":
        return m
    if style == "text":
        return mac_text(m)
    if style == "upper":
        return mac_text(m).upper()
    if style == "dash":
        return mac_text(m).replace(":", "-")
    return draw(st.sampled_from(["zz:00:00:00:00:01", "02:00:00:00:01", "", "0200000000aa"]))


@st.composite
def dst_args(draw: st.DrawFn) -> str | IPv4Address:
    d = draw(st.sampled_from(VTEPS))
    return draw(st.sampled_from([d, str(d), str(d), "198.18.0.300", "::1", "2001:db8::2",
                                 "fe80::1"]))


@st.composite
def descriptor_args(draw: st.DrawFn) -> dict[str, int]:
    """A remote's port and VNI (``dst IP port P vni N``): mostly the defaults, sometimes the
    VTEP's own values given explicitly, other values and out-of-range ones."""
    kw: dict[str, int] = {}
    if draw(st.integers(0, 3)) == 0:
        kw["dst_port"] = draw(st.sampled_from([0, 4789, 8472, 8472, 65535, 65536, -1]))
    if draw(st.integers(0, 3)) == 0:
        kw["dst_vni"] = draw(st.sampled_from([0, 4097, 5000, 5000, 0xFFFFFF, 1 << 24]))
    return kw


@st.composite
def frames(draw: st.DrawFn, srcs: list[bytes], dsts: list[bytes],
           ips: list[IPv4Address] = IP_POOL) -> bytes:
    """Frames biased to the interesting cases; ``srcs``/``dsts`` are the MACs in play, ``ips``
    the ARP targets (biased to addresses with neighbour entries)."""
    src = st.sampled_from(srcs)
    dst = st.sampled_from(dsts + [BROADCAST, MCAST_MAC, UNKNOWN_MAC])
    kind = draw(st.sampled_from(["arp"] * 5 + ["ip"] * 4 + ["ip6"] * 2 + ["ns"] * 3
                                + ["eth"] * 2 + ["pmtu"] * 3
                                + ["sized", "random", "mutated", "runt", "badsrc"]))
    if kind == "arp":
        return draw(arp_frames(sha=src, tpa=st.sampled_from(ips),
                               dst=st.one_of(st.just(BROADCAST), dst)))
    if kind == "ip":
        return draw(ip_frames(dst=dst, src=src))
    if kind == "ip6":
        return draw(ip6_frames(dst=dst, src=src))
    if kind == "ns":
        return draw(ns_frames(sha=src, target=st.sampled_from(IP6_POOL)))
    if kind == "pmtu":
        return draw(pmtu_frames(dst=dst, src=src))
    if kind == "eth":
        return eth(draw(dst), draw(src), draw(st.sampled_from([0x88B5, 0x86DD, 0x0800, 0x0806])),
                   draw(st.binary(max_size=30)))
    if kind == "sized":
        size = draw(st.sampled_from(MTUS)) + draw(st.integers(13, 16))
        return sized_frame(draw(dst), draw(src), size)
    if kind == "random":
        return draw(st.binary(max_size=64))
    if kind == "runt":
        return draw(st.binary(max_size=13))
    if kind == "badsrc":
        bad = draw(st.sampled_from(GROUPS))
        if draw(st.booleans()):
            return eth(draw(dst), bad, 0x88B5, b"x")
        return arp_request(bad, "192.168.55.1", "192.168.55.2")
    base = draw(st.one_of(ip_frames(dst=dst, src=src), arp_frames(sha=src)))
    return draw(mutations(base))


@st.composite
def datagrams(draw: st.DrawFn, vnis: list[int], srcs: list[bytes], dsts: list[bytes],
              ips: list[IPv4Address] = IP_POOL) -> bytes:
    kind = draw(st.sampled_from(["good"] * 10 + ["flags", "reserved", "short", "random",
                                                "mutated"]))
    vni = draw(st.sampled_from(vnis * 4 + [UNSERVED_VNI]))
    frame = draw(frames(srcs, dsts, ips))
    if kind == "good":
        return vxlan_hdr(vni) + frame
    if kind == "flags":
        return vxlan_hdr(vni, flags=draw(st.integers(0, 255))) + frame
    if kind == "reserved":
        return vxlan_hdr(vni, rsvd1=draw(st.binary(min_size=3, max_size=3)),
                         rsvd2=draw(st.integers(0, 255))) + frame
    if kind == "short":
        return vxlan_hdr(vni)[:draw(st.integers(0, 7))]
    if kind == "random":
        return draw(st.binary(max_size=80))
    return draw(mutations(vxlan_hdr(vni) + frame))


@st.composite
def scenarios(draw: st.DrawFn, max_ops: int = 40) -> Scenario:
    ctor = {"strict": draw(st.booleans()), "allow": draw(st.sampled_from(ALLOWS)),
            "src_port_range": draw(st.sampled_from(RANGES))}
    sc = Scenario(ctor, local=draw(st.sampled_from(LOCALS)))
    calls = sc.calls
    nets = draw(st.lists(st.sampled_from(VNIS), min_size=1, max_size=3, unique=True))
    for vni in nets:
        calls.append(("add_network", (vni,), {
            "mtu": draw(st.sampled_from(MTUS)), "proxy": draw(st.booleans()),
            "learning": draw(st.booleans()),
            "ageing": draw(st.sampled_from([5.0, 30.0, 300.0])),
            "maxaddress": draw(st.sampled_from([0, 0, 0, 4, 8])),
            "flowlabel": draw(st.sampled_from([0, 0, 0x12345, "inherit"])),
            "tos": draw(st.sampled_from([0, 0, 0xb8, "inherit"]))}))
    port_macs: list[bytes] = []
    next_port = 1
    fresh = iter(draw(st.permutations(MAC_POOL)))   # mostly distinct: a clash is EEXIST
    for i, vni in enumerate(nets):
        for _ in range(draw(st.integers(1 if i == 0 else 0, 4))):
            m = draw(st.sampled_from(["fresh"] * 6 + ["none", "random", "pool"]))
            m = {"fresh": lambda: next(fresh, None), "none": lambda: None,
                 "random": lambda: draw(unicast_macs),
                 "pool": lambda: draw(st.sampled_from(MAC_POOL))}[m]()
            if m is not None:
                port_macs.append(m)
            calls.append(("add_port", (next_port, vni, m), {}))
            next_port += 1
    pool = MAC_POOL + port_macs
    for _ in range(draw(st.integers(0, 8))):
        vni = draw(st.sampled_from(nets))
        what = draw(st.sampled_from(["add", "add", "flood", "flood", "mcast"]))
        dst = draw(st.sampled_from(VTEPS))
        state = draw(st.sampled_from(FDB_STATES))
        if what == "add":
            calls.append(("fdb_add", (vni, draw(st.sampled_from(pool)), dst, state), {}))
        else:
            group = ZERO_MAC if what == "flood" else draw(st.sampled_from([BROADCAST, MCAST_MAC]))
            calls.append(("fdb_append", (vni, group, dst, state), {}))
    for _ in range(draw(st.integers(0, 4))):
        calls.append(("set_path_mtu", (draw(dst_args()), draw(st.sampled_from(PATH_MTUS))), {}))
    neigh_ips: list[IPv4Address | IPv6Address] = []
    for _ in range(draw(st.integers(0, 10))):
        ip = draw(st.sampled_from(IP_POOL + IP6_POOL[:-1]))
        neigh_ips.append(ip)
        calls.append(("neigh_add", (draw(st.sampled_from(nets)), ip,
                                    draw(st.sampled_from(pool)),
                                    draw(st.sampled_from(NEIGH_STATES))), {}))

    ports = list(range(1, next_port))
    spare_ports = [next_port, next_port + 1, 99]
    any_port = st.sampled_from(ports + spare_ports)
    port_choice = st.sampled_from(ports * 12 + spare_ports)
    srcs = pool + [ZERO_MAC]
    ips = IP_POOL + [ip for ip in neigh_ips if ip.version == 4] * 3
    vni_choice = st.sampled_from(nets * 6 + [UNSERVED_VNI])
    # weights out of 100: mostly traffic, some control-plane churn, rarely a network goes
    kinds = (["from_port"] * 45 + ["from_underlay"] * 30 + ["age"] * 5
             + ["fdb_add", "fdb_append", "fdb_replace", "fdb_del", "neigh_add",
                "neigh_replace", "neigh_del", "add_port"] * 2
             + ["fdb_flush", "neigh_flush", "del_port", "del_network", "set_path_mtu"])
    now = 0.0
    for _ in range(draw(st.integers(1, max_ops))):
        now += draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 4.0, 10.0, 100.0, 400.0]))
        kind = draw(st.sampled_from(kinds))
        vni = draw(vni_choice)
        if kind == "from_port":
            calls.append(("from_port", (draw(port_choice), draw(frames(srcs, pool, ips)),
                                        now), {}))
        elif kind == "from_underlay":
            src = draw(st.sampled_from(VTEPS * 3 + [STRANGER]))
            calls.append(("from_underlay", (draw(st.sampled_from([src, str(src)])),
                                            draw(datagrams(nets, srcs, pool, ips)), now), {}))
        elif kind == "age":
            calls.append(("age", (now,), {}))
        elif kind in ("fdb_add", "fdb_append", "fdb_replace"):
            calls.append((kind, (vni, draw(mac_args(pool)), draw(dst_args()),
                                 draw(st.sampled_from(FDB_STATES + ["bogus"]))),
                          {"now": now, **draw(descriptor_args())}))
        elif kind == "fdb_del":
            dst = draw(st.one_of(st.none(), dst_args()))
            calls.append((kind, (vni, draw(mac_args(pool)), dst),
                          draw(descriptor_args()) if dst is not None else {}))
        elif kind == "fdb_flush":
            calls.append((kind, (vni,), {"keep_permanent": draw(st.booleans()),
                                         "dynamic_only": draw(st.booleans())}))
        elif kind in ("neigh_add", "neigh_replace"):
            ip = draw(st.sampled_from(IP_POOL + IP6_POOL))
            calls.append((kind, (vni, draw(st.sampled_from([ip, str(ip), "192.168.55",
                                                            "fd00:55::zz"])),
                                 draw(mac_args(pool)),
                                 draw(st.sampled_from(NEIGH_STATES + ["stale"]))), {}))
        elif kind == "neigh_del":
            calls.append((kind, (vni, str(draw(st.sampled_from(IP_POOL + IP6_POOL)))), {}))
        elif kind == "neigh_flush":
            calls.append((kind, (vni,), {}))
        elif kind == "set_path_mtu":
            calls.append((kind, (draw(dst_args()), draw(st.sampled_from(PATH_MTUS))), {}))
        elif kind == "add_port":
            calls.append((kind, (draw(any_port), vni,
                                 draw(st.one_of(st.none(), st.sampled_from(pool)))), {"now": now}))
        elif kind == "del_port":
            calls.append((kind, (draw(any_port),), {}))
        else:
            calls.append((kind, (vni,), {}))
    return sc


@st.composite
def pmtu_scenarios(draw: st.DrawFn, max_ops: int = 40) -> Scenario:
    """Paths with route MTUs to remotes that entries and flood lists point at (some with a
    VNI or port of their own), and frames from ports around the sizes they cut at: PMTU
    signalling, its replies and the copies that are still sent."""
    sc = Scenario({"strict": True, "allow": ()}, local=draw(st.sampled_from(LOCALS)))
    calls = sc.calls
    vtep4 = [v for v in VTEPS if v.version == 4]
    vtep6 = [v for v in VTEPS if v.version == 6]
    usable = (vtep4 if LOCAL in sc.local else []) + (vtep6 if LOCAL6 in sc.local else [])
    vni = draw(st.sampled_from(VNIS))
    calls.append(("add_network", (vni,), {"mtu": draw(st.sampled_from([1450, 1500, 9000])),
                                          "learning": draw(st.booleans())}))
    calls += [("add_port", (1, vni, C1_MAC), {}), ("add_port", (2, vni, C2_MAC), {})]
    for v in draw(st.lists(st.sampled_from(usable), min_size=1, max_size=4)):
        calls.append(("fdb_append", (vni, ZERO_MAC, v), draw(descriptor_args())))
    peers = [PEER_MAC, *EXTRA_MACS[:2]]
    for m in peers:
        calls.append(("fdb_add", (vni, m, draw(st.sampled_from(usable))),
                      draw(descriptor_args())))
    for v in usable + [STRANGER]:
        if draw(st.integers(0, 3)):
            mtu = draw(st.sampled_from([1400] * 4 + PATH_MTUS[:-2]))
            calls.append(("set_path_mtu", (v, mtu), {}))
    dsts = peers + [BROADCAST, UNKNOWN_MAC, C2_MAC]
    for _ in range(draw(st.integers(1, max_ops))):
        if draw(st.integers(0, 9)) == 0:
            calls.append(("set_path_mtu", (draw(st.sampled_from(usable)),
                                           draw(st.sampled_from(PATH_MTUS))), {}))
            continue
        calls.append(("from_port", (draw(st.sampled_from([1, 1, 1, 2])),
                                    draw(pmtu_frames(dst=st.sampled_from(dsts),
                                                     src=st.sampled_from([C1_MAC, C2_MAC]))),
                                    0.0), {}))
    return sc


# --------------------------------------------------------------------------- harness


def _outcome(obj: Any, call: Call) -> tuple[str, Any]:
    name, args, kw = call
    try:
        return "ok", getattr(obj, name)(*args, **kw)
    except VxdpError as e:   # anything else propagates: neither core may raise it
        return "err", type(e)


def _types(result: tuple[str, Any]) -> Any:
    if result[0] == "ok" and isinstance(result[1], list):
        return [tuple(type(x).__name__ for x in a) for a in result[1]]
    return type(result[1]).__name__


def run_lockstep(sc: Scenario, impl: Any) -> int:
    """Apply ``sc`` to the reference and to ``impl``; assert equality after every step.
    Returns how many data-plane actions were compared (for sanity checks)."""
    ref = reference.Switch(sc.local, **sc.ctor)
    other = impl.Switch(sc.local, **sc.ctor)
    n_actions = 0
    for i, call in enumerate(sc.calls):
        want = _outcome(ref, call)
        got = _outcome(other, call)
        where = f"step {i}: {_short(call)}"
        assert got == want, where
        assert _types(got) == _types(want), where
        if call[0] in ("from_port", "from_underlay"):
            n_actions += len(want[1])
        assert other.events() == ref.events(), where
        assert other.counters() == ref.counters(), where
        assert other.fdb_dump() == ref.fdb_dump(), where
        assert other.neigh_dump() == ref.neigh_dump(), where
        assert other.path_mtus() == ref.path_mtus(), where
        assert other.remote_vteps() == ref.remote_vteps(), where
    return n_actions


def _examples(impl: Any, n: int) -> int:
    """Full budget against the compiled core; a quarter for the reference-vs-reference run,
    which only guards determinism and the harness itself."""
    return n if impl is not reference else max(5, n // 4)


def test_differential_random_operations(impl: Any) -> None:
    @settings(max_examples=_examples(impl, 120), suppress_health_check=HEALTH)
    @given(sc=scenarios())
    def check(sc: Scenario) -> None:
        run_lockstep(sc, impl)

    check()


def test_differential_long_runs(impl: Any) -> None:
    @settings(max_examples=_examples(impl, 25), suppress_health_check=HEALTH)
    @given(sc=scenarios(max_ops=150))
    def check(sc: Scenario) -> None:
        run_lockstep(sc, impl)

    check()


def test_differential_pmtu(impl: Any) -> None:
    """PMTU replies byte for byte (tunnel.pmtud_icmp and tunnel.pyx), per remote, next to the
    copies still sent, with counters and trace flags alike."""
    @settings(max_examples=_examples(impl, 150), suppress_health_check=HEALTH)
    @given(sc=pmtu_scenarios())
    def check(sc: Scenario) -> None:
        run_lockstep(sc, impl)

    check()


# --------------------------------------------------------------------------- hand-made runs


def _walkthrough_scenario(**ctor: Any) -> Scenario:
    from tests.strategies import C1_IP, PEER_IP, REMOTE, REMOTE2, VNI, ipv4_frame

    sc = Scenario({"strict": True, "allow": (), **ctor})
    c = sc.calls
    c += [("add_network", (VNI,), {"learning": True, "ageing": 30.0}),
          ("add_port", (1, VNI, C1_MAC), {}), ("add_port", (2, VNI, C2_MAC), {}),
          ("fdb_add", (VNI, PEER_MAC, REMOTE), {}), ("fdb_append", (VNI, ZERO_MAC, REMOTE2), {}),
          ("neigh_add", (VNI, PEER_IP, PEER_MAC), {})]
    for t in range(40):
        f = ipv4_frame(PEER_MAC, C1_MAC, C1_IP, PEER_IP, sport=30000 + t, payload=bytes(t))
        c.append(("from_port", (1, f, float(t)), {}))
        c.append(("from_port", (2, arp_request(C2_MAC, "192.168.55.5", IP_POOL[t % 12]),
                                float(t)), {}))
        x = EXTRA_MACS[t % 5]
        g = ipv4_frame(C1_MAC if t % 3 else UNKNOWN_MAC, x, PEER_IP, C1_IP, payload=bytes(t))
        c.append(("from_underlay", (VTEPS[t % 7], vxlan_hdr(VNI) + g, float(t)), {}))
        c.append(("from_port", (1, ipv4_frame(x, C1_MAC, C1_IP, PEER_IP), float(t)), {}))
        if t % 7 == 6:
            c.append(("age", (float(t) + 29.0,), {}))
    return sc


def test_differential_walkthrough_traffic(impl: Any) -> None:
    # deterministic: learning, moves, ageing, proxy, flood; checks the harness compares things
    assert run_lockstep(_walkthrough_scenario(), impl) > 100


def test_differential_harness_catches_a_difference() -> None:
    # the lockstep harness must notice a core that differs in one byte
    class Flipped(reference.Switch):
        def from_port(self, port: int, frame: bytes, now: float) -> list[Any]:
            out = super().from_port(port, frame, now)
            def flip(a: Any) -> Any:
                at = 2 if a[0] == "port" else 3           # the frame / the UDP payload
                b = a[at]
                return a[:at] + (b[:-1] + bytes((b[-1] ^ 1,)),) + a[at + 1:] if b else a
            return [flip(a) for a in out]

    class FlippedModule:
        Switch = Flipped

    try:
        run_lockstep(_walkthrough_scenario(), FlippedModule)
    except AssertionError as e:
        assert "step" in str(e)
    else:
        raise AssertionError("the harness did not notice a flipped byte")
