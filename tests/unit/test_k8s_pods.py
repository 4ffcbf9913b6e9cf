"""Pure readings of a pod's state and the cluster's read-back comparison."""

from __future__ import annotations

import pytest

from sandbox_orch.backend.base import ExitStatus
from sandbox_orch.backend.kubernetes.checks import namespace_problem, pod_security_labels
from sandbox_orch.backend.kubernetes.pods import exit_status, has_output, job_pods
from sandbox_orch.backend.kubernetes.readback import differing, job_differs


def pod(state=None, phase="Running", reason=None, name="node"):
    status = {"phase": phase, "containerStatuses": [{"name": name, "state": state or {}}]}
    if reason:
        status["reason"] = reason
    return {"metadata": {"labels": {"job-name": "j"}}, "status": status}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (pod({"waiting": {}}, "Pending"), None),
        (pod({"running": {}}), None),
        (pod({"terminated": {"exitCode": 0}}, "Succeeded"), ExitStatus(0)),
        (pod({"terminated": {"exitCode": 3, "reason": "Error"}}, "Failed"), ExitStatus(3)),
        (pod({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}), ExitStatus(137, True)),
        (pod({"terminated": {"exitCode": "9"}}), ExitStatus(137)),  # not a number: killed
        (pod({"terminated": {"exitCode": True}}), ExitStatus(137)),
        (pod({}, "Failed", "DeadlineExceeded"), ExitStatus(137)),  # ended before it ran
        (pod({}, "Failed", "OOMKilled"), ExitStatus(137, True)),
        # another container's state says nothing about the node's
        (pod({"terminated": {"exitCode": 0}}, name="deliver"), None),
    ],
)
def test_exit_status_from_the_node_container(given, expected):
    assert exit_status(given) == expected


def test_output_is_readable_once_the_container_started():
    assert not has_output(pod({"waiting": {}}))
    assert has_output(pod({"running": {}}))
    assert has_output(pod({"terminated": {"exitCode": 1}}))
    assert not has_output(pod({"running": {}}, name="deliver"))


def test_job_pods_are_checked_by_their_label_not_trusted_from_the_selector():
    mine, other = pod(), {"metadata": {"labels": {"job-name": "k"}}}
    assert job_pods([mine, other, {"metadata": {}}, {}], "j") == [mine]


def test_differing_names_paths_never_values():
    asked = {"a": {"b": 1, "c": [1, {"d": "secret"}]}, "e": True}
    assert differing(asked, asked) == []
    assert differing(asked, {**asked, "extra": 1}) == []  # server defaults are fine
    assert differing(asked, {"a": {"b": 1, "c": [1, {"d": "other"}]}, "e": True}) == ["a.c[1].d"]
    assert differing(asked, {"a": {"c": [1]}, "e": 1}) == ["a.b", "a.c", "e"]  # 1 is not True
    assert differing(asked, {"a": "x"}) == ["a", "e"]


def test_job_read_back_ignores_only_suspend():
    asked = {"spec": {"suspend": True, "backoffLimit": 0}}
    assert job_differs(asked, {"spec": {"suspend": False, "backoffLimit": 0}}) == []
    assert job_differs(asked, {"spec": {"suspend": True, "backoffLimit": 6}}) == [
        "spec.backoffLimit"
    ]
    assert job_differs(asked, {}) == ["spec"]


def test_namespace_labels_and_problem():
    ns = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted",
                                  "pod-security.kubernetes.io/warn": "restricted", "x": "y"}}}  # fmt: skip
    assert pod_security_labels(ns) == {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    }
    assert namespace_problem("n", ns) is None
    assert namespace_problem("n", None) == (
        "namespace 'n' does not exist (or this context cannot read it)"
    )
    warn_only = {"metadata": {"labels": {"pod-security.kubernetes.io/warn": "restricted"}}}
    assert "(no enforce label)" in str(namespace_problem("n", warn_only))
