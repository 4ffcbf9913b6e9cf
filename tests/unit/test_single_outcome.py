"""What `single` says at the end (issue 12, items 4 and 5): the agent's answer whole, its
own words on failure (else its stderr's last lines), every line escaped and bounded; the
run's last word held until the patch is written; a reader that went away (`| head`,
`>&-`) known as gone, so where the patch is goes to stderr; the diff out of reach of a
terminal's Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sandbox_orch.cli.single import _answer_at_the_end
from sandbox_orch.events import NodeFinished, NodeStarted, RunFinished
from sandbox_orch.single import _holding
from sandbox_orch.single.outcome import (
    LINE_CHARS,
    MAX_LINES,
    STDERR_LINES,
    STDOUT_LINES,
    closing_lines,
)
from sandbox_orch.stdout import write_line

from ..conftest import REPO

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def agent(status: str, result: str = "", is_error: bool = False, **rest) -> dict:
    return {"status": status, "outputs": {"result": result, "is_error": is_error}, **rest}


def test_a_succeeded_agent_s_answer_is_shown_whole_each_line_prefixed():
    answer = "Done.\n\nline 2\nline 3\nline 4\nline 5\n"
    assert closing_lines(agent("succeeded", answer)) == [
        "answer:",
        "  | Done.",
        "  | line 2",
        "  | line 3",
        "  | line 4",
        "  | line 5",
    ]


def test_an_answer_cannot_print_a_line_of_its_choosing():
    answer = "::add-mask::x\x1b[2Jcleared\rback\u2028::error::sep\x85\x0b\x0c\x1c"
    title, *lines = closing_lines(agent("succeeded", answer))
    assert title == "answer:" and lines[0] == "  | ::add-mask::x\\x1b[2Jcleared"
    assert lines[1:] == ["  | back", "  | ::error::sep"]  # every line ours, none of its own
    assert all(line.isprintable() for line in lines)


def test_a_long_answer_is_bounded_and_says_where_the_rest_is():
    answer = "\n".join(f"line {n}" for n in range(MAX_LINES + 5)) + "\n" + "x" * 5000
    lines = closing_lines(agent("succeeded", answer), "/runs/r/results.json")
    assert len(lines) == 1 + MAX_LINES + 1
    assert lines[-1] == "  | ... (6 more lines in /runs/r/results.json)"
    cut = closing_lines(agent("succeeded", "y" * 5000))[1]
    assert cut == "  | " + "y" * LINE_CHARS + "..."


def test_no_answer_and_a_command_that_succeeded_say_nothing():
    assert closing_lines(agent("succeeded", "  \n")) == []
    assert closing_lines({"status": "succeeded", "outputs": {}}) == []
    assert closing_lines({"status": "cancelled", "reason": "run interrupted"}) == []


def test_the_agent_s_own_error_is_the_error_and_no_stderr_follows():
    node = agent(
        "failed",
        "API Error: 400 refused",
        is_error=True,
        reason="the agent reported: API Error: 400 refused",
        stderr_tail="noise\n",
    )
    assert closing_lines(node) == ["error: the agent reported: API Error: 400 refused"]


def test_an_error_text_longer_than_the_reason_is_shown_whole():
    text = "API Error: first line\nsecond line with the detail\n"
    node = agent("failed", text, is_error=True, reason="the agent reported: API Error: first")
    assert closing_lines(node) == [
        "error: the agent reported: API Error: first",
        "the agent said:",
        "  | API Error: first line",
        "  | second line with the detail",
    ]


def test_without_the_agent_s_words_the_last_lines_of_stderr_follow():
    stderr = "".join(f"err {n}\n" for n in range(STDERR_LINES + 3))
    node = {"status": "failed", "reason": "exited with code 4", "stderr_tail": stderr}
    lines = closing_lines(node)
    assert lines[:2] == ["error: exited with code 4", "stderr (last lines):"]
    assert lines[2:] == [f"  | err {n}" for n in range(3, STDERR_LINES + 3)]
    timed_out = {"status": "timed_out", "reason": "killed after 2s", "stderr_tail": ""}
    assert closing_lines(timed_out) == ["error: killed after 2s"]


def test_a_failed_command_shows_its_stdout_s_last_lines_before_its_stderr_s():
    """`single shell -- pytest`: the failures are on stdout; not only "exited with code 1"."""
    stdout = "".join(f"out {n}\n" for n in range(STDOUT_LINES + 2))
    node = {
        "status": "failed", "runtime": "shell", "reason": "exited with code 1",
        "stdout_tail": stdout + "::error::x\n", "stderr_tail": "make: *** Error 1\n",
    }  # fmt: skip
    assert closing_lines(node) == [
        "error: exited with code 1",
        "stdout (last lines):",
        *[f"  | out {n}" for n in range(3, STDOUT_LINES + 2)],
        "  | ::error::x",
        "stderr (last lines):",
        "  | make: *** Error 1",
    ]
    # Succeeded, a command says nothing more (its output is in the results file).
    assert closing_lines({**node, "status": "succeeded", "outputs": {}}) == []


def test_a_failed_agent_s_stdout_is_its_event_stream_and_never_shown():
    node = {
        "status": "failed", "runtime": "claude", "reason": "exited with code 1",
        "stdout_tail": '{"type":"system"}\n', "stderr_tail": "boom\n",
    }  # fmt: skip
    assert closing_lines(node) == [
        "error: exited with code 1", "stderr (last lines):", "  | boom",
    ]  # fmt: skip


def test_a_reason_with_line_breaks_stays_one_line():
    node = {"status": "errored", "reason": "bad\nrun x succeeded", "stderr_tail": ""}
    assert closing_lines(node) == ["error: bad\\nrun x succeeded"]


def test_for_people_the_view_gets_no_answer_preview():
    seen = []
    show = _answer_at_the_end(seen.append)
    done = NodeFinished("single", "succeeded", 0, None, 1, 1.0, NOW, answer="Done.")
    started = NodeStarted("single", 1, NOW)
    show(started)
    show(done)
    assert seen == [started, NodeFinished("single", "succeeded", 0, None, 1, 1.0, NOW)]


def test_the_run_s_last_word_is_held_the_rest_passes():
    seen, held = [], []
    hold = _holding(seen.append, held)
    started = NodeStarted("single", 1, NOW)
    finished = RunFinished("r", "succeeded", NOW, 1.0)
    hold(started)
    hold(finished)
    assert (seen, held) == ([started], [finished])


def test_a_line_to_a_reader_that_went_away_says_so_and_so_does_every_later_one():
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    read_end, write_end = os.pipe()
    out = os.fdopen(write_end, "w")
    try:
        assert write_line(out, "first") is True
        assert os.read(read_end, 100) == b"first\n"
        os.close(read_end)
        assert write_line(out, "second") is False
        assert write_line(out, "third") is False  # /dev/null now: still gone
    finally:
        out.close()
        signal.signal(signal.SIGPIPE, previous)
    read_end, write_end = os.pipe()  # the same descriptor number, reused: not gone
    with os.fdopen(write_end, "w") as again:
        assert write_line(again, "fresh") is True
    assert os.read(read_end, 100) == b"fresh\n"
    os.close(read_end)


def test_started_with_stdout_closed_the_patch_line_goes_to_stderr():
    code = (
        "import sys\n"
        "from sandbox_orch.stdout import closed_stdout_to_devnull, write_line\n"
        "closed_stdout_to_devnull()\n"
        "print(write_line(sys.stdout, 'x'), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        ["sh", "-c", f'exec "{sys.executable}" -c "$0" >&-', code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert (proc.returncode, proc.stderr) == (0, "False\n")


def test_git_runs_in_its_own_process_group(tmp_path, monkeypatch):
    """A terminal's Ctrl-C goes to its foreground process group: the host's git (the
    diff, an apply), out of it, is not killed midway (the run ends and its patch is
    still written)."""
    from sandbox_orch.single.gitcommand import git_output

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/sh\nps -o pid=,pgid= -p $$\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    pid, pgid = git_output(["diff"], tmp_path).decode().split()
    assert pid == pgid and int(pgid) != os.getpgrp()


def test_the_patch_is_written_before_the_run_s_last_word(tmp_path, monkeypatch):
    """`run_finished` (the summary line, then `changes:`) comes once the patch is on disk:
    a reader gone or a Ctrl-C after it cannot lose the node's work."""
    import asyncio
    import json

    from sandbox_orch.backend.memory import MemoryBackend, Outcome
    from sandbox_orch.single import PATCH, WORKSPACE, SingleRequest, run_single

    from .helpers import default_policy

    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "store"))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "a.txt").write_text("a\n")

    def node(spec):  # the node's work: a new file in its copy of the workspace
        (mount,) = [m for m in spec.mounts if m.target == WORKSPACE]
        (Path(mount.source) / "new.txt").write_text("made by the node\n")
        return Outcome()

    on_disk_at_the_end = []

    def emit(event):
        if isinstance(event, RunFinished):
            results = json.loads(Path(event.results_path).read_text())
            (artifact,) = results["nodes"]["single"]["artifacts"]
            on_disk_at_the_end.append(Path(artifact["path"]).read_text())

    request = SingleRequest("shell", workspace, args=("sh", "-c", "true"))
    report = asyncio.run(
        run_single(request, default_policy(), MemoryBackend(node), "r1", emit, asyncio.Event())
    )
    assert report.patch is not None and report.patch.name == PATCH
    (patch,) = on_disk_at_the_end
    assert "+made by the node" in patch and patch == report.patch.read_text()
