"""The one importer of the compiled fast path (DESIGN.md §6: private compiled code, public Python).

``Switch`` is the forwarding core the VTEP uses: the Cython one from ``_fastpath.core`` when it
imports, or the pure-Python reference when it does not, or when ``VXDP_NO_EXTENSIONS=1`` asks
for the reference explicitly. Both forward alike (the differential tests hold them to it) and
both offer the same *burst interface* to the VTEP's wiring, so ``dataplane.vtep`` never asks
which one it has:

=======================  =================================================================
``set_port_fd``          the TAP fd of a port (and its virtio_net_hdr length)
``set_tx_socket``        the socket outer datagrams leave on (raw IPv4, or UDP as fallback)
``rx_tap_burst``         read a TAP until EAGAIN or ``burst`` frames, forward, transmit
``rx_udp_burst``         the same for the underlay socket
``gone_ports``           ports whose TAP went away under us (the VTEP removes them)
``busy_poll``            keep polling for a while after a burst (``BUSY_POLL``)
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
from ipaddress import IPv4Address
from typing import Any

from dataplane import offload
from dataplane import switch as _reference
from dataplane.errors import EntryNotFound, InvalidArgument
from dataplane.tunnel import Outer
from dataplane.wire import VXLAN_PORT, outer_datagram, reserved_bits_set

IMPLEMENTATIONS = ("py", "c")

#: errno values meaning the TAP device is gone (the C core's port_fd_gone()).
FD_GONE = frozenset({errno.EBADF, errno.EBADFD, errno.ENODEV, errno.ENXIO})
#: errno values of a full queue or buffer: a drop, not an error.
FULL = frozenset({errno.EAGAIN, errno.ENOBUFS})
READ_SIZE = 65536
CMSG_ROOM = socket.CMSG_SPACE(4)      # the outer TOS of a datagram (IP_RECVTOS)


class PyBurstSwitch(_reference.Switch):
    """The reference core behind the burst interface of ``_fastpath.core.Switch``."""

    OFFLOADS: frozenset[str] = frozenset()
    BUSY_POLL = False

    def __init__(self, local: IPv4Address | str, *, burst: int = 64,
                 dstport: int = VXLAN_PORT, **kwargs: Any) -> None:
        super().__init__(local, dstport=dstport, **kwargs)
        self.burst = burst
        self.events_lost = 0
        self._fds: dict[int, int] = {}
        self._gone: list[int] = []
        self._tx: socket.socket | None = None
        self._tx_raw = False
        self._rx: dict[int, socket.socket] = {}
        self._port_io: dict[int, dict[str, int]] = {}
        self._ul_io = {"rx_errors": 0, "tx_errors": 0, "tx_dropped": 0}
        self._rx_counters = dict.fromkeys(offload.RX_VERDICTS, 0)
        self._offc = {"rx_superframes": 0, "rx_superframe_segments": 0}

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

    def set_tx_socket(self, fd: int) -> None:
        """A raw IPPROTO_RAW socket gets the whole outer IPv4 datagram, a UDP socket the VXLAN
        payload (its bound port is then the source port). The fd stays the caller's: we keep
        a duplicate."""
        if self._tx is not None:
            self._tx.close()
            self._tx = None
        if fd >= 0:
            self._tx = socket.fromfd(fd, socket.AF_INET, socket.SOCK_DGRAM)
            self._tx_raw = self._tx.getsockopt(socket.SOL_SOCKET,
                                               socket.SO_TYPE) == socket.SOCK_RAW

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
            sock = self._rx[sock_fd] = socket.fromfd(sock_fd, socket.AF_INET,
                                                     socket.SOCK_DGRAM)
        n = 0
        while n < self.burst:
            try:
                data, anc, _flags, (src, _sport) = sock.recvmsg(READ_SIZE, CMSG_ROOM)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError:
                self._ul_io["rx_errors"] += 1
                break
            n += 1
            tos = next((d[0] for lvl, typ, d in anc
                        if lvl == socket.IPPROTO_IP and typ == socket.IP_TOS and d), 0)
            for datagram, note in self._receive(src, data):
                self._transmit(self.from_underlay(src, datagram, now, tos=tos, note=note))
        return n

    def _receive(self, src: str, data: bytes) -> list[tuple[bytes, str]]:
        """``offload.receive()`` in front of the core, as the C path's rx step: a partial
        inner checksum completed, a TCP super-frame cut to the network's MTU — for datagrams
        the core will look at past its header checks (it checks and counts them again)."""
        net = self._networks.get(int.from_bytes(data[4:7], "big")) if len(data) >= 22 else None
        if (net is None or not data[0] & 0x08 or (self.strict and reserved_bits_set(data))
                or (self.allow and not any(IPv4Address(src) in a for a in self.allow))):
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
                self._to_tap(a[1], a[2])
            else:
                self._to_underlay(a[1], a[2], a[3], a[4])

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

    def _to_underlay(self, dst: Any, sport: int, payload: bytes, outer: Outer) -> None:
        if self._tx is None:
            self._ul_io["tx_dropped"] += 1
            return
        dport = outer.dport or self.dstport
        try:
            if self._tx_raw:
                self._tx.sendto(outer_datagram(self.local, dst, sport, payload, dport,
                                               ttl=outer.ttl, tos=outer.tos, df=outer.df),
                                (str(dst), 0))
            else:
                self._tx.sendmsg([payload], [
                    (socket.IPPROTO_IP, socket.IP_TOS, struct.pack("i", outer.tos)),
                    (socket.IPPROTO_IP, socket.IP_TTL, struct.pack("i", outer.ttl))],
                    0, (str(dst), dport))
        except OSError as e:
            self._ul_io["tx_dropped" if e.errno in FULL else "tx_errors"] += 1

    # -- what the compiled core has and this one does not -----------------------------------

    def busy_poll(self, sock_fd: int, idle: float, limit: float) -> int:
        return 0

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
        for s in [self._tx, *self._rx.values()]:
            if s is not None:
                s.close()
        self._tx = None
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
