"""Which policy applies: --policy, else $SANDBOX_ORCH_POLICY, else the default; never the
workflow's choice (CONTRACT 1)."""

from sandbox_orch.policy import DEFAULT_POLICY, POLICY_ENV, choose_policy_path, load_policy


def test_option_beats_environment_beats_default(monkeypatch, tmp_path):
    monkeypatch.delenv(POLICY_ENV, raising=False)
    assert choose_policy_path(None) == DEFAULT_POLICY
    monkeypatch.setenv(POLICY_ENV, str(tmp_path / "env.yaml"))
    assert choose_policy_path(None) == tmp_path / "env.yaml"
    assert choose_policy_path(str(tmp_path / "opt.yaml")) == tmp_path / "opt.yaml"


# A workflow that names its policy: tests/corpus/refused/workflow/workflow-names-its-policy.yaml


def test_every_shipped_policy_loads():
    for name in ("default", "ci", "agents"):
        assert load_policy(DEFAULT_POLICY.parent / f"{name}.yaml").name == name
