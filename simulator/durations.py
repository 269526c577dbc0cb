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
from collections.abc import Callable
from statistics import NormalDist, median

from engine.plan import (
    Duration,
    Empirical,
    Fixed,
    fan_out,
    Lognormal,
    Normal,
    PerTarget,
    Plan,
    Single,
    Step,
    Triangular,
    Uniform,
)

_STD_NORMAL = NormalDist()
_Z95 = _STD_NORMAL.inv_cdf(0.95)
_SCALE = 1.0 / 18446744073709551616.0  # 2**-64


class MissingDuration(ValueError):
    """A step (or one of its targets) has no duration, so it cannot be simulated."""


def uniform(seed: int, step: str, target: str | None, attempt: int, stream: str) -> float:
    """A number in (0, 1) determined only by its key."""
    return _Keyed(seed, step, stream)(target, attempt)


class _Keyed:
    """`uniform` with the (seed, step, stream) part of the key prepared once: the
    simulator draws millions of these, and this is the same function, faster."""

    __slots__ = ("prefix", "suffix", "suffix1")

    def __init__(self, seed: int, step: str, stream: str):
        self.prefix = f"{seed}\x1f{step}\x1f".encode()
        self.suffix = f"\x1f{stream}".encode()
        self.suffix1 = b"\x1f1" + self.suffix

    def __call__(self, target: str | None, attempt: int) -> float:
        tail = self.suffix1 if attempt == 1 else b"\x1f%d%s" % (attempt, self.suffix)
        key = self.prefix + (target.encode() if target is not None else b"") + tail
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
    if isinstance(d, Empirical):
        n = len(d.samples)
        return d.samples[min(int(u * n), n - 1)]
    raise TypeError(f"not a duration: {d!r}")


def _value(d: Single, draw: _Keyed, target: str | None, attempt: int) -> float:
    return d.seconds if type(d) is Fixed else _quantile(d, draw(target, attempt))


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
        return self.sampler(step)(target, attempt)

    def sampler(self, step: Step) -> Callable[[str | None, int], float]:
        """`duration` for one step, prepared once: (target, attempt) -> seconds."""
        d = step.duration
        draw = _Keyed(self.seed, step.name, "duration")
        if isinstance(d, Fixed):
            seconds = d.seconds
            return lambda target, attempt: seconds
        if isinstance(d, Uniform):
            # The commonest distribution, inlined: the same key and hash as `_Keyed`.
            low, span = d.low, d.high - d.low
            prefix, suffix, suffix1 = draw.prefix, draw.suffix, draw.suffix1

            def uniform_duration(target: str | None, attempt: int) -> float:
                tail = suffix1 if attempt == 1 else b"\x1f%d%s" % (attempt, suffix)
                key = prefix + (target.encode() if target is not None else b"") + tail
                return low + (int.from_bytes(blake2b(key, digest_size=8).digest(), "little") + 0.5) * _SCALE * span

            return uniform_duration
        if isinstance(d, PerTarget):
            single = self.single
            return lambda target, attempt: _value(single(step, target), draw, target, attempt)
        only = self.single(step, None)  # a step without a duration: raises MissingDuration
        return lambda target, attempt: _quantile(only, draw(target, attempt))

    def fails(self, step: Step, target: str | None, attempt: int) -> bool:
        """Whether this attempt is made to fail (`fails` counts, then `failure_rate`)."""
        injector = self.injector(step)
        return injector is not None and injector(target, attempt)

    def injector(self, step: Step) -> Callable[[str | None, int], bool] | None:
        """`fails` for one step, prepared once; None when the step never fails."""
        if not step.fails and step.failure_rate <= 0:
            return None
        counts, rate = step.fails, step.failure_rate
        draw = _Keyed(self.seed, step.name, "failure")

        def fails(target: str | None, attempt: int) -> bool:
            if counts:
                n = counts.get(target if target is not None else "server", counts.get("*", 0))
                if attempt <= n:
                    return True
            return rate > 0 and draw(target, attempt) < rate

        return fails

    def ending(self, step: Step) -> Callable[[str | None, int], str] | None:
        """How each attempt of `step` ends, when that is given rather than injected
        (a replay's recorded outcomes); None: succeeded unless `injector` fails it."""
        return None

    def check(self) -> None:
        """Raise `MissingDuration` naming the first step or target that lacks one."""
        targets = self.plan.targets
        for step, fanned in zip(self.plan.steps, fan_out(self.plan), strict=True):
            if not step.roles:
                self.single(step, None)
            elif isinstance(step.duration, PerTarget):
                for i in fanned:
                    self.single(step, targets[i].name)
            elif fanned:
                self.single(step, None)


# step -> target (None: the server) -> (seconds, outcome) of each attempt, in attempt order
Attempts = dict[str, dict[str | None, list[tuple[float, str]]]]
# (step, target, attempt, seconds, basis) of an attempt that had no record
Estimate = tuple[str, str | None, int, float, str]


class Recorded(DurationModel):
    """A recorded history's durations and outcomes, for replay (SPEC §5).

    Attempt n of an execution takes exactly as long as its recorded attempt n and ends as
    it did. An attempt beyond the recorded ones succeeds and takes as long as the last
    recorded one; an execution with no recorded attempt succeeds and takes the median of
    its step's recorded attempts, else the scenario's duration (a keyed draw, as in a
    simulation). Each attempt that had no record is appended to `estimated` as it starts.
    Failures are never injected: the record says which attempts failed."""

    def __init__(self, plan: Plan, attempts: Attempts, seed: int = 0):
        super().__init__(plan, seed)
        self.attempts = attempts
        self.estimated: list[Estimate] = []

    def check(self) -> None:
        """Nothing to check up front: only an execution without a record that runs needs
        the scenario's duration, and `MissingDuration` is raised when it starts."""

    def sampler(self, step: Step) -> Callable[[str | None, int], float]:
        recorded = self.attempts.get(step.name, {})
        seconds = [d for tries in recorded.values() for d, _ in tries]
        typical = median(seconds) if seconds else None
        estimated = self.estimated
        name = step.name
        written: list[Callable[[str | None, int], float]] = []  # the scenario's, made when first needed

        def duration(target: str | None, attempt: int) -> float:
            tries = recorded.get(target)
            if tries is not None:
                if attempt <= len(tries):
                    return tries[attempt - 1][0]
                d = tries[-1][0]
                basis = "as long as its last recorded attempt"
            elif typical is not None:
                d = typical
                basis = f"the median of the step's {len(seconds)} recorded attempts"
            else:
                if not written:
                    written.append(DurationModel.sampler(self, step))
                d = written[0](target, attempt)
                basis = "the scenario's duration (the step has no recorded attempt)"
            estimated.append((name, target, attempt, d, basis))
            return d

        return duration

    def injector(self, step: Step) -> Callable[[str | None, int], bool] | None:
        return None

    def ending(self, step: Step) -> Callable[[str | None, int], str] | None:
        recorded = self.attempts.get(step.name, {})

        def outcome(target: str | None, attempt: int) -> str:
            tries = recorded.get(target)
            if tries is not None and attempt <= len(tries):
                return tries[attempt - 1][1]
            return "succeeded"

        return outcome
