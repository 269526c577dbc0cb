"""`abreast report`: one self-contained HTML page, opened in a real browser (headless
Chromium, tests/browser.py). Every attempt on the page is checked against the
simulation's JSON or the stored events; the page must make no request and log no error;
its screenshot must show the bars."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from abreast.render import seconds
from engine.events import ExecutionFinished, ExecutionStarted, from_jsonl
from engine.store import SqliteStore
from tests.browser import attempts_on, colours, open_page

ROOT = Path(__file__).resolve().parents[2]
WEB_FARM = ROOT / "scenarios" / "web-farm-rolling.yaml"
# A failure rate makes the web farm retry (failed attempts, retry delays) at seed 0.
FLAKY = "steps.upgrade web.failure_rate=0.2"
GREEN = (0x2F, 0x9E, 0x44)
RED = (0xE0, 0x31, 0x31)
WINDOW_BLUE = (0x74, 0xC0, 0xFC)


def abreast(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ABREAST_DB"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "abreast", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def write(folder: Path, name: str, doc: dict) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def keyed(attempts: list[dict]) -> dict:
    """Page attempts by (step, target, attempt); each must appear exactly once."""
    out = {}
    for a in attempts:
        key = (a["step"], a["target"] or None, int(a["attempt"]))
        assert key not in out, f"{key} appears twice on the page"
        out[key] = (float(a["start"]), float(a["end"]), a["outcome"], a["exit"])
    return out


def recorded(events: list) -> dict:
    """The same, from an event log: start and end exactly as the events have them."""
    started = {(e.step, e.target, e.attempt): e.at for e in events if isinstance(e, ExecutionStarted)}
    return {
        (e.step, e.target, e.attempt): (started[(e.step, e.target, e.attempt)], e.at, e.outcome, "" if e.exit_code is None else str(e.exit_code))
        for e in events
        if isinstance(e, ExecutionFinished)
    }


def tip_rows(page) -> dict[str, str]:  # noqa: ANN001
    return page.evaluate("() => Object.fromEntries(Array.from(document.querySelectorAll('#tip tr'), r => [r.cells[0].textContent, r.cells[1].textContent]))")


# --- a simulated scenario --------------------------------------------------------------------


def test_every_simulated_attempt_is_on_the_page_once_with_its_times_and_nothing_is_loaded(tmp_path):
    page_file = tmp_path / "farm.html"
    events_file = tmp_path / "farm.jsonl"
    sim = abreast("simulate", str(WEB_FARM), "--set", FLAKY, "--format", "json", "--events", str(events_file))
    assert sim.returncode == 0, sim.stderr
    doc = json.loads(sim.stdout)
    p = abreast("report", str(WEB_FARM), "--set", FLAKY, "-o", str(page_file))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(page_file)
    executions = {(e["step"], e["target"], e["attempt"]): (e["start"], e["end"], e["outcome"]) for e in doc["executions"]}
    assert any(e["outcome"] == "failed" for e in doc["executions"])  # the scenario does retry
    with open(events_file, "rb") as f:
        exit_codes = {k: v[3] for k, v in recorded(list(from_jsonl(f))).items()}
    with open_page(page_file, tmp_path / "profile") as visit:
        on_page = keyed(attempts_on(visit.page))
        visit.assert_clean(page_file.resolve().as_uri())
    assert {k: v[:3] for k, v in on_page.items()} == executions
    assert {k: v[3] for k, v in on_page.items()} == exit_codes


def test_the_summary_is_there_without_javascript(tmp_path):
    page_file = tmp_path / "farm.html"
    assert abreast("report", str(WEB_FARM), "-o", str(page_file)).returncode == 0
    doc = json.loads(abreast("simulate", str(WEB_FARM), "--format", "json").stdout)
    with open_page(page_file, tmp_path / "profile", javascript=False) as visit:
        rows = visit.page.evaluate(
            "() => Object.fromEntries(Array.from(document.querySelectorAll('#summary tr'), r => [r.cells[0].textContent, r.cells[1].textContent]))"
        )
        drawn = visit.page.locator("rect.a").count()
    bound = doc["lower_bound"]
    saved = doc["sequential_makespan"] - doc["makespan"]
    assert rows["scenario"] == "web farm rolling release"
    assert rows["outcome"] == "succeeded"
    assert rows["makespan"] == seconds(doc["makespan"])
    assert rows["sequential makespan"] == seconds(doc["sequential_makespan"])
    assert rows["savings"] == f"{seconds(saved)} ({100 * saved / doc['sequential_makespan']:.1f}%)"
    assert rows["lower bound"].startswith(f"{seconds(bound['value'])} — {bound['kind']} bound ({bound['detail']})")
    assert drawn == len(doc["executions"])  # the timeline is drawn in the file, not by the script


def test_hovering_an_attempt_shows_what_it_was(tmp_path):
    page_file = tmp_path / "farm.html"
    assert abreast("report", str(WEB_FARM), "--set", FLAKY, "-o", str(page_file)).returncode == 0
    doc = json.loads(abreast("simulate", str(WEB_FARM), "--set", FLAKY, "--format", "json").stdout)
    failed = next(e for e in doc["executions"] if e["outcome"] == "failed")
    ok = next(e for e in doc["executions"] if e["step"] == "stage lb config")
    with open_page(page_file, tmp_path / "profile") as visit:
        page = visit.page
        for e, exit_code, error in ((failed, "1", "injected failure (simulation)"), (ok, "0", None)):
            selector = f'rect.a[data-step="{e["step"]}"][data-target="{e["target"]}"][data-attempt="{e["attempt"]}"]'
            page.locator(selector).hover()
            expected = {
                "step": e["step"],
                "target": e["target"],
                "attempt": str(e["attempt"]),
                "start": seconds(e["start"]),
                "end": seconds(e["end"]),
                "duration": seconds(e["end"] - e["start"]),
                "outcome": e["outcome"],
                "exit code": exit_code,
            }
            if error:
                expected["error"] = error
            shown = tip_rows(page)
            shown.pop("", None)  # "on the critical path", for some
            assert shown == expected
            assert page.locator("#tip").is_visible()
        # The by-target lanes draw the same attempt again, without the data-* attributes:
        # hovering it there shows the same.
        i = page.evaluate(
            f"""() => Array.from(document.querySelectorAll('rect.a')).findIndex(e =>
                e.dataset.step === {json.dumps(ok["step"])} && e.dataset.target === {json.dumps(ok["target"])})"""
        )
        page.locator(f'[data-view="targets"] rect[data-ref="{i}"]').hover()
        assert tip_rows(page)["target"] == ok["target"]
        visit.assert_clean(page_file.resolve().as_uri())


def test_zoom_and_pan_move_the_time_axis_of_every_timeline(tmp_path):
    page_file = tmp_path / "farm.html"
    assert abreast("report", str(WEB_FARM), "-o", str(page_file)).returncode == 0
    with open_page(page_file, tmp_path / "profile") as visit:
        page = visit.page
        first = page.locator("svg.plot").first

        def view() -> list[float]:
            return [float(v) for v in first.get_attribute("viewBox").split()]

        x0, _, w0, _ = view()
        assert x0 == 0
        page.click('button[data-zoom="in"]')
        page.wait_for_function(f"() => parseFloat(document.querySelector('svg.plot').getAttribute('viewBox').split(' ')[2]) < {w0}")
        x1, _, w1, _ = view()
        assert w1 == pytest.approx(w0 / 2)
        box = first.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 5)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 4, box["y"] + 5, steps=5)
        page.mouse.up()
        page.wait_for_function(f"() => parseFloat(document.querySelector('svg.plot').getAttribute('viewBox').split(' ')[0]) > {x1}")
        x2, _, w2, _ = view()
        assert w2 == pytest.approx(w1) and x2 == pytest.approx(x1 + w1 / 4, rel=0.05)
        # Every chunk in view follows, in both timelines; ctrl+wheel zooms around the mouse.
        page.keyboard.press("0")
        page.wait_for_function("() => document.querySelector('svg.plot').getAttribute('viewBox').startsWith('0 ')")
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 5)
        page.keyboard.down("Control")
        page.mouse.wheel(0, -300)
        page.keyboard.up("Control")
        page.wait_for_function(f"() => parseFloat(document.querySelector('svg.plot').getAttribute('viewBox').split(' ')[2]) < {w0}")
        boxes = page.evaluate("() => Array.from(document.querySelectorAll('.tl svg.plot'), p => p.getAttribute('viewBox').split(' ').slice(0, 3).join(' '))")
        assert len(set(boxes)) == 1 and len(boxes) >= 2
        visit.assert_clean(page_file.resolve().as_uri())


def test_the_screenshot_shows_bars_waits_and_failures(tmp_path):
    page_file = tmp_path / "farm.html"
    assert abreast("report", str(WEB_FARM), "--set", FLAKY, "-o", str(page_file)).returncode == 0
    shot = tmp_path / "farm.png"
    with open_page(page_file, tmp_path / "profile", width=1280, height=1000) as visit:
        visit.page.screenshot(path=str(shot))
        visit.assert_clean(page_file.resolve().as_uri())
    counts = colours(shot)
    total = sum(counts.values())
    assert counts.get((255, 255, 255), 0) < 0.95 * total
    assert len(counts) > 20
    # Succeeded bars, failed attempts and window waits, in their colours, in quantity.
    assert counts.get(GREEN, 0) > 5000
    assert counts.get(RED, 0) > 200
    assert counts.get(WINDOW_BLUE, 0) > 2000


# --- what-if grids ---------------------------------------------------------------------------


def test_a_grid_draws_each_row_side_by_side_and_marks_the_best(tmp_path):
    page_file = tmp_path / "grid.html"
    key = "steps.upgrade web.window"
    p = abreast("report", str(WEB_FARM), "-o", str(page_file), "--set", f"{key}=1,3,6")
    assert p.returncode == 0, p.stderr
    makespans = {}
    expected = {}
    for i, v in enumerate(("1", "3", "6")):
        doc = json.loads(abreast("simulate", str(WEB_FARM), "--set", f"{key}={v}", "--format", "json").stdout)
        makespans[str(i)] = doc["makespan"]
        expected[str(i)] = {(e["step"], e["target"], e["attempt"]): (e["start"], e["end"], e["outcome"]) for e in doc["executions"]}
    written = json.loads(abreast("simulate", str(WEB_FARM), "--format", "json").stdout)
    expected["main"] = {(e["step"], e["target"], e["attempt"]): (e["start"], e["end"], e["outcome"]) for e in written["executions"]}
    best = min(makespans, key=lambda i: (makespans[i], int(i)))
    with open_page(page_file, tmp_path / "profile") as visit:
        page = visit.page
        found = attempts_on(page)
        table = page.evaluate(
            "() => Array.from(document.querySelectorAll('#whatif table.whatif tbody tr'), r => [r.className, ...Array.from(r.cells, c => c.textContent)])"
        )
        bars = page.locator("#whatif svg.chart rect.bar").count()
        best_bars = page.locator("#whatif svg.chart rect.bar.best").count()
        visit.assert_clean(page_file.resolve().as_uri())
    for arrangement, want in expected.items():
        mine = [a for a in found if a["arrangement"] == arrangement]
        assert {k: v[:3] for k, v in keyed(mine).items()} == want
    assert [row[2] for row in table] == ["1", "3", "6"]
    assert [row[3] for row in table] == [seconds(makespans[i]) for i in ("0", "1", "2")]
    assert [row[0] for row in table] == ["best" if str(i) == best else "" for i in range(3)]
    assert table[int(best)][1] == "★"
    assert (bars, best_bars) == (3, 1)


# --- recorded deployments --------------------------------------------------------------------


def test_a_stored_real_run_shows_exit_codes_and_the_output_of_an_attempt(tmp_path):
    scenario = write(
        tmp_path,
        "deploy.yaml",
        {
            "name": "real run",
            "targets": [{"name": "a", "roles": ["app"]}, {"name": "b", "roles": ["app"]}],
            "steps": [
                {"name": "build", "run": "echo compiling; echo '</script><script>alert(1)</script>'; echo built"},
                {
                    "name": "deploy",
                    "roles": ["app"],
                    "retries": 1,
                    "run": 'for i in $(seq 1 30); do echo "$ABREAST_TARGET line $i"; done; '
                    'if [ "$ABREAST_TARGET" = b ] && [ "$ABREAST_ATTEMPT" = 1 ]; then sleep 1; exit 3; fi',
                },
            ],
        },
    )
    db = tmp_path / "store.db"
    run = abreast("run", str(scenario), "--id", "r1", "--db", str(db), "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    page_file = tmp_path / "r1.html"
    p = abreast("report", "r1", "--db", str(db), "-o", str(page_file), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    store = SqliteStore(db)
    events = store.read("r1")
    store.close()
    with open_page(page_file, tmp_path / "profile") as visit:
        page = visit.page
        on_page = keyed(attempts_on(page))
        assert on_page == recorded(events)
        assert on_page[("deploy", "b", 1)][2:] == ("failed", "3")
        page.locator('rect.a[data-step="deploy"][data-target="b"][data-attempt="1"]').click()
        shown = page.locator("#detail pre.output").inner_text()
        assert shown.splitlines() == [f"b line {i}" for i in range(11, 31)]  # the last 20 lines
        page.locator("#detail .close").click()
        page.locator('rect.a[data-step="build"]').click()
        assert page.locator("#detail pre.output").inner_text().splitlines() == [
            "compiling", "</script><script>alert(1)</script>", "built"
        ]
        visit.assert_clean(page_file.resolve().as_uri())
    assert "deployment r1" in page_file.read_text()


def test_a_stored_dry_run_and_its_exported_history_give_the_same_attempts(tmp_path):
    db = tmp_path / "store.db"
    run = abreast("run", str(WEB_FARM), "--dry-run", "--speed", "400", "--id", "dry", "--db", str(db), "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    history = tmp_path / "dry.jsonl"
    history.write_text(abreast("history", "export", "dry", "--db", str(db), cwd=tmp_path).stdout)
    store = SqliteStore(db)
    events = store.read("dry")
    store.close()
    sequential = json.loads(abreast("simulate", str(WEB_FARM), "--format", "json").stdout)["sequential_makespan"]
    for source in ("dry", str(history)):
        page_file = tmp_path / "page.html"
        p = abreast("report", source, "--db", str(db), "-o", str(page_file), cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        with open_page(page_file, tmp_path / f"profile-{len(source)}") as visit:
            assert keyed(attempts_on(visit.page)) == recorded(events)
            summary = visit.page.locator("#summary").inner_text()
            visit.assert_clean(page_file.resolve().as_uri())
        # A dry run slept the scenario's durations: its sequential makespan is simulated.
        assert f"sequential makespan\t{seconds(sequential)}" in summary


def test_a_history_file_from_a_simulation(tmp_path):
    events_file = tmp_path / "sim.jsonl"
    assert abreast("simulate", str(WEB_FARM), "--set", FLAKY, "--events", str(events_file)).returncode == 0
    page_file = tmp_path / "sim.html"
    p = abreast("report", str(events_file), "-o", str(page_file))
    assert p.returncode == 0, p.stderr
    with open(events_file, "rb") as f:
        events = list(from_jsonl(f))
    with open_page(page_file, tmp_path / "profile") as visit:
        assert keyed(attempts_on(visit.page)) == recorded(events)
        visit.assert_clean(page_file.resolve().as_uri())


def test_a_recorded_history_replayed_under_a_grid_beside_its_recorded_timeline(tmp_path):
    # A simulation's history records every attempt (failures and retries too), so replaying
    # it under other settings is the same as simulating the scenario under them: the
    # durations and failures are drawn by (step, target, attempt), whatever the order.
    history = tmp_path / "farm.jsonl"
    assert abreast("simulate", str(WEB_FARM), "--set", FLAKY, "--events", str(history)).returncode == 0
    page_file = tmp_path / "replayed.html"
    p = abreast("report", str(history), "-o", str(page_file), "--set", "max_parallel_targets=1,10")
    assert p.returncode == 0, p.stderr
    replayed = json.loads(abreast("replay", str(history), "--set", "max_parallel_targets=1,10", "--format", "json").stdout)
    with open(history, "rb") as f:
        events = list(from_jsonl(f))
    expected = {"main": recorded(events)}
    makespans = {}
    for i, v in enumerate(("1", "10")):
        doc = json.loads(abreast("simulate", str(WEB_FARM), "--set", FLAKY, "--set", f"max_parallel_targets={v}", "--format", "json").stdout)
        expected[str(i)] = {(e["step"], e["target"], e["attempt"]): (e["start"], e["end"], e["outcome"]) for e in doc["executions"]}
        row = replayed["rows"][i]
        assert row["settings"] == {"max_parallel_targets": int(v)} and row["estimated"] == []
        assert row["makespan"] == doc["makespan"]
        makespans[i] = row["makespan"]
    assert any(k[2] > 1 for k in expected["0"])  # retries are replayed too
    best = min(makespans, key=lambda i: (makespans[i], i))
    with open_page(page_file, tmp_path / "profile") as visit:
        page = visit.page
        found = attempts_on(page)
        table = page.evaluate(
            "() => Array.from(document.querySelectorAll('#whatif table.whatif tbody tr'), r => [r.className, ...Array.from(r.cells, c => c.textContent)])"
        )
        best_bars = page.locator("#whatif svg.chart rect.bar.best").count()
        visit.assert_clean(page_file.resolve().as_uri())
    assert {a["arrangement"] for a in found} == {"main", "0", "1"}
    assert keyed([a for a in found if a["arrangement"] == "main"]) == expected["main"]
    for arrangement in ("0", "1"):
        mine = [a for a in found if a["arrangement"] == arrangement]
        assert {k: v[:3] for k, v in keyed(mine).items()} == expected[arrangement]
    assert [row[2] for row in table] == ["1", "10"]
    assert [row[3] for row in table] == [seconds(makespans[0]), seconds(makespans[1])]
    assert [row[0] for row in table] == ["best" if i == best else "" for i in range(2)]
    assert table[best][1] == "★" and best_bars == 1
    assert [row[-1] for row in table] == ["", ""]  # nothing estimated: every attempt was recorded


def test_a_replayed_row_says_how_many_attempts_it_had_to_estimate(tmp_path):
    # Upgrading the load balancers too: the record has no upgrade of lb-01 nor lb-02.
    history = tmp_path / "farm.jsonl"
    assert abreast("simulate", str(WEB_FARM), "--events", str(history)).returncode == 0
    setting = "steps.upgrade web.roles=[web],[web, lb]"
    replayed = json.loads(abreast("replay", str(history), "--set", setting, "--format", "json").stdout)
    assert [sorted(e["target"] for e in r["estimated"]) for r in replayed["rows"]] == [[], ["lb-01", "lb-02"]]
    page_file = tmp_path / "estimated.html"
    p = abreast("report", str(history), "-o", str(page_file), "--set", setting)
    assert p.returncode == 0, p.stderr
    with open_page(page_file, tmp_path / "profile") as visit:
        last = visit.page.evaluate("() => Array.from(document.querySelectorAll('#whatif table.whatif tbody tr'), r => r.cells[r.cells.length - 1].textContent)")
        found = attempts_on(visit.page)
        visit.assert_clean(page_file.resolve().as_uri())
    assert last == ["", "≈ 2 attempts estimated (no recorded duration)"]
    assert {a["target"] for a in found if a["arrangement"] == "1" and a["step"] == "upgrade web"} >= {"lb-01", "lb-02"}


# --- size and scale --------------------------------------------------------------------------


def fleet(targets: int, steps: int) -> dict:
    return {
        "name": f"{targets} targets x {steps} steps",
        "policy": {"max_parallel_targets": 10},
        "targets": [{"name": f"host-{i:05d}", "roles": ["app"]} for i in range(targets)],
        "steps": [
            {"name": f"step {s}", "roles": ["app"], "duration": {"dist": "uniform", "low": 5, "high": 15}, "failure_rate": 0.02, "retries": 3}
            for s in range(steps)
        ],
    }


def test_a_hundred_executions_make_a_page_under_a_megabyte(tmp_path):
    scenario = write(tmp_path, "hundred.yaml", fleet(25, 4))
    page_file = tmp_path / "hundred.html"
    assert abreast("report", str(scenario), "-o", str(page_file)).returncode == 0
    assert page_file.stat().st_size < 1_000_000
    assert len(re.findall(r'<rect class="a ', page_file.read_text())) >= 100


def test_ten_thousand_executions_all_on_the_page(tmp_path):
    scenario = write(tmp_path, "big.yaml", fleet(1000, 10))
    page_file = tmp_path / "big.html"
    p = abreast("report", str(scenario), "-o", str(page_file))
    assert p.returncode == 0, p.stderr
    doc = json.loads(abreast("simulate", str(scenario), "--format", "json").stdout)
    assert len(doc["executions"]) > 10_000
    with open_page(page_file, tmp_path / "profile") as visit:
        on_page = keyed(attempts_on(visit.page))
        # Zooming redraws only the chunks in view: none holds more than 200 rows.
        chunk_rows = visit.page.evaluate("() => Array.from(document.querySelectorAll('svg.plot'), p => p.viewBox.baseVal.height)")
        visit.page.click('button[data-zoom="in"]')
        visit.page.wait_for_function("() => document.querySelector('.zoom .range').textContent.startsWith('showing')")
        visit.assert_clean(page_file.resolve().as_uri())
    assert {k: v[:3] for k, v in on_page.items()} == {
        (e["step"], e["target"], e["attempt"]): (e["start"], e["end"], e["outcome"]) for e in doc["executions"]
    }
    assert max(chunk_rows) <= 200


# --- bad input -------------------------------------------------------------------------------


def test_bad_input_exits_2_with_one_line(tmp_path):
    out = str(tmp_path / "x.html")
    cases = [
        (["report", str(tmp_path / "missing.yaml"), "-o", out], f"error: {tmp_path / 'missing.yaml'}: no such file"),
        (["report", "no-such-id", "--db", str(tmp_path / "none.db"), "-o", out], "no event store at"),
        (["report", str(WEB_FARM), "-o", out, "--set", "steps.nope.window=1,2"], "no step named 'nope'"),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "deployment.started"}\n')
    cases.append((["report", str(bad), "-o", out], f"{bad}:1: not an event"))
    events_file = tmp_path / "sim.jsonl"
    abreast("simulate", str(WEB_FARM), "--events", str(events_file))
    cases.append((["report", str(events_file), "-o", out, "--set", "steps.nope.window=1,2"], "no step named 'nope'"))
    lines = events_file.read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines[:3] + lines[4:]) + "\n")  # a gap in seq
    cases.append((["report", str(broken), "-o", out], f"{broken}:4: event seq 5 does not follow 3"))
    for args, message in cases:
        p = abreast(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert message in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not Path(out).exists()
