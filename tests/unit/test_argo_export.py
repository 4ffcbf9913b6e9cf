"""`export --to argo` over every example workflow under every shipped policy: each
Workflow valid for Argo's published JSON schema (v4.1.2, made strict), each template's
pod (its fields plus its podSpecPatch) valid strictly as a Pod for Kubernetes 1.33 and
1.37, restricted, and the same pod the Kubernetes backend's Job would run."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from sandbox_orch.backend.kubernetes import NodeAttempt, node_job, restricted
from sandbox_orch.backend.kubernetes.labels import legal_label_key, legal_label_value
from sandbox_orch.execution import OWNER_LABEL, RUN_LABEL
from sandbox_orch.export.argo import (
    EXPORTED_LABEL,
    TEMPLATE_POD_FIELDS,
    export_token,
    task_name,
    task_names,
)

from .argo_cases import NAMESPACE, POLICIES, Cases, all_cases, argo_settings
from .k8s_cases import SECRET_VALUES, WORKFLOWS

SCHEMA = Path(__file__).parent / "data" / "argo" / "schema.json.gz"
SCHEMA_SHA256 = "3f84c5722c48a5aa815fe69119a9375fc3635114f8046da20ede55a8596529f5"
WORKFLOW_DEFINITION = "io.argoproj.workflow.v1alpha1.Workflow"
VERSIONS = ("1.33.0", "1.37.0")
EXAMPLES = WORKFLOWS[0].parent


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Iterator[Cases]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SECRET_VALUES.items():
            patch.setenv(name, value)
        yield all_cases(tmp_path_factory.mktemp("readme"))


def strict(schema: Any) -> Any:
    """Every object schema with properties and no additionalProperties allows no others."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    raw = gzip.decompress(SCHEMA.read_bytes())
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256  # the release README names
    published = json.loads(raw)
    schema = {
        "$schema": published["$schema"],
        "$ref": f"#/definitions/{WORKFLOW_DEFINITION}",
        "definitions": strict(published["definitions"]),
    }
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def node_templates(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for template in document["spec"]["templates"]:
        if "container" in template:
            yield template


def template_pod(template: dict[str, Any]) -> dict[str, Any]:
    """The pod Argo makes from a template (before adding its own containers): the
    template's pod fields, then its podSpecPatch."""
    spec = {
        "containers": [template["container"]],
        "securityContext": template["securityContext"],
        "volumes": template["volumes"],
        "automountServiceAccountToken": template["automountServiceAccountToken"],
        **json.loads(template["podSpecPatch"]),
    }
    metadata = {"name": template["name"], "namespace": NAMESPACE, **template["metadata"]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def test_every_workflow_and_policy_takes_part_and_enough_is_exported(cases):
    workflows = {w.stem for w in WORKFLOWS} | {"readme-0"}
    seen = {case.split()[1] for case in [*cases.exported, *cases.refused, *cases.not_admitted]}
    assert workflows <= seen, seen
    every = [*cases.exported, *cases.refused, *cases.not_admitted]
    assert {case.split()[0] for case in every} == {p.stem for p in POLICIES}
    # The agents' policies grant agents only, whose egress Argo cannot give (refused);
    # permissive.yaml admits nothing (its defaults exceed its limits).
    assert {case.split()[0] for case in cases.exported} >= {"ci", "default"}
    exported = {" ".join(case.split()[1:]) for case in cases.exported}
    # hello everywhere; the fail_fast examples with handlers or continue_on_failure
    # nodes only with --keep-going (as `run --keep-going`).
    assert {"hello", "hello keep-going", "fail-fast keep-going", "sequence keep-going"} <= exported
    assert "fail-fast" not in exported and "sequence" not in exported
    assert sum(len(list(node_templates(d))) for d in cases.exported.values()) >= 25


def test_the_refusals_of_the_examples(cases):
    """What each example that `plan` admits cannot be on Argo, and why (one line each)."""
    refused = {
        " ".join(case.split()[1:]): problems
        for case, problems in cases.refused.items()
        if case.startswith("default ")
    }
    assert refused["retry-oom"] == [
        f"{EXAMPLES}/retry-oom.yaml:11: nodes.hungry.retries: Argo's retryStrategy "
        "cannot retry on sandbox-orch's reasons (it cannot tell a timeout or an OOM kill "
        "from a failure) nor grow memory per attempt"
    ]
    assert refused["fail-fast"] == [
        f"{EXAMPLES}/fail-fast.yaml:3: fail_fast: Argo's failFast starts no task after any "
        "failure: not even the handler 'cleanup' (failure() or always()); set fail_fast: "
        "false or export with --keep-going (each branch then runs to its end)"
    ]
    assert any(
        p.endswith(
            "nodes.deploy.when: nodes.build.outputs: Argo cannot see a node's outputs "
            "(sandbox-orch's runner parses them from its stdout)"
        )
        for p in refused["conditional-dag keep-going"]
    )
    assert all(p.count(": ") >= 2 and "\n" not in p for ps in refused.values() for p in ps)


def test_every_workflow_is_valid_for_argos_schema_strictly(cases, validator):
    for case, document in cases.exported.items():
        errors = sorted(validator.iter_errors(document), key=lambda e: e.json_path)
        assert not errors, f"{case}: {errors[0].json_path}: {errors[0].message}"


def test_the_strict_schema_catches_an_unknown_field_and_a_wrong_type(cases, validator):
    document = next(iter(cases.exported.values()))
    broken = copy.deepcopy(document)
    next(node_templates(broken))["container"]["privilegedMode"] = True
    assert not validator.is_valid(broken)
    broken = copy.deepcopy(document)
    broken["spec"]["templates"][0]["dag"]["failFast"] = "yes"
    assert not validator.is_valid(broken)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_templates_pod_is_a_valid_pod_strictly(cases, version):
    count = 0
    for case, document in cases.exported.items():
        for template in node_templates(document):
            try:
                kubernetes_validate.validate(template_pod(template), version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{case} {template['name']}: {error.message}")
            count += 1
    assert count >= 25


def test_every_templates_pod_meets_the_restricted_profile_and_ours(cases):
    for case, document in cases.exported.items():
        for template in node_templates(document):
            assert restricted.violations(template_pod(template)["spec"]) == [], case


def test_each_template_runs_the_pod_of_the_nodes_job(cases):
    """Nothing of the Job's pod is dropped: the template's fields and its patch are it."""
    for case, document in cases.exported.items():
        prepared = cases.prepared[case]
        settings = argo_settings()
        token = export_token(prepared.plan.workflow.name)
        tasks = task_names(prepared.plan)
        templates = {t["name"]: t for t in node_templates(document)}
        for name, node in prepared.plan.nodes.items():
            template = templates[f"node-{tasks[name]}"]
            attempt = NodeAttempt(token, "argo", 1, None)
            job = node_job(node, prepared.sandboxes[name], attempt, settings.cluster)
            expected = job["spec"]["template"]["spec"]
            expected["containers"][0]["name"] = "main"
            assert template_pod(template)["spec"] == expected, f"{case} {name}"
            patched = set(json.loads(template["podSpecPatch"]))
            assert patched == set(expected) - set(TEMPLATE_POD_FIELDS)
            assert int(template["activeDeadlineSeconds"]) == math.ceil(
                prepared.sandboxes[name].timeout
            )


def test_runtime_classes_follow_the_policies_in_the_patch(cases):
    for case, document in cases.exported.items():
        (runtime,) = {s.oci_runtime for s in cases.prepared[case].sandboxes.values()}
        gvisor = runtime == "runsc"
        assert gvisor == case.startswith("ci ")  # the shipped ci policy is gVisor's
        for template in node_templates(document):
            patch = json.loads(template["podSpecPatch"])
            assert patch.get("runtimeClassName") == ("gvisor" if gvisor else None), case


def test_no_token_for_the_node_and_an_executor_account_for_argo(cases):
    for document in cases.exported.values():
        spec = document["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["executor"] == {"serviceAccountName": "sandbox-orch-executor"}
        for template in node_templates(document):
            assert template["automountServiceAccountToken"] is False
            assert template["executor"] == spec["executor"]


def test_pods_are_not_a_runs_so_gc_never_selects_them(cases):
    """`gc` removes what carries a run's label and no live owner: Argo's pods are Argo's."""
    for case, document in cases.exported.items():
        assert document["metadata"]["labels"] == {EXPORTED_LABEL: "argo"}
        for template in node_templates(document):
            labels, annotations = (
                template["metadata"]["labels"],
                template["metadata"]["annotations"],
            )
            assert RUN_LABEL not in labels and RUN_LABEL not in annotations, case
            assert OWNER_LABEL not in annotations, case
            assert labels[EXPORTED_LABEL] == "argo"
            assert all(legal_label_key(k) and legal_label_value(v) for k, v in labels.items())


def test_every_need_is_waited_for_and_no_word_in_depends_is_a_constant(cases):
    """Argo reads every word of `depends` as a task; each need must appear in it."""
    for case, document in cases.exported.items():
        plan = cases.prepared[case].plan
        tasks = task_names(plan)
        by_name = {t["name"]: t for t in document["spec"]["templates"][0]["dag"]["tasks"]}
        for name, node in plan.nodes.items():
            task = by_name[tasks[name]]
            depends = task.get("depends", "")
            assert "true" not in depends.split() and "false" not in depends.split()
            for edge in node.needs:
                assert f"{tasks[edge.source]}." in depends, f"{case}: {name}"
            if not node.needs:
                assert "depends" not in task


def test_fail_fast_maps_to_argos_fail_fast_only_where_it_is_the_same(cases):
    for case, document in cases.exported.items():
        workflow = cases.prepared[case].plan.workflow
        fail_fast = document["spec"]["templates"][0]["dag"]["failFast"]
        assert fail_fast == (workflow.fail_fast and not case.endswith("keep-going")), case


def test_no_secret_value_in_any_workflow(cases):
    text = json.dumps(cases.exported)
    for value in SECRET_VALUES.values():
        assert value not in text


# Argo's own reading of `depends` (workflow/common/ancestry.go, v4.1.2): every word is a
# task, optionally with a result; the results it accepts.
ARGO_TASK_WORD = re.compile(
    r"([a-zA-Z0-9][-a-zA-Z0-9]*?\.[A-Z][a-zA-Z]+)|([a-zA-Z0-9][-a-zA-Z0-9]*)"
)
ARGO_RESULTS = {"Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned"}
ARGO_FIELD_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")  # task and template names


def test_depends_reads_as_argo_reads_it_and_names_are_argos(cases):
    checked = 0
    for case, document in cases.exported.items():
        templates = document["spec"]["templates"]
        tasks = templates[0]["dag"]["tasks"]
        names = {t["name"] for t in tasks}
        assert {t["template"] for t in tasks} == {t["name"] for t in templates[1:]}
        for task in tasks:
            assert ARGO_FIELD_NAME.match(task["name"]) and not task["name"][0].isdigit()
            assert len(task["template"]) <= 128 and ARGO_FIELD_NAME.match(task["template"])
            for with_result, bare in ARGO_TASK_WORD.findall(task.get("depends", "")):
                assert not bare, f"{case}: {bare!r} would be read as a task"
                name, result = with_result.split(".")
                assert name in names and result in ARGO_RESULTS, (case, with_result)
                checked += 1
            rest = ARGO_TASK_WORD.sub("", task.get("depends", ""))
            assert set(rest) <= set("!&|() "), (case, rest)
    assert checked > 50


def test_our_workflow_renames_what_argo_does_not_take_and_keeps_its_timeout(cases):
    document = cases.exported["default conditions"]
    tasks = {t["name"]: t for t in document["spec"]["templates"][0]["dag"]["tasks"]}
    first, build = task_name("1st"), task_name("build_x")
    assert first.startswith("n-1st-") and build.startswith("n-build-x-")
    assert tasks["test"]["depends"] == f"{build}.Succeeded || {build}.Failed || {build}.Errored"
    assert tasks["lint"]["depends"] == f"test.Succeeded && (format.Succeeded || {build}.Errored)"
    assert tasks["never"]["when"] == "false"
    assert document["spec"]["activeDeadlineSeconds"] == 1200
    assert document["metadata"]["generateName"] == export_token("Conditions & Names") + "-"
