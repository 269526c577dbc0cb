"""`abreast history` on logs and stores that cannot be trusted, as whole processes on real
SQLite files: imports that break the rules, output that survives export and import,
terminal control sequences in output, a store readable by its owner only, a store this
user cannot write, a damaged store, and names that look like rich markup."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

FARM = {
    "name": "farm",
    "targets": [{"name": "web-01", "roles": ["web"]}, {"name": "web-02", "roles": ["web"]}],
    "steps": [
        {"name": "push", "roles": ["web"], "run": 'echo "pushed to $ABREAST_TARGET"; echo second line'},
        {"name": "upgrade", "roles": ["web"], "run": "echo upgraded"},
        {"name": "notify", "run": "printf 'all \\033[31mdone\\033[0m\\033]0;pwned\\007\\n'"},
    ],
}


def abreast(folder: Path, *args: str, timeout: float = 60, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ABREAST_DB"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [*(wrap or []), sys.executable, "-m", "abreast", *args], capture_output=True, text=True, cwd=folder, env=env, timeout=timeout
    )


def refused(p: subprocess.CompletedProcess, *named: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    for n in named:
        assert n in p.stderr, (n, p.stderr)
    return p.stderr


@pytest.fixture
def recorded(tmp_path) -> Path:
    """A real run of FARM, recorded as `rel-1`, and its export in rel-1.jsonl."""
    (tmp_path / "farm.yaml").write_text(yaml.safe_dump(FARM, sort_keys=False))
    p = abreast(tmp_path, "run", "farm.yaml", "--id", "rel-1", "-q")
    assert p.returncode == 0, p.stderr
    export = abreast(tmp_path, "history", "export", "rel-1")
    assert export.returncode == 0, export.stderr
    (tmp_path / "rel-1.jsonl").write_text(export.stdout)
    return tmp_path


def docs(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "rel-1.jsonl").read_text().splitlines()]


def write(folder: Path, name: str, lines: list[dict]) -> str:
    (folder / name).write_text("".join(json.dumps(d) + "\n" for d in lines))
    return name


def index(lines: list[dict], **match) -> int:
    return next(i for i, d in enumerate(lines) if all(d.get(k) == v for k, v in match.items()))


# --- output keeps through export and import -------------------------------------------


def test_output_survives_export_and_import_and_readers_that_know_only_events_skip_it(recorded):
    lines = docs(recorded)
    events = [d for d in lines if d["type"] != "execution.output"]
    outputs = [d for d in lines if d["type"] == "execution.output"]
    assert lines == events + outputs  # the output comes after the events
    assert {(o["step"], o["target"], o["attempt"]): o["lines"] for o in outputs} == {
        ("push", "web-01", 1): ["pushed to web-01", "second line"],
        ("push", "web-02", 1): ["pushed to web-02", "second line"],
        ("upgrade", "web-01", 1): ["upgraded"],
        ("upgrade", "web-02", 1): ["upgraded"],
        ("notify", None, 1): ["all \x1b[31mdone\x1b[0m\x1b]0;pwned\x07"],
    }
    p = abreast(recorded, "history", "import", "rel-1.jsonl", "--db", "other.db", "--id", "rel-2")
    assert p.returncode == 0, p.stderr
    original = abreast(recorded, "history", "logs", "rel-1").stdout
    copied = abreast(recorded, "history", "logs", "rel-2", "--db", "other.db").stdout
    assert copied == original and "pushed to web-02" in copied
    again = abreast(recorded, "history", "export", "rel-2", "--db", "other.db").stdout
    assert again == (recorded / "rel-1.jsonl").read_text().replace('"rel-1"', '"rel-2"')

    from engine.events import from_jsonl

    assert len(list(from_jsonl((recorded / "rel-1.jsonl").read_bytes().splitlines()))) == len(events)


def test_logs_strip_terminal_control_sequences(recorded):
    p = abreast(recorded, "history", "logs", "rel-1", "--step", "notify")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "notify @ server #1 | all done\n"
    assert abreast(recorded, "history", "logs", "rel-1", "--target", "server").stdout == p.stdout


# --- imports that break the rules ---------------------------------------------------------


def test_a_step_started_twice_is_refused_at_its_line(recorded):
    lines = docs(recorded)
    i = index(lines, type="step.started", step="upgrade")
    bad = lines[: i + 1] + [dict(lines[i])] + lines[i + 1 :]
    for n, d in enumerate(d for d in bad if d["type"] != "execution.output"):
        d["seq"] = n + 1
    refused(abreast(recorded, "history", "import", write(recorded, "bad.jsonl", bad), "--db", "x.db"),
            f"bad.jsonl:{i + 2}: step.started of 'upgrade'", "was already active")
    assert not (recorded / "x.db").exists() or "rel-1" not in abreast(recorded, "history", "list", "--db", "x.db").stdout


def test_time_going_backwards_is_refused_at_its_line(recorded):
    lines = docs(recorded)
    i = index(lines, type="execution.finished", step="upgrade", target="web-02")
    assert lines[i - 1]["at"] > 0
    lines[i]["at"] = lines[i - 1]["at"] / 2
    refused(abreast(recorded, "history", "import", write(recorded, "bad.jsonl", lines)), f"bad.jsonl:{i + 1}:", "time goes backwards")


def test_a_deployment_outcome_that_contradicts_its_steps_is_refused(recorded):
    lines = docs(recorded)
    i = index(lines, type="deployment.finished")
    lines[i]["outcome"] = "failed"
    refused(abreast(recorded, "history", "import", write(recorded, "bad.jsonl", lines)),
            f"bad.jsonl:{i + 1}: deployment.finished failed", "make it succeeded")


def test_an_execution_that_starts_out_of_turn_is_refused(recorded):
    lines = docs(recorded)
    # Drop push's start on web-01: web-02's start then stands where the rules start web-01.
    i = index(lines, type="execution.started", step="push", target="web-01")
    bad = lines[:i] + lines[i + 1 :]
    for n, d in enumerate(d for d in bad if d["type"] != "execution.output"):
        d["seq"] = n + 1
    refused(abreast(recorded, "history", "import", write(recorded, "bad.jsonl", bad)),
            f"bad.jsonl:{i + 1}: execution.started of 'push' on web-02", "the rules give execution.started of 'push' on web-01")


@pytest.mark.parametrize(
    "what,change,says",
    [
        ("a gap in seq", lambda ls: ls.pop(3), "seq 5 where 4 was expected"),
        ("a second deployment", lambda ls: ls[4].update(deployment="other"), "holds events of 2 deployments"),
        ("an unknown step", lambda ls: ls[2].update(step="nope"), "bad.jsonl:3:"),
        ("an infinite duration in the plan", lambda ls: ls[0]["plan"]["steps"][0].update(duration={"dist": "fixed", "seconds": 1e999}), "bad.jsonl:1: not an event"),
        ("an absurd duration in the plan", lambda ls: ls[0]["plan"]["steps"][0].update(duration={"dist": "fixed", "seconds": 1e300}), "$.steps[0].duration: expected at most"),
        ("a NaN time", lambda ls: ls[3].update(at=float("nan")), "bad.jsonl:4: not an event"),
        ("a NUL in a step name of the plan", lambda ls: ls[0]["plan"]["steps"][0].update(name="pu\x00sh"), "$.steps[0].name"),
        ("a plan with a broken reference", lambda ls: ls[0]["plan"]["steps"][1].update(depends_on=["nope"]), "$.steps[1].depends_on[0]: no step named 'nope'"),
        ("a plan that is not a plan", lambda ls: ls[0].update(plan={"steps": "many"}), "the plan in deployment.started is not valid"),
        ("time that is not a number", lambda ls: ls[3].update(at=None), "bad.jsonl:4: not an event"),
        ("a speed that is no speed", lambda ls: ls[0]["options"].update(dry_run=True, speed=0), "the options in deployment.started: speed"),
        ("an id with a control character", lambda ls: [d.update(deployment="rel\x1b[2J") for d in ls], "control characters"),
        ("output of an attempt that never ran", lambda ls: ls[-1].update(attempt=7), "an attempt the log never started"),
        ("an event after the output", lambda ls: ls.append(dict(ls[3])), "an event after the output lines"),
    ],
)
def test_a_log_that_breaks_the_rules_is_refused(recorded, what, change, says):
    lines = docs(recorded)
    change(lines)
    refused(abreast(recorded, "history", "import", write(recorded, "bad.jsonl", lines), "--db", "x.db"), "bad.jsonl", says)


def test_an_unknown_line_type_is_skipped_with_a_warning(recorded):
    lines = docs(recorded)
    lines.insert(3, {"type": "step.annotated", "note": "from a newer abreast"})
    p = abreast(recorded, "history", "import", write(recorded, "newer.jsonl", lines), "--db", "x.db")
    assert p.returncode == 0, p.stderr
    assert "newer.jsonl:4: skipped a line of type 'step.annotated'" in p.stderr


# --- the store -----------------------------------------------------------------------------


def test_the_store_is_created_readable_by_its_owner_only(recorded):
    folder = recorded / ".abreast"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    p = abreast(recorded, "history", "import", "rel-1.jsonl", "--db", "sub/dir/own.db", "--id", "x")
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE((recorded / "sub" / "dir").stat().st_mode) == 0o700
    assert stat.S_IMODE((recorded / "sub" / "dir" / "own.db").stat().st_mode) == 0o600


def without_privileges() -> list[str]:
    """Run a command as this user without the capability to ignore file permissions
    (root has it; a test of 'cannot write' must not)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be enforced")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def test_history_reads_a_store_this_user_cannot_write(recorded):
    shared = recorded / "shared"
    shared.mkdir()
    db = shared / "abreast.db"
    shutil.copy(recorded / ".abreast" / "abreast.db", db)  # one file: the copy holds no WAL
    db.chmod(0o444)
    shared.chmod(0o555)  # no -wal or -shm file can be made beside it either
    wrap = without_privileges()
    try:
        listed = abreast(recorded, "history", "list", "--db", str(db), "--format", "json", wrap=wrap)
        assert listed.returncode == 0, listed.stderr
        assert [d["id"] for d in json.loads(listed.stdout)] == ["rel-1"]
        for args in (["show", "rel-1"], ["export", "rel-1"], ["logs", "rel-1"]):
            p = abreast(recorded, "history", *args, "--db", str(db), wrap=wrap)
            assert p.returncode == 0 and p.stdout and "Traceback" not in p.stderr, (args, p.stderr)
        # Writing is refused in one line.
        p = abreast(recorded, "history", "import", "rel-1.jsonl", "--db", str(db), "--id", "copy", wrap=wrap)
        refused(p, str(db))
        assert sorted(os.listdir(shared)) == ["abreast.db"]
    finally:
        shared.chmod(0o755)


def damage(db: Path) -> None:
    """Keep the header (page 1), overwrite every other page with garbage."""
    conn = sqlite3.connect(db)
    page, pages = conn.execute("PRAGMA page_size").fetchone()[0], conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(db.read_bytes())
    assert pages > 3
    for p in range(1, pages, 2):
        data[p * page : (p + 1) * page] = b"\xa5" * page
    db.write_bytes(data)


def test_a_damaged_store_is_one_line_and_exit_2_for_every_command(recorded):
    for n in range(4):
        assert abreast(recorded, "history", "import", "rel-1.jsonl", "--id", f"copy-{n}").returncode == 0
    db = recorded / "damaged.db"
    shutil.copy(recorded / ".abreast" / "abreast.db", db)
    damage(db)
    for args in (
        ["history", "list"],
        ["history", "list", "--format", "json"],
        ["history", "show", "copy-2"],
        ["history", "export", "copy-2"],
        ["history", "logs", "copy-2"],
        ["history", "import", "rel-1.jsonl", "--id", "fresh"],
        ["resume", "copy-2"],
        ["run", "farm.yaml", "--id", "new"],
    ):
        p = abreast(recorded, *args, "--db", str(db))
        refused(p, "damaged.db", "damaged")
        assert p.stdout == "", (args, p.stdout)


def test_a_file_that_is_no_store_or_no_file_is_refused(recorded):
    (recorded / "text.db").write_text("hello " * 1000)
    refused(abreast(recorded, "history", "list", "--db", "text.db"), "text.db", "not an abreast event store")
    refused(abreast(recorded, "history", "list", "--db", "/dev/zero"), "/dev/zero", "not a regular file")
    refused(abreast(recorded, "run", "farm.yaml", "--db", str(recorded)), str(recorded), "not a regular file")


# --- names that look like markup ------------------------------------------------------------

MARKUP = {
    "name": "[/oops] release [bold]",
    "targets": [{"name": "[red]web", "roles": ["web"]}, {"name": "web-[/]2", "roles": ["web"]}],
    "steps": [
        {"name": "[/oops]", "roles": ["web"], "run": "echo '[/]'", "duration": 10},
        {"name": "[bold]warm", "start": "with-previous", "roles": ["web"], "run": "echo ok", "duration": 5},
        {"name": "it's [link=x]", "run": "echo done", "duration": 1},
    ],
}


def test_names_that_look_like_markup_are_printed_as_text_by_every_command(tmp_path):
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(MARKUP, sort_keys=False))
    outputs = {}
    for args in (
        ["simulate", "m.yaml"],
        ["whatif", "m.yaml", "--set", "steps.[/oops].window=1,2", "--set", "steps.[bold]warm.isolation=exclusive,shared"],
        ["advise", "m.yaml", "--allow-reorder"],
        ["run", "m.yaml", "--id", "[/x]", "-v"],
        ["history", "list"],
        ["history", "show", "[/x]"],
        ["history", "logs", "[/x]"],
    ):
        p = abreast(tmp_path, *args)
        assert p.returncode == 0 and "Traceback" not in p.stderr, (args, p.stderr)
        outputs[args[0] + " " + args[1]] = p.stdout
    assert "[/oops]" in outputs["simulate m.yaml"] and "[bold]warm" in outputs["simulate m.yaml"]
    assert "[/oops] release [bold]" in outputs["simulate m.yaml"]
    assert "steps.[/oops].window" in outputs["whatif m.yaml"]
    assert "[/x]" in outputs["history list"] and "[/oops] release [bold]" in outputs["history list"]
    assert "[/oops]" in outputs["history show"] and "[/x]" in outputs["history show"]
    assert "[/oops] @ [red]web #1 | [/]" in outputs["history logs"]
    assert "'[bold]warm'" in outputs["advise m.yaml"] or "[/oops]" in outputs["advise m.yaml"]
