"""Build the private Cython fast path; all metadata lives in pyproject.toml.

Every top-level ``_fastpath/<stem>.pyx`` becomes the extension ``_fastpath.<stem>``: ``core``
(the product; it ``include``s its parts from ``_fastpath/core/``, uvloop-style) and ``testing``
(hooks for tests and benchmarks). DESIGN.md §6: one ``.pxd`` per ``.pyx``, hand-written C and
C declarations in ``_fastpath/includes/``. With no ``.pyx`` present the
package builds without extensions and ``dataplane.fastpath`` falls back to the Python reference.

Environment knobs (build time only):

``VXDP_NO_BUILD_EXT=1``
    Build no extension at all. ``make venv`` sets it for ``pip install -e`` so that the
    editable install never depends on the fast path compiling; ``make build`` compiles it.
``VXDP_CYTHON_DEBUG=1``
    Bounds and initialized checks on, ``-O0 -g``: for hunting a crash in the fast path.
``VXDP_CYTHON_ANNOTATE=1``
    Write Cython's HTML annotation next to each ``.pyx`` (yellow = Python interaction).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
PKG = "_fastpath"
INCLUDES = f"{PKG}/includes"


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "no")


def _extensions() -> list[Extension]:
    if _flag("VXDP_NO_BUILD_EXT"):
        return []
    # Relative paths: setuptools insists on them for sources, and they keep generated
    # file names and Cython's error messages short.
    pyx = sorted(p.relative_to(HERE).as_posix() for p in (HERE / PKG).glob("*.pyx"))
    if not pyx:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        sys.exit("error: building _fastpath needs Cython>=3 (pip install 'Cython>=3')")

    debug = _flag("VXDP_CYTHON_DEBUG")
    directives = {
        "language_level": 3,
        # The fast path indexes preallocated buffers with lengths it checked itself;
        # Cython's per-access checks would dominate the per-packet cost.
        # Debug turns the checks on but keeps the semantics: wraparound stays off so a
        # negative index raises IndexError instead of silently wrapping; C division stays.
        "boundscheck": debug,
        "wraparound": False,
        "cdivision": True,
        "initializedcheck": debug,
    }
    # Portable on purpose: no -march=native, wheels and CI must run on any x86-64/arm64.
    cflags = ["-O0", "-g"] if debug else ["-O3"]
    # The parts of core.pyx and the C headers of our own: a change to any rebuilds.
    depends = sorted(
        p.relative_to(HERE).as_posix()
        for pattern in ("*.pxd", "core/*.pyx", "core/*.pxd", "includes/*.pxd", "includes/*.h")
        for p in (HERE / PKG).glob(pattern)
    )
    extensions = [
        Extension(
            f"{PKG}.{Path(src).stem}",
            [src],
            include_dirs=[INCLUDES],
            extra_compile_args=cflags,
            depends=depends,
        )
        for src in pyx
    ]
    return cythonize(
        extensions,
        compiler_directives=directives,
        # "." lets a .pyx `cimport _fastpath.x`; includes/ lets it `cimport` a declaration
        # file by bare name. Cython also tracks these for rebuilds when a .pxd changes.
        include_path=[".", INCLUDES],
        annotate=_flag("VXDP_CYTHON_ANNOTATE"),
        nthreads=0,
        quiet=True,
    )


setup(ext_modules=_extensions())
