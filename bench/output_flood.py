"""A node that prints 1 GB: the orchestrator's memory stays bounded and its throughput keeps
up with the raw Docker SDK.

    .venv/bin/python bench/output_flood.py [--pairs N] [--bytes BYTES] [--strict]

The node runs `head -c 1073741824 /dev/zero` in the shell image (1 GiB on stdout, no
newlines). Each measured side runs in a child process of its own (this script, with
--child a|b), one after the other, interleaved A, B, A, B, ... (3 pairs by default):

A  sandbox-orch's real path: a generated one-node workflow, `orchestrator.prepare`d with
   policies/default.yaml (output limit 16m: 8 MiB of head and 8 MiB of tail kept per
   stream, the rest counted and dropped), then `await run_plan(...)` with a DockerBackend,
   a fresh run id, a no-op emit and an interrupt never set. Output goes through the
   backend's reader thread (attach before start) into the attempt's bounded buffers.
B  the raw SDK: create_container with `container_kwargs(spec, api)` for the spec
   NodeRunner.spec() gives, attach(stream=True, demux=True) before start, a thread that
   drains the frames counting bytes, start, wait, remove(force, v). Identical settings.

Each child first runs its side once with 1 MiB of output, unmeasured (client, pools and
threads warm), then measures:
- the time of the measured run (A: the whole run_plan; B: create .. remove) and its
  throughput (MB/s; a MB is 2**20 bytes here, as in every benchmark's RSS);
- RSS: the child's RSS just before the measured run (after the warm-up and a
  gc.collect()); its peak from `os.wait4`'s ru_maxrss (the kernel's high-water mark, no
  sampling gaps; it covers the child's whole life, so a higher peak from import or
  warm-up could only overstate the growth); and a sampler thread reading /proc/self/statm
  every 10 ms, for the peak during the run and the RSS after it. The kernel refreshes
  its high-water mark when memory is unmapped, and glibc hands memory back from thread
  arenas with madvise, so the two peaks can differ by a little: the larger one counts.
  Growth = that peak - RSS before.
- CPU: the child's own user+system seconds, and dockerd's over the same run (the engine
  may be shared: its figure includes other work). These show who the bottleneck is.

Targets: A's RSS growth under 64 MB (the largest over the pairs), and A's throughput at
least 0.8x B's (median of the per-pair ratios). Everything a child creates carries its
owner label; the child sweeps it, and the parent sweeps once more after each child.

Exit status: 0, or 1 when --strict is given and a target is missed, or 2 when the
benchmark itself broke (a run did not succeed, output went missing, or something was left).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `sandbox_orch` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench.common import (
    Patches,
    RssSampler,
    containers_labelled,
    median,
    raw_container_run,
    rss_mb,
    run_child,
    run_main,
    sweep_containers,
    verdict,
)
from sandbox_orch import execution, orchestrator, store
from sandbox_orch.backend.docker import DockerBackend, connect
from sandbox_orch.capture import NodeOutput
from sandbox_orch.execution import OWNER_LABEL, NodeRunner

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
BYTES = 1024**3
WARMUP_BYTES = 1024**2
RSS_TARGET_MB = 64.0
THROUGHPUT_TARGET = 0.8
NODE = "flood"
MB = 1024**2


def workflow(size: int) -> str:
    return f"""\
# Written by bench/output_flood.py: one node printing {size} bytes.
version: 1
name: bench-output-flood
nodes:
  {NODE}:
    runtime: shell
    command: ["head", "-c", "{size}", "/dev/zero"]
"""


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def dockerd() -> psutil.Process | None:
    """The engine's process, if it runs on this machine (only read, for its CPU time)."""
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "dockerd":
            return process
    return None


def dockerd_cpu(process: psutil.Process | None) -> float:
    if process is None:
        return float("nan")
    try:
        times = process.cpu_times()
    except psutil.Error:
        return float("nan")
    return times.user + times.system


# -- the children ---------------------------------------------------------------------
class Child:
    """One side, in its own process: a warm-up run, then the measured run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        home = Path(args.home)
        self.prepared = {}
        for size in (WARMUP_BYTES, args.bytes):
            path = home / f"flood-{size}.yaml"
            path.write_text(workflow(size))
            self.prepared[size] = orchestrator.prepare(path, args.policy)
        self.owner = orchestrator.owner_token()  # run_plan labels with this same token
        self.client = connect()
        self.api = self.client.api
        self.sink_seconds = 0.0  # A: time in NodeOutput.write (the bounded buffers)
        self.sink_calls = 0
        self.attempt_seconds = 0.0
        self.rss_buffers_made = float("nan")  # A: RSS right after the attempt's NodeOutput

    # A: sandbox-orch
    async def run_a(self, size: int, backend: DockerBackend) -> float:
        p = self.prepared[size]
        run_id = store.new_run_id()
        began = time.perf_counter()
        report = await orchestrator.run_plan(
            p.plan, p.policy, p.sandboxes, backend, run_id, lambda _e: None, asyncio.Event()
        )
        took = time.perf_counter() - began
        node = report.results["nodes"][NODE]
        if report.status.value != "succeeded" or report.cleanup_failures:
            raise RuntimeError(f"run {run_id} {report.status.value}: {node.get('reason')}")
        counted = (node.get("output_bytes") or {}).get("stdout")
        if counted != size:
            raise RuntimeError(f"run {run_id}: {counted} bytes of stdout counted, not {size}")
        return took

    # B: the raw SDK
    def run_b(self, size: int) -> float:
        api = self.api
        p = self.prepared[size]
        spec = NodeRunner(None, store.new_run_id(), self.owner).spec(  # type: ignore[arg-type]
            p.plan.nodes[NODE], p.sandboxes[NODE], 1
        )
        began = time.perf_counter()
        raw = raw_container_run(api, spec)
        took = time.perf_counter() - began
        if raw.exit_code != 0 or raw.received != size:
            raise RuntimeError(
                f"raw container exited {raw.exit_code}, {raw.received} of {size} bytes"
            )
        return took

    def measure(self) -> dict[str, Any]:
        side, size = self.args.child, self.args.bytes
        patches = Patches()
        backend = DockerBackend(self.client) if side == "a" else None
        with asyncio.Runner() as runner:

            def once(n: int) -> float:
                if backend is None:
                    return self.run_b(n)
                return runner.run(self.run_a(n, backend))

            try:
                once(WARMUP_BYTES)
                if backend is not None:
                    self._instrument(patches)
                engine = dockerd()
                gc.collect()
                before, cpu, engine_cpu = rss_mb(), cpu_seconds(), dockerd_cpu(engine)
                with RssSampler(0.01) as sampler:
                    took = once(size)
                cpu, engine_cpu = cpu_seconds() - cpu, dockerd_cpu(engine) - engine_cpu
                after = rss_mb()
            finally:
                patches.undo()
                leaked = containers_labelled(self.api, OWNER_LABEL, self.owner)
                sweep_containers(self.api, OWNER_LABEL, self.owner)
                if backend is not None:
                    runner.run(backend.close())
                else:
                    self.client.close()
        return {
            "side": side,
            "owner": self.owner,
            "seconds": took,
            "rss_before_mb": round(before, 1),
            "rss_sampled_peak_mb": round(sampler.peak, 1),
            "rss_after_mb": round(after, 1),
            "rss_samples": sampler.samples,
            "cpu_s": round(cpu, 2),
            "dockerd_cpu_s": round(engine_cpu, 2),
            "attempt_s": round(self.attempt_seconds, 3) if side == "a" else None,
            "sink_write_s": round(self.sink_seconds, 3) if side == "a" else None,
            "rss_buffers_made_mb": round(self.rss_buffers_made, 1) if side == "a" else None,
            "sink_writes": self.sink_calls if side == "a" else None,
            "leaked_containers": len(leaked),
        }

    def _instrument(self, patches: Patches) -> None:
        """Time the node's attempt and every write into its bounded buffers (~1 us each)."""

        def sink(_a: tuple, _kw: dict, began: float, ended: float, _r: Any) -> None:
            self.sink_seconds += ended - began  # one reader thread: no lock needed
            self.sink_calls += 1

        def attempt(_a: tuple, _kw: dict, began: float, ended: float, _r: Any) -> None:
            self.attempt_seconds += ended - began

        def made(_a: tuple, _kw: dict, _began: float, _ended: float, _r: Any) -> None:
            self.rss_buffers_made = rss_mb()  # the attempt's NodeOutput was just made

        patches.around(NodeOutput, "write", sink)
        patches.around(NodeRunner, "attempt", attempt)
        patches.around(execution, "NodeOutput", made)


def child_main(args: argparse.Namespace) -> int:
    os.environ[store.HOME_ENV] = args.home
    print(json.dumps(Child(args).measure()))
    return 0


# -- the parent -----------------------------------------------------------------------
def run_side(side: str, args: argparse.Namespace, home: str) -> dict[str, Any]:
    owners: list[str] = []

    def started(pid: int) -> None:  # the child's owner token, as owner_token() makes it
        created = int(psutil.Process(pid).create_time())
        owners.append(f"{socket.gethostname()}:{pid}:{created}")

    argv = [sys.executable, str(SCRIPT), "--child", side, "--home", home]
    argv += ["--bytes", str(args.bytes), "--policy", str(args.policy)]
    try:
        out, code, peak = run_child(argv, on_start=started)
    finally:  # a child that died hard leaves its containers: sweep them here
        api = connect().api
        swept = sum(sweep_containers(api, OWNER_LABEL, owner) for owner in owners)
        api.close()
    if code != 0 or not out.strip():
        raise RuntimeError(f"the {side} child exited {code}")
    figures = json.loads(out.strip().splitlines()[-1])
    figures["rss_peak_mb"] = peak  # ru_maxrss from os.wait4
    figures["rss_growth_mb"] = round(max(peak, figures["rss_sampled_peak_mb"])
                                     - figures["rss_before_mb"], 1)  # fmt: skip
    figures["mb_per_s"] = round(args.bytes / MB / figures["seconds"], 1)
    figures["swept_after"] = swept
    return figures


def summarise(runs: list[tuple[dict, dict]], args: argparse.Namespace) -> dict[str, Any]:
    a = [pair[0] for pair in runs]
    b = [pair[1] for pair in runs]
    ratios = [x["mb_per_s"] / y["mb_per_s"] for x, y in runs]
    ratio = median(ratios)
    growth = max(x["rss_growth_mb"] for x in a)

    def side(values: list[dict]) -> dict[str, Any]:
        return {
            "mb_per_s_median": round(median([v["mb_per_s"] for v in values]), 1),
            "seconds": [round(v["seconds"], 2) for v in values],
            "mb_per_s": [v["mb_per_s"] for v in values],
            "rss_before_mb": [v["rss_before_mb"] for v in values],
            "rss_peak_mb": [v["rss_peak_mb"] for v in values],
            "rss_sampled_peak_mb": [v["rss_sampled_peak_mb"] for v in values],
            "rss_after_mb": [v["rss_after_mb"] for v in values],
            "rss_growth_mb": [v["rss_growth_mb"] for v in values],
            "cpu_s": [v["cpu_s"] for v in values],
            "dockerd_cpu_s": [v["dockerd_cpu_s"] for v in values],
        }

    return {
        "bench": "output_flood",
        "pairs": len(runs),
        "bytes": args.bytes,
        "a": {
            **side(a),
            "attempt_s": [v["attempt_s"] for v in a],
            "sink_write_s": [v["sink_write_s"] for v in a],
            "sink_writes": [v["sink_writes"] for v in a],
            "rss_buffers_made_mb": [v["rss_buffers_made_mb"] for v in a],
        },
        "b": side(b),
        "throughput_ratios": [round(r, 3) for r in ratios],
        "throughput_ratio_median_of_pairs": round(ratio, 3),
        "throughput_target": THROUGHPUT_TARGET,
        "throughput_passed": ratio >= THROUGHPUT_TARGET,
        "rss_growth_max_mb": growth,
        "rss_target_mb": RSS_TARGET_MB,
        "rss_passed": growth < RSS_TARGET_MB,
        "passed": ratio >= THROUGHPUT_TARGET and growth < RSS_TARGET_MB,
        "leaked_containers": sum(v["leaked_containers"] + v["swept_after"] for v in a + b),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def report(f: dict[str, Any]) -> None:
    a, b = f["a"], f["b"]
    print(
        f"output flood: a node printing {f['bytes'] / MB:g} MB of /dev/zero;"
        f" {f['pairs']} pairs of child processes (A, B, ...), each after a 1 MB warm-up run"
    )
    print(f"  A sandbox-orch run_plan   {a['mb_per_s_median']:7.1f} MB/s median   per run"
          f" {a['mb_per_s']} MB/s, {a['seconds']} s")  # fmt: skip
    print(f"  B raw SDK attach stream   {b['mb_per_s_median']:7.1f} MB/s median   per run"
          f" {b['mb_per_s']} MB/s, {b['seconds']} s")  # fmt: skip
    print(
        f"  throughput A/B: median of per-pair ratios {f['throughput_ratio_median_of_pairs']:.3f}"
        f" {f['throughput_ratios']}; target at least {f['throughput_target']}"
        f" -> {verdict(f['throughput_passed'])}"
    )
    print(
        f"  RSS growth of the orchestrator (A): {a['rss_growth_mb']} MB (peak - before),"
        f" max {f['rss_growth_max_mb']}; target under {f['rss_target_mb']:g} MB"
        f" -> {verdict(f['rss_passed'])}"
    )
    for name, label in (("a", "A"), ("b", "B")):
        s = f[name]
        print(
            f"    {label}: before {s['rss_before_mb']}, peak (wait4) {s['rss_peak_mb']},"
            f" sampled peak {s['rss_sampled_peak_mb']}, after {s['rss_after_mb']} MB"
        )
    print(f"  CPU seconds per run: A {a['cpu_s']}, B {b['cpu_s']} (the child);"
          f" dockerd during A {a['dockerd_cpu_s']}, during B {b['dockerd_cpu_s']}")  # fmt: skip
    print(
        f"  A: attempt {a['attempt_s']} s; NodeOutput.write {a['sink_write_s']} s over"
        f" {a['sink_writes']} frames; RSS once the attempt's NodeOutput was made"
        f" {a['rss_buffers_made_mb']} MB"
    )
    print(f"  result: {verdict(f['passed'])}; containers left: {f['leaked_containers']}")
    print(json.dumps(f, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="measured pairs (default 3)")
    parser.add_argument("--bytes", type=int, default=BYTES, help="bytes printed (1 GiB)")
    parser.add_argument("--policy", type=Path, default=REPO / "policies" / "default.yaml")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--child", choices=("a", "b"), help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.pairs < 1 or args.bytes < 1:
        parser.error("--pairs and --bytes must be at least 1")

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-output-flood-") as home:
        for index in range(args.pairs):
            a = run_side("a", args, home)
            b = run_side("b", args, home)
            print(
                f"  pair {index + 1}: A {a['mb_per_s']} MB/s (RSS +{a['rss_growth_mb']} MB),"
                f" B {b['mb_per_s']} MB/s",
                file=sys.stderr,
            )
            runs.append((a, b))
    figures = summarise(runs, args)
    report(figures)
    if figures["leaked_containers"]:
        print(f"BROKEN: {figures['leaked_containers']} container(s) were left", file=sys.stderr)
        return 2
    if args.strict and not figures["passed"]:
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
