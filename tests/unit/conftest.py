"""Mutation testing only (`make mutation`): each mutant's tests run fastest first.

mutmut runs the tests that cover a mutated function with `-x`, in collection order, and
a late killer makes a killed mutant cost as much as a survivor (measured: 110 of
admission's 950 mutants took over 3 s each, most of them spent before the test that
failed). The same tests run in any order, so this changes what a mutant costs, never
whether it is caught. Elsewhere (MUTANT_UNDER_TEST unset, or mutmut's own clean and
stats runs) the order is pytest's.

One exception changes what runs: admission's mutants skip the whole-command test files
below. They cover admission only by passing workflows through it and caught none of its
mutants that a faster file does not (checked with full runs with and without them);
they cost a third of admission's mutation time. A mutant left with no test fails the
check as a survivor, so a skip can never pass a mutant silently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# mutmut runs pytest in mutants/, where it keeps each test's duration from its stats run.
STATS = Path("mutmut-stats.json")
_durations: dict[str, float] | None = None
SKIPPED_FOR = {
    "sandbox_orch.admission.": (
        "test_agent_scheduling.py",
        "test_ahead.py",
        "test_k8s_artifacts.py",  # an API emulator's plumbing (the artifacts' own, here)
        "test_preflight.py",
        "test_redaction_run.py",
        "test_review.py",
        "test_single_ahead.py",
        "test_slash_command_check.py",
        "test_zen.py",
    ),
}


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    global _durations
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if "__mutmut_" not in mutant:
        return
    _skip_files(config, items, mutant)
    if _durations is None:
        try:
            _durations = dict(json.loads(STATS.read_text())["duration_by_test"])
        except (OSError, ValueError, KeyError):
            _durations = {}
    known = _durations
    items.sort(key=lambda item: known.get(item.nodeid, 0.0))


def _skip_files(config: Any, items: list[Any], mutant: str) -> None:
    skipped = next(
        (files for prefix, files in SKIPPED_FOR.items() if mutant.startswith(prefix)), ()
    )
    if not skipped:
        return
    dropped = [item for item in items if item.path.name in skipped]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item.path.name not in skipped]
