"""`single claude|codex --continue RUN_ID`: the agent's session, kept with the run that
had it, continued in a new sandbox.

The agent's config directory (Claude Code: ~/.claude; Codex: $CODEX_HOME; HOME is the
tmpfs /tmp in the images) is a scratch directory of the run's, bound into the sandbox;
nothing of the host's home ever is. After the run only the transcripts are kept (Claude:
projects/, Codex: sessions/), never the rest of the config (~/.claude.json may hold API
key fragments), each file through the run store's scrub (no secret this process read
survives in it), bounded in size and count, regular files only (the agent wrote them: a
link it planted is never followed). A continued run gets a copy of those transcripts in
its own scratch directory, never the store itself, and runs the CLI's own resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from ..mounts import BindMount
from ..planning import Plan
from ..policy import POLICIES_DIR, Policy, shipped_policies
from ..redaction import scrub, scrub_json
from ..sandbox import Sandbox
from ..store import run_dir, write_text
from .request import NODE, refused
from .workspace import hand_to_sandbox_user

KEPT = "session"  # run_dir(RUN_ID)/session/RUNTIME/...: the kept transcripts
MAX_FILES = 10_000  # more than any real session writes; past it nothing is kept
RUN_ID = re.compile(r"\d{8}t\d{6}-[0-9a-f]{6}")  # store.new_run_id: never a path


@dataclass(frozen=True)
class AgentState:
    home: str  # the agent's config directory in the sandbox
    transcripts: str  # inside it: the part that is kept
    resume: tuple[str, ...]  # the CLI's arguments that continue its latest session here


STATES = {
    "claude": AgentState("/tmp/.claude", "projects", ("--continue",)),
    # Codex's `exec resume --last`: its newest session recorded in this directory.
    "codex": AgentState("/tmp/.codex", "sessions", ("resume", "--last")),
}


def kept_session(run_id: str, runtime: str) -> Path:
    """The transcripts an earlier run of `runtime` kept, or InputRefused saying why not."""
    if runtime not in STATES:
        raise refused("--continue", f"runtime {runtime!r} has no agent session to continue")
    if not RUN_ID.fullmatch(run_id) or not (run_dir(run_id) / "results.json").is_file():
        store = run_dir("x").parent
        raise refused("--continue", f"no run {run_id!r} in the run store ({store})")
    kept = run_dir(run_id) / KEPT
    other = sorted(p.name for p in kept.iterdir() if p.name != runtime) if kept.is_dir() else []
    if not (kept / runtime).is_dir():
        why = f"ran {other[0]}, not {runtime}" if other else f"kept no {runtime} session"
        raise refused("--continue", f"run {run_id} {why}")
    return kept / runtime


def continue_hint(
    run_id: str, runtime: str, policy: Path | None = None, interactive: bool = False
) -> str | None:
    """What to type to continue the session the run kept, if it kept one: with the
    policy given by --policy (else the default would refuse the agent), its shipped name
    or its absolute path; a session is continued as one (no --prompt)."""
    if not (run_dir(run_id) / KEPT / runtime).is_dir():
        return None
    command = f"sandbox-orch single {runtime} --continue {run_id}"
    if policy is not None:
        shipped = policy.parent == POLICIES_DIR and policy.stem in shipped_policies()
        command += f" --policy {policy.stem if shipped else shlex.quote(str(policy.resolve()))}"
    return f"session kept: continue with {command}{'' if interactive else ' --prompt ...'}"


def resumed(plan: Plan, runtime: str) -> Plan:
    """The plan with the node's CLI resuming its session: the resume arguments go just
    before the `--` that ends the options when a prompt follows it, else last."""
    node = plan.nodes[NODE]
    prompted = len(node.argv) >= 2 and node.argv[-2] == "--"
    at = len(node.argv) - 2 if prompted else len(node.argv)
    extra = STATES[runtime].resume
    argv = (*node.argv[:at], *extra, *node.argv[at:])
    prompt = node.prompt
    if prompt is not None and prompt.slot >= at:
        prompt = dataclasses.replace(prompt, slot=prompt.slot + len(extra))
    changed = dataclasses.replace(node, argv=argv, prompt=prompt)
    return dataclasses.replace(plan, nodes={**plan.nodes, NODE: changed})


def prepare_state(runtime: str, run_id: str, policy: Policy, kept: Path | None) -> Path | None:
    """The scratch config directory an agent gets (with a copy of the transcripts it
    continues), or None for a runtime that is no agent."""
    state = STATES.get(runtime)
    if state is None:
        return None
    scratch = run_dir(run_id) / "single" / "state"
    scratch.mkdir(parents=True)
    if kept is not None:  # a copy: the node never sees the store
        shutil.copytree(kept, scratch / state.transcripts, symlinks=True)
    hand_to_sandbox_user(scratch, policy.user)
    return scratch


def with_state(sandbox: Sandbox, runtime: str, scratch: Path | None) -> Sandbox:
    if scratch is None:
        return sandbox
    # Resolved, as admitted sources are: checked again to go through no symlink at start.
    mount = BindMount(os.path.realpath(scratch), STATES[runtime].home, read_only=False)
    return dataclasses.replace(sandbox, mounts=(*sandbox.mounts, mount))


def keep_state(scratch: Path | None, runtime: str, run_id: str, limit: int) -> str | None:
    """Keep the transcripts the agent wrote with the run, scrubbed; None when kept, else
    why not (nothing written, or more than `limit` bytes or MAX_FILES entries)."""
    if scratch is None:
        return "no agent"
    root = scratch / STATES[runtime].transcripts
    files = _regular_files(root)
    if files is None or sum(size for _, size in files) > limit:
        return f"the session is larger than {limit} bytes or {MAX_FILES} entries"
    if not files:
        return "the agent recorded no session"
    target = run_dir(run_id) / KEPT / runtime
    for path, _ in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        lines = text.splitlines(keepends=True)
        write_text(target / path.relative_to(root), "".join(map(_scrubbed, lines)))
    return None


def _scrubbed(line: str) -> str:
    """A transcript line with every secret this process read redacted, still JSON when it
    was (scrub_json); a line left as it was when there is nothing to redact."""
    scrubbed = scrub(line)
    if scrubbed == line:
        return line
    try:
        return scrub_json(json.loads(line), separators=(",", ":")) + "\n"
    except ValueError:
        return scrubbed  # not JSON: as text (write_text scrubs again anyway)


def _regular_files(root: Path) -> list[tuple[Path, int]] | None:
    """Regular files below `root` with their sizes (links and anything else skipped), or
    None past MAX_FILES entries."""
    found: list[tuple[Path, int]] = []
    if root.is_symlink() or not root.is_dir():
        return found
    seen = 0
    for directory, dirs, names in os.walk(root):  # never follows links to directories
        seen += len(dirs) + len(names)
        if seen > MAX_FILES:
            return None
        for name in names:
            info = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(info.st_mode):
                found.append((Path(directory) / name, info.st_size))
    return found
