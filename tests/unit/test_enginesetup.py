"""`sandbox-orch setup`: the engine-up script's decisions (run against stand-in commands,
never the machine's engine), and how setup reports them."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox_orch import enginesetup
from sandbox_orch.cli import main
from sandbox_orch.enginesetup import (
    CALLER,
    RUNSC_ARGS,
    RUNSC_ENTRY,
    engine_up_command,
    gvisor_outcome,
    script_outcome,
)
from sandbox_orch.errors import ExitCode
from sandbox_orch.shipped import ENGINE_UP

# Every command the script could use to change the machine: each stand-in records its call
# and fails, so a test sees what the script tried.
CHANGERS = ("apt-get", "dockerd", "dpkg-deb", "install", "setsid", "sha256sum", "mv")


def stand_ins(tmp_path: Path, *, engine_answers: bool, uid: int, dockerd_pid: str = "") -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"

    def stub(name: str, body: str) -> None:
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n{body}\n')
        (bin_dir / name).chmod(0o755)

    stub("docker", f"exit {0 if engine_answers else 1}")
    stub("id", f"echo {uid}")
    stub("pidof", f"echo {dockerd_pid}; [ -n '{dockerd_pid}' ]")
    for name in CHANGERS:
        stub(name, "exit 99")
    return bin_dir


def run_script(
    tmp_path: Path, bin_dir: Path, **env: str
) -> tuple[subprocess.CompletedProcess, list[str]]:
    environ = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), **env}
    done = subprocess.run(
        ["bash", str(ENGINE_UP)], capture_output=True, text=True, env=environ, timeout=30
    )
    calls = tmp_path / "calls"
    return done, calls.read_text().splitlines() if calls.exists() else []


def test_an_answering_engine_is_used_as_it_is(tmp_path):
    done, calls = run_script(tmp_path, stand_ins(tmp_path, engine_answers=True, uid=1000))
    assert (done.returncode, done.stderr) == (0, "engine-up: engine already answering\n")
    assert calls == ["docker info", "id -u"]


def test_as_root_an_engine_that_is_not_a_local_dockerd_is_left_alone(tmp_path):
    # E.g. a remote DOCKER_HOST or another engine: nothing installed, nothing reloaded.
    bin_dir = stand_ins(tmp_path, engine_answers=True, uid=0)
    done, calls = run_script(tmp_path, bin_dir, ENGINE_UP_NAME=CALLER)
    assert (done.returncode, done.stderr) == (0, f"{CALLER}: engine already answering\n")
    # It looked for a local dockerd (on Debian, the only place it manages one), found none.
    debian = "\nID=debian" in "\n" + Path("/etc/os-release").read_text()
    assert calls == ["docker info", "id -u", *(["pidof dockerd"] if debian else [])]


def test_without_an_engine_and_root_it_says_what_to_install(tmp_path):
    bin_dir = stand_ins(tmp_path, engine_answers=False, uid=1000)
    done, calls = run_script(tmp_path, bin_dir, ENGINE_UP_NAME=CALLER)
    assert done.returncode == 3
    [line] = done.stderr.splitlines()  # one message
    assert line.startswith(f"{CALLER}: no Docker engine answers, and only root on Debian")
    assert "apt-get install docker.io" in line
    assert "https://docs.docker.com/engine/install/" in line
    assert "https://gvisor.dev/docs/user_guide/install/" in line
    # The registration it names is the one the script makes and setup checks for.
    named = json.loads(re.search(r"as (\{.*\}); then re-run", line).group(1))
    assert named == {"runtimes": RUNSC_ENTRY}
    assert calls == ["docker info", "id -u"]


def test_the_script_registers_the_arguments_setup_checks_for():
    script = ENGINE_UP.read_text()
    registered = re.search(r'"runtimeArgs": (\[[^\]]*\])', script).group(1)
    assert tuple(json.loads(registered)) == RUNSC_ARGS


# --- how setup reports the outcome ---------------------------------------------------


def test_the_script_runs_through_bash_whatever_its_mode():
    assert engine_up_command(Path("/x/engine-up"), bash="/bin/bash") == [
        "/bin/bash",
        "/x/engine-up",
    ]


@pytest.mark.parametrize(
    ("returncode", "code", "message"),
    [
        (0, ExitCode.OK, ""),
        (3, ExitCode.INFRASTRUCTURE, ""),  # the script said why
        (
            100,
            ExitCode.INFRASTRUCTURE,
            f"{CALLER}: setting up the engine failed (exit 100; see above)",
        ),
        (1, ExitCode.INFRASTRUCTURE, f"{CALLER}: setting up the engine failed (exit 1; see above)"),
    ],
)
def test_the_scripts_status_becomes_a_contract_code(returncode, code, message):
    outcome = script_outcome(returncode)
    assert (outcome.code, outcome.message) == (code, message)


def test_gvisor_registered_as_needed():
    args = [*RUNSC_ARGS, "--debug"]
    outcome = gvisor_outcome({"runc": [], "runsc": args}, require=True)
    assert (outcome.code, outcome.problem) == (ExitCode.OK, False)
    assert outcome.message == f"{CALLER}: gVisor: runtime runsc {' '.join(args)}"


@pytest.mark.parametrize(
    ("runtimes", "state"),
    [
        ({"runc": []}, "is not registered"),
        ({"runsc": ["--network=none"]}, "lacks --network=none --host-uds=open --oci-seccomp"),
    ],
)
@pytest.mark.parametrize("require", [False, True])
def test_gvisor_missing_is_explained_and_fails_only_when_required(runtimes, state, require):
    outcome = gvisor_outcome(runtimes, require=require)
    assert outcome.code == (ExitCode.INFRASTRUCTURE if require else ExitCode.OK)
    assert outcome.problem
    assert outcome.message.startswith(f"{CALLER}: gVisor (runtime runsc) {state}: policies with")
    assert json.dumps({"runtimes": RUNSC_ENTRY}) in outcome.message


@pytest.mark.parametrize(
    ("answers", "docker_command", "runs"),
    [(False, False, True), (False, True, True), (True, True, True), (True, False, False)],
)
def test_the_script_runs_unless_it_could_not_see_the_engine_that_answers(
    answers, docker_command, runs
):
    assert enginesetup.needs_script(answers, docker_command) is runs


NOWHERE = "unix:///nonexistent/docker.sock"  # no engine answers there


def test_setup_without_bash_says_so_and_exits_3(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)
    monkeypatch.setattr(enginesetup.shutil, "which", lambda _name: None)
    ran = []
    monkeypatch.setattr(enginesetup, "run_engine_up", ran.append)
    result = CliRunner().invoke(main, ["setup"])
    assert (result.exit_code, result.stderr) == (3, enginesetup.NO_BASH + "\n")
    assert ran == []


def test_setup_stops_at_a_failed_script(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)
    monkeypatch.setattr(enginesetup, "run_engine_up", lambda _command: 100)
    result = CliRunner().invoke(main, ["setup"])
    assert result.exit_code == 3
    assert result.stderr == f"{CALLER}: setting up the engine failed (exit 100; see above)\n"


def test_setup_fails_when_the_script_ends_well_but_no_engine_answers(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)
    monkeypatch.setattr(enginesetup, "run_engine_up", lambda _command: 0)
    result = CliRunner().invoke(main, ["setup"])
    assert result.exit_code == 3
    assert result.stderr == "sandbox-orch: no Docker engine answers after set-up (see above)\n"


def test_setup_hands_the_script_its_name(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)
    seen = {}

    def fake_run(command, env, check):
        seen.update(command=command, name=env["ENGINE_UP_NAME"])
        return subprocess.CompletedProcess(command, 3)

    monkeypatch.setattr(enginesetup.subprocess, "run", fake_run)
    result = CliRunner().invoke(main, ["setup"])
    assert (result.exit_code, result.stderr) == (3, "")
    assert seen == {"command": [seen["command"][0], str(ENGINE_UP)], "name": CALLER}
    assert os.path.basename(seen["command"][0]) == "bash"


def engine_with(monkeypatch, runtimes):
    """An engine that answers (as through DOCKER_HOST) where no docker command is."""
    info = {"ServerVersion": "26.1.5", "Runtimes": runtimes}
    monkeypatch.setattr(enginesetup, "engine_info", lambda: info)
    monkeypatch.setattr(enginesetup, "run_engine_up", lambda _command: pytest.fail("ran"))
    real_which = enginesetup.shutil.which
    monkeypatch.setattr(
        enginesetup.shutil, "which", lambda name: None if name == "docker" else real_which(name)
    )


def test_setup_keeps_an_engine_the_script_could_not_see(monkeypatch):
    engine_with(monkeypatch, {"runc": {}, "runsc": {"runtimeArgs": list(RUNSC_ARGS)}})
    result = CliRunner().invoke(main, ["setup", "--require-runsc"])
    assert result.exit_code == 0, result.output
    assert result.stderr == f"{CALLER}: engine already answering (no docker command here)\n"
    assert result.stdout.splitlines() == [
        f"{CALLER}: gVisor: runtime runsc {' '.join(RUNSC_ARGS)}",
        "engine ready: server version 26.1.5",
        "next: sandbox-orch images build",
    ]


@pytest.mark.parametrize(("require", "code"), [(False, 0), (True, 3)])
def test_setup_without_gvisor_says_what_is_missing(monkeypatch, require, code):
    engine_with(monkeypatch, {"runc": {}})
    result = CliRunner().invoke(main, ["setup", *(["--require-runsc"] if require else [])])
    assert result.exit_code == code
    assert f"{CALLER}: gVisor (runtime runsc) is not registered:" in result.stderr
    assert ("next: sandbox-orch images build" in result.stdout) is not require
