"""Type stubs for ``_fastpath.testing``: hooks into the compiled core for tests and benchmarks
(never imported by the product)."""

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from _fastpath.core import Action, Switch

def flow_hash(frame: bytes) -> int:
    """``dataplane.wire.flow_hash`` computed by the fast path's C code."""

def from_port_burst(sw: Switch, port: int, frames: Iterable[bytes], now: float, *,
                    outer: bool = False) -> list[Action]:
    """Several frames through the burst path; ``outer=True``: "vtep" actions carry the
    complete IPv4/IPv6 datagram instead of the UDP payload."""

def from_underlay_burst(sw: Switch,
                        datagrams: Iterable[tuple[IPv4Address | IPv6Address | str, bytes]],
                        now: float, *, outer: bool = False) -> list[Action]: ...
def build_outer(sw: Switch, dst: IPv4Address | IPv6Address | str, sport: int, payload: bytes,
                tos: int = 0, ttl: int = 64, df: bool = False, label: int = 0) -> bytes:
    """== dataplane.wire.outer_datagram(local, dst, sport, payload, dstport, ...)."""

def bench_port(sw: Switch, port: int, frame: bytes, count: int, now: float) -> int: ...
def bench_underlay(sw: Switch, source: IPv4Address | IPv6Address | str, datagram: bytes, count: int,
                   now: float) -> int: ...
def bench_fdb_lookup(n_entries: int, n_lookups: int, working_set: int = 0,
                     batch: int = 0) -> dict[str, float]:
    """{"ns_per_lookup", "lookups", "hits", "entries", "capacity", "bytes_per_entry"}"""

def fdb_bytes_per_entry(sw: Switch) -> int: ...
def fdb_stats(sw: Switch) -> dict[str, Any]: ...
def offload_segment(hdr: bytes, frame: bytes) -> list[bytes]: ...
def offload_segment_scatter(hdr: bytes, frame: bytes, hl: int,
                            g: int) -> tuple[list[bytes], bool]: ...
def offload_coalesce(frames: Iterable[bytes]) -> list[tuple[bytes, bytes]]: ...
def bench_tso(hdr: bytes, frame: bytes, count: int) -> float: ...
def bench_coalesce(frames: Iterable[bytes], count: int) -> float: ...
