"""What the ssh adapter runs on a remote host, and what the host says back.

Four POSIX sh scripts, each the body of a function the remote /bin/sh reads from the
session's stdin (adapters/ssh.py sends them): `probe_script` once per connection (the
tools the attempts need, the state root), `run_script` per attempt (claim the record's
folder, run the record's WRAPPER under setsid with ABREAST_* set, follow its `output`),
`inspect_script` (the record's state, its output, following a running attempt) and
`stop_script` (TERM then KILL of the attempt's process group). Every value from the
scenario is a shlex.quote'd word. They talk back on stderr in `abreast-...` lines,
which `Report` reads; anything else there is the remote tools' own complaints (and
ssh's), which `cause` turns into a few words.
"""

from __future__ import annotations

import shlex

from adapters.record import WRAPPER
from engine.adapter import ExecutionRequest


# -- what the host says back -----------------------------------------------------------------


class Report:
    """The `abreast-...` lines a remote script wrote on stderr, and the other lines."""

    def __init__(self, errors: bytes | bytearray):
        self.exit: int | None = None
        self.error: str | None = None
        self.state: str | None = None
        self.stopped = False
        self.ready = False
        self.mtimes: list[float] = []
        self.other: list[str] = []
        for line in bytes(errors).decode("utf-8", "replace").splitlines():
            word, _, rest = line.partition(" ")
            if word == "abreast-exit" and rest.strip().isdigit():
                self.exit = int(rest)
            elif word == "abreast-error:":
                self.error = self.error or rest.strip()
            elif word == "abreast-record":
                self.state = rest.strip()
            elif word == "abreast-stopped":
                self.stopped = True
            elif word == "abreast-ready":
                self.ready = True
            elif word == "abreast-mtime":
                try:
                    self.mtimes.append(float(rest))
                except ValueError:
                    pass
            elif line.strip():
                self.other.append(line.strip())

    @property
    def ended_after(self) -> float | None:
        if len(self.mtimes) != 2:
            return None
        return max(0.0, self.mtimes[1] - self.mtimes[0])

    def detail_suffix(self) -> str:
        return f" ({'; '.join(self.other[-3:])})" if self.other else ""


# Causes of a failed connection, by OpenSSH's own words (first match wins).
_CAUSES = (
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "the host key has changed (it differs from known_hosts)"),
    ("has changed and you have requested strict checking", "the host key has changed (it differs from known_hosts)"),
    ("host key is known for", "the host key is unknown (not in known_hosts)"),
    # (asked to confirm an unknown key, BatchMode answers no without a word)
    ("Host key verification failed", "the host key is unknown (or could not be verified)"),
    ("Permission denied", "authentication refused"),
    ("Too many authentication failures", "authentication refused"),
    ("Connection refused", "connection refused"),
    ("timed out", "timed out connecting"),
    ("No route to host", "host unreachable"),
    ("Network is unreachable", "network unreachable"),
    ("Could not resolve hostname", "unknown host name"),
    ("Name or service not known", "unknown host name"),
    ("Connection closed", "connection closed by the host"),
    ("Connection reset", "connection reset"),
    ("closed by remote host", "the connection was lost"),
    ("Broken pipe", "the connection was lost"),
    ("read header failed", "the connection was lost"),
)


def cause(lines: list[str], code: int | None) -> str:
    """Why ssh failed, in a few words, with ssh's own last words."""
    meaningful = [
        line.strip()
        for line in lines
        if line.strip() and not line.startswith("@@@") and "Permanently added" not in line
    ]
    text = "\n".join(meaningful)
    words = next((words for needle, words in _CAUSES if needle in text), None)
    detail = "; ".join(meaningful[-2:])
    if words is None and code == 255 and not detail:
        # A multiplexed session whose connection went away ends like this, silently.
        words, detail = "the connection was lost", "ssh exit status 255"
    if words is None:
        words = f"ssh failed (exit status {code})" if code is not None else "ssh failed"
    return f"{words} ({detail})" if detail else words


# -- the scripts ------------------------------------------------------------------------------
# Each is the body of a sh function (adapters/ssh.py, SshAdapter._start); `$d` is the attempt's
# folder. Every value from the scenario is a shlex.quote'd word. Files are written with
# `printf ''`, not `:`: a failed redirection on a special builtin ends a POSIX shell.


def run_script(record: str, request: ExecutionRequest, workdir: str, siblings: list[str] | tuple[str, ...] = ()) -> str:
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in request.environment.items())
    return f"""d={record}
w={workdir}
c={shlex.quote(request.step.run or "")}
W={shlex.quote(WRAPPER)}
fail() {{ echo "abreast-error: $*" >&2; exit 125; }}
full() {{ echo x | cat > "$d/.probe"; }}  # the shell only says "I/O error": cat says which
[ -d "$d" ] || (umask 077 && exec mkdir -p -- "$d" {" ".join(siblings)}) || fail "cannot make the attempt's record folder $d on the host"
set -C
if ! printf '' > "$d/output"; then
  [ -e "$d/output" ] && fail "the attempt's record $d already exists on the host (this attempt ran or was cancelled before)"
  fail "cannot write the attempt's record in $d on the host"
fi
set +C
printf '' > "$d/.follow" || fail "cannot write the attempt's record in $d on the host"
(
  export {exports}
  read -r me rest < /proc/self/stat
  tail -q -f -c +1 --pid="$me" -- "$d/output" "$d/.follow" &
  exec setsid /bin/sh -c "$W" /bin/sh "$d" "$w" "$c"
)
s=$?
if [ -s "$d/started" ]; then
  [ -e "$d/exit" ] || echo "$s" > "$d/exit"
  printf '' > "$d/.follow"
  echo "abreast-exit $s" >&2
  exit "$s"
fi
printf '' > "$d/exit"
printf '' > "$d/.follow"
full
fail "the attempt's wrapper did not start (exit status $s)"
"""


def inspect_script(record: str, follow: bool, offset: int) -> str:
    """The record's state on stderr (`abreast-record none|lost|running|finished`); the
    output on stdout (from byte `offset`); `abreast-exit` and the two `abreast-mtime`
    lines once finished. With `follow`, a running attempt is followed to its end."""
    running = (
        f"""echo "abreast-record running" >&2
  tail -q -f -c +{offset + 1} --pid="$p" -- "$d/output" "$d/.follow"
  i=0; while [ ! -e "$d/exit" ] && [ "$i" -lt 40 ]; do sleep 0.05; i=$((i+1)); done
  [ -e "$d/exit" ] || {{ echo "abreast-record lost" >&2; exit 0; }}"""
        if follow
        else """echo "abreast-record running" >&2; exit 0"""
    )
    return f"""d={record}
if [ ! -s "$d/started" ]; then echo "abreast-record none" >&2; exit 0; fi
read -r p t b < "$d/started"
if [ ! -e "$d/exit" ]; then
  live=
  if read -r s < /proc/"$p"/stat 2>/dev/null; then
    s=${{s##*) }}; set -f; set -- $s; set +f
    if [ "$1" != Z ] && {{ [ -z "$t" ] || [ "$t" = "${{20}}" ]; }}; then live=1; fi
  fi
  n=; read -r n < /proc/sys/kernel/random/boot_id 2>/dev/null
  if [ -n "$b" ] && [ "$b" != "$n" ]; then live=; fi
  if [ -z "$live" ] && [ ! -e "$d/exit" ]; then echo "abreast-record lost" >&2; exit 0; fi
fi
if [ ! -e "$d/exit" ]; then
  {running}
else
  echo "abreast-record finished" >&2
  tail -c +{offset + 1} -- "$d/output"
fi
read -r s < "$d/exit"
echo "abreast-exit $s" >&2
stat -c 'abreast-mtime %.9Y' -- "$d/started" "$d/exit" >&2"""


def stop_script(record: str, grace: float) -> str:
    """TERM the attempt's process group, KILL it after `grace` seconds. If the attempt
    has not claimed its folder yet, claim it first so it never starts; if it has but its
    wrapper has not written `started` yet, wait for that (or for the empty `exit` of a
    wrapper that could not start)."""
    ticks = max(1, round(grace / 0.05))
    return f"""d={record}
i=0
while [ ! -s "$d/started" ] && [ ! -e "$d/exit" ]; do
  if (umask 077 && exec mkdir -p -- "$d") && (set -C && printf '' > "$d/output") 2>/dev/null; then
    echo "abreast-stopped before it started" >&2; exit 0
  fi
  i=$((i+1)); [ "$i" -gt 600 ] && {{ echo "abreast-error: the attempt did not start within 30 s" >&2; exit 1; }}
  sleep 0.05
done
[ -s "$d/started" ] || {{ echo "abreast-stopped it did not start" >&2; exit 0; }}
read -r p t b < "$d/started"
same() {{
  if read -r s < /proc/"$p"/stat 2>/dev/null; then
    s=${{s##*) }}; set -f; set -- $s; set +f
    [ -z "$t" ] || [ "$t" = "${{20}}" ]
  fi
}}
if [ ! -e "$d/exit" ] && same; then kill -s TERM -- "-$p" 2>/dev/null; fi
i=0
while [ ! -e "$d/exit" ] && [ "$i" -lt {ticks} ]; do sleep 0.05; i=$((i+1)); done
if same || [ ! -r /proc/"$p"/stat ]; then kill -s KILL -- "-$p" 2>/dev/null; fi
echo "abreast-stopped" >&2"""


def probe_script(state_root: str) -> str:
    """Once per connection: the tools the attempts need, and the state root (0700)."""
    return f"""fail() {{ echo "abreast-error: $*" >&2; exit 125; }}
command -v setsid >/dev/null 2>&1 || fail "the host has no setsid (util-linux)"
tail -c 0 --pid=1 /dev/null 2>/dev/null || fail "the host's tail cannot follow a process (tail --pid: GNU coreutils)"
r={remote_path(state_root)}
(umask 077 && exec mkdir -p -- "$r") || fail "cannot make the state folder $r on the host"
echo "abreast-ready" >&2"""


def remote_path(path: str) -> str:
    """A remote path as one sh word: `~` and `~/...` from the remote $HOME."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"/' + shlex.quote(rest) if rest else '"$HOME"'
    return shlex.quote(path)


