"""The documentation users get is in the repository and says what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from abreast.common import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, EXIT_OK
from engine.scenario import MAX_SCENARIO_BYTES, MAX_SECONDS

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_links_the_rules_and_nothing_outside_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme and "SPEC.md" not in readme
    assert "(docs/rules.md)" in readme and (ROOT / "docs" / "rules.md").is_file()
    for link in re.findall(r"\]\(([^)#]+)", readme):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link


def test_the_rules_give_the_numbers_the_code_uses():
    rules = (ROOT / "docs" / "rules.md").read_text()
    for code in (EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED):
        assert f"| {code} |" in rules
    assert MAX_SECONDS == 1e9 and "10⁹ s" in rules
    assert MAX_SCENARIO_BYTES == 16 * 1024 * 1024 and "16 MiB" in rules
    sections = re.findall(r"^## (\d+)\. ", rules, re.M)
    assert sections == [str(n) for n in range(1, len(sections) + 1)]


def test_code_points_to_sections_that_exist():
    rules = (ROOT / "docs" / "rules.md").read_text()
    sections = set(re.findall(r"^## (\d+)\. ", rules, re.M))
    for path in [*ROOT.glob("abreast/*.py"), *ROOT.glob("engine/*.py"), *ROOT.glob("simulator/*.py")]:
        for n in re.findall(r"docs/rules\.md §(\d+)", path.read_text()):
            assert n in sections, (path, n)
        assert "../shared" not in path.read_text(), path
