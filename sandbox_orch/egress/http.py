"""The proxy's HTTP: request heads parsed with h11 (never by hand), refusals answered,
and bytes spliced both ways once a target is allowed."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import h11

from .grants import Grant

MAX_HEAD = 16 * 1024
PROXY_URL = "http://127.0.0.1:3128"  # where a node reaches its proxy (and its broker)


class Refused(Exception):
    """The request may not leave; `status` is the HTTP status given to the node."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def server_connection() -> h11.Connection:
    """The node's side of one connection, parsed by h11, heads bounded by MAX_HEAD."""
    return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)


async def read_head(reader: asyncio.StreamReader, connection: h11.Connection) -> h11.Request:
    """Read and parse one request head; what followed it stays buffered in `connection`
    (`trailing_data`, or the body's events)."""
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as error:
            raise Refused(400, f"bad request: {error}") from None
        if isinstance(event, h11.Request):
            return event
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data:
                raise Refused(400, "the connection closed before a request")
            connection.receive_data(data)  # only buffers: next_event() parses (and raises)
            continue
        raise Refused(400, "expected an HTTP request")


def target_of(request: h11.Request) -> tuple[Grant, bytes | None]:
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


async def reply(writer: asyncio.StreamWriter, status: int, detail: str) -> None:
    body = f"sandbox-orch egress proxy: {detail}\n".encode()
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    writer.write(head + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def splice(
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
