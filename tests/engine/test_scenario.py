"""Scenario files: formats, durations, Octopus variables, and bad input named precisely."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from engine.plan import Fixed, Lognormal, PerTarget, Triangular, Uniform
from engine.scenario import ScenarioError, load, parse_seconds, warnings

ROOT = Path(__file__).resolve().parents[2]

GOOD = {
    "name": "web farm",
    "resources": {"db": 2},
    "targets": [{"name": "web-01", "roles": ["web"]}, {"name": "db-01", "roles": ["db"]}],
    "steps": [
        {"name": "migrate", "roles": ["db"], "duration": "2m", "uses": {"db": 1}},
        {"name": "deploy web", "start": "with-previous", "roles": ["web"], "window": 1, "duration": {"web-01": 30, "default": 45}},
        {"name": "smoke", "depends_on": ["deploy web"], "condition": "always", "retries": 2, "retry_delay": "15s", "timeout": "5m", "duration": 5},
    ],
}


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def yaml_of(obj) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


def test_yaml_toml_and_json_with_the_same_keys_give_the_same_plan(tmp_path):
    y = load(write(tmp_path, "s.yaml", yaml_of(GOOD)))
    j = load(write(tmp_path, "s.json", json.dumps(GOOD)))
    toml = """
name = "web farm"
[resources]
db = 2
[[targets]]
name = "web-01"
roles = ["web"]
[[targets]]
name = "db-01"
roles = ["db"]
[[steps]]
name = "migrate"
roles = ["db"]
duration = "2m"
uses = {db = 1}
[[steps]]
name = "deploy web"
start = "with-previous"
roles = ["web"]
window = 1
duration = {web-01 = 30, default = 45}
[[steps]]
name = "smoke"
depends_on = ["deploy web"]
condition = "always"
retries = 2
retry_delay = "15s"
timeout = "5m"
duration = 5
"""
    t = load(write(tmp_path, "s.toml", toml))
    strip = lambda p: p.__class__(**{**{f: getattr(p, f) for f in p.__struct_fields__}, "source": None})  # noqa: E731
    assert strip(y) == strip(j) == strip(t)
    assert y.steps[0].duration == Fixed(120.0)
    assert y.steps[1].duration == PerTarget(by_target={"web-01": Fixed(30.0)}, default=Fixed(45.0))
    assert (y.steps[2].retry_delay, y.steps[2].timeout) == (15.0, 300.0)


@pytest.mark.parametrize(
    "text,seconds",
    [(90, 90.0), ("90s", 90.0), ("2m", 120.0), ("1h30m", 5400.0), ("1h 30m 15s", 5415.0), ("1.5h", 5400.0), ("12.5", 12.5), (0, 0.0)],
)
def test_duration_strings(text, seconds):
    assert parse_seconds(text, "$") == seconds


def test_distributions_are_parsed_and_checked(tmp_path):
    plan = load(write(tmp_path, "d.yaml", """
steps:
  - {name: a, duration: {dist: lognormal, median: 30, p95: 2m}}
  - {name: b, duration: {dist: uniform, low: 1, high: 2}}
  - {name: c, duration: {dist: triangular, low: 1, mode: 2, high: 5}}
"""))
    assert plan.steps[0].duration == Lognormal(median=30.0, p95=120.0)
    assert plan.steps[1].duration == Uniform(low=1.0, high=2.0)
    assert plan.steps[2].duration == Triangular(low=1.0, mode=2.0, high=5.0)


def test_octopus_variables_and_explicit_policy_precedence(tmp_path):
    plan = load(write(tmp_path, "v.yaml", """
variables: {Octopus.Action.MaxParallelism: "5", OctopusBypassDeploymentMutex: "True"}
steps: [{name: a}]
"""))
    assert (plan.policy.max_parallel_steps, plan.policy.max_parallel_targets, plan.policy.target_isolation) == (5, 5, "shared")
    plan = load(write(tmp_path, "w.yaml", """
variables: {Octopus.Action.MaxParallelism: "5", OctopusBypassDeploymentMutex: "True"}
policy: {max_parallel_steps: 2, target_isolation: exclusive}
steps: [{name: a}]
"""), ["max_parallel_targets=7"])
    assert (plan.policy.max_parallel_steps, plan.policy.max_parallel_targets, plan.policy.target_isolation) == (2, 7, "exclusive")


def test_a_role_no_target_has_is_a_warning_not_an_error(tmp_path):
    plan = load(write(tmp_path, "r.yaml", "targets: [{name: a, roles: [web]}]\nsteps: [{name: s, roles: [dbb]}]\n"))
    assert warnings(plan) == ["$.steps[0] 's': no target has any of the roles ['dbb']; the step will succeed at once"]


BAD = [
    # (what, file text, expected message line)
    ("unknown key", "steps: [{name: a, windw: 2}]", "bad.yaml: $.steps[0]: object contains unknown field `windw`"),
    ("unknown top-level key", "stepz: []\nsteps: [{name: a}]", "bad.yaml: $: object contains unknown field `stepz`"),
    ("wrong type", "steps: [{name: a}, {name: b}, {name: c, window: two}]", "bad.yaml: $.steps[2].window: expected `int | null`, got `str`"),
    ("window < 1", "steps: [{name: a, window: 0}]", "bad.yaml: $.steps[0].window: expected `int` >= 1"),
    ("duplicate step", "steps: [{name: a}, {name: a}]", "bad.yaml: $.steps[1].name: duplicate step name 'a' (first at $.steps[0])"),
    ("duplicate target", "targets: [{name: t}, {name: t}]\nsteps: [{name: a}]", "bad.yaml: $.targets[1].name: duplicate target name 't' (first at $.targets[0])"),
    ("depends_on unknown", "steps: [{name: a}, {name: b, depends_on: [zz]}]", "bad.yaml: $.steps[1].depends_on[0]: no step named 'zz'"),
    ("depends_on later", "steps: [{name: a, depends_on: [b]}, {name: b}]", "bad.yaml: $.steps[0].depends_on[0]: step 'b' comes later in the file; depends_on must name earlier steps"),
    ("first with-previous", "steps: [{name: a, start: with-previous}]", "bad.yaml: $.steps[0].start: the first step cannot be 'with-previous': there is no previous step"),
    ("with-previous and depends_on", "steps: [{name: a}, {name: b, start: with-previous, depends_on: [a]}]", "bad.yaml: $.steps[1].start: a step cannot be both 'with-previous' and have 'depends_on'; use one"),
    ("undeclared resource", "steps: [{name: a, uses: {db: 1}}]", "bad.yaml: $.steps[0].uses.db: no resource named 'db' is declared in $.resources"),
    ("resource over capacity", "resources: {db: 2}\nsteps: [{name: a, uses: {db: 3}}]", "bad.yaml: $.steps[0].uses.db: uses 3 units but 'db' has capacity 2"),
    ("fails unknown target", "targets: [{name: t1, roles: [x]}]\nsteps: [{name: a, roles: [x], fails: {t9: 1}}]", "bad.yaml: $.steps[0].fails.t9: expected a target name or '*', got 't9'"),
    ("fails target on a server step", "targets: [{name: t1, roles: [x]}]\nsteps: [{name: a, fails: {t1: 1}}]", "bad.yaml: $.steps[0].fails.t1: expected 'server' or '*' (this step has no roles), got 't1'"),
    ("unparsable duration", "steps: [{name: a, duration: 3 fortnights}]", "bad.yaml: $.steps[0].duration: expected seconds or a duration like '90s', '2m', '1h30m', got '3 fortnights'"),
    ("negative duration", "steps: [{name: a, duration: -4}]", "bad.yaml: $.steps[0].duration: expected seconds >= 0, got -4.0"),
    ("unknown distribution", "steps: [{name: a, duration: {dist: weibull}}]", "bad.yaml: $.steps[0].duration.dist: expected one of lognormal, normal, uniform, triangular, empirical, got 'weibull'"),
    ("duration for an unknown target", "steps: [{name: a, duration: {nope: 3}}]", "bad.yaml: $.steps[0].duration.nope: expected a target name, 'server' or 'default', got 'nope'"),
    ("empty file", "", "bad.yaml: $: the file is empty: expected a scenario with `steps`"),
    ("no steps", "name: x", "bad.yaml: $: object missing required field `steps`"),
    ("not a mapping", "- a\n- b", "bad.yaml: $: expected a mapping of scenario keys, got list"),
    ("bad variable", "variables: {Octopus.Action.MaxParallelism: lots}\nsteps: [{name: a}]", 'bad.yaml: $.variables["Octopus.Action.MaxParallelism"]: expected an integer >= 1, got \'lots\''),
    ("bad isolation", "steps: [{name: a, isolation: private}]", "bad.yaml: $.steps[0].isolation: expected one of"),
    ("broken yaml", "steps: [{name: a", "bad.yaml: $: not valid YAML"),
]


@pytest.mark.parametrize("what,text,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_the_file_the_path_and_what_was_expected(tmp_path, what, text, expected):
    p = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ScenarioError) as e:
        load(p)
    message = str(e.value).replace(str(p), "bad.yaml")
    assert message.startswith(expected), message


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    p = write(tmp_path, "bad.yaml", "steps: [{name: a, start: with-previous}, {name: a, depends_on: [zz]}]")
    with pytest.raises(ScenarioError) as e:
        load(p)
    assert len(e.value.problems) == 3


def test_overrides_reach_policy_and_step_fields(tmp_path):
    p = write(tmp_path, "s.yaml", yaml_of(GOOD))
    plan = load(p, ["max_parallel_steps=3", "steps.deploy web.window=4", "steps.smoke.isolation=shared"])
    assert plan.policy.max_parallel_steps == 3
    assert plan.steps[1].window == 4
    assert plan.steps[2].isolation == "shared"
    for bad, message in [
        ("steps.nope.window=2", "no step named 'nope'"),
        ("steps.smoke.colour=red", "unknown step field 'colour'"),
        ("speed=11", "unknown key 'speed'"),
        ("max_parallel_steps", "expected KEY=VALUE"),
        ("max_parallel_steps=0", "$.policy.max_parallel_steps: expected `int` >= 1"),
    ]:
        with pytest.raises(ScenarioError) as e:
            load(p, [bad])
        assert message in str(e.value)


def test_a_problem_an_override_caused_names_the_override(tmp_path):
    p = write(tmp_path, "s.yaml", yaml_of(GOOD))
    cases = {
        "steps.smoke.window=0": "--set steps.smoke.window=0: $.steps[2].window: expected `int` >= 1",
        # the rule is reported at `start`, but the step was changed by this --set
        "steps.deploy web.depends_on=[migrate]": "--set steps.deploy web.depends_on=[migrate]: $.steps[1].start: a step cannot be both",
        "steps.migrate.duration=.inf": "--set steps.migrate.duration=.inf: $.steps[0].duration: expected a finite number, got inf",
    }
    for setting, expected in cases.items():
        with pytest.raises(ScenarioError) as e:
            load(p, [setting])
        assert str(e.value) == expected or str(e.value).startswith(expected), str(e.value)
    # A problem of the file itself still names the file.
    bad = write(tmp_path, "b.yaml", yaml_of({**GOOD, "resources": {"db": 0}}))
    with pytest.raises(ScenarioError) as e:
        load(bad, ["max_parallel_steps=2"])
    assert str(e.value).startswith(f"{bad}: $.resources[...]: expected `int` >= 1")


def test_a_recorded_plan_is_checked_like_a_scenario_file():
    from engine.plan import plan_from_builtins, plan_to_builtins
    from engine.scenario import check_plan

    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        plan = plan_from_builtins(plan_to_builtins(load(path)))
        assert check_plan(plan, "log") is plan
    plan = load(ROOT / "scenarios" / "seed-parallel-steps.yaml")
    steps = list(plan.steps)
    steps[0] = msgspec.structs.replace(steps[0], name="deploy\x00app")
    with pytest.raises(ScenarioError, match=r"log: \$.steps\[0\].name: a NUL character"):
        check_plan(msgspec.structs.replace(plan, steps=tuple(steps)), "log")
    steps[0] = msgspec.structs.replace(plan.steps[0], duration=Fixed(float("nan")))
    with pytest.raises(ScenarioError, match=r"\$.steps\[0\].duration: expected a finite number"):
        check_plan(msgspec.structs.replace(plan, steps=tuple(steps)), "log")


def test_utf8_with_a_bom_and_yaml_merge_keys_still_read(tmp_path):
    # A merge key (`<<`) is not a duplicate of the keys beside it; `name` overrides it.
    p = tmp_path / "bom.yaml"
    p.write_bytes("\ufeff".encode() + b"targets: [{name: w, roles: [web]}]\nsteps:\n  - &s {name: a, roles: [web], duration: 5}\n  - {<<: *s, name: b}\n")
    plan = load(p)
    assert [s.name for s in plan.steps] == ["a", "b"] and plan.steps[1].duration == Fixed(5.0)
