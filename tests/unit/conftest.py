"""Mutation testing only (`make mutation`): each mutant's tests run fastest first.

mutmut runs the tests that cover a mutated function with `-x`, in collection order, and
a late killer makes a killed mutant cost as much as a survivor (measured: 110 of
admission's 950 mutants took over 3 s each, most of them spent before the test that
failed). The same tests run in any order, so this changes what a mutant costs, never
whether it is caught. Elsewhere (MUTANT_UNDER_TEST unset, or mutmut's own clean and
stats runs) the order is pytest's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# mutmut runs pytest in mutants/, where it keeps each test's duration from its stats run.
STATS = Path("mutmut-stats.json")
_durations: dict[str, float] | None = None


def pytest_collection_modifyitems(items: list[Any]) -> None:
    global _durations
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return
    if _durations is None:
        try:
            _durations = dict(json.loads(STATS.read_text())["duration_by_test"])
        except (OSError, ValueError, KeyError):
            _durations = {}
    known = _durations
    items.sort(key=lambda item: known.get(item.nodeid, 0.0))
