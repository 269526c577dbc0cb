"""abreast: the command-line front door (see `abreast.cli`)."""

__version__ = "0.1.0"
