"""The guard against running a compiled module older than its source (engine/_native.py)."""

import os
from importlib.machinery import EXTENSION_SUFFIXES

import pytest

from engine._native import refuse_stale


def tree(tmp_path, source_age: float, compiled_age: float):
    (tmp_path / "pyproject.toml").write_text("")
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = package / "core.py"
    source.write_text("")
    compiled = package / f"core{EXTENSION_SUFFIXES[0]}"
    compiled.write_bytes(b"")
    now = 1_800_000_000
    os.utime(source, (now - source_age, now - source_age))
    os.utime(compiled, (now - compiled_age, now - compiled_age))
    return package / "__init__.py"


def test_a_compiled_module_newer_than_its_source_is_fine(tmp_path):
    refuse_stale(str(tree(tmp_path, source_age=60, compiled_age=10)))


def test_a_source_edited_after_it_was_compiled_stops_the_import_with_the_fix(tmp_path):
    with pytest.raises(ImportError, match=r"pkg/core\..* was compiled before pkg/core.py last changed: recompile with `pip install -e .`"):
        refuse_stale(str(tree(tmp_path, source_age=10, compiled_age=60)))


def test_outside_a_source_tree_nothing_is_checked(tmp_path):
    init = tree(tmp_path, source_age=10, compiled_age=60)
    (tmp_path / "pyproject.toml").unlink()  # as in site-packages
    refuse_stale(str(init))
