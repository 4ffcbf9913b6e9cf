"""Fixtures for the agent tests: the mock model API in its own container, the agents
policy pointed at it under each runtime, and API keys made for the test."""

from __future__ import annotations

import json
import secrets
import urllib.request
from pathlib import Path

import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from ..conftest import REPO

MOCK_DIR = REPO / "tests" / "mockapi"
ANSWER = "MOCK: all good"


@pytest.fixture(scope="module")
def mock_api(built_images):
    """The mock model API on the default bridge; yields its base URL (http://IP:8080)."""
    container = (
        DockerContainer("sandbox-orch/python")
        .with_volume_mapping(str(MOCK_DIR), "/mock", "ro")
        .with_env("MOCK_ANSWER", ANSWER)
        .with_command("python /mock/server.py 8080")
        .waiting_for(LogMessageWaitStrategy("mock model API on").with_startup_timeout(30))
    )
    with container:
        wrapped = container.get_wrapped_container()
        wrapped.reload()  # the address is known only once it runs
        address = wrapped.attrs["NetworkSettings"]["IPAddress"]
        yield f"http://{address}:8080"


def mock_requests(base_url: str) -> list[dict]:
    with urllib.request.urlopen(f"{base_url}/_requests", timeout=5) as response:
        return json.loads(response.read())


def for_the_mock(name: str, runtime: str, mock_api: str, directory: Path) -> Path:
    """The shipped policy `name` with the mock's address as the API host, under
    `runtime`; shell is granted too, for the nodes that probe the environment."""
    host = mock_api.removeprefix("http://")
    text = (REPO / "policies" / f"{name}.yaml").read_text()
    text = text.replace("api.anthropic.com:443", host).replace("api.openai.com:443", host)
    text = text.replace("oci_runtime: runsc", f"oci_runtime: {runtime}")
    text = text.replace("runtimes: [claude, codex]", "runtimes: [claude, codex, shell]")
    path = directory / f"{name}-{runtime}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(params=["runc", "runsc"])
def agent_policy(request, tmp_path, mock_api):
    """policies/agents.yaml for the mock (for_the_mock), under each runtime."""
    return for_the_mock("agents", request.param, mock_api, tmp_path), request.param


@pytest.fixture
def keys():
    return {
        "ANTHROPIC_API_KEY": f"sk-ant-e2e-{secrets.token_hex(12)}",
        "OPENAI_API_KEY": f"sk-openai-e2e-{secrets.token_hex(12)}",
    }


def tool_results_seen(requests: list[dict]) -> list[dict]:
    """What the agents' tools printed, as the mock received it ({is_error, content})."""
    return [result for request in requests for result in request.get("tool_results") or []]


def without_agent_rules(policy: Path) -> None:
    """The policy without its `agents:` section (the shipped one ends with it): for a
    test whose agent node runs its own command line, which agent rules refuse."""
    text = policy.read_text()
    policy.write_text(text[: text.index("\nagents:")] + "\n")
