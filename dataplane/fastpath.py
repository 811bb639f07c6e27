"""The one importer of the compiled fast path (DESIGN.md §6: private compiled code, public Python).

``Switch`` is the forwarding core the VTEP uses: the Cython one from ``_fastpath.core`` when it
imports, or the pure-Python reference when it does not, or when ``VXDP_NO_EXTENSIONS=1`` asks
for the reference explicitly. Both forward alike (the differential tests hold them to it) and
both offer the same *burst interface* to the VTEP's wiring, so ``dataplane.vtep`` never asks
which one it has:

=======================  =================================================================
``set_port_fd``          the TAP fd of a port (and its virtio_net_hdr length)
``set_tx_socket``        a family's socket outer datagrams leave on (raw, or UDP as fallback)
``rx_tap_burst``         read a TAP until EAGAIN or ``burst`` frames, forward, transmit
``rx_udp_burst``         the same for the underlay socket
``gone_ports``           ports whose TAP went away under us (the VTEP removes them)
``tap_ready`` ...        the event loop's readiness callbacks: a burst at the current time,
                         then busy polling (``BUSY_POLL``), then Python's hook only when it
                         has work (``set_readiness``)
``set_offload`` ...      TSO/GSO/GRO (``OFFLOADS`` says which the core can use)
``io_counters``          write/send failures and drops, which the I/O-free core cannot see
=======================  =================================================================

:class:`PyBurstSwitch` is that interface over the reference: readable and slow (one Python
call per frame), the same decisions; no offloads, no busy polling.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from dataplane import offload
from dataplane import switch as _reference
from dataplane.errors import EntryNotFound, InvalidArgument
from dataplane.tunnel import Outer
from dataplane.underlay import socket_kind
from dataplane.validate import IPAddress, Locals, ipaddr
from dataplane.wire import VXLAN_PORT, outer_datagram, reserved_bits_set

IMPLEMENTATIONS = ("py", "c")

#: errno values meaning the TAP device is gone (the C core's port_fd_gone()).
FD_GONE = frozenset({errno.EBADF, errno.EBADFD, errno.ENODEV, errno.ENXIO})
#: errno values of a full queue or buffer: a drop, not an error.
FULL = frozenset({errno.EAGAIN, errno.ENOBUFS})
READ_SIZE = 65536
CMSG_ROOM = socket.CMSG_SPACE(4)      # the outer TOS / traffic class of a datagram
_TOS_CMSGS = {(socket.IPPROTO_IP, socket.IP_TOS), (socket.IPPROTO_IPV6, socket.IPV6_TCLASS)}


class PyBurstSwitch(_reference.Switch):
    """The reference core behind the burst interface of ``_fastpath.core.Switch``."""

    OFFLOADS: frozenset[str] = frozenset()
    BUSY_POLL = False

    def __init__(self, local: IPAddress | str | Locals | list[IPAddress | str], *,
                 burst: int = 64, dstport: int = VXLAN_PORT, **kwargs: Any) -> None:
        super().__init__(local, dstport=dstport, **kwargs)
        self.burst = burst
        self.events_lost = 0
        self._fds: dict[int, int] = {}
        self._gone: list[int] = []
        self._tx: dict[int, tuple[socket.socket, bool]] = {}    # family -> (socket, raw?)
        self._rx: dict[int, socket.socket] = {}
        self._port_io: dict[int, dict[str, int]] = {}
        self._ul_io = {"rx_errors": 0, "tx_errors": 0, "tx_dropped": 0}
        self._rx_counters = dict.fromkeys(offload.RX_VERDICTS, 0)
        self._offc = {"rx_superframes": 0, "rx_superframe_segments": 0}
        self._hook: Callable[[], object] | None = None

    # -- registration -------------------------------------------------------------------------

    def set_port_fd(self, port: int, fd: int, vnet_hdr_len: int = 0) -> None:
        if port not in self._port_vni:
            raise EntryNotFound(f"no port {port}")
        if vnet_hdr_len:
            raise InvalidArgument("the pure-Python core reads plain frames: no vnet header")
        if fd < 0:
            self._fds.pop(port, None)
        else:
            self._fds[port] = fd
        self._port_io.setdefault(port, {"tx_errors": 0, "tx_dropped": 0})

    def del_port(self, port: int) -> None:
        super().del_port(port)
        self._fds.pop(port, None)
        self._port_io.pop(port, None)

    def set_tx_socket(self, fd: int, *, family: int | None = None) -> None:
        """A raw IPPROTO_RAW socket gets the whole outer IPv4/IPv6 datagram, a UDP socket the
        VXLAN payload (its bound port is then the source port); one per address family. The
        fd stays the caller's: we keep a duplicate. -1 unregisters ``family``'s."""
        if fd >= 0:
            family, raw = socket_kind(fd)
        elif family not in (4, 6):
            raise InvalidArgument("unregistering a tx socket needs its family (4 or 6)")
        if self.locals.of(family) is None:  # type: ignore[arg-type]
            raise InvalidArgument(f"an IPv{family} socket, and this VTEP has no IPv{family} "
                                  f"underlay address")
        old = self._tx.pop(family, None)  # type: ignore[arg-type]
        if old is not None:
            old[0].close()
        if fd >= 0:
            self._tx[family] = (socket.socket(fileno=os.dup(fd)), raw)  # type: ignore[index]

    def gone_ports(self) -> list[int]:
        gone, self._gone = self._gone, []
        return gone

    # -- bursts -------------------------------------------------------------------------------

    def rx_tap_burst(self, port: int, fd: int, now: float) -> int:
        n = 0
        while n < self.burst:
            try:
                frame = os.read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in FD_GONE and port in self._fds:
                    self._fds.pop(port)
                    self._gone.append(port)
                break
            if not frame:
                break
            n += 1
            self._transmit(self.from_port(port, frame, now))
        return n

    def rx_udp_burst(self, sock_fd: int, now: float) -> int:
        sock = self._rx.get(sock_fd)
        if sock is None:
            sock = self._rx[sock_fd] = socket.socket(fileno=os.dup(sock_fd))
        n = 0
        while n < self.burst:
            try:
                data, anc, _flags, addr = sock.recvmsg(READ_SIZE, CMSG_ROOM)
                src = addr[0]
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError:
                self._ul_io["rx_errors"] += 1
                break
            n += 1
            # IP_TOS carries one byte, IPV6_TCLASS a native int
            tos = next((d[0] if len(d) < 4 else struct.unpack("i", d[:4])[0] & 0xFF
                        for lvl, typ, d in anc if (lvl, typ) in _TOS_CMSGS and d), 0)
            for datagram, note in self._receive(src, data):
                self._transmit(self.from_underlay(src, datagram, now, tos=tos, note=note))
        return n

    def _receive(self, src: str, data: bytes) -> list[tuple[bytes, str]]:
        """``offload.receive()`` in front of the core, as the C path's rx step: a partial
        inner checksum completed, a TCP super-frame cut to the network's MTU — for datagrams
        the core will look at past its header checks (it checks and counts them again)."""
        net = self._networks.get(int.from_bytes(data[4:7], "big")) if len(data) >= 22 else None
        if (net is None or not data[0] & 0x08 or (self.strict and reserved_bits_set(data))
                or (self.allow and not any(ipaddr(src) in a for a in self.allow))):
            return [(data, "")]
        frames, verdict = offload.receive(data[8:], net.mtu)
        self._rx_counters[verdict] += 1
        note = "csum_partial" if verdict == "partial" else ""
        if len(frames) > 1:
            self._offc["rx_superframes"] += 1
            self._offc["rx_superframe_segments"] += len(frames)
            note = "segmented"
        return [(data[:8] + f, note) for f in frames]

    def _transmit(self, actions: list[_reference.Action]) -> None:
        for a in actions:
            if a[0] == "port":
                self._to_tap(cast(int, a[1]), cast(bytes, a[2]))
            else:
                vtep = cast(tuple[str, IPAddress, int, bytes, Any], a)
                self._to_underlay(vtep[1], vtep[2], vtep[3], vtep[4])

    def _to_tap(self, port: int, frame: bytes) -> None:
        io = self._port_io.setdefault(port, {"tx_errors": 0, "tx_dropped": 0})
        fd = self._fds.get(port)
        if fd is None:
            io["tx_dropped"] += 1
            return
        try:
            os.write(fd, frame)
        except OSError as e:
            if e.errno in FULL:
                io["tx_dropped"] += 1
                return
            io["tx_errors"] += 1
            if e.errno in FD_GONE:
                self._fds.pop(port, None)
                self._gone.append(port)

    def _to_underlay(self, dst: IPAddress, sport: int, payload: bytes, outer: Outer) -> None:
        tx = self._tx.get(dst.version)
        local = self.locals.of(dst.version)
        if tx is None or local is None:
            self._ul_io["tx_dropped"] += 1
            return
        sock, raw = tx
        dport = outer.dport or self.dstport
        try:
            if raw:
                sock.sendto(outer_datagram(local, dst, sport, payload, dport, ttl=outer.ttl,
                                           tos=outer.tos, df=outer.df, label=outer.label),
                            (str(dst), 0))
            elif dst.version == 6:
                sock.sendmsg([payload], [
                    (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, struct.pack("i", outer.tos)),
                    (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, struct.pack("i", outer.ttl))],
                    0, (str(dst), dport))
            else:
                sock.sendmsg([payload], [
                    (socket.IPPROTO_IP, socket.IP_TOS, struct.pack("i", outer.tos)),
                    (socket.IPPROTO_IP, socket.IP_TTL, struct.pack("i", outer.ttl))],
                    0, (str(dst), dport))
        except OSError as e:
            self._ul_io["tx_dropped" if e.errno in FULL else "tx_errors"] += 1

    # -- what the compiled core has and this one does not -----------------------------------

    def set_readiness(self, hook: Callable[[], object] | None, *, busy_poll: float = 0.0,
                      busy_limit: float = 0.002, sock_fds: Sequence[int] = ()) -> None:
        """The compiled core's readiness path; here the hook runs after every burst and
        there is no busy polling (``BUSY_POLL`` is False)."""
        self._hook = hook

    def tap_ready(self, port: int, fd: int) -> None:
        self.rx_tap_burst(port, fd, time.monotonic())
        if self._hook is not None:
            self._hook()

    def udp_ready(self, fd: int) -> None:
        self.rx_udp_burst(fd, time.monotonic())
        if self._hook is not None:
            self._hook()

    def set_offload(self, *, udp_gso: bool = False, udp_gro: bool = False,
                    tap_coalesce: bool = False) -> None:
        if udp_gso or udp_gro or tap_coalesce:
            raise InvalidArgument("the pure-Python core has no offloads")

    def offload_state(self) -> dict[str, bool]:
        return {"udp_gso": False, "udp_gro": False, "tap_coalesce": False}

    def offload_counters(self) -> dict[str, int]:
        """The rx step's counters (the only offload work this core does)."""
        return {"csum_bad": self._rx_counters["bad"],
                "csum_partial_rx": self._rx_counters["partial"], **self._offc}

    def offload_gc(self) -> None:
        pass

    def io_counters(self) -> dict[str, Any]:
        return {"events_lost": self.events_lost, "underlay": dict(self._ul_io),
                "ports": {p: dict(io) for p, io in self._port_io.items()
                          if p in self._port_vni}}

    def close(self) -> None:
        """Close the duplicated sockets (the originals stay the caller's)."""
        for s in [*(t[0] for t in self._tx.values()), *self._rx.values()]:
            s.close()
        self._tx.clear()
        self._rx.clear()


def _load_c() -> Any:
    from _fastpath import core  # noqa: PLC0415 - optional compiled module

    return core


def implementation(name: str) -> Any:
    """Return the module for implementation ``name`` ("py" or "c"); raises ImportError for "c"
    when the extension is not built."""
    if name == "py":
        return _reference
    if name == "c":
        return _load_c()
    raise ValueError(f"unknown implementation {name!r} (expected one of {IMPLEMENTATIONS})")


def _select() -> tuple[str, Any]:
    if os.environ.get("VXDP_NO_EXTENSIONS", "") not in ("", "0"):
        return "py", PyBurstSwitch
    try:
        return "c", _load_c().Switch
    except ImportError:
        return "py", PyBurstSwitch


NAME, Switch = _select()
