"""The underlay sockets of one VTEP.

Per address family of ``[vtep] local`` (IPv4 and/or IPv6), two sockets.

Receive: one UDP socket bound to ``local:port`` (4789), like the kernel's vxlan socket. Its
kernel-side UDP state is what makes a peer's datagrams arrive here (and not bounce with ICMP
port unreachable). The IPv6 one is IPV6_V6ONLY and, like the kernel's, drops datagrams with a
zero UDP checksum unless ``udp6zerocsumrx`` says otherwise.

Transmit: a raw ``IPPROTO_RAW`` socket (header included) carrying outer IPv4 or IPv6 + UDP
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
import os
import socket
from dataclasses import dataclass, field

from dataplane.errors import VxdpError
from dataplane.validate import IPAddress, Locals

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


def socket_kind(fd: int) -> tuple[int, bool]:
    """(address family 4 or 6, raw?) of the socket ``fd``: SO_DOMAIN and SO_TYPE of a
    duplicate, the fd itself untouched."""
    dup = socket.socket(fileno=os.dup(fd))
    try:
        domain = dup.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        kind = dup.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    finally:
        dup.close()
    return (6 if domain == socket.AF_INET6 else 4), kind == socket.SOCK_RAW


SOL_IPV6 = socket.IPPROTO_IPV6
UDP_NO_CHECK6_RX = 102        # <linux/udp.h>: accept IPv6 UDP with a zero checksum


def _bind_error(local: IPAddress, port: int, e: OSError) -> VxdpError:
    where = f"[{local}]:{port}" if local.version == 6 else f"{local}:{port}"
    if e.errno == errno.EADDRNOTAVAIL:
        return VxdpError(f"cannot bind {where}: the address is not configured in this network "
                         f"namespace ([vtep] local)" + (" or is still tentative (IPv6 "
                                                        "duplicate address detection)"
                                                        if local.version == 6 else ""))
    if e.errno == errno.EADDRINUSE:
        return VxdpError(f"cannot bind {where}: the port is in use (another vxdp, or a kernel "
                         f"vxlan device on this port?)")
    if e.errno == errno.EACCES:
        return VxdpError(f"cannot bind {where}: permission denied")
    return VxdpError(f"cannot bind {where}: {e.strerror}")


@dataclass
class Underlay:
    """The underlay sockets of a VTEP: per address family of ``local`` (IPv4, IPv6) one UDP
    socket bound to ``[local]:port`` that receives, and one raw socket that sends."""

    local: Locals
    port: int
    udp6zerocsumrx: bool = False    # IPv6 VXLAN with a zero UDP checksum is accepted
    rx: dict[int, socket.socket] = field(init=False, default_factory=dict)     # by family
    tx: dict[int, socket.socket | None] = field(init=False, default_factory=dict)
    flow_src_ports: bool = field(init=False, default=False)
    udp_gro: bool = field(init=False, default=False)   # UDP_GRO is on for ``rx``
    udp_gso: bool = field(init=False, default=False)   # the kernel takes UDP_SEGMENT

    @property
    def families(self) -> list[int]:
        return [a.version for a in self.local if a is not None]

    def open(self, *, gro: bool = False, gso: bool = False) -> None:
        """Bind the receive sockets, open the raw transmit sockets; with ``gro``/``gso`` probe
        (and for GRO enable) those offloads. Only the C path may ask for ``gro``."""
        try:
            for fam in self.families:
                self._open(fam)
        except BaseException:
            self.close()
            raise
        if gro:
            # one setting for the VTEP: GRO on every receive socket, or on none (a reader
            # that does not split would take a glued buffer for one datagram)
            self.udp_gro = all([enable_udp_gro(rx) for rx in self.rx.values()])
            if not self.udp_gro:
                for rx in self.rx.values():
                    try:
                        rx.setsockopt(SOL_UDP, UDP_GRO, 0)
                    except OSError:
                        pass
        self.udp_gso = probe_udp_gso() if gso else False

    def _open(self, fam: int) -> None:
        local = self.local.of(fam)
        assert local is not None
        af = socket.AF_INET6 if fam == 6 else socket.AF_INET
        rx = socket.socket(af, socket.SOCK_DGRAM)
        try:
            if fam == 6:
                # one socket per family: the IPv4 one has IPv4 (never IPv4-mapped IPv6)
                rx.setsockopt(SOL_IPV6, socket.IPV6_V6ONLY, 1)
                if self.udp6zerocsumrx:
                    # __udp6_lib_rcv drops a zero checksum unless told (the kernel's vxlan
                    # `udp6zerocsumrx`, RFC 6935/6936)
                    rx.setsockopt(SOL_UDP, UDP_NO_CHECK6_RX, 1)
            rx.bind((str(local), self.port))
        except OSError as e:
            rx.close()
            raise _bind_error(local, self.port, e) from None
        rx.setblocking(False)
        # The outer TOS / traffic class of every datagram (a control message each): RFC 6040
        # decapsulation needs its ECN bits, as the kernel's vxlan_rcv reads them.
        if fam == 6:
            rx.setsockopt(SOL_IPV6, socket.IPV6_RECVTCLASS, 1)
        else:
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        _set_buffer(rx, SO_RCVBUFFORCE, socket.SO_RCVBUF, SOCKET_BUFFER)
        _set_buffer(rx, SO_SNDBUFFORCE, socket.SO_SNDBUF, SOCKET_BUFFER)
        self.rx[fam] = rx
        try:
            # IPPROTO_RAW: IP_HDRINCL implied (IPv4); for IPv6 the kernel sets hdrincl too
            # (inet6_create), so both take the whole datagram vxdp builds.
            tx = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except PermissionError:
            self.tx[fam] = None
            self.flow_src_ports = False
            return
        tx.setblocking(False)
        _set_buffer(tx, SO_SNDBUFFORCE, socket.SO_SNDBUF, SOCKET_BUFFER)
        self.tx[fam] = tx
        self.flow_src_ports = all(t is not None for t in self.tx.values())

    def tx_socket(self, fam: int) -> socket.socket:
        """What datagrams of family ``fam`` leave on: the raw socket, or without CAP_NET_RAW
        the receive socket itself (fixed source port, said in stats)."""
        return self.tx.get(fam) or self.rx[fam]

    def rx_fds(self) -> list[int]:
        return [s.fileno() for s in self.rx.values()]

    def close(self) -> None:
        for s in [*self.rx.values(), *self.tx.values()]:
            if s is not None:
                s.close()
        self.rx.clear()
        self.tx.clear()
