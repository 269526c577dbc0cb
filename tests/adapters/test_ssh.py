"""The ssh adapter on real sshd hosts (tests/sshd.py): the master connection, remote
workdirs, and every way reaching a host can fail — each fails the attempt with an
error that names the target, the host and the cause."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import msgspec
import pytest
import trio

from adapters.ssh import SshAdapter
from engine.adapter import ExecutionRequest
from engine.plan import Step, Target
from tests.helpers import alive
from tests.sshd import Host, free_port, keygen


def target_of(host: Host, name: str = "web-01", **fields) -> Target:  # noqa: ANN003
    doc = host.target(name, **fields)
    doc.pop("roles")
    return msgspec.convert(doc, Target)


def request_of(target: Target, run: str | None, deployment: str | None = None, step: str = "deploy", attempt: int = 1) -> ExecutionRequest:
    return ExecutionRequest(
        deployment=deployment or f"d-{uuid.uuid4().hex[:8]}", step=Step(name=step, run=run), target=target,
        attempt=attempt, workdir=Path(tempfile.gettempdir()),
    )


async def attempt(adapter: SshAdapter, target: Target, run: str, **kw) -> tuple:  # noqa: ANN003
    lines: list[str] = []
    result = await adapter.run(request_of(target, run, **kw), lines.append)
    return result, lines


def masters_of(adapter: SshAdapter, folder: str | None = None) -> list[int]:
    """The master connection processes (daemons) whose control sockets are in the
    adapter's private folder."""
    folder = folder or adapter._folder
    if not folder:
        return []
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"ControlMaster=yes" in argv and any(a.startswith(f"ControlPath={folder}/".encode()) for a in argv):
                found.append(int(name))
    return found


async def eventually(predicate, timeout: float = 10) -> bool:  # noqa: ANN001
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.05)
        return True
    return False


# -- the master connection ---------------------------------------------------------------------


async def test_one_master_connection_carries_every_attempt_and_closes_with_the_adapter(ssh_host):
    adapter = SshAdapter()
    target = target_of(ssh_host)
    assert ssh_host.connections() == []
    for _ in range(3):
        result, lines = await attempt(adapter, target, "echo one at a time")
        assert (result.outcome, lines) == ("succeeded", ["one at a time"])
    results: list = []

    async def one() -> None:
        results.append(await attempt(adapter, target, "echo side by side"))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(one)
    assert [(r.outcome, lines) for r, lines in results] == [("succeeded", ["side by side"])] * 5
    assert len(ssh_host.connections()) == 1  # one sshd serving one TCP connection
    folder = adapter._folder
    assert folder is not None and os.stat(folder).st_mode & 0o777 == 0o700
    assert len(masters_of(adapter)) == 1
    await adapter.aclose()
    assert not os.path.exists(folder)
    assert await eventually(lambda: masters_of(adapter, folder) == [] and ssh_host.connections() == [])


async def test_more_attempts_at_once_than_one_connection_may_carry_open_another(ssh_host):
    # sshd lets one connection carry MaxSessions (10) sessions at once.
    adapter = SshAdapter()
    target = target_of(ssh_host)
    results: list = []

    async def one(i: int) -> None:
        results.append(await attempt(adapter, target, f"sleep 0.5; echo {i}"))

    async with trio.open_nursery() as nursery:
        for i in range(15):
            nursery.start_soon(one, i)
    assert sorted(lines[0] for _, lines in results) == sorted(str(i) for i in range(15))
    assert {r.outcome for r, _ in results} == {"succeeded"}
    assert len(masters_of(adapter)) == 2
    await adapter.aclose()


async def test_a_server_that_allows_fewer_sessions_per_connection_than_asked_gets_more_connections(ssh_host):
    # sshd's MaxSessions is 10 here; the adapter is told 20: the eleventh session is
    # refused, and the adapter learns, and carries it on a second connection.
    adapter = SshAdapter(max_sessions=20)
    target = target_of(ssh_host)
    results: list = []

    async def one(i: int) -> None:
        results.append(await attempt(adapter, target, f"sleep 0.5; echo {i}"))

    async with trio.open_nursery() as nursery:
        for i in range(15):
            nursery.start_soon(one, i)
    assert sorted(lines[0] for _, lines in results) == sorted(str(i) for i in range(15))
    assert len(masters_of(adapter)) == 2
    await adapter.aclose()


# -- the remote working folder -------------------------------------------------------------------


async def test_the_working_folder_is_the_login_folder_unless_workdir_says(ssh_host, remote_folder):
    home = os.path.expanduser(f"~{ssh_host.user}")
    adapter = SshAdapter()
    sub = f"abreast-wd-{uuid.uuid4().hex[:6]}"
    try:
        assert (await attempt(adapter, target_of(ssh_host), "pwd"))[1] == [home]
        made, _ = await attempt(adapter, target_of(ssh_host), f"mkdir {sub}")
        assert made.outcome == "succeeded"
        assert (await attempt(adapter, target_of(ssh_host, workdir=f"~/{sub}"), "pwd"))[1] == [f"{home}/{sub}"]
        assert (await attempt(adapter, target_of(ssh_host, workdir=sub), "pwd"))[1] == [f"{home}/{sub}"]
        assert (await attempt(adapter, target_of(ssh_host, workdir=str(remote_folder)), "pwd"))[1] == [str(remote_folder)]
        result, lines = await attempt(adapter, target_of(ssh_host, workdir="/no/such/folder"), "touch ran")
        assert (result.outcome, result.exit_code) == ("failed", 126)
        assert len(lines) == 1 and "/no/such/folder" in lines[0]
    finally:
        await adapter.aclose()
        shutil.rmtree(f"{home}/{sub}", ignore_errors=True)


# -- failures -------------------------------------------------------------------------------------


def assert_names(error: str | None, target: Target, *words: str) -> None:
    assert error is not None
    assert error.startswith(f"ssh {target.name} ({target.user}@{target.host}:{target.port}): "), error
    for word in words:
        assert word in error, error


async def failing(target: Target, connect_timeout: float = 3.0, **kw) -> tuple:  # noqa: ANN003
    adapter = SshAdapter(connect_timeout=connect_timeout, **kw)
    t0 = time.monotonic()
    try:
        result, lines = await attempt(adapter, target, "echo should not run")
    finally:
        await adapter.aclose()
    assert lines == []
    assert result.outcome == "failed" and result.exit_code is None
    return result, time.monotonic() - t0


async def test_a_closed_port_fails_the_attempt_as_connection_refused(ssh_host):
    target = target_of(ssh_host, port=free_port(ssh_host.address))
    result, _ = await failing(target)
    assert_names(result.error, target, "connection refused")


async def test_a_host_that_never_answers_fails_within_the_connect_timeout(ssh_host):
    # A listener on loopback that accepts connections and never says a word.
    silent = socket.socket()
    silent.bind((ssh_host.address, 0))
    silent.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        target = target_of(ssh_host, port=silent.getsockname()[1])
        result, elapsed = await failing(target, connect_timeout=2)
    finally:
        stop.set()
        thread.join()
        for s in (*accepted, silent):
            s.close()
    assert_names(result.error, target, "timed out")
    assert elapsed < 2 * 1.5 + 3  # the connect timeout, and our own deadline just after it


async def test_a_key_the_host_does_not_know_fails_as_authentication_refused(ssh_host, tmp_path):
    keygen(tmp_path / "stranger", "stranger")
    target = target_of(ssh_host, identity_file=str(tmp_path / "stranger"))
    result, _ = await failing(target)
    assert_names(result.error, target, "authentication refused", "Permission denied")


async def test_an_unknown_host_key_is_refused(ssh_host, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    options = dict(ssh_host.options(), UserKnownHostsFile=str(empty))
    del options["StrictHostKeyChecking"]  # as OpenSSH is configured: ask, and BatchMode never asks
    target = target_of(ssh_host, ssh_options=options)
    result, _ = await failing(target)
    assert_names(result.error, target, "the host key is unknown", "Host key verification failed")


async def test_a_changed_host_key_is_refused(ssh_host, tmp_path):
    other = keygen(tmp_path / "impostor", "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(f"[{ssh_host.address}]:{ssh_host.port} {' '.join(other.split()[:2])}\n")
    target = target_of(ssh_host, ssh_options=dict(ssh_host.options(), UserKnownHostsFile=str(known)))
    result, _ = await failing(target)
    assert_names(result.error, target, "the host key has changed")


async def test_a_connection_lost_mid_command_fails_the_attempt_and_stops_the_command(ssh_host, remote_folder):
    adapter = SshAdapter(connect_timeout=3, grace=1)
    target = target_of(ssh_host)
    pidfile = remote_folder / "pid"
    results: list = []
    lines: list[str] = []

    async def one() -> None:
        results.append(await adapter.run(request_of(target, f"echo $$ > {pidfile}; echo started; sleep 60"), lines.append))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        await eventually(lambda: lines == ["started"])
        ssh_host.drop_connections()
    await adapter.aclose()
    result = results[0]
    assert result.outcome == "failed"
    assert_names(result.error, target, "mid-command, the connection was lost", "the remote command was stopped")
    pid = int(pidfile.read_text())
    assert await eventually(lambda: not alive(pid))


async def test_a_command_that_ends_while_the_connection_is_down_keeps_its_status(ssh_host, remote_folder):
    # The connection drops; by the time the adapter looks again, the command has ended:
    # its real status counts, and its output arrives whole.
    adapter = SshAdapter(connect_timeout=3, grace=1)
    target = target_of(ssh_host)
    go = remote_folder / "go"
    lines: list[str] = []
    results: list = []

    async def one() -> None:
        results.append(await adapter.run(request_of(
            target, f"echo started; while [ ! -e {go} ]; do sleep 0.02; done; echo finished; exit 4"
        ), lines.append))

    # Let the command end before the drop is noticed: hold the reconnection up by
    # stopping the listener for a moment.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        await eventually(lambda: lines == ["started"])
        os.kill(ssh_host.pid, 19)  # SIGSTOP the listener: no new connection until it resumes
        try:
            go.touch()
            await trio.sleep(0.3)  # the command ends (its wrapper writes `exit`)
            ssh_host.drop_connections()
            await trio.sleep(0.3)
        finally:
            os.kill(ssh_host.pid, 18)  # SIGCONT
    await adapter.aclose()
    assert (results[0].outcome, results[0].exit_code) == ("failed", 4)
    assert lines == ["started", "finished"]


async def test_exit_255_is_the_commands_own_when_its_record_says_so(ssh_host):
    adapter = SshAdapter()
    result, lines = await attempt(adapter, target_of(ssh_host), "echo bye; exit 255")
    await adapter.aclose()
    assert (result.outcome, result.exit_code, result.error, lines) == ("failed", 255, "exit status 255", ["bye"])


async def test_a_state_folder_the_account_cannot_write_fails_the_attempt(ssh_host):
    locked = Path(tempfile.mkdtemp(dir=ssh_host.shared))
    os.chmod(locked, 0o555)  # root's, and not the account's to write
    try:
        target = target_of(ssh_host)
        result, _ = await failing(target, state_root=f"{locked}/state")
    finally:
        os.rmdir(locked)
    assert_names(result.error, target, "cannot make the state folder", "Permission denied")


@pytest.fixture
def full_disk(ssh_host):  # noqa: ANN201
    """A tiny tmpfs, filled up, for the state root."""
    folder = Path(tempfile.mkdtemp(dir=ssh_host.shared))
    os.chmod(folder, 0o755)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=1777", "tmpfs", str(folder)], capture_output=True, text=True)
    if p.returncode != 0:
        os.rmdir(folder)
        pytest.skip(f"cannot mount a small tmpfs here to fill up ({p.stderr.strip()}); the unwritable state folder test covers the path")
    state = folder / "state"
    state.mkdir(mode=0o777)
    os.chmod(state, 0o777)
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # full
    finally:
        os.close(fd)
    yield str(state)
    # What the failed attempt started on the "host" (its follower) may hold a file
    # open for a moment after the attempt failed.
    for _ in range(100):
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode == 0:
            break
        time.sleep(0.05)
    else:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)
    os.rmdir(folder)


async def test_a_full_disk_on_the_host_fails_the_attempt(ssh_host, full_disk):
    target = target_of(ssh_host)
    result, _ = await failing(target, state_root=full_disk)
    assert_names(result.error, target, "No space left on device")


async def test_an_attempt_cancelled_before_it_claimed_its_record_never_runs(ssh_host, remote_folder):
    # The cancellation can reach the host before the attempt's own session does: the
    # stop claims the attempt's record first, and the attempt then refuses to start.
    adapter = SshAdapter()
    target = target_of(ssh_host)
    request = request_of(target, f"touch {remote_folder}/ran")
    record = adapter._record(request)
    await adapter._stop(adapter.destination(target, request.workdir), record)
    lines: list[str] = []
    result = await adapter.run(request, lines.append)
    await adapter.aclose()
    assert result.outcome == "failed"
    assert_names(result.error, target, "already exists on the host")
    assert not (remote_folder / "ran").exists()


async def test_adopting_from_a_host_that_cannot_be_reached_is_an_error(ssh_host):
    from adapters.ssh import SshError

    adapter = SshAdapter(connect_timeout=2)
    target = target_of(ssh_host, port=free_port(ssh_host.address))
    with pytest.raises(SshError, match="connection refused"):
        await adapter.adopt(request_of(target, "true"), lambda line: None)
    await adapter.aclose()


def test_target_fields_abreast_manages_or_cannot_use_are_reported_before_anything_runs(ssh_host, tmp_path):
    adapter = SshAdapter()
    target = Target(
        name="web-01", adapter="ssh", host="-oProxyCommand=touch pwned", user="-x", workdir="~root/x",
        identity_file="no-such-key", ssh_options={"ControlPath": "/tmp/x", "batchmode": "no", "ServerAliveInterval": "3"},
    )
    assert adapter.check(target, tmp_path) == [
        ("host", "not a host name: '-oProxyCommand=touch pwned'"),
        ("user", "not a user name: '-x'"),
        ("workdir", "~user is not understood: write the folder's path"),
        ("identity_file", f"no such file: {tmp_path / 'no-such-key'}"),
        ("ssh_options.ControlPath", "abreast sets this option itself (one master connection per host, no prompts)"),
        ("ssh_options.batchmode", "abreast sets this option itself (one master connection per host, no prompts)"),
    ]
    assert adapter.check(target_of(ssh_host), tmp_path) == []


async def test_the_first_attempt_of_a_step_on_a_host_makes_the_record_folders_of_its_neighbours(ssh_hosts, remote_folder):
    from engine.plan import Plan

    first, second = ssh_hosts[0], ssh_hosts[1]
    hosts = {"t1": first, "t2": first, "t3": first, "t4": second}
    targets = tuple(msgspec.structs.replace(target_of(host, name), roles=("app",)) for name, host in hosts.items())
    plan = Plan(steps=(Step(name="deploy", roles=("app",), run="true"),), targets=targets)
    adapter = SshAdapter(plan=plan)
    deployment = f"d-{uuid.uuid4().hex[:8]}"
    home = Path(os.path.expanduser(f"~{first.user}")) / ".abreast" / "state" / deployment / "deploy"

    def request(target: Target) -> ExecutionRequest:
        return ExecutionRequest(deployment=deployment, step=plan.steps[0], target=target, attempt=1, workdir=remote_folder)

    assert (await adapter.run(request(targets[0]), lambda line: None)).outcome == "succeeded"
    # One mkdir made t2's and t3's folders (same host), not t4's (another host).
    assert sorted(p.name for p in home.iterdir()) == ["t1", "t2", "t3"]
    assert sorted(p.name for p in (home / "t2" / "1").iterdir()) == []
    for target in targets[1:]:
        assert (await adapter.run(request(target), lambda line: None)).outcome == "succeeded"
    assert sorted(p.name for p in home.iterdir()) == ["t1", "t2", "t3", "t4"]
    await adapter.aclose()


async def test_a_master_killed_behind_the_adapters_back_is_replaced(ssh_host):
    adapter = SshAdapter()
    target = target_of(ssh_host)
    assert (await attempt(adapter, target, "echo one"))[1] == ["one"]
    (master,) = masters_of(adapter)
    os.kill(master, 9)  # its control socket stays behind, answering nothing
    result, lines = await attempt(adapter, target, "echo two")
    assert (result.outcome, result.error, lines) == ("succeeded", None, ["two"])
    assert len(masters_of(adapter)) == 1
    await adapter.aclose()


async def test_a_cancel_at_any_moment_of_the_start_leaves_nothing_running(ssh_host, remote_folder):
    # Cancelled while the master opens, while the session opens, while the script
    # claims the record, or once the command runs: in every case the command either
    # never starts or is stopped.
    adapter = SshAdapter(grace=1)
    target = target_of(ssh_host)
    pidfile = remote_folder / "pids"
    for i in range(12):
        with trio.move_on_after(0.05 * i):
            await adapter.run(request_of(target, f"echo $$ >> {pidfile}; sleep 60"), lambda line: None)
    await adapter.aclose()
    pids = [int(p) for p in pidfile.read_text().split()] if pidfile.exists() else []
    assert await eventually(lambda: not any(alive(p) for p in pids))
