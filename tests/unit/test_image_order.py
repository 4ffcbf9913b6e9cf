"""Pure tests (no engine) for image dependency order, context hashing and bootstrap errors."""

from pathlib import Path

import docker.errors
import pytest

from sandbox_orch import images
from sandbox_orch.images import (
    IMAGES_DIR,
    available_images,
    build_order,
    context_hash,
    ensure_bootstrap,
    image_labels,
    image_ref,
    parent_refs,
)


def make_images(root: Path, dockerfiles: dict[str, str]) -> Path:
    for name, text in dockerfiles.items():
        (root / name).mkdir(parents=True)
        (root / name / "Dockerfile").write_text(text)
    return root


@pytest.fixture
def tree(tmp_path):
    # Names chosen so alphabetical order differs from dependency order.
    return make_images(
        tmp_path,
        {
            "zbase": "FROM sandbox-orch/bootstrap:bookworm\nRUN true\n",
            "alpha": "FROM sandbox-orch/mid\n",
            "mid": (
                "# comment FROM sandbox-orch/alpha\n"
                "FROM --platform=linux/amd64 sandbox-orch/zbase:latest AS b\n"
            ),
            "solo": "FROM debian:bookworm\n",
        },
    )


def test_available_images_lists_only_dirs_with_a_dockerfile(tree):
    (tree / "empty").mkdir()
    (tree / "notes.txt").write_text("x")
    assert available_images(tree) == ["alpha", "mid", "solo", "zbase"]
    assert available_images(tree / "missing") == []


def test_parent_refs_reads_sandbox_orch_from_lines_only(tree):
    assert parent_refs(tree / "mid" / "Dockerfile") == ["sandbox-orch/zbase:latest"]
    assert parent_refs(tree / "solo" / "Dockerfile") == []


def test_build_order_puts_parents_first(tree):
    assert build_order(["alpha"], tree) == ["zbase", "mid", "alpha"]
    assert build_order(["mid"], tree) == ["zbase", "mid"]
    assert build_order(["solo"], tree) == ["solo"]


def test_build_order_all_has_each_image_once_after_its_parents(tree):
    order = build_order(None, tree)
    assert sorted(order) == ["alpha", "mid", "solo", "zbase"]
    assert order.index("zbase") < order.index("mid") < order.index("alpha")


def test_build_order_deduplicates_requested_names(tree):
    assert build_order(["alpha", "mid", "alpha"], tree) == ["zbase", "mid", "alpha"]


def test_build_order_rejects_unknown_names_and_lists_available(tree):
    with pytest.raises(ValueError) as err:
        build_order(["mid", "nope"], tree)
    message = str(err.value)
    assert "nope" in message
    for name in ("alpha", "mid", "solo", "zbase"):
        assert name in message


def test_build_order_detects_cycles(tmp_path):
    make_images(tmp_path, {"a": "FROM sandbox-orch/b\n", "b": "FROM sandbox-orch/a\n"})
    with pytest.raises(ValueError, match="cycle"):
        build_order(["a"], tmp_path)


def test_repo_images_build_base_first():
    assert build_order(["shell"]) == ["base", "shell"]
    order = build_order(None)
    assert order[0] == "base"
    assert set(order) == set(available_images())
    assert {"base", "shell", "python", "node"} <= set(order)
    for name in order:  # every parent comes before its children
        for ref in parent_refs(IMAGES_DIR / name / "Dockerfile"):
            parent = ref.removeprefix("sandbox-orch/").split(":")[0]
            if parent in order:
                assert order.index(parent) < order.index(name), (parent, name)


def test_context_hash_is_deterministic_and_covers_inputs(tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM sandbox-orch/base\n")
    (ctx / "sub" / "file.txt").write_text("one")
    parents = {"sandbox-orch/base": "sha256:aaa"}
    first = context_hash(ctx, parents, "1.0")
    assert context_hash(ctx, parents, "1.0") == first

    assert context_hash(ctx, {"sandbox-orch/base": "sha256:bbb"}, "1.0") != first
    assert context_hash(ctx, parents, "1.1") != first
    (ctx / "sub" / "file.txt").write_text("two")
    changed = context_hash(ctx, parents, "1.0")
    assert changed != first
    (ctx / "extra").write_text("")
    assert context_hash(ctx, parents, "1.0") != changed


def test_context_hash_distinguishes_paths_from_contents(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "xy").write_text("z")
    (b / "x").write_text("yz")
    assert context_hash(a, {}, "1") != context_hash(b, {}, "1")


def test_labels_never_claim_the_run_label():
    labels = image_labels("shell", "abc")
    assert labels["sandbox-orch.image"] == "shell"
    assert labels["org.opencontainers.image.title"] == image_ref("shell") == "sandbox-orch/shell"
    assert labels["sandbox-orch.context-sha256"] == "abc"
    assert "sandbox-orch.run" not in labels


class _NoImages:
    """Stands in for client.images on an engine with no images and no registry."""

    def __init__(self):
        self.pulled = []

    def get(self, ref):
        raise docker.errors.ImageNotFound(f"no such image: {ref}")

    def pull(self, repository, tag):
        self.pulled.append(f"{repository}:{tag}")
        raise docker.errors.APIError("registry unreachable")


class _FakeClient:
    def __init__(self):
        self.images = _NoImages()


def test_bootstrap_without_mmdebstrap_or_registry_says_what_to_install(monkeypatch):
    monkeypatch.setattr(images.shutil, "which", lambda _cmd: None)
    client = _FakeClient()
    with pytest.raises(RuntimeError) as err:
        ensure_bootstrap(client, log=lambda _line: None)
    message = str(err.value)
    assert "apt-get install mmdebstrap" in message
    assert "registry" in message
    assert client.images.pulled == ["debian:bookworm-slim"]


def test_build_levels_are_waves_of_independent_images_after_their_parents(tree):
    # solo's parent is not ours: it builds in the first wave, with zbase.
    waves = images.build_levels(None, tree)
    assert [sorted(w) for w in waves] == [["solo", "zbase"], ["mid"], ["alpha"]]
    assert images.build_levels(["alpha"], tree) == [["zbase"], ["mid"], ["alpha"]]
    assert images.build_levels([], tree) == []


def test_repo_images_build_in_three_waves_claude_and_codex_together():
    waves = [sorted(w) for w in images.build_levels(None)]
    assert waves == [["base"], ["node", "python", "shell"], ["claude", "codex", "egress-proxy"]]


def test_ctrl_c_in_any_command_exits_130_with_one_line_not_clicks_aborted():
    import click
    from click.testing import CliRunner

    from sandbox_orch.cli import exits_with_contract_codes

    @click.command()
    @exits_with_contract_codes
    def waiting() -> None:
        raise KeyboardInterrupt  # as a Ctrl-C while `images build` waits for its builds

    result = CliRunner().invoke(waiting)
    assert result.exit_code == 130
    assert result.output == "sandbox-orch: interrupted\n"


def test_a_ctrl_c_while_a_wave_builds_does_not_wait_for_its_builds(monkeypatch, tree):
    """The builds run in daemon threads: waiting for them is interruptible, and nothing
    joins them at exit (a pool's threads would be waited for, a minute of builds)."""
    import threading

    started = threading.Event()
    release = threading.Event()

    def build_one(client, name, context, log):
        started.set()
        release.wait()  # a build that outlives the command
        raise AssertionError("never reached: the command was interrupted")

    monkeypatch.setattr(images, "_build_one", build_one)
    threads = []
    real_thread = threading.Thread

    def recording_thread(*args, **kwargs):
        thread = real_thread(*args, **kwargs)
        threads.append(thread)
        return thread

    monkeypatch.setattr(images.threading, "Thread", recording_thread)

    def interrupted_wait(futures):
        assert started.wait(5)
        raise KeyboardInterrupt

    monkeypatch.setattr(images, "wait", interrupted_wait)
    with pytest.raises(KeyboardInterrupt):
        images._build_wave(None, ["mid", "solo"], tree, lambda line: None)
    assert len(threads) == 2 and all(t.daemon for t in threads)
    release.set()


def test_a_context_txt_adds_package_modules_and_installed_libraries(tmp_path):
    image = tmp_path / "proxy"
    image.mkdir()
    (image / "Dockerfile").write_text("FROM sandbox-orch/python\n")
    (image / "context.txt").write_text(
        "# a comment\npackage egress/grants.py  # and one after\n\nmodule idna\n"
    )
    with images.build_context(image) as context:
        assert context != image and (context / "Dockerfile").is_file()
        grants = context / "sandbox_orch" / "egress" / "grants.py"
        assert grants.read_bytes() == (images.PACKAGE_DIR / "egress" / "grants.py").read_bytes()
        assert (context / "vendor" / "idna" / "__init__.py").is_file()
        assert not list(context.rglob("__pycache__"))
        hashed = context_hash(context, {})
    assert not context.exists()  # a scratch copy, gone after the build
    # A change to a named module is a change of the image.
    with images.build_context(image) as again:
        assert context_hash(again, {}) == hashed
        (again / "sandbox_orch" / "egress" / "grants.py").write_text("changed")
        assert context_hash(again, {}) != hashed


def test_an_image_without_context_txt_is_built_from_its_directory(tmp_path):
    with images.build_context(tmp_path) as context:
        assert context == tmp_path


@pytest.mark.parametrize(
    "line",
    ["package ../setup.py", "module not-a-name", "package", "copy x y", "module no_such_module_x"],
)
def test_a_context_txt_line_that_is_not_understood_is_an_error(line):
    with pytest.raises(ValueError, match=r"context.txt"):
        images.context_extras(f"package egress/http.py\n{line}\n")


def test_the_proxy_images_modules_import_with_nothing_else(tmp_path):
    """The closure context.txt names is enough: egress/remote.py imports from the copy,
    its h11 and idna from the copy's vendor/ (first on the path), and nothing else of
    the package comes with it."""
    import subprocess
    import sys

    with images.build_context(IMAGES_DIR / "egress-proxy") as context:
        script = (
            "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/vendor']; "
            "import sandbox_orch.egress.remote as r, h11, idna; "
            "print(r.__file__, h11.__file__, idna.__file__); "
            "print(sorted(m for m in sys.modules if m.startswith('sandbox_orch')))"
        )
        done = subprocess.run(
            [sys.executable, "-I", "-c", script, str(context)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        where, loaded = done.stdout.splitlines()
        remote, h11, idna = where.split()
        assert remote.startswith(f"{context}/sandbox_orch/")
        assert h11.startswith(f"{context}/vendor/h11/") and idna.startswith(f"{context}/vendor/")
    assert "sandbox_orch.egress.proxy" not in loaded and "sandbox_orch.store" not in loaded
