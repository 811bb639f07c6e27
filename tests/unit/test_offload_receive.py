"""The underlay's rx step (``offload.receive``; C: ``rx_csum``/``rx_segment`` through
``_fastpath.testing.offload_receive``): inner frames from a kernel VTEP whose TCP/UDP checksums
were left partial by a veth or virtio underlay, and its TSO super-frames that arrive as one
datagram. scapy computes the checksums the completed frames must carry; both implementations run
every test and are held equal on generated and garbage input.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from dataplane import offload

Receive = Callable[[bytes, int], tuple[list[bytes], str]]
MTU = 1450
A4, B4 = "192.168.55.3", "192.168.55.4"
A6, B6 = "fd00:55::3", "fd00:55::4"
MACS = {"src": "02:42:c0:a8:37:03", "dst": "02:42:c0:a8:37:04"}


@pytest.fixture
def receive(impl: Any) -> Receive:
    """offload.receive for [py], the C functions of the underlay path for [c]."""
    if impl.__name__ == "dataplane.switch":
        return offload.receive
    from _fastpath import testing  # noqa: PLC0415 - built with the core, test-only

    return testing.offload_receive


def partial(frame: bytes) -> bytes:
    """``frame`` as a kernel sender leaves it with CHECKSUM_PARTIAL: the L4 checksum field
    holds the folded pseudo-header sum, not complemented (tcp_v4_send_check, udp4_hwcsum)."""
    h = offload.locate_l4(frame)
    assert h is not None
    at = h.l4 + (16 if h.proto == 6 else 6)
    return frame[:at] + offload._pseudo(frame, h).to_bytes(2, "big") + frame[at + 2:]


def tcp4(payload: bytes = b"x" * 100, **tcp: Any) -> bytes:
    return bytes(Ether(**MACS) / IP(src=A4, dst=B4, id=7) / TCP(sport=40000, dport=5201,
                                                                  flags="PA", **tcp)
                 / Raw(payload))


FRAMES = {
    "tcp4": tcp4(),
    "udp4": bytes(Ether(**MACS) / IP(src=A4, dst=B4) / UDP(sport=5000, dport=5001)
                  / Raw(b"u" * 77)),
    "tcp6": bytes(Ether(**MACS) / IPv6(src=A6, dst=B6) / TCP(sport=1, dport=2, flags="A")
                  / Raw(b"s" * 33)),
    "udp6": bytes(Ether(**MACS) / IPv6(src=A6, dst=B6) / UDP(sport=3, dport=4) / Raw(b"v" * 8)),
    "syn_options": bytes(Ether(**MACS) / IP(src=A4, dst=B4)
                         / TCP(flags="S", options=[("MSS", 1398), ("SAckOK", b""),
                                                   ("Timestamp", (1, 0)), ("WScale", 7)])),
}


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_a_complete_checksum_is_valid_and_untouched(receive: Receive, name: str) -> None:
    frame = FRAMES[name]
    assert receive(frame, MTU) == ([frame], "valid")


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_a_partial_checksum_is_completed_to_what_scapy_computes(receive: Receive,
                                                                 name: str) -> None:
    frame = FRAMES[name]
    assert partial(frame) != frame
    assert receive(partial(frame), MTU) == ([frame], "partial")


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_a_corrupt_frame_is_bad_and_left_as_it_came(receive: Receive, name: str) -> None:
    """Corruption on the way (a payload bit flipped under a complete checksum) is never
    laundered: the frame goes on unchanged, for the container's stack to drop and count."""
    frame = bytearray(FRAMES[name])
    frame[-1] ^= 0x04
    assert receive(bytes(frame), MTU) == ([bytes(frame)], "bad")


def test_a_udp_result_of_zero_is_sent_as_ffff(receive: Receive) -> None:
    """RFC 768: a computed 0 means "no checksum" for UDP; skb_checksum_help stores 0xFFFF."""
    def udp(word: int) -> bytes:
        return bytes(Ether(**MACS) / IP(src=A4, dst=B4) / UDP(sport=9, dport=7)
                     / Raw(word.to_bytes(2, "big")))

    c = int.from_bytes(udp(0x1234)[40:42], "big")
    f = udp(offload.fold(0x1234 + c))      # adding the checksum to the data zeroes the result
    assert f[40:42] == b"\xff\xff"          # scapy stores 0xFFFF for a computed 0 as well
    assert receive(partial(f), MTU) == ([f], "partial")


@pytest.mark.parametrize("frame", [
    bytes(Ether(**MACS) / ARP(psrc=A4, pdst=B4)),
    bytes(Ether(**MACS) / IP(src=A4, dst=B4) / UDP(sport=1, dport=2, chksum=0) / Raw(b"n")),
    bytes(Ether(**MACS) / IP(src=A4, dst=B4, flags="MF") / TCP() / Raw(b"frag")),
    bytes(Ether(**MACS) / IP(src=A4, dst=B4, proto=1) / Raw(b"\x08\x00icmp-ish")),
    b"\x02" * 13,
], ids=["arp", "udp4_no_csum", "fragment", "icmp", "runt"])
def test_nothing_to_check(receive: Receive, frame: bytes) -> None:
    assert receive(frame, MTU) == ([frame], "none")


def test_ethernet_padding_is_not_summed(receive: Receive) -> None:
    frame = tcp4(b"")                        # 54 bytes: a NIC pads it to 60
    assert receive(partial(frame) + bytes(6), MTU) == ([frame + bytes(6)], "partial")


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("state", ["valid", "partial"])
def test_a_tso_super_frame_is_cut_to_the_mtu(receive: Receive, v6: bool, state: str) -> None:
    """A kernel VTEP on a veth underlay sends a container's 64 KB TSO frame as one VXLAN
    datagram: cut into segments as large as the network's MTU allows, every checksum
    computed (scapy agrees), sequence numbers and IPv4 IDs consecutive, PSH on the last."""
    body = os.urandom(60000)
    ip = IPv6(src=A6, dst=B6) if v6 else IP(src=A4, dst=B4, id=100, flags="DF")
    big = bytes(Ether(**MACS) / ip / TCP(sport=40000, dport=5201, seq=1000, flags="PA",
                                         options=[("Timestamp", (5, 6))]) / Raw(body))
    frames, verdict = receive(partial(big) if state == "partial" else big, MTU)
    assert verdict == state
    hl = 14 + (40 if v6 else 20) + 32
    g = MTU - (hl - 14)
    assert len(frames) == -(-len(body) // g)
    assert b"".join(f[hl:] for f in frames) == body
    for i, f in enumerate(frames):
        p = Ether(f)
        assert len(f) <= MTU + 14
        t = p[TCP]
        assert t.seq == 1000 + i * g
        assert t.flags == ("PA" if i == len(frames) - 1 else "A")
        want = Ether(f)
        del want[TCP].chksum
        if not v6:
            assert p[IP].id == 100 + i
            del want[IP].chksum
            del want[IP].len
        else:
            del want[IPv6].plen
        assert bytes(Ether(bytes(want))) == f      # scapy's own lengths and checksums


def test_a_corrupt_super_frame_is_not_cut(receive: Receive) -> None:
    big = bytearray(tcp4(os.urandom(9000)))
    big[-1] ^= 1
    assert receive(bytes(big), MTU) == ([bytes(big)], "bad")


def test_a_udp_super_frame_is_left_whole(receive: Receive) -> None:
    """The sender's UDP segment size travels nowhere: left whole (the core drops it)."""
    big = bytes(Ether(**MACS) / IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / Raw(b"u" * 5000))
    assert receive(partial(big), MTU) == ([big], "partial")


def test_a_frame_within_the_mtu_is_never_cut(receive: Receive) -> None:
    frame = tcp4(os.urandom(MTU - 40))
    assert len(frame) == MTU + 14
    assert receive(partial(frame), MTU) == ([frame], "partial")


# --------------------------------------------------------------------------- differential

@st.composite
def inner_frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(sorted(FRAMES) + ["big", "garbage"]))
    if kind == "garbage":
        return draw(st.binary(max_size=200))
    frame = tcp4(os.urandom(draw(st.integers(1400, 9000)))) if kind == "big" else FRAMES[kind]
    if draw(st.booleans()):
        frame = partial(frame)
    b = bytearray(frame)
    for _ in range(draw(st.integers(0, 3))):
        b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        b = b[:draw(st.integers(0, len(b)))]
    return bytes(b)


@settings(max_examples=400, deadline=None)
@given(inner_frames(), st.sampled_from([68, 576, 1450, 1500, 9000]))
def test_c_and_python_agree(frame: bytes, mtu: int) -> None:
    from dataplane import fastpath

    try:
        c = fastpath.implementation("c")
    except ImportError:
        pytest.skip("fast path not built")
    del c
    from _fastpath import testing  # noqa: PLC0415

    assert testing.offload_receive(frame, mtu) == offload.receive(frame, mtu)
