"""`make mutation`: mutate the security-critical modules, run the unit tests against each
mutant (mutmut), and fail when a mutant survives that equivalent.txt does not list.

A listed mutant is named by its function and the mutated line, not by mutmut's number
(which shifts whenever a function gains a mutant), so the list survives unrelated edits.
Entries that match no surviving mutant are reported as stale (a warning: a refactor or
a new test may have made them obsolete; remove them).

Usage: python tests/mutation/check.py [--no-run] [PATTERN ...]
  PATTERN  mutmut name patterns, e.g. "sandbox_orch.secrets*" (default: all configured)
  --no-run check the results of the last run only
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
EQUIVALENT = HERE / "equivalent.txt"
# Verdicts that mean a test noticed the mutant.
CAUGHT = {"killed", "timeout", "segfault", "caught by type check"}
_NUMBER = re.compile(r"__mutmut_\d+$")


@dataclass(frozen=True)
class Entry:
    function: str
    change: str
    reason: str
    line: int


def parse_equivalent(text: str) -> list[Entry]:
    """Blocks of `mutant:`, `change:` and `reason:` lines, separated by blank lines;
    `#` lines are comments. Every field is required: an unexplained entry is an error."""
    entries, block, start = [], {}, 0
    for number, raw in enumerate([*text.splitlines(), ""], start=1):
        line = raw.strip()
        if line.startswith("#"):
            continue
        if not line:
            if block:
                missing = {"mutant", "change", "reason"} - block.keys()
                if missing or not all(block.values()):
                    raise ValueError(f"{EQUIVALENT.name}:{start}: needs mutant, change, reason")
                entries.append(Entry(block["mutant"], block["change"], block["reason"], start))
            block = {}
            continue
        key, sep, value = line.partition(":")
        if not sep or key not in ("mutant", "change", "reason"):
            raise ValueError(
                f"{EQUIVALENT.name}:{number}: expected 'mutant:', 'change:', 'reason:'"
            )
        start = start if block else number
        block[key] = " ".join(value.split())
    return entries


def key(name: str, diff: str) -> tuple[str, str]:
    """(function, mutated line): what an entry names."""
    added = [
        line[1:]
        for line in diff.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return _NUMBER.sub("", name), " ".join(" ".join(added).split())


def survivors() -> dict[str, tuple[str, str]]:
    """Every mutant no test caught: name -> (verdict, diff)."""
    os.chdir(REPO)
    from mutmut.__main__ import SourceFileMutationData, get_diff_for_mutant, walk_mutatable_files
    from mutmut.stats import status_by_exit_code

    found = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, code in data.exit_code_by_key.items():
            verdict = status_by_exit_code[code]
            if verdict not in CAUGHT:
                found[name] = (verdict, get_diff_for_mutant(name, path=data.path))
    return found


def run_mutmut(patterns: list[str]) -> None:
    mutmut = Path(sys.executable).with_name("mutmut")
    command = [str(mutmut), "run", "--max-children", str(os.cpu_count() or 2), *patterns]
    started = time.monotonic()
    # mutmut prints a progress line per mutant; keep the log short for CI.
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, check=False)
    print(f"mutation: mutmut ran in {time.monotonic() - started:.0f}s (exit {done.returncode})")
    if done.returncode != 0:
        sys.exit(f"mutation: mutmut failed (exit {done.returncode}); run `{' '.join(command)}`")


def main(argv: list[str]) -> int:
    patterns = [a for a in argv if not a.startswith("--")]
    if "--no-run" not in argv:
        run_mutmut(patterns)
    entries = parse_equivalent(EQUIVALENT.read_text(encoding="utf-8"))
    listed = {(e.function, " ".join(e.change.split())): e for e in entries}
    used, unlisted = set(), []
    for name, (verdict, diff) in sorted(survivors().items()):
        found = listed.get(key(name, diff))
        if found is None:
            unlisted.append((name, verdict, diff))
        else:
            used.add((found.function, found.change))
    for entry in entries:
        if (entry.function, entry.change) not in used and not patterns:
            print(f"mutation: stale entry {EQUIVALENT.name}:{entry.line} ({entry.function})")
    for name, verdict, diff in unlisted:
        print(f"\n# {name}: {verdict}\n{diff}")
    if unlisted:
        print(
            f"\nmutation: {len(unlisted)} mutant(s) survived the unit tests; kill each with a "
            f"test, or list it in {EQUIVALENT.relative_to(REPO)} with why it is equivalent"
        )
        return 1
    print(f"mutation: every mutant was caught or is listed as equivalent ({len(used)} listed)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
