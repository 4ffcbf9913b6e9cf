"""Planning: sequences become chains, needs resolve, cycles and unknown names are refused."""

import pytest

from sandbox_orch.errors import InputRefused
from tests.corpus import REFUSED

from .helpers import plan_of


def refusals(text: str) -> list[str]:
    with pytest.raises(InputRefused) as caught:
        plan_of(text)
    return [str(p) for p in caught.value.problems]


def test_levels_follow_needs():
    plan = plan_of(
        """
        version: 1
        name: x
        nodes:
          c: {needs: [a, b], command: [x]}
          a: {command: [x]}
          b: {needs: [a], command: [x]}
          d: {command: [x]}
        """
    )
    assert plan.levels == [["a", "d"], ["b"], ["c"]]
    assert list(plan.nodes)[-1] == "c"


def test_sequence_becomes_a_chain_with_group_settings_on_each_member():
    plan = plan_of(
        """
        version: 1
        name: x
        nodes:
          setup: {command: [x]}
          checks:
            needs: [setup]
            continue_on_failure: true
            sequence:
              - {name: lint, command: [x]}
              - {name: typecheck, command: [x]}
              - {name: unit, command: [x], needs: [{node: setup, allow_failure: true}]}
          after: {needs: [checks], command: [x]}
        """
    )
    edges = {(e.source, e.target, e.allow_failure) for e in plan.edges}
    assert edges == {
        ("setup", "lint", False),
        ("lint", "typecheck", False),
        ("typecheck", "unit", False),
        ("setup", "unit", True),
        ("unit", "after", False),  # the group's name means its last member
    }
    assert all(plan.nodes[m].continue_on_failure for m in ("lint", "typecheck", "unit"))
    assert plan.nodes["lint"].group == "checks"
    assert not plan.nodes["after"].continue_on_failure


def test_group_when_is_combined_with_member_when():
    plan = plan_of(
        """
        version: 1
        name: x
        nodes:
          g:
            when: "always()"
            sequence:
              - {name: a, command: [x]}
              - {name: b, command: [x], when: "nodes.a.exit_code == 0"}
        """
    )
    assert plan.nodes["a"].when == "always()"
    assert plan.nodes["b"].when == "(always()) && (nodes.a.exit_code == 0)"


def test_defaults_are_merged_into_every_node():
    plan = plan_of(
        """
        version: 1
        name: x
        defaults:
          runtime: python
          timeout: 30s
          resources: {memory: 128m, pids: 32}
          env: {A: "1", B: "2"}
        nodes:
          n: {command: [x], resources: {pids: 8}, env: {B: "3"}}
        """
    )
    node = plan.nodes["n"]
    assert node.runtime.name == "python" and node.timeout == 30
    assert (node.resources.memory, node.resources.pids) == (128 * 1024**2, 8)
    assert node.env == {"A": "1", "B": "3"}


def test_a_cycle_is_refused_naming_it():
    (line,) = refusals((REFUSED / "workflow" / "cycle.yaml").read_text())
    assert "dependency cycle:" in line
    cycle = line.split("dependency cycle: ")[1].split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"} and len(cycle) == 4
    assert line.startswith("wf.yaml:")


def test_custom_runtime_entrypoint_takes_list_command_as_arguments():
    plan = plan_of(
        """
        version: 1
        name: x
        runtimes:
          lint: {image: sandbox-orch/python, entrypoint: [python, -m, pyflakes]}
        nodes:
          a: {runtime: lint, command: [src]}
          b: {runtime: lint}
        """
    )
    assert plan.nodes["a"].argv == ("python", "-m", "pyflakes", "src")
    assert plan.nodes["b"].argv == ("python", "-m", "pyflakes")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://gateway:99999", "is not a URL the CLI can reach"),
        ("http://gateway:port", "is not a URL the CLI can reach"),
        ("gateway:8080", "is not an http(s)://HOST[:PORT] URL"),
        ("ftp://gateway/", "is not an http(s)://HOST[:PORT] URL"),
        ("https://", "is not an http(s)://HOST[:PORT] URL"),
    ],
)
def test_a_base_url_the_cli_cannot_use_is_refused_with_its_line(url, why):
    """Once an internal error (exit 3, a traceback) or a silent fallback to the public API."""
    from sandbox_orch.errors import InputRefused

    from .helpers import admitted

    text = (
        "version: 1\nname: x\nnodes:\n  a:\n    runtime: claude\n    prompt: hi\n"
        f"    env: {{ANTHROPIC_BASE_URL: '{url}'}}\n"
    )
    with pytest.raises(InputRefused) as refused:
        admitted(text)
    messages = [str(p) for p in refused.value.problems]
    assert any(":7: nodes.a.env.ANTHROPIC_BASE_URL: " in m and why in m for m in messages), messages
