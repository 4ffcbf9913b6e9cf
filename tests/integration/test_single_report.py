"""`single` saying what happened, and never losing the work (issue 12, items 4 and 5),
on the real engine: the agent's answer and its own error text after the run; a dead
model endpoint said within 30 s (the egress proxy's report), not after minutes of the
CLI's silent retries; a reader that goes away (`| head`) or a Ctrl-C keeps the patch,
says where it is, and prints no traceback. Runtime-independent: runc only."""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ..conftest import REPO, cli, labelled_leftovers, start_cli, write_workflow
from .conftest import ANSWER

pytestmark = pytest.mark.engine
RUNC = pytest.mark.parametrize("agent_policy", ["runc"], indirect=True)
SAID_WITHIN = 30.0  # seconds: the promise for an unreachable endpoint


def _lines(proc: subprocess.Popen) -> queue.Queue:
    """stdout's lines as they arrive (None at its end), read by a thread of their own so
    the test can wait on them with a deadline."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _finish(proc: subprocess.Popen, lines: queue.Queue, timeout: float = 120) -> str:
    """Its stderr once it exited, after _lines' reader saw stdout end (communicate would
    read stdout from under that reader)."""
    deadline = time.monotonic() + timeout
    while lines.get(timeout=max(deadline - time.monotonic(), 0.01)) is not None:
        pass
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
    return err


def _wait_for(lines: queue.Queue, pattern: str, deadline: float) -> tuple[str, list[str]]:
    """The first line matching `pattern`, and every line before it; fails at `deadline`."""
    seen: list[str] = []
    while True:
        left = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(left, 0.01))
        except queue.Empty:
            raise AssertionError(f"no line matching {pattern!r} in time: {seen}") from None
        if line is None:
            raise AssertionError(f"output ended with no line matching {pattern!r}: {seen}")
        if re.search(pattern, line):
            return line, seen
        seen.append(line)


def _run_id(first_line: str) -> str:
    return first_line.split()[1].rstrip(":")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _changes(stderr: str) -> Path:
    """The patch named on stderr's `changes:` line."""
    (line,) = [line for line in stderr.splitlines() if line.startswith("changes: ")]
    return Path(line.removeprefix("changes: ").split(" (")[0])


@pytest.fixture
def workspace(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text("print('hello')\n")
    return project


# --- item 4: what the agent said ---------------------------------------------------------------


@RUNC
def test_single_prints_the_agent_s_answer_and_on_failure_its_own_error(
    agent_policy, mock_api, workspace, workdir, keys
):
    policy, _ = agent_policy
    common = ("--workspace", str(workspace), "--policy", str(policy), "--ci")
    proc = cli("single", "claude", *common, "--prompt", "say hello", env=keys)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert f"\nanswer:\n  | {ANSWER}\n" in proc.stdout
    assert "    > " not in proc.stdout  # once, whole, not also as the view's preview
    assert "Traceback" not in proc.stderr
    failed = cli("single", "claude", *common, "--prompt", "MOCK_ERROR", env=keys)
    assert failed.returncode == 1, failed.stderr + failed.stdout
    (error,) = [line for line in failed.stdout.splitlines() if line.startswith("error: ")]
    assert error.startswith("error: the agent reported: API Error: 400")
    assert "mock: this request is refused" in error


@RUNC
def test_single_codex_prints_its_answer(agent_policy, mock_api, workspace, workdir, keys):
    policy, _ = agent_policy
    proc = cli(
        "single", "codex", "--workspace", str(workspace), "--policy", str(policy), "--ci",
        "--prompt", "say hello", env=keys,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert f"\nanswer:\n  | {ANSWER}\n" in proc.stdout


@RUNC
def test_an_unreachable_model_endpoint_is_said_within_30_seconds(
    agent_policy, workspace, workdir, keys, monkeypatch, docker_client
):
    """The real Claude CLI, its API host granted but dead (nothing listens there): the
    proxy's failed connection is on the terminal within 30 s, while the CLI would retry
    in silence for minutes. Ctrl-C then ends it, leaving nothing behind."""
    policy, _ = agent_policy
    dead = f"127.0.0.1:{_free_port()}"  # the brokered upstream; refused at connect
    text = policy.read_text()
    upstream = re.search(r'upstream: "(https://[^"]+)"', text).group(1)  # the mock's
    policy.write_text(text.replace(upstream, f"https://{dead}"))
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    proc = start_cli(
        "single", "claude", "--workspace", str(workspace), "--policy", str(policy), "--ci",
        "--prompt", "hello",
    )  # fmt: skip
    try:
        lines = _lines(proc)
        first, _ = _wait_for(lines, r"^run ", started + SAID_WITHIN)
        said, _ = _wait_for(lines, "cannot reach", started + SAID_WITHIN)
    finally:
        proc.send_signal(signal.SIGINT)
        err = _finish(proc, lines)
    assert said == f"  network single: cannot reach {dead}: connection refused\n"
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert labelled_leftovers(docker_client, _run_id(first)) == []


# --- item 5: never lose the work -----------------------------------------------------------------


def test_single_piped_into_head_keeps_the_patch_and_its_exit_code(workspace, workdir):
    """`single ... | head -1`: the reader goes after the first line; the run goes on, the
    patch is written, its path said on stderr, and the exit code is the run's (0), not
    an internal error's (3)."""
    proc = start_cli(
        "single", "shell", "--workspace", str(workspace), "--",
        "sh", "-c", "echo changed > new.txt",
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # as head does
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.wait(timeout=120) == 0, err
    assert first.startswith("run ") and "Traceback" not in err
    patch = _changes(err).read_text()
    assert "+++ b/new.txt" in patch and "+changed" in patch


def test_run_piped_into_head_exits_as_the_run_did(workdir, docker_client):
    path = write_workflow(workdir, "version: 1\nname: piped\nnodes:\n  a: {command: [echo, hi]}\n")
    proc = start_cli("run", str(path), "--ci")
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.wait(timeout=120) == 0, err
    assert err == ""
    assert labelled_leftovers(docker_client, _run_id(first)) == []


def test_run_started_with_stdout_closed_exits_as_the_run_did(workdir):
    """`run ... >&-` (was: a traceback, exit 3, before anything ran)."""
    path = write_workflow(workdir, "version: 1\nname: closed\nnodes:\n  a: {command: [echo, hi]}\n")
    results = workdir / "results.json"
    proc = subprocess.run(
        ["sh", "-c", 'exec "$0" -m sandbox_orch "$@" >&-', sys.executable, "run", str(path),
         "--results", str(results)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, "")
    assert json.loads(results.read_text())["nodes"]["a"]["status"] == "succeeded"


def test_single_started_with_stdout_closed_keeps_the_patch(workspace, workdir):
    """`single ... >&-`: no stdout at all is no traceback; the patch's path on stderr."""
    proc = subprocess.run(
        ["sh", "-c", 'exec "$0" -m sandbox_orch "$@" >&-', sys.executable, "single", "shell",
         "--workspace", str(workspace), "--", "sh", "-c", "echo changed > new.txt"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "+changed" in _changes(proc.stderr).read_text()


def test_ctrl_c_keeps_what_the_node_changed_so_far(workspace, workdir, docker_client):
    """SIGINT while the node runs, once it has written its file: exit 130, the patch of
    what it changed so far kept and its path on stderr, nothing left on the engine."""
    marker = f"marker-{time.monotonic_ns()}.txt"
    proc = start_cli(
        "single", "shell", "--workspace", str(workspace), "--",
        "sh", "-c", f"echo partial > {marker}; sleep 120",
    )  # fmt: skip
    lines = _lines(proc)
    first, _ = _wait_for(lines, r"^run ", time.monotonic() + 120)
    deadline = time.monotonic() + 120
    while not list((workdir / "store").rglob(marker)):  # the node's copy has its file
        assert time.monotonic() < deadline and proc.poll() is None, "the node never wrote"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = _finish(proc, lines)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"+++ b/{marker}" in _changes(err).read_text()
    assert labelled_leftovers(docker_client, _run_id(first)) == []
