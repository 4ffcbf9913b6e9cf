"""Artifacts on the real engine: producer to consumer (read-only), the host copy under
$SANDBOX_ORCH_HOME/runs/<run>/artifacts/<node>/<name>/, and what a hostile producer can
put in its output directory (symlinks, swapped links, FIFOs, hard links, too many bytes),
plus bounded output and the refusals `validate` makes before anything starts.

Every run is checked to leave nothing labelled with its id: containers (nodes and
artifact holders), networks and volumes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import time
from pathlib import Path

import pytest
import yaml

from sandbox_orch.backend import hostvolumes
from sandbox_orch.engine import VOLUMES_ENV
from sandbox_orch.policy import DEFAULT_POLICY, load_policy
from tests.conftest import (
    CliResult,
    cli,
    created_containers,
    engine_of,
    labelled_leftovers,
    podman_events,
    run_workflow,
    start_cli,
    unique,
    wait_for_peak_rss,
    write_workflow,
)
from tests.integration.test_escape import PODMAN_RUNSC

pytestmark = pytest.mark.engine

MIB = 1024 * 1024
TAIL_CHARS = 4096


# --- helpers -----------------------------------------------------------------------------


@pytest.fixture(params=["host", "engine"])
def volume_store(request, monkeypatch, docker_client) -> str:
    """Where the run keeps artifact volumes (backend/hostvolumes.py): every attack runs
    against both, as a tmpfs mounted on this host and as the engine's own tmpfs volume
    kept by a holder container."""
    if request.param == "engine" and not engine_of(docker_client).tmpfs_volumes:
        pytest.skip("Podman before 4.8 keeps every volume on this host (README, Podman)")
    monkeypatch.setenv(VOLUMES_ENV, request.param)
    return request.param


def q(text: str) -> str:
    """A YAML scalar holding `text` exactly (a JSON string is a YAML flow scalar)."""
    return json.dumps(text)


def store_home() -> Path:
    return Path(os.environ["SANDBOX_ORCH_HOME"])


def artifact_dir(run_id: str, node: str, name: str) -> Path:
    return store_home() / "runs" / run_id / "artifacts" / node / name


def host_tree(root: Path) -> dict[str, os.stat_result]:
    """Every entry below `root` (never following links): relative path -> lstat."""
    found = {}
    for directory, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(directory) / name
            found[str(path.relative_to(root))] = path.lstat()
    return found


def regular_files(root: Path) -> dict[str, bytes]:
    """The host copy's files, after checking it holds nothing but files and directories."""
    tree = host_tree(root)
    odd = {p: stat.filemode(s.st_mode) for p, s in tree.items() if not _plain(s)}
    assert odd == {}, f"the host copy holds something other than files and directories: {odd}"
    return {p: (root / p).read_bytes() for p, s in tree.items() if stat.S_ISREG(s.st_mode)}


def _plain(entry: os.stat_result) -> bool:
    return stat.S_ISREG(entry.st_mode) or stat.S_ISDIR(entry.st_mode)


def artifact_digest(files: dict[str, bytes]) -> str:
    """artifacts.Extracted.sha256, recomputed: over sorted (relative path, file sha256)."""
    pairs = sorted((path, hashlib.sha256(data).hexdigest()) for path, data in files.items())
    listing = "".join(f"{path}\0{digest}\n" for path, digest in pairs)
    return hashlib.sha256(listing.encode()).hexdigest()


def no_leftovers(docker_client, result: CliResult) -> str:
    assert result.results is not None, result.stdout + result.stderr
    run_id = result.results["run_id"]
    assert labelled_leftovers(docker_client, run_id) == []
    assert host_mounts(run_id) == []
    return run_id


def host_mounts(run_id: str) -> list[str]:
    """The run's volume directories (tmpfs mounts) still on this host."""
    return sorted(p.name for p in hostvolumes.ROOT.glob(f"sandbox-orch-{run_id}-*"))


def volume_events(docker_client, since: float, prefix: str, event: str) -> list[str]:
    """Names of volumes starting with `prefix` that had `event` since `since` (volume
    events carry no labels; ours are named sandbox-orch-<run>-<node>-<attempt>-<name>).
    Podman (4.3) calls `destroy` `remove` and names the volume in the event's attributes
    (its ID is empty)."""
    podman = engine_of(docker_client).podman
    if podman:
        event = "remove" if event == "destroy" else event
        found = podman_events(docker_client, since, {"type": "volume", "event": event})
    else:
        filters = {"type": "volume", "event": event}
        found = docker_client.events(since=since, until=time.time(), filters=filters, decode=True)
    names = {e["Actor"]["ID"] or e["Actor"]["Attributes"]["name"] for e in found}
    # (the engine may report one volume's create more than once: once per mount)
    return sorted(name for name in names if name.startswith(prefix))


def etc_passwd_markers() -> list[bytes]:
    """Text that would show the host's or the image's /etc/passwd was copied."""
    markers = [b"root:x:0:0:", b"sandbox:x:10001"]
    host = Path("/etc/passwd").read_bytes()
    return [*markers, host[:64]] if host else markers


def assert_nothing_from_etc(files: dict[str, bytes]) -> None:
    for path, data in files.items():
        for marker in etc_passwd_markers():
            assert marker not in data, f"{path} holds /etc/passwd content"
        assert Path(path).name not in {"passwd", "shadow", "group", "hostname", "os-release"}


# --- producer -> consumer, host copy -------------------------------------------------------

PRODUCED = {
    "hello.txt": b"hello\n",
    "with space.txt": b"spaced out\n",
    "sub/blob.bin": bytes(range(256)) * 4001,
    "sub/deeper/empty": b"",
}

PRODUCER = (
    "import os\n"
    "files = {'hello.txt': b'hello\\n', 'with space.txt': b'spaced out\\n',\n"
    "         'sub/blob.bin': bytes(range(256)) * 4001, 'sub/deeper/empty': b''}\n"
    "for rel, data in files.items():\n"
    "    path = os.path.join('/out/d', rel)\n"
    "    os.makedirs(os.path.dirname(path), exist_ok=True)\n"
    "    with open(path, 'wb') as f:\n"
    "        f.write(data)\n"
    "print('produced', len(files))\n"
)

CONSUMER = (
    "cd /in/d && find . -type f -print0 | sort -z | xargs -0 sha256sum; "
    "if echo x > /in/d/new; then echo WROTE-NEW; else echo refused-new; fi; "
    "if echo x >> /in/d/hello.txt; then echo WROTE-OLD; else echo refused-old; fi; "
    "if rm -f /in/d/hello.txt; then echo REMOVED; else echo refused-rm; fi; "
    "cat /in/d/hello.txt"
)


def test_producer_files_reach_consumer_read_only_and_host_copy(
    workdir, built_images, docker_client, volume_store
):
    result = run_workflow(
        workdir,
        f"""
        version: 1
        name: handoff
        nodes:
          producer:
            runtime: python
            command: ["python", "-c", {q(PRODUCER)}]
            outputs:
              artifacts: [{{name: d, path: /out/d}}]
          consumer:
            needs: [producer]
            command: {q(CONSUMER)}
            inputs: [{{from: producer/d, path: /in/d}}]
        """,
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    run_id = no_leftovers(docker_client, result)

    # The consumer saw exactly the producer's bytes, and could change none of them.
    consumer = result.node("consumer")
    sums = re.findall(r"^([0-9a-f]{64})  \./(.+)$", consumer["stdout_tail"], re.MULTILINE)
    seen = {path: digest for digest, path in sums}
    assert seen == {p: hashlib.sha256(d).hexdigest() for p, d in PRODUCED.items()}
    out = consumer["stdout_tail"]
    assert "refused-new" in out and "refused-old" in out and "refused-rm" in out
    assert "WROTE" not in out and "REMOVED" not in out
    assert out.endswith("hello\n")  # still there, unchanged
    assert "Read-only file system" in consumer["stderr_tail"]
    assert consumer["artifacts"] == [] and consumer["violations"] == []

    # The host copy: exactly the regular files, the right bytes, where documented.
    producer = result.node("producer")
    assert producer["violations"] == []
    target = artifact_dir(run_id, "producer", "d")
    files = regular_files(target)
    assert files == PRODUCED
    assert (target / "sub" / "deeper").is_dir()
    (record,) = producer["artifacts"]
    assert record["name"] == "d"
    assert Path(record["path"]).resolve() == target.resolve()
    assert record["bytes"] == sum(len(d) for d in PRODUCED.values())
    assert record["files"] == len(PRODUCED)
    assert record["sha256"] == artifact_digest(files)


# --- symlinks ------------------------------------------------------------------------------


def test_symlinks_are_refused_and_never_followed(
    workdir, built_images, docker_client, volume_store
):
    canary = workdir / "canary"
    canary.mkdir()
    command = (
        "mkdir -p /out/d/sub && echo real > /out/d/real.txt && "
        "ln -s /etc/passwd /out/d/pw && "
        "ln -s / /out/d/root && "
        "ln -s /etc /out/d/etcdir && "
        "ln -s ../../../../../../../etc/passwd /out/d/sub/climb && "
        f"ln -s {canary}/planted /out/d/planted && "
        f"ln -s {canary} /out/d/canarydir && "
        "ls -la /out/d"
    )
    result = run_workflow(
        workdir,
        f"""
        version: 1
        name: links
        nodes:
          links:
            command: {q(command)}
            outputs:
              artifacts: [{{name: d, path: /out/d}}]
        """,
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    run_id = no_leftovers(docker_client, result)
    node = result.node("links")
    assert node["status"] == "succeeded"

    refused = {v["detail"].split(":", 1)[0] for v in node["violations"]}
    assert refused == {"d/pw", "d/root", "d/etcdir", "d/sub/climb", "d/planted", "d/canarydir"}
    assert {v["kind"] for v in node["violations"]} == {"artifact"}
    assert all("symlink" in v["detail"] for v in node["violations"]), node["violations"]

    # The copy holds the one regular file, and no link; nothing was written through one.
    target = artifact_dir(run_id, "links", "d")
    files = regular_files(target)
    assert files == {"real.txt": b"real\n"}
    assert_nothing_from_etc(files)
    assert list(canary.iterdir()) == []
    run_tree = host_tree(store_home() / "runs" / run_id)
    assert not [p for p, s in run_tree.items() if stat.S_ISLNK(s.st_mode)]
    (record,) = node["artifacts"]
    assert (record["files"], record["bytes"]) == (1, 5)
    assert record["sha256"] == artifact_digest(files)


SWAPPER = (
    "mkdir -p /out/d && ln -s /etc /out/d/anchor; "
    "(while true; do ln -sfn /etc /out/d/x; rm -f /out/d/x; echo data > /out/d/x; "
    "ln -sfn /etc/passwd /out/d/x; done) & "
    "(while true; do rm -rf /out/d/sub; ln -sfn / /out/d/sub; rm -f /out/d/sub; "
    "mkdir -p /out/d/sub; echo inner > /out/d/sub/f; done) & "
    "i=0; while true; do i=$((i+1)); echo real $i > /out/d/real-$((i % 20)); done"
)


def test_symlinks_swapped_in_a_loop_never_reach_the_host(
    workdir, built_images, docker_client, volume_store
):
    started = time.monotonic()
    result = run_workflow(
        workdir,
        f"""
        version: 1
        name: swapper
        fail_fast: false
        nodes:
          swapper:
            timeout: 3s
            command: {q(SWAPPER)}
            outputs:
              artifacts: [{{name: d, path: /out/d}}]
          bystander:
            command: "sleep 1; echo still here"
        """,
    )
    took = time.monotonic() - started
    assert result.exit_code == 1, result.stdout + result.stderr  # the swapper timed out
    assert took < 60, f"the run took {took:.0f}s"
    run_id = no_leftovers(docker_client, result)
    assert result.node("bystander")["status"] == "succeeded"
    node = result.node("swapper")
    assert node["status"] == "timed_out"

    # Whatever state the loops were killed in, only regular files came out.
    target = artifact_dir(run_id, "swapper", "d")
    files = regular_files(target)
    assert_nothing_from_etc(files)
    assert files, "the loop wrote real files the whole time"
    for path, data in files.items():  # (a file killed between truncate and write is empty)
        if path.startswith("real-"):
            assert re.fullmatch(rb"(real \d+\n)?", data), (path, data)
        else:
            assert path in ("x", "sub/f") and data in (b"", b"data\n", b"inner\n"), (path, data)
    run_tree = host_tree(store_home() / "runs" / run_id)
    assert not [p for p, s in run_tree.items() if stat.S_ISLNK(s.st_mode)]
    refused = {v["detail"].split(":", 1)[0] for v in node["violations"]}
    assert "d/anchor" in refused
    # Besides the loops' names, `ln -sfn` may be caught between its two steps: a symlink
    # under a temporary name. Every refusal is a symlink's.
    assert all("symlink" in v["detail"] for v in node["violations"]), node["violations"]
    assert {v["kind"] for v in node["violations"]} == {"artifact"}
    (record,) = node["artifacts"]
    assert record["files"] == len(files)
    assert record["bytes"] == sum(len(d) for d in files.values())
    assert record["sha256"] == artifact_digest(files)


# --- size ceiling --------------------------------------------------------------------------


def test_artifact_over_the_policy_ceiling_fails_inside_and_spares_the_host(
    workdir, built_images, docker_client, volume_store
):
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    policy["limits"]["artifacts"] = "8m"
    policy_path = workdir / "small-artifacts.yaml"
    policy_path.write_text(yaml.safe_dump(policy))
    assert load_policy(policy_path).limits.artifacts == 8 * MIB

    result = run_workflow(
        workdir,
        """
        version: 1
        name: too-big
        nodes:
          hog:
            command: "head -c 20000000 /dev/zero > /out/d/blob || echo write-failed $?; exit 0"
            outputs:
              artifacts: [{name: d, path: /out/d}]
        """,
        "--policy",
        str(policy_path),
    )
    assert result.exit_code == 1, result.stdout + result.stderr
    run_id = no_leftovers(docker_client, result)
    node = result.node("hog")
    assert node["status"] == "failed" and node["exit_code"] == 0
    # The write failed inside the container, with ENOSPC.
    assert "write-failed" in node["stdout_tail"]
    assert "No space left on device" in node["stderr_tail"]
    assert "artifacts limit" in node["reason"] and "8m" in node["reason"]
    # The host got at most the cap.
    files = regular_files(artifact_dir(run_id, "hog", "d"))
    assert sum(len(d) for d in files.values()) <= 8 * MIB
    (record,) = node["artifacts"]
    assert record["bytes"] <= 8 * MIB
    assert record["sha256"] == artifact_digest(files)


# --- what a hostile producer can make of its volume: holes, inodes, depth, exec ------------

RUNTIMES = ("runc", "runsc")
CAP = 1 * MIB
ENTRIES = 1023  # inode_limit(1 MiB) - the volume's root
DEEP = "/".join(["x"] * 140)  # past the copy's depth limit (128)
NAME = "n" * 250
# Half again as many tries as the volume has inodes, each counted only if it worked (one
# that fails for another reason does not end the loop early).
ATTEMPTS = (
    "i=0; made=0; while [ $i -lt 1536 ]; do {make} && made=$((made+1)); i=$((i+1)); done; "
    "echo made $made"
)
HOSTILE_NODES = {
    # Holes: an apparent size far past the cap, in no blocks at all.
    "sparse": "echo ok > /out/d/a && truncate -s 64M /out/d/big && ls -ls /out/d",
    "terabyte": "truncate -s 1T /out/d/huge && ls -ls /out/d",
    # A sparse file deep down, reached through hard links near the top.
    "deep": f"mkdir -p /out/d/{DEEP} && truncate -s 64M /out/d/{DEEP}/s && "
    f"ln /out/d/{DEEP}/s /out/d/link1 && ln /out/d/{DEEP}/s /out/d/link2",
    # Inodes: empty files, empty directories and long names cost a tmpfs no blocks.
    "files": ATTEMPTS.format(make="true 2>/dev/null > /out/d/f$i"),
    # One mkdir for all (it goes on past a failure): 1,536 processes would take most of
    # a minute under gVisor. Counted by what exists afterwards.
    "dirs": 'i=0; set --; while [ $i -lt 1536 ]; do set -- "$@" /out/d/d$i; i=$((i+1)); '
    'done; mkdir "$@" 2>/dev/null; echo made $(ls /out/d | wc -l)',
    "names": ATTEMPTS.format(make=f"true 2>/dev/null > /out/d/{NAME}$i"),
}
# Nothing written into an artifact volume runs from it: a binary or a script, in the
# producer's own volume and in a consumer's read-only input.
EXEC = (
    "cp /bin/true {d}/t 2>/dev/null; printf '#!/bin/sh\\necho SCRIPT-RAN\\n' > {d}/s.sh 2>/dev/null; "
    "chmod +x {d}/t {d}/s.sh 2>/dev/null; {d}/t && echo BIN-RAN; {d}/s.sh; grep ' {d} ' /proc/mounts"
)


def hostile_workflow() -> str:
    nodes = {
        name: {"command": command, "outputs": {"artifacts": [{"name": "d", "path": "/out/d"}]}}
        for name, command in HOSTILE_NODES.items()
    }
    nodes["exec"] = {
        "command": EXEC.format(d="/out/d"),
        "outputs": {"artifacts": [{"name": "d", "path": "/out/d"}]},
    }
    nodes["exec-input"] = {
        "needs": ["exec"],
        "command": EXEC.format(d="/in/d"),
        "inputs": [{"from": "exec/d", "path": "/in/d"}],
    }
    return yaml.safe_dump({"version": 1, "name": "hostile", "fail_fast": False, "nodes": nodes})


def small_artifacts_policy(directory: Path, runtime: str, total: str = "64m") -> Path:
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    policy["limits"]["artifacts"] = "1m"
    policy["limits"]["artifacts_total"] = total
    policy["isolation"]["oci_runtime"] = runtime
    path = directory / f"small-artifacts-{runtime}-{total}.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


_HOSTILE: dict[tuple[str, str], tuple[CliResult, float]] = {}


@pytest.fixture(params=RUNTIMES)
def hostile(request, workdir, built_images, docker_client, volume_store):
    """The hostile workflow, run once per (volume store, runtime) for the tests below."""
    if request.param == "runsc" and engine_of(docker_client).podman:
        pytest.skip(PODMAN_RUNSC)
    key = (volume_store, request.param)
    if key not in _HOSTILE:
        policy = small_artifacts_policy(workdir, request.param)
        started = time.monotonic()
        result = run_workflow(
            workdir, hostile_workflow(), "--policy", str(policy), "--max-parallel", "4"
        )
        took = time.monotonic() - started
        assert result.results is not None, result.stdout + result.stderr
        no_leftovers(docker_client, result)
        _HOSTILE[key] = (result, took)
    return (*_HOSTILE[key], request.param)


def host_copy_of(node: dict) -> dict[str, os.stat_result]:
    (record,) = node["artifacts"]
    return host_tree(Path(record["path"]))


def assert_bounded_on_host(node: dict) -> dict[str, os.stat_result]:
    """What reached the host: regular files and directories only, at most the cap in
    content (apparent and allocated) and at most the entry limit."""
    tree = host_copy_of(node)
    assert all(_plain(entry) for entry in tree.values())
    assert len(tree) <= ENTRIES, len(tree)
    files = [e for e in tree.values() if stat.S_ISREG(e.st_mode)]
    assert sum(e.st_size for e in files) <= CAP
    allocated = sum(e.st_blocks * 512 for e in tree.values())
    assert allocated <= CAP + (len(tree) + 1) * 4096, allocated  # a page per entry at most
    depth = max((p.count("/") + 1 for p in tree), default=0)
    assert depth <= 128
    return tree


@pytest.mark.parametrize("name", ["sparse", "terabyte", "deep"])
def test_sparse_files_fail_the_node_and_are_never_expanded_on_the_host(hostile, name):
    result, took, _ = hostile
    assert took < 150, f"the run took {took:.0f}s"  # a 1T file was never streamed
    node = result.node(name)
    assert node["status"] == "failed" and node["exit_code"] == 0, node
    assert "artifact 'd' holds " in node["reason"]
    assert (
        "(apparent size, holes included), above the policy's artifacts limit (1m)"
        in (node["reason"])
    )
    (record,) = node["artifacts"]
    assert record["complete"] is False
    stops = [v["detail"] for v in node["violations"] if "the copy stopped here" in v["detail"]]
    assert len(stops) == 1 and "would pass the artifact's limit (1m" in stops[0], stops
    tree = assert_bounded_on_host(node)
    if name == "sparse":
        assert [p for p, e in tree.items() if stat.S_ISREG(e.st_mode)] == ["a"]
        assert stops[0].startswith("d/big: 64m (holes included)")
    if name == "deep":  # the deep file's first name is copied by neither link
        assert not [p for p, e in tree.items() if stat.S_ISREG(e.st_mode)]


@pytest.mark.parametrize("name", ["files", "dirs", "names"])
def test_many_entries_fail_the_node_and_reach_the_host_bounded(hostile, name):
    result, _, _ = hostile
    node = result.node(name)
    assert node["status"] == "failed" and node["exit_code"] == 0, node
    made = int(re.search(r"made (\d+)", node["stdout_tail"])[1])
    assert made == ENTRIES, node["stdout_tail"]
    assert f"reached the limit of {ENTRIES} files and directories" in node["reason"]
    tree = assert_bounded_on_host(node)
    assert len(tree) == made  # all of them: the copy's budget is the volume's own
    (record,) = node["artifacts"]
    assert record["complete"] is True


@pytest.mark.parametrize("name", ["exec", "exec-input"])
def test_a_binary_in_an_artifact_volume_does_not_run(hostile, name):
    result, _, runtime = hostile
    node = result.node(name)
    assert node["status"] == "succeeded", node
    assert "BIN-RAN" not in node["stdout_tail"]
    if runtime == "runc":
        assert re.search(r"/t: Permission denied", node["stderr_tail"]), node["stderr_tail"]
        lines = [x.split() for x in node["stdout_tail"].splitlines()]
        (mount,) = [x for x in lines if len(x) > 3 and x[1] in ("/out/d", "/in/d")]
        assert {"noexec", "nosuid", "nodev"} <= set(mount[3].split(",")), mount


# Under gVisor the volume reaches the sandbox as a gofer mount whose options come from the
# engine's OCI spec, and Docker 20.10 passes no noexec for a volume: gVisor's kernel does
# not refuse exec(2). The host still refuses to map a file of the noexec tmpfs executable,
# so a binary cannot run (above); a `#!` script can. (Any interpreter runs a script from a
# noexec mount anyway, `sh FILE`, under both runtimes: noexec is defence in depth.)
GVISOR_SCRIPT = "gVisor does not see the host's noexec on a volume; a #! script still runs"


@pytest.mark.parametrize("name", ["exec", "exec-input"])
@pytest.mark.parametrize(
    "hostile",
    ["runc", pytest.param("runsc", marks=pytest.mark.xfail(strict=True, reason=GVISOR_SCRIPT))],
    indirect=True,
)
def test_a_script_in_an_artifact_volume_does_not_run(hostile, name):
    result, _, runtime = hostile
    node = result.node(name)
    assert node["status"] == "succeeded", node
    assert "SCRIPT-RAN" not in node["stdout_tail"], (runtime, node["stdout_tail"])
    assert re.search(r"/s\.sh: Permission denied", node["stderr_tail"]), node["stderr_tail"]


# --- the run-wide ceiling: artifacts_total ------------------------------------------------

CHAIN = """
version: 1
name: chain
nodes:
  p1:
    command: "head -c 300000 /dev/urandom > /out/a/blob"
    outputs: {artifacts: [{name: a, path: /out/a}]}
  p2:
    needs: [p1]
    command: "cp /in/a/blob /out/b/blob"
    inputs: [{from: p1/a, path: /in/a}]
    outputs: {artifacts: [{name: b, path: /out/b}]}
  p3:
    needs: [p2]
    command: "cp /in/b/blob /out/c/blob"
    inputs: [{from: p2/b, path: /in/b}]
    outputs: {artifacts: [{name: c, path: /out/c}]}
  p4:
    needs: [p3]
    command: "sha256sum /in/c/blob"
    inputs: [{from: p3/c, path: /in/c}]
"""


def test_a_chain_of_producers_holds_under_a_ceiling_only_met_by_releasing(
    workdir, built_images, docker_client, volume_store
):
    """Two volumes at a time: each node holds its input and its own, so the run succeeds
    only if every volume goes once its one consumer has finished."""
    policy = small_artifacts_policy(workdir, "runc", total="2m")
    since = time.time()
    result = run_workflow(workdir, CHAIN, "--policy", str(policy))
    assert result.exit_code == 0, result.stdout + result.stderr
    run_id = no_leftovers(docker_client, result)
    digests = {result.node(n)["artifacts"][0]["sha256"] for n in ("p1", "p2", "p3")}
    assert len(digests) == 1  # the same blob all the way
    prefix = f"sandbox-orch-{run_id}-"
    created = volume_events(docker_client, since, prefix, "create")
    # Each with the read-only view its consumer mounts.
    volumes = [f"{prefix}p1-1-a", f"{prefix}p2-1-b", f"{prefix}p3-1-c"]
    assert created == sorted([*volumes, *(f"{v}-ro" for v in volumes)])
    assert volume_events(docker_client, since, prefix, "destroy") == created


PARALLEL = """
version: 1
name: parallel
nodes:
  one: {command: "echo 1 > /out/a/f", outputs: {artifacts: [{name: a, path: /out/a}]}}
  two: {command: "echo 2 > /out/a/f", outputs: {artifacts: [{name: a, path: /out/a}]}}
"""


def test_a_producer_past_the_ceiling_fails_with_the_reason_and_starts_nothing(
    workdir, built_images, docker_client, volume_store
):
    policy = small_artifacts_policy(workdir, "runc", total="1m")
    since = time.time()
    result = run_workflow(workdir, PARALLEL, "--policy", str(policy), "--max-parallel", "2")
    assert result.exit_code == 1, result.stdout + result.stderr
    run_id = no_leftovers(docker_client, result)
    nodes = {name: result.node(name) for name in ("one", "two")}
    refused = [n for n, v in nodes.items() if v["status"] == "failed"]
    assert len(refused) == 1, nodes
    (name,) = refused
    other = "two" if name == "one" else "one"
    assert nodes[other]["status"] == "succeeded"
    assert (
        "would take the run's artifacts past the policy's artifacts_total (1m)"
        in (nodes[name]["reason"])
    )
    assert nodes[name]["exit_code"] is None and nodes[name]["artifacts"] == []
    # Its container (and any volume of its own) was never created.
    prefix = f"sandbox-orch-{run_id}-"
    assert volume_events(docker_client, since, prefix, "create") == [f"{prefix}{other}-1-a"]
    started = [
        c for c in created_containers(docker_client, since, {"one", "two"})
        if c.get("sandbox-orch.run") == run_id and c.get("sandbox-orch.role") != "artifact-holder"
    ]  # fmt: skip
    assert [c["sandbox-orch.node"] for c in started] == [other]


def test_a_node_that_can_never_fit_the_ceiling_is_refused_before_anything_starts(
    workdir, built_images, docker_client
):
    node = unique("producer")
    policy = small_artifacts_policy(workdir, "runc", total="1m")
    text = f"""\
version: 1
name: too-many
nodes:
  {node}:
    command: "true"
    outputs:
      artifacts: [{{name: a, path: /out/a}}, {{name: b, path: /out/b}}]
"""
    path = write_workflow(workdir, text)
    since = time.time()
    checked = cli("validate", str(path), "--policy", str(policy))
    ran = cli("run", str(path), "--ci", "--policy", str(policy))
    assert checked.returncode == 2 and ran.returncode == 2, checked.stderr + ran.stderr
    assert created_containers(docker_client, since, {node}) == []
    (line,) = checked.stderr.splitlines()
    assert line.startswith(
        f"{path}:{line_of(text, 'artifacts: [')}: nodes.{node}.outputs.artifacts: "
    )
    assert "hold 2m at once (1m each), above the policy's artifacts_total (1m)" in line


# --- FIFOs and hard links --------------------------------------------------------------


def test_fifo_and_hard_link_are_refused_and_the_copy_does_not_block(
    workdir, built_images, docker_client, volume_store
):
    command = (
        "mkdir -p /out/d/sub && echo kept > /out/d/a.txt && "
        "mkfifo /out/d/fifo /out/d/sub/pipe && "
        "ln /out/d/a.txt /out/d/hard && "
        "(echo into-the-pipe > /out/d/fifo &) ; sleep 0.2; ls -la /out/d"
    )
    started = time.monotonic()
    result = run_workflow(
        workdir,
        f"""
        version: 1
        name: fifo
        nodes:
          fifo:
            command: {q(command)}
            outputs:
              artifacts: [{{name: d, path: /out/d}}]
        """,
        timeout=90,
    )
    took = time.monotonic() - started
    assert took < 60, f"the run took {took:.0f}s"
    assert result.exit_code == 0, result.stdout + result.stderr
    run_id = no_leftovers(docker_client, result)
    node = result.node("fifo")
    details = {v["detail"].split(":", 1)[0]: v["detail"] for v in node["violations"]}
    assert {v["kind"] for v in node["violations"]} == {"artifact"}
    assert "FIFO" in details.pop("d/fifo") and "FIFO" in details.pop("d/sub/pipe")
    # Of two names for one inode, one is copied as a file, the other refused as a link.
    ((linked, why),) = details.items()
    assert linked in ("d/a.txt", "d/hard") and "hard link" in why
    files = regular_files(artifact_dir(run_id, "fifo", "d"))
    assert list(files.values()) == [b"kept\n"]
    assert set(files) | {linked.removeprefix("d/")} == {"a.txt", "hard"}


# --- output floods -------------------------------------------------------------------------


def test_binary_and_giant_line_output_stay_bounded(workdir, built_images, docker_client):
    limit = load_policy(DEFAULT_POLICY).limits.output  # kept per stream
    binary_total = 256 * 80_000  # every byte value, about 20 MB
    line_total = 500_000_000
    binary = f"import sys; sys.stdout.buffer.write(bytes(range(256)) * {binary_total // 256})"
    path = write_workflow(
        workdir,
        f"""
        version: 1
        name: floods
        defaults: {{timeout: 2m}}
        nodes:
          binary:
            runtime: python
            command: ["python", "-c", {q(binary)}]
          line:
            command: "head -c {line_total} /dev/zero | tr '\\\\0' a"
        """,
    )
    results_path = workdir / "results.json"
    proc = start_cli("run", str(path), "--ci", "--results", str(results_path), measured=True)
    peak_rss = wait_for_peak_rss(proc)
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, out + err
    assert len(out) < 10_000 and len(err) < 10_000  # the view never echoes the flood
    results = json.loads(results_path.read_text())
    assert labelled_leftovers(docker_client, results["run_id"]) == []

    binary_node, line_node = results["nodes"]["binary"], results["nodes"]["line"]
    assert binary_node["output_bytes"] == {
        "stdout": binary_total,
        "stderr": 0,
        "stdout_dropped": binary_total - limit,
        "stderr_dropped": 0,
    }
    assert line_node["output_bytes"] == {
        "stdout": line_total,
        "stderr": 0,
        "stdout_dropped": line_total - limit,
        "stderr_dropped": 0,
    }
    tail = binary_node["stdout_tail"]
    assert isinstance(tail, str) and 0 < len(tail) <= TAIL_CHARS
    assert "\ufffd" in tail and "ABCDEFGHIJKLMNOPQRSTUVWXYZ" in tail  # text, order kept
    tail = line_node["stdout_tail"]
    assert 0 < len(tail) <= TAIL_CHARS and set(tail) == {"a"}

    print(f"peak RSS of the orchestrator: {peak_rss / MIB:.0f} MiB")
    assert peak_rss < 250 * MIB, f"the orchestrator peaked at {peak_rss / MIB:.0f} MiB"


# --- refused before anything starts ----------------------------------------------------------


def line_of(text: str, needle: str) -> int:
    """The 1-based line of `path`'s written text holding `needle` (once)."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(lines) == 1, (needle, lines)
    return lines[0]


def refused_before_start(docker_client, workdir: Path, text: str, nodes: set[str]) -> list[str]:
    """`validate` and `run` both exit 2, create nothing; the refusal lines."""
    path = write_workflow(workdir, text)
    since = time.time()
    checked = cli("validate", str(path))
    ran = cli("run", str(path), "--ci")
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert created_containers(docker_client, since, nodes) == []
    assert not (store_home() / "runs").exists()
    assert ran.stderr == checked.stderr
    return checked.stderr.splitlines()


def test_inputs_from_non_ancestors_and_unknown_artifacts_are_refused(
    workdir, built_images, docker_client
):
    producer, stranger, consumer = unique("producer"), unique("stranger"), unique("consumer")
    text = f"""\
version: 1
name: bad-inputs
nodes:
  {producer}:
    command: "true"
    outputs:
      artifacts: [{{name: dist, path: /out/dist}}]
  {stranger}:
    command: "true"
    inputs: [{{from: {producer}/dist, path: /in/dist}}]
  {consumer}:
    needs: [{producer}]
    command: "true"
    inputs:
      - {{from: {producer}/nope, path: /in/nope}}
      - {{from: ghost/dist, path: /in/ghost}}
      - {{from: {producer}/../dist, path: /in/up}}
"""
    lines = refused_before_start(docker_client, workdir, text, {producer, stranger, consumer})
    path = workdir / "workflow.yaml"
    expected = {
        f"nodes.{stranger}.inputs[0].from": ("/in/dist", "is not a need or an ancestor"),
        f"nodes.{consumer}.inputs[0].from": ("/in/nope", "has no artifact 'nope'"),
        f"nodes.{consumer}.inputs[1].from": ("/in/ghost", "unknown node 'ghost'"),
        f"nodes.{consumer}.inputs[2].from": ("/in/up", "has no artifact '../dist'"),
    }
    found = {}
    for line in lines:
        match = re.match(rf"{re.escape(str(path))}:(\d+): (\S+): (.*)$", line)
        assert match, line
        found[match[2]] = (int(match[1]), match[3])
    assert set(found) == set(expected), lines
    for field, (needle, message) in expected.items():
        number, text_found = found[field]
        assert number == line_of(text, needle), (field, number)
        assert message in text_found, (field, text_found)


def test_artifact_names_absolute_or_climbing_are_refused(workdir, built_images, docker_client):
    node = unique("producer")
    text = f"""\
version: 1
name: bad-names
nodes:
  {node}:
    command: "true"
    outputs:
      artifacts:
        - {{name: ok, path: /out/ok}}
        - {{name: /abs, path: /out/abs}}
        - {{name: ../up, path: /out/up}}
        - {{name: a/../b, path: /out/mid}}
"""
    lines = refused_before_start(docker_client, workdir, text, {node})
    path = workdir / "workflow.yaml"
    assert len(lines) == 3, lines
    needles = ["/out/abs", "/out/up", "/out/mid"]
    for index, (line, needle) in enumerate(zip(lines, needles, strict=True), 1):
        assert line.startswith(f"{path}:{line_of(text, needle)}: "), line
        assert f"nodes.{node}.outputs.artifacts[{index}].name: " in line, line
        assert "must be relative and must not contain '..'" in line, line


def test_artifact_paths_over_proc_are_refused(workdir, built_images, docker_client):
    producer, consumer = unique("producer"), unique("consumer")
    text = f"""\
version: 1
name: over-proc
nodes:
  {producer}:
    command: "true"
    outputs:
      artifacts: [{{name: dist, path: /out/dist}}, {{name: p, path: /proc/sys}}]
  {consumer}:
    needs: [{producer}]
    command: "true"
    inputs: [{{from: {producer}/dist, path: /proc/self}}]
"""
    lines = refused_before_start(docker_client, workdir, text, {producer, consumer})
    path = workdir / "workflow.yaml"
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{path}:{line_of(text, '/proc/sys')}: "), lines
    assert f"nodes.{producer}.outputs.artifacts[1].path" in lines[0] and "/proc" in lines[0]
    assert lines[1].startswith(f"{path}:{line_of(text, '/proc/self')}: "), lines
    assert f"nodes.{consumer}.inputs[0].path" in lines[1] and "/proc" in lines[1]


# --- retries -------------------------------------------------------------------------------

RETRIED = (
    'if [ -z "$(ls -A /out/d)" ]; then echo fresh; else echo stale; ls -A /out/d; fi; '
    "echo attempt-$(date +%s%N) > /out/d/f; cat /out/d/f; exit 1"
)


def retried_producer(workdir: Path, node: str) -> CliResult:
    return run_workflow(
        workdir,
        f"""
        version: 1
        name: retried
        nodes:
          {node}:
            retries: {{limit: 1, on: [failed]}}
            command: {q(RETRIED)}
            outputs:
              artifacts: [{{name: d, path: /out/d}}]
        """,
    )


def test_retried_producer_gets_fresh_volumes_and_leaves_none(
    workdir, built_images, docker_client, volume_store
):
    node = unique("producer")
    since = time.time()
    result = retried_producer(workdir, node)
    assert result.exit_code == 1, result.stdout + result.stderr
    run_id = no_leftovers(docker_client, result)
    done = result.node(node)
    assert done["status"] == "failed" and done["attempts"] == 2
    assert done["stdout_tail"].startswith("fresh\n")  # attempt 2 found its volume empty

    prefix = f"sandbox-orch-{run_id}-{node}-"
    created = volume_events(docker_client, since, prefix, "create")
    assert created == [f"{prefix}1-d", f"{prefix}2-d"]
    assert volume_events(docker_client, since, prefix, "destroy") == created
    assert docker_client.volumes.list(filters={"name": prefix}) == []
    # Per attempt: the node's container, and for an engine volume the holder keeping it.
    containers = created_containers(docker_client, since, {node})
    holders = [c for c in containers if c.get("sandbox-orch.role") == "artifact-holder"]
    attempts = sorted(c["sandbox-orch.attempt"] for c in containers if c not in holders)
    assert len(holders) == (2 if volume_store == "engine" else 0), containers
    assert attempts == ["1", "2"], containers


def test_retried_producer_host_copy_is_the_last_attempts(
    workdir, built_images, docker_client, volume_store
):
    node = unique("producer")
    result = retried_producer(workdir, node)
    run_id = no_leftovers(docker_client, result)
    done = result.node(node)
    last_written = done["stdout_tail"].splitlines()[-1].encode() + b"\n"
    files = regular_files(artifact_dir(run_id, node, "d"))
    assert done["violations"] == []
    assert files == {"f": last_written}
    (record,) = done["artifacts"]
    assert (record["files"], record["bytes"]) == (1, len(last_written))
    assert record["sha256"] == artifact_digest(files)


# --- the host volume store ---------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_a_host_volume_is_capped_private_and_removed():
    """What `hostvolumes.mount` makes: a tmpfs of the size asked and of 1024 inodes, the
    node's alone (owner, 0700, below a root-only directory), noexec, nosuid and nodev, and
    gone when unmounted; and its read-only view for consumers, read-only at its source."""
    name = unique("sandbox-orch-test-volume")
    path = hostvolumes.mount(name, 1 * MIB, "10001:10001")
    view = None
    try:
        assert os.path.ismount(path)
        info = path.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (10001, 10001, 0o700)
        assert stat.S_IMODE(hostvolumes.ROOT.stat().st_mode) == 0o700
        flags, options = mount_options(path)
        assert {"noexec", "nosuid", "nodev", "rw"} <= flags and "nr_inodes=1024" in options
        assert os.statvfs(path).f_files == 1024
        with pytest.raises(OSError) as full:
            (path / "big").write_bytes(bytes(2 * MIB))
        assert full.value.errno == errno.ENOSPC
        with pytest.raises(FileExistsError):
            hostvolumes.mount(name, 1 * MIB, "10001:10001")  # a name is never reused

        view = hostvolumes.view(f"{name}-ro", path)
        assert {"ro", "noexec", "nosuid", "nodev"} <= mount_options(view)[0]
        assert (view / "big").exists()  # the same files
        with pytest.raises(OSError) as refused:
            (view / "new").write_bytes(b"x")
        assert refused.value.errno == errno.EROFS
    finally:
        if view is not None:
            hostvolumes.unmount(f"{name}-ro")
        hostvolumes.unmount(name)
    assert not path.exists() and not (view and view.exists())
    hostvolumes.unmount(name)  # already gone: not an error


def mount_options(path: Path) -> tuple[set[str], str]:
    """(per-mount flags, file system options) of the mount at `path`, from mountinfo."""
    (fields,) = [
        line.split()
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4] == str(path)
    ]
    return set(fields[5].split(",")), fields[-1]


@pytest.mark.parametrize("setting", ["auto", "engine", "host"])
def test_doctor_names_where_artifact_volumes_live(
    built_images, docker_client, monkeypatch, setting
):
    monkeypatch.setenv(VOLUMES_ENV, setting)
    proc = cli("doctor")
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("artifact volumes: ")]
    # Podman before 4.8 keeps them on this host whatever the setting (README, Podman).
    anywhere = setting != "engine" or not engine_of(docker_client).tmpfs_volumes
    on_host = anywhere and os.geteuid() == 0
    if on_host:
        assert proc.returncode == 0, proc.stderr
        assert f"tmpfs mounts on this host, under {hostvolumes.ROOT}" in line, line
    elif setting == "host":
        assert "unavailable: volumes cannot be kept on this host: mounting needs root" in line
    else:
        assert "in the engine, each kept by a holder container" in line, line


def test_an_unknown_volume_setting_is_refused(monkeypatch, workdir):
    monkeypatch.setenv(VOLUMES_ENV, "disk")
    proc = cli("doctor")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"${VOLUMES_ENV}: must be one of auto, host, engine, not 'disk'"
    ), proc.stderr
