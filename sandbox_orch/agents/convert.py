"""A workflow (plain data, as an importer made it) written out as YAML that reads back
to the same data with this project's strict reader (yamlsafe), comments included.

The values come from untrusted configs, so nothing they hold may change the YAML's
structure: every string that is not plainly a word is double-quoted (PyYAML's own
choice follows YAML 1.1, under which `0o17` is a string but our YAML 1.2 reader would
take it as a number), and a comment is one line with its control characters escaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputRefused, Problem
from ..text import one_line

# Plain only when no YAML 1.1 or 1.2 rule could read it as anything but this string.
_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "y", "n", "null"}


class _Dumper(yaml.SafeDumper):
    pass


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    plain = _PLAIN.match(value) and value.lower() not in _RESERVED
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=None if plain else '"')


_Dumper.add_representer(str, _string)


def _dump(data: Any) -> list[str]:
    text = yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10**9, indent=2
    )
    return text.splitlines()


def comment(text: str) -> str:
    return f"# {one_line(text)}" if text else "#"


def render_workflow(
    workflow: Mapping[str, Any],
    header: list[str] | None = None,
    node_comments: Mapping[str, str] | None = None,
) -> str:
    """`workflow` as YAML: `header` lines as comments on top, and each node's comment
    (a zen description) on the line above it."""
    lines = [comment(line) for line in header or []]
    lines += _dump({k: v for k, v in workflow.items() if k != "nodes"})
    lines.append("nodes:")
    for name, node in workflow["nodes"].items():
        if node_comments and node_comments.get(name):
            lines.append("  " + comment(node_comments[name]))
        lines += ["  " + line for line in _dump({name: node})]
    return "\n".join(lines) + "\n"


def zen_yaml(path: Path, environ: Mapping[str, str]) -> str:
    """`sandbox-orch convert zen`: the zen config at `path` as workflow YAML, checked as
    `validate` checks a workflow (all but the policy, which `run` applies to it)."""
    from ..loading import import_zen_file, validate_document
    from ..planning import make_plan
    from ..workflow import Workflow
    from ..yamlsafe import load_file
    from .zen import is_zen

    source = load_file(path)
    if not is_zen(source.data):
        raise InputRefused([Problem(str(path), None, "", "not a zen config (no `instances`)")])
    imported = import_zen_file(path, source, environ)
    make_plan(imported.document, validate_document(imported.document, Workflow))
    header = [
        f"Converted by `sandbox-orch convert zen` from {path.name} (sha256 {source.sha256}).",
        "Mount sources are relative to this file: keep it next to the zen config.",
        "Each zen instance is a claude node; they run in parallel, under your policy.",
    ]
    if "defaults" in imported.workflow:
        header.append("defaults.env.ANTHROPIC_BASE_URL is from your environment, as zen's is.")
    return render_workflow(imported.workflow, header, imported.descriptions)
