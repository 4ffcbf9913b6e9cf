"""Packaging hook: the wheel carries the repository's shipped files as package data.

images/ (the image build contexts), policies/, configs/examples/ and scripts/engine-up
stay where they are in the repository (fixed project layout; one copy in git). At build
time they are copied into the package as sandbox_orch/_shipped/, where
sandbox_orch/shipped.py finds them in an installed wheel; in a clone (editable install)
it uses the repository's own directories instead. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# Repository path -> path under sandbox_orch/_shipped/ (keep in step with shipped.py).
SHIPPED = {
    "images": "images",
    "policies": "policies",
    "configs/examples": "examples",
    "scripts/engine-up": "engine-up",
}
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


class BuildPyWithShipped(build_py):
    """build_py, plus the shipped files; copy2 keeps their modes (the scripts that the
    image builds COPY stay executable, and the wheel records the modes pip restores)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install uses the clone's own files
            return
        target = Path(self.build_lib) / "sandbox_orch" / "_shipped"
        shutil.rmtree(target, ignore_errors=True)  # no stale file from an earlier build
        for source, name in SHIPPED.items():
            origin, destination = HERE / source, target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(origin, destination, ignore=JUNK)
            else:
                shutil.copy2(origin, destination)


setup(cmdclass={"build_py": BuildPyWithShipped})
