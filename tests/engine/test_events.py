"""The event log's format: tagged JSON, JSON Lines round trips, tolerant decoding."""

from __future__ import annotations

import io
import json

import pytest

from engine.events import (
    DeploymentFinished,
    EventFormatError,
    ExecutionFinished,
    ExecutionOutput,
    ExecutionStarted,
    decode,
    encode,
    from_jsonl,
    output_records,
    read_jsonl,
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
        list(from_jsonl([good, b'{"type":"step.started","deployment":"d","seq":2}'], name="h.jsonl"))
    with pytest.raises(EventFormatError, match=r"h\.jsonl:3: not an event"):
        list(from_jsonl([good, b"", b'{"seq": 3}'], name="h.jsonl"))


def test_a_type_this_reader_does_not_know_is_skipped_and_heard_of():
    # docs/rules.md §3: new event types may be added; a reader skips a type it does not know.
    good = encode(ExecutionStarted(deployment="d", seq=1, at=0.0, step="A", target=None, attempt=1))
    heard = []
    records = list(read_jsonl([good, b'{"type":"step.exploded","seq":2}', good], "h.jsonl", on_unknown=lambda n, t: heard.append((n, t))))
    assert [n for n, _ in records] == [1, 3] and heard == [(2, "step.exploded")]


def test_output_records_come_back_from_json_lines_and_plain_readers_skip_them():
    records = output_records([("d", "A", "web-01", 1, "one"), ("d", "B", None, 1, "x"), ("d", "A", "web-01", 1, "two")])
    assert records == [
        ExecutionOutput(deployment="d", step="A", target="web-01", attempt=1, lines=["one", "two"]),
        ExecutionOutput(deployment="d", step="B", target=None, attempt=1, lines=["x"]),
    ]
    out = io.BytesIO()
    started = ExecutionStarted(deployment="d", seq=1, at=0.0, step="A", target="web-01", attempt=1)
    to_jsonl([started], out)
    to_jsonl(records, out)
    lines = out.getvalue().splitlines()
    assert json.loads(lines[1])["type"] == "execution.output"
    assert [r for _, r in read_jsonl(lines)] == [started, *records]
    assert list(from_jsonl(lines)) == [started]
