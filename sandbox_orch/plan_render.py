"""`sandbox-orch plan` renderings: the order (levels), conditions and effective sandboxes.
Pure: a plan and its admitted sandboxes in, text out."""

from __future__ import annotations

import json
from typing import Any

from .planning import Plan
from .sandbox import Sandbox
from .text import one_line


def plan_document(plan: Plan, sandboxes: dict[str, Sandbox]) -> dict[str, Any]:
    return {
        "workflow": plan.workflow.name,
        "fail_fast": plan.workflow.fail_fast,
        "levels": plan.levels,
        "edges": [
            {"from": e.source, "to": e.target, "allow_failure": e.allow_failure} for e in plan.edges
        ],
        "nodes": {
            name: {
                "runtime": node.runtime.name,
                "argv": list(node.argv),
                "needs": [e.source for e in node.needs],
                "when": node.when,
                "continue_on_failure": node.continue_on_failure,
                "retries": node.retries.model_dump() if node.retries else None,
                "start_delay_s": node.request.start_delay,
                "parse": node.parse.format,
                "sandbox": sandboxes[name].describe(),
            }
            for name, node in plan.nodes.items()
        },
    }


def render_json(plan: Plan, sandboxes: dict[str, Sandbox]) -> str:
    return json.dumps(plan_document(plan, sandboxes), indent=2)


def render_text(plan: Plan, sandboxes: dict[str, Sandbox]) -> str:
    lines = [f"workflow {plan.workflow.name} (fail_fast: {str(plan.workflow.fail_fast).lower()})"]
    for depth, level in enumerate(plan.levels):
        lines.append(f"level {depth}:")
        for name in level:
            node, box = plan.nodes[name], sandboxes[name].describe()
            limits = box["limits"]
            needs = ", ".join(
                e.source + (" (may fail)" if e.allow_failure else "") for e in node.needs
            )
            lines.append(f"  {name}" + (f"  needs: {needs}" if needs else ""))
            if node.when:
                lines.append(f"    when: {node.when}")
            if node.prompt is not None:  # the template, never a value
                lines.append(f"    prompt: {one_line(_shortened(node.prompt.source))}")
            if node.request.start_delay:
                lines.append(f"    start_delay: {node.request.start_delay:g}s once due")
            lines.append(
                f"    sandbox: {box['image']} as {box['user']} via {box['oci_runtime']},"
                f" network {box['network']}, read-only root, caps dropped"
            )
            lines.append(
                f"    limits: cpus {limits['cpus']:g}, memory {limits['memory']},"
                f" pids {limits['pids']}, timeout {limits['timeout_s']:g}s"
            )
            if delivery := box["secret_delivery"]:  # names and how, never a value
                said = ", ".join(f"{name} ({how})" for name, how in delivery.items())
                lines.append(f"    secrets: {said}")
    return "\n".join(lines)


def render_mermaid(plan: Plan, sandboxes: dict[str, Sandbox]) -> str:
    lines = ["flowchart TD"]
    ids = {name: f"n{i}" for i, name in enumerate(plan.nodes)}
    for name, node in plan.nodes.items():
        label = f"{name}<br/>{node.runtime.name}"
        if node.when:
            label += f"<br/>when: {_mermaid_escape(node.when)}"
        lines.append(f'  {ids[name]}["{label}"]')
    for edge in plan.edges:
        arrow = "-.->|may fail|" if edge.allow_failure else "-->"
        lines.append(f"  {ids[edge.source]} {arrow} {ids[edge.target]}")
    return "\n".join(lines)


def render_dot(plan: Plan, sandboxes: dict[str, Sandbox]) -> str:
    lines = [f"digraph {json.dumps(plan.workflow.name)} {{", "  rankdir=LR;", "  node [shape=box];"]
    for name, node in plan.nodes.items():
        parts = [name, node.runtime.name] + ([f"when: {node.when}"] if node.when else [])
        lines.append(f"  {json.dumps(name)} [label={_dot_label(parts)}];")
    for edge in plan.edges:
        style = ' [style=dashed, label="may fail"]' if edge.allow_failure else ""
        lines.append(f"  {json.dumps(edge.source)} -> {json.dumps(edge.target)}{style};")
    lines.append("}")
    return "\n".join(lines)


RENDERERS = {"text": render_text, "json": render_json, "mermaid": render_mermaid, "dot": render_dot}


def _shortened(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mermaid_escape(text: str) -> str:
    for char, entity in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, entity)
    return text


def _dot_label(parts: list[str]) -> str:
    """A quoted DOT string, one line per part."""
    escaped = [part.replace("\\", "\\\\").replace('"', '\\"') for part in parts]
    return '"' + "\\n".join(escaped) + '"'
