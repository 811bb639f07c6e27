"""Exceptions shared by the reference core, the Cython fast path and the control plane.

Defined in Python (DESIGN.md §6) so both implementations raise the very same classes and
the control socket can turn any of them into a one-line error for the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class VxdpError(Exception):
    """Base class: anything a user can cause. The CLI prints ``str(exc)`` and exits non-zero."""


class ConfigError(VxdpError):
    """A configuration file (or a config value given on the command line) is wrong.

    ``str()`` is one line: ``file:line: key: what is wrong`` where known.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.detail = message
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        what = f"{key}: {message}" if key else message
        super().__init__(where + what)


class TableError(VxdpError):
    """An FDB or neighbour table operation was refused (kernel: -EEXIST, -ENOENT, -ENOSPC...)."""


class EntryExists(TableError):
    """``add`` of an entry that is already there (kernel: EEXIST without NLM_F_REPLACE)."""


class EntryNotFound(TableError):
    """``del``/``replace`` of an entry (or remote) that is not there (kernel: ENOENT)."""


class TableFull(TableError):
    """The table reached ``maxaddress`` (kernel vxlan: ENOSPC)."""


class InvalidArgument(VxdpError):
    """A malformed MAC, address, VNI or a combination the kernel would refuse (EINVAL)."""

    @classmethod
    def check(cls, parse: Callable[[Any], T], value: Any) -> T:
        """``parse(value)`` (a rule of :mod:`dataplane.validate`), its ValueError raised as
        this class: how the tables refuse what the config and the CLI refuse."""
        try:
            return parse(value)
        except ValueError as exc:
            raise cls(str(exc)) from None


class ControlError(VxdpError):
    """The control socket could not be reached or answered with an error."""


class PrivilegeError(VxdpError):
    """The operation needs root (CAP_NET_ADMIN / CAP_NET_RAW)."""
