"""The runtime with real processes and a real SQLite file: the rules as the processes
themselves saw them (their own timestamps), a failure that triggers a rollback, a retry
that waits for a timed-out command to be gone, and output that keeps its end."""

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
    local = LocalAdapter(db.parent / "state", grace=5)
    outcome = await Runtime(Core(plan, deployment), store, lambda t: local, path.parent).run()
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


async def test_a_retry_after_a_timeout_waits_until_the_slow_to_stop_command_is_gone(tmp_path):
    # The command traps TERM and needs 1.5 s to stop. Attempt 1 times out after 1 s, but
    # it ends (and attempt 2 starts) only when its process group is gone; attempt 2
    # really runs (its own 1 s) instead of being timed out at once.
    path = write_scenario(tmp_path, {"steps": [{
        "name": "slow", "timeout": 1, "retries": 1,
        "run": 'echo "start $ABREAST_ATTEMPT $(date +%s.%N)" >> stamps; '
               'trap \'sleep 1.5; echo "end $ABREAST_ATTEMPT $(date +%s.%N)" >> stamps; exit 1\' TERM; '
               'while :; do sleep 0.05; done',
    }]})
    outcome, store = await run_file(path, tmp_path / "abreast.db")
    assert outcome == "failed"
    stamps = [line.split() for line in (tmp_path / "stamps").read_text().splitlines()]
    assert [(kind, attempt) for kind, attempt, _ in stamps] == [("start", "1"), ("end", "1"), ("start", "2"), ("end", "2")]
    assert float(stamps[1][2]) <= float(stamps[2][2])  # no overlap
    finished = [e for e in store.read("d") if type(e).__name__ == "ExecutionFinished"]
    started = [e for e in store.read("d") if type(e).__name__ == "ExecutionStarted"]
    assert [e.outcome for e in finished] == ["timed_out", "timed_out"]
    assert finished[0].at >= 2.5 and started[1].at >= finished[0].at  # 1 s, then 1.5 s to stop
    assert finished[1].at - started[1].at >= 2.5


async def test_output_keeps_its_first_and_last_lines(tmp_path):
    path = write_scenario(tmp_path, {"steps": [{"name": "chatty", "run": "seq 1 5001; echo the error is here >&2; exit 3"}]})
    outcome, store = await run_file(path, tmp_path / "abreast.db")
    lines = [(o.n, o.line) for o in store.output("d")]
    assert outcome == "failed" and len(lines) == 2001
    assert lines[:2] == [(1, "1"), (2, "2")] and lines[999] == (1000, "1000")
    assert lines[1000] == (1001, "[abreast: 3002 lines cut here (lines 1001-4002 of 5002); the first 1000 and the last 1000 are kept]")
    assert lines[-2:] == [(5001, "5001"), (5002, "the error is here")]


async def test_a_100_mb_line_costs_linear_time_and_is_kept_cut(tmp_path):
    path = write_scenario(tmp_path, {"steps": [{
        "name": "huge", "run": "head -c 100000000 /dev/zero | tr '\\0' y; echo; echo after",
    }]})
    outcome, store = await run_file(path, tmp_path / "abreast.db")
    lines = [o.line for o in store.output("d")]
    assert outcome == "succeeded" and len(lines) == 2
    assert lines[0] == "y" * 4000 + " [abreast: line cut at 4000 characters]" and lines[1] == "after"
