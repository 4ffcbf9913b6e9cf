"""`validate`'s warnings for a Claude node whose prompt is a slash command (`/name ...`)
the node will not be able to run: Claude Code finds a project's commands under its
working directory (`.claude/commands`), and a node sees only what is mounted.

Warnings, not refusals (exit 0): the command may be a built-in one, or be created by
the node's own setup. Read-only: the mounted workspace is read with agents.commands'
bounded reader, after admission granted the mount.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from ..errors import Problem
from ..planning import Plan, PlannedNode
from ..sandbox import Sandbox
from .commands import CommandSet, read_commands

IMAGE_WORKDIR = "/home/sandbox"  # the WORKDIR of every image under images/
_SLASH = re.compile(r"^\s*/([A-Za-z0-9_][A-Za-z0-9_.-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)*)(?:\s|$)")


def slash_command(prompt: str) -> str | None:
    """The command a prompt invokes (`/review 12` -> `review`), or None. A path such as
    `/workspace/x.py is broken` is not a command."""
    match = _SLASH.match(prompt)
    return match[1] if match else None


def slash_command_warnings(plan: Plan, sandboxes: dict[str, Sandbox]) -> list[Problem]:
    warnings = []
    cache: dict[str, CommandSet] = {}
    for name, node in plan.nodes.items():
        command = _invoked(node)
        if command is None:
            continue
        sandbox = sandboxes[name]
        workdir = sandbox.workdir or IMAGE_WORKDIR
        where = plan.document.problem((*node.loc, "prompt"), "")
        workspace = _host_dir(sandbox, workdir)
        if workspace is None:
            message = (
                f"warning: the prompt runs the slash command /{command}, but no workspace is "
                f"mounted at the node's working directory {workdir}, so Claude Code cannot "
                "see .claude/commands (mount it there, or set workdir)"
            )
        else:
            if workspace not in cache:
                cache[workspace] = read_commands(Path(workspace))
            commands = cache[workspace]
            if commands.find(command) is not None:
                continue
            message = _not_found(command, workspace, commands)
        warnings.append(Problem(where.file, where.line, where.field, message))
    return warnings


def _invoked(node: PlannedNode) -> str | None:
    if node.runtime.name != "claude" or not node.runtime.agent or node.request.prompt is None:
        return None
    return slash_command(node.request.prompt)


def _host_dir(sandbox: Sandbox, workdir: str) -> str | None:
    """The host directory the node's working directory is, through its mounts."""
    holding = [m for m in sandbox.mounts if _within(workdir, m.target)]
    if not holding:
        return None
    mount = max(holding, key=lambda m: len(m.target))  # the innermost mount wins
    rest = posixpath.relpath(workdir, mount.target)
    return mount.source if rest == "." else str(Path(mount.source) / rest)


def _within(path: str, target: str) -> bool:
    return path == target or path.startswith(target.rstrip("/") + "/")


def _not_found(command: str, workspace: str, commands: CommandSet) -> str:
    candidates = commands.candidates(command)
    if len(candidates) > 1:
        names = ", ".join(f"/{c.name}" for c in candidates)
        return f"warning: the slash command /{command} is ambiguous in {workspace} ({names})"
    where = f"{workspace}/.claude/commands"
    if not commands.found_dir:
        return f"warning: the slash command /{command} is not found: {where} does not exist"
    return (
        f"warning: the slash command /{command} is not found in {where} "
        "(fine if it is one of Claude Code's built-in commands)"
    )
