"""The container settings a node gets, from workflow and policy to the engine's create
call (container_kwargs is pure given a spec): every hardening setting, every bind mount
from a `ro` request read-only, secrets' nodes without an engine log. No engine needed;
the engine tests (test_escape, test_hardening) check the same settings as the engine
applies them."""

from __future__ import annotations

import dataclasses

import docker
import pytest

from sandbox_orch.backend.base import ContainerSpec, VolumeMount
from sandbox_orch.backend.docker import container_kwargs
from sandbox_orch.execution import NodeRunner
from sandbox_orch.mounts import BindMount

from .helpers import admitted, default_policy

API = docker.APIClient(version="1.41")  # builds configs only; never connects


def kwargs_of(workflow: str, node: str = "a", runtime: str = "runc", **changes):
    policy = dataclasses.replace(default_policy(), oci_runtime=runtime)
    plan, sandboxes = admitted(workflow, policy)
    runner = NodeRunner(None, "run-1", "owner-1", None, None, None)  # type: ignore[arg-type]
    spec = runner.spec(plan.nodes[node], sandboxes[node], 1)
    return container_kwargs(dataclasses.replace(spec, **changes), API)


SIMPLE = "version: 1\nname: x\nnodes:\n  a: {command: [x], resources: {cpus: 0.5, pids: 40}}\n"


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_every_node_gets_the_hardening(runtime):
    made = kwargs_of(SIMPLE, runtime=runtime)
    host = made["host_config"]
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True
    assert host["NetworkMode"] == "none" and made["network_disabled"] is True
    assert host["IpcMode"] == "private"
    assert host.get("Privileged") in (False, None)
    assert "Init" not in host  # no engine init: tini from the image, as the entrypoint
    assert made["entrypoint"] == ["/usr/bin/tini", "--"]
    assert host["RestartPolicy"] == {"Name": "no"}
    assert host["Runtime"] == runtime
    assert host["Memory"] == host["MemorySwap"] > 0  # no swapping past the limit
    assert host["NanoCpus"] == 500_000_000
    assert made["user"] == "10001:10001"
    assert made["stdin_open"] is False and made["tty"] is False
    for path, options in host["Tmpfs"].items():
        assert {"noexec", "nosuid", "nodev"} <= set(options.split(",")), path
    limits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
    assert limits["core"] == (0, 0) and limits["nofile"][0] == limits["nofile"][1] > 0
    assert made["labels"]["sandbox-orch.run"] == "run-1"
    assert made["labels"]["sandbox-orch.node"] == "a"


def test_runc_limits_processes_with_the_pids_cgroup_and_runsc_with_rlimit():
    runc = kwargs_of(SIMPLE)["host_config"]
    assert runc["PidsLimit"] == 40
    assert "nproc" not in {u["Name"] for u in runc["Ulimits"]}
    assert runc["SecurityOpt"] == ["no-new-privileges"]  # the engine's default seccomp
    runsc = kwargs_of(SIMPLE, runtime="runsc")["host_config"]
    assert {u["Name"]: u["Soft"] for u in runsc["Ulimits"]}["nproc"] == 40
    assert any(opt.startswith("seccomp=") for opt in runsc["SecurityOpt"])


def test_every_bind_mount_from_a_ro_request_is_read_only(tmp_path):
    mounts = (
        BindMount(str(tmp_path / "a"), "/in", True),
        BindMount(str(tmp_path / "b"), "/out", False),
        BindMount(str(tmp_path / "c"), "/also-in", True),
    )
    volumes = (VolumeMount("vol-1", "/artifacts", True), VolumeMount("vol-2", "/work", False))
    host = kwargs_of(SIMPLE, mounts=mounts, volumes=volumes)["host_config"]
    made = {m["Target"]: m for m in host["Mounts"]}
    assert {t: m.get("ReadOnly", False) for t, m in made.items()} == {
        "/in": True, "/out": False, "/also-in": True, "/artifacts": True, "/work": False,
    }  # fmt: skip
    for target in ("/in", "/out", "/also-in"):
        assert made[target]["Type"] == "bind"
        assert made[target]["BindOptions"]["Propagation"] == "rprivate"
    assert made["/in"]["Source"] == str(tmp_path / "a")
    for target in ("/artifacts", "/work"):
        assert made[target]["Type"] == "volume"
        assert made[target]["VolumeOptions"]["NoCopy"] is True


def test_a_mount_requested_ro_in_a_workflow_reaches_the_engine_read_only():
    text = (
        "version: 1\nname: x\nnodes:\n"
        "  a: {command: [x], mounts: [{source: ., target: /workspace, mode: ro}]}\n"
    )
    mounts = kwargs_of(text)["host_config"]["Mounts"]
    # The bind itself (a mask over the run store may follow it, read-only too).
    (mount,) = [m for m in mounts if m["Target"] == "/workspace"]
    assert mount["Type"] == "bind" and mount["ReadOnly"] is True
    assert all(m["ReadOnly"] is True for m in mounts)


def test_a_node_holding_secrets_leaves_no_engine_log():
    assert kwargs_of(SIMPLE)["host_config"]["LogConfig"]["Type"] == "json-file"
    quiet = kwargs_of(SIMPLE, engine_log=False)["host_config"]["LogConfig"]
    assert quiet["Type"] == "none"


def test_the_spec_is_passed_through_as_given():
    spec = ContainerSpec(
        name="n", image="img@sha256:1", argv=("a", "b"), user="1:2", labels={"k": "v"},
        cpus=1.0, memory=1 << 28, pids=9, tmpfs={"/tmp": 1 << 20},
        env={"E": "1"}, workdir="/w",
    )  # fmt: skip
    made = container_kwargs(spec, API)
    assert made["image"] == "img@sha256:1" and made["command"] == ["a", "b"]
    assert made["environment"] == {"E": "1"} and made["working_dir"] == "/w"
    assert made["name"] == "n" and made["labels"] == {"k": "v"}
    assert made["host_config"]["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,nodev,size=1048576"}


def test_exact_values_the_engine_gets():
    """Values a weaker setting would still pass the checks above with."""
    made = kwargs_of(SIMPLE, cpus=2.0)
    assert made["host_config"]["NanoCpus"] == 2_000_000_000
    assert made["hostname"] == "sandbox"
    assert made["host_config"]["LogConfig"] == {
        "Type": "json-file", "Config": {"max-size": "1m", "max-file": "1"},
    }  # fmt: skip
    assert kwargs_of(SIMPLE, engine_log=False)["host_config"]["LogConfig"] == {
        "Type": "none", "Config": {},
    }  # fmt: skip


def test_a_volume_mounts_the_runs_own_volume():
    volumes = (VolumeMount("vol-1", "/artifacts", True),)
    (mount,) = kwargs_of(SIMPLE, volumes=volumes)["host_config"]["Mounts"]
    assert mount["Source"] == "vol-1" and mount["Type"] == "volume"


def test_git_paths_are_bound_again_read_only_and_the_run_store_masked_empty():
    project = BindMount(
        "/srv/p/", "/work/", False, masks=("/work/.sandbox-orch",), read_only_inside=(".git",)
    )
    mounts = kwargs_of(SIMPLE, mounts=(project,))["host_config"]["Mounts"]
    kept = [m for m in mounts if m["Target"] == "/work/.git"]
    assert kept == [
        {"Target": "/work/.git", "Source": "/srv/p/.git", "Type": "bind", "ReadOnly": True,
         "BindOptions": {"Propagation": "rprivate", "NonRecursive": True}}
    ]  # fmt: skip
    (mask,) = [m for m in mounts if m["Type"] == "tmpfs"]
    assert mask["ReadOnly"] is True and mask["Source"] is None
    assert mask["TmpfsOptions"] == {"SizeBytes": 4096, "Mode": 0o555}  # r-x: nothing to write


def test_only_trailing_slashes_are_cut_from_a_kept_paths_mount():
    project = BindMount("/srv/LaTeX//", "/work/TeX/", False, read_only_inside=(".git", "X"))
    mounts = kwargs_of(SIMPLE, mounts=(project,))["host_config"]["Mounts"]
    kept = {m["Target"]: m["Source"] for m in mounts if m["ReadOnly"]}
    assert kept == {"/work/TeX/.git": "/srv/LaTeX/.git", "/work/TeX/X": "/srv/LaTeX/X"}
