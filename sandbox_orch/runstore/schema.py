"""The tables (schema version 1) and creating them once, safely, in a new file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .connection import _translated
from .model import RunStoreError

SCHEMA_VERSION = 1

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
