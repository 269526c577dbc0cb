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

import adapters.agent
from adapters.local import LocalAdapter
from adapters.record import Started, attempt_path, parse_status
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


class Record:
    """An attempt's record in the adapter's state folder (adapters/record.py)."""

    def __init__(self, tmp_path: Path, req: ExecutionRequest):
        base = tmp_path / "state" / attempt_path(req.deployment, req.step.name, req.target.name if req.target else None, req.attempt)
        self.target = base.parent  # the target's folder
        self.status = base.parent / f"{base.name}.status"
        self.output = base.parent / f"{base.name}.output"

    def started(self) -> Started | None:
        return parse_status(self.status.read_text())[0] if self.status.exists() else None

    def exit(self) -> int | None:
        return parse_status(self.status.read_text())[1] if self.status.exists() else None


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
    assert Record(tmp_path, req).exit() == 3  # the agent recorded how it ended


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
    record = Record(tmp_path, req)
    assert record.target.name == "a%2Fb .." and record.status.name == "2.status"  # any name is a safe file name
    started = record.started()
    assert started is not None and started.boot_id == boot_id() and started.starttime.isdigit()
    assert record.output.read_text() == "one\ntwo\n"
    assert record.exit() == 4
    assert parse_status(record.status.read_text())[2] >= 0  # and how long it ran
    assert oct((tmp_path / "state").stat().st_mode & 0o777) == "0o700"
    assert oct(record.status.stat().st_mode & 0o777) == oct(record.output.stat().st_mode & 0o777) == "0o600"
    adapter = LocalAdapter()
    adapter.forget(req.deployment, [(req.step.name, req.target.name, req.attempt)])
    assert not record.status.exists() and not record.output.exists()
    assert not record.target.exists()  # the target's folder too, now empty
    assert record.target.parent.parent.exists()  # the deployment's stays until it has ended
    adapter.forget_deployment(req.deployment)
    assert not (tmp_path / "state").exists()  # nothing left of the store's records


async def test_the_agent_forgets_records_and_keeps_those_still_needed(tmp_path):
    adapter = LocalAdapter()
    first, retry, other = request(tmp_path, "true"), request(tmp_path, "true", attempt=2), request(tmp_path, "true", target="web-02")
    for req in (first, other):
        assert (await adapter.run(req, lambda line: None)).outcome == "succeeded"
    adapter.forget(first.deployment, [(first.step.name, first.target.name, 1)])  # sent to the agent
    assert (await adapter.run(retry, lambda line: None)).outcome == "succeeded"  # after the forget, in order
    wait_until(lambda: not Record(tmp_path, first).status.exists())
    assert Record(tmp_path, retry).exit() == 0 and Record(tmp_path, other).exit() == 0
    adapter.forget_deployment(first.deployment)
    await adapter.aclose()  # the agent ends once it has done what it was sent
    assert not (tmp_path / "state").exists()


async def test_a_stale_record_of_the_same_attempt_is_replaced(tmp_path):
    req = request(tmp_path, "echo fresh")
    record = Record(tmp_path, req)
    record.target.mkdir(parents=True)
    record.status.write_text("1 2 3 4 5\n9 1.0\n")
    record.output.write_text("stale\n")
    lines: list[str] = []
    assert (await LocalAdapter().run(req, lines.append)).outcome == "succeeded"
    assert lines == ["fresh"] and record.output.read_text() == "fresh\n" and record.exit() == 0


async def test_an_unwritable_record_fails_the_attempt_and_runs_nothing(tmp_path):
    req = request(tmp_path, "touch ran")
    record = Record(tmp_path, req)
    record.target.parent.mkdir(parents=True)
    record.target.write_text("")  # a file where the target's folder goes (unwritable even by root)
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
    wait_until(lambda: Record(tmp_path, req).exit() is not None)
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
    assert Record(tmp_path, req).exit() == 128 + signal.SIGTERM


async def test_an_attempt_without_a_record_never_ran_unless_the_records_were_lost(tmp_path):
    req = request(tmp_path, "touch ran")
    adapter = LocalAdapter()
    # No folder for the deployment (made before its first event): its records are gone.
    assert await adapter.adopt(req, lambda line: None) is None
    adapter.prepare(req.deployment)
    assert await adapter.adopt(req, lambda line: None) is NOT_STARTED
    Record(tmp_path, req).target.mkdir(parents=True)  # made, then the agent was gone before it went on
    assert await adapter.adopt(req, lambda line: None) is NOT_STARTED
    assert not (tmp_path / "ran").exists()


async def test_started_names_the_command_and_the_agent_that_records_it(tmp_path):
    req = request(tmp_path, "echo $$ > pid; sleep 0.2")
    await LocalAdapter().run(req, lambda line: None)
    started = Record(tmp_path, req).started()
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
    started = Record(tmp_path, req).started()
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
        os.killpg(Record(tmp_path, other).started().pid, signal.SIGKILL)


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
    assert not Record(tmp_path, req).status.exists()  # nothing ran: no record, and adopt would say so


async def test_an_agent_that_dies_under_a_running_command_fails_it_and_stops_it(tmp_path):
    req = request(tmp_path, "echo $$ > pid; sleep 60")
    adapter = LocalAdapter(grace=2)

    async def kill_the_agent() -> None:
        record = Record(tmp_path, req)
        while record.started() is None:
            await trio.sleep(0.02)
        os.kill(record.started().agent[0], signal.SIGKILL)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(kill_the_agent)
        with trio.fail_after(20):
            result = await adapter.run(req, lambda line: None)
    assert result.outcome == "failed" and result.exit_code is None
    assert "ended unexpectedly" in result.error and "how the command ended is unknown" in result.error
    assert not alive(int((tmp_path / "pid").read_text()))  # stopped: a retry never runs beside it
    assert (await adapter.run(request(tmp_path, "true", attempt=2), lambda line: None)).outcome == "succeeded"  # a new agent


async def test_adopt_waits_for_the_agent_to_write_how_the_command_ended(tmp_path):
    # The command's shell has ended, its agent (here a stand-in process) still runs and
    # writes the status's second line a moment later: adopt waits for it rather than
    # calling it unknowable.
    req = request(tmp_path, "true")
    adapter = LocalAdapter()
    adapter.prepare(req.deployment)
    record = Record(tmp_path, req)
    record.target.mkdir(parents=True)
    ended = os.posix_spawn("/bin/true", ["true"], {})
    os.waitpid(ended, 0)
    agent = os.posix_spawn("/bin/sleep", ["sleep", "0.5"], {})
    first = f"{ended} 1 {boot_id()} {agent} {proc_starttime(agent)}\n"
    record.status.write_text(first)
    record.output.write_text("done\n")
    lines: list[str] = []
    async with trio.open_nursery() as nursery:

        async def write_exit() -> None:
            await trio.sleep(0.2)
            record.status.write_text(first + "7 0.250000\n")

        nursery.start_soon(write_exit)
        found = await adapter.adopt(req, lines.append)
    os.waitpid(agent, 0)
    assert isinstance(found, AttemptResult) and (found.outcome, found.exit_code, found.ended_after) == ("failed", 7, 0.25)
    assert lines == ["done"]
    record.status.write_text(first)  # and once the agent is gone without writing it: unknowable
    assert await adapter.adopt(req, lines.append) is None


async def test_adopt_waits_while_an_agent_is_starting_the_command(tmp_path, monkeypatch):
    # The status file created, its first line not yet written: the agent that has it
    # open is between the two.
    req = request(tmp_path, "true")
    adapter = LocalAdapter()
    adapter.prepare(req.deployment)
    record = Record(tmp_path, req)
    record.target.mkdir(parents=True)
    writer = (
        "import os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
        "time.sleep(0.5)\n"
        "os.write(fd, sys.argv[2].encode())\n"
    )
    ended = os.posix_spawn("/bin/true", ["true"], {})
    os.waitpid(ended, 0)
    lines = f"{ended} 1 {boot_id()} 1 1\n0 0.400000\n"  # a command that has ended, all at once
    agent_file = str(Path(adapters.agent.__file__).resolve())  # what names an agent in /proc
    proc = await trio.lowlevel.open_process([sys.executable, "-c", writer, str(record.status), lines, agent_file])
    while not record.status.exists():
        await trio.sleep(0.01)
    monkeypatch.setattr("adapters.local.STARTING_WAIT", 0.0)  # only the writer it sees keeps it waiting
    found = await adapter.adopt(req, lambda line: None)
    await proc.wait()
    assert isinstance(found, AttemptResult) and (found.outcome, found.ended_after) == ("succeeded", 0.4)
    record.status.write_text("")  # created, never written, and nobody holds it: whoever was starting it died
    assert await adapter.adopt(req, lambda line: None) is None
