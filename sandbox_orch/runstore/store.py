"""RunStore: one process's connection; writes are short BEGIN IMMEDIATE transactions."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ..redaction import scrub_json
from ..store import home
from .connection import _configure, _create_private, _translated
from .model import RunRow, RunStoreError, StoredEvent
from .rows import _RUN_ROW, _attempt_rows, _cell, _iso, _node_row, _run_row, _run_usage, _sortable
from .schema import _ensure_schema

DEFAULT_NAME = "runs.db"

_T = TypeVar("_T")


class RunStore:
    """One process's (one thread's) connection to the run store. See the package doc."""

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
