"""What every importer shares: strict parsing, JSON paths, times, and turning a tool's
record into a scenario and a recorded event log.

An importer reads its tool's files into a `Record` — steps in process order, each with
its executions and their attempts (start, end, outcome, in nanoseconds of UTC) — and a
scenario (plain data, as a scenario file holds it). `finish` fills the scenario's
durations (and injected failures and retries, so `simulate` reproduces the record) from
the record, resolves it, and writes the log: `deployment.started` at 0, every step and
attempt at its recorded time (`at` in seconds since the recorded start, `wall` the
recorded UTC time), `deployment.finished` at the recorded end.

Bad input raises `RecordError`: the file, the JSON path, what was expected.
"""

from __future__ import annotations

import heapq
import json
import math
import statistics
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec
import yaml

from engine.events import (
    DeploymentFinished,
    DeploymentStarted,
    Event,
    ExecutionFinished,
    ExecutionStarted,
    StepFinished,
    StepSkipped,
    StepStarted,
)
from engine.plan import Duration, Fixed, PerTarget, plan_to_builtins
from engine.scenario import ScenarioError, resolve

NS = 1_000_000_000
FAILED = frozenset({"failed", "timed_out"})


class RecordError(ValueError):
    """Bad or partial input: `str()` is `file: $.path: what was expected`."""

    def __init__(self, file: str, path: str, message: str):
        self.file, self.path, self.message = file, path, message
        super().__init__(f"{file}: {path}: {message}" if path else f"{file}: {message}")


# --- JSON paths -----------------------------------------------------------------------


def key(path: str, name: Any) -> str:
    """`$.a` + `b` -> `$.a.b`; a name that is no identifier is quoted: `$.a["b c"]`."""
    name = name if isinstance(name, str) else str(name)
    if name.isidentifier() and name.isascii():
        return f"{path}.{name}"
    return f"{path}[{json.dumps(name, ensure_ascii=False)}]"


def item(path: str, i: int) -> str:
    return f"{path}[{i}]"


# --- strict parsers ---------------------------------------------------------------------


class _Dup(dict):
    """An object that had a key twice (found after parsing, to name its path)."""

    duplicate: str = ""


class _NonFinite:
    def __init__(self, text: str):
        self.text = text


def _decoder() -> tuple[json.JSONDecoder, list[bool]]:
    """A strict decoder, and a flag it raises when it met a duplicate key or a
    non-finite number (then, and only then, the document is walked for the path)."""
    flagged = [False]

    def pairs(items: list[tuple[str, Any]]) -> dict:
        d = dict(items)
        if len(d) != len(items):
            flagged[0] = True
            seen: set[str] = set()
            out = _Dup(items)
            for k, _ in items:
                if k in seen:
                    out.duplicate = k
                    break
                seen.add(k)
            return out
        return d

    def number(text: str) -> Any:
        x = float(text)
        if math.isfinite(x):
            return x
        flagged[0] = True
        return _NonFinite(text)

    def constant(text: str) -> Any:
        flagged[0] = True
        return _NonFinite(text)

    return json.JSONDecoder(object_pairs_hook=pairs, parse_float=number, parse_constant=constant), flagged


def _find_bad(value: Any, path: str) -> tuple[str, str] | None:
    """The path of the first duplicate key or non-finite number, and what is wrong."""
    stack = [(value, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, _Dup):
            return p, f"duplicate key {v.duplicate!r}"
        if isinstance(v, _NonFinite):
            return p, f"expected a finite number, got {v.text}"
        if isinstance(v, dict):
            stack.extend((child, key(p, k)) for k, child in reversed(list(v.items())))
        elif isinstance(v, list):
            stack.extend((child, item(p, i)) for i, child in reversed(list(enumerate(v))))
    return None


def parse_json_documents(text: str, file: str) -> list[Any]:
    """Every JSON document in `text`, one after another (as `gh api --paginate` writes
    pages). Rejects duplicate keys and non-finite numbers (NaN, Infinity, 1e999), naming
    the path; `$[1]` is the second document of several."""
    decoder, flagged = _decoder()
    docs: list[Any] = []
    i, n = 0, len(text)
    ws = " \t\n\r\ufeff"
    while True:
        while i < n and text[i] in ws:
            i += 1
        if i >= n:
            break
        try:
            doc, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise RecordError(file, f"line {e.lineno} column {e.colno}", f"not valid JSON: {e.msg}") from None
        except RecursionError:
            raise RecordError(file, "$", "not valid JSON: nested too deeply") from None
        docs.append(doc)
    if not docs:
        raise RecordError(file, "$", "the file is empty: expected JSON")
    if flagged[0]:
        for d, doc in enumerate(docs):
            found = _find_bad(doc, "$" if len(docs) == 1 else item("$", d))
            if found:
                raise RecordError(file, *found)
    return docs


def parse_json(text: str, file: str) -> Any:
    """One JSON document (see `parse_json_documents`)."""
    docs = parse_json_documents(text, file)
    if len(docs) > 1:
        return docs  # several documents: a list of them, like a list of pages
    return docs[0]


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a mapping key given twice, and reads GitLab's `!reference`."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    for k_node, v_node in node.value:
        k = loader.construct_object(k_node, deep=deep)
        try:
            hash(k)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "found an unhashable key", k_node.start_mark) from None
        if k in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {k!r}", k_node.start_mark)
        out[k] = loader.construct_object(v_node, deep=deep)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_StrictLoader.add_constructor("!reference", lambda loader, node: loader.construct_sequence(node))


def parse_yaml(text: str, file: str) -> Any:
    """YAML (a workflow, a `.gitlab-ci.yml`), refusing duplicate keys."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else "$"
        problem = getattr(e, "problem", None) or str(e)
        raise RecordError(file, where, f"not valid YAML: {' '.join(str(problem).split())}") from None
    return data


def parse_ocl(text: str, file: str) -> dict:
    """Octopus Config-as-Code (`deployment_process.ocl`): HCL, read with python-hcl2.
    Strings come unquoted, heredocs as text, and a dotted property name
    (`Octopus.Action.TargetRoles = "web"`) as itself; a block's body carries
    `"__is_block__": True` (a labelled block is `{label: body}`). A name given twice in
    one block or object is refused."""
    import hcl2
    from hcl2.rules.base import AttributeRule, BlockRule, BodyRule
    from hcl2.rules.containers import ObjectElemRule, ObjectRule
    from lark.exceptions import LarkError

    try:
        tree = hcl2.parses(text, discard_comments=True)
    except LarkError as e:
        line, column = getattr(e, "line", None), getattr(e, "column", None)
        where = f"line {line} column {column}" if line is not None else "$"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = first.split(" at line ")[0].rstrip(".")
        raise RecordError(file, where, f"not valid OCL (HCL): {first}") from None

    def check(node: Any, path: str) -> None:
        if isinstance(node, BodyRule):
            seen: set[str] = set()
            for child in node.children:
                if isinstance(child, AttributeRule):
                    name = ocl_key(child.children[0].serialize())
                    if name in seen:
                        raise RecordError(file, key(path, name), "duplicate key")
                    seen.add(name)
                    check(child, key(path, name))
                elif isinstance(child, BlockRule):
                    parts = [p.serialize() for p in child.children if p is not None and not isinstance(p, BodyRule)]
                    labels = [ocl_key(str(p)) for p in parts if str(p) not in ("{", "}")]
                    where = path
                    for label in labels:
                        where = key(where, label)
                    check(child, where)
                elif child is not None:
                    check(child, path)
            return
        if isinstance(node, ObjectRule):
            seen_keys: set[str] = set()
            for child in node.children:
                if isinstance(child, ObjectElemRule):
                    name = ocl_key(str(child.children[0].serialize()))
                    if name in seen_keys:
                        raise RecordError(file, key(path, name), "duplicate key")
                    seen_keys.add(name)
                    check(child, key(path, name))
            return
        for child in getattr(node, "children", None) or ():
            if child is not None:
                check(child, path)

    check(tree, "$")
    options = hcl2.SerializationOptions(
        with_comments=False, strip_string_quotes=True, preserve_heredocs=False, explicit_blocks=True
    )
    return _ocl_keys(hcl2.serialize(tree, serialization_options=options))


def ocl_key(text: str) -> str:
    """python-hcl2 gives an unquoted dotted key as the expression `${A.B}` and a quoted
    one with its quotes: OCL means the name either way."""
    if text.startswith("${") and text.endswith("}"):
        return text[2:-1]
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


def _ocl_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {ocl_key(k): _ocl_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ocl_keys(v) for v in value]
    return value


# --- paged replies ------------------------------------------------------------------------


def page_list(numbers: Iterable[int]) -> str:
    """[2, 3, 4, 7] -> 'pages 2–4 and 7'; [5] -> 'page 5'."""
    ns = sorted(set(numbers))
    runs: list[list[int]] = []
    for n in ns:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    parts = [f"{r[0]}" if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return ("page " if len(ns) == 1 else "pages ") + text


def split_pages(r: Reader, data: Any, items: str) -> tuple[list[tuple[str, dict]], list[tuple[str, Any]]]:
    """A reply as its pages (`{items: [...], ...}` objects: one, or a list of them) or,
    when it is a plain list of items, no pages and the items with their paths."""
    if isinstance(data, dict):
        return [("$", data)], []
    if isinstance(data, list) and data and all(isinstance(x, dict) and items in x for x in data):
        return [(item("$", i), x) for i, x in enumerate(data)], []
    if isinstance(data, list):
        return [], [(item("$", i), x) for i, x in enumerate(data)]
    raise r.bad("$", f"expected a page ({{{items}: [...]}}), a list of pages, or a list of items; got {_kind(data)}")


def missing_pages(total: int, counts: list[int], numbers: list[int | None], per_page: int | None = None) -> list[int]:
    """The page numbers (1-based) of a paged reply that are not among those given.
    `counts`: items on each page given; `numbers`: each page's number when the reply
    says it, else None (then pages are taken in the order given, a short page last)."""
    size = per_page or max(counts, default=0)
    if size <= 0 or total <= sum(counts):
        return []
    n_pages = math.ceil(total / size)
    have: set[int] = {n for n in numbers if n is not None}
    next_number = 1
    for count, number in zip(counts, numbers, strict=True):
        if number is not None:
            continue
        if count < size:
            have.add(n_pages)  # only the last page is short
        else:
            while next_number in have:
                next_number += 1
            have.add(next_number)
    return [n for n in range(1, n_pages + 1) if n not in have]


# --- typed reading with paths ------------------------------------------------------------


class Reader:
    """Reads one file's parsed data, raising `RecordError` with the file and the path."""

    def __init__(self, file: str):
        self.file = file

    def bad(self, path: str, message: str) -> RecordError:
        return RecordError(self.file, path, message)

    def obj(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            raise self.bad(path, f"expected an object, got {_kind(value)}")
        return value

    def items(self, value: Any, path: str) -> list:
        if not isinstance(value, list):
            raise self.bad(path, f"expected a list, got {_kind(value)}")
        return value

    def field(self, obj: dict, name: str, path: str) -> Any:
        if name not in obj:
            raise self.bad(key(path, name), "missing")
        return obj[name]

    def text(self, obj: dict, name: str, path: str, optional: bool = False) -> Any:
        value = obj.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str) or (not value and not optional):
            raise self.bad(key(path, name), f"expected a non-empty string, got {_kind(value)}")
        return value

    def number(self, obj: dict, name: str, path: str, optional: bool = False, minimum: float | None = 0) -> Any:
        value = obj.get(name)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.bad(key(path, name), f"expected a number, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise self.bad(key(path, name), f"expected a number >= {minimum:g}, got {value!r}")
        return value

    def time(self, obj: dict, name: str, path: str, optional: bool = False) -> int | None:
        """An ISO-8601 time with its offset, as nanoseconds since the epoch (UTC)."""
        value = obj.get(name)
        if value is None and optional:
            return None
        parsed = parse_time(value) if isinstance(value, str) else None
        if parsed is None:
            raise self.bad(key(path, name), f"expected an ISO-8601 time, got {_kind(value)}")
        return parsed

    def millis(self, obj: dict, name: str, path: str, optional: bool = False) -> int | None:
        """Milliseconds (since the epoch, or a span), as nanoseconds."""
        value = obj.get(name)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise self.bad(key(path, name), f"expected milliseconds (a number >= 0), got {_kind(value)}")
        return round(value * 1_000_000)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if isinstance(value, int | float):
        return repr(value)
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(text: str) -> int | None:
    """`2024-12-22T17:11:26Z`, `2016-05-02T16:06:28.639+1000`,
    `2024-05-01T10:00:00.1234567+00:00` -> nanoseconds since the epoch, every digit of
    the fraction kept (up to nanoseconds); None if it is no ISO-8601 time with a date,
    a time and an offset (a time without one is ambiguous)."""
    known = _TIME_OF.get(text)
    if known is not None:
        return known  # one node's end is often the next one's start, to the digit
    fast = _parse_time_fast(text)
    if fast is not None:
        if len(_TIME_OF) > 500_000:
            _TIME_OF.clear()
        _TIME_OF[text] = fast
        return fast
    t = text.strip()
    if "T" not in t and " " not in t:
        return None
    fraction = 0
    dot = t.find(".", 10)
    if dot != -1:
        end = dot + 1
        while end < len(t) and t[end].isdigit():
            end += 1
        digits = t[dot + 1 : end]
        if not digits or len(digits) > 9:
            return None
        fraction = int(digits.ljust(9, "0"))
        t = t[:dot] + t[end:]
    try:
        when = datetime.fromisoformat(t)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000 + fraction


_TIME_OF: dict[str, int] = {}
_MINUTE_OF: dict[str, int | None] = {}  # "2026-03-14T19:26" -> epoch seconds (None: not a time)
_OFFSET_OF: dict[str, int | None] = {}  # "+10:00" -> seconds east of UTC (None: not an offset)


def _cached(cache: dict, key: str, make) -> Any:  # noqa: ANN001
    value = cache.get(key, cache)
    if value is cache:
        value = make(key)
        if len(cache) > 200_000:
            cache.clear()
        cache[key] = value
    return value


def _minute(head: str) -> int | None:
    """`2026-03-14T19:26` -> its epoch seconds (None: no such minute)."""
    if not head.isascii():
        return None
    try:
        when = datetime.fromisoformat(head + ":00+00:00")
    except ValueError:
        return None
    delta = when - _EPOCH
    return delta.days * 86400 + delta.seconds


def _offset(zone: str) -> int | None:
    if zone in ("Z", "z"):
        return 0
    if len(zone) not in (5, 6) or zone[0] not in "+-" or not zone.isascii():
        return None
    hh, mm = zone[1:3], zone[-2:]
    if (len(zone) == 6 and zone[3] != ":") or not (hh.isdigit() and mm.isdigit()) or int(hh) > 23 or int(mm) > 59:
        return None
    return (int(hh) * 3600 + int(mm) * 60) * (1 if zone[0] == "+" else -1)


def _parse_time_fast(t: str) -> int | None:
    """The common shape, `YYYY-MM-DDTHH:MM:SS[.f…](Z|±HH:MM|±HHMM)`, with the second and
    the offset looked up (a log has few of either); None sends anything else down the
    general path."""
    if len(t) < 20 or t[10] != "T":
        return None
    minute = _MINUTE_OF.get(t[:16], -1)
    if minute == -1:
        minute = _cached(_MINUTE_OF, t[:16], _minute)
    sec = t[17:19]
    if minute is None or t[16] != ":" or not (sec.isdigit() and sec.isascii()) or sec > "59":
        return None
    base = minute + int(sec)
    fraction = 0
    if t[19] == ".":
        n = len(t)
        z = n - 1 if t[-1] in "Zz" else n - 6 if t[-6] in "+-" else n - 5 if t[-5] in "+-" else n
        digits = t[20:z]
        if not digits or len(digits) > 9 or not (digits.isdigit() and digits.isascii()):
            return None
        fraction = int(digits) * 10 ** (9 - len(digits))
        zone = t[z:]
    else:
        zone = t[19:]
    offset = _OFFSET_OF.get(zone, -1)
    if offset == -1:
        offset = _cached(_OFFSET_OF, zone, _offset)
    if offset is None:
        return None
    return (base - offset) * NS + fraction


_MINUTE_TEXT: dict[int, str] = {}


def wall_of(ns: int) -> str:
    """Nanoseconds since the epoch -> UTC ISO-8601 with as many fraction digits as needed."""
    seconds, rest = divmod(ns, NS)
    minute, sec = divmod(seconds, 60)
    prefix = _MINUTE_TEXT.get(minute)
    if prefix is None:
        t = time.gmtime(minute * 60)
        prefix = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
        if len(_MINUTE_TEXT) > 100_000:
            _MINUTE_TEXT.clear()
        _MINUTE_TEXT[minute] = prefix
    if rest == 0:
        return f"{prefix}{sec:02d}Z"
    if rest % 1_000_000 == 0:
        return f"{prefix}{sec:02d}.{rest // 1_000_000:03d}Z"
    if rest % 1000 == 0:
        return f"{prefix}{sec:02d}.{rest // 1000:06d}Z"
    return f"{prefix}{sec:02d}.{rest:09d}Z"


# --- the record ---------------------------------------------------------------------------


class Attempt(msgspec.Struct):
    start: int  # ns since the epoch
    end: int
    outcome: str  # succeeded, failed, timed_out, cancelled, interrupted
    error: str | None = None


class Execution(msgspec.Struct):
    target: str | None
    attempts: list[Attempt]


class StepRecord(msgspec.Struct):
    name: str
    outcome: str  # succeeded, failed, cancelled, skipped
    start: int | None = None  # when it was activated (or skipped)
    end: int | None = None
    executions: list[Execution] = []
    reason: str | None = None  # why it was skipped


class Record(msgspec.Struct):
    tool: str
    id: str  # the deployment id of the log
    start: int  # ns: `at` 0
    end: int
    outcome: str  # succeeded, failed, cancelled
    steps: list[StepRecord]
    options: dict = {}  # kept in deployment.started: where it came from, how it was modelled


class Imported(msgspec.Struct):
    scenario: dict
    events: list[Event]
    notes: list[str]
    record: Record


def duration_text(x: float) -> float | int:
    """Seconds as the scenario should show them: whole seconds as ints, else to the ns."""
    r = round(x, 9)
    return int(r) if r == int(r) else r


def fill_durations(scenario: dict, record: Record, notes: list[str]) -> None:
    """Give each step of `scenario` the recorded duration of its executions (the last
    attempt's: the one that ended the execution), `fails` for the attempts that failed and
    `retries` for the attempts made, so that `simulate` reproduces the record."""
    by_name = {s.name: s for s in record.steps}
    holders: dict[str, list[str]] = {}
    for t in scenario.get("targets", []):
        for r in t.get("roles", []):
            holders.setdefault(r, []).append(t["name"])
    for step in scenario["steps"]:
        rec = by_name.get(step["name"])
        if rec is None or "duration" in step:
            continue
        ran = [e for e in rec.executions if e.attempts]
        all_attempts = [(a.end - a.start) / NS for e in ran for a in e.attempts]
        fails: dict[str, int] = {}
        retries = 0
        for e in ran:
            n = sum(1 for a in e.attempts if a.outcome in FAILED)
            if n:
                fails[e.target if e.target is not None else "server"] = n
            retries = max(retries, len(e.attempts) - 1)
        if not step.get("roles"):
            if ran:
                step["duration"] = duration_text((ran[0].attempts[-1].end - ran[0].attempts[-1].start) / NS)
            else:
                step["duration"] = 0
                step["# duration"] = "never ran in this record: put the time it takes here"
        else:
            by_target = {e.target: duration_text((e.attempts[-1].end - e.attempts[-1].start) / NS) for e in ran}
            fanned = {t for r in step["roles"] for t in holders.get(r, ())}
            if not by_target:
                step["duration"] = 0
                step["# duration"] = "never ran in this record: put the time it takes here"
            else:
                duration: dict[str, Any] = dict(by_target)
                if fanned - set(by_target):
                    duration["default"] = duration_text(statistics.median(all_attempts))
                step["duration"] = duration
        if fails:
            step["fails"] = fails
        if retries:
            step["retries"] = max(retries, step.get("retries", 0))


def finish(scenario: dict, record: Record, notes: list[str], file: str) -> Imported:
    """Fill the durations, resolve the scenario, write the log (see the module docstring)."""
    fill_durations(scenario, record, notes)
    # The recorded durations (seconds, or seconds per target) are the record's own
    # numbers: they go into the plan as they are, and resolve checks everything else.
    # (Comments, `# field` keys, are only ever beside a step's fields.)
    recorded: dict[str, Duration] = {}
    steps = []
    for step in scenario["steps"]:
        clean = {k: v for k, v in step.items() if not k.startswith("#")}
        d = clean.get("duration")
        if isinstance(d, int | float) and not isinstance(d, bool) and d >= 0:
            recorded[step["name"]] = Fixed(float(d))
            del clean["duration"]
        elif isinstance(d, dict) and "dist" not in d and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in d.values()):
            default = d.get("default")
            recorded[step["name"]] = PerTarget(
                by_target={t: Fixed(float(v)) for t, v in d.items() if t != "default"},
                default=Fixed(float(default)) if default is not None else None,
            )
            del clean["duration"]
        steps.append(clean)
    try:
        plan = resolve({**scenario, "steps": steps}, file=file)
    except ScenarioError as e:
        raise RecordError(file, "$", f"the record does not make a valid scenario: {e.problems[0].path}: {e.problems[0].message}") from None
    declared = {t.name for t in plan.targets}
    for name, d in recorded.items():
        if isinstance(d, PerTarget) and not set(d.by_target) <= declared | {"server"}:
            unknown = sorted(set(d.by_target) - declared - {"server"})
            raise RecordError(file, "$", f"the record does not make a valid scenario: step {name!r} has durations for undeclared targets {unknown}")
    plan = msgspec.structs.replace(
        plan, steps=tuple(msgspec.structs.replace(s, duration=recorded[s.name]) if s.name in recorded else s for s in plan.steps)
    )
    events = log_of(record, plan_to_builtins(plan), plan.name)
    return Imported(scenario=scenario, events=events, notes=notes, record=record)


def strip_comments(scenario: Any) -> Any:
    """Scenario data without the `# field` comments `dump_yaml` writes beside fields."""
    if isinstance(scenario, dict):
        return {k: strip_comments(v) for k, v in scenario.items() if not (isinstance(k, str) and k.startswith("#"))}
    if isinstance(scenario, list):
        return [strip_comments(v) for v in scenario]
    return scenario


# Within one instant: attempts end, steps end, steps are decided, attempts start.
_END, _STEP_END, _DECIDE, _START = range(4)


def log_of(record: Record, plan: dict, name: str | None) -> list[Event]:
    """The recorded event log. Per step the events keep their causal order (the step
    starts before its attempts, attempts of one execution one after another, the step
    ends after them); a step is decided (started or skipped) after its prerequisites
    ended when they ended by then; otherwise events are merged by time, ends before
    starts at one instant."""
    from engine.core import Core
    from engine.plan import plan_from_builtins

    t0 = record.start
    dep = record.id
    out: list[Event] = []
    out.append(
        DeploymentStarted(
            deployment=dep, seq=1, at=0.0, wall=wall_of(t0), scenario=name, plan=plan, policy=plan["policy"], options=record.options
        )
    )

    def at(ns: int) -> float:
        return (ns - t0) / NS

    steps = record.steps
    started_event, finished_event = ExecutionStarted, ExecutionFinished
    decided = [s.start if s.start is not None else t0 for s in steps]
    finished = []
    for s, step in enumerate(steps):
        if step.outcome == "skipped":
            finished.append(decided[s])
        else:
            ends = [a.end for e in step.executions for a in e.attempts]
            finished.append(max([decided[s]] + ends + ([step.end] if step.end is not None else [])))
    # Prerequisites that ended by the time a step was decided hold its decision back.
    core = Core(plan_from_builtins(plan), dep)
    index = {n: i for i, n in enumerate(core.step_names)}
    waiting = [0] * len(steps)
    released_by: list[list[int]] = [[] for _ in steps]
    position = {step.name: s for s, step in enumerate(steps)}
    for s, step in enumerate(steps):
        i = index.get(step.name)
        if i is None:
            continue
        explicit = core.prereq_explicit[i]
        prefix = core.prereq_prefix[i]
        needed = explicit if explicit is not None else range(prefix if prefix is not None else 0)
        for p_i in set(needed):
            p = position.get(core.step_names[p_i])
            if p is not None and finished[p] <= decided[s]:
                waiting[s] += 1
                released_by[p].append(s)
    # At one instant, an earlier step that ended then ended before a later one was decided
    # (the decision pass runs after the completions: a step slot may have been freed).
    ending_at: dict[int, list[int]] = {}
    for p in range(len(steps)):
        ending_at.setdefault(finished[p], []).append(p)
    for s in range(len(steps)):
        for p in ending_at.get(decided[s], ()):
            if p < s and decided[p] <= decided[s] and s not in released_by[p]:
                waiting[s] += 1
                released_by[p].append(s)

    # (ns, phase, tie, step, execution, position); `tie` puts an attempt that starts and
    # ends at one instant before the others starting then: it must have let go of its
    # target or resource before they took it.
    heap: list[tuple[int, int, int, int, int, int]] = []
    left = [0] * len(steps)
    for s in range(len(steps)):
        if waiting[s] == 0:
            heapq.heappush(heap, (decided[s], _DECIDE, 0, s, -1, 0))

    def terminal(s: int) -> None:
        for d in released_by[s]:
            waiting[d] -= 1
            if waiting[d] == 0:
                heapq.heappush(heap, (decided[d], _DECIDE, 0, d, -1, 0))

    seq = 1
    last = 0
    heappop, heappush = heapq.heappop, heapq.heappush
    wall = ""
    while heap:
        ns, phase, _, s, k, pos = heappop(heap)
        if ns < last:
            ns = last  # a decision held back by a prerequisite that ended at the same instant
        if ns != last or not wall:
            wall = wall_of(ns)  # one instant, one wall (ends and starts often share it)
        last = ns
        step = steps[s]
        seq += 1
        if k == -1 and phase == _DECIDE:
            if step.outcome == "skipped":
                out.append(StepSkipped(deployment=dep, seq=seq, at=at(ns), wall=wall, step=step.name, reason=step.reason or "skipped in the record"))
                terminal(s)
                continue
            out.append(StepStarted(deployment=dep, seq=seq, at=at(ns), wall=wall, step=step.name))
            for e, execution in enumerate(step.executions):
                if execution.attempts:
                    left[s] += 1
                    first = execution.attempts[0]
                    at_start = max(ns, first.start)
                    heapq.heappush(heap, (at_start, _START, 0 if first.end <= at_start else 1, s, e, 0))
            if left[s] == 0:
                heapq.heappush(heap, (max(ns, finished[s]), _STEP_END, 0, s, -2, 0))
        elif k == -2:
            outcome = step.outcome if step.outcome in ("succeeded", "failed", "cancelled") else "succeeded"
            out.append(StepFinished(deployment=dep, seq=seq, at=at(ns), wall=wall, step=step.name, outcome=outcome))  # type: ignore[arg-type]
            terminal(s)
        else:
            execution = step.executions[k]
            attempt = execution.attempts[pos // 2]
            if pos % 2 == 0:
                out.append(started_event(deployment=dep, seq=seq, at=(ns - t0) / NS, wall=wall, step=step.name, target=execution.target, attempt=pos // 2 + 1))
                end = attempt.end
                heappush(heap, (end if end > ns else ns, _END, 0, s, k, pos + 1))
            else:
                outcome = attempt.outcome
                out.append(
                    finished_event(
                        deployment=dep, seq=seq, at=(ns - t0) / NS, wall=wall, step=step.name, target=execution.target,
                        attempt=pos // 2 + 1, outcome=outcome,  # type: ignore[arg-type]
                        exit_code=0 if outcome == "succeeded" else 1 if outcome in FAILED else None, error=attempt.error,
                    )
                )
                if pos // 2 + 1 < len(execution.attempts):
                    following = execution.attempts[pos // 2 + 1]
                    at_start = max(ns, following.start)
                    heapq.heappush(heap, (at_start, _START, 0 if following.end <= at_start else 1, s, k, pos + 1))
                else:
                    left[s] -= 1
                    if left[s] == 0:
                        heapq.heappush(heap, (max(ns, finished[s]), _STEP_END, 0, s, -2, 0))
    seq += 1
    end = max(record.end, last)
    out.append(DeploymentFinished(deployment=dep, seq=seq, at=at(end), wall=wall_of(end), outcome=record.outcome))  # type: ignore[arg-type]
    return out


def rules_skip(condition: str, failures: Iterable[int], decided: int, latest: int | None = None) -> bool:
    """Whether the rules could have skipped a step with `condition` decided at `decided`
    (or at any time up to `latest`, when the record does not say when), given when
    executions failed for good. A failure at the very instant may have come before or
    after the decision (one instant holds several passes): either reading will do."""
    ended = [f for f in failures if f is not None]
    if condition == "success":
        return any(f <= (latest if latest is not None else decided) for f in ended)
    if condition == "failure":
        return not any(f < decided for f in ended)
    return False


# --- ready times: the queue model of the CI importers ---------------------------------------


def ready_starts(ends: list[int], ready: int, window: int | None) -> list[int]:
    """Start instants under the rules for executions of one step that became ready at
    `ready` and ended at `ends` (in target order), at most `window` at once: each starts
    when it is ready and a place in the window is free. Used where a tool records when a
    job was queued and picked up, not when the rules would have started it: the wait
    goes with the job (see the importers' docstrings)."""
    starts = []
    running: list[int] = []
    for end in ends:
        start = ready
        if window is not None and len(running) >= window:
            start = max(ready, heapq.heappop(running))
        starts.append(start)
        heapq.heappush(running, max(end, start))
    return starts


# --- writing the scenario ---------------------------------------------------------------


_PLAIN_EXTRA = frozenset("-_./ ")
_YAML_WORDS = frozenset("y n yes no on off true false null".split())
_PLAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./ ")


def _plain(text: str) -> bool:
    """A string YAML reads back as itself without quotes, in block and flow style."""
    return (
        bool(text)
        and text[0].isalpha()
        and text[-1] != " "
        and text.isascii()
        and _PLAIN_CHARS.issuperset(text)
        and text.lower() not in _YAML_WORDS
    )


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = f"{value:.9f}".rstrip("0").rstrip(".")
        return text if text not in ("", "-0") else "0"
    text = str(value)
    written = _WRITTEN.get(text)
    if written is None:
        written = text if _plain(text) else json.dumps(text, ensure_ascii=False)
        if len(_WRITTEN) > 100_000:
            _WRITTEN.clear()
        _WRITTEN[text] = written
    return written


_WRITTEN: dict[str, str] = {}  # a name as YAML writes it (target names come back many times)


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_scalar(str(k))}: {_flow(v)}" for k, v in value.items() if not str(k).startswith("#")) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


def dump_yaml(scenario: dict, header: Iterable[str] = ()) -> str:
    """The scenario as YAML that reads like a hand-written one: top-level keys in block
    style, one line per target, one block per step; every value written as JSON (which
    is YAML), so names with any characters come back as they were. A key `# field`
    beside `field` becomes a comment on its line."""
    lines = [f"# {h}" if h else "#" for h in header]
    order = ["name", "policy", "variables", "resources", "targets", "steps"]
    for k in order + [k for k in scenario if k not in order]:
        if k not in scenario or k.startswith("#"):
            continue
        value = scenario[k]
        if k == "name":
            lines.append(f"name: {_scalar(value)}")
        elif k in ("targets",):
            lines.append("targets:")
            lines.extend(f"  - {_flow(t)}" for t in value)
        elif k == "steps":
            lines.append("steps:")
            for step in value:
                first = True
                for field, v in step.items():
                    if field.startswith("#"):
                        continue
                    comment = step.get(f"# {field}")
                    text = f"{field}: {_flow(v)}" + (f"  # {comment}" if comment else "")
                    lines.append(("  - " if first else "    ") + text)
                    first = False
        elif isinstance(value, dict):
            if not value:
                lines.append(f"{k}: {{}}")
                continue
            lines.append(f"{k}:")
            for kk, vv in value.items():
                lines.append(f"  {_scalar(str(kk))}: {_flow(vv)}")
        else:
            lines.append(f"{k}: {_flow(value)}")
    return "\n".join(lines) + "\n"


def dump_json(scenario: dict) -> str:
    return json.dumps(strip_comments(scenario), indent=2, ensure_ascii=False) + "\n"

