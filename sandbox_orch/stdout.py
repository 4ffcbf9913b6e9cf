"""Lines to a stdout whose reader may go away (`| head`) or was never there (`>&-`):
the run goes on either way. Apart from the views (view.py), so that every command can
set this up without importing them."""

from __future__ import annotations

import os
import sys
from typing import TextIO

_GONE: set[int] = set()  # descriptors whose reader went away (now /dev/null)


def write_line(out: TextIO, line: str) -> bool:
    """One line, flushed; whether it reached a reader. A reader that went away (`| head`)
    stops the view, never the run: it goes on to the end and cleans up, its exit code
    unchanged, and what it would still print goes to /dev/null (so no later write, nor
    Python's exit flush, fails). False then, so what must not be lost (where the patch
    is) can be said on stderr instead."""
    if _gone(out):
        return False
    try:
        print(line, file=out, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
        _GONE.add(out.fileno())
        return False
    return True


def closed_stdout_to_devnull() -> None:
    """Started with stdout closed (`>&-`): /dev/null in its place, known as gone, so the
    run goes on as for a reader that went away (what must not be lost goes to stderr)."""
    if sys.stdout is not None:
        return
    fd = os.open(os.devnull, os.O_WRONLY)
    if fd != 1:
        os.dup2(fd, 1)
        os.close(fd)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (the process's own stdout)
    _GONE.add(1)


def _gone(out: TextIO) -> bool:
    """Redirected to /dev/null by us (a descriptor number reused since is not)."""
    try:
        fd = out.fileno()
        return fd in _GONE and os.path.samestat(os.fstat(fd), os.stat(os.devnull))
    except (OSError, ValueError):  # io.UnsupportedOperation (StringIO), closed
        return False
