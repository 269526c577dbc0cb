"""The owner lease (engine/lease.py) and the store's part of it, on both stores; the
store noticing that its file was deleted or replaced; output stored with its events."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from engine.events import DeploymentStarted, StepStarted
from engine.lease import Owner, may_take_over, provably_dead, this_process
from engine.store import ConcurrencyError, LeaseHeld, LeaseLost, MemoryStore, OutputLine, SqliteStore, StoreError


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "abreast.db")
    yield s
    s.close()


def started(d: str = "d1") -> DeploymentStarted:
    return DeploymentStarted(deployment=d, seq=1, at=0.0, scenario="s", plan={"steps": []}, policy={})


def step(seq: int, d: str = "d1") -> StepStarted:
    return StepStarted(deployment=d, seq=seq, at=1.0, step="a")


def owner(name: str, heartbeat: float = 0.0) -> Owner:
    return Owner(host=f"host-{name}", pid=100, starttime="1", boot_id="", heartbeat=heartbeat, token=name)


def test_the_first_events_take_the_lease_in_the_same_transaction(store):
    assert store.owner("d1") is None  # never ran here (imported, say)
    store.claim(owner("a"), [started()])
    assert store.owner("d1") == owner("a") and len(store.read("d1")) == 1
    with pytest.raises(LeaseHeld, match="is being run by pid 100 on host-a"):
        store.claim(owner("b"), [step(2)])  # b did not decide to take a over
    assert store.owner("d1") == owner("a") and len(store.read("d1")) == 1
    store.claim(owner("b"), [step(2)], expect="a")  # b decided a was gone
    assert store.owner("d1").token == "b" and len(store.read("d1")) == 2


def test_a_renewal_by_an_owner_that_was_taken_over_fails(store):
    store.claim(owner("a"), [started()])
    store.renew("d1", owner("a"), 50.0)
    assert store.owner("d1").heartbeat == 50.0
    store.claim(owner("b"), [step(2)], expect="a")
    with pytest.raises(LeaseLost, match="taken over .* held by pid 100 on host-b"):
        store.renew("d1", owner("a"), 60.0)
    assert store.owner("d1").token == "b"


def test_a_claim_whose_events_conflict_changes_nothing(store):
    store.claim(owner("a"), [started(), step(2)])
    with pytest.raises(ConcurrencyError):
        store.claim(owner("b"), [step(2)], expect="a")  # b folded an older log
    assert store.owner("d1").token == "a" and len(store.read("d1")) == 2


def test_output_is_stored_with_the_events_or_not_at_all(store):
    line = OutputLine("d1", "a", None, 1, 1, "hello")
    store.append([started()], output=[line])
    assert store.output("d1") == [line]
    with pytest.raises(ConcurrencyError):
        store.append([started()], output=[OutputLine("d1", "a", None, 1, 2, "again")])
    assert store.output("d1") == [line]


def test_this_process_is_alive_and_a_gone_pid_or_a_reused_one_is_dead():
    me = this_process()
    assert me.pid == os.getpid() and me.starttime.isdigit() and me.host == socket.gethostname()
    assert not provably_dead(me) and may_take_over(me) is None
    child = subprocess.Popen(["true"])
    child.wait()
    assert provably_dead(Owner(me.host, child.pid, "1", me.boot_id, time.time(), "x"))  # its pid is gone
    assert provably_dead(Owner(me.host, me.pid, str(int(me.starttime) + 1), me.boot_id, time.time(), "x"))  # reused
    assert provably_dead(Owner(me.host, me.pid, me.starttime, "another-boot", time.time(), "x"))  # rebooted since
    elsewhere = Owner("some-other-host", child.pid, "1", "", time.time(), "x")
    assert not provably_dead(elsewhere) and may_take_over(elsewhere) is None  # only its heartbeat can tell
    assert may_take_over(Owner("some-other-host", 1, "1", "", time.time() - 61, "x")) == "stale"


def test_a_store_deleted_or_replaced_under_a_writer_refuses_to_write(tmp_path):
    path = tmp_path / "abreast.db"
    s = SqliteStore(path)
    s.append([started()])
    os.rename(path, tmp_path / "moved.db")
    SqliteStore(path).close()  # someone made a new, empty store at the same path
    with pytest.raises(StoreError, match="replaced by another file"):
        s.append([step(2)])
    os.unlink(path)
    with pytest.raises(StoreError, match="was deleted"):
        s.renew("d1", owner("a"), 1.0)
    s.close()


def test_sqlite_errors_while_writing_are_store_errors(tmp_path):
    path = tmp_path / "abreast.db"
    s = SqliteStore(path)
    s.append([started()])
    s.conn.execute("PRAGMA query_only = ON")  # as a read-only file would answer
    with pytest.raises(StoreError, match="cannot append events: the store is read-only"):
        s.append([step(2)])
    s.close()
