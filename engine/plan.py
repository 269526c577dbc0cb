"""The resolved scenario ("plan"): what a deployment is, with every default filled in.

A `Plan` is pure data. The loader (`engine.scenario`) builds it from a file; the core
(`engine.core`) schedules it; the simulator samples its durations. It is recorded whole
in the `deployment.started` event, so a history carries everything needed to fold,
resume or replay it: `msgspec.convert(event.plan, Plan)` gives it back.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Isolation = Literal["exclusive", "shared"]
Start = Literal["after-previous", "with-previous"]
Condition = Literal["success", "failure", "always"]


# --- durations (simulation only) -------------------------------------------------
# Tagged on "dist" so a resolved plan reads like the file it came from.


class Fixed(msgspec.Struct, frozen=True, tag_field="dist", tag="fixed"):
    seconds: float


class Lognormal(msgspec.Struct, frozen=True, tag_field="dist", tag="lognormal"):
    median: float
    p95: float


class Normal(msgspec.Struct, frozen=True, tag_field="dist", tag="normal"):
    mean: float
    stddev: float


class Uniform(msgspec.Struct, frozen=True, tag_field="dist", tag="uniform"):
    low: float
    high: float


class Triangular(msgspec.Struct, frozen=True, tag_field="dist", tag="triangular"):
    low: float
    mode: float
    high: float


class Empirical(msgspec.Struct, frozen=True, tag_field="dist", tag="empirical"):
    """Recorded durations (SPEC §5): a draw picks one of them. Kept sorted, so a draw is
    the empirical distribution's quantile, like every other distribution's."""

    samples: tuple[float, ...]


Single = Fixed | Lognormal | Normal | Uniform | Triangular | Empirical


class PerTarget(msgspec.Struct, frozen=True, tag_field="dist", tag="per-target"):
    """A duration per target name; `default` for targets not named (and server steps)."""

    by_target: dict[str, Single]
    default: Single | None = None


Duration = Fixed | Lognormal | Normal | Uniform | Triangular | Empirical | PerTarget


# --- the plan ---------------------------------------------------------------------


class Policy(msgspec.Struct, frozen=True):
    max_parallel_steps: int = 10
    max_parallel_targets: int = 10
    target_isolation: Isolation = "exclusive"
    fail_fast: bool = False


class Target(msgspec.Struct, frozen=True):
    name: str
    roles: tuple[str, ...] = ()
    adapter: str = "local"
    # Where a remote adapter (ssh, or a plug-in) reaches the target (SPEC §6). None: as
    # the adapter's own configuration says (for ssh: ~/.ssh/config, port 22, the login
    # folder); `host` defaults to the target's name.
    host: str | None = None
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    workdir: str | None = None
    ssh_options: dict[str, str] = {}


class Step(msgspec.Struct, frozen=True):
    name: str
    start: Start = "after-previous"
    roles: tuple[str, ...] = ()
    run: str | None = None
    duration: Duration | None = None
    depends_on: tuple[str, ...] | None = None
    condition: Condition = "success"
    uses: dict[str, int] = {}
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    isolation: Isolation | None = None
    window: int | None = None
    fails: dict[str, int] = {}
    failure_rate: float = 0.0


class Plan(msgspec.Struct, frozen=True):
    steps: tuple[Step, ...]
    name: str | None = None
    policy: Policy = Policy()
    variables: dict[str, str] = {}
    resources: dict[str, int] = {}
    targets: tuple[Target, ...] = ()
    source: str | None = None  # the file it was loaded from, if any

    def window_of(self, step: Step) -> int:
        return step.window if step.window is not None else self.policy.max_parallel_targets

    def isolation_of(self, step: Step) -> Isolation:
        return step.isolation if step.isolation is not None else self.policy.target_isolation

    def sequential(self) -> Plan:
        """The same process with every step after-previous and no depends_on."""
        steps = tuple(msgspec.structs.replace(s, start="after-previous", depends_on=None) for s in self.steps)
        return msgspec.structs.replace(self, steps=steps)


def fan_out(plan: Plan, steps: list[Step] | tuple[Step, ...] | None = None) -> list[list[int]]:
    """For each step, the indices of the targets it runs on, in declaration order: every
    target with any of the step's roles. A server step (no roles) gets an empty list."""
    by_role: dict[str, list[int]] = {}
    for i, t in enumerate(plan.targets):
        for r in t.roles:
            by_role.setdefault(r, []).append(i)
    out = []
    for step in plan.steps if steps is None else steps:
        if len(step.roles) == 1:
            out.append(list(by_role.get(step.roles[0], ())))
        else:
            out.append(sorted({i for r in step.roles for i in by_role.get(r, ())}))
    return out


def plan_from_builtins(obj: object) -> Plan:
    """Rebuild a plan recorded in a `deployment.started` event."""
    return msgspec.convert(obj, Plan)


def plan_to_builtins(plan: Plan) -> dict:
    """The plan as JSON-shaped data (lists, not tuples), as it reads back from a log."""
    return msgspec.json.decode(msgspec.json.encode(plan))
