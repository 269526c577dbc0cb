"""How long abreast takes to refuse bad input (run by hand: python -m tests.bench.bench_bad_input).

Every bad scenario of tests/cli/test_bad_input.py, plus a device, a FIFO and a 1 GiB
file, through `abreast simulate` as a whole process, three times each; prints the median
per case and the slowest, next to `abreast --version` (the start-up every command pays).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.cli.test_bad_input import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]


def timed(folder: Path, *args: str) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "abreast", *args], cwd=folder, env=env, capture_output=True, timeout=60)
    return time.perf_counter() - start, p.returncode


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases: list[tuple[str, list[str]]] = [("abreast --version", ["--version"])]
        for bad in SCENARIOS:
            f = folder / f"{len(cases)}-{bad.name}"
            f.write_bytes(bad.content if isinstance(bad.content, bytes) else bad.content.encode())
            cases.append((bad.id, ["simulate", f.name]))
        (folder / "zero.yaml").symlink_to("/dev/zero")
        os.mkfifo(folder / "fifo.yaml")
        with open(folder / "huge.yaml", "wb") as f:
            f.truncate(1 << 30)
        cases += [("/dev/zero", ["simulate", "zero.yaml"]), ("a FIFO", ["simulate", "fifo.yaml"]), ("1 GiB", ["simulate", "huge.yaml"])]
        rows = []
        for name, args in cases:
            times, codes = zip(*(timed(folder, *args) for _ in range(3)), strict=True)
            rows.append((statistics.median(times), name, set(codes)))
        for t, name, codes in rows:
            print(f"{t:6.3f} s  exit {','.join(map(str, sorted(codes)))}  {name}")
        worst = max(rows[1:])
        print(f"slowest refusal: {worst[0]:.3f} s ({worst[1]}); start-up alone: {rows[0][0]:.3f} s")


if __name__ == "__main__":
    main()
