"""Compiled modules in a source tree: refuse one that is older than its source.

setup.py compiles a few modules with mypyc. An editable install leaves the compiled
files next to their sources, and Python imports a compiled module before its `.py`:
after an edit, the old compiled code would run instead of the new source. In a source
tree (a `pyproject.toml` beside the package) the modification times are compared, and
a stale compiled module stops the import with what to do about it. An installed copy
(site-packages) is built and installed in one go and is not checked.
"""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES


def refuse_stale(package_file: str) -> None:
    folder = os.path.dirname(os.path.abspath(package_file))
    if not os.path.exists(os.path.join(folder, os.pardir, "pyproject.toml")):
        return
    for entry in os.scandir(folder):
        suffix = next((s for s in EXTENSION_SUFFIXES if entry.name.endswith(s)), None)
        if suffix is None:
            continue
        source = os.path.join(folder, entry.name[: -len(suffix)] + ".py")
        if os.path.exists(source) and os.stat(source).st_mtime > entry.stat().st_mtime:
            package = os.path.basename(folder)
            raise ImportError(
                f"{package}/{entry.name} was compiled before {package}/{os.path.basename(source)} last changed: "
                f"recompile with `pip install -e .`, or delete the compiled files (rm {package}/*.so) to run the sources"
            )


def checkpoint() -> None:
    """Called every so often by the compiled simulator's loop (simulator/sim.py).

    Python runs a signal handler (Ctrl-C's KeyboardInterrupt) only between bytecodes of
    interpreted code; a loop that mypyc compiled runs none, so it would never stop.
    Calling into this interpreted function lets a pending signal be handled here, and
    its exception unwinds the compiled loop like any other."""
