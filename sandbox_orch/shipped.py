"""Where the files shipped with sandbox-orch are: image build contexts, policies, examples,
and the engine set-up script.

In an installed wheel they are package data in sandbox_orch/_shipped/ (setup.py copies
them there when the wheel is built); in a clone (editable install, PYTHONPATH) they are the
repository's own images/, policies/, configs/examples/ and scripts/engine-up. The choice is
made once, for all of them: an installation never mixes its files with a directory that
happens to sit next to the package (site-packages may hold another distribution's
`images/`)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
_INSTALLED = PACKAGE_DIR / "_shipped"
# Only a built wheel has _shipped/ (it is not in git; see setup.py).
INSTALLED = _INSTALLED.is_dir()
_CLONE = PACKAGE_DIR.parent

IMAGES_DIR: Path = _INSTALLED / "images" if INSTALLED else _CLONE / "images"
POLICIES_DIR: Path = _INSTALLED / "policies" if INSTALLED else _CLONE / "policies"
EXAMPLES_DIR: Path = _INSTALLED / "examples" if INSTALLED else _CLONE / "configs" / "examples"
ENGINE_UP: Path = _INSTALLED / "engine-up" if INSTALLED else _CLONE / "scripts" / "engine-up"
