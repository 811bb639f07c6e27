"""The value rules, in one place: MAC addresses, VNIs, interface / namespace / network / VTEP
names, the kinds of IPv4 address (underlay, overlay, endpoint interface, allow filter), and the
etcd URL and ``host:port`` forms.

One contract for every rule: a parser takes the value as written (a TOML value, a command-line
word, a control-socket argument) and returns it in canonical form, or raises :class:`ValueError`
with a one-line message that shows the value the way it would be written in TOML/JSON and never
names the key or option. The caller knows where the value came from and adds it: the config
its ``file:line: key:``, the CLI its command word, the tables wrap the error in
``InvalidArgument``, the store in ``RecordError``, ports and the lab in ``VxdpError``. So
``vxdp run``, ``vxdp fdb add``, a store record and a table operation all accept and refuse
exactly the same spellings.

Nothing here does I/O or imports anything of vxdp: the wire reference, the tables and the
compiled core can all use it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from ipaddress import (IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface,
                       IPv6Network)
from typing import Any, NamedTuple, Union
from urllib.parse import urlsplit

__all__ = [
    "IFNAME_MAX", "VNI_MAX", "VNI_MIN",
    "check_choice", "check_etcd_url", "check_socket_name", "check_host_port", "check_ifname", "check_netns", "check_network_name",
    "check_vtep_name", "ipaddr", "ipv4", "is_vni", "mac_bytes", "parse_allow", "parse_interface",
    "neigh_address", "parse_interfaces", "parse_ipv4", "parse_neigh_ip", "parse_locals", "parse_mac", "parse_overlay_ip", "parse_underlay_ip",
    "parse_unicast_mac", "parse_vni", "show", "unicast_mac_bytes", "IPAddress", "Locals",
]

IPAddress = Union[IPv4Address, IPv6Address]

# RFC 7348 §5: the VNI is a 24-bit field. VNI 0 is legal on the wire but Linux refuses it for a
# vxlan device's id in practice (and Docker starts at 4096), so 1.. keeps configs unambiguous.
VNI_MIN = 1
VNI_MAX = (1 << 24) - 1
IFNAME_MAX = 15  # IFNAMSIZ - 1: the kernel keeps a trailing NUL

_BROADCAST4 = IPv4Address("255.255.255.255")


def show(value: Any) -> str:
    """Render a value for an error message the way it would be written in TOML/JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


# --------------------------------------------------------------------------------------------
# MAC addresses
# --------------------------------------------------------------------------------------------

#: Six groups of one or two hex digits, one separator throughout (``:`` or ``-``).
_MAC_RE = re.compile(r"^[0-9A-Fa-f]{1,2}([:-])[0-9A-Fa-f]{1,2}(?:\1[0-9A-Fa-f]{1,2}){4}$")
#: The canonical spelling, which is how configs, the store and the CLI pass MACs on: checked
#: first, so the common case costs one match.
_CANONICAL_MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


def parse_mac(value: Any) -> str:
    """``aa:bb:cc:dd:ee:ff`` (also ``-`` separated, one-digit groups, any case) → lower-case
    canonical."""
    if isinstance(value, str):
        if _CANONICAL_MAC_RE.fullmatch(value):
            return value
        text = value.strip()
        if _MAC_RE.match(text):
            return ":".join(f"{int(p, 16):02x}" for p in re.split(r"[:-]", text))
    raise ValueError(f"{show(value)} is not a MAC address (expected aa:bb:cc:dd:ee:ff)")


def mac_bytes(value: str | bytes | bytearray) -> bytes:
    """A MAC as 6 bytes: the text forms of :func:`parse_mac`, or 6 bytes passed through."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 6:
            raise ValueError(f"a MAC address is 6 bytes, got {len(value)}")
        return bytes(value)
    return bytes.fromhex(parse_mac(value).replace(":", ""))


def _not_unicast(shown: str, multicast: bool, what: str) -> ValueError:
    """The kernel's ``is_valid_ether_addr`` refusing a MAC an interface may not own."""
    if multicast:
        return ValueError(f"{shown} is a multicast MAC address (first octet is odd); "
                          f"{what} needs a unicast MAC")
    return ValueError(f"{shown} is the all-zeros MAC address; {what} needs a unicast MAC")


def parse_unicast_mac(value: Any, *, what: str = "an interface") -> str:
    """A MAC usable as an endpoint's own address: unicast (I/G bit clear) and not all-zeros.
    ``what`` names who needs it in the message ("an interface", "a neighbour entry"...)."""
    mac = parse_mac(value)
    multicast = bool(int(mac[:2], 16) & 1)
    if multicast or mac == "00:00:00:00:00:00":
        raise _not_unicast(show(value), multicast, what)
    return mac


def unicast_mac_bytes(value: str | bytes | bytearray, *, what: str = "an interface") -> bytes:
    """:func:`parse_unicast_mac` for text or 6 bytes, as 6 bytes."""
    mac = mac_bytes(value)
    if mac[0] & 1 or not any(mac):
        shown = value if isinstance(value, str) else ":".join(f"{b:02x}" for b in mac)
        raise _not_unicast(show(shown), bool(mac[0] & 1), what)
    return mac


# --------------------------------------------------------------------------------------------
# VNI (RFC 7348 §5)
# --------------------------------------------------------------------------------------------

def is_vni(value: object) -> bool:
    """An integer (not a bool) within VNI_MIN..VNI_MAX."""
    return isinstance(value, int) and not isinstance(value, bool) and VNI_MIN <= value <= VNI_MAX


def parse_vni(value: Any) -> int:
    """RFC 7348 §5: 24-bit VXLAN Network Identifier (0 excluded, see VNI_MIN). Digit strings
    (a command-line word) are accepted."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        else:
            raise ValueError(f"{show(value)} is not a VNI (an integer {VNI_MIN}..{VNI_MAX})")
    if not VNI_MIN <= value <= VNI_MAX:
        raise ValueError(f"{value} is out of range: a VNI is {VNI_MIN}..{VNI_MAX} (24 bits)")
    return value


# --------------------------------------------------------------------------------------------
# Names and choices
# --------------------------------------------------------------------------------------------

def check_choice(value: Any, choices: tuple[str, ...], what: str) -> str:
    """One of ``choices`` (e.g. an FDB entry's state), else ``{what} 'x' is not one of ...``."""
    if value not in choices:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(choices)}")
    return str(value)


def check_ifname(value: Any) -> str:
    """Linux interface name rules (net/core/dev.c ``dev_valid_name``): 1 to 15 bytes, not
    ``.`` or ``..``, no ``/``, ``:``, whitespace or NUL. Returns the name."""
    if not isinstance(value, str):
        raise ValueError(f"{show(value)} is not an interface name")
    if not value:
        raise ValueError(f"an interface name cannot be empty (it must be 1 to {IFNAME_MAX} "
                         "bytes)")
    if len(value.encode()) > IFNAME_MAX:
        raise ValueError(f"{show(value)} is too long for an interface name "
                         f"(it must be 1 to {IFNAME_MAX} bytes)")
    if value in (".", "..") or re.search(r"[\s/:\x00]", value):
        raise ValueError(f"{show(value)} is not a valid interface name "
                         "(no '/', ':' or whitespace, not '.' or '..')")
    return value


def _check_name(value: Any, what: str, invalid: Callable[[str], object], rule: str) -> str:
    """A non-empty string that ``invalid`` does not object to, else ``... is not a valid
    {what} ({rule})``."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{show(value)} is not a {what}")
    if invalid(value):
        raise ValueError(f"{show(value)} is not a valid {what} ({rule})")
    return value


def check_netns(value: Any) -> str:
    """A named network namespace: a file name under /run/netns (what ``ip netns add`` makes)."""
    return _check_name(value, "network namespace name",
                       lambda v: v in (".", "..") or "/" in v or "\x00" in v
                       or re.search(r"\s", v) or len(v.encode()) > 255,
                       "a file name under /run/netns")


def check_network_name(value: Any) -> str:
    """Network names appear as ``dev NAME`` in fdb/neigh output and in store keys."""
    return _check_name(value, "network name",
                       lambda v: len(v) > 64 or re.search(r"[\s/\x00-\x1f]", v),
                       "1..64 characters, no '/' or whitespace")


def check_socket_name(value: Any, what: str) -> str:
    """A name that names a socket file: 1..64 of letters, digits, '_', '.', '-'."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}",
                                                      value):
        raise ValueError(f"{show(value)} is not a valid {what} (1..64 of letters, digits, "
                         "'_', '.', '-'; it names the socket file)")
    return value


def check_vtep_name(value: Any) -> str:
    """A VTEP's name: it names the control socket file (``/run/vxdp/<name>.sock``)."""
    return check_socket_name(value, "VTEP name")


# --------------------------------------------------------------------------------------------
# IPv4 addresses, by the job they do
# --------------------------------------------------------------------------------------------

def _looks_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Interface(text)
    except ValueError:
        return False
    return True


def parse_ipv4(value: Any, *, ipv6_hint: str = "IPv6 is not supported yet") -> IPv4Address:
    """A plain IPv4 address (no prefix length)."""
    if not isinstance(value, str):
        raise ValueError(f"{show(value)} is not an IPv4 address")
    text = value.strip()
    if "/" in text:
        raise ValueError(f"{show(value)} must be a plain IPv4 address without a prefix length")
    try:
        return IPv4Address(text)
    except ValueError:
        if _looks_ipv6(text):
            raise ValueError(f"{show(value)}: {ipv6_hint}") from None
        raise ValueError(f"{show(value)} is not an IPv4 address") from None


def ipv4(value: IPv4Address | str | int) -> IPv4Address:
    """Typed IPv4 address from any of the accepted spellings: an address, its text
    (:func:`parse_ipv4`) or its 32-bit integer."""
    if isinstance(value, IPv4Address):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value} is not an IPv4 address (not 32 bits)") from None
    if isinstance(value, str):
        try:
            return IPv4Address(value)   # the usual case, as fast as it can be
        except ValueError:
            pass
    return parse_ipv4(value)            # anything else: accepted or explained


def ipaddr(value: IPv4Address | IPv6Address | str | int) -> IPv4Address | IPv6Address:
    """Typed IPv4 or IPv6 address (an underlay address: a VTEP of either family)."""
    if isinstance(value, (IPv4Address, IPv6Address)):
        return value
    if isinstance(value, str) and ":" in value:
        try:
            return IPv6Address(value.strip())
        except ValueError:
            raise ValueError(f"{show(value)} is not an IP address") from None
    return ipv4(value)


def parse_underlay_ip(value: Any, *, allow_unspecified: bool = False) -> IPAddress:
    """An underlay (VTEP) IPv4 or IPv6 address: something a UDP datagram can be sent to or
    bound on. An IPv6 link-local one is refused: it means nothing without its interface,
    and vxdp keeps no scope per VTEP (the kernel's vxlan wants the device with it too)."""
    if isinstance(value, str) and ":" in value:
        text = value.strip()
        if "/" in text:
            raise ValueError(f"{show(value)} must be a plain address without a prefix length")
        try:
            addr6 = IPv6Address(text)
        except ValueError:
            raise ValueError(f"{show(value)} is not an IPv4 or IPv6 address") from None
        if addr6.is_unspecified and not allow_unspecified:
            raise ValueError(f"{show(value)} is the unspecified address; a VTEP needs a "
                             "real one")
        if addr6.is_link_local:
            raise ValueError(f"{show(value)} is link-local: an underlay address must be "
                             "routable")
        if addr6.ipv4_mapped is not None:
            raise ValueError(f"{show(value)} is IPv4-mapped: write {addr6.ipv4_mapped}")
        return addr6
    addr = parse_ipv4(value)
    if addr.is_unspecified and not allow_unspecified:
        raise ValueError(f"{show(value)} is the unspecified address; a VTEP needs a real one")
    if addr == _BROADCAST4:
        raise ValueError(f"{show(value)} is the limited broadcast address, not a VTEP")
    return addr


class Locals(NamedTuple):
    """A VTEP's underlay addresses, at most one per family (``[vtep] local``). A tuple, so
    ``addr in locals`` asks whether an address is this VTEP's own."""

    v4: IPv4Address | None
    v6: IPv6Address | None

    @property
    def primary(self) -> IPAddress:
        """The IPv4 one if there is one (what a single-family VTEP was always given)."""
        addr = self.v4 or self.v6
        assert addr is not None
        return addr

    def of(self, version: int) -> IPAddress | None:
        return self.v4 if version == 4 else self.v6

    def __str__(self) -> str:
        return ", ".join(str(a) for a in self if a is not None)


def parse_locals(value: Any) -> Locals:
    """``[vtep] local``: one underlay address, or a list of one per family."""
    if isinstance(value, Locals):
        return value
    given = list(value) if isinstance(value, (list, tuple)) else [value]
    if not given:
        raise ValueError("an empty list: local needs an IPv4 and/or an IPv6 address")
    v4: IPv4Address | None = None
    v6: IPv6Address | None = None
    for a in given:
        addr = a if isinstance(a, (IPv4Address, IPv6Address)) else parse_underlay_ip(a)
        if addr.is_unspecified or addr.is_multicast or addr == _BROADCAST4:
            raise ValueError(f"{show(str(addr))} is not a unicast address; local must be an "
                             "address of this host")
        if addr.version == 6 and addr.is_link_local:
            raise ValueError(f"{show(str(addr))} is link-local: an underlay address must be "
                             "routable")
        if addr.version == 4:
            if v4 is not None:
                raise ValueError(f"two IPv4 addresses ({v4} and {addr}): one per family")
            v4 = addr  # type: ignore[assignment]
        else:
            if v6 is not None:
                raise ValueError(f"two IPv6 addresses ({v6} and {addr}): one per family")
            v6 = addr  # type: ignore[assignment]
    return Locals(v4, v6)


def _check_unicast_ip(ip: IPv4Address, value: Any) -> None:
    if ip.is_unspecified or ip.is_multicast or ip == _BROADCAST4:
        raise ValueError(f"{show(value)} is not a unicast IPv4 address")


def parse_overlay_ip(value: Any) -> IPv4Address:
    """An overlay (container) IPv4 address without prefix, as in a neighbour entry."""
    addr = parse_ipv4(value, ipv6_hint="IPv6 overlay addresses are not supported yet")
    _check_unicast_ip(addr, value)
    return addr


def neigh_address(value: IPAddress | str) -> IPAddress:
    """A neighbour entry's address (``ip neigh add ADDR``): IPv4, or IPv6 unicast (link-local
    included: a container's fe80:: address is a neighbour like any other); the typed value
    as it is, text parsed."""
    if isinstance(value, IPv6Address) or (isinstance(value, str) and ":" in value):
        text = value if isinstance(value, IPv6Address) else value.strip()
        try:
            addr = IPv6Address(text)
        except ValueError:
            raise ValueError(f"{show(value)} is not an IPv4 or IPv6 address") from None
        if addr.is_multicast or addr.is_unspecified or addr.ipv4_mapped is not None:
            raise ValueError(f"{show(str(value))} is not a unicast IPv6 address")
        return addr
    return ipv4(value)


def parse_neigh_ip(value: Any) -> IPAddress:
    """A neighbour entry's address as a user writes one (config, CLI, control requests): a
    unicast IPv4 address (parse_overlay_ip) or a unicast IPv6 one (neigh_address)."""
    if isinstance(value, str) and ":" in value:
        return neigh_address(value)
    return parse_overlay_ip(value)


def parse_interface(value: Any) -> IPv4Interface | IPv6Interface:
    """An endpoint address ``A.B.C.D/P`` or ``X:X::X/P``: the prefix length is required (it
    sets the route). An IPv6 link-local one is refused: the kernel gives every interface its
    fe80:: address itself."""
    expected = (f"{show(value)} is not an IPv4 or IPv6 address with prefix length "
                "(expected A.B.C.D/P or X:X::X/P, e.g. 192.168.55.4/24, fd00:55::4/64)")
    if not isinstance(value, str):
        raise ValueError(expected)
    text = value.strip()
    if "/" not in text:
        raise ValueError(f"{show(value)} needs a prefix length (e.g. {text}/"
                         f"{64 if ':' in text else 24})")
    if ":" in text:
        try:
            iface6 = IPv6Interface(text)
        except ValueError:
            raise ValueError(expected) from None
        if iface6.network.prefixlen == 0:
            raise ValueError(f"{show(value)}: a /0 prefix is not a usable endpoint network")
        ip6 = iface6.ip
        if ip6.is_multicast or ip6.is_unspecified or ip6.is_loopback \
                or ip6.ipv4_mapped is not None:
            raise ValueError(f"{show(value)} is not a unicast IPv6 address")
        if ip6.is_link_local:
            raise ValueError(f"{show(value)} is link-local: the kernel gives every interface "
                             "its fe80:: address itself")
        return iface6
    try:
        iface = IPv4Interface(text)
    except ValueError:
        raise ValueError(expected) from None
    if iface.network.prefixlen == 0:
        raise ValueError(f"{show(value)}: a /0 prefix is not a usable endpoint network")
    _check_unicast_ip(iface.ip, value)
    return iface


def parse_interfaces(value: Any) -> tuple[IPv4Interface | IPv6Interface, ...]:
    """An endpoint's ``address``: one ``A/P`` or a list of them (dual stack), each once."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError("an empty list: an endpoint needs an address")
    out: list[IPv4Interface | IPv6Interface] = []
    for item in items:
        iface = parse_interface(item)
        if any(o.ip == iface.ip for o in out):
            raise ValueError(f"{show(str(iface.ip))} is listed twice")
        out.append(iface)
    return tuple(out)


def parse_allow(value: Any) -> IPv4Network | IPv6Network:
    """A source filter network, IPv4 or IPv6. Host bits are refused: "198.18.0.1/24" is
    almost always a typo for either the network or a /32, and silently picking one would hide
    it."""
    if not isinstance(value, str):
        raise ValueError(f"{show(value)} is not an IPv4 or IPv6 network")
    text = value.strip()
    kind = IPv6Network if ":" in text else IPv4Network
    try:
        return kind(text)
    except ValueError as exc:
        try:
            loose = kind(text, strict=False)
        except ValueError:
            raise ValueError(f"{show(value)} is not an IPv4 or IPv6 network (expected "
                             "A.B.C.D/P or X:X::X/P)") from exc
        raise ValueError(f"{show(value)} has host bits set (did you mean \"{loose}\"?)") from None


# --------------------------------------------------------------------------------------------
# Endpoints of services
# --------------------------------------------------------------------------------------------

def check_host_port(value: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` → (host, port)."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"{show(value)} is not host:port (e.g. \"127.0.0.1:9477\")")
    port = int(port_s)
    if not 1 <= port <= 65535:
        raise ValueError(f"{show(value)}: port {port} is out of range (1..65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or re.search(r"[\s/]", host):
        raise ValueError(f"{show(value)} is not host:port (e.g. \"127.0.0.1:9477\")")
    return host, port


def check_etcd_url(value: Any) -> str:
    """An etcd client URL ``http://host:port``; returned without a trailing slash."""
    if not isinstance(value, str):
        raise ValueError(f"{show(value)} is not a URL")
    try:
        parts = urlsplit(value.strip())
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{show(value)} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{show(value)} is not an http URL (e.g. \"http://198.18.0.100:2379\")")
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ValueError(f"{show(value)}: give only scheme, host and port")
    return value.strip().rstrip("/")
