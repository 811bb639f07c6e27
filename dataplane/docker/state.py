"""What the container integrations must remember across a VTEP restart, in one JSON file.

dockerd tells a remote driver about a network once (CreateNetwork) and never again: a
restarted plugin is not re-activated and nothing is replayed (libnetwork's remote driver;
observed with Docker 20.10). So the Docker networks, the local IPAM pools and allocations and
every container endpoint vxdp holds (Docker's and CNI's, with the namespace it lives in) are
written here on every change, and read back at start-up to serve the same networks and
re-attach the same TAPs.

The file is replaced atomically (write, fsync, rename) and a lock file next to it (flock,
held while the VTEP runs) keeps two VTEPs from sharing one state file. Once nothing is left
to remember (the last endpoint and network gone) the file is removed, and the lock file with
it when the VTEP stops: a VTEP whose containers all left leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from dataplane.errors import VxdpError

log = logging.getLogger("vxdp.docker")

VERSION = 1


@dataclass
class NetworkRecord:
    """A Docker network served by this VTEP."""

    id: str              # Docker's NetworkID
    name: str            # the vxdp network (fdb/neigh "dev", store keys)
    vni: int
    mtu: int
    subnet: str          # IPv4Data[0].Pool
    owned: bool          # vxdp made the network for Docker (False: a [[network]] of the config)
    pool: str | None = None   # PoolID when --ipam-driver vxdp allocates its addresses


@dataclass
class EndpointRecord:
    """A container interface vxdp created and keeps (a persistent TAP)."""

    key: str             # Docker's EndpointID, or cni:<container id>:<ifname>
    kind: str            # "docker" | "cni"
    name: str            # the vxdp endpoint (port) name
    network: str         # the vxdp network
    tap: str             # the TAP's name at creation (libnetwork renames it on the move)
    mac: str
    address: str         # CIDR
    sandbox: str | None = None   # namespace file of the container (SandboxKey, CNI_NETNS)
    ifname: str | None = None    # its name there, when known (CNI; Docker: found by MAC)
    pool: str | None = None      # IPAM pool of the address (Docker)
    docker_network: str | None = None


@dataclass
class PoolRecord:
    """A local IPAM pool (without [store]; with it, pools live in etcd)."""

    subnet: str
    range: str | None = None
    gateway: str | None = None
    allocated: dict[str, str] = field(default_factory=dict)   # address -> what holds it


class State:
    """The state file at ``path`` (nothing is written there until something is saved)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.networks: dict[str, NetworkRecord] = {}
        self.endpoints: dict[str, EndpointRecord] = {}
        self.pools: dict[str, PoolRecord] = {}
        self._lock_fd: int | None = None

    @property
    def exists(self) -> bool:
        return os.path.exists(self.path)

    def open(self) -> None:
        """Lock the state and read what a previous run saved."""
        if self._lock_fd is not None:
            return
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise VxdpError(f"state {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise VxdpError(f"state {self.path} is in use by another vxdp; give each VTEP its "
                            "own ([vtep] state = ...)") from None
        self._lock_fd = fd
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise VxdpError(f"state {self.path} is unreadable ({exc}); move it away to start "
                            "afresh (Docker networks must then be created again)") from None
        try:
            self.networks = {k: NetworkRecord(**v) for k, v in data.get("networks", {}).items()}
            self.endpoints = {k: EndpointRecord(**v)
                              for k, v in data.get("endpoints", {}).items()}
            self.pools = {k: PoolRecord(**v) for k, v in data.get("pools", {}).items()}
        except (TypeError, AttributeError) as exc:
            raise VxdpError(f"state {self.path}: unexpected content ({exc})") from None

    def save(self) -> None:
        if self._lock_fd is None:
            self.open()
        if not (self.networks or self.endpoints or self.pools):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        data: dict[str, Any] = {
            "version": VERSION,
            "networks": {k: dataclasses.asdict(v) for k, v in self.networks.items()},
            "endpoints": {k: dataclasses.asdict(v) for k, v in self.endpoints.items()},
            "pools": {k: dataclasses.asdict(v) for k, v in self.pools.items()},
        }
        tmp = f"{self.path}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            # Refused loudly: an unsaved change would be lost at the next restart.
            raise VxdpError(f"cannot save state {self.path}: {exc.strerror}") from None

    def close(self) -> None:
        if self._lock_fd is not None:
            if not self.exists:
                with contextlib.suppress(OSError):
                    os.unlink(self.path + ".lock")   # still ours: the lock is held
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
