"""The promises every adapter keeps (SPEC §6), one suite run against each of them:
`local`, `dry-run`, and `ssh` on a real sshd host (tests/sshd.py).

- environment: ABREAST_DEPLOYMENT, _STEP, _TARGET, _ATTEMPT are set
- folder: the command runs with /bin/sh -c in its working folder
- exit codes: 0 succeeds; any other status fails with that status, 255 included
- output: stdout and stderr, line by line, as they are written
- cancel: TERM to the command's whole process group, KILL after the grace period
- timeout: a step's timeout stops the command the same way (through the runtime)
- signals: the command starts with no signal ignored or blocked
- quoting: names and commands reach the shell exactly as written
- adoption: after the orchestrator dies, a fresh adapter finds the attempt in its
  record on the target: running (waited for), finished (its real status), gone (None)

`dry-run` runs no command, so it keeps only exit codes (its injected failures), output
(its one line), cancel, timeout and quoting (the names in its line, verbatim); it keeps
no record, so there is nothing to adopt: the runtime runs an interrupted rehearsal again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from adapters.dryrun import DryRunAdapter
from adapters.local import LocalAdapter
from adapters.ssh import SshAdapter
from engine.adapter import ExecutionRequest
from engine.core import Core
from engine.events import ExecutionFinished
from engine.plan import Plan, Step, Target
from engine.runtime import Runtime
from engine.store import MemoryStore
from tests.helpers import alive
from tests.sshd import Host

ROOT = Path(__file__).resolve().parents[2]
ALL = ("local", "dry-run", "ssh")
RUNS_COMMANDS = ("local", "ssh")



def kinds(*names: str, marks: dict | None = None) -> pytest.MarkDecorator:
    marks = marks or {}
    return pytest.mark.parametrize("kind", [pytest.param(n, marks=marks.get(n, ())) for n in names])


@dataclass
class Harness:
    """How one adapter is driven by the suite: the target it serves, the folder its
    commands run in (which the test can read and write too), and a fresh adapter."""

    kind: str
    folder: Path
    host: Host | None = None

    def target(self, name: str = "web-01") -> Target:
        if self.kind == "ssh":
            assert self.host is not None
            return Target(
                name=name, adapter="ssh", host=self.host.address, port=self.host.port, user=self.host.user,
                identity_file=self.host.identity_file, workdir=str(self.folder), ssh_options=self.host.options(),
            )
        return Target(name=name, adapter=self.kind)

    def request(self, run: str | None, step: str = "deploy web", target: str = "web-01", attempt: int = 1,
                deployment: str | None = None, fails: int = 0) -> ExecutionRequest:
        return ExecutionRequest(
            deployment=deployment or f"d-{uuid.uuid4().hex[:8]}",
            step=Step(name=step, run=run, fails={"*": fails} if fails else {}),
            target=self.target(target),
            attempt=attempt,
            workdir=self.folder,
        )

    def adapter(self, grace: float = 2.0):  # noqa: ANN201
        if self.kind == "local":
            return LocalAdapter(grace=grace)
        if self.kind == "ssh":
            return SshAdapter(grace=grace)
        # 0.2 s a rehearsal; a step with a timeout rehearses past it
        return DryRunAdapter(lambda step, target, attempt: 5.0 if step.timeout else 0.2, lambda step, target, attempt: step.fails.get("*", 0) >= attempt)


@pytest.fixture
def harness(kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    if kind == "ssh":
        host = request.getfixturevalue("ssh_host")
        return Harness(kind, request.getfixturevalue("remote_folder"), host)
    # `abreast run` works in the scenario's folder: the local adapter's usual path.
    monkeypatch.chdir(tmp_path)
    # Records of this test's attempts in a folder of its own (the crashed orchestrator,
    # a subprocess, inherits it).
    monkeypatch.setenv("ABREAST_STATE", str(tmp_path / "state"))
    return Harness(kind, tmp_path)


async def run(harness: Harness, request: ExecutionRequest, adapter=None) -> tuple:  # noqa: ANN001
    adapter = adapter or harness.adapter()
    lines: list[str] = []
    try:
        result = await adapter.run(request, lines.append)
    finally:
        await close(adapter)
    return result, lines


async def close(adapter) -> None:  # noqa: ANN001
    if hasattr(adapter, "aclose"):
        await adapter.aclose()


async def wait_for(predicate, timeout: float = 20.0) -> None:  # noqa: ANN001
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


def pids_in(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def gone(pids: list[int]) -> bool:
    for _ in range(100):
        if not any(alive(p) for p in pids):
            return True
        await trio.sleep(0.05)
    return False


# -- environment, folder, exit codes, output ---------------------------------------------------


@kinds(*RUNS_COMMANDS)
async def test_the_command_sees_the_four_variables_and_runs_in_its_folder(harness):
    deployment = f"d-{uuid.uuid4().hex[:8]}"
    result, lines = await run(harness, harness.request(
        'echo "$ABREAST_DEPLOYMENT|$ABREAST_STEP|$ABREAST_TARGET|$ABREAST_ATTEMPT"; pwd; echo "$0"',
        deployment=deployment, attempt=3,
    ))
    assert (result.outcome, result.exit_code) == ("succeeded", 0)
    assert lines == [f"{deployment}|deploy web|web-01|3", str(harness.folder), "/bin/sh"]


@kinds(*RUNS_COMMANDS)
@pytest.mark.parametrize("status", [1, 7, 125, 126, 255])
async def test_a_non_zero_status_fails_the_attempt_with_that_status(harness, status):
    result, lines = await run(harness, harness.request(f"echo out; exit {status}"))
    assert (result.outcome, result.exit_code, result.error) == ("failed", status, f"exit status {status}")
    assert lines == ["out"]


@kinds("dry-run")
async def test_dry_run_fails_the_attempts_the_scenario_injects(harness):
    failed, _ = await run(harness, harness.request("true", fails=1, attempt=1))
    succeeded, _ = await run(harness, harness.request("true", fails=1, attempt=2))
    assert (failed.outcome, failed.exit_code, failed.error) == ("failed", 1, "injected failure (dry run)")
    assert (succeeded.outcome, succeeded.exit_code) == ("succeeded", 0)


@kinds(*ALL)
async def test_a_step_without_run_succeeds(harness):
    result, _ = await run(harness, harness.request(None))
    assert result.outcome == "succeeded"


@kinds(*RUNS_COMMANDS)
async def test_stdout_and_stderr_arrive_line_by_line_as_they_are_written(harness):
    go = harness.folder / "go"
    lines: list[str] = []
    adapter = harness.adapter()
    results = []

    async def attempt() -> None:
        results.append(await adapter.run(harness.request(
            f"echo first; echo err >&2; while [ ! -e {go} ]; do sleep 0.02; done; printf 'last, no newline'"
        ), lines.append))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(attempt)
        await wait_for(lambda: len(lines) == 2)  # written before the command goes on
        assert lines == ["first", "err"] and not results
        go.touch()
    await close(adapter)
    assert results[0].outcome == "succeeded"
    assert lines == ["first", "err", "last, no newline"]


@kinds("dry-run")
async def test_dry_run_says_what_it_rehearses(harness):
    result, lines = await run(harness, harness.request("true", attempt=2))
    assert result.outcome == "succeeded"
    assert lines == ["dry run: deploy web on web-01, attempt 2: 0.2s"]


# -- cancel, timeout, signals ----------------------------------------------------------------


@kinds(*RUNS_COMMANDS)
async def test_cancelling_stops_the_whole_process_group(harness):
    pidfile = harness.folder / "pids"
    adapter = harness.adapter(grace=2)
    with trio.move_on_after(30) as never:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(adapter.run, harness.request(f"sleep 60 & echo $! > {pidfile}; echo $$ >> {pidfile}; wait"), lambda line: None)
            await wait_for(lambda: len(pids_in(pidfile)) == 2)
            nursery.cancel_scope.cancel()
    assert not never.cancelled_caught
    pids = pids_in(pidfile)
    assert len(pids) == 2
    assert await gone(pids)
    await close(adapter)


@kinds(*RUNS_COMMANDS)
async def test_a_command_that_ignores_term_is_killed_after_the_grace_period(harness):
    pidfile = harness.folder / "pid"
    adapter = harness.adapter(grace=0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(adapter.run, harness.request(f"trap '' TERM; echo $$ > {pidfile}; while :; do sleep 0.05; done"), lambda line: None)
        await wait_for(lambda: len(pids_in(pidfile)) == 1)
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    assert await gone(pids_in(pidfile))
    await close(adapter)


@kinds("dry-run")
async def test_cancelling_a_rehearsal_ends_it(harness):
    adapter = harness.adapter()
    finished = []
    with trio.move_on_after(0.05):
        finished.append(await adapter.run(harness.request("true"), lambda line: None))
    assert finished == []


@kinds(*ALL)
async def test_a_timeout_stops_the_attempt_as_timed_out(harness):
    pidfile = harness.folder / "pid"
    target = harness.target()
    command = f"echo $$ > {pidfile}; sleep 60"
    plan = Plan(steps=(Step(name="slow", roles=("app",), run=command, timeout=1.0),),
                targets=(msgspec_replace(target, roles=("app",)),))
    adapter = harness.adapter(grace=1)
    store = MemoryStore()
    outcome = await Runtime(Core(plan, "t1"), store, lambda t: adapter, harness.folder).run()
    await close(adapter)
    finished = [e for e in store.read("t1") if isinstance(e, ExecutionFinished)]
    assert outcome == "failed"
    assert [(e.outcome, e.error) for e in finished] == [("timed_out", "ran longer than the timeout of 1s")]
    if harness.kind != "dry-run":
        assert await gone(pids_in(pidfile))


def msgspec_replace(target: Target, **fields) -> Target:  # noqa: ANN003
    import msgspec

    return msgspec.structs.replace(target, **fields)


@kinds(*RUNS_COMMANDS)
async def test_the_command_starts_with_no_signal_ignored_or_blocked(harness):
    result, lines = await run(harness, harness.request("grep -E '^Sig(Ign|Blk)' /proc/self/status"))
    assert result.outcome == "succeeded"
    masks = dict(line.split(":\t") for line in lines)
    assert masks["SigBlk"] == "0000000000000000"
    ignored = int(masks["SigIgn"], 16)
    if harness.kind == "local":
        # glibc's posix_spawn sets its own two reserved signals (32 and 33, which no glibc
        # program can see or use; SIGRTMIN is 34) to ignored in the child, and refuses them
        # in setsigdef: the one difference from a fork and exec (docs/rules.md).
        ignored &= ~((1 << 31) | (1 << 32))
    assert ignored == 0, masks["SigIgn"]


@kinds(*RUNS_COMMANDS)
async def test_term_reaches_the_command_with_its_default_effect(harness):
    result, lines = await run(harness, harness.request("echo before; kill -TERM $$; echo after"))
    assert lines[0] == "before" and "after" not in lines  # (the wrapper's shell may say "Terminated")
    assert result.outcome == "failed"
    assert result.exit_code in (143, -15)  # 128+15 through a shell that reports it; -15 seen directly


# -- quoting -------------------------------------------------------------------------------------

TRICKY = "it's \"quoted\" $(touch pwned-subst) `touch pwned-backtick`; touch pwned-semicolon * &&\nsecond line \\ $HOME"


@kinds(*RUNS_COMMANDS)
async def test_names_and_commands_reach_the_shell_exactly_as_written(harness):
    step, target, deployment = f"step {TRICKY}", f"target {TRICKY}", f"dep {uuid.uuid4().hex[:8]} {TRICKY}"
    literal = "a 'b' \"c\" $(d) `e` ; f * g\nh \\ i"
    command = (
        'printf "[%s]\\n" "$ABREAST_STEP" "$ABREAST_TARGET" "$ABREAST_DEPLOYMENT"\n'
        "printf '%s\\n' 'a '\"'\"'b'\"'\"' \"c\" $(d) `e` ; f * g\nh \\ i'"
    )
    result, lines = await run(harness, harness.request(command, step=step, target=target, deployment=deployment))
    assert result.outcome == "succeeded", lines
    assert lines == f"[{step}]\n[{target}]\n[{deployment}]\n{literal}".split("\n")
    home = Path(os.path.expanduser(f"~{harness.host.user}")) if harness.host else Path.home()
    for folder in (harness.folder, home, ROOT):
        assert not list(folder.glob("pwned-*"))


@kinds("dry-run")
async def test_dry_run_repeats_names_verbatim(harness):
    step, target = f"step {TRICKY}", f"target {TRICKY}"
    _, lines = await run(harness, harness.request("true", step=step, target=target))
    assert lines == [f"dry run: {step} on {target}, attempt 1: 0.2s"]


# -- adoption after a crash ----------------------------------------------------------------------


def crash_orchestrator(harness: Harness, request: ExecutionRequest, folder: Path) -> subprocess.Popen:
    import msgspec

    doc = {
        "kind": harness.kind, "deployment": request.deployment, "step": msgspec.to_builtins(request.step),
        "target": msgspec.to_builtins(request.target), "attempt": request.attempt, "workdir": str(request.workdir),
        "report": str(folder / "control"),
    }
    path = folder / "request.json"
    path.write_text(json.dumps(doc))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "tests.adapters.crash", str(path)], cwd=ROOT, env=env, start_new_session=True)


def kill_orchestrator(proc: subprocess.Popen, folder: Path) -> None:
    """kill -9 the orchestrator and everything local it started: its ssh clients (its
    process group) and its master connections (daemons, found by their control folder)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    control = (folder / "control").read_text() if (folder / "control").exists() else ""
    if not control:
        return
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if control.encode() in f.read():
                        os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
    shutil.rmtree(control, ignore_errors=True)  # what the dead orchestrator could not remove


async def started_then_crashed(harness: Harness, tmp_path: Path, command: str) -> ExecutionRequest:
    request = harness.request(command)
    proc = crash_orchestrator(harness, request, tmp_path)
    try:
        await wait_for(lambda: (harness.folder / "before").exists() and (tmp_path / "control").exists())
    finally:
        kill_orchestrator(proc, tmp_path)
    return request


ADOPTING = kinds("ssh", "local")


@ADOPTING
async def test_a_fresh_adapter_waits_for_an_attempt_still_running_after_a_crash(harness, tmp_path):
    go = harness.folder / "go"
    request = await started_then_crashed(
        harness, tmp_path, f"echo before; touch {harness.folder}/before; while [ ! -e {go} ]; do sleep 0.02; done; echo after; exit 3"
    )
    adapter = harness.adapter()
    lines: list[str] = []
    results = []

    async def adopt() -> None:
        results.append(await adapter.adopt(request, lines.append))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(adopt)
            await wait_for(lambda: lines == ["before"])  # what it wrote before the crash, then as it comes
            assert not results
            go.touch()
    finally:
        go.touch()  # whatever happened, the orphan ends
        await close(adapter)
    assert (results[0].outcome, results[0].exit_code) == ("failed", 3)
    assert lines == ["before", "after"]


@ADOPTING
async def test_a_fresh_adapter_records_an_attempt_that_finished_after_the_crash_with_its_real_status(harness, tmp_path):
    go = harness.folder / "go"
    request = await started_then_crashed(
        harness, tmp_path,
        f"echo before; touch {harness.folder}/before; while [ ! -e {go} ]; do sleep 0.02; done; sleep 0.3; echo after; touch {harness.folder}/done; exit 5",
    )
    go.touch()
    await wait_for(lambda: (harness.folder / "done").exists())
    await trio.sleep(0.2)  # the record's exit status follows
    adapter = harness.adapter()
    lines: list[str] = []
    result = await adapter.adopt(request, lines.append)
    await close(adapter)
    assert result is not None
    assert (result.outcome, result.exit_code, result.error) == ("failed", 5, "exit status 5")
    assert lines == ["before", "after"]
    assert result.ended_after is not None and result.ended_after >= 0.3  # it slept 0.3 s after `go`


@ADOPTING
async def test_an_attempt_whose_record_is_gone_cannot_be_adopted(harness, tmp_path):
    request = await started_then_crashed(harness, tmp_path, f"touch {harness.folder}/before; exit 0")
    adapter = harness.adapter()
    record = record_path(harness, request)
    await wait_for(lambda: ended(harness, record))
    # ssh: the host lost the attempt's record. local: the records live in memory, so what
    # is lost is a whole deployment's (a reboot); an attempt's record missing from a
    # deployment's that is still there means the attempt never started (NOT_STARTED).
    lost = record if harness.kind == "ssh" else record.parents[2]
    subprocess.run(["rm", "-rf", str(lost)], check=True)
    assert await adapter.adopt(request, lambda line: None) is None
    never_ran = harness.request("true")
    assert await adapter.adopt(never_ran, lambda line: None) is None
    await close(adapter)


def record_path(harness: Harness, request: ExecutionRequest) -> Path:
    """The attempt's record (adapters/record.py): over ssh a folder; locally the path
    its `.status` and `.output` files are named after."""
    from adapters.record import attempt_path

    path = attempt_path(request.deployment, request.step.name, request.target.name if request.target else None, request.attempt)
    if harness.kind == "ssh":
        assert harness.host is not None
        return Path(os.path.expanduser(f"~{harness.host.user}")) / ".abreast" / "state" / path
    return Path(os.environ["ABREAST_STATE"]) / "default" / path  # the local adapter's root (see the harness)


def ended(harness: Harness, record: Path) -> bool:
    """Does the record say how its command ended?"""
    from adapters.record import parse_status

    if harness.kind == "ssh":
        return (record / "exit").exists()
    status = record.parent / f"{record.name}.status"
    return status.exists() and parse_status(status.read_text())[1] is not None


@kinds("dry-run")
async def test_a_rehearsal_keeps_no_record_to_adopt(harness):
    assert not hasattr(harness.adapter(), "adopt")
