"""Observability of a running VTEP (DESIGN.md §4): ``vxdp trace``, ``vxdp capture``,
``vxdp explain`` and ``vxdp events``, driven through the CLI against real namespaces.

World: the reference walkthrough (manager: c1 .4 and c3 .5; worker: c2 .3; VNI 4097, proxy on),
shared by the tests that only watch it; the events test builds its own one-node world without a
flood list. Streams have no "ready" signal, so every test that watches a stream keeps making
traffic (one ping / arping at a time) until the stream has shown what it waits for, under a
deadline: never a timing assertion.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from dataplane.control import ControlClient
from tests.functional.vxdp_world import (
    C1_IP,
    C2_IP,
    C2_MAC,
    C3_IP,
    C3_MAC,
    MANAGER,
    ROOT,
    VNI,
    WORKER,
    Vtep,
    Walkthrough,
    World,
    network,
)

pytestmark = pytest.mark.privileged

UNKNOWN_IP = "192.168.55.99"
SPORT_RANGE = range(49152, 65536)
ECHO_REQUEST = f"ICMP echo-request {C1_IP} > {C2_IP}"
ECHO_REPLY = f"ICMP echo-reply {C2_IP} > {C1_IP}"


# --------------------------------------------------------------------------- helpers

class Live:
    """A streaming ``vxdp`` command (trace, capture, events) run as a subprocess, its stdout
    read as it comes without ever blocking the test."""

    def __init__(self, vtep: Vtep, *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dataplane", "-s", vtep.sock, *args], cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._out = b""
        self.err = ""

    def _pump(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            self._out += os.read(fd, 1 << 16)

    def lines(self) -> list[str]:
        return [ln for ln in self._out.decode(errors="replace").splitlines() if ln.strip()]

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(ln) for ln in self.lines()]

    def drive(self, poke: Callable[[], object],
              until: Callable[[list[str]], bool] | None = None, timeout: float = 15.0,
              ) -> list[str]:
        """Call ``poke`` (make one bit of traffic) and read, until ``until(lines)`` holds or,
        without ``until``, the command ends by itself (``--count``)."""
        deadline = time.monotonic() + timeout
        while True:
            if until is not None and until(self.lines()):
                return self.lines()
            if self.proc.poll() is not None:
                rc = self.finish()
                if until is None or until(self.lines()):
                    return self.lines()
                raise AssertionError(f"vxdp {' '.join(self.args)} exited {rc} early: "
                                     f"{self.err.strip()}\n" + "\n".join(self.lines()))
            if time.monotonic() > deadline:
                raise AssertionError(f"vxdp {' '.join(self.args)}: nothing conclusive within "
                                     f"{timeout:.0f}s; it printed:\n" + "\n".join(self.lines()))
            poke()
            self._pump(0.2)

    def complete(self, poke: Callable[[], object]) -> Live:
        """:meth:`drive` until the command ends by itself (``--count``), then check that it
        exited 0; stopped whatever happens."""
        try:
            self.drive(poke)
        finally:
            self.kill()
        assert self.proc.returncode == 0, self.err
        return self

    def finish(self, timeout: float = 10.0) -> int:
        """Wait for the command to end by itself; its exit code (stdout and stderr kept)."""
        out, err = self.proc.communicate(timeout=timeout)
        self._out += out or b""
        self.err += (err or b"").decode(errors="replace")
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        out, err = self.proc.communicate(timeout=10)
        self._out += out or b""
        self.err += (err or b"").decode(errors="replace")


def ping1(wt: Walkthrough, dst: str = C2_IP) -> None:
    wt.world.lab.run(wt.c1.name, ["ping", "-c", "1", "-W", "1", dst], check=False, timeout=10)


def arping1(world: World, ns: str, dst: str) -> None:
    world.lab.run(ns, ["arping", "-i", "eth0", "-c", "1", "-W", "0.2", dst], check=False,
                  timeout=10)


def counters(v: Vtep) -> dict[str, Any]:
    s = v.stats()
    return {k: s[k] for k in ("ports", "underlay", "drops", "counters")}


def assert_one_line_error(p: subprocess.CompletedProcess[str]) -> None:
    assert p.returncode != 0, p.stdout
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vxdp: "), p.stderr


# --------------------------------------------------------------------------- trace

def test_trace_json_ping_across_nodes(wt: Walkthrough) -> None:
    """Echo requests from c1 name the worker's VTEP, VNI and a flow source port; echo replies
    come from the worker's VTEP and go to c1's port. ``--count`` ends the command."""
    tr = Live(wt.manager, "trace", "--json", "--count", "6")
    tr.complete(lambda: ping1(wt))
    recs = tr.records()
    assert len(recs) == 6, tr.lines()
    for r in recs:
        assert {"from", "decode", "decisions", "to", "verdict", "flags", "line"} <= r.keys(), r
    reqs = [r for r in recs if ECHO_REQUEST in r["decode"]]
    reps = [r for r in recs if ECHO_REPLY in r["decode"]]
    assert reqs and reps and len(reqs) + len(reps) >= 4, [r["line"] for r in recs]
    assert all(r in reqs or r in reps or r["decode"].startswith("ARP ") for r in recs), recs
    for r in reqs:
        assert r["from"] == {"port": wt.c1.tap}, r
        (to,) = r["to"]
        assert to["vtep"] == WORKER and to["vni"] == VNI, r
        assert to["sport"] in SPORT_RANGE, r
        assert r["vni"] == VNI and r["verdict"] == "forwarded" and "drop_reason" not in r, r
        assert any(WORKER in d and "encapsulate" in d for d in r["decisions"]), r["decisions"]
    # One flow (same inner IPs and protocol), one outer source port.
    assert len({r["to"][0]["sport"] for r in reqs}) == 1, reqs
    for r in reps:
        assert r["from"] == {"vtep": WORKER}, r
        assert r["to"] == [{"port": wt.c1.tap}], r
        assert r["vni"] == VNI and r["verdict"] == "forwarded", r


def test_trace_text_one_line_per_record(wt: Walkthrough) -> None:
    tap = wt.c1.tap
    tr = Live(wt.manager, "trace", "--count", "4", "--port", tap)
    tr.complete(lambda: ping1(wt))
    lines = tr.lines()
    assert len(lines) == 4, lines
    reqs = [ln for ln in lines if ECHO_REQUEST in ln]
    reps = [ln for ln in lines if ECHO_REPLY in ln]
    # Besides the pings, at most a neighbour probe of c1's (ARP) may show up.
    assert reqs and reps and len(reqs) + len(reps) >= 3, lines
    for ln in lines:
        assert ln in reqs or ln in reps or " ARP " in ln, ln
        assert not ln.startswith("{"), f"text mode printed JSON: {ln}"
        assert f"vni {VNI}" in ln, ln
    for ln in reqs:
        assert f"port {tap}" in ln and f"to VTEP {WORKER}" in ln, ln
        m = re.search(r"UDP (\d+) > 4789", ln)
        assert m and int(m.group(1)) in SPORT_RANGE, ln
    for ln in reps:
        assert f"vtep {WORKER}" in ln and f"deliver to port {tap}" in ln, ln


def test_trace_port_and_vni_filters(wt: Walkthrough) -> None:
    """A filter for another port shows nothing of c1 ↔ c2 traffic, while a matching filter
    (running at the same time) does; a VNI this VTEP does not serve is refused."""
    bad_vni = wt.manager.cli("trace", "--json", "--count", "1", "--vni", str(VNI + 1),
                             check=False)
    assert bad_vni.returncode != 0 and "VNI" in bad_vni.stderr, bad_vni
    assert "Traceback" not in bad_vni.stderr and len(bad_vni.stderr.strip().splitlines()) == 1
    other_port = Live(wt.manager, "trace", "--json", "--count", "1", "--port", wt.c3.tap)
    try:
        match = Live(wt.manager, "trace", "--json", "--count", "2", "--port", wt.c1.tap,
                     "--vni", str(VNI))
        match.complete(lambda: ping1(wt))
        recs = match.records()
        assert len(recs) == 2 and all(r["vni"] == VNI for r in recs), recs
        assert all({"port": wt.c1.tap} in [r["from"], *r["to"]] for r in recs), recs
        # More traffic, then a bounded look at the non-matching watchers: still silent.
        for _ in range(3):
            ping1(wt)
        for live in (other_port,):
            live._pump(0.5)
            assert live.lines() == [], f"vxdp {' '.join(live.args)} showed: {live.lines()}"
            assert live.proc.poll() is None, live.proc.communicate()
    finally:
        other_port.kill()
    # A filter naming no endpoint is refused in one line.
    p = wt.manager.cli("trace", "--count", "1", "--port", "nosuchport", check=False)
    assert_one_line_error(p)
    assert "nosuchport" in p.stderr
    assert wt.manager.alive()


def test_trace_arp_answered_by_the_proxy(wt: Walkthrough) -> None:
    """An ARP request from c1 for c2 (remote): the record says the proxy answered it from the
    neighbour table and that nothing was tunnelled."""
    tr = Live(wt.manager, "trace", "--json", "--port", wt.c1.tap)
    who_has = f"ARP who-has {C2_IP} tell {C1_IP}"
    try:
        tr.drive(lambda: arping1(wt.world, wt.c1.name, C2_IP),
                 until=lambda ls: any(who_has in ln for ln in ls))
    finally:
        tr.kill()
    recs = [r for r in tr.records() if who_has in r["decode"]]
    assert recs, tr.lines()
    for r in recs:
        assert r["from"] == {"port": wt.c1.tap}, r
        assert "proxy_reply" in r["flags"], r
        assert any("neighbour table" in d for d in r["decisions"]), r["decisions"]
        assert not any("vtep" in o for o in r["to"]), f"ARP request tunnelled: {r}"
        # The reply goes back out of the ingress port.
        assert {"port": wt.c1.tap} in r["to"], r


# --------------------------------------------------------------------------- capture

def test_capture_has_inner_frame_and_vxlan_datagram(wt: Walkthrough) -> None:
    path = os.path.join(wt.world.tmp, "ping.pcapng")
    cap = Live(wt.manager, "capture", "-w", path, "--count", "8")
    cap.complete(lambda: ping1(wt))
    m = re.search(r"(\d+) packets? written to (.+)", "\n".join(cap.lines()))
    assert m and int(m.group(1)) >= 8 and m.group(2).strip() == path, cap.lines()
    assert shutil.which("tshark"), "tshark is needed to read the capture back"
    fields = ["frame.interface_name", "ip.src", "ip.dst", "vxlan.vni", "icmp.type",
              "udp.srcport", "udp.dstport"]
    argv = ["tshark", "-r", path, "-d", "udp.port==4789,vxlan", "-T", "fields",
            "-E", "separator=|"]
    for f in fields:
        argv += ["-e", f]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    rows = [dict(zip(fields, ln.split("|"))) for ln in p.stdout.splitlines() if ln.strip()]
    assert len(rows) == int(m.group(1)), p.stdout      # every packet block is readable
    # The inner ICMP echo request as it left c1, on c1's interface...
    inner = [r for r in rows if r["frame.interface_name"] == wt.c1.tap
             and r["ip.src"] == C1_IP and r["ip.dst"] == C2_IP and r["icmp.type"] == "8"]
    assert inner, p.stdout
    assert all(r["vxlan.vni"] == "" for r in inner), inner
    # ...and the same packet encapsulated on the underlay: outer manager > worker, VNI 4097.
    outer = [r for r in rows if r["frame.interface_name"] == "underlay"
             and r["ip.src"].split(",") == [MANAGER, C1_IP]
             and r["ip.dst"].split(",") == [WORKER, C2_IP]]
    assert outer, p.stdout
    for r in outer:
        assert r["vxlan.vni"] == str(VNI) and r["icmp.type"] == "8", r
        assert r["udp.dstport"] == "4789" and int(r["udp.srcport"]) in SPORT_RANGE, r


# --------------------------------------------------------------------------- explain

def test_explain_remote_agrees_with_trace_and_sends_nothing(wt: Walkthrough) -> None:
    m = wt.manager
    ping1(wt)      # whatever the containers' ARP caches hold, the world is quiet afterwards
    before = counters(m)
    res = m.cli_json("explain", "--from", wt.c1.tap, "--to", C2_IP)
    text = m.cli("explain", "--from", wt.c1.tap, "--to", C2_IP).stdout.splitlines()
    assert counters(m) == before, "explain moved a counter (something was sent)"

    steps = "\n".join(res["steps"])
    assert "neighbour" in steps and "proxy" in steps, steps          # ARP by the proxy
    assert C2_MAC in steps, steps                                     # resolved to c2's MAC
    assert re.search(rf"FDB hit {C2_MAC} → dst {re.escape(WORKER)}", steps), steps
    assert re.search(rf"encapsulate VNI {VNI} .*{re.escape(WORKER)}", steps), steps
    assert res["verdict"] == "forwarded", res
    (to,) = res["to"]
    assert to["vtep"] == WORKER and to["vni"] == VNI and to["sport"] in SPORT_RANGE, res
    # Text form: numbered steps, the verdict last.
    assert text[0].lstrip().startswith("1. ") and text[-1] == "=> forwarded", text
    assert any(WORKER in ln for ln in text), text

    # A real ping takes the path explain described: same VTEP, same flow source port, and the
    # datagram on the wire carries that source port too.
    wire = wt.world.tcpdump("manager", f"udp and dst host {WORKER}")
    tr = Live(m, "trace", "--json", "--port", wt.c1.tap)
    try:
        tr.drive(lambda: ping1(wt), until=lambda ls: any(ECHO_REQUEST in ln for ln in ls))
        wire.wait_for(f"> {WORKER}.4789")
    finally:
        tr.kill()
        seen = wire.stop()
    (req, *_) = [r for r in tr.records() if ECHO_REQUEST in r["decode"]]
    assert req["to"] == res["to"], (req, res)
    sports = {int(s) for s in re.findall(rf"{re.escape(MANAGER)}\.(\d+) > "
                                          rf"{re.escape(WORKER)}\.4789", seen)}
    assert sports == {to["sport"]}, seen


def test_explain_local_unknown_and_bad_endpoint(wt: Walkthrough) -> None:
    m = wt.manager
    before = counters(m)
    # A local endpoint: the frame is delivered to its port, nothing is tunnelled.
    local = m.cli_json("explain", "--from", wt.c1.tap, "--to", C3_IP)
    assert local["verdict"] == "forwarded", local
    assert local["to"] == [{"port": wt.c3.tap}], local
    assert any(f"deliver to port {wt.c3.tap}" in s for s in local["steps"]), local["steps"]
    # A MAC destination skips ARP.
    by_mac = m.cli_json("explain", "--from", wt.c1.tap, "--to", C3_MAC)
    assert by_mac["to"] == [{"port": wt.c3.tap}], by_mac
    # Nobody has this address: l3miss, unresolved, and still exit 0 with a clear verdict.
    unknown = m.cli_json("explain", "--from", wt.c1.tap, "--to", UNKNOWN_IP)
    assert unknown["verdict"] == "unresolved", unknown
    assert not unknown.get("to"), unknown
    assert any("l3miss" in s for s in unknown["steps"]), unknown["steps"]
    p = m.cli("explain", "--from", wt.c1.tap, "--to", UNKNOWN_IP)
    assert p.stdout.splitlines()[-1] == "=> unresolved", p.stdout
    assert counters(m) == before, "explain moved a counter"
    # Bad input: one line on stderr, non-zero exit, no traceback, nothing on stdout.
    p = m.cli("explain", "--from", "nosuchep", "--to", C2_IP, check=False)
    assert_one_line_error(p)
    assert "nosuchep" in p.stderr and p.stdout == ""
    p = m.cli("explain", "--from", wt.c1.tap, "--to", "not-an-address", check=False)
    assert_one_line_error(p)
    assert p.returncode == 2
    assert m.alive()


# --------------------------------------------------------------------------- slow readers

FLOOD_COUNT = 3000
# The raw client reads this many records in all: far fewer than a full queue (4096) holds,
# so once the flood has overflowed its queue, reading them never waits for more traffic.
RAW_RECORDS = 2000


def test_slow_trace_readers_do_not_stall_forwarding(wt: Walkthrough) -> None:
    """Two trace clients that read nothing during a ping flood: the CLI (stdout pipe never
    read) and a raw control client. Forwarding goes on, the VTEP keeps answering, and the
    raw client's stream, once read, ends with the records it lost counted."""
    w, m = wt.world, wt.manager
    slow_cli = subprocess.Popen(
        [sys.executable, "-m", "dataplane", "-s", m.sock, "trace", "--json"], cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    client = ControlClient(m.sock)
    stream = client.stream("trace", count=RAW_RECORDS)
    first: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: first.append(next(stream)), daemon=True)
    flood: subprocess.Popen[str] | None = None
    try:
        reader.start()
        deadline = time.monotonic() + 15
        while reader.is_alive():      # the raw client is subscribed once it has one record
            assert time.monotonic() < deadline, "the raw trace client got no record"
            ping1(wt)
            reader.join(0.2)
        assert first, "the raw trace stream ended at once"

        flood = w.lab.popen(wt.c1.name, ["ping", "-f", "-c", str(FLOOD_COUNT), "-W", "1",
                                         C2_IP], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
        answered = 0
        while flood.poll() is None:
            assert m.stats()["vtep"]["name"] == "manager"   # the control plane answers
            answered += 1
            time.sleep(0.2)
        out, err = flood.communicate(timeout=60)
        assert answered >= 1
        mm = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert mm, out + err
        sent, received = int(mm.group(1)), int(mm.group(2))
        assert sent == FLOOD_COUNT and received >= sent * 0.98, out
        assert m.alive() and slow_cli.poll() is None

        # Now read the raw stream: it ends at its count, with the overflow counted.
        rest: list[int] = []
        drain = threading.Thread(target=lambda: rest.append(sum(1 for _ in stream)),
                                 daemon=True)
        drain.start()
        drain.join(30)
        assert rest, f"the raw trace stream did not reach its count ({client.end})"
        got = len(first) + rest[0]
        assert got == RAW_RECORDS, (got, client.end)
        assert client.end is not None and client.end.get("records") == RAW_RECORDS, client.end
        assert client.end.get("lost", 0) + client.end.get("ring_lost", 0) > 0, client.end
    finally:
        with contextlib.suppress(ValueError):   # the reader thread may still hold it
            stream.close()
        if flood is not None and flood.poll() is None:
            flood.kill()
            flood.communicate()
        slow_cli.kill()
        slow_cli.communicate(timeout=10)
    # With the slow CLI gone, the VTEP is fine.
    assert m.alive()
    assert m.stats()["ports"][wt.c1.tap]["rx_packets"] >= FLOOD_COUNT
    w.assert_ping(wt.c1, C2_IP)
    assert "Traceback" not in m.log(), m.log()


# --------------------------------------------------------------------------- events

def test_events_l3miss_and_l2miss(world: World) -> None:
    """One node, proxy on, no flood list: an ARP request for an unknown IP is an l3miss; a
    unicast frame to an unknown MAC (nowhere to flood it) is an l2miss."""
    w = world
    w.hosts(("manager", MANAGER))
    c1 = w.container("manager", "c1", C1_IP)
    m = w.start_vxdp("manager", w.vtep_config("manager", MANAGER, [network(
        "mynet", VNI, endpoints=[c1], proxy=True)]))
    assert not any(e["mac"] == "00:00:00:00:00:00" for e in m.fdb())
    bogus_ip, bogus_mac = "192.168.55.77", "02:42:00:00:00:77"
    w.lab.run(c1.name, ["ip", "neigh", "replace", bogus_ip, "lladdr", bogus_mac,
                        "dev", "eth0"])
    js = Live(m, "events", "--json")
    txt = Live(m, "events")

    def both_show(kind: str) -> Callable[[list[str]], bool]:
        def check(lines: list[str]) -> bool:
            txt._pump(0)
            return (any(f'"{kind}"' in ln for ln in lines)
                    and any(ln.startswith(kind + " ") for ln in txt.lines()))
        return check

    try:
        js.drive(lambda: arping1(w, c1.name, UNKNOWN_IP), until=both_show("l3miss"))
        js.drive(lambda: w.lab.run(c1.name, ["ping", "-c", "1", "-W", "0.3", bogus_ip],
                                   check=False, timeout=10),
                 until=both_show("l2miss"))
    finally:
        js.kill()
        txt.kill()
    evs = js.records()
    l3 = [e for e in evs if e["kind"] == "l3miss"]
    l2 = [e for e in evs if e["kind"] == "l2miss"]
    assert l3 and all(e["ip"] == UNKNOWN_IP and e["vni"] == VNI and e["network"] == "mynet"
                      for e in l3), evs
    assert l2 and all(e["mac"] == bogus_mac and e["vni"] == VNI for e in l2), evs
    # Text mode: lines shaped like `ip monitor neigh`.
    assert any(ln.startswith(f"l3miss {UNKNOWN_IP} dev mynet vni {VNI}")
               for ln in txt.lines()), txt.lines()
    assert any(ln.startswith(f"l2miss {bogus_mac} dev mynet vni {VNI}")
               for ln in txt.lines()), txt.lines()
    c = m.stats()["counters"]
    assert c["l3miss"] >= 1 and c["l2miss"] >= 1, c
    m.stop()
