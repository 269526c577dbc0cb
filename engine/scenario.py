"""Scenario files (SPEC §1): read YAML/TOML/JSON, check every key, resolve into a `Plan`.

Two layers. The `*Spec` structs below are the file's schema: msgspec checks types and
forbids unknown keys, and its errors already carry a JSON path (`$.steps[2].window`).
Then `_resolve` checks what a schema cannot (duplicate names, references, durations)
and builds the `Plan` the core runs. Every problem becomes a `ScenarioError` naming the
file, the path and what was expected; nothing runs on a bad file.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
import yaml

from engine.plan import (
    Duration,
    Empirical,
    Fixed,
    Lognormal,
    Normal,
    PerTarget,
    Plan,
    Policy,
    Single,
    Step,
    Target,
    Triangular,
    Uniform,
)

MAX_PARALLELISM_VAR = "Octopus.Action.MaxParallelism"
BYPASS_MUTEX_VAR = "OctopusBypassDeploymentMutex"

IsolationName = Literal["exclusive", "shared"]
StartName = Literal["after-previous", "with-previous"]
ConditionName = Literal["success", "failure", "always"]
AdapterName = Literal["local", "dry-run"]
# For error messages: which values a field of enumerated values accepts.
CHOICES = {
    "target_isolation": IsolationName,
    "isolation": IsolationName,
    "start": StartName,
    "condition": ConditionName,
    "adapter": AdapterName,
}

PosInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
Name = Annotated[str, msgspec.Meta(min_length=1)]
RawDuration = float | str | dict[str, Any]


class Problem(msgspec.Struct, frozen=True):
    path: str
    message: str


class ScenarioError(Exception):
    """A scenario that cannot run. `str()` gives one line per problem, file and path first."""

    def __init__(self, file: str, problems: list[Problem]):
        self.file = file
        self.problems = problems
        super().__init__("\n".join(f"{file}: {p.path}: {p.message}" for p in problems))


class PolicySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_parallel_steps: PosInt | None = None
    max_parallel_targets: PosInt | None = None
    target_isolation: IsolationName | None = None
    fail_fast: bool | None = None


class TargetSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    roles: list[Name] = []
    adapter: AdapterName = "local"


class StepSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    start: StartName = "after-previous"
    roles: list[Name] = []
    run: str | None = None
    duration: RawDuration | None = None
    depends_on: list[Name] | None = None
    condition: ConditionName = "success"
    uses: dict[str, PosInt] = {}
    retries: NonNegInt = 0
    retry_delay: float | str = 0
    timeout: float | str | None = None
    isolation: IsolationName | None = None
    window: PosInt | None = None
    fails: dict[str, NonNegInt] = {}
    failure_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0


class ScenarioSpec(msgspec.Struct, forbid_unknown_fields=True):
    steps: Annotated[list[StepSpec], msgspec.Meta(min_length=1)]
    name: str | None = None
    policy: PolicySpec = PolicySpec()
    variables: dict[str, str | bool | int | float] = {}
    resources: dict[str, PosInt] = {}
    targets: list[TargetSpec] = []


# --- reading -----------------------------------------------------------------------


def read_raw(path: str | Path) -> dict:
    """Parse a scenario file into plain data, by its suffix (.yaml/.yml, .toml, .json)."""
    p = Path(path)
    name = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(name, [Problem("$", f"cannot read file: {e.strerror or e}")]) from None
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text) if text.strip() else None
        elif suffix in (".yaml", ".yml"):
            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        else:
            raise ScenarioError(name, [Problem("$", "expected a .yaml, .yml, .toml or .json file")])
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ScenarioError(name, [Problem("$", f"not valid {suffix[1:].upper()}: {_one_line(e)}")]) from None
    if data is None:
        raise ScenarioError(name, [Problem("$", "the file is empty: expected a scenario with `steps`")])
    if not isinstance(data, dict):
        raise ScenarioError(name, [Problem("$", f"expected a mapping of scenario keys, got {type(data).__name__}")])
    return data


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def load(path: str | Path, overrides: list[str] | None = None) -> Plan:
    """Read, override (`--set KEY=VALUE`), check and resolve a scenario file."""
    raw = read_raw(path)
    if overrides:
        raw = apply_overrides(raw, overrides, file=str(path))
    return resolve(raw, file=str(path))


# --- overrides (--set) ---------------------------------------------------------------

POLICY_FIELDS = tuple(PolicySpec.__struct_fields__)
STEP_FIELDS = tuple(StepSpec.__struct_fields__)


def parse_value(text: str) -> Any:
    """A `--set` value as YAML reads a scalar: `5` is an int, `true` a bool, `2m` a string."""
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str], file: str = "--set") -> dict:
    """Return a copy of `raw` with each `KEY=VALUE` applied.

    KEY is a policy field (`max_parallel_steps`, optionally `policy.` first) or a step field
    `steps.NAME.FIELD` (NAME may contain dots and spaces: the field is after the last dot).
    """
    settings: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ScenarioError(file, [Problem("--set", f"expected KEY=VALUE, got {item!r}")])
        settings[key] = parse_value(text)
    return with_settings(raw, settings, file=file)


def with_settings(raw: dict, settings: dict[str, Any], file: str = "--set") -> dict:
    """Return a copy of `raw` with each setting (KEY -> value, see `set_field`) applied."""
    out = copy.deepcopy(raw)
    for key, value in settings.items():
        set_field(out, key, value, file=file)
    return out


def set_field(raw: dict, key: str, value: Any, file: str = "--set") -> None:
    """Set one override in place (see `apply_overrides`)."""
    if key.startswith("policy."):
        key = key[len("policy.") :]
    if key in POLICY_FIELDS:
        policy = raw.get("policy")
        if not isinstance(policy, dict):
            policy = raw["policy"] = {}
        policy[key] = value
        return
    if key.startswith("steps."):
        name, dot, fld = key[len("steps.") :].rpartition(".")
        if not dot or not name:
            raise ScenarioError(file, [Problem("--set", f"expected steps.NAME.FIELD, got {key!r}")])
        if fld not in STEP_FIELDS:
            raise ScenarioError(
                file, [Problem("--set", f"{key!r}: unknown step field {fld!r}; expected one of {', '.join(STEP_FIELDS)}")]
            )
        steps = raw.get("steps") if isinstance(raw.get("steps"), list) else []
        for step in steps:
            if isinstance(step, dict) and step.get("name") == name:
                if fld == "depends_on" and value is None:
                    step.pop("depends_on", None)
                else:
                    step[fld] = value
                return
        raise ScenarioError(file, [Problem("--set", f"{key!r}: no step named {name!r}")])
    raise ScenarioError(
        file,
        [Problem("--set", f"unknown key {key!r}; expected a policy field ({', '.join(POLICY_FIELDS)}) or steps.NAME.FIELD")],
    )


# --- durations -----------------------------------------------------------------------

_UNIT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([hms])")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DISTS: dict[str, type] = {"lognormal": Lognormal, "normal": Normal, "uniform": Uniform, "triangular": Triangular, "empirical": Empirical}


def parse_seconds(value: Any, path: str) -> float:
    """A fixed span: a number of seconds, or a string such as `90s`, `2m`, `1h30m`, `1.5h`."""
    if isinstance(value, bool):
        raise _Bad(path, f"expected seconds or a duration like '1h30m', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise _Bad(path, f"expected seconds >= 0, got {value!r}")
        return float(value)
    if isinstance(value, str):
        s = value.strip().lower()
        try:
            number = float(s)
        except ValueError:
            pass
        else:
            if number >= 0:
                return number
        compact = s.replace(" ", "")
        parts = _UNIT_RE.findall(compact)
        if parts and "".join(n + u for n, u in parts) == compact and len({u for _, u in parts}) == len(parts):
            return sum(float(n) * _UNITS[u] for n, u in parts)
    raise _Bad(path, f"expected seconds or a duration like '90s', '2m', '1h30m', got {value!r}")


class _Bad(Exception):
    def __init__(self, path: str, message: str):
        self.problem = Problem(path, message)


def _parse_single(value: Any, path: str) -> Single:
    if isinstance(value, dict):
        kind = value.get("dist")
        cls = _DISTS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise _Bad(f"{path}.dist", f"expected one of {', '.join(_DISTS)}, got {kind!r}")
        if cls is Empirical:
            return _parse_empirical(value, path)
        params = {k: v for k, v in value.items() if k != "dist"}
        fields = cls.__struct_fields__
        unknown = sorted(set(params) - set(fields))
        missing = [f for f in fields if f not in params]
        if unknown or missing:
            raise _Bad(path, f"a {kind} duration takes exactly {', '.join(fields)}" + (f"; unknown {', '.join(unknown)}" if unknown else "") + (f"; missing {', '.join(missing)}" if missing else ""))
        nums = {k: parse_seconds(params[k], f"{path}.{k}") for k in fields}
        _check_dist(cls, nums, path)
        return cls(**nums)
    return Fixed(parse_seconds(value, path))


def _parse_empirical(value: dict, path: str) -> Empirical:
    """`{dist: empirical, samples: [...]}`: recorded durations, at least one (SPEC §5)."""
    unknown = sorted(str(k) for k in value if k not in ("dist", "samples"))
    if unknown:
        raise _Bad(path, f"an empirical duration takes exactly samples; unknown {', '.join(unknown)}")
    samples = value.get("samples")
    if not isinstance(samples, list) or not samples:
        raise _Bad(f"{path}.samples", "expected a non-empty list of durations")
    return Empirical(tuple(sorted(parse_seconds(v, f"{path}.samples[{i}]") for i, v in enumerate(samples))))


def _check_dist(cls: type, p: dict[str, float], path: str) -> None:
    if cls is Lognormal and not (0 < p["median"] <= p["p95"]):
        raise _Bad(path, "a lognormal duration needs 0 < median <= p95")
    if cls is Uniform and not p["low"] <= p["high"]:
        raise _Bad(path, "a uniform duration needs low <= high")
    if cls is Triangular and not p["low"] <= p["mode"] <= p["high"]:
        raise _Bad(path, "a triangular duration needs low <= mode <= high")


def parse_duration(value: Any, path: str, target_names: set[str]) -> Duration:
    """Any duration of SPEC §1: seconds, a unit string, a per-target map, a distribution."""
    if isinstance(value, dict) and "dist" not in value:
        by_target: dict[str, Single] = {}
        default = None
        for key, v in value.items():
            sub = f"{path}.{key}" if _plain_key(key) else f"{path}[{json.dumps(key)}]"
            if key == "default":
                default = _parse_single(v, sub)
            elif key in target_names or key == "server":
                by_target[key] = _parse_single(v, sub)
            else:
                raise _Bad(sub, f"expected a target name, 'server' or 'default', got {key!r}")
        return PerTarget(by_target=by_target, default=default)
    return _parse_single(value, path)


def _plain_key(key: Any) -> bool:
    return isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key) is not None


# --- resolving ------------------------------------------------------------------------


def _msgspec_problem(e: msgspec.ValidationError) -> Problem:
    text = str(e)
    message, sep, where = text.rpartition(" - at `")
    if sep:
        where = where.rstrip("`")
        field = where.rsplit(".", 1)[-1]
        if message.startswith("Invalid enum value") and field in CHOICES:
            got = message[len("Invalid enum value ") :]
            return Problem(where, f"expected one of {', '.join(get_args(CHOICES[field]))}, got {got}")
        if message == "Expected `str`, got `bool`":
            message += " (YAML reads yes/no/on/off/true/false as booleans: quote the value)"
        return Problem(where, _lower_first(message))
    return Problem("$", _lower_first(text))


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s else s


def resolve(raw: dict, file: str = "<scenario>") -> Plan:
    """Check plain scenario data and resolve it into a `Plan` (raises `ScenarioError`)."""
    try:
        spec = msgspec.convert(raw, ScenarioSpec)
    except msgspec.ValidationError as e:
        raise ScenarioError(file, [_msgspec_problem(e)]) from None
    problems: list[Problem] = []
    plan = _resolve(spec, file, problems)
    if problems:
        raise ScenarioError(file, problems)
    assert plan is not None
    return plan


def _truthy(text: str) -> bool | None:
    t = text.strip().lower()
    return True if t in ("true", "1", "yes") else False if t in ("false", "0", "no", "") else None


def _resolve(spec: ScenarioSpec, file: str, problems: list[Problem]) -> Plan | None:
    def bad(path: str, message: str) -> None:
        problems.append(Problem(path, message))

    # Policy: defaults < Octopus variables < explicit policy fields.
    policy = {"max_parallel_steps": 10, "max_parallel_targets": 10, "target_isolation": "exclusive", "fail_fast": False}
    variables = {k: (str(v) if not isinstance(v, bool) else ("True" if v else "False")) for k, v in spec.variables.items()}
    if MAX_PARALLELISM_VAR in variables:
        text = variables[MAX_PARALLELISM_VAR].strip()
        if text.isdigit() and int(text) >= 1:
            policy["max_parallel_steps"] = policy["max_parallel_targets"] = int(text)
        else:
            bad(f'$.variables["{MAX_PARALLELISM_VAR}"]', f"expected an integer >= 1, got {text!r}")
    if BYPASS_MUTEX_VAR in variables:
        flag = _truthy(variables[BYPASS_MUTEX_VAR])
        if flag is None:
            bad(f"$.variables.{BYPASS_MUTEX_VAR}", f"expected True or False, got {variables[BYPASS_MUTEX_VAR]!r}")
        elif flag:
            policy["target_isolation"] = "shared"
    for key in POLICY_FIELDS:
        value = getattr(spec.policy, key)
        if value is not None:
            policy[key] = value

    targets: list[Target] = []
    seen_targets: dict[str, int] = {}
    for i, t in enumerate(spec.targets):
        if t.name in seen_targets:
            bad(f"$.targets[{i}].name", f"duplicate target name {t.name!r} (first at $.targets[{seen_targets[t.name]}])")
        seen_targets.setdefault(t.name, i)
        targets.append(Target(name=t.name, roles=tuple(t.roles), adapter=t.adapter))
    target_names = set(seen_targets)
    by_role: dict[str, list[str]] = {}
    for t in targets:
        for r in t.roles:
            by_role.setdefault(r, []).append(t.name)

    steps: list[Step] = []
    seen_steps: dict[str, int] = {}
    for i, s in enumerate(spec.steps):
        at = f"$.steps[{i}]"
        if s.name in seen_steps:
            bad(f"{at}.name", f"duplicate step name {s.name!r} (first at $.steps[{seen_steps[s.name]}])")
        if s.start == "with-previous":
            if i == 0:
                bad(f"{at}.start", "the first step cannot be 'with-previous': there is no previous step")
            if s.depends_on is not None:
                bad(f"{at}.start", "a step cannot be both 'with-previous' and have 'depends_on'; use one")
        if s.depends_on is not None:
            for j, dep in enumerate(s.depends_on):
                if dep == s.name:
                    bad(f"{at}.depends_on[{j}]", f"a step cannot depend on itself ({dep!r})")
                elif dep not in seen_steps:
                    later = any(o.name == dep for o in spec.steps[i + 1 :])
                    bad(
                        f"{at}.depends_on[{j}]",
                        f"step {dep!r} comes later in the file; depends_on must name earlier steps"
                        if later
                        else f"no step named {dep!r}",
                    )
        seen_steps.setdefault(s.name, i)
        for res, units in s.uses.items():
            cap = spec.resources.get(res)
            if cap is None:
                bad(f"{at}.uses.{res}", f"no resource named {res!r} is declared in $.resources")
            elif units > cap:
                bad(f"{at}.uses.{res}", f"uses {units} units but {res!r} has capacity {cap}")
        server = not s.roles
        matched = {t for r in s.roles for t in by_role.get(r, ())} if s.fails else set()
        for key in s.fails:
            ok = key == "*" or (key == "server" if server else key in target_names)
            if not ok:
                expected = "'server' or '*' (this step has no roles)" if server else "a target name or '*'"
                bad(f"{at}.fails.{key}" if _plain_key(key) else f"{at}.fails[{json.dumps(key)}]", f"expected {expected}, got {key!r}")
            elif key in target_names and key not in matched:
                bad(f"{at}.fails.{key}", f"target {key!r} has none of this step's roles {list(s.roles)}")
        duration = None
        try:
            if s.duration is not None:
                duration = parse_duration(s.duration, f"{at}.duration", target_names)
            retry_delay = parse_seconds(s.retry_delay, f"{at}.retry_delay")
            timeout = parse_seconds(s.timeout, f"{at}.timeout") if s.timeout is not None else None
        except _Bad as e:
            problems.append(e.problem)
            continue
        if timeout is not None and timeout <= 0:
            bad(f"{at}.timeout", "expected a timeout > 0")
        steps.append(
            Step(
                name=s.name,
                start=s.start,
                roles=tuple(s.roles),
                run=s.run,
                duration=duration,
                depends_on=tuple(s.depends_on) if s.depends_on is not None else None,
                condition=s.condition,
                uses=dict(s.uses),
                retries=s.retries,
                retry_delay=retry_delay,
                timeout=timeout,
                isolation=s.isolation,
                window=s.window,
                fails=dict(s.fails),
                failure_rate=s.failure_rate,
            )
        )
    if problems:
        return None
    return Plan(
        name=spec.name,
        policy=Policy(**policy),
        variables=variables,
        resources=dict(spec.resources),
        targets=tuple(targets),
        steps=tuple(steps),
        source=file,
    )


def warnings(plan: Plan) -> list[str]:
    """Things that run but are probably not what was meant (a role no target has)."""
    out = []
    all_roles = {r for t in plan.targets for r in t.roles}
    for i, s in enumerate(plan.steps):
        if s.roles and not (set(s.roles) & all_roles):
            out.append(f"$.steps[{i}] {s.name!r}: no target has any of the roles {list(s.roles)}; the step will succeed at once")
    return out
