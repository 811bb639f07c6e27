"""Work inside a container's network namespace given by *path* (Docker's SandboxKey,
``CNI_NETNS``), not by an ``ip netns`` name.

setns(2) moves only the calling thread, so each call runs on a fresh short-lived thread that
joins the namespace, does its work (netlink with pyroute2's synchronous API, TUNSETIFF, plain
ioctls) and ends; nothing ever changes the namespace of the event loop's thread or of a
pooled worker that would run something else later. TUNSETIFF looks the device name up in the
namespace the tun file is *opened* in, which is how a persistent TAP that libnetwork moved
into a container and renamed ``eth0`` is found again after a restart.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from dataplane import netns as _netns
from dataplane.errors import VxdpError

T = TypeVar("T")

SIOCGIFHWADDR = 0x8927


class SandboxGone(VxdpError):
    """The namespace file no longer names a namespace (the container is gone)."""


def is_netns(path: str) -> bool:
    """True when ``path`` is an nsfs file of a network namespace (a SandboxKey whose bind
    mount libnetwork removed is left as a plain empty file: setns on it fails EINVAL)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_dev == os.stat("/proc/self/ns/net").st_dev


def call(path: str | None, fn: Callable[..., T], *args: Any, timeout: float = 20.0) -> T:
    """``fn(*args)`` on a new thread inside the network namespace at ``path`` (None: ours).
    SandboxGone when ``path`` is not a network namespace."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            if path is not None:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    raise SandboxGone(f"{path}: {exc.strerror}") from None
                try:
                    _netns.setns_fd(fd)
                except OSError as exc:
                    if exc.errno == errno.EINVAL:
                        raise SandboxGone(f"{path} is no longer a network namespace") from None
                    raise
                finally:
                    os.close(fd)
            box["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    # The thread ends with its namespace: nothing needs to set it back.
    t = threading.Thread(target=run, name="vxdp-sandbox", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise VxdpError(f"netns {path}: no answer within {timeout:.0f}s")
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]


async def call_async(path: str | None, fn: Callable[..., T], *args: Any) -> T:
    """:func:`call` from the event loop (the thread is waited for off the loop)."""
    return await asyncio.to_thread(call, path, fn, *args)


def find_by_mac(mac: str) -> str | None:
    """The interface of the current thread's namespace with hardware address ``mac``."""
    want = bytes(int(x, 16) for x in mac.split(":"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _index, name in socket.if_nameindex():
            try:
                hw = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("256s", name.encode()))
            except OSError:
                continue
            if hw[18:24] == want:
                return name
    return None


def link_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def addresses(ifname: str) -> list[str] | None:
    """The IPv4 addresses (CIDR) of ``ifname`` in the current thread's namespace; None when
    there is no such interface."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None
        return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in ipr.get_addr(index=found[0], family=socket.AF_INET)]


def add_routes(ifname: str, routes: list[tuple[str, str | None]]) -> None:
    """Routes via ``ifname`` in the current thread's namespace: (destination CIDR, gateway or
    None for on-link), as a CNI result lists them."""
    if not routes:
        return
    from pyroute2 import IPRoute  # a netlink socket of this thread's namespace

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise VxdpError(f"{ifname} not found")
        for dst, gw in routes:
            kw: dict[str, Any] = {"dst": dst, "oif": found[0]}
            if gw:
                kw["gateway"] = gw
            try:
                ipr.route("replace", **kw)
            except NetlinkError as exc:
                raise VxdpError(f"route {dst}{' via ' + gw if gw else ''} dev {ifname}: "
                                f"{os.strerror(exc.code)}") from None
