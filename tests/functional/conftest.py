"""Fixtures for the functional VTEP tests (root, network namespaces).

The policy hooks (privileged marker, strict mode in CI) live in ``tests/conftest.py``; this file
only adds worlds. Every lab has a unique namespace prefix and is closed whatever happens; after
closing, no namespace with its prefix may remain.

* ``lab``: a fresh :class:`dataplane.lab.Lab` per test.
* ``world``: a :class:`tests.functional.vxdp_world.World` on that lab (VTEPs it started are
  stopped at the end).
* ``wt``: the reference walkthrough (:func:`~tests.functional.vxdp_world.build_walkthrough`),
  one per test module, for the tests that only observe it.
* ``tests.functional.vxdp_world.open_world()``: the same as a context manager, for
  module-scoped worlds shared by tests that only observe (import it from the helper module,
  not from this conftest: two ``conftest`` modules exist under tests/).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dataplane import netns
from dataplane.lab import Lab
from tests.functional.vxdp_world import Walkthrough, World, build_walkthrough, open_world


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        prefix = lab.prefix
        yield lab
    left = [n for n in netns.list_netns() if n.startswith(prefix)]
    assert not left, f"namespaces left behind: {left}"


@pytest.fixture
def world(lab: Lab) -> Iterator[World]:
    with World(lab) as w:
        yield w


@pytest.fixture(scope="module")
def wt() -> Iterator[Walkthrough]:
    """The walkthrough world, shared by the tests of a module that only observe it."""
    with open_world() as w:
        wt = build_walkthrough(w)
        yield wt
        w.stop_all(wt.manager, wt.worker)
