"""Reports and the run store on the real engine: `run --junit`, GitHub Actions workflow
commands (and what a node's output can and cannot do to them), parser schemas, and
`runs list` / `runs show`, also for runs started at the same time."""

from __future__ import annotations

import json
import os
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import (
    REPO,
    CliResult,
    cli,
    labelled_leftovers,
    run_workflow,
    start_cli,
    write_workflow,
)

pytestmark = pytest.mark.engine

FAIL_FAST = REPO / "configs" / "examples" / "fail-fast.yaml"
TOKEN = re.compile(r"[0-9a-f]{32}")
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def q(text: str) -> str:
    """A YAML scalar holding `text` exactly (a JSON string is a YAML flow scalar)."""
    return json.dumps(text)


def no_leftovers(docker_client, result: CliResult) -> str:
    assert result.results is not None, result.stdout + result.stderr
    run_id = result.results["run_id"]
    assert labelled_leftovers(docker_client, run_id) == []
    return run_id


def runner_commands(output: str) -> list[str]:
    """The workflow commands a GitHub Actions runner would act on, reading `output` as it
    does: line by line (CR, LF, CRLF), trimmed, and ignoring every command between
    `::stop-commands::TOKEN` and `::TOKEN::`."""
    acted, stopped = [], None
    for raw in LINE_BREAK.split(output):
        line = raw.strip()
        if stopped is not None:
            if line == f"::{stopped}::":
                stopped = None
            continue
        if line.startswith("::"):
            acted.append(line)
            if line.startswith("::stop-commands::"):
                stopped = line.removeprefix("::stop-commands::")
    return acted


def report_vocabulary(command: str) -> bool:
    """What the report itself prints outside a stop-commands block."""
    return (
        command.startswith(("::group::", "::error title=", "::warning title="))
        or command == "::endgroup::"
        or re.fullmatch(rf"::stop-commands::{TOKEN.pattern}", command) is not None
    )


# --- JUnit and GitHub Actions --------------------------------------------------------------


def test_junit_and_github_annotations_for_fail_fast(workdir, built_images, docker_client):
    junit, results_path = workdir / "report.xml", workdir / "results.json"
    summary = workdir / "summary.md"
    github = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    args = ("--ci", "--junit", str(junit), "--results", str(results_path))
    proc = cli("run", str(FAIL_FAST), *args, env=github)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = json.loads(results_path.read_text())
    assert labelled_leftovers(docker_client, results["run_id"]) == []
    nodes = results["nodes"]
    assert {n: v["status"] for n, v in nodes.items()} == {
        "unit-tests": "failed",
        "long-build": "succeeded",
        "package": "skipped",
        "cleanup": "succeeded",
    }

    # JUnit: one testcase per node, in graph order; verdicts and counts.
    root = ET.fromstring(junit.read_text(encoding="utf-8"))
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    for element in (root, suite):
        counts = {k: element.get(k) for k in ("tests", "failures", "errors", "skipped")}
        assert counts == {"tests": "4", "failures": "1", "errors": "0", "skipped": "1"}
    assert suite.get("name") == "fail-fast"
    properties = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert properties["run_id"] == results["run_id"]
    assert properties["run_status"] == "failed"
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert [c.get("name") for c in suite.findall("testcase")] == results["graph"]["nodes"]
    assert all(c.get("classname") == "sandbox-orch.fail-fast" for c in cases.values())

    failed = cases["unit-tests"]
    (failure,) = failed.findall("failure")
    assert failure.get("type") == "failed"
    assert failure.get("message") == nodes["unit-tests"]["reason"] == "exited with code 1"
    tails = (failure.text or "") + (failed.findtext("system-out") or "")
    assert "FAIL test_login" in tails
    assert failed.find("skipped") is None and failed.find("error") is None

    (skipped,) = cases["package"].findall("skipped")
    assert skipped.get("message") == nodes["package"]["skip_reason"]
    assert "fail_fast" in skipped.get("message") and "unit-tests" in skipped.get("message")
    for name in ("long-build", "cleanup"):
        assert [child.tag for child in cases[name]] == ["properties", "system-out"]
    assert cases["cleanup"].findtext("system-out") == "cleaning up\n"

    # GitHub Actions: a group per node, an ::error for the failed one, nothing else acted on.
    acted = runner_commands(proc.stdout)
    assert all(report_vocabulary(c) for c in acted), acted
    groups = [c for c in acted if c.startswith("::group::")]
    assert groups == [f"::group::{n} ({nodes[n]['status']})" for n in results["graph"]["nodes"]]
    assert acted.count("::endgroup::") == 4
    errors = [c for c in acted if c.startswith("::error")]
    assert errors == ["::error title=fail-fast%3A unit-tests failed::exited with code 1"]
    tokens = [c.removeprefix("::stop-commands::") for c in acted if "stop-commands" in c]
    assert len(set(tokens)) == 4
    for token in tokens:
        assert f"\n::{token}::\n::endgroup::\n" in proc.stdout
    assert "FAIL test_login" in proc.stdout  # the tail, printed inside its block
    assert summary.read_text().count("\n| ") == 5  # the header row and one row per node


INJECTOR = (
    "echo '::set-env name=X::y'; echo '::add-mask::hunter2'; echo '::endgroup::'; "
    "echo '::stop-commands::mine'; echo '::error::forged'; echo '::mine::'; "
    "printf 'a\\r::warning::after-cr\\n'; "
    "echo '::set-env name=Y::z' >&2; echo '::add-path::/evil' >&2; exit 1"
)


def test_node_output_cannot_inject_workflow_commands(workdir, built_images, docker_client):
    result = run_workflow(
        workdir,
        f"""
        version: 1
        name: inject
        nodes:
          talker:
            command: {q(INJECTOR)}
        """,
        env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": ""},
    )
    assert result.exit_code == 1, result.stdout + result.stderr
    no_leftovers(docker_client, result)
    node = result.node("talker")
    assert "::set-env name=X::y" in node["stdout_tail"]
    assert "::set-env name=Y::z" in node["stderr_tail"]

    # The node's lines are printed (the log shows what it said) ...
    out = result.stdout
    for text in ("::set-env name=X::y", "::add-mask::hunter2", "::set-env name=Y::z"):
        assert f"\n{text}\n" in out
    # ... but only inside the report's stop-commands block: the runner acts on none.
    acted = runner_commands(out)
    assert all(report_vocabulary(c) for c in acted), acted
    assert [c for c in acted if c.startswith("::error")] == [
        "::error title=inject%3A talker failed::exited with code 1"
    ]
    (start,) = [i for i, line in enumerate(out.splitlines()) if line.startswith("::group::")]
    block = out.splitlines()[start:]
    token = block[1].removeprefix("::stop-commands::")
    assert TOKEN.fullmatch(token)
    end = block.index(f"::{token}::")
    inside = block[2:end]
    for text in ("::set-env name=X::y", "::set-env name=Y::z", "::error::forged"):
        assert text in inside
    assert block[end + 1] == "::endgroup::"
    # Nothing of the node's output appears outside the block.
    outside = "\n".join(out.splitlines()[:start] + block[end + 1 :])
    assert "set-env" not in outside and "hunter2" not in outside and "forged" not in outside


def test_output_keys_in_a_schema_reason_cannot_inject(workdir, built_images, docker_client):
    key_printer = "import json; print(json.dumps({'a\\n::set-env name=X::y': 1}))"
    result = run_workflow(
        workdir,
        f"""
        version: 1
        name: inject-keys
        nodes:
          keyed:
            runtime: python
            command: ["python", "-c", {q(key_printer)}]
            outputs:
              parse:
                format: json
                schema: {{type: object, additionalProperties: {{type: string}}}}
        """,
        env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": ""},
    )
    assert result.exit_code == 1, result.stdout + result.stderr
    no_leftovers(docker_client, result)
    assert result.node("keyed")["status"] == "failed"
    acted = runner_commands(result.stdout)
    assert all(report_vocabulary(c) for c in acted), acted


def test_workflow_name_cannot_inject(workdir, built_images, docker_client):
    result = run_workflow(
        workdir,
        """
        version: 1
        name: "innocent\\n::add-mask::hunter2"
        nodes:
          fine: {command: "true"}
        """,
        env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": ""},
    )
    assert result.exit_code in (0, 2), result.stdout + result.stderr
    if result.results is not None:
        no_leftovers(docker_client, result)
    acted = runner_commands(result.stdout)
    assert all(report_vocabulary(c) for c in acted), acted


# --- parser schemas ------------------------------------------------------------------------


def test_parser_schemas_inline_file_and_refs(workdir, built_images, docker_client):
    (workdir / "coverage.json").write_text(
        json.dumps(
            {
                "type": "object",
                "required": ["coverage"],
                "properties": {"coverage": {"type": "integer", "minimum": 80}},
            }
        )
    )
    (workdir / "coverage.yaml").write_text(
        "type: object\nrequired: [coverage]\nproperties: {coverage: {type: integer}}\n"
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]

    def emit(document: dict) -> str:
        return q(f"echo {json.dumps(json.dumps(document))}")

    good = {"coverage": 91}
    try:
        result = run_workflow(
            workdir,
            f"""
            version: 1
            name: schemas
            fail_fast: false
            nodes:
              inline-bad:
                command: {emit({"coverage": "high"})}
                outputs:
                  parse:
                    format: json
                    schema: {{type: object, required: [coverage],
                              properties: {{coverage: {{type: integer}}}}}}
              nested-bad:
                command: {emit({"report": {"lines": "many"}})}
                outputs:
                  parse:
                    format: json
                    schema:
                      type: object
                      properties:
                        report: {{type: object, properties: {{lines: {{type: integer}}}}}}
              file-good:
                command: {emit(good)}
                outputs: {{parse: {{format: json, schema: coverage.json}}}}
              file-bad:
                command: {emit({"coverage": 50})}
                outputs: {{parse: {{format: json, schema: coverage.json}}}}
              yaml-file-good:
                command: {emit(good)}
                outputs: {{parse: {{format: json, schema: coverage.yaml}}}}
              local-ref:
                command: {emit(good)}
                outputs:
                  parse:
                    format: json
                    schema:
                      $defs: {{cov: {{type: integer}}}}
                      type: object
                      properties: {{coverage: {{$ref: "#/$defs/cov"}}}}
              remote-ref:
                command: {emit(good)}
                outputs:
                  parse:
                    format: json
                    schema:
                      type: object
                      properties: {{coverage: {{$ref: "https://example.com/coverage.json"}}}}
              listener-ref:
                command: {emit(good)}
                outputs:
                  parse:
                    format: json
                    schema:
                      type: object
                      properties:
                        coverage: {{$ref: "http://127.0.0.1:{port}/coverage.json"}}
            """,
        )
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever connected to it
    finally:
        listener.close()
    assert result.exit_code == 1, result.stdout + result.stderr
    no_leftovers(docker_client, result)
    status = {name: (n["status"], n["reason"]) for name, n in result.results["nodes"].items()}
    assert status["file-good"] == ("succeeded", None)
    assert status["yaml-file-good"] == ("succeeded", None)
    assert status["local-ref"] == ("succeeded", None)
    assert result.node("file-good")["outputs"] == good
    assert status["inline-bad"] == (
        "failed",
        "outputs field coverage: 'high' is not of type 'integer'",
    )
    assert status["nested-bad"][0] == "failed"
    assert status["nested-bad"][1].startswith("outputs field report.lines: ")
    assert status["file-bad"] == (
        "failed",
        "outputs field coverage: 50 is less than the minimum of 80",
    )
    for name, url in (
        ("remote-ref", "https://example.com/coverage.json"),
        ("listener-ref", f"http://127.0.0.1:{port}/coverage.json"),
    ):
        state, reason = status[name]
        assert state == "failed" and url in reason and "never fetched" in reason, reason
    for name in ("inline-bad", "nested-bad", "file-bad", "remote-ref"):
        node = result.node(name)
        assert node["exit_code"] == 0 and node["outputs"] == {}


def test_schema_files_outside_the_workflow_directory_are_refused(workdir):
    flows = workdir / "flows"
    flows.mkdir()
    (workdir / "x.json").write_text('{"type": "object"}')
    (flows / "link.json").symlink_to(workdir / "x.json")
    text = """\
version: 1
name: climbing
nodes:
  up:
    command: ["echo", "{}"]
    outputs: {parse: {format: json, schema: ../x.json}}
  linked:
    command: ["echo", "{}"]
    outputs: {parse: {format: json, schema: link.json}}
"""
    path = write_workflow(flows, text)
    for command in ("validate", "run"):
        proc = cli(command, str(path))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = sorted(proc.stderr.splitlines())  # (reported in plan order)
        assert lines == [
            f"{path}:6: nodes.up.outputs.parse.schema: "
            "schema file '../x.json' is not inside the workflow's directory",
            f"{path}:9: nodes.linked.outputs.parse.schema: "
            "schema file 'link.json' is not inside the workflow's directory",
        ]
    assert not (Path(os.environ["SANDBOX_ORCH_HOME"]) / "runs").exists()


# --- the run store -------------------------------------------------------------------------


def runs_rows(stdout: str) -> list[list[str]]:
    lines = stdout.splitlines()
    header = "RUN ID WORKFLOW STATUS STARTED (UTC) DURATION TOKENS COST"
    assert lines[0].split() == header.split()
    return [line.split() for line in lines[1:]]


def test_runs_list_and_show(workdir, built_images, docker_client):
    first = run_workflow(
        workdir,
        """
        version: 1
        name: first-run
        nodes:
          hello: {command: "echo hello"}
        """,
    )
    assert first.exit_code == 0, first.stdout + first.stderr
    first_id = no_leftovers(docker_client, first)
    first_results = first.results
    second = run_workflow(
        workdir,
        """
        version: 1
        name: second-run
        nodes:
          broken: {command: "exit 4"}
        """,
    )
    assert second.exit_code == 1, second.stdout + second.stderr
    second_id = no_leftovers(docker_client, second)

    listed = cli("runs", "list")
    assert listed.returncode == 0, listed.stderr
    rows = runs_rows(listed.stdout)
    assert [(r[0], r[1], r[2], r[-2], r[-1]) for r in rows] == [
        (second_id, "second-run", "failed", "0", "-"),  # tokens, cost: no agent spent
        (first_id, "first-run", "succeeded", "0", "-"),
    ]
    as_json = cli("runs", "list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    listed_json = json.loads(as_json.stdout)
    assert [(r["run_id"], r["workflow"], r["status"], r["tokens"]) for r in listed_json] == [
        (second_id, "second-run", "failed", 0),
        (first_id, "first-run", "succeeded", 0),
    ]

    # `runs show` takes a unique prefix and prints the results document, as saved.
    common = next(i for i, (a, b) in enumerate(zip(first_id, second_id, strict=True)) if a != b)
    prefix = first_id[: common + 1]
    shown = cli("runs", "show", prefix, "--json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document == first_results
    saved = Path(os.environ["SANDBOX_ORCH_HOME"]) / "runs" / first_id / "results.json"
    assert document == json.loads(saved.read_text())
    text = cli("runs", "show", second_id)
    assert text.returncode == 0, text.stderr
    assert f"run {second_id}: second-run failed" in text.stdout
    assert "broken" in text.stdout and "exited with code 4" in text.stdout

    missing = cli("runs", "show", "nope")
    assert missing.returncode == 2 and "no such run" in missing.stderr, missing.stderr
    if common:  # both ids start alike (they share their start time's prefix)
        ambiguous = cli("runs", "show", first_id[:common])
        assert ambiguous.returncode == 2 and "ambiguous" in ambiguous.stderr


def test_concurrent_runs_are_both_recorded(workdir, built_images, docker_client):
    paths = {}
    for name in ("alpha", "beta"):
        directory = workdir / name
        directory.mkdir()
        paths[name] = write_workflow(
            directory,
            f"""
            version: 1
            name: {name}
            nodes:
              a: {{command: "sleep 1; echo {name}-a"}}
              b: {{command: "sleep 1; echo {name}-b"}}
            """,
        )
    procs = {
        name: start_cli("run", str(path), "--ci", "--results", str(path.parent / "r.json"))
        for name, path in paths.items()
    }
    ids = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        results = json.loads((paths[name].parent / "r.json").read_text())
        assert results["status"] == "succeeded"
        assert labelled_leftovers(docker_client, results["run_id"]) == []
        ids[name] = results["run_id"]
    assert ids["alpha"] != ids["beta"]

    listed = cli("runs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["run_id"]: (r["workflow"], r["status"]) for r in json.loads(listed.stdout)}
    assert rows == {ids["alpha"]: ("alpha", "succeeded"), ids["beta"]: ("beta", "succeeded")}
    text = cli("runs", "list")
    assert {r[0] for r in runs_rows(text.stdout)} == set(ids.values())
    for name, run_id in ids.items():
        shown = cli("runs", "show", run_id, "--json")
        assert shown.returncode == 0, shown.stderr
        outputs = {n["stdout_tail"] for n in json.loads(shown.stdout)["nodes"].values()}
        assert outputs == {f"{name}-a\n", f"{name}-b\n"}
