"""Build plans and admitted sandboxes from YAML text, without files or an engine."""

from __future__ import annotations

import asyncio
import copy
import functools
import os
import textwrap
from collections.abc import Callable
from typing import Any

from sandbox_orch.admission import admit
from sandbox_orch.agents.spending import Spending
from sandbox_orch.backend.base import ContainerSpec
from sandbox_orch.backend.memory import MemoryBackend, Outcome
from sandbox_orch.bounded.evaluator import Evaluator
from sandbox_orch.execution import NodeRunner
from sandbox_orch.loading import validate_document
from sandbox_orch.planning import Plan, make_plan
from sandbox_orch.policy import DEFAULT_POLICY, Policy, load_policy
from sandbox_orch.sandbox import Sandbox
from sandbox_orch.scheduler import Scheduler
from sandbox_orch.workflow import Workflow
from sandbox_orch.yamlsafe import load_text


def plan_of(text: str, path: str = "wf.yaml") -> Plan:
    document = load_text(textwrap.dedent(text), path)
    return make_plan(document, validate_document(document, Workflow))


def default_policy() -> Policy:
    """The shipped default policy, a fresh copy each call. Parsed once per process and
    mutant: a thousand tests admit under it, and parsing it (YAML, then cerberus) was 6
    of the 8 seconds the admission tests took, and so most of what each of admission's
    mutants costs in `make mutation`.

    Mutation testing must see what it saw before: keyed by the mutant (mutmut's
    MUTANT_UNDER_TEST), a mutant's tests parse it under that mutant, never reuse a parse
    made before (by a module's import in mutmut's fork server); and in mutmut's stats
    run, which records the mutated functions each test calls, every test parses it."""
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if mutant == "stats":
        return load_policy(DEFAULT_POLICY)
    return copy.deepcopy(_parsed_default_policy(mutant))


@functools.cache
def _parsed_default_policy(mutant: str) -> Policy:  # `mutant`: only the cache's key
    return load_policy(DEFAULT_POLICY)


def admitted(text: str, policy: Policy | None = None) -> tuple[Plan, dict[str, Sandbox]]:
    plan = plan_of(text)
    return plan, admit(plan, policy or default_policy())


def run_on_memory(
    plan: Plan,
    sandboxes: dict[str, Sandbox],
    script: Callable[[ContainerSpec], Outcome],
    *,
    max_parallel: int = 4,
    fail_fast: bool | None = None,
    evaluator: Evaluator | None = None,
    spending: Spending | None = None,
    interrupt_when: Callable[[MemoryBackend], bool] | None = None,
    hold: int = 0,
    backend: MemoryBackend | None = None,
) -> tuple[Scheduler, dict[str, Any], MemoryBackend, list[Any]]:
    """Run a plan on the in-memory backend, `script(spec)` giving each container's outcome;
    `interrupt_when(backend)`, asked after each start, interrupts the run when true;
    `hold`: how many nodes' containers may be prepared ahead of time."""
    backend = backend or MemoryBackend(script)
    runner = NodeRunner(backend, "test-run", "owner", evaluator=evaluator, spending=spending)
    events: list[Any] = []
    scheduler = Scheduler(
        plan,
        sandboxes,
        runner.attempt,
        events.append,
        max_parallel=max_parallel,
        fail_fast=fail_fast,
        evaluator=evaluator,
        spending=spending,
        ahead=runner,
        hold=hold,
    )

    async def go() -> dict[str, Any]:
        stop = asyncio.Event()
        if interrupt_when is not None:
            backend_start = backend.start

            async def start_then_maybe_interrupt(container_id: str, sink: Any) -> None:
                await backend_start(container_id, sink)
                if interrupt_when(backend):
                    stop.set()

            backend.start = start_then_maybe_interrupt  # type: ignore[method-assign]
        records = await scheduler.run(stop)
        await runner.close()
        if evaluator is not None:
            await evaluator.close()
        return records

    return scheduler, asyncio.run(go()), backend, events
