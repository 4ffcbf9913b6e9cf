"""What a node learns of the host from its names, on the real engine under runc and
gVisor: every node's hostname is the same fixed `sandbox` (the engine's default is the
container's short id), and no place a node reads without effort (hostname, /etc/hostname,
/etc/hosts, the kernel's and the cgroup's view) names its container."""

from __future__ import annotations

import time

import pytest

from tests.conftest import REPO, labelled_leftovers, run_workflow, unique

pytestmark = pytest.mark.engine

PROBE = (
    "echo HOST=$(hostname); echo FILE=$(cat /etc/hostname); echo UNAME=$(uname -n); "
    "echo KERNEL=$(cat /proc/sys/kernel/hostname); cat /etc/hosts /proc/self/cgroup; "
    "cat /proc/self/mountinfo >&2"
)


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_a_node_s_names_are_fixed_and_name_no_container(
    runtime, workdir, docker_client, built_images
):
    node = unique("ident")
    policy = workdir / "policy.yaml"

    text = (REPO / "policies" / "default.yaml").read_text()
    policy.write_text(text.replace("oci_runtime: runc", f"oci_runtime: {runtime}"))
    since = time.time()
    result = run_workflow(
        workdir,
        f"""
        version: 1
        name: identity
        nodes:
          {node}: {{command: [sh, -c, "{PROBE}"]}}
        """,
        "--policy",
        str(policy),
    )
    assert result.results is not None, result.stderr
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []
    done = result.results["nodes"][node]
    assert done["status"] == "succeeded", done
    out = done["stdout_tail"]
    for name in ("HOST", "FILE", "UNAME", "KERNEL"):
        assert f"{name}=sandbox\n" in out, out
    events = docker_client.events(
        since=since, until=time.time(), decode=True,
        filters={"type": "container", "event": "create", "label": f"sandbox-orch.node={node}"},
    )  # fmt: skip
    (container_id,) = [event["id"] for event in events]
    assert container_id[:12] not in out, out
    if runtime == "runsc":  # gVisor's mount table shows no host path at all
        assert container_id[:12] not in done["stderr_tail"]
        assert "/var/lib/docker" not in done["stderr_tail"]
