"""Workflow files: every refusal is one line `FILE:LINE: field: message`.

The refused documents themselves are files in tests/corpus/refused/workflow, checked by
test_refused_corpus.py (and against the editors' schema by test_editor_schema.py)."""

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


@pytest.mark.parametrize("backoff", ["0", "0s", 0, 0.0])
def test_a_zero_backoff_means_no_wait(backoff):
    plan = plan_of(
        f"version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n"
        f"    retries: {{limit: 1, backoff: {backoff!r}}}\n"
    )
    assert plan.nodes["a"].retries.backoff == 0.0


@pytest.mark.parametrize("backoff", ["false", "-1", "'0.0s'"])
def test_a_backoff_is_zero_or_a_duration(tmp_path, backoff):
    (line,) = problems(
        tmp_path,
        f"version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n    retries: {{limit: 1, backoff: {backoff}}}\n",
    )
    assert ":6: nodes.a.retries.backoff: " in line and "duration" in line


def test_more_than_a_thousand_nodes_is_refused(tmp_path):
    nodes = "".join(f"  n{i}: {{command: [x]}}\n" for i in range(1001))
    (line,) = problems(tmp_path, f"version: 1\nname: x\nnodes:\n{nodes}")
    assert "nodes:" in line and "1000" in line
