"""Preflight and doctor: a missing stronger runtime or image is exit 3, never a downgrade."""

import asyncio
import dataclasses

import pytest

from sandbox_orch.backend.memory import HARDENED_RUNTIMES, MemoryBackend
from sandbox_orch.doctor import isolation_of, policy_isolations
from sandbox_orch.errors import ExitCode, InfrastructureError
from sandbox_orch.orchestrator import preflight

from .helpers import admitted, default_policy

HELLO = "version: 1\nname: x\nnodes:\n  a: {command: [x]}\n"


def test_runsc_policy_on_an_engine_without_runsc_is_refused_not_downgraded():
    policy = dataclasses.replace(default_policy(), oci_runtime="runsc")
    _, sandboxes = admitted(HELLO, policy)
    backend = MemoryBackend(runtimes={"runc": []})
    with pytest.raises(InfrastructureError) as caught:
        asyncio.run(preflight(backend, policy, sandboxes))
    assert caught.value.exit_code == ExitCode.INFRASTRUCTURE
    assert "never falls back" in str(caught.value) and "'runsc'" in str(caught.value)
    assert backend.containers == {}


def test_missing_image_names_the_build_command():
    _, sandboxes = admitted(HELLO)
    backend = MemoryBackend(images={"sandbox-orch/python"})
    with pytest.raises(InfrastructureError, match="sandbox-orch images build"):
        asyncio.run(preflight(backend, default_policy(), sandboxes))


def test_preflight_returns_image_ids():
    _, sandboxes = admitted(HELLO)
    ids = asyncio.run(preflight(MemoryBackend(), default_policy(), sandboxes))
    assert set(ids) == {"sandbox-orch/shell"} and ids["sandbox-orch/shell"].startswith("sha256:")


def test_doctor_isolation_per_policy():
    found = {i.policy: i for i in policy_isolations(HARDENED_RUNTIMES)}
    assert {"default", "agents", "ci"} <= set(found)
    assert "gVisor" in found["ci"].summary and "RLIMIT_NPROC" in found["ci"].summary
    assert "pids cgroup as a backstop" in found["ci"].summary
    assert "runc" in found["default"].summary and "pids cgroup" in found["default"].summary
    runsc_policy = dataclasses.replace(default_policy(), oci_runtime="runsc")
    lacking = isolation_of(runsc_policy, {"runc": []})
    assert not lacking.runnable and "never falls back" in lacking.summary
    unfiltered = isolation_of(runsc_policy, {"runc": [], "runsc": ["--network=none"]})
    assert not unfiltered.runnable and "--oci-seccomp" in unfiltered.summary


def test_runsc_without_seccomp_is_refused_not_run():
    policy = dataclasses.replace(default_policy(), oci_runtime="runsc")
    _, sandboxes = admitted(HELLO, policy)
    backend = MemoryBackend(runtimes={"runc": [], "runsc": ["--network=none", "--host-uds=open"]})
    with pytest.raises(InfrastructureError, match="lacks --oci-seccomp"):
        asyncio.run(preflight(backend, policy, sandboxes))
    assert backend.containers == {}


def _run_pinned(text: str, images: dict[str, str] | None):
    """Run a plan on the memory backend with the runner given `images`; the specs created."""
    from sandbox_orch.backend.memory import Outcome
    from sandbox_orch.execution import NodeRunner
    from sandbox_orch.scheduler import Scheduler

    plan, sandboxes = admitted(text)
    created = []

    def script(spec):
        created.append(spec)
        return Outcome()

    runner = NodeRunner(MemoryBackend(script), "r", "o", images=images)
    scheduler = Scheduler(plan, sandboxes, runner.attempt, lambda _event: None)
    records = asyncio.run(scheduler.run(asyncio.Event()))
    asyncio.run(runner.close())
    return records, created


TWO = "version: 1\nname: x\nnodes:\n  a: {command: [x]}\n  b: {command: [y], needs: [a]}\n"


def test_every_container_is_created_from_the_id_preflight_resolved():
    ids = asyncio.run(preflight(MemoryBackend(), default_policy(), admitted(TWO)[1]))
    records, created = _run_pinned(TWO, ids)
    assert {r.status.value for r in records.values()} == {"succeeded"}
    assert [s.image for s in created] == [ids["sandbox-orch/shell"]] * 2


def test_an_image_preflight_did_not_resolve_is_never_used_by_name():
    records, created = _run_pinned(TWO, {"sandbox-orch/python": "sha256:" + "0" * 64})
    assert created == []
    assert records["a"].status.value == "errored"
    assert "was not resolved" in records["a"].reason


FAKE_INFO = {
    "CgroupVersion": "2",
    "CgroupDriver": "systemd",
    "SecurityOptions": ["name=apparmor", "name=seccomp,profile=builtin", "name=cgroupns"],
    "Runtimes": {"runc": {"path": "runc"}},
}


def test_doctor_says_what_protects_nodes_and_what_does_not():
    from sandbox_orch.doctor import protections

    lines = protections(FAKE_INFO, {"runc": []}, None)
    text = "\n".join(lines)
    assert "cgroups: v2, driver systemd; every node gets a private cgroup namespace" in lines
    assert "seccomp: available (engine profile builtin)" in lines
    assert "AppArmor: confines containers" in lines
    assert "SELinux: not enabled on this engine" in lines
    protects = next(line for line in lines if line.startswith("protects nodes here: "))
    lacks = next(line for line in lines if line.startswith("does not protect nodes here: "))
    assert "an LSM (apparmor)" in protects and "LSM" not in lacks
    assert "no usable gVisor" in lacks and "runsc version" not in text


def test_doctor_names_a_missing_lsm_and_missing_seccomp():
    from sandbox_orch.doctor import protections

    info = {"CgroupVersion": "1", "CgroupDriver": "cgroupfs", "SecurityOptions": []}
    lines = protections(info, HARDENED_RUNTIMES, "runsc version 0.0~20240729.0")
    lacks = next(line for line in lines if line.startswith("does not protect nodes here: "))
    assert "no LSM (AppArmor or SELinux) confines containers on this engine" in lacks
    assert "no seccomp" in lacks and "seccomp: NOT available on this engine" in lines
    assert "runsc version: runsc version 0.0~20240729.0" in lines
    assert "gVisor's user-space kernel" in next(
        line for line in lines if line.startswith("protects nodes here: ")
    )


def test_doctor_runs_only_a_root_owned_runtime_binary(tmp_path):
    from sandbox_orch.doctor import runtime_version

    fake = tmp_path / "runsc"
    fake.write_text("#!/bin/sh\necho pwned > " + str(tmp_path / "ran") + "\n")
    fake.chmod(0o777)  # writable by anyone: never run
    assert runtime_version(str(fake)) is None and not (tmp_path / "ran").exists()
    assert runtime_version(None) is None and runtime_version(str(tmp_path / "none")) is None
    fake.chmod(0o755)  # root's alone: its first line is the version
    fake.write_text("#!/bin/sh\necho 'runsc version 0.0~20240729.0'\necho spec: 1.2.0\n")
    assert runtime_version(str(fake)) == f"runsc version 0.0~20240729.0 ({fake})"


@pytest.mark.parametrize(
    ("runtimes", "state"),
    [
        ({"runc": []}, "missing"),
        # Podman finds the runsc binary Docker uses, with none of its arguments: offered,
        # but every policy asking for it is refused, so doctor must not say "available".
        ({"runc": [], "runsc": []}, "offered but refused: the engine's runsc runtime lacks"),
        ({"runsc": ["--platform=systrap"]}, "offered but refused: the engine's runsc runtime"),
        (HARDENED_RUNTIMES, "available ("),
    ],
)
def test_doctor_calls_runsc_available_only_when_a_policy_could_use_it(runtimes, state):
    from sandbox_orch.doctor import runtime_state

    assert runtime_state("runsc", runtimes).startswith(state)
    isolation = isolation_of(dataclasses.replace(default_policy(), oci_runtime="runsc"), runtimes)
    assert isolation.runnable == state.startswith("available")
