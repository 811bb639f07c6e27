"""Lab equipment for the demo, the functional tests and the benchmarks: network namespaces
standing in for hosts and containers (DESIGN.md §5), and what runs in them.

* :mod:`~dataplane.lab.namespaces`: :class:`Lab`, the underlay, hosts, containers and the
  processes started in them, all removed at close (pyroute2 namespace fixtures, in the
  package);
* :mod:`~dataplane.lab.kernel`: Docker's overlay on the kernel's vxlan, the independent peer
  (:meth:`Lab.kernel_vtep`);
* :mod:`~dataplane.lab.vxdp`: ``vxdp run`` started from code (:func:`start_vxdp`);
* :mod:`~dataplane.lab.etcd`: a real etcd for the multi-host store (:class:`EtcdServer`);
* :mod:`~dataplane.lab.tools`: tcpdump and link offload features.

Nothing here is used by ``vxdp run`` itself.
"""

from dataplane.lab.etcd import EtcdServer
from dataplane.lab.kernel import KernelVtep
from dataplane.lab.namespaces import (
    UNDERLAY_SPACE,
    ContainerInfo,
    HostInfo,
    Lab,
    cleanup_prefix,
    docker_mac,
    install_signal_exit,
)
from dataplane.lab.tools import Capture, disable_tx_checksum, end_process, ethtool_features
from dataplane.lab.vxdp import VxdpProcess, start_vxdp, to_toml

__all__ = ["Capture", "ContainerInfo", "EtcdServer", "HostInfo", "KernelVtep", "Lab",
           "UNDERLAY_SPACE", "VxdpProcess", "cleanup_prefix", "disable_tx_checksum",
           "docker_mac", "end_process", "ethtool_features", "install_signal_exit", "start_vxdp",
           "to_toml"]
