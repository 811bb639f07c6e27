"""Where a VTEP's remote state comes from.

* static: the config file's ``[[network.peer]]`` and ``flood`` entries (always; the embedded
  default, programmed by :class:`dataplane.vtep.Vtep` itself);
* etcd (``[store]`` in the config): :class:`dataplane.store.etcd.EtcdStore` publishes this
  VTEP's endpoints under a lease and turns the other VTEPs' endpoints into permanent FDB +
  neighbour entries and flood-list entries, as they appear and vanish.

``keys`` (key layout, records, the I/O-free :class:`RemoteTables`) needs nothing beyond the
standard library; ``etcd`` needs ``aetcd`` and is imported only when ``[store]`` is configured.
"""

from dataplane.store.keys import (EndpointRecord, KeyLayout, RecordError, RemoteTables,
                                  StoreHost, VtepRecord)

__all__ = ["EndpointRecord", "KeyLayout", "RecordError", "RemoteTables", "StoreHost",
           "VtepRecord"]
