"""The attempt's own record on its target: what resume needs after a crash.

Every real attempt (local or remote) is started by something that outlives the
orchestrator and keeps the record: killing the orchestrator kills no command and loses
no exit status. On this machine that is the local adapter's agent (adapters/agent.py),
the parent of every command it runs; on an ssh host, a small POSIX shell wrapper
(`WRAPPER`, below) per attempt. Either way the command runs as the leader of a session
(and so a process group) of its own.

The record, under the target's state root:

    ROOT/<deployment>/<step>/<target>/<attempt>.status    (the local adapter's agent)
        line 1  "PID STARTTIME BOOT_ID AGENT_PID AGENT_STARTTIME": the command's shell,
                which leads the attempt's process group, and the agent that is its
                parent; written the moment the command starts, into a file created
                just before (so: no status file, nothing ran; an empty one, the agent
                is between the two)
        line 2  "STATUS SECONDS": how it ended (128 + N when signal N killed it, as a
                shell reports it) and how long it ran, written by the agent once it
                has reaped the shell
    ROOT/<deployment>/<step>/<target>/<attempt>.output    everything the command wrote

    ROOT/<deployment>/<step>/<target>/<attempt>/           (the ssh adapter's wrapper)
        started   "PID STARTTIME BOOT_ID\n": PID is the wrapper's, which leads the group;
                  written before the command runs
        output    everything the command wrote (stdout and stderr, in order)
        exit      "STATUS\n" — written when the command ends, before the wrapper ends
                  itself; its modification time is when (on the host's clock, like
                  `started`'s)

STARTTIME is field 22 of /proc/PID/stat (clock ticks since boot) and BOOT_ID the
kernel's boot id, so a reused pid or a rebooted host is never taken for the attempt.
Two layouts, one content: the local one costs an attempt two files instead of a
folder and three, and the agent keeps the status file open from the command's start
to its end (measured with an agent alone, 5,000 no-op commands: 5.8 s of CPU instead
of 6.4 s, the commands' own included).

Names are made safe for any file system by `key()` (percent-encoding; see there). A
line is complete only when it ends in a newline (each is written with one `write`).

The wrapper's arguments: `$1` the attempt folder, `$2` the working folder (empty: stay
where the shell starts), `$3` the command. It traps HUP, INT and TERM with a handler
(not an ignore, which the command would inherit), so a TERM of the group reaches the
command with its default disposition while the wrapper lives on to write `exit`.
The command runs in a `/bin/sh -c` of its own, a child of the wrapper in the same
process group: `$$` in the command is its own shell (so `kill $$` stops the command, as
it would under `/bin/sh -c`, and not the wrapper, which would trap it), `$0` is
`/bin/sh`, and exec resets the wrapper's traps to their defaults.
Its own exit status is the command's (125: the record could not be written, nothing
ran; 126: the working folder could not be entered, and `exit` says so).

This module is pure apart from the small file readers at the bottom: both adapters,
local and ssh, use the same record layout and the same parsing.
"""

from __future__ import annotations

import hashlib
import math
import os
from urllib.parse import quote

from engine.lease import boot_id, proc_starttime

WRAPPER = r"""d=$1 w=$2 c=$3
trap : HUP INT TERM
if [ ! -f "$d/started" ] || [ ! -s "$d/started" ]; then
s= b=
{ read -r s </proc/$$/stat; read -r b </proc/sys/kernel/random/boot_id; } 2>/dev/null
s=${s##*) }
set -f; set -- $s; set +f
printf '%s %s %s\n' "$$" "${20}" "$b" >"$d/started" || { echo "abreast: cannot write the attempt record in $d" >&2; exit 125; }
fi
exec >>"$d/output" 2>&1 </dev/null
if [ -n "$w" ] && ! cd -- "$w"; then echo 126 >"$d/exit"; exit 126; fi
/bin/sh -c "$c"
s=$?
echo "$s" >"$d/exit"
exit "$s"
"""

SERVER_KEY = "%server"  # the target folder of a server step (no target); never a key()


def key(name: str) -> str:
    """A file name for any step or target name: percent-encoded (so `/`, `\\0` and
    non-ASCII cannot escape or break the path), `.`/`..`/empty encoded too, and long
    names cut with a hash of the whole so two names never share a folder."""
    safe = quote(name, safe=" -_.,+=@")
    if safe in ("", ".", ".."):
        return safe.replace(".", "%2E") or "%"
    if len(safe) > 120:
        return safe[:80] + "%~" + hashlib.sha256(name.encode()).hexdigest()[:32]
    return safe


def attempt_path(deployment: str, step: str, target: str | None, attempt: int) -> str:
    """The attempt's folder, relative to the target's state root."""
    return "/".join((key(deployment), key(step), SERVER_KEY if target is None else key(target), str(attempt)))


class Started(tuple):
    """(pid, starttime, boot_id, agent) from a `started` file; starttime/boot_id may be
    '' where the target has no /proc; agent is (pid, starttime) of the local agent
    that is the command's parent, or None (a wrapper's record)."""

    __slots__ = ()

    @property
    def pid(self) -> int:
        return self[0]

    @property
    def starttime(self) -> str:
        return self[1]

    @property
    def boot_id(self) -> str:
        return self[2]

    @property
    def agent(self) -> tuple[int, str] | None:
        return self[3]


def parse_started(text: str) -> Started | None:
    """The `started` file's contents, or None while it is missing or incomplete."""
    if not text.endswith("\n"):
        return None
    fields = text[:-1].split(" ")
    if len(fields) not in (3, 5) or not fields[0].isdigit():
        return None
    agent = None
    if len(fields) == 5:
        if not fields[3].isdigit():
            return None
        agent = (int(fields[3]), fields[4])
    return Started((int(fields[0]), fields[1], fields[2], agent))


def parse_status(text: str) -> tuple[Started | None, int | None, float | None]:
    """A local record's status file: (who started, exit status, seconds it ran); each
    None while its line is not complete."""
    first, newline, rest = text.partition("\n")
    started = parse_started(first + newline)
    line, newline, _ = rest.partition("\n")
    fields = line.split(" ")
    if started is None or not newline or len(fields) != 2 or not fields[0].isdigit():
        return started, None, None
    try:
        seconds = float(fields[1])
    except ValueError:
        return started, None, None
    return started, int(fields[0]), seconds if math.isfinite(seconds) and seconds >= 0 else None


class LineSplitter:
    """Bytes in, complete lines out, in time linear in the input (a 100 MB line is
    scanned once: only the new bytes are searched for a newline).

    With `limit`, a line keeps at most its first `limit` bytes (the rest is counted in
    `cut`, not held): memory stays bounded whatever the command writes. A cut line is
    returned longer than `limit` // 4 characters, so a reader that cuts at that many
    characters sees that it was cut."""

    __slots__ = ("_pending", "_limit", "_over", "cut")

    def __init__(self, limit: int | None = None) -> None:
        self._pending = bytearray()
        self._limit = limit
        self._over = 0  # bytes of the pending line beyond the limit, dropped
        self.cut = 0  # lines cut at the limit so far

    def feed(self, chunk: bytes) -> list[str]:
        limit = self._limit
        if b"\n" not in chunk:
            self._hold(chunk)
            return []
        *complete, rest = chunk.split(b"\n")
        if self._pending or self._over:
            self._hold(complete[0])
            complete[0] = bytes(self._pending)
            self._pending = bytearray()
            if self._over:
                self.cut += 1
                self._over = 0
        if limit is not None:
            for i, line in enumerate(complete):
                if len(line) > limit:
                    complete[i] = line[:limit]
                    self.cut += 1
        self._hold(rest)
        return [line.decode("utf-8", "replace").rstrip("\r") for line in complete]

    def _hold(self, part: bytes) -> None:
        limit = self._limit
        if limit is None:
            self._pending += part
            return
        room = limit - len(self._pending)
        if len(part) <= room:
            self._pending += part
        else:
            self._pending += part[: max(room, 0)]
            self._over += len(part) - max(room, 0)

    def close(self) -> list[str]:
        """The last line, if the output did not end with a newline."""
        if not self._pending and not self._over:
            return []
        if self._over:
            self.cut += 1
            self._over = 0
        line = bytes(self._pending).decode("utf-8", "replace").rstrip("\r")
        self._pending = bytearray()
        return [line]


# -- reading a local record (the ssh adapter reads its records through the host) ------


def read_text(path: str) -> str | None:
    """The file's text, or None if it cannot be read (missing, a folder, no access)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def alive(started: Started) -> bool:
    """Is the process group leader that wrote (or was written into) `started` still
    running on this machine? A pid reused by another process, or a host that rebooted
    since, is not it."""
    return _same(started.pid, started.starttime, started.boot_id)


def agent_alive(started: Started) -> bool:
    """Is the agent named in `started` (if any) still running, and so still to write
    how the command ended when it does?"""
    return started.agent is not None and _same(started.agent[0], started.agent[1], started.boot_id)


def _same(pid: int, starttime: str, boot: str) -> bool:
    if boot and boot != boot_id():
        return False
    now = proc_starttime(pid)
    return now is not None and (not starttime or now == starttime)
