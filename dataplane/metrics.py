"""Optional Prometheus text endpoint (``[vtep] metrics = "127.0.0.1:9477"``).

A custom collector reads ``Vtep.stats()`` at scrape time, so the dataplane keeps no extra
state and pays nothing between scrapes. prometheus-client serves it from its own thread; the
counters it reads are plain integers copied under the GIL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from dataplane.errors import VxdpError


def start(address: str, stats: Callable[[], dict[str, Any]]) -> Any:
    """Serve ``stats()`` as Prometheus metrics on ``host:port``; returns the server."""
    try:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from prometheus_client.registry import CollectorRegistry
        from prometheus_client.exposition import start_http_server
    except ImportError:
        raise VxdpError("[vtep] metrics needs the prometheus-client package "
                        "(pip install prometheus-client)") from None

    class Collector:
        def collect(self) -> Iterator[Any]:
            s = stats()
            vtep = s["vtep"]["name"]
            port = CounterMetricFamily("vxdp_port", "Per-endpoint traffic",
                                       labels=["vtep", "port", "network", "vni", "counter"])
            for name, c in s["ports"].items():
                for key, value in c.items():
                    if key not in ("network", "vni") and isinstance(value, int):
                        port.add_metric([vtep, name, c["network"], str(c["vni"]), key], value)
            yield port
            under = CounterMetricFamily("vxdp_underlay", "Underlay datagrams and bytes",
                                        labels=["vtep", "counter"])
            for key, value in s["underlay"].items():
                under.add_metric([vtep, key], value)
            yield under
            drops = CounterMetricFamily("vxdp_drops", "Dropped frames/datagrams by reason",
                                        labels=["vtep", "reason"])
            for reason, value in s["drops"].items():
                drops.add_metric([vtep, reason], value)
            yield drops
            other = CounterMetricFamily("vxdp_decisions", "Proxy replies, misses, learning",
                                        labels=["vtep", "kind"])
            for kind, value in s["counters"].items():
                other.add_metric([vtep, kind], value)
            yield other
            off = s.get("offload", {})
            offc = CounterMetricFamily("vxdp_offload", "TSO/GSO/GRO offload work (issue #5)",
                                       labels=["vtep", "counter"])
            for key, value in off.get("counters", {}).items():
                if key != "gso_sockets":
                    offc.add_metric([vtep, key], value)
            yield offc
            active = GaugeMetricFamily("vxdp_offload_active", "1 if the offload is in use",
                                       labels=["vtep", "offload"])
            for key in ("udp_gso", "udp_gro", "tap_coalesce"):
                active.add_metric([vtep, key], 1 if off.get(key) else 0)
            yield active
            socks = GaugeMetricFamily("vxdp_gso_sockets",
                                      "Per-source-port UDP sockets open for UDP GSO",
                                      labels=["vtep"])
            socks.add_metric([vtep], off.get("counters", {}).get("gso_sockets", 0))
            yield socks
            up = GaugeMetricFamily("vxdp_endpoints", "Attached endpoints", labels=["vtep"])
            up.add_metric([vtep], len(s["ports"]))
            yield up

    host, _, port_s = address.rpartition(":")
    registry = CollectorRegistry()
    registry.register(Collector())  # type: ignore[arg-type]
    try:
        return start_http_server(int(port_s), addr=host or "127.0.0.1", registry=registry)
    except OSError as e:
        raise VxdpError(f"[vtep] metrics: cannot listen on {address}: {e.strerror}") from None
