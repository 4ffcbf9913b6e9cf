"""Workflow files: every refusal is one line `FILE:LINE: field: message`."""

import pytest

from sandbox_orch.errors import InputRefused
from sandbox_orch.loading import load_workflow

from .helpers import plan_of


def problems(tmp_path, text: str) -> list[str]:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    with pytest.raises(InputRefused) as caught:
        load_workflow(path)
    return [str(p) for p in caught.value.problems]


def test_contract_example_workflow_validates():
    plan = plan_of(
        """
        version: 1
        name: build-and-review
        fail_fast: true
        defaults:
          runtime: shell
          timeout: 10m
          resources: {cpus: 1, memory: 512m, pids: 256}
        nodes:
          build:
            runtime: python
            command: ["python", "-c", "print(1)"]
            outputs:
              parse: {format: json}
          test:
            needs: [build]
            command: "pytest -q || exit 3"
            continue_on_failure: true
            retries: {limit: 2, backoff: 1s, on: [failed, timed_out, oom], memory_factor: 2}
            timeout: 2m
          report:
            needs: [test]
            command: "echo report"
        """
    )
    test = plan.nodes["test"]
    assert test.retries is not None and test.retries.on == ["failed", "timed_out", "oom"]
    assert test.timeout == 120 and test.resources.memory == 512 * 1024**2
    assert test.argv == ("/bin/sh", "-c", "pytest -q || exit 3")
    assert plan.nodes["build"].argv == ("python", "-c", "print(1)")


def test_unknown_key_privileged_is_refused_with_its_line(tmp_path):
    found = problems(
        tmp_path,
        "version: 1\nname: x\nnodes:\n  a:\n    command: [echo]\n    privileged: true\n",
    )
    assert found == [f"{tmp_path}/wf.yaml:6: nodes.a.privileged: unknown key"]


def test_every_problem_is_reported_each_on_its_line(tmp_path):
    found = problems(
        tmp_path,
        "version: 1\nname: x\nnodes:\n  a:\n    command: 5\n    timeout: 3x\n"
        "  b:\n    command: [x]\n    resources: {memory: lots}\n",
    )
    assert [line.split(": ", 2)[0].rsplit(":", 1)[1] for line in found] == ["5", "6", "9"]
    assert (
        "nodes.a.command: Input should be a valid string; Input should be a valid list" in found[0]
    )
    assert "nodes.a.timeout: '3x' is not a duration" in found[1]
    assert "nodes.b.resources.memory: 'lots' is not a size" in found[2]


def test_missing_required_key_is_named(tmp_path):
    (line,) = problems(tmp_path, "version: 1\nnodes:\n  a: {command: [x]}\n")
    assert line.endswith(": required key 'name' is missing")


def test_wrong_version_is_refused(tmp_path):
    (line,) = problems(tmp_path, "version: 2\nname: x\nnodes:\n  a: {command: [x]}\n")
    assert ":1: version:" in line


@pytest.mark.parametrize("name", ["/abs", "../up", "a/../../b", ""])
def test_artifact_names_that_escape_are_refused(tmp_path, name):
    (line,) = problems(
        tmp_path,
        "version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n"
        f"    outputs:\n      artifacts: [{{name: '{name}', path: /out}}]\n",
    )
    assert "must be relative" in line and ":7:" in line


def test_regex_parser_needs_a_valid_pattern(tmp_path):
    (line,) = problems(
        tmp_path,
        "version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n"
        "    outputs: {parse: {format: regex, pattern: '(unclosed'}}\n",
    )
    assert "not a valid regular expression" in line


def test_more_than_a_thousand_nodes_is_refused(tmp_path):
    nodes = "".join(f"  n{i}: {{command: [x]}}\n" for i in range(1001))
    (line,) = problems(tmp_path, f"version: 1\nname: x\nnodes:\n{nodes}")
    assert "nodes:" in line and "1000" in line
