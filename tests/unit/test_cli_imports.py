"""A command line that answers at once: each command imports only what it uses.

Each case runs the real command line in a child process (imports are per process) and
fails when a module it must not need was imported: `--help` imports none of the engine's
client, CEL, the views or the validation libraries; `validate` and `plan` check a
workflow without the engine's client, the event loop's runner or the views. The figures
are bench/cli_latency.py's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

HELLO = "configs/examples/hello.yaml"

# Run the command line as `python -m sandbox_orch` does, then list what was imported
# (also when the command exits, as click's commands do).
PROGRAM = """
import json, sys
out = sys.argv[1]
sys.argv = ["sandbox-orch", *sys.argv[2:]]
try:
    from sandbox_orch.cli import main
    main()
finally:
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
"""

# What no command's help or version needs: the heavy libraries and our modules that do
# a command's work.
NOT_FOR_HELP = (
    "docker", "celpy", "lark", "rich", "pydantic", "jsonschema", "asyncio", "yaml",
    "cerberus", "psutil", "pendulum", "re2", "h11", "urllib.request",
    "sandbox_orch.orchestrator", "sandbox_orch.view", "sandbox_orch.conditions",
    "sandbox_orch.cel", "sandbox_orch.policy", "sandbox_orch.planning",
    "sandbox_orch.backend", "sandbox_orch.engine", "sandbox_orch.single.request",
    "kubernetes", "aiohttp", "kmock",
)  # fmt: skip
# Checking a workflow starts nothing: no engine client, no views, no run machinery, no
# event loop; and hello.yaml has no conditions or output schemas: no CEL, no jsonschema.
NOT_FOR_CHECKING = (
    "docker", "rich", "psutil", "asyncio", "h11", "ssl", "celpy", "lark", "jsonschema",
    "sandbox_orch.orchestrator", "sandbox_orch.view", "sandbox_orch.engine",
    "sandbox_orch.backend.docker", "sandbox_orch.scheduler", "sandbox_orch.execution",
    "sandbox_orch.cel.tables", "sandbox_orch.egress.proxy", "sandbox_orch.artifacts.volumes",
)  # fmt: skip

CASES = [
    (["--help"], "Usage:", NOT_FOR_HELP),
    (["--version"], "sandbox-orch, version", NOT_FOR_HELP),
    (["run", "--help"], "Run a workflow", NOT_FOR_HELP),
    (["validate", "--help"], "Parse, check the graph", NOT_FOR_HELP),
    (["single", "--help"], "One node of RUNTIME", NOT_FOR_HELP),
    (["policy", "review", "--help"], "Security review of a policy", NOT_FOR_HELP),
    (["setup", "--help"], "Install and start the Docker engine", NOT_FOR_HELP),
    (["init", "--help"], "Write a starter workflow and policy", NOT_FOR_HELP),
    (["schema", "--help"], "Print the JSON Schema", NOT_FOR_HELP),
    (["export", "--help"], "Print WORKFLOW as an Argo Workflow", NOT_FOR_HELP),
    (["doctor", "--help"], "--backend [docker|kubernetes]", NOT_FOR_HELP),
    (["run", "--help"], "--runtime-class OCI=CLASS", NOT_FOR_HELP),
    (["validate", HELLO], f"{HELLO}: valid (3 nodes, policy default)", NOT_FOR_CHECKING),
    (["plan", HELLO], "greet", NOT_FOR_CHECKING),
]


def imported_by(
    args: list[str], tmp_path, prelude: str = ""
) -> tuple[subprocess.CompletedProcess, set[str]]:
    listing = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", prelude + PROGRAM, str(listing), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    return done, set(json.loads(listing.read_text()))


def forbidden_among(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules for f in forbidden if m == f or m.startswith(f + "."))


@pytest.mark.parametrize(
    ("args", "says", "forbidden"), CASES, ids=[" ".join(case[0]) for case in CASES]
)
def test_a_command_imports_only_what_it_uses(args, says, forbidden, tmp_path):
    done, modules = imported_by(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert says in done.stdout  # the command did its work
    assert "sandbox_orch.cli" in modules  # and the listing is the command's
    assert forbidden_among(modules, forbidden) == []


def test_the_check_fails_for_a_command_that_imports_the_engines_client(tmp_path):
    # As if cli/__init__.py imported docker at its top.
    done, modules = imported_by(["--help"], tmp_path, prelude="import docker\n")
    assert done.returncode == 0
    assert "docker" in forbidden_among(modules, NOT_FOR_HELP)
