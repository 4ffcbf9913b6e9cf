"""`sandbox-orch init`: a starter workflow and the policy that admits it, written to a
directory. Both or neither: an existing file is refused (exit 2) unless forced."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import InputRefused, Problem

WORKFLOW = """\
# A starter workflow: each node runs in its own disposable, hardened container, with no
# network and a read-only root. Run it: sandbox-orch run workflow.yaml --policy policy.yaml
# Check it without running anything: sandbox-orch validate workflow.yaml --policy policy.yaml
version: 1
name: starter
defaults:
  runtime: shell
  timeout: 1m
nodes:
  hello:
    command: ["echo", "hello from a sandbox"]
  facts:
    runtime: python
    needs: [hello]
    command: ["python", "-c", "import json, os; print(json.dumps({'uid': os.getuid()}))"]
    outputs:
      parse: {format: json}          # the last JSON line of stdout becomes outputs
  files:
    needs: [facts]
    when: nodes.facts.outputs.uid != 0   # a CEL condition on another node's outputs
    # This directory, read-only (the policy grants it): what a check of your project sees.
    mounts: [{source: ., target: /workspace, mode: ro}]
    command: "ls -la /workspace"
"""

POLICY = """\
# A starter policy: what workflows may be granted. The operator chooses it (--policy),
# never the workflow. This one is the shipped default: shell, python and node under runc,
# no network, no secrets, read-only mounts under the workflow's directory. The shipped
# `--policy ci` (gVisor) and `--policy agents` (claude, codex) need no file.
version: 1
name: starter
runtimes: [shell, python, node]
images: ["sandbox-orch/shell", "sandbox-orch/python", "sandbox-orch/node"]
isolation:
  oci_runtime: runc                # runsc: gVisor, a stronger boundary (sandbox-orch setup)
  user: "10001:10001"
  tmpfs: {/tmp: 64m}
network:
  egress: []                       # e.g. ["pypi.org:443"]
mounts:
  - {source: ., modes: [ro]}
env:
  deny: []
secrets: {}
limits: {cpus: 2, memory: 2g, pids: 512, timeout: 30m, output: 16m,
         artifacts: 1g, artifacts_total: 4g}
defaults: {cpus: 1, memory: 512m, pids: 256, timeout: 10m}
"""

EXISTS = "exists; not overwritten (--force overwrites)"
# File name -> (text, what it is, as init reports it).
FILES = {
    "workflow.yaml": (WORKFLOW, "a starter workflow"),
    "policy.yaml": (POLICY, "a starter policy, the grants that workflow needs"),
}


def write_starter(directory: Path, *, force: bool = False) -> list[tuple[Path, str]]:
    """Write the starter files into `directory` (created if missing); returns each path
    with what it is. Refuses, writing nothing, when one exists and `force` is off."""
    paths = {name: directory / name for name in FILES}
    taken = [p for p in paths.values() if os.path.lexists(p)]
    if taken and not force:
        raise InputRefused([Problem(str(p), None, "", EXISTS) for p in taken])
    if os.path.lexists(directory) and not directory.is_dir():
        raise _refused(directory, "not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, path in paths.items():
            _write(path, FILES[name][0], replace=force)
    except FileExistsError as error:  # created meanwhile: still never overwritten
        raise _refused(Path(error.filename), EXISTS) from None
    except OSError as error:
        raise _refused(directory, f"cannot write: {error.strerror}") from None
    return [(path, FILES[name][1]) for name, path in paths.items()]


def _refused(path: Path, message: str) -> InputRefused:
    return InputRefused([Problem(str(path), None, "", message)])


def _write(path: Path, text: str, *, replace: bool) -> None:
    """Exclusive create, or (forced) a new file renamed over the old: never written
    through a symlink planted where the file goes."""
    if not replace:
        with open(path, "x", encoding="utf-8") as file:
            file.write(text)
        return
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
