"""The entry point of `abreast` and `python -m abreast`.

Signals first (abreast/signals.py): `run` and `resume` must answer TERM, INT and HUP
from the first instant, before the imports that take a tenth of a second.
"""


def main() -> None:
    from abreast import signals

    signals.install()
    from abreast.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
