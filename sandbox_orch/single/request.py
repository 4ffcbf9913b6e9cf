"""What `single` is asked to run, as the one-node workflow it becomes: planned and
validated exactly as a workflow file would be."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agents.prompts import escape
from ..errors import InputRefused, Problem
from ..loading import validate_document
from ..planning import Plan, make_plan
from ..runtimes import PRESETS
from ..workflow import Workflow
from ..yamlsafe import Document

NODE = "single"
WORKSPACE = "/workspace"


@dataclass(frozen=True)
class SingleRequest:
    runtime: str
    workspace: Path
    prompt: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    egress: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()  # --exclude: patterns left out of the copy and the patch
    apply: bool = False  # --apply: the patch applied to the workspace after the run
    branch: str | None = None  # --branch: the changes committed on this new branch
    continue_from: str | None = None  # an earlier run whose agent session this continues


def single_plan(request: SingleRequest) -> Plan:
    """The one-node workflow `single` runs: the same validation as a file would get."""
    node: dict[str, Any] = {"runtime": request.runtime, "workdir": WORKSPACE}
    runtime = PRESETS.get(request.runtime)
    if runtime is None:  # said first: no hint about --prompt or -- for a runtime that is not
        known = ", ".join(PRESETS)
        raise refused("RUNTIME", f"unknown runtime {request.runtime!r} (runtimes: {known})")
    if runtime.agent:
        if request.prompt is None:
            raise refused("--prompt", f"runtime {request.runtime!r} needs --prompt TEXT")
        node["prompt"] = escape(request.prompt)  # taken as typed: `${{` is no template here
        if request.args:
            node["command"] = list(request.args)
    else:
        if request.prompt is not None:
            raise refused("--prompt", f"runtime {request.runtime!r} takes no prompt")
        if not request.args:
            raise refused("ARGS", "give the command after --, e.g. -- make test")
        node["command"] = list(request.args)
    if request.env:
        node["env"] = dict(request.env)
    if request.egress:
        node["network"] = {"egress": list(request.egress)}
    if request.secrets:
        node["secrets"] = list(request.secrets)
    data = {"version": 1, "name": f"single-{request.runtime}", "nodes": {NODE: node}}
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    document = Document(str(request.workspace / "(single)"), data, lines={}, sha256=digest)
    return make_plan(document, validate_document(document, Workflow))


def refused(field: str, message: str) -> InputRefused:
    return InputRefused([Problem("single", None, field, message)])
