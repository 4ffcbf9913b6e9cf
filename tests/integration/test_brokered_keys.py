"""Brokered keys with the real CLIs, under runc and gVisor: the agents work through the
broker and the real key reaches the (TLS) mock model API, yet it is in no process's
environment, no file of the node, no `docker inspect`, no result, log or run store; the
placeholder is worth nothing elsewhere; the broker refuses what the policy does not list.

A node cannot search for a key it does not know, and redaction would hide a plain leak:
so the node dumps everything it can read REVERSED into an artifact, and the test
un-reverses it on the host and searches it there."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import cli, labelled_leftovers, start_cli, unique, write_workflow
from .conftest import ANSWER, MOCK_DIR, mock_requests, without_agent_rules

pytestmark = pytest.mark.engine

# Everything a process in the node can read of its environment and its writable places.
DUMP = (
    "{ env; for f in /proc/[0-9]*/environ; do echo \"== $f\"; tr '\\0' '\\n' < $f; done; "
    "find /tmp -type f -exec cat {} + ; } 2>/dev/null | rev > /out/dump/reversed.txt"
)


def store_text(workdir: Path) -> str:
    return "".join(
        p.read_text(errors="replace") for p in (workdir / "store").rglob("*") if p.is_file()
    )


def _live_container(docker_client, node: str, proc: subprocess.Popen, within: float = 90):
    """The node's container while it runs (its agent is held by the mock's HOLD)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and proc.poll() is None:
        found = docker_client.containers.list(filters={"label": f"sandbox-orch.node={node}"})
        if found and found[0].status == "running":
            return found[0]
        time.sleep(0.2)  # polling the engine for a real condition, not waiting blind
    out, err = proc.communicate()
    raise AssertionError(f"no running container for {node} (exit {proc.poll()}): {out}{err}")


def test_the_real_key_reaches_the_api_and_nowhere_in_the_node(
    agent_policy, mock_api, workdir, keys, docker_client, monkeypatch
):
    policy, runtime = agent_policy
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    without_agent_rules(policy)  # `dump` runs its own command line on the claude image
    key, tag = keys["ANTHROPIC_API_KEY"], secrets.token_hex(6)
    agent, dump = unique("agent"), unique("dump")
    path = write_workflow(
        workdir,
        f"""
        version: 1
        name: brokered
        nodes:
          {agent}:
            runtime: claude
            prompt: "HOLD:4 hello ({tag})"
          {dump}:
            runtime: claude
            command: {json.dumps(f"claude -p 'hi ({tag})' >/tmp/said && echo 'in a file ({tag})' >/tmp/f && {DUMP}")}
            outputs: {{parse: {{format: none}}, artifacts: [{{name: dump, path: /out/dump}}]}}
          codex:
            runtime: codex
            prompt: "hello ({tag})"
        """,
    )
    results_path = workdir / "results.json"
    proc = start_cli(
        "run", str(path), "--policy", str(policy), "--ci", "--results", str(results_path)
    )
    try:
        # docker inspect of the live agent: the placeholder, never the key
        inspected = json.dumps(_live_container(docker_client, agent, proc).attrs)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert key not in inspected and "ANTHROPIC_API_KEY=sandbox-orch-brokered-" in inspected
    results = json.loads(results_path.read_text())
    nodes = results["nodes"]
    assert nodes[agent]["outputs"]["result"] == ANSWER
    assert nodes["codex"]["outputs"]["result"] == ANSWER
    assert nodes[agent]["sandbox"]["oci_runtime"] == runtime
    assert nodes[agent]["sandbox"]["secret_delivery"] == {
        "ANTHROPIC_API_KEY": f"brokered to {mock_api}"
    }
    assert nodes[agent]["sandbox"]["egress"] == []
    # the real keys reached the mock, in their headers, and only through /v1/
    asked = [r for r in mock_requests(mock_api) if tag in json.dumps(r.get("history"))]
    anthropic = [r for r in asked if r["path"].startswith("/v1/messages")]
    openai = [r for r in asked if r["path"].startswith("/v1/responses")]
    assert anthropic and all(r["headers"].get("x-api-key") == key for r in anthropic)
    assert openai and all(
        r["headers"].get("authorization") == f"Bearer {keys['OPENAI_API_KEY']}" for r in openai
    )
    # the node's environments and files, un-reversed here: the placeholder, not the key
    (record,) = nodes[dump]["artifacts"]
    reversed_dump = (Path(record["path"]) / "reversed.txt").read_text(errors="replace")
    seen = "\n".join(line[::-1] for line in reversed_dump.splitlines())
    assert "ANTHROPIC_API_KEY=sandbox-orch-brokered-" in seen  # the dump did read them
    assert "== /proc/1/environ" in seen and f"in a file ({tag})" in seen
    for value in keys.values():
        assert value not in seen and value[::-1] not in reversed_dump
        assert value not in json.dumps(results) + out + err + store_text(workdir)
    assert labelled_leftovers(docker_client, results["run_id"]) == []


@pytest.fixture(scope="module")
def other_host():
    """Another host a node is granted: a plain-HTTP mock on 127.0.0.1 that records
    the headers it is sent."""
    proc = subprocess.Popen(
        [sys.executable, str(MOCK_DIR / "server.py"), "0", "--host", "127.0.0.1"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    port = proc.stdout.readline().strip().rsplit(":", 1)[-1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


PROBE = """
const http = require('http');
const key = process.env.ANTHROPIC_API_KEY, base = process.env.ANTHROPIC_BASE_URL;
const ask = (label, method, url) => new Promise(done => {
  const r = http.request({host: '127.0.0.1', port: 3128, method, path: url,
                          headers: {'x-api-key': key, 'content-length': 0}}, res => {
    res.resume(); res.on('end', () => { console.log(label, res.statusCode); done(); });
  });
  r.on('error', e => { console.log(label, 'error', e.code); done(); });
  r.end();
});
(async () => {
  await ask('elsewhere', 'POST', 'http://OTHER/v1/messages');
  await ask('path', 'GET', base + '/admin/keys');
  await ask('dotdot', 'GET', base + '/v1/../admin');
  await ask('method', 'DELETE', base + '/v1/messages');
  await ask('allowed', 'GET', base + '/v1/models');
})();
"""


def test_the_placeholder_is_worthless_elsewhere_and_the_broker_keeps_to_its_prefix(
    agent_policy, mock_api, other_host, workdir, keys, docker_client
):
    policy, runtime = agent_policy
    without_agent_rules(policy)  # the probe runs its own command line on the claude image
    text = policy.read_text().replace("egress: []", f'egress: ["{other_host}"]')
    policy.write_text(text)
    key, probe = keys["ANTHROPIC_API_KEY"], unique("probe")
    before = len(mock_requests(mock_api))
    path = write_workflow(
        workdir,
        f"""
        version: 1
        name: placeholder
        nodes:
          {probe}:
            runtime: claude
            network: {{egress: ["{other_host}"]}}
            outputs: {{parse: {{format: none}}}}
            command: ["node", "-e", {json.dumps(PROBE.replace("OTHER", other_host))}]
        """,
    )
    results_path = workdir / "results.json"
    proc = cli(
        "run", str(path), "--policy", str(policy), "--ci", "--results", str(results_path),
        env=keys,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    node = json.loads(results_path.read_text())["nodes"][probe]
    assert node["sandbox"]["oci_runtime"] == runtime
    said = node["stdout_tail"].splitlines()
    assert said == ["elsewhere 200", "path 403", "dotdot 403", "method 403", "allowed 200"]
    # the other host answered, but it saw only the placeholder
    (elsewhere,) = mock_requests(f"http://{other_host}")[-1:]
    assert elsewhere["path"] == "/v1/messages"
    assert elsewhere["headers"]["x-api-key"].startswith("sandbox-orch-brokered-")
    # the broker forwarded only the allowed request, with the real key
    (forwarded,) = mock_requests(mock_api)[before:]
    assert (forwarded["method"], forwarded["path"]) == ("GET", "/v1/models")
    assert forwarded["headers"]["x-api-key"] == key
    kinds = [v["kind"] for v in node["violations"]]
    assert kinds == ["broker", "broker", "broker"], node["violations"]
    details = " ".join(v["detail"] for v in node["violations"])
    assert "/admin/keys" in details and "DELETE" in details and key not in details
    assert labelled_leftovers(docker_client, json.loads(results_path.read_text())["run_id"]) == []
