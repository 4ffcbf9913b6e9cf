"""A command in a pod's container over the API server's exec endpoint (a websocket).

The official client's asyncio websocket client (`kubernetes.aio.stream.WsApiClient`)
opens the connection; its channels are driven here. Each binary message's first byte is
its channel (0 stdin, 1 stdout, 2 stderr, 3 the command's end as a metav1.Status), the
rest its data. Subprotocol v5.channel.k8s.io is asked for first: only it can close the
command's stdin (a message on channel 255 naming channel 0), so a call with stdin to a
server that offers only v4.channel.k8s.io is refused before anything is sent (the
command would wait forever for the end of its input).

Stdout reaches `consume` in a worker thread as a file object through a bounded pipe:
while the consumer is behind, the websocket is not read, so the server's sends wait and
the output is never held whole. Stderr is kept up to STDERR_CAP, for error messages.

The command's end is its status: a connection that ends before one is a BackendError,
never a success, and the consumer's next read fails rather than see a clean end. A
consumer that returns before the end (an artifact past its budget) leaves the rest of
the output to be read through, up to DRAIN bytes (a tar's end padding), for the status;
past that, or AFTER_CONSUMER seconds, or if the connection then fails, the command is
abandoned (its connection closed) and its code is None. A consumer that raises, or a
stdin source that does, ends the command at once and its exception is raised. A
cancellation closes the connection and fails the consumer's reads, so its thread ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Generic, TypeVar

import aiohttp
from kubernetes.aio.stream import WsApiClient

from ..base import BackendError
from .apicall import Query, api_call

T = TypeVar("T")
EXEC_PATH = "/api/v1/namespaces/{namespace}/pods/{pod}/exec"
V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, STATUS, CLOSE_SIGNAL = 0, 1, 2, 3, 255
CONNECT_TIMEOUT = 30.0  # seconds for the API server to accept the websocket
CLOSE_GRACE = 2.0  # seconds for the closing handshake (and a worker's end) once we close
AFTER_STATUS = 2.0  # seconds the server may take to close the connection after the status
AFTER_CONSUMER = 10.0  # seconds for the status once the consumer has returned
PIPE_LIMIT = 1 << 20  # bytes of stdout held for a consumer that is behind
READ_BUFFER = 1 << 16
DRAIN = 1 << 20  # bytes of stdout read through, unused, after the consumer returned
STDIN_CHUNK = 1 << 16  # bytes of stdin per message
STDERR_CAP = 4096  # bytes of stderr kept
STATUS_CAP = 1 << 16  # bytes of a status message
MESSAGE_CAP = 300  # characters of a status's message in an error


@dataclass(frozen=True)
class Ran(Generic[T]):
    """A command's end: its exit code (None: the consumer returned before the output's
    end and the command was abandoned), what `consume` returned, its stderr (capped)."""

    code: int | None
    value: T
    stderr: bytes


async def pod_exec(
    ws_api: WsApiClient,
    namespace: str,
    pod: str,
    container: str,
    argv: list[str],
    *,
    consume: Callable[[BinaryIO], T],
    stdin: AsyncIterator[bytes] | None = None,
) -> Ran[T]:
    """Run `argv` in the container; its stdout goes to `consume` (in a worker thread),
    `stdin` (if given) to its stdin, which is closed at the iterator's end."""
    where = f"exec in pod {pod} (container {container})"
    ws = await _connect(ws_api, namespace, pod, container, argv, stdin is not None, where)
    exchange = _Exchange(ws, where)
    try:
        return await exchange.run(consume, stdin)
    finally:
        await exchange.close()


async def _connect(
    ws_api: WsApiClient,
    namespace: str,
    pod: str,
    container: str,
    argv: list[str],
    stdin: bool,
    where: str,
) -> aiohttp.ClientWebSocketResponse:
    query: Query = [("command", arg) for arg in argv]
    query += [("container", container), ("stdin", _flag(stdin)), ("stdout", "true")]
    query += [("stderr", "true"), ("tty", "false")]
    # lower case: the client adds its own v4-only header unless this one is there
    protocols = {"sec-websocket-protocol": f"{V5},{V4}"}
    where_ = {"namespace": namespace, "pod": pod}
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            opening = await api_call(ws_api, "GET", EXEC_PATH, where_, query, protocols)
            ws = await opening
    except TimeoutError:  # first: it is an OSError too
        raise BackendError(f"{where}: no answer in {CONNECT_TIMEOUT:g} s") from None
    except aiohttp.WSServerHandshakeError as error:
        refused = f"{where}: the API server refused: {error.status} {error.message}"
        raise BackendError(refused) from None
    except (aiohttp.ClientError, OSError) as error:
        raise BackendError(f"{where}: the API server did not answer ({error})") from None
    protocol = _protocol(ws)
    refusal = None
    if protocol not in (V5, V4):
        refusal = f"the API server offered no exec protocol of ours ({protocol or 'none'})"
    elif stdin and protocol != V5:
        refusal = (
            f"the API server offers only {V4}, which cannot close a command's input "
            f"(it needs {V5}, Kubernetes 1.30 or later)"
        )
    if refusal is not None:
        await _close(ws)
        raise BackendError(f"{where}: {refusal}")
    return ws


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _protocol(ws: aiohttp.ClientWebSocketResponse) -> str:
    """The subprotocol the server chose. aiohttp tells it only for protocols given to
    `ws_connect`, which the client's WsApiClient sends as a header instead: read from
    the handshake's response."""
    response = getattr(ws, "_response", None)
    headers = getattr(response, "headers", None) or {}
    return str(headers.get("Sec-WebSocket-Protocol", "")).strip()


async def _close(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Close, waiting at most CLOSE_GRACE for the server's answer (then drop it)."""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
        async with asyncio.timeout(CLOSE_GRACE):
            await ws.close()


class _Exchange:
    """One command's messages: stdout into the pipe, stderr and status kept."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, where: str) -> None:
        self.ws = ws
        self.where = where
        self.pipe = _Pipe(asyncio.get_running_loop())
        self.stderr = bytearray()
        self.status = bytearray()
        self.worker: asyncio.Future[Any] | None = None
        self.sending: asyncio.Task[None] | None = None

    async def run(
        self, consume: Callable[[BinaryIO], T], stdin: AsyncIterator[bytes] | None
    ) -> Ran[T]:
        self.worker = asyncio.ensure_future(asyncio.to_thread(_consume, consume, self.pipe))
        if stdin is not None:
            self.sending = asyncio.ensure_future(self._send(stdin))
        try:
            ended = await self._until_status()
        except BackendError:
            if self.pipe.reading:  # the consumer's stream was cut: its next read fails
                self.pipe.fail(f"{self.where}: the command's output was cut")
                raise
            ended = False  # the consumer had returned: what followed was not wanted
        except BaseException:
            self.pipe.fail(f"{self.where}: the command's output was cut")
            raise
        if self.sending is not None and self.sending.done() and not self.sending.cancelled():
            failed = self.sending.exception()
            if failed is not None:  # stdin's source failed
                raise failed
        value = await self.worker
        code = exit_code(bytes(self.status), self.where) if ended else None
        return Ran(code, value, bytes(self.stderr))

    async def _until_status(self) -> bool:
        """Read until the status: True; False when abandoned (the consumer returned early
        or failed, or stdin's source failed)."""
        assert self.worker is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as deadline:

                def consumer_done(worker: asyncio.Future[Any]) -> None:
                    failed = worker.cancelled() or worker.exception() is not None
                    deadline.reschedule(loop.time() + (0 if failed else AFTER_CONSUMER))

                def sending_done(task: asyncio.Task[None]) -> None:
                    if not task.cancelled() and task.exception() is not None:
                        deadline.reschedule(loop.time())

                self.worker.add_done_callback(consumer_done)
                if self.sending is not None:
                    self.sending.add_done_callback(sending_done)
                try:
                    return await self._receive()
                finally:
                    self.worker.remove_done_callback(consumer_done)
                    if self.sending is not None:
                        self.sending.remove_done_callback(sending_done)
        except TimeoutError:
            return False

    async def _receive(self) -> bool:
        drained = 0
        while True:
            try:
                message = await self.ws.receive(timeout=AFTER_STATUS if self.status else None)
            except TimeoutError:
                break  # the status came; the server did not close: it is done anyway
            if message.type in _ENDS:
                break
            if message.type is not aiohttp.WSMsgType.BINARY:
                kind = message.type.name
                raise BackendError(f"{self.where}: the API server sent a {kind} message")
            data: bytes = message.data
            channel, payload = (data[0], data[1:]) if data else (None, b"")
            if channel == STDOUT and payload and not await self.pipe.put(payload):
                drained += len(payload)
                if drained > DRAIN:
                    return False
            elif channel == STDERR:
                self.stderr += payload[: max(0, STDERR_CAP - len(self.stderr))]
            elif channel == STATUS:
                self.status += payload
                if len(self.status) > STATUS_CAP:
                    raise BackendError(f"{self.where}: the command's status is too large")
            # Other channels (an empty opening message, resize) carry nothing for us.
        if not self.status:
            raise BackendError(
                f"{self.where}: the connection ended before the command's status "
                f"(close code {self.ws.close_code})"
            )
        self.pipe.end()
        return True

    async def _send(self, stdin: AsyncIterator[bytes]) -> None:
        """Stdin's chunks on channel 0, then (v5) its close. A connection that is gone is
        the receiver's to report; stdin's own failure is raised."""
        try:
            async for chunk in stdin:
                for start in range(0, len(chunk), STDIN_CHUNK):
                    await self.ws.send_bytes(bytes([STDIN]) + chunk[start : start + STDIN_CHUNK])
            await self.ws.send_bytes(bytes([CLOSE_SIGNAL, STDIN]))
        except (aiohttp.ClientError, ConnectionError):
            return

    async def close(self) -> None:
        """The connection closed, stdin's sender stopped, the worker ended (its reads fail
        from here), each within CLOSE_GRACE."""
        self.pipe.fail(f"{self.where}: the command's output was cut")
        if self.sending is not None:
            self.sending.cancel()
        await _close(self.ws)
        pending = [t for t in (self.sending, self.worker) if t is not None]
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_GRACE):
                    await asyncio.gather(*pending, return_exceptions=True)


_ENDS = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)


def exit_code(status: bytes, where: str) -> int:
    """The exit code a metav1.Status tells, as client-go reads it: Success is 0; Failure
    with reason NonZeroExitCode and a cause ExitCode is that code (0 to 255); any other
    failure is a BackendError naming it (one line, bounded)."""
    try:
        found = json.loads(status)
    except ValueError:
        raise BackendError(f"{where}: the command's status is not JSON") from None
    if not isinstance(found, dict):
        raise BackendError(f"{where}: the command's status is not a Status")
    if found.get("status") == "Success":
        return 0
    if found.get("status") == "Failure" and found.get("reason") == "NonZeroExitCode":
        details = found.get("details")
        causes = details.get("causes") if isinstance(details, dict) else None
        for cause in causes if isinstance(causes, list) else []:
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                text = cause.get("message")
                if isinstance(text, str) and text.isascii() and text.isdigit() and int(text) < 256:
                    return int(text)
    reason = _one_line(found.get("reason")) or "no reason"
    message = _one_line(found.get("message"))
    said = f": {message}" if message else ""
    raise BackendError(f"{where}: the command failed: {reason}{said}")


def _one_line(value: Any) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= MESSAGE_CAP else text[: MESSAGE_CAP - 3] + "..."


def _consume(consume: Callable[[BinaryIO], T], pipe: _Pipe) -> T:
    try:
        with io.BufferedReader(_PipeReader(pipe), READ_BUFFER) as stream:
            return consume(stream)  # type: ignore[arg-type]
    finally:
        pipe.stop_reading()


class _Pipe:
    """Stdout from the event loop to the consumer's thread, at most `limit` bytes held:
    `put` waits for room (so the websocket is not read while the consumer is behind)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = PIPE_LIMIT) -> None:
        self._loop = loop
        self._limit = limit
        self._chunks: collections.deque[memoryview] = collections.deque()
        self._held = 0
        self._lock = threading.Condition()
        self._room = asyncio.Event()
        self._waiting = False  # `put` waits for `_room`
        self._ended = False
        self._failure: str | None = None  # why reads fail
        self.reading = True  # the consumer has not returned

    async def put(self, data: bytes) -> bool:
        """Hand `data` to the consumer; False when it has returned (`data` is dropped)."""
        while True:
            with self._lock:
                if not self.reading:
                    return False
                if self._held < self._limit:
                    self._chunks.append(memoryview(data))
                    self._held += len(data)
                    self._lock.notify()
                    return True
                self._room.clear()
                self._waiting = True
            await self._room.wait()

    def end(self) -> None:
        """The output's end: reads return what is held, then b""."""
        with self._lock:
            self._ended = True
            self._lock.notify_all()

    def fail(self, why: str) -> None:
        """Reads fail from now on (what is held is dropped)."""
        with self._lock:
            self._ended = True
            self._failure = why
            self._chunks.clear()
            self._held = 0
            self._lock.notify_all()

    def read_into(self, buffer: Any) -> int:
        """(The consumer's thread.) Up to len(buffer) bytes; 0 at the output's end."""
        with self._lock:
            while not self._chunks and not self._ended:
                self._lock.wait()
            if self._failure is not None:
                raise BackendError(self._failure)
            if not self._chunks:
                return 0
            chunk = self._chunks[0]
            count = min(len(buffer), len(chunk))
            buffer[:count] = chunk[:count]
            if count == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[count:]
            self._held -= count
            self._wake()
            return count

    def stop_reading(self) -> None:
        """(The consumer's thread.) It returned: what comes from here is dropped."""
        with self._lock:
            self.reading = False
            self._chunks.clear()
            self._held = 0
            self._wake()

    def _wake(self) -> None:
        if self._waiting and self._held < self._limit:
            self._waiting = False
            with contextlib.suppress(RuntimeError):  # the loop is gone: no one waits
                self._loop.call_soon_threadsafe(self._room.set)


class _PipeReader(io.RawIOBase):
    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._pipe.read_into(buffer)
