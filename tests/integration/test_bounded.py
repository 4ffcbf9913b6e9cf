"""Hostile patterns, conditions, outputs and schemas on the real engine (issue 10, item 2).

Each ends with a clear reason (the node failed or errored, or the workflow is refused with
exit 2), never an internal error (exit 3) or `attempts: 0`. While a hostile evaluation
runs in the run's evaluation worker, a sibling's timeout and Ctrl-C still act on time:
the hostile work is made to need far more than the evaluation deadline (minutes of CEL,
or 2^40 schema checks), so a test cannot pass by luck.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from sandbox_orch.bounded.limits import EVALUATION_SECONDS, MAX_JSON_DEPTH
from tests.conftest import (
    REPO,
    cli,
    interrupt,
    labelled_leftovers,
    run_workflow,
    start_cli,
    unique,
    write_workflow,
)
from tests.integration.test_hardening import read_events_until

pytestmark = pytest.mark.engine

RUNTIMES = ("runc", "runsc")
SIBLING_TIMEOUT = 2  # seconds
# Generous for a loaded machine, and well below both the evaluation deadline (10 s) and the
# 17 s the red team saw when the loop was blocked.
SIBLING_BOUND = 8


def q(text: str) -> str:
    """A YAML scalar holding `text` exactly."""
    return json.dumps(text)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def policy_for(runtime: str, directory: Path) -> Path:
    """The default policy, under the given OCI runtime."""
    default = REPO / "policies" / "default.yaml"
    if runtime == "runc":
        return default
    text = default.read_text()
    assert "oci_runtime: runc" in text
    path = directory / f"default-{runtime}.yaml"
    path.write_text(text.replace("oci_runtime: runc", f"oci_runtime: {runtime}"))
    return path


def python(code: str) -> str:
    return q(f"python -c {json.dumps(code)}")


# A list whose nested .all() is 25 million CEL iterations: about half an hour of work.
LIST_NODE = python("import json; print(json.dumps({'xs': list(range(5000)), 's': 'x' * 65536}))")
NESTED_ALL = 'nodes["{n}"].outputs.xs.all(x, nodes["{n}"].outputs.xs.all(y, y >= 0))'
# Each map multiplies the string by 8: 64 KiB * 8**6 = 16 GiB, past the worker's memory.
DOUBLING = '[nodes["{n}"].outputs.s]' + ".map(x, x + x + x + x + x + x + x + x)" * 6 + " == []"


def events_of(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def finished_events(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["node"]: e for e in events if e["event"] == "node_finished"}


# --- refused before anything starts ---------------------------------------------------------

TEN = "[1,2,3,4,5,6,7,8,9,10]"
REFUSED = {
    "backreference": (
        "outputs: {parse: {format: regex, pattern: '(?P<x>a+)\\1'}}",
        "nodes.NODE.outputs.parse: pattern is not a valid regular expression for RE2",
    ),
    "lookahead": (
        "outputs: {parse: {format: regex, pattern: '(?=(a+)+$)(?P<x>a)'}}",
        "pattern is not a valid regular expression for RE2",
    ),
    "nested-all": (
        f"when: {q(f'{TEN}.all(a, {TEN}.all(b, {TEN}.all(c, {TEN}.all(d, a+b+c+d > 0))))')}",
        "nodes.NODE.when: nests macros (all, exists, map, ...) more than 2 deep",
    ),
    "deep-condition": (
        f"when: {q('(' * 40 + 'true' + ')' * 40)}",
        "nodes.NODE.when: nested too deeply",
    ),
    "self-schema": (
        "outputs: {parse: {format: json, schema: {$ref: '#'}}}",
        "nodes.NODE.outputs.parse.schema: the schema applies itself to a value",
    ),
    "schema-ring": (
        "outputs: {parse: {format: json, schema: {$defs: {a: {$ref: '#/$defs/b'}, "
        "b: {allOf: [{$ref: '#/$defs/a'}]}}, properties: {x: {$ref: '#/$defs/a'}}}}}",
        "the schema applies itself to a value",
    ),
    "schema-pattern": (
        "outputs: {parse: {format: json, schema: {properties: {s: {pattern: '(a)\\1'}}}}}",
        "pattern '(a)\\\\1' is not a valid regular expression for RE2",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_hostile_input_is_refused_with_exit_2_and_one_line(workdir, case):
    node = unique("refused")
    request, message = REFUSED[case]
    text = f"version: 1\nname: refused\nnodes:\n  a: {{command: 'true'}}\n  {node}:\n"
    text += f"    needs: [a]\n    command: 'true'\n    {request}\n"
    path = write_workflow(workdir, text)
    for command in ("validate", "run"):
        proc = cli(command, str(path), timeout=60)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        (line,) = proc.stderr.splitlines()
        assert line.startswith(f"{path}:"), line
        assert message.replace("NODE", node) in line, line
        assert "Traceback" not in proc.stderr


# --- hostile outputs fail their node, on either runtime -------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_hostile_outputs_fail_their_node_with_a_reason(
    workdir, built_images, docker_client, runtime
):
    loop_schema = {
        "$defs": {"x": {"$id": "https://example.com/x", "$ref": "https://example.com/x"}},
        "$ref": "#/$defs/x",
    }
    at_limit = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    deep_line = python("print('log'); print('{\"a\": ' * 5000)")
    fine = python(f"print('{{\"a\": {at_limit}}}')")
    nan = python("print('{\"x\": [1, NaN]}')")
    result = run_workflow(
        workdir,
        f"""
        version: 1
        name: hostile-outputs
        fail_fast: false
        defaults: {{runtime: python}}
        nodes:
          deep:
            command: {python("print('[' * 100000)")}
            outputs: {{parse: {{format: json}}}}
          deep-line:
            command: {deep_line}
            outputs: {{parse: {{format: json}}}}
          backtrack:
            command: {python("print('a' * 200000 + '!')")}
            outputs: {{parse: {{format: regex, pattern: '^(?P<run>(a+)+)$'}}}}
          schema-loop:
            command: {python("print('{}')")}
            outputs: {{parse: {{format: json, schema: {json.dumps(loop_schema)}}}}}
          agent-stream:
            command: {python("import json; print(json.dumps({'type': 'result', 'num_turns': '9' * 5000}))")}
            outputs: {{parse: {{format: claude}}}}
          nan:
            command: {nan}
            outputs: {{parse: {{format: json}}}}
          fine:
            command: {fine}
            outputs: {{parse: {{format: json}}}}
        """,
        "--policy",
        str(policy_for(runtime, workdir)),
    )  # fmt: skip
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "internal error" not in result.stdout + result.stderr
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []
    nodes = result.results["nodes"]
    reasons = {name: (n["status"], n["exit_code"], n["attempts"], n["reason"])
               for name, n in nodes.items()}  # fmt: skip
    depth = f"nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects"
    assert reasons["deep"] == ("failed", 0, 1, f"json parser: the value is {depth}")
    assert reasons["deep-line"] == ("failed", 0, 1, f"json parser: the value is {depth}")
    assert reasons["backtrack"] == ("failed", 0, 1, "regex parser: no match for '^(?P<run>(a+)+)$'")
    assert reasons["schema-loop"][:3] == ("failed", 0, 1)
    assert "refers to itself" in reasons["schema-loop"][3]
    assert reasons["agent-stream"] == ("failed", 0, 1, "claude parser: num_turns is not a count")
    # Python reads NaN, but no strict JSON reader could read the results file holding it.
    nan = "json parser: the value holds NaN, which is not a JSON value"
    assert reasons["nan"] == ("failed", 0, 1, nan)
    assert reasons["fine"] == ("succeeded", 0, 1, None)
    assert nodes["fine"]["outputs"] == {"a": json.loads(at_limit)}
    assert nodes["deep"]["sandbox"]["oci_runtime"] == runtime


# --- the loop is never blocked: a sibling's timeout acts on time ----------------------------


def test_hostile_conditions_are_errored_while_a_sibling_times_out_on_time(
    workdir, built_images, docker_client
):
    producer, sibling = unique("list"), unique("sibling")
    result = run_workflow(
        workdir,
        f"""
        version: 1
        name: hostile-conditions
        fail_fast: false
        nodes:
          {producer}:
            runtime: python
            command: {LIST_NODE}
            outputs: {{parse: {{format: json}}}}
          nested:
            needs: [{producer}]
            command: "true"
            when: {q(NESTED_ALL.format(n=producer))}
          doubling:
            needs: [nested]
            command: "true"
            when: {q("always() && " + DOUBLING.format(n=producer))}
          after:
            needs: [doubling]
            command: "echo still running"
            when: always()
          {sibling}:
            command: "sleep 60"
            timeout: {SIBLING_TIMEOUT}s
        """,
        "--json",
    )
    assert result.exit_code == 1, result.stderr
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []
    nodes = result.results["nodes"]
    assert nodes["nested"]["status"] == "errored"
    assert nodes["nested"]["reason"] == (
        f"condition error: evaluation stopped after {EVALUATION_SECONDS:g}s "
        "(the limit for one evaluation)"
    )
    assert nodes["doubling"]["status"] == "errored"
    assert nodes["doubling"]["reason"].startswith("condition error: ")
    assert "memory" in nodes["doubling"]["reason"] or "stopped after" in nodes["doubling"]["reason"]
    assert nodes["after"]["status"] == "succeeded"  # the run went on
    assert result.results["status"] == "failed"  # the workflow's fault: exit 1, never 3

    finished = finished_events(events_of(result.stdout))
    took = (at(nodes[sibling]["finished_at"]) - at(nodes[sibling]["started_at"])).total_seconds()
    assert nodes[sibling]["status"] == "timed_out"
    assert took < SIBLING_BOUND, f"a {SIBLING_TIMEOUT}s timeout was reported after {took:.1f}s"
    # The sibling timed out while `nested` was still being evaluated, which took the whole
    # deadline after its producer finished.
    assert at(finished[sibling]["at"]) < at(finished["nested"]["at"])
    judged = at(finished["nested"]["at"]) - at(finished[producer]["at"])
    assert judged.total_seconds() >= EVALUATION_SECONDS


def test_a_hostile_parse_fails_its_node_while_a_sibling_times_out_on_time(
    workdir, built_images, docker_client
):
    # Passes every static check, but each level of the value doubles the schema's work:
    # a 40-deep value is 2^40 checks. Only the evaluation deadline ends it.
    schema = {
        "$defs": {"n": {"properties": {"a": {"allOf": [{"$ref": "#/$defs/n"}] * 2}}}},
        "$ref": "#/$defs/n",
    }
    value = '{"a": ' * 40 + "{}" + "}" * 40
    hostile, sibling = unique("parse"), unique("sibling")
    result = run_workflow(
        workdir,
        f"""
        version: 1
        name: hostile-parse
        fail_fast: false
        nodes:
          {hostile}:
            runtime: python
            command: {python(f"print('{value}')")}
            outputs: {{parse: {{format: json, schema: {json.dumps(schema)}}}}}
          {sibling}:
            command: "sleep 60"
            timeout: {SIBLING_TIMEOUT}s
        """,
        "--json",
    )
    assert result.exit_code == 1, result.stderr
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []
    node = result.results["nodes"][hostile]
    assert (node["status"], node["exit_code"], node["attempts"]) == ("failed", 0, 1)
    assert node["reason"] == (
        f"json parser: evaluation stopped after {EVALUATION_SECONDS:g}s "
        "(the limit for one evaluation)"
    )
    other = result.results["nodes"][sibling]
    took = (at(other["finished_at"]) - at(other["started_at"])).total_seconds()
    assert other["status"] == "timed_out"
    assert took < SIBLING_BOUND, f"a {SIBLING_TIMEOUT}s timeout was reported after {took:.1f}s"
    finished = finished_events(events_of(result.stdout))
    assert at(finished[sibling]["at"]) < at(finished[hostile]["at"])


# --- Ctrl-C acts at once, and leaves nothing --------------------------------------------------


def evaluation_worker(cli_pid: int, deadline_s: float = 60) -> psutil.Process:
    """Bounded polling until the CLI's evaluation worker is busy (has used CPU time)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for child in psutil.Process(cli_pid).children():
            try:
                busy = child.cpu_times().user > 1.0  # evaluating, not just started
                if busy and "sandbox_orch.bounded.worker" in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    raise AssertionError("the evaluation worker never got busy")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_during_a_hostile_evaluation(workdir, built_images, docker_client, signum):
    producer, slow = unique("list"), unique("slow")
    path = write_workflow(
        workdir,
        f"""
        version: 1
        name: interrupted-evaluation
        fail_fast: false
        nodes:
          {producer}:
            runtime: python
            command: {LIST_NODE}
            outputs: {{parse: {{format: json}}}}
          nested:
            needs: [{producer}]
            command: "true"
            when: {q(NESTED_ALL.format(n=producer))}
          {slow}: {{command: "sleep 120"}}
        """,
    )
    results_path = workdir / "results.json"
    proc = start_cli("run", str(path), "--json", "--results", str(results_path))
    try:
        run_id = read_events_until(proc, "run_started")[0]["run_id"]
        worker = evaluation_worker(proc.pid)
    finally:
        clock = time.monotonic()
        proc.send_signal(signum)
    # The worker is killed at once: left alone, it would run until its deadline.
    while worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() - clock < 3, "the evaluation worker outlived the interrupt"
        time.sleep(0.02)  # bounded polling of the real condition
    code, out, err = interrupt(proc, signum)  # a second signal is harmless: already ending
    took = time.monotonic() - clock
    assert code == 130, err
    assert took < 15, f"the interrupted run took {took:.1f}s to end"
    assert labelled_leftovers(docker_client, run_id) == []
    results = json.loads(results_path.read_text())
    assert results["status"] == "cancelled"
    assert results["nodes"]["nested"]["status"] == "cancelled"
    assert results["nodes"][slow]["status"] == "cancelled"
    assert events_of(out)[-1]["event"] == "run_finished"
