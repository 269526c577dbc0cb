"""Make the README's screenshot of a report: `python -m tests.report_screenshot`.

It runs the command the README shows, opens the page in headless Chromium the way the
tests do (tests/browser.py), hovers a failed attempt so its tooltip shows, and writes
docs/report.png.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.browser import open_page

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "report.png"
COMMAND = ["abreast", "report", "scenarios/web-farm-rolling.yaml", "--set", "steps.upgrade web.failure_rate=0.2", "-o", "web-farm.html"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "web-farm.html"
        args = [*COMMAND[1:-1], str(page_file)]
        subprocess.run([sys.executable, "-m", "abreast", *args], cwd=ROOT, check=True, capture_output=True)
        with open_page(page_file, Path(tmp) / "profile", width=1280, height=1160) as visit:
            visit.page.locator('rect.a[data-outcome="failed"]').first.hover()
            OUT.parent.mkdir(exist_ok=True)
            visit.page.screenshot(path=str(OUT))
            visit.assert_clean(page_file.resolve().as_uri())
    print(f"{shlex.join(COMMAND)}\n-> {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
