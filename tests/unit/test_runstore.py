"""The run history store: round trips, listing, lookup, events, crashes, concurrency."""

from __future__ import annotations

import copy
import json
import multiprocessing
import sqlite3
import stat
import threading
import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox_orch.events import NodeFinished, NodeStarted, RunFinished, RunStarted
from sandbox_orch.runstore import (
    SCHEMA_VERSION,
    RunRow,
    RunStore,
    RunStoreError,
    runs_table,
)

T0 = datetime(2026, 11, 25, 1, 3, 49, 786000, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def attempt(number, status, exit_code, start, took, reason=None, oom=False):
    return {
        "attempt": number,
        "status": status,
        "exit_code": exit_code,
        "oom_killed": oom,
        "reason": reason,
        "started_at": iso(start),
        "finished_at": iso(start + timedelta(seconds=took)),
        "duration_s": took,
    }


def node(status, runtime, image, attempts, *, needs=(), usage=None, skip_reason=None, reason=None):
    first, last = (attempts[0], attempts[-1]) if attempts else (None, None)
    return {
        "status": status,
        "exit_code": last["exit_code"] if last else None,
        "attempts": len(attempts),
        "started_at": first["started_at"] if first else None,
        "finished_at": last["finished_at"] if last else None,
        "duration_s": 1.5 if attempts else None,
        "reason": reason,
        "needs": list(needs),
        "when": None,
        "condition_result": None,
        "skip_reason": skip_reason,
        "runtime": runtime,
        "image": image,
        "image_id": "sha256:" + "ab" * 32 if attempts else None,
        "outputs": {"coverage": 91} if runtime == "python" else {},
        "stdout_tail": "ok\n" if attempts else "",
        "stderr_tail": "",
        "output_bytes": {"stdout": 3, "stderr": 0, "stdout_dropped": 0, "stderr_dropped": 0},
        "oom_killed": bool(last and last["oom_killed"]),
        "usage": usage,
        "artifacts": [
            {
                "name": "dist",
                "path": ".sandbox-orch/runs/RUN_ID/artifacts/build/dist",
                "bytes": 1234,
                "sha256": "cd" * 32,
            }
        ]
        if runtime == "python"
        else [],
        "violations": [{"kind": "egress", "detail": "evil.example:443 refused"}]
        if runtime == "claude"
        else [],
        "attempt_details": attempts,
        "sandbox": {
            "oci_runtime": "runc",
            "user": "10001:10001",
            "network": "none",
            "read_only_rootfs": True,
            "cap_drop": ["ALL"],
            "limits": {"cpus": 1.0, "memory": "512m", "pids": 256, "timeout_s": 600.0},
        },
    }


def results_doc(run_id: str, started: datetime = T0, status: str = "failed") -> dict[str, Any]:
    """A results document as the orchestrator writes it (CONTRACT 6, plus attempt_details)."""
    agent_usage = {"input_tokens": 1200, "output_tokens": 345, "cost_usd": 0.0123}
    nodes = {
        "build": node(
            "succeeded",
            "python",
            "sandbox-orch/python",
            [attempt(1, "succeeded", 0, started, 0.4)],
        ),
        "test": node(
            "failed",
            "shell",
            "sandbox-orch/shell",
            [
                attempt(1, "oom", 137, started + timedelta(seconds=1), 0.2, "out of memory", True),
                attempt(2, "failed", 3, started + timedelta(seconds=2), 0.3, "exit code 3"),
            ],
            needs=["build"],
            reason="exit code 3",
        ),
        "review": node(
            "succeeded",
            "claude",
            "sandbox-orch/claude",
            [attempt(1, "succeeded", 0, started + timedelta(seconds=1), 5.0)],
            needs=["build"],
            usage=agent_usage,
        ),
        "deploy": node(
            "skipped",
            "shell",
            "sandbox-orch/shell",
            [],
            needs=["test"],
            skip_reason="need test failed",
        ),
    }
    return {
        "schema": "sandbox-orch/run-result@1",
        "run_id": run_id,
        "status": status,
        "workflow": {"name": "build-and-review", "path": "wf.yaml", "sha256": "ef" * 32},
        "policy": {"name": "default", "path": "policies/default.yaml", "sha256": "01" * 32},
        "started_at": iso(started),
        "finished_at": iso(started + timedelta(seconds=6.5)),
        "duration_s": 6.5,
        "graph": {
            "nodes": list(nodes),
            "edges": [
                {"from": "build", "to": "test", "allow_failure": False},
                {"from": "build", "to": "review", "allow_failure": False},
                {"from": "test", "to": "deploy", "allow_failure": False},
            ],
        },
        "nodes": nodes,
        "totals": {
            "succeeded": 2,
            "failed": 1,
            "timed_out": 0,
            "errored": 0,
            "skipped": 1,
            "cancelled": 0,
            "usage": agent_usage,
        },
    }


WORKFLOW = {"name": "build-and-review", "path": "wf.yaml", "sha256": "ef" * 32}
POLICY = {"name": "default", "path": "policies/default.yaml", "sha256": "01" * 32}


@pytest.fixture
def store(tmp_path):
    with RunStore.open(tmp_path / "runs.db") as opened:
        yield opened


def rows(path: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(query, args).fetchall()


# -- round trip ----------------------------------------------------------------------------------


def test_results_round_trip_exactly_and_fill_the_tables(store):
    doc = results_doc("20261125t010349-aaaaaa")
    given = copy.deepcopy(doc)
    store.start_run(doc["run_id"], WORKFLOW, POLICY, doc["started_at"])
    store.finish_run(doc)

    back = store.results(doc["run_id"])
    assert back == given
    assert json.dumps(back) == json.dumps(given)  # same key order too
    assert doc == given  # the caller's document is not touched

    (run,) = rows(
        store.path,
        """SELECT workflow_name, workflow_path, workflow_sha256, policy_name, status,
        started_at, finished_at, duration_s, input_tokens, output_tokens, cost_usd FROM runs""",
    )
    assert run == (
        "build-and-review",
        "wf.yaml",
        "ef" * 32,
        "default",
        "failed",
        "2026-11-25T01:03:49.786Z",
        "2026-11-25T01:03:56.286Z",
        6.5,
        1200,
        345,
        0.0123,
    )
    nodes = {
        r[0]: r[1:]
        for r in rows(
            store.path,
            """SELECT name, status, exit_code, attempts, skip_reason, reason, runtime, image,
            input_tokens, output_tokens FROM nodes WHERE run_id = ?""",
            doc["run_id"],
        )
    }
    assert nodes == {
        "build": ("succeeded", 0, 1, None, None, "python", "sandbox-orch/python", None, None),
        "test": ("failed", 3, 2, None, "exit code 3", "shell", "sandbox-orch/shell", None, None),
        "review": ("succeeded", 0, 1, None, None, "claude", "sandbox-orch/claude", 1200, 345),
        "deploy": (
            "skipped",
            None,
            0,
            "need test failed",
            None,
            "shell",
            "sandbox-orch/shell",
            None,
            None,
        ),
    }
    attempts = rows(
        store.path,
        """SELECT node, attempt, status, exit_code, oom_killed, reason, duration_s
        FROM attempts WHERE run_id = ? ORDER BY node, attempt""",
        doc["run_id"],
    )
    assert attempts == [
        ("build", 1, "succeeded", 0, 0, None, 0.4),
        ("review", 1, "succeeded", 0, 0, None, 5.0),
        ("test", 1, "oom", 137, 1, "out of memory", 0.2),
        ("test", 2, "failed", 3, 0, "exit code 3", 0.3),
    ]

    (row,) = store.list_runs()
    assert row == RunRow(
        "20261125t010349-aaaaaa", "build-and-review", "failed", iso(T0), 6.5, 1545, 0.0123
    )


def test_finish_run_again_replaces_nodes_and_attempts_and_keeps_events(store):
    doc = results_doc("r1")
    store.start_run("r1", WORKFLOW, POLICY, doc["started_at"])
    store.add_event("r1", {"event": "run_started", "run_id": "r1"})
    store.finish_run(doc)

    smaller = results_doc("r1", status="succeeded")
    smaller["nodes"] = {"build": smaller["nodes"]["build"]}
    store.finish_run(smaller)

    assert store.results("r1") == smaller
    assert store.run("r1").status == "succeeded"
    assert rows(store.path, "SELECT name FROM nodes") == [("build",)]
    assert rows(store.path, "SELECT node, attempt FROM attempts") == [("build", 1)]
    assert [e.seq for e in store.events("r1")] == [1]


def test_finish_run_without_start_run_and_without_usage(store):
    doc = results_doc("r2")
    del doc["totals"]["usage"]
    for each in doc["nodes"].values():
        each["usage"] = None
    store.finish_run(doc)
    row = store.run("r2")
    assert row.status == "failed"
    assert row.tokens is None and row.cost_usd is None
    assert store.results("r2") == doc


def test_finish_run_needs_a_run_id(store):
    with pytest.raises(ValueError, match="run_id"):
        store.finish_run({"status": "succeeded"})


# -- listing and lookup --------------------------------------------------------------------------


def test_list_runs_newest_first_and_limited(store):
    # stored out of order, and one start time given with an offset rather than "Z"
    starts = {"b": T0 + timedelta(minutes=2), "a": T0, "c": T0 + timedelta(minutes=1)}
    for run_id, started in starts.items():
        store.finish_run(results_doc(run_id, started))
    store.start_run(
        "d", WORKFLOW, POLICY, (T0 + timedelta(minutes=3)).astimezone().isoformat()
    )  # local time zone: still ordered by the instant
    assert [r.run_id for r in store.list_runs()] == ["d", "b", "c", "a"]
    assert [r.run_id for r in store.list_runs(limit=2)] == ["d", "b"]
    with pytest.raises(ValueError):
        store.list_runs(limit=0)


def test_unknown_run_id(store):
    store.finish_run(results_doc("20261125t010349-aaaaaa"))
    assert store.results("nope") is None
    assert store.run("nope") is None
    assert store.events("nope") == []
    assert store.resolve("nope") is None
    assert store.matches("nope") == []


def test_prefix_resolution_unique_ambiguous_exact(store):
    for run_id in (
        "20261125t010349-aaaaaa",
        "20261125t010349-aabbbb",
        "20261125t020000-cccccc",
        "x%_",
    ):
        store.start_run(run_id, WORKFLOW, POLICY, iso(T0))

    assert store.resolve("20261125t010349-aaaaaa") == "20261125t010349-aaaaaa"
    assert store.resolve("20261125t02") == "20261125t020000-cccccc"
    assert store.resolve("20261125t010349-aab") == "20261125t010349-aabbbb"

    assert store.resolve("20261125t010349-aa") is None
    assert store.matches("20261125t010349-aa") == [
        "20261125t010349-aaaaaa",
        "20261125t010349-aabbbb",
    ]
    assert len(store.matches("2026")) == 3
    assert store.matches("2026", limit=2) == store.matches("2026")[:2]

    # no pattern characters: "%" and "_" are taken literally
    assert store.resolve("x%") == "x%_"
    assert store.resolve("%") is None and store.matches("%") == []
    assert store.resolve("") is None and store.matches("") == []


def test_exact_id_wins_over_longer_ids_it_prefixes(store):
    for run_id in ("run-1", "run-10"):
        store.start_run(run_id, WORKFLOW, POLICY, iso(T0))
    assert store.resolve("run-1") == "run-1"
    assert store.resolve("run-") is None


# -- events and crashes ---------------------------------------------------------------------------


def test_events_are_numbered_per_run_and_stored_as_given(store):
    from sandbox_orch.view import event_json  # heavy (rich, CEL): kept out of spawned writers

    store.start_run("r1", WORKFLOW, POLICY, iso(T0))
    store.start_run("r2", WORKFLOW, POLICY, iso(T0))
    events = [
        RunStarted("r1", "build-and-review", ["build"], T0),
        NodeStarted("build", 1, T0),
        NodeFinished("build", "succeeded", 0, None, 1, 0.4, T0, usage={"input_tokens": 1}),
        RunFinished("r1", "succeeded", T0, 0.5, {"succeeded": 1}, "results.json"),
    ]
    seqs = []
    for event in events:
        seqs.append(store.add_event("r1", event_json(event)))
        if len(seqs) == 2:
            assert store.add_event("r2", event_json(event)) == 1
    assert seqs == [1, 2, 3, 4]

    stored = store.events("r1")
    assert [e.seq for e in stored] == [1, 2, 3, 4]
    assert [e.kind for e in stored] == [
        "run_started",
        "node_started",
        "node_finished",
        "run_finished",
    ]
    assert all(e.at == "2026-11-25T01:03:49.786Z" for e in stored)
    assert [e.body for e in stored] == [event_json(e) for e in events]
    assert [e.seq for e in store.events("r2")] == [1]


def test_events_of_an_unknown_run_are_refused(store):
    with pytest.raises(RunStoreError, match="unknown run"):
        store.add_event("ghost", {"event": "run_started"})


def test_a_crashed_run_stays_listed_as_running(tmp_path):
    path = tmp_path / "runs.db"
    crashed = RunStore.open(path)
    crashed.start_run("20261125t010349-dead00", WORKFLOW, POLICY, T0)
    crashed.add_event("20261125t010349-dead00", {"event": "run_started", "at": iso(T0)})
    crashed.close()  # the process died here: no finish_run

    with RunStore.open(path) as store:
        store.finish_run(results_doc("20261125t000000-fine00", T0 - timedelta(hours=1)))
        newest, older = store.list_runs()
        assert newest == RunRow(
            "20261125t010349-dead00", "build-and-review", "running", iso(T0), None, None, None
        )
        assert older.status == "failed"
        assert store.results("20261125t010349-dead00") is None
        assert store.run("20261125t010349-dead00").status == "running"
        assert "running" in runs_table(store.list_runs())


def test_start_run_again_does_not_undo_a_finished_run(store):
    doc = results_doc("r1")
    store.start_run("r1", WORKFLOW, POLICY, doc["started_at"])
    store.finish_run(doc)
    store.start_run("r1", WORKFLOW, POLICY, doc["started_at"])
    assert store.run("r1").status == "failed"
    assert store.results("r1") == doc


# -- files, schema, misuse ------------------------------------------------------------------------


def test_files_are_private(tmp_path):
    path = tmp_path / "new" / "home" / "runs.db"
    with RunStore.open(path) as store:
        store.start_run("r1", WORKFLOW, POLICY, iso(T0))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for sidecar in (path.with_name("runs.db-wal"), path.with_name("runs.db-shm")):
            assert sidecar.exists()  # WAL mode
            assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]


def test_default_location_is_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "home"))
    with RunStore.open() as store:
        assert store.path == tmp_path / "home" / "runs.db"
        store.start_run("r1", WORKFLOW, POLICY, iso(T0))
    assert (tmp_path / "home" / "runs.db").exists()


def test_schema_version_is_set_and_opening_again_is_idempotent(tmp_path):
    path = tmp_path / "runs.db"
    RunStore.open(path).close()
    with RunStore.open(path) as store:
        store.start_run("r1", WORKFLOW, POLICY, iso(T0))
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    with RunStore.open(path) as store:
        assert [r.run_id for r in store.list_runs()] == ["r1"]


def test_a_newer_schema_is_refused_clearly(tmp_path):
    path = tmp_path / "runs.db"
    RunStore.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RunStoreError, match=rf"schema version {SCHEMA_VERSION + 1}, newer") as e:
        RunStore.open(path)
    assert str(path) in str(e.value)
    assert e.value.exit_code == 3


def test_a_foreign_database_is_refused(tmp_path):
    path = tmp_path / "runs.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (x)")
    with pytest.raises(RunStoreError, match="not a sandbox-orch run store"):
        RunStore.open(path)
    path.with_name("garbage.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(RunStoreError, match=r"garbage\.db: file is not a database"):
        RunStore.open(path.with_name("garbage.db"))


def test_a_closed_store_refuses_use(tmp_path):
    store = RunStore.open(tmp_path / "runs.db")
    store.close()
    store.close()
    with pytest.raises(RunStoreError, match="closed"):
        store.list_runs()


def test_a_writer_waits_for_another_instead_of_failing(tmp_path):
    path = tmp_path / "runs.db"
    with RunStore.open(path, timeout_s=10) as store:
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
        began = time.monotonic()
        store.start_run("r1", WORKFLOW, POLICY, iso(T0))
        assert time.monotonic() - began >= 0.3
        assert store.run("r1").status == "running"
        other.close()


def test_a_lock_held_too_long_is_a_clear_error(tmp_path):
    path = tmp_path / "runs.db"
    with RunStore.open(path, timeout_s=0.2) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(RunStoreError, match="database is locked"):
                store.start_run("r1", WORKFLOW, POLICY, iso(T0))
        finally:
            other.execute("ROLLBACK")
            other.close()
        store.start_run("r1", WORKFLOW, POLICY, iso(T0))  # usable again afterwards
        assert store.run("r1") is not None


# -- concurrency ------------------------------------------------------------------------------------

WRITERS, RUNS_EACH, EVENTS_EACH = 4, 25, 3


def _writer(path: str, writer: int, barrier: Any, report: Any) -> None:
    try:
        barrier.wait(timeout=60)  # every process opens the new file at the same moment
        with RunStore.open(Path(path)) as store:
            for index in range(RUNS_EACH):
                run_id = f"w{writer}-{index:02d}"
                started = T0 + timedelta(seconds=index, milliseconds=writer)
                store.start_run(run_id, WORKFLOW, POLICY, iso(started))
                for n in range(EVENTS_EACH):
                    store.add_event(run_id, {"event": "node_started", "node": f"n{n}"})
                store.finish_run(results_doc(run_id, started, "succeeded"))
        report.put((writer, None))
    except BaseException:
        report.put((writer, traceback.format_exc()))


def test_concurrent_processes_write_one_store(tmp_path):
    path = tmp_path / "store" / "runs.db"
    context = multiprocessing.get_context("spawn")
    barrier, report = context.Barrier(WRITERS), context.Queue()
    writers = [
        context.Process(target=_writer, args=(str(path), w, barrier, report))
        for w in range(WRITERS)
    ]
    for process in writers:
        process.start()
    outcomes = dict(report.get(timeout=240) for _ in writers)
    for process in writers:
        process.join(timeout=60)

    assert outcomes == dict.fromkeys(range(WRITERS))  # no error (no "database is locked")
    assert all(process.exitcode == 0 for process in writers)
    with RunStore.open(path) as store:
        listed = store.list_runs(limit=1000)
        assert len(listed) == WRITERS * RUNS_EACH
        assert {r.run_id for r in listed} == {
            f"w{w}-{i:02d}" for w in range(WRITERS) for i in range(RUNS_EACH)
        }
        assert all(r.status == "succeeded" for r in listed)
        starts = [r.started_at for r in listed]
        assert starts == sorted(starts, reverse=True)
        for row in listed:
            assert [e.seq for e in store.events(row.run_id)] == [1, 2, 3]
            assert store.results(row.run_id)["run_id"] == row.run_id
    assert rows(path, "SELECT count(*) FROM nodes") == [(WRITERS * RUNS_EACH * 4,)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- the table ---------------------------------------------------------------------------------------


def test_runs_table_is_aligned_plain_text():
    table = runs_table(
        [
            RunRow("20261125t010349-aaaaaa", "hello", "running", iso(T0), None, None, None),
            RunRow("20261125t000000-bbbbbb", "build-and-review", "failed", iso(T0), 6.5, 1545, 0.1),
            RunRow("x", "long", "succeeded", "2026-11-25T03:00:00+02:00", 3723.0, 1234567, None),
            RunRow("y", "mid", "succeeded", None, 123.4, 0, 0.0),
        ]
    )
    lines = table.splitlines()
    assert lines == [
        "RUN ID                  WORKFLOW          STATUS     STARTED (UTC)        DURATION     TOKENS     COST",
        "20261125t010349-aaaaaa  hello             running    2026-11-25 01:03:49         -          -        -",
        "20261125t000000-bbbbbb  build-and-review  failed     2026-11-25 01:03:49     6.50s      1,545  $0.1000",
        "x                       long              succeeded  2026-11-25 01:00:00     1h02m  1,234,567        -",
        "y                       mid               succeeded  -                       2m03s          0        -",
    ]
    assert not table.endswith("\n")


def test_runs_table_neutralises_control_characters_and_handles_no_rows():
    table = runs_table([RunRow("r1", "evil\x1b[2J\nname", "failed", None, 1.0, 1, None)])
    assert "\x1b" not in table and len(table.splitlines()) == 2
    assert "evil?[2J?name" in table
    assert runs_table([]) == "no runs recorded"
