"""The Kubernetes manifests of every example workflow under every shipped policy: valid
for the API (kubernetes-validate, strict, 1.33 and 1.37, offline), and what the schemas
cannot see: legal labels and quantities, the restricted profile, no secret value."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest

from sandbox_orch.backend.kubernetes import restricted
from sandbox_orch.backend.kubernetes.labels import legal_label_key, legal_label_value
from sandbox_orch.backend.kubernetes.names import legal_name
from sandbox_orch.backend.kubernetes.quantities import is_quantity

from .k8s_cases import POLICIES, SECRET_VALUES, WORKFLOWS, all_cases

VERSIONS = ("1.33.0", "1.37.0")


@pytest.fixture(scope="module")
def cases() -> Iterator[tuple[dict[str, list[dict[str, Any]]], list[str]]]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SECRET_VALUES.items():
            patch.setenv(name, value)
        yield all_cases()


def _manifests(cases) -> Iterator[tuple[str, dict[str, Any]]]:
    for case, manifests in cases[0].items():
        for manifest in manifests:
            yield f"{case}: {manifest['kind']} {manifest['metadata']['name']}", manifest


def _pods(cases) -> Iterator[tuple[str, dict[str, Any]]]:
    for where, manifest in _manifests(cases):
        if manifest["kind"] == "Job":
            yield where, manifest["spec"]["template"]["spec"]


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) of every mapping entry, however deep."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key, item
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")


def test_most_pairs_are_admitted_and_every_workflow_and_policy_takes_part(cases):
    admitted, refused = cases
    assert len(admitted) + len(refused) == len(POLICIES) * len(WORKFLOWS)
    assert len(admitted) >= 14, (sorted(admitted), refused)  # not vacuous
    assert {case.split()[1] for case in admitted} == {w.stem for w in WORKFLOWS}
    assert {case.split()[0] for case in admitted} == {p.stem for p in POLICIES}
    jobs = sum(m["kind"] == "Job" for ms in admitted.values() for m in ms)
    assert jobs >= 40


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_the_api_strictly(cases, version):
    count = 0
    for where, manifest in _manifests(cases):
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{where}: {error.message}")
        count += 1
    assert count >= 50


def test_strict_validation_catches_an_unknown_field(cases):
    """The validator is strict here (a field the API would drop is an error)."""
    _, manifest = next(m for m in _manifests(cases) if m[1]["kind"] == "Job")
    broken = json.loads(json.dumps(manifest))
    broken["spec"]["template"]["spec"]["containers"][0]["privilegedMode"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_every_pod_meets_the_restricted_profile_and_ours(cases):
    for where, pod in _pods(cases):
        assert restricted.violations(pod) == [], where


def test_labels_annotations_and_selectors_are_legal(cases):
    for where, manifest in _manifests(cases):
        assert legal_name(manifest["metadata"]["name"]), where
        for path, key, value in _walk(manifest):
            if key in ("labels", "matchLabels"):
                for name, label in value.items():
                    assert legal_label_key(name), f"{where}{path}: key {name!r}"
                    assert legal_label_value(label), f"{where}{path}: {name}={label!r}"
            if key == "annotations":
                assert all(legal_label_key(name) for name in value), f"{where}{path}"
                assert all(isinstance(text, str) for text in value.values()), where
            if key == "name" and path.endswith(("containers", "volumes", "volumeMounts")):
                assert legal_name(value), f"{where}{path}: {value!r}"


def test_owner_tokens_are_annotations_never_labels(cases):
    for where, manifest in _manifests(cases):
        metadata = manifest["metadata"]
        assert metadata["annotations"]["sandbox-orch.owner"] == "builder-7:4242:1764030000"
        assert "sandbox-orch.owner" not in metadata["labels"], where


def test_quantities_are_legal(cases):
    count = 0
    for where, manifest in _manifests(cases):
        for path, key, value in _walk(manifest):
            if key in ("requests", "limits"):
                for resource, amount in value.items():
                    assert is_quantity(amount), f"{where}{path}.{resource}: {amount!r}"
                    count += 1
            if key == "sizeLimit":
                assert is_quantity(value), f"{where}{path}: {value!r}"
                count += 1
    assert count > 100


def test_nothing_privileged_no_host_paths_no_host_namespaces(cases):
    for where, manifest in _manifests(cases):
        for path, key, value in _walk(manifest):
            assert key != "hostPath", f"{where}{path}"
            if key in ("privileged", "hostNetwork", "hostPID", "hostIPC", "hostPort"):
                assert not value, f"{where}{path}.{key}"
            if key == "emptyDir":
                assert value["medium"] == "Memory" and "sizeLimit" in value, f"{where}{path}"


def test_no_secret_value_in_any_manifest_only_references(cases):
    text = json.dumps(cases[0])
    for value in SECRET_VALUES.values():
        assert value not in text
    references = [
        entry["valueFrom"]["secretKeyRef"]
        for _, pod in _pods(cases)
        for container in pod["containers"]
        for entry in container.get("env", [])  # the proxy's has none
        if "valueFrom" in entry
    ]
    assert references, "some admitted node has secrets"
    assert all(set(ref) == {"name", "key", "optional"} for ref in references)


def test_runtime_classes_follow_the_policies(cases):
    for where, pod in _pods(cases):
        policy = where.split()[0]
        if policy in ("agents", "ci", "sessions"):  # oci_runtime: runsc
            assert pod["runtimeClassName"] == "gvisor", where
        else:
            assert "runtimeClassName" not in pod, where
