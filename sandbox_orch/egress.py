"""The egress proxy: the only way out of a sandbox, and only to what was granted.

Nodes keep network `none`, also when they have egress (gVisor cannot join Docker networks
here, ENGINE.md). For each node with egress, the orchestrator listens on a Unix socket in
a directory of its own, bind-mounted read-only into that node at /run/egress; inside,
`sandbox-orch-egress` forwards 127.0.0.1:3128 to it. One socket per node means the proxy
knows whose allowlist applies without trusting anything the node says.

The proxy speaks HTTP forward-proxy: CONNECT host:port (for TLS) and absolute-form plain
HTTP requests. Request heads are parsed with h11, never by hand. A target must be granted
exactly as `host:port`; a name is resolved once, here, and refused if any address it
resolves to is not globally routable (private, loopback, link-local, metadata, ...)
unless the grant is that IP literal. The proxy connects to the address it checked, so a
second DNS answer cannot redirect it (no rebinding). Every refusal is recorded.

A granted target that cannot be reached (its name does not resolve, the connection is
refused or times out) is reported as it happens (`on_unreachable`), once per node, target
and reason: the agents' CLIs retry with backoff, silently, for minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import h11

from .errors import InfrastructureError
from .store import private_dir

SOCKET_NAME = "proxy.sock"
CONTAINER_DIR = "/run/egress"
PROXY_URL = "http://127.0.0.1:3128"
CONNECT_TIMEOUT = 10.0
HEAD_TIMEOUT = 30.0
MAX_HEAD = 16 * 1024

MAX_REPORTED = 20  # distinct unreachable reports per node: bounded whatever the node asks

Resolver = Callable[[str, int], Awaitable[list[str]]]
Unreachable = Callable[[str, str, str], None]  # (node, "host:port", why)


@dataclass(frozen=True)
class Grant:
    host: str  # lower case, no trailing dot
    port: int

    @staticmethod
    def parse(text: str) -> Grant:
        host, _, port = text.rpartition(":")
        return Grant(host.strip("[]").lower().rstrip("."), int(port))

    @property
    def is_ip_literal(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


@dataclass
class Violation:
    kind: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "detail": self.detail}


class Refused(Exception):
    """The request may not leave; `status` is the HTTP status given to the node."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class NotResolved(Refused):
    """A granted name that does not resolve: refused, and reported as unreachable."""

    def __init__(self, grant: Grant, error: OSError) -> None:
        super().__init__(502, f"{grant.host} does not resolve: {error}")
        self.grant = grant
        self.why = f"{grant.host} does not resolve ({error.strerror or error})"


def why_unreachable(error: BaseException) -> str:
    """A failed connection in a few words: `connection refused`, not `[Errno 111] ...`."""
    if isinstance(error, TimeoutError):
        return f"no answer in {CONNECT_TIMEOUT:g}s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:200].lower()
    return str(error)[:200] or type(error).__name__


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def routable(address: str) -> bool:
    """Globally routable: not private, loopback, link-local (metadata), reserved, ..."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass
class NodeEgress:
    """One node's socket, allowlist and refusals."""

    node: str
    grants: frozenset[Grant]
    directory: Path
    server: asyncio.base_events.Server | None = None
    violations: list[Violation] = field(default_factory=list)
    connections: set[asyncio.Task[None]] = field(default_factory=set)
    reported: set[tuple[str, str]] = field(default_factory=set)  # unreachable (target, why)


class EgressProxy:
    """The run's proxy: `open()` a socket per node with egress, `close()` at the end."""

    def __init__(
        self,
        run_id: str,
        resolver: Resolver = system_resolver,
        allowed_address: Callable[[str], bool] = routable,
        on_unreachable: Unreachable | None = None,
    ) -> None:
        self._resolve = resolver
        self._allowed_address = allowed_address
        self.on_unreachable = on_unreachable  # the run reports it as an event
        # Private (0700), in a directory no policy can mount (mounts.never_mountable): only
        # a node's own bind mount exposes its socket, never another node's or run's.
        try:
            parent = private_dir("egress")
            self.root = Path(tempfile.mkdtemp(prefix=f"{run_id}-", dir=parent))
        except OSError as error:
            raise InfrastructureError(f"cannot make the egress socket directory: {error}") from None
        self.nodes: dict[str, NodeEgress] = {}

    async def open(self, node: str, grants: list[str]) -> Path:
        """Start listening for `node`; returns the directory to mount at /run/egress."""
        if node in self.nodes:
            return self.nodes[node].directory
        directory = self.root / node
        directory.mkdir(mode=0o755)
        egress = NodeEgress(node, frozenset(Grant.parse(g) for g in grants), directory)
        path = directory / SOCKET_NAME
        # The path as a Path, never as text: nothing but this directory can be bound.
        egress.server = await asyncio.start_unix_server(
            lambda r, w: self._accept(egress, r, w), path=path
        )
        os.chmod(path, 0o666)  # the node runs as uid 10001
        self.nodes[node] = egress
        return directory

    def violations(self, node: str) -> list[dict[str, str]]:
        egress = self.nodes.get(node)
        return [v.as_dict() for v in egress.violations] if egress else []

    async def close(self) -> None:
        for egress in self.nodes.values():
            if egress.server is not None:
                egress.server.close()
            for task in egress.connections:
                task.cancel()
            await asyncio.gather(*egress.connections, return_exceptions=True)
        for egress in self.nodes.values():
            with contextlib.suppress(OSError):
                (egress.directory / SOCKET_NAME).unlink()
                egress.directory.rmdir()
        with contextlib.suppress(OSError):
            self.root.rmdir()

    async def _accept(
        self, egress: NodeEgress, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        egress.connections.add(task)
        try:
            await self._serve(egress, reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # close() cancels what is still open (a stopped node's held answer): the
            # connection ends here. Re-raised, asyncio 3.11's stream callback would log
            # the cancelled handler as an error, a traceback on the user's terminal.
            pass
        finally:
            egress.connections.discard(task)
            writer.close()

    async def _serve(
        self, egress: NodeEgress, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            request, rest = await asyncio.wait_for(_read_head(reader), HEAD_TIMEOUT)
            target, forward = _target_of(request)
            grant = self._check_grant(egress, target)
            address = await self._check_address(grant)
        except NotResolved as refused:  # granted: a network failure, not a violation
            self._unreachable(egress, refused.grant, refused.why)
            await _reply(writer, refused.status, str(refused))
            return
        except Refused as refused:
            egress.violations.append(Violation("egress", str(refused)))
            await _reply(writer, refused.status, str(refused))
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(address, grant.port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as error:
            why = why_unreachable(error)
            self._unreachable(egress, grant, why)
            await _reply(writer, 502, f"cannot connect to {grant.host}:{grant.port}: {why}")
            return
        if forward is None:  # CONNECT: the node speaks TLS end to end from here
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        else:
            up_writer.write(forward)
        up_writer.write(rest)
        await _splice(reader, writer, up_reader, up_writer)

    def _unreachable(self, egress: NodeEgress, target: Grant, why: str) -> None:
        """Report a granted target that cannot be reached, once per target and reason."""
        key = (f"{target.host}:{target.port}", why)
        if self.on_unreachable is None or key in egress.reported:
            return
        if len(egress.reported) >= MAX_REPORTED:
            return
        egress.reported.add(key)
        self.on_unreachable(egress.node, *key)

    def _check_grant(self, egress: NodeEgress, target: Grant) -> Grant:
        if target not in egress.grants:
            raise Refused(
                403, f"{target.host}:{target.port} is not granted to node {egress.node!r}"
            )
        return target

    async def _check_address(self, grant: Grant) -> str:
        if grant.is_ip_literal:
            return grant.host  # an IP literal grant is taken as meant (CONTRACT 4)
        try:
            addresses = await self._resolve(grant.host, grant.port)
        except OSError as error:
            raise NotResolved(grant, error) from None
        bad = [a for a in addresses if not self._allowed_address(a)]
        if bad or not addresses:
            raise Refused(
                403, f"{grant.host} resolves to a non-public address ({', '.join(bad)}): refused"
            )
        return addresses[0]


async def _read_head(reader: asyncio.StreamReader) -> tuple[h11.Request, bytes]:
    """Read and parse one request head; return it and whatever bytes followed it."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as error:
            raise Refused(400, f"bad request: {error}") from None
        if isinstance(event, h11.Request):
            rest, _ = connection.trailing_data
            return event, bytes(rest)
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data:
                raise Refused(400, "the connection closed before a request")
            connection.receive_data(data)  # only buffers: next_event() parses (and raises)
            continue
        raise Refused(400, "expected an HTTP request")


def _target_of(request: h11.Request) -> tuple[Grant, bytes | None]:
    """The host:port asked for, and for plain HTTP the head to send upstream."""
    target = request.target.decode("ascii", "replace")
    if request.method == b"CONNECT":
        try:
            return Grant.parse(target), None
        except ValueError:
            raise Refused(400, f"bad CONNECT target {target!r}") from None
    parts = urlsplit(target)
    if parts.scheme != "http" or not parts.hostname:
        raise Refused(400, "only CONNECT and absolute http:// requests go through this proxy")
    grant = Grant(parts.hostname.lower().rstrip("."), parts.port or 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    # Forward the same request in origin form, without proxy headers; one request per
    # connection (`Connection: close`), so nothing can ride on to another target.
    headers = [
        (name, value)
        for name, value in request.headers
        if not name.lower().startswith(b"proxy-") and name.lower() != b"connection"
    ]
    headers.append((b"connection", b"close"))
    client = h11.Connection(h11.CLIENT)
    head = client.send(h11.Request(method=request.method, target=path, headers=headers))
    return grant, bytes(head or b"")


async def _reply(writer: asyncio.StreamWriter, status: int, detail: str) -> None:
    body = f"sandbox-orch egress proxy: {detail}\n".encode()
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    writer.write(head + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if sink.can_write_eof():
                    sink.write_eof()

    try:
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    finally:
        up_writer.close()
