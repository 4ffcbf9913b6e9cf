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

Modules: ``model`` (RunStoreError, RunRow, StoredEvent), ``schema`` (tables, version
check, creation), ``connection`` (file modes, pragmas, busy retry, error translation),
``rows`` (documents to rows and back, pure), ``store`` (RunStore), ``table``
(runs_table, pure).
"""

from __future__ import annotations

from .model import RunRow, RunStoreError, StoredEvent
from .schema import SCHEMA_VERSION
from .store import DEFAULT_NAME, RunStore
from .table import runs_table

__all__ = [
    "DEFAULT_NAME",
    "SCHEMA_VERSION",
    "RunRow",
    "RunStore",
    "RunStoreError",
    "StoredEvent",
    "runs_table",
]
