"""Every hardening promise, proven from inside a node on the real engine (and from the
engine's side for the container settings). Each test attempts the attack it is about."""

from __future__ import annotations

import errno
import json
import secrets
import signal
import time
from typing import Any

import pytest

from sandbox_orch.backend.readback import PODMAN_DEFAULT_CAPS
from sandbox_orch.backend.settings import PODMAN_NPROC
from sandbox_orch.seccomp import PODMAN_PROFILE_PATH
from tests.conftest import (
    CliResult,
    engine_of,
    interrupt,
    labelled_leftovers,
    run_workflow,
    start_cli,
    write_workflow,
)

pytestmark = pytest.mark.engine

SANDBOX_UID = 10001
MIB = 1024 * 1024


def workflow_text(
    command: str | list[str], *, runtime: str = "shell", name: str = "probe", **fields: Any
) -> str:
    """A one-node workflow. JSON is YAML, and it quotes any command safely."""
    node = {"runtime": runtime, "command": command, "timeout": "1m", **fields}
    return json.dumps({"version": 1, "name": f"hardening-{name}", "nodes": {name: node}}, indent=2)


def run_node(
    workdir,
    docker_client,
    command: str | list[str],
    *,
    cli_env: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[CliResult, dict[str, Any]]:
    """Run a one-node workflow through the CLI; the run must leave nothing behind."""
    result = run_workflow(workdir, workflow_text(command, **kw), env=cli_env)
    assert result.results is not None, result.stderr
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []
    return result, result.node(kw.get("name", "probe"))


def key_values(text: str) -> dict[str, str]:
    """`key=value` lines printed by a probe."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_capabilities_are_empty_and_no_new_privileges(workdir, built_images, docker_client):
    result, node = run_node(workdir, docker_client, "cat /proc/self/status")
    assert result.exit_code == 0, result.stderr
    status = dict(
        line.split(":\t", 1) for line in node["stdout_tail"].splitlines() if ":\t" in line
    )
    for field in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
        assert status[field].strip() == "0" * 16, field
    assert status["NoNewPrivs"].strip() == "1"


def test_privileged_operations_are_refused(workdir, built_images, docker_client):
    """What capabilities (or root) would allow: raw sockets, setuid(0), chown, mounts,
    a user namespace to regain capabilities, a setuid binary to escalate through."""
    probe = r"""
import json, os, socket, subprocess
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "allowed"
    except OSError as error:
        out[name] = error.errno
attempt("raw_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt("setuid_root", lambda: os.setuid(0))
attempt("setgid_root", lambda: os.setgid(0))
open("/tmp/mine", "w").close()
attempt("chown_root", lambda: os.chown("/tmp/mine", 0, 0))
for name, argv in {"unshare_user": ["unshare", "-r", "id", "-u"],
                   "mount": ["mount", "-t", "tmpfs", "none", "/tmp"]}.items():
    done = subprocess.run(argv, capture_output=True)
    out[name] = "allowed" if done.returncode == 0 else "refused"
setuid = subprocess.run(["find", "/", "-xdev", "-perm", "/6000", "-type", "f"],
                        capture_output=True, text=True).stdout.split()
out["setuid_binaries"] = setuid
print(json.dumps(out))
"""
    result, node = run_node(workdir, docker_client, ["python", "-c", probe], runtime="python")
    assert result.exit_code == 0, node["stderr_tail"]
    out = json.loads(node["stdout_tail"].strip().splitlines()[-1])
    assert out["raw_socket"] == errno.EPERM
    assert out["setuid_root"] == errno.EPERM
    assert out["setgid_root"] == errno.EPERM
    assert out["chown_root"] == errno.EPERM
    assert out["unshare_user"] == "refused"
    assert out["mount"] == "refused"
    assert out["setuid_binaries"] == []


def test_runs_as_unprivileged_user(workdir, built_images, docker_client):
    result, node = run_node(workdir, docker_client, 'echo "uid=$(id -u)"; echo "gid=$(id -g)"')
    assert result.exit_code == 0, result.stderr
    found = key_values(node["stdout_tail"])
    assert found == {"uid": str(SANDBOX_UID), "gid": str(SANDBOX_UID)}
    assert node["sandbox"]["user"] == f"{SANDBOX_UID}:{SANDBOX_UID}"


def test_root_filesystem_is_read_only_and_tmp_is_noexec(workdir, built_images, docker_client):
    command = r"""
for path in /probe /etc/probe /home/sandbox/probe /usr/bin/probe /var/tmp/probe; do
  if echo x > "$path" 2>/dev/null; then echo "write:$path=allowed"; else echo "write:$path=refused"; fi
done
echo data > /tmp/ok && echo "write:/tmp=$(cat /tmp/ok)"
for dir in /tmp /dev/shm; do
  cp /bin/true "$dir/t" && chmod 755 "$dir/t"
  "$dir/t"; echo "exec:$dir=$?"
done
/bin/true; echo "exec:/bin=$?"
"""
    result, node = run_node(workdir, docker_client, command)
    assert result.exit_code == 0, node["stderr_tail"]
    found = key_values(node["stdout_tail"])
    for path in ("/probe", "/etc/probe", "/home/sandbox/probe", "/usr/bin/probe", "/var/tmp/probe"):
        assert found[f"write:{path}"] == "refused", path
    assert found["write:/tmp"] == "data"
    assert found["exec:/bin"] == "0"  # the control: the same binary runs from the image
    assert found["exec:/tmp"] == "126"  # copied to a writable place, it cannot be executed
    assert found["exec:/dev/shm"] == "126"
    assert "Permission denied" in node["stderr_tail"]


def test_tmp_is_size_capped(workdir, built_images, docker_client):
    # dd's complaint is kept in a variable: /tmp itself will be full.
    command = (
        'err=$(dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>&1 >/dev/null); echo "rc=$?";'
        ' echo "size=$(stat -c %s /tmp/fill)"; echo "$err" | grep -q "No space left on device"'
        ' && echo "err=no-space"'
    )
    result, node = run_node(workdir, docker_client, command)
    assert result.exit_code == 0, node["stderr_tail"]
    found = key_values(node["stdout_tail"])
    cap = node["sandbox"]["tmpfs"]["/tmp"]
    assert cap == "64m"  # the default policy's tmpfs
    assert found["rc"] != "0"
    assert found["err"] == "no-space"
    assert 0 < int(found["size"]) <= 64 * MIB


def test_only_loopback_interface(workdir, built_images, docker_client):
    command = "ls /sys/class/net; tail -n +3 /proc/net/dev | cut -d: -f1"
    result, node = run_node(workdir, docker_client, command)
    assert result.exit_code == 0, result.stderr
    names = node["stdout_tail"].split()
    assert names == ["lo", "lo"]
    assert node["sandbox"]["network"] == "none"


def test_outside_connection_fails(workdir, built_images, docker_client):
    probe = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('1.1.1.1', 53), timeout=3).close()\n"
        "    print('connected')\n"
        "except OSError as error:\n"
        "    print('refused', error.errno)\n"
    )
    result, node = run_node(workdir, docker_client, ["python", "-c", probe], runtime="python")
    assert result.exit_code == 0, node["stderr_tail"]
    assert node["stdout_tail"].split() == ["refused", str(errno.ENETUNREACH)]


def test_engine_socket_is_absent(workdir, built_images, docker_client):
    probe = (
        "import socket\n"
        "for path in ('/var/run/docker.sock', '/run/docker.sock', '/run/containerd/containerd.sock'):\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    try:\n"
        "        s.connect(path)\n"
        "        print(path, 'connected')\n"
        "    except OSError as error:\n"
        "        print(path, error.errno)\n"
    )
    result, node = run_node(workdir, docker_client, ["python", "-c", probe], runtime="python")
    assert result.exit_code == 0, node["stderr_tail"]
    lines = [line.split() for line in node["stdout_tail"].splitlines()]
    assert len(lines) == 3
    for path, outcome in lines:
        assert outcome == str(errno.ENOENT), path


FORK_FLOOD = r"""
import json, os
kids, error = [], None
for _ in range({attempts}):  # bounded: without a limit it stops here and the test fails
    try:
        read_end, write_end = os.pipe()
        pid = os.fork()
    except OSError as failure:
        error = failure.errno
        break
    if pid == 0:
        os.close(write_end)
        os.read(read_end, 1)  # stay alive until the parent is done counting
        os._exit(0)
    os.close(read_end)
    kids.append((pid, write_end))
for _, write_end in kids:
    os.close(write_end)
for pid, _ in kids:
    os.waitpid(pid, 0)
print(json.dumps({{"forked": len(kids), "errno": error}}))
"""


def test_fork_flood_is_stopped_by_pids_limit(workdir, built_images, docker_client):
    limit = 64
    probe = FORK_FLOOD.format(attempts=limit * 4)
    result, node = run_node(
        workdir,
        docker_client,
        ["python", "-c", probe],
        runtime="python",
        resources={"pids": limit},
        timeout="60s",
    )
    assert result.exit_code == 0, node["stderr_tail"]
    assert node["status"] == "succeeded"
    out = json.loads(node["stdout_tail"].strip().splitlines()[-1])
    assert out["errno"] == errno.EAGAIN
    assert 0 < out["forked"] < limit
    assert node["sandbox"]["limits"]["pids"] == limit


MEMORY_HOG = r"""
chunks = []
for _ in range({chunks}):  # bounded: 8x the limit, written byte by byte (no lazy pages)
    chunks.append(b"\xff" * (8 * 1024 * 1024))
print("survived", len(chunks))
"""


def test_memory_hog_is_oom_killed(workdir, built_images, docker_client):
    probe = MEMORY_HOG.format(chunks=64)  # 512 MiB against a 64 MiB limit
    result, node = run_node(
        workdir,
        docker_client,
        ["python", "-c", probe],
        runtime="python",
        resources={"memory": "64m"},
    )
    assert result.exit_code == 1, result.stderr
    assert result.results["status"] == "failed"
    assert node["status"] == "failed"
    assert node["oom_killed"] is True
    assert node["attempt_details"][-1]["oom_killed"] is True
    assert "survived" not in node["stdout_tail"]
    assert node["sandbox"]["limits"]["memory"] == "64m"


def test_a_node_killing_itself_is_not_reported_as_out_of_memory(
    workdir, built_images, docker_client
):
    """SIGKILL without the OOM killer: the same exit code 137, but no OOM (the engine's
    event log is asked, and has no "oom" for it)."""
    result, node = run_node(workdir, docker_client, "kill -9 $$")
    assert result.exit_code == 1, result.stderr
    assert (node["status"], node["exit_code"], node["oom_killed"]) == ("failed", 137, False)
    assert node["reason"] == "exited with code 137"


def test_timeout_kills_promptly(workdir, built_images, docker_client):
    clock = time.monotonic()
    result, node = run_node(workdir, docker_client, "sleep 60", timeout="2s")
    took = time.monotonic() - clock
    assert result.exit_code == 1, result.stderr
    assert node["status"] == "timed_out"
    assert result.results["status"] == "failed"
    assert 2 <= node["duration_s"] < 10
    assert took < 15  # the whole CLI, start to finish, not the 60 s the command wanted


def test_orchestrator_environment_does_not_leak(workdir, built_images, docker_client):
    secret = "leak-me-123"
    result, node = run_node(
        workdir,
        docker_client,
        "env",
        cli_env={"SANDBOX_ORCH_SECRET_PROBE": secret},
        env={"DECLARED_BY_WORKFLOW": "visible-456"},
    )
    assert result.exit_code == 0, result.stderr
    seen = key_values(node["stdout_tail"])
    assert seen["DECLARED_BY_WORKFLOW"] == "visible-456"  # the control: env is captured
    assert "SANDBOX_ORCH_SECRET_PROBE" not in seen
    assert secret not in node["stdout_tail"] + node["stderr_tail"]
    assert secret not in json.dumps(result.results)
    assert "SANDBOX_ORCH_HOME" not in seen  # nor anything else of the orchestrator's


def test_ulimits_and_init(workdir, built_images, docker_client):
    command = r"""
echo "nofile=$(ulimit -n)"; echo "nofile_hard=$(ulimit -Hn)"
echo "core=$(ulimit -c)"; echo "core_hard=$(ulimit -Hc)"
if (ulimit -n 4096) 2>/dev/null; then echo "raise=allowed"; else echo "raise=refused"; fi
if (ulimit -c unlimited) 2>/dev/null; then echo "core_raise=allowed"; else echo "core_raise=refused"; fi
echo "pid1=$(cat /proc/1/comm)"; echo "self=$$"
# An orphan (its parent gone) whose exit nobody else waits for: only PID 1 can reap it,
# and until then it stays in /proc as a zombie. The wait is bounded and polls.
sh -c 'sh -c "exit 0" & echo $! > /tmp/orphan; exit 0'; orphan=$(cat /tmp/orphan)
i=0; while [ -e /proc/$orphan ] && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.05; done
if [ -e /proc/$orphan ]; then echo "orphan=kept"; else echo "orphan=reaped"; fi
"""
    result, node = run_node(workdir, docker_client, command)
    assert result.exit_code == 0, result.stderr
    found = key_values(node["stdout_tail"])
    assert found["nofile"] == found["nofile_hard"] == "1024"
    assert found["core"] == found["core_hard"] == "0"
    assert found["raise"] == "refused"
    assert found["core_raise"] == "refused"
    # The same init on every engine: the image's tini, not Docker's --init or Podman's
    # catatonit; and it reaps orphans.
    assert found["pid1"] == "tini"
    assert found["self"] != "1"
    assert found["orphan"] == "reaped"


def read_events_until(proc, kind: str) -> list[dict[str, Any]]:
    """JSON events from a `run --json` until one of `kind` (or the end of output)."""
    events: list[dict[str, Any]] = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == kind:
            return events
    raise AssertionError(f"no {kind} event; got {events}; stderr: {proc.stderr.read()}")


def wait_for_running_container(docker_client, run_id: str, node: str, deadline_s: float = 30):
    """The node's container, once the engine has started it: waits on the engine's own
    `start` event (no polling), bounded by `deadline_s`."""
    # The attempt label: the node's own container, never its artifact holder (which
    # carries the node's name too, and starts first).
    labels = [f"sandbox-orch.run={run_id}", f"sandbox-orch.node={node}", "sandbox-orch.attempt"]
    # Replayed from a minute back, so a start that came before we asked is seen too.
    events = docker_client.events(
        since=time.time() - 60,
        until=time.time() + deadline_s,
        filters={"type": "container", "event": "start", "label": labels},
        decode=True,
    )
    for event in events:
        events.close()
        return docker_client.containers.get(event["id"])
    raise AssertionError(f"no running container for node {node!r} of run {run_id}")


def test_container_settings_seen_from_the_engine(workdir, built_images, docker_client):
    name = f"inspect-{secrets.token_hex(3)}"
    text = workflow_text(
        "sleep 30", name=name, resources={"cpus": 0.5, "memory": "96m", "pids": 48}
    )
    path = write_workflow(workdir, text)
    proc = start_cli("run", str(path), "--json", "--results", str(workdir / "results.json"))
    try:
        run_id = read_events_until(proc, "node_started")[0]["run_id"]
        attrs = wait_for_running_container(docker_client, run_id, name).attrs
    finally:
        # Ctrl-C, also when something above failed: the CLI removes what it created.
        code, _out, err = interrupt(proc, signal.SIGINT)
    assert code == 130, err
    assert labelled_leftovers(docker_client, run_id) == []
    results = json.loads((workdir / "results.json").read_text())
    assert results["status"] == "cancelled"
    assert results["nodes"][name]["status"] == "cancelled"

    host = attrs["HostConfig"]
    if engine_of(docker_client).podman:
        return podman_settings_seen(attrs, run_id, name)
    assert host["CapDrop"] == ["ALL"]
    assert not host["CapAdd"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert not any("unconfined" in opt for opt in host["SecurityOpt"])
    both_engines_seen(attrs)
    assert host["PidMode"] == "" and host["UsernsMode"] == "" and host["UTSMode"] == ""
    assert host["IpcMode"] in ("private", "none")
    assert host["CgroupnsMode"] == "private"
    assert "max-size" in host["LogConfig"]["Config"]
    tmp_options = host["Tmpfs"]["/tmp"].split(",")
    assert "noexec" in tmp_options and "nosuid" in tmp_options
    assert f"size={64 * MIB}" in tmp_options
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
    assert ulimits == {"nofile": (1024, 1024), "core": (0, 0)}
    labels = attrs["Config"]["Labels"]
    assert labels["sandbox-orch.run"] == run_id
    assert labels["sandbox-orch.node"] == name
    assert attrs["Config"]["User"] == f"{SANDBOX_UID}:{SANDBOX_UID}"
    assert attrs["Config"]["NetworkDisabled"] is True


def both_engines_seen(attrs: dict[str, Any]) -> None:
    """What Docker and Podman report alike."""
    host = attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["NetworkMode"] == "none"
    assert host["Privileged"] is False
    assert not host["Binds"] and not host["Devices"] and not attrs["Mounts"]
    assert host["PidsLimit"] == 48
    assert host["Memory"] == host["MemorySwap"] == 96 * MIB
    assert host["NanoCpus"] == 500_000_000
    assert not host.get("Init")  # no engine init: the image's tini is the entrypoint
    assert attrs["Config"]["Entrypoint"] == ["/usr/bin/tini", "--"]
    assert host["LogConfig"]["Type"] == "json-file"
    assert host["RestartPolicy"]["Name"] == "no"


def podman_settings_seen(attrs: dict[str, Any], run_id: str, name: str) -> None:
    """The same settings as Podman reports them (each in its own terms; README, Podman)."""
    host = attrs["HostConfig"]
    assert set(host["CapDrop"]) >= PODMAN_DEFAULT_CAPS  # Docker's defaults, all dropped
    assert not host["CapAdd"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert f"seccomp={PODMAN_PROFILE_PATH}" in host["SecurityOpt"]
    both_engines_seen(attrs)
    assert host["PidMode"] == host["UTSMode"] == "private" and host["UsernsMode"] == ""
    assert host["IpcMode"] == "shareable"  # a namespace of its own, as "private"
    tmp_options = host["Tmpfs"]["/tmp"].split(",")
    assert "noexec" in tmp_options and "nosuid" in tmp_options
    assert f"size={64 * MIB}" in tmp_options
    for path in ("/run", "/var/tmp"):  # Podman's own tmpfs there, made read-only and empty
        assert host["Tmpfs"][path].split(",")[0] == "ro", path
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
    nproc = (PODMAN_NPROC, PODMAN_NPROC)
    assert ulimits == {"RLIMIT_NOFILE": (1024, 1024), "RLIMIT_CORE": (0, 0), "RLIMIT_NPROC": nproc}
    labels = attrs["Config"]["Labels"]
    assert labels["sandbox-orch.run"] == run_id
    assert labels["sandbox-orch.node"] == name
    assert attrs["Config"]["User"] == f"{SANDBOX_UID}:{SANDBOX_UID}"
