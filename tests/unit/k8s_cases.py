"""Every example workflow under every shipped policy, as `plan` admits them, and the
manifests built from each (shared by the manifest tests and the checkov test)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sandbox_orch.backend.kubernetes import ClusterSettings, NodeAttempt, run_manifests
from sandbox_orch.errors import InputRefused
from sandbox_orch.preparing import prepare

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "configs" / "examples").glob("*.yaml"))
# The shipped policies (policies/examples/permissive.yaml shows what the linter refuses).
POLICIES = sorted((ROOT / "policies").glob("*.yaml"))
# Values no manifest may contain (the secrets the policies read from the environment).
SECRET_VALUES = {
    "ANTHROPIC_API_KEY": "sk-ant-k8s-test-SECRET-1f2e3d",
    "OPENAI_API_KEY": "sk-openai-k8s-test-SECRET-4c5b6a",
    "CLAUDE_CODE_OAUTH_TOKEN": "sk-oauth-k8s-test-SECRET-7d8e9f",
    "DEPLOY_TOKEN": "deploy-k8s-test-SECRET-0a1b2c",
}
IMAGES = ("base", "shell", "python", "node", "claude", "codex", "egress-proxy")  # base: holders
SETTINGS = ClusterSettings(
    namespace="sandbox-orch-test",
    runtime_classes={"runc": None, "runsc": "gvisor"},
    images={
        f"sandbox-orch/{name}": f"registry.example/sandbox-orch/{name}@sha256:"
        + hashlib.sha256(name.encode()).hexdigest()
        for name in IMAGES
    },
)
ATTEMPT = NodeAttempt("20261125t003400-1a2b3c", "builder-7:4242:1764030000", 1, "192.0.2.10:3128")


def all_cases() -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """(manifests by "policy workflow" for the admitted pairs, the refused pairs); the
    caller sets SECRET_VALUES in the environment first."""
    admitted: dict[str, list[dict[str, Any]]] = {}
    refused: list[str] = []
    for policy in POLICIES:
        for workflow in WORKFLOWS:
            case = f"{policy.stem} {workflow.stem}"
            try:
                prepared = prepare(workflow, policy)
            except InputRefused:
                refused.append(case)
                continue
            admitted[case] = run_manifests(prepared.plan, prepared.sandboxes, ATTEMPT, SETTINGS)
    return admitted, refused
