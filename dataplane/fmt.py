"""Text rendering of control-socket results (pure functions: no I/O, no state).

The shapes copy the kernel tools on purpose (DESIGN.md §4), so that anyone who has debugged a
Docker overlay with ``bridge fdb show`` and ``ip neigh show`` can read vxdp's tables unchanged:

    02:42:c0:a8:37:04 dev c1 vni 4097 master mynet permanent          (local port)
    02:42:c0:a8:37:03 dev mynet dst 198.18.0.2 vni 4097 self permanent  (remote VTEP)
    192.168.55.3 dev mynet lladdr 02:42:c0:a8:37:03 PERMANENT

Every function tolerates missing keys and ignores unknown ones: the server may add fields
(``age``, ``offloads``...) without breaking older clients.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# States for which, like the kernel, no state word is printed (dynamic entries).
_SILENT_STATES = frozenset({"", "learned", "dynamic", "reachable_dynamic"})


def _network_name(entry: Mapping[str, Any]) -> str:
    network = entry.get("network")
    if network:
        return str(network)
    vni = entry.get("vni")
    return f"vni{vni}" if vni is not None else "?"


def format_fdb_entry(entry: Mapping[str, Any]) -> str:
    """One ``bridge fdb show`` line. Local entries hang off the port (``dev c1 ... master NET``,
    like a bridge port entry); remote ones off the network's "vxlan device" (``dev NET dst IP
    ... self``, like an entry on vxlan0 itself). Learned entries carry no state word."""
    parts = [str(entry.get("mac", "?"))]
    vni = entry.get("vni")
    ifname = entry.get("ifname")
    if ifname:
        parts += ["dev", str(ifname)]
        if vni is not None:
            parts += ["vni", str(vni)]
        parts += ["master", _network_name(entry)]
    else:
        parts += ["dev", _network_name(entry)]
        if entry.get("dst"):
            parts += ["dst", str(entry["dst"])]
        for key in ("port", "remote_vni"):      # the words `vxdp fdb add` takes them with
            if entry.get(key):
                parts += [key, str(entry[key])]
        if vni is not None:
            parts += ["vni", str(vni)]
        parts.append("self")
    state = str(entry.get("state") or "")
    if state not in _SILENT_STATES:
        parts.append(state)
    return " ".join(parts)


def format_fdb(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    return [format_fdb_entry(e) for e in entries]


def format_neigh_entry(entry: Mapping[str, Any]) -> str:
    """One ``ip neigh show`` line: ``IP dev NET lladdr MAC STATE`` (state upper-cased as the
    kernel prints NUD states; lladdr omitted when unknown, as for FAILED/INCOMPLETE)."""
    parts = [str(entry.get("ip", "?")), "dev", _network_name(entry)]
    if entry.get("lladdr"):
        parts += ["lladdr", str(entry["lladdr"])]
    state = str(entry.get("state") or "")
    if state:
        parts.append(state.upper())
    return " ".join(parts)


def format_neigh(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    return [format_neigh_entry(e) for e in entries]


def format_endpoint(entry: Mapping[str, Any]) -> str:
    """``endpoint show`` line: ``c1 network mynet vni 4097 mac M address A/P [netns NS ifname IF]``."""
    parts = [str(entry.get("name", "?"))]
    for key in ("network", "vni", "mac", "address", "netns", "ifname"):
        if entry.get(key) is not None and entry.get(key) != "":
            parts += [key, str(entry[key])]
    return " ".join(parts)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                 right: Iterable[int] = (), indent: str = "") -> list[str]:
    """Columns padded to their widest cell; indices in ``right`` are right-aligned (numbers)."""
    right_cols = set(right)
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    ncols = max(len(r) for r in cells)
    for r in cells:
        r.extend([""] * (ncols - len(r)))
    widths = [max(len(r[i]) for r in cells) for i in range(ncols)]
    out = []
    for r in cells:
        padded = [c.rjust(widths[i]) if i in right_cols else c.ljust(widths[i])
                  for i, c in enumerate(r)]
        out.append((indent + "  ".join(padded)).rstrip())
    return out


def _num(value: Any) -> str:
    return str(value) if value is not None else "-"


def _kv_lines(title: str, values: Mapping[str, Any], total: bool = False) -> list[str]:
    lines = [title]
    if not values:
        lines.append("  (none)")
        return lines
    items = [(str(k), _num(v)) for k, v in values.items()]
    if total and all(isinstance(v, int) and not isinstance(v, bool) for v in values.values()):
        items.append(("total", str(sum(values.values()))))
    kw = max(len(k) for k, _ in items)
    vw = max(len(v) for _, v in items)
    lines += [f"  {k.ljust(kw)}  {v.rjust(vw)}" for k, v in items]
    return lines


_PORT_COLUMNS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")


def format_stats(stats: Mapping[str, Any]) -> str:
    """Aligned summary of the ``stats`` result: ports (+ underlay) table, drops by reason (all
    reasons the server lists, zeros included, so a counter to watch is always visible),
    counters, offloads. Missing sections are skipped."""
    blocks: list[list[str]] = []
    vtep = stats.get("vtep")
    if isinstance(vtep, Mapping):
        head = f"vtep {vtep.get('name', '?')}"
        if vtep.get("local") is not None:
            # "198.18.0.1, 2001:db8:18::1" for a VTEP of both families; IPv6 in brackets
            # before a port, as in a URL
            addrs = [a.strip() for a in str(vtep["local"]).split(",")]
            if vtep.get("port") is not None:
                addrs = [f"[{a}]:{vtep['port']}" if ":" in a else f"{a}:{vtep['port']}"
                         for a in addrs]
            head += " " + " ".join(addrs)
        if vtep.get("streams") is not None:
            # trace/capture/events clients attached, and the cap ([vtep] max_subscribers)
            head += f"  streams {vtep['streams']}/{vtep.get('max_subscribers', '?')}"
        blocks.append([head])
    ports = stats.get("ports")
    underlay = stats.get("underlay")
    if isinstance(ports, Mapping) or isinstance(underlay, Mapping):
        port_maps = [p if isinstance(p, Mapping) else {} for p in (ports or {}).values()]
        if isinstance(underlay, Mapping):
            port_maps.append(underlay)
        # Extra integer counters (e.g. tx_errors) get their own columns after the standard ones.
        columns = list(_PORT_COLUMNS)
        for pm in port_maps:
            for key, value in pm.items():
                if (key not in columns and key not in ("network", "vni")
                        and isinstance(value, int) and not isinstance(value, bool)):
                    columns.append(key)
        rows: list[list[str]] = []
        for name, port in (ports or {}).items():
            port = port if isinstance(port, Mapping) else {}
            rows.append([str(name), str(port.get("network", "-")), _num(port.get("vni")),
                         *(_num(port.get(c)) for c in columns)])
        if isinstance(underlay, Mapping):
            rows.append(["(underlay)", "-", "-", *(_num(underlay.get(c)) for c in columns)])
        headers = ["PORT", "NETWORK", "VNI", *(c.upper() for c in columns)]
        blocks.append(format_table(headers, rows, right=range(2, len(headers))))
    drops = stats.get("drops")
    if isinstance(drops, Mapping):
        blocks.append(_kv_lines("drops:", drops, total=True))
    counters = stats.get("counters")
    if isinstance(counters, Mapping):
        blocks.append(_kv_lines("counters:", counters))
    offload = stats.get("offload")
    if isinstance(offload, Mapping) and offload:
        blocks.append(format_offload(offload))
    paths = stats.get("paths")
    if isinstance(paths, Mapping) and paths:
        blocks.append(format_paths(paths))
    offloads = stats.get("offloads")
    if isinstance(offloads, Mapping) and offloads:
        blocks.append(_kv_lines("offloads:", {k: _scalar(v) for k, v in offloads.items()}))
    return "\n\n".join("\n".join(b) for b in blocks)


def format_paths(paths: Mapping[str, Any]) -> list[str]:
    """The ``paths`` section: the route MTU to each remote VTEP and the inner packet size
    past which DF packets get an ICMP back::

        paths (route MTU to each remote VTEP):
          198.18.0.2   mtu 1400, inner packets up to 1350
    """
    width = max(len(str(a)) for a in paths)
    lines = ["paths (route MTU to each remote VTEP):"]
    for addr, p in paths.items():
        p = p if isinstance(p, Mapping) else {}
        lines.append(f"  {str(addr):<{width}}  mtu {_num(p.get('mtu'))}, inner packets up to "
                     f"{_num(p.get('inner_max'))}")
    return lines


_OFFLOAD_SWITCHES = ("udp_gso", "udp_gro", "tap_coalesce")


def format_offload(offload: Mapping[str, Any]) -> list[str]:
    """The ``offload`` section: one line of what is active (with the reason for anything that
    is off), then the offload counters that are not zero::

        offload: tap csum,tso4,tso6, udp_gso on, udp_gro off (kernel refused UDP_GRO), ...
          tso_frames      12
          tso_segments   530
    """
    reason = offload.get("reason")
    off = offload.get("off")
    off = off if isinstance(off, Mapping) else {}
    active = [k for k in _OFFLOAD_SWITCHES if offload.get(k) is True]
    if not active and not offload.get("tap"):
        # Nothing on: one reason says it all when there is one (py path, offload = false).
        reasons = {str(r) for r in off.values() if r}
        if isinstance(reason, str) and reason:
            reasons = {reason}
        if len(reasons) == 1:
            return [f"offload: off ({reasons.pop()})", *_counter_lines(offload)]

    def why(key: str) -> str:
        return f" ({off[key]})" if off.get(key) else ""

    items: list[str] = []
    tap = offload.get("tap")
    ports = offload.get("tap_ports")
    sets = ({str(n): ",".join(map(str, f)) or "none" for n, f in ports.items()
             if isinstance(f, (list, tuple))} if isinstance(ports, Mapping) else {})
    if len(set(sets.values())) > 1:
        # Endpoints disagree: say who has what rather than only the common part.
        items.append("tap " + " ".join(f"{n}={f}" for n, f in sets.items()))
    elif isinstance(tap, (list, tuple)) and tap:
        items.append("tap " + ",".join(map(str, tap)))
    elif off.get("tap") or not isinstance(ports, Mapping) or ports:
        items.append("tap off" + why("tap"))
    else:
        items.append("tap on (no endpoints yet)")
    for key in _OFFLOAD_SWITCHES:
        if key in offload:
            items.append(f"{key} {_scalar(bool(offload[key]))}"
                         + ("" if offload[key] else why(key)))
    head = "offload: " + (", ".join(items) if items else "-")
    if isinstance(reason, str) and reason:
        head += f" ({reason})"
    return [head, *_counter_lines(offload)]


def _counter_lines(offload: Mapping[str, Any]) -> list[str]:
    """The offload counters that are not zero, one indented line each."""
    counters = offload.get("counters")
    if not isinstance(counters, Mapping):
        return []
    nonzero = {str(k): v for k, v in counters.items()
               if isinstance(v, int) and not isinstance(v, bool) and v}
    if not nonzero:
        return []
    kw = max(len(k) for k in nonzero)
    vw = max(len(str(v)) for v in nonzero.values())
    return [f"  {k.ljust(kw)}  {str(v).rjust(vw)}" for k, v in nonzero.items()]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def format_record(record: Mapping[str, Any]) -> str:
    """A trace/events record: its ready-made ``line`` if the server sent one, else a compact
    ``key=value`` rendering (time first, when present) so nothing is ever lost."""
    line = record.get("line")
    if isinstance(line, str):
        return line
    keys = [k for k in ("time", "ts") if k in record]
    keys += [k for k in record if k not in keys]
    return " ".join(f"{k}={_scalar(record[k])}" for k in keys)


def format_explain(result: Any) -> list[str]:
    """``explain`` result → numbered steps (``1. ...``), right-aligned numbers past 9 steps.
    A ``verdict`` string, if the server adds one, is printed last."""
    if not isinstance(result, Mapping):
        return [json.dumps(result)]
    steps = [str(s) for s in result.get("steps") or ()]
    width = len(str(len(steps)))
    lines = [f"{str(i).rjust(width)}. {step}" for i, step in enumerate(steps, 1)]
    verdict = result.get("verdict")
    if isinstance(verdict, str) and verdict:
        lines.append(f"=> {verdict}")
    return lines
