"""The ssh adapter: a step's `run` on a remote host, through the OpenSSH client.

The OpenSSH client is the SSH library: the user's ~/.ssh/config, agent, ProxyJump and
known hosts apply. Per destination (host, user, port, identity file, options) one
master connection (`ssh -M`, ControlPersist) is opened on first use, with its control
socket in a private 0700 folder; `aclose()` closes them all when the deployment ends.
`BatchMode=yes`: never a prompt. Host keys are checked as the user's OpenSSH
configuration says. Every execution is a session multiplexed over the master, opened
through its control socket with OpenSSH's own multiplexing protocol (adapters/
sshmux.py: what `ssh -S SOCKET host command` does, without an ssh process per
execution). A connection carries at most `max_sessions` sessions at once (sshd's
MaxSessions, 10 by default); more open another connection to that host.

Each attempt keeps its record on the remote host (adapters/record.py): under the state
root (`~/.abreast/state`, 0700) the attempt's folder holds `started`, `output` and
`exit`, written by the same POSIX sh WRAPPER the local adapter uses, started as the
leader of a session of its own (`setsid`). A session sends a small script
(adapters/sshremote.py) on its stdin to the remote `/bin/sh` (so no login shell ever
parses a scenario value, and every value in the script is quoted with shlex.quote).
The script claims the attempt's folder, runs the wrapper in the foreground with
ABREAST_* in its environment, and streams `output` back as it grows (GNU `tail -f
--pid`); when the wrapper ends it truncates a `.follow` file tail also watches, so
tail notices at once, and says `abreast-exit STATUS` on stderr. Nothing the command
writes goes to stderr (the wrapper sends it all to `output`), so stderr carries only
the machinery's lines (`abreast-...`) and the remote tools' own complaints.

Because the wrapper runs on without the session (no terminal: nothing sends it a
hangup), a dropped connection or a dead orchestrator kills no remote command; the
record says what became of it (`adopt`). Cancelling (a timeout, a cancelled
deployment) signals the remote process group through the master connection — TERM,
then KILL after the grace period — using the pid in the remote `started` record.

What the remote host needs: a POSIX /bin/sh, util-linux `setsid`, GNU coreutils
(`tail --pid`, `stat`, `mkdir`, `sleep` with fractions) and /proc (for the record's
process start time and boot id); checked once per connection.
"""

from __future__ import annotations

import fcntl
import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import trio

from adapters.record import LineSplitter, attempt_path
from adapters.sshmux import Control, MuxError, MuxGone, MuxRefused
from adapters.sshremote import Report, cause, inspect_script, probe_script, remote_path, run_script, stop_script
from engine.adapter import AttemptResult, ExecutionRequest, OutputSink
from engine.plan import Plan, Target

CONNECT_TIMEOUT = 10.0
GRACE_SECONDS = 5.0
STATE_ROOT = "~/.abreast/state"
MAX_SESSIONS = 10  # sshd's default MaxSessions: sessions one connection may carry at once
CONTROL_PERSIST = 300  # seconds an idle master outlives a crashed orchestrator
MAX_SCRIPT = 1 << 20  # bytes of script (the command included) one session can take

# Options abreast sets itself: a scenario that sets them would break the multiplexing,
# ask for a prompt, or run something else than the step.
MANAGED_OPTIONS = frozenset(
    name.lower()
    for name in (
        "BatchMode", "ControlMaster", "ControlPath", "ControlPersist", "ForkAfterAuthentication", "RemoteCommand",
        "RequestTTY", "SessionType", "StdinNull", "EscapeChar",
    )
)


class Destination(msgspec.Struct, frozen=True):
    """Where a target's sessions go: one master connection per distinct value."""

    host: str
    user: str | None
    port: int | None
    identity_file: str | None
    options: tuple[tuple[str, str], ...]

    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{self.host}{port}"


class SshError(Exception):
    """The host could not be reached or the remote side could not run the attempt."""


class SessionRefused(SshError):
    """The connection carries as many sessions as the server allows (MaxSessions)."""


class MasterGone(SshError):
    """The master connection ended (killed, or its connection dropped)."""


class SshAdapter:
    name = "ssh"

    def __init__(
        self,
        connect_timeout: float = CONNECT_TIMEOUT,
        grace: float = GRACE_SECONDS,
        state_root: str = STATE_ROOT,
        max_sessions: int = MAX_SESSIONS,
        ssh: str = "ssh",
        plan: Plan | None = None,
    ):
        """`plan`: the deployment's, if known — the first attempt of a step on a host
        then makes the record folders of that step's other targets on the host too (one
        `mkdir` for them all: a process less for each of the others)."""
        self.connect_timeout = connect_timeout
        self.grace = grace
        self.state_root = state_root
        self.max_sessions = max_sessions
        self.ssh = ssh
        self._hosts: dict[Destination, _Host] = {}
        self._folder: str | None = None  # the private folder of the control sockets
        self._count = 0
        self._closed = False
        self._plan = plan
        self._prepared: set[tuple[str, str, Destination]] = set()  # (deployment, step, host) done

    # -- checking a target before anything runs ---------------------------------------

    def check(self, target: Target, folder: Path) -> list[tuple[str, str]]:
        """Problems with a target's ssh fields, as (field, message), before anything runs."""
        problems = []
        host = target.host if target.host is not None else target.name
        if host.startswith("-") or _unprintable(host) or any(c.isspace() for c in host):
            problems.append(("host", f"not a host name: {host!r}"))
        if target.user is not None and (_unprintable(target.user) or target.user.startswith("-")):
            problems.append(("user", f"not a user name: {target.user!r}"))
        if target.workdir is not None and target.workdir.startswith("~") and not (
            target.workdir == "~" or target.workdir.startswith("~/")
        ):
            problems.append(("workdir", "~user is not understood: write the folder's path"))
        if target.identity_file is not None:
            path = _local_path(target.identity_file, folder)
            if not os.path.isfile(path):
                problems.append(("identity_file", f"no such file: {path}"))
        for key in target.ssh_options:
            if key.lower() in MANAGED_OPTIONS:
                problems.append((f"ssh_options.{key}", "abreast sets this option itself (one master connection per host, no prompts)"))
        return problems

    # -- running -----------------------------------------------------------------------

    async def run(self, request: ExecutionRequest, output: OutputSink) -> AttemptResult:
        command = request.step.run
        if command is None:
            return AttemptResult("succeeded")  # a step without `run` succeeds at once
        target = request.target
        if target is None:
            return AttemptResult("failed", None, "the ssh adapter needs a target (a server step runs on the orchestrator)")
        dest = self.destination(target, request.workdir)
        where = f"ssh {target.name} ({dest.label()})"
        values = (command, request.deployment, request.step.name, target.name, target.workdir or "")
        if any("\0" in v for v in values):
            return AttemptResult("failed", None, f"{where}: a NUL character cannot reach a shell")
        record = self._record(request)
        script = run_script(record, request, remote_path(target.workdir) if target.workdir else "''", self._siblings(request, dest))
        stream = _Stream(output)
        try:
            session = await self._start(dest, script, stream)
        except SshError as e:
            return AttemptResult("failed", None, f"{where}: {e}")
        except BaseException:
            await self._stop_unseen(dest, record)
            raise
        try:
            code = await session.finish()
            return await self._result(dest, where, record, session, code, stream)
        except BaseException:  # cancelled (perhaps inside an exception group), or worse
            with trio.CancelScope(shield=True):
                await self._stop_and_drain(dest, record, session)
            raise

    async def _result(
        self, dest: Destination, where: str, record: str, session: _Session, code: int, stream: _Stream
    ) -> AttemptResult:
        """How the attempt ended, from the session's stderr (`abreast-exit`), or from the
        remote record when the session broke off."""
        report = Report(session.errors)
        if report.exit is not None:
            stream.close()
            return _exit_result(report.exit)
        if report.error is not None:
            stream.close()
            return AttemptResult("failed", None, f"{where}: {report.error}{report.detail_suffix()}")
        # No word from the remote script: ssh itself failed (exit 255), the connection
        # dropped mid-command, or the login shell never ran the script. The record knows
        # whether the command ran and how it ended.
        why = cause(report.other, code)
        try:
            state = await self._inspect(dest, record, stream.received, stream)
        except SshError as e:
            stream.close()
            return AttemptResult("failed", None, f"{where}: {why}; the host cannot be reached again to check on the command ({e}): it may still run")
        stream.close()
        if state.exit is not None:
            return _exit_result(state.exit)
        if state.state == "running":
            try:
                await self._stop(dest, record)
            except SshError as e:
                return AttemptResult("failed", None, f"{where}: mid-command, {why}; stopping the remote command failed ({e}): it may still run")
            return AttemptResult("failed", None, f"{where}: mid-command, {why}; the remote command was stopped")
        return AttemptResult("failed", None, f"{where}: {why}")

    async def adopt(self, request: ExecutionRequest, output: OutputSink) -> AttemptResult | None:
        """After a crash: the attempt's remote record decides (see engine/adapter.py).
        None when it never started there or its fate cannot be known; its result when
        it finished (with `ended_after`); waited for, output and all, while it runs.
        A host that cannot be reached is an SshError (the fate is unknown, and running
        the attempt again there could not work either)."""
        target = request.target
        if target is None or request.step.run is None:
            return None
        dest = self.destination(target, request.workdir)
        where = f"ssh {target.name} ({dest.label()})"
        record = self._record(request)
        stream = _Stream(output)
        for _ in range(3):  # a connection lost while following: look again, from where we were
            try:
                session = await self._start(dest, inspect_script(record, follow=True, offset=stream.received), stream)
            except SshError as e:
                raise SshError(f"{where}: {e}") from None
            except BaseException:
                await self._stop_unseen(dest, record)
                raise
            try:
                code = await session.finish()
            except BaseException:  # cancelled (perhaps inside an exception group), or worse
                with trio.CancelScope(shield=True):
                    await self._stop_and_drain(dest, record, session)
                raise
            report = Report(session.errors)
            if report.state in ("none", "lost"):
                return None
            if report.exit is not None:
                stream.close()
                result = _exit_result(report.exit)
                if report.state == "finished":
                    result = msgspec.structs.replace(result, ended_after=report.ended_after)
                return result
            if report.error is not None:
                raise SshError(f"{where}: {report.error}{report.detail_suffix()}")
        raise SshError(f"{where}: {cause(report.other, code)}, again and again, while following the attempt")

    # -- sessions --------------------------------------------------------------------------

    async def _start(self, dest: Destination, script: str, stream: _Stream) -> _Session:
        """Open a session on the destination's master connection (opening that first
        if needed) that runs `script` with the remote /bin/sh."""
        data = ("main() {\n" + script + "\n}\nmain\n").encode()
        host = self._host(dest)
        gone = 0
        while True:
            connection = await host.acquire(self)
            try:
                return await _Session.open(connection, data, stream)
            except MasterGone:
                connection.release()
                gone += 1
                if gone > 1:
                    raise
                connection.drop()  # a stale socket: open another master
            except SessionRefused:
                connection.release()
                if connection.sessions == 0:
                    raise
                # The server allows no more sessions on one connection than it carries
                # now (sshd's MaxSessions below ours): remember, and use another.
                host.limit = connection.sessions
            except BaseException:
                connection.release()
                raise

    async def _inspect(self, dest: Destination, record: str, offset: int, stream: _Stream) -> Report:
        """The record's state without following: the rest of the output after `offset`
        bytes when it finished."""
        session = await self._start(dest, inspect_script(record, follow=False, offset=offset), stream)
        code = None
        with trio.move_on_after(self.connect_timeout + self.grace):
            code = await session.finish()
        if code is None:
            await session.kill()
            raise SshError(f"no answer from the host within {self.connect_timeout + self.grace:g}s")
        report = Report(session.errors)
        if report.state is None:
            raise SshError(cause(report.other, code))
        return report

    async def _stop(self, dest: Destination, record: str) -> None:
        """TERM the attempt's remote process group, KILL it after the grace period (or
        make sure the attempt never starts, if it has not yet)."""
        session = await self._start(dest, stop_script(record, self.grace), _Stream(None))
        code = None
        limit = self.connect_timeout + self.grace + 35  # (the stop waits up to 30 s for a start)
        with trio.move_on_after(limit):
            code = await session.finish()
        if code is None:
            await session.kill()
            raise SshError(f"no answer from the host within {limit:g}s")
        report = Report(session.errors)
        if not report.stopped:
            raise SshError(report.error or cause(report.other, code))

    async def _stop_unseen(self, dest: Destination, record: str) -> None:
        """Cancelled while its session was being opened: the session may have been asked
        for and its script may run, so stop the attempt (or claim its record first, so
        it never starts) — if there is a connection to do it with."""
        host = self._hosts.get(dest)
        if host is None or not any(c.usable() for c in host.connections):
            return  # cancelled while connecting: nothing reached the host
        with trio.CancelScope(shield=True):
            try:
                await self._stop(dest, record)
            except SshError:
                pass  # the host is gone: nothing more can be done from here

    async def _stop_and_drain(self, dest: Destination, record: str, session: _Session) -> None:
        """On cancellation: stop the remote command, then let the attempt's own session
        deliver the last of its output and end (it ends when the wrapper has)."""
        try:
            await self._stop(dest, record)
        except SshError:
            pass  # the host is gone: nothing more can be done from here
        with trio.move_on_after(self.grace + 2):
            await session.finish()
        await session.kill()

    # -- connections -----------------------------------------------------------------------

    def destination(self, target: Target, folder: Path) -> Destination:
        identity = _local_path(target.identity_file, folder) if target.identity_file is not None else None
        return Destination(
            host=target.host if target.host is not None else target.name,
            user=target.user,
            port=target.port,
            identity_file=identity,
            options=tuple(target.ssh_options.items()),
        )

    def _host(self, dest: Destination) -> _Host:
        if self._closed:
            raise SshError("the deployment's ssh connections are closed")
        host = self._hosts.get(dest)
        if host is None:
            host = self._hosts[dest] = _Host(dest)
        return host

    def _new_socket(self) -> str:
        if self._folder is None:
            # Short on purpose: a socket path must fit in ~100 bytes, and ssh adds a
            # random suffix of its own while it binds.
            base = "/tmp" if os.access("/tmp", os.W_OK) else tempfile.gettempdir()
            self._folder = tempfile.mkdtemp(prefix="abreast-ssh-", dir=base)  # mode 0700
        self._count += 1
        return f"{self._folder}/{self._count}"

    def _common_argv(self, dest: Destination, socket: str) -> list[str]:
        argv = [self.ssh, "-o", f"ControlPath={socket}", "-o", "BatchMode=yes"]
        if dest.user is not None:
            argv += ["-l", dest.user]
        if dest.port is not None:
            argv += ["-p", str(dest.port)]
        if dest.identity_file is not None:
            argv += ["-i", dest.identity_file]
        # ssh keeps the first value it sees for an option: the scenario's come first,
        # abreast's defaults after them.
        for key, value in dest.options:
            argv += ["-o", f"{key}={value}"]
        argv += [
            "-o", f"ConnectTimeout={max(1, round(self.connect_timeout))}",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR",
        ]
        return argv

    async def _open(self, dest: Destination) -> _Connection:
        """Open a master connection, check the remote side once, make the state root."""
        socket = self._new_socket()
        log = socket + ".log"
        argv = self._common_argv(dest, socket)
        master = [*argv, "-E", log, "-o", "ControlMaster=yes", "-o", f"ControlPersist={CONTROL_PERSIST}", "-f", "-N", "--", dest.host]
        code: int | None = None
        with trio.move_on_after(self.connect_timeout * 1.5 + 1) as limit:
            try:
                proc = await trio.lowlevel.open_process(master, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            except OSError as e:
                raise SshError(f"cannot start {self.ssh}: {e.strerror or e}") from None
            try:
                errors = await _read_all(proc.stderr)
                code = await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    with trio.CancelScope(shield=True):
                        await proc.wait()
        if limit.cancelled_caught:
            raise SshError(f"timed out connecting (after {self.connect_timeout * 1.5 + 1:g}s)")
        text = _read_text(log) + errors.decode("utf-8", "replace")
        if code != 0 or not os.path.exists(socket):
            raise SshError(cause(text.splitlines(), code))
        connection = _Connection(dest, socket, argv)
        try:
            connection.agent, connection.environment = await self._session_settings(argv, dest)
            session = await _Session.open(connection, probe_script(self.state_root).encode(), _Stream(None), counted=False)
            code = None
            with trio.move_on_after(self.connect_timeout + 5):
                code = await session.finish()
            await session.kill()
            report = Report(session.errors)
            if not report.ready:
                raise SshError(report.error + report.detail_suffix() if report.error else cause(report.other, code))
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._exit_master(connection)
            raise
        return connection

    async def _session_settings(self, argv: list[str], dest: Destination) -> tuple[bool, tuple[bytes, ...]]:
        """What the user's OpenSSH configuration asks of each session, as `ssh -G`
        resolves it for this destination: agent forwarding, and the variables to pass
        (SetEnv, and SendEnv's patterns over this environment)."""
        p = await trio.run_process([*argv, "-G", "--", dest.host], stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False)
        agent = False
        environment: list[bytes] = []
        patterns: list[str] = []
        for line in p.stdout.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition(" ")
            if key == "forwardagent":
                agent = value.strip() != "no"
            elif key == "setenv":
                environment.append(value.encode())
            elif key == "sendenv":
                patterns.append(value.strip())
        for name, value in os.environ.items():
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns) and not name.startswith("ABREAST_"):
                environment.append(f"{name}={value}".encode())
        return agent, tuple(environment)

    async def _exit_master(self, connection: _Connection) -> None:
        with trio.move_on_after(5):
            try:
                control = await Control.connect(connection.socket)
                try:
                    await control.terminate()
                finally:
                    control.close()
            except MuxError:
                pass  # already gone
        for path in (connection.socket, connection.socket + ".log"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    async def aclose(self) -> None:
        """Close every master connection (the deployment has ended), and their folder."""
        self._closed = True
        connections = [c for host in self._hosts.values() for c in host.connections]
        self._hosts.clear()
        with trio.CancelScope(shield=True):  # also when the deployment was cancelled
            async with trio.open_nursery() as nursery:
                for connection in connections:
                    nursery.start_soon(self._exit_master, connection)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def _record(self, request: ExecutionRequest, target: str | None = None, attempt: int | None = None) -> str:
        """The attempt's remote folder (or another target's, or attempt's), as sh words."""
        if target is None:
            target = request.target.name if request.target is not None else None
        path = attempt_path(request.deployment, request.step.name, target, request.attempt if attempt is None else attempt)
        return remote_path(self.state_root) + "/" + shlex.quote(path)

    def _siblings(self, request: ExecutionRequest, dest: Destination) -> list[str]:
        """For the first attempt of a step on a destination: the first attempts' record
        folders of the step's other targets there (at most 100), to make in one go."""
        key = (request.deployment, request.step.name, dest)
        if self._plan is None or request.attempt != 1 or key in self._prepared:
            return []
        self._prepared.add(key)
        roles = set(request.step.roles)
        assert request.target is not None
        return [
            self._record(request, t.name, 1)
            for t in self._plan.targets
            if t.name != request.target.name and t.adapter == "ssh" and roles & set(t.roles)
            and self.destination(t, request.workdir) == dest
        ][:100]


# -- connections and sessions ----------------------------------------------------------------


class _Connection:
    """One master connection: its control socket and how many sessions it carries."""

    def __init__(self, dest: Destination, socket: str, argv: list[str]):
        self.dest = dest
        self.socket = socket
        self.argv = argv
        self.sessions = 0
        self.host: _Host | None = None
        self.agent = False  # forward the agent, as the user's configuration says
        self.environment: tuple[bytes, ...] = ()  # SetEnv/SendEnv variables for each session

    def usable(self) -> bool:
        return os.path.exists(self.socket)  # the master removes it when it ends

    def drop(self) -> None:
        """Forget a master that no longer answers (it was killed: its socket stayed)."""
        try:
            os.unlink(self.socket)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        self.sessions -= 1


class _Host:
    """The master connections to one destination, opened on first use (one at a time:
    attempts that wait for an opening share its outcome, so a dead host costs one
    connect timeout, not one per attempt)."""

    def __init__(self, dest: Destination):
        self.dest = dest
        self.connections: list[_Connection] = []
        self.lock = trio.Lock()
        self.opened = 0  # openings tried so far
        self.failure: tuple[int, str] | None = None  # (opening number, why it failed)
        self.limit: int | None = None  # sessions per connection, when the server allows fewer

    def _free(self, limit: int) -> _Connection | None:
        if self.limit is not None:
            limit = min(limit, self.limit)
        self.connections = [c for c in self.connections if c.usable()]
        for c in self.connections:
            if c.sessions < limit:
                c.sessions += 1
                return c
        return None

    async def acquire(self, adapter: SshAdapter) -> _Connection:
        connection = self._free(adapter.max_sessions)
        if connection is not None:
            return connection
        seen = self.opened
        async with self.lock:
            connection = self._free(adapter.max_sessions)
            if connection is not None:
                return connection
            if self.failure is not None and self.failure[0] > seen:
                raise SshError(self.failure[1])  # the opening we waited for failed
            self.opened += 1
            try:
                connection = await adapter._open(self.dest)
            except SshError as e:
                self.failure = (self.opened, str(e))
                raise
            self.failure = None
            connection.host = self
            connection.sessions = 1
            self.connections.append(connection)
            return connection


class _Stream:
    """The command's output as it arrives: bytes counted, split into lines for the sink."""

    def __init__(self, output: OutputSink | None):
        self.output = output
        self.splitter = LineSplitter()
        self.received = 0

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.output is not None:
            for line in self.splitter.feed(chunk):
                self.output(line)

    def close(self) -> None:
        if self.output is not None:
            for line in self.splitter.close():
                self.output(line)


class _Session:
    """One session on a master connection, opened over its control socket
    (adapters/sshmux.py): the script goes in on stdin, stdout is the command's output,
    stderr the machinery's lines."""

    def __init__(self, control: Control, out: trio.lowlevel.FdStream, err: trio.lowlevel.FdStream, stream: _Stream,
                 connection: _Connection | None):
        self.control = control
        self.out = out
        self.err = err
        self.stream = stream
        self.connection = connection
        self.errors = bytearray()
        self.code: int | None = None

    @classmethod
    async def open(cls, connection: _Connection, data: bytes, stream: _Stream, counted: bool = True) -> _Session:
        # The whole script waits in the pipe before the session opens: nothing to write
        # later, and a session cut short never runs half a script (it is one function).
        if len(data) > MAX_SCRIPT:
            raise SshError(f"the command is too long ({len(data)} bytes; at most {MAX_SCRIPT})")
        passed: list[int] = []  # the session's ends: the master keeps copies
        kept: list[int] = []
        try:
            stdin, script = os.pipe()
            passed.append(stdin)
            if len(data) > 65536:
                fcntl.fcntl(script, fcntl.F_SETPIPE_SZ, len(data))
            try:
                os.write(script, data)
            finally:
                os.close(script)
            out_r, out_w = os.pipe()
            kept.append(out_r)
            passed.append(out_w)
            err_r, err_w = os.pipe()
            kept.append(err_r)
            passed.append(err_w)
            control = await Control.connect(connection.socket)
            try:
                await control.new_session(b"exec /bin/sh", stdin, out_w, err_w, connection.agent, connection.environment)
            except BaseException:
                control.close()
                raise
        except (OSError, MuxError) as e:
            for fd in kept:
                os.close(fd)
            kind = SessionRefused if isinstance(e, MuxRefused) else MasterGone if isinstance(e, MuxGone) else SshError
            raise kind(str(e)) from None
        except BaseException:
            for fd in kept:
                os.close(fd)
            raise
        finally:
            for fd in passed:
                os.close(fd)
        return cls(control, trio.lowlevel.FdStream(out_r), trio.lowlevel.FdStream(err_r), stream, connection if counted else None)

    async def finish(self) -> int:
        """Read stdout and stderr to their end and wait for the exit status (255: the
        connection went away without one); safe to call again after a cancellation
        (nothing read is lost)."""
        if self.code is not None:
            return self.code
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, self.err, self.errors.extend)
            nursery.start_soon(self.control.exit_status)
            await _pump(self.out, self.stream.feed)
        status = self.control.status
        self.code = status if status is not None else 255
        await self.kill()
        return self.code

    async def kill(self) -> None:
        """End the session (if it still runs, the master closes its channel)."""
        self.control.close()
        for stream in (self.out, self.err):
            await trio.aclose_forcefully(stream)
        if self.connection is not None:
            self.connection.release()
            self.connection = None


async def _pump(stream: trio.abc.ReceiveStream, sink: Callable[[bytes], None]) -> None:
    while chunk := await stream.receive_some(65536):
        sink(chunk)


async def _read_all(stream: trio.abc.ReceiveStream | None) -> bytes:
    out = bytearray()
    if stream is not None:
        await _pump(stream, out.extend)
    return bytes(out)


def _exit_result(code: int) -> AttemptResult:
    if code == 0:
        return AttemptResult("succeeded", 0)
    return AttemptResult("failed", code, f"exit status {code}")


def _local_path(path: str, folder: Path) -> str:
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else str(Path(folder, expanded))


def _unprintable(text: str) -> bool:
    return re.search(r"[\x00-\x1f\x7f]", text) is not None


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


__all__ = ["SshAdapter", "Destination", "SshError"]
