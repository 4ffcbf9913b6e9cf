"""`sandbox-orch schema workflow|policy`: the editors' schemas accept every file the
loaders accept (shipped workflows, policies, examples, README blocks) and refuse every
refused document of the corpus they can tell is wrong; the ones they cannot are listed,
with the reason, in the document itself (`# schema accepts: WHY`), and must be accepted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

import sandbox_orch.schemas  # noqa: F401  # jsonschema then matches patterns with RE2, as in a run
from sandbox_orch.bounded.patterns import compile_pattern
from sandbox_orch.cli import main
from sandbox_orch.editorschema import tidy
from sandbox_orch.editorschema.policy import policy_schema
from sandbox_orch.editorschema.workflow import BOOL_WORDS, workflow_schema
from sandbox_orch.errors import InputRefused
from sandbox_orch.loading import load_workflow
from sandbox_orch.planning import make_plan
from sandbox_orch.policy import load_policy
from sandbox_orch.workflow import Workflow
from sandbox_orch.yamlsafe import load_file, load_text
from tests.conftest import REPO
from tests.corpus import refused

from . import test_broker_policy as broker_cases

SCHEMAS = {"workflow": workflow_schema(), "policy": policy_schema()}
VALIDATORS = {kind: jsonschema.Draft202012Validator(s) for kind, s in SCHEMAS.items()}


def schema_errors(kind: str, data) -> list[str]:
    return [error.message for error in VALIDATORS[kind].iter_errors(data)]


# --- the schemas themselves -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["workflow", "policy"])
def test_each_schema_is_a_valid_draft_2020_12_schema(kind):
    jsonschema.Draft202012Validator.check_schema(SCHEMAS[kind])
    assert SCHEMAS[kind]["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("kind", ["workflow", "policy"])
def test_every_field_is_described(kind):
    """Each property of each object, at any depth, has a description for the editor."""
    missing = []

    def walk(node, where):
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                if "description" not in prop:
                    missing.append(f"{where}.{name}")
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")

    walk(SCHEMAS[kind], kind)
    assert missing == []


def patterns_in(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return own + [p for value in node.values() for p in patterns_in(value)]
    if isinstance(node, list):
        return [p for value in node for p in patterns_in(value)]
    return []


@pytest.mark.parametrize("kind", ["workflow", "policy"])
def test_every_pattern_needs_no_lookaround(kind):
    """Editors match as ECMAScript, jsonschema here as RE2 (sandbox_orch/schemas.py) or
    Python: the patterns keep to what all of them read alike (RE2 has no lookaround)."""
    found = patterns_in(SCHEMAS[kind])
    assert len(found) >= 8
    for pattern in found:
        compile_pattern(pattern)
        assert "(?=" not in pattern and "(?!" not in pattern and "(?<" not in pattern


def test_the_text_is_stable_and_sorted():
    text = tidy.render(workflow_schema())
    assert text == tidy.render(workflow_schema())
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_examples_show_durations_sizes_egress_and_conditions():
    text = tidy.render(SCHEMAS["workflow"]) + tidy.render(SCHEMAS["policy"])
    for example in ('"30s"', '"512k"', '"api.anthropic.com:443"', '"always()"', '"64m"'):
        assert example in text


# --- everything the loaders accept ------------------------------------------------------


def shipped_workflows() -> list[Path]:
    """Every YAML workflow file in the repository outside the test corpus (configs/...)."""
    found = sorted((REPO / "configs").rglob("*.y*ml"))
    assert len(found) >= 7
    return found


def shipped_policies() -> list[Path]:
    found = sorted((REPO / "policies").rglob("*.y*ml")) + sorted(
        (REPO / "tests" / "policy").glob("*.yaml")
    )
    assert len(found) >= 90  # policies/, policies/examples/ and every review fixture
    return found


@pytest.mark.parametrize("path", shipped_workflows(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_workflow_validates(path):
    document, workflow = load_workflow(path)
    make_plan(document, workflow)  # the loader accepts it all the way
    assert schema_errors("workflow", load_file(path).data) == []


@pytest.mark.parametrize("path", shipped_policies(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_policy_and_review_fixture_validates(path):
    load_policy(path)  # *.pass.yaml and *.fail.yaml load; `policy review` flags them
    assert schema_errors("policy", load_file(path).data) == []


def readme_documents() -> list[tuple[str, object]]:
    """The YAML blocks of the README and docs/ that are whole workflow or policy files."""
    text = "".join(p.read_text() for p in [REPO / "README.md", *sorted(REPO.glob("docs/*.md"))])
    found = []
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        data = load_text(block, "README.md").data
        if isinstance(data, dict) and data.get("version") == 1 and "name" in data:
            found.append(("workflow" if "nodes" in data else "policy", data))
    return found


def test_the_documentations_whole_files_validate():
    documents = readme_documents()
    assert documents  # the README's workflow, at least
    for kind, data in documents:
        if kind == "workflow":
            Workflow.model_validate(data)  # the loader's models accept it
        assert schema_errors(kind, data) == [], data


# --- everything the loaders refuse ------------------------------------------------------

CASES = [(kind, case) for kind in ("workflow", "policy") for case in refused(kind)]


@pytest.mark.parametrize(("kind", "case"), CASES, ids=[f"{k}/{c.id}" for k, c in CASES])
def test_a_refused_document_fails_the_schema_unless_listed_with_why(kind, case):
    """The loader's refusal itself is test_refused_corpus.py's."""
    errors = schema_errors(kind, load_file(case.path).data)
    if case.schema_accepts is None:
        assert errors != [], f"the schema accepts {case.path.name}"
    else:  # the list stays honest: what it says the schema cannot tell, it does not
        assert errors == [], (case.schema_accepts, errors)


def test_the_corpus_lists_few_as_beyond_json_schema():
    listed = [case for _, case in CASES if case.schema_accepts]
    assert len(listed) < len(CASES) / 2


def test_more_than_a_thousand_nodes_fails_the_schema():
    nodes = {f"n{i}": {"command": ["x"]} for i in range(1001)}
    assert schema_errors("workflow", {"version": 1, "name": "x", "nodes": nodes}) != []


# Broker fields the loader refuses (test_broker_policy.py's cases) and what the schema
# cannot tell of them.
BROKER_NOT_EXPRESSED = {
    "https://api.example:99999": "a port's range inside a URL string",
}


def broker_documents() -> list[tuple[str, str]]:
    fields = (
        [(f"upstream: {u!r}\nheader: x-api-key\n", u) for u, _ in broker_cases.UPSTREAM_REFUSALS]
        + [(f"upstream: https://a.example\nheader: {h}\n", h) for h, _ in broker_cases.HEADER_REFUSALS]
        + [(f"upstream: https://a.example\nauthorization: {s}\n", s) for s, _ in broker_cases.SCHEME_REFUSALS]
        + [(f"upstream: https://a.example\nheader: x\npaths: {p}\n", p) for p, _ in broker_cases.PATHS_REFUSALS]
        + [(f"upstream: https://a.example\nheader: x\nmethods: {m}\n", m) for m, _ in broker_cases.METHODS_REFUSALS]
        + [(f"upstream: https://a.example\nheader: x\nbase_url_env: {n}\n", n) for n in broker_cases.ENV_NAME_REFUSALS]
    )  # fmt: skip
    return [(broker_cases.HEAD + "".join(f"      {line}\n" for line in text.splitlines()), key)
            for text, key in fields]  # fmt: skip


@pytest.mark.parametrize(("text", "key"), broker_documents(), ids=lambda v: str(v)[:40])
def test_refused_broker_fields_fail_the_schema(text, key, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(InputRefused):
        load_policy(path)
    errors = schema_errors("policy", load_file(path).data)
    if key in BROKER_NOT_EXPRESSED:
        assert errors == []
    else:
        assert errors != []


# --- the spellings the loader's parsers accept, and no fewer ------------------------------

WORKFLOW = {"version": 1, "name": "x", "nodes": {"a": {"command": ["x"]}}}


def with_node(**fields) -> dict:
    return {**WORKFLOW, "nodes": {"a": {"command": ["x"], **fields}}}


def loader_accepts(data) -> bool:
    try:
        Workflow.model_validate(data)
    except ValueError:
        return False
    return True


SPELLINGS = [
    {"timeout": value}
    for value in ("30s", "1.5h", "500ms", " 10m ", "720h", 1, 0.5, "0s", 0, "3x", "1d", "-1s", "s")
] + [
    {"resources": {"memory": value}}
    for value in ("64m", "64M", "1g", "512k", " 2G ", 1048576, 0, "1.5g", "lots", "1t", -5)
] + [
    {"resources": {"cpus": value}} for value in (1, 0.5, 0.01, 0.001, 1024, 1025, "2", True)
] + [
    {"resources": {"pids": value}} for value in (1, 256, 0, True, "256")
] + [
    {"retries": {"limit": 2, "backoff": value}} for value in (0, "0", "0s", "1s", "0m", -1)
] + [
    {"network": {"egress": [value]}}
    for value in ("api.example.com:443", "*.example.com:443", "[::1]:443", "1.2.3.4:0443",
                  "*:443", "a.example.com", "a b:443", "a/b:443", "x.*.example:443", ":443")
] + [
    {"continue_on_failure": value}
    for value in (*BOOL_WORDS, "YES", "On", "False", True, False, 0, 1, 2, "2", "", " true")
] + [
    {"workdir": value} for value in ("/work", "//tmp/./x/", "relative", "/a\x01b")
] + [
    {"outputs": {"artifacts": [{"name": value, "path": "/out"}]}}
    for value in ("dist", "report.xml", "a..b", "..", "-x", "a" * 64)
]  # fmt: skip


@pytest.mark.parametrize("fields", SPELLINGS, ids=repr)
def test_the_schema_accepts_every_spelling_the_loader_accepts(fields):
    data = with_node(**fields)
    if loader_accepts(data):
        assert schema_errors("workflow", data) == []


def test_the_spellings_include_refusals_the_schema_shares():
    """Not only permissive: most spellings the loader refuses, the schema refuses too."""
    refused_both = [f for f in SPELLINGS
                    if not loader_accepts(with_node(**f)) and schema_errors("workflow", with_node(**f))]  # fmt: skip
    refused_loader = [f for f in SPELLINGS if not loader_accepts(with_node(**f))]
    assert len(refused_loader) >= 25 and len(refused_both) == len(refused_loader)


# --- the command ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["workflow", "policy"])
def test_the_command_prints_the_schema_as_json(kind):
    result = CliRunner().invoke(main, ["schema", kind])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads(tidy.render(SCHEMAS[kind]))
    assert result.output == tidy.render(SCHEMAS[kind])


def test_an_unknown_format_exits_2():
    result = CliRunner().invoke(main, ["schema", "zen"])
    assert result.exit_code == 2
    assert "'zen' is not one of 'workflow', 'policy'" in result.output
