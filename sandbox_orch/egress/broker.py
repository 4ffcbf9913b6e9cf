"""Brokered secrets: the node holds a placeholder, the proxy holds the key.

A node told its API lives at `base_url(upstream)` (http://127.0.0.1:3128/_broker/<host>)
sends its requests, with the placeholder as credential, to its own egress socket. The
proxy checks each request against the node's `Brokered` entries (upstream, path prefixes,
methods), swaps the placeholder for the real value, drops any other credential the node
adds, and opens TLS to the upstream itself, verifying its certificate. The real value
exists only in the orchestrator process: never in a violation, message, log or repr.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

from .grants import Grant
from .http import MAX_HEAD, PROXY_URL, Refused

PREFIX = "/_broker/"
# How a node's client may name its own proxy in absolute form (HTTP_PROXY is set in the
# node, so clients that do not exempt loopback send `GET http://127.0.0.1:3128/_broker/...`).
LOCAL_ORIGINS = ("http://127.0.0.1:3128", "http://localhost:3128")

# Never forwarded: hop-by-hop and proxy headers (RFC 9110 7.6.1), the node's Host (set to
# the upstream) and Expect (answered here, see forward()). Framing (content-length,
# transfer-encoding) is re-derived by h11 from what is kept.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
     b"host", b"expect"}
)  # fmt: skip
# Credentials a node might add of its own. Only an entry's exact `scheme + placeholder` in
# its own header is forwarded (as `scheme + value`); any other value of these is dropped.
FRAMING = frozenset({b"content-length", b"transfer-encoding"})
CREDENTIALS = frozenset({b"authorization", b"x-api-key", b"cookie", b"proxy-authorization"})

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
    except ValueError:  # not a number, or past 65535
        port = 0
    if (
        parts.scheme != "https"
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or port == 0
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


# --- routing: which upstream, which entries, and is the path allowed ------------------------

_AUTHORITY = re.compile(r"([^/?]*)(.*)", re.DOTALL)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Percent-encoded '.', '/', '\', '%' and control characters: an upstream (or a gateway in
# front of it) that decodes before routing would see a different path than we checked.
_HIDDEN = re.compile(r"%(2[eEfF]|5[cC]|25|[01][0-9a-fA-F]|7[fF])")
_CONTROL = re.compile(r"[\x00-\x20\x7f-\xff]")


@dataclass(frozen=True)
class Route:
    """An allowed broker request: where it goes and what it carries."""

    target: Grant
    authority: str
    entries: tuple[Brokered, ...]  # the node's entries for this upstream allowing it
    # The request to send upstream (origin form, headers rewritten): it holds the value,
    # so it is never in a repr.
    request: h11.Request = field(repr=False)


def addressed(request: h11.Request) -> str | None:
    """`<host[:port]>/<path>?<query>` if the request is for the broker, else None."""
    target = request.target.decode("ascii")  # h11 admits visible ASCII only
    if target.startswith(PREFIX):
        return target[len(PREFIX) :]
    for origin in LOCAL_ORIGINS:
        if target[: len(origin)].lower() == origin and target[len(origin) :].startswith(PREFIX):
            return target[len(origin) + len(PREFIX) :]
    return None


def route(node: str, brokered: Sequence[Brokered], request: h11.Request) -> Route:
    """Check a broker request against the node's entries; Refused(403) says why not."""
    rest = addressed(request)
    assert rest is not None  # only broker requests are routed
    match = _AUTHORITY.fullmatch(rest)
    assert match is not None  # the pattern matches any text
    authority, path_and_query = match[1].lower(), match[2]
    entries = [e for e in brokered if e.authority == authority]
    if not entries:
        raise Refused(403, f"{authority[:100]!r} is not a brokered upstream of node {node!r}")
    path = path_and_query.partition("?")[0] or "/"
    method = request.method.decode("ascii")

    def refuse(reason: str) -> Refused:
        return Refused(
            403, f"node {node!r} may not {method} {path[:200]!r} on {authority}: {reason}"
        )

    if (reason := unsafe(path)) is not None:
        raise refuse(reason)
    entries = [e for e in entries if any(path.startswith(p) for p in e.paths)]
    if not entries:
        allowed = sorted({p for e in brokered if e.authority == authority for p in e.paths})
        raise refuse(f"the path is not under {', '.join(allowed)}")
    allowed_methods = sorted({m for e in entries for m in e.methods})
    entries = [e for e in entries if method in e.methods]
    if not entries:
        raise refuse(f"the method is not one of {', '.join(allowed_methods)}")
    target = entries[0].target
    # Any header that carries one of the node's secrets is a credential header.
    credentials = CREDENTIALS | {e.header.encode() for e in brokered}
    headers = upstream_headers(request.headers, entries, authority, credentials)
    if not path_and_query.startswith("/"):
        path_and_query = "/" + path_and_query
    upstream = h11.Request(method=request.method, target=path_and_query, headers=headers)
    return Route(target, authority, tuple(entries), upstream)


def unsafe(path: str) -> str | None:
    """Why a path is refused before its prefix is even looked at, or None."""
    if _CONTROL.search(path):
        return "the path has a space, control or non-ASCII character"
    if "\\" in path:
        return "the path has a backslash"
    if "#" in path:
        return "the path has a fragment"
    if _BAD_ESCAPE.search(path):
        return "the path has a malformed percent escape"
    if _HIDDEN.search(path):
        return "the path has a percent-encoded '.', '/', '\\', '%' or control character"
    segments = path.split("/")[1:]
    if "" in segments[:-1]:
        return "the path has an empty segment (//)"
    if any(segment.split(";")[0] in (".", "..") for segment in segments):
        return "the path has a '.' or '..' segment"
    return None


def upstream_headers(
    headers: Sequence[tuple[bytes, bytes]],
    entries: Sequence[Brokered],
    authority: str,
    credentials: frozenset[bytes],
) -> list[tuple[bytes, bytes]]:
    """The node's headers as the upstream gets them: placeholders swapped for the value,
    any other value of a `credentials` header dropped, hop-by-hop headers removed, Host
    set, connection closed.

    Dropped rather than refused: clients send credentials of their own in good faith
    (a cookie an earlier answer set, an Authorization header an SDK adds by default), and
    refusing would break them for nothing; dropped, nothing the node holds reaches the
    upstream but the placeholder's swap, which is the point."""
    # Headers the node's Connection names are hop-by-hop too, but never the framing: h11
    # frames the body by them, and must agree with what the node sends.
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    } - FRAMING
    swap = {
        (e.header.encode(), (e.scheme + e.placeholder).encode()): (e.scheme + e.value).encode()
        for e in entries
    }
    kept: list[tuple[bytes, bytes]] = [(b"host", authority.encode())]
    for name, value in headers:
        name = name.lower()
        if name in HOP_BY_HOP or name in named or name.startswith(b"proxy-"):
            continue
        if name in credentials:
            real = swap.get((name, value))
            if real is None:
                continue
            value = real
        kept.append((name, value))
    kept.append((b"connection", b"close"))  # one request per upstream connection
    return kept


# --- TLS to the upstream ------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Certificate and hostname (or IP SAN) verified, TLS 1.2 or later. Cached: loading a
    trust store costs milliseconds, and every broker request opens a connection."""
    context = ssl.create_default_context(cafile=ca_bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def why_tls(error: BaseException) -> str | None:
    """A TLS failure in a few words, or None if `error` is not one."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed: {(getattr(error, 'reason', None) or str(error)).lower()}"
    return None


# --- the exchange: one request, its response, streamed both ways ----------------------------

RESPONSE_DROPPED = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
)


async def forward(
    node: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    route: Route,
) -> None:
    """Send the routed request upstream, stream the node's body after it and the answer
    back as it comes (server-sent events flow chunk by chunk). The node's connection
    closes after the answer: every request comes on a fresh connection, checked afresh.
    Refused(502) if the upstream's answer is not HTTP before anything was sent back."""
    upstream = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    if node.they_are_waiting_for_100_continue:  # Expect was not forwarded: answer it here
        _send(node, h11.InformationalResponse(status_code=100, headers=[]), writer)
    _send(upstream, route.request, up_writer)
    body = asyncio.ensure_future(_send_body(node, reader, upstream, up_writer))
    try:
        await _send_answer(upstream, up_reader, node, writer)
    except (h11.ProtocolError, OSError) as error:  # not HTTP, cut short, TLS broken
        if node.our_state is h11.SEND_RESPONSE:  # nothing sent yet: the node can be told
            if body.done() and (broken := body.result()):
                raise Refused(400, broken) from None  # the node's request, not the answer
            raise Refused(502, f"bad answer from {route.authority}: {in_words(error)}") from None
        # Mid-answer, closing the connection is all that is left to say.
    finally:
        body.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await body
        up_writer.close()


async def _send_body(
    node: h11.Connection,
    reader: asyncio.StreamReader,
    upstream: h11.Connection,
    up_writer: asyncio.StreamWriter,
) -> str | None:
    """The node's request body, event by event; None once it is all sent. A body that is
    malformed or cut short can never make a complete request: the upstream connection is
    closed, which ends the answer, and the reason is returned."""
    try:
        while True:
            event = node.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data:
                    broken = "the request ended before its body did"
                    break
                node.receive_data(data)
            elif isinstance(event, h11.Data):
                _send(upstream, h11.Data(data=event.data), up_writer)
                await up_writer.drain()
            elif isinstance(event, h11.EndOfMessage):  # trailers are not forwarded
                _send(upstream, h11.EndOfMessage(), up_writer)
                await up_writer.drain()
                return None
    except h11.ProtocolError as error:  # the node's framing
        broken = f"bad request body: {error}"
    except OSError:  # the upstream went away: the answer says how (falsy: not the node's)
        broken = None
    up_writer.close()
    return broken


async def _send_answer(
    upstream: h11.Connection,
    up_reader: asyncio.StreamReader,
    node: h11.Connection,
    writer: asyncio.StreamWriter,
) -> None:
    while True:
        event = upstream.next_event()
        if event is h11.NEED_DATA:
            upstream.receive_data(await up_reader.read(65536))
            continue
        if isinstance(event, h11.Response):
            headers = [(n, v) for n, v in event.headers if n not in RESPONSE_DROPPED]
            headers.append((b"connection", b"close"))
            event = h11.Response(
                status_code=event.status_code, headers=headers, reason=event.reason
            )
        elif isinstance(event, h11.EndOfMessage):
            event = h11.EndOfMessage()  # trailers are not forwarded
        elif not isinstance(event, h11.Data):
            continue  # an informational answer: we sent no Expect, the node waits for none
        _send(node, event, writer)
        await writer.drain()
        if isinstance(event, h11.EndOfMessage):
            return


def _send(connection: h11.Connection, event: h11.Event, writer: asyncio.StreamWriter) -> None:
    data = connection.send(event)
    assert data is not None  # h11 sends nothing only for ConnectionClosed, never sent here
    writer.write(data)


def in_words(error: BaseException) -> str:
    """An error in at most 200 characters, never empty."""
    return str(error)[:200] or type(error).__name__
