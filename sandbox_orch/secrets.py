"""Secrets: read on the host when the node that was granted them starts, handed to that
node only (as an environment variable, which is how the agent CLIs read their API keys),
and redacted from everything the run records or prints."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from secrets import token_hex

from .brokerpolicy import BrokerGrant
from .errors import InputRefused
from .policy import SecretGrant
from .redaction import MIN_REDACTED, Redactor, remember, variants
from .yamlsafe import kind_of, read_regular

__all__ = ["MIN_REDACTED", "Redactor", "SecretStore", "SecretUnavailable", "variants"]

PLACEHOLDER_PREFIX = "sandbox-orch-brokered-"
MAX_SECRET_BYTES = 64 * 1024  # a token or a key file, never a log or a device


class SecretUnavailable(Exception):
    """The secret's source is missing; the message names it, never the value."""


def source_problem(grant: SecretGrant, environ: Mapping[str, str]) -> str | None:
    """Why the secret cannot be read, or None (checked at validate time)."""
    if grant.from_env is not None and not environ.get(grant.from_env):
        return f"secret {grant.name}: environment variable {grant.from_env} is not set"
    if grant.from_file is not None and (why := _file_problem(Path(grant.from_file).expanduser())):
        return f"secret {grant.name}: file {grant.from_file}: {why}"
    if grant.from_env is None and grant.from_file is None:
        return f"secret {grant.name}: the policy gives it no source (from_env or from_file)"
    return None


def read_secret(grant: SecretGrant, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    problem = source_problem(grant, environ)
    if problem:
        raise SecretUnavailable(problem)
    if grant.from_env is not None:
        return environ[grant.from_env]
    assert grant.from_file is not None
    try:  # without blocking: a FIFO swapped in since validate would hang the run
        raw = read_regular(Path(grant.from_file).expanduser(), MAX_SECRET_BYTES)
    except InputRefused as refused:
        why = refused.problems[0].message
        raise SecretUnavailable(f"secret {grant.name}: file {grant.from_file}: {why}") from None
    return raw.decode("utf-8", "replace").strip()


def _file_problem(path: Path) -> str | None:
    """Why a secret's file cannot be read, judged without opening it (opening a FIFO
    blocks): a regular, readable file of at most MAX_SECRET_BYTES."""
    try:
        mode, size = (info := path.stat()).st_mode, info.st_size
    except FileNotFoundError:
        return "does not exist"
    except OSError as error:
        return f"cannot read: {error.strerror}"
    if not stat.S_ISREG(mode):
        return f"not a regular file ({kind_of(mode)})"
    if size > MAX_SECRET_BYTES:
        return f"larger than {MAX_SECRET_BYTES} bytes"
    if not os.access(path, os.R_OK):
        return "cannot read: permission denied"
    return None


class SecretStore:
    """The run's secrets: each read when a node that was granted it starts, and from then
    on redacted from everything the run records or prints."""

    def __init__(self, grants: Mapping[str, SecretGrant], redactor: Redactor) -> None:
        self._grants = grants
        self.redactor = redactor
        self._placeholders: dict[str, str] = {}

    def broker(self, name: str) -> BrokerGrant | None:
        return self._grants[name].broker

    def placeholder(self, name: str) -> str:
        """What a node holds instead of brokered secret `name`: random for each run and
        secret (never derived from the value), and plainly not a key."""
        if name not in self._placeholders:
            self._placeholders[name] = f"{PLACEHOLDER_PREFIX}{token_hex(16)}"
        return self._placeholders[name]

    def value(self, name: str) -> str:
        value = read_secret(self._grants[name])
        self.redactor.add(name, value)
        remember(name, value)  # for every sink, whichever run it renders
        return value
