"""The local adapter with real processes: environment, folder, exit codes, output,
default signal dispositions, killing the whole process group on a timeout or a cancel
(and waiting until it is gone), the attempt's own record, and adopting attempts that a
dead orchestrator left behind."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import msgspec
import pytest
import trio

from adapters.local import LocalAdapter
from adapters.record import attempt_path, parse_exit, parse_started
from engine.adapter import NOT_STARTED, AttemptResult, ExecutionRequest
from engine.lease import boot_id, proc_starttime
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


@pytest.fixture(autouse=True)
def _state(tmp_path, monkeypatch):
    # Every adapter made without a state root in these tests keeps its records here.
    monkeypatch.setattr("adapters.local.default_state_root", lambda: tmp_path / "state")


def folder_of(tmp_path: Path, req: ExecutionRequest) -> Path:
    return tmp_path / "state" / attempt_path(req.deployment, req.step.name, req.target.name if req.target else None, req.attempt)


def wait_until(predicate, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


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




async def test_when_a_cancel_returns_nothing_of_the_group_runs_any_more(tmp_path):
    # The command traps TERM and takes a while to stop: the attempt has ended only
    # when its process group is gone (a retry must never overlap it).
    req = request(tmp_path, "trap 'sleep 1; echo stopped > stopped; exit 3' TERM; echo $$ > pid; while :; do sleep 0.05; done")
    lines: list[str] = []
    with trio.move_on_after(0.5):
        await LocalAdapter(grace=5).run(req, lines.append)
    assert (tmp_path / "stopped").read_text() == "stopped\n"
    assert not alive(int((tmp_path / "pid").read_text()))
    assert parse_exit((folder_of(tmp_path, req) / "exit").read_text()) == 3  # the wrapper outlived TERM to record it


async def test_commands_start_with_default_signal_dispositions(tmp_path):
    # The orchestrator (Python) ignores SIGPIPE; a command must not inherit that, or
    # `yes` would print "Broken pipe" and a shell loop writing to a closed pipe would
    # never end.
    for command in ("yes | head -n1", "while :; do echo y; done | head -n1", "grep -E '^SigIgn' /proc/self/status"):
        lines: list[str] = []
        with trio.fail_after(20):
            result = await LocalAdapter().run(request(tmp_path, command), lines.append)
        assert result.outcome == "succeeded", (command, lines)
        if command.startswith("grep"):
            ignored = int(lines[0].split()[1], 16)
            assert not ignored & (1 << (signal.SIGPIPE - 1)) and not ignored & (1 << (signal.SIGXFSZ - 1))
        else:
            assert lines == ["y"], command


async def test_the_attempt_keeps_its_own_record(tmp_path):
    req = request(tmp_path, "echo one; echo two >&2; exit 4", target="a/b ..", attempt=2)
    result = await LocalAdapter().run(req, lambda line: None)
    assert (result.outcome, result.exit_code) == ("failed", 4)
    folder = folder_of(tmp_path, req)
    assert folder.parent.name == "a%2Fb .."  # any name is a safe folder name
    started = parse_started((folder / "started").read_text())
    assert started is not None and started.boot_id == boot_id() and started.starttime.isdigit()
    assert (folder / "output").read_text() == "one\ntwo\n"
    assert parse_exit((folder / "exit").read_text()) == 4
    assert oct((tmp_path / "state").stat().st_mode & 0o777) == "0o700"
    adapter = LocalAdapter()
    adapter.forget(req.deployment, [(req.step.name, req.target.name, req.attempt)])
    assert not folder.exists() and not folder.parent.exists()  # the target's folder too, now empty
    assert folder.parent.parent.parent.exists()  # the deployment's stays until it has ended
    adapter.forget_deployment(req.deployment)
    assert not (tmp_path / "state").exists()  # nothing left of the store's records


async def test_the_agent_forgets_records_and_keeps_those_still_needed(tmp_path):
    adapter = LocalAdapter()
    first, retry, other = request(tmp_path, "true"), request(tmp_path, "true", attempt=2), request(tmp_path, "true", target="web-02")
    for req in (first, other):
        assert (await adapter.run(req, lambda line: None)).outcome == "succeeded"
    adapter.forget(first.deployment, [(first.step.name, first.target.name, 1)])  # sent to the agent
    assert (await adapter.run(retry, lambda line: None)).outcome == "succeeded"  # after the forget, in order
    wait_until(lambda: not folder_of(tmp_path, first).exists())
    assert (folder_of(tmp_path, retry) / "exit").exists() and (folder_of(tmp_path, other) / "exit").exists()
    adapter.forget_deployment(first.deployment)
    await adapter.aclose()  # the agent ends once it has done what it was sent
    assert not (tmp_path / "state").exists()


async def test_a_stale_record_of_the_same_attempt_is_replaced(tmp_path):
    req = request(tmp_path, "echo fresh")
    folder = folder_of(tmp_path, req)
    folder.mkdir(parents=True)
    (folder / "exit").write_text("9\n")
    (folder / "output").write_text("stale\n")
    lines: list[str] = []
    assert (await LocalAdapter().run(req, lines.append)).outcome == "succeeded"
    assert lines == ["fresh"] and (folder / "output").read_text() == "fresh\n"


async def test_an_unwritable_record_fails_the_attempt_and_runs_nothing(tmp_path):
    req = request(tmp_path, "touch ran")
    folder = folder_of(tmp_path, req)
    folder.parent.parent.mkdir(parents=True)
    folder.parent.write_text("")  # a file where the target's folder goes (unwritable even by root)
    result = await LocalAdapter().run(req, lambda line: None)
    assert (result.outcome, result.exit_code) == ("failed", 125)
    assert "cannot write the attempt record" in result.error and "nothing ran" in result.error
    assert not (tmp_path / "ran").exists()


async def test_a_long_line_is_cut_without_being_held_whole(tmp_path):
    # 20 MB on one line (the 100 MB case is in test_runtime_real.py): the adapter keeps
    # a bounded prefix, and the next line comes through whole.
    lines: list[str] = []
    result = await LocalAdapter().run(request(tmp_path, "head -c 20000000 /dev/zero | tr '\\0' x; echo; echo after"), lines.append)
    assert result.outcome == "succeeded"
    assert len(lines) == 2 and lines[1] == "after"
    assert 4000 < len(lines[0]) <= 16004 and set(lines[0]) == {"x"}


# -- adopting what a dead orchestrator left -------------------------------------------


async def abandon(adapter: LocalAdapter, req: ExecutionRequest, after: float = 0.3) -> None:
    """Start an attempt and walk away from it as a killed orchestrator would."""
    adapter.detach()
    with trio.move_on_after(after):
        await adapter.run(req, lambda line: None)


async def test_an_attempt_that_ended_while_nobody_watched_is_adopted_as_it_ended(tmp_path):
    req = request(tmp_path, "echo working; sleep 0.6; echo done; exit 3")
    await abandon(LocalAdapter(), req)
    folder = folder_of(tmp_path, req)
    wait_until(lambda: (folder / "exit").exists())
    lines: list[str] = []
    called: list[bool] = []
    found = await LocalAdapter().adopt(req, lines.append, running=lambda: called.append(True))
    assert isinstance(found, AttemptResult)
    assert (found.outcome, found.exit_code, found.error) == ("failed", 3, "exit status 3")
    assert lines == ["working", "done"] and not called
    assert 0.5 <= found.ended_after < 5  # by the record's own clock


async def test_an_attempt_still_running_is_followed_to_its_end(tmp_path):
    req = request(tmp_path, "echo early; while [ ! -e go ]; do sleep 0.05; done; echo late")
    await abandon(LocalAdapter(), req)
    lines: list[str] = []
    called: list[bool] = []

    async def release() -> None:
        await trio.sleep(0.5)
        assert lines == ["early"]  # output flows while it runs
        (tmp_path / "go").touch()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(release)
        found = await LocalAdapter().adopt(req, lines.append, running=lambda: called.append(True))
    assert isinstance(found, AttemptResult) and (found.outcome, found.ended_after) == ("succeeded", None)
    assert lines == ["early", "late"] and called == [True]


async def test_cancelling_an_adopted_attempt_stops_its_group(tmp_path):
    req = request(tmp_path, "echo $$ > pid; sleep 60 & wait")
    await abandon(LocalAdapter(), req)
    pid = int((tmp_path / "pid").read_text())
    with trio.move_on_after(0.3):
        await LocalAdapter(grace=2).adopt(req, lambda line: None)
    assert not alive(pid)
    assert parse_exit((folder_of(tmp_path, req) / "exit").read_text()) == 128 + signal.SIGTERM


async def test_an_attempt_without_a_record_never_ran_unless_the_records_were_lost(tmp_path):
    req = request(tmp_path, "touch ran")
    adapter = LocalAdapter()
    # No folder for the deployment (made before its first event): its records are gone.
    assert await adapter.adopt(req, lambda line: None) is None
    adapter.prepare(req.deployment)
    assert await adapter.adopt(req, lambda line: None) is NOT_STARTED
    folder_of(tmp_path, req).mkdir(parents=True)  # made, then the orchestrator died before spawning
    assert await adapter.adopt(req, lambda line: None) is NOT_STARTED
    assert not (tmp_path / "ran").exists()


async def test_started_names_the_command_and_the_agent_that_records_it(tmp_path):
    req = request(tmp_path, "echo $$ > pid; sleep 0.2")
    await LocalAdapter().run(req, lambda line: None)
    started = parse_started((folder_of(tmp_path, req) / "started").read_text())
    assert started is not None and started.starttime.isdigit() and started.boot_id == boot_id()
    assert started.pid == int((tmp_path / "pid").read_text())  # the command's shell leads the group
    assert started.agent is not None and started.agent[0] not in (os.getpid(), started.pid) and started.agent[1].isdigit()


async def test_a_record_without_an_exit_status_whose_agent_is_gone_is_unknowable(tmp_path):
    # The agent itself was killed (not the command): the command runs on, even after
    # replacing its environment, which once hid it from the orphan search. Adopt cannot
    # know how it ends; stop_orphans finds it by the record and stops it.
    req = request(tmp_path, "exec env -i /bin/sh -c 'echo $$ > pid; sleep 60'")
    adapter = LocalAdapter(grace=2)
    await abandon(adapter, req)
    wait_until(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text().strip())
    command = int((tmp_path / "pid").read_text())
    started = parse_started((folder_of(tmp_path, req) / "started").read_text())
    assert started.pid == command  # exec keeps the pid, and the start time
    os.kill(started.agent[0], signal.SIGKILL)
    wait_until(lambda: proc_starttime(started.agent[0]) is None)
    assert alive(command)
    assert await adapter.adopt(req, lambda line: None) is None
    assert await adapter.stop_orphans(req.deployment, {(req.step.name, req.target.name, req.attempt)}) == 1
    assert not alive(command)
    assert await adapter.stop_orphans(req.deployment, {(req.step.name, req.target.name, req.attempt)}) == 0


async def test_stop_orphans_leaves_other_attempts_alone(tmp_path):
    mine, other = request(tmp_path, "sleep 60", attempt=1), request(tmp_path, "echo $$ > other; sleep 60", target="web-02")
    adapter = LocalAdapter(grace=2)
    await abandon(adapter, mine)
    await abandon(adapter, other)
    try:
        assert await adapter.stop_orphans("d-42", {("deploy web", "web-01", 1)}) == 1
        assert alive(int((tmp_path / "other").read_text()))
    finally:
        started = parse_started((folder_of(tmp_path, other) / "started").read_text())
        os.killpg(started.pid, signal.SIGKILL)


def test_each_store_has_a_state_folder_of_its_own_in_memory_by_default(tmp_path, monkeypatch):
    from adapters.local import state_root_for

    monkeypatch.delenv("ABREAST_STATE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    a, b = state_root_for(tmp_path / "x" / "abreast.db"), state_root_for(tmp_path / "y" / "abreast.db")
    assert a.parent == b.parent == tmp_path / "run" / "abreast" and a != b
    assert a.name.startswith("abreast.db-") and state_root_for(tmp_path / "x" / ".." / "x" / "abreast.db") == a
    assert oct((tmp_path / "run" / "abreast").stat().st_mode & 0o777) == "0o700"
    os.chmod(tmp_path / "run" / "abreast", 0o755)  # not ours alone any more: not used
    assert state_root_for(tmp_path / "x" / "abreast.db").parent != tmp_path / "run" / "abreast"
    monkeypatch.setenv("ABREAST_STATE", str(tmp_path / "elsewhere"))
    assert state_root_for(tmp_path / "x" / "abreast.db") == tmp_path / "elsewhere" / a.name


# -- the agent: the commands' parent, which keeps their records ------------------------


async def test_a_working_folder_that_cannot_be_entered_runs_nothing(tmp_path):
    req = msgspec.structs.replace(request(tmp_path, "touch ran"), workdir=tmp_path / "gone")
    result = await LocalAdapter().run(req, lambda line: None)
    assert (result.outcome, result.exit_code) == ("failed", 126)
    assert "cannot enter the working folder" in result.error and str(tmp_path / "gone") in result.error
    assert not folder_of(tmp_path, req).exists()  # nothing ran: no record, and adopt would say so


async def test_an_agent_that_dies_under_a_running_command_fails_it_and_stops_it(tmp_path):
    req = request(tmp_path, "echo $$ > pid; sleep 60")
    adapter = LocalAdapter(grace=2)

    async def kill_the_agent() -> None:
        folder = folder_of(tmp_path, req)
        while parse_started(((folder / "started").read_text() if (folder / "started").exists() else "")) is None:
            await trio.sleep(0.02)
        os.kill(parse_started((folder / "started").read_text()).agent[0], signal.SIGKILL)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(kill_the_agent)
        with trio.fail_after(20):
            result = await adapter.run(req, lambda line: None)
    assert result.outcome == "failed" and result.exit_code is None
    assert "ended unexpectedly" in result.error and "how the command ended is unknown" in result.error
    assert not alive(int((tmp_path / "pid").read_text()))  # stopped: a retry never runs beside it
    assert (await adapter.run(request(tmp_path, "true", attempt=2), lambda line: None)).outcome == "succeeded"  # a new agent


async def test_adopt_waits_for_the_agent_to_write_the_exit_status(tmp_path):
    # The command's shell has ended, its agent (here a stand-in process) still runs and
    # writes `exit` a moment later: adopt waits for it rather than calling it unknowable.
    req = request(tmp_path, "true")
    adapter = LocalAdapter()
    adapter.prepare(req.deployment)
    folder = folder_of(tmp_path, req)
    folder.mkdir(parents=True)
    ended = os.posix_spawn("/bin/true", ["true"], {})
    os.waitpid(ended, 0)
    agent = os.posix_spawn("/bin/sleep", ["sleep", "0.5"], {})
    (folder / "started").write_text(f"{ended} 1 {boot_id()} {agent} {proc_starttime(agent)}\n")
    (folder / "output").write_text("done\n")
    lines: list[str] = []
    async with trio.open_nursery() as nursery:

        async def write_exit() -> None:
            await trio.sleep(0.2)
            (folder / "exit").write_text("7\n")

        nursery.start_soon(write_exit)
        found = await adapter.adopt(req, lines.append)
    os.waitpid(agent, 0)
    assert isinstance(found, AttemptResult) and (found.outcome, found.exit_code) == ("failed", 7)
    assert lines == ["done"]
    (folder / "exit").unlink()  # and once the agent is gone without writing it: unknowable
    assert await adapter.adopt(req, lines.append) is None


async def test_adopt_waits_while_an_agent_is_starting_the_command(tmp_path, monkeypatch):
    # `started` created, not yet written: the agent that has it open is between the two.
    req = request(tmp_path, "true")
    adapter = LocalAdapter()
    adapter.prepare(req.deployment)
    folder = folder_of(tmp_path, req)
    folder.mkdir(parents=True)
    path = folder / "started"
    writer = (
        "import os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
        "time.sleep(0.5)\n"
        "open(sys.argv[3], 'w').write('0\\n')\n"
        "os.write(fd, sys.argv[2].encode())\n"
    )
    ended = os.posix_spawn("/bin/true", ["true"], {})
    os.waitpid(ended, 0)
    line = f"{ended} 1 {boot_id()}\n"  # a command that has ended (and a wrapper's record: no agent)
    proc = await trio.lowlevel.open_process([sys.executable, "-c", writer, str(path), line, str(folder / "exit"), "adapters.agent"])
    while not path.exists():
        await trio.sleep(0.01)
    monkeypatch.setattr("adapters.local.STARTING_WAIT", 0.0)  # only the writer it sees keeps it waiting
    found = await adapter.adopt(req, lambda line: None)
    await proc.wait()
    assert isinstance(found, AttemptResult) and found.outcome == "succeeded"
    path.write_text("")  # created, never written, and nobody holds it: whoever was starting it died
    (folder / "exit").unlink()
    assert await adapter.adopt(req, lambda line: None) is None
