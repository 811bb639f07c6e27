"""Optional Prometheus text endpoint (``[vtep] metrics = "127.0.0.1:9477"``).

A custom collector reads ``Vtep.stats()`` at scrape time, so the dataplane keeps no extra
state and pays nothing between scrapes. prometheus-client serves it from its own thread; the
counters it reads are plain integers copied under the GIL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dataplane.errors import VxdpError

#: The ``vxdp stats`` sections served as one counter family each: (metric, help, label, section).
_SECTIONS = (
    ("vxdp_underlay", "Underlay datagrams and bytes", "counter", "underlay"),
    ("vxdp_drops", "Dropped frames/datagrams by reason", "reason", "drops"),
    ("vxdp_decisions", "Proxy replies, misses, learning", "kind", "counters"),
)


def start(address: str, stats: Callable[[], dict[str, Any]]) -> Any:
    """Serve ``stats()`` as Prometheus metrics on ``host:port``; returns the server."""
    try:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from prometheus_client.registry import CollectorRegistry
        from prometheus_client.exposition import start_http_server
    except ImportError:
        raise VxdpError("[vtep] metrics needs the prometheus-client package "
                        "(pip install prometheus-client)") from None

    def family(kind: Any, name: str, text: str, labels: list[str],
               rows: Iterable[tuple[list[str], int]], vtep: str) -> Any:
        """One metric family, its rows labelled with the VTEP's name first."""
        fam = kind(name, text, labels=["vtep", *labels])
        for values, value in rows:
            fam.add_metric([vtep, *values], value)
        return fam

    class Collector:
        def collect(self) -> Iterator[Any]:
            s = stats()
            vtep = s["vtep"]["name"]
            off = s.get("offload", {})
            oc = off.get("counters", {})
            yield family(CounterMetricFamily, "vxdp_port", "Per-endpoint traffic",
                         ["port", "network", "vni", "counter"],
                         (([name, c["network"], str(c["vni"]), key], value)
                          for name, c in s["ports"].items() for key, value in c.items()
                          if key not in ("network", "vni") and isinstance(value, int)), vtep)
            for name, text, label, section in _SECTIONS:
                yield family(CounterMetricFamily, name, text, [label],
                             (([k], v) for k, v in s[section].items()), vtep)
            yield family(CounterMetricFamily, "vxdp_offload",
                         "TSO/GSO/GRO offload work, as in vxdp stats", ["counter"],
                         (([k], v) for k, v in oc.items() if k != "gso_sockets"), vtep)
            yield family(GaugeMetricFamily, "vxdp_offload_active", "1 if the offload is in use",
                         ["offload"], (([k], 1 if off.get(k) else 0)
                                       for k in ("udp_gso", "udp_gro", "tap_coalesce")), vtep)
            yield family(GaugeMetricFamily, "vxdp_gso_sockets",
                         "Per-source-port UDP sockets open for UDP GSO", [],
                         [([], oc.get("gso_sockets", 0))], vtep)
            yield family(GaugeMetricFamily, "vxdp_endpoints", "Attached endpoints", [],
                         [([], len(s["ports"]))], vtep)
            yield family(GaugeMetricFamily, "vxdp_path_mtu",
                         "Route MTU to each remote VTEP, as in vxdp stats", ["remote"],
                         (([addr], p["mtu"]) for addr, p in s.get("paths", {}).items()), vtep)

    host, _, port_s = address.rpartition(":")
    registry = CollectorRegistry()
    registry.register(Collector())  # type: ignore[arg-type]
    try:
        return start_http_server(int(port_s), addr=host or "127.0.0.1", registry=registry)
    except OSError as e:
        raise VxdpError(f"[vtep] metrics: cannot listen on {address}: {e.strerror}") from None
