"""Where runs are kept on the host: `.sandbox-orch/` (or $SANDBOX_ORCH_HOME)."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .redaction import scrub, scrub_json

HOME_ENV = "SANDBOX_ORCH_HOME"


def home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / ".sandbox-orch")


IGNORED = "# sandbox-orch's run store: never part of the project's history\n*\n"


def keep_out_of_git() -> None:
    """The default store (`.sandbox-orch/` in the working directory, often inside the
    user's repository) ignores itself in git, so `git status` and `git add -A` pass it
    by. Not a store of $SANDBOX_ORCH_HOME's: that can be any directory of the user's."""
    if os.environ.get(HOME_ENV):
        return
    with contextlib.suppress(OSError):  # exists already (or a link: never followed)
        descriptor = os.open(home() / ".gitignore", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(descriptor, "w") as file:
            file.write(IGNORED)


def private_root() -> Path:
    """Where files no node may ever see are kept (egress sockets): root's /run/sandbox-orch,
    else a directory of this user's in the temporary directory (made 0700 by its user)."""
    if os.geteuid() == 0:
        return Path("/run/sandbox-orch")
    return Path(tempfile.gettempdir()) / f"sandbox-orch-{os.geteuid()}"


def private_dir(name: str) -> Path:
    """`private_root()/name`, made if missing (0700). OSError unless both are real
    directories of this user's that no one else can write (nor, the leaf, read)."""
    path = private_root() / name
    for place, others in ((path.parent, 0o022), (path, 0o077)):
        with contextlib.suppress(FileExistsError):
            place.mkdir(mode=0o700)
        info = os.lstat(place)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & others:
            raise OSError(f"{place} is not a private directory of this user's")
    return path


def new_run_id(now: datetime | None = None) -> str:
    """Sortable by start time, unique across concurrent runs: 20261125t003400-1a2b3c."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dt%H%M%S}-{secrets.token_hex(3)}"


def run_dir(run_id: str) -> Path:
    return home() / "runs" / run_id


def write_json(path: Path, document: dict[str, Any]) -> None:
    _write(path, scrub_json(document, indent=2, sort_keys=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write atomically: a reader never sees half a results (or report) file. Every
    file we write goes through here or write_json, which scrub its text."""
    _write(path, scrub(text))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def save_results(run_id: str, results: dict[str, Any], extra: Path | None = None) -> Path:
    path = run_dir(run_id) / "results.json"
    write_json(path, results)
    if extra is not None:
        write_json(extra, results)
    return path
