"""vxdp: a userspace VXLAN dataplane (RFC 7348) with a Cython fast path."""

__version__ = "0.1.0"
