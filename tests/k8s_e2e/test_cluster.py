"""The engine suite's promises on a real cluster (`make k8s-e2e`; see conftest.py).

Each test runs whole commands, as a user would, and checks the cluster afterwards. What
the emulator tests (tests/unit/test_k8s_backend.py) cannot show is checked here: Pod
Security admission, the RuntimeClass's handler, NetworkPolicy enforcement, the kubelet's
OOM report, deletion on a real API server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Cluster, left_after, sandbox_orch

HELLO = """
version: 1
name: hello
nodes:
  greet: {runtime: shell, command: "echo hello"}
  python: {needs: [greet], runtime: python, command: ["python3", "-c", "print(6 * 7)"]}
"""


def test_doctor_reports_a_restricted_namespace_and_the_runtime_classes(cluster, tmp_path):
    done = sandbox_orch("doctor", *cluster.args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "restricted" in done.stdout


def test_a_workflow_runs_in_order_and_leaves_nothing(cluster, run_workflow):
    run = run_workflow(HELLO)
    assert run.process.returncode == 0, run.process.stderr
    assert run.node("greet")["status"] == "succeeded"
    assert "hello" in run.node("greet")["stdout_tail"]
    assert run.node("python")["stdout_tail"].strip() == "42"
    assert left_after(cluster, run.results["run_id"]) == []


def test_a_failing_node_fails_the_run_with_its_exit_code(cluster, run_workflow):
    run = run_workflow("version: 1\nname: f\nnodes:\n  a: {command: 'exit 7'}\n")
    assert run.process.returncode == 1
    assert (run.node("a")["status"], run.node("a")["exit_code"]) == ("failed", 7)
    assert left_after(cluster, run.results["run_id"]) == []


def test_a_timeout_kills_the_node(cluster, run_workflow):
    run = run_workflow("version: 1\nname: t\nnodes:\n  a: {command: 'sleep 300', timeout: 5s}\n")
    assert run.node("a")["status"] == "timed_out"
    assert left_after(cluster, run.results["run_id"]) == []


def test_an_oom_kill_is_reported_as_such(cluster, run_workflow):
    hog = "b = [bytes([1]) * 10485760 for _ in range(100)]"  # touched: 1 GB really used
    text = (
        "version: 1\nname: m\nnodes:\n  a:\n    runtime: python\n"
        f"    command: [python3, -c, {json.dumps(hog)}]\n    resources: {{memory: 64m}}\n"
    )
    run = run_workflow(text)
    assert run.node("a")["status"] == "failed" and run.node("a")["oom_killed"] is True


ARTIFACTS = """
version: 1
name: artifacts
nodes:
  make:
    runtime: shell
    command: "mkdir -p /out/sub && echo report > /out/sub/report.txt && truncate -s 2g /out/hole"
    outputs: {artifacts: [{name: dist, path: /out}]}
"""


def test_artifacts_are_copied_from_the_producers_pod_and_a_sparse_one_fails(cluster, run_workflow):
    """The holder keeps the pod after the node's container ends; the copy comes from it.
    A 2 GiB hole (above the default policy's artifact limit) fails the node, unexpanded."""
    run = run_workflow(ARTIFACTS)
    node = run.node("make")
    assert node["status"] == "failed" and "apparent size" in node["reason"], node
    (record,) = node["artifacts"]
    assert not record["complete"]
    run = run_workflow(ARTIFACTS.replace(" && truncate -s 2g /out/hole", ""))
    node = run.node("make")
    assert node["status"] == "succeeded", node
    (record,) = node["artifacts"]
    assert record["complete"] and record["files"] == 1
    assert (Path(record["path"]) / "sub" / "report.txt").read_text() == "report\n"
    assert left_after(cluster, run.results["run_id"]) == []


def test_a_consumer_reads_its_producers_copy_read_only(cluster, run_workflow):
    """Its deliver container takes the copy over exec before its node runs; the node
    sees it read-only, and the producer's pod is gone by then."""
    workflow = ARTIFACTS.replace(" && truncate -s 2g /out/hole", "") + (
        "  use:\n    runtime: shell\n    needs: [make]\n"
        "    inputs: [{from: make/dist, path: /in}]\n"
        '    command: "cat /in/sub/report.txt && ! touch /in/new 2>/dev/null"\n'
    )
    use = _succeeded(cluster, run_workflow, workflow, "use")
    assert use["stdout_tail"].startswith("report\n")


def test_a_read_only_mount_is_delivered_and_stays_read_only(cluster, run_workflow):
    """run_workflow's directory (the workflow's) is mounted: its workflow file is there."""
    workflow = (
        "version: 1\nname: mounted\nnodes:\n  look:\n    runtime: shell\n"
        "    mounts: [{source: ., target: /w}]\n"
        '    command: "grep -c mounted /w/*.yaml && ! touch /w/new 2>/dev/null"\n'
    )
    _succeeded(cluster, run_workflow, workflow, "look")


def _succeeded(cluster: Cluster, run_workflow, workflow: str, node: str) -> dict:
    """The node's result once it succeeded, the run having left nothing on the cluster."""
    run = run_workflow(workflow)
    found = run.node(node)
    assert found["status"] == "succeeded", found
    assert left_after(cluster, run.results["run_id"]) == []
    return found


PROBE = r"""
echo "uid=$(id -u) gid=$(id -g)"
grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\t' | tr ':' '='
echo "pid1=$(cat /proc/1/comm)"
echo "hostname=$(hostname)"
if touch /root-test 2>/dev/null; then echo "root=writable"; else echo "root=read-only"; fi
if [ -e /var/run/secrets/kubernetes.io ]; then echo "token=mounted"; else echo "token=none"; fi
# The kubelet always names the API server's own service; enableServiceLinks: false
# leaves out every other service.
if env | grep _SERVICE_HOST= | grep -qv ^KUBERNETES_; then echo "services=named"
else echo "services=none"; fi
api="${KUBERNETES_SERVICE_HOST:-kubernetes.default.svc}/${KUBERNETES_SERVICE_PORT:-443}"
if timeout 5 bash -c "exec 3<>/dev/tcp/$api" 2>/dev/null
then echo "api=reached"; else echo "api=unreachable"; fi
"""


@pytest.mark.parametrize("oci_runtime", ["runc", "runsc"])
def test_a_node_is_hardened_as_on_docker(cluster: Cluster, run_workflow, oci_runtime):
    if oci_runtime == "runsc" and not cluster.gvisor:
        pytest.skip("no runsc= RuntimeClass given (SANDBOX_ORCH_K8S_RUNTIME_CLASSES)")
    policy = "ci" if oci_runtime == "runsc" else "default"
    text = f"version: 1\nname: h\nnodes:\n  a: {{runtime: shell, command: {json.dumps(PROBE)}}}\n"
    run = run_workflow(text, policy=policy)
    assert run.process.returncode == 0, run.process.stderr
    seen = dict(line.split("=", 1) for line in run.node("a")["stdout_tail"].split())
    assert seen["uid"] == "10001" and seen["gid"] == "10001"
    assert seen["CapEff"] == "0000000000000000"
    # gVisor's /proc/self/status has no NoNewPrivs line (its kernel applies it all the same)
    assert seen.get("NoNewPrivs", "absent") == ("absent" if oci_runtime == "runsc" else "1")
    assert seen["Seccomp"] == "2"  # a filter: RuntimeDefault, or ours under gVisor
    assert seen["pid1"] == "tini" and seen["hostname"] == "sandbox"
    assert seen["root"] == "read-only" and seen["token"] == "none"
    assert seen["services"] == "none"
    assert seen["api"] == "unreachable"  # the run's deny-all NetworkPolicy


LONG = "version: 1\nname: long\nnodes:\n  a: {command: 'sleep 600', timeout: 15m}\n"


def started_run(cluster: Cluster, tmp_path) -> tuple[subprocess.Popen, str]:
    """`run --json` of a long node, once its pod runs: (the process, the run id)."""
    (tmp_path / "wf.yaml").write_text(LONG)
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox_orch", "run", "wf.yaml", "--json", *cluster.args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "SANDBOX_ORCH_HOME": str(tmp_path / "store")},
    )
    assert process.stdout is not None
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "node_started":
            return process, events[0]["run_id"]
    raise AssertionError(f"no node_started event; got {events}")


def test_ctrl_c_removes_everything_the_run_created(cluster: Cluster, tmp_path):
    process, run_id = started_run(cluster, tmp_path)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    assert left_after(cluster, run_id) == []


def test_gc_removes_what_a_killed_run_left(cluster: Cluster, tmp_path):
    process, run_id = started_run(cluster, tmp_path)
    process.kill()  # no cleanup at all: gc finds the owner gone
    process.wait(timeout=60)
    done = sandbox_orch("gc", *cluster.args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert left_after(cluster, run_id) == []


EGRESS_POLICY = """
version: 1
name: e2e-egress
runtimes: [python]
images: ["sandbox-orch/python"]
isolation: {oci_runtime: runc, user: "10001:10001", tmpfs: {/tmp: 64m}}
network: {egress: ["example.com:443", "example.org:443"]}
mounts: []
env: {deny: []}
secrets: {}
limits: {cpus: 2, memory: 2g, pids: 512, timeout: 30m, output: 16m, artifacts: 1g}
defaults: {cpus: 1, memory: 512m, pids: 256, timeout: 10m}
"""
FETCH = r"""
import os, socket, urllib.error, urllib.request
def get(url):
    try:
        return urllib.request.urlopen(url, timeout=30).status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError as error:
        return type(error).__name__
print("granted", get("https://example.com/"))
print("refused", get("https://example.org/"))
host, _, port = os.environ["SANDBOX_ORCH_EGRESS_PROXY"].rpartition(":")
# Past the forwarder: the proxy pod itself, without the node's certificate.
try:
    with socket.create_connection((host, int(port)), timeout=10) as bare:
        bare.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n")
        print("bare", bare.recv(100) or b"closed")
except OSError as error:
    print("bare", type(error).__name__)
"""


def test_egress_goes_through_the_runs_proxy_pod_and_only_where_granted(
    cluster, run_workflow, tmp_path
):
    """Through sandbox-orch-egress, over mutual TLS, to the run's proxy pod: a granted
    host answers, another is refused (a violation), and the proxy serves nothing to a
    connection without the node's certificate. The proxy's Job goes with the run."""
    (tmp_path / "egress.yaml").write_text(EGRESS_POLICY)
    text = (
        "version: 1\nname: egress\nnodes:\n  fetch:\n    runtime: python\n"
        f"    command: [python3, -c, {json.dumps(FETCH)}]\n"
        '    network: {egress: ["example.com:443"]}\n'
    )
    run = run_workflow(text, policy="egress.yaml")
    node = run.node("fetch")
    assert node["status"] == "succeeded", node
    seen = dict(line.split(" ", 1) for line in node["stdout_tail"].splitlines())
    assert seen["granted"] == "200" and seen["refused"] == "403"
    assert not seen["bare"].startswith("b'HTTP")  # a TLS alert, a close, or a reset
    assert any("example.org:443" in v["detail"] for v in node["violations"])
    assert left_after(cluster, run.results["run_id"]) == []
