"""How the run and its evaluation worker talk: frames of a JSON header and a byte body.

JSON both ways (never pickle): the worker handles hostile input, and nothing it sends
back can make the run execute anything. The body carries bytes as they are (a node's
stdout, or a condition's context already encoded as JSON), so nothing is base64'd.
"""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

PREFIX = struct.Struct(">II")  # header length, body length


class ProtocolError(Exception):
    """A frame that is cut short or larger than allowed."""


def encode(header: dict[str, Any], body: bytes = b"") -> list[bytes]:
    """A frame as the pieces to write, so a large body is not copied into one buffer."""
    head = json.dumps(header).encode()
    return [PREFIX.pack(len(head), len(body)), head, body]


def decode_header(data: bytes) -> dict[str, Any]:
    header = json.loads(data)
    if not isinstance(header, dict):
        raise ProtocolError("a frame's header is not an object")
    return header


def read_frame(stream: BinaryIO) -> tuple[dict[str, Any], bytes] | None:
    """One frame from a blocking stream (the worker's side); None at a clean end."""
    prefix = stream.read(PREFIX.size)
    if not prefix:
        return None
    if len(prefix) != PREFIX.size:
        raise ProtocolError("a frame was cut short")
    head_size, body_size = PREFIX.unpack(prefix)
    head, body = stream.read(head_size), stream.read(body_size)
    if len(head) != head_size or len(body) != body_size:
        raise ProtocolError("a frame was cut short")
    return decode_header(head), body


def write_frame(stream: BinaryIO, header: dict[str, Any], body: bytes = b"") -> None:
    """One frame to a blocking stream (the worker's side)."""
    for piece in encode(header, body):
        stream.write(piece)
    stream.flush()
