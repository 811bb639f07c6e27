"""Differential tests for the TAP offloads: the same inputs through the pure-Python reference
(``dataplane.offload.segment``/``coalesce``) and through the C fast path's test hooks
(``_fastpath.testing.offload_segment``/``offload_coalesce``) must give equal results: the same
list of ``bytes`` (or ``(bytes, bytes)`` pairs), or a ``ValueError`` with the same reason string
(the offload reference's "Errors": ``offload.SEGMENT_ERRORS``).

Inputs: crafted edge cases (every error reason, every limit just inside and just outside), then
hypothesis: well-formed TSO super-frames under varied virtio_net_hdrs, the same mutated and
truncated, random bytes; and for ``coalesce``, segments of 1-3 flows interleaved, with header
fields changed (checksums made valid again, so only the run rules can tell them apart),
corruption, drops, duplicates, padding and junk.

Like ``test_differential.py`` the tests take the shared ``impl`` fixture (tests/conftest.py):
``[c]`` is the real differential test, skipped when the extension is not built, a failure when
``CI=true`` or ``VXDP_REQUIRE_EXTENSIONS=1``; the same applies when the extension imports but
lacks the hooks (a stale build). ``[py]`` holds the reference against itself, which checks that
it is deterministic and keeps this harness running everywhere.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataplane import offload
from dataplane import switch as reference_core
from dataplane.offload import (
    F_DATA_VALID,
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    GSO_UDP_L4,
    MAX_SEGS,
    MAX_TSO_SEGS,
)
from tests.strategies import (
    HEALTH as FRAME_HEALTH,
    TS_OPTS,
    data,
    frame_sequences,
    mutations,
    refix,
    super4,
    vnet,
)
from tests.strategies import patch_byte as _patch

HEALTH = [*FRAME_HEALTH, HealthCheck.function_scoped_fixture]

FIN, PSH, ACK, CWR = 0x01, 0x08, 0x10, 0x80
MAC_D, MAC_S = bytes.fromhex("0242c0a83705"), bytes.fromhex("0242c0a83704")

Segment = Callable[[bytes, bytes], list[bytes]]
Coalesce = Callable[[Sequence[bytes]], list[tuple[bytes, bytes]]]


class Hooks(NamedTuple):
    segment: Segment
    coalesce: Coalesce
    is_reference: bool = False

    def examples(self, n: int) -> int:
        """Hypothesis examples: all of ``n`` for the C hooks, a fifth for the reference held
        against itself (it only has to show the harness runs and the reference is
        deterministic)."""
        return max(10, n // 5) if self.is_reference else n


def _strict() -> bool:
    """tests/conftest.py's policy: CI=true or VXDP_REQUIRE_EXTENSIONS=1 turn a skip into a
    failure."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")
               for name in ("CI", "VXDP_REQUIRE_EXTENSIONS"))


@pytest.fixture
def hooks(impl: Any) -> Hooks:
    """The implementation under test: the reference for ``[py]``, the C hooks for ``[c]``
    (looked up here, lazily: the extension may predate them)."""
    if impl is reference_core:
        return Hooks(offload.segment, offload.coalesce, is_reference=True)
    try:
        from _fastpath import testing  # noqa: PLC0415 - built with the core, test-only
    except ImportError as exc:
        problem = f"_fastpath.testing does not import ({exc}; stale build?)"
        if _strict():
            pytest.fail(f"{problem}; a skip is a failure when CI=true or "
                        "VXDP_REQUIRE_EXTENSIONS=1", pytrace=False)
        pytest.skip(f"c: {problem}; run `make build`")
    return Hooks(testing.offload_segment, testing.offload_coalesce)


# --------------------------------------------------------------------------- comparison


def _show(b: bytes, limit: int = 96) -> str:
    return f"<{len(b)} bytes {b[:limit].hex()}{'...' if len(b) > limit else ''}>"


def _outcome_segment(fn: Segment, hdr: bytes, frame: bytes) -> Any:
    try:
        segs = fn(hdr, frame)
    except ValueError as exc:
        return ("ValueError", type(exc) is ValueError, str(exc))
    assert type(segs) is list and all(type(s) is bytes for s in segs), (
        f"segment must return list[bytes], got {type(segs).__name__} of "
        f"{sorted({type(s).__name__ for s in segs})}")
    return segs


def check_segment(h: Hooks, hdr: bytes, frame: bytes) -> None:
    want = _outcome_segment(offload.segment, hdr, frame)
    got = _outcome_segment(h.segment, hdr, frame)
    if got == want:
        return
    detail = f"hdr={hdr.hex()} frame={_show(frame)}"
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            detail += f"\n{len(got)} segments, the reference has {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                at = next((j for j in range(min(len(g), len(w))) if g[j] != w[j]),
                          min(len(g), len(w)))
                detail += (f"\nsegment {i} first differs at byte {at}: "
                           f"got {_show(g[at:at + 8])} want {_show(w[at:at + 8])}; "
                           f"lengths {len(g)} / {len(w)}")
                break
    else:
        detail += f"\ngot {_brief(got)}\nwant {_brief(want)}"
    pytest.fail(f"segment() differs from the reference: {detail}", pytrace=False)


def _brief(x: Any) -> str:
    if isinstance(x, list):
        return f"[{', '.join(_show(s, 24) for s in x[:4])}{', ...' if len(x) > 4 else ''}]"
    return repr(x)


def check_coalesce(h: Hooks, frames: list[bytes]) -> None:
    want = offload.coalesce(frames)
    got = h.coalesce(frames)
    assert type(got) is list and all(
        type(p) is tuple and len(p) == 2 and type(p[0]) is bytes and type(p[1]) is bytes
        for p in got), "coalesce must return list[tuple[bytes, bytes]]"
    if got == want:
        return
    shape = [(len(f), offload.VnetHdr.parse(hd) if hd != bytes(10) else None) for hd, f in want]
    detail = [f"{len(frames)} input frames: " + ", ".join(_show(f, 0) for f in frames[:20]),
              f"reference output ({len(want)} pairs): {shape[:10]}",
              f"C output has {len(got)} pairs"]
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            part = 0 if g[0] != w[0] else 1
            a, b = g[part], w[part]
            at = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]),
                      min(len(a), len(b)))
            detail.append(f"pair {i}: {'hdr' if part == 0 else 'frame'} first differs at byte "
                          f"{at}: got {_show(a[at:at + 8])} want {_show(b[at:at + 8])}; "
                          f"lengths {len(a)} / {len(b)}")
            break
    pytest.fail("coalesce() differs from the reference:\n" + "\n".join(detail), pytrace=False)


def _run(n: int, strategy: st.SearchStrategy[Any], body: Callable[[Any], None]) -> None:
    """``body`` over ``n`` examples, inside the test (the fixture is function-scoped)."""
    @settings(max_examples=n, suppress_health_check=HEALTH)
    @given(strategy)
    def inner(x: Any) -> None:
        body(x)

    inner()


# --------------------------------------------------------------------------- builders
# Checksums and length fields are left as they come: segment() ignores them on super-frames,
# and coalesce() inputs are made by the reference segment(), which fills them in. vnet, data,
# super4 and refix are tests/strategies.py's (frame_sequences, shared with test_offload.py,
# is built from them).


def super6(payload: bytes, *, seq: int = 1000, flags: int = ACK, options: bytes = TS_OPTS,
           tc_flow: int = 0) -> bytes:
    doff = 20 + len(options)
    ip = struct.pack("!IHBB16s16s", (6 << 28) | tc_flow, (doff + len(payload)) & 0xFFFF, 6, 64,
                     bytes.fromhex("fd000055" + "00" * 11 + "04"),
                     bytes.fromhex("fd000055" + "00" * 11 + "05"))
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 1, (doff // 4) << 4, flags, 502, 0,
                      0) + options
    return MAC_D + MAC_S + b"\x86\xdd" + ip + tcp + payload


def flow(n: int, g: int, *, last: int | None = None, salt: int = 0, **kw: Any) -> list[bytes]:
    size = (n - 1) * g + (g if last is None else last)
    return offload.segment(vnet(0, GSO_TCPV4, 0, g), super4(data(size, salt), **kw))


# --------------------------------------------------------------------------- crafted cases

G4 = super4(data(3000), options=TS_OPTS)
G6 = super6(data(3000))


def vlan(frame: bytes, tpid: int = 0x8100, vid: int = 100) -> bytes:
    """``frame`` with one more VLAN tag in front of its ethertype."""
    return frame[:12] + struct.pack("!HH", tpid, vid) + frame[12:]


def _udp_zero_case() -> bytes:
    """A UDP frame whose completed checksum is 0 (so 0xFFFF is stored)."""
    body = bytearray(data(40, 9))
    src, dst = b"\xc0\xa8\x37\x04", b"\xc0\xa8\x37\x05"
    udp_len = 8 + len(body)
    body[0:2] = b"\x00\x00"
    hdr = struct.pack("!HHHH", 5000, 4789, udp_len, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    partial = offload.csum(pseudo)
    rest = offload.csum(hdr + bytes(body), partial)
    body[0:2] = struct.pack("!H", 0xFFFF - rest) if rest != 0xFFFF else b"\x00\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 1, 0, 64, 17, 0, src, dst)
    udp = hdr[:6] + struct.pack("!H", partial)
    return MAC_D + MAC_S + b"\x08\x00" + ip + udp + bytes(body)


SEGMENT_CASES: list[tuple[str, bytes, bytes]] = [
    # every error reason
    ("short header", b"", G4),
    ("short header 9", vnet(0, GSO_TCPV4, 0, 1448)[:9], G4),
    ("csum start = len", vnet(F_NEEDS_CSUM, 0, 0, 0, len(G4), 0), G4),
    ("csum field past end", vnet(F_NEEDS_CSUM, 0, 0, 0, len(G4) - 1, 0), G4),
    ("csum offset huge", vnet(F_NEEDS_CSUM, 0, 0, 0, 34, 65535), G4),
    ("csum both huge", vnet(F_NEEDS_CSUM, 0, 0, 0, 65535, 65535), G4),
    ("csum empty frame", vnet(F_NEEDS_CSUM, 0, 0, 0, 0, 0), b""),
    ("v4 type on v6", vnet(0, GSO_TCPV4, 0, 1448), G6),
    ("v6 type on v4", vnet(0, GSO_TCPV6, 0, 1448), G4),
    ("v4 type on arp", vnet(0, GSO_TCPV4, 0, 1448), G4[:12] + b"\x08\x06" + G4[14:]),
    ("udp ufo", vnet(0, GSO_UDP, 0, 1448), G4),
    ("udp l4", vnet(0, GSO_UDP_L4, 0, 1448), G4),
    ("gso 2", vnet(0, 2, 0, 1448), G4),
    ("gso 0x7f|ecn", vnet(0, 0xFF, 0, 1448), b""),
    ("ecn only", vnet(0, GSO_ECN, 0, 1448), G4),
    ("v4 13 bytes", vnet(0, GSO_TCPV4, 0, 1448), G4[:13]),
    ("v4 14 bytes", vnet(0, GSO_TCPV4, 0, 1448), G4[:14]),
    ("v4 33 bytes", vnet(0, GSO_TCPV4, 0, 1448), G4[:33]),
    ("v4 version 6", vnet(0, GSO_TCPV4, 0, 1448), _patch(G4, 14, 0x65)),
    ("v4 ihl 4", vnet(0, GSO_TCPV4, 0, 1448), _patch(G4, 14, 0x44)),
    ("v4 ihl 0", vnet(0, GSO_TCPV4, 0, 1448), _patch(G4, 14, 0x40)),
    ("v4 ihl past end", vnet(0, GSO_TCPV4, 0, 1448), _patch(G4, 14, 0x4F)[:70]),
    ("v4 ihl 15", vnet(0, GSO_TCPV4, 0, 1448),
     super4(data(100), ip_options=b"\x01" * 40)),
    ("v4 udp", vnet(0, GSO_TCPV4, 0, 1448), _patch(G4, 23, 17)),
    ("v6 53 bytes", vnet(0, GSO_TCPV6, 0, 1448), G6[:53]),
    ("v6 version 4", vnet(0, GSO_TCPV6, 0, 1448), _patch(G6, 14, 0x40)),
    ("v6 hop-by-hop", vnet(0, GSO_TCPV6, 0, 1448), _patch(G6, 20, 0)),
    ("v4 tcp short", vnet(0, GSO_TCPV4, 0, 1448), G4[:53]),
    ("v4 tcp 54", vnet(0, GSO_TCPV4, 0, 1448), G4[:54]),
    ("v4 doff 4", vnet(0, GSO_TCPV4, 0, 1448), _patch(G4, 46, 0x40)),
    ("v4 doff 15 past end", vnet(0, GSO_TCPV4, 0, 1448), _patch(G4, 46, 0xF0)[:80]),
    ("v4 doff 15 fits", vnet(0, GSO_TCPV4, 0, 1448), _patch(G4, 46, 0xF0)),
    ("v6 tcp short", vnet(0, GSO_TCPV6, 0, 1448), G6[:73]),
    ("v6 doff 1", vnet(0, GSO_TCPV6, 0, 1448), _patch(G6, 66, 0x10)),
    ("zero gso", vnet(0, GSO_TCPV4, 0, 0), G4),
    ("zero gso v6", vnet(0, GSO_TCPV6 | GSO_ECN, 0, 0), G6),
    ("empty v4", vnet(0, GSO_TCPV4, 0, 1448), G4[:66]),
    ("empty v6", vnet(0, GSO_TCPV6, 0, 1448), G6[:86]),
    ("too many", vnet(0, GSO_TCPV4, 0, 2), G4),
    ("too many v6", vnet(0, GSO_TCPV6, 0, 1), super6(data(MAX_TSO_SEGS + 1))),
    # limits just inside, wrap-arounds, odd sizes
    ("max tso segs", vnet(0, GSO_TCPV4, 0, 1), super4(data(MAX_TSO_SEGS))),
    ("1000 segs", vnet(0, GSO_TCPV4, 0, 3), G4),
    ("one byte", vnet(0, GSO_TCPV4, 0, 1448), G4[:67]),
    ("gso 65535", vnet(0, GSO_TCPV4, 0, 65535), G4),
    ("big single v4", vnet(0, GSO_TCPV4, 0, 65535), super4(data(65535 - 52))),
    ("over 64k v4", vnet(0, GSO_TCPV4, 0, 65535), super4(data(65535))),
    ("over 64k v6", vnet(0, GSO_TCPV6, 0, 65535), super6(data(65535))),
    ("seq and id wrap", vnet(0, GSO_TCPV4, 0, 100),
     super4(data(1000), seq=2**32 - 250, ip_id=0xFFFE, flags=FIN | PSH | ACK | CWR)),
    ("v6 flags", vnet(0, GSO_TCPV6, 0, 700), super6(data(2000), flags=0xFF, seq=2**32 - 1)),
    ("ip options", vnet(0, GSO_TCPV4, 0, 333), super4(data(1000), ip_options=b"\x94\x04\0\0")),
    ("no tcp options", vnet(0, GSO_TCPV4, 0, 333), super4(data(1001), options=b"")),
    ("12-byte header", vnet(0, GSO_TCPV4, 0, 1000) + b"\x01\x00", G4),
    ("ignored fields", vnet(0xFF, GSO_TCPV4 | GSO_ECN, 999, 1000, 65535, 65535), G4),
    # checksum completion
    ("csum tcp", vnet(F_NEEDS_CSUM, 0, 0, 0, 34, 16), G4),
    ("csum udp", vnet(F_NEEDS_CSUM, 0, 0, 0, 34, 6), _udp_zero_case()),
    ("csum odd start", vnet(F_NEEDS_CSUM, 0, 0, 0, 35, 3), G4[:101]),
    ("csum last two", vnet(F_NEEDS_CSUM, 0, 0, 0, 98, 0), G4[:100]),
    ("csum start 0", vnet(F_NEEDS_CSUM, 0, 0, 0, 0, 0), G4),
    ("csum all zero", vnet(F_NEEDS_CSUM, 0, 0, 0, 0, 2), bytes(64)),
    ("csum ffff", vnet(F_NEEDS_CSUM, 0, 0, 0, 0, 2), b"\xff\xff\x00\x00"),
    ("csum ignores gso_size", vnet(F_NEEDS_CSUM | F_DATA_VALID, GSO_ECN, 1, 0, 54, 16), G6),
    ("data valid only", vnet(F_DATA_VALID, 0, 0, 0, 65535, 65535), G4),
    ("plain", vnet(), b""),
    ("plain junk", vnet(0, 0, 5, 6, 7, 8), b"\x01\x02\x03"),
    # VLAN tags in front of the IP header (a VLAN device on the TAP inherits its TSO)
    ("vlan v4", vnet(0, GSO_TCPV4, 0, 1000), vlan(G4)),
    ("qinq v4", vnet(0, GSO_TCPV4, 0, 999), vlan(vlan(G4), 0x88A8, 7)),
    ("vlan v6", vnet(0, GSO_TCPV6, 0, 700), vlan(G6)),
    ("three tags", vnet(0, GSO_TCPV4, 0, 1000), vlan(vlan(vlan(G4)))),
    ("vlan truncated", vnet(0, GSO_TCPV4, 0, 1000), vlan(G4)[:16]),
    ("vlan tag only", vnet(0, GSO_TCPV4, 0, 1000), vlan(G4)[:18]),
    ("vlan v4 short ip", vnet(0, GSO_TCPV4, 0, 1000), vlan(G4)[:37]),
    ("vlan mismatch", vnet(0, GSO_TCPV4, 0, 1000), vlan(G6)),
    ("vlan csum", vnet(F_NEEDS_CSUM, 0, 0, 0, 38, 16), vlan(G4)),
]


@pytest.mark.parametrize(("name", "hdr", "frame"), SEGMENT_CASES,
                         ids=[c[0] for c in SEGMENT_CASES])
def test_segment_crafted(hooks: Hooks, name: str, hdr: bytes, frame: bytes) -> None:
    check_segment(hooks, hdr, frame)


def _coalesce_cases() -> dict[str, list[bytes]]:
    a = flow(6, 1000)
    b = flow(4, 1000, sport=40001, salt=7)
    psh_mid = list(a)
    psh_mid[2] = refix(_patch(a[2], 47, ACK | PSH))
    bad_tcp = list(a)
    bad_tcp[3] = _patch(a[3], 51, a[3][51] ^ 1)
    bad_ip = list(a)
    bad_ip[3] = _patch(a[3], 25, a[3][25] ^ 1)
    padded = list(a)
    padded[2] = a[2] + b"\x00" * 6
    frag = list(a)
    frag[2] = refix(_patch(a[2], 20, 0x20))      # MF
    no_df = list(a)
    no_df[2] = refix(_patch(a[2], 20, 0x00))
    evil = list(a)
    evil[2] = refix(_patch(a[2], 20, 0xC0))      # DF + reserved bit: still coalesced
    ttl = list(a)
    ttl[1] = refix(_patch(a[1], 22, 63))
    ts = list(a)
    ts[4] = refix(_patch(a[4], 61, 0x99))        # TSval differs
    urgptr = list(a)
    urgptr[1] = refix(_patch(a[1], 53, 9))       # urgent pointer without URG
    ipid = list(a)
    ipid[1] = refix(_patch(a[1], 19, 0x77))
    ae = list(a)
    ae[2] = refix(_patch(a[2], 46, a[2][46] | 0x01))      # AccECN AE bit
    reserved = list(a)
    reserved[1] = refix(_patch(a[1], 46, a[1][46] | 0x0E))
    cases = {
        "one flow": a,
        "two flows": a + b,
        "interleaved": [x for pair in zip(a, b) for x in pair],
        "gap": a[:2] + a[3:],
        "dup": a[:3] + a[2:],
        "reordered": [a[0], a[2], a[1], a[2], a[3]],
        "psh mid": psh_mid,
        "psh last": flow(5, 700, last=300, flags=ACK | PSH),
        "short mid": flow(2, 1000, last=10) + flow(3, 1000, seq=1000 + 1010),
        "larger after": flow(1, 500) + flow(1, 501, seq=1500),
        "bad tcp csum": bad_tcp,
        "bad ip csum": bad_ip,
        "padded": padded,
        "fragment": frag,
        "no df mid": no_df,
        "reserved bit": evil,
        "ttl": ttl,
        "timestamps": ts,
        "urgent pointer": urgptr,
        "ip id": ipid,
        "ae bit": ae,
        "tcp reserved bits": reserved,
        "vlan tagged": [vlan(x) for x in a],
        "ip options": flow(3, 500, ip_options=b"\x94\x04\x00\x00"),
        "max segs": flow(MAX_SEGS * 2 + 1, 50, options=b""),
        "64k": flow(47, 1448),
        "64k no options": flow(3, 32000, options=b""),
        "64k exact": flow(2, 32747, options=b"") + flow(1, 1, seq=1000 + 65494, options=b""),
        "seq wrap": flow(5, 999, seq=2**32 - 2000),
        "v6 passes": flow(1, 10) + offload.segment(vnet(0, GSO_TCPV6, 0, 100),
                                                   super6(data(300))),
        "empty": [],
        "junk": [b"", b"\x00", bytes(54), bytes(60), a[0][:54], a[0][:-1]],
    }
    for flags in (0x02, 0x01, 0x04, 0x20, 0x40, 0x80, 0x08, 0x00, 0x11 | 0x08):
        c = list(a)
        c[2] = refix(_patch(a[2], 47, flags | (ACK if flags not in (0x08, 0x00) else 0)))
        cases[f"flags {flags:#04x}"] = c
    return cases


COALESCE_CASES = _coalesce_cases()


@pytest.mark.parametrize("name", list(COALESCE_CASES))
def test_coalesce_crafted(hooks: Hooks, name: str) -> None:
    check_coalesce(hooks, COALESCE_CASES[name])


# --------------------------------------------------------------------------- hypothesis


@st.composite
def super_frames(draw: st.DrawFn) -> bytes:
    """Well-formed TSO super-frames, IPv4 (sometimes with options) or IPv6."""
    size = draw(st.one_of(st.integers(0, 3000), st.sampled_from([1448, 2896, 20000, 65000])))
    payload = data(size, draw(st.integers(0, 255)))
    opts = draw(st.sampled_from([b"", TS_OPTS, b"\x02\x04\x05\xb4", b"\x01" * 40]))
    seq = draw(st.integers(0, 2**32 - 1))
    flags = draw(st.integers(0, 255))
    if draw(st.integers(0, 3)) == 0:
        return super6(payload, seq=seq, flags=flags, options=opts)
    return super4(payload, seq=seq, flags=flags, options=opts,
                  ip_id=draw(st.integers(0, 65535)), ttl=draw(st.integers(0, 255)),
                  ip_options=draw(st.sampled_from([b"", b"", b"\x94\x04\x00\x00",
                                                   b"\x01" * 40])))


gso_sizes = st.one_of(st.sampled_from([0, 1, 2, 3, 7, 64, 536, 1448, 1460, 9000, 65535]),
                      st.integers(1, 2000), st.integers(0, 65535))
gso_types = st.sampled_from([GSO_NONE, GSO_NONE, GSO_TCPV4, GSO_TCPV4, GSO_TCPV4, GSO_TCPV6,
                             GSO_TCPV6, GSO_UDP,
                             GSO_UDP_L4, 2, 6, 0x7F, GSO_TCPV4 | GSO_ECN, GSO_TCPV6 | GSO_ECN,
                             GSO_NONE | GSO_ECN])


@st.composite
def segment_inputs(draw: st.DrawFn) -> tuple[bytes, bytes]:
    kind = draw(st.integers(0, 9))
    if kind <= 5:
        frame = draw(super_frames())
    elif kind <= 7:
        frame = draw(super_frames().flatmap(mutations))
    else:
        frame = draw(st.binary(max_size=160))
    n = len(frame)
    flags = draw(st.sampled_from([0, F_NEEDS_CSUM, F_NEEDS_CSUM, F_DATA_VALID, 3, 0xFF]))
    start = draw(st.one_of(st.sampled_from([34, 54, 0]), st.integers(0, n + 2),
                           st.integers(0, 65535)))
    offset = draw(st.one_of(st.sampled_from([16, 6, 0]), st.integers(0, max(0, n - start)),
                            st.integers(0, 65535)))
    gso = draw(gso_types)
    if n >= 14 and draw(st.booleans()):   # mostly the type that matches the frame: TSO proper
        gso = {b"\x08\x00": GSO_TCPV4, b"\x86\xdd": GSO_TCPV6}.get(frame[12:14], gso)
    hdr = vnet(flags, gso, draw(st.integers(0, 65535)), draw(gso_sizes), start, offset)
    kind = draw(st.integers(0, 9))
    if kind == 7:
        hdr += b"\x00\x00"                          # the 12-byte form
    elif kind == 8:
        hdr = draw(mutations(hdr))
    elif kind == 9:
        hdr = draw(st.binary(max_size=12))
    return hdr, frame


def test_segment_hypothesis(hooks: Hooks) -> None:
    _run(hooks.examples(300), segment_inputs(), lambda args: check_segment(hooks, *args))


def test_coalesce_hypothesis(hooks: Hooks) -> None:
    _run(hooks.examples(200), st.one_of(frame_sequences(), st.lists(st.binary(max_size=120), max_size=6)),
         lambda frames: check_coalesce(hooks, frames))


def test_coalesce_of_segments_hypothesis(hooks: Hooks) -> None:
    """Both implementations' coalesce of the C (or reference) segments of one super-frame."""
    @st.composite
    def cases(draw: st.DrawFn) -> tuple[bytes, bytes]:
        sf = super4(data(draw(st.integers(1, 30000)), draw(st.integers(0, 255))),
                    seq=draw(st.integers(0, 2**32 - 1)),
                    flags=draw(st.sampled_from([ACK, ACK | PSH])),
                    options=draw(st.sampled_from([b"", TS_OPTS])),
                    ip_id=draw(st.integers(0, 65535)))
        return vnet(0, GSO_TCPV4, 0, draw(st.sampled_from([100, 536, 1448, 9000]))), sf

    def body(args: tuple[bytes, bytes]) -> None:
        check_segment(hooks, *args)
        check_coalesce(hooks, hooks.segment(*args))

    _run(hooks.examples(60), cases(), body)


# --------------------------------------------------------------------------- scattered reads
# rx_tap_burst reads a vnet TAP with readv() into iovecs laid out as the last TSO frame's
# segments (rx.pyx vlayout), so that a super-frame of the same headers length and gso_size is
# segmented in place (tso_inplace) and any other is moved back together first. Both must give
# the reference's bytes, whatever the guess.


def _headers_len(frame: bytes) -> int | None:
    """Ethernet (+ VLAN tags) + IP + TCP header length of a TCP frame, else None."""
    try:
        l3 = 14
        et = struct.unpack_from("!H", frame, 12)[0]
        while et in (0x8100, 0x88A8) and l3 < 22:
            et = struct.unpack_from("!H", frame, l3 + 2)[0]
            l3 += 4
        if et == 0x0800:
            l4 = l3 + (frame[l3] & 0x0F) * 4
        elif et == 0x86DD:
            l4 = l3 + 40
        else:
            return None
        return l4 + (frame[l4 + 12] >> 4) * 4
    except (IndexError, struct.error):
        return None


def check_scatter(hdr: bytes, frame: bytes, hl: int, g: int) -> bool:
    from _fastpath import testing  # noqa: PLC0415 - built with the core, test-only
    want = _outcome_segment(offload.segment, hdr, frame)
    got = _outcome_segment(lambda h, f: testing.offload_segment_scatter(h, f, hl, g)[0],
                           hdr, frame)
    if got != want:
        pytest.fail(f"scattered read (hl {hl}, g {g}) differs from the reference: "
                    f"{got if not isinstance(got, list) else len(got)} vs "
                    f"{want if not isinstance(want, list) else len(want)}", pytrace=False)
    try:
        return testing.offload_segment_scatter(hdr, frame, hl, g)[1]
    except ValueError:
        return False


def test_segment_scatter_hypothesis(c_core: Any) -> None:
    """Random frames and headers under the exact layout, a wrong one and none."""
    @st.composite
    def cases(draw: st.DrawFn) -> tuple[bytes, bytes, int, int]:
        hdr, frame = draw(segment_inputs())
        exact_hl = _headers_len(frame) or 66
        exact_g = int.from_bytes(hdr[4:6], "little") if len(hdr) >= 6 else 0
        hl = draw(st.sampled_from([exact_hl, exact_hl, 0, 54, 66, 86, 142]))
        g = draw(st.sampled_from([exact_g, exact_g, 536, 1398, 1448, 9000, 206]))
        return hdr, frame, hl, g

    _run(300, cases(), lambda args: check_scatter(*args))


@pytest.mark.parametrize("size,g,options,v6", [
    (64000, 1398, TS_OPTS, False), (1, 1398, TS_OPTS, False), (1398, 1398, TS_OPTS, False),
    (1399, 1398, TS_OPTS, False), (30000, 536, b"", False), (65000, 9000, TS_OPTS, False),
    (20000, 1428, TS_OPTS, True), (65400, 1380, TS_OPTS, False)])
def test_segment_scatter_in_place(c_core: Any, size: int, g: int, options: bytes,
                                  v6: bool) -> None:
    """TSO frames that fit the layout are segmented in place, byte for byte the reference's;
    with the layout of another MSS or headers length they are copied, as before."""
    frame = super6(data(size), options=options) if v6 else super4(data(size), options=options)
    hdr = vnet(0, GSO_TCPV6 if v6 else GSO_TCPV4, 0, g)
    hl = _headers_len(frame)
    assert hl is not None
    assert check_scatter(hdr, frame, hl, g) is True
    assert check_scatter(hdr, frame, hl, g + 2) is False
    assert check_scatter(hdr, frame, hl + 4, g) is False
    assert check_scatter(hdr, frame, 0, 0) is False
