"""The runtime with real processes and a real SQLite file: the rules as the processes
themselves saw them (their own timestamps), and a failure that triggers a rollback."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import yaml

from adapters.local import LocalAdapter
from engine.core import Core
from engine.events import DeploymentFinished
from engine.runtime import Runtime
from engine.scenario import load
from engine.store import SqliteStore

# Each execution logs its own start and end (nanosecond clock) to one shared file.
STAMP = (
    'echo "start $ABREAST_STEP $ABREAST_TARGET $(date +%s.%N)" >> stamps; '
    "sleep {sleep}; "
    'echo "end $ABREAST_STEP $ABREAST_TARGET $(date +%s.%N)" >> stamps'
)


def write_scenario(folder: Path, doc: dict) -> Path:
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def intervals(folder: Path) -> dict[tuple[str, str], tuple[float, float]]:
    seen: dict[tuple[str, str], list[float]] = defaultdict(list)
    for line in (folder / "stamps").read_text().splitlines():
        _, step, target, t = line.split()
        seen[(step, target)].append(float(t))
    return {k: (v[0], v[1]) for k, v in seen.items()}


def max_overlap(spans: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = now = 0
    for _, d in points:
        now += d
        best = max(best, now)
    return best


async def run_file(path: Path, db: Path, deployment: str = "d") -> tuple[str, SqliteStore]:
    plan = load(path)
    store = SqliteStore(db)
    outcome = await Runtime(Core(plan, deployment), store, lambda t: LocalAdapter(), path.parent).run()
    return outcome, store


async def test_windows_locks_and_the_block_barrier_as_the_processes_saw_them(tmp_path):
    targets = [{"name": f"web-{i}", "roles": ["web"]} for i in range(1, 5)]
    path = write_scenario(tmp_path, {
        "targets": targets,
        "steps": [
            {"name": "A", "roles": ["web"], "window": 2, "run": STAMP.format(sleep=0.3)},
            {"name": "B", "start": "with-previous", "roles": ["web"], "window": 2, "run": STAMP.format(sleep=0.2)},
            {"name": "C", "roles": ["web"], "run": STAMP.format(sleep=0.1)},
        ],
    })
    outcome, store = await run_file(path, tmp_path / "abreast.db")
    assert outcome == "succeeded"
    spans = intervals(tmp_path)
    assert len(spans) == 12
    for step in "ABC":
        limit = 2 if step in "AB" else 10
        assert max_overlap([v for (s, _), v in spans.items() if s == step]) <= limit, f"window of {step}"
    for t in (x["name"] for x in targets):
        on_target = sorted(v for (_, tt), v in spans.items() if tt == t)
        for (_, end), (start, _) in zip(on_target, on_target[1:]):
            assert end <= start, f"two steps at once on {t}"
    block_end = max(e for (s, _), (_, e) in spans.items() if s in "AB")
    assert min(st for (s, _), (st, _) in spans.items() if s == "C") >= block_end, "C started before the block ended"
    # A and B really ran side by side on different targets (the point of the block).
    assert max_overlap([v for (s, _), v in spans.items() if s in "AB"]) >= 3
    assert isinstance(store.read("d")[-1], DeploymentFinished)
    assert store.summary("d").status == "succeeded"


async def test_a_failing_command_makes_the_failure_step_run(tmp_path):
    path = write_scenario(tmp_path, {
        "targets": [{"name": "db-01", "roles": ["db"]}],
        "steps": [
            {"name": "migrate", "roles": ["db"], "run": "echo migrating; exit 4"},
            {"name": "deploy", "run": "echo never > deployed"},
            {"name": "roll back", "condition": "failure", "run": "echo rolled back > rolled-back"},
        ],
    })
    outcome, store = await run_file(path, tmp_path / "abreast.db")
    assert outcome == "failed"
    assert (tmp_path / "rolled-back").read_text() == "rolled back\n"
    assert not (tmp_path / "deployed").exists()
    finished = {e.step: e for e in store.read("d") if type(e).__name__ == "ExecutionFinished"}
    assert (finished["migrate"].outcome, finished["migrate"].exit_code) == ("failed", 4)
    assert [o.line for o in store.output("d", step="migrate")] == ["migrating"]
    skipped = [e for e in store.read("d") if type(e).__name__ == "StepSkipped"]
    assert [e.step for e in skipped] == ["deploy"]


async def test_a_timeout_fails_the_attempt_and_kills_the_command(tmp_path):
    path = write_scenario(tmp_path, {
        "steps": [{"name": "hang", "run": "echo $$ > pid; sleep 30", "timeout": 0.5}],
    })
    outcome, store = await run_file(path, tmp_path / "abreast.db")
    finished = [e for e in store.read("d") if type(e).__name__ == "ExecutionFinished"]
    assert outcome == "failed"
    assert (finished[0].outcome, finished[0].error) == ("timed_out", "ran longer than the timeout of 0.5s")
    assert 0.5 <= finished[0].at < 5
