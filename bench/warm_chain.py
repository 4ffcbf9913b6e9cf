"""Nodes whose containers are ready before they are due: the overhead per node on the
critical path, with and without ahead-of-time containers, under runc and gVisor.

    .venv/bin/python bench/warm_chain.py [--reps N] [--runtimes runc runsc] [--probe] [--strict]

Two shapes, every node `sleep 0.3` in the shell image:
- chain: 20 nodes, each needs the previous one (longest path 20);
- layers: 4 wide, 5 deep, each node needs every node of the layer before (longest path 5).

Each is run through the real path (`orchestrator.prepare`, then `await run_plan(...)` with
one shared `DockerBackend`, a fresh run id, a no-op emit, an interrupt never set) in two
modes, side by side in the same process:
- A, ahead: `RunOptions(ahead=None)`, the default (`--ahead` = --max-parallel, 4);
- B, none: `RunOptions(ahead=0)`, every container created and started when its node is due.
The policy is policies/default.yaml, and a copy of it with `oci_runtime: runsc` for gVisor.
Per repetition, every runtime and shape runs A and B back to back, the order flipping
each repetition (A B, B A, A B, ...), so drift on the shared machine hits both alike.

The figure: overhead per node on the critical path = (the run's wall time - 0.3 s x the
longest path) / the longest path. The wall time is that of `run_plan` (preflight, the
nodes, the cleanup sweep that waits for the last removals, results): one run as the
orchestrator runs it, not process start-up. Target: A's at most one eighth of B's, per
shape and runtime (median of the per-repetition ratios A/B).

Where the rest goes: sandbox_orch is wrapped at run time, never edited (the attempt, the
claim of a prepared container, the backend's create/start/release/wait/remove, and in the
backend's wait the moment the exit is known: the engine's `die` event or its `wait`,
whichever comes first, see sandbox_orch/backend/exits.py). The critical path is, per
layer, the node that finished last; its wall time splits into consecutive segments along
it, which add up to the run's wall time: preflight, scheduler, waiting for the prepared
container, release (or create and start), the command beyond its sleep until the engine
announces its exit, until the backend's wait returns (output, oom), and the sweep at the
end. With `--probe` every node runs `bash -c 'echo $EPOCHREALTIME; sleep
0.3; echo $EPOCHREALTIME'` instead, which also places the command's start and exit (the
shell's start-up and the fork of `sleep` then count as overhead in both modes). Under
gVisor the container's clock is gVisor's; it follows the host's closely (see
agent_budget.py); a segment that comes out negative is shown as it is.

Exit status: 0, or 1 when --strict is given and a target is missed, or 2 when the
benchmark itself broke (a run did not succeed, or containers were left behind).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `sandbox_orch` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Patches,
    containers_labelled,
    median,
    policy_with_runtime,
    run_main,
    sweep_containers,
    verdict,
)
from sandbox_orch import orchestrator, store
from sandbox_orch.backend.docker import DockerBackend, connect
from sandbox_orch.execution import NODE_LABEL, OWNER_LABEL, NodeRunner
from sandbox_orch.orchestrator import RunOptions

REPO = Path(__file__).resolve().parent.parent
SLEEP_S = 0.3
TARGET_RATIO = 1 / 8
PLAIN = ["sleep", f"{SLEEP_S:g}"]
# --probe: the command prints the wall clock as it starts and before it exits.
PROBE = ["bash", "-c", f'echo "$EPOCHREALTIME"; sleep {SLEEP_S:g}; echo "$EPOCHREALTIME"']
BEYOND = f"minus the {SLEEP_S:g} s sleep"
COMMAND = f"command starts -> exits, {BEYOND} (bash, fork)"
MODES = {"ahead": None, "none": 0}  # RunOptions.ahead: None = --max-parallel, 0 = off


@dataclass(frozen=True)
class Shape:
    name: str
    layers: tuple[tuple[str, ...], ...]  # each node needs every node of the layer before
    command: tuple[str, ...] = tuple(PLAIN)

    @property
    def longest(self) -> int:
        return len(self.layers)

    def workflow(self) -> str:
        lines = ["# Written by bench/warm_chain.py.", "version: 1", f"name: bench-warm-{self.name}"]
        lines += ["nodes:"]
        for depth, layer in enumerate(self.layers):
            for name in layer:
                lines += [
                    f"  {name}:",
                    "    runtime: shell",
                    f"    command: {json.dumps(list(self.command))}",
                ]
                if depth:
                    lines.append(f"    needs: [{', '.join(self.layers[depth - 1])}]")
        return "\n".join(lines) + "\n"


def chain(nodes: int, command: list[str] = PLAIN) -> Shape:
    return Shape(f"chain{nodes}", tuple((f"c{i:02d}",) for i in range(nodes)), tuple(command))


def layered(width: int, depth: int, command: list[str] = PLAIN) -> Shape:
    layers = tuple(tuple(f"l{d}w{w}" for w in range(width)) for d in range(depth))
    return Shape(f"layers{width}x{depth}", layers, tuple(command))


@dataclass
class Timeline:
    """perf_counter instants per node (from the wrappers), and the command's own start and
    exit (from its output, converted from the wall clock)."""

    began: float = 0.0
    ended: float = 0.0
    offset: float = 0.0  # time.time() - time.perf_counter() at the run's start
    at: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    node_of: dict[str, str] = field(default_factory=dict)  # container id -> node

    def mark(self, node: str, what: str, instant: float) -> None:
        self.at[node].setdefault(what, instant)  # the first: an attempt's own call


class Bench:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.owner = orchestrator.owner_token()  # run_plan labels with this same token
        self.backend = DockerBackend(connect())
        self.api = self.backend.client.api
        self.timeline = Timeline()
        self._patches = Patches()
        self._install()

    def _install(self) -> None:
        t = lambda: self.timeline  # noqa: E731 - the current run's, looked up per call

        def by_node(what: str, name_of: Any) -> Any:
            def record(args: tuple, _kw: dict, began: float, ended: float, result: Any) -> None:
                node = name_of(args, result)
                if node is not None:
                    t().mark(node, f"{what}_began", began)
                    t().mark(node, f"{what}_ended", ended)

            return record

        def attempt_node(args: tuple, result: Any) -> str:
            if result is not None:  # the command's own clock, from its output
                stamps = [float(s) for s in result.stdout_tail.split() if s[:1].isdigit()]
                if len(stamps) == 2:
                    t().mark(args[1].name, "command_began", stamps[0] - t().offset)
                    t().mark(args[1].name, "command_ended", stamps[1] - t().offset)
            return args[1].name  # (self, node, sandbox, number)

        def created_node(args: tuple, result: Any) -> str:
            if result is not None:
                t().node_of[result] = args[0].labels[NODE_LABEL]
            return args[0].labels[NODE_LABEL]

        def container_node(args: tuple, _result: Any) -> str | None:
            return t().node_of.get(args[0])

        self._patches.around(NodeRunner, "attempt", by_node("attempt", attempt_node))
        self._patches.around(NodeRunner, "_claim", by_node("claim", lambda a, _r: a[1]))
        self._patches.around(self.backend, "create", by_node("create", created_node))
        for call in ("start", "release", "wait", "remove"):
            self._patches.around(self.backend, call, by_node(call, container_node))
        # Inside the backend's wait: when the exit is known (the engine's `die` event or
        # its `wait`, whichever comes first: backend/exits.py).
        self._patches.around(self.backend, "_first_exit", by_node("exit_known", container_node))

    def prepare(self, shape: Shape, policy: Path) -> orchestrator.Prepared:
        workflow = self.home / f"{shape.name}.yaml"
        workflow.write_text(shape.workflow())
        return orchestrator.prepare(workflow, policy)

    async def run(self, prepared: orchestrator.Prepared, ahead: int | None) -> Timeline:
        self.timeline = timeline = Timeline(offset=time.time() - time.perf_counter())
        run_id = store.new_run_id()
        timeline.began = time.perf_counter()
        report = await orchestrator.run_plan(
            prepared.plan,
            prepared.policy,
            prepared.sandboxes,
            self.backend,
            run_id,
            lambda _event: None,
            asyncio.Event(),
            RunOptions(ahead=ahead),
        )
        timeline.ended = time.perf_counter()
        if report.status.value != "succeeded" or report.cleanup_failures:
            raise RuntimeError(f"run {run_id} {report.status.value}: {report.cleanup_failures}")
        return timeline

    def leftovers(self) -> list[dict[str, Any]]:
        return containers_labelled(self.api, OWNER_LABEL, self.owner)

    def close(self) -> None:
        self._patches.undo()
        asyncio.run(self.backend.close())


# --- what one run's timeline says --------------------------------------------------------


def critical_path(shape: Shape, t: Timeline) -> list[str]:
    """Per layer, the node whose attempt returned last: the one the next layer waited for."""
    return [max(layer, key=lambda n: t.at[n]["attempt_ended"]) for layer in shape.layers]


def segments(shape: Shape, t: Timeline) -> dict[str, float]:
    """The run's wall time along its critical path, in consecutive segments (seconds,
    summed over the path); they add up to the wall time."""
    out: dict[str, float] = defaultdict(float)
    previous = t.began
    path = critical_path(shape, t)
    for index, node in enumerate(path):
        at = t.at[node]
        steps: list[tuple[str, float]] = [
            ("run start -> first attempt (preflight)" if index == 0
             else "need returned -> attempt called (scheduler)", at["attempt_began"]),
            ("attempt -> claim returned (waits for a prepared container)", at["claim_ended"]),
        ]  # fmt: skip
        held = "release_began" in at  # it ran in a prepared (held) container
        if held:
            steps.append(("claim -> release called", at["release_began"]))
        else:
            steps.append(("claim -> create returned", at["create_ended"]))
        go = "release" if held else "create (start)"
        if "command_began" in at:  # --probe: the command's own clock splits the middle
            steps += [
                (f"{go} -> command starts", at["command_began"]),
                (COMMAND, at["command_ended"]),
                ("command exit -> engine announces it (die or wait)", at["exit_known_ended"]),
            ]
        else:  # the sleep alone: from the go to the engine's announcement of its exit
            steps.append(
                (f"{go} -> exit announced (die or wait), {BEYOND}", at["exit_known_ended"])
            )
        steps += [
            ("exit announced -> wait returns (output, oom)", at["wait_ended"]),
            ("wait -> attempt returns", at["attempt_ended"]),
        ]
        for label, instant in steps:
            out[label] += instant - previous - (SLEEP_S if BEYOND in label else 0.0)
            previous = instant
    out["last attempt -> run_plan returns (sweep, results)"] += t.ended - previous
    return dict(out)


def figures_of(shape: Shape, t: Timeline) -> dict[str, Any]:
    wall = t.ended - t.began
    nodes = [n for layer in shape.layers for n in layer]
    return {
        "wall_s": wall,
        "overhead_per_node_s": (wall - SLEEP_S * shape.longest) / shape.longest,
        "released": sum("release_began" in t.at[n] for n in nodes),
        "segments": segments(shape, t),
        # not on the path: create+start of a prepared one, as it happened in the background
        "prepare_s": [
            t.at[n]["start_ended"] - t.at[n]["create_began"]
            for n in nodes
            if "release_began" in t.at[n] and "start_ended" in t.at[n]
        ],
    }


# --- the whole benchmark -----------------------------------------------------------------


def measure(args: argparse.Namespace, bench: Bench, runner: asyncio.Runner) -> dict[str, Any]:
    command = PROBE if args.probe else PLAIN
    shapes = [chain(args.chain, command), layered(args.width, args.depth, command)]
    policies = {r: policy_with_runtime(args.policy, r, bench.home) for r in args.runtimes}
    prepared = {(r, s.name): bench.prepare(s, policies[r]) for r in args.runtimes for s in shapes}
    warm = chain(3, command)
    for runtime in args.runtimes:  # warm the client, the images' pages, the runtime
        for ahead in MODES.values():
            runner.run(bench.run(bench.prepare(warm, policies[runtime]), ahead))
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for rep in range(args.reps):
        order = list(MODES) if rep % 2 == 0 else list(reversed(MODES))
        for runtime in args.runtimes:
            for shape in shapes:
                for mode in order:
                    timeline = runner.run(bench.run(prepared[runtime, shape.name], MODES[mode]))
                    figures = figures_of(shape, timeline)
                    runs[runtime, shape.name, mode].append(figures)
                    print(
                        f"  rep {rep + 1} {runtime:5s} {shape.name:9s} {mode:5s}"
                        f" wall {figures['wall_s']:6.2f} s, overhead/node"
                        f" {figures['overhead_per_node_s'] * 1000:6.1f} ms",
                        flush=True,
                    )
    return {"shapes": shapes, "runs": runs}


def summarise(args: argparse.Namespace, measured: dict[str, Any]) -> dict[str, Any]:
    cases = []
    for runtime in args.runtimes:
        for shape in measured["shapes"]:
            a = measured["runs"][runtime, shape.name, "ahead"]
            b = measured["runs"][runtime, shape.name, "none"]
            oa = [r["overhead_per_node_s"] for r in a]
            ob = [r["overhead_per_node_s"] for r in b]
            ratios = [x / y for x, y in zip(oa, ob, strict=True)]
            ratio = median(ratios)
            cases.append(
                {
                    "runtime": runtime,
                    "shape": shape.name,
                    "longest_path": shape.longest,
                    "ahead_ms": round(median(oa) * 1000, 1),
                    "none_ms": round(median(ob) * 1000, 1),
                    "ahead_all_ms": [round(x * 1000, 1) for x in oa],
                    "none_all_ms": [round(x * 1000, 1) for x in ob],
                    "ratio": round(ratio, 3),
                    "ratio_of_medians": round(median(oa) / median(ob), 3),
                    "passed": ratio <= TARGET_RATIO,
                    "released": median([r["released"] for r in a]),
                    "nodes": sum(len(layer) for layer in shape.layers),
                    "prepare_ms": round(median([x for r in a for x in r["prepare_s"]]) * 1000, 1),
                    "segments_ms_per_node": {
                        mode: _segment_medians(runs, shape.longest)
                        for mode, runs in (("ahead", a), ("none", b))
                    },
                }
            )
    return {
        "bench": "warm_chain",
        "reps": args.reps,
        "sleep_s": SLEEP_S,
        "target_ratio": TARGET_RATIO,
        "cases": cases,
        "passed": all(c["passed"] for c in cases),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def _order(label: str) -> int:
    """Segments in the order a node meets them (the path's first node adds preflight)."""
    for index, start in enumerate(SEGMENT_ORDER):
        if label.startswith(start):
            return index
    return len(SEGMENT_ORDER)


SEGMENT_ORDER = (
    "run start",
    "need returned",
    "attempt ->",
    "claim -> release",
    "claim -> create",
    "release ->",
    "create (start)",
    "command starts",
    "command exit",
    "exit announced",
    "wait ->",
    "last attempt",
)


def _segment_medians(runs: list[dict[str, Any]], longest: int) -> dict[str, float]:
    labels = list(dict.fromkeys(label for r in runs for label in r["segments"]))
    return {
        label: round(median([r["segments"].get(label, 0.0) for r in runs]) * 1000 / longest, 1)
        for label in labels
    }


def report(f: dict[str, Any]) -> None:
    print(
        f"\nwarm chain: overhead per node on the critical path = (run_plan wall time -"
        f" {f['sleep_s']:g} s x longest path) / longest path; median of {f['reps']} reps"
    )
    print(
        f"  {'runtime':7s} {'shape':10s} {'ahead ms':>9s} {'none ms':>9s} {'A/B':>6s}"
        f" {'target':>7s}  result  (held: nodes released / all; prepare = create+start)"
    )
    for c in f["cases"]:
        print(
            f"  {c['runtime']:7s} {c['shape']:10s} {c['ahead_ms']:9.1f} {c['none_ms']:9.1f}"
            f" {c['ratio']:6.3f} {f['target_ratio']:7.3f}  {verdict(c['passed']):6s}"
            f"  ({c['released']:g}/{c['nodes']} released; prepare {c['prepare_ms']:.0f} ms)"
        )
        if not c["passed"]:
            allowed = c["none_ms"] * f["target_ratio"]
            print(
                f"          missed: A is {c['ahead_ms']:.1f} ms per node, the target allows"
                f" {allowed:.1f} ms ({c['ahead_ms'] / allowed:.1f}x over)"
            )
    for c in f["cases"]:
        print(
            f"\n  where the time per node on the critical path goes ({c['runtime']},"
            f" {c['shape']}; ms per node, medians; the sleep itself is left out):"
        )
        seg = c["segments_ms_per_node"]
        labels = sorted({*seg["ahead"], *seg["none"]}, key=_order)
        print(f"    {'':58s} {'ahead':>8s} {'none':>8s}")
        for label in labels:
            a, b = seg["ahead"].get(label), seg["none"].get(label)
            cell = lambda v: f"{v:8.1f}" if v is not None else f"{'-':>8s}"  # noqa: E731
            print(f"    {label:58s} {cell(a)} {cell(b)}")
        print(
            f"    {'sum (= overhead per node)':58s} {sum(seg['ahead'].values()):8.1f}"
            f" {sum(seg['none'].values()):8.1f}"
        )
    print(f"\n  overall: {verdict(f['passed'])}")
    print(json.dumps(f, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2, help="repetitions (2)")
    parser.add_argument("--runtimes", nargs="+", default=["runc", "runsc"])
    parser.add_argument("--chain", type=int, default=20, help="chain length (20)")
    parser.add_argument("--width", type=int, default=4, help="layer width (4)")
    parser.add_argument("--depth", type=int, default=5, help="layers (5)")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="nodes run bash printing the clock around the sleep: splits release -> exit"
        " into release -> command starts, the command, exit -> announced (costs bash's"
        " start-up and a fork in both modes)",
    )
    parser.add_argument("--policy", type=Path, default=REPO / "policies" / "default.yaml")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.chain < 2 or args.width < 1 or args.depth < 2:
        parser.error("--reps >= 1, --chain >= 2, --width >= 1, --depth >= 2")

    with tempfile.TemporaryDirectory(prefix="bench-warm-chain-") as tmp:
        os.environ[store.HOME_ENV] = tmp
        bench = Bench(Path(tmp))
        leaked: list[dict[str, Any]] = []
        try:
            with asyncio.Runner() as runner:
                measured = measure(args, bench, runner)
            leaked = bench.leftovers()  # before our sweep: did anything escape cleanup?
            figures = summarise(args, measured)
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
