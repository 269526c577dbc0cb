"""The page builder from plain data, read back with an HTML parser (no browser): every
attempt once with its data-* attributes, names and output escaped, the data the page
draws kept in it."""

from __future__ import annotations

import json
from html.parser import HTMLParser

from abreast.htmlreport import Arrangement, Attempt, Page, StepSpan, arrangement_of, build, tail
from simulator.analysis import Wait
from simulator.sim import simulate
from tests.helpers import plan_of

PLAN = """
    targets: [{name: 'a"b', roles: [x]}, {name: c, roles: [x]}]
    steps:
      - {name: 'build <x>', duration: 1}
      - {name: deploy, roles: [x], duration: 2}
"""


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text of each <script>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: dict[str | None, str] = {}
        self._script: str | None = None

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs).get("id") or ""
            self.scripts[self._script] = ""

    def handle_startendtag(self, tag, attrs):  # noqa: ANN001
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):  # noqa: ANN001
        if tag == "script":
            self._script = None

    def handle_data(self, data):  # noqa: ANN001
        if self._script is not None:
            self.scripts[self._script] += data


def parse(text: str) -> Elements:
    p = Elements()
    p.feed(text)
    return p


def test_every_attempt_once_with_exact_times_even_one_still_running():
    plan = plan_of(PLAN)
    attempts = [
        Attempt("build <x>", None, 1, 0.0, 0.1 + 0.2, "failed", 2, 'it said "no" & <left>'),
        Attempt("build <x>", None, 2, 0.30000000000000004, 1.3, "succeeded", 0),
        Attempt("deploy", 'a"b', 1, 1.3, None, None),  # its orchestrator died
    ]
    waits = [Wait("build <x>", None, 2, 0.3, 0.30000000000000004, "retry delay", "retry delay of 0s")]
    main = Arrangement(
        label="as recorded", outcome=None, makespan=None,
        steps=[StepSpan("build <x>", "succeeded", 0.0, 1.3), StepSpan("deploy", None, 1.3, None)],
        attempts=attempts, waits=waits,
    )
    outputs = {("build <x>", None, 1): tail(["</script><script>alert(1)</script>", "x" * 1000])}
    page = parse(build(Page(plan=plan, main=main, source="a test", outputs=outputs)))
    found = [a for tag, a in page.tags if "data-step" in a]
    assert [(a["data-step"], a["data-target"], a["data-attempt"], a["data-start"], a["data-end"], a["data-outcome"], a["data-exit"]) for a in found] == [
        ("build <x>", "", "1", "0.0", "0.30000000000000004", "failed", "2"),
        ("build <x>", "", "2", "0.30000000000000004", "1.3", "succeeded", "0"),
        ("deploy", 'a"b', "1", "1.3", "", "running", ""),
    ]
    assert found[0]["data-error"] == 'it said "no" & <left>'
    assert all(tag == "rect" and "a" in a["class"].split() for tag, a in page.tags if "data-step" in a)
    # The by-target lanes point at the attempts by index, without repeating them.
    refs = sorted(int(a["data-ref"]) for tag, a in page.tags if "data-ref" in a and "b" in a.get("class", "").split())
    assert refs == [0, 1, 2]
    assert json.loads(page.scripts["outputs"]) == {"0": ["</script><script>alert(1)</script>", "x" * 400 + "…"]}
    assert "</script><script>alert" not in page.scripts["outputs"]
    assert json.loads(page.scripts["causes"]) == ["retry delay of 0s"]
    csp = [a for tag, a in page.tags if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0]["content"].startswith("default-src 'none'")
    assert not [a for tag, a in page.tags if tag in ("link", "img", "iframe") or (tag == "script" and "src" in a)]


def test_an_arrangement_folds_a_log_with_exit_codes_waits_and_the_critical_path():
    plan = plan_of("""
        targets: [{name: h1, roles: [w]}, {name: h2, roles: [w]}]
        steps:
          - {name: A, roles: [w], duration: 10, fails: {h2: 1}, retries: 1}
          - {name: B, start: with-previous, roles: [w], duration: 5}
    """)
    events: list = []
    result = simulate(plan, sink=events.extend)
    a = arrangement_of(plan, events, "simulated", sequential_makespan=result.sequential_makespan)
    # A@h2 fails at 10 and is retried at once (10-20: A comes first in the pass); B takes
    # h1 at 10 and h2 at 20.
    assert [(x.step, x.target, x.attempt, x.start, x.end, x.outcome, x.exit_code) for x in a.attempts] == [
        ("A", "h1", 1, 0.0, 10.0, "succeeded", 0),
        ("A", "h2", 1, 0.0, 10.0, "failed", 1),
        ("A", "h2", 2, 10.0, 20.0, "succeeded", 0),
        ("B", "h1", 1, 10.0, 15.0, "succeeded", 0),
        ("B", "h2", 1, 20.0, 25.0, "succeeded", 0),
    ]
    assert [(w.step, w.target, w.start, w.end, w.kind) for w in a.waits] == [("B", "h1", 0.0, 10.0, "lock"), ("B", "h2", 0.0, 20.0, "lock")]
    assert (a.makespan, a.sequential_makespan, a.outcome) == (25.0, 25.0, "succeeded")
    assert [(x.step, x.target, x.attempt) for x in a.critical_path if x.kind == "execution"] == [("A", "h2", 1), ("A", "h2", 2), ("B", "h2", 1)]
    assert a.lower_bound is not None and a.lower_bound.value == 25.0
