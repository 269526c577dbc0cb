"""What every command shares: the typer app, exit codes, bad input, the --db option."""

from __future__ import annotations

import os
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


def open_db(db: Path | None):  # noqa: ANN201 - engine.store.SqliteStore, imported lazily
    """Open the event store, or exit 2 naming the file."""
    from engine.store import StoreError, default_db_path, open_store

    try:
        return open_store(db if db is not None else default_db_path())
    except StoreError as e:
        bad_input(str(e))


def stdout_is_tty() -> bool:
    return os.isatty(1)
