"""Talking to the egress proxy in unit tests: over its real Unix socket, to real
servers on loopback (no engine)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sandbox_orch.egress import SOCKET_NAME

LOOPBACK_2 = "127.0.0.2"  # loopback, but not where a connection to "no host" goes


class Resolver:
    """A resolver that answers every name with `answer` (or raises `error`), and
    remembers what it was asked."""

    def __init__(self, answer: list[str] | None = None, error: OSError | None = None):
        self.answer, self.error, self.asked = answer or [], error, []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if self.error is not None:
            raise self.error
        return self.answer


async def exchange(directory: Path, raw: bytes, eof: bool = False) -> bytes:
    """Send `raw` on the node's socket; everything the proxy answers until it closes."""
    reader, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
    writer.write(raw)
    if eof:
        writer.write_eof()
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


def answer_of(data: bytes) -> tuple[str, str]:
    """(status line, body) of the proxy's reply."""
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body.decode()


async def echo_server(host: str = LOOPBACK_2) -> asyncio.Server:
    """A server that answers each piece it reads upper-cased, until the client is done."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, host, 0)
