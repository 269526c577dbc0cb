"""What the runtime asks of an adapter: run one attempt, stream its output, say how it
ended, and stop when cancelled.

The engine defines the interface and never imports an implementation: the runtime is
handed a function that picks an adapter for each target (`adapters/` has the local
shell, dry-run and ssh adapters; others are plug-ins, found by adapters/registry.py).

Cancelling is trio's: the runtime runs `Adapter.run` inside a cancel scope (for a
timeout or a cancelled deployment) and the adapter, on `trio.Cancelled`, must stop the
work it started (a local process group: TERM, then KILL after the grace, until the
group is empty) before letting the exception go: an attempt has ended only when
nothing of it runs any more.
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

# The runtime keeps at most this many characters of a line (and says it cut it); an
# adapter need not hold more of a line than 4 bytes per character of that (UTF-8).
MAX_LINE_CHARS = 4000


class NotStarted:
    """`adopt`'s answer when the attempt's record proves its command never ran (the
    orchestrator died between recording `execution.started` and starting it): the
    runtime runs it now, as that same attempt."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_STARTED"


NOT_STARTED = NotStarted()


class Adapter(Protocol):
    name: str

    async def run(self, request: ExecutionRequest, output: OutputSink) -> AttemptResult:
        """Run one attempt to its end; on cancellation stop it, then re-raise."""
        ...

    # Optional: `async def adopt(self, request: ExecutionRequest, output: OutputSink,
    # running: Callable[[], None] | None = None) -> AttemptResult | NotStarted | None`.
    # On resume, for an attempt the log shows started but not finished: read the
    # attempt's record on its target (adapters/record.py).
    # - Finished while nobody watched: feed its output and return how it ended, with
    #   `ended_after` (seconds from its start to its end, by the target's record).
    # - Still running: call `running()` (if given) as soon as that is known, then wait
    #   for it exactly as `run` would (output flows; on cancellation stop its process
    #   group, then re-raise). The runtime holds its first decision pass until every
    #   adoption has either returned or called `running`, so that what ended while
    #   nobody watched is recorded at the time it ended, before anything new starts.
    # - Never ran (no record, or a record without `started` and no wrapper alive):
    #   return `NOT_STARTED`; the runtime then runs it with `run`, as the same attempt.
    # - Unknowable (the wrapper is gone without an exit status, the host rebooted):
    #   return None; the runtime calls `stop_orphans` for it, records it
    #   `interrupted`, and runs it again as a new attempt.
    # Adopt never starts the command itself.
    #
    # Optional: `async def stop_orphans(self, deployment: str, attempts: set[tuple[str,
    # str | None, int]]) -> int`. Stop what may still run of those attempts (step, target,
    # attempt) of `deployment` whose fate is unknowable (the local adapter: the process
    # group its record names, if any member still runs), and say how many groups it
    # stopped, so that no execution runs twice at once. An adapter without `adopt` is
    # asked this for every unfinished attempt on resume (which are then all
    # `interrupted`).
    #
    # Optional: `def prepare(self, deployment: str) -> None`: called before a new
    # deployment's first event, so that the adapter can tell, later, "this attempt's
    # record was never made" (it never started) from "this deployment's records are
    # gone" (unknowable). An OSError means the adapter cannot keep records: nothing is
    # written and the run stops.
    #
    # Optional: `def forget(self, deployment: str, attempts: Sequence[tuple[str, str |
    # None, int]]) -> None` and `def forget_deployment(self, deployment: str) -> None`:
    # the log now holds how those attempts (that whole deployment) ended, so their
    # records may go. Called from a worker thread, after the commit.
    #
    # Optional: `def detach(self) -> None`: the orchestrator stops supervising without
    # ending the deployment (its store failed, or another orchestrator took over its
    # lease). Attempts cancelled after this are left running, their records intact,
    # for the next owner to adopt.
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
    # The event store's file: adapters that keep attempt records on this machine (local)
    # keep them per store (None: the default store).
    store: Path | None = None


AdapterFor = Callable[[Target | None], Adapter]
