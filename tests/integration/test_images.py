"""The sandbox-orch images, built for real on the Docker engine, and their build logic."""

import contextlib
import json
import os
import shutil
import socketserver
import tempfile
import threading
import tomllib

import docker
import docker.errors
import pytest

from sandbox_orch import __version__
from sandbox_orch.images import build_images, image_ref
from sandbox_orch.seccomp import RUNSC_SECURITY_OPT

# A cold build (mmdebstrap + apt in four images, npm for the two agents) takes minutes
# on a slow mirror.
pytestmark = [pytest.mark.engine, pytest.mark.timeout(1800)]

IMAGES = ["base", "shell", "python", "node", "egress-proxy"]
# The agent images: HOME is /tmp (the writable tmpfs), so they are not in IMAGES' HOME test.
AGENT_IMAGES = ["claude", "codex"]
# Marks containers and images these tests create; never sandbox-orch.run (owned by gc).
TEST_LABEL = {"sandbox-orch.test": "images"}


@pytest.fixture(scope="module")
def client(docker_client):
    """The engine (conftest's: a missing engine fails these tests, never skips them)."""
    return docker_client


@pytest.fixture(scope="module")
def built(built_images):
    return built_images


def run(client, image, command, user=None):
    """Run command in a throwaway container without network; returns (code, stdout, stderr)."""
    options = {"user": user} if user is not None else {}
    container = client.containers.create(
        image, command, network_mode="none", init=True, labels=TEST_LABEL, **options
    )
    try:
        container.start()
        code = container.wait(timeout=120)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode()
        err = container.logs(stdout=False, stderr=True).decode()
        return code, out, err
    finally:
        container.remove(force=True)


@pytest.mark.parametrize("name", IMAGES + AGENT_IMAGES)
def test_image_config_is_unprivileged_and_labelled(client, built, name):
    image = client.images.get(image_ref(name))
    assert image.id == built[name].image_id
    config = image.attrs["Config"]
    assert config["User"] in ("10001:10001", "10001")
    assert not config.get("Entrypoint")
    assert config["WorkingDir"] in ("/home/sandbox", "/work")
    labels = image.labels
    assert labels["sandbox-orch.image"] == name
    assert labels["sandbox-orch.version"] == __version__
    assert labels["org.opencontainers.image.title"] == f"sandbox-orch/{name}"
    assert len(labels["sandbox-orch.context-sha256"]) == 64
    assert "sandbox-orch.run" not in labels


@pytest.mark.parametrize("name", IMAGES + AGENT_IMAGES)
def test_image_has_no_setuid_or_setgid_files(client, built, name):
    # As root, so no directory is hidden from find by permissions.
    code, out, err = run(
        client, image_ref(name), ["find", "/", "-xdev", "-perm", "/6000", "-type", "f"], user="0"
    )
    assert (code, out) == (0, ""), err


@pytest.mark.parametrize("name", IMAGES)
def test_image_runs_as_10001(client, built, name):
    code, out, _ = run(client, image_ref(name), ["sh", "-c", "id -u; id -g; echo $HOME"])
    assert code == 0
    assert out.split() == ["10001", "10001", "/home/sandbox"]


def test_shell_image_has_sh_and_bash(client, built):
    code, out, _ = run(client, image_ref("shell"), ["/bin/sh", "-c", "bash -c 'echo $((6*7))'"])
    assert (code, out) == (0, "42\n")


def test_python_image_runs_python(client, built):
    assert run(client, image_ref("python"), ["python", "-c", "print(1)"])[:2] == (0, "1\n")
    code, out, _ = run(
        client, image_ref("python"), ["python3", "-c", "import sys; print(sys.version_info[0])"]
    )
    assert (code, out) == (0, "3\n")


def test_node_image_runs_node(client, built):
    assert run(client, image_ref("node"), ["node", "-e", "console.log(1)"])[:2] == (0, "1\n")


def test_second_build_is_up_to_date(client, built):
    lines = []
    outcomes = build_images(client, ["shell"], log=lines.append)
    assert [o.name for o in outcomes] == ["base", "shell"]
    assert all(not o.built for o in outcomes)
    assert [o.image_id for o in outcomes] == [built["base"].image_id, built["shell"].image_id]
    assert sum("up to date" in line for line in lines) == 2


@pytest.fixture
def scratch_images(client, tmp_path):
    """A temporary images dir whose images are removed afterwards."""
    names = ["zz-itest-parent", "zz-itest-child"]
    for name in names:
        (tmp_path / name).mkdir()
    (tmp_path / names[0] / "Dockerfile").write_text(
        "FROM sandbox-orch/base\nCOPY payload.txt /home/sandbox/payload.txt\n"
    )
    (tmp_path / names[0] / "payload.txt").write_text("one\n")
    (tmp_path / names[1] / "Dockerfile").write_text(f"FROM sandbox-orch/{names[0]}\n")
    yield tmp_path, names
    # By label, so superseded versions go too; children first, as the engine requires.
    for name in reversed(names):
        for image in client.images.list(filters={"label": f"sandbox-orch.image={name}"}):
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(image.id, force=True)


def test_changed_context_rebuilds_image_and_its_children(client, built, scratch_images):
    images_dir, (parent, child) = scratch_images
    quiet = {"images_dir": images_dir, "log": lambda _line: None}

    first = build_images(client, [child], **quiet)
    assert [(o.name, o.built) for o in first] == [(parent, True), (child, True)]
    assert [o.built for o in build_images(client, [child], **quiet)] == [False, False]

    (images_dir / parent / "payload.txt").write_text("two\n")
    third = build_images(client, [child], **quiet)
    # The child's context is unchanged, but its parent's id is not: both rebuild.
    assert [o.built for o in third] == [True, True]
    assert third[1].image_id != first[1].image_id
    assert run(client, third[1].ref, ["cat", "/home/sandbox/payload.txt"])[:2] == (0, "two\n")


def test_failed_build_raises_with_the_build_output(client, built, tmp_path):
    name = "zz-itest-broken"
    (tmp_path / name).mkdir()
    (tmp_path / name / "Dockerfile").write_text(
        "FROM sandbox-orch/base\nRUN echo marker-before-failure && false\n"
    )
    with pytest.raises(RuntimeError) as err:
        build_images(client, [name], images_dir=tmp_path, log=lambda _line: None)
    assert "marker-before-failure" in str(err.value)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(image_ref(name))
    # forcerm: the failed step's container does not linger. Only the containers of this
    # build's step count (found by its command): other runs share the engine.
    lingering = [
        c.id
        for c in client.containers.list(all=True)
        if "marker-before-failure" in c.attrs.get("Command", "")
    ]
    assert lingering == []


# --- agent images and the egress forwarder, run as nodes are: hardened, no network ---

CLAUDE_CODE_VERSION = "2.1.331"
CODEX_VERSION = "0.169.0"
EGRESS_SOCKET_DIR = "/run/egress"
RUNTIMES = ["runc", "runsc"]


@pytest.fixture(scope="module")
def runtimes(client):
    return set(client.info().get("Runtimes", {}))


def run_hardened(client, image, command, *, runtime="runc", volumes=None, environment=None):
    """Run command like a node: 10001, read-only root, noexec /tmp, no caps, no network.

    Under gVisor with sandbox-orch's own seccomp profile, as the orchestrator runs it
    (the engine's default profile breaks glibc's thread creation and select there).
    """
    security_opt = ["no-new-privileges"]
    if runtime == "runsc":
        security_opt.append(RUNSC_SECURITY_OPT)
    container = client.containers.create(
        image,
        command,
        user="10001:10001",
        read_only=True,
        network_mode="none",
        tmpfs={"/tmp": "rw,noexec,nosuid,nodev,size=64m"},
        cap_drop=["ALL"],
        security_opt=security_opt,
        runtime=runtime,
        volumes=volumes or {},
        environment=environment or {},
        init=True,
        labels=TEST_LABEL,
    )
    try:
        container.start()
        code = container.wait(timeout=120)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode()
        err = container.logs(stdout=False, stderr=True).decode()
        return code, out, err
    finally:
        container.remove(force=True)


def needs_runtime(runtimes, runtime):
    if runtime not in runtimes:
        pytest.skip(f"the engine has no {runtime} runtime")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_claude_image_runs_claude_hardened(client, built, runtimes, runtime):
    needs_runtime(runtimes, runtime)
    code, out, err = run_hardened(
        client, image_ref("claude"), ["claude", "--version"], runtime=runtime
    )
    assert code == 0, err
    assert CLAUDE_CODE_VERSION in out


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_codex_image_runs_codex_hardened(client, built, runtimes, runtime):
    needs_runtime(runtimes, runtime)
    code, out, err = run_hardened(
        client, image_ref("codex"), ["codex", "--version"], runtime=runtime
    )
    assert (code, out.strip()) == (0, f"codex-cli {CODEX_VERSION}"), err


@pytest.mark.parametrize("name", AGENT_IMAGES)
def test_agent_image_runs_as_10001_with_home_on_the_tmpfs(client, built, name):
    code, out, _ = run(client, image_ref(name), ["sh", "-c", "id -u; id -g; echo $HOME"])
    assert code == 0
    assert out.split() == ["10001", "10001", "/tmp"]


def test_codex_wrapper_points_codex_at_openai_base_url(client, built):
    # Quotes and backslashes must come out of the TOML exactly as they went in.
    url = 'http://127.0.0.1:3128/v1?q="a\\b"'
    code, out, err = run_hardened(
        client,
        image_ref("codex"),
        ["sh", "-c", "sandbox-orch-codex --version && cat /tmp/.codex/config.toml"],
        environment={"OPENAI_BASE_URL": url},
    )
    assert code == 0, err
    version, _, toml_text = out.partition("\n")
    assert version == f"codex-cli {CODEX_VERSION}"
    config = tomllib.loads(toml_text)
    assert config["model_provider"] == "sandbox"
    assert config["model_providers"]["sandbox"] == {
        "name": "sandbox",
        "base_url": url,
        "env_key": "OPENAI_API_KEY",
        "wire_api": "responses",
        "supports_websockets": False,
    }


def test_codex_wrapper_without_base_url_writes_no_config(client, built):
    code, out, err = run_hardened(
        client,
        image_ref("codex"),
        ["sh", "-c", "CODEX_HOME=/tmp/ch sandbox-orch-codex --version && ls -A /tmp/ch"],
    )
    assert code == 0, err
    assert out.split("\n")[0] == f"codex-cli {CODEX_VERSION}"
    assert "config.toml" not in out


def test_codex_wrapper_refuses_a_base_url_with_a_newline(client, built):
    code, _, err = run_hardened(
        client,
        image_ref("codex"),
        ["sandbox-orch-codex", "--version"],
        environment={"OPENAI_BASE_URL": "http://x/v1\n[evil]"},
    )
    assert code == 125
    assert "control character" in err


def test_codex_wrapper_session_trusts_the_workspace_and_keeps_the_provider(client, built):
    code, out, err = run_hardened(
        client,
        image_ref("codex"),
        ["sh", "-c", "sandbox-orch-codex --sandbox-orch-session --version && "
         "cat /tmp/.codex/config.toml"],
        environment={"OPENAI_BASE_URL": "http://127.0.0.1:3128/v1"},
    )  # fmt: skip
    assert code == 0, err
    version, _, toml_text = out.partition("\n")
    assert version == f"codex-cli {CODEX_VERSION}"  # the flag is ours, not passed on
    config = tomllib.loads(toml_text)
    assert config["projects"] == {"/workspace": {"trust_level": "trusted"}}
    assert config["model_provider"] == "sandbox"
    assert config["model_providers"]["sandbox"]["base_url"] == "http://127.0.0.1:3128/v1"


CLAUDE_SEED = (
    "sandbox-orch-claude --version && cat /tmp/.claude.json && stat -c %a /tmp/.claude.json"
)


@pytest.mark.parametrize(
    ("key", "approved"),
    [
        ("sk-ant-e2e-0123456789abcdef0123456789", ["6789abcdef0123456789"]),  # its last 20
        ("short-key", ["short-key"]),
        # Not written into JSON by hand: characters a key never has are not approved.
        ('sk-ant-xxxxxxxxxxxxxxxxxxxxxx"],"x":["', []),
        ("", []),
    ],
)
def test_claude_wrapper_seeds_first_run_answers_in_the_home(client, built, key, approved):
    code, out, err = run_hardened(
        client,
        image_ref("claude"),
        ["sh", "-c", CLAUDE_SEED],
        environment={"ANTHROPIC_API_KEY": key} if key else None,
    )
    assert code == 0, err
    version, seeded, mode = out.strip().split("\n")
    assert CLAUDE_CODE_VERSION in version
    config = json.loads(seeded)
    assert config["hasCompletedOnboarding"] is True
    assert config["projects"]["/workspace"]["hasTrustDialogAccepted"] is True
    assert config["customApiKeyResponses"] == {"approved": approved, "rejected": []}
    assert mode == "600"  # only the sandbox user reads it (it names part of the key)


def test_claude_wrapper_leaves_an_existing_config_alone(client, built):
    code, out, err = run_hardened(
        client,
        image_ref("claude"),
        ["sh", "-c", "echo '{}' > /tmp/.claude.json && sandbox-orch-claude --version "
         "&& cat /tmp/.claude.json"],
    )  # fmt: skip
    assert code == 0, err
    assert out.strip().split("\n")[-1] == "{}"


class _ProxyStandIn(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The host side of egress in miniature: one fixed HTTP answer per connection."""

    daemon_threads = True

    def __init__(self, path):
        self.requests = []
        super().__init__(path, _ProxyStandInHandler)


class _ProxyStandInHandler(socketserver.StreamRequestHandler):
    def handle(self):
        request_line = self.rfile.readline().decode().strip()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        self.server.requests.append(request_line)
        body = f"hello from the host: {request_line}\n".encode()
        head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        self.wfile.write(head + body)


@pytest.fixture
def egress_socket_dir():
    """A host dir holding proxy.sock, served by a thread; yields (dir, server)."""
    # Short path under /tmp: a Unix socket path must fit in 108 bytes.
    directory = tempfile.mkdtemp(prefix="so-egress-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "proxy.sock")
    server = _ProxyStandIn(path)
    # The node runs as 10001: connecting needs write permission on the socket.
    os.chmod(path, 0o666)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield directory, server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        shutil.rmtree(directory, ignore_errors=True)


def egress_volume(directory):
    return {directory: {"bind": EGRESS_SOCKET_DIR, "mode": "ro"}}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_egress_forwarder_reaches_the_host_socket(
    client, built, runtimes, runtime, egress_socket_dir
):
    needs_runtime(runtimes, runtime)
    directory, server = egress_socket_dir
    script = (
        'for i in 1 2; do printf "GET /probe-$i HTTP/1.0\\r\\n\\r\\n" '
        "| socat - TCP:127.0.0.1:3128; done"
    )
    code, out, err = run_hardened(
        client,
        image_ref("shell"),
        ["sandbox-orch-egress", "sh", "-c", script],
        runtime=runtime,
        volumes=egress_volume(directory),
    )
    assert code == 0, err
    assert out.count("HTTP/1.0 200 OK") == 2, (out, err)
    assert "hello from the host: GET /probe-1 HTTP/1.0" in out
    assert "hello from the host: GET /probe-2 HTTP/1.0" in out
    assert server.requests == ["GET /probe-1 HTTP/1.0", "GET /probe-2 HTTP/1.0"]


def test_egress_wrapper_passes_the_exit_status_through(client, built, egress_socket_dir):
    directory, _ = egress_socket_dir
    code, _, err = run_hardened(
        client,
        image_ref("shell"),
        ["sandbox-orch-egress", "sh", "-c", "exit 7"],
        volumes=egress_volume(directory),
    )
    assert code == 7, err


def test_egress_wrapper_without_socket_just_execs(client, built):
    # No forwarder: nothing listens on 3128; the command's output and status are its own.
    script = "echo ran; grep -c ' 0100007F:0C38 ' /proc/net/tcp; exit 3"
    code, out, err = run_hardened(
        client, image_ref("shell"), ["sandbox-orch-egress", "sh", "-c", script]
    )
    assert (code, out, err) == (3, "ran\n0\n", "")


def test_egress_wrapper_refuses_a_proxy_path_that_is_not_a_socket(client, built, tmp_path):
    directory = tmp_path / "egress"
    directory.mkdir(mode=0o755)
    (directory / "proxy.sock").write_text("not a socket\n")
    code, out, err = run_hardened(
        client,
        image_ref("shell"),
        ["sandbox-orch-egress", "echo", "should not run"],
        volumes=egress_volume(str(directory)),
    )
    assert (code, out) == (125, "")
    assert "not a Unix socket" in err
