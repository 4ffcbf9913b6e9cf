"""`single --continue RUN_ID` and the agents' logins with the real CLIs against the mock
model API (issue 12, items 6 and 7): a second run carries the first session's history,
the kept session holds no secret, the host's agent logins are never mountable."""

from __future__ import annotations

import json
import secrets
import textwrap
import time
from pathlib import Path

import pytest

from ..conftest import REPO, cli, created_containers, unique
from .conftest import mock_requests

pytestmark = pytest.mark.engine


def single(runtime: str, workspace: Path, policy: Path, prompt: str, *extra: str, env: dict):
    results = workspace.parent / f"results-{secrets.token_hex(4)}.json"
    proc = cli(
        "single", runtime, "--workspace", str(workspace), "--policy", str(policy), "--ci",
        "--prompt", prompt, "--results", str(results), *extra, env=env,
    )  # fmt: skip
    return proc, (json.loads(results.read_text()) if results.exists() else None)


def run_id_of(proc) -> str:
    """The run id the continuation hint names (and that only a kept session prints)."""
    line = next(li for li in proc.stdout.splitlines() if li.startswith("session kept:"))
    return line.split("--continue ")[1].split()[0]


def store_text(store: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in store.rglob("*") if p.is_file())


def histories(requests: list[dict], path: str) -> list[list[str]]:
    return [r["history"] for r in requests if r["path"].startswith(path) and r.get("history")]


def test_claude_continues_its_session_from_the_kept_state(
    agent_policy, mock_api, tmp_path, workdir, keys
):
    policy, runtime = agent_policy
    workspace = tmp_path / "project"
    workspace.mkdir()
    (workspace / "app.py").write_text("print('hello')\n")
    marker, key = f"REMEMBER-{secrets.token_hex(4)}", keys["ANTHROPIC_API_KEY"]
    env = {**keys, "CLAUDE_CODE_OAUTH_TOKEN": ""}
    base: tuple[str, ...] = ()  # the broker's URL is set by sandbox-orch
    before = len(mock_requests(mock_api))
    first, _ = single("claude", workspace, policy, f"{marker} the key is {key}", *base, env=env)
    assert first.returncode == 0, first.stderr + first.stdout
    earlier = run_id_of(first)
    store = workdir / "store"
    kept = store / "runs" / earlier / "session" / "claude"
    assert [p.suffix for p in kept.rglob("*") if p.is_file()] == [".jsonl"]
    assert marker in store_text(kept)  # the conversation is kept ...
    assert key not in store_text(store)  # ... and no secret anywhere in the store
    assert not (store / "runs" / earlier / "single").exists()  # the scratch copies are gone

    second, results = single(
        "claude", workspace, policy, "WRITE_FILE:/workspace/NOTES.md what did I say",
        *base, "--continue", earlier, env=env,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr + second.stdout
    asked = histories(mock_requests(mock_api)[before:], "/v1/messages")
    first_asked, *later = asked
    assert not any("what did I say" in text for text in first_asked)
    # The continued run's first request carries the first session's prompt, then its own.
    resumed = later[0]
    assert any(marker in text for text in resumed), resumed
    assert "what did I say" in resumed[-1] and key not in json.dumps(later)
    # Its own fresh workspace copy, its own patch; the node saw a copy, never the store.
    node = results["nodes"]["single"]
    assert node["sandbox"]["oci_runtime"] == runtime
    patch = Path(node["artifacts"][0]["path"]).read_text()
    assert "+++ b/NOTES.md" in patch and "app.py" not in patch
    mounts = {m["target"]: m["source"] for m in node["sandbox"]["mounts"]}
    assert str(store / "runs" / results["run_id"]) in mounts["/tmp/.claude"]
    assert not any(str(kept) in source or earlier in source for source in mounts.values())
    assert sorted(workspace.iterdir()) == [workspace / "app.py"]  # untouched


@pytest.mark.parametrize("agent_policy", ["runc"], indirect=True)  # runtime-independent
def test_codex_resumes_its_session_in_exec_mode(agent_policy, mock_api, tmp_path, workdir, keys):
    policy, _ = agent_policy
    workspace = tmp_path / "project"
    workspace.mkdir()
    marker, key = f"REMEMBER-{secrets.token_hex(4)}", keys["OPENAI_API_KEY"]
    base: tuple[str, ...] = ()  # the broker's URL is set by sandbox-orch
    before = len(mock_requests(mock_api))
    first, _ = single("codex", workspace, policy, f"{marker} the key is {key}", *base, env=keys)
    assert first.returncode == 0, first.stderr + first.stdout
    earlier = run_id_of(first)
    assert key not in store_text(workdir / "store")
    second, _ = single("codex", workspace, policy, "go on", *base, "--continue", earlier, env=keys)
    assert second.returncode == 0, second.stderr + second.stdout
    first_asked, resumed = histories(mock_requests(mock_api)[before:], "/v1/responses")
    assert any(marker in text for text in first_asked) and "go on" not in first_asked
    assert any(marker in text for text in resumed) and resumed[-1] == "go on"
    assert key not in json.dumps(resumed)
    # A codex run is no claude session to continue: refused, no run started (the store is
    # this test's own).
    runs = sorted((workdir / "store" / "runs").iterdir())
    third, _ = single("claude", workspace, policy, "x", "--continue", earlier, env=keys)
    assert third.returncode == 2, third.stderr
    assert third.stderr.strip().endswith(f"run {earlier} ran codex, not claude")
    assert sorted((workdir / "store" / "runs").iterdir()) == runs


@pytest.mark.parametrize("agent_policy", ["runc"], indirect=True)  # runtime-independent
def test_claude_logs_in_with_a_subscription_token(agent_policy, mock_api, tmp_path, workdir):
    policy, _ = agent_policy
    workspace = tmp_path / "project"
    workspace.mkdir()
    token = f"sk-ant-oat01-e2e-{secrets.token_hex(12)}"
    env = {"ANTHROPIC_API_KEY": "", "CLAUDE_CODE_OAUTH_TOKEN": token}
    before = len(mock_requests(mock_api))
    proc, results = single("claude", workspace, policy, "hello", env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    node = results["nodes"]["single"]
    assert node["sandbox"]["secrets"] == ["CLAUDE_CODE_OAUTH_TOKEN"]
    assert node["sandbox"]["secret_delivery"] == {
        "CLAUDE_CODE_OAUTH_TOKEN": f"brokered to {mock_api}"
    }
    # Claude Code with a subscription token asks only below /v1/ (the broker's default
    # prefix): nothing was refused, and every request carried the real token.
    assert node["violations"] == []
    asked = mock_requests(mock_api)[before:]
    assert asked and all(r["path"].startswith("/v1/messages") for r in asked)
    assert all(r["headers"].get("authorization") == f"Bearer {token}" for r in asked)
    assert token not in proc.stdout + proc.stderr + store_text(workdir / "store")


# --- the host's agent logins are never mountable -------------------------------------------

LOGINS = {
    "claude-dir": ".claude",
    "claude-creds": ".claude/.credentials.json",
    "claude-json": ".claude.json",
    "codex-dir": ".codex",
    "codex-auth": ".codex/auth.json",
    "config-claude": ".config/claude",
    "keychain": "Library/Keychains",
}


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_the_host_s_agent_logins_are_never_mounted(runtime, tmp_path, docker_client):
    """A home with real-looking logins, a policy granting the whole home's parent: each
    mount of a login (file or directory, read-only or writable) is refused, nothing runs."""
    home = tmp_path / "home"
    for relative in LOGINS.values():
        path = home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if "." in path.name.lstrip("."):
            path.write_text('{"token": "host-login-secret"}')
        else:
            path.mkdir(exist_ok=True)
            (path / "login").write_text("host-login-secret")
    names = {name: unique(name) for name in LOGINS}
    body = "".join(
        f'  {names[name]}:\n    command: [cat, /w]\n    mounts: [{{source: "{home / rel}", '
        f"target: /w, mode: {'rw' if i % 2 else 'ro'}}}]\n"
        for i, (name, rel) in enumerate(LOGINS.items())
    )
    workflow = tmp_path / "project" / "workflow.yaml"
    workflow.parent.mkdir()
    workflow.write_text(f"version: 1\nname: logins\nfail_fast: false\nnodes:\n{body}")
    policy = tmp_path / "policy.yaml"
    text = (REPO / "policies" / "default.yaml").read_text()
    text = text.replace("oci_runtime: runc", f"oci_runtime: {runtime}")
    text = text.replace("{source: ., modes: [ro]}", f'{{source: "{tmp_path}", modes: [ro, rw]}}')
    policy.write_text(textwrap.dedent(text))
    since = time.time()
    proc = cli(
        "run", str(workflow), "--policy", str(policy), "--ci",
        env={"HOME": str(home), "SANDBOX_ORCH_HOME": str(tmp_path / "store")},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    protected = {".claude/.credentials.json": ".claude", ".codex/auth.json": ".codex"}
    for name, relative in LOGINS.items():
        (line,) = [li for li in proc.stderr.splitlines() if f"node '{names[name]}'" in li]
        named = home / protected.get(relative, relative)
        assert f"{named} is never mountable (credentials)" in line, line
    assert "host-login-secret" not in proc.stdout + proc.stderr
    assert created_containers(docker_client, since, set(names.values())) == []
