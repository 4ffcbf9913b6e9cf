"""The installable tool: a wheel built from this checkout, installed into a fresh virtual
environment outside the clone, and used from another directory as a user would.

Fast on purpose (CI's budget): the wheel is built once (pip, the build backend from PyPI's
cache), installed without its dependencies, which the new environment reads from the test
runner's environment through a .pth line. A .pth line adds a directory to sys.path but runs
none of the .pth files in it, so the runner's editable install of this clone stays out: the
package every command imports is the wheel's, and so are its shipped files (checked)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from sandbox_orch import __version__
from sandbox_orch.images import available_images, context_hash
from sandbox_orch.shipped import EXAMPLES_DIR, IMAGES_DIR, POLICIES_DIR

from ..conftest import REPO

pytestmark = pytest.mark.engine

# What the wheel must carry, by repository path -> path inside the package.
SHIPPED = {"images": "images", "policies": "policies", "configs/examples": "examples"}
# Build output and local state: never part of a build.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".sandbox-orch", "__pycache__", "*.pyc", "build", "dist", "*.egg-info",
    "mutants", ".pytest_cache", ".ruff_cache", ".hypothesis", "_shipped",
)  # fmt: skip


def shipped_files() -> dict[str, bool]:
    """Each file the wheel must carry (package path) -> whether it is executable."""
    files = {"sandbox_orch/_shipped/engine-up": True}
    for source, name in SHIPPED.items():
        for path in sorted((REPO / source).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                inside = f"sandbox_orch/_shipped/{name}/{path.relative_to(REPO / source)}"
                files[inside] = bool(path.stat().st_mode & 0o111)
    return files


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the new environment's bin directory, its site-packages), with the wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    started = time.monotonic()
    shutil.copytree(REPO, root / "src", ignore=NOT_SOURCE)  # the clone stays clean
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", root / "dist", root / "src"], check=True)
    [wheel] = (root / "dist").glob("sandbox_orch-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], check=True
    )
    print(f"wheel built and installed in {time.monotonic() - started:.1f}s")
    return wheel, venv / "bin", Path(site)


@pytest.fixture
def user(installed, tmp_path):
    """Runs an installed command from a directory outside the clone, with nothing of the
    clone on the path and no policy chosen by the environment."""
    _, bin_dir, _ = installed
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SANDBOX_ORCH_POLICY")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", SANDBOX_ORCH_HOME=str(tmp_path / "store"))

    def run(*args: str | Path, timeout: float = 120, **more: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, cwd=home,
            env={**env, **more}, timeout=timeout,
        )  # fmt: skip

    run.home = home
    run.reports = tmp_path  # outside what a node may mount
    return run


def test_the_wheel_carries_the_shipped_files_with_their_modes(installed):
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        modes = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
    carried = {name: bool(mode & 0o111) for name, mode in modes.items() if "/_shipped/" in name}
    assert carried == shipped_files()
    assert all(stat.S_ISREG(mode) for name, mode in modes.items() if name in carried)


def test_the_installed_tool_works_from_another_directory(installed, user, built_images):
    _, _, site = installed
    assert user("sandbox-orch", "--version").stdout == f"sandbox-orch, version {__version__}\n"
    # Shell completion as the README has it: the script, and what it asks the command.
    script = user("sandbox-orch", _SANDBOX_ORCH_COMPLETE="bash_source")
    assert "complete -o nosort -F _sandbox_orch_completion sandbox-orch" in script.stdout
    words = {"COMP_WORDS": "sandbox-orch i", "COMP_CWORD": "1"}
    offered = user("sandbox-orch", _SANDBOX_ORCH_COMPLETE="bash_complete", **words)
    assert offered.stdout.split() == ["plain,images", "plain,init"]

    # The package and every shipped file it uses are the installation's, not the clone's.
    where = user(
        "python", "-c",
        "import json, sandbox_orch, sandbox_orch.shipped as s; print(json.dumps("
        "[sandbox_orch.__file__, s.INSTALLED, str(s.IMAGES_DIR), str(s.POLICIES_DIR),"
        " str(s.EXAMPLES_DIR), str(s.ENGINE_UP)]))",
    )  # fmt: skip
    package, is_installed, *places = json.loads(where.stdout)
    assert Path(package).is_relative_to(site), where.stderr
    assert is_installed
    shipped = site / "sandbox_orch" / "_shipped"
    assert places == [str(shipped / n) for n in ("images", "policies", "examples", "engine-up")]

    # Its image build contexts are the clone's, byte for byte and executable bit for bit
    # (checked before `images build`, which would otherwise rebuild the shared images).
    for name in available_images(IMAGES_DIR):
        assert context_hash(shipped / "images" / name, {}) == context_hash(IMAGES_DIR / name, {})
    build = user("sandbox-orch", "images", "build", timeout=300)
    assert build.returncode == 0, build.stderr
    states = [line for line in build.stdout.splitlines() if line.startswith("sandbox-orch/")]
    expected = {f"sandbox-orch/{name}: up to date" for name in built_images}
    assert {line.split(" (")[0] for line in states} >= expected
    assert len(states) == len(set(states))  # each image said once

    # setup on the running engine: it is found and kept as it is.
    setup = user("sandbox-orch", "setup")
    assert setup.returncode == 0, setup.stderr
    assert "sandbox-orch setup: engine already answering" in setup.stderr
    assert "next: sandbox-orch images build" in setup.stdout

    # init, validate and run the starter files.
    init = user("sandbox-orch", "init")
    assert init.returncode == 0, init.stderr
    assert init.stdout.endswith("next: sandbox-orch run workflow.yaml --policy policy.yaml\n")
    check = user("sandbox-orch", "validate", "workflow.yaml", "--policy", "policy.yaml")
    assert check.stdout == "workflow.yaml: valid (3 nodes, policy starter)\n", check.stderr
    results = user.reports / "starter.json"
    run = user(
        "sandbox-orch", "run", "workflow.yaml", "--policy", "policy.yaml", "--ci",
        "--results", results,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    nodes = json.loads(results.read_text())["nodes"]
    assert {name: node["status"] for name, node in nodes.items()} == {
        "hello": "succeeded", "facts": "succeeded", "files": "succeeded",
    }  # fmt: skip
    assert "workflow.yaml" in nodes["files"]["stdout_tail"]  # the directory, mounted

    # The shipped hello example under the shipped default policy, named as users name it.
    results = user.reports / "hello.json"
    hello = shipped / "examples" / "hello.yaml"
    run = user("sandbox-orch", "run", hello, "--policy", "default", "--ci", "--results", results)
    assert run.returncode == 0, run.stderr
    outcome = json.loads(results.read_text())
    assert outcome["policy"]["path"] == str(shipped / "policies" / "default.yaml")
    assert outcome["nodes"]["greet"]["stdout_tail"] == "hello from a sandbox\n"
    assert outcome["nodes"]["whoami"]["stdout_tail"].startswith("uid=10001 gid=10001")

    # The other shipped names resolve too (here, where no such file is): the installation's
    # policies (POLICIES_DIR, checked above), loaded and applied.
    ci = user("sandbox-orch", "validate", hello, "--policy", "ci")
    assert ci.stdout == f"{hello}: valid (3 nodes, policy ci)\n", ci.stderr
    agents = user("sandbox-orch", "validate", hello, "--policy", "agents")
    assert agents.returncode == 2
    assert "runtime 'shell' is not granted by the policy" in agents.stderr
    unknown = user("sandbox-orch", "validate", hello, "--policy", "nope")
    names = ", ".join(sorted(path.stem for path in POLICIES_DIR.glob("*.yaml")))
    assert unknown.stderr == (
        f"policy: no policy file 'nope' here, nor a shipped policy of that name ({names})\n"
    )


def test_the_clone_files_are_what_this_process_ships():
    # The test above compares with these: the clone's own directories.
    assert IMAGES_DIR == REPO / "images"
    assert POLICIES_DIR == REPO / "policies"
    assert EXAMPLES_DIR == REPO / "configs" / "examples"
