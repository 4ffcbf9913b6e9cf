"""`make k8s-e2e` (scripts/k8s-e2e): without a described, answering cluster it says
what it needs and fails (exit 2), running nothing; the suite it runs is never part of
`make test`, and describes the cluster from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.k8s_e2e.conftest import Cluster, cluster_from

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "k8s-e2e"
DIGEST = "@sha256:" + "ab" * 32


def script(environ: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ["PATH"], "PYTHON": sys.executable, **environ},
    )


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ({}, "KUBECONFIG is not set"),
        ({"KUBECONFIG": "/nonexistent/config"}, "KUBECONFIG names no readable file"),
        ({"KUBECONFIG": "/dev/null"}, "SANDBOX_ORCH_K8S_NAMESPACE is not set"),
        (
            {"KUBECONFIG": "/dev/null", "SANDBOX_ORCH_K8S_NAMESPACE": "ns"},
            "SANDBOX_ORCH_K8S_IMAGES is not set",
        ),
    ],
)
def test_without_a_described_cluster_it_says_what_it_needs(given, why):
    done = script(given)
    assert done.returncode == 2 and done.stdout == ""
    assert "k8s-e2e: no cluster to test on. It needs" in done.stderr
    assert "pod-security.kubernetes.io/enforce=restricted" in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"k8s-e2e: {why}")


def test_a_cluster_that_does_not_answer_is_said_and_no_test_runs(tmp_path):
    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    done = script(
        {
            "KUBECONFIG": str(config),
            "SANDBOX_ORCH_K8S_NAMESPACE": "ns",
            "SANDBOX_ORCH_K8S_IMAGES": f"sandbox-orch/shell=r/shell{DIGEST}",
            "HOME": str(tmp_path),
        }
    )
    assert done.returncode == 2
    assert "k8s-e2e: sandbox-orch doctor found the cluster unusable" in done.stderr
    assert "collected" not in done.stdout  # pytest never started


def test_the_environment_describes_the_cluster():
    assert cluster_from({}) is None
    assert cluster_from({"KUBECONFIG": "k", "SANDBOX_ORCH_K8S_NAMESPACE": "ns"}) is None
    shell, python = f"sandbox-orch/shell=r/s{DIGEST}", f"sandbox-orch/python=r/p{DIGEST}"
    found = cluster_from(
        {
            "KUBECONFIG": "k",
            "SANDBOX_ORCH_K8S_NAMESPACE": "ns",
            "SANDBOX_ORCH_K8S_IMAGES": f"{shell} {python}",
            "SANDBOX_ORCH_K8S_RUNTIME_CLASSES": "runc= runsc=gvisor",
        }
    )
    assert found == Cluster("ns", (shell, python), ("runc=", "runsc=gvisor"), None)
    assert found.gvisor
    assert found.args == [
        "--backend", "kubernetes", "--namespace", "ns",
        "--runtime-class", "runc=", "--runtime-class", "runsc=gvisor",
        "--image", shell, "--image", python,
    ]  # fmt: skip
    plain = cluster_from(
        {"KUBECONFIG": "k", "SANDBOX_ORCH_K8S_NAMESPACE": "ns", "SANDBOX_ORCH_K8S_IMAGES": shell,
         "SANDBOX_ORCH_K8S_CONTEXT": "prod"}
    )  # fmt: skip
    assert plain is not None and plain.runtime_classes == ("runc=",) and not plain.gvisor
    assert plain.args[4:6] == ["--context", "prod"]


def test_make_test_never_collects_the_cluster_suite():
    """`make test` collects `tests/` (testpaths): there the cluster suite is left out."""
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests", "--ignore=tests/unit", "--ignore=tests/integration"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "SANDBOX_ORCH_K8S_E2E"},
    )  # fmt: skip
    assert "no tests collected" in listed.stdout, listed.stdout + listed.stderr
    described = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests", "--ignore=tests/unit", "--ignore=tests/integration"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "SANDBOX_ORCH_K8S_E2E": "1"},
    )  # fmt: skip
    assert "tests/k8s_e2e/test_cluster.py::test_a_workflow_runs_in_order" in described.stdout
