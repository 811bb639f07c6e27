"""Type stubs for the compiled forwarding core ``_fastpath.core`` (see core.pyx).

``Switch`` has exactly the public API of ``dataplane.switch.Switch`` (same arguments, results,
exceptions), plus the burst interface below the marked line (``dataplane.fastpath`` gives the
pure-Python core the same). Test and benchmark hooks are in ``_fastpath/testing.pyi``.
"""

from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Any, Union

PortAction = tuple[str, int, bytes]
VtepAction = tuple[str, IPv4Address, int, bytes]
Action = Union[PortAction, VtepAction]
Event = tuple[str, int, str, str, str]
TraceRecord = tuple[float, str, int, int, bytes, str, tuple[tuple[object, ...], ...],
                    tuple[str, ...]]

MAX_VNI: int
PORT_COUNTERS: tuple[str, ...]
EVENTS_MAX: int
BURST_MAX: int
TRACE_RING: int
TRACE_SNAP: int

class Switch:
    local: Any
    src_port_range: tuple[int, int]
    strict: Any
    allow: tuple[IPv4Network, ...]

    def __init__(
        self,
        local: IPv4Address | str,
        *,
        src_port_range: tuple[int, int] = ...,
        strict: bool = True,
        allow: Sequence[IPv4Network | str] = (),
        burst: int = 64,
        dstport: int = 4789,
        events_max: int = 65536,
    ) -> None: ...

    # -- configuration (as dataplane.switch.Switch) ------------------------------------------
    def add_network(self, vni: int, *, mtu: int = 1450, proxy: bool = True,
                    learning: bool = False, ageing: float = 300.0,
                    maxaddress: int = 0) -> None: ...
    def del_network(self, vni: int) -> None: ...
    def add_port(self, port: int, vni: int, mac: str | bytes | None = None,
                 now: float = 0.0) -> None: ...
    def del_port(self, port: int) -> None: ...

    # -- tables -----------------------------------------------------------------------------
    def fdb_add(self, vni: int, mac: str | bytes, dst: IPv4Address | str,
                state: str = "permanent", now: float = 0.0) -> None: ...
    def fdb_append(self, vni: int, mac: str | bytes, dst: IPv4Address | str,
                   state: str = "permanent", now: float = 0.0) -> None: ...
    def fdb_replace(self, vni: int, mac: str | bytes, dst: IPv4Address | str,
                    state: str = "permanent", now: float = 0.0) -> None: ...
    def fdb_del(self, vni: int, mac: str | bytes,
                dst: IPv4Address | str | None = None) -> None: ...
    def fdb_flush(self, vni: int, keep_permanent: bool = True) -> int: ...
    def fdb_dump(self) -> list[dict[str, object]]: ...
    def neigh_add(self, vni: int, ip: IPv4Address | str, lladdr: str | bytes,
                  state: str = "permanent") -> None: ...
    def neigh_replace(self, vni: int, ip: IPv4Address | str, lladdr: str | bytes,
                      state: str = "permanent") -> None: ...
    def neigh_del(self, vni: int, ip: IPv4Address | str) -> None: ...
    def neigh_flush(self, vni: int) -> int: ...
    def neigh_dump(self) -> list[dict[str, object]]: ...

    # -- the underlay path (PMTU signalling) -------------------------------------------------
    def set_path_mtu(self, dst: IPv4Address | IPv6Address | str, mtu: int) -> None:
        """The route MTU to underlay destination ``dst`` (0 forgets it)."""
    def path_mtus(self) -> dict[IPv4Address | IPv6Address, int]: ...
    def remote_vteps(self) -> list[IPv4Address | IPv6Address]: ...

    # -- observability ----------------------------------------------------------------------
    def events(self) -> list[Event]: ...
    def counters(self) -> dict[str, object]: ...
    def age(self, now: float) -> int: ...

    # -- forwarding -------------------------------------------------------------------------
    def from_port(self, port: int, frame: bytes, now: float) -> list[Action]: ...
    def from_underlay(self, source: IPv4Address | str, datagram: bytes,
                      now: float) -> list[Action]: ...

    # -- trace (vxdp trace / capture), as the reference ------------------------------------
    trace_lost: int
    def set_trace(self, on: bool) -> None: ...
    @property
    def trace_on(self) -> bool: ...
    def trace_drain(self) -> list[TraceRecord]: ...

    # ---- burst interface (not in the reference) -------------------------------------------
    OFFLOADS: frozenset[str]
    BUSY_POLL: bool
    def close(self) -> None: ...
    @property
    def burst(self) -> int: ...
    @property
    def dstport(self) -> int: ...
    @property
    def events_lost(self) -> int:
        """Events dropped because the event ring (``events_max``) was full."""

    def io_counters(self) -> dict[str, Any]:
        """{"events_lost": n, "underlay": {"rx_errors", "tx_errors", "tx_dropped"},
        "ports": {port: {"tx_errors", "tx_dropped"}}} — burst I/O only."""

    # -- burst I/O --------------------------------------------------------------------------
    def set_port_fd(self, port: int, fd: int, vnet_hdr_len: int = 0) -> None:
        """vnet_hdr_len 10 or 12: the fd carries a virtio_net_hdr in front of every frame."""
    def set_tx_socket(self, fd: int) -> None:
        """A raw IPPROTO_RAW socket gets whole IPv4 datagrams; a UDP socket (fallback
        without CAP_NET_RAW) gets VXLAN payloads sent to dst:dstport."""
    def rx_tap_burst(self, port: int, fd: int, now: float) -> int: ...
    def rx_udp_burst(self, sock_fd: int, now: float) -> int: ...
    def gone_ports(self) -> list[int]: ...
    def busy_poll(self, sock_fd: int, idle: float, limit: float, sock_fd2: int = ...) -> int: ...
    def set_readiness(self, hook: Callable[[], object] | None, *, busy_poll: float = ...,
                      busy_limit: float = ..., sock_fds: Sequence[int] = ...) -> None: ...
    def tap_ready(self, port: int, fd: int) -> None: ...
    def udp_ready(self, fd: int) -> None: ...

    # -- offloads (dataplane/offload.py is the reference) -----------------------------------
    def set_offload(self, *, udp_gso: bool = False, udp_gro: bool = False,
                    tap_coalesce: bool = False) -> None: ...
    def offload_state(self) -> dict[str, bool]: ...
    def offload_counters(self) -> dict[str, int]: ...
    def offload_gc(self) -> None: ...


OFFLOAD_COUNTERS: tuple[str, ...]
VNET_ERRORS: tuple[str, ...]
