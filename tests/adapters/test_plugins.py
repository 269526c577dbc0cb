"""Adapters are plug-ins found through the entry-point group `abreast.adapters`: a tiny
distribution written into a temporary folder on PYTHONPATH runs a deployment through
the real command line; abreast's own adapters register the same way."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

from adapters.registry import BUILTIN, GROUP
from engine.events import ExecutionFinished
from tests.cli.test_run_cli import ROOT, env_for, events_of, scenario

PLUGIN = '''
"""A plug-in adapter for the test: "runs" a step by noting it in a journal."""
from pathlib import Path

from engine.adapter import AttemptResult


class JournalAdapter:
    name = "journal"

    def __init__(self, folder):
        self.journal = Path(folder) / "journal"

    def check(self, target, folder):
        return [] if target.host else [("host", "the journal adapter needs a host")]

    async def run(self, request, output):
        with self.journal.open("a") as f:
            f.write(f"{request.step.name} {request.target.name} {request.target.host} {request.attempt}\\n")
        output(f"noted {request.step.run!r} for {request.target.host}")
        return AttemptResult("succeeded", 0)

    async def aclose(self):
        with self.journal.open("a") as f:
            f.write("closed\\n")


def make(setup):
    return JournalAdapter(setup.folder)
'''


def install_plugin(folder: Path, name: str = "abreast-journal", adapter: str = "journal", value: str = "abreast_journal:make") -> Path:
    """Write a distribution the way an installer would leave it: the module and its
    .dist-info (METADATA, entry_points.txt), in a folder meant for PYTHONPATH."""
    site = folder / "site"
    site.mkdir(exist_ok=True)
    (site / "abreast_journal.py").write_text(textwrap.dedent(PLUGIN))
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{adapter} = {value}\n")
    return site


def abreast_with(folder: Path, site: Path, *args: str) -> subprocess.CompletedProcess:
    env = env_for(folder)
    env["PYTHONPATH"] = f"{site}:{ROOT}"
    return subprocess.run([sys.executable, "-m", "abreast", *args], capture_output=True, text=True, cwd=folder, env=env, timeout=120)


def test_a_deployment_runs_through_an_installed_plug_in(tmp_path):
    site = install_plugin(tmp_path)
    scenario(tmp_path, {
        "targets": [{"name": "lab-1", "roles": ["lab"], "adapter": "journal", "host": "bench-a"},
                    {"name": "lab-2", "roles": ["lab"], "adapter": "journal", "host": "bench-b"}],
        "steps": [{"name": "calibrate", "roles": ["lab"], "run": "calibrate --fast"}, {"name": "report", "run": "echo report"}],
    })
    p = abreast_with(tmp_path, site, "run", "deploy.yaml", "--id", "p1", "-q")
    assert p.returncode == 0, p.stderr
    assert sorted((tmp_path / "journal").read_text().splitlines()) == [
        "calibrate lab-1 bench-a 1", "calibrate lab-2 bench-b 1", "closed",
    ]
    events = events_of(tmp_path / ".abreast" / "abreast.db", "p1")
    assert sorted((e.step, e.target, e.outcome) for e in events if isinstance(e, ExecutionFinished)) == [
        ("calibrate", "lab-1", "succeeded"), ("calibrate", "lab-2", "succeeded"), ("report", None, "succeeded"),
    ]
    logs = abreast_with(tmp_path, site, "history", "logs", "p1", "--target", "lab-2")
    assert "noted 'calibrate --fast' for bench-b" in logs.stdout


def test_a_plug_in_checks_its_targets_before_anything_runs(tmp_path):
    site = install_plugin(tmp_path)
    scenario(tmp_path, {
        "targets": [{"name": "lab-1", "roles": ["lab"], "adapter": "journal"}],
        "steps": [{"name": "calibrate", "roles": ["lab"], "run": "x"}],
    })
    p = abreast_with(tmp_path, site, "run", "deploy.yaml", "--id", "p2")
    assert p.returncode == 2
    assert p.stderr.strip() == f"error: {tmp_path / 'deploy.yaml'}: $.targets[0].host: the journal adapter needs a host"
    assert not (tmp_path / "journal").exists()


def test_without_the_plug_in_its_name_is_unknown_and_names_the_target(tmp_path):
    scenario(tmp_path, {
        "targets": [{"name": "web-01", "roles": ["web"]}, {"name": "lab-1", "roles": ["lab"], "adapter": "journal", "host": "x"}],
        "steps": [{"name": "calibrate", "roles": ["lab", "web"], "run": "touch ran"}],
    })
    p = abreast_with(tmp_path, tmp_path, "run", "deploy.yaml", "--id", "p3")
    assert p.returncode == 2
    assert p.stderr.strip() == (
        f"error: {tmp_path / 'deploy.yaml'}: $.targets[1].adapter: target 'lab-1': "
        "no installed adapter is named 'journal' (installed: dry-run, local, ssh)"
    )
    assert not (tmp_path / "ran").exists()


def test_two_distributions_claiming_one_name_is_an_error_not_a_guess(tmp_path):
    site = install_plugin(tmp_path, name="abreast-fake-ssh", adapter="ssh")
    scenario(tmp_path, {
        "targets": [{"name": "web-01", "roles": ["web"], "adapter": "ssh", "host": "127.0.0.2"}],
        "steps": [{"name": "deploy", "roles": ["web"], "run": "true"}],
    })
    p = abreast_with(tmp_path, site, "run", "deploy.yaml", "--id", "p4")
    assert p.returncode == 2
    assert "$.targets[0].adapter: adapter 'ssh' is declared twice: " in p.stderr
    assert "abreast_journal:make (abreast-fake-ssh)" in p.stderr and "adapters.registry:ssh (abreast)" in p.stderr


def test_abreasts_own_adapters_are_declared_as_entry_points_too():
    declared = {ep.name: ep.value for ep in entry_points(group=GROUP) if ep.dist is not None and ep.dist.name == "abreast"}
    assert declared == BUILTIN
    assert "[project.entry-points.\"abreast.adapters\"]" in (ROOT / "pyproject.toml").read_text()
