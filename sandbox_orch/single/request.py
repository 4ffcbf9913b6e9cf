"""What `single` is asked to run, as the one-node workflow it becomes: planned and
validated exactly as a workflow file would be."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agents.flags import agent_flags
from ..agents.prompts import escape
from ..errors import InputRefused, Problem
from ..loading import validate_document
from ..planning import Plan, make_plan
from ..policy import POLICIES_DIR, AgentRules, Policy, load_policy, shipped_policies
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


def single_plan(request: SingleRequest, rules: AgentRules | None = None) -> Plan:
    """The one-node workflow `single` runs: the same validation as a file would get."""
    node: dict[str, Any] = {"runtime": request.runtime, "workdir": WORKSPACE}
    runtime = PRESETS.get(request.runtime)
    if runtime is None:  # said first: no hint about --prompt or -- for a runtime that is not
        known = ", ".join(PRESETS)
        raise refused("RUNTIME", f"unknown runtime {request.runtime!r} (runtimes: {known})")
    if runtime.agent and request.prompt is None:
        node.update(_session_node(runtime, request, rules))
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


def _session_node(
    runtime: Runtime, request: SingleRequest, rules: AgentRules | None
) -> dict[str, Any]:
    """An interactive session: the CLI's own interface, with the explicit defaults a
    prompted run gets (plus the policy's never-allowed tools, denied), and nothing to
    parse (its output is the user's screen)."""
    if not request.interactive:
        raise refused("--prompt", NO_TERMINAL)
    flags = list(agent_flags(runtime.name, None).flags)
    if rules is not None and runtime.name == "claude":
        flags += [f"--disallowedTools={tool}" for tool in rules.never_allow_tools]
    argv = interactive_argv(runtime, list(request.args), flags)
    return {"command": argv, "outputs": {"parse": {"format": "none"}}}


# What a person reaches from the keyboard in each CLI's own interface, however it was
# started: Claude Code's Shift+Tab cycles these three (bypassPermissions only when started
# with a flag a session never gets); Codex's /approvals offers full access too.
KEYBOARD_MODES = {
    "claude": frozenset({"default", "acceptEdits", "plan"}),
    "codex": frozenset({"default", "acceptEdits", "plan", "bypassPermissions"}),
}
_TOOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")  # a deny rule on the command line


def session_conflicts(request: SingleRequest, rules: AgentRules) -> list[str]:
    """The policy's `agents:` rules that could not hold in an interactive session, where
    a person steers the agent and its output is a screen, not a stream to meter."""
    found = []
    if rules.budget is not None:
        found.append("agents.budget: a session's spending cannot be metered")
    if rules.models is not None:
        found.append("agents.models: the model can be changed from the keyboard")
    reachable = KEYBOARD_MODES.get(request.runtime, frozenset())
    if rules.permission_modes is not None and not reachable <= set(rules.permission_modes):
        missing = ", ".join(sorted(reachable - set(rules.permission_modes)))
        found.append(f"agents.permission_modes: {request.runtime} can be switched to {missing}")
    tools = rules.never_allow_tools
    if tools and (request.runtime != "claude" or not all(map(_TOOL_NAME.match, tools))):
        found.append("agents.never_allow_tools: only claude, and only exact tool names, can "
                     "be denied for a session")  # fmt: skip
    if rules.restricts_settings and request.args:
        found.append("extra CLI arguments could override the agents: rules")
    return found


def check_session(request: SingleRequest, policy: Policy) -> Policy:
    """The policy an interactive session is admitted under. Its `agents:` rules hold only
    where the session's command line enforces them (permission modes the keyboard cannot
    leave, never-allowed tools denied); any other is refused. Admission then judges the
    rest (secrets, egress, limits) as for any node, with those rules already applied."""
    if not request.interactive:
        return policy
    if request.runtime not in policy.runtimes and (shipped := _shipped_session(request)):
        # Before admission's own refusal, which names the shipped policy granting the
        # runtime (`agents`): that one would refuse the session in turn.
        raise refused(
            "--policy",
            f"runtime {request.runtime!r} is not granted by the policy: for an interactive "
            f"session, use --policy {shipped} (shipped for this), or give --prompt TEXT",
        )
    conflicts = session_conflicts(request, policy.agents)
    if conflicts:
        instead = "--policy sessions (shipped for this)" if request.runtime == "claude" else (
            "a policy without those rules")  # fmt: skip
        raise refused(
            "--policy",
            f"an interactive session cannot hold the policy's {'; '.join(conflicts)}: "
            f"give --prompt TEXT, or use {instead}",
        )
    return dataclasses.replace(policy, agents=AgentRules())


def _shipped_session(request: SingleRequest) -> str | None:
    """The shipped policy that grants the runtime and admits its session, if one does."""
    for name in shipped_policies():
        shipped = load_policy(POLICIES_DIR / f"{name}.yaml")
        if request.runtime in shipped.runtimes and not session_conflicts(request, shipped.agents):
            return name
    return None


def refused(field: str, message: str) -> InputRefused:
    return InputRefused([Problem("single", None, field, message)])
