"""Bad files through the real command line: exit 2, one clear line, never a hang or a
traceback (`validate` and `run` alike; nothing reaches an engine). Bad numbers and other
refused documents are files in tests/corpus/refused (test_refused_corpus.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.conftest import cli

GOOD_WORKFLOW = "version: 1\nname: x\nnodes:\n  a: {command: [echo, hi]}\n"
TIMEOUT = 60  # a hang fails the test instead of the suite


def refused(*args: str) -> str:
    """Run the CLI; assert exit 2 with exactly one `FILE...: message` line and no
    traceback; return that line."""
    proc = cli(*args, timeout=TIMEOUT)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def special_files(tmp_path):
    """A FIFO, a link to it, a directory and a listening socket."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "fifo-link").symlink_to(tmp_path / "fifo")
    (tmp_path / "dir.yaml").mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "sock"))
    server.listen()
    yield tmp_path
    server.close()


CASES = [
    ("fifo", "a FIFO"),
    ("fifo-link", "a FIFO"),
    ("sock", "a socket"),
    ("/dev/zero", "a character device"),
    ("/dev/null", "a character device"),
]


@pytest.mark.parametrize(("name", "kind"), CASES)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_workflow_that_is_not_a_regular_file_is_refused(special_files, command, name, kind):
    path = str(special_files / name)
    extra = ["--ci"] if command == "run" else []
    line = refused(command, path, *extra)
    assert line == f"{path}: not a regular file ({kind})"


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_a_policy_that_is_not_a_regular_file_is_refused(special_files, name, kind):
    workflow = special_files / "wf.yaml"
    workflow.write_text(GOOD_WORKFLOW)
    path = str(special_files / name)
    line = refused("validate", str(workflow), "--policy", path)
    assert line == f"{path}: not a regular file ({kind})"


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "{dir}"],
        ["plan", "{dir}"],
        ["run", "{dir}", "--ci"],
        ["runtimes", "{dir}"],
        ["policy", "review", "{dir}"],
        ["policy", "review", "{policy}", "--workflow", "{dir}"],
        ["policy", "review", "{policy}", "--against", "{dir}"],
    ],
)
def test_a_directory_given_as_a_file_is_one_line(special_files, args):
    """Not click's multi-line usage error: the same line as any other bad file."""
    directory = str(special_files / "dir.yaml")
    policy = str(Path(__file__).resolve().parents[2] / "policies" / "default.yaml")
    line = refused(*[a.format(dir=directory, policy=policy) for a in args])
    assert line == f"{directory}: not a regular file (a directory)"


@pytest.mark.parametrize("command", ["validate", "run", "plan"])
def test_a_missing_workflow_is_one_line(tmp_path, command):
    path = str(tmp_path / "missing.yaml")
    assert refused(command, path) == f"{path}: cannot read: No such file or directory"


@pytest.mark.parametrize("option", ["--results", "--junit"])
@pytest.mark.parametrize(("name", "kind"), [("dir.yaml", "a directory"), ("fifo", "a FIFO")])
def test_a_report_file_that_is_not_a_regular_file_is_refused_before_the_run(
    special_files, option, name, kind
):
    """Written only after the run, it would fail then (exit 3); refused before anything."""
    workflow = special_files / "wf.yaml"
    workflow.write_text(GOOD_WORKFLOW)
    path = str(special_files / name)
    line = refused("run", str(workflow), "--ci", option, path)
    assert line == f"{path}: {option}: not a regular file ({kind})"


def test_a_policy_directory_is_refused(special_files):
    workflow = special_files / "wf.yaml"
    workflow.write_text(GOOD_WORKFLOW)
    line = refused("validate", str(workflow), "--policy", str(special_files / "dir.yaml"))
    assert line.endswith("dir.yaml: not a regular file (a directory)")


def test_a_schema_file_that_is_a_fifo_is_refused(special_files):
    workflow = special_files / "wf.yaml"
    workflow.write_text(
        "version: 1\nname: x\nnodes:\n  a:\n    command: [echo, '{}']\n"
        "    outputs: {parse: {format: json, schema: fifo}}\n"
    )
    line = refused("validate", str(workflow))
    assert "fifo" in line and "not a regular file (a FIFO)" in line


def test_policy_tmpfs_paths_are_normalised(tmp_path):
    from sandbox_orch.policy import load_policy

    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nname: p\nisolation: {tmpfs: {'//tmp/./x/': 1m}}\n")
    assert load_policy(Path(policy)).tmpfs == {"/tmp/x": 1024**2}


@pytest.mark.parametrize(("name", "kind"), [("fifo", "a FIFO"), ("fifo-link", "a FIFO"),
                                            ("dir.yaml", "a directory"),
                                            ("/dev/zero", "a character device")])  # fmt: skip
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_secret_file_that_is_not_a_regular_file_is_refused(special_files, command, name, kind):
    """Never opened (a FIFO would block the run): refused at admission, naming it."""
    path = special_files / name
    workflow = special_files / "wf.yaml"
    workflow.write_text("version: 1\nname: x\nnodes:\n  a: {command: [x], secrets: [T]}\n")
    policy = special_files / "policy.yaml"
    policy.write_text(
        f"version: 1\nname: p\nruntimes: [shell]\n"
        f"secrets:\n  T: {{from_file: '{path}', runtimes: [shell]}}\n"
    )
    extra = ["--ci"] if command == "run" else []
    line = refused(command, str(workflow), "--policy", str(policy), *extra)
    assert line.startswith(f"{workflow}:4: nodes.a.secrets[0]: "), line
    assert line.endswith(f"secret T: file {path}: not a regular file ({kind})"), line


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_workflow_or_policy_holding_a_control_character_is_one_line(tmp_path, command):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"version: 1\nname: x\x00\nnodes:\n  a: {command: [echo, hi]}\n")
    good = tmp_path / "wf.yaml"
    good.write_text(GOOD_WORKFLOW)
    extra = ["--ci"] if command == "run" else []
    expected = f"{bad}:2: invalid YAML: unprintable character U+0000 is not allowed"
    assert refused(command, str(bad), *extra) == expected
    assert refused(command, str(good), "--policy", str(bad), *extra) == expected


def test_a_regular_file_that_would_block_is_refused(tmp_path, monkeypatch):
    """/proc/kmsg is a regular file whose read blocks until the kernel logs: the
    non-blocking read gives None (which crashed). Not read here: that takes the host's
    kernel messages."""
    import io

    from sandbox_orch import yamlsafe
    from sandbox_orch.errors import InputRefused

    class WouldBlock(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> None:
            return None  # EAGAIN, as the raw file gives it

    path = tmp_path / "kmsg"
    path.write_text("a: 1\n")
    monkeypatch.setattr(yamlsafe.os, "fdopen", lambda fd, mode: (os.close(fd), WouldBlock())[1])
    with pytest.raises(InputRefused) as caught:
        yamlsafe.read_regular(path, 100)
    assert str(caught.value.problems[0]) == f"{path}: cannot read: it would block"
