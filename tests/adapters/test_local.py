"""The local adapter with real processes: environment, folder, exit codes, output, and
killing the whole process group on a timeout or a cancel."""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

from adapters.local import LocalAdapter
from engine.adapter import ExecutionRequest
from engine.plan import Step, Target
from tests.helpers import alive


def request(tmp_path: Path, run: str | None, target: str | None = "web-01", attempt: int = 1) -> ExecutionRequest:
    return ExecutionRequest(
        deployment="d-42",
        step=Step(name="deploy web", run=run),
        target=Target(name=target) if target else None,
        attempt=attempt,
        workdir=tmp_path,
    )


async def test_the_command_sees_the_four_variables_and_runs_in_the_scenario_folder(tmp_path):
    lines: list[str] = []
    result = await LocalAdapter().run(
        request(tmp_path, 'echo "$ABREAST_DEPLOYMENT|$ABREAST_STEP|$ABREAST_TARGET|$ABREAST_ATTEMPT"; pwd', attempt=3),
        lines.append,
    )
    assert (result.outcome, result.exit_code) == ("succeeded", 0)
    assert lines == ["d-42|deploy web|web-01|3", str(tmp_path)]


async def test_a_server_step_has_an_empty_target_variable(tmp_path):
    lines: list[str] = []
    await LocalAdapter().run(request(tmp_path, 'echo "[$ABREAST_TARGET]"', target=None), lines.append)
    assert lines == ["[]"]


async def test_a_non_zero_exit_fails_with_its_status_and_output_is_kept(tmp_path):
    lines: list[str] = []
    result = await LocalAdapter().run(request(tmp_path, "echo out; echo err >&2; printf 'no newline'; exit 7"), lines.append)
    assert (result.outcome, result.exit_code, result.error) == ("failed", 7, "exit status 7")
    assert lines == ["out", "err", "no newline"]


async def test_a_step_without_run_succeeds_at_once(tmp_path):
    result = await LocalAdapter().run(request(tmp_path, None), lambda line: None)
    assert result.outcome == "succeeded"


async def test_cancelling_kills_the_whole_process_group(tmp_path):
    # The command starts a grandchild and waits: both must be gone after the cancel.
    pidfile = tmp_path / "pids"
    lines: list[str] = []
    t0 = time.monotonic()
    with trio.move_on_after(0.5):
        await LocalAdapter(grace=2).run(
            request(tmp_path, f"sleep 30 & echo $! > {pidfile}; echo $$ >> {pidfile}; wait"), lines.append
        )
    assert time.monotonic() - t0 < 5
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 2
    for _ in range(50):
        if not any(alive(p) for p in pids):
            break
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)


async def test_a_command_that_ignores_term_is_killed_after_the_grace_period(tmp_path):
    pidfile = tmp_path / "pid"
    t0 = time.monotonic()
    with trio.move_on_after(0.3):
        await LocalAdapter(grace=0.5).run(
            request(tmp_path, f"trap '' TERM; echo $$ > {pidfile}; while true; do sleep 0.05; done"), lambda line: None
        )
    elapsed = time.monotonic() - t0
    assert 0.7 <= elapsed < 5  # 0.3 s, then TERM ignored for the 0.5 s grace, then KILL
    pid = int(pidfile.read_text())
    for _ in range(50):
        if not alive(pid):
            break
        time.sleep(0.05)
    assert not alive(pid)


async def test_stop_orphans_stops_the_process_groups_of_the_given_attempts_only(tmp_path):
    import subprocess

    def shell(deployment: str, target: str) -> subprocess.Popen:
        env = dict(os.environ, ABREAST_DEPLOYMENT=deployment, ABREAST_STEP="deploy", ABREAST_TARGET=target, ABREAST_ATTEMPT="1")
        return subprocess.Popen(["/bin/sh", "-c", "sleep 60 & wait"], env=env, start_new_session=True)

    mine = shell("d1", "web-01")
    same_id_other_attempt = shell("d1", "web-02")  # e.g. the same id in another project's log
    other = shell("d2", "web-01")
    try:
        await trio.sleep(0.2)  # the sleeps have started, in the shells' groups
        adapter = LocalAdapter(grace=2.0)
        assert await adapter.stop_orphans("d1", {("deploy", "web-01", 1)}) == 1
        assert mine.wait(timeout=5) is not None  # TERM ended the shell (and its group)
        assert same_id_other_attempt.poll() is None and other.poll() is None
        assert await adapter.stop_orphans("d1", {("deploy", "web-01", 2)}) == 0
    finally:
        for proc in (same_id_other_attempt, other):
            os.killpg(proc.pid, 9)
            proc.wait()
