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

Offloads (the compiled path only; README "Offloads"), each probed here and recorded, never
fatal:

* ``udp_gro``: UDP_GRO on the receive socket. The kernel then glues consecutive datagrams of
  one flow into one buffer and reports the segment size in a UDP_GRO cmsg; only a reader that
  splits on that cmsg (the C ``rx_udp_burst``) may enable it -- a plain ``recvfrom`` would see
  several VXLAN datagrams as one.
* ``udp_gso``: UDP_SEGMENT (one sendmsg carries many equal-sized datagrams). The C fast path
  sends those from per-source-port UDP sockets it creates itself; here we only find out whether
  the kernel knows the option at all.
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

# <linux/udp.h>: setsockopt(SOL_UDP, ...) options (Linux >= 4.18 / 5.0).
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_PROBE_SIZE = 1400


def enable_udp_gro(sock: socket.socket) -> bool:
    """Turn UDP_GRO on for ``sock``; False when the kernel refuses (too old, no UDP)."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def probe_udp_gso() -> bool:
    """Does this kernel take UDP_SEGMENT? Tried on a throwaway UDP socket."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(SOL_UDP, UDP_SEGMENT, GSO_PROBE_SIZE)
    except OSError:
        return False
    return True


@dataclass
class Underlay:
    local: IPv4Address
    port: int
    rx: socket.socket = field(init=False)
    tx: socket.socket | None = field(init=False, default=None)
    flow_src_ports: bool = field(init=False, default=False)
    udp_gro: bool = field(init=False, default=False)   # UDP_GRO is on for ``rx``
    udp_gso: bool = field(init=False, default=False)   # the kernel takes UDP_SEGMENT

    def open(self, *, gro: bool = False, gso: bool = False) -> None:
        """Bind the receive socket, open the raw transmit socket; with ``gro``/``gso`` probe
        (and for GRO enable) those offloads. Only the C path may ask for ``gro``."""
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
        # The outer TOS of every datagram (a control message each): RFC 6040 decapsulation
        # needs its ECN bits, as the kernel's vxlan_rcv reads them from the outer header.
        rx.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        _set_buffer(rx, SO_RCVBUFFORCE, socket.SO_RCVBUF, SOCKET_BUFFER)
        _set_buffer(rx, SO_SNDBUFFORCE, socket.SO_SNDBUF, SOCKET_BUFFER)
        self.rx = rx
        self.udp_gro = enable_udp_gro(rx) if gro else False
        self.udp_gso = probe_udp_gso() if gso else False
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
