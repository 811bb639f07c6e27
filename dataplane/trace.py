"""Turning the core's trace records into what people read: one-line decodes, decision lists,
JSON objects, pcapng blocks, and the dry-run ``explain``. Off the fast path: the core only
copies raw records into a bounded ring (``Switch.trace_drain``); everything here runs in
Python, in the control plane, only while someone is watching.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Generator, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from dataplane import switch as reference
from dataplane.errors import VxdpError
from dataplane.validate import Locals, ipaddr
from dataplane.wire import (
    BROADCAST_MAC,
    ETH_HLEN,
    ZERO_MAC,
    arp_request,
    icmp6_checksum,
    inet_checksum,
    ipv4_header,
    ipv6_header,
    is_multicast_mac,
    is_ns,
    mac_str,
    mac_to_bytes,
    neighbor_solicit,
    outer_datagram,
    vxlan_header,
)

PortName = Callable[[int], str]


# --- decoding ----------------------------------------------------------------------------------

_ICMP6 = {1: "unreachable", 2: "packet-too-big", 3: "time-exceeded", 128: "echo-request",
          129: "echo-reply", 133: "router-solicitation", 134: "router-advertisement",
          135: "neighbor-solicitation", 136: "neighbor-advertisement", 143: "mld-report"}


def _decode6(frame: bytes) -> str | None:
    """An untagged IPv6 frame, tcpdump-style; None if it is not one."""
    if len(frame) < ETH_HLEN + 40 or frame[12:14] != b"\x86\xdd" or frame[14] >> 4 != 6:
        return None
    src, dst = IPv6Address(frame[22:38]), IPv6Address(frame[38:54])
    nh, l4 = frame[20], frame[54:]
    if nh == 58 and len(l4) >= 4:
        kind = _ICMP6.get(l4[0], f"type {l4[0]}")
        if l4[0] == 135 and len(l4) >= 24:
            return f"ICMP6 neighbor-solicitation who-has {IPv6Address(l4[8:24])} tell {src}"
        if l4[0] == 136 and len(l4) >= 24:
            return f"ICMP6 neighbor-advertisement tgt-is {IPv6Address(l4[8:24])} > {dst}"
        return f"ICMP6 {kind} {src} > {dst}"
    if nh in (6, 17) and len(l4) >= 4:
        sport, dport = struct.unpack_from("!HH", l4)
        name = "TCP" if nh == 6 else "UDP"
        return f"{name} [{src}]:{sport} > [{dst}]:{dport}"
    return f"IPv6 {src} > {dst} next-header {nh}"


def decode(frame: bytes) -> str:
    """One line for an Ethernet frame, in tcpdump's words ("ARP who-has A tell B",
    "ICMP echo-request A > B", "ICMP6 neighbor-solicitation who-has T tell S"). scapy is fine
    here: this is never on the fast path."""
    if len(frame) < ETH_HLEN:
        return f"runt frame ({len(frame)} bytes)"
    try:
        six = _decode6(frame)
        if six is not None:
            return six
        from scapy.layers.inet import ICMP, IP, TCP, UDP
        from scapy.layers.l2 import ARP, Ether

        p = Ether(frame)
        if ARP in p:
            a = p[ARP]
            if a.op == 1:
                return f"ARP who-has {a.pdst} tell {a.psrc}"
            if a.op == 2:
                return f"ARP reply {a.psrc} is-at {a.hwsrc}"
            return f"ARP op {a.op}"
        if IP in p:
            ip = p[IP]
            if ICMP in p:
                kinds = {0: "echo-reply", 8: "echo-request", 3: "unreachable", 11: "time-exceeded"}
                kind = kinds.get(p[ICMP].type, f"type {p[ICMP].type}")
                return f"ICMP {kind} {ip.src} > {ip.dst}"
            if TCP in p:
                t = p[TCP]
                return f"TCP {ip.src}:{t.sport} > {ip.dst}:{t.dport} [{t.sprintf('%flags%')}]"
            if UDP in p:
                u = p[UDP]
                return f"UDP {ip.src}:{u.sport} > {ip.dst}:{u.dport}"
            return f"IPv4 {ip.src} > {ip.dst} proto {ip.proto}"
        return f"{mac_str(frame[6:12])} > {mac_str(frame[0:6])} ethertype 0x{p.type:04x}"
    except Exception:  # scapy can choke on hostile bytes: the decode is best effort
        return f"{mac_str(frame[6:12])} > {mac_str(frame[0:6])} ({len(frame)} bytes)"


def warm_up() -> None:
    """Import the decoder's modules (slow the first time)."""
    decode(b"\xff" * 6 + b"\x02" + b"\x00" * 5 + b"\x08\x06" + b"\x00" * 28)


def inner_of(record: Sequence[Any]) -> bytes:
    """The inner Ethernet frame of a record (the datagram's payload for underlay records)."""
    _now, source, _vni, _length, data, _verdict, _outs, _flags = record
    return data if source.startswith("port:") else data[8:]


# --- records → readable objects -----------------------------------------------------------------

def _proxy_steps(frame: bytes, flags: Sequence[str], vni: int, nd: bool,
                 neigh_of: Callable[[int, str], str | None] | None) -> list[str]:
    """What the proxy at the "vxlan port" did with an ARP request or a Neighbor
    Solicitation (``nd``), from the record's flags."""
    what = "Neighbor Solicitation" if nd else "ARP request"
    if "proxy_reply" in flags:
        if nd:
            tpa = str(IPv6Address(frame[62:78]))
        else:
            tpa = str(IPv4Address(frame[38:42])) if len(frame) >= 42 else "?"
        entry = neigh_of(vni, tpa) if neigh_of is not None else None
        return [f"{what} at the vxlan port, proxy on: neighbour table hit"
                + (f" ({tpa} lladdr {entry})" if entry else ""),
                ("proxy Neighbor Advertisement" if nd else "proxy reply")
                + " written back to the ingress port (never tunnelled)"]
    if "l3miss" in flags:
        return [f"{what} at the vxlan port, proxy on: no neighbour entry (l3miss)"]
    if "arp_local" in flags or "nd_local" in flags:
        return [f"{'NS' if nd else 'ARP'} for a local endpoint: proxy stays silent, the "
                "endpoint answers"]
    if "nd_dad" in flags:
        return ["duplicate address detection: left to the containers on this node (the proxy "
                "does not answer DAD)"]
    if "arp_consumed" in flags or "nd_consumed" in flags:
        return [f"{'NS' if nd else 'ARP'} consumed at the vxlan port (proxy on)"]
    return []


def describe(record: Sequence[Any], port_name: PortName, network_of: Callable[[int], str],
             wall_offset: float = 0.0,
             neigh_of: Callable[[int, str], str | None] | None = None) -> dict[str, Any]:
    """A trace record as a JSON-able dict with a one-line rendering in ``line``."""
    now, source, vni, length, data, verdict, outs, flags = record
    from_port = source.startswith("port:")
    frame = inner_of(record)
    rec: dict[str, Any] = {"time": now + wall_offset, "vni": vni if vni >= 0 else None,
                           "network": network_of(vni) if vni >= 0 else None,
                           "length": length}
    if from_port:
        rec["from"] = {"port": port_name(int(source[5:]))}
    else:
        rec["from"] = {"vtep": source}
    rec["decode"] = decode(frame) if len(frame) >= ETH_HLEN else f"{length}-byte datagram"
    steps: list[str] = []
    dst = frame[0:6] if len(frame) >= 6 else b""
    if verdict:
        steps.append(f"drop: {verdict}")
    else:
        if "learned" in flags:
            steps.append(f"learn {mac_str(frame[6:12])} → {'port ' + port_name(int(source[5:])) if from_port else source}")
        if "moved" in flags:
            steps.append(f"move {mac_str(frame[6:12])} → {source}")
        if "learn_limit" in flags:
            steps.append(f"not learned: {mac_str(frame[6:12])} would exceed the port's or the "
                         f"network's learned MACs (max_learned)")
        if "csum_partial" in flags:
            steps.append("inner checksum left partial by the sender (checksum offload on a "
                         "veth/virtio underlay): completed")
        if "segmented" in flags:
            steps.append("TSO super-frame from the sender's underlay: cut to the network MTU")
        vteps = [o for o in outs if o[0] == "vtep"]
        ports = [o for o in outs if o[0] == "port"]
        ingress = int(source[5:]) if from_port else -1
        reply = [o for o in ports if "proxy_reply" in flags and o[1] == ingress]
        # PMTU replies go back to the ingress port too (a flood never does)
        too_big = [o for o in ports if o[1] == ingress and o not in reply]
        local = [o for o in ports if o not in reply and o not in too_big]
        # In the order the switch decides: the bridge part (flood or FDB), local copies,
        # then the "vxlan port" (proxy, or encapsulation).
        if dst and is_multicast_mac(dst):
            kind = "broadcast" if dst == BROADCAST_MAC else "multicast"
            steps.append(f"{kind} {mac_str(dst)}: flood")
        elif dst:
            if from_port and len(outs) == 1 and outs[0][0] == "vtep":
                steps.append(f"FDB hit {mac_str(dst)} → dst {outs[0][1]}")
            elif len(local) == 1 and not vteps:
                steps.append(f"FDB hit {mac_str(dst)} → port {port_name(local[0][1])}")
            elif too_big and not local and len(outs) == 1:
                steps.append(f"FDB hit {mac_str(dst)} → a remote VTEP")
            elif not reply:
                steps.append(f"FDB miss {mac_str(dst)}: flood" + (" (l2miss: no flood list)"
                                                                   if "l2miss" in flags else ""))
        for o in local:
            steps.append(f"deliver to port {port_name(o[1])}")
        nd = is_ns(frame)
        steps += _proxy_steps(frame, flags, vni, nd, neigh_of)
        for o in vteps:
            steps.append(f"encapsulate VNI {vni} UDP {o[2]} > 4789 to VTEP {o[1]}")
        for o in too_big:
            what = ("ICMP fragmentation needed" if "frag_needed" in flags
                    else "ICMPv6 packet too big")
            steps.append(f"{length}-byte frame too big for the path to a remote VTEP: {what} "
                         f"written back to port {port_name(o[1])} instead (PMTU, as the "
                         f"kernel's vxlan does)")
        for o in reply:
            steps.append(f"{'NA' if nd else 'ARP reply'} to port {port_name(o[1])}")
        if not outs and not verdict and not flags:
            steps.append("no destination (no other port)")
    rec["decisions"] = steps
    rec["to"] = [({"port": port_name(o[1])} if o[0] == "port"
                  else {"vtep": o[1], "sport": o[2], "vni": vni}) for o in outs]
    rec["verdict"] = ("dropped" if verdict else "forwarded" if outs else "consumed")
    if verdict:
        rec["drop_reason"] = verdict
    rec["flags"] = list(flags)
    where = f"port {rec['from']['port']}" if from_port else f"vtep {source}"
    stamp = time.strftime("%H:%M:%S", time.localtime(rec["time"])) + f".{int(rec['time'] % 1 * 1e6):06d}"
    rec["line"] = (f"{stamp} {where} vni {vni if vni >= 0 else '-'} {rec['decode']}: "
                   + "; ".join(steps))
    return rec


# --- pcapng (one interface per endpoint port, one for the underlay) ----------------------------

LINKTYPE_ETHERNET = 1
LINKTYPE_IPV4 = 228
LINKTYPE_RAW = 101      # raw IP, the version nibble says which: an underlay of both families


def _pad(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 4)


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def pcapng_header(interfaces: Sequence[tuple[str, int]]) -> bytes:
    """Section header + one Interface Description Block per (name, linktype)."""
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
                 + _opt(4, b"vxdp") + _opt(0, b""))
    idbs = b"".join(
        _block(1, struct.pack("<HHI", lt, 0, 0xFFFF) + _opt(2, name.encode()) + _opt(9, b"\x06")
               + _opt(0, b""))
        for name, lt in interfaces)
    return shb + idbs


def pcapng_packet(iface: int, ts: float, data: bytes, orig_len: int | None = None) -> bytes:
    """Enhanced Packet Block, microsecond timestamps (if_tsresol 6)."""
    us = int(ts * 1e6)
    return _block(6, struct.pack("<IIIII", iface, us >> 32, us & 0xFFFFFFFF, len(data),
                                 orig_len if orig_len is not None else len(data)) + _pad(data))


def capture_blocks(record: Sequence[Any], iface_of_port: Callable[[int], int | None],
                   underlay_iface: int, local: Locals, wall_offset: float) -> list[bytes]:
    """EPBs for one record: the frame on its ingress port (or the datagram on the underlay),
    then every copy that left (frames on ports, datagrams on the underlay), so Wireshark shows
    the same packet before and after encapsulation."""
    now, source, vni, length, data, verdict, outs, _flags = record
    ts = now + wall_offset
    blocks = []
    frame = inner_of(record)
    if source.startswith("port:"):
        i = iface_of_port(int(source[5:]))
        if i is not None:
            blocks.append(pcapng_packet(i, ts, data, length))
    else:
        # The outer headers as they arrived are gone (the UDP socket strips them): rebuild
        # IP/UDP around the payload, source port unknown (0).
        src = ipaddr(source)
        dst = local.of(src.version) or local.primary
        if src.version == 6:
            dgram = outer_datagram(src, dst, 0, data)   # IPv6: a UDP checksum, always
        else:
            dgram = ipv4_header(src, dst, 8 + len(data)) + struct.pack(  # type: ignore[arg-type]
                "!HHHH", 0, 4789, 8 + len(data), 0) + data
        blocks.append(pcapng_packet(underlay_iface, ts, dgram))
    for o in outs:
        if o[0] == "port" and "proxy_reply" in _flags and source == f"port:{o[1]}":
            continue  # the synthesised reply is not in the record; trace shows the decision
        if o[0] == "port":
            i = iface_of_port(o[1])
            if i is not None:
                blocks.append(pcapng_packet(i, ts, frame))
        else:
            payload = vxlan_header(vni) + frame
            dst = ipaddr(o[1])
            src = local.of(dst.version) or local.primary
            blocks.append(pcapng_packet(underlay_iface, ts,
                                        outer_datagram(src, dst, o[2], payload)))
    return blocks


# --- explain: a dry run on a copy of the live tables ----------------------------------------

def _copy_fdb(sim: reference.Switch, rows: Sequence[dict[str, Any]]) -> None:
    """Put a live FDB entry (its ``fdb_get`` rows) into the reference switch ``sim``."""
    for r in rows:
        try:
            if r["port"] is not None:
                fdb = sim._net(r["vni"]).fdb
                if r["state"] != "learned":
                    fdb.add(r["mac"], port=r["port"], state=r["state"])
                else:
                    fdb.replace(r["mac"], port=r["port"], state="learned")
            else:   # one row per remote: append rebuilds multi-remote flood entries
                sim.fdb_append(r["vni"], r["mac"], r["dst"], r["state"],
                               dst_port=r.get("dst_port") or 0, dst_vni=r.get("dst_vni") or 0)
        except VxdpError:
            pass    # e.g. the copy's own maxaddress: the live table decides, not the copy


def _copy_tables(switch: Any, sim: reference.Switch, vni: int, macs: set[bytes],
                 neighbour: dict[str, Any] | None) -> None:
    """Copy into ``sim`` exactly the entries a frame from an endpoint can read: the FDB
    entries of ``macs`` (source, destination, broadcast, all-zeros flood list, the
    neighbour's MAC) and the neighbour entry of the target. One lookup each, whatever the
    size of the live tables, so explain never holds the loop for a table copy."""
    for mac in sorted(macs):
        _copy_fdb(sim, switch.fdb_get(vni, mac_str(mac)))
    if neighbour is not None:
        sim.neigh_replace(vni, neighbour["ip"], neighbour["lladdr"], neighbour["state"])


def _target(to: str) -> bytes | IPv4Address | IPv6Address:
    """explain's ``to``: a MAC (bytes), or an IPv4 / IPv6 address."""
    try:
        return mac_to_bytes(to)
    except ValueError:
        pass
    addr = ipaddr(to)
    return addr


def _copy_for(switch: Any, sim: reference.Switch, vni: int, src_mac: str,
              target: bytes | IPv4Address | IPv6Address,
              local_endpoints: dict[str, tuple[str, str]] | None) -> dict[str, Any] | None:
    """Copy what a frame from ``src_mac`` to ``target`` can read; the target's neighbour
    entry (a row), if it is an address that has one."""
    macs = {mac_to_bytes(src_mac), ZERO_MAC, BROADCAST_MAC}
    n: dict[str, Any] | None = None
    if isinstance(target, bytes):
        macs.add(target)
    else:
        n = switch.neigh_get(vni, str(target))
        local_ep = (local_endpoints or {}).get(str(target))
        for mac in ((n or {}).get("lladdr"), local_ep[1] if local_ep else None):
            if mac:
                macs.add(mac_to_bytes(mac))
    _copy_tables(switch, sim, vni, macs, n)
    return n


def explain(switch: Any, port: int, vni: int, src_mac: str, src_ip: str | Sequence[str] | None,
            to: str, port_name: PortName, network_of: Callable[[int], str],
            network_kwargs: dict[int, dict[str, Any]], ports: Sequence[tuple[int, int]],
            local: Locals, src_port_range: tuple[int, int],
            local_endpoints: dict[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    """What would happen to a frame from endpoint ``port`` to ``to`` (an IPv4 or IPv6
    address, or a MAC), step by step, computed by the reference core on a copy of the live
    entries it reads (nothing is sent, no counter moves). The copy decides exactly as the
    fast path does: the differential tests hold the two equal. ``src_ip``: the endpoint's
    address, or all of them (the one of ``to``'s family is used). :func:`explain_steps` in
    one go."""
    steps = explain_steps(switch, port, vni, src_mac, src_ip, to, port_name, network_of,
                          network_kwargs, ports, local, src_port_range, local_endpoints)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: dict[str, Any] = done.value
            return result


def _echo_request(dmac: bytes, smac: bytes, src: IPv4Address | IPv6Address,
                  dst: IPv4Address | IPv6Address) -> bytes:
    """What ping (or ping -6) would send: an ICMP / ICMPv6 echo request, checksums right."""
    if dst.version == 6:
        body = bytearray(struct.pack("!BBHHH", 128, 0, 0, 1, 1) + b"vxdp explain")
        struct.pack_into("!H", body, 2, icmp6_checksum(src.packed, dst.packed, bytes(body)))
        assert isinstance(src, IPv6Address) and isinstance(dst, IPv6Address)
        return dmac + smac + b"\x86\xdd" + ipv6_header(src, dst, len(body), 64, 58) \
            + bytes(body)
    icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"vxdp explain")
    struct.pack_into("!H", icmp, 2, inet_checksum(bytes(icmp)))
    return dmac + smac + b"\x08\x00" + ipv4_header(src, dst, len(icmp),  # type: ignore[arg-type]
                                                     proto=1) + bytes(icmp)


def explain_steps(switch: Any, port: int, vni: int, src_mac: str,
                  src_ip: str | Sequence[str] | None, to: str, port_name: PortName,
                  network_of: Callable[[int], str],
                  network_kwargs: dict[int, dict[str, Any]], ports: Sequence[tuple[int, int]],
                  local: Locals, src_port_range: tuple[int, int],
                  local_endpoints: dict[str, tuple[str, str]] | None = None
                  ) -> Generator[None, None, dict[str, Any]]:
    """:func:`explain` as a generator that stops between its phases (the copy, the ARP or
    ND exchange, the frame: under a millisecond each), so a caller on the event loop can
    give the loop back in between; it returns the result. The live switch is read only in
    the first phase."""
    sim = reference.Switch(local, src_port_range=src_port_range, strict=True)
    for v, kw in network_kwargs.items():
        sim.add_network(v, **kw)
    for p, pv in ports:
        sim.add_port(p, pv)
    target = _target(to)
    srcs = [ipaddr(a) for a in ([src_ip] if isinstance(src_ip, str) else src_ip or ())]
    n = _copy_for(switch, sim, vni, src_mac, target, local_endpoints)
    yield
    sim.set_trace(True)
    smac = mac_to_bytes(src_mac)
    steps: list[str] = []
    records: list[dict[str, Any]] = []
    version = 4 if isinstance(target, bytes) else target.version
    src = next((a for a in srcs if a.version == version), None)
    if src is None:
        src = IPv4Address("0.0.0.0") if version == 4 else IPv6Address("::")
        if not isinstance(target, bytes):
            steps.append(f"the endpoint has no IPv{version} address: sending from {src}")
    if isinstance(target, bytes):
        dmac = target
        steps.append(f"destination MAC {mac_str(dmac)} given: no ARP needed")
    else:
        if version == 6:
            steps.append(f"resolve {target}: Neighbor Solicitation for {target} from {src} "
                         "(solicited-node multicast)")
            ask = neighbor_solicit(smac, src, target)   # type: ignore[arg-type]
        else:
            steps.append(f"resolve {target}: ARP who-has {target} tell {src} (broadcast)")
            ask = arp_request(smac, src, target)  # type: ignore[arg-type]
        sim.from_port(port, ask, 0.0)
        (rec,) = sim.trace_drain()
        d = describe(rec, port_name, network_of)
        records.append(d)
        steps += ["  " + s for s in d["decisions"]]
        if "proxy_reply" in d["flags"] and n is not None:
            dmac = mac_to_bytes(n["lladdr"])
            steps.append(f"  neighbour {target} lladdr {n['lladdr']} {n['state'].upper()}"
                         f" → answered locally by the VTEP")
        else:
            local_ep = (local_endpoints or {}).get(str(target))
            if local_ep is not None:
                dmac = mac_to_bytes(local_ep[1])
                steps.append(f"  {target} is local endpoint {local_ep[0]} ({local_ep[1]}): "
                             f"it answers the {'solicitation' if version == 6 else 'broadcast'}"
                             " itself")
            else:
                steps.append(f"  no answer for {target}: the frame would not be sent")
                return {"steps": steps, "verdict": "unresolved", "records": records}
        yield
    # The frame itself: an echo request (what ping would send).
    dst_ip = target if not isinstance(target, bytes) else IPv4Address("0.0.0.0")
    frame = _echo_request(dmac, smac, src, dst_ip)
    sim.from_port(port, frame, 0.0)
    (rec,) = sim.trace_drain()
    d = describe(rec, port_name, network_of)
    records.append(d)
    steps.append(f"send {d['decode']} to {mac_str(dmac)}")
    steps += ["  " + s for s in d["decisions"]]
    return {"steps": steps, "verdict": d["verdict"], "to": d["to"], "records": records}
