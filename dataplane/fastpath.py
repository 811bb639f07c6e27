"""The one importer of the compiled fast path (DESIGN.md §6: private compiled code, public Python).

``Switch`` is the forwarding core the VTEP uses: the Cython one from ``_fastpath.core`` when it
imports, the pure-Python reference from ``dataplane.switch`` when it does not, or when
``VXDP_NO_EXTENSIONS=1`` asks for the reference explicitly. Both expose the same API and are kept
byte-for-byte equal by the differential tests.
"""

from __future__ import annotations

import os
from typing import Any

from dataplane import switch as _reference

IMPLEMENTATIONS = ("py", "c")


def _load_c() -> Any:
    from _fastpath import core  # noqa: PLC0415 - optional compiled module

    return core


def implementation(name: str) -> Any:
    """Return the module for implementation ``name`` ("py" or "c"); raises ImportError for "c"
    when the extension is not built."""
    if name == "py":
        return _reference
    if name == "c":
        return _load_c()
    raise ValueError(f"unknown implementation {name!r} (expected one of {IMPLEMENTATIONS})")


def _select() -> tuple[str, Any]:
    if os.environ.get("VXDP_NO_EXTENSIONS", "") not in ("", "0"):
        return "py", _reference
    try:
        return "c", _load_c()
    except ImportError:
        return "py", _reference


NAME, _impl = _select()
Switch = _impl.Switch
