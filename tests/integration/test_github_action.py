"""The GitHub Action (action.yml) on this machine: its steps are the phases of one script,
scripts/github-action, which these tests run with GitHub's environment files made here
(RUNNER_TEMP, GITHUB_OUTPUT, GITHUB_PATH). Only what GitHub itself provides (actions/cache,
actions/upload-artifact) is not run; the script's side of both is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO

pytestmark = pytest.mark.engine
SCRIPT = REPO / "scripts" / "github-action"
PHASES = ["key", "install", "images", "run"]
IMAGES = "shell python"  # what hello.yaml needs


def test_each_step_is_a_phase_of_the_script():
    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    commands = [step["run"] for step in action["runs"]["steps"] if "run" in step]
    assert commands == [f'"$GITHUB_ACTION_PATH/scripts/github-action" {p}' for p in PHASES]
    shells = {step["shell"] for step in action["runs"]["steps"] if "run" in step}
    assert shells == {"bash"}
    used = [step["uses"].split("@")[0] for step in action["runs"]["steps"] if "uses" in step]
    assert used == ["actions/cache", "actions/upload-artifact"]


def test_an_unknown_phase_is_refused(tmp_path):
    done = subprocess.run(
        [SCRIPT, "deploy"],
        env={**os.environ, "RUNNER_TEMP": str(tmp_path)},
        text=True,
        capture_output=True,
    )
    assert done.returncode == 2
    assert "usage: github-action key|install|images|run" in done.stderr


class Runner:
    """A job's environment as GitHub gives it to a composite action's steps."""

    def __init__(self, root: Path) -> None:
        self.temp = root / "runner-temp"
        self.workspace = root / "workspace"
        self.temp.mkdir()
        self.workspace.mkdir()
        self.output_file = root / "github-output"
        self.path_file = root / "github-path"

    def phase(self, name: str, **inputs: str) -> subprocess.CompletedProcess[str]:
        self.output_file.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_ORCH", "VIRTUAL"))}
        env.update(
            GITHUB_ACTION_PATH=str(REPO),
            RUNNER_TEMP=str(self.temp),
            GITHUB_OUTPUT=str(self.output_file),
            GITHUB_PATH=str(self.path_file),
            GITHUB_WORKSPACE=str(self.workspace),
            **inputs,
        )
        return subprocess.run(
            [SCRIPT, name],
            cwd=self.workspace,
            env=env,
            text=True,
            capture_output=True,
            timeout=600,
        )

    def outputs(self) -> dict[str, str]:
        lines = self.output_file.read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)


@pytest.fixture(scope="module")
def runner(built_images, tmp_path_factory):
    """One job: key, install (a fresh virtual environment of the tool, `setup` on the
    engine that already runs), images (only what hello.yaml needs)."""
    job = Runner(tmp_path_factory.mktemp("github"))
    key = job.phase("key", INPUT_IMAGES=IMAGES)
    assert key.returncode == 0, key.stderr
    job.key = job.outputs()
    installed = job.phase("install")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    yield job
    shutil.rmtree(job.temp / "sandbox-orch" / "home", ignore_errors=True)


def test_the_cache_key_follows_the_build_contexts(runner, tmp_path):
    assert runner.key["path"] == str(runner.temp / "sandbox-orch" / "images.tar")
    assert runner.key["key"].startswith("sandbox-orch-images-")
    assert "-shell+python-" in runner.key["key"]
    again = runner.phase("key", INPUT_IMAGES=IMAGES)
    assert again.returncode == 0 and runner.outputs()["key"] == runner.key["key"]
    # A copy elsewhere has the same key; a byte or a mode changed in a context, another.
    copy = tmp_path / "action"
    shutil.copytree(REPO / "images", copy / "images")
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    (copy / "scripts").mkdir()
    shutil.copy(SCRIPT, copy / "scripts" / "github-action")
    assert key_of(copy, tmp_path) == runner.key["key"]
    entrypoint = copy / "images" / "base" / "sandbox-orch-gate"
    entrypoint.chmod(0o644)
    assert key_of(copy, tmp_path) != runner.key["key"]
    entrypoint.chmod(0o755)
    assert key_of(copy, tmp_path) == runner.key["key"]
    with (copy / "images" / "shell" / "Dockerfile").open("a") as dockerfile:
        dockerfile.write("\n")
    assert key_of(copy, tmp_path) != runner.key["key"]


def key_of(action: Path, temp: Path) -> str:
    output = temp / "github-output"
    output.write_text("")
    done = subprocess.run(
        [action / "scripts" / "github-action", "key"],
        env={
            **os.environ,
            "RUNNER_TEMP": str(temp),
            "GITHUB_OUTPUT": str(output),
            "INPUT_IMAGES": IMAGES,
        },
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in output.read_text().splitlines())["key"]


def test_install_puts_the_tool_on_the_path_outside_the_clone(runner):
    bin_dir = Path(runner.path_file.read_text().strip())
    assert bin_dir == runner.temp / "sandbox-orch" / "venv" / "bin"
    where = subprocess.run(
        [bin_dir / "python", "-c", "import sandbox_orch; print(sandbox_orch.__file__)"],
        cwd=runner.workspace,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(bin_dir.parent)


def test_images_are_saved_for_the_cache_and_loaded_from_it(runner):
    tarball = Path(runner.key["path"])
    tarball.unlink(missing_ok=True)
    first = runner.phase("images", INPUT_IMAGES=IMAGES)
    assert first.returncode == 0, first.stderr
    assert "sandbox-orch/shell: " in first.stdout and "sandbox-orch/python: " in first.stdout
    saved = subprocess.run(
        ["tar", "-xOf", tarball, "manifest.json"], capture_output=True, text=True, check=True
    )
    tags = sorted(tag for image in json.loads(saved.stdout) for tag in image["RepoTags"])
    assert tags == [
        "sandbox-orch/base:latest",
        "sandbox-orch/bootstrap:bookworm",
        "sandbox-orch/python:latest",
        "sandbox-orch/shell:latest",
    ]
    # A cache hit loads the images and builds nothing (their labels match the contexts).
    hit = runner.phase("images", INPUT_IMAGES=IMAGES, CACHE_HIT="true")
    assert hit.returncode == 0, hit.stderr
    assert "loading the cached images" in hit.stderr
    assert "saving" not in hit.stderr
    assert ": built " not in hit.stdout


def test_run_writes_junit_results_and_outputs(runner):
    shutil.copy(REPO / "configs" / "examples" / "hello.yaml", runner.workspace / "hello.yaml")
    done = runner.phase("run", INPUT_WORKFLOW="hello.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = runner.outputs()
    assert outputs["exit-code"] == "0"
    results = json.loads(Path(outputs["results"]).read_text())
    assert results["status"] == "succeeded"
    run_dir = Path(outputs["run-dir"])
    assert run_dir == runner.temp / "sandbox-orch" / "home" / "runs" / results["run_id"]
    assert (run_dir / "results.json").is_file()
    suite = ET.parse(outputs["junit"]).getroot()
    cases = sorted(case.get("name") for case in suite.iter("testcase"))
    assert cases == ["greet", "python", "whoami"]
    assert "\x1b[" not in done.stdout  # --ci: plain lines


def test_a_failed_run_fails_the_step_and_still_reports(runner):
    (runner.workspace / "fails.yaml").write_text(
        "version: 1\nname: fails\nnodes:\n  broken:\n    runtime: shell\n    command: exit 7\n"
    )
    done = runner.phase("run", INPUT_WORKFLOW="fails.yaml", INPUT_ARGS="--max-parallel 1")
    assert done.returncode == 1, done.stdout + done.stderr
    outputs = runner.outputs()
    assert outputs["exit-code"] == "1"
    assert json.loads(Path(outputs["results"]).read_text())["nodes"]["broken"]["exit_code"] == 7
    assert Path(outputs["junit"]).is_file()


def test_refused_input_exits_2_with_no_results(runner):
    (runner.workspace / "bad.yaml").write_text("version: 1\nname: bad\nnodes: {}\nextra: 1\n")
    done = runner.phase("run", INPUT_WORKFLOW="bad.yaml")
    assert done.returncode == 2
    assert "bad.yaml" in done.stderr
    assert runner.outputs()["exit-code"] == "2"
    assert "results" not in runner.outputs()
