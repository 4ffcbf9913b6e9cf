"""Where runs are kept on the host: `.sandbox-orch/` (or $SANDBOX_ORCH_HOME)."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .redaction import scrub, scrub_json

HOME_ENV = "SANDBOX_ORCH_HOME"


def home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / ".sandbox-orch")


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
