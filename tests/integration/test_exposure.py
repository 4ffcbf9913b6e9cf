"""What a granted directory could expose, attacked from inside nodes on the real engine,
under runc and gVisor (issue 10, item 3): host sockets, the run store (earlier runs'
results, runs.db, other nodes' artifacts) and other nodes' egress sockets.

Each test writes its own policy (the default one, with the runtime chosen and, where a
test needs them, `.` granted read-write and an egress grant) and runs the real CLI.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, cli, created_containers, labelled_leftovers, unique

pytestmark = pytest.mark.engine

RUNTIMES = ("runc", "runsc")
EGRESS_GRANT = "127.0.0.1:9"  # never connected to: only the socket's presence matters


def write_policy(directory: Path, runtime: str) -> Path:
    text = (REPO / "policies" / "default.yaml").read_text()
    text = text.replace("oci_runtime: runc", f"oci_runtime: {runtime}")
    text = text.replace("{source: ., modes: [ro]}", "{source: ., modes: [ro, rw]}")
    text = text.replace("egress: []", f'egress: ["{EGRESS_GRANT}"]')
    assert f"oci_runtime: {runtime}" in text and "[ro, rw]" in text and EGRESS_GRANT in text
    path = directory / f"policy-{runtime}.yaml"
    path.write_text(text)
    return path


def run_cli(
    project: Path, text: str, policy: Path, results: Path, *args: str, store: str = ".sandbox-orch"
):
    workflow = project / "workflow.yaml"
    workflow.write_text(textwrap.dedent(text))
    env = {"SANDBOX_ORCH_HOME": str(project / store)}
    proc = cli("run", str(workflow), "--ci", "--policy", str(policy), "--results", str(results),
               *args, env=env)  # fmt: skip
    document = json.loads(results.read_text()) if results.exists() else None
    return proc, document


def verdict(node: dict) -> dict:
    (line,) = [x for x in node["stdout_tail"].splitlines() if x.startswith("VERDICT ")]
    return json.loads(line.removeprefix("VERDICT "))


@pytest.fixture(params=RUNTIMES)
def runtime(request) -> str:
    return request.param


@pytest.fixture
def project(tmp_path) -> Path:
    """The workflow's directory (granted as `.`), holding the run store; results and the
    policy live beside it, outside what any node can mount."""
    path = tmp_path / "project"
    path.mkdir()
    return path


# --- host sockets -------------------------------------------------------------------------


def listening(path: Path) -> socket.socket:
    """A real listening Unix socket, as a host service would have."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    return server


@pytest.mark.parametrize("where", ["top", "deep", "behind-symlink"])
def test_a_directory_holding_a_host_socket_is_refused(
    where, runtime, project, tmp_path, docker_client, built_images
):
    """Mounted, the socket would be reachable (gVisor's --host-uds=open opens every host
    socket in a mount): validate and run refuse it, naming it, and start nothing."""
    elsewhere = project / "elsewhere"
    places = {
        "top": (project / "data" / "svc.sock", "data"),
        "deep": (project / "data" / "a" / "b" / "c" / "svc.sock", "data"),
        # the mount source is a link to a (granted) directory holding the socket
        "behind-symlink": (elsewhere / "run" / "svc.sock", "link"),
    }
    sock, source = places[where]
    sock.parent.mkdir(parents=True)
    if where == "behind-symlink":
        (project / "link").symlink_to(elsewhere)
    node = unique("sock")
    text = f"""
        version: 1
        name: sockets
        nodes:
          {node}:
            command: [sh, -c, "ls -la /w"]
            mounts: [{{source: {source}, target: /w, mode: ro}}]
    """
    policy = write_policy(tmp_path, runtime)
    since = time.time()
    with listening(sock):
        workflow = project / "workflow.yaml"
        workflow.write_text(textwrap.dedent(text))
        checked = cli("validate", str(workflow), "--policy", str(policy))
        proc, results = run_cli(project, text, policy, tmp_path / "results.json")
    for done in (checked, proc):
        assert done.returncode == 2, done.stderr
        assert f"contains a socket, {sock}" in done.stderr and "mounts[0].source" in done.stderr
    assert results is None
    assert created_containers(docker_client, since, {node}) == []


def test_a_host_file_system_mounted_inside_a_granted_directory_is_refused(
    runtime, project, tmp_path, docker_client, built_images
):
    """Its content is not part of a non-recursive bind; gVisor would not even start with
    it (a hidden host socket or file there is never reachable)."""
    inner = project / "data" / "mnt"
    inner.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(inner)], check=True)
    try:
        listening(inner / "svc.sock").close()
        text = """
            version: 1
            name: submount
            nodes:
              a: {command: [ls, /w], mounts: [{source: data, target: /w}]}
        """
        workflow = project / "workflow.yaml"
        workflow.write_text(textwrap.dedent(text))
        checked = cli("validate", str(workflow), "--policy", str(write_policy(tmp_path, runtime)))
    finally:
        subprocess.run(["umount", str(inner)], check=True)
    assert checked.returncode == 2
    assert f"contains another mounted file system, {inner}" in checked.stderr


# --- the run store ------------------------------------------------------------------------

PROBE = r"""
import errno, json, os, sys
earlier = sys.argv[1]
store = "/w/.sandbox-orch"
seen = []
for root, dirs, files in os.walk(store):
    seen += [os.path.join(root, name) for name in dirs + files]

def attempt(fn):
    try:
        fn()
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))
    return "allowed"

def read(path):
    with open(path, "rb") as handle:
        handle.read()

paths = [
    f"{store}/runs.db",
    f"{store}/runs/{earlier}/results.json",
    f"/w/link/{earlier}/results.json",
    f"/w/sub/../.sandbox-orch/runs/{earlier}/results.json",
    f"{store}/../.sandbox-orch/runs.db",
]
verdict = {
    "listing": sorted(os.listdir(store)),
    "seen": seen,
    "reads": {path: attempt(lambda p=path: read(p)) for path in paths},
    "create": attempt(lambda: open(f"{store}/planted", "w").close()),
    "rename": attempt(lambda: os.rename(store, "/w/moved")),
    "rmdir": attempt(lambda: os.rmdir(store)),
}
if os.access("/w", os.W_OK):  # read-write: try to put a directory of ours in its place
    os.makedirs("/w/decoy/runs", exist_ok=True)
    verdict["replace"] = attempt(lambda: os.rename("/w/decoy", store))
print("VERDICT", json.dumps(verdict, sort_keys=True))
"""


def test_a_node_sees_no_run_store_in_a_granted_directory(
    runtime, project, tmp_path, docker_client, built_images
):
    policy = write_policy(tmp_path, runtime)
    (project / "sub").mkdir()
    (project / "link").symlink_to(".sandbox-orch/runs")  # a link a node finds in its workspace
    first = """
        version: 1
        name: earlier
        nodes:
          a:
            command: [sh, -c, "echo EARLIER-RESULT-MARKER; mkdir -p /out/d; echo ART > /out/d/f"]
            outputs: {artifacts: [{name: d, path: /out/d}]}
    """
    proc, earlier = run_cli(project, first, policy, tmp_path / "earlier.json")
    assert proc.returncode == 0 and earlier is not None, proc.stderr
    store = project / ".sandbox-orch"
    assert (store / "runs" / earlier["run_id"] / "results.json").exists()
    # The worst case for the store's own permissions: readable and writable by anyone (a
    # umask of 0, or an operator running as the nodes' uid). The mask must hold alone.
    for path in [project, *project.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o777 if path.is_dir() else 0o666)
    probe, run_id = json.dumps(PROBE), earlier["run_id"]
    second = f"""
        version: 1
        name: later
        fail_fast: false
        nodes:
          produce:
            command: [sh, -c, "mkdir -p /out/d; echo SAME-RUN-ARTIFACT > /out/d/f"]
            outputs: {{artifacts: [{{name: d, path: /out/d}}]}}
          probe-ro:
            runtime: python
            needs: [produce]
            mounts: [{{source: ., target: /w, mode: ro}}]
            command: [python3, -c, {probe}, "{run_id}"]
          probe-rw:
            runtime: python
            needs: [produce]
            mounts: [{{source: ., target: /w, mode: rw}}]
            command: [python3, -c, {probe}, "{run_id}"]
    """
    proc, later = run_cli(project, second, policy, tmp_path / "later.json")
    assert later is not None, proc.stderr
    assert labelled_leftovers(docker_client, later["run_id"]) == []
    for name, writable in (("probe-ro", False), ("probe-rw", True)):
        node = later["nodes"][name]
        assert node["status"] == "succeeded", node
        seen = verdict(node)
        assert seen["listing"] == [] and seen["seen"] == [], seen
        assert set(seen["reads"].values()) == {"ENOENT"}, seen["reads"]
        assert seen["create"] != "allowed" and seen["rename"] != "allowed", seen
        assert seen["rmdir"] != "allowed", seen
        if writable:
            assert seen["replace"] != "allowed", seen
        assert "EARLIER-RESULT-MARKER" not in node["stdout_tail"]
        assert "SAME-RUN-ARTIFACT" not in node["stdout_tail"]
        (mount,) = node["sandbox"]["mounts"]
        assert mount["masked"] == ["/w/.sandbox-orch"]
    # The store is intact: nothing planted, nothing replaced.
    assert not (store / "planted").exists() and not (project / "moved").exists()
    assert (store / "runs" / earlier["run_id"] / "results.json").exists()


MOVER = r"""
import json, os
try:
    os.rename("/w/nested", "/w/moved")
    moved = "allowed"
except OSError as error:
    moved = error.strerror
print("VERDICT", json.dumps({"move": moved, "store": os.listdir("/w/nested/.sandbox-orch")}))
"""


def test_a_node_cannot_move_the_run_store_out_from_under_its_mask(
    runtime, project, tmp_path, docker_client, built_images
):
    """The store below a subdirectory of a mount: renaming that subdirectory would carry
    the store (and its mask) elsewhere, and the next run would not mask it there. So a
    writable mount of such a directory is refused; a read-only one is masked as usual."""
    policy = write_policy(tmp_path, runtime)
    store = "nested/.sandbox-orch"
    first = "version: 1\nname: first\nnodes:\n  a: {command: [echo, EARLIER]}\n"
    proc, earlier = run_cli(project, first, policy, tmp_path / "first.json", store=store)
    assert proc.returncode == 0 and earlier is not None, proc.stderr
    for path in [project, *project.rglob("*")]:  # the worst case for the store's own modes
        path.chmod(0o777 if path.is_dir() else 0o666)
    mover = json.dumps(MOVER)
    for mode in ("rw", "ro"):
        text = f"""
            version: 1
            name: mover
            nodes:
              a:
                runtime: python
                mounts: [{{source: ., target: /w, mode: {mode}}}]
                command: [python3, -c, {mover}]
        """
        proc, results = run_cli(project, text, policy, tmp_path / f"{mode}.json", store=store)
        if mode == "rw":
            assert proc.returncode == 2 and results is None, proc.stderr
            assert "below a directory a node could rename" in proc.stderr
        else:
            assert results is not None and proc.returncode == 0, proc.stderr
            seen = verdict(results["nodes"]["a"])
            assert seen["move"] != "allowed" and seen["store"] == [], seen
    assert (project / store / "runs" / earlier["run_id"] / "results.json").exists()


# --- egress sockets -----------------------------------------------------------------------

SOCKETS = r"""
import json, os, stat
found = []
for root, dirs, files in os.walk("/"):
    if root in ("/proc", "/sys", "/dev"):
        dirs[:] = []
        continue
    for name in files + dirs:
        path = os.path.join(root, name)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                found.append(path)
        except OSError:
            pass
print("VERDICT", json.dumps({"sockets": sorted(found)}))
"""


def test_a_node_reaches_no_socket_but_its_own_egress_proxy(
    runtime, project, tmp_path, docker_client, built_images
):
    """Two nodes with egress run at once, and one without: each finds, in its whole file
    system, its own proxy socket or none, never another node's (nor the run store's)."""
    probe = json.dumps(SOCKETS)
    text = f"""
        version: 1
        name: egress-sockets
        fail_fast: false
        nodes:
          one:
            runtime: python
            network: {{egress: ["{EGRESS_GRANT}"]}}
            mounts: [{{source: ., target: /w, mode: rw}}]
            command: [python3, -c, {probe}]
          two:
            runtime: python
            network: {{egress: ["{EGRESS_GRANT}"]}}
            command: [python3, -c, {probe}]
          none:
            runtime: python
            mounts: [{{source: ., target: /w}}]
            command: [python3, -c, {probe}]
    """
    proc, results = run_cli(
        project, text, write_policy(tmp_path, runtime), tmp_path / "r.json", "--max-parallel", "3"
    )
    assert results is not None, proc.stderr
    nodes = results["nodes"]
    assert all(nodes[n]["status"] == "succeeded" for n in ("one", "two", "none")), proc.stderr
    assert verdict(nodes["one"])["sockets"] == ["/run/egress/proxy.sock"]
    assert verdict(nodes["two"])["sockets"] == ["/run/egress/proxy.sock"]
    assert verdict(nodes["none"])["sockets"] == []
    assert labelled_leftovers(docker_client, results["run_id"]) == []


def test_egress_sockets_live_in_a_private_directory_no_policy_can_mount(
    runtime, project, tmp_path, built_images
):
    from sandbox_orch.store import private_dir

    parent = private_dir("egress")
    info = os.lstat(parent)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.geteuid()
    for source in (str(parent), str(parent.parent)):
        text = f"""
            version: 1
            name: egress-dir
            nodes:
              a: {{command: [ls, /w], mounts: [{{source: "{source}", target: /w}}]}}
        """
        workflow = project / "workflow.yaml"
        workflow.write_text(textwrap.dedent(text))
        policy = write_policy(tmp_path, runtime)
        generous = policy.read_text().replace(
            "{source: ., modes: [ro, rw]}", "{source: /, modes: [ro, rw]}"
        )
        policy.write_text(generous)
        checked = cli("validate", str(workflow), "--policy", str(policy))
        assert checked.returncode == 2 and "never mountable" in checked.stderr, checked.stderr


# --- container paths in every spelling ------------------------------------------------------

SPELLINGS = {
    # node name: (request, what the refusal says)
    "wd-slashes": ("workdir: //proc/self/fd/7", "a working directory cannot be in /proc"),
    "wd-dot": ("workdir: /./proc/1/cwd", "a working directory cannot be in /proc"),
    "wd-dotdot": ("workdir: /tmp/../proc/self", "a working directory cannot be in /proc"),
    "wd-devfd": ("workdir: /dev/fd/7", "a working directory cannot be in /proc"),
    "wd-sys": ("workdir: /sys//fs/cgroup/", "a working directory cannot be in /sys"),
    "mt-usr": ("mounts: [{source: ., target: //usr/local/bin}]", "cannot mount over /usr"),
    "mt-lib": ("mounts: [{source: ., target: /lib/x86_64-linux-gnu}]", "cannot mount over /usr"),
    "mt-run": ("mounts: [{source: ., target: /var/run/egress}]", "cannot mount over /run"),
    "art-etc": ("outputs: {artifacts: [{name: d, path: //etc/x}]}", "cannot mount over /etc"),
    "art-bin": ("outputs: {artifacts: [{name: d, path: /bin/}]}", "cannot mount over /usr"),
}


def test_container_paths_are_refused_in_every_spelling(runtime, project, tmp_path, docker_client):
    names = {name: unique(name) for name in SPELLINGS}
    body = "".join(
        f"  {names[name]}:\n    command: [x]\n    {request}\n"
        for name, (request, _) in SPELLINGS.items()
    )
    text = f"version: 1\nname: spellings\nfail_fast: false\nnodes:\n{body}"
    since = time.time()
    proc, results = run_cli(project, text, write_policy(tmp_path, runtime), tmp_path / "r.json")
    assert proc.returncode == 2 and results is None, proc.stderr
    lines = proc.stderr.splitlines()
    for name, (_, why) in SPELLINGS.items():
        mine = [line for line in lines if f"node '{names[name]}'" in line]
        assert len(mine) == 1 and why in mine[0], (name, mine)
    assert created_containers(docker_client, since, set(names.values())) == []


# --- a policy granting `/` ------------------------------------------------------------------


def test_a_policy_granting_root_still_refuses_system_and_own_paths(
    runtime, project, tmp_path, docker_client
):
    """Mounted writable, each of these would let a node change what the host (or
    sandbox-orch itself, at its next run) executes; readable, some hold secrets."""
    import sys

    import sandbox_orch

    package = Path(sandbox_orch.__file__).resolve().parent
    attempts = {
        # node name: (source, mode, what the refusal names)
        "usr": ("/usr", "rw", "/usr is never mountable"),
        "usr-local": ("//usr/local/bin", "ro", "/usr is never mountable"),
        "lib": ("/lib", "ro", "is never mountable"),
        "home": ("/home", "ro", "/home (everyone's home directory) is never mountable"),
        "root-home": ("/root", "ro", "never mountable"),
        "var-lib": ("/var/lib", "ro", "/var/lib is never mountable"),
        "var-log": ("/var/log/../log", "ro", "/var/log is never mountable"),
        "venv": (sys.prefix, "rw", "the installation running sandbox-orch"),
        "venv-ro": (sys.prefix, "ro", "the installation running sandbox-orch"),
        "package": (str(package), "ro", "the installation running sandbox-orch"),
        "around-package": (str(package.parent), "rw", "never mountable writable"),
    }
    names = {name: unique(name) for name in attempts}
    body = "".join(
        f'  {names[name]}:\n    command: [x]\n    mounts: [{{source: "{source}", target: /w, mode: {mode}}}]\n'
        for name, (source, mode, _) in attempts.items()
    )
    text = f"version: 1\nname: root-grant\nfail_fast: false\nnodes:\n{body}"
    policy = write_policy(tmp_path, runtime)
    policy.write_text(
        policy.read_text().replace("{source: ., modes: [ro, rw]}", "{source: /, modes: [ro, rw]}")
    )
    since = time.time()
    proc, results = run_cli(project, text, policy, tmp_path / "r.json")
    assert proc.returncode == 2 and results is None, proc.stderr
    lines = proc.stderr.splitlines()
    for name, (_, _, why) in attempts.items():
        mine = [line for line in lines if f"node '{names[name]}'" in line]
        assert len(mine) == 1 and why in mine[0], (name, mine)
    assert created_containers(docker_client, since, set(names.values())) == []


# --- mounts placed, or sources swapped, through a symlink ---------------------------------

SECRET = "HOST-ONLY-SECRET"


def test_a_mount_placed_through_a_symlink_is_refused(runtime, project, tmp_path, docker_client):
    """The engine follows a symlink on the way to a mount's target, inside the container:
    `/w/link/x` with `link -> /usr/local/bin` put a host directory at /usr/local/bin/x (seen
    in /proc/mounts), past every check of the path as written. Below a mount the host
    directory must hold no symlink on the way (read-only or read-write); below an
    artifact or an input (which nodes write) nothing is placed at all."""
    (project / "m1").mkdir()
    (project / "m1" / "link").symlink_to("/usr/local/bin")
    (project / "m1" / "real" / "x").mkdir(parents=True)  # a read-only mount's mount point
    (project / "m2").mkdir()
    names = {name: unique(name) for name in ("via-ro", "via-rw", "via-input", "producer")}
    text = f"""
        version: 1
        name: placed
        fail_fast: false
        nodes:
          {names["producer"]}:
            command: [ln, -s, /usr/local/bin, /out/a/link]
            outputs: {{artifacts: [{{name: a, path: /out/a}}]}}
          {names["via-ro"]}:
            command: [x]
            mounts: [{{source: m1, target: /w}}, {{source: m2, target: /w/link/x}}]
          {names["via-rw"]}:
            command: [x]
            mounts: [{{source: m1, target: /w, mode: rw}}, {{source: m2, target: /w/link/y}}]
          {names["via-input"]}:
            needs: [{names["producer"]}]
            command: [x]
            inputs: [{{from: {names["producer"]}/a, path: /in}}]
            outputs: {{artifacts: [{{name: b, path: /in/link/b}}]}}
    """
    since = time.time()
    proc, results = run_cli(project, text, write_policy(tmp_path, runtime), tmp_path / "r.json")
    assert proc.returncode == 2 and results is None, proc.stderr
    lines = proc.stderr.splitlines()
    expected = {
        "via-ro": f"/w/link/x goes through a symlink in the mounted {project / 'm1'}",
        "via-rw": f"/w/link/y goes through a symlink in the mounted {project / 'm1'}",
        "via-input": "/in/link/b is inside an input at /in, where a node could put a symlink",
    }
    for name, why in expected.items():
        mine = [line for line in lines if f"node '{names[name]}'" in line]
        assert len(mine) == 1 and why in mine[0], (name, mine)
    assert created_containers(docker_client, since, set(names.values())) == []
    # Without the symlink the same nesting runs, and the mount is where it was written.
    text = f"""
        version: 1
        name: placed
        nodes:
          {names["via-ro"]}:
            command: [grep, -c, " /w/real/x ", /proc/mounts]
            mounts: [{{source: m1, target: /w}}, {{source: m2, target: /w/real/x}}]
    """
    proc, results = run_cli(project, text, write_policy(tmp_path, runtime), tmp_path / "ok.json")
    assert proc.returncode == 0 and results is not None, proc.stdout + proc.stderr
    assert results["nodes"][names["via-ro"]]["stdout_tail"].strip() == "1"
    assert labelled_leftovers(docker_client, results["run_id"]) == []


SWAPPER = """
mv /w/nested /w/moved && mkdir /w/nested && ln -s {secret} /w/nested/.git &&
mv /w/data /w/data-moved && ln -s {secret} /w/data &&
mv /w/sub /w/sub-moved && ln -s /usr/local/bin /w/sub && echo SWAPPED
"""


def test_a_source_swapped_for_a_symlink_by_an_earlier_node_is_never_mounted(
    runtime, project, tmp_path, docker_client, built_images
):
    """An earlier node with `.` read-write renames a directory the run will mount (a
    source, or the parent of a git directory a read-write mount binds again read-only) and
    puts a symlink to a host directory in its place: the engine follows it on the host,
    and a later node read a host file no policy granted. Checked just before each start:
    the later nodes error (exit 3) and read nothing."""
    secret_dir = tmp_path / "host-only"
    secret_dir.mkdir()
    (secret_dir / "KEY").write_text(SECRET)
    (project / "data").mkdir()
    (project / "sub" / "x").mkdir(parents=True)
    (project / "other").mkdir()
    assert subprocess.run(["git", "init", "-q", str(project / "nested")]).returncode == 0
    for path in [project, *project.rglob("*")]:  # the worst case: nodes may rename anything
        path.chmod(0o777 if path.is_dir() else 0o666)
    read = "cat /w/nested/.git/KEY /d/KEY"
    text = f"""
        version: 1
        name: swapped
        fail_fast: false
        nodes:
          swapper:
            command: {json.dumps(SWAPPER.format(secret=secret_dir))}
            mounts: [{{source: ., target: /w, mode: rw}}]
          git-reader:
            needs: [swapper]
            command: {json.dumps(read)}
            mounts: [{{source: ., target: /w, mode: rw}}]
          source-reader:
            needs: [swapper]
            command: {json.dumps(read)}
            mounts: [{{source: data, target: /d}}]
          target-placer:
            needs: [swapper]
            command: [ls, /usr/local/bin/x]
            mounts: [{{source: ., target: /w}}, {{source: other, target: /w/sub/x}}]
    """
    # Not made ahead of time (a container started while the swapper runs has its mounts
    # already, from before any swap): each reader's container is made after the swap.
    policy = write_policy(tmp_path, runtime)
    proc, results = run_cli(project, text, policy, tmp_path / "r.json", "--ahead", "0")
    assert results is not None, proc.stderr
    assert proc.returncode == 3, proc.stdout + proc.stderr
    nodes = results["nodes"]
    assert nodes["swapper"]["status"] == "succeeded", nodes["swapper"]
    assert "SWAPPED" in nodes["swapper"]["stdout_tail"]
    for name, source in (("git-reader", "nested/.git"), ("source-reader", "data")):
        node = nodes[name]
        assert node["status"] == "errored" and node["exit_code"] is None, node
        assert node["reason"] == (
            f"mount source {project / source} now goes through a symlink, which the engine "
            "would follow on the host (it did not when the run was admitted)"
        )
        assert SECRET not in json.dumps(node)
    placer = nodes["target-placer"]
    assert placer["status"] == "errored" and placer["reason"] == (
        f"/w/sub/x goes through a symlink in the mounted {project} "
        "(it did not when the run was admitted)"
    ), placer
    assert SECRET not in proc.stdout + proc.stderr
    assert labelled_leftovers(docker_client, results["run_id"]) == []
