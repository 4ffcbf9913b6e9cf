"""Secrets: read on the host when the node that was granted them starts, handed to that
node only (as an environment variable, which is how the agent CLIs read their API keys),
and redacted from everything the run records or prints."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from .errors import InputRefused
from .policy import SecretGrant
from .yamlsafe import kind_of, read_regular

MIN_REDACTED = 4  # shorter values would redact ordinary text everywhere
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


def variants(value: str) -> set[str]:
    """The value as it may appear when a program encodes it before printing it."""
    raw = value.encode()
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        forms.add(encode(raw).decode())
        for offset in range(3):
            # Inside a longer base64 text the value may start at any byte alignment;
            # keep the characters that encode only its own bytes: skip the group shared
            # with what comes before, stop before the group shared with what follows.
            encoded = encode(b"\0" * offset + raw).decode()
            start = -(-offset * 4 // 3)
            end = (offset + len(raw)) // 3 * 4
            forms.add(encoded[start:end])
    return {form for form in forms if len(form) >= MIN_REDACTED}


class Redactor:
    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        self._replacements: list[tuple[str, str]] = []
        for name, value in (secrets or {}).items():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        if len(value) < MIN_REDACTED:
            return
        marker = f"[REDACTED:{name}]"
        self._replacements += [(form, marker) for form in variants(value)]
        self._replacements.sort(key=lambda pair: -len(pair[0]))  # longest first

    def __bool__(self) -> bool:
        return bool(self._replacements)

    def text(self, text: str) -> str:
        for form, marker in self._replacements:
            if form in text:
                text = text.replace(form, marker)
        return text

    def event(self, event: Any) -> Any:
        """A (dataclass) event with its strings redacted."""
        changes = {k: self.document(v) for k, v in vars(event).items() if isinstance(v, str | dict)}
        return dataclasses.replace(event, **changes)

    def document(self, value: Any) -> Any:
        """Every string in a JSON-like document, keys included."""
        if not self._replacements:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.document(k): self.document(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.document(item) for item in value]
        return value


class SecretStore:
    """The run's secrets: each read when a node that was granted it starts, and from then
    on redacted from everything the run records or prints."""

    def __init__(self, grants: Mapping[str, SecretGrant], redactor: Redactor) -> None:
        self._grants = grants
        self.redactor = redactor

    def value(self, name: str) -> str:
        value = read_secret(self._grants[name])
        self.redactor.add(name, value)
        return value
