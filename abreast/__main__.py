"""The entry point of `abreast` and `python -m abreast`.

Signals first (abreast/signals.py): `run` and `resume` must answer TERM, INT and HUP
from the first instant, before the imports that take a tenth of a second.

And the last instant: once a command has done its work (every file it writes is
closed by then, the store too, a `whatif` pool joined), abreast flushes the standard
streams and leaves with `os._exit`, without tearing the interpreter down: freeing
trio, typer, msgspec and the rest module by module took 0.15-0.25 s here, longer than
a small deployment's commands.
"""

import os
import sys


def main() -> None:
    from abreast import signals

    signals.install()
    from abreast.cli import main as cli_main

    try:
        cli_main()
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe, a closed stream: nothing more to say
        pass
    os._exit(code)


if __name__ == "__main__":
    main()
