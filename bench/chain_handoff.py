"""Handoff between consecutive nodes of a chain, on a real engine.

    .venv/bin/python bench/chain_handoff.py [--nodes N] [--warmup-nodes W] [--ahead N] [--strict]

A chain of N trivial nodes (`true` in the shell image; node i+1 needs node i; N = 200 by
default) is written to a workflow file in a temporary directory and run once through the
real path: `orchestrator.prepare`, then `await run_plan(...)` with a real `DockerBackend`,
a no-op emit, an interrupt never set and SANDBOX_ORCH_HOME in the temporary directory.
A short chain (W nodes, 3 by default) runs first, unmeasured, to warm the client's
connection pool and the backend's threads.

The run is pinned to `RunOptions(ahead=0)` by default (`--ahead 0`): every node's
container is created when its node is due, which is what this benchmark has always
measured. With `--ahead N` (N > 0; the CLI's default is --max-parallel), node i+1's
container is created and started while node i runs, held, and its attempt only releases it
(see warm_chain.py for what that saves on the critical path).

sandbox_orch is wrapped at run time, never edited: `NodeRunner.attempt` (when each
attempt begins and returns; it returns once its container's wait returns: the container
is removed in the background), the backend's `create` (when the create call begins),
`release` (when it is called), `wait` and `remove` (when they return), and the
`NodeOutput` each attempt makes first (how long making it takes). From these:

handoff(i)  node i's attempt returned -> node i+1's first engine step called: its
            `backend.create` (or, when it was prepared ahead, its `backend.release`), for
            each consecutive pair. It is split into the scheduler's part (attempt i
            returned -> attempt i+1 called) and the runner's part (attempt i+1 called ->
            create or release).

The engine calls are timed too (as in node_overhead.py), and also when the create request
really begins on a worker thread (`APIClient.create_container` entered), which shows what
the hop to the backend's thread pool costs on top of the handoff.

Target: a mean handoff of at most 5 ms; the time between two containers that is not
either container's own attempt. Also reported: the total run time, the sum of the
attempt times, and what the run spends outside attempts (preflight, handoffs, the
cleanup sweep, results).

Exit status: 0, or 1 when --strict is given and the target is missed, or 2 when the
benchmark itself broke (the run did not succeed, or containers were left behind).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `sandbox_orch` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Buckets,
    Patches,
    containers_labelled,
    median,
    ms,
    p90,
    peak_rss_mb,
    run_main,
    sweep_containers,
    time_api_calls,
    verdict,
)
from sandbox_orch import execution, orchestrator, store
from sandbox_orch.backend.docker import DockerBackend, connect
from sandbox_orch.execution import NODE_LABEL, OWNER_LABEL, NodeRunner
from sandbox_orch.workflow import MAX_NODES

REPO = Path(__file__).resolve().parent.parent
TARGET_MS = 5.0


def node_name(index: int) -> str:
    return f"n{index:04d}"


def chain_workflow(nodes: int) -> str:
    lines = [
        f"# Written by bench/chain_handoff.py: a chain of {nodes} trivial nodes.",
        "version: 1",
        f"name: bench-chain-handoff-{nodes}",
        "nodes:",
    ]
    for i in range(nodes):
        lines += [f"  {node_name(i)}:", "    runtime: shell", '    command: ["true"]']
        if i:
            lines.append(f"    needs: [{node_name(i - 1)}]")
    return "\n".join(lines) + "\n"


class Timeline:
    """perf_counter instants per node, from the wrappers (event loop and worker threads)."""

    def __init__(self) -> None:
        self.attempt_began: dict[str, float] = {}
        self.attempt_ended: dict[str, float] = {}
        self.create_called: dict[str, float] = {}
        self.release_called: dict[str, float] = {}  # prepared ahead: the attempt's "go"
        self.wait_ended: dict[str, float] = {}
        self.create_entered: dict[str, float] = {}  # APIClient.create_container, on a thread
        self.remove_ended: dict[str, float] = {}
        self.output_buffers: list[float] = []  # seconds to make each attempt's NodeOutput
        self.node_of: dict[str, str] = {}  # container id -> node


class Bench:
    def __init__(self, home: Path, policy: Path, ahead: int) -> None:
        self.home = home
        self.policy = policy
        self.ahead = ahead
        self.owner = orchestrator.owner_token()  # run_plan labels with this same token
        self.backend = DockerBackend(connect())
        self.api = self.backend.client.api
        self.engine = Buckets()
        time_api_calls(self.api, self.engine)
        self.timeline = Timeline()
        self._patches = Patches()
        self._install()

    def _install(self) -> None:
        def attempt(args: tuple, _kw: dict, began: float, ended: float, _result: Any) -> None:
            name = args[1].name  # (self, node, sandbox, number)
            self.timeline.attempt_began[name] = began
            self.timeline.attempt_ended[name] = ended

        def create(args: tuple, _kw: dict, began: float, _ended: float, result: Any) -> None:
            name = args[0].labels[NODE_LABEL]  # (spec,)
            self.timeline.create_called[name] = began
            if result is not None:
                self.timeline.node_of[result] = name

        def by_container(instants: str, at_end: bool) -> Any:
            def record(args: tuple, _kw: dict, began: float, ended: float, _r: Any) -> None:
                name = self.timeline.node_of.get(args[0])
                if name is not None:
                    getattr(self.timeline, instants)[name] = ended if at_end else began

            return record

        def output_made(_a: tuple, _kw: dict, began: float, ended: float, _r: Any) -> None:
            self.timeline.output_buffers.append(ended - began)

        self._patches.around(NodeRunner, "attempt", attempt)
        if hasattr(execution, "NodeOutput"):  # the capture buffers each attempt first makes
            self._patches.around(execution, "NodeOutput", output_made)
        self._patches.around(self.backend, "create", create)
        self._patches.around(self.backend, "remove", by_container("remove_ended", True))
        self._patches.around(self.backend, "wait", by_container("wait_ended", True))
        self._patches.around(self.backend, "release", by_container("release_called", False))
        # When the request really starts, on the backend's worker thread.
        create_container = self.api.create_container

        def entered(*args: Any, **kwargs: Any) -> Any:
            self.timeline.create_entered[kwargs["labels"][NODE_LABEL]] = time.perf_counter()
            return create_container(*args, **kwargs)

        self.api.create_container = entered

    def prepare(self, nodes: int) -> orchestrator.Prepared:
        workflow = self.home / f"chain-{nodes}.yaml"
        workflow.write_text(chain_workflow(nodes))
        return orchestrator.prepare(workflow, self.policy)

    async def run(self, prepared: orchestrator.Prepared) -> float:
        run_id = store.new_run_id()
        began = time.perf_counter()
        report = await orchestrator.run_plan(
            prepared.plan,
            prepared.policy,
            prepared.sandboxes,
            self.backend,
            run_id,
            lambda _event: None,
            asyncio.Event(),
            orchestrator.RunOptions(ahead=self.ahead),
        )
        took = time.perf_counter() - began
        if report.status.value != "succeeded" or report.cleanup_failures:
            raise RuntimeError(f"run {run_id} {report.status.value}: {report.cleanup_failures}")
        return took

    def measure(self, runner: asyncio.Runner, nodes: int, warmup_nodes: int) -> float:
        if warmup_nodes:
            runner.run(self.run(self.prepare(warmup_nodes)))
        prepared = self.prepare(nodes)
        self.timeline = Timeline()
        self.engine.start()
        took = runner.run(self.run(prepared))
        self.engine.finish()
        missing = [n for n in prepared.plan.nodes if n not in self.timeline.create_called]
        if missing or len(self.timeline.attempt_ended) != nodes:
            raise RuntimeError(f"not every node was timed: {missing[:3]}")
        return took

    def leftovers(self) -> list[dict[str, Any]]:
        return containers_labelled(self.api, OWNER_LABEL, self.owner)

    def close(self) -> None:
        self._patches.undo()
        asyncio.run(self.backend.close())


def stats(values: list[float]) -> dict[str, float]:
    return {
        "mean_ms": ms(statistics.fmean(values)),
        "median_ms": ms(median(values)),
        "p90_ms": ms(p90(values)),
        "max_ms": ms(max(values)),
    }


def summarise(bench: Bench, nodes: int, total: float, args: argparse.Namespace) -> dict:
    t = bench.timeline
    names = [node_name(i) for i in range(nodes)]
    pairs = list(itertools.pairwise(names))

    def gap(late: dict[str, float], early: dict[str, float]) -> list[float]:
        """late[node i+1] - early[node i], for each consecutive pair."""
        return [late[b] - early[a] for a, b in pairs]

    # A node's first engine step in its attempt: the release of its prepared container,
    # else the create of its own.
    go = {n: t.release_called.get(n, t.create_called[n]) for n in names}
    handoff = gap(go, t.attempt_ended)
    scheduler_part = gap(t.attempt_began, t.attempt_ended)
    runner_part = [go[n] - t.attempt_began[n] for n in names[1:]]
    thread_hop = [t.create_entered[n] - t.create_called[n] for n in names[1:]]
    removed_after = [t.remove_ended[n] - t.attempt_ended[n] for n in names if n in t.remove_ended]
    between_containers = gap(go, t.wait_ended)
    attempts = [t.attempt_ended[n] - t.attempt_began[n] for n in names]
    outside = total - sum(attempts)
    engine = bench.engine.iterations[-1]
    counts = bench.engine.counts[-1]
    mean_handoff = statistics.fmean(handoff)
    return {
        "bench": "chain_handoff",
        "nodes": nodes,
        "warmup_nodes": args.warmup_nodes,
        "handoff": stats(handoff),
        "handoff_scheduler_part": stats(scheduler_part),
        "handoff_runner_part": stats(runner_part),
        "thread_hop_to_create_container": stats(thread_hop),
        "ahead": bench.ahead,
        "released": len(t.release_called),
        "removed_after_attempt": stats(removed_after),
        "container_to_container": stats(between_containers),
        "output_buffers": stats(t.output_buffers) if t.output_buffers else None,
        "total_run_ms": ms(total),
        "sum_attempts_ms": ms(sum(attempts)),
        "sum_handoffs_ms": ms(sum(handoff)),
        "outside_attempts_ms": ms(outside),
        "outside_attempts_per_node_ms": ms(outside / nodes),
        "attempt": stats(attempts),
        "engine_calls_per_node": {
            name: {"ms": ms(seconds / nodes), "calls": round(counts[name] / nodes, 2)}
            for name, seconds in engine.items()
        },
        "target_ms": TARGET_MS,
        "passed": mean_handoff * 1000 <= TARGET_MS,
        "peak_rss_mb": peak_rss_mb(),
        "python": platform.python_version(),
        "engine_version": bench.api.version().get("Version"),
        "cpus": os.cpu_count(),
    }


def report(figures: dict) -> None:
    f = figures

    def line(label: str, s: dict[str, float]) -> None:
        print(
            f"  {label:48s} mean {s['mean_ms']:7.2f}  median {s['median_ms']:7.2f}"
            f"  p90 {s['p90_ms']:7.2f}  max {s['max_ms']:7.2f} ms"
        )

    print(
        f"chain handoff: a chain of {f['nodes']} trivial nodes through run_plan on a real engine"
        f" (after a warm-up chain of {f['warmup_nodes']})"
    )
    print(
        f"  --ahead {f['ahead']}: {f['released']} of {f['nodes']} nodes started from a"
        " container prepared ahead (released), the others created their own"
    )
    line("handoff: attempt i returned -> create/release i+1", f["handoff"])
    line("  scheduler: attempt i returned -> attempt i+1", f["handoff_scheduler_part"])
    line("  runner: attempt i+1 called -> create/release", f["handoff_runner_part"])
    if f["output_buffers"]:
        line("    of which NodeOutput(output_limit)", f["output_buffers"])
    line("create called -> create_container on a thread", f["thread_hop_to_create_container"])
    line("attempt returned -> its container removed (background)", f["removed_after_attempt"])
    line("wait i returned -> create/release i+1 called", f["container_to_container"])
    line("attempt (create/release .. wait returned)", f["attempt"])
    print(
        f"  total run {f['total_run_ms']:.1f} ms = attempts {f['sum_attempts_ms']:.1f} ms"
        f" + outside attempts {f['outside_attempts_ms']:.1f} ms"
        f" ({f['outside_attempts_per_node_ms']:.2f} ms per node)"
    )
    print(
        f"  handoffs sum to {f['sum_handoffs_ms']:.1f} ms; the runner's part of each lies"
        " inside the next attempt's time"
    )
    print("  engine calls per node (ms, calls):")
    for name, v in f["engine_calls_per_node"].items():
        print(f"    {name:20s} {v['ms']:7.2f} x{v['calls']:g}")
    print(
        f"  target: mean handoff at most {f['target_ms']:g} ms -> {verdict(f['passed'])}"
        f"; peak RSS of this process: {f['peak_rss_mb']} MB"
    )
    print(json.dumps(figures, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=200, help="nodes in the chain (200)")
    parser.add_argument(
        "--warmup-nodes", type=int, default=3, help="nodes in the unmeasured warm-up chain (3)"
    )
    parser.add_argument(
        "--ahead",
        type=int,
        default=0,
        help="containers prepared ahead (0, as measured before --ahead existed; the CLI's"
        " default is --max-parallel)",
    )
    parser.add_argument("--policy", type=Path, default=REPO / "policies" / "default.yaml")
    parser.add_argument("--strict", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args(argv)
    if not 2 <= args.nodes <= MAX_NODES or not 0 <= args.warmup_nodes <= MAX_NODES:
        parser.error(f"--nodes must be 2..{MAX_NODES} and --warmup-nodes 0..{MAX_NODES}")

    with tempfile.TemporaryDirectory(prefix="bench-chain-handoff-") as tmp:
        os.environ[store.HOME_ENV] = tmp  # results.json of both runs lands here
        bench = Bench(Path(tmp), args.policy, args.ahead)
        leaked: list[dict[str, Any]] = []
        try:
            with asyncio.Runner() as runner:
                total = bench.measure(runner, args.nodes, args.warmup_nodes)
            leaked = bench.leftovers()  # before our sweep: did anything escape cleanup?
            figures = summarise(bench, args.nodes, total, args)
        finally:
            swept = sweep_containers(bench.api, OWNER_LABEL, bench.owner)
            remaining = bench.leftovers()
            bench.close()
        figures["leaked_containers"] = len(leaked)
    report(figures)
    assert not remaining, f"containers remain after the sweep: {remaining}"
    if leaked or swept:
        print(f"BROKEN: {len(leaked) or swept} container(s) were left behind", file=sys.stderr)
        return 2
    if args.strict and not figures["passed"]:
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
