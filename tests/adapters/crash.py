"""An orchestrator to kill: `python -m tests.adapters.crash REQUEST.json` runs one
attempt through an adapter and waits for it, so that a test can kill -9 it (and its
local ssh clients) mid-command and then adopt the attempt from a fresh adapter.

REQUEST.json: {"kind": "local"|"ssh", "deployment", "step": Step, "target": Target,
"attempt", "workdir", "report": FILE}; FILE receives the ssh adapter's control folder
once it has one (so the test can end the masters the dead orchestrator left behind).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec
import trio

from engine.adapter import ExecutionRequest
from engine.plan import Step, Target


def request_of(doc: dict) -> ExecutionRequest:
    return ExecutionRequest(
        deployment=doc["deployment"],
        step=msgspec.convert(doc["step"], Step),
        target=msgspec.convert(doc["target"], Target) if doc["target"] is not None else None,
        attempt=doc["attempt"],
        workdir=Path(doc["workdir"]),
    )


def adapter_of(kind: str):  # noqa: ANN201
    if kind == "ssh":
        from adapters.ssh import SshAdapter

        return SshAdapter()
    from adapters.local import LocalAdapter

    return LocalAdapter()


async def main(doc: dict) -> None:
    adapter = adapter_of(doc["kind"])
    request = request_of(doc)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(adapter.run, request, lambda line: None)
        while getattr(adapter, "_folder", None) is None and doc["kind"] == "ssh":
            await trio.sleep(0.01)
        Path(doc["report"]).write_text(str(getattr(adapter, "_folder", "")))


if __name__ == "__main__":
    trio.run(main, json.loads(Path(sys.argv[1]).read_text()))
