"""Bad input, refused the same way everywhere: exit 2, one clean message that names the
file (or the option) and the place, no traceback, nothing run, nothing written.

A battery of bad scenario files and options, each run through the real command line in
a subprocess (with a timeout: a device or a NaN must not make it read or loop forever)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

GOOD_YAML = """\
name: release
targets:
  - {name: web-01, roles: [web]}
  - {name: web-02, roles: [web]}
steps:
  - name: push
    roles: [web]
    duration: 10
  - name: upgrade
    roles: [web]
    duration: 5
"""


def abreast(cwd: Path, *args: str, timeout: float = 15) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ABREAST_DB"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "abreast", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def refused(p: subprocess.CompletedProcess, *named: str) -> None:
    """Exit 2, the names in the message, no traceback, and nothing on stdout."""
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    for n in named:
        assert n in p.stderr, (n, p.stderr)
    assert p.stdout == "", p.stdout


@dataclass
class Bad:
    id: str
    name: str  # the file's name (its suffix picks the format)
    content: str | bytes
    says: str  # in the message, besides the file's name


def yaml_step(extra: str) -> str:
    return f"steps:\n  - name: a\n{extra}"


SCENARIOS = [
    # non-finite numbers, everywhere a number is read
    Bad("yaml .nan duration", "s.yaml", yaml_step("    duration: .nan\n"), "$.steps[0].duration: expected a finite number"),
    Bad("yaml .inf duration", "s.yaml", yaml_step("    duration: .inf\n"), "$.steps[0].duration"),
    Bad("yaml -.inf duration", "s.yaml", yaml_step("    duration: -.inf\n"), "$.steps[0].duration"),
    Bad("yaml 1e309 (a string to YAML)", "s.yaml", yaml_step("    duration: 1e309\n"), "finite"),
    Bad("yaml '1e309' quoted", "s.yaml", yaml_step("    duration: '1e309'\n"), "finite"),
    Bad("yaml 1.0e+309", "s.yaml", yaml_step("    duration: 1.0e+309\n"), "$.steps[0].duration"),
    Bad("yaml 'inf' as a string", "s.yaml", yaml_step("    duration: inf\n"), "finite"),
    Bad("yaml 'nan' as a string", "s.yaml", yaml_step("    duration: nan\n"), "$.steps[0].duration"),
    Bad("a huge unit string", "s.yaml", yaml_step(f"    duration: {'9' * 400}s\n"), "finite"),
    Bad("longer than 1e9 seconds", "s.yaml", yaml_step("    duration: 1e12\n"), "at most"),
    Bad("per-target .nan", "s.yaml",
        "targets: [{name: t, roles: [x]}]\n" + yaml_step("    roles: [x]\n    duration: {t: .nan, default: 3}\n"), "$.steps[0].duration.t"),
    Bad("per-target default .inf", "s.yaml", yaml_step("    duration: {default: .inf}\n"), "$.steps[0].duration.default"),
    Bad("lognormal median .inf", "s.yaml", yaml_step("    duration: {dist: lognormal, median: .inf, p95: 3}\n"), "$.steps[0].duration.median"),
    Bad("lognormal p95 '1e309'", "s.yaml", yaml_step("    duration: {dist: lognormal, median: 3, p95: '1e309'}\n"), "$.steps[0].duration.p95"),
    Bad("lognormal too wide to sample", "s.yaml", yaml_step("    duration: {dist: lognormal, median: 1e-300, p95: 100}\n"), "this wide"),
    Bad("normal stddev .nan", "s.yaml", yaml_step("    duration: {dist: normal, mean: 3, stddev: .nan}\n"), "$.steps[0].duration.stddev"),
    Bad("uniform high inf", "s.yaml", yaml_step("    duration: {dist: uniform, low: 1, high: inf}\n"), "$.steps[0].duration.high"),
    Bad("triangular mode .nan", "s.yaml", yaml_step("    duration: {dist: triangular, low: 1, mode: .nan, high: 3}\n"), "$.steps[0].duration.mode"),
    Bad("timeout .inf", "s.yaml", yaml_step("    duration: 1\n    timeout: .inf\n"), "$.steps[0].timeout"),
    Bad("timeout '1e309'", "s.yaml", yaml_step("    duration: 1\n    timeout: '1e309'\n"), "$.steps[0].timeout"),
    Bad("retry_delay .nan", "s.yaml", yaml_step("    duration: 1\n    retry_delay: .nan\n"), "$.steps[0].retry_delay"),
    Bad("failure_rate .nan", "s.yaml", yaml_step("    duration: 1\n    failure_rate: .nan\n"), "$.steps[0].failure_rate"),
    Bad("failure_rate .inf", "s.yaml", yaml_step("    duration: 1\n    failure_rate: .inf\n"), "$.steps[0].failure_rate"),
    Bad("a variable .nan", "s.yaml", "variables: {Octopus.Action.MaxParallelism: .nan}\n" + yaml_step("    duration: 1\n"), "$.variables"),
    Bad("json NaN", "s.json", '{"steps": [{"name": "a", "duration": NaN}]}', "$.steps[0].duration: expected a finite number"),
    Bad("json Infinity", "s.json", '{"steps": [{"name": "a", "duration": 1, "timeout": Infinity}]}', "$.steps[0].timeout"),
    Bad("json -Infinity", "s.json", '{"steps": [{"name": "a", "duration": -Infinity}]}', "$.steps[0].duration"),
    Bad("json 1e309", "s.json", '{"steps": [{"name": "a", "duration": 1e309}]}', "$.steps[0].duration"),
    Bad("json '1e309'", "s.json", '{"steps": [{"name": "a", "duration": "1e309"}]}', "$.steps[0].duration"),
    Bad("toml nan", "s.toml", '[[steps]]\nname = "a"\nduration = nan\n', "$.steps[0].duration"),
    Bad("toml inf", "s.toml", '[[steps]]\nname = "a"\nduration = 1\nretry_delay = inf\n', "$.steps[0].retry_delay"),
    Bad("toml -inf", "s.toml", '[[steps]]\nname = "a"\nduration = 1\nfailure_rate = -inf\n', "$.steps[0].failure_rate"),
    # duplicate keys
    Bad("yaml: steps twice", "s.yaml", "steps:\n  - {name: backup, duration: 1}\nsteps:\n  - {name: deploy, duration: 1}\n",
        "$.steps: duplicate key 'steps' (lines 1 and 3)"),
    Bad("yaml: a step's key twice", "s.yaml", yaml_step("    duration: 1\n    duration: 2\n"), "$.steps[0].duration: duplicate key"),
    Bad("yaml: 1 and 1.0 are one key", "s.yaml", "resources: {1: 1, 1.0: 2}\n" + yaml_step("    duration: 1\n"), "duplicate key"),
    Bad("json: steps twice", "s.json", '{"steps": [{"name": "a", "duration": 1}], "steps": []}', "$.steps: duplicate key 'steps'"),
    Bad("json: a nested key twice", "s.json", '{"steps": [{"name": "a", "duration": 1, "name": "b"}]}', "$.steps[0].name: duplicate key"),
    Bad("toml: a key twice", "s.toml", '[[steps]]\nname = "a"\nduration = 1\nduration = 2\n', "duplicate key 'duration' at line 4 ($.steps[0].duration)"),
    Bad("toml: a key twice in the second step", "s.toml", '[[steps]]\nname = "a"\n[[steps]]\nname = "b"\nname = "c"\n', "($.steps[1].name)"),
    Bad("toml: a table twice", "s.toml", '[policy]\nfail_fast = true\n[policy]\nfail_fast = false\n[[steps]]\nname = "a"\n', "not valid TOML"),
    # not text, not UTF-8, odd characters
    Bad("latin-1", "s.yaml", "steps:\n  - name: déploiement\n    duration: 1\n".encode("latin-1"), "not UTF-8 text: byte 0xe9 at line 2"),
    Bad("binary", "s.yaml", bytes(range(256)) * 4, "not UTF-8 text"),
    Bad("utf-8 with a NUL byte", "s.yaml", b"steps:\n  - {name: a, duration: 1}\n\x00\x00", "a NUL character at line 3"),
    Bad("NUL in a step name", "s.yaml", 'steps:\n  - {name: "a\\0b", duration: 1}\n', "$.steps[0].name: a NUL character"),
    Bad("NUL in a target name (json)", "s.json", '{"targets": [{"name": "t\\u0000"}], "steps": [{"name": "a", "duration": 1}]}', "$.targets[0].name"),
    Bad("escape in a target name", "s.yaml", 'targets: [{name: "web\\e[31m", roles: [x]}]\n' + yaml_step("    duration: 1\n"), "control characters"),
    Bad("newline in a role", "s.yaml", 'targets: [{name: t, roles: ["a\\nb"]}]\n' + yaml_step("    duration: 1\n"), "$.targets[0].roles[0]"),
    Bad("a lone surrogate (YAML refuses it)", "s.yaml", 'steps:\n  - {name: "\\ud800", duration: 1}\n', "not valid YAML"),
    Bad("a lone surrogate (JSON)", "s.json", '{"steps": [{"name": "a", "duration": 1, "run": "echo \\ud800"}]}', "$.steps[0].run: a lone surrogate"),
    Bad("nested too deeply", "s.json", '{"steps": ' + "[" * 100000 + "]" * 100000 + "}", "s.json"),
    Bad("a number as a key", "s.yaml", "resources: {1: 2}\n" + yaml_step("    duration: 1\n"), "every key must be text"),
    Bad("not a scenario suffix", "s.txt", "steps: []", "expected a .yaml, .yml, .toml or .json file"),
]


@pytest.mark.parametrize("bad", SCENARIOS, ids=[b.id for b in SCENARIOS])
def test_a_bad_scenario_is_refused_by_simulate(tmp_path, bad):
    f = tmp_path / bad.name
    f.write_bytes(bad.content if isinstance(bad.content, bytes) else bad.content.encode())
    refused(abreast(tmp_path, "simulate", bad.name), f"error: {bad.name}: ", bad.says)


REPRESENTATIVE = [b for b in SCENARIOS if b.id in ("yaml .nan duration", "json NaN", "yaml: steps twice", "latin-1", "escape in a target name")]
COMMANDS = [
    ["simulate", "{f}", "--format", "json"],
    ["whatif", "{f}", "--set", "max_parallel_steps=1,2"],
    ["advise", "{f}"],
    ["run", "{f}", "--dry-run", "--speed", "100"],
    ["run", "{f}"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] + (" --dry-run" if "--dry-run" in c else "") for c in COMMANDS])
@pytest.mark.parametrize("bad", REPRESENTATIVE, ids=[b.id for b in REPRESENTATIVE])
def test_every_command_that_reads_a_scenario_refuses_it_the_same_way(tmp_path, bad, command):
    f = tmp_path / bad.name
    f.write_bytes(bad.content if isinstance(bad.content, bytes) else bad.content.encode())
    p = abreast(tmp_path, *[a.format(f=bad.name) for a in command])
    refused(p, bad.name, bad.says)
    assert not (tmp_path / ".abreast").exists()  # nothing recorded


def test_a_device_a_folder_a_fifo_and_a_huge_file_are_refused_before_they_are_read(tmp_path):
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    refused(abreast(tmp_path, "simulate", "zero.yaml"), "zero.yaml", "not a regular file (a device)")
    refused(abreast(tmp_path, "simulate", "/dev/zero"), "/dev/zero", "expected a .yaml")
    (tmp_path / "folder.yaml").mkdir()
    refused(abreast(tmp_path, "simulate", "folder.yaml"), "folder.yaml", "not a regular file (a folder)")
    os.mkfifo(tmp_path / "fifo.yaml")  # nobody writes it: reading would block for ever
    refused(abreast(tmp_path, "run", "fifo.yaml"), "fifo.yaml", "not a regular file (a FIFO)")
    with open(tmp_path / "huge.yaml", "wb") as f:
        f.truncate(1 << 30)  # 1 GiB (sparse)
    refused(abreast(tmp_path, "whatif", "huge.yaml", "--set", "fail_fast=true,false"), "huge.yaml", "larger than 16 MiB")
    refused(abreast(tmp_path, "simulate", "missing.yaml"), "missing.yaml", "No such file")


def test_the_same_checks_hold_for_a_bad_history_file(tmp_path):
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    refused(abreast(tmp_path, "history", "import", "zero.jsonl"), "zero.jsonl", "not a regular file (a device)")
    (tmp_path / "binary.jsonl").write_bytes(bytes(range(256)))
    refused(abreast(tmp_path, "history", "import", "binary.jsonl"), "binary.jsonl:1: not an event")


# --- options ------------------------------------------------------------------------------


@pytest.mark.parametrize("speed", ["nan", "inf", "-inf", "0", "-1"])
def test_run_speed_must_be_a_finite_positive_number(tmp_path, speed):
    (tmp_path / "s.yaml").write_text(GOOD_YAML)
    refused(abreast(tmp_path, "run", "s.yaml", "--dry-run", "--speed", speed), "--speed")
    assert not (tmp_path / ".abreast").exists()


@pytest.mark.parametrize("bad_id", ["", "  ", "a\nb", "rel\x1b[31m", "tab\there", "x" * 201, " padded"])
def test_a_deployment_id_must_be_printable(tmp_path, bad_id):
    (tmp_path / "s.yaml").write_text(GOOD_YAML)
    refused(abreast(tmp_path, "run", "s.yaml", "--dry-run", "--speed", "100", "--id", bad_id), "--id")
    assert not (tmp_path / ".abreast").exists()
    p = abreast(tmp_path, "simulate", "s.yaml", "--events", "s.jsonl")
    assert p.returncode == 0, p.stderr
    refused(abreast(tmp_path, "history", "import", "s.jsonl", "--id", bad_id), "--id")


@pytest.mark.parametrize("top", ["0", "-3"])
def test_advise_top_below_1_is_refused(tmp_path, top):
    (tmp_path / "s.yaml").write_text(GOOD_YAML)
    refused(abreast(tmp_path, "advise", "s.yaml", "--top", top), "--top")


SETS = [
    # (command, --set, what the message says after naming the --set)
    ("simulate", "steps.push.window=0", "--set steps.push.window=0: $.steps[0].window: expected `int` >= 1"),
    ("simulate", "steps.push.duration=.nan", "--set steps.push.duration=.nan: $.steps[0].duration: expected a finite number"),
    ("simulate", "steps.push.duration=1e309", "--set steps.push.duration=1e309: $.steps[0].duration: expected a finite number"),
    ("simulate", "steps.push.timeout=inf", "--set steps.push.timeout=inf: $.steps[0].timeout"),
    ("simulate", "max_parallel_steps=.inf", "--set max_parallel_steps=.inf: $.policy.max_parallel_steps: expected a finite number"),
    ("simulate", "steps.upgrade.start=sideways", "--set steps.upgrade.start=sideways: $.steps[1].start: expected one of"),
    ("simulate", "steps.nope.window=2", "--set steps.nope.window=2: 'steps.nope.window': no step named 'nope'"),
    ("simulate", "colour=red", "--set colour=red: unknown key 'colour'"),
    ("simulate", "max_parallel_steps", "--set max_parallel_steps: expected KEY=VALUE"),
    ("whatif", "steps.push.window=1,0", "--set steps.push.window=0: $.steps[0].window: expected `int` >= 1 (with steps.push.window=0)"),
    ("whatif", "steps.push.failure_rate=0,.nan", "--set steps.push.failure_rate=.nan: $.steps[0].failure_rate: expected a finite number"),
    ("whatif", "steps.upgrade.depends_on=[nope]", "--set steps.upgrade.depends_on=[nope]: $.steps[1].depends_on[0]: no step named 'nope'"),
    ("whatif", "steps.upgrade.window=", "--set steps.upgrade.window=: expected KEY=V1,V2"),
]


@pytest.mark.parametrize("command,setting,says", SETS, ids=[f"{c} {s}" for c, s, _ in SETS])
def test_a_bad_set_is_named_by_the_set_not_the_file(tmp_path, command, setting, says):
    (tmp_path / "s.yaml").write_text(GOOD_YAML)
    p = abreast(tmp_path, command, "s.yaml", "--set", setting)
    refused(p, says)
    assert "s.yaml:" not in p.stderr


def test_whatif_can_vary_depends_on_and_lists(tmp_path):
    (tmp_path / "s.yaml").write_text(GOOD_YAML.replace("    duration: 5\n", "    duration: 5\n    depends_on: [push]\n"))
    p = abreast(tmp_path, "whatif", "s.yaml", "--set", "steps.upgrade.depends_on=[push],[]", "--set", "steps.push.roles=[web],[web, db]", "--format", "json")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)["rows"]
    assert [(r["settings"]["steps.upgrade.depends_on"], r["settings"]["steps.push.roles"], r["makespan"]) for r in rows] == [
        (["push"], ["web"], 15.0), (["push"], ["web", "db"], 15.0), ([], ["web"], 15.0), ([], ["web", "db"], 15.0),
    ]
    table = abreast(tmp_path, "whatif", "s.yaml", "--set", "steps.upgrade.depends_on=[push],[]")
    assert table.returncode == 0 and '["push"]' in table.stdout and "[]" in table.stdout


def test_a_set_can_name_a_step_whose_name_holds_an_equals_sign(tmp_path):
    (tmp_path / "s.yaml").write_text(GOOD_YAML.replace("name: upgrade", "name: 'upgrade a=b'"))
    p = abreast(tmp_path, "simulate", "s.yaml", "--set", "steps.upgrade a=b.start=with-previous", "--format", "json")
    assert p.returncode == 0, p.stderr
    # With push now: the step is active from 0 (its executions wait for push's locks).
    assert json.loads(p.stdout)["steps"][1] == {"name": "upgrade a=b", "outcome": "succeeded", "start": 0.0, "end": 15.0}


def test_history_logs_of_a_step_or_target_that_does_not_exist_is_refused(tmp_path):
    (tmp_path / "s.yaml").write_text("targets: [{name: t, roles: [x]}]\nsteps:\n  - {name: a, roles: [x], run: echo hi}\n")
    assert abreast(tmp_path, "run", "s.yaml", "--id", "r", "-q").returncode == 0
    refused(abreast(tmp_path, "history", "logs", "r", "--step", "nope"), "no step 'nope'", "'a'")
    refused(abreast(tmp_path, "history", "logs", "r", "--target", "nope"), "no target 'nope'")
    ok = abreast(tmp_path, "history", "logs", "r", "--step", "a", "--target", "t")
    assert ok.returncode == 0 and ok.stdout == "a @ t #1 | hi\n"


def test_an_output_that_cannot_be_written_is_one_line(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    (tmp_path / "s.yaml").write_text(GOOD_YAML)
    refused(abreast(tmp_path, "simulate", "s.yaml", "--events", "/dev/full"), "/dev/full: cannot write: No space left on device")
    assert abreast(tmp_path, "simulate", "s.yaml", "--events", "s.jsonl").returncode == 0
    assert abreast(tmp_path, "history", "import", "s.jsonl").returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "ABREAST_DB"} | {"PYTHONPATH": str(ROOT)}
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "abreast", "history", "export", "simulation"], stdout=full, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env, timeout=15)
    assert p.returncode == 2 and p.stderr == "error: cannot write the output: No space left on device\n"
