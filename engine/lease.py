"""Who runs a deployment: the owner lease (SPEC §2, "Crash and resume").

A deployment has one live orchestrator at a time. `run` and `resume` take an owner
lease on it in the store, in the same transaction as their first event, and renew its
heartbeat while they run (engine/runtime.py). A second orchestrator reads the lease
first: a live owner refuses it (exit 2, naming the owner). An owner may be taken over
only when it is

- provably dead: it ran on this host, and the host rebooted since, or its pid is gone,
  or that pid now belongs to a process that started at another time (`/proc`); or
- stale: its heartbeat is older than `STALE_SECONDS` (an owner on another host, or one
  that hangs).

The old owner finds out at its next commit (another writer took the next seq) or
heartbeat (the lease names someone else) and stops, leaving its commands running for
the new owner to adopt.
"""

from __future__ import annotations

import os
import socket
import time

import msgspec

HEARTBEAT_SECONDS = 5.0  # how often a running orchestrator renews its lease
STALE_SECONDS = 60.0  # a lease not renewed for this long may be taken over


class Owner(msgspec.Struct, frozen=True):
    """The orchestrator that holds (or held) a deployment's lease."""

    host: str
    pid: int
    starttime: str  # field 22 of /proc/PID/stat ('' where there is no /proc)
    boot_id: str  # the kernel's boot id ('' where there is none)
    heartbeat: float  # wall time (Unix seconds) of the last renewal
    token: str  # random, per orchestrator: which lease is ours, whatever the pid

    def describe(self, now: float | None = None) -> str:
        ago = max(0.0, (time.time() if now is None else now) - self.heartbeat)
        return f"pid {self.pid} on {self.host} (last heartbeat {ago:.0f}s ago)"


def proc_starttime(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot
    (None: no such live process, or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] == b"Z":
        return None
    return fields[19].decode() if len(fields) > 19 else None


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def this_process(now: float | None = None) -> Owner:
    """This orchestrator, as a lease holder."""
    pid = os.getpid()
    return Owner(
        host=socket.gethostname(),
        pid=pid,
        starttime=proc_starttime(pid) or "",
        boot_id=boot_id(),
        heartbeat=time.time() if now is None else now,
        token=os.urandom(8).hex(),  # as secrets.token_hex, without importing it (11 ms)
    )


def provably_dead(owner: Owner) -> bool:
    """The owner ran on this host and is gone: the host rebooted since, or its pid is
    gone (or a zombie), or that pid now names a process that started at another time."""
    if owner.host != socket.gethostname():
        return False
    current_boot = boot_id()
    if owner.boot_id and current_boot and owner.boot_id != current_boot:
        return True
    if os.path.isdir("/proc/self"):
        now = proc_starttime(owner.pid)
        return now is None or (bool(owner.starttime) and now != owner.starttime)
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def may_take_over(owner: Owner, now: float | None = None, stale_after: float = STALE_SECONDS) -> str | None:
    """Why `owner`'s lease may be taken over ('gone', 'stale'), or None: it is live."""
    if provably_dead(owner):
        return "gone"
    if (time.time() if now is None else now) - owner.heartbeat > stale_after:
        return "stale"
    return None
