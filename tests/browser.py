"""A real browser for the report's tests: Debian's Chromium, driven headless by Playwright.

Playwright's own browser download is not used (nor reachable): it drives
/usr/bin/chromium, started with a fresh profile and without anything that would talk to
the network on its own. `.ci/run` installs Chromium with apt-get; here, as root, a
missing one is installed the same way, and the tests skip only when that fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
_install_tried: list[str] = []


def chromium() -> Path:
    """The Chromium to test with; installs Debian's package if missing (as root), else skips."""
    if not CHROMIUM.exists() and not _install_tried:
        _install_tried.append("yes")
        if os.geteuid() == 0 and shutil.which("apt-get"):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
                if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
                    break
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing and could not be installed (`apt-get install -y chromium` as root; .ci/run does it)")
    return CHROMIUM


@dataclass
class Visit:
    """What happened while a page was open: every request, console message and error."""

    page: object  # playwright.sync_api.Page
    requests: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def assert_clean(self, url: str) -> None:
        """Nothing was asked of the network (the file itself is the only request) and
        nothing went wrong in the page's script (no error, no CSP violation)."""
        assert self.requests == [url], f"the page made requests: {self.requests}"
        assert self.errors == [], self.errors
        bad = [(t, m) for t, m in self.console if t in ("error", "warning")]
        assert bad == [], bad


@contextmanager
def open_page(html: Path, profile: Path, width: int = 1280, height: int = 900, javascript: bool = True) -> Iterator[Visit]:
    """Open a local page in headless Chromium with a fresh profile in `profile`."""
    exe = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(exe),
            headless=True,
            args=ARGS,
            viewport={"width": width, "height": height},
            java_script_enabled=javascript,
        )
        try:
            page = context.new_page()
            visit = Visit(page)
            page.on("request", lambda r: visit.requests.append(r.url))
            page.on("console", lambda m: visit.console.append((m.type, m.text)))
            page.on("pageerror", lambda e: visit.errors.append(str(e)))
            page.goto(html.resolve().as_uri())
            page.wait_for_load_state("load")
            yield visit
        finally:
            context.close()


def attempts_on(page) -> list[dict]:  # noqa: ANN001 - playwright Page
    """Every element that carries an attempt's data-* attributes, as the page has them."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('[data-step]'), e => ({
            step: e.dataset.step, target: e.dataset.target, attempt: e.dataset.attempt,
            start: e.dataset.start, end: e.dataset.end, outcome: e.dataset.outcome, exit: e.dataset.exit,
            arrangement: e.closest('[data-arrangement]') ? e.closest('[data-arrangement]').dataset.arrangement : null}))"""
    )


def colours(png: Path) -> dict[tuple[int, int, int], int]:
    """How many pixels of each colour a screenshot has."""
    from PIL import Image

    with Image.open(png) as im:
        return {rgb: n for n, rgb in im.convert("RGB").getcolors(maxcolors=1 << 24)}
