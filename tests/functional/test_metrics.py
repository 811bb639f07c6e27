"""[vtep] metrics: the Prometheus text endpoint serves the stats counters."""

from __future__ import annotations

import sys

from tests.functional.vxdp_world import VNI, World, build_walkthrough, tcp_transfer

SCRAPE = ("import urllib.request, sys; "
          "sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9477/metrics', "
          "timeout=5).read().decode())")


def scrape(w: World) -> str:
    # The endpoint listens on the manager's loopback, inside its namespace.
    p = w.lab.run("manager", [sys.executable, "-c", SCRAPE], check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


def value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in:\n{text}")


def test_metrics_follow_stats(world: World) -> None:
    wt = build_walkthrough(world, manager={"metrics": "127.0.0.1:9477"})
    c1, c2, manager = wt.c1, wt.c2, wt.manager

    before = scrape(world)
    assert value(before, "vxdp_drops_total", reason="unknown_vni") == 0
    world.assert_ping(c1, c2.ip)
    after = scrape(world)
    stats = manager.stats()
    tx = stats["ports"][c1.ns]["tx_packets"]
    assert tx >= 3
    assert value(after, "vxdp_port_total", port=c1.ns, counter="tx_packets",
                 vni=str(VNI)) == tx
    assert value(after, "vxdp_underlay_total", counter="tx_packets") == \
        stats["underlay"]["tx_packets"]
    assert value(after, "vxdp_endpoints") == 2
    assert stats["paths"], stats            # the worker's VTEP, measured at start
    for addr, path in stats["paths"].items():
        assert value(after, "vxdp_path_mtu", remote=addr) == path["mtu"] == 1500

    # The offload counters and what is active (C path, default config: all offloads on):
    # after a TCP transfer from c1 they are non-zero and equal to `vxdp stats`.
    t = tcp_transfer(world, c2, c1, 4 << 20, port=5281, seed=5)
    assert t.sent == t.received and t.sent_sha == t.received_sha
    text = scrape(world)
    off = manager.stats()["offload"]
    for counter in ("tso_segments", "gso_sends", "gro_buffers", "csum_completed"):
        assert value(text, "vxdp_offload_total", counter=counter) == off["counters"][counter]
    assert off["counters"]["tso_segments"] > 0 and off["counters"]["gso_sends"] > 0
    for name in ("udp_gso", "udp_gro", "tap_coalesce"):
        assert value(text, "vxdp_offload_active", offload=name) == 1
    assert value(text, "vxdp_gso_sockets") == off["counters"]["gso_sockets"] >= 1
