"""What the importers share: strict parsing with JSON paths, times to the record's
precision, paged replies, the scenario written as YAML, the log they write."""

from __future__ import annotations

import msgspec
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from engine.core import Core
from engine.plan import plan_from_builtins
from engine.scenario import resolve
from simulator.importers.record import (
    RecordError,
    dump_yaml,
    missing_pages,
    page_list,
    parse_json,
    parse_ocl,
    parse_time,
    parse_yaml,
    wall_of,
)
from tests.engine.test_properties import SETTINGS, scenarios


@pytest.mark.parametrize(
    "text,where,message",
    [
        ('{"jobs": [{"name": "a"}, {"name": "b", "name": "c"}]}', "$.jobs[1]", "duplicate key 'name'"),
        ('{"ActivityLogs": [{"Children": [{"Started": NaN}]}]}', "$.ActivityLogs[0].Children[0].Started", "expected a finite number, got NaN"),
        ('{"a": {"odd key": -Infinity}}', '$.a["odd key"]', "expected a finite number, got -Infinity"),
        ('{"duration": 1e999}', "$.duration", "expected a finite number, got 1e999"),
        ('{"a": 1}{"b": 2, "b": 3}', "$[1]", "duplicate key 'b'"),
        ("", "$", "the file is empty: expected JSON"),
        ('{"a": 1,}', "line 1 column 9", "not valid JSON: Expecting property name enclosed in double quotes"),
    ],
)
def test_strict_json_names_the_place(text, where, message):
    with pytest.raises(RecordError) as e:
        parse_json(text, "f.json")
    assert str(e.value) == f"f.json: {where}: {message}"


def test_several_documents_one_after_another_are_a_list_of_them():
    assert parse_json('{"page": 1}\n{"page": 2}', "f.json") == [{"page": 1}, {"page": 2}]
    assert parse_json('\ufeff [1, 2] ', "f.json") == [1, 2]


@pytest.mark.parametrize(
    "text,ns",
    [
        ("2024-12-22T17:11:26Z", 1734887486 * 10**9),
        ("2016-05-02T16:06:28.639+1000", 1462169188 * 10**9 + 639_000_000),
        ("2026-03-14T19:26:53.1234567+10:00", 1773480413 * 10**9 + 123_456_700),
        ("2026-03-14T09:26:53.000000001+00:00", 1773480413 * 10**9 + 1),
    ],
)
def test_times_keep_every_digit_of_the_record(text, ns):
    assert parse_time(text) == ns


@pytest.mark.parametrize("text", ["2024-12-22T17:11:26", "yesterday", "2024-12-22", "2024-12-22T17:11:26.1234567890Z", "1734887486"])
def test_what_is_not_a_time_with_an_offset_is_refused(text):
    assert parse_time(text) is None


def test_wall_times_round_trip_with_the_digits_they_need():
    for text in ["2024-12-22T17:11:26Z", "2024-12-22T17:11:26.500Z", "2024-12-22T17:11:26.123456Z", "2024-12-22T17:11:26.123456789Z"]:
        assert wall_of(parse_time(text)) == text


def test_missing_pages_are_named():
    assert missing_pages(250, [100], [None]) == [2, 3]
    assert missing_pages(250, [100, 50], [None, None]) == [2]
    assert missing_pages(250, [100, 100, 50], [None, None, None]) == []
    assert missing_pages(75, [30], [2], per_page=30) == [1, 3]
    assert page_list([2, 3, 4, 7]) == "pages 2–4 and 7" and page_list([5]) == "page 5" and page_list([1, 3]) == "pages 1 and 3"


def test_strict_yaml_refuses_a_key_given_twice_and_reads_gitlab_references():
    with pytest.raises(RecordError, match=r"ci.yml: line 3 column 1: not valid YAML: duplicate key 'build'"):
        parse_yaml("build: {script: [make]}\ntest: {}\nbuild: {}\n", "ci.yml")
    assert parse_yaml("a: !reference [.setup, script]\n", "ci.yml") == {"a": [".setup", "script"]}


def test_ocl_reads_dotted_names_heredocs_and_labels():
    data = parse_ocl(
        'step "deploy-web" {\n  name = "Deploy web"\n  properties = {\n    Octopus.Action.TargetRoles = "web"\n  }\n'
        '  action {\n    properties = {\n      Octopus.Action.Script.ScriptBody = <<-EOT\n        echo hi\n      EOT\n    }\n  }\n}\n',
        "p.ocl",
    )
    (step,) = data["step"]
    body = step["deploy-web"]
    assert body["name"] == "Deploy web" and body["properties"] == {"Octopus.Action.TargetRoles": "web"}
    assert body["action"][0]["properties"] == {"Octopus.Action.Script.ScriptBody": "echo hi"}


@pytest.mark.parametrize(
    "text,message",
    [
        ('step "a" {\n  name = "x"\n  name = "y"\n}\n', 'p.ocl: $.step.a.name: duplicate key'),
        ('step "a" {\n  properties = {\n    A.b = "1"\n    "A.b" = "2"\n  }\n}\n', 'p.ocl: $.step.a.properties["A.b"]: duplicate key'),
        ('step "a" {\n  name = \n}\n', "p.ocl: line 2 column 10: not valid OCL (HCL): Unexpected token Token('STRING_CHARS'"),
    ],
)
def test_bad_ocl_names_the_place(text, message):
    with pytest.raises(RecordError) as e:
        parse_ocl(text, "p.ocl")
    assert str(e.value).startswith(message)


@SETTINGS
@given(scenarios(distributions=True), st.sampled_from(["web 01", "db:1", "yes", "a,b", "x#y", "ünï", "null", "-x", "Test (ubuntu-latest)", '"q"']))
def test_the_yaml_written_reads_back_as_the_same_scenario(raw, odd):
    raw = yaml.safe_load(yaml.safe_dump(raw))
    raw["name"] = odd
    raw["targets"][0]["name"] = odd
    for step in raw["steps"]:
        if isinstance(step.get("duration"), dict) and "dist" not in step["duration"]:
            step["duration"] = {odd if k == "t0" else k: v for k, v in step["duration"].items()}
        if "t0" in step.get("fails", {}):
            step["fails"][odd] = step["fails"].pop("t0")
    text = dump_yaml(raw, ["a header"])
    assert yaml.safe_load(text) == raw
    assert resolve(yaml.safe_load(text)) == resolve(raw)


def test_an_imported_log_that_follows_the_rules_folds_through_the_core(tmp_path):
    from pathlib import Path

    from simulator.importers import octopus

    d = Path(__file__).resolve().parents[1] / "fixtures" / "histories" / "octopus"
    imported = octopus.convert(
        ("task.json", parse_json((d / "task.json").read_text(), "task.json")),
        ("process.json", parse_json((d / "process.json").read_text(), "process.json")),
        machines=("machines.json", parse_json((d / "machines.json").read_text(), "machines.json")),
    )
    events = imported.events
    core = Core(plan_from_builtins(events[0].plan), events[0].deployment).fold(events)
    assert core.done and core.outcome == "succeeded"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(a.at <= b.at for a, b in zip(events, events[1:]))
    assert msgspec.json.decode(msgspec.json.encode(events[0])) == msgspec.to_builtins(events[0])
