"""Brokered secrets: the node holds a placeholder, the proxy holds the key.

A node told its API lives at `base_url(upstream)` (http://127.0.0.1:3128/_broker/<host>)
sends its requests, with the placeholder as credential, to its own egress socket. The
proxy checks each request against the node's `Brokered` entries (upstream, path prefixes,
methods), swaps the placeholder for the real value, drops any other credential the node
adds, and opens TLS to the upstream itself, verifying its certificate. The real value
exists only in the orchestrator process: never in a violation, message, log or repr.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .grants import Grant
from .http import PROXY_URL

PREFIX = "/_broker/"

# A header value h11 accepts: visible ASCII, inner spaces only. Checked when an entry is
# made, so that no h11 error can ever quote a secret.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+(?: +[\x21-\x7e]+)*")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")


@dataclass(frozen=True)
class Brokered:
    """One secret the proxy injects into one node's requests to one upstream."""

    name: str  # the secret's name (ANTHROPIC_API_KEY): for messages, never the value
    upstream: str  # https://host[:port], no path
    header: str  # the header that carries it: "x-api-key" or "authorization"
    scheme: str  # the value's prefix with its space, e.g. "Bearer " (or "")
    placeholder: str  # what the node holds instead of the secret
    value: str = field(repr=False)  # the real secret (only in the orchestrator process)
    paths: tuple[str, ...] = ("/v1/",)  # allowed path prefixes on the upstream
    methods: tuple[str, ...] = ("GET", "POST")
    ca_bundle: str | None = None  # PEM file; None = the system trust store

    def __post_init__(self) -> None:
        upstream_of(self.upstream)  # raises ValueError naming the upstream
        if not _TOKEN.fullmatch(self.header):
            raise ValueError(f"{self.name}: header {self.header!r} is not a lower-case name")
        for what, text in (("value", self.value), ("placeholder", self.placeholder)):
            if not _HEADER_VALUE.fullmatch(self.scheme + text):
                # Never the text itself: it may be the secret.
                raise ValueError(f"{self.name}: the {what} cannot be sent in a header")

    @property
    def target(self) -> Grant:
        """The upstream's host (lower case) and port."""
        return upstream_of(self.upstream)

    @property
    def authority(self) -> str:
        """`host` or `host:port` as it appears in the base URL and the Host header."""
        return authority_of(self.target)


def upstream_of(upstream: str) -> Grant:
    """The host and port of `https://host[:port]`; ValueError for anything else."""
    parts = urlsplit(upstream)
    try:
        port = 443 if parts.port is None else parts.port
    except ValueError:  # not a number, or out of range
        port = 0
    if (
        parts.scheme != "https"
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or not 0 < port < 65536
    ):
        raise ValueError(f"broker upstream {upstream!r} is not https://host[:port]")
    return Grant(parts.hostname.lower().rstrip("."), port)


def authority_of(target: Grant) -> str:
    host = target.host
    if target.is_ip_literal and ipaddress.ip_address(host).version == 6:
        host = f"[{host}]"
    return host if target.port == 443 else f"{host}:{target.port}"


def base_url(upstream: str) -> str:
    """What the node is told its API lives at: http://127.0.0.1:3128/_broker/<host[:port]>"""
    return f"{PROXY_URL}{PREFIX}{authority_of(upstream_of(upstream))}"
