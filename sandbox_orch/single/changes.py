"""The node's changes, as a patch between the two workspace copies."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from typing import Any

from ..errors import InfrastructureError
from ..store import run_dir
from .request import NODE
from .workspace import WorkspaceCopy

PATCH = "changes.patch"


def write_patch(copy: WorkspaceCopy, run_id: str) -> dict[str, Any]:
    """Diff the copies into artifacts/single/changes.patch; remove the copies."""
    diff = subprocess.run(
        ["git", "diff", "--no-index", "--binary", "--no-prefix", "--", "a", "b"],
        cwd=copy.pristine.parent,
        capture_output=True,
        check=False,
        process_group=0,  # a terminal's Ctrl-C reaches us (the run ends), not the diff
    )
    if diff.returncode not in (0, 1):  # 1 means "there are differences"
        message = diff.stderr.decode(errors="replace").strip()
        raise InfrastructureError(f"cannot compute the patch: {message}")
    patch = diff.stdout
    target = run_dir(run_id) / "artifacts" / NODE / PATCH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(patch)
    shutil.rmtree(copy.pristine.parent, ignore_errors=True)
    return {
        "name": PATCH,
        "path": str(target),
        "bytes": len(patch),
        "sha256": hashlib.sha256(patch).hexdigest(),
    }
