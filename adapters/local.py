"""The local adapter: a step's `run` through `/bin/sh -c` on this machine.

Each attempt runs in the scenario file's folder, in a session (and so a process group)
of its own, with ABREAST_DEPLOYMENT, ABREAST_STEP, ABREAST_TARGET (empty for a server
step) and ABREAST_ATTEMPT added to the environment; stdin is /dev/null. Output (stdout
and stderr merged) is streamed line by line. Exit status 0 is success. When cancelled
(a timeout or a cancelled deployment) the whole process group gets SIGTERM, then
SIGKILL after a grace period, so nothing the command started is left behind.

Two ways to start the shell, same result:
- `os.posix_spawn` straight from the event loop when the orchestrator already works in
  the scenario's folder (`abreast run` moves there) and the kernel has pidfds: a vfork
  and an exec, no thread. This is what makes thousands of short commands cheap.
- otherwise `trio.lowlevel.open_process` (subprocess.Popen in a worker thread), which
  can set the folder itself.
"""

from __future__ import annotations

import os
import signal
import subprocess

import trio

from engine.adapter import AttemptResult, ExecutionRequest, OutputSink

GRACE_SECONDS = 5.0


class LocalAdapter:
    name = "local"

    def __init__(self, grace: float = GRACE_SECONDS, shell: str = "/bin/sh"):
        self.grace = grace
        self.shell = shell
        self._environment = dict(os.environ)  # read once: os.environ is slow to copy
        self._fast = hasattr(os, "posix_spawn") and hasattr(os, "pidfd_open")

    async def run(self, request: ExecutionRequest, output: OutputSink) -> AttemptResult:
        command = request.step.run
        if command is None:
            return AttemptResult("succeeded")  # a step without `run` succeeds at once
        env = self._environment | request.environment
        argv = [self.shell, "-c", command]
        if self._fast and os.getcwd() == str(request.workdir):
            return await self._run_spawned(argv, env, output)
        return await self._run_popen(argv, env, request, output)

    # -- posix_spawn + pidfd ------------------------------------------------------------

    async def _run_spawned(self, argv: list[str], env: dict[str, str], output: OutputSink) -> AttemptResult:
        r, w = os.pipe()
        try:
            pid = os.posix_spawn(
                argv[0],
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, w, 1),
                    (os.POSIX_SPAWN_DUP2, w, 2),
                ],
                setsid=True,
            )
        except OSError as e:
            os.close(r)
            return AttemptResult("failed", None, f"cannot start {self.shell}: {e}")
        finally:
            os.close(w)
        os.set_blocking(r, False)
        pidfd = -1
        try:
            await _pump(r, output)
            # End of output almost always means the shell has exited: reap it without
            # waiting; only a shell that closed its output early needs watching.
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                pidfd = os.pidfd_open(pid)
                await trio.lowlevel.wait_readable(pidfd)
                _, status = os.waitpid(pid, 0)
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                if pidfd < 0:
                    pidfd = _pidfd(pid)
                await self._stop(pid, pidfd)
            raise
        finally:
            # Only this task ever waits on these descriptors and it is not waiting now,
            # so trio holds no registration for them (it drops one when its wait ends):
            # a plain close is enough, and the kernel takes them out of epoll.
            os.close(r)
            if pidfd >= 0:
                os.close(pidfd)
        return _result(os.waitstatus_to_exitcode(status))

    async def _stop(self, pid: int, pidfd: int) -> None:
        """TERM the process group, KILL it after the grace period, then reap the shell."""
        _killpg(pid, signal.SIGTERM)
        with trio.move_on_after(self.grace) as grace:
            if pidfd >= 0:
                await trio.lowlevel.wait_readable(pidfd)
        if grace.cancelled_caught or pidfd < 0:
            _killpg(pid, signal.SIGKILL)
            if pidfd >= 0:
                await trio.lowlevel.wait_readable(pidfd)
        _killpg(pid, signal.SIGKILL)  # whatever the shell left in its group
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    # -- after a crash -------------------------------------------------------------------

    async def stop_orphans(self, deployment: str, attempts: set[tuple[str, str | None, int]]) -> int:
        """Stop what a dead orchestrator left running of `attempts` (step, target or None,
        attempt) of `deployment`: the process groups of every live process whose
        environment names one of them (each command carries ABREAST_DEPLOYMENT,
        ABREAST_STEP, ABREAST_TARGET and ABREAST_ATTEMPT; a group holds what the command
        started). TERM, then KILL after the grace period. Returns how many groups there
        were. Needs /proc (Linux); elsewhere finds nothing."""
        needle = f"ABREAST_DEPLOYMENT={deployment}".encode()
        wanted = {(step, target or "", str(attempt)) for step, target, attempt in attempts}
        ours = os.getpgrp()
        members: dict[int, list[int]] = {}
        for pid in _pids():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    environ = f.read().split(b"\0")
                if needle not in environ:
                    continue
                env = dict(v.decode("utf-8", "replace").partition("=")[::2] for v in environ if v.startswith(b"ABREAST_"))
                if (env.get("ABREAST_STEP"), env.get("ABREAST_TARGET"), env.get("ABREAST_ATTEMPT")) not in wanted:
                    continue  # another attempt, or the same id in another project's log
                group = os.getpgid(pid)
            except (OSError, ProcessLookupError):
                continue  # gone, or not ours to read
            if group != ours:
                members.setdefault(group, []).append(pid)
        if not members:
            return 0
        for group in members:
            _killpg(group, signal.SIGTERM)
        with trio.move_on_after(self.grace):
            while any(_running(pid) for pids in members.values() for pid in pids):
                await trio.sleep(0.05)
        for group, pids in members.items():
            # A group with a member still running cannot have been reused: KILL it.
            if any(_running(pid) for pid in pids):
                _killpg(group, signal.SIGKILL)
        return len(members)

    # -- subprocess.Popen (any folder) --------------------------------------------------------

    async def _run_popen(
        self, argv: list[str], env: dict[str, str], request: ExecutionRequest, output: OutputSink
    ) -> AttemptResult:
        try:
            proc = await trio.lowlevel.open_process(
                argv,
                cwd=request.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            return AttemptResult("failed", None, f"cannot start {self.shell}: {e}")
        try:
            assert isinstance(proc.stdout, trio.lowlevel.FdStream)  # stdout=PIPE on Unix
            await _pump(proc.stdout.fileno(), output)  # the stream owns and closes the descriptor
            code = await proc.wait()
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                _killpg(proc.pid, signal.SIGTERM)
                with trio.move_on_after(self.grace):
                    await proc.wait()
                # proc.wait() reaps the shell, after which its pid (our group id) may be
                # reused: only signal the group again while the shell is unreaped.
                if proc.returncode is None:
                    _killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
            raise
        finally:
            if proc.stdout is not None:
                await trio.aclose_forcefully(proc.stdout)
        return _result(code)


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except OSError:  # already reaped
        return -1


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init, not for us)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _result(code: int) -> AttemptResult:
    if code == 0:
        return AttemptResult("succeeded", 0)
    if code < 0:
        return AttemptResult("failed", code, f"killed by signal {signal.Signals(-code).name}")
    return AttemptResult("failed", code, f"exit status {code}")


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def _pump(fd: int, output: OutputSink) -> None:
    """Feed a non-blocking pipe to `output` one decoded line at a time, read straight
    from its descriptor: no stream object, one wait per chunk (cheap for thousands of
    short commands)."""
    pending = b""
    while True:
        # Wait first: a command just started has rarely written anything yet.
        await trio.lowlevel.wait_readable(fd)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            break
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            output(line.decode("utf-8", "replace").rstrip("\r"))
    if pending:
        output(pending.decode("utf-8", "replace").rstrip("\r"))
