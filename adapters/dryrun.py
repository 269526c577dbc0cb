"""The dry-run adapter: rehearse a deployment for real, without touching any target.

Each attempt sleeps its simulated duration divided by `speed`, and fails when the
scenario injects a failure for it (`fails`, `failure_rate`). The durations and failures
come from the caller (the command line passes the simulator's duration model), so a
dry run follows the same draws as `abreast simulate --seed N`.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from engine.adapter import AttemptResult, ExecutionRequest, OutputSink
from engine.plan import Step

Durations = Callable[[Step, str | None, int], float]
Failures = Callable[[Step, str | None, int], bool]


class DryRunAdapter:
    name = "dry-run"

    def __init__(self, duration: Durations, fails: Failures | None = None, speed: float = 1.0):
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.duration = duration
        self.fails = fails
        self.speed = speed

    async def run(self, request: ExecutionRequest, output: OutputSink) -> AttemptResult:
        target = request.target.name if request.target is not None else None
        step = request.step
        seconds = self.duration(step, target, request.attempt)
        output(f"dry run: {step.name} on {target or 'the server'}, attempt {request.attempt}: {seconds:g}s")
        start = request.start_clock if request.start_clock is not None else trio.current_time()
        end = start + seconds / self.speed
        if step.timeout is not None and seconds == step.timeout:
            # Ending exactly at the timeout is not running longer than it (SPEC §2), but
            # the runtime's timeout falls due on the same tick: hold it off. (Cancelling
            # the deployment waits for this one attempt, at most `timeout`.)
            with trio.CancelScope(shield=True):
                await trio.sleep_until(end)
        else:
            await trio.sleep_until(end)
        if self.fails is not None and self.fails(request.step, target, request.attempt):
            return AttemptResult("failed", 1, "injected failure (dry run)", ended_clock=end)
        return AttemptResult("succeeded", 0, ended_clock=end)
