"""`abreast run`, `resume` and `history` as whole processes on a real SQLite file:
exit codes, cancellation by signal, a crash (kill -9) and a resume, two deployments
writing to one database at once."""

from __future__ import annotations

import json
import os
import re
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from adapters.local import state_root_for
from engine.events import DeploymentFinished, ExecutionFinished, ExecutionStarted, from_jsonl
from engine.store import SqliteStore
from tests.helpers import alive

ROOT = Path(__file__).resolve().parents[2]


def env_for(folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ABREAST_DB"}
    env["PYTHONPATH"] = str(ROOT)
    env["ABREAST_STATE"] = str(folder / ".state")  # records of deployments a test leaves unfinished stay here
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


def catches(pid: int, sig: signal.Signals) -> bool:
    """Has the process a handler for `sig` (SigCgt in /proc/PID/status)?"""
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(caught & (1 << (sig - 1)))


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


def test_a_scenario_in_another_folder_runs_there_and_records_here(tmp_path):
    # The orchestrator works in the scenario's folder; the store it opened here stays
    # the same file (it is checked before every write).
    (tmp_path / "deploy").mkdir()
    scenario(tmp_path / "deploy", {"steps": [{"name": "where", "run": "pwd > here"}]})
    p = abreast(tmp_path, "run", "deploy/deploy.yaml", "--id", "elsewhere", "-q")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "deploy" / "here").read_text().strip() == str(tmp_path / "deploy")
    assert events_of(tmp_path / ".abreast" / "abreast.db", "elsewhere")[-1].outcome == "succeeded"


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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
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


def test_kill_9_then_resume_records_what_finished_meanwhile_and_runs_nothing_twice(tmp_path, monkeypatch):
    # Four targets, two at a time. Each attempt notes that it ran; the first two are
    # quick, the others block until released, so the crash comes while they run. Then
    # they finish while no orchestrator watches, and resume records them as they ended.
    scenario(tmp_path, {
        "targets": [{"name": f"t{i}", "roles": ["app"]} for i in range(1, 5)],
        "policy": {"max_parallel_targets": 2},
        "steps": [
            {
                "name": "deploy",
                "roles": ["app"],
                "run": 'echo "$ABREAST_TARGET $ABREAST_ATTEMPT" >> ran; echo "before $ABREAST_TARGET"; '
                       'case $ABREAST_TARGET in t1|t2) ;; *) while [ ! -e release ]; do sleep 0.05; done;; esac; '
                       'echo "after $ABREAST_TARGET"; touch "done-$ABREAST_TARGET"; exit 0',
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
    wait_for(lambda: (tmp_path / "ran").read_text().count("\n") == 4)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    (tmp_path / "release").touch()  # they end while nobody watches
    wait_for(lambda: (tmp_path / "done-t3").exists() and (tmp_path / "done-t4").exists())
    time.sleep(0.3)
    p = abreast(tmp_path, "resume", "k1", "-q")
    assert p.returncode == 0, p.stderr
    events = events_of(db, "k1")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.at for e in events] == sorted(e.at for e in events)
    finished = [(e.step, e.target, e.attempt, e.outcome) for e in events if isinstance(e, ExecutionFinished)]
    assert sorted(finished, key=str) == sorted(
        [("deploy", f"t{i}", 1, "succeeded") for i in range(1, 5)] + [("finish", None, 1, "succeeded")], key=str
    )
    runs = (tmp_path / "ran").read_text().split("\n")[:-1]
    assert sorted(runs) == ["finished", "t1 1", "t2 1", "t3 1", "t4 1"]  # each exactly once
    # Recorded as they ended: before the resume took over (its event comes later, at the
    # log's last time), so before anything of `finish` started.
    resumed = next(e for e in events if e.__struct_config__.tag == "deployment.resumed")
    adopted = [e for e in events if isinstance(e, ExecutionFinished) and e.target in ("t3", "t4")]
    assert all(e.seq > resumed.seq for e in adopted)
    first_of_finish = next(e for e in events if isinstance(e, ExecutionStarted) and e.step == "finish")
    assert all(e.at <= first_of_finish.at and e.seq < first_of_finish.seq for e in adopted)
    logs = abreast(tmp_path, "history", "logs", "k1", "--step", "deploy", "--target", "t3").stdout
    assert logs == "deploy @ t3 #1 | before t3\ndeploy @ t3 #1 | after t3\n"
    assert isinstance(events[-1], DeploymentFinished) and events[-1].outcome == "succeeded"
    monkeypatch.setenv("ABREAST_STATE", str(tmp_path / ".state"))
    assert (tmp_path / ".state").is_dir() and not state_root_for(db).exists()  # dropped once the log holds the outcomes


def test_resume_waits_for_what_still_runs_even_commands_that_replaced_their_environment(tmp_path):
    # The first attempts keep running after kill -9 of the orchestrator (one of them
    # replaced its environment, which hid it from the old orphan search). Resume adopts
    # them: waits, keeps their output, runs nothing again and nothing twice at once.
    scenario(tmp_path, {
        "targets": [{"name": "t1", "roles": ["app"]}, {"name": "t2", "roles": ["app"]}],
        "steps": [{
            "name": "deploy",
            "roles": ["app"],
            "run": 'echo "$ABREAST_TARGET $ABREAST_ATTEMPT" >> ran; echo "$$" > "pid-$ABREAST_TARGET"; '
                   'if [ "$ABREAST_TARGET" = t2 ]; then exec env -i /bin/sh -c \'while [ ! -e release ]; do sleep 0.05; done; echo released\'; fi; '
                   'while [ ! -e release ]; do sleep 0.05; done; echo released',
        }],
    })
    db = tmp_path / ".abreast" / "abreast.db"
    proc = start(tmp_path, "run", "deploy.yaml", "--id", "o1", "-q")
    wait_for(lambda: all((tmp_path / f"pid-{t}").exists() and (tmp_path / f"pid-{t}").read_text().strip() for t in ("t1", "t2")))
    commands = [int((tmp_path / f"pid-{t}").read_text()) for t in ("t1", "t2")]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert all(alive(pid) for pid in commands)  # the kill -9 killed no command
    resume = start(tmp_path, "resume", "o1", "--log-format", "json")
    adopted = []
    while len(adopted) < 2:  # its log says what it found, as it finds it
        line = resume.stderr.readline()
        assert line, "resume ended before adopting"
        if "execution.adopted" in line:
            adopted.append(json.loads(line))
    assert sorted((a["target"], a["found"]) for a in adopted) == [("t1", "running"), ("t2", "running")]
    time.sleep(0.3)
    assert resume.poll() is None and all(alive(pid) for pid in commands)  # adopted, not stopped
    (tmp_path / "release").touch()
    out, err = resume.communicate(timeout=60)
    assert resume.returncode == 0, err
    assert sorted((tmp_path / "ran").read_text().split("\n")[:-1]) == ["t1 1", "t2 1"]
    events = events_of(db, "o1")
    assert sorted((e.target, e.attempt, e.outcome) for e in events if isinstance(e, ExecutionFinished)) == [
        ("t1", 1, "succeeded"), ("t2", 1, "succeeded"),
    ]
    for t in ("t1", "t2"):
        assert abreast(tmp_path, "history", "logs", "o1", "--target", t).stdout == f"deploy @ {t} #1 | released\n"


def test_a_second_orchestrator_is_refused_and_the_first_finishes_untouched(tmp_path):
    scenario(tmp_path, {
        "steps": [{"name": "deploy", "run": "echo run >> ran; while [ ! -e release ]; do sleep 0.05; done"}],
    })
    first = start(tmp_path, "run", "deploy.yaml", "--id", "live", "-q")
    wait_for(lambda: (tmp_path / "ran").exists())
    second = abreast(tmp_path, "resume", "live")
    assert second.returncode == 2
    assert f"is being run by pid {first.pid} on " in second.stderr and "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    again = abreast(tmp_path, "run", "deploy.yaml", "--id", "live")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert first.poll() is None
    (tmp_path / "release").touch()
    assert first.wait(timeout=60) == 0
    assert (tmp_path / "ran").read_text() == "run\n"
    events = events_of(tmp_path / ".abreast" / "abreast.db", "live")
    assert [e.seq for e in events] == list(range(1, len(events) + 1)) and events[-1].outcome == "succeeded"
    assert not any(e.__struct_config__.tag == "deployment.resumed" for e in events)


@pytest.mark.parametrize(("sig", "delay"), [
    (signal.SIGTERM, 0.0), (signal.SIGTERM, 0.1), (signal.SIGTERM, 0.3),
    (signal.SIGINT, 0.0), (signal.SIGINT, 0.2), (signal.SIGHUP, 0.0), (signal.SIGHUP, 0.2),
])
def test_a_signal_at_start_up_exits_130_with_nothing_left_running(tmp_path, sig, delay):
    # Whenever it comes: before the first event nothing is written; after it, the log
    # ends cancelled. Either way no command is left running.
    scenario(tmp_path, {
        "targets": [{"name": f"t{i}", "roles": ["app"]} for i in range(4)],
        "steps": [{"name": "deploy", "roles": ["app"], "run": 'echo $$ >> pids; sleep 30'}],
    })
    proc = start(tmp_path, "run", "deploy.yaml", "--id", "s1", "-q")
    # From its first line of Python on (a signal before the interpreter runs any code
    # meets the default disposition, or Python's KeyboardInterrupt): the entry point
    # catches all three at once, and Python itself catches no TERM.
    wait_for(lambda: catches(proc.pid, signal.SIGTERM), timeout=30)
    time.sleep(delay)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 130, proc.stderr.read()
    assert "Traceback" not in proc.stderr.read()
    events = events_of(tmp_path / ".abreast" / "abreast.db", "s1")
    assert events == [] or (isinstance(events[-1], DeploymentFinished) and events[-1].outcome == "cancelled")
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()] if (tmp_path / "pids").exists() else []
    assert not any(alive(p) for p in pids)


def test_a_store_deleted_under_a_running_deployment_stops_it_with_a_clear_error(tmp_path):
    scenario(tmp_path, {"steps": [
        {"name": "a", "run": "while [ ! -e release ]; do sleep 0.05; done"},
        {"name": "b", "run": "echo b >> ran"},
    ]})
    db = tmp_path / ".abreast" / "abreast.db"
    proc = start(tmp_path, "run", "deploy.yaml", "--id", "gone", "-q")
    wait_for(lambda: any(isinstance(e, ExecutionStarted) for e in events_of(db, "gone")))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    (tmp_path / "release").touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "the event store was deleted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ran").exists()


def test_a_store_that_cannot_be_written_is_one_line_and_exit_2(tmp_path):
    # A file-size limit makes every write past 150 kB fail (as a full disk would).
    import resource

    scenario(tmp_path, {
        "targets": [{"name": f"t{i}", "roles": ["app"]} for i in range(300)],
        "steps": [{"name": "deploy", "roles": ["app"], "run": "true"}],
    })
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))  # noqa: E731
    proc = subprocess.run(
        [sys.executable, "-m", "abreast", "run", "deploy.yaml", "--id", "full", "-q"], capture_output=True, text=True,
        cwd=tmp_path, env=env_for(tmp_path), preexec_fn=limit, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert re.search(r"cannot (append events|store output|take the owner lease|renew the owner lease): ", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_resume_of_an_imported_history_runs_its_commands_only_when_trusted(tmp_path):
    scenario(tmp_path, {"steps": [
        {"name": "a", "run": "echo a >> ran; while [ ! -e release ]; do sleep 0.05; done"},
        {"name": "b", "run": "echo b >> ran"},
    ]})
    proc = start(tmp_path, "run", "deploy.yaml", "--id", "h1", "-q")
    wait_for(lambda: (tmp_path / "ran").exists())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    (tmp_path / "h1.jsonl").write_text(abreast(tmp_path, "history", "export", "h1").stdout)
    other = str(tmp_path / "other.db")
    assert abreast(tmp_path, "history", "import", "h1.jsonl", "--db", other).returncode == 0
    refused = abreast(tmp_path, "resume", "h1", "--db", other)
    assert refused.returncode == 2 and "--trust-commands" in refused.stderr
    assert "a: echo a >> ran" in refused.stderr and "b: echo b >> ran" in refused.stderr  # shown
    assert (tmp_path / "ran").read_text() == "a\n"  # nothing ran
    (tmp_path / "release").touch()
    trusted = abreast(tmp_path, "resume", "h1", "--db", other, "--trust-commands", "-q")
    assert trusted.returncode == 0, trusted.stderr
    assert "b: echo b >> ran" in trusted.stderr
    assert (tmp_path / "ran").read_text().split() == ["a", "a", "b"]  # this store had no record of a's attempt


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


# -- kill -9 at random moments ----------------------------------------------------------


def crash_and_resume_until_done(folder: Path, seed: int) -> tuple[int, int]:
    """Run a deployment, kill -9 its orchestrator at random moments (the resumes too),
    sometimes let commands end while nobody watches, resume until it is over; then check
    what the hidden operator would count. Returns (kills, resumes)."""
    rng = random.Random(seed)
    targets = [f"t{i}" for i in range(1, 5)]
    steps = []
    for name, trigger in (("a", "after-previous"), ("b", "with-previous"), ("c", "after-previous")):
        steps.append({
            "name": name, "start": trigger, "roles": ["app"],
            "run": 'echo "$ABREAST_STEP $ABREAST_TARGET" >> ran; '
                   f'case $ABREAST_TARGET in t1) sleep {rng.uniform(0.05, 0.5):.2f};; t2) sleep {rng.uniform(0.05, 0.5):.2f};; '
                   f'*) sleep {rng.uniform(0.05, 0.5):.2f};; esac; echo "$ABREAST_STEP $ABREAST_TARGET" >> done',
        })
    steps.append({"name": "notify", "run": 'echo "notify -" >> ran; echo "notify -" >> done'})
    scenario(folder, {
        "targets": [{"name": t, "roles": ["app"]} for t in targets],
        "policy": {"max_parallel_targets": 2, "target_isolation": "shared"},
        "steps": steps,
    })
    db = folder / ".abreast" / "abreast.db"
    proc = start(folder, "run", "deploy.yaml", "--id", "crashy", "-q")
    kills = resumes = 0
    while True:
        try:
            code = proc.wait(timeout=rng.uniform(0.05, 1.2) if kills < 6 else 120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
            time.sleep(rng.choice([0.0, 0.2, 0.7]))  # commands go on (and may end) meanwhile
            events = events_of(db, "crashy")
            if events and isinstance(events[-1], DeploymentFinished):
                break
            if not events:  # killed before its first event: nothing recorded, run again
                if (folder / "ran").exists():
                    (folder / "ran").unlink()
                proc = start(folder, "run", "deploy.yaml", "--id", "crashy", "-q")
                continue
            proc = start(folder, "resume", "crashy", "-q")
            resumes += 1
            continue
        assert code == 0, proc.stderr.read()
        break
    events = events_of(db, "crashy")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert isinstance(events[-1], DeploymentFinished) and events[-1].outcome == "succeeded"
    finished = [e for e in events if isinstance(e, ExecutionFinished)]
    assert not [e for e in finished if e.outcome != "succeeded"], [(e.step, e.target, e.outcome, e.error) for e in finished]
    assert sorted((e.step, e.target) for e in finished if e.target) == sorted((s, t) for s in "abc" for t in targets)
    expected = sorted([f"{s} {t}" for s in "abc" for t in targets] + ["notify -"])
    for name in ("ran", "done"):  # every command ran exactly once, and ended
        assert sorted((folder / name).read_text().split("\n")[:-1]) == expected, (name, seed)
    return kills, resumes


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_at_random_moments_every_command_runs_exactly_once(tmp_path, seed):
    kills, _ = crash_and_resume_until_done(tmp_path, seed)
    assert kills >= 1


@pytest.mark.slow
def test_kill_9_at_random_moments_many_times(tmp_path):
    total = 0
    for seed in range(100, 132):
        folder = tmp_path / str(seed)
        folder.mkdir()
        kills, _ = crash_and_resume_until_done(folder, seed)
        total += kills
    assert total >= 32


def test_closing_the_terminal_cancels_cleanly_even_with_the_live_view_on_it(tmp_path):
    # abreast on a terminal of its own (the live view draws on it); the terminal closes:
    # SIGHUP, and every write to it fails from then on. The log must still end cancelled.
    import pty

    scenario(tmp_path, {"steps": [{"name": "slow", "run": "echo $$ > pid; sleep 60"}, {"name": "after", "run": "touch after-ran"}]})
    pid, master = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.chdir(tmp_path)
        os.execve(sys.executable, [sys.executable, "-m", "abreast", "run", "deploy.yaml", "--id", "hup"], env_for(tmp_path))
    try:
        deadline = time.monotonic() + 30
        while not ((tmp_path / "pid").exists() and (tmp_path / "pid").read_text().strip()):
            assert time.monotonic() < deadline
            try:
                os.read(master, 65536)  # let it draw
            except OSError:
                break
            time.sleep(0.05)
        command = int((tmp_path / "pid").read_text())
    finally:
        os.close(master)  # the terminal goes away: the kernel sends SIGHUP
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 130
    events = events_of(tmp_path / ".abreast" / "abreast.db", "hup")
    assert events[-1].outcome == "cancelled" and not (tmp_path / "after-ran").exists()
    wait_for(lambda: not alive(command), timeout=10)
