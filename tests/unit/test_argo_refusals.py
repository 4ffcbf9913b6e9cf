"""What `export --to argo` refuses because only sandbox-orch's runner does it (one line
each, exact), what it exports of secrets, and the command line (exit codes, stdout)."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from sandbox_orch.cli import main
from sandbox_orch.errors import InputRefused
from sandbox_orch.export.argo import SECRETS_ANNOTATION, argo_workflow, export_token, task_name
from sandbox_orch.preparing import prepare

from .argo_cases import argo_settings
from .k8s_cases import ROOT, SETTINGS

POLICY = """\
version: 1
name: wide
runtimes: [shell, python]
images: ["sandbox-orch/shell", "sandbox-orch/python"]
isolation: {oci_runtime: runc, user: "10001:10001", tmpfs: {/tmp: 64m}}
network: {egress: ["example.com:443"]}
mounts: [{source: ., modes: [ro]}]
secrets:
  DEPLOY_TOKEN: {from_env: DEPLOY_TOKEN, runtimes: [shell]}
limits: {cpus: 2, memory: 2g, pids: 512, timeout: 30m, output: 16m, artifacts: 1g}
defaults: {cpus: 1, memory: 512m, pids: 256, timeout: 10m}
"""
HEAD = "version: 1\nname: w\nfail_fast: false\nnodes:\n"


def export(tmp_path, nodes: str, head: str = HEAD, keep_going: bool = False) -> dict:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "w.yaml").write_text(head + nodes)
    prepared = prepare(tmp_path / "w.yaml", tmp_path / "policy.yaml")
    return argo_workflow(prepared.plan, prepared.sandboxes, argo_settings(keep_going))


def refusals(tmp_path, nodes: str, head: str = HEAD, keep_going: bool = False) -> list[str]:
    with pytest.raises(InputRefused) as refused:
        export(tmp_path, nodes, head, keep_going)
    where = f"{tmp_path / 'w.yaml'}:"
    return [str(p).removeprefix(where) for p in refused.value.problems]


CASES = [
    (
        "  a:\n    command: 'true'\n    mounts: [{source: ., target: /src}]\n",
        "7: nodes.a.mounts: a cluster has no host directory to mount, and an Argo Workflow "
        "has no sandbox-orch runner to copy one in",
    ),
    (
        "  a:\n    command: 'true'\n    outputs: {artifacts: [{name: d, path: /out/d}]}\n"
        "  b:\n    needs: [a]\n    command: 'true'\n    inputs: [{from: a/d, path: /in/d}]\n",
        "7: nodes.a.outputs.artifacts: artifacts are not exported: nothing would copy them "
        "out of the pod (Argo's need an artifact repository and do not keep sandbox-orch's "
        "copy rules)",
    ),
    (
        "  a:\n    command: 'true'\n    network: {egress: ['example.com:443']}\n",
        "7: nodes.a.network: egress goes through sandbox-orch's egress proxy, which an Argo "
        "Workflow does not run (a setup phase and brokered secrets need it too)",
    ),
    (
        "  a:\n    command: 'true'\n    setup: {command: 'true'}\n",
        "7: nodes.a.setup: egress goes through sandbox-orch's egress proxy, which an Argo "
        "Workflow does not run (a setup phase and brokered secrets need it too)",
    ),
    (
        "  a:\n    command: 'true'\n    outputs: {parse: {format: json}}\n",
        "7: nodes.a.outputs.parse: Argo does not parse a node's output (json): a node whose "
        "output fails its parser fails under sandbox-orch but would succeed on Argo",
    ),
    (
        "  a:\n    command: 'true'\n    retries: {limit: 1}\n",
        "7: nodes.a.retries: Argo's retryStrategy cannot retry on sandbox-orch's reasons (it "
        "cannot tell a timeout or an OOM kill from a failure) nor grow memory per attempt",
    ),
    (
        "  a:\n    command: 'true'\n    start_delay: 5s\n",
        "7: nodes.a.start_delay: Argo has no per-task start delay",
    ),
]


@pytest.mark.parametrize(("nodes", "message"), CASES, ids=[m.split(":")[1] for _, m in CASES])
def test_a_node_refusal(tmp_path, nodes, message):
    assert refusals(tmp_path, nodes)[0] == message


def test_an_input_is_refused_on_the_consumer_too(tmp_path):
    assert refusals(tmp_path, CASES[1][0])[1] == (
        "11: nodes.b.inputs: artifacts between nodes are not exported: Argo's need an "
        "artifact repository and do not keep sandbox-orch's copy rules (no links, size "
        "limit, read-only)"
    )


def test_retries_from_the_defaults_are_located_there(tmp_path):
    head = "version: 1\nname: w\nfail_fast: false\ndefaults:\n  retries: {limit: 1}\nnodes:\n"
    assert refusals(tmp_path, "  a: {command: 'true'}\n", head) == [
        "5: defaults.retries: Argo's retryStrategy cannot retry on sandbox-orch's reasons "
        "(it cannot tell a timeout or an OOM kill from a failure) nor grow memory per attempt"
    ]


def test_a_budget_is_refused(tmp_path):
    head = "version: 1\nname: w\nfail_fast: false\nbudget: {usd: 1}\nnodes:\n"
    assert refusals(tmp_path, "  a: {command: 'true'}\n", head) == [
        "4: budget: a budget counts agents' spending, which only sandbox-orch's runner sees"
    ]


FAIL_FAST = "version: 1\nname: w\nnodes:\n"


def test_fail_fast_with_a_node_that_continues_on_failure_is_refused(tmp_path):
    nodes = "  a: {command: 'true', continue_on_failure: true}\n  b: {command: 'true'}\n"
    assert refusals(tmp_path, nodes, FAIL_FAST) == [
        "1: fail_fast: Argo's failFast starts no task after any failure: not even after 'a', "
        "which continues on failure; set fail_fast: false or export with --keep-going (each "
        "branch then runs to its end)"
    ]
    document = export(tmp_path, nodes, FAIL_FAST, keep_going=True)
    assert document["spec"]["templates"][0]["dag"]["failFast"] is False


def test_fail_fast_without_handlers_is_argos_fail_fast(tmp_path):
    nodes = "  a: {command: 'true'}\n  b: {needs: [a], command: 'true'}\n"
    document = export(tmp_path, nodes, FAIL_FAST)
    assert document["spec"]["templates"][0]["dag"]["failFast"] is True


def test_secrets_are_references_to_the_nodes_own_secret_named_in_an_annotation(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("DEPLOY_TOKEN", "deploy-SECRET-VALUE-42")
    document = export(tmp_path, "  a_1: {command: 'true', secrets: [DEPLOY_TOKEN]}\n")
    assert "deploy-SECRET-VALUE-42" not in json.dumps(document)
    template = document["spec"]["templates"][1]
    (reference,) = [e for e in template["container"]["env"] if "valueFrom" in e]
    secret = reference["valueFrom"]["secretKeyRef"]["name"]
    assert reference == {
        "name": "DEPLOY_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": secret, "key": "DEPLOY_TOKEN", "optional": False}},
    }
    assert secret.startswith("sandbox-orch-w-") and secret.endswith("-1-env")
    annotation = json.loads(document["metadata"]["annotations"][SECRETS_ANNOTATION])
    assert annotation == {secret: ["DEPLOY_TOKEN"]}


def test_a_task_name_is_the_nodes_name_when_argo_takes_it():
    assert task_name("build-2") == "build-2"
    for node in ("a_1", "2build", "x" * 63 + "_"[:0] + "_"):
        name = task_name(node)
        assert name.startswith("n-") and len(name) <= 128
        assert name[-8:].isalnum() and "_" not in name
    assert task_name("a_b") != task_name("a-b")


def test_an_export_token_is_a_legal_name_part():
    assert export_token("hello") == "hello"
    assert export_token("Build & Test!").startswith("build-test-")
    assert export_token("!!!").startswith("w-")
    assert len(export_token("x" * 128)) <= 29


# -- the command line ---------------------------------------------------------------------

HELLO = str(ROOT / "configs" / "examples" / "hello.yaml")
MAPPED = ["--runtime-class", "runc=", "--runtime-class", "runsc=gvisor"]
for _name, _reference in SETTINGS.images.items():
    MAPPED += ["--image", f"{_name}={_reference}"]


def test_the_command_prints_a_workflow(tmp_path):
    result = CliRunner().invoke(
        main, ["export", "--to", "argo", HELLO, "--policy", "default", "--namespace", "ns", *MAPPED]
    )
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)
    assert document["kind"] == "Workflow" and document["metadata"]["namespace"] == "ns"
    assert [t["name"] for t in document["spec"]["templates"][0]["dag"]["tasks"]] == [
        "greet",
        "python",
        "whoami",
    ]


def test_a_refused_workflow_exits_2_with_one_line_and_prints_nothing():
    workflow = str(ROOT / "configs" / "examples" / "retry-oom.yaml")
    result = CliRunner().invoke(main, ["export", "--to", "argo", workflow, *MAPPED])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{workflow}:11: nodes.hungry.retries: Argo's retryStrategy cannot retry on "
        "sandbox-orch's reasons (it cannot tell a timeout or an OOM kill from a failure) "
        "nor grow memory per attempt"
    ]


def test_an_unmapped_image_or_runtime_exits_2_and_prints_nothing():
    result = CliRunner().invoke(main, ["export", "--to", "argo", HELLO, "--runtime-class", "runc="])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"{HELLO}: image 'sandbox-orch/shell' has no pinned reference configured for this cluster\n"
    )
    result = CliRunner().invoke(main, ["export", "--to", "argo", HELLO, *MAPPED[4:]])
    assert (result.exit_code, result.stdout) == (2, "")
    assert "OCI runtime 'runc' has no RuntimeClass configured" in result.stderr


def test_a_mapping_without_a_name_is_a_usage_error():
    result = CliRunner().invoke(main, ["export", "--to", "argo", HELLO, "--image", "x"])
    assert result.exit_code == 2 and "expected NAME=VALUE" in result.stderr


def test_a_prompt_rendered_from_outputs_is_refused(tmp_path):
    agent = "    runtime: claude\n    outputs: {parse: {format: none}}\n"
    agent += "    network: {egress: []}\n    secrets: []\n"
    (tmp_path / "w.yaml").write_text(
        f"{HEAD}  a:\n{agent}    prompt: hi\n"
        f"  b:\n{agent}    needs: [a]\n    prompt: 'x ${{{{ nodes.a.outputs.y }}}}'\n"
    )
    prepared = prepare(tmp_path / "w.yaml", ROOT / "policies" / "agents.yaml")
    with pytest.raises(InputRefused) as refused:
        argo_workflow(prepared.plan, prepared.sandboxes, argo_settings())
    assert str(refused.value) == (
        f"{tmp_path / 'w.yaml'}:17: nodes.b.prompt: a prompt's ${{{{ ... }}}} is rendered by "
        "sandbox-orch's runner from other nodes' outputs, which Argo cannot see"
    )


def test_a_brokered_secret_is_refused_on_its_field(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-SECRET-for-argo")
    (tmp_path / "w.yaml").write_text(
        f"{HEAD}  a:\n    runtime: claude\n    prompt: hi\n    outputs: {{parse: {{format: none}}}}\n"
        "    network: {egress: []}\n    secrets: [ANTHROPIC_API_KEY]\n"
    )
    prepared = prepare(tmp_path / "w.yaml", ROOT / "policies" / "agents.yaml")
    with pytest.raises(InputRefused) as refused:
        argo_workflow(prepared.plan, prepared.sandboxes, argo_settings())
    assert str(refused.value) == (
        f"{tmp_path / 'w.yaml'}:10: nodes.a.secrets: egress goes through sandbox-orch's "
        "egress proxy, which an Argo Workflow does not run (a setup phase and brokered "
        "secrets need it too)"
    )
    assert "sk-ant-SECRET" not in str(refused.value)


def test_an_illegal_executor_service_account_exits_2():
    result = CliRunner().invoke(
        main,
        ["export", "--to", "argo", HELLO, *MAPPED, "--executor-service-account", "Not_Legal"],
    )
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"{HELLO}: executor service account 'Not_Legal' is not a legal name\n")


def test_the_command_lines_default_executor_account_is_the_builders():
    from sandbox_orch.cli.export import export as command
    from sandbox_orch.export.argo import DEFAULT_EXECUTOR_ACCOUNT

    (option,) = [p for p in command.params if p.name == "executor_service_account"]
    assert option.default == DEFAULT_EXECUTOR_ACCOUNT
