"""The compiled modules must stay type-clean: mypyc compiles only what mypy accepts, and
setup.py falls back to pure Python (1.25x slower) when it does not."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compiled_modules() -> list[str]:
    """The list setup.py compiles, read from setup.py itself."""
    found = re.search(r"COMPILED = \[(.*?)\]", (ROOT / "setup.py").read_text(), re.S)
    assert found, "setup.py has no COMPILED list"
    return re.findall(r'"([^"]+\.py)"', found.group(1))


def test_the_modules_mypyc_compiles_type_check():
    modules = compiled_modules()
    assert "engine/core.py" in modules and "simulator/sim.py" in modules
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", *modules], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
