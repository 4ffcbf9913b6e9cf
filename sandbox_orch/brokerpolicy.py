"""A policy secret's `broker:` block: the secret never enters the node; the run's egress
proxy adds it to the node's requests to one upstream (egress/broker.py does that).

Validated field by field (each check's one sentence is its error), then as a whole
(`problems`): exactly one of `header:` and `authorization:`, a CA bundle that can be
read, and a base-URL variable for every runtime the secret is granted to.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_PATHS = ("/v1/",)
DEFAULT_METHODS = ("GET", "POST")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an HTTP token (RFC 9110)
# Set by the proxy, or its framing: a secret there would change what the request is.
NOT_A_SECRET_HEADER = ("host", "content-length", "transfer-encoding", "connection")


@dataclass(frozen=True)
class BrokerGrant:
    upstream: str  # https://HOST[:PORT]
    header: str  # lower case: x-api-key, authorization
    scheme: str  # "" or "Bearer "
    paths: tuple[str, ...] = DEFAULT_PATHS
    methods: tuple[str, ...] = DEFAULT_METHODS
    ca_bundle: Path | None = None  # None: the system trust store
    base_url_env: str | None = None  # None: the runtime preset's


def check_upstream(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    # urlsplit drops blanks and control characters, so the URL checked would not be the
    # string kept and used.
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ValueError(f"{value!r}: no blanks or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (reading it raises on a port that is no port)
    except ValueError as error:
        raise ValueError(f"{value!r} is not an https://HOST[:PORT] URL ({error})") from None
    if parts.scheme != "https":
        raise ValueError(f"{value!r}: https only (the proxy opens TLS to the upstream itself)")
    if parts.path or parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ValueError(f"{value!r}: no path (`paths:` lists what the node may ask)")
    if not parts.hostname or "@" in parts.netloc:
        raise ValueError(f"{value!r} is not an https://HOST[:PORT] URL")
    return value


def check_header(value: Any) -> str:
    if not isinstance(value, str) or not HEADER_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an HTTP header name")
    if value.lower() in NOT_A_SECRET_HEADER:
        raise ValueError(f"{value!r} cannot carry a secret")
    return value.lower()


def check_scheme(value: Any) -> str:
    if value != "Bearer":
        raise ValueError(f"{value!r}: only Bearer (sends `Authorization: Bearer <secret>`)")
    return "Bearer "


def check_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{value!r}: a path prefix starts with /")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{value!r}: a path prefix has no spaces or control characters")
    return value


def check_method(value: Any) -> str:
    if value not in METHODS:
        raise ValueError(f"unknown method {value!r} (known: {', '.join(METHODS)})")
    return value


def check_env_name(value: Any) -> str:
    if not isinstance(value, str) or not ENV_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid environment variable name")
    return value


def schema(checker: Callable[[Callable[[Any], Any]], Any]) -> dict[str, Any]:
    """The cerberus schema of `broker:`; `checker` turns a check into a check_with. Each
    field's `meta` is its description for editors (cerberus ignores it)."""
    from .editorschema.values import documented as doc

    return doc(
        {
            "type": "dict",
            "schema": {
                "upstream": doc(
                    {"required": True, "check_with": checker(check_upstream)},
                    "https://HOST[:PORT] the proxy sends the node's requests to, with the secret.",
                    "https://api.anthropic.com",
                ),
                "header": doc(
                    {"check_with": checker(check_header)},
                    "The header that carries the secret (give this or authorization).",
                    "x-api-key",
                ),
                "authorization": doc(
                    {"check_with": checker(check_scheme)},
                    "Bearer: send `Authorization: Bearer <secret>` (give this or header).",
                    "Bearer",
                ),
                "paths": doc(
                    {"type": "list", "schema": {"check_with": checker(check_path)}},
                    "Path prefixes the node may ask for (default /v1/).",
                    ["/v1/"],
                ),
                "methods": doc(
                    {"type": "list", "schema": {"check_with": checker(check_method)}},
                    "HTTP methods the node may use (default GET, POST).",
                    ["GET", "POST"],
                ),
                "ca_bundle": doc(
                    {"type": "string", "empty": False},
                    "A CA bundle for the upstream, relative to the policy (default: the system's).",
                ),
                "base_url_env": doc(
                    {"check_with": checker(check_env_name)},
                    "The variable that tells the node where the broker is (default: the"
                    " runtime preset's, e.g. ANTHROPIC_BASE_URL).",
                    "ANTHROPIC_BASE_URL",
                ),
            },
        },
        "Broker the secret: it never enters the node; the run's egress proxy adds it to the"
        " node's requests to one upstream.",
    )


def problems(
    data: dict[str, Any], runtimes: list[str], base_dir: Path, preset_env: dict[str, str]
) -> list[tuple[tuple[str, ...], str]]:
    """What the schema cannot see, as (loc inside `broker:`, message). `preset_env` maps
    each runtime that has one to its base-URL variable."""
    found: list[tuple[tuple[str, ...], str]] = []
    if ("header" in data) == ("authorization" in data):
        found.append(((), "give exactly one of header and authorization"))
    if "ca_bundle" in data and (why := _unreadable(_resolved(data["ca_bundle"], base_dir))):
        found.append((("ca_bundle",), f"{data['ca_bundle']}: {why}"))
    if "base_url_env" not in data:
        for runtime in runtimes:
            if runtime not in preset_env:
                message = (
                    f"base_url_env is required: runtime {runtime!r} has no preset base-URL "
                    "variable (the node is told where the broker is in it)"
                )
                found.append(((), message))
    return found


def grant(data: dict[str, Any], base_dir: Path) -> BrokerGrant:
    """A validated `broker:` block (problems() found nothing)."""
    header = check_header(data["header"]) if "header" in data else "authorization"
    return BrokerGrant(
        upstream=data["upstream"],
        header=header,
        scheme=check_scheme(data["authorization"]) if "authorization" in data else "",
        paths=tuple(data.get("paths", DEFAULT_PATHS)),
        methods=tuple(data.get("methods", DEFAULT_METHODS)),
        ca_bundle=_resolved(data["ca_bundle"], base_dir) if "ca_bundle" in data else None,
        base_url_env=data.get("base_url_env"),
    )


def _resolved(path: str, base_dir: Path) -> Path:
    return (base_dir / Path(path).expanduser()).resolve()


def _unreadable(path: Path) -> str | None:
    if not path.is_file():
        return f"no such file ({path})" if not path.exists() else f"not a file ({path})"
    if not os.access(path, os.R_OK):
        return f"cannot read ({path})"
    return None
