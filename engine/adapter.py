"""What the runtime asks of an adapter: run one attempt, stream its output, say how it
ended, and stop when cancelled.

The engine defines the interface and never imports an implementation: the runtime is
handed a function that picks an adapter for each target (`adapters/` has the local
shell, dry-run and ssh adapters; others are plug-ins, found by adapters/registry.py).

Cancelling is trio's: the runtime runs `Adapter.run` inside a cancel scope (for a
timeout or a cancelled deployment) and the adapter, on `trio.Cancelled`, must stop the
work it started (a local process group is killed) before letting the exception go.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import msgspec

from engine.plan import Plan, Step, Target


class ExecutionRequest(msgspec.Struct, frozen=True):
    deployment: str
    step: Step
    target: Target | None  # None: a server step, run on the orchestrator
    attempt: int
    workdir: Path  # the scenario file's folder
    # The trio clock time at which the attempt was decided: adapters that model time
    # (dry-run) measure from it, so time spent getting started is not added on top.
    start_clock: float | None = None

    @property
    def environment(self) -> Mapping[str, str]:
        """The variables every execution sees (SPEC §2, "Real runs")."""
        return {
            "ABREAST_DEPLOYMENT": self.deployment,
            "ABREAST_STEP": self.step.name,
            "ABREAST_TARGET": self.target.name if self.target is not None else "",
            "ABREAST_ATTEMPT": str(self.attempt),
        }


class AttemptResult(msgspec.Struct, frozen=True):
    outcome: Literal["succeeded", "failed"]
    exit_code: int | None = None
    error: str | None = None
    # Adapters that model time (dry-run) say when, on the trio clock, the attempt ended;
    # otherwise it ended when `run` returned.
    ended_clock: float | None = None
    # An adopted attempt (see `Adapter.adopt`) that ended while nobody watched: how many
    # seconds after it started it ended, by the target's own record.
    ended_after: float | None = None


OutputSink = Callable[[str], None]  # one line of output, without its newline


class Adapter(Protocol):
    name: str

    async def run(self, request: ExecutionRequest, output: OutputSink) -> AttemptResult:
        """Run one attempt to its end; on cancellation stop it, then re-raise."""
        ...

    # Optional: `async def adopt(self, request: ExecutionRequest, output: OutputSink) ->
    # AttemptResult | None`. On resume, for an attempt the log shows started but not
    # finished: read the attempt's record on its target (adapters/record.py). No record
    # (its fate cannot be known): return None, and the runtime records it `interrupted`
    # and runs it again. Finished: return how it ended, with `ended_after`, and feed its
    # output. Still running: wait for it exactly as `run` would (output flows, and on
    # cancellation stop its process group, then re-raise). Never starts anything.
    #
    # Optional: `async def stop_orphans(self, deployment: str, attempts: set[tuple[str,
    # str | None, int]]) -> int`. On resume, before anything runs again, the runtime asks
    # each adapter that has it to stop the work a dead orchestrator left running for
    # those attempts (step, target, attempt) of that deployment (the local adapter:
    # process groups), and to say how many it stopped, so that no execution runs twice.
    #
    # Optional: `def check(self, target: Target, folder: Path) -> list[tuple[str, str]]`.
    # Before anything runs: what is wrong with a target this adapter serves, as (field,
    # message) pairs (`abreast run` reports them as bad input, exit 2). `folder` is the
    # scenario file's.
    #
    # Optional: `async def aclose(self) -> None`. The deployment has ended (succeeded,
    # failed, cancelled or on an error): release what the adapter kept open (the ssh
    # adapter's master connections). Called once, shielded from cancellation.


@dataclass(frozen=True)
class AdapterSetup:
    """What an adapter factory is given: an `abreast.adapters` entry point names a
    callable `factory(setup) -> Adapter`, called once per deployment; that adapter
    serves every target whose `adapter` is the entry point's name."""

    plan: Plan
    folder: Path  # the scenario file's folder
    seed: int = 0
    speed: float = 1.0
    # For adapters that rehearse (dry-run): the simulator's duration model, seconds an
    # attempt (step, target or None, attempt) takes and whether it fails. Set when a
    # dry-run adapter is in use.
    duration: Callable[[Step, str | None, int], float] | None = None
    fails: Callable[[Step, str | None, int], bool] | None = None


AdapterFor = Callable[[Target | None], Adapter]
