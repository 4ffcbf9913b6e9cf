"""`python -m sandbox_orch.backend.kubernetes`: prints a run's manifests (nothing created)."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from sandbox_orch.backend.kubernetes.__main__ import PROXY_PLACEHOLDER, main
from sandbox_orch.seccomp import runsc_profile

from .k8s_cases import ROOT

HELLO = str(ROOT / "configs" / "examples" / "hello.yaml")
POLICY = ["--policy", str(ROOT / "policies" / "default.yaml")]
DIGEST = "@sha256:" + "ab" * 32
IMAGES = [
    "--image",
    f"sandbox-orch/shell=r/shell{DIGEST}",
    "--image",
    f"sandbox-orch/python=r/py{DIGEST}",
]


def test_prints_the_runs_manifests(capsys):
    assert main([HELLO, *POLICY, "--namespace", "ns", "--runtime-class", "runc=", *IMAGES]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = [d["kind"] for d in documents]
    assert kinds[:3] == ["NetworkPolicy"] * 3 and kinds.count("Job") == 3  # no egress: no proxy
    pod = documents[3]["spec"]["template"]["spec"]
    assert "runtimeClassName" not in pod  # runc= maps to the cluster's default
    assert pod["containers"][0]["image"] == f"r/shell{DIGEST}"


def test_the_proxy_address_is_a_visible_placeholder():
    assert "POD-IP" in PROXY_PLACEHOLDER


def test_an_unmapped_image_exits_3(capsys):
    assert main([HELLO, *POLICY, "--namespace", "ns", "--runtime-class", "runc="]) == 3
    assert "sandbox-orch/shell" in capsys.readouterr().err


def test_an_unmapped_runtime_exits_3(capsys):
    assert main([HELLO, *POLICY, "--namespace", "ns", *IMAGES]) == 3
    assert "OCI runtime 'runc' has no RuntimeClass" in capsys.readouterr().err


def test_a_refused_workflow_exits_2(capsys):
    workflow = str(ROOT / "configs" / "examples" / "agent-review.yaml")
    assert main([workflow, *POLICY, "--namespace", "ns", "--runtime-class", "runc="]) == 2
    assert "not granted by the policy" in capsys.readouterr().err


def test_a_mapping_without_a_name_is_refused():
    with pytest.raises(SystemExit, match="expected NAME=VALUE"):
        main([HELLO, *POLICY, "--namespace", "ns", "--runtime-class", "runc"])


def test_prints_the_gvisor_seccomp_profile_gvisor_pods_name(capsys):
    assert main(["--seccomp-profile"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out) == runsc_profile()  # the filter gVisor nodes get on Docker
    path = printed.err.strip()
    digest = hashlib.sha256(printed.out.rstrip("\n").encode()).hexdigest()[:16]
    assert path == f"/var/lib/kubelet/seccomp/sandbox-orch/runsc-{digest}.json"
    ci = ["--policy", str(ROOT / "policies" / "ci.yaml")]
    classes = ["--runtime-class", "runsc=gvisor"]
    assert main([HELLO, *ci, "--namespace", "ns", *classes, *IMAGES]) == 0
    job = list(yaml.safe_load_all(capsys.readouterr().out))[3]  # after 3 NetworkPolicies
    pod = job["spec"]["template"]["spec"]
    named = {
        "type": "Localhost",
        "localhostProfile": path.removeprefix("/var/lib/kubelet/seccomp/"),
    }
    assert pod["securityContext"]["seccompProfile"] == named
    assert pod["containers"][0]["securityContext"]["seccompProfile"] == named
