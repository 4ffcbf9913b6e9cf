"""The host terminal lent to an interactive session, on a pseudo-terminal and the memory
backend: bytes both ways, raw mode always undone, window sizes forwarded, SIGINT passed
on as a Ctrl-C byte while attached (never cancelling the run), events held meanwhile."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import signal
import socket
import struct
import termios
import textwrap
import threading
import time

import pytest

from sandbox_orch.admission import admit
from sandbox_orch.backend.memory import MemoryBackend, Outcome
from sandbox_orch.execution import NodeRunner
from sandbox_orch.status import NodeStatus
from sandbox_orch.terminal import CTRL_C, HostTerminal, pump, raw_mode

from .helpers import plan_of
from .test_prompts import POLICY

DEADLINE_S = 10.0


def read_until(fd: int, marker: bytes) -> bytes:
    """Read `fd` (blocking, bounded in time) until `marker` has been seen."""
    seen, deadline = b"", time.monotonic() + DEADLINE_S
    while marker not in seen:
        assert time.monotonic() < deadline, f"no {marker!r} in {seen!r}"
        seen += os.read(fd, 4096)
    return seen


def set_size(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def test_pump_carries_keys_in_and_the_screen_out_until_the_container_side_closes():
    ours, theirs = socket.socketpair()
    keys_r, keys_w = os.pipe()
    screen_r, screen_w = os.pipe()
    stop_r, _stop_w = os.pipe()
    thread = threading.Thread(target=pump, args=(ours, keys_r, screen_w, stop_r))
    thread.start()
    os.write(keys_w, b"typed\x03")
    assert theirs.recv(100) == b"typed\x03"  # Ctrl-C is a byte like any other
    theirs.sendall(b"screen")
    assert read_until(screen_r, b"screen") == b"screen"
    theirs.close()  # the container exited
    thread.join(DEADLINE_S)
    assert not thread.is_alive()


def test_pump_stops_when_told_even_while_the_container_runs():
    ours, _theirs = socket.socketpair()
    keys_r, _keys_w = os.pipe()
    _screen_r, screen_w = os.pipe()
    stop_r, stop_w = os.pipe()
    thread = threading.Thread(target=pump, args=(ours, keys_r, screen_w, stop_r))
    thread.start()
    os.write(stop_w, b"x")
    thread.join(DEADLINE_S)
    assert not thread.is_alive()


def test_raw_mode_is_undone_also_when_the_body_fails():
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    with pytest.raises(RuntimeError), raw_mode(slave):
        lflag = termios.tcgetattr(slave)[3]
        # No line editing, no echo, and Ctrl-C / Ctrl-Z are bytes, not signals.
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)
        raise RuntimeError("boom")
    assert termios.tcgetattr(slave) == before
    os.close(master)
    os.close(slave)


def test_events_are_held_while_attached_and_shown_after():
    shown: list[str] = []
    terminal = HostTerminal()
    emit = terminal.holding(shown.append)
    emit("before")
    terminal._held = []  # what attached() does while a session runs
    emit("during")
    assert shown == ["before"]
    terminal._release_events()
    emit("after")
    assert shown == ["before", "during", "after"]


SESSION = """
    version: 1
    name: session
    nodes:
      single:
        runtime: claude
        command: [sandbox-orch-claude]
        outputs: {parse: {format: none}}
        secrets: []
        network: {egress: []}
"""


def test_a_session_on_the_memory_backend_end_to_end():
    """A node attached to a pseudo-terminal: its first screen arrives, typed keys and a
    SIGINT (as Ctrl-C) reach it, a SIGWINCH resizes it, and afterwards the terminal is as
    it was and SIGINT cancels runs again."""
    master, slave = pty.openpty()
    set_size(slave, 33, 101)
    before = termios.tcgetattr(slave)
    received: list[bytes] = []
    backend_holder: list[MemoryBackend] = []

    def container(sock: socket.socket) -> None:
        sock.sendall(b"READY> ")
        keys = b""
        while keys.count(CTRL_C) < 2:
            chunk = sock.recv(100)
            if not chunk:
                break
            keys += chunk
        received.append(keys)
        sock.sendall(b"bye\r\n")

    def user() -> None:
        """The person at the keyboard (and another process sending signals)."""
        read_until(master, b"READY> ")
        os.write(master, b"hello" + CTRL_C)
        set_size(slave, 40, 120)
        os.kill(os.getpid(), signal.SIGWINCH)
        deadline = time.monotonic() + DEADLINE_S
        while len(backend_holder[0].resizes) < 2:
            assert time.monotonic() < deadline, "the new window size never arrived"
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # passed on as Ctrl-C: ends the container
        read_until(master, b"bye")

    async def go():
        interrupt = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, interrupt.set)
        plan = plan_of(textwrap.dedent(SESSION))
        sandboxes = admit(plan, POLICY, environ={})
        backend = MemoryBackend(lambda spec: Outcome(terminal=container))
        backend_holder.append(backend)
        runner = NodeRunner(backend, "test-run", "owner")
        runner.terminal = HostTerminal(interrupt, keys_fd=slave, screen_fd=slave)
        person = threading.Thread(target=user, daemon=True)
        person.start()
        running = runner.attempt(plan.nodes["single"], sandboxes["single"], 1)
        attempt = await asyncio.wait_for(running, DEADLINE_S)
        await asyncio.to_thread(person.join, DEADLINE_S)
        assert not interrupt.is_set()  # the SIGINT during the session went to the agent
        specs = [c.spec for c in backend.containers.values()]
        await runner.close()
        os.kill(os.getpid(), signal.SIGINT)  # after it: the run's handler again
        await asyncio.wait_for(interrupt.wait(), DEADLINE_S)
        loop.remove_signal_handler(signal.SIGINT)
        return attempt, backend, specs

    attempt, backend, specs = asyncio.run(go())
    assert attempt.status == NodeStatus.SUCCEEDED, attempt.reason
    assert received == [b"hello" + CTRL_C + CTRL_C]
    assert [(rows, columns) for _, rows, columns in backend.resizes] == [(33, 101), (40, 120)]
    assert all(spec.tty for spec in specs)
    assert backend.containers == {}  # removed
    assert termios.tcgetattr(slave) == before
    os.close(master)
    os.close(slave)
