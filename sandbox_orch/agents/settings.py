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
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[\w.:/@-]+$")
    allowed_tools: list[ToolName] | None = None
    disallowed_tools: list[ToolName] | None = None
    permission_mode: PermissionMode | None = None
    max_turns: int | None = Field(default=None, ge=1, le=10_000, strict=True)
    system_prompt_append: str | None = Field(default=None, min_length=1, max_length=100_000)
