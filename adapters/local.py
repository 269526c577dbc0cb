"""The local adapter: a step's `run` through `/bin/sh -c` on this machine.

Every attempt runs under the record wrapper (adapters/record.py): the orchestrator
creates the attempt's folder under its state root, then `posix_spawn`s
`/bin/sh -c WRAPPER /bin/sh FOLDER WORKDIR COMMAND` as the leader of a new
session (and so of a process group of its own), stdin, stdout and stderr on
/dev/null, every signal at its default disposition and none blocked (so `yes | head`
ends as in a terminal, whatever the orchestrator ignores). The wrapper writes
`started`, runs the command with `/bin/sh -c` in the scenario's folder with its output
appended to the record's `output` file, and writes `exit` when it ends. The command's
environment gets ABREAST_DEPLOYMENT, ABREAST_STEP, ABREAST_TARGET (empty for a server
step) and ABREAST_ATTEMPT.

Nothing of the attempt depends on the orchestrator: no pipe, no parent death signal.
Killing the orchestrator kills no command, and loses neither its output nor its exit
status; `resume` adopts it (`adopt`). The orchestrator follows the output file: it
waits for the wrapper on a pidfd and reads what is new when it exits and, while it
runs, every 0.15 s, feeding complete lines to the runtime.

When cancelled (a timeout or a cancelled deployment) the whole process group gets
SIGTERM, then SIGKILL after the grace period, and the attempt ends only when no member
of the group runs any more: a retry never overlaps what it retries.

After a crash, `adopt` reads the record: finished while nobody watched (its exit
status, output, and when it ended), still running (followed as above, its wrapper
found by pid and start time), never started (no folder, or a folder without `started`
and no wrapper alive: the command had not run), or unknowable.
"""

from __future__ import annotations

import functools
import hashlib
import os
import queue
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from adapters.record import (
    RECORD_UNWRITABLE,
    SERVER_KEY,
    WRAPPER,
    LineSplitter,
    Started,
    alive,
    ended_after,
    format_started,
    key,
    parse_exit,
    parse_started,
    read_text,
)
from engine.adapter import MAX_LINE_CHARS, NOT_STARTED, AttemptResult, ExecutionRequest, NotStarted, OutputSink
from engine.lease import boot_id, proc_starttime

GRACE_SECONDS = 5.0
POLL = 0.15  # how often the output of running attempts is read
STOP_POLL = 0.05  # how often a stopping group is looked at
LINE_LIMIT = 4 * MAX_LINE_CHARS + 4  # bytes of a line held: enough for the runtime to see it was cut
ARGV0 = "/bin/sh"  # the wrapper's $0, and so the command's, as under `/bin/sh -c`
_WRAPPER_BYTES = WRAPPER.encode()

_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of /proc/PID/stat's start time


def _ignored_signals() -> frozenset[int]:
    """The signals a command would inherit as ignored: SIGPIPE and SIGXFSZ (Python
    ignores both) and whatever this process was started ignoring (nohup's SIGHUP). A
    signal with a handler needs nothing: exec resets it. Fewer is cheaper: the spawn
    waits while the child resets each one."""
    out = {signal.SIGPIPE, signal.SIGXFSZ}
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                out.add(sig)
        except (ValueError, OSError):
            pass
    return frozenset(out)
_STD_FILES = [
    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    (os.POSIX_SPAWN_DUP2, 1, 2),
]


def state_root_for(store: Path | None) -> Path:
    """Where the attempts of the deployments in `store` keep their records.

    `$ABREAST_STATE` if set; else a folder of this user's in memory (`$XDG_RUNTIME_DIR`,
    else `/dev/shm`: a tmpfs), which outlives the orchestrator but not the machine —
    and a reboot ends every command anyway, which `adopt` then reports as unknowable;
    else `state/` beside the store. One folder per store (two stores may hold the same
    deployment id), named after the store file and a hash of its full path.

    Why memory by default: an attempt's record is a folder and three files, made and
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
        """`state_root`: the folder of the attempts' records (`abreast run` uses
        `state/` beside its store); created, readable by its owner only, when needed."""
        self.root = os.path.abspath(state_root if state_root is not None else default_state_root())
        self.grace = grace
        self.shell = shell
        self._environment = dict(os.environ)  # read once: os.environ is slow to copy
        self._parents: dict[tuple[str, str, str | None], str] = {}  # made folders, by execution
        self._detached = False
        self._boot = boot_id()
        self._rooted = False
        self._default_signals = _ignored_signals()
        self._following: set[_Follower] = set()  # output files of running attempts
        self._ticking = False
        self._garbage: queue.SimpleQueue | None = None  # records to delete, by a thread

    def prepare(self, deployment: str) -> None:
        """Make the deployment's state folder before its first attempt is recorded as
        started. From then on a missing attempt folder proves the attempt never started,
        and a missing deployment folder that its records were lost (`adopt`)."""
        self._root()
        _mkdirs(f"{self.root}/{_key(deployment)}", self.root)

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
        try:
            folder = self._prepare(request)
        except OSError as e:
            return AttemptResult("failed", None, f"cannot create the attempt record under {self.root}: {e}")
        argv = [self.shell, "-c", WRAPPER, ARGV0, folder, str(request.workdir), command]
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        try:
            pid = os.posix_spawn(
                self.shell,
                argv,
                self._environment | request.environment,
                file_actions=_STD_FILES,
                setsid=True,
                setsigdef=self._default_signals,
                setsigmask=(),
            )
        except OSError as e:
            return AttemptResult("failed", None, f"cannot start {self.shell}: {e}")
        self._note_started(folder, pid, before)
        pidfd = os.pidfd_open(pid)
        code = await self._follow(pid, pidfd, folder, output, child=True)
        assert code is not None  # our own child: its status is known
        if code == RECORD_UNWRITABLE and not os.path.isfile(f"{folder}/started"):
            return AttemptResult("failed", code, f"cannot write the attempt record in {folder}: nothing ran")
        return _result(code)

    def _note_started(self, folder: str, pid: int, before: int) -> None:
        """Write `started` for the wrapper just spawned, unless it was quicker: the same
        line it would write (see adapters/record.py), which spares it reading /proc a
        byte at a time. The race is won more often without reading /proc here either:
        a process's start time is the boot-clock tick it was forked in, and when the
        clock was in the same tick before and after the spawn, that is the one."""
        tick = 1_000_000_000 // _TICKS
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME) // tick
        starttime = str(now) if now == before // tick else proc_starttime(pid)
        if starttime is None:
            return  # it has ended already, and wrote its own
        try:
            fd = os.open(f"{folder}/started", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError:
            return  # written by the wrapper (or unwritable: the wrapper says so)
        try:
            os.write(fd, format_started(pid, starttime, self._boot).encode())
        finally:
            os.close(fd)

    def _prepare(self, request: ExecutionRequest) -> str:
        """Create the attempt's folder (and its parents, once per execution). A folder
        already there is a stale leftover (the log is the truth: this attempt was just
        recorded as started by us, the lease holder): it is emptied."""
        target = request.target.name if request.target is not None else None
        parent = self._parents.get((request.deployment, request.step.name, target))
        if parent is None:
            parent = self._parent(request.deployment, request.step.name, target)
            self._root()
            _mkdirs(parent, self.root)
            self._parents[(request.deployment, request.step.name, target)] = parent
        folder = f"{parent}/{request.attempt}"
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            shutil.rmtree(folder)
            os.mkdir(folder, 0o700)
        return folder

    def _parent(self, deployment: str, step: str, target: str | None) -> str:
        return "/".join((self.root, _key(deployment), _key(step), SERVER_KEY if target is None else _key(target)))

    def _folder(self, deployment: str, step: str, target: str | None, attempt: int) -> str:
        return f"{self._parent(deployment, step, target)}/{attempt}"

    async def _follow(self, pid: int, pidfd: int, folder: str, output: OutputSink, child: bool) -> int | None:
        """Follow a running wrapper to its end: its output into `output`, its exit
        status back (None: it ended without one, killed before it could write it).
        On cancellation stop its process group (unless detached), then re-raise.

        While it runs, one task for all attempts reads what is new in their output
        files every `POLL` seconds (`_tick`); most attempts end before that, and cost
        one wait on their pidfd and one read."""
        follower = _Follower(f"{folder}/output", output)
        self._following.add(follower)
        if not self._ticking:
            self._ticking = True
            trio.lowlevel.spawn_system_task(self._tick)
        try:
            try:
                await trio.lowlevel.wait_readable(pidfd)
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    if not self._detached:
                        await self._stop(pid, pidfd, child)
                        follower.finish()  # what it wrote while it stopped
                raise
            follower.finish()
        finally:
            self._following.discard(follower)
            os.close(pidfd)
            follower.close()
        if child:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        return parse_exit(read_text(f"{folder}/exit") or "")

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

    async def _stop(self, pgid: int, pidfd: int, child: bool) -> None:
        """TERM the process group, KILL it after the grace period; return when no member
        runs any more (or, if even KILL does not end one, after another grace). The
        wrapper, if it is our child, is reaped."""
        _killpg(pgid, signal.SIGTERM)
        deadline = trio.current_time() + self.grace
        with trio.move_on_at(deadline):
            await trio.lowlevel.wait_readable(pidfd)  # the wrapper ends when its command does
        reaped = not child
        killed = False
        while True:
            if not reaped:
                reaped = os.waitpid(pgid, os.WNOHANG)[0] != 0
            if reaped and not _group_running(pgid):
                return
            if trio.current_time() >= deadline:
                if killed:
                    return  # unkillable (a process in uninterruptible sleep): give up waiting
                _killpg(pgid, signal.SIGKILL)
                killed = True
                deadline = trio.current_time() + self.grace
            await trio.sleep(STOP_POLL)

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
        folder = self._folder(request.deployment, request.step.name, target, request.attempt)
        if not os.path.isdir(folder):
            return NOT_STARTED  # the orchestrator died before it made the record: nothing ran
        started = await self._started(folder)
        if started is None:
            return NOT_STARTED  # no wrapper wrote `started`, and the command runs only after that
        code = parse_exit(read_text(f"{folder}/exit") or "")
        if code is None and alive(started):
            try:
                pidfd = os.pidfd_open(started.pid)
            except ProcessLookupError:
                pidfd = -1
            if pidfd >= 0 and alive(started):  # still the wrapper: the pidfd names it
                if running is not None:
                    running()
                code = await self._follow(started.pid, pidfd, folder, output, child=False)
                return None if code is None else _result(code)
            if pidfd >= 0:
                os.close(pidfd)
        if code is None:
            code = parse_exit(read_text(f"{folder}/exit") or "")  # it may have just ended
        if code is None:
            return None  # the wrapper is gone without an exit status: unknowable
        follower = _Follower(f"{folder}/output", output)
        try:
            follower.finish()
        finally:
            follower.close()
        result = _result(code)
        return AttemptResult(result.outcome, result.exit_code, result.error, ended_after=ended_after(folder))

    async def _started(self, folder: str) -> Started | None:
        """The record's `started`; if it is not written yet but its wrapper runs (it was
        spawned just before the crash), wait for one or the other to end."""
        started = parse_started(read_text(f"{folder}/started") or "")
        if started is not None:
            return started
        pid = _find_wrapper(folder)
        while pid is not None and _running(pid):
            await trio.sleep(STOP_POLL)
            started = parse_started(read_text(f"{folder}/started") or "")
            if started is not None:
                return started
        return parse_started(read_text(f"{folder}/started") or "")

    async def stop_orphans(self, deployment: str, attempts: set[tuple[str, str | None, int]]) -> int:
        """Stop what still runs of attempts whose fate is unknowable: the process group
        their record names (the wrapper's pid), if a member of it still runs — TERM,
        then KILL after the grace. A group whose leader's pid now names another process
        is gone (a pid is not reused while a group holds it). Returns how many groups
        were stopped. Commands that replace their environment are found all the same:
        the record, not the environment, says where they are."""
        stopped = 0
        for step, target, attempt in sorted(attempts, key=repr):
            folder = self._folder(deployment, step, target, attempt)
            started = parse_started(read_text(f"{folder}/started") or "")
            if started is not None:
                pgid = started.pid
                stat = _proc_stat(pgid)
                if stat is not None and started.starttime and stat[2] != started.starttime:
                    continue  # the pid was reused: our group is long gone
            else:
                found = _find_wrapper(folder)
                if found is None:
                    continue
                pgid = found
            if not _group_running(pgid):
                continue
            try:
                pidfd = os.pidfd_open(pgid)
            except OSError:
                pidfd = -1
            try:
                if pidfd >= 0:
                    await self._stop(pgid, pidfd, child=False)
                else:
                    await self._stop_without_leader(pgid)
            finally:
                if pidfd >= 0:
                    os.close(pidfd)
            stopped += 1
        return stopped

    async def _stop_without_leader(self, pgid: int) -> None:
        _killpg(pgid, signal.SIGTERM)
        with trio.move_on_after(self.grace):
            while _group_running(pgid):
                await trio.sleep(STOP_POLL)
        if _group_running(pgid):
            _killpg(pgid, signal.SIGKILL)
            with trio.move_on_after(self.grace):
                while _group_running(pgid):
                    await trio.sleep(STOP_POLL)

    # -- records the log no longer needs -------------------------------------------------

    def forget(self, deployment: str, attempts: Sequence[tuple[str, str | None, int]]) -> None:
        """Delete those attempts' records, in a thread of the adapter's (the event loop
        does not wait for the file system)."""
        self._delete([self._folder(deployment, step, target, attempt) for step, target, attempt in attempts])

    def forget_deployment(self, deployment: str) -> None:
        done = threading.Event()
        self._delete(done)
        done.wait()  # the attempts' records first, then the folder they were in
        shutil.rmtree(f"{self.root}/{_key(deployment)}", ignore_errors=True)
        self._parents = {k: v for k, v in self._parents.items() if k[0] != deployment}
        try:
            os.rmdir(self.root)  # the store's folder, if no other deployment has records in it
            self._rooted = False
        except OSError:
            pass

    def _delete(self, item: list[str] | threading.Event) -> None:
        if self._garbage is None:
            self._garbage = queue.SimpleQueue()
            threading.Thread(target=_deleter, args=(self._garbage,), name="abreast-records", daemon=True).start()
        self._garbage.put(item)

    def detach(self) -> None:
        self._detached = True


def _deleter(garbage: queue.SimpleQueue) -> None:
    """The adapter's thread that deletes records: lists of attempt folders; an Event
    is set once everything queued before it is gone."""
    while True:
        item = garbage.get()
        if isinstance(item, threading.Event):
            item.set()
            continue
        for folder in item:
            for name in ("output", "exit", "started"):
                try:
                    os.unlink(f"{folder}/{name}")
                except OSError:
                    pass
            try:
                os.rmdir(folder)
            except OSError:
                pass


class _Follower:
    """Reads what is new in an output file and feeds its complete lines to a sink."""

    __slots__ = ("path", "sink", "fd", "splitter")

    def __init__(self, path: str, sink: OutputSink):
        self.path = path
        self.sink = sink
        self.fd = -1
        self.splitter = LineSplitter(LINE_LIMIT)

    def drain(self) -> None:
        if self.fd < 0:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return  # not written yet (or the wrapper could not create it)
        sink = self.sink
        while chunk := os.read(self.fd, 1 << 20):
            for line in self.splitter.feed(chunk):
                sink(line)

    def finish(self) -> None:
        self.drain()
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


def _find_wrapper(folder: str) -> int | None:
    """The live wrapper working for `folder`, by its command line, if any."""
    want = os.fsencode(folder)
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        # A wrapper is recognised by its script (argv[2]) and its folder (argv[4]).
        if len(argv) > 4 and argv[2] == _WRAPPER_BYTES and argv[4] == want:
            return pid
    return None


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


def _running(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


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
