"""The event log's format: tagged JSON, JSON Lines round trips, tolerant decoding."""

from __future__ import annotations

import io

import pytest

from engine.events import (
    DeploymentFinished,
    EventFormatError,
    ExecutionFinished,
    ExecutionStarted,
    decode,
    encode,
    from_jsonl,
    to_jsonl,
)
from simulator.sim import simulate
from tests.helpers import plan_of


def test_events_encode_with_their_stable_type_tag():
    ev = ExecutionFinished(deployment="d", seq=7, at=1.5, step="A", target="web-01", attempt=2, outcome="timed_out")
    assert encode(ev) == (
        b'{"type":"execution.finished","deployment":"d","seq":7,"at":1.5,"wall":null,'
        b'"step":"A","target":"web-01","attempt":2,"outcome":"timed_out","exit_code":null,"error":null}'
    )
    assert decode(encode(ev)) == ev


def test_a_simulated_log_round_trips_through_json_lines():
    events = []
    simulate(plan_of("""
        targets: [{name: a, roles: [x]}, {name: b, roles: [x]}]
        steps:
          - {name: s, roles: [x], duration: 2, fails: {a: 1}, retries: 1}
          - {name: t, condition: always, duration: 1}
    """), sink=events.extend)
    buf = io.BytesIO()
    to_jsonl(events, buf)
    lines = buf.getvalue().splitlines()
    assert len(lines) == len(events)
    assert list(from_jsonl(lines)) == events
    assert {type(e).__name__ for e in events} >= {"DeploymentStarted", "ExecutionStarted", "DeploymentFinished"}


def test_unknown_fields_are_ignored_so_newer_logs_still_decode():
    line = b'{"type":"deployment.finished","deployment":"d","seq":3,"at":2.0,"wall":null,"outcome":"failed","by":"ops"}'
    assert decode(line) == DeploymentFinished(deployment="d", seq=3, at=2.0, outcome="failed")


def test_fields_added_later_have_defaults_so_older_logs_still_decode():
    line = b'{"type":"execution.finished","deployment":"d","seq":3,"at":2.0,"step":"A","target":null,"attempt":1,"outcome":"succeeded"}'
    ev = decode(line)
    assert (ev.wall, ev.exit_code, ev.error) == (None, None, None)


def test_a_bad_line_is_named():
    good = encode(ExecutionStarted(deployment="d", seq=1, at=0.0, step="A", target=None, attempt=1))
    with pytest.raises(EventFormatError, match=r"h\.jsonl:2: not an event"):
        list(from_jsonl([good, b'{"type":"step.exploded"}'], name="h.jsonl"))
