"""The loaders refuse every document of tests/corpus/refused, each problem on its line,
naming its field (test_editor_schema.py checks the editors' schemas on the same files)."""

from __future__ import annotations

import pytest

from sandbox_orch.errors import InputRefused
from sandbox_orch.loading import load_workflow
from sandbox_orch.planning import make_plan
from sandbox_orch.policy import load_policy
from tests.corpus import Refused, refused


def problems(kind: str, case: Refused) -> list:
    """What `validate` reports for the file (starting nothing, no policy needed)."""
    with pytest.raises(InputRefused) as caught:
        if kind == "workflow":
            make_plan(*load_workflow(case.path))
        else:
            load_policy(case.path)
    return caught.value.problems


@pytest.mark.parametrize("kind", ["workflow", "policy"])
def test_the_corpus_has_both_kinds(kind):
    assert len(refused(kind)) >= 20


CASES = [(kind, case) for kind in ("workflow", "policy") for case in refused(kind)]


@pytest.mark.parametrize(("kind", "case"), CASES, ids=[f"{k}/{c.id}" for k, c in CASES])
def test_the_loader_refuses_each_problem_where_it_is(kind, case):
    found = problems(kind, case)
    assert all(p.file == str(case.path) for p in found)
    # Exactly the problems listed: one line each, nothing more (and never a traceback).
    assert len(found) == len(case.expected), [str(p) for p in found]
    for expected in case.expected:
        assert any(expected.found_in(p) for p in found), (expected, [str(p) for p in found])
