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
