"""The Docker backend on the real engine, under runc and gVisor: images pinned to the id
preflight resolved, a private cgroup namespace, each container read back before it
starts (an engine proxy that drops a setting must stop the run), gVisor's pids limits,
the file tools in every image under gVisor, and what `doctor` reports."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import socket
import socketserver
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from tests.conftest import (
    REPO,
    CliResult,
    cli,
    labelled_leftovers,
    run_workflow,
    start_cli,
    unique,
    write_workflow,
)
from tests.integration.test_hardening import FORK_FLOOD

pytestmark = pytest.mark.engine

RUNTIMES = ["runc", "runsc"]
TEST_LABEL = {"sandbox-orch.test": "backend"}
ENGINE_SOCKET = "/var/run/docker.sock"


def policy_file(directory: Path, runtime: str, images: list[str] | None = None) -> Path:
    """policies/default.yaml under `runtime`, granting `images` to custom runtimes."""
    text = (REPO / "policies" / "default.yaml").read_text()
    text = text.replace("oci_runtime: runc", f"oci_runtime: {runtime}")
    if images is not None:
        granted = ", ".join(json.dumps(image) for image in images)
        text = "\n".join(
            f"images: [{granted}]" if line.startswith("images:") else line
            for line in text.splitlines()
        )
    path = directory / f"policy-{runtime}.yaml"
    path.write_text(text)
    return path


def workflow(nodes: dict[str, Any], **top: Any) -> str:
    """JSON is YAML, and it quotes any command safely."""
    return json.dumps({"version": 1, "name": "backend", **top, "nodes": nodes}, indent=2)


def run_under(workdir: Path, runtime: str, text: str, **kw: Any) -> CliResult:
    images = kw.pop("images", None)
    policy = policy_file(workdir, runtime, images)
    return run_workflow(workdir, text, "--policy", str(policy), **kw)


def engine_events(client, since: float, event: str, node: str) -> list[dict[str, Any]]:
    """The engine's `event` events since `since` for containers of node `node`: also
    those of containers already removed, which a listing cannot show."""
    found = client.events(
        since=since,
        until=time.time(),
        filters={"type": "container", "event": event, "label": f"sandbox-orch.node={node}"},
        decode=True,
    )
    return list(found)


# --- item 7: every container from the id resolved at preflight ---------------------


def build_marked(client, tag: str, marker: str) -> str:
    """A throwaway image from sandbox-orch/shell with /etc/so-marker holding `marker`."""
    with tempfile.TemporaryDirectory() as context:
        Path(context, "Dockerfile").write_text(
            "FROM sandbox-orch/shell\nCOPY marker /etc/so-marker\n"
        )
        Path(context, "marker").write_text(marker + "\n")
        image, _ = client.images.build(path=context, tag=tag, labels=TEST_LABEL, rm=True)
    return str(image.id)


@pytest.fixture
def throwaway_tag(docker_client):
    """A tag no one else uses; every image this test made is removed afterwards."""
    tag = f"sandbox-orch-test/pinned-{secrets.token_hex(4)}:latest"
    made: list[str] = []
    yield tag, made
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(tag, force=True)
    for image_id in made:
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            docker_client.images.remove(image_id, force=True)


def read_events(proc, until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if until(events[-1]):
            return events
    raise AssertionError(f"the run ended first: {events}; stderr: {proc.stderr.read()}")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_retag_mid_run_changes_nothing(
    workdir, built_images, docker_client, throwaway_tag, runtime
):
    tag, made = throwaway_tag
    original = build_marked(docker_client, tag, "original")
    made.append(original)
    sync = workdir / "sync"
    sync.mkdir()
    sync.chmod(0o755)
    first, second = unique("first"), unique("second")
    # `first` waits for the marker file the test creates after re-tagging (polling a
    # real condition, bounded by its timeout); `second` starts only after `first`.
    text = workflow(
        {
            first: {
                "runtime": "pinned",
                "command": "until [ -e /sync/go ]; do sleep 0.05; done; cat /etc/so-marker",
                "mounts": [{"source": "./sync", "target": "/sync", "mode": "ro"}],
                "timeout": "2m",
            },
            second: {"runtime": "pinned", "needs": [first], "command": "cat /etc/so-marker"},
        },
        runtimes={"pinned": {"image": tag}},
    )
    path = write_workflow(workdir, text)
    policy = policy_file(workdir, runtime, [tag])
    results = workdir / "results.json"
    proc = start_cli("run", str(path), "--policy", str(policy), "--json", "--results", str(results))
    try:
        read_events(proc, lambda e: e["event"] == "node_started" and e.get("node") == first)
        made.append(build_marked(docker_client, tag, "replaced"))  # the tag moves
        assert docker_client.images.get(tag).id != original
        (sync / "go").write_text("")
        proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    found = json.loads(results.read_text())
    for name in (first, second):
        node = found["nodes"][name]
        assert node["stdout_tail"].strip() == "original", node
        assert node["image_id"] == original and node["image"] == tag
    assert labelled_leftovers(docker_client, found["run_id"]) == []


# --- item 9: the node's own cgroup namespace ------------------------------------------


CGROUP_PROBE = "hostname; echo ---; cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_container_id_is_not_in_proc_self_cgroup(workdir, built_images, docker_client, runtime):
    name = unique("cgroup")
    since = time.time()
    result = run_under(workdir, runtime, workflow({name: {"command": CGROUP_PROBE}}))
    assert result.exit_code == 0, result.stderr
    node = result.node(name)
    hostname, own, init = node["stdout_tail"].split("---\n")
    (created,) = engine_events(docker_client, since, "create", name)
    container_id = created["id"]
    assert len(container_id) == 64  # the control: we know the id (from the engine's event)
    assert hostname.strip() == "sandbox"  # fixed, not the id (test_host_identity.py)
    for text in (own, init):
        lines = text.strip().splitlines()
        assert lines, node  # the control: the file was read
        assert container_id[:12] not in text and "docker" not in text, text
        assert all(line.endswith(":/") for line in lines), text  # its own root, nothing above
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []


NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "uts")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_no_namespace_is_shared_with_the_orchestrator(
    workdir, built_images, docker_client, runtime
):
    """The class of the cgroup finding: a node shares none of the orchestrator's
    namespaces (user namespaces are not remapped on this engine: doctor says so)."""
    name = unique("namespaces")
    command = " ; ".join(f"echo {ns}=$(readlink /proc/self/ns/{ns})" for ns in NAMESPACES)
    result = run_under(workdir, runtime, workflow({name: {"command": command}}))
    assert result.exit_code == 0, result.stderr
    seen = dict(
        line.split("=", 1) for line in result.node(name)["stdout_tail"].splitlines() if "=" in line
    )
    for ns in NAMESPACES:
        if runtime == "runsc" and ns == "cgroup" and seen[ns] == "":
            continue  # gVisor's kernel has no cgroup namespaces (and shares none of ours)
        ours = os.readlink(f"/proc/self/ns/{ns}")
        assert seen[ns].startswith(f"{ns}:["), seen  # the control: the link was read
        assert seen[ns] != ours, (ns, seen[ns])


def test_runc_nodes_still_see_their_own_limits(workdir, built_images, docker_client):
    """A private namespace hides the host's tree, not the node's own limits."""
    name = unique("limits")
    command = "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes"
    text = workflow({name: {"command": command, "resources": {"pids": 48, "memory": "96m"}}})
    result = run_under(workdir, "runc", text)
    assert result.exit_code == 0, result.stderr
    assert result.node(name)["stdout_tail"].split() == ["48", str(96 * 1024 * 1024)]


# --- item 13: an engine that drops a setting --------------------------------------------


class DroppingProxy(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """An engine proxy on a Unix socket: relays everything to the engine's socket, but
    rewrites the JSON body of `POST /containers/create` with `rewrite`. Responses are
    relayed as they come; after an upgrade (attach), the rest of the connection is too."""

    daemon_threads = True

    def __init__(self, path: str, rewrite: Callable[[dict[str, Any]], None]) -> None:
        self.rewrite = rewrite
        self.rewritten = 0
        super().__init__(path, _ProxyHandler)


class _ProxyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(ENGINE_SOCKET)
        back = threading.Thread(target=_pump, args=(upstream, self.request), daemon=True)
        back.start()
        try:
            self._requests(self.request.makefile("rb"), upstream)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)
            back.join(timeout=60)
            upstream.close()

    def _requests(self, client: io.BufferedReader, upstream: socket.socket) -> None:
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = client.readline()
                if not line:
                    return
                head += line
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (h.partition(":") for h in lines[1:] if h)
            }
            if "chunked" in headers.get("transfer-encoding", "") or "upgrade" in headers:
                upstream.sendall(head)
                _pump_file(client, upstream)  # the rest of the connection, unparsed
                return
            body = client.read(int(headers.get("content-length") or 0))
            method, target = lines[0].split(" ")[:2]
            if method == "POST" and target.split("?")[0].endswith("/containers/create"):
                document = json.loads(body)
                self.server.rewrite(document)
                self.server.rewritten += 1
                body = json.dumps(document).encode()
                kept = [h for h in lines[1:] if h and not h.lower().startswith("content-length")]
                head = "\r\n".join(
                    [lines[0], *kept, f"Content-Length: {len(body)}", "", ""]
                ).encode()
            upstream.sendall(head + body)


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _pump_file(source: io.BufferedReader, target: socket.socket) -> None:
    while chunk := source.read1(65536):
        target.sendall(chunk)


@contextlib.contextmanager
def dropping_proxy(rewrite: Callable[[dict[str, Any]], None]):
    directory = tempfile.mkdtemp(prefix="so-proxy-")
    path = os.path.join(directory, "docker.sock")
    server = DroppingProxy(path, rewrite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        os.unlink(path)
        os.rmdir(directory)


def _host(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda body: change(body["HostConfig"])


DROPS: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    # name: (runtime, the rewrite, the setting the node's reason must name)
    "CapDrop": ("runc", _host(lambda h: h.pop("CapDrop")), "CapDrop"),
    "ReadonlyRootfs": ("runc", _host(lambda h: h.update(ReadonlyRootfs=False)), "ReadonlyRootfs"),
    "no-new-privileges": (
        "runc",
        _host(lambda h: h.update(SecurityOpt=[o for o in h["SecurityOpt"] if "no-new" not in o])),
        "SecurityOpt",
    ),
    "seccomp profile": (
        "runsc",
        _host(lambda h: h.update(SecurityOpt=["no-new-privileges"])),
        "SecurityOpt",
    ),
    "mount ReadOnly": (
        "runc",
        _host(lambda h: [m.update(ReadOnly=False) for m in h["Mounts"]]),
        "mount /data",
    ),
    "Memory": ("runc", _host(lambda h: h.update(Memory=0, MemorySwap=0)), "Memory"),
    "PidsLimit": ("runsc", _host(lambda h: h.pop("PidsLimit")), "PidsLimit"),
    "Runtime": ("runsc", _host(lambda h: h.update(Runtime="runc")), "Runtime"),
    "CgroupnsMode": ("runc", _host(lambda h: h.pop("CgroupnsMode")), "CgroupnsMode"),
    "CapAdd": ("runc", _host(lambda h: h.update(CapAdd=["SYS_ADMIN"])), "CapAdd"),
    "tmpfs noexec": (
        "runc",
        _host(lambda h: h["Tmpfs"].update({"/tmp": h["Tmpfs"]["/tmp"].replace("noexec,", "")})),
        "Tmpfs",
    ),
    "ulimit nproc": (
        "runsc",
        _host(lambda h: h.update(Ulimits=[u for u in h["Ulimits"] if u["Name"] != "nproc"])),
        "Ulimits",
    ),
    "cgroup mask": (
        "runsc",
        _host(lambda h: h["Tmpfs"].pop("/sys/fs/cgroup")),
        "Tmpfs",
    ),
    "Image": ("runc", lambda b: b.update(Image="sandbox-orch/python"), "Image"),
    "User": ("runsc", lambda b: b.update(User="0:0"), "User"),
    "Env LD_PRELOAD": ("runc", lambda b: b["Env"].append("LD_PRELOAD=/tmp/x.so"), "Env LD_PRELOAD"),
    # Settings we never ask for, added: each would open the container to the host.
    "Privileged": ("runsc", _host(lambda h: h.update(Privileged=True)), "Privileged"),
    "extra Binds": ("runsc", _host(lambda h: h.update(Binds=["/etc:/host-etc:ro"])), "Binds"),
    "mount Source": (
        "runc",
        _host(lambda h: [m.update(Source="/etc") for m in h["Mounts"] if m["Target"] == "/data"]),
        "mount /data",
    ),
}


def _probe_workflow(workdir: Path, name: str) -> str:
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    mounts = [{"source": "./data", "target": "/data", "mode": "ro"}]
    return workflow({name: {"command": "echo ran", "mounts": mounts}})


@pytest.mark.parametrize("dropped", sorted(DROPS))
def test_a_setting_the_engine_dropped_stops_the_run(workdir, built_images, docker_client, dropped):
    runtime, rewrite, setting = DROPS[dropped]
    name = unique("dropped")
    since = time.time()
    with dropping_proxy(rewrite) as (docker_host, proxy):
        result = run_under(
            workdir, runtime, _probe_workflow(workdir, name), env={"DOCKER_HOST": docker_host}
        )
    assert proxy.rewritten == 1  # the control: the create did go through the proxy
    assert result.exit_code == 3, result.stderr + result.stdout
    node = result.node(name)
    assert node["status"] == "errored", node
    assert setting in node["reason"] and "did not apply" in node["reason"], node["reason"]
    assert "ran" not in node["stdout_tail"]
    assert len(engine_events(docker_client, since, "create", name)) == 1
    assert engine_events(docker_client, since, "start", name) == []  # never started
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_same_proxy_without_a_rewrite_runs_the_node(
    workdir, built_images, docker_client, runtime
):
    """The control for the above: through the proxy, an untouched create runs."""
    name = unique("relayed")
    with dropping_proxy(lambda body: None) as (docker_host, proxy):
        result = run_under(
            workdir, runtime, _probe_workflow(workdir, name), env={"DOCKER_HOST": docker_host}
        )
    assert proxy.rewritten == 1
    assert result.exit_code == 0, result.stderr + result.stdout
    assert result.node(name)["stdout_tail"] == "ran\n"


# --- item 14: gVisor's pids limits, and the file tools in every image -------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_fork_flood_is_contained(workdir, built_images, docker_client, runtime):
    limit, name = 64, unique("forks")
    node = {
        "runtime": "python",
        "command": ["python", "-c", FORK_FLOOD.format(attempts=limit * 4)],
        "resources": {"pids": limit},
        "timeout": "90s",
    }
    result = run_under(workdir, runtime, workflow({name: node}))
    assert result.exit_code == 0, result.stderr
    found = result.node(name)
    out = json.loads(found["stdout_tail"].strip().splitlines()[-1])
    assert out["errno"] == 11 and 0 < out["forked"] < limit, out  # EAGAIN, within the limit
    enforced = found["sandbox"]["pids_enforced_by"]
    if runtime == "runsc":
        assert "RLIMIT_NPROC" in enforced and "cgroup at 256" in enforced  # 3 * 64 + 64
    else:
        assert enforced == "cgroup pids.max (64)"
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_real_fork_bomb_is_contained_and_removed(workdir, built_images, docker_client, runtime):
    """The unbounded classic, for 5 s: held at the limit, killed at the timeout, gone."""
    name = unique("bomb")
    # The bomb goes off in one background subshell, forked while the pids are free; the
    # node's own shell then execs sleep at once. Calling the bomb in the node's shell
    # raced it: a fork that the bomb had already starved ends dash with exit 2.
    command = "(b() { b | b & }; b) & exec sleep 60"
    text = workflow({name: {"command": command, "resources": {"pids": 64}, "timeout": "5s"}})
    clock = time.monotonic()
    result = run_under(workdir, runtime, text)
    took = time.monotonic() - clock
    assert result.exit_code == 1, result.stderr
    node = result.node(name)
    assert node["status"] == "timed_out", node
    assert took < 60, took  # the kill and the removal were not held up by the bomb
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_process_churn_within_the_limit_survives_the_gvisor_backstop(
    workdir, built_images, docker_client, runtime
):
    """Many short-lived processes, never more than the limit at once: gVisor's stub
    processes of exited tasks must not add up to the host cgroup's backstop."""
    name = unique("churn")
    # 480 processes, 40 at a time: almost twice the backstop (3 x 64 + 64 = 256), which
    # stubs that outlived their tasks would reach, at a quarter of the time of 1,600.
    command = (
        "for round in $(seq 1 12); do for i in $(seq 1 40); do /bin/true & done; wait; done; "
        "echo churned"
    )
    text = workflow({name: {"command": command, "resources": {"pids": 64}, "timeout": "3m"}})
    result = run_under(workdir, runtime, text)
    assert result.exit_code == 0, result.stderr
    assert result.node(name)["stdout_tail"].strip() == "churned"


IMAGES = ["base", "shell", "python", "node", "claude", "codex"]
FILE_TOOLS = "ls -la / && stat / && find /etc -maxdepth 1"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ls_stat_and_find_work_in_every_image(workdir, built_images, docker_client, runtime):
    images = [f"sandbox-orch/{name}" for name in IMAGES]
    nodes = {
        f"tools-{name}": {"runtime": f"image-{name}", "command": FILE_TOOLS} for name in IMAGES
    }
    runtimes = {f"image-{name}": {"image": f"sandbox-orch/{name}"} for name in IMAGES}
    result = run_under(
        workdir, runtime, workflow(nodes, runtimes=runtimes, fail_fast=False), images=images
    )
    assert result.exit_code == 0, result.stderr + result.stdout
    for name in nodes:
        node = result.node(name)
        out = node["stdout_tail"]
        assert node["status"] == "succeeded", node
        assert node["sandbox"]["oci_runtime"] == runtime
        # every entry of / listed, with its type and link target (lstat, readlink) ...
        assert "bin -> usr/bin" in out and " etc\n" in out and " tmp\n" in out, out
        assert "File: /\n" in out and "directory" in out, out  # ... stat (statx) ...
        assert "/etc/passwd\n" in out, out  # ... and find (getdents, fstatat)
        # gVisor answers lgetxattr("security.selinux") on a symlink with EBADF, which
        # coreutils' ls reports; the listing itself is complete. Nothing else may fail.
        for line in node["stderr_tail"].splitlines():
            assert line.endswith(("Bad file descriptor", "/root: Permission denied")), line


# --- item 15: doctor ---------------------------------------------------------------------


def test_doctor_reports_what_protects_nodes_here(docker_client):
    proc = cli("doctor")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    info = docker_client.info()
    assert lines[0].startswith("engine: Docker ")  # the existing report is kept
    mode = "rootless" if "name=rootless" in (info.get("SecurityOptions") or []) else "rootful"
    assert lines[0].endswith(f" ({mode}, cgroup v{info['CgroupVersion']})")  # engines.py
    assert any(line.startswith("runtime runc: available") for line in lines)
    cgroups = f"cgroups: v{info.get('CgroupVersion') or '1'}, driver {info['CgroupDriver']}"
    assert any(line.startswith(cgroups) for line in lines), lines
    options = " ".join(info.get("SecurityOptions") or [])
    for name, title in (("apparmor", "AppArmor"), ("selinux", "SELinux")):
        state = "confines containers" if f"name={name}" in options else "not enabled"
        assert any(line.startswith(f"{title}: {state}") for line in lines), lines
    if "runsc" in info.get("Runtimes", {}):
        (version,) = [line for line in lines if line.startswith("runsc version: ")]
        assert "runsc version 0.0~" in version  # run from the registered path
    assert sum(line.startswith("protects nodes here: ") for line in lines) == 1
    assert sum(line.startswith("does not protect nodes here: ") for line in lines) == 1
    if "name=apparmor" not in options and "name=selinux" not in options:
        assert "no LSM (AppArmor or SELinux) confines containers" in proc.stdout
