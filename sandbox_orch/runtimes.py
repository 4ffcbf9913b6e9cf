"""Runtimes: the presets this project ships, and custom ones a workflow declares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .workflow import ParseSpec, Workflow


@dataclass(frozen=True)
class Runtime:
    name: str
    image: str
    entrypoint: tuple[str, ...] = ()
    parse: ParseSpec = field(default_factory=ParseSpec)
    agent: bool = False  # runs a coding agent: takes `prompt`
    preset: bool = True
    # What an agent needs when a node asks nothing: its API key and its API host.
    secrets: tuple[str, ...] = ()
    egress: tuple[str, ...] = ()
    base_url_env: str | None = None  # the variable that points the CLI at a gateway
    base_url_path: str = ""  # what the CLI expects after the host in it (Codex: /v1)
    # Secrets any one of which logs the CLI in: asked nothing, a node gets the first the
    # policy grants it and can read (admission), else `secrets` (and its refusal).
    logins: tuple[str, ...] = ()


PRESETS: dict[str, Runtime] = {
    "shell": Runtime("shell", "sandbox-orch/shell"),
    "python": Runtime("python", "sandbox-orch/python"),
    "node": Runtime("node", "sandbox-orch/node"),
    "claude": Runtime(
        "claude",
        "sandbox-orch/claude",
        parse=ParseSpec(format="claude"),
        agent=True,
        secrets=("ANTHROPIC_API_KEY",),
        egress=("api.anthropic.com:443",),
        base_url_env="ANTHROPIC_BASE_URL",
        # An API key, or a Claude subscription's token (`claude setup-token`).
        logins=("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"),
    ),
    "codex": Runtime(
        "codex",
        "sandbox-orch/codex",
        parse=ParseSpec(format="codex"),
        agent=True,
        secrets=("OPENAI_API_KEY",),
        egress=("api.openai.com:443",),
        base_url_env="OPENAI_BASE_URL",
        base_url_path="/v1",  # its provider's base_url; it appends /responses
    ),
}

DEFAULT_RUNTIME = "shell"


def is_agent(name: str) -> bool:
    """Is `name` a preset that runs a coding agent (claude, codex)?"""
    preset = PRESETS.get(name)
    return preset is not None and preset.agent


def runtimes_of(workflow: Workflow) -> dict[str, Runtime]:
    """Presets plus the workflow's custom runtimes (a custom one may not shadow a preset)."""
    table = dict(PRESETS)
    for name, custom in workflow.runtimes.items():
        if name in PRESETS:
            continue  # refused by planning with its line; never let it replace a preset
        table[name] = Runtime(
            name=name,
            image=custom.image,
            entrypoint=tuple(custom.entrypoint or ()),
            parse=custom.parse or ParseSpec(),
            preset=False,
        )
    return table


# MCP servers only from flags: a workspace is untrusted input, and its .mcp.json would
# start servers. (Its .claude/settings*.json, which --setting-sources would leave out only
# with the project's slash commands, are kept out of `single`'s copy instead.)
CLAUDE_OWN_SETTINGS = ("--strict-mcp-config",)


def agent_argv(runtime: Runtime, prompt: str, extra: list[str], flags: Sequence[str]) -> list[str]:
    """The real CLI, headless, with machine-readable output (CONTRACT 3).

    `flags` are the node's `agent:` settings in the CLI's own terms (agents/flags.py),
    always with an explicit permission mode: for Claude by default acceptEdits (it may
    edit files but runs no shell tools unless allowed), for Codex a read-only sandbox;
    the container is the boundary either way. The codex wrapper writes Codex's provider
    configuration from OPENAI_BASE_URL inside the sandbox, then runs codex.

    The prompt comes last, after `--`: a prompt is text, whoever wrote it (an earlier
    agent's answer, handed on), and one that begins with `-` must never be read as an
    option (`--dangerously-skip-permissions ...` would be one).
    """
    if runtime.name == "claude":
        # Partial messages: each API response's usage as it completes (message_delta),
        # not only at the end, so live usage and budgets see output tokens in time.
        head = ["claude", "-p", "--output-format", "stream-json", "--verbose",
                "--include-partial-messages", *CLAUDE_OWN_SETTINGS]  # fmt: skip
        return [*head, *flags, *extra, "--", prompt]
    codex = ["sandbox-orch-codex", "exec", "--json", "--skip-git-repo-check"]
    return [*codex, *flags, *extra, "--", prompt]


def interactive_argv(runtime: Runtime, extra: list[str], flags: Sequence[str]) -> list[str]:
    """The real CLI's own interactive interface (no -p, no exec), for a session in a
    terminal. Each goes through its image's wrapper, which seeds the CLI's first-run
    settings in the sandbox's home (onboarding done, /workspace trusted, the key in the
    environment approved) so the session opens straight at the agent's prompt. `flags`
    are the same explicit defaults a prompted run gets."""
    if runtime.name == "claude":  # settings and MCP servers as for a prompted run
        return ["sandbox-orch-claude", *CLAUDE_OWN_SETTINGS, *flags, *extra]
    return ["sandbox-orch-codex", "--sandbox-orch-session", *flags, *extra]


def argv_for(runtime: Runtime, command: str | list[str] | None) -> list[str]:
    """A list command is exec'd as is (after the entrypoint); a string goes to /bin/sh -c."""
    if isinstance(command, str):
        return (
            [*runtime.entrypoint, "/bin/sh", "-c", command]
            if runtime.entrypoint
            else [
                "/bin/sh",
                "-c",
                command,
            ]
        )
    return [*runtime.entrypoint, *(command or [])]
