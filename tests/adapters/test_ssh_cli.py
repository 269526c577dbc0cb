"""`abreast run` and `resume` through the ssh adapter, as whole processes, on real sshd
hosts on loopback: remote output and exit codes in the store, an unreachable host that
fails its attempts (retries apply), SIGTERM stopping the remote commands, bad remote
targets refused before anything runs, and a kill -9 followed by a resume."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from pathlib import Path

import pytest

from engine.events import DeploymentFinished, ExecutionFinished, ExecutionStarted
from engine.store import SqliteStore
from tests.cli.test_run_cli import abreast, events_of, scenario, start, wait_for
from tests.helpers import alive
from tests.sshd import free_port


def masters() -> set[int]:
    """Every ssh master connection process abreast started (ControlPath in a private
    abreast-ssh- folder)."""
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"ControlMaster=yes" in argv and any(b"/abreast-ssh-" in a for a in argv if a.startswith(b"ControlPath=")):
                found.add(int(name))
    return found


def control_folder(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        path = next(a for a in f.read().split(b"\0") if a.startswith(b"ControlPath="))
    return os.path.dirname(path.decode()[len("ControlPath="):])


def logs(folder: Path, deployment: str) -> list[tuple[str, str | None, int, str]]:
    store = SqliteStore(folder / ".abreast" / "abreast.db")
    try:
        return [(out.step, out.target, out.attempt, out.line) for out in store.output(deployment)]
    finally:
        store.close()


def test_a_deployment_runs_on_every_host_and_the_store_keeps_what_each_said(tmp_path, ssh_hosts, remote_folder):
    before = masters()
    scenario(tmp_path, {
        "targets": [host.target(f"web-0{i + 1}", ["web"], workdir=str(remote_folder)) for i, host in enumerate(ssh_hosts)],
        "steps": [
            {"name": "deploy", "roles": ["web"],
             "run": 'echo "$ABREAST_TARGET $ABREAST_STEP #$ABREAST_ATTEMPT via ${SSH_CONNECTION##* } $(pwd)"; '
                    '[ "$ABREAST_TARGET" != web-02 ] || exit 3'},
            {"name": "notify", "condition": "always", "run": "echo done here"},
        ],
    })
    p = abreast(tmp_path, "run", "deploy.yaml", "--id", "r1", "-q")
    assert p.returncode == 1, p.stderr
    events = events_of(tmp_path / ".abreast" / "abreast.db", "r1")
    finished = {(e.step, e.target): (e.outcome, e.exit_code, e.error) for e in events if isinstance(e, ExecutionFinished)}
    assert finished == {
        ("deploy", "web-01"): ("succeeded", 0, None),
        ("deploy", "web-02"): ("failed", 3, "exit status 3"),
        ("deploy", "web-03"): ("succeeded", 0, None),
        ("notify", None): ("succeeded", 0, None),
    }
    assert sorted(logs(tmp_path, "r1"), key=str) == sorted([
        ("notify", None, 1, "done here"),
        *[("deploy", f"web-0{i + 1}", 1, f"web-0{i + 1} deploy #1 via {host.port} {remote_folder}") for i, host in enumerate(ssh_hosts)],
    ], key=str)
    assert masters() == before  # the deployment's master connections are closed


def test_an_unreachable_host_fails_each_of_its_attempts_naming_it(tmp_path, ssh_hosts):
    host = ssh_hosts[0]
    port = free_port(host.address)
    scenario(tmp_path, {
        "targets": [host.target("web-01", ["web"]), host.target("gone", ["web"], port=port)],
        "steps": [{"name": "deploy", "roles": ["web"], "run": "echo hello", "retries": 2}],
    })
    p = abreast(tmp_path, "run", "deploy.yaml", "--id", "u1", "-q")
    assert p.returncode == 1, p.stderr
    events = events_of(tmp_path / ".abreast" / "abreast.db", "u1")
    finished = [(e.target, e.attempt, e.outcome, e.error) for e in events if isinstance(e, ExecutionFinished)]
    error = f"ssh gone ({host.user}@{host.address}:{port}): connection refused (ssh: connect to host {host.address} port {port}: Connection refused)"
    assert sorted(finished) == [
        ("gone", 1, "failed", error), ("gone", 2, "failed", error), ("gone", 3, "failed", error),
        ("web-01", 1, "succeeded", None),
    ]


def test_sigterm_cancels_and_the_remote_commands_are_gone(tmp_path, ssh_hosts, remote_folder):
    before = masters()
    scenario(tmp_path, {
        "targets": [host.target(f"web-0{i + 1}", ["web"], workdir=str(remote_folder)) for i, host in enumerate(ssh_hosts[:2])],
        "steps": [{"name": "slow", "roles": ["web"], "run": 'echo $$ > "pid-$ABREAST_TARGET"; sleep 60'},
                  {"name": "after", "run": "touch after-ran"}],
    })
    proc = start(tmp_path, "run", "deploy.yaml", "--id", "c1", "-q")
    pidfiles = [remote_folder / "pid-web-01", remote_folder / "pid-web-02"]
    wait_for(lambda: all(p.exists() and p.read_text().strip() for p in pidfiles))
    pids = [int(p.read_text()) for p in pidfiles]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    events = events_of(tmp_path / ".abreast" / "abreast.db", "c1")
    assert isinstance(events[-1], DeploymentFinished) and events[-1].outcome == "cancelled"
    assert sorted((e.target, e.outcome) for e in events if isinstance(e, ExecutionFinished)) == [
        ("web-01", "cancelled"), ("web-02", "cancelled"),
    ]
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10)
    assert not (tmp_path / "after-ran").exists()
    assert masters() == before


def test_targets_abreast_cannot_serve_are_refused_before_anything_runs(tmp_path, ssh_hosts):
    host = ssh_hosts[0]
    scenario(tmp_path, {
        "targets": [
            host.target("web-01", ["web"], ssh_options=dict(host.options(), ControlPath="/tmp/mine")),
            {"name": "web-02", "roles": ["web"], "adapter": "tentacle"},
        ],
        "steps": [{"name": "deploy", "roles": ["web"], "run": "touch ran"}],
    })
    p = abreast(tmp_path, "run", "deploy.yaml", "--id", "b1")
    assert p.returncode == 2
    path = tmp_path / "deploy.yaml"
    assert p.stderr.splitlines() == [
        f"error: {path}: $.targets[1].adapter: target 'web-02': no installed adapter is named 'tentacle' (installed: dry-run, local, ssh)",
        f"{path}: $.targets[0].ssh_options.ControlPath: abreast sets this option itself (one master connection per host, no prompts)",
    ]
    assert not (tmp_path / "ran").exists()
    assert events_of(tmp_path / ".abreast" / "abreast.db", "b1") == []


def test_kill_9_then_resume_adopts_the_remote_attempts_and_runs_nothing_twice(tmp_path, ssh_hosts, remote_folder):
    # t1 finishes before the crash; t2 finishes while the orchestrator is down (exit 4);
    # t3 still runs when `resume` comes, and is waited for. Every attempt notes that it ran.
    gate = remote_folder / "gate"
    scenario(tmp_path, {
        "targets": [host.target(f"t{i + 1}", ["app"], workdir=str(remote_folder)) for i, host in enumerate(ssh_hosts)],
        "steps": [
            {"name": "deploy", "roles": ["app"],
             "run": 'echo "$ABREAST_TARGET $ABREAST_ATTEMPT" >> ran; echo "started $ABREAST_TARGET"; '
                    f'case $ABREAST_TARGET in t1) ;; t2) while [ ! -e {gate}-t2 ]; do sleep 0.05; done; exit 4;; '
                    f't3) while [ ! -e {gate}-t3 ]; do sleep 0.05; done;; esac; echo "finished $ABREAST_TARGET"'},
            {"name": "finish", "condition": "always", "run": f"echo finished >> {remote_folder}/ran"},
        ],
    })
    db = tmp_path / ".abreast" / "abreast.db"
    before = masters()
    proc = start(tmp_path, "run", "deploy.yaml", "--id", f"k1-{uuid.uuid4().hex[:6]}", "-q")
    deployment = proc.stdout.readline().strip()
    home = Path(os.path.expanduser(f"~{ssh_hosts[0].user}"))

    def record(target: str) -> Path:
        return home / ".abreast" / "state" / deployment / "deploy" / target / "1"

    def two_running_after_one_done() -> bool:
        evs = events_of(db, deployment)
        return sum(isinstance(e, ExecutionFinished) for e in evs) == 1 and sum(isinstance(e, ExecutionStarted) for e in evs) == 3

    try:
        wait_for(two_running_after_one_done)
        wait_for(lambda: (remote_folder / "ran").exists() and len((remote_folder / "ran").read_text().split("\n")) == 4)
        proc.send_signal(signal.SIGKILL)  # the orchestrator alone: its commands run on
        proc.wait(timeout=10)
        Path(f"{gate}-t2").touch()  # t2 ends while nobody watches
        wait_for(lambda: (record("t2") / "exit").exists())
        resumed = start(tmp_path, "resume", deployment, "-q")
        time.sleep(1)
        Path(f"{gate}-t3").touch()  # t3, adopted, ends now
        assert resumed.wait(timeout=60) == 1, resumed.stderr.read()
    finally:
        Path(f"{gate}-t2").touch()
        Path(f"{gate}-t3").touch()
        for pid in masters() - before:  # the dead orchestrator's idle master connections
            folder = control_folder(pid)
            os.kill(pid, signal.SIGKILL)
            shutil.rmtree(folder, ignore_errors=True)
    events = events_of(db, deployment)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    finished = sorted(((e.target or ""), e.attempt, e.outcome, e.exit_code) for e in events if isinstance(e, ExecutionFinished))
    assert finished == [("", 1, "succeeded", 0), ("t1", 1, "succeeded", 0), ("t2", 1, "failed", 4), ("t3", 1, "succeeded", 0)]
    ran = (remote_folder / "ran").read_text().split("\n")[:-1]
    assert sorted(ran) == ["finished", "t1 1", "t2 1", "t3 1"]  # nothing ran twice
    said = {(target, text) for _, target, _, text in logs(tmp_path, deployment)}
    assert {("t2", "started t2"), ("t3", "started t3"), ("t3", "finished t3")} <= said


def test_no_scenario_value_reaches_a_remote_shell_unquoted(tmp_path, ssh_hosts, remote_folder):
    tricky = "it's \"q\" $(touch pwned-1) `touch pwned-2`; touch pwned-3 & * \\ $HOME\nline two"
    workdir = remote_folder / f"wd {tricky}"
    workdir.mkdir()
    os.chmod(workdir, 0o777)
    named = tricky.replace("\n", " ")  # names and ids refuse control characters (docs/rules.md)
    deployment = f"id {named}"
    step, target = f"step {named}", f"target {named}"
    scenario(tmp_path, {
        "targets": [ssh_hosts[0].target(target, ["web"], workdir=str(workdir))],
        "steps": [{"name": step, "roles": ["web"],
                   "run": 'printf "%s|" "$ABREAST_DEPLOYMENT" "$ABREAST_STEP" "$ABREAST_TARGET" "$(pwd)"; echo\n'
                          ": '$(touch pwned-4) `touch pwned-5`'"}],
    })
    p = abreast(tmp_path, "run", "deploy.yaml", "--id", deployment, "-q")
    assert p.returncode == 0, p.stderr
    printed = "|".join((deployment, step, target, str(workdir))) + "|"
    assert [text for _, _, _, text in logs(tmp_path, deployment)] == printed.split("\n")
    home = Path(os.path.expanduser(f"~{ssh_hosts[0].user}"))
    for folder in (tmp_path, remote_folder, workdir, home, Path("/")):
        assert not list(folder.glob("pwned-*")), folder
