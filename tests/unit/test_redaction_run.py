"""A whole run (in-memory backend) whose node prints the secret it was granted: the
results file, the event stream, the run store and the CI reports never show it. The
engine version of this attack is tests/integration/test_redaction.py."""

import asyncio
import io
import json
import textwrap
from pathlib import Path

import pytest

from sandbox_orch import redaction
from sandbox_orch.backend.memory import MemoryBackend, Outcome
from sandbox_orch.orchestrator import RunOptions, run_plan
from sandbox_orch.policy import load_policy
from sandbox_orch.reports import github_annotations, github_step_summary, junit_xml
from sandbox_orch.view import JsonView, PlainView

from .helpers import admitted

SECRET = "tok'en\"with\\both-quotes\nand-a-newline-0123456789"
MARK = "[REDACTED:RED_KEY]"
POLICY = """\
    version: 1
    name: redaction
    runtimes: [shell]
    images: ["sandbox-orch/shell"]
    isolation: {oci_runtime: runc, user: "10001:10001", tmpfs: {/tmp: 64m}}
    network: {egress: []}
    mounts: []
    env: {deny: []}
    secrets:
      RED_KEY: {from_env: SO_UNIT_RED_KEY, runtimes: [shell]}
    limits: {cpus: 2, memory: 2g, pids: 512, timeout: 30m, output: 16m, artifacts: 1g}
    defaults: {cpus: 1, memory: 512m, pids: 256, timeout: 10m}
"""
WORKFLOW = """\
    version: 1
    name: redaction
    nodes:
      leak:
        command: [x]
        secrets: [RED_KEY]
        outputs:
          parse:
            format: json
            schema: {type: object, properties: {n: {type: integer}}}
"""


@pytest.fixture(autouse=True)
def _no_remembered_secrets():
    redaction.forget_all()
    yield
    redaction.forget_all()


def _leak(spec):
    value = spec.env["RED_KEY"]
    # The schema violation quotes the value in Python repr; stderr's 4096-character tail
    # begins three characters into another copy.
    filler = "y" * (4096 - len(value) + 3)
    return Outcome(
        exit_code=0,
        stdout=json.dumps({"n": value}).encode(),
        stderr=b"x" * 9000 + value.encode() + filler.encode(),
    )


def _forms(value: str) -> list[str]:
    """What would show the secret: the value, its repr/JSON bodies, and big fragments."""
    return [value, repr(value)[1:-1], json.dumps(value)[1:-1], value[3:20], value[-20:]]


def _assert_nowhere(text: str, where: str) -> None:
    for form in _forms(SECRET):
        assert form not in text, f"{where} shows {form!r}"


def test_a_node_printing_its_secret_leaks_it_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "store"))
    monkeypatch.setenv("SO_UNIT_RED_KEY", SECRET)
    (tmp_path / "policy.yaml").write_text(textwrap.dedent(POLICY))
    policy = load_policy(tmp_path / "policy.yaml")
    plan, sandboxes = admitted(WORKFLOW, policy)
    lines, plain = io.StringIO(), io.StringIO()
    json_view, plain_view = JsonView(lines), PlainView(plain)

    events = []

    def emit(event):
        events.append(event)
        json_view(event)
        plain_view(event)

    report = asyncio.run(
        run_plan(
            plan, policy, sandboxes, MemoryBackend(_leak), "r-redact", emit, asyncio.Event(),
            RunOptions(results_file=tmp_path / "results.json"),
        )
    )  # fmt: skip
    node = report.results["nodes"]["leak"]
    assert node["status"] == "failed" and MARK in node["reason"]  # the schema violation
    assert MARK in node["stderr_tail"] and node["stderr_tail"].endswith("y" * 100)
    places = {
        "results file": (tmp_path / "results.json").read_text(),
        "run results": report.results_path.read_text(),
        "--json events": lines.getvalue(),
        "--ci lines": plain.getvalue(),
        "junit": junit_xml(report.results),
        "annotations": "\n".join(github_annotations(report.results)),
        "step summary": github_step_summary(report.results),
        "run store": b"".join(
            p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()
        ).decode("utf-8", "replace"),
    }
    # Each layer on its own: the events and the document the run hands on are redacted
    # before any sink sees them (the sinks' own scrubbing is tested separately).
    places["events as emitted"] = repr(events)
    places["results document"] = json.dumps(report.results)
    for where, text in places.items():
        _assert_nowhere(text, where)
    assert MARK in places["results file"] and MARK in places["--json events"]


def test_without_the_document_redaction_the_sinks_still_hold(tmp_path, monkeypatch):
    """Defence in depth: a rendering the run's redactor never saw is scrubbed on the way
    out (here the results document skips the run's redactor entirely)."""
    from sandbox_orch.redaction import Redactor
    from sandbox_orch.store import save_results

    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path))
    redaction.remember("RED_KEY", SECRET)
    path = save_results("r1", {"reason": f"{SECRET!r} is not of type 'integer'"})
    text = Path(path).read_text()
    _assert_nowhere(text, "results file")
    assert Redactor().document({"a": SECRET}) == {"a": SECRET}  # the layer that was skipped
