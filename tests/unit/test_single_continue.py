"""`single --continue RUN_ID` (issue 12, item 6): what is kept of an agent's session,
what a continued run gets, and what is refused; without an engine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sandbox_orch.errors import InputRefused
from sandbox_orch.mounts import BindMount
from sandbox_orch.policy import POLICIES_DIR
from sandbox_orch.redaction import forget_all, remember
from sandbox_orch.single import SingleRequest, single_plan
from sandbox_orch.single import session as s
from sandbox_orch.store import new_run_id, run_dir

from .helpers import admitted, default_policy


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "store"))
    monkeypatch.setattr(s, "hand_to_sandbox_user", lambda *_: None)
    return tmp_path / "store"


def finished_run(runtime: str | None, files: dict[str, str] | None = None) -> str:
    """A run in the store, with the transcripts it kept (runtime None: it kept none)."""
    run_id = new_run_id()
    run_dir(run_id).mkdir(parents=True)
    (run_dir(run_id) / "results.json").write_text("{}")
    for name, text in (files or {}).items():
        path = run_dir(run_id) / s.KEPT / str(runtime) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return run_id


def refusal(run_id: str, runtime: str) -> str:
    with pytest.raises(InputRefused) as caught:
        s.kept_session(run_id, runtime)
    (problem,) = caught.value.problems
    return str(problem)


# --- what is refused --------------------------------------------------------------------


def test_an_unknown_run_is_refused(store):
    assert "no run '20260101t000000-abcdef' in the run store" in refusal(
        "20260101t000000-abcdef", "claude"
    )


@pytest.mark.parametrize("run_id", ["../..", "20260101t000000-abcdef/..", "/etc", "", "x"])
def test_a_run_id_is_never_a_path(store, run_id, tmp_path):
    # Even where that path holds what a run would: the id is refused by its form.
    (tmp_path / "results.json").write_text("{}")
    assert "no run" in refusal(run_id, "claude")


def test_a_run_of_another_runtime_is_refused(store):
    run_id = finished_run("codex", {"2026/01/01/rollout-x.jsonl": "{}\n"})
    assert refusal(run_id, "claude").endswith(f"run {run_id} ran codex, not claude")


def test_a_run_that_kept_no_session_is_refused(store):
    run_id = finished_run(None)
    assert refusal(run_id, "claude").endswith(f"run {run_id} kept no claude session")


def test_a_runtime_with_no_agent_session_is_refused(store):
    run_id = finished_run("claude", {"-workspace/a.jsonl": "{}\n"})
    assert "runtime 'shell' has no agent session" in refusal(run_id, "shell")


def test_a_kept_session_is_found(store):
    run_id = finished_run("claude", {"-workspace/a.jsonl": "{}\n"})
    assert s.kept_session(run_id, "claude") == run_dir(run_id) / "session" / "claude"


# --- the CLI's own resume ---------------------------------------------------------------


def test_claude_continues_its_latest_session_before_the_prompt(tmp_path):
    plan = single_plan(SingleRequest("claude", tmp_path, prompt="-p go on"))
    argv = s.resumed(plan, "claude").nodes["single"].argv
    assert argv[-3:] == ("--continue", "--", "-p go on") and argv[0] == "claude"
    assert plan.nodes["single"].argv == (*argv[:-3], "--", "-p go on")  # the rest as it was


def test_codex_resumes_its_latest_session_after_its_exec_options(tmp_path):
    plan = single_plan(SingleRequest("codex", tmp_path, prompt="go on"))
    argv = s.resumed(plan, "codex").nodes["single"].argv
    assert argv[:2] == ("sandbox-orch-codex", "exec")
    assert argv[-4:] == ("resume", "--last", "--", "go on")


def test_a_prompt_template_s_slot_follows_the_inserted_arguments(tmp_path):
    plan = single_plan(SingleRequest("claude", tmp_path, prompt="keep ${{ this }} literal"))
    node = s.resumed(plan, "claude").nodes["single"]
    if node.prompt is not None:
        assert node.argv[node.prompt.slot] == plan.nodes["single"].argv[-1]


# --- what a sandbox gets ----------------------------------------------------------------


def test_an_agent_gets_a_fresh_config_directory_of_the_run_s(store):
    run_id = new_run_id()
    scratch = s.prepare_state("claude", run_id, default_policy(), None)
    assert scratch is not None and scratch.is_dir() and list(scratch.iterdir()) == []
    assert run_dir(run_id) in scratch.parents
    assert s.prepare_state("shell", new_run_id(), default_policy(), None) is None


def test_a_continued_run_gets_a_copy_of_the_transcripts_never_the_store(store):
    earlier = finished_run("claude", {"-workspace/a.jsonl": '{"m": 1}\n'})
    kept = s.kept_session(earlier, "claude")
    run_id = new_run_id()
    scratch = s.prepare_state("claude", run_id, default_policy(), kept)
    assert (scratch / "projects" / "-workspace" / "a.jsonl").read_text() == '{"m": 1}\n'
    (scratch / "projects" / "-workspace" / "a.jsonl").write_text("changed by the node")
    assert (kept / "-workspace" / "a.jsonl").read_text() == '{"m": 1}\n'  # the store is not it
    _, sandboxes = admitted("version: 1\nname: x\nnodes:\n  a: {command: [x]}\n")
    sandbox = sandboxes["a"]
    mounts = s.with_state(sandbox, "claude", scratch).mounts
    assert mounts == (*sandbox.mounts, BindMount(str(scratch), "/tmp/.claude", read_only=False))
    assert s.with_state(sandbox, "shell", None) == sandbox


# --- what is kept -----------------------------------------------------------------------


def agent_wrote(scratch: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_only_the_transcripts_are_kept_and_scrubbed(store, request):
    key = "sk-ant-kept-0123456789abcdef"
    remember("ANTHROPIC_API_KEY", key)
    request.addfinalizer(forget_all)
    run_id = new_run_id()
    scratch = s.prepare_state("claude", run_id, default_policy(), None)
    line = json.dumps({"message": f"the key is {key}"}) + "\n"
    agent_wrote(scratch, {
        "projects/-workspace/s1.jsonl": line,
        "projects/-workspace/s1/subagents/a.jsonl": line,
        ".credentials.json": json.dumps({"token": "oauth-secret-value"}),
        "settings.json": "{}",
    })  # fmt: skip
    assert s.keep_state(scratch, "claude", run_id, 1 << 20) is None
    kept = run_dir(run_id) / "session" / "claude"
    names = sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file())
    assert names == ["-workspace/s1.jsonl", "-workspace/s1/subagents/a.jsonl"]
    every = "".join(p.read_text() for p in kept.rglob("*") if p.is_file())
    assert key not in every and "oauth-secret-value" not in every
    assert "REDACTED" in (kept / "-workspace" / "s1.jsonl").read_text()
    assert s.continue_hint(run_id, "claude") == (
        f"session kept: continue with sandbox-orch single claude --continue {run_id} --prompt ..."
    )


def test_links_and_other_files_the_agent_planted_are_not_followed(store, tmp_path):
    secret = tmp_path / "host-secret"
    secret.write_text("host secret text")
    run_id = new_run_id()
    scratch = s.prepare_state("codex", run_id, default_policy(), None)
    agent_wrote(scratch, {"sessions/2026/01/01/rollout-1.jsonl": "{}\n"})
    (scratch / "sessions" / "2026" / "link.jsonl").symlink_to(secret)
    (scratch / "sessions" / "dirlink").symlink_to(tmp_path)
    os.mkfifo(scratch / "sessions" / "fifo.jsonl")
    assert s.keep_state(scratch, "codex", run_id, 1 << 20) is None
    kept = run_dir(run_id) / "session" / "codex"
    assert [p.name for p in kept.rglob("*") if not p.is_dir()] == ["rollout-1.jsonl"]


def test_a_sessions_directory_that_is_a_link_is_not_followed(store, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.jsonl").write_text("{}\n")
    run_id = new_run_id()
    scratch = s.prepare_state("claude", run_id, default_policy(), None)
    (scratch / "projects").symlink_to(tmp_path / "elsewhere")
    assert s.keep_state(scratch, "claude", run_id, 1 << 20) == "the agent recorded no session"
    assert not (run_dir(run_id) / "session").exists()


def test_too_large_or_too_many_keeps_nothing(store, monkeypatch):
    run_id = new_run_id()
    scratch = s.prepare_state("claude", run_id, default_policy(), None)
    agent_wrote(scratch, {"projects/p/a.jsonl": "x" * 100, "projects/p/b.jsonl": "y"})
    assert "larger than 100 bytes" in (s.keep_state(scratch, "claude", run_id, 100) or "")
    monkeypatch.setattr(s, "MAX_FILES", 2)
    assert "2 entries" in (s.keep_state(scratch, "claude", run_id, 1 << 20) or "")
    assert not (run_dir(run_id) / "session").exists()
    assert s.continue_hint(run_id, "claude") is None


def test_a_scrubbed_transcript_line_stays_json(store, request):
    """A secret that begins right after a backslash of an escape (`\\n` then the rest):
    redacting the text would break the escape; the line is redacted as JSON instead."""
    remember("SOME_KEY", "nsecretvalue99")
    request.addfinalizer(forget_all)
    line = json.dumps({"m": "a\nsecretvalue99", "k": "nsecretvalue99"}) + "\n"
    scrubbed = s._scrubbed(line)
    assert "nsecretvalue99" not in json.loads(scrubbed)["k"]
    assert json.loads(scrubbed)["m"] == "a\nsecretvalue99"  # not the secret: kept as it was


def test_the_hint_carries_the_policy_given_and_a_session_continues_as_one(store, tmp_path):
    """The default policy grants no agent: a hint without the --policy the run was given
    would be refused."""
    run_id = new_run_id()
    (run_dir(run_id) / "session" / "claude").mkdir(parents=True)
    start = f"session kept: continue with sandbox-orch single claude --continue {run_id}"
    shipped = POLICIES_DIR / "sessions.yaml"
    assert s.continue_hint(run_id, "claude", shipped, True) == f"{start} --policy sessions"
    mine = tmp_path / "my policy.yaml"
    assert s.continue_hint(run_id, "claude", mine) == f"{start} --policy '{mine}' --prompt ..."
    assert s.continue_hint(run_id, "claude", interactive=True) == start
    assert s.continue_hint(run_id, "codex", shipped) is None  # kept for claude only
