"""Scenario files (docs/rules.md §1): read YAML/TOML/JSON, check every key, resolve into a `Plan`.

Two layers. The `*Spec` structs below are the file's schema: msgspec checks types and
forbids unknown keys, and its errors already carry a JSON path (`$.steps[2].window`).
Then `_resolve` checks what a schema cannot (duplicate names, references, durations)
and builds the `Plan` the core runs. Every problem becomes a `ScenarioError` naming the
file, the path and what was expected; nothing runs on a bad file.
"""

from __future__ import annotations

import copy
import errno
import json
import math
import os
import re
import shlex
import stat
import tomllib
import unicodedata
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
# For error messages: which values a field of enumerated values accepts.
CHOICES = {
    "target_isolation": IsolationName,
    "isolation": IsolationName,
    "start": StartName,
    "condition": ConditionName,
}

PosInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
Name = Annotated[str, msgspec.Meta(min_length=1)]
RawDuration = float | str | dict[str, Any]


class Problem(msgspec.Struct, frozen=True):
    path: str
    message: str
    origin: str | None = None  # "--set KEY=VALUE" when an override caused it, not the file


class ScenarioError(Exception):
    """A scenario that cannot run. `str()` gives one line per problem, file (or the
    `--set` that caused it) and path first."""

    def __init__(self, file: str, problems: list[Problem]):
        self.file = file
        self.problems = problems
        super().__init__("\n".join(": ".join(x for x in (p.origin or file, p.path, p.message) if x) for p in problems))


class PolicySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_parallel_steps: PosInt | None = None
    max_parallel_targets: PosInt | None = None
    target_isolation: IsolationName | None = None
    fail_fast: bool | None = None


class TargetSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    roles: list[Name] = []
    adapter: Name = "local"  # any installed adapter (SPEC §6): `abreast run` checks the name
    # Remote targets (SPEC §6): the ssh adapter's fields; plug-ins may read them too.
    host: Name | None = None
    user: Name | None = None
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    identity_file: Name | None = None
    workdir: Name | None = None
    ssh_options: dict[str, str | int | float | bool] | list[str] | str = {}


REMOTE_FIELDS = ("host", "user", "port", "identity_file", "workdir", "ssh_options")
_OPTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def _ssh_options(value: dict | list | str, path: str, bad: Any) -> dict[str, str]:
    """`ssh_options` as ssh's `-o NAME=VALUE`: a mapping, a list of `NAME=VALUE` (or
    `NAME VALUE`) strings, or one string of them as on ssh's command line (`-o` may
    stay, as in Ansible's ssh_extra_args); YAML booleans read as yes/no."""
    items: list[tuple[str, Any, str]] = []
    if isinstance(value, dict):
        items = [(k, v, f"{path}.{k}" if _plain_key(k) else f"{path}[{json.dumps(k)}]") for k, v in value.items()]
    else:
        if isinstance(value, str):
            try:
                entries = shlex.split(value)
            except ValueError as e:
                bad(path, f"cannot read the options: {e}")
                return {}
        else:
            entries = value
        for j, entry in enumerate(entries):
            entry = entry.strip()
            if entry == "-o":
                continue
            if entry.startswith("-o"):
                entry = entry[2:].strip()
            key, sep, rest = entry.partition("=")
            if not sep:
                key, _, rest = entry.partition(" ")
            items.append((key.strip(), rest.strip(), path if isinstance(value, str) else f"{path}[{j}]"))
    out: dict[str, str] = {}
    for key, v, at in items:
        text = ("yes" if v else "no") if isinstance(v, bool) else str(v)
        if not _OPTION_NAME.fullmatch(key):
            bad(at, f"expected an ssh option name such as ServerAliveInterval, got {key!r}")
        elif text == "" or re.search(r"[\x00-\x1f]", text):
            bad(at, f"expected a one-line value for {key}, got {text!r}")
        else:
            out[key] = text
    return out


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

# A scenario is a small text file: the 1,000-target example is 43 kB. Anything bigger
# than this is not one (and reading a device such as /dev/zero would never end).
MAX_SCENARIO_BYTES = 16 * 1024 * 1024


def _read_text(path: str | Path) -> str:
    """The UTF-8 text of a scenario file (a BOM is allowed), or `ScenarioError` naming
    the file: what the path is is checked before it is read (a device, a folder or a
    FIFO is refused, so a read never blocks or runs forever), and it is read up to
    `MAX_SCENARIO_BYTES`."""
    name = str(path)

    def bad(message: str) -> ScenarioError:
        return ScenarioError(name, [Problem("$", message)])

    try:
        with open(path, "rb", opener=open_regular) as f:
            # The size it says first; then a bounded read (a /proc file says 0).
            data = f.read(MAX_SCENARIO_BYTES + 1) if os.fstat(f.fileno()).st_size <= MAX_SCENARIO_BYTES else None
    except OSError as e:
        raise bad(f"cannot read file: {e.strerror or e}") from None
    if data is None or len(data) > MAX_SCENARIO_BYTES:
        raise bad(f"the file is larger than {MAX_SCENARIO_BYTES // (1024 * 1024)} MiB: that is not a scenario")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise bad(f"not UTF-8 text: byte 0x{data[e.start]:02x} at line {line} (save the file as UTF-8)") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise bad(f"not a text file: a NUL character at line {line}")
    return text


class NotRegularFile(OSError):
    """What `open_regular` raises: `strerror` says what the path is instead."""

    def __init__(self, kind: str):
        super().__init__(errno.EINVAL, f"not a regular file ({kind})")


def open_regular(path: str, flags: int) -> int:
    """An opener for `open` that refuses anything but a regular file (a device such as
    /dev/zero, a folder, a FIFO) before a byte is read: O_NONBLOCK so that opening a
    FIFO cannot block either."""
    fd = os.open(path, flags | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode):
                raise NotRegularFile("a folder")
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                raise NotRegularFile("a device")
            raise NotRegularFile("a FIFO" if stat.S_ISFIFO(mode) else "a socket or other special file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_raw(path: str | Path) -> dict:
    """Parse a scenario file into plain data, by its suffix (.yaml/.yml, .toml, .json).

    A key given twice in one mapping is an error (every format would otherwise keep one
    of the two silently)."""
    p = Path(path)
    name = str(path)
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".json", ".yaml", ".yml"):
        raise ScenarioError(name, [Problem("$", "expected a .yaml, .yml, .toml or .json file")])
    text = _read_text(p)
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = _json_loads(text) if text.strip() else None
        else:
            data = _yaml_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ScenarioError(name, [Problem("$", f"not valid {suffix[1:].upper()}: {_toml_hint(e, text)}")]) from None
    except _Bad as e:
        raise ScenarioError(name, [e.problem]) from None
    except RecursionError:
        raise ScenarioError(name, [Problem("$", "nested too deeply to be a scenario")]) from None
    if data is None:
        raise ScenarioError(name, [Problem("$", "the file is empty: expected a scenario with `steps`")])
    if not isinstance(data, dict):
        raise ScenarioError(name, [Problem("$", f"expected a mapping of scenario keys, got {type(data).__name__}")])
    return data


def _key_path(path: str, key: Any) -> str:
    return f"{path}.{key}" if _plain_key(key) else f"{path}[{json.dumps(key, default=str)}]"


_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml_load(text: str) -> Any:
    """`yaml.safe_load`, refusing a key given twice in one mapping (YAML says keys are
    unique; PyYAML keeps the last). Aliases are walked once, merge keys (`<<`) are not
    duplicates of the keys beside them."""
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        seen: set[int] = set()
        stack: list[tuple[yaml.Node, str]] = [(node, "$")]
        while stack:
            n, path = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if isinstance(n, yaml.SequenceNode):
                stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(n.value))))
            elif isinstance(n, yaml.MappingNode):
                lines: dict[Any, int] = {}
                children = []
                for k, v in n.value:
                    if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                        key = loader.construct_object(k)
                        try:
                            first = lines.get(key)
                        except TypeError:
                            first = None
                        if first is not None:
                            raise _Bad(
                                _key_path(path, key),
                                f"duplicate key {key!r} (lines {first} and {k.start_mark.line + 1}): a mapping takes each key once",
                            )
                        lines[key] = k.start_mark.line + 1
                        children.append((v, _key_path(path, key)))
                    else:
                        children.append((v, path))
                stack.extend(reversed(children))
        return loader.construct_document(node)
    finally:
        loader.dispose()


class _Pairs(dict):
    """A JSON object whose source gave some key twice (found by `_json_loads`)."""

    duplicate: str = ""


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    marked = _Pairs(pairs)
    seen: set[str] = set()
    for k, _ in pairs:
        if k in seen:
            marked.duplicate = k
            break
        seen.add(k)
    return marked


def _json_loads(text: str) -> Any:
    """`json.loads`, refusing a key given twice in one object, named by its path."""
    data = json.loads(text, object_pairs_hook=_json_pairs)
    stack: list[tuple[Any, str]] = [(data, "$")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Pairs):
            raise _Bad(_key_path(path, value.duplicate), f"duplicate key {value.duplicate!r}: an object takes each key once")
        if isinstance(value, dict):
            stack.extend((v, _key_path(path, k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
    return data


def _toml_hint(e: Exception, text: str) -> str:
    """TOML refuses a key given twice ("Cannot overwrite a value"); say which key, and
    where: the table it is in (the last `[table]` or `[[array]]` header above it)."""
    message = _one_line(e)
    found = re.search(r"Cannot overwrite a value \(at line (\d+)", message)
    lines = text.splitlines()
    n = int(found.group(1)) if found else 0
    if not 0 < n <= len(lines) or "=" not in lines[n - 1]:
        return message
    key = lines[n - 1].split("=", 1)[0].strip().strip("\"'")
    table, counts = "$", {}
    for line in lines[: n - 1]:
        header = re.match(r"\s*(\[\[?)\s*([^\]]+?)\s*\]", line)
        if header:
            name = header.group(2).replace('"', "")
            if header.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
                table = f"$.{name}[{counts[name]}]"
            else:
                table = f"$.{name}"
    return f"duplicate key {key!r} at line {n} ({_key_path(table, key)}): a table takes each key once"


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def load(path: str | Path, overrides: list[str] | None = None) -> Plan:
    """Read, override (`--set KEY=VALUE`), check and resolve a scenario file. A problem
    that an override caused names that `--set`, not the file."""
    raw = read_raw(path)
    if not overrides:
        return resolve(raw, file=str(path))
    settings, origins = parse_overrides(raw, overrides)
    return resolve_settings(raw, settings, file=str(path), origins=origins)


# --- overrides (--set) ---------------------------------------------------------------

POLICY_FIELDS = tuple(PolicySpec.__struct_fields__)
STEP_FIELDS = tuple(StepSpec.__struct_fields__)


def parse_value(text: str) -> Any:
    """A `--set` value as YAML reads a scalar: `5` is an int, `true` a bool, `2m` a string."""
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def split_setting(item: str, raw: dict | None = None) -> tuple[str, str] | None:
    """`KEY=VALUE` -> (KEY, VALUE text), or None without a `=`. A step's name may itself
    hold `=`: the key ends at the first `=` that leaves a key `raw` has."""
    positions = [i for i, c in enumerate(item) if c == "="]
    if not positions:
        return None
    for i in positions:
        key = item[:i].strip()
        if _known_key(key, raw):
            return key, item[i + 1 :]
    i = positions[0]
    return item[:i].strip(), item[i + 1 :]


def _known_key(key: str, raw: dict | None) -> bool:
    key = key.removeprefix("policy.")
    if key in POLICY_FIELDS:
        return True
    name, dot, fld = key.removeprefix("steps.").rpartition(".")
    if not key.startswith("steps.") or not dot or fld not in STEP_FIELDS:
        return False
    steps = raw.get("steps") if isinstance(raw, dict) else None
    return isinstance(steps, list) and any(isinstance(s, dict) and s.get("name") == name for s in steps)


def parse_overrides(raw: dict, overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """`--set KEY=VALUE` items -> (KEY -> value, KEY -> "--set KEY=VALUE" for messages)."""
    settings: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for item in overrides:
        found = split_setting(item, raw)
        if found is None or not found[0]:
            raise ScenarioError("--set", [Problem("", f"expected KEY=VALUE, got {item!r}", origin=f"--set {item}")])
        key, text = found
        settings[key] = parse_value(text)
        origins[key] = f"--set {item}"
    return settings, origins


def apply_overrides(raw: dict, overrides: list[str], file: str = "--set") -> dict:
    """Return a copy of `raw` with each `KEY=VALUE` applied.

    KEY is a policy field (`max_parallel_steps`, optionally `policy.` first) or a step field
    `steps.NAME.FIELD` (NAME may contain dots and spaces: the field is after the last dot).
    """
    settings, origins = parse_overrides(raw, overrides)
    return with_settings(raw, settings, file=file, origins=origins)


def with_settings(raw: dict, settings: dict[str, Any], file: str = "--set", origins: dict[str, str] | None = None) -> dict:
    """Return a copy of `raw` with each setting (KEY -> value, see `set_field`) applied."""
    return _with_settings(raw, settings, file, origins)[0]


def _with_settings(raw: dict, settings: dict[str, Any], file: str, origins: dict[str, str] | None) -> tuple[dict, dict[str, str]]:
    out = copy.deepcopy(raw)
    paths: dict[str, str] = {}  # the path each setting wrote -> its origin
    for key, value in settings.items():
        origin = (origins or {}).get(key) or f"--set {key}={show_value(value)}"
        try:
            paths[set_field(out, key, value)] = origin
        except ScenarioError as e:
            raise ScenarioError(file, [msgspec.structs.replace(p, origin=origin, path="") for p in e.problems]) from None
    return out, paths


def resolve_settings(raw: dict, settings: dict[str, Any], file: str = "<scenario>", origins: dict[str, str] | None = None) -> Plan:
    """`resolve` the scenario with `settings` applied; a problem under a path a setting
    wrote (or in the step it changed) names that setting as its origin."""
    changed, paths = _with_settings(raw, settings, file, origins)
    try:
        return resolve(changed, file=file)
    except ScenarioError as e:
        raise ScenarioError(file, [_attribute(p, paths) for p in e.problems]) from None


def _attribute(p: Problem, paths: dict[str, str]) -> Problem:
    def under(path: str, top: str) -> bool:
        return path == top or path.startswith((top + ".", top + "["))

    for top, origin in paths.items():
        if under(p.path, top):
            return msgspec.structs.replace(p, origin=origin)
    for top, origin in paths.items():  # the step it changed: with-previous beside depends_on
        step = re.match(r"\$\.steps\[\d+\]", top)
        if step and under(p.path, step.group(0)):
            return msgspec.structs.replace(p, origin=origin)
    return p


def show_value(value: Any) -> str:
    """A setting's value as it would be typed after `--set KEY=` (YAML flow style)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and parse_value(value) != value:
        return json.dumps(value, ensure_ascii=False)  # "yes", "12", "null": text, quoted
    return str(value)


def set_field(raw: dict, key: str, value: Any, file: str = "--set") -> str:
    """Set one override in place (see `apply_overrides`); return the path it wrote."""
    if key.startswith("policy."):
        key = key[len("policy.") :]
    if key in POLICY_FIELDS:
        policy = raw.get("policy")
        if not isinstance(policy, dict):
            policy = raw["policy"] = {}
        policy[key] = value
        return f"$.policy.{key}"
    if key.startswith("steps."):
        name, dot, fld = key[len("steps.") :].rpartition(".")
        if not dot or not name:
            raise ScenarioError(file, [Problem("--set", f"expected steps.NAME.FIELD, got {key!r}")])
        if fld not in STEP_FIELDS:
            raise ScenarioError(
                file, [Problem("--set", f"{key!r}: unknown step field {fld!r}; expected one of {', '.join(STEP_FIELDS)}")]
            )
        steps = raw.get("steps") if isinstance(raw.get("steps"), list) else []
        for i, step in enumerate(steps):
            if isinstance(step, dict) and step.get("name") == name:
                if fld == "depends_on" and value is None:
                    step.pop("depends_on", None)
                else:
                    step[fld] = value
                return f"$.steps[{i}].{fld}"
        raise ScenarioError(file, [Problem("--set", f"{key!r}: no step named {name!r}")])
    raise ScenarioError(
        file,
        [Problem("--set", f"unknown key {key!r}; expected a policy field ({', '.join(POLICY_FIELDS)}) or steps.NAME.FIELD")],
    )


# --- durations -----------------------------------------------------------------------

_UNIT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([hms])")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DISTS: dict[str, type] = {"lognormal": Lognormal, "normal": Normal, "uniform": Uniform, "triangular": Triangular, "empirical": Empirical}


# The longest span a scenario may give (about 31.7 years): sums of a million of them stay
# far from overflowing to infinity, which no deployment's clock can reach.
MAX_SECONDS = 1e9


def parse_seconds(value: Any, path: str) -> float:
    """A fixed span: a number of seconds, or a string such as `90s`, `2m`, `1h30m`, `1.5h`.
    Finite, from 0 to `MAX_SECONDS`."""
    if isinstance(value, bool):
        raise _Bad(path, f"expected seconds or a duration like '1h30m', got {value!r}")
    if isinstance(value, int | float):
        return _span(float(value), value, path)
    if isinstance(value, str):
        s = value.strip().lower()
        try:
            number = float(s)
        except ValueError:
            pass
        else:
            if number >= 0 or not math.isfinite(number):
                return _span(number, value, path)
        compact = s.replace(" ", "")
        parts = _UNIT_RE.findall(compact)
        if parts and "".join(n + u for n, u in parts) == compact and len({u for _, u in parts}) == len(parts):
            return _span(sum(float(n) * _UNITS[u] for n, u in parts), value, path)
    raise _Bad(path, f"expected seconds or a duration like '90s', '2m', '1h30m', got {value!r}")


def _span(seconds: float, given: Any, path: str) -> float:
    if not math.isfinite(seconds):
        raise _Bad(path, f"expected a finite number of seconds, got {given!r}")
    if seconds < 0:
        raise _Bad(path, f"expected seconds >= 0, got {given!r}")
    if seconds > MAX_SECONDS:
        raise _Bad(path, f"expected at most {MAX_SECONDS:.0e} seconds (about 31 years), got {given!r}")
    return seconds


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
    if cls is Lognormal:
        # The farthest draw (about 9.4 standard deviations out, a 64-bit uniform's edge)
        # must be a finite number of seconds.
        mu = math.log(p["median"])
        if mu + 10 * (math.log(p["p95"]) - mu) / 1.6448536269514722 > 700:
            raise _Bad(path, "a lognormal duration this wide (p95 / median) draws spans too long to simulate")
    if cls is Uniform and not p["low"] <= p["high"]:
        raise _Bad(path, "a uniform duration needs low <= high")
    if cls is Triangular and not p["low"] <= p["mode"] <= p["high"]:
        raise _Bad(path, "a triangular duration needs low <= mode <= high")


def parse_duration(value: Any, path: str, target_names: set[str]) -> Duration:
    """Any duration of docs/rules.md §1: seconds, a unit string, a per-target map, a distribution."""
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
    key = re.fullmatch(r"(.*) - at `key` in `(.*)`", text)
    if key:  # a mapping key of the wrong type (YAML reads `1:` or `yes:` as a number, a bool)
        return Problem(key.group(2), f"every key must be text: {_lower_first(key.group(1))} (quote the key)")
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
    found = _unreadable_value(raw)
    if found is not None:
        raise ScenarioError(file, [found])
    try:
        spec = msgspec.convert(raw, ScenarioSpec)
    except msgspec.ValidationError as e:
        raise ScenarioError(file, [_msgspec_problem(e)]) from None
    except RecursionError:
        raise ScenarioError(file, [Problem("$", "nested too deeply to be a scenario")]) from None
    problems: list[Problem] = []
    plan = _resolve(spec, file, problems)
    if problems:
        raise ScenarioError(file, problems)
    assert plan is not None
    return plan


def _unreadable_value(raw: Any) -> Problem | None:
    """The first value no field can take, wherever it is: a number that is not finite
    (`.nan`, `.inf`, `1.0e999`, JSON `NaN`, TOML `inf`), or text with a NUL or a lone
    surrogate (neither can be stored or passed to a command)."""
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(raw, "$")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return Problem(path, f"expected a finite number, got {value!r}")
        elif isinstance(value, str):
            bad = _bad_text(value)
            if bad:
                return Problem(path, f"{bad} in {value!r}")
        elif isinstance(value, dict | list | tuple):
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, dict):
                for k, v in reversed(list(value.items())):
                    sub = _key_path(path, k)
                    bad = _bad_text(k) if isinstance(k, str) else None
                    if bad:
                        return Problem(sub, f"{bad} in the key {k!r}")
                    stack.append((v, sub))
            else:
                stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(value))))
    return None


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character"
    if any("\ud800" <= c <= "\udfff" for c in text):
        return "a lone surrogate (not Unicode text)"
    return None


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a step, target, role or resource (None: it can). Names are
    printed in tables and logs and typed on command lines: no control characters."""
    for c in name:
        if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp"):
            return f"a name cannot contain control characters (found {c!r} in {name!r})"
    return None


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

    def check_name(path: str, name: str) -> None:
        why = name_problem(name)
        if why:
            bad(path, why)

    if spec.name is not None:
        check_name("$.name", spec.name)
    for res in spec.resources:
        check_name(_key_path("$.resources", res), res)
    targets: list[Target] = []
    seen_targets: dict[str, int] = {}
    for i, t in enumerate(spec.targets):
        check_name(f"$.targets[{i}].name", t.name)
        for j, role in enumerate(t.roles):
            check_name(f"$.targets[{i}].roles[{j}]", role)
        if t.name in seen_targets:
            bad(f"$.targets[{i}].name", f"duplicate target name {t.name!r} (first at $.targets[{seen_targets[t.name]}])")
        seen_targets.setdefault(t.name, i)
        options = _ssh_options(t.ssh_options, f"$.targets[{i}].ssh_options", bad)
        if t.adapter == "local":
            for f in REMOTE_FIELDS:
                if getattr(t, f):
                    bad(f"$.targets[{i}].{f}", f"the local adapter runs commands on this machine: set `adapter: ssh` to reach {t.name!r} there")
        targets.append(
            Target(
                name=t.name, roles=tuple(t.roles), adapter=t.adapter, host=t.host, user=t.user, port=t.port,
                identity_file=t.identity_file, workdir=t.workdir, ssh_options=options,
            )
        )
    target_names = set(seen_targets)
    by_role: dict[str, list[str]] = {}
    for t in targets:
        for r in t.roles:
            by_role.setdefault(r, []).append(t.name)

    steps: list[Step] = []
    seen_steps: dict[str, int] = {}
    for i, s in enumerate(spec.steps):
        at = f"$.steps[{i}]"
        check_name(f"{at}.name", s.name)
        for j, role in enumerate(s.roles):
            check_name(f"{at}.roles[{j}]", role)
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


# --- recorded plans ----------------------------------------------------------------------


def _raw_duration(d: Any) -> Any:
    if isinstance(d, Fixed):
        return d.seconds
    if isinstance(d, PerTarget):
        out: dict[str, Any] = {k: _raw_duration(v) for k, v in d.by_target.items()}
        if d.default is not None:
            out["default"] = _raw_duration(d.default)
        return out
    return msgspec.to_builtins(d)  # a distribution: {dist: ..., its parameters}


def check_plan(plan: Plan, file: str) -> Plan:
    """A plan recorded in a log (`deployment.started`), checked by every rule a scenario
    file is: it is turned back into scenario data and resolved again. Returns the plan;
    raises `ScenarioError` (paths as in a scenario file, `$.steps[2].window`)."""
    raw: dict[str, Any] = msgspec.to_builtins(msgspec.structs.replace(plan, source=None))
    raw.pop("source", None)
    for step, spec in zip(plan.steps, raw["steps"], strict=True):
        if step.duration is not None:
            spec["duration"] = _raw_duration(step.duration)
    resolved = resolve(raw, file=file)
    if msgspec.structs.replace(resolved, source=plan.source) != plan:
        raise ScenarioError(file, [Problem("$", "the plan does not read back as the scenario it claims to be")])
    return plan
