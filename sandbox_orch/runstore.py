"""The run history store (CONTRACT 6): every run's results, nodes, attempts and events,
in one SQLite file shared by every sandbox-orch process of a host.

Location: ``<home()>/runs.db`` by default (``home()`` honours ``$SANDBOX_ORCH_HOME``).
The file is created with mode 0600 (and any directory this module creates, 0700):
results describe what ran, so they stay private. SQLite gives the ``-wal`` and
``-shm`` files the database file's mode.

Public API (everything else is private)::

    SCHEMA_VERSION: int                       # PRAGMA user_version this code reads and writes
    DEFAULT_NAME = "runs.db"

    class RunStoreError(SandboxOrchError)     # exit_code 3 (infrastructure); message names
                                              # the file: newer schema, not a run store,
                                              # locked too long, unknown run, closed store...

    @dataclass(frozen=True)
    class RunRow:                             # one line of `sandbox-orch runs list`
        run_id: str
        workflow: str | None                  # the workflow's name
        status: str                           # "running" until finish_run, then results["status"]
        started_at: str | None                # ISO-8601, UTC, "2026-11-25T01:03:49.786Z"
        duration_s: float | None              # None while running
        tokens: int | None                    # input + output tokens; None while running
        cost_usd: float | None                # None while running

    @dataclass(frozen=True)
    class StoredEvent:
        seq: int                              # 1, 2, 3... per run, in the order added
        kind: str | None                      # event["event"]: "run_started", "node_finished"...
        at: str | None                        # event["at"]
        body: dict[str, Any]                  # the event dict, exactly as given

    class RunStore:
        @classmethod
        def open(cls, path: Path | str | None = None, *, timeout_s: float = 10.0) -> RunStore
            # path None: home() / "runs.db". Creates the file (0600) and its directory (0700)
            # if missing, the schema if new (idempotent, safe when several processes open a
            # new file at once). Raises RunStoreError for a newer schema version or a file
            # that is not a sandbox-orch run store. timeout_s: how long a write waits for
            # another process's write (SQLite busy timeout).
        path: Path                            # the database file
        def start_run(self, run_id: str, workflow: dict, policy: dict,
                      started_at: str | datetime) -> None
            # A row with status "running", so a run that crashes stays visible.
            # workflow: {"name", "path", "sha256"} (the shape of results["workflow"]);
            # policy: {"name", ...} (only "name" is kept). Call it before add_event.
            # A second call for the same run_id changes nothing (never undoes finish_run).
        def add_event(self, run_id: str, event: dict) -> int
            # Appends view.event_json(event) (pass the redacted event, as the orchestrator
            # emits it). Returns its seq: 1 for the run's first event, then +1 each.
            # RunStoreError if no row exists for run_id (neither start_run nor finish_run).
        def finish_run(self, results: dict) -> None
            # results: the full, already redacted results document. Upserts the run row
            # (status, times, totals["usage"]) and replaces the run's nodes and attempts
            # rows (results["nodes"][n], its "usage" and "attempt_details"); keeps events.
            # Works without start_run. ValueError if results has no string "run_id".
        def list_runs(self, limit: int = 50) -> list[RunRow]
            # Newest first (started_at, then run_id, descending). ValueError if limit < 1.
        def run(self, run_id: str) -> RunRow | None
            # One run's row (also while running); None if unknown.
        def results(self, run_id: str) -> dict | None
            # The document given to finish_run, exactly (same keys, order, values).
            # None for an unknown run id AND for a run not finished (use run() to tell).
        def events(self, run_id: str) -> list[StoredEvent]
            # Ordered by seq; [] for an unknown run.
        def matches(self, prefix: str, limit: int = 10) -> list[str]
            # Run ids starting with prefix, sorted, at most limit; an exact id alone.
            # An empty prefix matches nothing.
        def resolve(self, prefix: str) -> str | None
            # The one run id that is, or starts with, prefix; None if none or several.
            # When None, matches(prefix) says which: [] unknown, 2+ ambiguous (candidates).
        def close(self) -> None               # idempotent; also `with RunStore.open() as s:`

    def runs_table(rows: Iterable[RunRow]) -> str
        # Pure. Aligned plain text, one header line then one line per row:
        # RUN ID, WORKFLOW, STATUS, STARTED (UTC) "YYYY-MM-DD HH:MM:SS", DURATION
        # ("0.60s", "2m03s", "1h02m", "-" while running), TOKENS ("12,345" or "-").
        # Control characters in cells become "?" (a workflow name cannot drive the
        # terminal). No rows: "no runs recorded". No trailing newline.

Every method raises RunStoreError (never a bare sqlite3 error) when SQLite fails, e.g.
"database is locked" after waiting timeout_s, or a full disk.

Wiring (what the orchestrator and the CLI are expected to do)::

    store = RunStore.open()                           # once per process
    store.start_run(run_id, {"name": ..., "path": ..., "sha256": ...},
                    {"name": policy.name}, started_at)  # before the first event
    store.add_event(run_id, view.event_json(event))   # for each (redacted) event
    store.finish_run(results)                         # the redacted document saved to disk
    store.close()

    # sandbox-orch runs list:          print(runs_table(store.list_runs()))
    # sandbox-orch runs show ID [--json]:
    run_id = store.resolve(ID)
    if run_id is None:                                # exit 2, with:
        found = store.matches(ID)                     # [] -> "no run ID"; else "ambiguous:
                                                      #  ID matches a, b, ..."
    document = store.results(run_id)                  # None -> store.run(run_id).status
                                                      #  ("running": not finished / crashed)

Concurrency: each process (and each thread) opens its own RunStore; a RunStore refuses
to be used from another thread (sqlite3) or after a fork (RunStoreError). The journal is
WAL (readers never wait for writers), every write is one short ``BEGIN IMMEDIATE``
transaction (no read-to-write lock upgrade, so no unresolvable "database is locked"),
and a writer waits up to ``timeout_s`` for another.

Secrets: nothing is added beyond what the caller gives; results and events must already be
redacted (the orchestrator's redacting emit and ``redactor.document``).

Tables (schema version 1)::

    runs      run_id PK, workflow_name, workflow_path, workflow_sha256, policy_name, status,
              started_at, finished_at, duration_s, input_tokens, output_tokens, cost_usd,
              results (JSON text; NULL while running)
    nodes     PK (run_id, name): status, exit_code, attempts, started_at, finished_at,
              duration_s, skip_reason, reason, runtime, image, input_tokens, output_tokens
    attempts  PK (run_id, node, attempt): status, exit_code, oom_killed (0/1), reason,
              started_at, finished_at, duration_s
    events    PK (run_id, seq): kind, at, body (JSON text)

nodes, attempts and events reference their run (ON DELETE CASCADE). Timestamps in the
``started_at``/``finished_at`` columns are normalised to UTC ``...T01:03:49.786Z`` when
they carry a zone, so they sort as text.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .errors import ExitCode, SandboxOrchError
from .redaction import scrub, scrub_json
from .store import home

SCHEMA_VERSION = 1
DEFAULT_NAME = "runs.db"

_T = TypeVar("_T")

_SCHEMA = (
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        workflow_name TEXT,
        workflow_path TEXT,
        workflow_sha256 TEXT,
        policy_name TEXT,
        status TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        duration_s REAL,
        input_tokens INTEGER,
        output_tokens INTEGER,
        cost_usd REAL,
        results TEXT
    )""",
    "CREATE INDEX runs_by_start ON runs (started_at, run_id)",
    """CREATE TABLE nodes (
        run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        status TEXT,
        exit_code INTEGER,
        attempts INTEGER,
        started_at TEXT,
        finished_at TEXT,
        duration_s REAL,
        skip_reason TEXT,
        reason TEXT,
        runtime TEXT,
        image TEXT,
        input_tokens INTEGER,
        output_tokens INTEGER,
        PRIMARY KEY (run_id, name)
    )""",
    """CREATE TABLE attempts (
        run_id TEXT NOT NULL,
        node TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status TEXT,
        exit_code INTEGER,
        oom_killed INTEGER,
        reason TEXT,
        started_at TEXT,
        finished_at TEXT,
        duration_s REAL,
        PRIMARY KEY (run_id, node, attempt),
        FOREIGN KEY (run_id, node) REFERENCES nodes (run_id, name) ON DELETE CASCADE
    )""",
    """CREATE TABLE events (
        run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        kind TEXT,
        at TEXT,
        body TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    )""",
)

_RUN_ROW = """SELECT run_id, workflow_name, status, started_at, duration_s,
    input_tokens, output_tokens, cost_usd FROM runs"""


class RunStoreError(SandboxOrchError):
    """The run store cannot be used as asked (newer schema, foreign file, locked, ...)."""

    exit_code = ExitCode.INFRASTRUCTURE


@dataclass(frozen=True)
class RunRow:
    run_id: str
    workflow: str | None
    status: str
    started_at: str | None
    duration_s: float | None
    tokens: int | None
    cost_usd: float | None


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    kind: str | None
    at: str | None
    body: dict[str, Any]


class RunStore:
    """One process's (one thread's) connection to the run store. See the module doc."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = connection
        self._pid = os.getpid()

    @classmethod
    def open(cls, path: Path | str | None = None, *, timeout_s: float = 10.0) -> RunStore:
        path = Path(path) if path is not None else home() / DEFAULT_NAME
        try:
            _create_private(path)
            connection = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise RunStoreError(f"run store {path}: cannot open: {error}") from error
        try:
            _configure(connection, path, timeout_s)
            _ensure_schema(connection, path)
        except BaseException:
            connection.close()
            raise
        return cls(path, connection)

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
            self._connection.close()
        self._connection = None

    # -- writes: each one short BEGIN IMMEDIATE transaction ---------------------------------

    def start_run(
        self,
        run_id: str,
        workflow: dict[str, Any],
        policy: dict[str, Any],
        started_at: str | datetime,
    ) -> None:
        when = _iso(started_at) if isinstance(started_at, datetime) else _sortable(started_at)
        with self._write() as db:
            db.execute(
                """INSERT INTO runs (run_id, workflow_name, workflow_path, workflow_sha256,
                    policy_name, status, started_at) VALUES (?, ?, ?, ?, ?, 'running', ?)
                ON CONFLICT (run_id) DO NOTHING""",
                (
                    run_id,
                    _cell(workflow.get("name")),
                    _cell(workflow.get("path")),
                    _cell(workflow.get("sha256")),
                    _cell(policy.get("name")),
                    when,
                ),
            )

    def add_event(self, run_id: str, event: dict[str, Any]) -> int:
        return self.add_events(run_id, [event])

    def add_events(self, run_id: str, events: list[dict[str, Any]]) -> int:
        """Append events in one transaction; returns the last seq."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise RunStoreError(
                    f"run store {self.path}: unknown run {run_id!r} (start_run it first)"
                )
            (last,) = db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?", (run_id,)
            ).fetchone()
            seq = int(last)
            for event in events:
                seq += 1
                body = scrub_json(event, ensure_ascii=False)
                db.execute(
                    "INSERT INTO events (run_id, seq, kind, at, body) VALUES (?, ?, ?, ?, ?)",
                    (run_id, seq, _cell(event.get("event")), _cell(event.get("at")), body),
                )
        return seq

    def finish_run(self, results: dict[str, Any]) -> None:
        run_id = results.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            raise ValueError("a results document without a run_id cannot be stored")
        document = scrub_json(results, ensure_ascii=False)
        nodes = results.get("nodes") or {}
        usage = _run_usage(results, nodes)
        workflow = results.get("workflow") or {}
        policy = results.get("policy") or {}
        run = (
            run_id,
            _cell(workflow.get("name")),
            _cell(workflow.get("path")),
            _cell(workflow.get("sha256")),
            _cell(policy.get("name")),
            _cell(results.get("status")) or "unknown",
            _sortable(results.get("started_at")),
            _sortable(results.get("finished_at")),
            _cell(results.get("duration_s")),
            _cell(usage.get("input_tokens")) if usage is not None else None,
            _cell(usage.get("output_tokens")) if usage is not None else None,
            _cell(usage.get("cost_usd")) if usage is not None else None,
            document,
        )
        node_rows = [_node_row(run_id, name, node) for name, node in nodes.items()]
        attempt_rows = [
            row for name, node in nodes.items() for row in _attempt_rows(run_id, name, node)
        ]
        with self._write() as db:
            db.execute(
                """INSERT INTO runs (run_id, workflow_name, workflow_path, workflow_sha256,
                    policy_name, status, started_at, finished_at, duration_s, input_tokens,
                    output_tokens, cost_usd, results)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (run_id) DO UPDATE SET
                    workflow_name = excluded.workflow_name,
                    workflow_path = excluded.workflow_path,
                    workflow_sha256 = excluded.workflow_sha256,
                    policy_name = excluded.policy_name,
                    status = excluded.status,
                    started_at = excluded.started_at,
                    finished_at = excluded.finished_at,
                    duration_s = excluded.duration_s,
                    input_tokens = excluded.input_tokens,
                    output_tokens = excluded.output_tokens,
                    cost_usd = excluded.cost_usd,
                    results = excluded.results""",
                run,
            )
            db.execute("DELETE FROM attempts WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM nodes WHERE run_id = ?", (run_id,))
            db.executemany(
                """INSERT INTO nodes (run_id, name, status, exit_code, attempts, started_at,
                    finished_at, duration_s, skip_reason, reason, runtime, image,
                    input_tokens, output_tokens)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                node_rows,
            )
            db.executemany(
                """INSERT OR REPLACE INTO attempts (run_id, node, attempt, status, exit_code,
                    oom_killed, reason, started_at, finished_at, duration_s)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                attempt_rows,
            )

    # -- reads: one statement each (a consistent snapshot in WAL) ---------------------------

    def list_runs(self, limit: int = 50) -> list[RunRow]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        rows = self._read(
            lambda db: db.execute(
                f"{_RUN_ROW} ORDER BY started_at DESC, run_id DESC LIMIT ?", (limit,)
            ).fetchall()
        )
        return [_run_row(row) for row in rows]

    def run(self, run_id: str) -> RunRow | None:
        row = self._read(
            lambda db: db.execute(f"{_RUN_ROW} WHERE run_id = ?", (run_id,)).fetchone()
        )
        return _run_row(row) if row is not None else None

    def results(self, run_id: str) -> dict[str, Any] | None:
        row = self._read(
            lambda db: db.execute("SELECT results FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        )
        if row is None or row[0] is None:
            return None
        return json.loads(row[0])

    def events(self, run_id: str) -> list[StoredEvent]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT seq, kind, at, body FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()
        )
        return [StoredEvent(seq, kind, at, json.loads(body)) for seq, kind, at, body in rows]

    def matches(self, prefix: str, limit: int = 10) -> list[str]:
        if not prefix or limit < 1:
            return []

        def find(db: sqlite3.Connection) -> list[str]:
            exact = db.execute("SELECT run_id FROM runs WHERE run_id = ?", (prefix,)).fetchone()
            if exact is not None:
                return [exact[0]]
            # Ids starting with prefix are contiguous in (binary) order from prefix on.
            found = db.execute(
                "SELECT run_id FROM runs WHERE run_id >= ? ORDER BY run_id LIMIT ?",
                (prefix, limit),
            ).fetchall()
            return [run_id for (run_id,) in found if run_id.startswith(prefix)]

        return self._read(find)

    def resolve(self, prefix: str) -> str | None:
        found = self.matches(prefix, limit=2)
        return found[0] if len(found) == 1 else None

    # -- plumbing ---------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RunStoreError(f"run store {self.path} is closed")
        if self._pid != os.getpid():
            raise RunStoreError(
                f"run store {self.path} was opened by another process; open one per process"
            )
        return self._connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        with _translated(self.path):
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # never leave a lock held, even if COMMIT failed
                    db.execute("ROLLBACK")
                raise

    def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        db = self._db()
        with _translated(self.path):
            return query(db)


# -- rendering ---------------------------------------------------------------------------------


def runs_table(rows: Iterable[RunRow]) -> str:
    """Aligned plain text for `sandbox-orch runs list` (see the module doc). Pure."""
    lines = [
        (
            _clean(row.run_id),
            _clean(row.workflow or "-"),
            _clean(row.status),
            _started(row.started_at),
            _duration(row.duration_s),
            f"{row.tokens:,}" if row.tokens is not None else "-",
        )
        for row in rows
    ]
    if not lines:
        return "no runs recorded"
    header = ("RUN ID", "WORKFLOW", "STATUS", "STARTED (UTC)", "DURATION", "TOKENS")
    table = [header, *lines]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = {4, 5}
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ).rstrip()
        for line in table
    )


def _clean(text: str) -> str:
    return "".join("?" if unicodedata.category(c).startswith("C") else c for c in text)


def _started(value: str | None) -> str:
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _clean(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


# -- opening -------------------------------------------------------------------------------------


def _create_private(path: Path) -> None:
    """Create the directory (0700) and the empty database file (0600) if missing."""
    missing = []
    directory = path.parent
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)


def _configure(connection: sqlite3.Connection, path: Path, timeout_s: float) -> None:
    with _translated(path):
        connection.execute(f"PRAGMA busy_timeout = {max(0, int(timeout_s * 1000))}")
        connection.execute("PRAGMA foreign_keys = ON")
        # Switching to WAL needs a moment alone with the file; it is persistent, so only the
        # first opener of a new file ever waits here.
        _retry_busy(lambda: connection.execute("PRAGMA journal_mode = WAL").fetchone(), timeout_s)
        connection.execute("PRAGMA synchronous = NORMAL")


def _retry_busy(action: Callable[[], _T], timeout_s: float) -> _T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return action()
        except sqlite3.OperationalError as error:
            busy = "locked" in str(error) or "busy" in str(error)
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _ensure_schema(connection: sqlite3.Connection, path: Path) -> None:
    with _translated(path):
        version = _user_version(connection)
        if version == SCHEMA_VERSION:
            return
        _check_version(version, path)
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = _user_version(connection)  # another process may have just created it
            if version == 0:
                tables = connection.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                ).fetchone()[0]
                if tables:
                    raise RunStoreError(
                        f"run store {path}: not a sandbox-orch run store (it has tables but "
                        "no schema version); move it away or set SANDBOX_ORCH_HOME"
                    )
                for statement in _SCHEMA:
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            else:
                _check_version(version, path)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise


def _check_version(version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise RunStoreError(
            f"run store {path} has schema version {version}, newer than this sandbox-orch "
            f"understands ({SCHEMA_VERSION}); upgrade sandbox-orch or set SANDBOX_ORCH_HOME"
        )
    if 0 < version < SCHEMA_VERSION:  # no older version exists yet: nothing to migrate from
        raise RunStoreError(
            f"run store {path} has schema version {version} and no migration to "
            f"{SCHEMA_VERSION} exists"
        )
    if version < 0:
        raise RunStoreError(f"run store {path} has an invalid schema version {version}")


def _user_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """sqlite3's errors, as RunStoreError naming the file."""
    try:
        yield
    except sqlite3.Error as error:
        raise RunStoreError(f"run store {path}: {error}") from error


# -- rows --------------------------------------------------------------------------------------


def _run_row(row: tuple[Any, ...]) -> RunRow:
    run_id, workflow, status, started_at, duration_s, tokens_in, tokens_out, cost = row
    tokens = (
        None if tokens_in is None and tokens_out is None else (tokens_in or 0) + (tokens_out or 0)
    )
    return RunRow(run_id, workflow, status, started_at, duration_s, tokens, cost)


def _run_usage(results: dict[str, Any], nodes: dict[str, Any]) -> dict[str, Any] | None:
    usage = (results.get("totals") or {}).get("usage")
    if isinstance(usage, dict):
        return usage
    reported = [n.get("usage") for n in nodes.values() if isinstance(n.get("usage"), dict)]
    if not reported:
        return None
    return {
        key: sum((u.get(key) or 0) for u in reported)
        for key in ("input_tokens", "output_tokens", "cost_usd")
    }


def _node_row(run_id: str, name: str, node: dict[str, Any]) -> tuple[Any, ...]:
    usage = node.get("usage") if isinstance(node.get("usage"), dict) else {}
    return (
        run_id,
        name,
        _cell(node.get("status")),
        _cell(node.get("exit_code")),
        _cell(node.get("attempts")),
        _sortable(node.get("started_at")),
        _sortable(node.get("finished_at")),
        _cell(node.get("duration_s")),
        _cell(node.get("skip_reason")),
        _cell(node.get("reason")),
        _cell(node.get("runtime")),
        _cell(node.get("image")),
        _cell(usage.get("input_tokens")),
        _cell(usage.get("output_tokens")),
    )


def _attempt_rows(run_id: str, name: str, node: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (
            run_id,
            name,
            _cell(detail.get("attempt", index)),
            _cell(detail.get("status")),
            _cell(detail.get("exit_code")),
            _cell(detail.get("oom_killed")),
            _cell(detail.get("reason")),
            _sortable(detail.get("started_at")),
            _sortable(detail.get("finished_at")),
            _cell(detail.get("duration_s")),
        )
        for index, detail in enumerate(node.get("attempt_details") or [], start=1)
    ]


def _cell(value: Any) -> Any:
    """A value SQLite can hold as is: bool as 0/1, anything structured as JSON text."""
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, int | float):
        return int(value) if isinstance(value, bool) else value
    return scrub_json(value, ensure_ascii=False)


def _sortable(value: Any) -> Any:
    """Timestamps with a zone as UTC "...T01:03:49.786Z" (text order = time order)."""
    if not isinstance(value, str):
        return _cell(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return _iso(moment) if moment.tzinfo is not None else value


def _iso(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
