"""Fixtures for the agent tests: the mock model API (over TLS on the host, the brokered
keys' upstream; over plain HTTP in a container, for the environment mode), the agents
policy pointed at it under each runtime, and API keys made for the test."""

from __future__ import annotations

import json
import os
import re
import secrets
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import trustme
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from ..conftest import REPO

MOCK_DIR = REPO / "tests" / "mockapi"
ANSWER = "MOCK: all good"


class MockAPI(str):
    """The mock's base URL; `ca` is the test CA that signed its certificate (HTTPS)."""

    ca: Path | None = None


def _tls_mock(directory: Path) -> tuple[subprocess.Popen[str], MockAPI]:
    """The mock as a host process on 127.0.0.1 (where the host-side proxy reaches it),
    over TLS with a certificate for IP 127.0.0.1 from a CA made for the test."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(directory / "server.pem")
    )
    proc = subprocess.Popen(
        [sys.executable, str(MOCK_DIR / "server.py"), "0", "--host", "127.0.0.1",
         "--tls", str(directory / "server.pem")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "MOCK_ANSWER": ANSWER},
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once it listens (or EOF if it died)
    found = re.fullmatch(r"mock model API on :(\d+)\n", line)
    if found is None:
        proc.kill()
        raise RuntimeError(f"the TLS mock did not start: {line!r}")
    url = MockAPI(f"https://127.0.0.1:{found.group(1)}")
    url.ca = directory / "ca.pem"
    return proc, url


@pytest.fixture(scope="module")
def mock_api(built_images, tmp_path_factory):
    """The mock model API over TLS on the host: the brokered keys' upstream. Yields its
    base URL (https://127.0.0.1:PORT, with `.ca`). The agents' images are built first,
    as every test using the mock runs them."""
    proc, url = _tls_mock(tmp_path_factory.mktemp("mock-tls"))
    try:
        yield url
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def mock_api_plain(built_images):
    """The mock over plain HTTP in its own container on the default bridge, for the
    environment mode (the CLI reaches it itself, through the proxy): http://IP:8080."""
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
        yield MockAPI(f"http://{address}:8080")


def mock_requests(base_url: str) -> list[dict]:
    ca = getattr(base_url, "ca", None)
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    with urllib.request.urlopen(f"{base_url}/_requests", timeout=5, context=context) as answer:
        return json.loads(answer.read())


def for_the_mock(name: str, runtime: str, mock_api: str, directory: Path) -> Path:
    """The shipped policy `name` under `runtime`, its model APIs replaced by the mock;
    shell is granted too, for the nodes that probe the environment. Over HTTPS (the
    TLS mock), the keys stay brokered, with the mock as upstream and its test CA; over
    plain HTTP, they are delivered in the environment (the CLI reaches the mock
    itself, its host granted)."""
    text = (REPO / "policies" / f"{name}.yaml").read_text()
    if mock_api.startswith("https://"):
        upstream = f'"{mock_api}", ca_bundle: "{getattr(mock_api, "ca", "")}"'
        for api in ('"https://api.anthropic.com"', '"https://api.openai.com"'):
            text = text.replace(api, upstream)
    else:
        host = mock_api.removeprefix("http://")
        text = re.sub(r"\n *broker: \{[^}]*\}", "", text)
        text = text.replace("egress: []", f'egress: ["{host}"]')
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
