"""What `single` is asked to run, as the one-node workflow it becomes: planned and
validated exactly as a workflow file would be."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agents.flags import agent_flags
from ..agents.prompts import escape
from ..errors import InputRefused, Problem
from ..loading import validate_document
from ..planning import Plan, make_plan
from ..policy import Policy
from ..runtimes import PRESETS, Runtime, interactive_argv
from ..workflow import Workflow
from ..yamlsafe import Document

NODE = "single"
WORKSPACE = "/workspace"
NO_TERMINAL = (
    "no --prompt, and stdin or stdout is not a terminal: give --prompt TEXT, "
    "or run in a terminal for an interactive session"
)


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
    # No prompt, and a terminal on stdin and stdout: the agent's own interface, attached.
    interactive: bool = False


def single_plan(request: SingleRequest) -> Plan:
    """The one-node workflow `single` runs: the same validation as a file would get."""
    node: dict[str, Any] = {"runtime": request.runtime, "workdir": WORKSPACE}
    runtime = PRESETS.get(request.runtime)
    if runtime is None:  # said first: no hint about --prompt or -- for a runtime that is not
        known = ", ".join(PRESETS)
        raise refused("RUNTIME", f"unknown runtime {request.runtime!r} (runtimes: {known})")
    if runtime.agent and request.prompt is None:
        node.update(_session_node(runtime, request))
    elif runtime.agent:
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


def _session_node(runtime: Runtime, request: SingleRequest) -> dict[str, Any]:
    """An interactive session: the CLI's own interface, with the explicit defaults a
    prompted run gets, and nothing to parse (its output is the user's screen)."""
    if not request.interactive:
        raise refused("--prompt", NO_TERMINAL)
    flags = list(agent_flags(runtime.name, None).flags)
    argv = interactive_argv(runtime, list(request.args), flags)
    return {"command": argv, "outputs": {"parse": {"format": "none"}}}


def check_session(request: SingleRequest, policy: Policy) -> None:
    """An interactive session is steered from the keyboard, and its output is a screen,
    not a stream to meter: a policy whose `agents:` rules limit settings (models,
    permission modes, tools) or spending could not hold in it, so it is refused."""
    rules = policy.agents
    if request.interactive and (rules.restricts_settings or rules.budget is not None):
        raise refused(
            "--policy",
            "the policy's agents: rules (settings, budget) cannot hold in an interactive "
            "session: give --prompt TEXT, or use a policy without an agents: section",
        )


def refused(field: str, message: str) -> InputRefused:
    return InputRefused([Problem("single", None, field, message)])
