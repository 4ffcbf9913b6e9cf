"""The sandbox-orch images, built for real on the Docker engine, and their build logic."""

import contextlib

import docker
import docker.errors
import pytest

from sandbox_orch import __version__
from sandbox_orch.images import build_images, image_ref

# A cold build (mmdebstrap + apt in four images) takes minutes on a slow mirror.
pytestmark = [pytest.mark.engine, pytest.mark.timeout(1800)]

IMAGES = ["base", "shell", "python", "node"]
# Marks containers and images these tests create; never sandbox-orch.run (owned by gc).
TEST_LABEL = {"sandbox-orch.test": "images"}


@pytest.fixture(scope="module")
def client():
    try:
        engine = docker.from_env()
        engine.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker engine reachable: {exc}")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def built(client):
    """All images, built if missing or stale (a no-op when already up to date)."""
    return {outcome.name: outcome for outcome in build_images(client, log=lambda _line: None)}


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


@pytest.mark.parametrize("name", IMAGES)
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


@pytest.mark.parametrize("name", IMAGES)
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
    before = {c.id for c in client.containers.list(all=True)}
    with pytest.raises(RuntimeError) as err:
        build_images(client, [name], images_dir=tmp_path, log=lambda _line: None)
    assert "marker-before-failure" in str(err.value)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(image_ref(name))
    # forcerm: the failed step's container does not linger.
    assert {c.id for c in client.containers.list(all=True)} <= before
