"""The event store: one append-only stream of events per deployment.

A small interface (`EventStore`) with two implementations that pass one contract test
suite (tests/engine/test_store.py): `MemoryStore` for tests and simulations, and
`SqliteStore`, a SQLite file in WAL mode (the default, `.abreast/abreast.db`).

- Optimistic concurrency: the primary key is (deployment, seq). A second writer that
  appends a seq already taken gets `ConcurrencyError` and the stream is unchanged; an
  append is all or nothing.
- `deployments` is a projection kept in the same transaction as the events it follows:
  scenario, status (running, succeeded, failed, cancelled), started, finished.
- Captured output lines live in their own table, capped per execution by the runtime;
  `append(events, output=...)` writes both in one transaction (an attempt's output and
  its `execution.finished` are stored together or not at all).
- The owner lease (engine/lease.py): `claim` takes it in the same transaction as the
  first events of `run`/`resume`, `renew` keeps its heartbeat; `owner` reads it. A
  deployment with no owner row never ran from this store (it came in by `history
  import`).
- Persist first, act second: the runtime appends a batch and only then starts the
  executions it names.
- Every write first checks that the file at the store's path is still the one it
  opened: a store deleted or replaced under a running deployment stops it.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar
from urllib.parse import quote

import msgspec

if TYPE_CHECKING:
    import sqlite_utils

from engine.events import AnyEvent, DeploymentFinished, DeploymentStarted, Event, decode, encode
from engine.lease import Owner

DEFAULT_DB = Path(".abreast") / "abreast.db"


def default_db_path() -> Path:
    """`$ABREAST_DB`, else `.abreast/abreast.db` in the current folder."""
    env = os.environ.get("ABREAST_DB")
    return Path(env) if env else DEFAULT_DB


class StoreError(Exception):
    """The store cannot do what was asked (a message for people, no traceback needed)."""


class ConcurrencyError(StoreError):
    """Another writer already appended this seq: the stream is unchanged."""


class UnknownDeployment(StoreError):
    pass


_F = TypeVar("_F", bound=Callable)


def _store_errors(doing: str) -> Callable[[_F], _F]:
    """A SQLite error in this method becomes a `StoreError` that says what could not be
    done, to which file, and why in words (a damaged file, a full disk, no permission),
    so that it reaches people as one line. `ConcurrencyError` and other `StoreError`s
    pass as they are."""

    def wrap(method: _F) -> _F:
        @functools.wraps(method)
        def translated(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: cannot {doing}: {_explain(e)}") from None
            except msgspec.DecodeError as e:
                raise StoreError(f"{self.path}: cannot {doing}: a recorded event does not decode ({e}); the file is damaged") from None

        return translated  # type: ignore[return-value]

    return wrap


def _check_regular(path: Path) -> None:
    """A store is a file: a device, a folder or a FIFO would block or mislead SQLite."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise StoreError(f"{path}: cannot open the event store: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise StoreError(f"{path}: cannot open the event store: not a regular file")


def _explain(e: sqlite3.Error) -> str:
    """SQLite's message, with what it means for the person who reads it."""
    text = str(e)
    low = text.lower()
    if "malformed" in low or isinstance(e, sqlite3.DatabaseError) and "not a database" in low:
        return f"the file is damaged ({text}); restore it from a backup, or export what still reads"
    if "readonly" in low or "read-only" in low:
        return f"the store is read-only ({text}); check the file's and its folder's permissions"
    if "full" in low:
        return f"the disk is full ({text})"
    if "disk i/o" in low:
        return f"the disk reported an I/O error ({text})"
    if "locked" in low or "busy" in low:
        return f"another process holds the store ({text})"
    if "unable to open" in low:
        return f"the file cannot be opened ({text})"
    return text


class LeaseHeld(StoreError):
    """Another orchestrator holds the deployment's lease (and may not be taken over)."""

    def __init__(self, deployment: str, owner: Owner | None):
        self.deployment = deployment
        self.owner = owner
        who = owner.describe() if owner is not None else "another orchestrator"
        super().__init__(f"deployment {deployment!r} is being run by {who}")


class LeaseLost(StoreError):
    """This orchestrator's lease was taken over (it looked dead or stale)."""


class DeploymentSummary(msgspec.Struct, frozen=True):
    id: str
    scenario: str | None
    status: str  # running, succeeded, failed, cancelled
    started: str | None  # wall time of deployment.started (null for a simulation)
    finished: str | None
    events: int


class OutputLine(msgspec.Struct, frozen=True):
    deployment: str
    step: str
    target: str | None
    attempt: int
    n: int  # line number within the attempt, from 1
    line: str


class EventStore(Protocol):
    def append(self, events: Sequence[Event]) -> None:
        """Append events (of one or more deployments) atomically, each at the seq it carries."""

    def read(self, deployment: str, after: int = 0) -> list[AnyEvent]:
        """The deployment's events with seq > after, in seq order (unknown: empty)."""

    def deployments(self) -> list[DeploymentSummary]:
        """Every deployment, newest first."""

    def summary(self, deployment: str) -> DeploymentSummary | None: ...

    def exists(self, deployment: str) -> bool: ...

    def add_output(self, lines: Sequence[OutputLine]) -> None: ...

    def owner(self, deployment: str) -> Owner | None:
        """The deployment's lease holder (or last holder); None: it never ran here."""

    def claim(self, owner: Owner, events: Sequence[Event], expect: str | None = None) -> None:
        """Take the lease of `events`' deployment for `owner` and append `events`, in one
        transaction. `expect` is the token of the owner the caller decided to take over
        (None: no owner): if the lease names anyone else by now, `LeaseHeld`."""

    def renew(self, deployment: str, owner: Owner, heartbeat: float) -> None:
        """Renew `owner`'s heartbeat; `LeaseLost` if the lease is someone else's now."""

    def output(self, deployment: str, step: str | None = None, target: str | None = None) -> list[OutputLine]: ...

    def close(self) -> None: ...


def _check_batch(events: Sequence[Event], last_seq: dict[str, int]) -> None:
    """Each deployment's events must continue its stream without gaps."""
    for ev in events:
        expected = last_seq.get(ev.deployment, 0) + 1
        if ev.seq != expected:
            if ev.seq < expected:
                raise ConcurrencyError(
                    f"deployment {ev.deployment!r}: seq {ev.seq} is already recorded "
                    "(is another orchestrator writing this deployment?)"
                )
            raise StoreError(f"deployment {ev.deployment!r}: seq {ev.seq} would leave a gap after {expected - 1}")
        last_seq[ev.deployment] = ev.seq


def _project(summary: dict[str, dict], ev: Event) -> None:
    """Fold one event into the `deployments` projection (a dict of row dicts)."""
    if isinstance(ev, DeploymentStarted):
        summary[ev.deployment] = {
            "id": ev.deployment,
            "scenario": ev.scenario,
            "status": "running",
            "started": ev.wall,
            "finished": None,
            "events": 0,
        }
    row = summary.get(ev.deployment)
    if row is None:
        raise StoreError(f"deployment {ev.deployment!r}: the first event must be deployment.started")
    row["events"] = ev.seq
    if isinstance(ev, DeploymentFinished):
        row["status"] = ev.outcome
        row["finished"] = ev.wall


class MemoryStore:
    """The in-memory twin of `SqliteStore`: same contract, nothing on disk."""

    blocking = False  # appends are instant: the runtime calls them in its own thread

    def __init__(self) -> None:
        self._events: dict[str, list[AnyEvent]] = {}
        self._summaries: dict[str, dict] = {}
        self._order: list[str] = []
        self._output: list[OutputLine] = []
        self._owners: dict[str, Owner] = {}

    def append(self, events: Sequence[Event], output: Sequence[OutputLine] = ()) -> None:
        last = {d: len(evs) for d, evs in self._events.items()}
        _check_batch(events, last)
        summaries = {k: dict(v) for k, v in self._summaries.items()}
        for ev in events:
            _project(summaries, ev)
        for ev in events:  # nothing above raised: commit
            if ev.deployment not in self._events:
                self._events[ev.deployment] = []
                self._order.append(ev.deployment)
            self._events[ev.deployment].append(ev)  # type: ignore[arg-type]
        self._summaries = summaries
        self._output.extend(output)

    def owner(self, deployment: str) -> Owner | None:
        return self._owners.get(deployment)

    def claim(self, owner: Owner, events: Sequence[Event], expect: str | None = None) -> None:
        d = events[0].deployment
        current = self._owners.get(d)
        if (current.token if current is not None else None) not in (expect, owner.token):
            raise LeaseHeld(d, current)
        self.append(events)
        self._owners[d] = owner

    def renew(self, deployment: str, owner: Owner, heartbeat: float) -> None:
        current = self._owners.get(deployment)
        if current is None or current.token != owner.token:
            raise LeaseLost(_lost(deployment, current))
        self._owners[deployment] = msgspec.structs.replace(current, heartbeat=heartbeat)

    def read(self, deployment: str, after: int = 0) -> list[AnyEvent]:
        return list(self._events.get(deployment, [])[after:])

    def deployments(self) -> list[DeploymentSummary]:
        return [DeploymentSummary(**self._summaries[d]) for d in reversed(self._order)]

    def summary(self, deployment: str) -> DeploymentSummary | None:
        row = self._summaries.get(deployment)
        return DeploymentSummary(**row) if row else None

    def exists(self, deployment: str) -> bool:
        return deployment in self._events

    def add_output(self, lines: Sequence[OutputLine]) -> None:
        self._output.extend(lines)

    def output(self, deployment: str, step: str | None = None, target: str | None = None) -> list[OutputLine]:
        return [
            o
            for o in self._output
            if o.deployment == deployment and (step is None or o.step == step) and (target is None or o.target == target)
        ]

    def close(self) -> None:
        pass


# --- SQLite ----------------------------------------------------------------------------

# Each migration takes the schema from version i to i+1. Never edit one that shipped:
# add the next. Version 1 was the first schema (events + deployments).
MIGRATIONS: list[str] = [
    # 1: the event streams and the deployments projection
    """
    CREATE TABLE events (
        deployment TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        at REAL NOT NULL,
        wall TEXT,
        body TEXT NOT NULL,
        PRIMARY KEY (deployment, seq)
    ) WITHOUT ROWID;
    CREATE TABLE deployments (
        id TEXT PRIMARY KEY,
        scenario TEXT,
        status TEXT NOT NULL,
        started TEXT,
        finished TEXT
    );
    """,
    # 2: an event count in the projection; captured output lines
    """
    ALTER TABLE deployments ADD COLUMN events INTEGER NOT NULL DEFAULT 0;
    UPDATE deployments SET events = (SELECT COALESCE(MAX(seq), 0) FROM events WHERE events.deployment = deployments.id);
    ALTER TABLE deployments ADD COLUMN created INTEGER NOT NULL DEFAULT 0;
    UPDATE deployments SET created = rowid;
    CREATE TABLE output (
        deployment TEXT NOT NULL,
        step TEXT NOT NULL,
        target TEXT,
        attempt INTEGER NOT NULL,
        n INTEGER NOT NULL,
        line TEXT NOT NULL
    );
    CREATE INDEX output_by_execution ON output (deployment, step, target, attempt, n);
    """,
    # 3: the owner lease of each deployment run from this store (engine/lease.py)
    """
    CREATE TABLE owners (
        deployment TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        starttime TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        heartbeat REAL NOT NULL,
        token TEXT NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SqliteStore:
    """Events in a SQLite file (WAL mode, synchronous=NORMAL: a committed append survives
    the orchestrator being killed; only a power loss can take the last ones).

    One connection, used by one thread at a time (the runtime serializes its writes)."""

    blocking = True  # the runtime writes from a worker thread

    def __init__(self, path: str | Path, migrate_to: int = SCHEMA_VERSION, readonly: bool = False):
        """Open (and create, and migrate) the store at `path`. With `readonly`, only read
        it: nothing is created or migrated (for a store this user cannot write)."""
        self.path = Path(path)
        self.readonly = readonly
        self._known: dict[str, dict] = {}  # the projection rows of the streams this writer appended to
        self._db: sqlite_utils.Database | None = None
        try:
            conn = self._connect_readonly() if readonly else self._connect()
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"{self.path}: cannot open the event store: {_explain(e) if isinstance(e, sqlite3.Error) else e}") from None
        self.conn = conn
        self._where = Path(os.path.abspath(self.path))  # the same file after a chdir
        self._identity = _identity(self._where)
        try:
            if readonly:
                self._check_version()
                return
            conn.execute("PRAGMA busy_timeout=30000")
            # Two orchestrators opening a new file at once race to switch it to WAL;
            # that switch does not always wait on the busy handler, so retry it.
            for delay in (0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 0):
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or not delay:
                        raise
                    time.sleep(delay)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate(migrate_to)
        except StoreError:
            conn.close()
            raise
        except sqlite3.OperationalError as e:
            conn.close()
            raise StoreError(f"{self.path}: cannot use the event store: {_explain(e)}") from None
        except sqlite3.DatabaseError as e:
            conn.close()
            if "malformed" in str(e):
                raise StoreError(f"{self.path}: cannot use the event store: {_explain(e)}") from None
            raise StoreError(f"{self.path}: not an abreast event store: {e}") from None

    def check_file(self) -> None:
        """The file at our path must still be the one we opened: one deleted or replaced
        under a running deployment would silently take its history with it."""
        now = _identity(self._where)
        if now != self._identity:
            what = "deleted" if now is None else "replaced by another file"
            raise StoreError(f"{self.path}: the event store was {what} while abreast was writing to it")

    def _connect(self) -> sqlite3.Connection:
        """The store file and its folder are made readable by their owner only: a log
        holds every command and its output."""
        _check_regular(self.path)
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        return sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0, check_same_thread=False)

    def _connect_readonly(self) -> sqlite3.Connection:
        _check_regular(self.path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: no event store there")
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0, check_same_thread=False)
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            # A WAL store needs its shared-memory file, which a reader that cannot write
            # the folder cannot create: it does not exist, so no writer has the store
            # open, and the file can be read as it is.
            conn.close()
            conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
        return conn

    def _check_version(self) -> None:
        current = self.version
        if current > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {current} is newer than this abreast ({SCHEMA_VERSION}); upgrade abreast")
        if current < SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {current} needs an upgrade, which this user cannot write; "
                "run any abreast command on it once with write access"
            )

    @property
    def db(self) -> sqlite_utils.Database:
        """The sqlite-utils view of the same connection, for queries (made when first used)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    @property
    def version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE (one writer at a time) ... COMMIT; ROLLBACK if anything fails."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a failed COMMIT may have rolled back already
                conn.execute("ROLLBACK")
            raise

    def _migrate(self, target: int) -> None:
        with self._transaction() as conn:  # one migrator at a time
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {current} is newer than this abreast ({SCHEMA_VERSION}); upgrade abreast")
            for version in range(current, target):
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")

    @contextmanager
    def _writing(self, doing: str = "append events") -> Iterator[sqlite3.Connection]:
        """A write transaction on the file we opened; SQLite's errors (disk full, I/O
        error, a read-only file) become a `StoreError` that says what failed."""
        try:
            self.check_file()
            with self._transaction() as conn:
                yield conn
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot {doing}: {_explain(e)}") from None

    def append(self, events: Sequence[Event], output: Sequence[OutputLine] = (), doing: str = "append events") -> None:
        if not events and not output:
            return
        try:
            with self._writing(doing) as conn:
                summaries = self._write(conn, events, output)
            self._known.update(summaries)
        except sqlite3.IntegrityError:
            self._known.clear()
            d = events[0].deployment
            raise ConcurrencyError(
                f"deployment {d!r}: seq {events[0].seq} is already recorded (is another orchestrator writing this deployment?)"
            ) from None
        except BaseException:
            self._known.clear()
            raise

    def _write(self, conn: sqlite3.Connection, events: Sequence[Event], output: Sequence[OutputLine]) -> dict[str, dict]:
        """Append events and output lines inside the caller's transaction; returns the
        projection rows of the streams written (for `_known`, once committed)."""
        summaries: dict[str, dict] = {}
        if events:
            # A writer remembers where its streams stood; if another writer has moved
            # one since, the primary key refuses our rows and nothing is written.
            for d in {ev.deployment for ev in events}:
                row = self._known.get(d)
                if row is None:
                    found = conn.execute(self._SUMMARY + " WHERE id = ?", (d,)).fetchone()
                    row = dict(zip(("id", "scenario", "status", "started", "finished", "events"), found, strict=True)) if found else None
                if row is not None:
                    summaries[d] = dict(row)
            _check_batch(events, {d: row["events"] for d, row in summaries.items()})
            for ev in events:
                _project(summaries, ev)
            conn.executemany(
                "INSERT INTO events (deployment, seq, type, at, wall, body) VALUES (?, ?, ?, ?, ?, ?)",
                [(ev.deployment, ev.seq, ev.__struct_config__.tag, ev.at, ev.wall, encode(ev).decode()) for ev in events],
            )
            # The projection row changes only when a deployment starts or ends; the
            # event count is read from the events themselves (their primary key).
            changed = {ev.deployment for ev in events if type(ev) is DeploymentStarted or type(ev) is DeploymentFinished}
            if changed:
                conn.executemany(
                    "INSERT INTO deployments (id, scenario, status, started, finished, events, created) "
                    "VALUES (:id, :scenario, :status, :started, :finished, :events, "
                    "(SELECT COALESCE(MAX(created), 0) + 1 FROM deployments)) "
                    "ON CONFLICT (id) DO UPDATE SET status = :status, finished = :finished, events = :events",
                    [summaries[d] for d in changed],
                )
        if output:
            conn.executemany(
                "INSERT INTO output (deployment, step, target, attempt, n, line) VALUES (?, ?, ?, ?, ?, ?)",
                [(o.deployment, o.step, o.target, o.attempt, o.n, o.line) for o in output],
            )
        return summaries

    # -- the owner lease (engine/lease.py) ---------------------------------------------

    _OWNER = "SELECT host, pid, starttime, boot_id, heartbeat, token FROM owners WHERE deployment = ?"

    def owner(self, deployment: str) -> Owner | None:
        row = self.conn.execute(self._OWNER, (deployment,)).fetchone()
        return Owner(*row) if row else None

    def claim(self, owner: Owner, events: Sequence[Event], expect: str | None = None) -> None:
        d = events[0].deployment
        try:
            with self._writing("take the owner lease") as conn:
                row = conn.execute(self._OWNER, (d,)).fetchone()
                current = Owner(*row) if row else None
                if (current.token if current is not None else None) not in (expect, owner.token):
                    raise LeaseHeld(d, current)
                conn.execute(
                    "INSERT INTO owners (deployment, host, pid, starttime, boot_id, heartbeat, token) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (deployment) DO UPDATE SET host = excluded.host, "
                    "pid = excluded.pid, starttime = excluded.starttime, boot_id = excluded.boot_id, "
                    "heartbeat = excluded.heartbeat, token = excluded.token",
                    (d, owner.host, owner.pid, owner.starttime, owner.boot_id, owner.heartbeat, owner.token),
                )
                summaries = self._write(conn, events, ())
            self._known.update(summaries)
        except sqlite3.IntegrityError:
            self._known.clear()
            raise ConcurrencyError(
                f"deployment {d!r}: seq {events[0].seq} is already recorded (is another orchestrator writing this deployment?)"
            ) from None
        except BaseException:
            self._known.clear()
            raise

    def renew(self, deployment: str, owner: Owner, heartbeat: float) -> None:
        with self._writing("renew the owner lease") as conn:
            changed = conn.execute(
                "UPDATE owners SET heartbeat = ? WHERE deployment = ? AND token = ?", (heartbeat, deployment, owner.token)
            ).rowcount
            if not changed:
                row = conn.execute(self._OWNER, (deployment,)).fetchone()
                raise LeaseLost(_lost(deployment, Owner(*row) if row else None))

    @_store_errors("read events")
    def read(self, deployment: str, after: int = 0) -> list[AnyEvent]:
        rows = self.conn.execute(
            "SELECT body FROM events WHERE deployment = ? AND seq > ? ORDER BY seq", (deployment, after)
        ).fetchall()
        return [decode(body) for (body,) in rows]

    _SUMMARY = (
        "SELECT id, scenario, status, started, finished, "
        "(SELECT COALESCE(MAX(seq), 0) FROM events WHERE events.deployment = deployments.id) AS events FROM deployments"
    )

    @_store_errors("list deployments")
    def deployments(self) -> list[DeploymentSummary]:
        return [DeploymentSummary(**row) for row in self.db.query(self._SUMMARY + " ORDER BY created DESC")]

    @_store_errors("read a deployment")
    def summary(self, deployment: str) -> DeploymentSummary | None:
        rows = list(self.db.query(self._SUMMARY + " WHERE id = ?", [deployment]))
        return DeploymentSummary(**rows[0]) if rows else None

    @_store_errors("look up a deployment")
    def exists(self, deployment: str) -> bool:
        return self.conn.execute("SELECT 1 FROM events WHERE deployment = ? LIMIT 1", (deployment,)).fetchone() is not None

    @_store_errors("store output")
    def add_output(self, lines: Sequence[OutputLine]) -> None:
        self.append((), lines, "store output")

    @_store_errors("read output")
    def output(self, deployment: str, step: str | None = None, target: str | None = None) -> list[OutputLine]:
        sql = "SELECT deployment, step, target, attempt, n, line FROM output WHERE deployment = ?"
        params: list = [deployment]
        if step is not None:
            sql += " AND step = ?"
            params.append(step)
        if target is not None:
            sql += " AND target = ?"
            params.append(target)
        sql += " ORDER BY rowid"
        return [OutputLine(*row) for row in self.conn.execute(sql, params)]

    def close(self) -> None:
        self.conn.close()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _lost(deployment: str, current: Owner | None) -> str:
    who = current.describe() if current is not None else "nobody"
    return f"deployment {deployment!r}: this orchestrator's lease was taken over (it is now held by {who})"


def open_store(path: str | Path | None, write: bool = True) -> SqliteStore:
    """The SQLite store at `path` (default: `default_db_path()`). With `write=False`, a
    store this user cannot write is opened read-only instead of refused."""
    p = Path(path if path is not None else default_db_path())
    if not write and p.is_file() and not (os.access(p, os.W_OK) and os.access(p.parent, os.W_OK | os.X_OK)):
        return SqliteStore(p, readonly=True)
    return SqliteStore(p)
