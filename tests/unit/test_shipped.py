"""Where shipped files are found, and that the wheel's build hook ships the same ones."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from sandbox_orch import images, policy, shipped
from tests.conftest import REPO


def test_a_clone_uses_the_repositorys_own_directories():
    assert not shipped.INSTALLED
    assert shipped.IMAGES_DIR == REPO / "images"
    assert shipped.POLICIES_DIR == REPO / "policies"
    assert shipped.EXAMPLES_DIR == REPO / "configs" / "examples"
    assert shipped.ENGINE_UP == REPO / "scripts" / "engine-up"
    # The modules that use them take them from here (one place says where they are).
    assert images.IMAGES_DIR is shipped.IMAGES_DIR
    assert policy.POLICIES_DIR is shipped.POLICIES_DIR


def test_an_installation_uses_its_package_data_only(tmp_path):
    # A wheel's layout: the package with _shipped/ inside, next to a directory named like
    # the repository's (another distribution's `images/` in site-packages): never used.
    package = tmp_path / "site" / "sandbox_orch"
    (package / "_shipped" / "policies").mkdir(parents=True)
    (tmp_path / "site" / "images").mkdir()
    source = Path(shipped.__file__).read_text()
    (package / "shipped.py").write_text(source)
    spec = importlib.util.spec_from_file_location("shipped_copy", package / "shipped.py")
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    base = package.resolve() / "_shipped"
    assert copy.INSTALLED
    found = [copy.IMAGES_DIR, copy.POLICIES_DIR, copy.EXAMPLES_DIR, copy.ENGINE_UP]
    assert found == [base / name for name in ("images", "policies", "examples", "engine-up")]


def shipped_mapping() -> dict[str, str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "SHIPPED":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no SHIPPED mapping")


def test_the_build_hook_ships_what_shipped_py_looks_for():
    # setup.py copies each repository path to _shipped/<name>; shipped.py's clone and
    # installed paths must name the same pairs.
    mapping = shipped_mapping()
    pairs = {
        shipped.IMAGES_DIR: "images",
        shipped.POLICIES_DIR: "policies",
        shipped.EXAMPLES_DIR: "examples",
        shipped.ENGINE_UP: "engine-up",
    }
    assert {str(path.relative_to(REPO)): name for path, name in pairs.items()} == mapping
    assert "_shipped" in (REPO / ".gitignore").read_text()  # build output, never in git


def test_an_sdist_carries_the_shipped_files_too():
    manifest = (REPO / "MANIFEST.in").read_text().splitlines()
    for source in shipped_mapping():
        kind = "graft" if (REPO / source).is_dir() else "include"
        assert f"{kind} {source}" in manifest
