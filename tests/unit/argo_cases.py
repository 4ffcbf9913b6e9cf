"""Every example workflow (configs/examples and the README's) under every shipped policy
(policies/ and policies/examples/), as `plan` admits them, exported to Argo with and
without --keep-going: the Workflows, and the refusals (shared by the export tests)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox_orch.backend.kubernetes import ClusterSettings
from sandbox_orch.errors import InputRefused
from sandbox_orch.export.argo import ArgoSettings, argo_workflow
from sandbox_orch.preparing import Prepared, prepare

from .k8s_cases import ROOT, SETTINGS, WORKFLOWS

POLICIES = sorted((ROOT / "policies").glob("*.yaml")) + sorted(
    (ROOT / "policies" / "examples").glob("*.yaml")
)
NAMESPACE = "sandbox-orch-test"
# Ours: what the examples do not show (conditions that translate, names Argo renames).
OURS = sorted((Path(__file__).parent / "data" / "argo").glob("*.yaml"))


def argo_settings(keep_going: bool = False, namespace: str = NAMESPACE) -> ArgoSettings:
    cluster = ClusterSettings(
        runtime_classes=SETTINGS.runtime_classes, namespace=namespace, images=SETTINGS.images
    )
    return ArgoSettings(cluster, keep_going=keep_going)


def readme_workflows(directory: Path) -> list[Path]:
    """The README's whole workflow files, written into `directory`."""
    text = (ROOT / "README.md").read_text()
    found = []
    for index, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
        if block.startswith("version: 1") and "\nnodes:" in block:
            path = directory / f"readme-{index}.yaml"
            path.write_text(block)
            found.append(path)
    return found


@dataclass
class Cases:
    exported: dict[str, dict[str, Any]] = field(default_factory=dict)  # "policy workflow [kg]"
    prepared: dict[str, Prepared] = field(default_factory=dict)
    refused: dict[str, list[str]] = field(default_factory=dict)  # export refusals, by case
    not_admitted: list[str] = field(default_factory=list)  # `plan` refuses the pair


def all_cases(directory: Path) -> Cases:
    """The caller sets k8s_cases.SECRET_VALUES in the environment first."""
    cases = Cases()
    for policy in POLICIES:
        for workflow in [*WORKFLOWS, *readme_workflows(directory), *OURS]:
            pair = f"{policy.stem} {workflow.stem}"
            try:
                prepared = prepare(workflow, policy)
            except InputRefused:
                cases.not_admitted.append(pair)
                continue
            for keep_going in (False, True):
                case = pair + (" keep-going" if keep_going else "")
                try:
                    document = argo_workflow(
                        prepared.plan, prepared.sandboxes, argo_settings(keep_going)
                    )
                except InputRefused as refused:
                    cases.refused[case] = [str(p) for p in refused.problems]
                    continue
                cases.exported[case] = document
                cases.prepared[case] = prepared
    return cases
