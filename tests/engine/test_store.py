"""One contract for every event store: the in-memory twin and the SQLite file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.events import DeploymentFinished, DeploymentStarted, StepStarted
from engine.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    ConcurrencyError,
    MemoryStore,
    OutputLine,
    SqliteStore,
    StoreError,
)


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "abreast.db")
    yield s
    s.close()


def started(d: str, scenario: str = "s", wall: str | None = "2026-11-27T10:00:00+00:00") -> DeploymentStarted:
    return DeploymentStarted(deployment=d, seq=1, at=0.0, wall=wall, scenario=scenario, plan={"steps": []}, policy={})


def step(d: str, seq: int, name: str = "a", at: float = 1.0) -> StepStarted:
    return StepStarted(deployment=d, seq=seq, at=at, step=name)


def test_events_read_back_in_seq_order(store):
    store.append([started("d1"), step("d1", 2)])
    store.append([step("d1", 3, "b", 2.5)])
    assert [e.seq for e in store.read("d1")] == [1, 2, 3]
    assert store.read("d1")[2] == step("d1", 3, "b", 2.5)
    assert [e.seq for e in store.read("d1", after=2)] == [3]
    assert store.read("nobody") == []


def test_a_second_writer_appending_the_same_seq_gets_a_conflict_and_changes_nothing(store):
    store.append([started("d1"), step("d1", 2)])
    with pytest.raises(ConcurrencyError, match="seq 2 is already recorded"):
        store.append([step("d1", 2, "other"), step("d1", 3)])
    assert [e.step for e in store.read("d1")[1:]] == ["a"]
    assert store.summary("d1").events == 2


def test_an_append_is_all_or_nothing(store):
    store.append([started("d1")])
    with pytest.raises(StoreError, match="gap"):
        store.append([step("d1", 2), step("d1", 4)])
    assert len(store.read("d1")) == 1


def test_a_stream_must_begin_with_deployment_started(store):
    with pytest.raises(StoreError, match="first event must be deployment.started"):
        store.append([step("d9", 1)])
    assert store.read("d9") == []


def test_the_deployments_projection_follows_the_events(store):
    store.append([started("d1", "web"), step("d1", 2)])
    store.append([started("d2", "db", wall=None)])
    assert [(s.id, s.scenario, s.status, s.events) for s in store.deployments()] == [
        ("d2", "db", "running", 1),
        ("d1", "web", "running", 2),
    ]
    store.append([DeploymentFinished(deployment="d1", seq=3, at=4.0, wall="2026-11-27T10:00:04+00:00", outcome="failed")])
    s = store.summary("d1")
    assert (s.status, s.started, s.finished, s.events) == ("failed", "2026-11-27T10:00:00+00:00", "2026-11-27T10:00:04+00:00", 3)
    assert store.summary("nope") is None


def test_output_lines_are_kept_per_execution(store):
    store.add_output([
        OutputLine("d1", "a", "web-01", 1, 1, "hello"),
        OutputLine("d1", "a", "web-02", 1, 1, "bonjour"),
        OutputLine("d1", "b", None, 1, 1, "server"),
        OutputLine("d2", "a", "web-01", 1, 1, "elsewhere"),
    ])
    assert [o.line for o in store.output("d1")] == ["hello", "bonjour", "server"]
    assert [o.line for o in store.output("d1", step="a", target="web-02")] == ["bonjour"]
    assert [o.line for o in store.output("d1", step="b")] == ["server"]


# --- SQLite only ---------------------------------------------------------------------------


def test_the_file_is_in_wal_mode_with_the_current_schema(tmp_path):
    s = SqliteStore(tmp_path / "x.db")
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.version == SCHEMA_VERSION
    s.close()


def test_a_version_1_database_is_migrated_and_keeps_its_events(tmp_path):
    path = tmp_path / "old.db"
    old = SqliteStore(path, migrate_to=1)
    assert old.version == 1
    # Version 1 had no event count and no output table; write as version 1 did.
    old.conn.execute(
        "INSERT INTO events VALUES ('d1', 1, 'deployment.started', 0.0, NULL, ?)",
        ('{"type":"deployment.started","deployment":"d1","seq":1,"at":0.0,"scenario":"old","plan":{},"policy":{}}',),
    )
    old.conn.execute("INSERT INTO deployments VALUES ('d1', 'old', 'running', NULL, NULL)")
    old.close()
    new = SqliteStore(path)
    assert new.version == SCHEMA_VERSION == len(MIGRATIONS)
    assert new.summary("d1").events == 1
    assert new.read("d1")[0].scenario == "old"
    new.append([step("d1", 2)])
    new.add_output([OutputLine("d1", "a", None, 1, 1, "ok")])
    assert new.summary("d1").events == 2
    new.close()


def test_a_database_from_a_newer_abreast_is_refused(tmp_path):
    path = tmp_path / "future.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this abreast"):
        SqliteStore(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not an abreast event store"):
        SqliteStore(path)


WRITER = """
import sys
from engine.events import DeploymentStarted, StepStarted
from engine.store import SqliteStore
path, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = SqliteStore(path)
s.append([DeploymentStarted(deployment=d, seq=1, at=0.0, scenario="x", plan={}, policy={})])
for i in range(2, n + 1):
    s.append([StepStarted(deployment=d, seq=i, at=float(i), step="s")])
"""


def test_two_processes_append_to_one_file_at_once(tmp_path):
    path = tmp_path / "shared.db"
    SqliteStore(path).close()
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), d, "300"], cwd=root)
        for d in ("left", "right")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    s = SqliteStore(path)
    for d in ("left", "right"):
        assert [e.seq for e in s.read(d)] == list(range(1, 301))
    s.close()


def test_exists_tells_whether_a_stream_has_events(store):
    assert not store.exists("d1")
    store.append([started("d1")])
    assert store.exists("d1") and not store.exists("d2")


def test_a_new_store_and_its_folder_are_readable_by_their_owner_only(tmp_path):
    import stat

    s = SqliteStore(tmp_path / "new" / "abreast.db")
    s.append([started("d1")])
    s.close()
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new" / "abreast.db").stat().st_mode) == 0o600


def test_a_store_opened_read_only_reads_and_refuses_to_write_in_words(tmp_path):
    path = tmp_path / "x.db"
    s = SqliteStore(path)
    s.append([started("d1"), step("d1", 2)])
    s.add_output([OutputLine("d1", "a", None, 1, 1, "hello")])
    s.close()
    ro = SqliteStore(path, readonly=True)
    assert [e.seq for e in ro.read("d1")] == [1, 2]
    assert [d.id for d in ro.deployments()] == ["d1"] and [o.line for o in ro.output("d1")] == ["hello"]
    with pytest.raises(StoreError, match="cannot append events: the store is read-only"):
        ro.append([step("d1", 3)])
    ro.close()
    with pytest.raises(StoreError, match="no event store there"):
        SqliteStore(tmp_path / "missing.db", readonly=True)


def test_a_damaged_file_is_a_store_error_that_says_so(tmp_path):
    path = tmp_path / "x.db"
    s = SqliteStore(path)
    for n in range(40):
        s.append([started(f"d{n}", scenario="x" * 500)])
    s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for p in range(1, len(data) // page):
        data[p * page : (p + 1) * page] = b"\xa5" * page
    path.write_bytes(data)
    with pytest.raises(StoreError, match="damaged") as e:
        damaged = SqliteStore(path)
        try:
            damaged.deployments()
        finally:
            damaged.close()
    assert str(path) in str(e.value)


def test_a_device_or_a_folder_is_no_store(tmp_path):
    with pytest.raises(StoreError, match="not a regular file"):
        SqliteStore("/dev/zero")
    with pytest.raises(StoreError, match="not a regular file"):
        SqliteStore(tmp_path)


def test_a_full_disk_is_a_store_error_that_says_so_and_leaves_the_stream_as_it_was(tmp_path):
    s = SqliteStore(tmp_path / "x.db")
    s.append([started("d1")])
    pages = s.conn.execute("PRAGMA page_count").fetchone()[0]
    s.conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full"
    with pytest.raises(StoreError, match="cannot append events: the disk is full"):
        s.append([StepStarted(deployment="d1", seq=n, at=float(n), step="x" * 2000) for n in range(2, 50)])
    with pytest.raises(StoreError, match="cannot store output: the disk is full"):
        s.add_output([OutputLine("d1", "a", None, 1, n, "y" * 2000) for n in range(1, 50)])
    assert [e.seq for e in s.read("d1")] == [1]
    s.close()
