"""Scheduler overhead per node on large DAGs, with no engine at all.

    .venv/bin/python bench/scheduler_overhead.py [--sizes 1000 10000] [--repeats R]
        [--warmup W] [--runner-repeats R] [--when-sizes N ...] [--ahead N] [--strict]
        [--profile]

Three shapes of DAG, each at two sizes (1,000 and 10,000 nodes by default):

wide    no edges: every node is ready at once
chain   each node needs the previous one
random  each node needs up to 3 random earlier nodes (seeded, so every run is the same)

Only `Scheduler.run` is timed (time.perf_counter, inside the event loop; a fresh
Scheduler and a gc.collect() before each run); building the plan and admitting it are
not. The runs are interleaved: each repeat runs every case at both sizes, so load from
other work on the machine hits both sizes alike. Two attempt functions are measured:

scheduler  an attempt that returns a finished, succeeded `Attempt` at once: no container,
           no backend. What is left is the scheduler itself (graphlib, tasks, asyncio.wait,
           judging, events). The targets apply to this mode.
runner     `NodeRunner.attempt` on a `MemoryBackend`: the full runner path (spec, ledger,
           create, start, wait, remove, output capture) without an engine. For information;
           it is slower, so it runs --runner-repeats times (1 by default), without warm-up.

Every shape runs with max_parallel 4 (the default); the wide shape also runs with 64.
The scheduler runs as `sandbox-orch run` has it by default: it may prepare up to
max_parallel nodes ahead (`--ahead N` sets another bound, 0 none, as before ahead-of-time
containers). In scheduler mode a no-op preparer stands in for NodeRunner, so what is
timed is the scheduler's own deciding (timing/ahead.py); in runner mode the NodeRunner
prepares held containers on the MemoryBackend and releases them.
Workflow files are limited to 1,000 nodes, so the plan is built without the file: the
header is validated as usual, every node with `Node.model_validate`, and the nodes are
put in with `model_copy`; then `make_plan` and `admit` run as usual on a `Document` with
no line numbers. At sizes a file allows, the benchmark checks that this gives the same
graph as loading the equivalent YAML text.

Targets (scheduler mode, judged on the best of the repeats: on a shared machine other
work only ever adds time; the median is printed beside it): at most 50 us per node, and
the time at 10,000 nodes at most 12 times the time at 1,000 (linear growth, plus 20%).

For information, a chain whose every node has `when: success()` is also timed at two
small sizes (scheduler mode): judging a condition costs time per visible ancestor.

Exit status: 0, or 1 when --strict is given and a target is missed, or 2 when the
benchmark itself broke (a node did not succeed).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import itertools
import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `sandbox_orch` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median, ms, peak_rss_mb, profile_text, run_main, verdict
from sandbox_orch.admission import admit
from sandbox_orch.backend.memory import MemoryBackend
from sandbox_orch.execution import Attempt, NodeRunner
from sandbox_orch.loading import validate_document
from sandbox_orch.planning import Plan, PlannedNode, make_plan
from sandbox_orch.policy import DEFAULT_POLICY, load_policy
from sandbox_orch.sandbox import Sandbox
from sandbox_orch.scheduler import DEFAULT_MAX_PARALLEL, AttemptFn, Scheduler
from sandbox_orch.status import NodeStatus
from sandbox_orch.workflow import MAX_NODES, Node, Workflow
from sandbox_orch.yamlsafe import Document, load_text

SHAPES = ("wide", "chain", "random")
WIDE_PARALLEL = 64  # the wide shape is also run with this cap
MAX_NEEDS = 3
SEED = 20240601
TARGET_US_PER_NODE = 50.0
TARGET_RATIO = 12.0  # for the default 10x step in size; scaled for other --sizes
MODES = ("scheduler", "runner")
WHEN = "success()"  # the information-only case: every node of a chain has this condition
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


# -- the DAGs ---------------------------------------------------------------------------
def node_name(index: int) -> str:
    return f"n{index:05d}"


def workflow_data(size: int, shape: str, seed: int = SEED, when: str | None = None) -> dict:
    """Plain workflow data (what a YAML file would hold) for one DAG; `when`, if given,
    is every node's condition."""
    rng = random.Random(seed)
    nodes: dict[str, dict[str, Any]] = {}
    for i in range(size):
        if shape == "wide" or i == 0:
            needs: list[str] = []
        elif shape == "chain":
            needs = [node_name(i - 1)]
        else:  # random: up to MAX_NEEDS distinct earlier nodes
            picked = rng.sample(range(i), rng.randint(0, min(MAX_NEEDS, i)))
            needs = [node_name(j) for j in sorted(picked)]
        nodes[node_name(i)] = {"runtime": "shell", "command": ["true"], "needs": needs}
        if when is not None:
            nodes[node_name(i)]["when"] = when
    return {"version": 1, "name": f"bench-scheduler-{shape}-{size}", "nodes": nodes}


def plan_of(data: dict[str, Any]) -> Plan:
    """make_plan without the file's 1,000-node limit (everything else validated as usual)."""
    first = dict(itertools.islice(data["nodes"].items(), 1))
    header = Workflow.model_validate({**data, "nodes": first})
    nodes = {name: Node.model_validate(fields) for name, fields in data["nodes"].items()}
    workflow = header.model_copy(update={"nodes": nodes})
    return make_plan(Document("generated.yaml", data, lines={}), workflow)


def yaml_text(data: dict[str, Any]) -> str:
    lines = ["version: 1", f"name: {data['name']}", "nodes:"]
    for name, fields in data["nodes"].items():
        lines += [f"  {name}:", "    runtime: shell", '    command: ["true"]']
        lines.append(f"    needs: [{', '.join(fields['needs'])}]")
        if "when" in fields:
            lines.append(f"    when: {json.dumps(fields['when'])}")
    return "\n".join(lines) + "\n"


def check_against_file(data: dict[str, Any], plan: Plan) -> None:
    """The bypass must plan exactly what loading the same workflow from YAML plans."""
    document = load_text(yaml_text(data), "generated.yaml")
    from_file = make_plan(document, validate_document(document, Workflow))
    graph = {n: [(e.source, e.allow_failure) for e in p.needs] for n, p in plan.nodes.items()}
    expected = {
        n: [(e.source, e.allow_failure) for e in p.needs] for n, p in from_file.nodes.items()
    }
    if graph != expected or list(plan.nodes) != list(from_file.nodes):
        raise RuntimeError(f"the plan built without the file differs for {data['name']}")


# -- the attempt functions ----------------------------------------------------------------
async def instant_attempt(node: PlannedNode, sandbox: Sandbox, number: int) -> Attempt:
    """A finished, succeeded attempt, at once: no container, no backend."""
    return Attempt(number, NodeStatus.SUCCEEDED, _EPOCH, _EPOCH, 0.0, exit_code=0)


class NoPreparer:
    """Scheduler mode's stand-in for NodeRunner's preparing: the scheduler still decides,
    at every start and finish, which nodes to prepare (timing/ahead.py); nothing is made."""

    def prepare(self, node: PlannedNode, sandbox: Sandbox) -> None:
        pass

    def discard(self, name: str) -> None:
        pass


def attempt_fn(mode: str) -> tuple[AttemptFn, NodeRunner | NoPreparer]:
    if mode == "scheduler":
        return instant_attempt, NoPreparer()
    runner = NodeRunner(MemoryBackend(), "bench-scheduler", "bench-owner")
    return runner.attempt, runner


# -- measuring ----------------------------------------------------------------------------
class Case:
    def __init__(self, shape: str, max_parallel: int) -> None:
        self.shape = shape
        self.max_parallel = max_parallel
        self.seconds: dict[tuple[int, str], list[float]] = {}  # (size, mode) -> repeats

    @property
    def label(self) -> str:
        return f"{self.shape}/{self.max_parallel}"


async def _timed_run(scheduler: Scheduler, preparer: Any = None) -> float:
    interrupt = asyncio.Event()
    began = time.perf_counter()
    records = await scheduler.run(interrupt)
    took = time.perf_counter() - began
    if isinstance(preparer, NodeRunner):  # its background removals, untimed (as run_plan)
        await preparer.close()
    bad = [r.name for r in records.values() if r.status != NodeStatus.SUCCEEDED]
    if bad or len(records) != len(scheduler.plan.nodes):
        raise RuntimeError(f"{len(bad)} node(s) did not succeed, e.g. {bad[:3]}")
    return took


def run_once(
    runner: asyncio.Runner,
    plan: Plan,
    sandboxes: dict[str, Sandbox],
    mode: str,
    max_parallel: int,
    ahead: int | None = None,
) -> float:
    attempt, preparer = attempt_fn(mode)
    # As `sandbox-orch run` does by default: up to --max-parallel containers prepared ahead
    # (--ahead 0 measures the scheduler without that bookkeeping).
    hold = max_parallel if ahead is None else ahead
    scheduler = Scheduler(
        plan, sandboxes, attempt, _no_emit, max_parallel=max_parallel, ahead=preparer, hold=hold
    )
    gc.collect()  # garbage of the previous repeat is not this one's cost
    return runner.run(_timed_run(scheduler, preparer))


def _no_emit(_event: object) -> None:
    pass


def measure(
    args: argparse.Namespace,
) -> tuple[list[Case], dict[str, float], dict[int, list[float]]]:
    """Every plan is built first; then the runs are interleaved (each repeat runs every
    case at every size), so load from other work on the machine hits both sizes alike."""
    policy = load_policy(DEFAULT_POLICY)
    cases = [Case(shape, DEFAULT_MAX_PARALLEL) for shape in SHAPES]
    cases.insert(1, Case("wide", WIDE_PARALLEL))
    build_s: dict[str, float] = {}
    plans: dict[tuple[str, int], tuple[Plan, dict[str, Sandbox]]] = {}
    for size in args.sizes:
        for shape in SHAPES:
            began = time.perf_counter()
            data = workflow_data(size, shape)
            plan = plan_of(data)
            plans[(shape, size)] = (plan, admit(plan, policy))
            build_s[f"{shape}/{size}"] = time.perf_counter() - began
            if size <= MAX_NODES:
                check_against_file(data, plan)
    # The runner mode is for information, and slower: its own repeats, no warm-up.
    rounds = [("scheduler", False)] * args.warmup + [("scheduler", True)] * args.repeats
    rounds += [("runner", True)] * args.runner_repeats
    with asyncio.Runner() as runner:
        for mode, keep in rounds:
            for case in cases:
                for size in args.sizes:
                    plan, sandboxes = plans[(case.shape, size)]
                    took = run_once(runner, plan, sandboxes, mode, case.max_parallel, args.ahead)
                    if keep:
                        case.seconds.setdefault((size, mode), []).append(took)
        plans.clear()
        when_chain: dict[int, list[float]] = {}
        for size in args.when_sizes:
            data = workflow_data(size, "chain", when=WHEN)
            plan = plan_of(data)
            sandboxes = admit(plan, policy)
            if size <= MAX_NODES:
                check_against_file(data, plan)
            when_chain[size] = [
                run_once(runner, plan, sandboxes, "scheduler", DEFAULT_MAX_PARALLEL, args.ahead)
                for _ in range(min(args.repeats, 3))
            ]
    return cases, build_s, when_chain


def profile(args: argparse.Namespace, cases: list[Case]) -> str:
    """cProfile of one scheduler-mode run per case at the largest size (not in the figures)."""
    policy = load_policy(DEFAULT_POLICY)
    size = max(args.sizes)
    out = []
    with asyncio.Runner() as runner:
        for case in cases:
            plan = plan_of(workflow_data(size, case.shape))
            sandboxes = admit(plan, policy)
            scheduler = Scheduler(
                plan, sandboxes, instant_attempt, _no_emit, max_parallel=case.max_parallel
            )
            gc.collect()
            profiler = cProfile.Profile()
            profiler.enable()
            runner.run(_timed_run(scheduler))
            profiler.disable()
            out.append(f"--- profile: {case.label}, {size} nodes, scheduler mode ---")
            out.append(profile_text(profiler, limit=args.profile_lines))
    return "\n".join(out)


# -- figures ------------------------------------------------------------------------------
def ratio_target(small: int, large: int) -> float:
    """TARGET_RATIO for 1,000 -> 10,000; the same 20% allowance over linear otherwise."""
    return round(TARGET_RATIO * (large / small) / 10, 2)


def us_per_node(seconds: float, size: int) -> float:
    return round(seconds / size * 1e6, 2)


def _figures(repeats: list[float], size: int) -> dict[str, float] | None:
    if not repeats:
        return None
    return {
        "best_ms": ms(min(repeats)),
        "median_ms": ms(median(repeats)),
        "best_us_per_node": us_per_node(min(repeats), size),
        "median_us_per_node": us_per_node(median(repeats), size),
    }


def _ratio(large: list[float], small: list[float], pick: Any) -> float | None:
    return round(pick(large) / pick(small), 2) if large and small else None


def summarise(
    cases: list[Case],
    build_s: dict[str, float],
    when_chain: dict[int, list[float]],
    args: argparse.Namespace,
) -> dict:
    small, large = min(args.sizes), max(args.sizes)
    out_cases = []
    for case in cases:
        row: dict[str, Any] = {"shape": case.shape, "max_parallel": case.max_parallel}
        for mode in MODES:
            for size in args.sizes:
                row[f"{mode}_{size}"] = _figures(case.seconds.get((size, mode), []), size)
            large_s = case.seconds.get((large, mode), [])
            small_s = case.seconds.get((small, mode), [])
            row[f"{mode}_ratio"] = _ratio(large_s, small_s, min)
            row[f"{mode}_ratio_of_medians"] = _ratio(large_s, small_s, median)
        worst_us = max(row[f"scheduler_{size}"]["best_us_per_node"] for size in args.sizes)
        row["passed_us_per_node"] = worst_us <= TARGET_US_PER_NODE
        row["passed_ratio"] = row["scheduler_ratio"] <= ratio_target(small, large)
        out_cases.append(row)
    when = sorted(when_chain)
    return {
        "bench": "scheduler_overhead",
        "sizes": list(args.sizes),
        "repeats": args.repeats,
        "runner_repeats": args.runner_repeats,
        "warmup": args.warmup,
        "seed": SEED,
        "cases": out_cases,
        "when_chain": {
            "when": WHEN,
            "best_us_per_node": {n: us_per_node(min(when_chain[n]), n) for n in when},
            "ratio": _ratio(when_chain[when[-1]], when_chain[when[0]], min)
            if len(when) > 1
            else None,
        },
        "plan_build_s": {k: round(v, 3) for k, v in build_s.items()},
        "target_us_per_node": TARGET_US_PER_NODE,
        "target_ratio": ratio_target(small, large),
        "passed": all(c["passed_us_per_node"] and c["passed_ratio"] for c in out_cases),
        "peak_rss_mb": peak_rss_mb(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def _cell(figures: dict[str, float] | None) -> str:
    if figures is None:
        return "-"
    return f"{figures['best_us_per_node']:.1f} / {figures['median_us_per_node']:.1f}"


def report(figures: dict) -> None:
    f = figures
    small, large = min(f["sizes"]), max(f["sizes"])
    print(
        f"scheduler overhead: Scheduler.run with no engine, us per node, best / median of"
        f" {f['repeats']} runs after {f['warmup']} warm-up (runner: of {f['runner_repeats']})"
    )
    print(
        "  scheduler = an attempt that returns at once (the targets);"
        " runner = NodeRunner + MemoryBackend (information)"
    )
    for mode in MODES:
        head = f"  {mode + ' mode':18s}"
        head += "".join(f" {format(size, ',') + ' nodes':>19s}" for size in f["sizes"])
        head += f" {'ratio':>7s} {'of medians':>10s}"
        if mode == "scheduler":
            head += f"  {'<=' + format(f['target_us_per_node'], 'g') + ' us':>8s}"
            head += f"  {'ratio<=' + format(f['target_ratio'], 'g'):>9s}"
        print(head)
        for c in f["cases"]:
            line = f"    {c['shape'] + '/' + str(c['max_parallel']):16s}"
            line += "".join(f" {_cell(c[f'{mode}_{size}']):>19s}" for size in f["sizes"])
            ratio, of_medians = c[f"{mode}_ratio"], c[f"{mode}_ratio_of_medians"]
            line += f" {'-' if ratio is None else format(ratio, '.2f'):>7s}"
            line += f" {'-' if of_medians is None else format(of_medians, '.2f'):>10s}"
            if mode == "scheduler":
                line += f"  {verdict(c['passed_us_per_node']):>8s}"
                line += f"  {verdict(c['passed_ratio']):>9s}"
            print(line)
    print(
        f"  ratio = best time at {large:,} nodes / best time at {small:,} nodes"
        f" (linear growth gives {large / small:g})"
    )
    w = f["when_chain"]
    if w["best_us_per_node"]:
        sizes = ", ".join(f"{n:,} nodes {us:.0f} us" for n, us in w["best_us_per_node"].items())
        print(f"  information: a chain with `when: {w['when']}` on every node (scheduler mode,"
              f" best, per node): {sizes}; time ratio {w['ratio']}")  # fmt: skip
    print(f"  overall: {verdict(f['passed'])}; peak RSS of this process: {f['peak_rss_mb']} MB")
    print(json.dumps(figures, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs=2, default=[1000, 10000], metavar=("SMALL", "LARGE"),
        help="the two DAG sizes (default 1000 10000); the ratio target scales with LARGE/SMALL",
    )  # fmt: skip
    parser.add_argument(
        "--when-sizes", type=int, nargs="*", default=[100, 400], metavar="N",
        help="sizes of the information-only chain with a `when` on every node (100 400);"
        " none to skip it",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="measured runs per case (5)")
    parser.add_argument(
        "--runner-repeats", type=int, default=1,
        help="measured runs per case in runner mode, no warm-up (1); 0 skips that mode",
    )  # fmt: skip
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first (1)")
    parser.add_argument(
        "--ahead", type=int, default=None, metavar="N",
        help="nodes the scheduler may prepare ahead (default: max_parallel, as `run`; 0: none,"
        " as before ahead-of-time containers)",
    )  # fmt: skip
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one run per case at LARGE"
    )
    parser.add_argument("--profile-lines", type=int, default=25, help="functions shown (25)")
    args = parser.parse_args(argv)
    args.sizes = sorted(args.sizes)
    if args.sizes[0] < 1 or args.sizes[0] == args.sizes[1] or args.repeats < 1:
        parser.error("--sizes must be two different sizes >= 1, and --repeats at least 1")
    if args.warmup < 0 or args.runner_repeats < 0 or any(n < 1 for n in args.when_sizes):
        parser.error("--warmup and --runner-repeats must be at least 0, --when-sizes >= 1")
    args.when_sizes = sorted(set(args.when_sizes))

    cases, build_s, when_chain = measure(args)
    figures = summarise(cases, build_s, when_chain, args)
    report(figures)
    if args.profile:
        print(profile(args, cases))
    if args.strict and not figures["passed"]:
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
