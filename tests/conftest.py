"""Shared fixtures. Engine tests use the real Docker engine and the real images; they
fail (never skip) when no engine answers, so a green run always means they ran."""

from __future__ import annotations

import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# No registry here: testcontainers must not pull its reaper (ryuk). Every container a test
# starts is removed by its own fixture. Set before any test module imports testcontainers.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

REPO = Path(__file__).resolve().parent.parent
RUN_LABEL = "sandbox-orch.run"
# The real-cluster suite runs only through `make k8s-e2e` (scripts/k8s-e2e sets this),
# never in `make test`: it needs a cluster this machine does not have.
collect_ignore = [] if os.environ.get("SANDBOX_ORCH_K8S_E2E") == "1" else ["k8s_e2e"]


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        pytest.fail(f"no Docker engine answers ({error}); run `make engine` first")
    yield client
    client.close()


def engine_of(client):
    """Docker or Podman (sandbox_orch/backend/engines.py), as the backend tells them."""
    from sandbox_orch.backend.engines import identify

    return identify(client.version(), client.info())


@pytest.fixture(scope="session")
def built_images(docker_client):
    """The project's images, built if missing or stale (a no-op when up to date).
    $SANDBOX_ORCH_TEST_IMAGES names fewer (`make test-podman` loads only those)."""
    from sandbox_orch.images import build_images

    names = os.environ.get("SANDBOX_ORCH_TEST_IMAGES", "").split() or None
    return {o.name: o for o in build_images(docker_client, names, log=lambda _line: None)}


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    results: dict[str, Any] | None

    def node(self, name: str) -> dict[str, Any]:
        assert self.results is not None, self.stderr
        return self.results["nodes"][name]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A scratch directory holding the run store ($SANDBOX_ORCH_HOME)."""
    home = tmp_path / "store"
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(home))
    return tmp_path


def write_workflow(directory: Path, text: str, name: str = "workflow.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the real command line in a child process (as a user would)."""
    return subprocess.run(
        [sys.executable, "-m", "sandbox_orch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def run_workflow(directory: Path, text: str, *args: str, **kwargs: Any) -> CliResult:
    """Write a workflow, `sandbox-orch run` it, return exit code, output and results."""
    path = write_workflow(directory, text)
    results_path = directory / "results.json"
    proc = cli("run", str(path), "--ci", "--results", str(results_path), *args, **kwargs)
    results = json.loads(results_path.read_text()) if results_path.exists() else None
    return CliResult(proc.returncode, proc.stdout, proc.stderr, results)


def labelled_leftovers(client, run_id: str) -> list[str]:
    """Everything on the engine labelled as this run's. Always one run's: other runs
    (other tests, other engineers) share the engine."""
    assert run_id, "count only what this test's run created"
    selector = {"label": f"{RUN_LABEL}={run_id}"}
    found = [f"container {c.id[:12]}" for c in client.containers.list(all=True, filters=selector)]
    found += [f"network {n.id[:12]}" for n in client.networks.list(filters=selector)]
    found += [f"volume {v.name}" for v in client.volumes.list(filters=selector)]
    return found


def start_cli(*args: str, measured: bool = False) -> subprocess.Popen:
    """Start the command line without waiting (for interrupt tests). `measured`: through
    tests/peak_rss.py, so that wait_for_peak_rss can tell its own peak RSS."""
    command = [sys.executable, "-m", "sandbox_orch", *args]
    peak_file = None
    if measured:
        fd, peak_file = tempfile.mkstemp(prefix="peak-rss-")
        os.close(fd)
        command = [sys.executable, str(REPO / "tests" / "peak_rss.py"), peak_file, *command]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)  # fmt: skip
    proc.peak_file = peak_file  # type: ignore[attr-defined]
    return proc


def interrupt(
    proc: subprocess.Popen, signum: int = signal.SIGINT, timeout: float = 60
) -> tuple[int, str, str]:
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def unique(prefix: str) -> str:
    """A node name no other test (or engineer) uses, so engine events can be told apart."""
    return f"{prefix}-{secrets.token_hex(3)}"


def created_containers(docker_client, since: float, nodes: set[str]) -> list[dict[str, str]]:
    """Labels of every container the engine created since `since` for these node names:
    catches containers that were created and already removed, which a listing cannot.
    Podman's event filter takes only `key=value` labels: matched here instead."""
    if engine_of(docker_client).podman:
        events = podman_events(docker_client, since, {"type": "container", "event": "create"})
    else:
        events = docker_client.events(
            since=since,
            until=time.time(),
            filters={"type": "container", "event": "create", "label": "sandbox-orch.node"},
            decode=True,
        )
    found = [event["Actor"]["Attributes"] for event in events]
    return [labels for labels in found if labels.get("sandbox-orch.node") in nodes]


def podman_events(docker_client, since: float, filters: dict[str, str]) -> list[dict]:
    """Podman's (4.3) events since `since`, as many as its log has, without waiting: asked
    not to stream (its own query parameter), since it takes whole seconds and, streaming,
    stops reading its log at `until` on the clock, or delivers late, even with events left
    to read."""
    api = docker_client.api
    params = {
        "since": str(math.floor(since)),
        "stream": "false",
        "filters": json.dumps({key: [value] for key, value in filters.items()}),
    }
    response = api._get(api._url("/events"), params=params)
    response.raise_for_status()
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def created_by_process(docker_client, since: float, pid: int) -> list[dict[str, str]]:
    """Labels of every container the engine created since `since` for the sandbox-orch
    process `pid` (its owner label is host:pid:start): what that process created, and
    nothing another run on the shared engine did."""
    events = docker_client.events(
        since=since,
        until=time.time(),
        filters={"type": "container", "event": "create", "label": "sandbox-orch.owner"},
        decode=True,
    )
    prefix = f"{socket.gethostname()}:{pid}:"
    found = [event["Actor"]["Attributes"] for event in events]
    return [labels for labels in found if labels["sandbox-orch.owner"].startswith(prefix)]


def wait_for_peak_rss(proc: subprocess.Popen, deadline_s: float = 120) -> int:
    """Wait for a CLI started with start_cli(..., measured=True); its peak RSS in bytes.
    Its output pipes are left to read (it writes little: the view never echoes floods)."""
    try:
        proc.wait(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the CLI did not finish in time") from None
    peak = Path(proc.peak_file)  # type: ignore[attr-defined]
    try:
        return int(peak.read_text()) * 1024  # Linux reports KiB
    finally:
        peak.unlink()
