"""Runtimes: the presets this project ships, and custom ones a workflow declares."""

from __future__ import annotations

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


PRESETS: dict[str, Runtime] = {
    "shell": Runtime("shell", "sandbox-orch/shell"),
    "python": Runtime("python", "sandbox-orch/python"),
    "node": Runtime("node", "sandbox-orch/node"),
}

DEFAULT_RUNTIME = "shell"


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
