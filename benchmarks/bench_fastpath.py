"""In-memory forwarding throughput: the Cython fast path vs the pure-Python reference vs scapy.

    python -m benchmarks.bench_fastpath [--json] [--seconds S]

What is timed, per frame size (64, 512, 1450 bytes of inner Ethernet frame):

- encap: a frame from a local port to a MAC behind a remote VTEP: classify, learn, FDB lookup,
  flow hash, VXLAN + UDP + IPv4 headers with both checksums (the bytes a raw socket would send);
- decap: a datagram from a remote VTEP to a local endpoint: header checks, VNI lookup, FDB
  lookup, delivery record.

Baselines in the same run: the Python reference (``dataplane.switch`` + ``wire.outer_datagram``)
doing the same work, and scapy building (encap) or dissecting (decap) the same packet. Before
timing, the three must agree on the bytes. No I/O: this is the ceiling of one core.

Also: FDB lookups per second with 100 vs 1,000,000 entries and the table's bytes per entry;
and the offload work per 64 KB TCP super-frame (TSO segmentation with per-segment
TCP checksums; the coalescing checks and merged header of the way back), C vs the
``dataplane.offload`` reference on the same frames, checked equal first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import sys
import time
from ipaddress import IPv4Address
from typing import Any, Callable

from dataplane import wire
from dataplane import switch as pyswitch
from dataplane.fdb import Fdb, FdbEntry

LOCAL = IPv4Address("198.18.0.1")
REMOTE = IPv4Address("198.18.0.2")
VNI = 4097
MAC_A = wire.mac_to_bytes("02:42:c0:a8:37:04")   # local endpoint
MAC_B = wire.mac_to_bytes("02:42:c0:a8:37:03")   # behind the remote VTEP
SIZES = (64, 512, 1450)


def make_frame(size: int, dst: bytes, src: bytes, ip_src: str, ip_dst: str) -> bytes:
    """An Ethernet/IPv4/UDP frame of exactly ``size`` bytes (Ethernet header included)."""
    payload_len = size - 14 - 20 - 8
    assert payload_len >= 0
    udp = struct.pack("!HHHH", 40000, 5201, 8 + payload_len, 0) + bytes(payload_len)
    ip = wire.ipv4_header(IPv4Address(ip_src), IPv4Address(ip_dst), len(udp))
    return dst + src + b"\x08\x00" + ip + udp


def build(impl: Any) -> Any:
    sw = impl.Switch(LOCAL)
    sw.add_network(VNI, mtu=1450)
    sw.add_port(0, VNI, MAC_A)
    sw.fdb_add(VNI, MAC_B, REMOTE)
    return sw


def rate(fn: Callable[[int], Any], seconds: float, start: int = 1000) -> float:
    """Operations per second of ``fn(n)`` (which does n operations), run for ~``seconds``."""
    n = start
    while True:
        t0 = time.perf_counter()
        fn(n)
        dt = time.perf_counter() - t0
        if dt >= seconds or n > 1 << 30:
            return n / dt
        n = int(n * min(10.0, max(2.0, seconds / max(dt, 1e-6))))


def scapy_encap(frame: bytes, sport: int) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.vxlan import VXLAN
    from scapy.packet import Raw

    return bytes(IP(src=str(LOCAL), dst=str(REMOTE), ttl=64, id=0, flags=0)
                 / UDP(sport=sport, dport=4789) / VXLAN(vni=VNI, flags=0x08) / Raw(frame))


def scapy_decap(datagram: bytes) -> bytes:
    from scapy.layers.vxlan import VXLAN

    return bytes(VXLAN(datagram).payload)


def bench_size(c: Any, t: Any, size: int, seconds: float) -> list[dict[str, Any]]:
    out = []
    frame = make_frame(size, MAC_B, MAC_A, "192.168.55.4", "192.168.55.3")
    py, cs = build(pyswitch), build(c)

    # --- encap: agree first -------------------------------------------------------------
    (a_py,) = py.from_port(0, frame, 1.0)
    (a_c,) = cs.from_port(0, frame, 1.0)
    assert a_py == a_c, "fast path and reference disagree on encapsulation"
    # ("vtep", dst, sport, payload, outer header fields): ttl 64, tos 0, DF clear by default
    _, dst, sport, payload, hdr = a_py
    ref = wire.outer_datagram(LOCAL, dst, sport, payload, ttl=hdr.ttl, tos=hdr.tos, df=hdr.df)
    assert t.build_outer(cs, dst, sport, payload, hdr.tos, hdr.ttl) == ref, \
        "outer headers differ"
    assert scapy_encap(frame, sport) == ref, "scapy builds a different datagram"

    def py_encap(n: int) -> None:
        for _ in range(n):
            for a in py.from_port(0, frame, 1.0):
                h = a[4]
                wire.outer_datagram(LOCAL, a[1], a[2], a[3], ttl=h.ttl, tos=h.tos, df=h.df)

    def c_encap(n: int) -> None:
        produced = t.bench_port(cs, 0, frame, n, 1.0)
        assert produced == n

    f_c = rate(c_encap, seconds, 100_000)
    f_py = rate(py_encap, seconds, 1000)
    f_sc = rate(lambda n: [scapy_encap(frame, sport) for _ in range(n)], seconds / 2, 50)
    out.append({"direction": "encap", "frame_bytes": size, "fastpath_mpps": f_c / 1e6,
                "python_mpps": f_py / 1e6, "scapy_kpps": f_sc / 1e3,
                "fastpath_vs_python": f_c / f_py, "fastpath_vs_scapy": f_c / f_sc,
                "fastpath_gbps_inner": f_c * size * 8 / 1e9})

    # --- decap -----------------------------------------------------------------------------
    inner = make_frame(size, MAC_A, MAC_B, "192.168.55.3", "192.168.55.4")
    dgram = wire.encapsulate(VNI, inner)
    assert py.from_underlay(REMOTE, dgram, 1.0) == cs.from_underlay(REMOTE, dgram, 1.0) == [
        ("port", 0, inner)], "decapsulation disagrees"
    assert scapy_decap(dgram) == inner

    def py_decap(n: int) -> None:
        for _ in range(n):
            py.from_underlay(REMOTE, dgram, 1.0)

    def c_decap(n: int) -> None:
        assert t.bench_underlay(cs, REMOTE, dgram, n, 1.0) == n

    f_c = rate(c_decap, seconds, 100_000)
    f_py = rate(py_decap, seconds, 1000)
    f_sc = rate(lambda n: [scapy_decap(dgram) for _ in range(n)], seconds / 2, 50)
    out.append({"direction": "decap", "frame_bytes": size, "fastpath_mpps": f_c / 1e6,
                "python_mpps": f_py / 1e6, "scapy_kpps": f_sc / 1e3,
                "fastpath_vs_python": f_c / f_py, "fastpath_vs_scapy": f_c / f_sc,
                "fastpath_gbps_inner": f_c * size * 8 / 1e9})
    return out


def bench_trace(c: Any, t: Any, seconds: float) -> dict[str, Any]:
    """64-byte encap with trace off vs on (a reader draining the ring every 4096 records,
    as the VTEP does after each burst when someone watches), same run."""
    frame = make_frame(64, MAC_B, MAC_A, "192.168.55.4", "192.168.55.3")
    cs = build(c)

    def off(n: int) -> None:
        t.bench_port(cs, 0, frame, n, 1.0)

    def on(n: int) -> None:
        done = 0
        while done < n:
            k = min(4096, n - done)
            t.bench_port(cs, 0, frame, k, 1.0)
            cs.trace_drain()
            done += k

    f_off = rate(off, seconds, 100_000)
    cs.set_trace(True)
    f_on = rate(on, seconds, 100_000)
    cs.set_trace(False)
    f_off2 = rate(off, seconds, 100_000)
    return {"frame_bytes": 64, "trace_off_mpps": max(f_off, f_off2) / 1e6,
            "trace_on_mpps": f_on / 1e6, "on_vs_off": f_on / max(f_off, f_off2)}


def tso_superframe(payload: int = 65536 - 14 - 20 - 32, mss: int = 1398) -> tuple[bytes, bytes]:
    """A TSO super-frame as a container's TCP hands it to a TAP with TUNSETOFFLOAD: IPv4,
    TCP with the timestamp option, ~64 KB of payload, and its virtio_net_hdr (GSO_TCPV4)."""
    from dataplane import offload

    opts = b"\x01\x01\x08\x0a" + struct.pack("!II", 123456, 654321)
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1_000_000, 7, (32 // 4) << 4, 0x18, 502,
                      0, 0) + opts
    body = bytes((i * 7) & 0xFF for i in range(payload))
    ip = wire.ipv4_header(IPv4Address("192.168.55.4"), IPv4Address("192.168.55.3"),
                          len(tcp) + payload, proto=6)
    frame = MAC_B + MAC_A + b"\x08\x00" + ip + tcp + body
    hdr = offload.VnetHdr(flags=offload.F_NEEDS_CSUM, gso_type=offload.GSO_TCPV4,
                          hdr_len=66, gso_size=mss, csum_start=34, csum_offset=16).pack()
    return hdr, frame


def bench_offload(t: Any, seconds: float) -> dict[str, Any]:
    """Per super-frame: C tso_segment / coalescing decisions vs the Python reference."""
    from dataplane import offload

    hdr, frame = tso_superframe()
    segs = offload.segment(hdr, frame)
    if t.offload_segment(hdr, frame) != segs:
        raise SystemExit("bench_fastpath: C and Python TSO segmentation disagree")
    if t.offload_coalesce(segs) != offload.coalesce(segs):
        raise SystemExit("bench_fastpath: C and Python coalescing disagree")
    payload = len(frame) - 66

    def py_tso(n: int) -> None:
        for _ in range(n):
            offload.segment(hdr, frame)

    def py_gro(n: int) -> None:
        for _ in range(n):
            offload.coalesce(segs)

    c_tso = rate(lambda n: t.bench_tso(hdr, frame, n), seconds, 1000)
    c_gro = rate(lambda n: t.bench_coalesce(segs, n), seconds, 1000)
    p_tso = rate(py_tso, seconds, 10)
    p_gro = rate(py_gro, seconds, 10)
    return {"superframe_bytes": len(frame), "segments": len(segs), "mss": 1398,
            "tso_per_s": c_tso, "tso_gbps": c_tso * payload * 8 / 1e9,
            "python_tso_per_s": p_tso, "tso_vs_python": c_tso / p_tso,
            "coalesce_per_s": c_gro, "coalesce_gbps": c_gro * payload * 8 / 1e9,
            "python_coalesce_per_s": p_gro, "coalesce_vs_python": c_gro / p_gro}


def bench_fdb(t: Any, lookups: int) -> dict[str, Any]:
    small = t.bench_fdb_lookup(100, lookups)
    big = t.bench_fdb_lookup(1_000_000, lookups)
    # Uniformly random keys over 1M entries are a DRAM-latency test (the table is ~64 MiB);
    # real traffic has a hot set. Both are reported, plus the burst-style prefetched probe.
    hot = t.bench_fdb_lookup(1_000_000, lookups, working_set=10_000)
    big_pf = t.bench_fdb_lookup(1_000_000, lookups, batch=16)
    # Python baseline: the reference's dict-backed table, same random lookups (fewer of them).
    fdb = Fdb(VNI)
    macs = [os.urandom(6) for _ in range(100_000)]
    for m in macs:
        fdb._entries[m] = FdbEntry(m, "learned", 0)
    t0 = time.perf_counter()
    for m in macs:
        fdb.lookup(m)
    py_ns = (time.perf_counter() - t0) / len(macs) * 1e9
    return {
        "lookups_per_s_100": 1e9 / small["ns_per_lookup"],
        "lookups_per_s_1m": 1e9 / big["ns_per_lookup"],
        "ns_per_lookup_100": small["ns_per_lookup"],
        "ns_per_lookup_1m": big["ns_per_lookup"],
        "slowdown_1m_vs_100": big["ns_per_lookup"] / small["ns_per_lookup"],
        "ns_per_lookup_1m_hot10k": hot["ns_per_lookup"],
        "slowdown_1m_hot10k_vs_100": hot["ns_per_lookup"] / small["ns_per_lookup"],
        "ns_per_lookup_1m_prefetch16": big_pf["ns_per_lookup"],
        "bytes_per_entry_1m": big["bytes_per_entry"],
        "python_ns_per_lookup_100k": py_ns,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_fastpath",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement (1.0)")
    ap.add_argument("--lookups", type=int, default=5_000_000, help="FDB lookups per table size")
    args = ap.parse_args(argv)
    try:
        from _fastpath import core as c
        from _fastpath import testing
    except ImportError as e:
        print(f"bench_fastpath: the fast path is not built ({e}); run 'make build'",
              file=sys.stderr)
        return 1
    results = [r for size in SIZES for r in bench_size(c, testing, size, args.seconds)]
    doc = {"results": results, "fdb": bench_fdb(testing, args.lookups),
           "trace": bench_trace(c, testing, args.seconds),
           "offload": bench_offload(testing, args.seconds),
           "machine": {"cpu": platform.processor() or platform.machine(),
                       "python": platform.python_version(), "cores": os.cpu_count()},
           "command": "python -m benchmarks.bench_fastpath " + " ".join(argv or sys.argv[1:])}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{'dir':6} {'bytes':>5} {'fastpath Mpps':>14} {'python Mpps':>12} {'scapy kpps':>11}"
          f" {'x python':>9} {'x scapy':>9} {'Gbit/s':>7}")
    for r in results:
        print(f"{r['direction']:6} {r['frame_bytes']:5d} {r['fastpath_mpps']:14.2f}"
              f" {r['python_mpps']:12.4f} {r['scapy_kpps']:11.2f} {r['fastpath_vs_python']:9.1f}"
              f" {r['fastpath_vs_scapy']:9.0f} {r['fastpath_gbps_inner']:7.1f}")
    t = doc["trace"]
    print(f"\ntrace (64-byte encap): off {t['trace_off_mpps']:.2f} Mpps, on (drained) "
          f"{t['trace_on_mpps']:.2f} Mpps ({t['on_vs_off']:.2f}x)")
    o = doc["offload"]
    print(f"\noffload, per {o['superframe_bytes']}-byte TSO super-frame ({o['segments']} segments):"
          f" TSO {o['tso_per_s'] / 1e3:.1f} k/s ({o['tso_gbps']:.1f} Gbit/s of payload, "
          f"{o['tso_vs_python']:.0f}x Python {o['python_tso_per_s']:.0f}/s); coalescing "
          f"{o['coalesce_per_s'] / 1e3:.1f} k/s ({o['coalesce_gbps']:.1f} Gbit/s, "
          f"{o['coalesce_vs_python']:.0f}x Python {o['python_coalesce_per_s']:.0f}/s)")
    f = doc["fdb"]
    print(f"\nFDB lookups: {f['lookups_per_s_100'] / 1e6:.1f} M/s with 100 entries, "
          f"{f['lookups_per_s_1m'] / 1e6:.1f} M/s with 1,000,000 "
          f"({f['slowdown_1m_vs_100']:.2f}x slower; hot set of 10k: "
          f"{f['slowdown_1m_hot10k_vs_100']:.2f}x; prefetched bursts of 16: "
          f"{f['ns_per_lookup_1m_prefetch16']:.0f} ns); {f['bytes_per_entry_1m']:.1f} bytes/entry; "
          f"Python dict reference {f['python_ns_per_lookup_100k']:.0f} ns/lookup")
    return 0


if __name__ == "__main__":
    sys.exit(main())
