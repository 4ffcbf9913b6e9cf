"""The host's terminal, lent to an interactive session (`single` with no prompt).

While a node's terminal is attached: the host terminal is in raw mode (every key, Ctrl-C
and Ctrl-Z included, is a byte for the agent, not a signal for us); its window size goes
to the container at the start and on every SIGWINCH; a SIGINT that still reaches us (sent
with `kill`) is passed on as a Ctrl-C byte instead of cancelling the run, while a SIGHUP
(the terminal window closed) cancels it, so its container is removed; one thread
pumps bytes both ways between the terminal and the container's socket, off the event
loop; and events the run emits meanwhile are held, then shown once the session ends (a
line printed into the agent's screen would garble it). Whatever happens (the agent exits,
a timeout kills it, the run is cancelled, an error), the terminal's settings, its modes
and the SIGINT handler are put back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import termios
import tty
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .backend import Backend, BackendError
from .events import Emit, Event

CHUNK = 65536
# Once the container has exited, how long its last screen bytes may take to arrive.
DRAIN_S = 5.0
CTRL_C = b"\x03"
# Modes an agent's interface may leave on when it is killed rather than exits: the
# cursor shown, and bracketed paste, mouse reporting, focus events and the kitty
# keyboard protocol turned off (each is harmless when it was not on).
RESET_MODES = b"\x1b[?25h\x1b[?2004l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1004l\x1b[<u"


def window_size(fd: int) -> tuple[int, int] | None:
    """(rows, columns) of the terminal on `fd`; None when it has none."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return size.lines, size.columns


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The terminal on `fd` in raw mode; its settings as they were afterwards, always."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):  # a terminal that hung up
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def pump(sock: socket.socket, keys_fd: int, screen_fd: int, stop_fd: int) -> None:
    """Keys from `keys_fd` into the socket, the socket's bytes onto `screen_fd`, until
    the container's side closes (it exited) or `stop_fd` becomes readable. Blocking:
    run it in a thread."""
    sources: list[Any] = [sock, keys_fd, stop_fd]
    while True:
        readable, _, _ = select.select(sources, [], [])
        if stop_fd in readable:
            return
        try:
            if sock in readable:
                data = sock.recv(CHUNK)
                if not data:
                    return
                _write_all(screen_fd, data)
            if keys_fd in readable:
                data = os.read(keys_fd, CHUNK)
                if data:
                    sock.sendall(data)
                else:  # the host's stdin closed: the screen goes on
                    sources.remove(keys_fd)
        except OSError:  # the connection broke (the container is gone): nothing to pump
            return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class HostTerminal:
    """The terminal this process runs in, lent to one container at a time.

    `interrupt` is the run's interrupt event that SIGINT sets outside a session (as
    `with_backend` arranges): the handler is set back to it when a session ends.
    """

    def __init__(
        self, interrupt: asyncio.Event | None = None, keys_fd: int = 0, screen_fd: int = 1
    ) -> None:
        self.interrupt = interrupt
        self.keys_fd = keys_fd
        self.screen_fd = screen_fd
        self._emit: Emit | None = None  # where held events go (see holding)
        self._held: list[Event] | None = None  # events held while a session is attached
        self._resizes: set[asyncio.Future[None]] = set()

    def holding(self, emit: Emit) -> Emit:
        """`emit`, except that events are held while a session is attached and shown
        once it ends."""

        def held(event: Event) -> None:
            if self._held is not None:
                self._held.append(event)
            else:
                emit(event)

        self._emit = emit
        return held

    @contextlib.asynccontextmanager
    async def attached(self, backend: Backend, container_id: str) -> AsyncIterator[None]:
        """Start the container with this terminal attached; the body waits for it to
        exit. On leaving, its last output is shown and the terminal restored."""
        sock = await backend.start_terminal(container_id)
        loop = asyncio.get_running_loop()
        stop_read, stop_write = os.pipe()
        self._held = []
        try:
            with raw_mode(self.keys_fd):
                pumping = loop.run_in_executor(
                    None, pump, sock, self.keys_fd, self.screen_fd, stop_read
                )
                self._take_signals(loop, backend, container_id, sock)
                try:
                    await self._resize(backend, container_id)
                    yield
                    with contextlib.suppress(TimeoutError):  # exited: its last bytes
                        async with asyncio.timeout(DRAIN_S):
                            await asyncio.shield(pumping)
                finally:
                    self._give_back_signals(loop)
                    os.write(stop_write, b"x")
                    # Also unblocks a send the container never reads (its output was
                    # drained above, or the session is being cancelled).
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    await asyncio.shield(pumping)
                    with contextlib.suppress(OSError):
                        _write_all(self.screen_fd, RESET_MODES)
        finally:
            os.close(stop_read)
            os.close(stop_write)
            sock.close()
            self._release_events()

    def _take_signals(
        self, loop: asyncio.AbstractEventLoop, backend: Backend, container_id: str, sock: Any
    ) -> None:
        def resized() -> None:
            task = asyncio.ensure_future(self._resize(backend, container_id))
            self._resizes.add(task)
            task.add_done_callback(self._resizes.discard)

        def forward_interrupt() -> None:
            with contextlib.suppress(OSError):
                sock.send(CTRL_C)

        loop.add_signal_handler(signal.SIGWINCH, resized)
        loop.add_signal_handler(signal.SIGINT, forward_interrupt)
        if self.interrupt is not None:  # the terminal closed: cancel, and clean up
            loop.add_signal_handler(signal.SIGHUP, self.interrupt.set)

    def _give_back_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_signal_handler(signal.SIGWINCH)
        loop.remove_signal_handler(signal.SIGHUP)
        for resize in self._resizes:  # the container is gone, or about to be
            resize.cancel()
        if self.interrupt is not None:
            loop.add_signal_handler(signal.SIGINT, self.interrupt.set)
        else:
            loop.remove_signal_handler(signal.SIGINT)

    async def _resize(self, backend: Backend, container_id: str) -> None:
        size = window_size(self.keys_fd)
        if size is None:
            return
        with contextlib.suppress(BackendError):  # it exited meanwhile: nothing to size
            await backend.resize(container_id, *size)

    def _release_events(self) -> None:
        held, self._held = self._held or [], None
        for event in held:
            if self._emit is not None:
                self._emit(event)
