"""`single`'s workspace copy against a plain `cp -a` of the same tree.

    .venv/bin/python bench/workspace_copy.py [--files N] [--mb MB] [--venv-files N]
        [--venv-mb MB] [--pairs P] [--strict]

Builds, in a temporary directory, a git repository of FILES files (default 5,000) holding
MB megabytes (default 100: mostly ~16 KiB sources, a few 2.5 MB binaries), committed,
plus an ignored `.venv` (default 10,000 files, 200 MB) and one untracked file. Then, in
one process, interleaved A, B, A, B, ... (1 warm-up pair, then PAIRS measured pairs):

A  sandbox-orch's copy end to end: `copy_workspace` (find the repository, select what git
   would keep, check the size, copy once with modes and mtimes kept and the copy handed
   to the sandbox user, hash while copying, build the scratch baseline index), with
   SANDBOX_ORCH_HOME in the temporary directory and the default policy. Also timed
   (reported, not A's): `changes` on the untouched copy, what the end of a run costs.
B  `cp -a TREE DEST` as a subprocess: the whole tree (the .venv and .git too: what a
   plain copy does).

The page cache is written back (`os.sync`) before each timed step, so one side's dirty
pages do not slow the other's. Copies are kept until the end: on this machine's ext4
(no journal), allocating an inode skips the ones deleted in the last 5-10 s
(`recently_deleted` in the kernel's ext4/ialloc.c), so deleting 15,000 files between
steps made the next step's every file creation cost about 1 ms (measured with perf).

Target: A's median under 2 s. The ratio A / B (median of per-pair ratios) is printed.
Exit status: 0, or 1 when --strict is given and the target is missed, or 2 when the
benchmark itself broke (a copy missed a file or held an ignored one).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `sandbox_orch` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median, ms, p90, run_main, verdict

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 2.0
BIG = 20  # binaries among the files, 2.5 MB each by default


def build_tree(root: Path, files: int, mb: int, venv_files: int, venv_mb: int) -> None:
    """A committed repository with an ignored .venv and an untracked file."""
    rnd = random.Random(12)
    pool = os.urandom(4 << 20)
    big_size = min(mb * 10**6 // 4 // BIG, 4 << 20)
    small_size = (mb * 10**6 - BIG * big_size) // max(1, files - BIG)

    def write(path: Path, size: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        start = rnd.randrange(0, len(pool) - size)
        path.write_bytes(pool[start : start + size])

    for i in range(files - BIG - 2):
        write(root / "src" / f"pkg{i % 64}" / f"mod{i}.py", small_size)
    for i in range(BIG):
        write(root / "assets" / f"blob{i}.bin", big_size)
    (root / ".gitignore").write_text(".venv/\n__pycache__/\n")
    venv_size = venv_mb * 10**6 // max(1, venv_files)
    for i in range(venv_files):
        write(root / ".venv" / "lib" / f"site{i % 300}" / f"m{i}.py", venv_size)
    git = ["git", "-C", str(root), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "bench tree"], check=True)
    (root / "NOTES.md").write_text("untracked, not ignored: copied\n")


def time_ours(tree: Path, run_id: str, policy: object) -> tuple[float, float, int]:
    from sandbox_orch.single.changes import changes
    from sandbox_orch.single.workspace import copy_workspace

    os.sync()
    began = time.perf_counter()
    copy = copy_workspace(tree, run_id, policy)  # type: ignore[arg-type]
    took = time.perf_counter() - began
    os.sync()
    began = time.perf_counter()
    patch = changes(copy)
    diffed = time.perf_counter() - began
    if patch:
        raise RuntimeError(f"an untouched copy has changes: {patch[:200]!r}")
    count = sum(len(f) for _, _, f in os.walk(copy.working))
    if (copy.working / ".venv").exists() or not (copy.working / "NOTES.md").exists():
        raise RuntimeError("the copy holds the ignored .venv or lacks the untracked file")
    return took, diffed, count


def time_cp(tree: Path, dest: Path) -> float:
    os.sync()
    began = time.perf_counter()
    subprocess.run(["cp", "-a", str(tree), str(dest)], check=True)
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5000, help="files in the repository")
    parser.add_argument("--mb", type=int, default=100, help="their total size in MB")
    parser.add_argument("--venv-files", type=int, default=10000, help="files in .venv")
    parser.add_argument("--venv-mb", type=int, default=200, help=".venv's size in MB")
    parser.add_argument("--pairs", type=int, default=5, help="measured pairs (5)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args(argv)

    from sandbox_orch.policy import load_policy

    policy = load_policy(REPO / "policies" / "default.yaml")
    with tempfile.TemporaryDirectory(prefix="bench-copy-") as scratch:
        base = Path(scratch)
        os.environ["SANDBOX_ORCH_HOME"] = str(base / "home")
        tree = base / "tree"
        began = time.perf_counter()
        build_tree(tree, args.files, args.mb, args.venv_files, args.venv_mb)
        built = time.perf_counter() - began
        venv = f"ignored .venv {args.venv_files} files, {args.venv_mb} MB"
        print(f"tree built in {built:.1f} s: {args.files} files, {args.mb} MB, {venv}")
        ours, diffs, cps, ratios, copied = [], [], [], [], 0
        for i in range(args.pairs + 1):
            a, d, copied = time_ours(tree, f"bench-{i}", policy)
            b = time_cp(tree, base / f"cp-{i}")
            if i == 0:
                continue  # warm-up: the page cache holds the tree from here on
            ours.append(a)
            diffs.append(d)
            cps.append(b)
            ratios.append(a / b)
    passed = median(ours) < TARGET_S
    print(f"files copied by ours: {copied} (cp -a copies the .venv and .git too)")
    print(f"A ours copy   median {ms(median(ours)):8.1f} ms  p90 {ms(p90(ours)):8.1f} ms")
    print(f"  (changes on the untouched copy: median {ms(median(diffs)):.1f} ms, not in A)")
    print(f"B cp -a       median {ms(median(cps)):8.1f} ms  p90 {ms(p90(cps)):8.1f} ms")
    print(
        f"ratio A/B     median {median(ratios):.2f}  (of medians {median(ours) / median(cps):.2f})"
    )
    print(f"target: A under {TARGET_S:.0f} s: {verdict(passed)}")
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    run_main(main)
