"""Containers from runtimes: Docker's remote network + IPAM driver and the server side of the
CNI plugin, on the VTEP's event loop.

* :mod:`~dataplane.docker.runtime`: :class:`Containers`, what :class:`dataplane.vtep.Vtep`
  starts: the state file, the held endpoints, the Docker plugin when ``[docker]`` is set;
* :mod:`~dataplane.docker.http`: the plugin's HTTP/1.1 server on a unix socket;
* :mod:`~dataplane.docker.driver`: the NetworkDriver and IpamDriver calls;
* :mod:`~dataplane.docker.ipam`, :mod:`~dataplane.docker.ipam_etcd`: pools and addresses,
  local (state file) or shared by every host (etcd);
* :mod:`~dataplane.docker.endpoints`: persistent TAPs and their re-attachment after a restart;
* :mod:`~dataplane.docker.cni`: the control commands ``vxdp-cni`` calls;
* :mod:`~dataplane.docker.state`, :mod:`~dataplane.docker.sandbox`: the state file, work in
  a container's namespace by path.
"""
