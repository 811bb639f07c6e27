"""Shared fixtures and policy for tests/unit (no root) and tests/functional (root, namespaces).

Policy (DESIGN.md §5): a test that cannot run here is skipped on a developer's machine, but in CI
a skip would hide a missing capability or a broken build, so there it fails instead:

* ``privileged`` tests (everything under ``tests/functional/`` is marked automatically) need root,
  CAP_NET_ADMIN + CAP_SYS_ADMIN (network namespaces) and ``/dev/net/tun``. Without them: skip,
  or fail when ``CI=true`` or ``VXDP_REQUIRE_ROOT=1``. In that strict mode *any* skip of a
  privileged test (a fixture's ``pytest.skip``, a missing tool, a stray ``@skip``) is reported
  as a failure; mark known gaps ``xfail`` instead.
* the ``impl`` fixture runs a test against the Python reference (``py``) and the Cython fast path
  (``c``). An extension that does not import: skip, or fail when ``CI=true`` or
  ``VXDP_REQUIRE_EXTENSIONS=1``.

Hypothesis profiles: ``ci`` (derandomized, so a CI failure reproduces) when ``CI=true``, else
``dev``; ``HYPOTHESIS_PROFILE`` overrides either.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

FUNCTIONAL_DIR = Path(__file__).resolve().parent / "functional"

# linux/capability.h
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


def _env_flag(name: str) -> bool:
    """True for CI=true / 1 / yes (how CI systems set it); unset, empty, 0, false, no: False."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def in_ci() -> bool:
    return _env_flag("CI")


def require_root() -> bool:
    return in_ci() or _env_flag("VXDP_REQUIRE_ROOT")


def require_extensions() -> bool:
    return in_ci() or _env_flag("VXDP_REQUIRE_EXTENSIONS")


# --------------------------------------------------------------------------- hypothesis profiles

settings.register_profile(
    "ci",
    derandomize=True,  # same examples every run: a red CI run is reproducible locally
    deadline=None,  # shared 2-core CI machines: timing is noise, never a failure (§5)
    max_examples=200,
    print_blob=True,
    database=None,  # nothing written into the fresh clone
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if in_ci() else "dev"))


# --------------------------------------------------------------------------- privileged marker


@cache
def privilege_problem() -> str | None:
    """Why privileged tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, TAP devices)"
    try:
        status = Path("/proc/self/status").read_text()
        cap_eff = int(next(line.split()[1] for line in status.splitlines()
                           if line.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError):
        cap_eff = -1  # cannot tell: let the test itself find out
    for cap, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")):
        if cap_eff != -1 and not cap_eff & (1 << cap):
            return f"root but without {name} (an unprivileged container?)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (modprobe tun)"
    return None


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pyproject.toml; repeated so the markers exist if run with another ini.
    config.addinivalue_line(
        "markers",
        "privileged: needs root and network namespaces "
        "(skipped without; a failure when CI=true or VXDP_REQUIRE_ROOT=1)",
    )
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if FUNCTIONAL_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.privileged)
        # A skip marker (rather than pytest.skip() in a hook) so `-ra` names the test's own
        # file:line. In strict mode no marker: pytest_runtest_setup fails the test instead.
        if item.get_closest_marker("privileged") is not None and not require_root():
            problem = privilege_problem()
            if problem is not None:
                item.add_marker(pytest.mark.skip(reason=f"privileged: {problem}"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture runs: a namespace fixture must not even start without privileges.
    if item.get_closest_marker("privileged") is None or not require_root():
        return
    problem = privilege_problem()
    if problem is not None:
        pytest.fail(
            f"privileged test cannot run: {problem}; a skip is a failure when CI=true "
            "or VXDP_REQUIRE_ROOT=1",
            pytrace=False,
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Any other skip of a privileged test in strict mode (a fixture that could not create a
    # namespace, a missing tool, a @skip left behind) is turned into a failure too: a skipped
    # privileged test in CI is a failure (DESIGN.md §5). xfail is not a skip and is left alone.
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if (report.skipped and not hasattr(report, "wasxfail") and require_root()
            and item.get_closest_marker("privileged") is not None):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"privileged test skipped ({reason}); a skip is a failure when "
                           "CI=true or VXDP_REQUIRE_ROOT=1")


# --------------------------------------------------------------------------- implementations


def _compiled_core() -> Any:
    """``_fastpath.core``; when it is unavailable (VXDP_NO_EXTENSIONS=1, or not built) a skip
    on a developer's machine and a failure when CI=true or VXDP_REQUIRE_EXTENSIONS=1."""
    from dataplane import fastpath

    if _env_flag("VXDP_NO_EXTENSIONS") and not require_extensions():
        pytest.skip("c: VXDP_NO_EXTENSIONS is set")
    try:
        return fastpath.implementation("c")
    except ImportError as exc:
        problem = str(exc)
    # Outside the except block, so the report is one line instead of a chained traceback.
    if require_extensions():
        pytest.fail(
            f"the Cython fast path does not import ({problem}); run `make build`. "
            "A skip is a failure when CI=true or VXDP_REQUIRE_EXTENSIONS=1",
            pytrace=False,
        )
    pytest.skip(f"c: fast path not built ({problem}); run `make build`")


@pytest.fixture(params=["py", "c"], ids=["py", "c"])
def impl(request: pytest.FixtureRequest) -> Any:
    """The forwarding core module: ``dataplane.switch`` (py) or ``_fastpath.core`` (c)."""
    from dataplane import fastpath  # a broken reference is an error for both ids

    if request.param == "c":
        return _compiled_core()
    return fastpath.implementation("py")


@pytest.fixture
def c_core() -> Any:
    """``_fastpath.core`` only, with ``impl``'s policy for its c id: for tests of what exists
    only in the compiled path (the offloads)."""
    return _compiled_core()
