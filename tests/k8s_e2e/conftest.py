"""The real-cluster suite (`make k8s-e2e`, never part of `make test`): the behaviours the
engine tests check on Docker, checked through `sandbox-orch run --backend kubernetes` on
the cluster KUBECONFIG names. scripts/k8s-e2e says what it needs and runs it.

The cluster is described by the environment (see scripts/k8s-e2e):
  SANDBOX_ORCH_K8S_NAMESPACE        a namespace enforcing Pod Security "restricted"
  SANDBOX_ORCH_K8S_IMAGES           NAME=REF@sha256:... for sandbox-orch/shell, /python,
                                    /base (artifact holders) and /egress-proxy
  SANDBOX_ORCH_K8S_RUNTIME_CLASSES  OCI=CLASS pairs (default "runc="; add runsc=gvisor)
  SANDBOX_ORCH_K8S_CONTEXT          a kubeconfig context (optional)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_LABEL = "sandbox-orch.run"


@dataclass(frozen=True)
class Cluster:
    namespace: str
    images: tuple[str, ...]
    runtime_classes: tuple[str, ...]
    context: str | None

    @property
    def args(self) -> list[str]:
        args = ["--backend", "kubernetes", "--namespace", self.namespace]
        if self.context:
            args += ["--context", self.context]
        for pair in self.runtime_classes:
            args += ["--runtime-class", pair]
        for pair in self.images:
            args += ["--image", pair]
        return args

    @property
    def gvisor(self) -> bool:
        return any(pair.startswith("runsc=") for pair in self.runtime_classes)


def cluster_from(environ: dict[str, str]) -> Cluster | None:
    """The cluster the environment describes, or None when it names none."""
    namespace = environ.get("SANDBOX_ORCH_K8S_NAMESPACE", "")
    images = tuple(environ.get("SANDBOX_ORCH_K8S_IMAGES", "").split())
    if not (environ.get("KUBECONFIG") and namespace and images):
        return None
    classes = tuple(environ.get("SANDBOX_ORCH_K8S_RUNTIME_CLASSES", "runc=").split())
    return Cluster(namespace, images, classes, environ.get("SANDBOX_ORCH_K8S_CONTEXT") or None)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    found = cluster_from(dict(os.environ))
    if found is None:
        pytest.fail("no cluster described: run `make k8s-e2e`, which says what it needs")
    return found


def sandbox_orch(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """The command line, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "sandbox_orch", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SANDBOX_ORCH_HOME": str(cwd / "store")},
    )


@dataclass
class Run:
    process: subprocess.CompletedProcess
    results: dict[str, Any]

    def node(self, name: str) -> dict[str, Any]:
        return self.results["nodes"][name]


@pytest.fixture
def run_workflow(cluster: Cluster, tmp_path: Path):
    """Runs a workflow text on the cluster; returns its process and results."""

    def run(text: str, policy: str = "default", timeout: float = 600) -> Run:
        (tmp_path / "wf.yaml").write_text(text)
        results = tmp_path / "results.json"
        done = sandbox_orch(
            "run", "wf.yaml", "--policy", policy, "--ci", "--results", str(results),
            *cluster.args, cwd=tmp_path, timeout=timeout,
        )  # fmt: skip
        assert results.exists(), done.stderr
        return Run(done, json.loads(results.read_text()))

    return run


def run_objects(cluster: Cluster, run_id: str) -> list[str]:
    """What the cluster still holds of a run: its Jobs, Pods, Secrets, NetworkPolicies."""
    from kubernetes import client, config

    config.load_kube_config(context=cluster.context)
    selector = f"{RUN_LABEL}={run_id}"
    ns = cluster.namespace
    core, batch, net = client.CoreV1Api(), client.BatchV1Api(), client.NetworkingV1Api()
    listed = [
        ("Job", batch.list_namespaced_job(ns, label_selector=selector).items),
        ("Pod", core.list_namespaced_pod(ns, label_selector=selector).items),
        ("Secret", core.list_namespaced_secret(ns, label_selector=selector).items),
        (
            "NetworkPolicy",
            net.list_namespaced_network_policy(ns, label_selector=selector).items,
        ),
    ]
    return [f"{kind}/{item.metadata.name}" for kind, items in listed for item in items]


def left_after(cluster: Cluster, run_id: str, within: float = 120.0) -> list[str]:
    """The run's objects still there once deletion had `within` seconds to finish (a
    Job's Foreground deletion removes its pods first): polls the cluster, bounded."""
    import time

    deadline = time.monotonic() + within
    while (left := run_objects(cluster, run_id)) and time.monotonic() < deadline:
        time.sleep(1)
    return left
