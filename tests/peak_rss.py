"""Run a command as the child of this small process and write the command's peak RSS
(KiB, its ru_maxrss) to the file named first.

Why a launcher: a process forked straight from a big one (a pytest worker that has run
hundreds of tests) holds that process's resident pages until it execs, and Linux keeps
that high-water mark in the child's ru_maxrss across the exec. Forked from here, the
command starts from this interpreter's few megabytes, so its ru_maxrss is its own.

Usage: python tests/peak_rss.py OUT_FILE COMMAND [ARG...]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    pid = os.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    _, status, usage = os.wait4(pid, 0)
    out.write_text(str(usage.ru_maxrss))
    sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main()
