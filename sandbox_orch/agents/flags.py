"""A node's `agent:` block mapped to each agent CLI's own flags. Pure.

Each field maps to a flag the real CLI has (checked against its `--help`: Claude Code
2.1, Codex 0.169); a field a CLI has no equivalent for is refused, never dropped, so a
workflow never believes a limit holds that the agent never heard of.

Claude Code: --model, --allowedTools, --disallowedTools, --permission-mode, --max-turns
(accepted, though not in --help), --append-system-prompt. The tool options are variadic
(they swallow the words after them), so each tool goes as its own `--allowedTools=NAME`;
and Claude splits a tool list on commas and on spaces outside parentheses, so a tool
entry that would split into two (`"Read Bash"`) is refused: otherwise the policy would
judge one tool while the CLI allows two.

Codex (`codex exec`): --model; permission modes as its sandbox modes (`plan` is
`--sandbox read-only`, `acceptEdits` is `--sandbox workspace-write`, `bypassPermissions`
is `--dangerously-bypass-approvals-and-sandbox`); system_prompt_append as the
`developer_instructions` config override (`-c`). It has no per-tool allow or deny lists,
no turn limit, and no mode that asks before each action (exec has nobody to ask).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .settings import AgentSettings

# What a node gets when its `agent:` block names no permission mode: made explicit on
# the command line, so the agent's behaviour never rests on a CLI's changing default.
DEFAULT_PERMISSION_MODE = {"claude": "acceptEdits", "codex": "plan"}

_CODEX_SANDBOX = {
    "plan": ["--sandbox", "read-only"],
    "acceptEdits": ["--sandbox", "workspace-write"],
    "bypassPermissions": ["--dangerously-bypass-approvals-and-sandbox"],
}

# One Claude permission rule: a tool name, optionally with one parenthesised specifier
# (`Bash(git diff *)`, `mcp__server__tool`). No commas anywhere and no white space outside
# the parentheses: those are where Claude splits a tool list.
_CLAUDE_TOOL = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(\([^(),]*\))?$")

# Environment variables through which a node would choose a model or load settings of
# its own (Claude's config directory, Codex's home with its config.toml): refused where
# the policy restricts agent settings, as raw CLI arguments are.
SETTING_ENV = {
    "claude": (
        "ANTHROPIC_MODEL",
        "ANTHROPIC_SMALL_FAST_MODEL",
        "ANTHROPIC_DEFAULT_OPUS_MODEL",
        "ANTHROPIC_DEFAULT_SONNET_MODEL",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL",
        "CLAUDE_CODE_SUBAGENT_MODEL",
        "CLAUDE_CONFIG_DIR",
    ),
    "codex": ("CODEX_HOME",),
}

# The raw CLI arguments that set what each field sets: a node that sets the field in its
# `agent:` block may not also pass one of these in `command` (which would win is the
# CLI's business, and the policy judges only the block).
_CLAUDE_SPELLINGS = {
    "model": ("--model",),
    "allowed_tools": ("--allowedTools", "--allowed-tools"),
    "disallowed_tools": ("--disallowedTools", "--disallowed-tools"),
    "permission_mode": (
        "--permission-mode",
        "--dangerously-skip-permissions",
        "--allow-dangerously-skip-permissions",
    ),
    "max_turns": ("--max-turns",),
    "system_prompt_append": ("--append-system-prompt", "--append-system-prompt-file"),
}
_CODEX_SPELLINGS = {
    "model": ("-m", "--model"),
    "permission_mode": (
        "-s",
        "--sandbox",
        "--dangerously-bypass-approvals-and-sandbox",
        "--approve-for-me",
    ),
}
# Codex's `-c key=value` overrides that set the same as a field.
_CODEX_CONFIG_KEYS = {
    "model": ("model",),
    "permission_mode": ("sandbox_mode", "approval_policy"),
    "system_prompt_append": ("developer_instructions",),
}


@dataclass(frozen=True)
class Refusal:
    """A setting that cannot be honoured: where (relative to the node) and why."""

    loc: tuple[str | int, ...]
    message: str


@dataclass(frozen=True)
class Mapped:
    flags: tuple[str, ...]
    refusals: tuple[Refusal, ...]


def agent_flags(runtime: str, settings: AgentSettings | None) -> Mapped:
    """The CLI flags for `settings` on `runtime` ("claude" or "codex"), or the refusals."""
    settings = settings or AgentSettings()
    if runtime == "claude":
        refusals = [*_text_refusals(settings), *_claude_refusals(settings)]
        return Mapped(() if refusals else tuple(_claude_flags(settings)), tuple(refusals))
    refusals = [*_text_refusals(settings), *_codex_refusals(settings)]
    return Mapped(() if refusals else tuple(_codex_flags(settings)), tuple(refusals))


def _text_refusals(settings: AgentSettings) -> Iterator[Refusal]:
    """A command-line argument holds no NUL: refused now, not when the container starts.
    (Text that is not valid Unicode never gets this far: the model refuses it.)"""
    text = settings.system_prompt_append
    if text is not None and "\x00" in text:
        yield Refusal(("agent", "system_prompt_append"), "cannot contain NUL")


def permission_mode(runtime: str, settings: AgentSettings | None) -> str:
    """The permission mode a node of `runtime` runs with: its own, else the default."""
    if settings is not None and settings.permission_mode is not None:
        return settings.permission_mode
    return DEFAULT_PERMISSION_MODE[runtime]


def conflicts(runtime: str, settings: AgentSettings | None, extra: Sequence[str]) -> list[Refusal]:
    """Each raw CLI argument in `command` that sets what the `agent:` block already sets."""
    if settings is None:
        return []
    chosen = settings.model_fields_set
    found = []
    for index, field, arg in _setting_args(runtime, extra):
        if field in chosen:
            message = (
                f"{arg!r} sets what agent.{field} sets; keep one (the `agent:` block is "
                "what the policy checks)"
            )
            found.append(Refusal(("command", index), message))
    return found


def _setting_args(runtime: str, extra: Sequence[str]) -> Iterator[tuple[int, str, str]]:
    """(index, field, argument) for each raw argument that sets one of the fields."""
    spellings = _CLAUDE_SPELLINGS if runtime == "claude" else _CODEX_SPELLINGS
    for index, arg in enumerate(extra):
        for field, names in spellings.items():
            if any(_spells(arg, name) for name in names):
                yield index, field, arg
        override = _codex_override(extra, index) if runtime == "codex" else None
        if override is not None:
            key = override.partition("=")[0].strip()
            for field, keys in _CODEX_CONFIG_KEYS.items():
                if key in keys:
                    yield index, field, arg


def _codex_override(extra: Sequence[str], index: int) -> str | None:
    """The `key=value` of a Codex config override at `index`: `-c K=V`, `--config K=V`,
    `--config=K=V` or `-cK=V`; else None."""
    arg = extra[index]
    if index > 0 and extra[index - 1] in ("-c", "--config"):
        return arg
    if arg.startswith("--config="):
        return arg.removeprefix("--config=")
    if arg.startswith("-c"):
        return arg[2:]  # "" for a bare -c: no key, and its value is the next argument
    return None


def _spells(arg: str, name: str) -> bool:
    """Whether `arg` is option `name`: alone, as `--name=value`, or (a short option) with
    its value attached (`-mgpt-5`)."""
    if arg == name or arg.startswith(name + "="):
        return True
    return len(name) == 2 and arg.startswith(name)


def _claude_refusals(settings: AgentSettings) -> Iterator[Refusal]:
    for field in ("allowed_tools", "disallowed_tools"):
        for index, tool in enumerate(getattr(settings, field) or ()):
            if not _CLAUDE_TOOL.match(tool):
                yield Refusal(
                    ("agent", field, index),
                    f"{tool!r} is not one Claude Code tool rule: use a tool name, optionally "
                    "with one (specifier), with no commas and no spaces outside the parentheses",
                )


def _claude_flags(settings: AgentSettings) -> Iterator[str]:
    if settings.model is not None:
        yield f"--model={settings.model}"  # the `=` form: never read as another option
    for tool in settings.allowed_tools or ():
        yield f"--allowedTools={tool}"
    for tool in settings.disallowed_tools or ():
        yield f"--disallowedTools={tool}"
    yield from ("--permission-mode", permission_mode("claude", settings))
    if settings.max_turns is not None:
        yield from ("--max-turns", str(settings.max_turns))
    if settings.system_prompt_append is not None:
        # The `=` form: a text that starts with '-' is never read as an option.
        yield f"--append-system-prompt={settings.system_prompt_append}"


def _codex_refusals(settings: AgentSettings) -> Iterator[Refusal]:
    lacks = {
        "allowed_tools": "per-tool allow list",
        "disallowed_tools": "per-tool deny list",
        "max_turns": "turn limit",
    }
    for field, what in lacks.items():
        if getattr(settings, field):  # an empty tool list asks nothing: nothing to refuse
            yield Refusal(("agent", field), f"runtime 'codex' has no {what}; remove {field}")
    if settings.permission_mode == "default":
        yield Refusal(
            ("agent", "permission_mode"),
            "runtime 'codex' has no mode that asks before each action (codex exec has "
            "nobody to ask); use plan (read-only), acceptEdits (workspace-write) or "
            "bypassPermissions",
        )


def _codex_flags(settings: AgentSettings) -> Iterator[str]:
    if settings.model is not None:
        yield f"--model={settings.model}"
    yield from _CODEX_SANDBOX[permission_mode("codex", settings)]
    if settings.system_prompt_append is not None:
        yield from ("-c", f"developer_instructions={toml_string(settings.system_prompt_append)}")


def toml_string(text: str) -> str:
    """`text` as a TOML basic string. Codex parses a `-c` value as TOML and, if that
    fails, takes the raw text: so the value must always be valid TOML, whatever it holds
    (quotes, backslashes, newlines, control characters)."""
    out = []
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
