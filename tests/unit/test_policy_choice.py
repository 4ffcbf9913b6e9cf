"""Which policy applies: --policy, else $SANDBOX_ORCH_POLICY, else the default; never the
workflow's choice (CONTRACT 1)."""

import pytest

from sandbox_orch.errors import InputRefused
from sandbox_orch.policy import DEFAULT_POLICY, POLICY_ENV, choose_policy_path, load_policy

from .helpers import plan_of


def test_option_beats_environment_beats_default(monkeypatch, tmp_path):
    monkeypatch.delenv(POLICY_ENV, raising=False)
    assert choose_policy_path(None) == DEFAULT_POLICY
    monkeypatch.setenv(POLICY_ENV, str(tmp_path / "env.yaml"))
    assert choose_policy_path(None) == tmp_path / "env.yaml"
    assert choose_policy_path(str(tmp_path / "opt.yaml")) == tmp_path / "opt.yaml"


def test_a_workflow_cannot_name_its_policy():
    with pytest.raises(InputRefused, match="policy: unknown key"):
        plan_of("version: 1\nname: x\npolicy: permissive.yaml\nnodes:\n  a: {command: [x]}\n")


def test_every_shipped_policy_loads():
    for name in ("default", "ci", "agents"):
        assert load_policy(DEFAULT_POLICY.parent / f"{name}.yaml").name == name
