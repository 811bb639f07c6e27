"""Turning the core's trace records into what people read: one-line decodes, decision lists,
JSON objects, pcapng blocks, and the dry-run ``explain``. Off the fast path: the core only
copies raw records into a bounded ring (``Switch.trace_drain``); everything here runs in
Python, in the control plane, only while someone is watching.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Generator, Sequence
from ipaddress import IPv4Address
from typing import Any

from dataplane import switch as reference
from dataplane.errors import VxdpError
from dataplane.validate import Locals, ipaddr
from dataplane.wire import (
    BROADCAST_MAC,
    ETH_HLEN,
    ZERO_MAC,
    arp_request,
    ipv4_header,
    is_multicast_mac,
    mac_str,
    mac_to_bytes,
    outer_datagram,
    vxlan_header,
)

PortName = Callable[[int], str]


# --- decoding ----------------------------------------------------------------------------------

def decode(frame: bytes) -> str:
    """One line for an Ethernet frame, in tcpdump's words ("ARP who-has A tell B",
    "ICMP echo-request A > B"). scapy is fine here: this is never on the fast path."""
    if len(frame) < ETH_HLEN:
        return f"runt frame ({len(frame)} bytes)"
    try:
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
        if "proxy_reply" in flags:
            tpa = str(IPv4Address(frame[38:42])) if len(frame) >= 42 else "?"
            entry = neigh_of(vni, tpa) if neigh_of is not None else None
            steps.append("ARP request at the vxlan port, proxy on: neighbour table hit"
                         + (f" ({tpa} lladdr {entry})" if entry else ""))
            steps.append("proxy reply written back to the ingress port (never tunnelled)")
        elif "l3miss" in flags:
            steps.append("ARP request at the vxlan port, proxy on: no neighbour entry (l3miss)")
        elif "arp_local" in flags:
            steps.append("ARP for a local endpoint: proxy stays silent, the endpoint answers")
        elif "arp_consumed" in flags:
            steps.append("ARP consumed at the vxlan port (proxy on)")
        for o in vteps:
            steps.append(f"encapsulate VNI {vni} UDP {o[2]} > 4789 to VTEP {o[1]}")
        for o in too_big:
            what = ("ICMP fragmentation needed" if "frag_needed" in flags
                    else "ICMPv6 packet too big")
            steps.append(f"{length}-byte frame too big for the path to a remote VTEP: {what} "
                         f"written back to port {port_name(o[1])} instead (PMTU, as the "
                         f"kernel's vxlan does)")
        for o in reply:
            steps.append(f"ARP reply to port {port_name(o[1])}")
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


def explain(switch: Any, port: int, vni: int, src_mac: str, src_ip: str | None, to: str,
            port_name: PortName, network_of: Callable[[int], str],
            network_kwargs: dict[int, dict[str, Any]], ports: Sequence[tuple[int, int]],
            local: Locals, src_port_range: tuple[int, int],
            local_endpoints: dict[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    """What would happen to a frame from endpoint ``port`` to ``to`` (IPv4 or MAC), step by
    step, computed by the reference core on a copy of the live entries it reads (nothing is
    sent, no counter moves). The copy decides exactly as the fast path does: the
    differential tests hold the two equal. :func:`explain_steps` in one go."""
    steps = explain_steps(switch, port, vni, src_mac, src_ip, to, port_name, network_of,
                          network_kwargs, ports, local, src_port_range, local_endpoints)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: dict[str, Any] = done.value
            return result


def explain_steps(switch: Any, port: int, vni: int, src_mac: str, src_ip: str | None,
                  to: str, port_name: PortName, network_of: Callable[[int], str],
                  network_kwargs: dict[int, dict[str, Any]], ports: Sequence[tuple[int, int]],
                  local: Locals, src_port_range: tuple[int, int],
                  local_endpoints: dict[str, tuple[str, str]] | None = None
                  ) -> Generator[None, None, dict[str, Any]]:
    """:func:`explain` as a generator that stops between its phases (the copy, the ARP
    exchange, the frame: under a millisecond each), so a caller on the event loop can give
    the loop back in between; it returns the result. The live switch is read only in the
    first phase."""
    sim = reference.Switch(local, src_port_range=src_port_range, strict=True)
    for v, kw in network_kwargs.items():
        sim.add_network(v, **kw)
    for p, pv in ports:
        sim.add_port(p, pv)
    macs = {mac_to_bytes(src_mac), ZERO_MAC, BROADCAST_MAC}
    n: dict[str, Any] | None = None
    if ":" in to:
        macs.add(mac_to_bytes(to))
    else:
        n = switch.neigh_get(vni, to)
        local_ep = (local_endpoints or {}).get(str(IPv4Address(to)))
        for mac in ((n or {}).get("lladdr"), local_ep[1] if local_ep else None):
            if mac:
                macs.add(mac_to_bytes(mac))
    _copy_tables(switch, sim, vni, macs, n)
    yield
    sim.set_trace(True)
    smac = mac_to_bytes(src_mac)
    steps: list[str] = []
    records: list[dict[str, Any]] = []
    if ":" in to:
        dmac = mac_to_bytes(to)
        steps.append(f"destination MAC {mac_str(dmac)} given: no ARP needed")
    else:
        dst_ip = IPv4Address(to)
        steps.append(f"resolve {dst_ip}: ARP who-has {dst_ip} tell {src_ip} (broadcast)")
        sim.from_port(port, arp_request(smac, src_ip or "0.0.0.0", dst_ip), 0.0)
        (rec,) = sim.trace_drain()
        d = describe(rec, port_name, network_of)
        records.append(d)
        steps += ["  " + s for s in d["decisions"]]
        if "proxy_reply" in d["flags"] and n is not None:
            dmac = mac_to_bytes(n["lladdr"])
            steps.append(f"  neighbour {dst_ip} lladdr {n['lladdr']} {n['state'].upper()}"
                         f" → answered locally by the VTEP")
        else:
            local_ep = (local_endpoints or {}).get(str(dst_ip))
            if local_ep is not None:
                dmac = mac_to_bytes(local_ep[1])
                steps.append(f"  {dst_ip} is local endpoint {local_ep[0]} ({local_ep[1]}): "
                             f"it answers the broadcast itself")
            else:
                steps.append(f"  no answer for {dst_ip}: the frame would not be sent")
                return {"steps": steps, "verdict": "unresolved", "records": records}
        yield
    # The frame itself: an ICMP echo request (what ping would send).
    icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"vxdp explain"
    ip_src = IPv4Address(src_ip or "0.0.0.0")
    ip_dst = IPv4Address(to) if ":" not in to else IPv4Address("0.0.0.0")
    frame = dmac + smac + b"\x08\x00" + ipv4_header(ip_src, ip_dst, len(icmp), proto=1) + icmp
    sim.from_port(port, frame, 0.0)
    (rec,) = sim.trace_drain()
    d = describe(rec, port_name, network_of)
    records.append(d)
    steps.append(f"send {d['decode']} to {mac_str(dmac)}")
    steps += ["  " + s for s in d["decisions"]]
    return {"steps": steps, "verdict": d["verdict"], "to": d["to"], "records": records}
