"""A VTEP under hostile or broken input from the underlay (DESIGN.md §2 "Datagram from the
underlay", step 1): every datagram that is not well-formed is dropped and counted under its
reason, nothing of it reaches a container, and the VTEP keeps forwarding.

manager (198.18.0.1): vxdp with ``allow = ["198.18.0.2/32"]``, container c1.
worker  (198.18.0.2): vxdp, container c2; also the (allowed) sender of malformed datagrams.
third   (198.18.0.3): no VTEP; sends valid VXLAN that the allow list must refuse.

Datagrams are built here (bytes) and sent from a plain UDP socket by a small script running in
the sender's namespace, to the manager's VTEP address only.
"""

from __future__ import annotations

import random
import struct
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dataplane.wire import DROP_REASONS
from tests.functional.vxdp_world import (
    MANAGER,
    ROOT,
    THIRD,
    VNI,
    VXLAN_PORT,
    WORKER,
    Container,
    Vtep,
    World,
    network,
    open_world,
    wait_for,
)

pytestmark = pytest.mark.privileged

MTU = 1450
PROBE_ETHERTYPE = 0x88B5          # IEEE "local experimental": containers ignore it
EVIL_MAC = bytes.fromhex("0242c0a83763")
GOOD_MAC = bytes.fromhex("0242c0a83762")
BROADCAST = b"\xff" * 6

SENDER = r"""
import socket, sys
dst = (sys.argv[1], int(sys.argv[2]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n = 0
for line in sys.stdin:
    s.sendto(bytes.fromhex(line.strip()), dst)
    n += 1
print(n)
"""


@dataclass
class Hostile:
    world: World
    c1: Container
    c2: Container
    manager: Vtep
    worker: Vtep


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    with open_world() as w:
        w.hosts(("manager", MANAGER), ("worker", WORKER), ("third", THIRD))
        c1 = w.container("manager", "c1", "192.168.55.4")
        c2 = w.container("worker", "c2", "192.168.55.3")
        m, k = w.start_all(
            ("manager", w.vtep_config("manager", MANAGER, [network(
                "mynet", VNI, mtu=MTU, endpoints=[c1], peers=[(c2, WORKER)], flood=[WORKER])],
                allow=[f"{WORKER}/32"])),
            ("worker", w.vtep_config("worker", WORKER, [network(
                "mynet", VNI, mtu=MTU, endpoints=[c2], peers=[(c1, MANAGER)],
                flood=[MANAGER])])))
        yield Hostile(w, c1, c2, m, k)
        w.stop_all(m, k)


# --------------------------------------------------------------------------- datagrams

def vxlan(vni: int = VNI, flags: int = 0x08, r1: int = 0, r2: int = 0, r3: int = 0,
          r7: int = 0) -> bytes:
    """An 8-byte VXLAN header with every field under control (RFC 7348 §5.1 layout)."""
    return bytes([flags, r1, r2, r3]) + struct.pack("!I", vni << 8)[:3] + bytes([r7])


def probe_frame(src: bytes = EVIL_MAC, size: int = 60, dst: bytes = BROADCAST,
                ethertype: int = PROBE_ETHERTYPE) -> bytes:
    head = dst + src + struct.pack("!H", ethertype)
    return head + b"vxdp-hostile".ljust(size - len(head), b".")


def arp_frame(htype: int = 1, ptype: int = 0x0800, hlen: int = 6, plen: int = 4,
              truncate: int | None = None) -> bytes:
    body = struct.pack("!HHBBH", htype, ptype, hlen, plen, 1) + EVIL_MAC + bytes([192, 168, 55, 99])
    body += b"\x00" * 6 + bytes([192, 168, 55, 4])
    frame = BROADCAST + EVIL_MAC + b"\x08\x06" + body
    return frame[:truncate] if truncate is not None else frame


def malformed(rng: random.Random) -> list[tuple[str, bytes]]:
    """(expected drop reason, UDP payload) for every kind of broken datagram."""
    out: list[tuple[str, bytes]] = []
    good = probe_frame()
    # Header shorter than 8 bytes, zero-length datagrams included.
    for n in range(8):
        out += [("short_header", rng.randbytes(n)) for _ in range(5)]
    # Random garbage: whatever follows, a clear I flag makes the VNI invalid.
    for _ in range(60):
        junk = bytearray(rng.randbytes(rng.randrange(8, 300)))
        junk[0] &= ~0x08 & 0xFF
        out.append(("bad_flags", bytes(junk)))
    out += [("bad_flags", vxlan(flags=0x00) + good) for _ in range(10)]
    out += [("bad_flags", vxlan(flags=0xF7) + good) for _ in range(5)]
    # A VNI this VTEP does not serve.
    for vni in (0, 1, VNI - 1, VNI + 1, 0xFFFFFF):
        out += [("unknown_vni", vxlan(vni=vni) + good) for _ in range(6)]
    # Reserved bits (strict mode, the kernel's default): each reserved field in turn.
    variants = [vxlan(flags=0x08 | bit) for bit in (0x01, 0x02, 0x04, 0x10, 0x20, 0x40, 0x80)]
    variants += [vxlan(r1=0x80), vxlan(r2=0x01), vxlan(r3=0x10), vxlan(r7=0xFF)]
    for v in variants:
        out += [("reserved_bits", v + good) for _ in range(3)]
    # Inner frame shorter than an Ethernet header.
    for n in range(14):
        out += [("runt", vxlan() + good[:n]) for _ in range(2)]
    # Inner frame longer than the endpoint MTU + 14.
    for size in (MTU + 15, 1500, 3000, 9000):
        out += [("oversize", vxlan() + probe_frame(size=size)) for _ in range(4)]
    # Source MAC that no station may use.
    for src in ("01005e000001", "ffffffffffff", "000000000000"):
        out += [("bad_src_mac", vxlan() + probe_frame(src=bytes.fromhex(src))) for _ in range(4)]
    # ARP that is not Ethernet/IPv4 ARP.
    for arp in (arp_frame(htype=2), arp_frame(ptype=0x86DD), arp_frame(hlen=5),
                arp_frame(plen=6), arp_frame(truncate=14 + 27)):
        out += [("bad_arp", vxlan() + arp) for _ in range(5)]
    rng.shuffle(out)
    return out


def send(world: World, host: str, payloads: list[bytes]) -> None:
    """Send each payload as one UDP datagram to the manager's VTEP, from ``host``'s netns."""
    p = world.lab.run(host, [sys.executable, "-c", SENDER, MANAGER, str(VXLAN_PORT)],
                      input="".join(b.hex() + "\n" for b in payloads), timeout=60, cwd=ROOT)
    assert p.stdout.strip() == str(len(payloads)), p.stderr


def rx_packets(v: Vtep) -> int:
    return int(v.stats()["underlay"]["rx_packets"])


# --------------------------------------------------------------------------- tests

def test_source_outside_allow_list_is_dropped(hostile: Hostile) -> None:
    w, m = hostile.world, hostile.manager
    before = m.stats()
    cap = w.tcpdump(hostile.c1, f"ether proto {PROBE_ETHERTYPE:#x}")
    n = 20
    # Valid VXLAN, valid broadcast frame: only the source (198.18.0.3) is wrong.
    send(w, "third", [vxlan() + probe_frame(src=EVIL_MAC)] * n)
    wait_for(lambda: m.stats()["drops"]["not_allowed"] - before["drops"]["not_allowed"] >= n,
             10, "the third host's datagrams to be counted as not_allowed")
    # The same frame from the allowed worker does reach c1 (the capture works).
    c1_tx = m.stats()["ports"][hostile.c1.tap]["tx_packets"]
    send(w, "worker", [vxlan() + probe_frame(src=GOOD_MAC)])
    wait_for(lambda: m.stats()["ports"][hostile.c1.tap]["tx_packets"] > c1_tx, 10,
             "the allowed datagram to be delivered to c1")
    cap.wait_for(GOOD_MAC.hex(":"))
    seen = cap.stop()
    after = m.stats()
    lines = [line for line in seen.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected only the allowed frame in c1:\n{seen}"
    assert GOOD_MAC.hex(":") in lines[0] and EVIL_MAC.hex(":") not in seen
    assert after["drops"]["not_allowed"] - before["drops"]["not_allowed"] == n
    others = {r: after["drops"][r] - before["drops"][r] for r in DROP_REASONS if r != "not_allowed"}
    assert not any(others.values()), others
    assert m.alive()


def test_malformed_flood_is_counted_by_reason(hostile: Hostile) -> None:
    w, m = hostile.world, hostile.manager
    batch = malformed(random.Random(4789))
    expected = Counter(reason for reason, _ in batch)
    before = m.stats()
    cap = w.tcpdump(hostile.c1)
    send(w, "worker", [payload for _, payload in batch])
    # Two well-formed probes after the flood, the second exactly MTU + 14 bytes (the largest
    # inner frame allowed): both must be delivered, and nothing else may have been.
    good = [vxlan() + probe_frame(src=GOOD_MAC), vxlan() + probe_frame(src=GOOD_MAC, size=MTU + 14)]
    send(w, "worker", good)
    total = len(batch) + len(good)
    wait_for(lambda: rx_packets(m) - before["underlay"]["rx_packets"] >= total, 20,
             f"{total} datagrams to be received by the manager's VTEP")
    wait_for(lambda: m.stats()["ports"][hostile.c1.tap]["tx_packets"]
             - before["ports"][hostile.c1.tap]["tx_packets"] >= 2, 10,
             "the two well-formed probes to reach c1")
    cap.wait_for(lambda ls: len(ls) >= 2)
    seen = cap.stop()
    after = m.stats()
    assert m.alive(), m.log()
    got = {r: after["drops"][r] - before["drops"][r] for r in DROP_REASONS}
    want = {r: expected.get(r, 0) for r in DROP_REASONS}
    assert got == want
    assert after["underlay"]["rx_packets"] - before["underlay"]["rx_packets"] == total
    assert (after["ports"][hostile.c1.tap]["tx_packets"]
            - before["ports"][hostile.c1.tap]["tx_packets"]) == 2
    lines = [line for line in seen.splitlines() if line.strip()]
    assert len(lines) == 2, f"only the two probes may reach c1:\n{seen}"
    assert "Traceback" not in m.log()
    # Still forwarding.
    w.assert_ping(hostile.c1, hostile.c2.ip)
