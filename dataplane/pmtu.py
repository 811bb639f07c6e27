"""The path MTU to each remote VTEP, measured for the cores' PMTU signalling.

The kernel's vxlan reads ``dst_mtu()`` of the route to the remote for every packet it sends
(``skb_tunnel_check_pmtu``) and answers an inner packet that cannot fit with an ICMP. A
userspace VTEP cannot afford a syscall per packet, and the cores do no I/O: so the control
plane asks the kernel for the route MTU of every remote VTEP address, ``getsockopt(IP_MTU)`` /
``IPV6_MTU`` on a UDP socket connected to it (the MTU of the route a datagram there takes:
the link's, an ``ip route ... mtu N``, or what PMTU discovery learned for that destination),
and tells the core when it changes (``Switch.set_path_mtu``). Measured at start, every
``PMTU_INTERVAL`` seconds, and at the next tick after the underlay refused datagrams (send
errors or GSO sends refused for their size, the signs of an MTU that shrank).

Until an address has been measured (a remote added since the last one-second tick), or when
there is no route to it, the core has no MTU for it and sends whatever the size, as vxdp did before: the kernel then
fragments the outer datagram (``df`` unset) or the underlay drops it.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

from dataplane.switch import MTU_MAX
from dataplane.validate import IPAddress, Locals

PMTU_INTERVAL = 5.0         # seconds between two measurements of every remote
MAX_DESTINATIONS = 4096     # remotes measured per round (a few µs each); the rest: no check

IP_MTU = 14                 # <linux/in.h>: the route MTU of a connected socket
IPV6_MTU = 24               # <linux/in6.h>

Measure = Callable[[IPAddress, IPAddress, int], int]


def route_mtu(local: IPAddress, dst: IPAddress, port: int) -> int:
    """The MTU of the route from ``local`` to ``dst`` as the kernel has it now, or 0 when
    there is none (no route, unreachable, ``local`` gone). OSError when the question could
    not be asked (out of file descriptors or memory)."""
    fam = socket.AF_INET6 if dst.version == 6 else socket.AF_INET
    try:
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.bind((str(local), 0))
            s.connect((str(dst), port))
            if dst.version == 6:
                mtu = s.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
            else:
                mtu = s.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError as e:
        if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            raise               # out of resources: not an answer about the path
        return 0
    # loopback's 65536 (a VTEP's own address): larger than any packet, so no limit
    return min(mtu, MTU_MAX)


class PathMtu:
    """Keeps a core's path MTUs current (``Switch.set_path_mtu``) for the addresses its FDB
    points at (``Switch.remote_vteps``). ``measure`` is :func:`route_mtu` (a stand-in in
    tests); ``port`` the VTEP's UDP destination port (a route may depend on it: policy
    routing)."""

    def __init__(self, switch: Any, local: Locals, port: int,
                 measure: Measure = route_mtu, interval: float = PMTU_INTERVAL) -> None:
        self.switch = switch
        self.local = local
        self.port = port
        self.measure = measure
        self.interval = interval
        self.known: dict[IPAddress, int] = {}
        self.asked: set[IPAddress] = set()     # the addresses the last refresh measured
        self._made = -1                          # switch.remotes_made() when last compared
        self._next = 0.0
        self._refusals = -1

    def _refused(self) -> int:
        """Datagrams the underlay refused so far: send errors, and GSO sends refused (a
        segment too big for the path) — a smaller MTU shows here first."""
        io = self.switch.io_counters().get("underlay", {})
        off = self.switch.offload_counters()
        return int(io.get("tx_errors", 0)) + int(off.get("gso_fallbacks", 0))

    def tick(self, now: float) -> list[tuple[IPAddress, int, int]]:
        """Measure now if :meth:`due`, in the caller's thread; the changes made (see
        :meth:`apply`)."""
        want = self.due(now)
        return [] if want is None else self.apply(want, self.measure_all(want))

    def due(self, now: float) -> list[IPAddress] | None:
        """The addresses to measure if it is time, datagrams were refused since the last
        tick, or the FDB points at an address not measured yet (an `fdb add`, a peer, a store
        entry or a learned VTEP since the last tick: checked within a tick, not an
        interval); None when nothing is due."""
        refused = self._refused()
        due = now >= self._next or (self._refusals >= 0 and refused != self._refusals)
        self._refusals = refused
        if not due:
            # Listing the remotes builds an address object per VTEP (the reference walks every
            # entry): only when the core says an entry may name a new one.
            made = self.switch.remotes_made()
            if made != self._made:
                self._made = made
                want = self.switch.remote_vteps()[:MAX_DESTINATIONS]
                due = not self.asked.issuperset(want)
        if not due:
            return None
        self._next = now + self.interval
        return self._listed()

    def _listed(self) -> list[IPAddress]:
        """The addresses to measure, remembered as asked."""
        self._made = self.switch.remotes_made()
        want = self.switch.remote_vteps()[:MAX_DESTINATIONS]
        self.asked = set(want)
        return want

    def measure_all(self, want: list[IPAddress]) -> dict[IPAddress, int]:
        """The route MTU of each address (0: no route), leaving out those that could not be
        asked now (out of file descriptors...). No core access: a VTEP runs this in a worker
        thread, a socket per address being ~12 µs, 50 ms for 4096 remotes."""
        out: dict[IPAddress, int] = {}
        for dst in want:
            local = self.local.of(dst.version)
            try:
                out[dst] = self.measure(local, dst, self.port) if local is not None else 0
            except OSError:
                continue        # could not ask now: keep what is known
        return out

    def apply(self, want: list[IPAddress], mtus: dict[IPAddress, int],
              ) -> list[tuple[IPAddress, int, int]]:
        """Set what changed in the core: a list of (address, old MTU, new MTU), 0 meaning
        unknown. Addresses no entry pointed at when ``want`` was listed are forgotten."""
        changes = []
        for dst, mtu in mtus.items():
            old = self.known.get(dst, 0)
            if mtu != old:
                self.switch.set_path_mtu(dst, mtu)
                changes.append((dst, old, mtu))
            if mtu:
                self.known[dst] = mtu
            else:
                self.known.pop(dst, None)
        for dst in sorted(set(self.known) - set(want), key=lambda a: (a.version, a.packed)):
            self.switch.set_path_mtu(dst, 0)
            changes.append((dst, self.known.pop(dst), 0))
        return changes

    def refresh(self) -> list[tuple[IPAddress, int, int]]:
        """Measure every remote VTEP now, whatever is due; the changes made."""
        want = self._listed()
        return self.apply(want, self.measure_all(want))
