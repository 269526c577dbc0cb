"""Durations and failures for simulated attempts: common random numbers.

Every draw is a pure function of (seed, step, target, attempt, stream): a keyed hash
turned into a uniform number in (0, 1), then into the distribution by its inverse CDF.
Nothing depends on the order in which the scheduler asks, so two policies simulated
side by side see exactly the same durations and the same injected failures, and the
difference in makespan is the policy's alone.
"""

from __future__ import annotations

import math
from hashlib import blake2b
from statistics import NormalDist

from engine.plan import Duration, Fixed, Lognormal, Normal, PerTarget, Plan, Single, Step, Triangular, Uniform

_STD_NORMAL = NormalDist()
_Z95 = _STD_NORMAL.inv_cdf(0.95)
_SCALE = 1.0 / 18446744073709551616.0  # 2**-64


class MissingDuration(ValueError):
    """A step (or one of its targets) has no duration, so it cannot be simulated."""


def uniform(seed: int, step: str, target: str | None, attempt: int, stream: str) -> float:
    """A number in (0, 1) determined only by its key."""
    key = f"{seed}\x1f{step}\x1f{target if target is not None else ''}\x1f{attempt}\x1f{stream}".encode()
    n = int.from_bytes(blake2b(key, digest_size=8).digest(), "little")
    return (n + 0.5) * _SCALE


def _quantile(d: Single, u: float) -> float:
    if isinstance(d, Fixed):
        return d.seconds
    if isinstance(d, Uniform):
        return d.low + u * (d.high - d.low)
    if isinstance(d, Lognormal):
        mu = math.log(d.median)
        sigma = (math.log(d.p95) - mu) / _Z95
        return math.exp(mu + sigma * _STD_NORMAL.inv_cdf(u))
    if isinstance(d, Normal):
        return max(0.0, d.mean + d.stddev * _STD_NORMAL.inv_cdf(u))
    if isinstance(d, Triangular):
        lo, mode, hi = d.low, d.mode, d.high
        if hi == lo:
            return lo
        c = (mode - lo) / (hi - lo)
        if u < c:
            return lo + math.sqrt(u * (hi - lo) * (mode - lo))
        return hi - math.sqrt((1 - u) * (hi - lo) * (hi - mode))
    raise TypeError(f"not a duration: {d!r}")


class DurationModel:
    """Samples attempt durations and injected failures for one plan and seed."""

    def __init__(self, plan: Plan, seed: int = 0):
        self.seed = seed
        self.plan = plan

    def single(self, step: Step, target: str | None) -> Single:
        d: Duration | None = step.duration
        if isinstance(d, PerTarget):
            key = target if target is not None else "server"
            found = d.by_target.get(key, d.default)
            if found is None:
                where = f"target {target!r}" if target is not None else "the server"
                raise MissingDuration(f"step {step.name!r} has no duration for {where} (add `default` to its duration map)")
            return found
        if d is None:
            raise MissingDuration(f"step {step.name!r} has no duration, so it cannot be simulated")
        return d

    def duration(self, step: Step, target: str | None, attempt: int) -> float:
        d = self.single(step, target)
        if type(d) is Fixed:
            return d.seconds
        return _quantile(d, uniform(self.seed, step.name, target, attempt, "duration"))

    def fails(self, step: Step, target: str | None, attempt: int) -> bool:
        """Whether this attempt is made to fail (`fails` counts, then `failure_rate`)."""
        if step.fails:
            key = target if target is not None else "server"
            n = step.fails.get(key, step.fails.get("*", 0))
            if attempt <= n:
                return True
        if step.failure_rate > 0:
            return uniform(self.seed, step.name, target, attempt, "failure") < step.failure_rate
        return False

    def check(self) -> None:
        """Raise `MissingDuration` naming the first step or target that lacks one."""
        for step in self.plan.steps:
            targets = self.plan.targets_of(step)
            if not step.roles:
                self.single(step, None)
            for t in targets:
                self.single(step, t.name)
