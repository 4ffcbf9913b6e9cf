"""How soon `single claude` is ready: from the command's start to the agent's first
request at the mock model API, on a workspace whose copy takes about a second.

    .venv/bin/python bench/single_ready.py [--runs N] [--files N] [--mb MB]
        [--checkout DIR ...]

Needs the engine and the images (the claude image, the mock from tests/mockapi over TLS,
the shipped agents policy pointed at it under runc, as the agent tests use it). Builds
the workspace as bench/workspace_copy.py does (a committed git repository), times the
copy alone in this process, then runs `python -m sandbox_orch single claude` as a whole
process from each --checkout (default: this one; give another checkout of the project to
compare, e.g. the commit before `single` prepared its container during the copy),
interleaved (ABBA), RUNS times each. Prints each checkout's median time to the first request,
and that time minus the copy's: what the run adds after its copy (the container's
create and start, when it is not overlapped; the agent's own start-up in any case).
Beside it, less noisy: `single shell -- true` in process (a child per checkout), the time
from the call to the copy's end and to the command's go (its container started, or its
held container released), and the go's lag after the copy's end.
Not in `make bench`: a figure to compare checkouts by, with no target of its own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench`, `tests`, `sandbox_orch` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median, ms, run_main
from bench.workspace_copy import build_tree

REPO = Path(__file__).resolve().parent.parent


def copy_time(tree: Path, run_id: str) -> float:
    from sandbox_orch.policy import load_policy
    from sandbox_orch.single.workspace import copy_workspace, discard_copy

    policy = load_policy(REPO / "policies" / "agents.yaml")
    began = time.perf_counter()
    copy = copy_workspace(tree, run_id, policy)
    took = time.perf_counter() - began
    discard_copy(copy)
    return took


def first_request(checkout: Path, tree: Path, policy: Path, mock: str, keys: dict) -> float:
    """Seconds from the command's start to the mock's first request from its agent."""
    from tests.integration.conftest import mock_requests

    before = len(mock_requests(mock))
    env = {**os.environ, **keys, "PYTHONPATH": str(checkout)}
    began = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox_orch", "single", "claude", "--workspace", str(tree),
         "--policy", str(policy), "--ci", "--prompt", "say hello"],
        capture_output=True, text=True, env=env, cwd=checkout, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        said = [line for line in (proc.stdout + proc.stderr).splitlines() if "copying" not in line]
        raise RuntimeError(f"single failed ({proc.returncode}): " + "\n".join(said[-30:]))
    requests = mock_requests(mock)[before:]
    return min(r["received"] for r in requests) - began


# Run in a child process from a checkout: `single shell -- true` on the tree, in process,
# timing from the call to the copy's end and to the command's go (its container's start,
# or the release of its held container). Prints "COPIED GO" in seconds.
TO_GO = """
import asyncio, json, sys, time
from pathlib import Path
from sandbox_orch.engine import docker_backend
from sandbox_orch.policy import load_policy
from sandbox_orch.single import SingleRequest, run_single
from sandbox_orch.single import workspace
from sandbox_orch.store import new_run_id

marks = {}
stamps = workspace._stamps
def timed_stamps(*args):
    found = stamps(*args)
    marks["copied"] = time.perf_counter()
    return found
workspace._stamps = timed_stamps

async def main():
    backend = docker_backend()
    start, release = backend.start, backend.release
    async def started(cid, sink):
        await start(cid, sink)
        marks.setdefault("go", time.perf_counter())  # not held: its command runs now
    async def released(cid):
        marks.pop("go", None)  # held until now
        await release(cid)
        marks["go"] = time.perf_counter()
    backend.start, backend.release = started, released
    request = SingleRequest("shell", Path(sys.argv[1]), args=("true",))
    policy = load_policy(Path(sys.argv[2]))
    began = time.perf_counter()
    try:
        await run_single(request, policy, backend, new_run_id(), lambda e: None, asyncio.Event())
    finally:
        await backend.close()
    print(marks["copied"] - began, marks["go"] - began)

asyncio.run(main())
"""


def to_go(checkout: Path, tree: Path) -> tuple[float, float]:
    """Seconds from run_single's call to the copy's end and to the command's go."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    policy = checkout / "policies" / "default.yaml"
    proc = subprocess.run(
        [sys.executable, "-c", TO_GO, str(tree), str(policy)],
        capture_output=True, text=True, env=env, cwd=checkout, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"to_go failed ({proc.returncode}): {proc.stderr[-3000:]}")
    copied, go = (float(x) for x in proc.stdout.split())
    return copied, go


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=1500)
    parser.add_argument("--mb", type=int, default=30)
    parser.add_argument("--checkout", type=Path, action="append", default=None)
    args = parser.parse_args(argv)
    checkouts = [c.resolve() for c in args.checkout or [REPO]]

    import trustme  # noqa: F401  (the TLS mock's certificates: a test dependency)

    from tests.integration.conftest import _tls_mock, for_the_mock

    with tempfile.TemporaryDirectory(prefix="bench-ready-") as scratch:
        base = Path(scratch)
        os.environ["SANDBOX_ORCH_HOME"] = str(base / "home")
        tree = base / "tree"
        build_tree(tree, args.files, args.mb, 10, 1)
        (base / "mock").mkdir()
        proc, mock = _tls_mock(base / "mock")
        try:
            policy = for_the_mock("agents", "runc", mock, base)
            keys = {"ANTHROPIC_API_KEY": "sk-ant-bench", "OPENAI_API_KEY": "sk-openai-bench"}
            copies = [copy_time(tree, f"bench-copy-{i}") for i in range(args.runs)]
            times: dict[Path, list[float]] = {c: [] for c in checkouts}
            gos: dict[Path, list[tuple[float, float]]] = {c: [] for c in checkouts}
            for run in range(args.runs):
                # ABBA: a copy made just after another run removed its copy is slower
                # (ext4 skips recently freed inodes, see workspace_copy.py): each
                # checkout goes first as often as last.
                for checkout in checkouts if run % 2 == 0 else checkouts[::-1]:
                    gos[checkout].append(to_go(checkout, tree))
                    times[checkout].append(first_request(checkout, tree, policy, mock, keys))
        finally:
            proc.kill()
            proc.wait()
    copy = median(copies)
    print(f"workspace: {args.files} files, {args.mb} MB; its copy alone: median {ms(copy):.0f} ms")
    for checkout, found in times.items():
        took = median(found)
        print(f"{checkout}: first request after median {ms(took):.0f} ms "
              f"(runs: {', '.join(f'{ms(t):.0f}' for t in found)}); "
              f"minus the copy: {ms(took - copy):.0f} ms")  # fmt: skip
        copied = median([c for c, _ in gos[checkout]])
        go = median([g for _, g in gos[checkout]])
        lag = median([g - c for c, g in gos[checkout]])
        print(f"  single shell, in process: copy done after median {ms(copied):.0f} ms, "
              f"command's go after {ms(go):.0f} ms; go after the copy's end: median "
              f"{ms(lag):.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    run_main(main)
