"""Per-node overhead of sandbox-orch against the raw Docker SDK doing the same work.

    .venv/bin/python bench/node_overhead.py [--nodes N] [--warmup W] [--strict] [--profile]

In one process, interleaved A, B, A, B, ...:

A  one run of a one-node workflow (`true` in the shell image) through the real path:
   `orchestrator.prepare` once, then per iteration `await run_plan(...)` with one shared
   DockerBackend, a fresh run id, a no-op emit and an interrupt never set. Preflight,
   scheduling, the attempt, the cleanup sweep and writing results.json are all included.
   A one-node run has nothing to prepare ahead (its node has no needs). Its container is
   removed in the background once its wait returns: that removal lies in the sweep
   (close), which waits for it, no longer in the attempt.
B  the raw SDK (a second client made by the same `connect()`): create_container with
   `container_kwargs(spec, api)` for the spec NodeRunner.spec() gives (unique name),
   attach (stream, demux) with a reader thread, start, wait, inspect, remove(force, v).

The target: sandbox-orch costs at most 1.10x the raw SDK per node (median of the per-pair
ratios A_i / B_i). For attribution, the run's phases (preflight, attempt, close, results)
and every engine call on both sides are timed in-process; sandbox_orch is only wrapped at
run time, never edited. Every container created carries the owner label of this process;
they are all swept at the end and none may remain.

Exit status: 0, or 1 when --strict is given and the target is missed, or 2 when the
benchmark itself broke (a run did not succeed, or containers were left behind).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `sandbox_orch` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Buckets,
    containers_labelled,
    median,
    ms,
    p90,
    peak_rss_mb,
    raw_container_run,
    run_main,
    sweep_containers,
    time_api_calls,
)
from sandbox_orch import orchestrator, store
from sandbox_orch.backend.docker import DockerBackend, connect
from sandbox_orch.execution import OWNER_LABEL, NodeRunner

REPO = Path(__file__).resolve().parent.parent
TARGET = 1.10
NODE = "noop"
WORKFLOW = f"""\
# Written by bench/node_overhead.py: one trivial node.
version: 1
name: bench-node-overhead
nodes:
  {NODE}:
    runtime: shell
    command: ["true"]
"""


class Phases:
    """Wraps the steps run_plan takes (module globals and NodeRunner methods) so each
    iteration's time is split into preflight / owner / attempt / close / results / save."""

    def __init__(self, buckets: Buckets) -> None:
        self.buckets = buckets
        self._undo: list[Callable[[], None]] = []

    def install(self) -> None:
        self._patch(orchestrator, "preflight", "preflight", is_async=True)
        self._patch(orchestrator, "owner_token", "owner_token")
        self._patch(NodeRunner, "attempt", "attempt", is_async=True)
        self._patch(NodeRunner, "close", "close", is_async=True)
        self._patch(orchestrator, "build_results", "build_results")
        self._patch(orchestrator, "save_results", "save_results")

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _patch(self, owner: Any, attr: str, name: str, is_async: bool = False) -> None:
        original = getattr(owner, attr)
        add = self.buckets.add
        if is_async:

            @functools.wraps(original)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    add(name, time.perf_counter() - began)

        else:

            @functools.wraps(original)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    add(name, time.perf_counter() - began)

        setattr(owner, attr, wrapper)
        self._undo.append(lambda: setattr(owner, attr, original))


class Bench:
    def __init__(self, home: Path, policy: Path) -> None:
        workflow = home / "workflow.yaml"
        workflow.write_text(WORKFLOW)
        self.prepared = orchestrator.prepare(workflow, policy)
        self.node = self.prepared.plan.nodes[NODE]
        self.sandbox = self.prepared.sandboxes[NODE]
        self.owner = orchestrator.owner_token()  # the label on everything this process makes
        # A: one backend (one client, one thread pool) for the whole benchmark.
        self.backend = DockerBackend(connect())
        # B: a second client with the very same settings, used with plain blocking calls.
        self.raw_client = connect()
        self.api = self.raw_client.api
        self.engine_a, self.engine_b = Buckets(), Buckets()
        self.phases = Buckets()
        time_api_calls(self.backend.client.api, self.engine_a)
        time_api_calls(self.api, self.engine_b)
        self._phase_patch = Phases(self.phases)
        self._phase_patch.install()

    # -- A: sandbox-orch --------------------------------------------------------------
    async def run_a(self) -> float:
        run_id = store.new_run_id()
        began = time.perf_counter()
        report = await orchestrator.run_plan(
            self.prepared.plan,
            self.prepared.policy,
            self.prepared.sandboxes,
            self.backend,
            run_id,
            lambda _event: None,
            asyncio.Event(),
        )
        took = time.perf_counter() - began
        if report.status.value != "succeeded" or report.cleanup_failures:
            raise RuntimeError(f"run {run_id} {report.status.value}: {report.results}")
        return took

    # -- B: the raw SDK ---------------------------------------------------------------
    def run_b(self) -> float:
        api = self.api
        spec = NodeRunner(self.backend, store.new_run_id(), self.owner).spec(
            self.node, self.sandbox, 1
        )
        began = time.perf_counter()
        raw = raw_container_run(api, spec)
        took = time.perf_counter() - began
        if raw.exit_code != 0 or raw.oom_killed:
            raise RuntimeError(f"raw container exited {raw.exit_code} (oom={raw.oom_killed})")
        return took

    # -- the interleaved loop ---------------------------------------------------------
    def pairs(self, runner: asyncio.Runner, count: int, keep: bool) -> list[tuple[float, float]]:
        out = []
        for _ in range(count):
            self.phases.start()
            self.engine_a.start()
            a = runner.run(self.run_a())
            self.phases.finish(keep)
            self.engine_a.finish(keep)
            self.engine_b.start()
            b = self.run_b()
            self.engine_b.finish(keep)
            if keep:
                out.append((a, b))
        return out

    def profile_a(self, runner: asyncio.Runner, count: int) -> str:
        """cProfile of the event-loop thread over `count` extra A runs (not in the figures).
        The SDK's blocking calls run on worker threads; their time is in the engine table."""
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(count):
            runner.run(self.run_a())
        profiler.disable()
        stream = _Text()
        stats = pstats.Stats(profiler, stream=stream)  # type: ignore[arg-type]
        stats.sort_stats("tottime").print_stats(20)
        return stream.text

    def leftovers(self) -> list[dict[str, Any]]:
        return containers_labelled(self.api, OWNER_LABEL, self.owner)

    def close(self) -> None:
        self._phase_patch.uninstall()
        asyncio.run(self.backend.close())
        self.raw_client.close()


class _Text:
    def __init__(self) -> None:
        self.text = ""

    def write(self, chunk: str) -> int:
        self.text += chunk
        return len(chunk)


def summarise(bench: Bench, pairs: list[tuple[float, float]], args: argparse.Namespace) -> dict:
    a = [p[0] for p in pairs]
    b = [p[1] for p in pairs]
    ratios = [x / y for x, y in pairs]
    attempts = [i.get("attempt", 0.0) for i in bench.phases.iterations]
    ratio_median = median(ratios)
    phases = {name: ms(v) for name, v in bench.phases.medians().items()}
    # "scheduler & glue": what run_plan spends outside the named phases.
    glue = [total - sum(i.values()) for total, i in zip(a, bench.phases.iterations, strict=True)]
    phases["other (scheduler, events, glue)"] = ms(median(glue))
    engine = {}
    for side, buckets in (("a", bench.engine_a), ("b", bench.engine_b)):
        counts = buckets.median_counts()
        engine[side] = {
            name: {"ms": ms(value), "calls": counts[name]}
            for name, value in buckets.medians().items()
        }
    engine_total = {
        side: [sum(i.values()) for i in buckets.iterations]
        for side, buckets in (("a", bench.engine_a), ("b", bench.engine_b))
    }
    return {
        "bench": "node_overhead",
        "nodes": len(pairs),
        "warmup": args.warmup,
        "a_median_ms": ms(median(a)),
        "a_p90_ms": ms(p90(a)),
        "b_median_ms": ms(median(b)),
        "b_p90_ms": ms(p90(b)),
        "attempt_median_ms": ms(median(attempts)),
        "attempt_p90_ms": ms(p90(attempts)),
        "ratio_median_of_pairs": round(ratio_median, 3),
        "ratio_of_medians": round(median(a) / median(b), 3),
        "attempt_ratio_median_of_pairs": round(
            median([x / y for x, y in zip(attempts, b, strict=True)]), 3
        ),
        "overhead_median_ms": ms(median([x - y for x, y in pairs])),
        "run_outside_attempt_median_ms": ms(
            median([x - y for x, y in zip(a, attempts, strict=True)])
        ),
        "attempt_minus_raw_median_ms": ms(
            median([x - y for x, y in zip(attempts, b, strict=True)])
        ),
        "engine_time_median_ms": {s: ms(median(v)) for s, v in engine_total.items()},
        "not_engine_median_ms": {
            "a": ms(median([x - y for x, y in zip(a, engine_total["a"], strict=True)])),
            "b": ms(median([x - y for x, y in zip(b, engine_total["b"], strict=True)])),
        },
        "phases_median_ms": phases,
        "engine_calls_median": engine,
        "target": TARGET,
        "passed": ratio_median <= TARGET,
        "peak_rss_mb": peak_rss_mb(),
        "python": platform.python_version(),
        "engine_version": bench.api.version().get("Version"),
        "cpus": os.cpu_count(),
    }


def report(figures: dict) -> None:
    f = figures
    verdict = "PASS" if f["passed"] else "FAIL"
    print(f"node overhead: {f['nodes']} pairs (after {f['warmup']} warm-up pairs), interleaved")
    print(f"  A sandbox-orch run_plan   median {f['a_median_ms']:8.2f} ms"
          f"   p90 {f['a_p90_ms']:8.2f} ms")  # fmt: skip
    print(
        f"    of which the attempt    median {f['attempt_median_ms']:8.2f} ms"
        f"   p90 {f['attempt_p90_ms']:8.2f} ms"
        "  (create .. wait: the removal runs in the background, within close)"
    )
    print(f"  B raw docker SDK          median {f['b_median_ms']:8.2f} ms"
          f"   p90 {f['b_p90_ms']:8.2f} ms")  # fmt: skip
    print(f"  ratio A/B: median of per-pair ratios {f['ratio_median_of_pairs']:.3f}"
          f", ratio of medians {f['ratio_of_medians']:.3f}")  # fmt: skip
    print(
        f"  attempt/B: median of per-pair ratios {f['attempt_ratio_median_of_pairs']:.3f}"
        " (B includes its remove, the attempt does not)"
    )
    print(f"  target: at most {f['target']:.2f} (median of per-pair ratios) -> {verdict}")
    print(f"  peak RSS of this process: {f['peak_rss_mb']} MB")
    print(
        f"  overhead A-B median {f['overhead_median_ms']} ms:"
        f" outside the attempt {f['run_outside_attempt_median_ms']} ms,"
        f" attempt minus raw {f['attempt_minus_raw_median_ms']} ms"
    )
    print("  A phases (median ms):")
    for name, value in f["phases_median_ms"].items():
        print(f"    {name:32s} {value:8.2f}")
    print("  engine calls (median ms per node, calls per node):   A            B")
    a, b = f["engine_calls_median"]["a"], f["engine_calls_median"]["b"]
    for name in dict.fromkeys([*a, *b]):
        left = f"{a[name]['ms']:7.2f} x{a[name]['calls']:g}" if name in a else " " * 10
        right = f"{b[name]['ms']:7.2f} x{b[name]['calls']:g}" if name in b else ""
        print(f"    {name:45s} {left:>12s} {right:>12s}")
    et, ne = f["engine_time_median_ms"], f["not_engine_median_ms"]
    print(f"    {'all engine calls':45s} {et['a']:10.2f}   {et['b']:10.2f}")
    print(f"    {'outside engine calls (Python, threads)':45s} {ne['a']:10.2f}   {ne['b']:10.2f}")
    print(json.dumps(figures, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=40, help="measured pairs (default 40)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured pairs first (3)")
    parser.add_argument("--policy", type=Path, default=REPO / "policies" / "default.yaml")
    parser.add_argument("--strict", action="store_true", help="exit 1 if the target is missed")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile the event loop over extra A runs"
    )
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.warmup < 0:
        parser.error("--nodes must be at least 1 and --warmup at least 0")

    with tempfile.TemporaryDirectory(prefix="bench-node-overhead-") as tmp:
        os.environ[store.HOME_ENV] = tmp  # results.json of every A run lands here
        bench = Bench(Path(tmp), args.policy)
        leaked: list[dict[str, Any]] = []
        try:
            with asyncio.Runner() as runner:
                bench.pairs(runner, args.warmup, keep=False)
                pairs = bench.pairs(runner, args.nodes, keep=True)
                leaked = bench.leftovers()  # before our sweep: did anything escape cleanup?
                figures = summarise(bench, pairs, args)
                profile = bench.profile_a(runner, args.nodes) if args.profile else None
        finally:
            swept = sweep_containers(bench.api, OWNER_LABEL, bench.owner)
            remaining = bench.leftovers()
            bench.close()
        figures["leaked_containers"] = len(leaked)
    report(figures)
    if profile:
        print(profile)
    assert not remaining, f"containers remain after the sweep: {remaining}"
    if leaked or swept:
        print(f"BROKEN: {len(leaked) or swept} container(s) were left behind", file=sys.stderr)
        return 2
    if args.strict and not figures["passed"]:
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
