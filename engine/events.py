"""The event log's vocabulary (docs/rules.md §3): frozen, tagged msgspec Structs in one union.

Every event carries `deployment`, `seq` (1, 2, 3, … per deployment), `at` (seconds since
the deployment started: virtual in a simulation, monotonic in a real run) and `wall`
(UTC ISO-8601 in a real run, null in a simulation). The `type` tag is stable; fields
added later get defaults so old logs still decode, and unknown fields are ignored so
new logs still decode in old readers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import IO, Literal

import msgspec

ExecutionOutcome = Literal["succeeded", "failed", "timed_out", "cancelled", "interrupted"]
StepOutcome = Literal["succeeded", "failed", "cancelled"]
DeploymentOutcome = Literal["succeeded", "failed", "cancelled"]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    deployment: str
    seq: int
    at: float
    wall: str | None = None


class DeploymentStarted(Event, frozen=True, kw_only=True, tag="deployment.started"):
    scenario: str | None
    plan: dict
    policy: dict
    options: dict = {}  # how it was run (dry_run, speed, seed): what resume needs to go on


class StepStarted(Event, frozen=True, kw_only=True, tag="step.started"):
    step: str


class StepSkipped(Event, frozen=True, kw_only=True, tag="step.skipped"):
    step: str
    reason: str


class ExecutionStarted(Event, frozen=True, kw_only=True, tag="execution.started"):
    step: str
    target: str | None
    attempt: int


class ExecutionFinished(Event, frozen=True, kw_only=True, tag="execution.finished"):
    step: str
    target: str | None
    attempt: int
    outcome: ExecutionOutcome
    exit_code: int | None = None
    error: str | None = None


class StepFinished(Event, frozen=True, kw_only=True, tag="step.finished"):
    step: str
    outcome: StepOutcome


class DeploymentFinished(Event, frozen=True, kw_only=True, tag="deployment.finished"):
    outcome: DeploymentOutcome


class DeploymentResumed(Event, frozen=True, kw_only=True, tag="deployment.resumed"):
    """`resume` took the deployment over (its owner lease, engine/lease.py). Not a
    scheduling event: the core folds it as a no-op and reports skip it. Its `at` is the
    log's last `at` before the takeover (attempts that ended while no orchestrator
    watched are recorded after it at the times they really ended); `wall` is now."""

    host: str = ""
    pid: int = 0
    previous: str | None = None  # the owner it took over from (None: the log had none)
    reason: str = ""  # why the previous owner's lease could be taken: gone, stale, none


AnyEvent = (
    DeploymentStarted
    | StepStarted
    | StepSkipped
    | ExecutionStarted
    | ExecutionFinished
    | StepFinished
    | DeploymentFinished
    | DeploymentResumed
)

class ExecutionOutput(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="execution.output"):
    """Not an event (no seq, no time): what one attempt printed, as the store kept it.
    `history export` writes one per attempt after the events; `history import` stores
    them again. A reader that does not know the type skips it (docs/rules.md §3)."""

    deployment: str
    step: str
    target: str | None
    attempt: int
    lines: list[str]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)
_record_decoder = msgspec.json.Decoder(AnyEvent | ExecutionOutput)


class _Typed(msgspec.Struct):
    type: str


_typed_decoder = msgspec.json.Decoder(_Typed)
KNOWN_TYPES = frozenset(
    t.__struct_config__.tag  # type: ignore[attr-defined]
    for t in (DeploymentStarted, StepStarted, StepSkipped, ExecutionStarted, ExecutionFinished, StepFinished, DeploymentFinished, ExecutionOutput)
)


class EventFormatError(ValueError):
    """A line of JSON Lines that is not an event; names the line."""


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes | str) -> AnyEvent:
    return _decoder.decode(data)


def to_jsonl(events: Iterable[Event | ExecutionOutput], out: IO[bytes]) -> None:
    """Write events (or output records) as JSON Lines, one per line, in the order given."""
    buf = bytearray()
    for ev in events:
        _encoder.encode_into(ev, buf, -1)
        buf += b"\n"
        if len(buf) > 1 << 16:
            out.write(buf)
            buf.clear()
    out.write(buf)


def from_jsonl(lines: Iterable[bytes | str], name: str = "<jsonl>") -> Iterator[AnyEvent]:
    """Decode JSON Lines; a bad line raises `EventFormatError` naming the file and line.
    Lines of a type this reader does not know, and output records, are skipped."""
    for _, record in read_jsonl(lines, name):
        if type(record) is not ExecutionOutput:
            yield record  # type: ignore[misc]


def read_jsonl(
    lines: Iterable[bytes | str], name: str = "<jsonl>", on_unknown: Callable[[int, str], None] | None = None
) -> Iterator[tuple[int, AnyEvent | ExecutionOutput]]:
    """(line number, event or output record) for each line of JSON Lines. A line whose
    `type` this reader does not know is skipped (docs/rules.md §3: new types may be added), and
    `on_unknown(line number, type)` hears of it; a line that is no record of a known
    type raises `EventFormatError` naming the line."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, _record_decoder.decode(line)
        except msgspec.DecodeError as e:
            try:
                kind = _typed_decoder.decode(line).type
            except msgspec.DecodeError:
                kind = None
            if kind is not None and kind not in KNOWN_TYPES:
                if on_unknown is not None:
                    on_unknown(n, kind)
                continue
            raise EventFormatError(f"{name}:{n}: not an event: {e}") from None


def output_records(lines: Iterable[tuple[str, str, str | None, int, str]]) -> list[ExecutionOutput]:
    """Group output lines (deployment, step, target, attempt, text), in the order given,
    into one record per attempt, in the order each attempt first printed."""
    records: dict[tuple[str, str, str | None, int], list[str]] = {}
    for deployment, step, target, attempt, text in lines:
        records.setdefault((deployment, step, target, attempt), []).append(text)
    return [ExecutionOutput(deployment=d, step=s, target=t, attempt=a, lines=texts) for (d, s, t, a), texts in records.items()]

