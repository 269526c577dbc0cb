"""The local adapter: a step's `run` through `/bin/sh -c` on this machine.

Each attempt runs in the scenario file's folder, in a session (and so a process group)
of its own, with ABREAST_DEPLOYMENT, ABREAST_STEP, ABREAST_TARGET (empty for a server
step) and ABREAST_ATTEMPT added to the environment. Output (stdout and stderr merged)
is streamed line by line. Exit status 0 is success. When cancelled (a timeout or a
cancelled deployment) the whole process group gets SIGTERM, then SIGKILL after a grace
period, so nothing the command started is left behind.
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

    async def run(self, request: ExecutionRequest, output: OutputSink) -> AttemptResult:
        command = request.step.run
        if command is None:
            return AttemptResult("succeeded")  # a step without `run` succeeds at once
        env = {**os.environ, **request.environment}
        try:
            proc = await trio.lowlevel.open_process(
                [self.shell, "-c", command],
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
            await _pump(proc.stdout, output)
            code = await proc.wait()
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await self._stop(proc)
            raise
        finally:
            if proc.stdout is not None:
                await trio.aclose_forcefully(proc.stdout)
        if code == 0:
            return AttemptResult("succeeded", 0)
        if code < 0:
            return AttemptResult("failed", code, f"killed by signal {signal.Signals(-code).name}")
        return AttemptResult("failed", code, f"exit status {code}")

    async def _stop(self, proc: trio.Process) -> None:
        """TERM the process group, then KILL it if it has not gone after the grace period."""
        _killpg(proc.pid, signal.SIGTERM)
        with trio.move_on_after(self.grace):
            await proc.wait()
            return
        _killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


async def _pump(stream: trio.abc.ReceiveStream | None, output: OutputSink) -> None:
    """Feed a byte stream to `output` one decoded line at a time."""
    if stream is None:
        return
    pending = b""
    async for chunk in stream:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            output(line.decode("utf-8", "replace").rstrip("\r"))
    if pending:
        output(pending.decode("utf-8", "replace").rstrip("\r"))
