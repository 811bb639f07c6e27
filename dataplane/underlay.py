"""The underlay sockets of one VTEP.

Receive: one UDP socket bound to ``local:port`` (4789), like the kernel's vxlan socket. Its
kernel-side UDP state is what makes a peer's datagrams arrive here (and not bounce with ICMP
port unreachable).

Transmit: a raw ``IPPROTO_RAW`` socket (``IP_HDRINCL`` implied) carrying outer IPv4 + UDP
headers that vxdp builds itself. A plain UDP socket can only send from its bound port, while
RFC 7348 §5 asks for a source port derived from the inner flow so that ECMP in the underlay
spreads flows, which is what the kernel's vxlan does (``udp_flow_src_port``). An
``IPPROTO_RAW`` socket never receives, so it costs nothing on the receive side. Without
CAP_NET_RAW, vxdp falls back to sending from the UDP socket (source port fixed at ``port``) and
says so in ``stats``.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from dataplane.errors import VxdpError
from dataplane.wire import outer_datagram

SOCKET_BUFFER = 8 * 1024 * 1024   # absorbs bursts while the loop is busy elsewhere


def _set_buffer(sock: socket.socket, force_opt: int, opt: int, size: int) -> None:
    """Big buffers: SO_*BUFFORCE as root ignores net.core.*mem_max; plain as a fallback."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_opt, size)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
        except OSError:
            pass


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


@dataclass
class Underlay:
    local: IPv4Address
    port: int
    rx: socket.socket = field(init=False)
    tx: socket.socket | None = field(init=False, default=None)
    flow_src_ports: bool = field(init=False, default=False)

    def open(self) -> None:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rx.bind((str(self.local), self.port))
        except OSError as e:
            rx.close()
            if e.errno == errno.EADDRNOTAVAIL:
                raise VxdpError(f"cannot bind {self.local}:{self.port}: the address is not "
                                f"configured in this network namespace ([vtep] local)") from None
            if e.errno == errno.EADDRINUSE:
                raise VxdpError(f"cannot bind {self.local}:{self.port}: the port is in use "
                                f"(another vxdp, or a kernel vxlan device on this port?)") from None
            if e.errno == errno.EACCES:
                raise VxdpError(f"cannot bind {self.local}:{self.port}: permission denied") from None
            raise VxdpError(f"cannot bind {self.local}:{self.port}: {e.strerror}") from None
        rx.setblocking(False)
        _set_buffer(rx, SO_RCVBUFFORCE, socket.SO_RCVBUF, SOCKET_BUFFER)
        _set_buffer(rx, SO_SNDBUFFORCE, socket.SO_SNDBUF, SOCKET_BUFFER)
        self.rx = rx
        try:
            tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except PermissionError:
            self.tx = None
            self.flow_src_ports = False
            return
        tx.setblocking(False)
        _set_buffer(tx, SO_SNDBUFFORCE, socket.SO_SNDBUF, SOCKET_BUFFER)
        self.tx = tx
        self.flow_src_ports = True

    def close(self) -> None:
        for s in (getattr(self, "rx", None), self.tx):
            if s is not None:
                s.close()

    def send(self, dst: IPv4Address, sport: int, payload: bytes, dport: int) -> bool:
        """Per-datagram send for the pure-Python path; the fast path uses sendmmsg in C.
        Returns False when the kernel refused it (buffer full, no route): counted by caller."""
        try:
            if self.tx is not None:
                self.tx.sendto(outer_datagram(self.local, dst, sport, payload, dport),
                               (str(dst), 0))
            else:
                self.rx.sendto(payload, (str(dst), dport))
        except OSError:
            return False
        return True
