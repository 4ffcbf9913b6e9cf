"""Setup online, work offline, on the real engine under runc and gVisor (issue 13, item 4).

A node's setup reaches the target its setup grants (an HTTP server on the host's loopback,
opted in with `network.private_names`, as in test_egress_domains.py) and leaves a process
behind that keeps asking it. When setup ends, that process is gone, nothing it asked got
through after setup, and the node's command, granted nothing, is refused the same target.
The attacks: a setup that fails (the command never runs), and a setup that ends the phase
itself to get past it (the command never runs either). Synchronised on files, no sleeps.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, interrupt, labelled_leftovers, run_workflow, start_cli
from tests.integration.test_egress_domains import mirror  # noqa: F401  (a fixture)
from tests.integration.test_hardening import read_events_until, wait_for_running_container

pytestmark = pytest.mark.engine

GET = r"""
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({"http": "http://127.0.0.1:3128"}))
def get(url):
    try:
        with opener.open(url, timeout=20) as answer:
            return f"{answer.status} {answer.read().decode().strip()}"
    except urllib.error.HTTPError as error:
        return f"{error.code} {error.read().decode().strip()}"
    except OSError as error:
        return f"error {error}"
"""

# Setup: reach the target, then fork a process (its own session, so it is no child
# anyone waits for) that asks the target again and again, appending each answer to
# /tmp/late; setup ends once that process has got through at least once.
SETUP = (
    GET
    + r"""
import os, time
url = sys.argv[1]
open("/tmp/setup-got", "w").write(get(url))
pid = os.fork()
if pid == 0:
    os.setsid()
    while True:
        got = get(url)
        with open("/tmp/late", "a") as late:
            late.write(got + "\n")
        time.sleep(0.05)  # pacing, not synchronisation
open("/tmp/leftover", "w").write(str(pid))
while "200 mirror-ok" not in (open("/tmp/late").read() if os.path.exists("/tmp/late") else ""):
    time.sleep(0.01)  # polls the file the left-over process writes
print("setup done")
"""
)

# The command: what setup got, whether the left-over process still lives, everything it
# got, then the same target asked by the command itself.
COMMAND = (
    GET
    + r"""
import os
url = sys.argv[1]
print("SETUP-GOT", open("/tmp/setup-got").read())
pid = int(open("/tmp/leftover").read())
try:
    state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
except FileNotFoundError:
    state = "gone"
print("LEFTOVER", "gone" if state in ("gone", "Z", "X") else "alive")
print("LATE", json.dumps(sorted(set(open("/tmp/late").read().splitlines()))))
print("COMMAND-GOT", get(url))
""".replace("import os", "import json, os")
)


def write_policy(directory: Path, runtime: str, port: int) -> Path:
    text = (REPO / "policies" / "default.yaml").read_text()
    text = text.replace("oci_runtime: runc", f"oci_runtime: {runtime}")
    network = f'egress: ["localhost:{port}"]\n  private_names: ["localhost:{port}"]'
    text = text.replace("egress: []", network)
    assert f"oci_runtime: {runtime}" in text and f"localhost:{port}" in text
    path = directory / f"policy-{runtime}.yaml"
    path.write_text(text)
    return path


def said(node: dict, tag: str) -> str:
    lines = [x for x in node["stdout_tail"].splitlines() if x.startswith(tag + " ")]
    assert len(lines) == 1, node["stdout_tail"] + node["stderr_tail"]
    return lines[0].removeprefix(tag + " ")


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_setup_reaches_its_grant_and_nothing_of_it_outlives_setup(
    runtime,
    mirror,  # noqa: F811
    workdir,
    docker_client,
    built_images,
):
    url = f"http://localhost:{mirror}/"
    text = f"""
        version: 1
        name: setup-phase
        nodes:
          probe:
            runtime: python
            setup:
              command: [python3, -c, {json.dumps(SETUP)}, "{url}"]
              network: {{egress: ["localhost:{mirror}"]}}
            command: [python3, -c, {json.dumps(COMMAND)}, "{url}"]
    """
    policy = write_policy(workdir, runtime, mirror)
    result = run_workflow(workdir, text, "--policy", str(policy))
    assert result.results is not None, result.stderr
    node = result.node("probe")
    assert node["status"] == "succeeded", result.stderr + node["stderr_tail"]
    assert node["sandbox"]["oci_runtime"] == runtime
    assert node["sandbox"]["egress"] == []
    assert node["sandbox"]["setup_egress"] == [f"localhost:{mirror}"]
    assert said(node, "SETUP-GOT") == "200 mirror-ok"
    assert said(node, "LEFTOVER") == "gone"
    # All the left-over process ever got: through, before setup ended (killed, it may
    # have seen its connection cut), never a refusal: it never asked after setup.
    late = json.loads(said(node, "LATE"))
    assert "200 mirror-ok" in late
    assert [x for x in late if x != "200 mirror-ok" and not x.startswith("error ")] == []
    refusal = f"localhost:{mirror} is not granted to node 'probe'"
    assert said(node, "COMMAND-GOT") == f"403 sandbox-orch egress proxy: {refusal}"
    assert "setup done" in node["stderr_tail"]  # setup's output is on stderr
    assert "setup done" not in node["stdout_tail"]
    setup = node["setup"]
    assert setup["exit_code"] == 0 and setup["violations"] == []
    assert 0 < setup["duration_s"] <= node["duration_s"]
    assert node["violations"] == [{"kind": "egress", "detail": refusal}]
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []


@pytest.mark.parametrize("runtime", ["runc"])
def test_a_failed_setup_fails_the_node_and_the_command_never_runs(
    runtime, workdir, docker_client, built_images
):
    text = """
        version: 1
        name: setup-fails
        nodes:
          probe:
            runtime: shell
            setup: {command: "echo installing; exit 3"}
            command: [sh, -c, "echo COMMAND-RAN"]
    """
    policy = write_policy(workdir, runtime, 1)
    junit = workdir / "junit.xml"
    result = run_workflow(workdir, text, "--policy", str(policy), "--junit", str(junit))
    assert result.results is not None, result.stderr
    node = result.node("probe")
    assert node["status"] == "failed"
    assert node["reason"] == "setup failed (exit 3)"
    assert "COMMAND-RAN" not in node["stdout_tail"]
    assert "installing" in node["stderr_tail"]
    assert node["setup"]["exit_code"] == 3
    assert node["violations"] == []
    assert result.exit_code == 1
    assert "failed    probe exit 3" in result.stdout
    assert ": setup failed (exit 3)" in result.stdout  # --ci names it
    assert '<failure message="setup failed (exit 3)"' in junit.read_text()
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []


FORGE = r"""
import socket
s = socket.socket(socket.AF_UNIX)
s.connect("/run/egress/proxy.sock")
s.sendall(b"POST /_phase/setup-ended/0 HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
print("forged:", s.recv(100).split(b"\r\n")[0].decode())
"""


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_setup_that_ends_the_phase_itself_loses_its_grants_and_the_command_never_runs(
    runtime,
    mirror,  # noqa: F811
    workdir,
    docker_client,
    built_images,
):
    url = f"http://localhost:{mirror}/"
    setup = ["python3", "-c", FORGE + GET + f"\nprint('AFTER-FORGE', get({url!r}))\n"]
    text = f"""
        version: 1
        name: setup-forges
        nodes:
          probe:
            runtime: python
            setup:
              command: {json.dumps(setup)}
              network: {{egress: ["localhost:{mirror}"]}}
            command: [sh, -c, "echo COMMAND-RAN"]
    """
    policy = write_policy(workdir, runtime, mirror)
    result = run_workflow(workdir, text, "--policy", str(policy))
    assert result.results is not None, result.stderr
    node = result.node("probe")
    assert node["status"] == "failed", node["stderr_tail"]
    assert node["reason"] == (
        "the setup phase was ended twice (by setup code): the command did not run"
    )
    assert "forged: HTTP/1.1 200 OK" in node["stderr_tail"]
    refusal = f"localhost:{mirror} is not granted to node 'probe'"
    assert f"AFTER-FORGE 403 sandbox-orch egress proxy: {refusal}" in node["stderr_tail"]
    assert "COMMAND-RAN" not in node["stdout_tail"]
    assert node["violations"] == [
        {"kind": "egress", "detail": refusal},
        {"kind": "phase", "detail": "the setup phase has already ended"},
    ]
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []


def test_ctrl_c_during_setup_says_so_and_keeps_the_setup_block(
    workdir, docker_client, built_images
):
    """Interrupted while setup still runs: the node is `cancelled` with the reason
    `run interrupted (during setup)`, and its results keep the setup block (not ended:
    no exit code, no duration). The command never ran. runc only: the bookkeeping is the
    orchestrator's, the same under either runtime."""
    path = workdir / "workflow.yaml"
    path.write_text(
        textwrap.dedent(
            """
            version: 1
            name: setup-interrupted
            nodes:
              probe:
                runtime: shell
                setup: {command: "echo installing >&2; sleep 60"}
                command: [sh, -c, "echo COMMAND-RAN"]
            """
        )
    )
    results = workdir / "results.json"
    policy = write_policy(workdir, "runc", 1)
    proc = start_cli("run", str(path), "--json", "--policy", str(policy), "--results", str(results))
    try:
        run_id = read_events_until(proc, "node_started")[0]["run_id"]
        container = wait_for_running_container(docker_client, run_id, "probe")
        for _ in range(600):  # until setup has begun: its first line is in the log
            if b"installing" in container.logs(stdout=False, stderr=True):
                break
            time.sleep(0.05)  # polls the container's own log, a real condition
    finally:
        code, _out, err = interrupt(proc)
    assert code == 130, err
    node = json.loads(results.read_text())["nodes"]["probe"]
    assert node["status"] == "cancelled"
    assert node["reason"] == "run interrupted (during setup)"
    assert node["setup"] == {"exit_code": None, "duration_s": None, "violations": []}
    assert "COMMAND-RAN" not in node["stdout_tail"]
    assert labelled_leftovers(docker_client, run_id) == []
