"""The attempt's own record on its target: what resume needs after a crash.

Every real attempt (local or remote) is started by something that outlives the
orchestrator and keeps the record: killing the orchestrator kills no command and loses
no exit status. On this machine that is the local adapter's agent (adapters/agent.py),
the parent of every command it runs; on an ssh host, a small POSIX shell wrapper
(`WRAPPER`, below) per attempt. Either way the command runs as the leader of a session
(and so a process group) of its own.

One folder per attempt, under the target's state root:

    ROOT/<deployment>/<step>/<target>/<attempt>/
        started   "PID STARTTIME BOOT_ID[ AGENT_PID AGENT_STARTTIME]\n": PID leads the
                  attempt's process group (the command's shell under the agent, the
                  wrapper over ssh); STARTTIME is field 22 of /proc/PID/stat (clock
                  ticks since boot) and BOOT_ID the kernel's boot id, so a reused pid
                  or a rebooted host is never taken for the attempt. The agent adds
                  itself: the command's parent, which writes `exit` after the command's
                  shell has ended (the wrapper writes `exit` before it ends itself).
                  No `started` at all: nothing ran. An incomplete one: the agent is
                  between creating it and starting the command.
        output    everything the command wrote (stdout and stderr, in order)
        exit      "STATUS\n" — written when the command ends (128 + N when signal N
                  killed it, as a shell reports it); its modification time is when it
                  ended (on the target's clock, like `started`'s)

Names are made safe for any file system by `key()` (percent-encoding; see there). A
file is complete only when it ends in a newline (each is written with one `write`).

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

RECORD_UNWRITABLE = 125  # the wrapper's status when `started` could not be written
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


def format_started(pid: int, starttime: str, boot: str) -> str:
    """The `started` line, as the wrapper writes it."""
    return f"{pid} {starttime} {boot}\n"


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


def parse_exit(text: str) -> int | None:
    """The `exit` file's contents: the command's exit status, None if incomplete."""
    if not text.endswith("\n"):
        return None
    value = text.strip()
    return int(value) if value.isdigit() else None


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


# -- reading a local record (the ssh adapter reads the same files through the host) ---


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
    `exit` when the command ends?"""
    return started.agent is not None and _same(started.agent[0], started.agent[1], started.boot_id)


def _same(pid: int, starttime: str, boot: str) -> bool:
    if boot and boot != boot_id():
        return False
    now = proc_starttime(pid)
    return now is not None and (not starttime or now == starttime)


def ended_after(folder: str) -> float | None:
    """Seconds from `started` to `exit` by their modification times (one clock: the
    target's), or None if either is missing."""
    try:
        return max(0.0, (os.stat(f"{folder}/exit").st_mtime_ns - os.stat(f"{folder}/started").st_mtime_ns) / 1e9)
    except FileNotFoundError:
        return None
