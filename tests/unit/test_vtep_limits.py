"""The VTEP lifts its soft open-file limit before it opens anything (dataplane.vtep.serve)."""

from __future__ import annotations

import resource
import subprocess
import sys

PROBE = r"""
import resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))
from dataplane.vtep import raise_fd_limit
print(raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _hard() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def test_soft_limit_is_raised_towards_the_hard_limit() -> None:
    """Started with a soft limit of 256 (lower than any TAP + 256 GSO sockets need), the
    process ends with min(65536, hard): one TAP per endpoint plus up to 256 per-source-port
    UDP sockets must not run into a distro's 1024 default."""
    hard = _hard()
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    p = subprocess.run([sys.executable, "-c", PROBE, "256"], capture_output=True, text=True,
                       check=True)
    reported, in_force = (int(x) for x in p.stdout.split())
    assert reported == in_force == want


def test_a_higher_soft_limit_is_left_alone() -> None:
    hard = _hard()
    start = hard if hard != resource.RLIM_INFINITY else 1 << 20
    p = subprocess.run([sys.executable, "-c", PROBE, str(start)], capture_output=True,
                       text=True, check=True)
    assert [int(x) for x in p.stdout.split()] == [start, start]
