"""The commands the Kubernetes manifests give a consumer's `deliver` container, run as the
manifest says (its command, user, read-only root) in the real image on the real engine,
under runc and gVisor: no cluster runs here, so this is where they run for real. Inputs
arrive over exec (`tar -x` from stdin), then an exec's "go" through the gate ends it with
0; anything else ends it non-zero and the node's container would never start."""

from __future__ import annotations

import hashlib

import pytest

from sandbox_orch.backend.kubernetes.job import node_job

from ..unit.helpers import admitted
from ..unit.k8s_cases import ATTEMPT, SETTINGS
from ..unit.test_k8s_deliver import streamed
from ..unit.test_k8s_parts import DAG


def _deliver() -> dict:
    plan, sandboxes = admitted(DAG)
    job = node_job(plan.nodes["use_"], sandboxes["use_"], ATTEMPT, SETTINGS)
    (deliver,) = job["spec"]["template"]["spec"]["initContainers"]
    return deliver


def _release(client, container, word: str) -> None:
    """The gate's word, by an exec not waited for: the container ends as it is read, and
    under gVisor Docker's stream of such an exec may never end (the sandbox is gone).
    What counts is the container's own exit (the backend reads the pod's, likewise)."""
    made = client.api.exec_create(
        container.id, ["sh", "-c", f'echo {word} > "$1"', "sh", "/gate/go"], user="10001:10001"
    )
    client.api.exec_start(made["Id"], detach=True)


def _exec(client, container, argv: list[str], stdin: bytes | None = None) -> int:
    """An exec as the API server's: argv as given, stdin streamed then closed."""
    api = client.api
    made = api.exec_create(container.id, argv, stdin=stdin is not None, user="10001:10001")
    if stdin is None:
        api.exec_start(made["Id"])
    else:
        sock = api.exec_start(made["Id"], socket=True)
        raw = getattr(sock, "_sock", sock)
        raw.sendall(stdin)
        raw.shutdown(1)  # the end of stdin, as v5's close
        while raw.recv(65536):
            pass
        raw.close()
    return api.exec_inspect(made["Id"])["ExitCode"]


@pytest.fixture
def deliver_container(docker_client, built_images, request):
    """The deliver container as the manifest makes it: its command and user, a read-only
    root, its gate's and the input's emptyDirs as tmpfs mounts."""
    deliver = _deliver()
    made = []

    def start(runtime: str):
        container = docker_client.containers.run(
            "sandbox-orch/shell",
            deliver["command"],
            entrypoint=[],
            user="10001:10001",
            read_only=True,
            network_mode="none",
            runtime=runtime,
            tmpfs={"/gate": "size=64k,mode=1777", "/in": "size=1m,mode=1777"},
            labels={"sandbox-orch.test": request.node.name},
            detach=True,
        )
        made.append(container)
        return container

    yield start
    for container in made:
        container.remove(force=True)


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_deliver_takes_inputs_over_exec_then_go_ends_it_with_zero(
    docker_client, deliver_container, runtime, tmp_path
):
    """The backend's own archive of a host copy (deliver.py), as the backend sends it."""
    container = deliver_container(runtime)
    (tmp_path / "sub").mkdir()
    (tmp_path / "report.txt").write_bytes(b"built\n")
    (tmp_path / "sub" / "data.bin").write_bytes(bytes(range(256)))
    argv = ["tar", "-x", "-f", "-", "-C", "/in"]
    assert _exec(docker_client, container, argv, streamed(tmp_path)) == 0
    listed = container.exec_run(
        ["find", "/in", "-type", "f", "-exec", "sha256sum", "{}", "+"], user="10001:10001"
    )
    found = dict(reversed(line.split()) for line in listed.output.decode().splitlines())
    assert found == {
        "/in/report.txt": hashlib.sha256(b"built\n").hexdigest(),
        "/in/sub/data.bin": hashlib.sha256(bytes(range(256))).hexdigest(),
    }
    # still held: the node's container cannot have started
    container.reload()
    assert container.status == "running"
    _release(docker_client, container, "go")
    assert container.wait(timeout=30)["StatusCode"] == 0


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_deliver_told_anything_but_go_fails_so_the_node_never_starts(
    docker_client, deliver_container, runtime
):
    container = deliver_container(runtime)
    _release(docker_client, container, "no")
    assert container.wait(timeout=30)["StatusCode"] != 0
