"""`abreast run`, `resume` and `history` as whole processes on a real SQLite file:
exit codes, cancellation by signal, a crash (kill -9) and a resume, two deployments
writing to one database at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from engine.events import DeploymentFinished, ExecutionFinished, ExecutionStarted, from_jsonl
from engine.store import SqliteStore
from tests.helpers import alive

ROOT = Path(__file__).resolve().parents[2]


def env_for(folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ABREAST_DB"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def abreast(folder: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "abreast", *args], capture_output=True, text=True, cwd=folder, env=env_for(folder), timeout=timeout
    )


def start(folder: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "abreast", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=folder, env=env_for(folder),
    )


def scenario(folder: Path, doc: dict, name: str = "deploy.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def wait_for(predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def events_of(db: Path, deployment: str) -> list:
    if not db.exists():
        return []
    s = SqliteStore(db)
    try:
        return s.read(deployment)
    finally:
        s.close()


SIMPLE = {
    "name": "simple",
    "targets": [{"name": "web-01", "roles": ["web"]}, {"name": "web-02", "roles": ["web"]}],
    "steps": [
        {"name": "deploy", "roles": ["web"], "run": 'echo "deployed $ABREAST_TARGET"'},
        {"name": "notify", "run": "echo done"},
    ],
}


def test_run_records_into_the_default_database_here_and_history_reads_it(tmp_path):
    scenario(tmp_path, SIMPLE)
    p = abreast(tmp_path, "run", "deploy.yaml", "--id", "rel-1", "-q")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "rel-1"
    db = tmp_path / ".abreast" / "abreast.db"
    assert db.exists()

    listing = json.loads(abreast(tmp_path, "history", "list", "--format", "json").stdout)
    assert [(d["id"], d["scenario"], d["status"]) for d in listing] == [("rel-1", "simple", "succeeded")]
    assert listing[0]["started"] and listing[0]["finished"]

    shown = json.loads(abreast(tmp_path, "history", "show", "rel-1", "--format", "json").stdout)
    assert [s["name"] for s in shown["steps"]] == ["deploy", "notify"] and shown["outcome"] == "succeeded"

    logs = abreast(tmp_path, "history", "logs", "rel-1", "--step", "deploy", "--target", "web-02").stdout
    assert logs == "deploy @ web-02 #1 | deployed web-02\n"

    exported = abreast(tmp_path, "history", "export", "rel-1").stdout
    events = list(from_jsonl(exported.encode().splitlines()))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(e.wall for e in events)
    (tmp_path / "rel-1.jsonl").write_text(exported)
    other = tmp_path / "other.db"
    p = abreast(tmp_path, "history", "import", "rel-1.jsonl", "--db", str(other))
    assert p.returncode == 0 and p.stdout.strip() == "rel-1"
    assert abreast(tmp_path, "history", "export", "rel-1", "--db", str(other)).stdout == exported


def test_the_database_can_come_from_the_environment(tmp_path):
    scenario(tmp_path, SIMPLE)
    env = env_for(tmp_path) | {"ABREAST_DB": str(tmp_path / "elsewhere.db")}
    p = subprocess.run([sys.executable, "-m", "abreast", "run", "deploy.yaml", "-q"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert p.returncode == 0
    assert (tmp_path / "elsewhere.db").exists() and not (tmp_path / ".abreast").exists()


def test_two_simulated_logs_go_into_one_history_under_ids_of_their_own(tmp_path):
    scenario(tmp_path, {
        "targets": [{"name": f"web-{i}", "roles": ["web"]} for i in range(1, 5)],
        "steps": [{"name": "deploy", "roles": ["web"], "duration": 10}],
    })
    for window in (1, 4):
        p = abreast(tmp_path, "simulate", "deploy.yaml", "--set", f"max_parallel_targets={window}", "--events", f"w{window}.jsonl")
        assert p.returncode == 0, p.stderr
    assert abreast(tmp_path, "history", "import", "w1.jsonl").stdout.strip() == "simulation"
    clash = abreast(tmp_path, "history", "import", "w4.jsonl")
    assert clash.returncode == 2 and "import it under another with --id" in clash.stderr
    assert abreast(tmp_path, "history", "import", "w4.jsonl", "--id", "window-4").stdout.strip() == "window-4"
    listed = {d["id"]: d for d in json.loads(abreast(tmp_path, "history", "list", "--format", "json").stdout)}
    assert set(listed) == {"simulation", "window-4"}
    shown = json.loads(abreast(tmp_path, "history", "show", "window-4", "--format", "json").stdout)
    assert (shown["deployment"], shown["makespan"]) == ("window-4", 10)


def test_import_rejects_a_history_that_breaks_the_rules(tmp_path):
    scenario(tmp_path, SIMPLE)
    abreast(tmp_path, "run", "deploy.yaml", "--id", "rel-1", "-q")
    lines = abreast(tmp_path, "history", "export", "rel-1").stdout.splitlines()
    # Drop the first execution.started: its execution.finished becomes illegal.
    bad = [line for line in lines if '"execution.started"' not in line or '"web-01"' not in line]
    renumbered = []
    for n, line in enumerate(bad, 1):
        doc = json.loads(line)
        doc["seq"] = n
        renumbered.append(json.dumps(doc))
    (tmp_path / "bad.jsonl").write_text("\n".join(renumbered) + "\n")
    p = abreast(tmp_path, "history", "import", "bad.jsonl", "--db", str(tmp_path / "x.db"))
    assert p.returncode == 2
    # Line 3 is web-02's start, where the rules start web-01 first: the first event that
    # parts from the rules is named (web-01's finish, later, could never be legal either).
    assert "bad.jsonl:3: execution.started of 'deploy' on web-02" in p.stderr and "Traceback" not in p.stderr
    assert "the rules give execution.started of 'deploy' on web-01" in p.stderr


def test_a_failing_command_exits_1_after_the_failure_step_ran(tmp_path):
    scenario(tmp_path, {
        "steps": [
            {"name": "migrate", "run": "exit 3"},
            {"name": "roll back", "condition": "failure", "run": "touch rolled-back"},
        ],
    })
    p = abreast(tmp_path, "run", "deploy.yaml", "-q")
    assert p.returncode == 1
    assert (tmp_path / "rolled-back").exists()


def test_bad_input_and_unknown_ids_exit_2(tmp_path):
    scenario(tmp_path, {"steps": [{"name": "a", "window": 0}]}, "bad.yaml")
    p = abreast(tmp_path, "run", "bad.yaml")
    assert p.returncode == 2 and "$.steps[0].window" in p.stderr and not (tmp_path / ".abreast").exists()
    assert abreast(tmp_path, "resume", "nope").returncode == 2
    assert abreast(tmp_path, "history", "show", "nope").returncode == 2
    scenario(tmp_path, SIMPLE)
    abreast(tmp_path, "run", "deploy.yaml", "--id", "x", "-q")
    again = abreast(tmp_path, "run", "deploy.yaml", "--id", "x", "-q")
    assert again.returncode == 2 and "already exists" in again.stderr
    done = abreast(tmp_path, "resume", "x")
    assert done.returncode == 2 and "already ended succeeded" in done.stderr


def test_a_dry_run_without_durations_is_bad_input(tmp_path):
    scenario(tmp_path, SIMPLE)
    p = abreast(tmp_path, "run", "deploy.yaml", "--dry-run")
    assert p.returncode == 2 and "has no duration" in p.stderr


def test_a_dry_run_rehearses_with_simulated_durations(tmp_path):
    scenario(tmp_path, {
        "targets": [{"name": "web-01", "roles": ["web"]}, {"name": "web-02", "roles": ["web"]}],
        "steps": [
            {"name": "A", "roles": ["web"], "duration": 10, "run": "touch must-not-exist"},
            {"name": "B", "start": "with-previous", "roles": ["web"], "duration": 5},
        ],
    })
    p = abreast(tmp_path, "run", "deploy.yaml", "--dry-run", "--speed", "100", "--id", "dry", "-q")
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "must-not-exist").exists()
    shown = json.loads(abreast(tmp_path, "history", "show", "dry", "--format", "json").stdout)
    # On the rehearsal's clock: the simulated schedule (10 s + 5 s), within timing noise.
    assert shown["makespan"] == pytest.approx(15, abs=1.0)
    assert [(e["step"], e["target"]) for e in shown["executions"]] == [
        ("A", "web-01"), ("A", "web-02"), ("B", "web-01"), ("B", "web-02")
    ]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cancels_running_commands_and_ends_the_log_cancelled(tmp_path, sig):
    scenario(tmp_path, {
        "targets": [{"name": "web-01", "roles": ["web"]}],
        "steps": [
            {"name": "slow", "roles": ["web"], "run": "echo $$ > pid; sleep 60"},
            {"name": "after", "run": "touch after-ran"},
        ],
    })
    proc = start(tmp_path, "run", "deploy.yaml", "--id", "c1", "-q")
    wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text().strip())
    pid = int((tmp_path / "pid").read_text())
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 130
    events = events_of(tmp_path / ".abreast" / "abreast.db", "c1")
    assert isinstance(events[-1], DeploymentFinished) and events[-1].outcome == "cancelled"
    finished = [e for e in events if isinstance(e, ExecutionFinished)]
    assert [(e.step, e.outcome) for e in finished] == [("slow", "cancelled")]
    wait_for(lambda: not alive(pid), timeout=10)
    assert not (tmp_path / "after-ran").exists()


def test_kill_9_then_resume_runs_only_what_had_not_finished(tmp_path):
    # Four targets, two at a time. Each attempt notes that it ran; the first two are
    # quick, the others block until released, so the crash comes while they run.
    scenario(tmp_path, {
        "targets": [{"name": f"t{i}", "roles": ["app"]} for i in range(1, 5)],
        "policy": {"max_parallel_targets": 2},
        "steps": [
            {
                "name": "deploy",
                "roles": ["app"],
                "run": 'echo "$ABREAST_TARGET $ABREAST_ATTEMPT" >> ran; '
                       'case $ABREAST_TARGET in t1|t2) ;; *) while [ ! -e release ]; do sleep 0.05; done;; esac',
            },
            {"name": "finish", "run": "echo finished >> ran"},
        ],
    })
    db = tmp_path / ".abreast" / "abreast.db"
    proc = start(tmp_path, "run", "deploy.yaml", "--id", "k1", "-q")

    def two_running_after_two_done() -> bool:
        evs = events_of(db, "k1")
        done = sum(isinstance(e, ExecutionFinished) for e in evs)
        started = sum(isinstance(e, ExecutionStarted) for e in evs)
        return done == 2 and started == 4

    wait_for(two_running_after_two_done)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    (tmp_path / "release").touch()  # the second attempts will not block
    p = abreast(tmp_path, "resume", "k1", "-q")
    assert p.returncode == 0, p.stderr
    events = events_of(db, "k1")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    interrupted = [(e.target, e.attempt) for e in events if isinstance(e, ExecutionFinished) and e.outcome == "interrupted"]
    assert sorted(interrupted) == [("t3", 1), ("t4", 1)]
    runs = (tmp_path / "ran").read_text().split("\n")
    # The first attempts on t3 and t4 were stopped by resume: on a busy machine perhaps
    # before their shells had written anything.
    ran = sorted(r for r in runs if r.startswith("t"))
    assert [r for r in ran if r not in ("t3 1", "t4 1")] == ["t1 1", "t2 1", "t3 2", "t4 2"]
    assert runs.count("finished") == 1
    assert isinstance(events[-1], DeploymentFinished) and events[-1].outcome == "succeeded"
    assert events[-1].at >= max(e.at for e in events[:-1])


def test_resume_stops_what_the_dead_orchestrator_left_running_before_running_it_again(tmp_path):
    # The first attempts on t1 and t2 never end by themselves (their shells loop, with a
    # sleep child each); after kill -9 of the orchestrator they keep running. `resume`
    # must stop them (their whole process groups) before the second attempts start,
    # or a command would run twice at once on one target. Each second attempt checks
    # in /proc (an orphan's zombie may linger, waiting for init to reap it; its pid may
    # be reused, hence the look at the environment).
    scenario(tmp_path, {
        "targets": [{"name": "t1", "roles": ["app"]}, {"name": "t2", "roles": ["app"]}],
        "steps": [{
            "name": "deploy",
            "roles": ["app"],
            "run": 'if [ "$ABREAST_ATTEMPT" = 1 ]; then echo $$ > "pid-$ABREAST_TARGET"; while :; do sleep 0.05; done; fi; '
                   'p=/proc/$(cat "pid-$ABREAST_TARGET"); state=$(cut -d" " -f3 $p/stat 2>/dev/null); '
                   'if [ -n "$state" ] && [ "$state" != Z ] && tr "\\0" "\\n" < $p/environ | grep -qx ABREAST_ATTEMPT=1; '
                   'then echo "$ABREAST_TARGET overlap" >> ran; fi; '
                   'echo "$ABREAST_TARGET $ABREAST_ATTEMPT" >> ran',
        }],
    })
    db = tmp_path / ".abreast" / "abreast.db"
    proc = start(tmp_path, "run", "deploy.yaml", "--id", "o1", "-q")
    wait_for(lambda: (tmp_path / "pid-t1").exists() and (tmp_path / "pid-t2").exists()
             and (tmp_path / "pid-t1").read_text().strip() and (tmp_path / "pid-t2").read_text().strip())
    orphans = [int((tmp_path / f"pid-{t}").read_text()) for t in ("t1", "t2")]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert all(alive(pid) for pid in orphans)  # the kill -9 left them running
    p = abreast(tmp_path, "resume", "o1", "-q", "--log-format", "json")
    assert p.returncode == 0, p.stderr
    assert not any(alive(pid) for pid in orphans)
    assert (tmp_path / "ran").read_text().split("\n")[:-1] in (["t1 2", "t2 2"], ["t2 2", "t1 2"])  # no overlap
    warning = next(json.loads(line) for line in p.stderr.splitlines() if "orphans.stopped" in line)
    assert (warning["level"], warning["deployment"], warning["process_groups"]) == ("warning", "o1", 2)
    events = events_of(db, "o1")
    assert sorted((e.target, e.attempt, e.outcome) for e in events if isinstance(e, ExecutionFinished)) == [
        ("t1", 1, "interrupted"), ("t1", 2, "succeeded"), ("t2", 1, "interrupted"), ("t2", 2, "succeeded"),
    ]


def test_two_deployments_write_to_one_database_at_once(tmp_path):
    scenario(tmp_path, {
        "targets": [{"name": f"t{i}", "roles": ["x"]} for i in range(20)],
        "steps": [{"name": "a", "roles": ["x"], "run": "true"}, {"name": "b", "roles": ["x"], "run": "true"}],
    })
    procs = [start(tmp_path, "run", "deploy.yaml", "--id", name, "-q") for name in ("left", "right")]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs]
    db = tmp_path / ".abreast" / "abreast.db"
    for name in ("left", "right"):
        events = events_of(db, name)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert sum(isinstance(e, ExecutionFinished) for e in events) == 40
        assert events[-1].outcome == "succeeded"
