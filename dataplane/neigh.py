"""Neighbour table of one network (IPv4 and IPv6), with ``ip neigh`` semantics and no I/O.

It plays the part of the neighbour tables Docker programs on ``vxlan0`` (``ip neigh add IP
lladdr MAC dev vxlan0 nud permanent``), which the kernel's proxy reads: ``arp_reduce`` the
IPv4 one, ``neigh_reduce`` (Neighbor Solicitations) the IPv6 one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from dataplane.errors import EntryExists, EntryNotFound, InvalidArgument
from dataplane.validate import check_choice, neigh_address, unicast_mac_bytes
from dataplane.wire import mac_str

NEIGH_STATES = ("permanent", "static", "reachable")


@dataclass(slots=True)
class NeighEntry:
    ip: IPv4Address | IPv6Address
    lladdr: bytes
    state: str

    def as_dict(self, vni: int) -> dict[str, object]:
        return {"vni": vni, "ip": str(self.ip), "lladdr": mac_str(self.lladdr),
                "state": self.state}


# The argument rules of dataplane.validate, refused the way the kernel refuses them (EINVAL).
# The compiled core imports these three as they are.

def _lladdr(mac: str | bytes) -> bytes:
    return InvalidArgument.check(lambda v: unicast_mac_bytes(v, what="a neighbour entry"), mac)


def _ip(ip: IPv4Address | IPv6Address | str) -> IPv4Address | IPv6Address:
    return InvalidArgument.check(neigh_address, ip)


def sort_key(ip: IPv4Address | IPv6Address) -> tuple[int, int]:
    """Dump order: IPv4 first, then IPv6, each by address (both cores)."""
    return ip.version, int(ip)


def _state(state: str) -> str:
    return InvalidArgument.check(lambda v: check_choice(v, NEIGH_STATES, "neighbour state"),
                                 state)


class NeighTable:
    def __init__(self, vni: int) -> None:
        self.vni = vni
        self._entries: dict[IPv4Address | IPv6Address, NeighEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[NeighEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: sort_key(e.ip)))

    def lookup(self, ip: IPv4Address | IPv6Address) -> NeighEntry | None:
        return self._entries.get(ip)

    def add(self, ip: IPv4Address | IPv6Address | str, lladdr: str | bytes,
            state: str = "permanent") -> None:
        """``ip neigh add``: NLM_F_CREATE|NLM_F_EXCL — fails when the address is there."""
        key = _ip(ip)
        if key in self._entries:
            raise EntryExists(f"neighbour {key} already exists in VNI {self.vni}")
        self._entries[key] = NeighEntry(key, _lladdr(lladdr), _state(state))

    def replace(self, ip: IPv4Address | IPv6Address | str, lladdr: str | bytes,
                state: str = "permanent") -> None:
        """``ip neigh replace``: create or overwrite."""
        key = _ip(ip)
        self._entries[key] = NeighEntry(key, _lladdr(lladdr), _state(state))

    def delete(self, ip: IPv4Address | IPv6Address | str) -> None:
        key = _ip(ip)
        if self._entries.pop(key, None) is None:
            raise EntryNotFound(f"no neighbour {key} in VNI {self.vni}")

    def flush(self) -> int:
        n = len(self._entries)
        self._entries.clear()
        return n
