"""The host's git, as `single` runs it: one shape for every call. Bytes in and out; its
own process group, so a terminal's Ctrl-C ends the run (which then still writes the
patch) and never the git command writing it; a failure is an InfrastructureError that
names the command."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import InfrastructureError


def run_git(
    args: Iterable[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        check=False,
        process_group=0,
    )


def git_output(
    args: Iterable[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    ok: tuple[int, ...] = (0,),
) -> bytes:
    """git's stdout; any exit status outside `ok` raises, with git's own message."""
    args = list(args)
    done = run_git(args, cwd, env, stdin)
    if done.returncode not in ok:
        message = done.stderr.decode(errors="replace").strip()
        place = f" in {cwd}" if cwd is not None else ""
        raise InfrastructureError(f"git {' '.join(args)} failed{place}: {message}")
    return done.stdout
