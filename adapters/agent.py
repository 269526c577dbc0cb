"""The local adapter's agent: the parent of the commands, and the keeper of their records.

A local adapter runs two agents (an execution's attempts all go to one), started with
the deployment, each the leader of a session of its own and talking to its
orchestrator over a socket pair (its fd 0). For each attempt it is asked to run, it

1. enters the working folder (when it cannot, it says so and runs nothing),
2. creates the attempt's record, `ATTEMPT.status` and `ATTEMPT.output` in its target's
   folder (adapters/record.py; when it cannot: "the record cannot be written", and
   nothing runs),
3. `posix_spawn`s `/bin/sh -c COMMAND` as the leader of a new session, with stdin on
   /dev/null, stdout and stderr appended to the record's output, every signal at its
   default disposition and none blocked,
4. writes the status's first line, "PID STARTTIME BOOT_ID AGENT_PID AGENT_STARTTIME":
   the command's shell, which leads its process group, and this agent,
5. when the command's shell ends, reaps it and writes the second line, "STATUS
   SECONDS" (its status as a shell reports it: 128 + N for a command killed by signal
   N; how long it ran), then tells the orchestrator. The status file stays open from
   its creation to its last line: one file, written twice.

The agent outlives its orchestrator: when the socket closes (the orchestrator ended,
or was killed), it runs what it was already asked to run, keeps recording, and exits
once its last command has ended. Nothing of an attempt depends on the orchestrator,
and a resumed deployment adopts the records (LocalAdapter.adopt). HUP, INT and TERM
are caught (not ignored, which commands would inherit) so that a stray signal does not
lose the exit statuses of running commands. It also deletes the records the log no
longer needs (`forget`, `drop`): the same process makes and deletes a target's folder,
so a retry's record is never made in a folder being deleted.

Why an agent instead of a shell wrapper per attempt (which the ssh adapter still uses
on remote hosts): the wrapper cost a second `/bin/sh` per attempt, about 1 ms of CPU,
and spawning it blocked the orchestrator's event loop; the agent spawns the command's
own shell and nothing else, in a process of its own. Why two: `posix_spawn` waits until
the child has exec'd, which on a busy machine is a wait for a CPU; two agents wait side
by side (measured side by side, 5,000 no-ops: 5.2-5.5 s, against 5.5-5.7 s with one and
5.5-5.8 s with three).

The protocol: frames of a 4-byte big-endian length and NUL-separated fields (none of
which can hold a NUL: they are paths, names, numbers and a shell command).

    orchestrator -> agent   run ID RECORD WORKDIR COMMAND DEPLOYMENT STEP TARGET ATTEMPT
                            forget RECORD...                (the log holds how they ended)
                            drop DEPLOYMENT_FOLDER ROOT     (the log holds how it ended)
    agent -> orchestrator   exit ID STATUS OUTPUT_BYTES
                            failed ID STATUS MESSAGE        (nothing ran)

This module imports nothing of abreast, and little else: it starts in a few tens of
milliseconds.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import sys
import time

HEADER = struct.Struct("!I")
ARGV0 = b"/bin/sh"  # the command's $0, as under `/bin/sh -c`
RECORD_UNWRITABLE = 125  # the status of an attempt whose record cannot be written
NO_WORKDIR = 126  # the status of an attempt whose working folder cannot be entered
_TICKS = os.sysconf("SC_CLK_TCK")
_TICK_NS = 1_000_000_000 // _TICKS


def frame(*fields: bytes) -> bytes:
    body = b"\0".join(fields)
    return HEADER.pack(len(body)) + body


def frames(buffer: bytearray) -> list[list[bytes]]:
    """Take the complete frames off the front of `buffer`."""
    out = []
    start = 0
    size = len(buffer)
    while size - start >= 4:
        (length,) = HEADER.unpack_from(buffer, start)
        if size - start - 4 < length:
            break
        out.append(bytes(buffer[start + 4 : start + 4 + length]).split(b"\0"))
        start += 4 + length
    del buffer[:start]
    return out


def proc_starttime(pid: int) -> bytes | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), None for no live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if len(fields) < 20 or fields[0] == b"Z":
        return None
    return fields[19]


def ignored_signals() -> set[int]:
    """The signals a command would otherwise inherit as ignored."""
    out: set[int] = {signal.SIGPIPE, signal.SIGXFSZ}  # Python ignores both
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                out.add(sig)
        except (ValueError, OSError):
            pass
    return out


class Agent:
    def __init__(self, sock: int, shell: bytes) -> None:
        self.sock = sock
        self.shell = shell
        self.env = dict(os.environb)
        try:
            self.cwd = os.getcwdb()
        except OSError:  # its orchestrator's folder was deleted: the first attempt enters its own
            self.cwd = b""
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.eof = False  # the orchestrator closed its end
        self.gone = False  # nobody reads what we write any more
        self.children: dict[int, tuple[bytes, int, int, int]] = {}  # pid -> (id, status fd, output fd, start)
        self.boot = b""
        try:
            with open("/proc/sys/kernel/random/boot_id", "rb") as f:
                self.boot = f.read().strip()
        except OSError:
            pass
        me = os.getpid()
        self.me = b"%d %s" % (me, proc_starttime(me) or b"")
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.defaults = ignored_signals()

    # -- the loop ----------------------------------------------------------------------

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, _nothing)
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _nothing)
        os.set_blocking(self.sock, False)
        poll = select.epoll()
        poll.register(self.sock, select.EPOLLIN)
        poll.register(wake_r, select.EPOLLIN)
        writing = False
        while not (self.eof and not self.children):
            ended = False
            for fd, _ in poll.poll():
                if fd == wake_r:  # a SIGCHLD (or another signal): a command may have ended
                    try:
                        os.read(wake_r, 4096)
                    except BlockingIOError:
                        pass
                    ended = True
                elif not self.eof:
                    self.receive()
                    if self.eof:  # nobody will read what we would say
                        poll.unregister(self.sock)
                        self.gone, writing = True, False
                        self.outbox.clear()
            if ended:
                self.reap()
            if self.outbox and not self.gone:
                self.flush()
                if self.outbox and not writing and not self.eof:
                    poll.modify(self.sock, select.EPOLLIN | select.EPOLLOUT)
                    writing = True
                elif not self.outbox and writing:
                    poll.modify(self.sock, select.EPOLLIN)
                    writing = False

    def receive(self) -> None:
        while True:
            try:
                chunk = os.read(self.sock, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            self.inbox += chunk
            if len(chunk) < 1 << 16:
                break  # all there was (a read more would only say so)
        for fields in frames(self.inbox):
            if fields[0] == b"run" and len(fields) == 9:
                self.run(*fields[1:])
            elif fields[0] == b"forget":
                for record in fields[1:]:
                    forget(record)
            elif fields[0] == b"drop" and len(fields) == 3:
                drop(fields[1], fields[2])

    def send(self, *fields: bytes) -> None:
        if not self.gone:
            self.outbox += frame(*fields)

    def flush(self) -> None:
        try:
            while self.outbox:
                self.outbox = self.outbox[os.write(self.sock, self.outbox) :]
        except BlockingIOError:
            pass
        except OSError:  # the orchestrator is gone: the records are all that matter now
            self.gone = True
            self.outbox.clear()

    # -- one attempt -------------------------------------------------------------------

    def run(self, ident: bytes, record: bytes, workdir: bytes, command: bytes, *names: bytes) -> None:
        if workdir and workdir != self.cwd:
            try:
                os.chdir(workdir)
            except OSError as e:
                self.send(b"failed", ident, b"%d" % NO_WORKDIR, os.fsencode(f"cannot enter the working folder {os.fsdecode(workdir)}: {e.strerror}"))
                return
            self.cwd = workdir
        status = output = -1
        try:
            make_parent(record)
            status = os.open(record + b".status", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            output = os.open(record + b".output", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as e:
            for fd in (status, output):
                if fd >= 0:
                    os.close(fd)
            if status >= 0:
                _unlink(record + b".status")
            message = f"cannot write the attempt record {os.fsdecode(record)}.status: {e.strerror or e}: nothing ran"
            self.send(b"failed", ident, b"%d" % RECORD_UNWRITABLE, os.fsencode(message))
            return
        env = self.env.copy()
        deployment, step, target, attempt = names
        env[b"ABREAST_DEPLOYMENT"], env[b"ABREAST_STEP"], env[b"ABREAST_TARGET"], env[b"ABREAST_ATTEMPT"] = deployment, step, target, attempt
        began = time.monotonic_ns()
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME) // _TICK_NS
        try:
            pid = os.posix_spawn(
                self.shell,
                [ARGV0, b"-c", command],
                env,
                file_actions=[(os.POSIX_SPAWN_DUP2, self.devnull, 0), (os.POSIX_SPAWN_DUP2, output, 1), (os.POSIX_SPAWN_DUP2, output, 2)],
                setsid=True,
                setsigdef=self.defaults,
                setsigmask=(),
            )
        except OSError as e:
            os.close(status)
            os.close(output)
            _unlink(record + b".status")  # nothing ran: the record says so by having no status
            _unlink(record + b".output")
            self.send(b"failed", ident, b"", os.fsencode(f"cannot start {os.fsdecode(self.shell)}: {e.strerror or e}"))
            return
        # A process's start time is the boot-clock tick it was forked in: when the clock
        # was in the same tick before and after the spawn, that is the one (no /proc read).
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME) // _TICK_NS
        tick = b"%d" % now if now == before else proc_starttime(pid)
        try:  # no tick: it has ended already and is a zombie (its exit line says how)
            os.write(status, b"%d %s %s %s\n" % (pid, tick or b"", self.boot, self.me))
        except OSError:
            pass  # a full disk: the orchestrator still hears how it ends
        self.children[pid] = (ident, status, output, began)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            ident, record, output, began = child
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                code = 128 - code  # as a shell reports a command killed by a signal
            elapsed = (time.monotonic_ns() - began) / 1e9
            try:
                size = os.fstat(output).st_size
            except OSError:
                size = -1
            os.close(output)
            try:
                os.write(record, b"%d %.6f\n" % (code, elapsed))
            except OSError:
                pass  # the orchestrator, if it still listens, records it all the same
            os.close(record)
            self.send(b"exit", ident, b"%d" % code, b"%d" % size)


def make_parent(record: bytes) -> None:
    """The folder of the attempt's record (its target's: a new target's, usually; rarely
    the step's and the deployment's too)."""
    parent = record.rpartition(b"/")[0]
    try:
        os.mkdir(parent, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(parent, 0o700, exist_ok=True)


def forget(record: bytes) -> None:
    """Delete an attempt's record, and its target's folder if that is now empty (made
    again by `make_parent` if a retry comes: both happen here, one after the other)."""
    _unlink(record + b".status")
    _unlink(record + b".output")
    try:
        os.rmdir(record.rpartition(b"/")[0])
    except OSError:
        pass


def drop(deployment: bytes, root: bytes) -> None:
    """Delete what is left of a deployment's records, and the store's state folder if
    no other deployment has records in it."""
    import shutil

    shutil.rmtree(deployment, ignore_errors=True)
    try:
        os.rmdir(root)
    except OSError:
        pass


def _unlink(path: bytes) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _nothing(signum: int, frame: object) -> None:
    pass


def last_words(root: str, pid: int) -> str:
    """What an agent that died of an error left (see `main`), as ": MESSAGE", or ''."""
    path = f"{root}/agent-{pid}.error"
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().strip()
        os.unlink(path)
    except OSError:
        return ""
    return ": " + (text.splitlines() or [""])[-1]


def main() -> None:
    """`python -S -E -P .../adapters/agent.py SHELL ROOT`, its orchestrator's socket on fd 0. An
    error that ends it is left in ROOT/agent-PID.error for the orchestrator to show."""
    shell = os.fsencode(sys.argv[1]) if len(sys.argv) > 1 else b"/bin/sh"
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:  # two open files per running command
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    try:
        Agent(0, shell).serve()
    except BaseException:
        if len(sys.argv) > 2:
            import traceback

            try:
                with open(f"{sys.argv[2]}/agent-{os.getpid()}.error", "w", encoding="utf-8") as f:
                    f.write(traceback.format_exc())
            except OSError:
                pass
        raise


if __name__ == "__main__":
    main()
