"""A node's `agent:` block: runtime-neutral settings for the coding agent it runs.

Only the model lives here; mapping each field to a CLI's own flags (and refusing one a
runtime has no such setting for) is in agents/flags.py.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

PermissionMode = Literal["default", "acceptEdits", "plan", "bypassPermissions"]
PERMISSION_MODES: tuple[str, ...] = get_args(PermissionMode)
ToolName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class AgentSettings(BaseModel):
    """Runtime-neutral settings of the agent a node runs (the policy's `agents:` limits them)."""

    # The string under a field is its description in `sandbox-orch schema workflow`.
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[\w.:/@-]+$",
        examples=["claude-sonnet-4-5", "gpt-5"],
    )
    """The model the agent uses; the policy's `agents.models` may restrict it."""
    allowed_tools: list[ToolName] | None = Field(default=None, examples=[["Read", "Bash(git *)"]])
    """Tools the agent may use without asking; never one the policy's
    `agents.never_allow_tools` names."""
    disallowed_tools: list[ToolName] | None = Field(default=None, examples=[["WebFetch"]])
    """Tools the agent may not use."""
    permission_mode: PermissionMode | None = None
    """How the agent asks before acting; the policy's `agents.permission_modes` may restrict it."""
    max_turns: int | None = Field(default=None, ge=1, le=10_000, strict=True)
    """At most this many turns (1 to 10000)."""
    system_prompt_append: str | None = Field(default=None, min_length=1, max_length=100_000)
    """Text added to the agent's system prompt."""
