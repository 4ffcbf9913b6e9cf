"""`sandbox-orch setup`: the engine-up script that `make engine` runs, from any installation.

The script (scripts/engine-up in a clone, package data in a wheel: see shipped.py) is the
one copy of the logic that installs and starts the Docker engine and registers gVisor; it
runs before any virtual environment exists, so it stays a shell script. This module runs
it, turns its outcome into a contract exit code, and checks what the engine then offers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ExitCode
from .shipped import ENGINE_UP

CALLER = "sandbox-orch setup"  # the script's log prefix when run from here
# What scripts/engine-up registers (keep in step with it): runsc with these arguments.
RUNSC_ARGS = ("--network=none", "--host-uds=open", "--oci-seccomp")
RUNSC_ENTRY = {"runsc": {"path": "/usr/local/bin/runsc", "runtimeArgs": list(RUNSC_ARGS)}}
NO_BASH = (
    f"{CALLER}: bash is needed to set up the engine and was not found. Install bash, or "
    "install and start Docker Engine 20.10+ yourself (https://docs.docker.com/engine/install/)"
)


@dataclass(frozen=True)
class Outcome:
    """What setup ends with: its exit code and the line it prints (may be empty), on
    stderr when it is a problem (even one that does not fail setup)."""

    code: ExitCode
    message: str = ""
    problem: bool = False


def engine_info() -> dict[str, Any] | None:
    """The `info` of the engine in the environment (DOCKER_HOST or the default socket), or
    None when none answers."""
    import docker
    import requests.exceptions

    from .backend.docker import connect

    try:
        client = connect(timeout=10)
        try:
            return client.info()
        finally:
            client.close()
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return None


def needs_script(engine_answers: bool, docker_command: bool) -> bool:
    """The script looks for an engine with the docker command: without one it would not
    see the engine that answers here (a DOCKER_HOST socket) and would install another."""
    return docker_command or not engine_answers


def engine_up_command(script: Path = ENGINE_UP, bash: str | None = None) -> list[str] | None:
    """The command that runs the script, or None without bash. Run through bash, not by
    its own mode: an installer may have dropped the executable bit."""
    bash = bash or shutil.which("bash")
    return [bash, str(script)] if bash else None


def script_outcome(returncode: int) -> Outcome:
    """The script's exit status as a contract code. Its own failures (exit 3) explain
    themselves; anything else is a step that failed under `set -e` (apt-get, dpkg...)."""
    if returncode == 0:
        return Outcome(ExitCode.OK)
    if returncode == int(ExitCode.INFRASTRUCTURE):
        return Outcome(ExitCode.INFRASTRUCTURE)
    message = f"{CALLER}: setting up the engine failed (exit {returncode}; see above)"
    return Outcome(ExitCode.INFRASTRUCTURE, message)


def gvisor_outcome(runtimes: dict[str, list[str]], *, require: bool) -> Outcome:
    """Whether the engine has gVisor as sandbox-orch needs it (runtime `runsc` with the
    arguments engine-up registers); without it only runc policies (the default) work."""
    args = runtimes.get("runsc")
    if args is not None and all(arg in args for arg in RUNSC_ARGS):
        return Outcome(ExitCode.OK, f"{CALLER}: gVisor: runtime runsc {' '.join(args)}")
    state = "is not registered" if args is None else f"lacks {' '.join(RUNSC_ARGS)}"
    message = (
        f"{CALLER}: gVisor (runtime runsc) {state}: policies with isolation.oci_runtime: runsc "
        "(ci, agents) cannot run. Install runsc 2024-07-29 or newer "
        "(https://gvisor.dev/docs/user_guide/install/), register it in "
        f"/etc/docker/daemon.json as {json.dumps({'runtimes': RUNSC_ENTRY})}, "
        "then reload the engine (kill -HUP $(pidof dockerd), or systemctl reload docker)"
    )
    return Outcome(ExitCode.INFRASTRUCTURE if require else ExitCode.OK, message, problem=True)


def run_engine_up(command: list[str]) -> int:
    """Run the script with the caller's terminal: it logs as it goes (an install takes
    minutes)."""
    env = {**os.environ, "ENGINE_UP_NAME": CALLER}
    return subprocess.run(command, env=env, check=False).returncode
