"""The local adapter: a step's `run` through `/bin/sh -c` on this machine.

Every attempt is started by one of the adapter's two agents (adapters/agent.py): small
processes of their own sessions, started with the deployment, that outlive the
orchestrator. The orchestrator makes the deployment's folder under its state root and
sends an agent the attempt; the agent creates the attempt's record (its status and
output files, adapters/record.py), `posix_spawn`s
`/bin/sh -c COMMAND` as the leader of a new session (and so of a process group of its
own) in the scenario's folder, stdin on /dev/null, stdout and stderr appended to the
record's `output`, every signal at its default disposition and none blocked (so
`yes | head` ends as in a terminal, whatever the orchestrator ignores), and writes
how it ended when the command's shell ends. The command's environment is the orchestrator's
plus ABREAST_DEPLOYMENT, ABREAST_STEP, ABREAST_TARGET (empty for a server step) and
ABREAST_ATTEMPT.

Nothing of the attempt depends on the orchestrator: killing it kills no command, and
loses neither its output nor its exit status; `resume` adopts it (`adopt`). The
orchestrator follows the output file: it reads what is new when the agent reports the
end (nothing at all when the command wrote nothing) and, while it runs, every 0.15 s,
feeding complete lines to the runtime.

When cancelled (a timeout or a cancelled deployment) the whole process group gets
SIGTERM, then SIGKILL after the grace period, and the attempt ends only when no member
of the group runs any more: a retry never overlaps what it retries.

After a crash, `adopt` reads the record: finished while nobody watched (its exit
status, output, and when it ended), still running (followed as above, its shell found
by pid and start time, its exit status written by the agent that is still its parent),
never started (no status file), or unknowable (the agent died too).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import select
import signal
import socket
import stat
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

from adapters import agent as _agent
from adapters.record import SERVER_KEY, LineSplitter, Started, agent_alive, alive, key, parse_status, read_text
from engine.adapter import MAX_LINE_CHARS, NOT_STARTED, AttemptResult, ExecutionRequest, NotStarted, OutputSink

GRACE_SECONDS = 5.0
POLL = 0.15  # how often the output of running attempts is read
STOP_POLL = 0.05  # how often a stopping group is looked at
LINE_LIMIT = 4 * MAX_LINE_CHARS + 4  # bytes of a line held: enough for the runtime to see it was cut
AGENTS = int(os.environ.get("ABREAST_AGENTS", "2"))
_AGENT_FILE = os.path.abspath(_agent.__file__)
_AGENT_FILE_BYTES = os.fsencode(_AGENT_FILE)
STARTING_WAIT = 2.0  # how long adopt waits for an incomplete `started` when no agent is seen writing it


def state_root_for(store: Path | None) -> Path:
    """Where the attempts of the deployments in `store` keep their records.

    `$ABREAST_STATE` if set; else a folder of this user's in memory (`$XDG_RUNTIME_DIR`,
    else `/dev/shm`: a tmpfs), which outlives the orchestrator but not the machine —
    and a reboot ends every command anyway, which `adopt` then reports as unknowable;
    else `state/` beside the store. One folder per store (two stores may hold the same
    deployment id), named after the store file and a hash of its full path.

    Why memory by default: an attempt's record is two files (and a folder), made and
    removed around every command. On a busy disk (ext4 here) that measured 1.5-3 ms a
    command, more than the command (`true`) itself; in memory, 0.05 ms."""
    base = os.environ.get("ABREAST_STATE")
    name = "default"
    if store is not None:
        full = os.path.realpath(store)
        name = f"{Path(full).name}-{hashlib.sha256(full.encode()).hexdigest()[:12]}"
    if base:
        return Path(base) / name
    memory = _memory_folder()
    if memory is not None:
        return memory / name
    if store is None:
        return Path(tempfile.gettempdir()) / f"abreast-state-{os.getuid()}"
    return Path(store).parent / "state" / Path(store).name


def default_state_root() -> Path:
    """Where attempts keep their records when no store says otherwise."""
    return state_root_for(None)


def _memory_folder() -> Path | None:
    """This user's own folder on a tmpfs, made if need be, or None. A folder that
    exists must be ours, a real folder (not a link), and closed to everyone else."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    candidates = [Path(runtime) / "abreast"] if runtime else []
    candidates.append(Path("/dev/shm") / f"abreast-{os.getuid()}")
    for folder in candidates:
        if not folder.parent.is_dir():
            continue
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        except OSError:
            continue
        try:
            st = os.lstat(folder)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077:
            return folder
    return None


class LocalAdapter:
    name = "local"

    def __init__(self, state_root: str | Path | None = None, grace: float = GRACE_SECONDS, shell: str = "/bin/sh"):
        """`state_root`: the folder of the attempts' records (`abreast run` uses one per
        store, `state_root_for`); created, readable by its owner only, when needed."""
        self.root = os.path.abspath(state_root if state_root is not None else default_state_root())
        self.grace = grace
        self.shell = shell
        self._environment = dict(os.environ)  # read once: os.environ is slow to copy
        self._detached = False
        self._rooted = False
        self._agents: list[_Agent | None] = [None] * AGENTS
        self._following: set[_Follower] = set()  # output files of running attempts
        self._ticking = False

    def prepare(self, deployment: str) -> None:
        """Make the deployment's state folder before its first attempt is recorded as
        started. From then on a missing status file proves the attempt never started,
        and a missing deployment folder that its records were lost (`adopt`). The
        agents start here too, if they have not yet."""
        self._root()
        _mkdirs(f"{self.root}/{_key(deployment)}", self.root)
        self.start()

    def start(self) -> None:
        """Start the agents now (else with the first attempt): a Python process takes a
        few tens of milliseconds to start, which the first attempts would wait for."""
        for i, agent in enumerate(self._agents):
            if agent is None:
                try:
                    self._agents[i] = _Agent(self.shell, self._environment, self.root)
                except OSError:
                    pass  # the first attempt tries again, and says why it cannot

    def _root(self) -> None:
        if not self._rooted:
            os.makedirs(os.path.dirname(self.root), exist_ok=True)
            os.makedirs(self.root, 0o700, exist_ok=True)
            os.chmod(self.root, 0o700)
            self._rooted = True

    # -- running -----------------------------------------------------------------------

    async def run(self, request: ExecutionRequest, output: OutputSink) -> AttemptResult:
        command = request.step.run
        if command is None:
            return AttemptResult("succeeded")  # a step without `run` succeeds at once
        target = request.target.name if request.target is not None else None
        record = self._record(request.deployment, request.step.name, target, request.attempt)
        try:
            self._root()
            agent = self._agent_for_run((request.deployment, request.step.name, target))
        except OSError as e:
            return AttemptResult("failed", None, f"cannot start abreast's agent ({sys.executable}): {e}")
        attempt = agent.submit(record, str(request.workdir), command, request)
        follower = self._follow(record, output)
        try:
            try:
                await attempt.done.wait()
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    if not self._detached:
                        pid = await _leader(record, attempt.done)
                        if pid:
                            await self._stop(pid, attempt.done.wait, attempt.done.is_set)
                        follower.finish()  # what it wrote while it stopped
                raise
            if attempt.lost:
                pid = await _leader(record, attempt.done)
                if pid:
                    await self._stop_group(pid)  # nobody can tell how it ends: it must not run on
            if attempt.size != 0 or follower.fd >= 0:
                follower.finish()
        finally:
            self._unfollow(follower)
        if attempt.error is not None:
            return AttemptResult("failed", attempt.code, attempt.error)
        assert attempt.code is not None
        return _result(attempt.code)

    def _agent_for_run(self, execution: tuple[str, str, str | None]) -> _Agent:
        """The agent that runs (and forgets) every attempt of this execution: one after
        the other, so a retry's record is never made while its target's folder is deleted."""
        i = hash(execution) % AGENTS
        agent = self._agents[i]
        if agent is None or agent.lost is not None:
            agent = self._agents[i] = _Agent(self.shell, self._environment, self.root)
        agent.serve()
        return agent

    def _parent(self, deployment: str, step: str, target: str | None) -> str:
        return "/".join((self.root, _key(deployment), _key(step), SERVER_KEY if target is None else _key(target)))

    def _record(self, deployment: str, step: str, target: str | None, attempt: int) -> str:
        """The attempt's record: this path + `.status` and + `.output`."""
        return f"{self._parent(deployment, step, target)}/{attempt}"

    def _follow(self, record: str, output: OutputSink) -> _Follower:
        """Start reading what is new in the attempt's output while it runs: one task for
        all attempts reads their files every `POLL` seconds (`_tick`); most attempts end
        before that, and cost one read at their end (none if they wrote nothing)."""
        follower = _Follower(f"{record}.output", output)
        self._following.add(follower)
        if not self._ticking:
            self._ticking = True
            trio.lowlevel.spawn_system_task(self._tick)
        return follower

    def _unfollow(self, follower: _Follower) -> None:
        self._following.discard(follower)
        follower.close()

    async def _tick(self) -> None:
        """Read the new output of every running attempt, every `POLL` seconds, while
        there are any."""
        try:
            while self._following:
                await trio.sleep(POLL)
                for follower in list(self._following):
                    try:
                        follower.drain()
                    except OSError:
                        pass  # read again at its end
        finally:
            self._ticking = False

    async def _stop(self, pgid: int, wait_end: Callable[[], Awaitable[object]], ended: Callable[[], bool]) -> None:
        """TERM the process group, KILL it after the grace period; return when its
        leader has ended (`wait_end`/`ended`: for the agent's own commands, when the
        agent has written its exit status) and no member runs any more (or, if even
        KILL does not end one, after another grace)."""
        _killpg(pgid, signal.SIGTERM)
        deadline = trio.current_time() + self.grace
        with trio.move_on_at(deadline):
            await wait_end()
        killed = False
        while True:
            if ended() and not _group_running(pgid):
                return
            if trio.current_time() >= deadline:
                if killed:
                    return  # unkillable (a process in uninterruptible sleep): give up waiting
                _killpg(pgid, signal.SIGKILL)
                killed = True
                deadline = trio.current_time() + self.grace
            await trio.sleep(STOP_POLL)

    async def _stop_group(self, pgid: int, pidfd: int = -1) -> None:
        """Stop a process group that is not the agent's to report on (an adopted
        attempt, an orphan, a command whose agent died): by its leader's pidfd (`pidfd`,
        else one opened here) while the leader runs."""
        opened = pidfd < 0
        if opened:
            try:
                pidfd = os.pidfd_open(pgid)
            except OSError:
                pidfd = -1
        try:
            if pidfd >= 0:
                await self._stop(pgid, functools.partial(trio.lowlevel.wait_readable, pidfd), functools.partial(_readable, pidfd))
            else:
                await self._stop(pgid, trio.lowlevel.checkpoint, lambda: True)
        finally:
            if opened and pidfd >= 0:
                os.close(pidfd)

    # -- after a crash -------------------------------------------------------------------

    async def adopt(
        self, request: ExecutionRequest, output: OutputSink, running: Callable[[], None] | None = None
    ) -> AttemptResult | NotStarted | None:
        """Take over an attempt a dead orchestrator started (see engine/adapter.py)."""
        if request.step.run is None:
            return AttemptResult("succeeded")
        target = request.target.name if request.target is not None else None
        if not os.path.isdir(f"{self.root}/{_key(request.deployment)}"):
            return None  # its records are gone (a state folder in memory, and the host rebooted)
        record = self._record(request.deployment, request.step.name, target, request.attempt)
        text = read_text(f"{record}.status")
        if text is None:
            return NOT_STARTED  # the agent makes the status file before it starts the command: none ran
        started, code, seconds = parse_status(text)
        if started is None:
            started = await self._started(record)
            if started is None:
                return None  # whoever was starting it died at that moment: it may or may not run
        if code is None and alive(started):
            if not agent_alive(started):
                return None  # its agent is gone: nobody will know how it ends (stop_orphans stops it)
            try:
                pidfd = os.pidfd_open(started.pid)
            except ProcessLookupError:
                pidfd = -1
            if pidfd >= 0 and alive(started):  # still it: the pidfd names it
                if running is not None:
                    running()
                follower = self._follow(record, output)
                try:
                    try:
                        await trio.lowlevel.wait_readable(pidfd)
                    except trio.Cancelled:
                        with trio.CancelScope(shield=True):
                            if not self._detached:
                                await self._stop_group(started.pid, pidfd)
                                follower.finish()
                        raise
                    code, seconds = await self._ended(started, record)
                    follower.finish()
                finally:
                    self._unfollow(follower)
                    os.close(pidfd)
                return None if code is None else _result(code)
            if pidfd >= 0:
                os.close(pidfd)
        if code is None:
            code, seconds = await self._ended(started, record)  # it may have just ended
        if code is None:
            return None  # it is gone without an exit status: unknowable
        follower = _Follower(f"{record}.output", output)
        try:
            follower.finish()
        finally:
            follower.close()
        result = _result(code)
        return AttemptResult(result.outcome, result.exit_code, result.error, ended_after=seconds)

    async def _ended(self, started: Started, record: str) -> tuple[int | None, float | None]:
        """How the record's command ended, once it has: its agent writes it just after
        (so wait while the agent lives)."""
        while True:
            alive_before = agent_alive(started)
            _, code, seconds = parse_status(read_text(f"{record}.status") or "")
            if code is not None or not alive_before:
                return code, seconds
            await trio.sleep(STOP_POLL)

    async def _started(self, record: str) -> Started | None:
        """A status file without its first line: the agent that created it is about to
        start the command and write it. Wait while an agent has it open (or, if none
        can be seen, a while): None if it never comes."""
        path = f"{record}.status"
        deadline = trio.current_time() + STARTING_WAIT
        while True:
            started = parse_status(read_text(path) or "")[0]
            if started is not None:
                return started
            if _writer_of(path) is None and trio.current_time() >= deadline:
                return None
            await trio.sleep(STOP_POLL)

    async def stop_orphans(self, deployment: str, attempts: set[tuple[str, str | None, int]]) -> int:
        """Stop what still runs of attempts whose fate is unknowable: the process group
        their record names, if a member of it still runs — TERM, then KILL after the
        grace. A group whose leader's pid now names another process is gone (a pid is
        not reused while a group holds it). Returns how many groups were stopped.
        Commands that replace their environment are found all the same: the record,
        not the environment, says where they are. (An attempt whose agent died between
        creating its status file and writing it cannot be found: its pid was never
        written.)"""
        stopped = 0
        for step, target, attempt in sorted(attempts, key=repr):
            record = self._record(deployment, step, target, attempt)
            if read_text(f"{record}.status") is None:
                continue  # it never started
            started = await self._started(record)
            if started is None:
                continue
            pgid = started.pid
            stat = _proc_stat(pgid)
            if stat is not None and started.starttime and stat[2] != started.starttime:
                continue  # the pid was reused: our group is long gone
            if not _group_running(pgid):
                continue
            await self._stop_group(pgid)
            stopped += 1
        return stopped

    # -- records the log no longer needs -------------------------------------------------

    def forget(self, deployment: str, attempts: Sequence[tuple[str, str | None, int]]) -> None:
        """Delete those attempts' records: by the agent, when one runs (the event loop
        does not wait for the file system, and the agent makes and deletes folders one
        after the other, never at once); else here."""
        by_agent: dict[int, list[bytes]] = {}
        for step, target, attempt in attempts:
            record = os.fsencode(self._record(deployment, step, target, attempt))
            by_agent.setdefault(hash((deployment, step, target)) % AGENTS, []).append(record)
        for i, records in by_agent.items():
            agent = self._agents[i]
            if agent is None or not agent.post(_agent.frame(b"forget", *records)):
                for record in records:
                    _agent.forget(record)

    def forget_deployment(self, deployment: str) -> None:
        folder, root = os.fsencode(f"{self.root}/{_key(deployment)}"), os.fsencode(self.root)
        agent = next((a for a in self._agents if a is not None and a.lost is None), None)
        if agent is None or not agent.post(_agent.frame(b"drop", folder, root)):
            _agent.drop(folder, root)
        self._rooted = False

    def detach(self) -> None:
        self._detached = True

    async def aclose(self) -> None:
        """The deployment has ended: let the agent go. It exits once its commands have
        (none, unless the orchestrator was detached and left them running)."""
        agents, self._agents = self._agents, [None] * AGENTS
        for agent in agents:
            if agent is not None:
                await agent.aclose(wait=not self._detached)


class _Attempt:
    """What the orchestrator knows of an attempt it asked the agent to run."""

    __slots__ = ("code", "size", "error", "lost", "done")

    def __init__(self) -> None:
        self.code: int | None = None
        self.size = -1  # bytes of output, if the agent said
        self.error: str | None = None  # set: it failed (maybe without running)
        self.lost = False  # the agent died before it said how the command ended
        self.done = trio.Event()  # ended, or failed


class _Agent:
    """The orchestrator's end of its agent (adapters/agent.py): one socket, one task
    reading what the agent says, frames written without waiting when the socket takes
    them."""

    def __init__(self, shell: str, environment: dict[str, str], root: str) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            fd = fcntl.fcntl(theirs.fileno(), fcntl.F_DUPFD_CLOEXEC, 3)  # never 0-2, which it is dup'ed onto
            try:
                self.pid = os.posix_spawn(
                    sys.executable,
                    # by its path, without `site` (-S): it needs nothing but the standard
                    # library, and starts in 70 ms instead of 95 here
                    [sys.executable, "-S", "-E", "-P", _AGENT_FILE, shell, root],
                    environment,
                    file_actions=[
                        (os.POSIX_SPAWN_DUP2, fd, 0),
                        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                        (os.POSIX_SPAWN_DUP2, 1, 2),
                    ],
                    setsid=True,  # a session of its own: a terminal's HUP or Ctrl-C does not reach it
                    setsigdef=_agent.ignored_signals(),
                    setsigmask=(),
                )
            finally:
                os.close(fd)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        mine.setblocking(False)
        self.sock = mine
        self.root = root
        self.attempts: dict[bytes, _Attempt] = {}
        self.count = 0
        self.outbox = bytearray()
        self.lost: str | None = None  # why the agent can no longer be reached
        self._token: trio.lowlevel.TrioToken | None = None  # the trio run whose task reads the socket
        self._thread = 0  # and its thread
        self._writing = False

    def serve(self) -> None:
        """Make sure a task of this trio run reads what the agent says."""
        token = trio.lowlevel.current_trio_token()
        if self._token is not token:
            self._token = token
            self._thread = threading.get_ident()
            trio.lowlevel.spawn_system_task(self._read)

    def submit(self, record: str, workdir: str, command: str, request: ExecutionRequest) -> _Attempt:
        attempt = _Attempt()
        if self.lost is not None:
            attempt.error = self.lost
            attempt.done.set()
            return attempt
        self.count += 1
        ident = str(self.count)
        self.attempts[ident.encode()] = attempt
        target = request.target.name if request.target is not None else ""
        fields = ("run", ident, record, workdir, command, request.deployment, request.step.name, target, str(request.attempt))
        body = "\0".join(fields).encode("utf-8", "surrogateescape")  # as os.fsencode, at once
        self._send(_agent.HEADER.pack(len(body)) + body)
        return attempt

    def post(self, data: bytes) -> bool:
        """Send a frame from any thread (the runtime forgets records from its writer
        thread); False if the agent cannot be reached."""
        if self.lost is not None:
            return False
        if threading.get_ident() == self._thread:
            self._send(data)
            return True
        if self._token is None:
            return False
        try:
            self._token.run_sync_soon(self._send, data)
        except trio.RunFinishedError:
            return False
        return True

    def _send(self, data: bytes) -> None:
        if not self.outbox:
            try:
                data = data[self.sock.send(data) :]
            except BlockingIOError:
                pass
            except OSError:
                return  # the agent is gone: its end of the socket says so to the reader
        self.outbox += data
        if self.outbox and not self._writing:
            self._writing = True
            trio.lowlevel.spawn_system_task(self._write)

    async def _write(self) -> None:
        try:
            while self.outbox and self.lost is None:
                await trio.lowlevel.wait_writable(self.sock)
                try:
                    del self.outbox[: self.sock.send(self.outbox)]
                except BlockingIOError:
                    pass
        except (OSError, trio.ClosedResourceError):
            self.outbox.clear()
        finally:
            self._writing = False

    async def _read(self) -> None:
        inbox = bytearray()
        why = f"abreast's agent (pid {self.pid}) ended unexpectedly"
        try:
            while True:
                await trio.lowlevel.wait_readable(self.sock)
                try:
                    chunk = self.sock.recv(1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                inbox += chunk
                for fields in _agent.frames(inbox):
                    self._heard(fields)
        except trio.ClosedResourceError:
            self._lose("the deployment ended")  # aclose
            return
        except trio.Cancelled:
            self._token = None  # this trio run has ended: the next one reads the socket
            raise
        except OSError as e:
            why += f": {e}"
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()
        try:
            os.waitpid(self.pid, os.WNOHANG)  # it has closed its end by dying
        except ChildProcessError:
            pass
        self._lose(why + _agent.last_words(self.root, self.pid))

    def _heard(self, fields: list[bytes]) -> None:
        kind, ident = fields[0], fields[1]
        attempt = self.attempts.pop(ident, None)
        if attempt is None:
            return
        if kind == b"exit":
            attempt.code, attempt.size = int(fields[2]), int(fields[3])
        else:  # failed: nothing ran
            attempt.code = int(fields[2]) if fields[2] else None
            attempt.error = os.fsdecode(fields[3])
        attempt.done.set()

    def _lose(self, why: str) -> None:
        """The agent cannot be reached: nothing more will be heard of what it runs."""
        if self.lost is None:
            self.lost = why
        for attempt in self.attempts.values():
            attempt.error = f"{why}: how the command ended is unknown"
            attempt.lost = True
            attempt.done.set()
        self.attempts.clear()

    async def aclose(self, wait: bool) -> None:
        """Close the socket (the agent exits once its commands have ended) and, with
        `wait`, reap it."""
        if self._token is not None and self._token is trio.lowlevel.current_trio_token():
            trio.lowlevel.notify_closing(self.sock)
        self.sock.close()
        self._lose("the deployment ended")
        if not wait:
            return
        try:
            pidfd = os.pidfd_open(self.pid)
        except OSError:
            pidfd = -1
        if pidfd >= 0:
            with trio.move_on_after(GRACE_SECONDS):
                await trio.lowlevel.wait_readable(pidfd)
            os.close(pidfd)
        try:
            os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pass


class _Follower:
    """Reads what is new in an output file and feeds its complete lines to a sink (its
    line splitter made only once there is something to read: most commands of a big
    deployment write nothing)."""

    __slots__ = ("path", "sink", "fd", "splitter")

    def __init__(self, path: str, sink: OutputSink):
        self.path = path
        self.sink = sink
        self.fd = -1
        self.splitter: LineSplitter | None = None

    def drain(self) -> None:
        if self.fd < 0:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return  # not written yet (or could not be created: the attempt says so)
            self.splitter = LineSplitter(LINE_LIMIT)
        splitter, sink = self.splitter, self.sink
        assert splitter is not None
        while chunk := os.read(self.fd, 1 << 20):
            for line in splitter.feed(chunk):
                sink(line)

    def finish(self) -> None:
        self.drain()
        if self.splitter is not None:
            for line in self.splitter.close():
                self.sink(line)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@functools.lru_cache(maxsize=4096)
def _key(name: str) -> str:
    return key(name)


def _mkdirs(path: str, root: str) -> None:
    """`os.makedirs(path, 0o700)` below an existing `root`, in one system call when only
    the last folder is missing (the usual case: a new target of a known step)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent == root or len(parent) <= len(root):
            raise
        _mkdirs(parent, root)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass


def _writer_of(path: str) -> int | None:
    """An agent of ours that has `path` open (it is about to start the attempt and
    write its `started`), if any."""
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if _AGENT_FILE_BYTES not in argv:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                    return pid
            except OSError:
                pass
    return None


async def _leader(record: str, done: trio.Event) -> int:
    """The pid of the attempt's process group leader, from its status file (the agent
    writes it the moment the command starts; a cancelled attempt may get here first):
    0 if it is done without one (nothing ran, or its agent died before it could say)."""
    while True:
        started = parse_status(read_text(f"{record}.status") or "")[0]
        if started is not None:
            return started.pid
        if done.is_set():
            return 0
        with trio.move_on_after(STOP_POLL):
            await done.wait()


def _readable(fd: int) -> bool:
    """Has the process behind this pidfd ended?"""
    return bool(select.select([fd], [], [], 0)[0])


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _proc_stat(pid: int) -> tuple[str, int, str] | None:
    """(state, process group, start time) of a process, zombies included."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[2]), fields[19].decode()
    except (OSError, IndexError, ValueError):
        return None


def _group_running(pgid: int) -> bool:
    """Does a member of the process group still run? Zombies do not count: on a host
    whose init is slow to reap them (or never does), an orphan's zombie lingers."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # members we may not signal: they run
    for pid in _pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == pgid and stat[0] != "Z":
            return True
    return False


def _result(code: int) -> AttemptResult:
    if code == 0:
        return AttemptResult("succeeded", 0)
    if code < 0:
        return AttemptResult("failed", code, f"killed by signal {signal.Signals(-code).name}")
    error = f"exit status {code}"
    if 128 < code < 128 + signal.NSIG:
        try:
            error += f", as after {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return AttemptResult("failed", code, error)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
