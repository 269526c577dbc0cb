"""Which adapters there are, and the set of them one deployment uses.

Adapters are found through the entry-point group `abreast.adapters`
(importlib.metadata): an entry point's name is what a target's `adapter` says, its
object a factory `factory(setup: AdapterSetup) -> Adapter` (engine/adapter.py) called
once per deployment. abreast's own adapters register the same way, in pyproject.toml:

    [project.entry-points."abreast.adapters"]
    local = "adapters.registry:local"
    dry-run = "adapters.registry:dry_run"
    ssh = "adapters.registry:ssh"

`BUILTIN` repeats those three lines for an install whose metadata predates them (an
editable install made before they were declared); an installed distribution's entry
point wins. A name two distributions declare differently is an error, never a guess.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from engine.adapter import Adapter, AdapterSetup
from engine.plan import Plan, Target

GROUP = "abreast.adapters"
BUILTIN = {"local": "adapters.registry:local", "dry-run": "adapters.registry:dry_run", "ssh": "adapters.registry:ssh"}

T = TypeVar("T")


class AdapterProblem(Exception):
    """A deployment cannot get its adapters: each line names the file and the place."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


# -- the built-in factories --------------------------------------------------------------


def local(setup: AdapterSetup) -> Adapter:
    from adapters.local import LocalAdapter, state_root_for

    adapter = LocalAdapter(state_root_for(setup.store))
    plan = setup.plan
    server = any(step.run is not None and not step.roles for step in plan.steps)
    if server or any(target.adapter == "local" for target in plan.targets):
        adapter.start()  # its agents start while the rest of the deployment gets ready
    return adapter


def dry_run(setup: AdapterSetup) -> Adapter:
    from adapters.dryrun import DryRunAdapter

    if setup.duration is None:
        raise ValueError("the dry-run adapter needs the simulator's durations (AdapterSetup.duration)")
    return DryRunAdapter(setup.duration, setup.fails, setup.speed)


def ssh(setup: AdapterSetup) -> Adapter:
    from adapters.ssh import SshAdapter

    return SshAdapter(plan=setup.plan)


# -- finding them ----------------------------------------------------------------------------


def installed() -> dict[str, list[EntryPoint]]:
    """Every adapter name with the entry points that declare it (more than one: a
    conflict between distributions)."""
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=GROUP):
        same = found.setdefault(ep.name, [])
        if all(other.value != ep.value for other in same):
            same.append(ep)
    for name, value in BUILTIN.items():
        found.setdefault(name, [EntryPoint(name, value, GROUP)])
    return found


def needed(plan: Plan, dry_run: bool) -> dict[str, list[int]]:
    """The adapters a run of `plan` uses, each with the targets (indices) it serves:
    the targets' own, and `local` for server steps; with --dry-run, only `dry-run`."""
    if dry_run:
        return {"dry-run": list(range(len(plan.targets)))}
    out: dict[str, list[int]] = {"local": []}
    for i, target in enumerate(plan.targets):
        out.setdefault(target.adapter, []).append(i)
    return out


def _where(plan: Plan, i: int, field: str) -> str:
    return f"{plan.source or '<scenario>'}: $.targets[{i}].{field}"


class Adapters:
    """The adapters of one deployment: picks each target's (the runtime's
    `adapter_for`), checks the targets before anything runs, and closes them at the end."""

    def __init__(self, plan: Plan, setup: AdapterSetup, dry_run: bool = False):
        self.plan = plan
        self.dry_run = dry_run
        self.by_name: dict[str, Adapter] = {}
        available = installed()
        problems: list[str] = []
        uses = needed(plan, dry_run)
        for name, targets in uses.items():
            eps = available.get(name)
            if not eps:
                known = ", ".join(sorted(available))
                for i in targets:
                    problems.append(
                        f"{_where(plan, i, 'adapter')}: target {plan.targets[i].name!r}: no installed adapter is named {name!r} (installed: {known})"
                    )
                continue
            if len(eps) > 1:
                who = " and ".join(f"{ep.value} ({ep.dist.name if ep.dist else 'unknown'})" for ep in eps)
                problems.append(f"{_where(plan, targets[0], 'adapter')}: adapter {name!r} is declared twice: {who}")
                continue
            try:
                factory: Callable[[AdapterSetup], Any] = eps[0].load()
                self.by_name[name] = factory(setup)
            except Exception as e:  # noqa: BLE001 - a broken plug-in is the user's to fix: say which
                at = _where(plan, targets[0], "adapter") if targets else f"{plan.source or '<scenario>'}: $"
                problems.append(f"{at}: adapter {name!r} ({eps[0].value}) cannot be set up: {type(e).__name__}: {e}")
        for name, targets in uses.items():
            check = getattr(self.by_name.get(name), "check", None)
            if check is None:
                continue
            for i in targets:
                for field, message in check(plan.targets[i], setup.folder):
                    problems.append(f"{_where(plan, i, field)}: {message}")
        if problems:
            raise AdapterProblem(problems)

    def __call__(self, target: Target | None) -> Adapter:
        if self.dry_run:
            return self.by_name["dry-run"]
        return self.by_name[target.adapter if target is not None else "local"]

    async def aclose(self) -> None:
        """Let every adapter release what it holds (see `Adapter.aclose`); one that
        fails to does not keep the others from it."""
        failed: BaseException | None = None
        for adapter in self.by_name.values():
            close = getattr(adapter, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception as e:  # noqa: BLE001 - raised below, after the others closed
                    failed = failed or e
        if failed is not None:
            raise failed

    async def closing(self, main: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`await main(*args)`, then close the adapters, however it ended."""
        try:
            return await main(*args)
        finally:
            await self.aclose()
