"""TAP endpoints: a container's ``eth0`` whose other end is a file descriptor in the VTEP.

DESIGN.md §1 "endpoint": the VTEP opens a TAP (python-pytun), gives it the container's MAC and
MTU, moves it into the container's network namespace under its final name (``eth0``) with the
container's address, and keeps the fd. Reading the fd yields the frames the container transmits;
writing it delivers frames to the container. Docker's ``veth`` + ``br0`` collapse into this fd.

Kernel behaviour the VTEP must know (measured on Linux 6.x, see tests/functional/test_ports.py):

* The TAP is *not* persistent: closing the last fd unregisters the device at once (the close
  returns after the device is gone). The fd is opened O_CLOEXEC here so child processes
  (tcpdump, iperf3...) never inherit it and keep a "closed" port alive.
* Deleting the container's namespace (or ``ip link del eth0`` in it) unregisters the device while
  our fd stays open: ``read``/``write``/TUNGETIFF then fail with **EBADFD**, and poll/epoll report
  POLLERR (not POLLIN) -- epoll-based loops (asyncio, uvloop/libuv) still call the reader, whose
  read raises EBADFD. That is :data:`TAP_GONE_ERRNOS`: treat it as "port removed", close the fd.
* The container setting its ``eth0`` down is *not* removal: writes fail with **EIO** while the
  link is down, reads just return EAGAIN. Count those as drops.
* Namespace deletion is asynchronous in the kernel (cleanup_net runs in a workqueue), so EBADFD
  appears some milliseconds after ``ip netns del`` returns, not synchronously.
* A TAP offers no offloads by default (``ethtool -k``: checksumming and TSO off), so the
  container's stack finishes every checksum and segments to the MTU. ``TUNSETOFFLOAD`` (with
  ``IFF_VNET_HDR``) turns them on: reads then carry a virtio_net_hdr describing a partial
  checksum (F_NEEDS_CSUM) or a TCP super-frame (GSO_TCPV4/6, up to 64 KB), see
  :meth:`TapPort.create`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Sequence
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any, Union

import pytun
from pyroute2.netlink.exceptions import NetlinkError

from dataplane import netns as _netns
from dataplane.errors import PrivilegeError, VxdpError
from dataplane.validate import check_ifname

__all__ = ["TAP_GONE_ERRNOS", "TAP_DOWN_ERRNOS", "IFNAMSIZ", "VNET_HDR_LEN", "READ_SIZE",
           "TAP_OFFLOADS", "TapPort"]

#: errno values from read/write on a TAP fd meaning the device no longer exists (netns deleted,
#: link deleted): the kernel's tun_get() finds no device and returns -EBADFD.
TAP_GONE_ERRNOS: frozenset[int] = frozenset({errno.EBADFD})

#: errno values from *write* meaning the interface exists but is administratively down
#: (tun_get_user: "if (!(tun->dev->flags & IFF_UP)) return -EIO"). Not a removal.
TAP_DOWN_ERRNOS: frozenset[int] = frozenset({errno.EIO})

#: Linux interface names are at most IFNAMSIZ - 1 = 15 bytes.
IFNAMSIZ = 16

#: struct virtio_net_hdr_mrg_rxbuf: 12 bytes in front of every frame when vnet_hdr is on.
VNET_HDR_LEN = 12

#: A read buffer that holds any frame: a TSO super-frame is up to 65535 bytes of IP (+ 14
#: Ethernet, + 4 for a VLAN tag) behind the vnet header; a shorter buffer makes the read fail.
READ_SIZE = 65536 + 64

# <linux/if_tun.h>: _IOR('T', 210, unsigned int), _IOW('T', 216, int), _IOW('T', 208, unsigned int).
_TUNGETIFF = 0x800454D2
_TUNSETVNETHDRSZ = 0x400454D8
_TUNSETOFFLOAD = 0x400454D0
_TUNSETPERSIST = 0x400454CB        # _IOW('T', 203, int)
# TUNSETOFFLOAD bits: TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6.
_TUN_F: dict[str, int] = {"csum": 0x01, "tso4": 0x02, "tso6": 0x04}
#: What create(offload=True) asks for, best first. tun_set_offload() refuses TSO without CSUM
#: and any bit it does not know with EINVAL, so each step drops the newest feature.
_OFFLOAD_LADDER: tuple[frozenset[str], ...] = (
    frozenset({"csum", "tso4", "tso6"}), frozenset({"csum", "tso4"}), frozenset({"csum"}),
    frozenset())
#: Every name :attr:`TapPort.offloads` can hold.
TAP_OFFLOADS: frozenset[str] = _OFFLOAD_LADDER[0]
# python-pytun exposes IFF_VNET_HDR, but keep the literal as a fallback for older builds.
_IFF_VNET_HDR: int = getattr(pytun, "IFF_VNET_HDR", 0x4000)

# Namespaces create(create_netns=True) made, and how many ports of this process use each:
# the last port to close removes it (two endpoints may share one container namespace).
_made_lock = threading.Lock()
_made: dict[str, int] = {}


def _claim_netns(netns: str, create: bool) -> bool:
    """Make sure namespace ``netns`` is there before a port moves into it. True when this
    process made it (the port then shares its removal): it did not exist and ``create``
    says to make it. A namespace that does not exist otherwise is an error naming it —
    never created behind the user's back."""
    with _made_lock:
        if netns in _made:
            _made[netns] += 1
            return True
        if _netns.netns_exists(netns):
            return False
        if not create:
            raise VxdpError(f"netns {netns} does not exist (create it with `ip netns add "
                            f"{netns}`, or let vxdp create it: netns_create = true on the "
                            "endpoint, --netns-create for endpoint add)")
        _netns.create_netns(netns)
        _made[netns] = 1
        return True


def _release_netns(netns: str) -> None:
    """One port less in a namespace this process made; the last one removes it."""
    with _made_lock:
        left = _made.get(netns, 0) - 1
        if left > 0:
            _made[netns] = left
            return
        _made.pop(netns, None)
        _netns.delete_netns(netns)


def _check_ifname(name: str, what: str) -> None:
    """:func:`dataplane.validate.check_ifname`, as the VxdpError this module raises."""
    try:
        check_ifname(name)
    except ValueError as exc:
        raise VxdpError(f"{what}: {exc}") from None


def _nl_error(exc: NetlinkError, doing: str) -> VxdpError:
    code = exc.code if isinstance(exc.code, int) else 0
    if code in (errno.EPERM, errno.EACCES):
        return PrivilegeError(f"{doing}: needs root (CAP_NET_ADMIN)")
    return VxdpError(f"{doing}: {os.strerror(code) if code else exc}")


Iface = Union[IPv4Interface, IPv6Interface]


def _ifaces(address: Iface | Sequence[Iface] | None) -> tuple[Iface, ...]:
    """One address/prefix, several, or none, as a tuple."""
    if address is None:
        return ()
    if isinstance(address, (IPv4Interface, IPv6Interface)):
        return (address,)
    return tuple(address)


class TapPort:
    """One endpoint: a TAP device (maybe moved into a container netns) and its fd.

    Use :meth:`create`; the constructor only records state. ``close()`` closes the fd (the
    kernel deletes the device) and removes the namespace *only* if :meth:`create` made it
    (``create_netns``) and this is the last port in it; a namespace that already existed is
    never removed.
    """

    def __init__(self, *, name: str, dev: Any, mac: str, mtu: int,
                 address: Iface | Sequence[Iface] | None, netns: str | None, ifname: str,
                 ifindex: int, vnet_hdr: bool, created_netns: bool,
                 offloads: frozenset[str] = frozenset()) -> None:
        self.name = name                  # name the TAP was created with (host side)
        self._dev = dev                   # pytun.TunTapDevice, owns the fd
        self.fd: int = dev.fileno()
        self.mac = mac.lower()
        self.mtu = mtu
        self.addresses = _ifaces(address)
        self.address = self.addresses[0] if self.addresses else None
        self.netns = netns                # None: stays in the creator's namespace
        self.ifname = ifname              # final name (in ``netns`` if set)
        self.ifindex = ifindex            # in the final namespace
        self.vnet_hdr = vnet_hdr
        self.offloads = offloads          # what TUNSETOFFLOAD accepted ({"csum","tso4","tso6"})
        self.created_netns = created_netns
        self._closed = False

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, name: str, mac: str, mtu: int, address: Iface | Sequence[Iface] | None,
               netns: str | None = None, ifname: str | None = None, *,
               vnet_hdr: bool = False, offload: bool = False, ipv6: bool | None = None,
               create_netns: bool = False) -> TapPort:
        """Open TAP ``name``, set MAC/MTU, optionally move it into ``netns`` as ``ifname``.

        ``netns`` must exist (VxdpError naming it otherwise) unless ``create_netns``: then a
        missing one is created where the host sees it (:func:`dataplane.netns.create_netns`)
        and removed again when the last port in it closes.

        The device ends up up, with ``address`` (one address/prefix or several: dual stack;
        None for none); ``lo`` of ``netns`` is brought up too.
        The fd is non-blocking and close-on-exec. ``vnet_hdr`` adds IFF_VNET_HDR with a 12-byte
        header (every read/write then starts with a struct virtio_net_hdr).

        ``offload`` (needs ``vnet_hdr``) asks the kernel for checksum and TCP segmentation
        offload on the device (TUNSETOFFLOAD CSUM|TSO4|TSO6, falling back to fewer features on
        EINVAL); what it accepted is :attr:`offloads`. Reads may then carry TCP super-frames and
        partial checksums, described by the vnet header, which the reader must complete.

        ``ipv6=False`` sets ``disable_ipv6`` on the interface before it goes up, as Docker does
        for networks without IPv6: otherwise the kernel immediately emits router
        solicitations, MLD reports and DAD probes that show up as unexpected frames on the fd.
        ``ipv6=True`` turns IPv6 on on the interface whatever the namespace's default says:
        it gets its link-local address and runs DAD on its addresses as on any link. The
        default (None) is IPv6 on exactly when an address is IPv6.

        Raises PrivilegeError without root, VxdpError for a bad/in-use name or a failed netlink
        step (the half-built device and any namespace made here are removed again).
        """
        _check_ifname(name, "TAP name")
        if offload and not vnet_hdr:
            # Without the vnet header a super-frame or a partial checksum could not be told
            # apart from a finished frame.
            raise ValueError("TapPort.create: offload needs vnet_hdr")
        final = ifname or name
        _check_ifname(final, "interface name")
        if os.geteuid() != 0:
            raise PrivilegeError("creating TAP devices needs root (CAP_NET_ADMIN)")
        created_netns = False
        if netns is not None:
            _netns.netns_path(netns)  # validates the name before anything is created
            created_netns = _claim_netns(netns, create_netns)
        addresses = _ifaces(address)
        if ipv6 is None:
            ipv6 = any(a.version == 6 for a in addresses)
        try:
            return cls._create(name, mac, mtu, addresses, netns, final, vnet_hdr, offload,
                               ipv6, created_netns)
        except BaseException:
            if created_netns and netns is not None:
                _release_netns(netns)
            raise

    @classmethod
    def _create(cls, name: str, mac: str, mtu: int, addresses: tuple[Iface, ...],
                netns: str | None, final: str, vnet_hdr: bool, offload: bool, ipv6: bool,
                created_netns: bool) -> TapPort:
        with _netns.ns_iproute(None) as ipr:
            # TUNSETIFF on an existing *persistent* TAP of that name would silently attach to
            # it; refuse any existing device instead (EBUSY/EINVAL below cover races).
            if ipr.link_lookup(ifname=name):
                raise VxdpError(f"cannot create TAP {name}: an interface with that name exists")

        dev = cls._open(name, vnet_hdr)
        try:
            fd = dev.fileno()
            os.set_blocking(fd, False)
            # pytun opens /dev/net/tun without O_CLOEXEC: an exec'd child would inherit the fd
            # and keep the device alive after we close it.
            os.set_inheritable(fd, False)
            offloads: frozenset[str] = frozenset()
            if vnet_hdr:
                fcntl.ioctl(fd, _TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
            if offload:
                # Before the device goes up and into the container: the features the stack
                # sees at that point decide what it hands us. With CSUM the container leaves
                # L4 checksums partial (F_NEEDS_CSUM, csum_start/offset in the vnet header);
                # with TSO4/6 it hands over TCP super-frames of up to 64 KB (gso_type/gso_size)
                # instead of MSS-sized segments, so one read + one segmentation pass replaces
                # ~45 syscalls, exactly as for a virtio-net guest.
                offloads = cls._set_offload(fd)
            ifindex = cls._configure(name, final, mac, mtu, addresses, netns, ipv6)
        except BaseException:
            dev.close()
            raise
        return cls(name=name, dev=dev, mac=mac, mtu=mtu, address=addresses, netns=netns,
                   ifname=final, ifindex=ifindex, vnet_hdr=vnet_hdr, created_netns=created_netns,
                   offloads=offloads)

    @staticmethod
    def _open(name: str, vnet_hdr: bool) -> Any:
        """TUNSETIFF: the TAP device ``name`` and its fd (a pytun.TunTapDevice)."""
        flags = pytun.IFF_TAP | pytun.IFF_NO_PI | (_IFF_VNET_HDR if vnet_hdr else 0)
        try:
            return pytun.TunTapDevice(name=name, flags=flags)
        except pytun.Error as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
            if code in (errno.EPERM, errno.EACCES):
                raise PrivilegeError("creating TAP devices needs root (CAP_NET_ADMIN)") from exc
            if code == errno.EBUSY:
                raise VxdpError(f"cannot create TAP {name}: name in use") from exc
            if code == errno.EINVAL:
                raise VxdpError(f"cannot create TAP {name}: name in use by a non-TAP "
                                "interface or invalid") from exc
            raise VxdpError(f"cannot create TAP {name}: {exc}") from exc

    @staticmethod
    def _set_offload(fd: int) -> frozenset[str]:
        """TUNSETOFFLOAD with the best feature set the kernel accepts (see _OFFLOAD_LADDER);
        frozenset() when it accepts none. Errors other than EINVAL are real failures."""
        for features in _OFFLOAD_LADDER:
            bits = sum(_TUN_F[f] for f in features)
            try:
                fcntl.ioctl(fd, _TUNSETOFFLOAD, bits)
            except OSError as exc:
                if exc.errno == errno.EINVAL and features:
                    continue
                raise VxdpError(f"TUNSETOFFLOAD {bits:#x}: {exc.strerror}") from exc
            return features
        return frozenset()

    @staticmethod
    def _configure(name: str, final: str, mac: str, mtu: int, addresses: tuple[Iface, ...],
                   netns: str | None, ipv6: bool) -> int:
        doing = f"TAP {name}"
        with _netns.ns_iproute(None) as ipr:
            try:
                (index,) = ipr.link_lookup(ifname=name)
                # MAC and MTU while still down and in our namespace.
                ipr.link("set", index=index, address=mac, mtu=mtu)
            except NetlinkError as exc:
                raise _nl_error(exc, f"{doing}: set mac {mac} mtu {mtu}") from exc
            except ValueError as exc:
                raise VxdpError(f"{doing}: vanished while being configured") from exc
            if netns is not None:
                try:
                    # One request moves *and* renames (do_setlink passes IFLA_IFNAME as the
                    # name pattern to dev_change_net_namespace), so a same-named device in
                    # either namespace never collides with the intermediate name.
                    ipr.link("set", index=index, net_ns_fd=netns, ifname=final)
                except NetlinkError as exc:
                    raise _nl_error(exc, f"{doing}: move into netns {netns} as {final}") from exc
            elif final != name:
                try:
                    ipr.link("set", index=index, ifname=final)
                except NetlinkError as exc:
                    raise _nl_error(exc, f"{doing}: rename to {final}") from exc
        try:
            # explicitly either way: a device moved into a namespace takes that namespace's
            # default (a container made with IPv6 off would keep a dual-stack TAP without it)
            _netns.set_sysctl(netns, f"net/ipv6/conf/{final}/disable_ipv6", 0 if ipv6 else 1)
        except VxdpError as exc:
            # No /proc/sys/net/ipv6 at all (kernel booted with ipv6.disable=1): nothing to do,
            # unless IPv6 addresses were asked for (adding them fails below, naming them).
            if not (isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOENT):
                raise
        with _netns.ns_iproute(netns) as ipr:
            try:
                found = ipr.link_lookup(ifname=final)
                if not found:
                    raise VxdpError(f"{doing}: {final} not found in netns {netns} after the move")
                index = found[0]
                for a in addresses:
                    ipr.addr("add", index=index, address=str(a.ip),
                             prefixlen=a.network.prefixlen)
                ipr.link("set", index=index, state="up")
                if netns is not None:
                    lo = ipr.link_lookup(ifname="lo")
                    if lo:
                        ipr.link("set", index=lo[0], state="up")
            except NetlinkError as exc:
                raise _nl_error(exc, f"{doing}: address/up in netns {netns or '(current)'}") from exc
        return int(index)

    @classmethod
    def reopen(cls, name: str, mac: str, mtu: int, *, vnet_hdr: bool = False,
               offload: bool = False, netns: str | None = None) -> TapPort:
        """Open the existing TAP ``name`` of the calling *thread's* network namespace again:
        a persistent TAP (see :meth:`set_persist`) that outlived the process that made it,
        e.g. a container's ``eth0`` after a VTEP restart. TUNSETIFF looks the name up in the
        namespace the tun file was opened in, so a caller that wants a TAP in a container's
        namespace runs this on a thread that joined it. The device keeps its MAC, MTU,
        addresses and state; the vnet header and offloads are set again (they belong to the
        queue and the open file). ``netns`` is only recorded."""
        _check_ifname(name, "TAP name")
        dev = cls._open(name, vnet_hdr)
        try:
            fd = dev.fileno()
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
            offloads: frozenset[str] = frozenset()
            if vnet_hdr:
                fcntl.ioctl(fd, _TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
            if offload:
                offloads = cls._set_offload(fd)
            ifindex = socket.if_nametoindex(name)
        except BaseException:
            dev.close()
            raise
        return cls(name=name, dev=dev, mac=mac, mtu=mtu, address=None, netns=netns,
                   ifname=name, ifindex=ifindex, vnet_hdr=vnet_hdr, created_netns=False,
                   offloads=offloads)

    def set_persist(self, on: bool) -> None:
        """TUNSETPERSIST: a persistent TAP outlives its last fd (the device stays, without
        carrier, until :meth:`reopen` attaches to it again); turned off, closing the fd
        deletes the device as usual."""
        try:
            fcntl.ioctl(self.fd, _TUNSETPERSIST, 1 if on else 0)
        except OSError as exc:
            raise VxdpError(f"TAP {self.name}: TUNSETPERSIST {int(on)}: {exc.strerror}") from exc

    @classmethod
    async def create_async(cls, *args: Any, **kwargs: Any) -> TapPort:
        """:meth:`create` from a coroutine: pyroute2's sync API cannot run on a loop thread."""
        import asyncio
        return await asyncio.to_thread(cls.create, *args, **kwargs)

    # ------------------------------------------------------------------ state
    def fileno(self) -> int:
        return self.fd

    @property
    def closed(self) -> bool:
        return self._closed

    def alive(self) -> bool:
        """True while the fd is open and the device still exists.

        Uses TUNGETIFF, which fails with EBADFD once the device is unregistered, so nothing is
        read (no frame is consumed) by the check.
        """
        if self._closed:
            return False
        try:
            fcntl.ioctl(self.fd, _TUNGETIFF, bytes(40))
        except OSError as exc:
            if exc.errno in TAP_GONE_ERRNOS or exc.errno == errno.EBADF:
                return False
            raise
        return True

    def read(self, size: int = READ_SIZE) -> bytes | None:
        """One frame, or None if none is queued (EAGAIN). OSError(EBADFD) once the port is gone."""
        try:
            return os.read(self.fd, size)
        except BlockingIOError:
            return None

    def write(self, frame: bytes | bytearray | memoryview) -> int:
        """Deliver one frame to the container (a vnet header first if ``vnet_hdr``)."""
        return os.write(self.fd, frame)

    def close(self) -> None:
        """Close the fd (the kernel deletes the TAP) and remove the netns if we created it.

        Idempotent. A namespace that existed before :meth:`create` is left alone.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._dev.close()
        finally:
            if self.created_netns and self.netns is not None:
                _release_netns(self.netns)

    def __enter__(self) -> TapPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" netns={self.netns} ifname={self.ifname}" if self.netns else ""
        return (f"<TapPort {self.name} fd={self.fd} mac={self.mac} mtu={self.mtu}"
                f"{where} ifindex={self.ifindex}"
                f"{' offloads=' + ','.join(sorted(self.offloads)) if self.offloads else ''}"
                f"{' closed' if self._closed else ''}>")
