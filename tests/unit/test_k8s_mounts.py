"""Read-only mounts on the Kubernetes backend, on kmock's API *emulator* and an *emulated*
exec endpoint (k8s_emulator.py, k8s_exec_server.py): the mount's source is delivered
into the node's own pod by its `deliver` container before it runs, symlinks as symlinks
(never followed here), the run store inside the source as an empty directory (as the
mask on Docker shows it), and only what the node's user could read through a bind
mount. Read-write mounts and mounts of a file are refused before
anything is created (exit 3)."""

from __future__ import annotations

import asyncio
import os
import textwrap

import pytest

from sandbox_orch.admission import admit
from sandbox_orch.backend.kubernetes.opening import open_backend
from sandbox_orch.errors import InfrastructureError
from sandbox_orch.policy import load_policy

from . import test_k8s_artifacts as artifacts
from .helpers import plan_of
from .k8s_emulator import JOBS, POLICIES, SECRETS, SETTINGS, Script
from .test_k8s_artifacts import _gate_file, _run

held = artifacts.held  # its fixture: the policy (runc), the run store, the exec's directory

MOUNTED = """\
    version: 1
    name: k8s-mounts
    defaults: {runtime: shell}
    nodes:
      look:
        command: [ls]
        mounts: [{source: ., target: /w}]
"""


@pytest.fixture
def workspace(tmp_path, held, monkeypatch):
    """A workflow's directory with the run store inside it; a policy granting it."""
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "main.py").write_text("print(1)\n")
    (ws / "readme").symlink_to("src/main.py")
    (ws / "escape").symlink_to("/etc/passwd")  # resolved in the pod, not here
    (ws / "private.key").write_text("not the node's")
    (ws / "private.key").chmod(0o600)  # this host's user's only: not uid 10001's
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(ws / ".store"))
    (ws / ".store" / "runs" / "old").mkdir(parents=True)
    (ws / ".store" / "runs" / "old" / "results.json").write_text("{}")
    policy = (tmp_path / "policy.yaml").read_text()
    policy = policy.replace("mounts: []", "mounts: [{source: ., modes: [ro, rw]}]")
    (tmp_path / "policy.yaml").write_text(policy)
    (ws / "wf.yaml").write_text(textwrap.dedent(MOUNTED))
    return ws


@pytest.fixture
def pod(tmp_path):
    """The node pod's /w (the mount's emptyDir) and /gate, here."""
    (tmp_path / "w").mkdir()
    (tmp_path / "gate").mkdir()
    return {"/w": tmp_path / "w", "/gate": tmp_path / "gate"}


def test_emulator_a_read_only_mount_is_delivered_masked_and_unfollowed(
    tmp_path, held, workspace, pod
):
    gate = _gate_file(pod["/gate"])
    report, left, exchanges = asyncio.run(
        _run(tmp_path, held, Script(0), MOUNTED, pod, gate, str(workspace / "wf.yaml"))
    )
    look = report.results["nodes"]["look"]
    assert look["status"] == "succeeded", look
    w = pod["/w"]
    assert (w / "src" / "main.py").read_text() == "print(1)\n"
    assert os.readlink(w / "readme") == "src/main.py"
    assert os.readlink(w / "escape") == "/etc/passwd"  # a link, not the host's file
    assert (w / ".store").is_dir() and list((w / ".store").iterdir()) == []  # masked
    assert not (w / "private.key").exists()  # the node could not read it through a bind
    assert [(e.container, e.command[0]) for e in exchanges] == [
        ("deliver", "tar"),
        ("deliver", "sh"),
    ]
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}


@pytest.mark.parametrize(
    ("mount", "why"),
    [
        ("{source: ., target: /w, mode: rw}", "a read-write mount"),
        ("{source: src/main.py, target: /w/main.py}", "a mount of a file"),
    ],
)
def test_mounts_a_pod_cannot_have_are_refused_before_connecting(
    tmp_path, held, workspace, mount, why
):
    text = MOUNTED.replace("{source: ., target: /w}", mount)
    plan = plan_of(text, str(workspace / "wf.yaml"))
    sandboxes = admit(plan, load_policy(tmp_path / "policy.yaml"))
    with pytest.raises(InfrastructureError) as refused:
        asyncio.run(open_backend(SETTINGS, None, plan, sandboxes, cluster=object()))
    assert str(refused.value).startswith(f"node 'look' needs {why}")
