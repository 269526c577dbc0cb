"""TERM, INT and HUP for `run` and `resume` from the first instant of the process.

The entry point (`abreast.__main__.main`) installs `early_exit` before it imports
anything slow. Until the runtime takes the signals over (it does so before it writes
anything: the first event of `run`, the takeover of `resume`), a signal ends the
process at once with exit 130: nothing was written and nothing ran. From then on the runtime turns them into a clean
cancel (engine/runtime.py); when it gives them back the log is complete, and
`settle()` makes them harmless for the last moments of the process.
"""

from __future__ import annotations

import os
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
COMMANDS = ("run", "resume")


def early_exit(signum: int, frame: object) -> None:
    try:
        os.write(2, b"abreast: cancelled before anything was recorded\n")
    except OSError:
        pass  # no terminal any more (SIGHUP)
    os._exit(130)


def install(argv: list[str] | None = None) -> None:
    """Install `early_exit` if this process runs `abreast run` or `abreast resume`."""
    args = sys.argv if argv is None else argv
    if len(args) > 1 and args[1] in COMMANDS:
        for sig in SIGNALS:
            signal.signal(sig, early_exit)


def settle() -> None:
    """The runtime has given the signals back: ignore them rather than exit 130."""
    for sig in SIGNALS:
        if signal.getsignal(sig) is early_exit:
            signal.signal(sig, signal.SIG_IGN)
