"""What every command shares: the typer app, exit codes, bad input, the --db option."""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn

import typer


EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130

app = typer.Typer(
    name="abreast",
    help="Run deployment steps side by side, record every deployment, and ask what-if in virtual time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, Enum):
    table = "table"
    json = "json"


def _print_version(value: bool) -> None:
    if value:
        from abreast import __version__
        from simulator import sim

        build = "pure Python" if sim.__file__.endswith(".py") else "compiled with mypyc"
        typer.echo(f"abreast {__version__} ({build})")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """abreast: deployment steps side by side, an event log of every deployment, what-if in virtual time."""


def bad_input(message: str) -> NoReturn:
    """Report bad input on stderr and exit 2: nothing ran."""
    typer.echo(message if message.startswith("error") else f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def outcome_exit(outcome: str | None) -> int:
    return {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}.get(outcome or "", EXIT_FAILED)


DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="The event store (SQLite). Default: $ABREAST_DB, else .abreast/abreast.db here.", show_default=False),
]


def open_db(db: Path | None, write: bool = True):  # noqa: ANN201 - engine.store.SqliteStore, imported lazily
    """Open the event store, or exit 2 naming the file. `write=False`: a store this user
    cannot write is opened read-only."""
    from engine.store import StoreError, default_db_path, open_store

    try:
        return open_store(db if db is not None else default_db_path(), write=write)
    except StoreError as e:
        bad_input(str(e))


@contextmanager
def using_store(db: Path | None, write: bool = False) -> Iterator:
    """The event store for one command: opened (read-only if this user cannot write it
    and `write` is not needed), closed after; a store error (a damaged file, a full
    disk, a conflict) becomes one line and exit 2."""
    from engine.store import StoreError

    store = open_db(db, write=write)
    try:
        yield store
    except StoreError as e:
        bad_input(str(e))
    finally:
        store.close()


def run_app() -> None:
    """Run the CLI. What no command caught still reaches people as one line: a store
    error, an output that cannot be written (a full disk) — exit 2; a reader that went
    away (`| head`) ends it quietly."""
    import sys

    from engine.store import StoreError

    try:
        app()
    except StoreError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise SystemExit(EXIT_FAILED) from None
    except OSError as e:
        typer.echo(f"error: cannot write the output: {e.strerror or e}", err=True)
        raise SystemExit(EXIT_BAD_INPUT) from None


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C during a long computation (a simulation, a grid) ends the command with
    exit 130 and one line, not a traceback. (The compiled simulator polls for it: see
    `simulator/sim.py`.)"""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo("cancelled", err=True)
        raise typer.Exit(EXIT_CANCELLED) from None


def id_problem(value: str) -> str | None:
    """Why `value` cannot be a deployment id (None: it can)."""
    if not value.strip():
        return "a deployment id cannot be empty"
    if value != value.strip():
        return f"a deployment id cannot begin or end with a space: {value!r}"
    if len(value) > 200:
        return "a deployment id has at most 200 characters"
    for c in value:
        if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            return f"a deployment id cannot contain control characters (found {c!r} in {value!r})"
    return None


def check_id(value: str | None) -> str | None:
    """A typer callback for `--id`: refuse an id that `id_problem` refuses (exit 2)."""
    if value is not None:
        why = id_problem(value)
        if why:
            raise typer.BadParameter(why)
    return value


def speed_problem(value: object) -> str | None:
    """Why `value` cannot be a dry run's speed (None: it can): a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        return f"expected a finite number > 0, got {value!r}"
    return None


def check_speed(value: float) -> float:
    """A typer callback for `--speed` (nan and inf pass typer's range check)."""
    why = speed_problem(value)
    if why:
        raise typer.BadParameter(why)
    return value


# CSI (`ESC [ ... final`), OSC (`ESC ] ... BEL` or `ESC \`), other two-byte escapes, and
# every control character but the tab: what a terminal would act on instead of showing.
_CONTROLS = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]|[\x00-\x08\x0a-\x1f\x7f-\x9f]"
)


def printable(text: str) -> str:
    """`text` with terminal control sequences and control characters removed, so what a
    command printed cannot move the cursor, recolour, retitle or clear a terminal."""
    return _CONTROLS.sub("", text)


def stdout_is_tty() -> bool:
    return os.isatty(1)
