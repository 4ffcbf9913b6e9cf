"""A 100 MB artifact from one node to the next: sandbox-orch against the raw Docker SDK.

    .venv/bin/python bench/artifact_transfer.py [--pairs N] [--warmup W] [--size BYTES]
        [--source zero|urandom] [--read cat|sha256sum] [--raw-volume disk|shm]
        [--volumes auto|host|engine] [--strict] [--profile]

In one process, interleaved A, B, A, B, ... (1 warm-up pair, then 5 measured pairs):

A  sandbox-orch's real path: a generated two-node workflow, `orchestrator.prepare`d once
   with a policy whose `artifacts` limit is at least 200m (policies/default.yaml: 1g);
   then per iteration `await run_plan(...)` with one shared DockerBackend, a fresh run id,
   a no-op emit and an interrupt never set. `produce` writes SIZE bytes into its artifact
   path (`head -c SIZE /dev/zero > /out/a/blob`), `consume` reads them from its input
   (`cat /in/a/blob > /dev/null && wc -c < /in/a/blob`). sandbox-orch puts the artifact in
   a memory-backed volume capped by the policy and after `produce` stops it also COPIES
   THE ARTIFACT TO THE HOST (sha256, write under the run's directory). That copy is part
   of its work and is inside A's time; the raw baseline does no such copy. Where the
   volume lives is `--volumes` (DockerBackend's setting; `auto` by default, as the CLI):
   - host: a capped tmpfs mounted on this host (the engine is local and we are root),
     bound into the nodes; the copy reads its files directly (`artifacts.copy_tree`).
   - engine: the engine's own tmpfs volume, kept alive by a holder container; the copy
     goes through the engine's archive API (`artifacts.extract`: tar parse, sha256, write).
B  the raw SDK (a second client made by the same `connect()`): create a plain local volume
   (disk-backed: a memory-backed one is discarded when its last container stops, which is
   why sandbox-orch needs the holder), give its root to the node's user (the containers run
   as 10001:10001 and mount volumes with no_copy, so the root-owned volume directory is
   chowned on the host: the engine is local), then for each node: create_container with
   `container_kwargs(spec, api)` (the spec NodeRunner.spec() gives, plus the volume mounted
   read-write for the producer, read-only for the consumer: identical settings), attach
   (stream, demux) with a reader thread, start, wait, inspect, remove(force, v); finally
   remove the volume.

Why /dev/zero: in this container `head -c 100M /dev/urandom` alone takes ~340 ms against
~47 ms from /dev/zero, about a third of B's whole pair, and it is not transfer: both sides
pay it alike and it only dilutes the ratio. `--source urandom` measures that variant. For
the same reason the consumer does not hash by default (`sha256sum` of 100 MB: ~430 ms);
`--read sha256sum` does.

Target: A / B at most 1.2 (median of the per-pair ratios) with B's plain volume, the
baseline the issue names. `--raw-volume shm` binds B's volume to /dev/shm instead (memory,
uncapped): a stricter comparison, reported, not the target's. For attribution,
sandbox_orch is wrapped at run time, never edited: preflight, each attempt, the artifact
volume's create, the holder's create + start (engine volumes), the copy-out (_copy, in the
background; in it the engine's archive request, the time spent waiting for the stream and
`extract`, or `copy_tree`), the cleanup (close) and the results; every engine call of both
clients is timed. `--profile` adds a cProfile of
`extract` (on its worker thread) over 2 extra A runs, and times `extract`, sha256 and the
file write alone on an archive in memory (no engine). Everything created carries the owner
label of this process; containers and volumes are swept at the end and none may remain.

Exit status: 0, or 1 when --strict is given and the target is missed, or 2 when the
benchmark itself broke (a run did not succeed, a check failed, or something was left).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

if __package__ in (None, ""):  # run as a script: make `bench` and `sandbox_orch` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ENGINE_CALLS,
    Buckets,
    Patches,
    containers_labelled,
    median,
    ms,
    peak_rss_mb,
    profile_text,
    raw_container_run,
    run_main,
    sweep_containers,
    sweep_volumes,
    time_api_calls,
    verdict,
    volumes_labelled,
)
from sandbox_orch import orchestrator, store
from sandbox_orch.artifacts import ArtifactVolumes
from sandbox_orch.artifacts import copy as artifact_copy
from sandbox_orch.artifacts import volumes as artifacts  # the module whose globals run copies
from sandbox_orch.backend import VolumeMount
from sandbox_orch.backend.docker import DockerBackend, VolumeSetting, _ChunkReader, connect
from sandbox_orch.execution import NODE_LABEL, OWNER_LABEL, NodeRunner
from sandbox_orch.runstore import RunStore

REPO = Path(__file__).resolve().parent.parent
TARGET = 1.2
SIZE = 100 * 1024**2
MIN_ARTIFACT_LIMIT = 200 * 1024**2
PRODUCER, CONSUMER, ARTIFACT = "produce", "consume", "a"
OUT, IN = f"/out/{ARTIFACT}", f"/in/{ARTIFACT}"
ENGINE = (*ENGINE_CALLS, "create_volume", "remove_volume")  # get_archive: wrapped apart
MB = 1024**2
ROLE_LABEL = "sandbox-orch.role"  # artifacts.py labels its holders with it


def workflow(size: int, source: str, read: str) -> str:
    produce = f"head -c {size} /dev/{source} > {OUT}/blob"
    if read == "cat":
        consume = f"cat {IN}/blob > /dev/null && wc -c < {IN}/blob"
    else:
        consume = f"sha256sum {IN}/blob"
    return f"""\
# Written by bench/artifact_transfer.py: one artifact from {PRODUCER} to {CONSUMER}.
version: 1
name: bench-artifact-transfer
nodes:
  {PRODUCER}:
    runtime: shell
    command: ["sh", "-c", "{produce}"]
    outputs:
      artifacts: [{{name: {ARTIFACT}, path: {OUT}}}]
  {CONSUMER}:
    runtime: shell
    needs: [{PRODUCER}]
    command: ["sh", "-c", "{consume}"]
    inputs: [{{from: {PRODUCER}/{ARTIFACT}, path: {IN}}}]
"""


def expected_output(size: int, source: str, read: str) -> str | None:
    """What the consumer prints (None: a digest of random bytes, checked by shape only)."""
    if read == "cat":
        return str(size)
    if source == "urandom":
        return None
    digest = hashlib.sha256()
    zeros = bytes(MB)
    for offset in range(0, size, MB):
        digest.update(zeros[: min(MB, size - offset)])
    return digest.hexdigest()


def check_output(printed: str, expected: str | None, side: str) -> None:
    word = printed.split()[0] if printed.split() else ""
    good = word == expected if expected is not None else len(word) == 64
    if not good:
        raise RuntimeError(f"{side}: the consumer printed {printed[:120]!r}, not {expected!r}")


def by_role(api: Any) -> Callable[[str, tuple, dict], str]:
    """A `time_api_calls` key naming the container a call is about: the holder, or the
    node (from the labels every container gets at create)."""
    roles: dict[str, str] = {}
    create = api.create_container

    def role_of(labels: dict[str, str]) -> str:
        return "holder" if labels.get(ROLE_LABEL) == "artifact-holder" else labels[NODE_LABEL]

    def create_container(*args: Any, **kwargs: Any) -> Any:
        created = create(*args, **kwargs)
        roles[created["Id"]] = role_of(kwargs["labels"])
        return created

    api.create_container = create_container

    def key(name: str, args: tuple, kwargs: dict) -> str:
        if name == "create_container":
            return f"{name} [{role_of(kwargs['labels'])}]"
        target = args[0] if args else kwargs.get("container")
        role = roles.get(target) if isinstance(target, str) else None
        return f"{name} [{role}]" if role else name

    return key


class Bench:
    def __init__(self, home: Path, args: argparse.Namespace) -> None:
        self.args = args
        path = home / "workflow.yaml"
        path.write_text(workflow(args.size, args.source, args.read))
        self.prepared = orchestrator.prepare(path, args.policy)
        self.producer = self.prepared.plan.nodes[PRODUCER]
        self.consumer = self.prepared.plan.nodes[CONSUMER]
        limit = self.prepared.sandboxes[PRODUCER].artifact_limit
        if limit < max(MIN_ARTIFACT_LIMIT, args.size):
            raise RuntimeError(f"the policy's artifacts limit ({limit} bytes) is under 200m")
        self.expected = expected_output(args.size, args.source, args.read)
        self.owner = orchestrator.owner_token()  # the label on everything this process makes
        # A: one backend (one client, one thread pool) for the whole benchmark.
        self.backend = DockerBackend(connect(), volumes=args.volumes)
        # B: a second client with the very same settings, used with plain blocking calls.
        self.raw_client = connect()
        self.api = self.raw_client.api
        self.engine_a, self.engine_b = Buckets(), Buckets()
        self.phases_a, self.phases_b = Buckets(), Buckets()
        self.chunks: list[int] = []  # sizes of the archive stream's chunks (last A run)
        self.store = "?"  # where A's volumes lived (asked of the backend after the runs)
        self.profiler: cProfile.Profile | None = None
        # Engine calls are timed per container role (holder, produce, consume).
        time_api_calls(
            self.backend.client.api, self.engine_a, ENGINE, by_role(self.backend.client.api)
        )
        time_api_calls(self.api, self.engine_b, ENGINE, by_role(self.api))
        self._patches = Patches()
        self._install()

    # -- attribution (A) --------------------------------------------------------------
    def _install(self) -> None:
        add, around = self.phases_a.add, self._patches.around

        def timed(name: str) -> Any:
            return lambda _a, _kw, began, ended, _r: add(name, ended - began)

        def attempt(args: tuple, _kw: dict, began: float, ended: float, _r: Any) -> None:
            add(f"attempt {args[1].name}", ended - began)  # (self, node, sandbox, number)

        around(orchestrator, "preflight", timed("preflight"))
        around(NodeRunner, "attempt", attempt)
        around(ArtifactVolumes, "for_producer", timed("volumes + holder"))
        around(self.backend, "create_volume", timed("volume create"))
        around(NodeRunner, "_start_holder", timed("holder create + start"))
        # The copy to the host runs in the background (`_copy`), after a cheap cap check
        # (`over_limits`); the run waits for copies at close.
        around(ArtifactVolumes, "_copy", timed("copy-out"))
        around(ArtifactVolumes, "over_limits", timed("cap check"))
        around(artifacts, "copy_tree", timed("copy_tree"))  # host volumes' copy
        around(NodeRunner, "close", timed("close"))
        around(orchestrator, "build_results", timed("build_results"))
        around(orchestrator, "save_results", timed("save_results"))
        # The run history (SQLite): opened with the run, one row per event, then finished.
        if hasattr(orchestrator, "_open_store"):
            around(orchestrator, "_open_store", timed("run store"))
        around(RunStore, "add_event", timed("run store"))
        around(RunStore, "finish_run", timed("run store"))
        # `_copy` calls `extract` by its module global: wrap it to time it and, for
        # --profile, to run cProfile on the worker thread that extracts (cProfile follows
        # the calling thread only).
        original_extract = artifacts.extract

        def extract(*a: Any, **kw: Any) -> Any:
            began, profiler = time.perf_counter(), self.profiler
            if profiler is not None:
                profiler.enable()
            try:
                return original_extract(*a, **kw)
            finally:
                if profiler is not None:
                    profiler.disable()
                add("extract", time.perf_counter() - began)

        artifacts.extract = extract
        self._restore_extract = lambda: setattr(artifacts, "extract", original_extract)

        # The engine's archive (DockerBackend.export: the SDK's get_archive, unrolled to
        # hold the response): the request (until the response headers), then the stream.
        api = self.backend.client.api
        get, stream_raw = api._get, api._stream_raw_result

        def timed_get(url: str, *a: Any, **kw: Any) -> Any:
            began = time.perf_counter()
            try:
                return get(url, *a, **kw)
            finally:
                if url.endswith("/archive"):
                    took = time.perf_counter() - began
                    self.engine_a.add("get_archive (until headers)", took)

        def timed_stream_raw(response: Any, *a: Any, **kw: Any) -> Any:
            chunks = stream_raw(response, *a, **kw)
            return self._timed_stream(chunks) if "/archive?" in response.url else chunks

        api._get, api._stream_raw_result = timed_get, timed_stream_raw

    def _timed_stream(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The archive's chunks, with the time spent waiting for each one."""
        self.chunks = []
        while True:
            began = time.perf_counter()
            try:
                chunk = next(chunks)
            except StopIteration:
                self.phases_a.add("stream wait", time.perf_counter() - began)
                return
            self.phases_a.add("stream wait", time.perf_counter() - began)
            self.chunks.append(len(chunk))
            yield chunk

    # -- A: sandbox-orch --------------------------------------------------------------
    async def run_a(self) -> float:
        run_id = store.new_run_id()
        p = self.prepared
        began = time.perf_counter()
        report = await orchestrator.run_plan(
            p.plan, p.policy, p.sandboxes, self.backend, run_id, lambda _e: None, asyncio.Event()
        )
        took = time.perf_counter() - began
        try:
            if report.status.value != "succeeded" or report.cleanup_failures:
                raise RuntimeError(f"run {run_id} {report.status.value}: {report.results}")
            nodes = report.results["nodes"]
            copied = nodes[PRODUCER]["artifacts"]
            if [(c["bytes"], c["files"]) for c in copied] != [(self.args.size, 1)]:
                raise RuntimeError(f"run {run_id}: the host copy is {copied}")
            check_output(nodes[CONSUMER]["stdout_tail"], self.expected, "A")
        finally:  # the host copies would fill the disk over many runs
            shutil.rmtree(store.run_dir(run_id) / "artifacts", ignore_errors=True)
        return took

    # -- B: the raw SDK ---------------------------------------------------------------
    def run_b(self) -> float:
        api, add = self.api, self.phases_b.add
        runner = NodeRunner(self.backend, store.new_run_id(), self.owner)
        sandbox = self.prepared.sandboxes[PRODUCER]
        uid, gid = (int(x) for x in sandbox.user.split(":"))
        produce = runner.spec(self.producer, sandbox, 1)
        consume = runner.spec(self.consumer, self.prepared.sandboxes[CONSUMER], 1)
        name, labels = f"{produce.name}-raw", {OWNER_LABEL: self.owner}
        shm = Path("/dev/shm") / name
        began = time.perf_counter()
        if self.args.raw_volume == "disk":
            volume = api.create_volume(name, driver="local", labels=labels)
            os.chown(volume["Mountpoint"], uid, gid)  # no_copy: the root is root's, 0755
        else:  # a local volume bound to a directory in the host's /dev/shm (memory)
            shm.mkdir(mode=0o700)
            os.chown(shm, uid, gid)
            options = {"type": "none", "o": "bind", "device": str(shm)}
            volume = api.create_volume(name, driver="local", driver_opts=options, labels=labels)
        mark = time.perf_counter()
        add("volume create (+ chown)", mark - began)
        try:
            spec = dataclasses.replace(
                produce, volumes=(VolumeMount(volume["Name"], OUT, read_only=False),)
            )
            self._container(spec)
            add("producer container", time.perf_counter() - mark)
            mark = time.perf_counter()
            spec = dataclasses.replace(
                consume, volumes=(VolumeMount(volume["Name"], IN, read_only=True),)
            )
            printed = self._container(spec)
            add("consumer container", time.perf_counter() - mark)
        finally:
            mark = time.perf_counter()
            api.remove_volume(volume["Name"], force=True)
            shutil.rmtree(shm, ignore_errors=True)
            add("volume remove", time.perf_counter() - mark)
        took = time.perf_counter() - began
        check_output(printed, self.expected, "B")
        return took

    def _container(self, spec: Any) -> str:
        """One container's life, as node_overhead.py's B does it; returns its stdout."""
        raw = raw_container_run(self.api, spec, keep_stdout=True)
        if raw.exit_code != 0 or raw.oom_killed:
            raise RuntimeError(f"raw {spec.name} exited {raw.exit_code} (oom={raw.oom_killed})")
        return raw.stdout.decode()

    # -- the interleaved loop ---------------------------------------------------------
    def pairs(self, runner: asyncio.Runner, count: int, keep: bool) -> list[tuple[float, float]]:
        out = []
        buckets = (self.phases_a, self.engine_a, self.phases_b, self.engine_b)
        for _ in range(count):
            for b in buckets:
                b.start()
            a = runner.run(self.run_a())
            b = self.run_b()
            for bucket in buckets:
                bucket.finish(keep)
            if keep:
                out.append((a, b))
        return out

    def profile(self, runner: asyncio.Runner, count: int) -> str:
        """cProfile of `extract` on its worker thread over `count` extra A runs."""
        self.profiler = cProfile.Profile()
        try:
            for _ in range(count):
                runner.run(self.run_a())
        finally:
            profiler, self.profiler = self.profiler, None
        return profile_text(profiler, "tottime", 15)

    def leftovers(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return (
            containers_labelled(self.api, OWNER_LABEL, self.owner),
            volumes_labelled(self.api, OWNER_LABEL, self.owner),
        )

    def close(self) -> None:
        self._patches.undo()
        self._restore_extract()
        asyncio.run(self.backend.close())
        self.raw_client.close()


def offline_copy_out(size: int, home: Path, repeats: int = 3) -> dict[str, float]:
    """What the copy-out's Python side costs with no engine: `extract` over an archive
    already in memory, cut in 32 KiB chunks as the engine sends it (through the backend's
    own `_ChunkReader`), and its two big parts alone: sha256 and writing the file. Best of
    `repeats`, in ms."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        member = tarfile.TarInfo(f"{ARTIFACT}/blob")
        member.size = size
        tar.addfile(member, io.BytesIO(bytes(size)))
    data = archive.getvalue()
    chunks = [data[i : i + 32768] for i in range(0, len(data), 32768)]
    payload = memoryview(data)[512 : 512 + size]

    def extract_all() -> None:
        artifact_copy.extract(_ChunkReader(iter(chunks)), home / "offline" / ARTIFACT)

    def write_all() -> None:
        with open(home / "offline.bin", "wb") as target:
            for offset in range(0, size, artifact_copy.CHUNK):
                target.write(payload[offset : offset + artifact_copy.CHUNK])

    figures = {}
    for name, work in (
        ("extract (tar, sha256, write)", extract_all),
        ("sha256 alone", lambda: hashlib.sha256(payload).digest()),
        ("write alone (1 MiB writes)", write_all),
    ):
        best = float("inf")
        for _ in range(repeats):
            shutil.rmtree(home / "offline", ignore_errors=True)
            began = time.perf_counter()
            work()
            best = min(best, time.perf_counter() - began)
        figures[name] = ms(best)
    shutil.rmtree(home / "offline", ignore_errors=True)
    (home / "offline.bin").unlink(missing_ok=True)
    return figures


def summarise(bench: Bench, pairs: list[tuple[float, float]], args: argparse.Namespace) -> dict:
    a = [p[0] for p in pairs]
    b = [p[1] for p in pairs]
    ratios = [x / y for x, y in pairs]
    it_a = bench.phases_a.iterations

    def per_run(name: str) -> list[float]:
        return [i.get(name, 0.0) for i in it_a]

    def med(values: list[float]) -> float:
        return ms(median(values))

    attempt_p, attempt_c = per_run(f"attempt {PRODUCER}"), per_run(f"attempt {CONSUMER}")
    copy_out, extract, wait = per_run("copy-out"), per_run("extract"), per_run("stream wait")
    copied = per_run("copy_tree")
    holder, volume = per_run("holder create + start"), per_run("volume create")
    setup = per_run("volumes + holder")
    close, preflight = per_run("close"), per_run("preflight")
    built, saved = per_run("build_results"), per_run("save_results")
    results = [x + y for x, y in zip(built, saved, strict=True)]
    run_store = per_run("run store")
    archive = [i.get("get_archive (until headers)", 0.0) for i in bench.engine_a.iterations]
    named = [
        sum(v) for v in zip(preflight, attempt_p, attempt_c, close, results, run_store, strict=True)
    ]
    # What the producer's own container costs inside its attempt (create, start, wait,
    # remove), once its artifact set-up is taken away (the copy-out runs after, apart).
    node_p = [p - s for p, s in zip(attempt_p, setup, strict=True)]
    a_phases = {
        "preflight (inspect images)": med(preflight),
        f"attempt {PRODUCER}": med(attempt_p),
        "  artifact volume create (tmpfs, capped)": med(volume),
        "  holder create + start": med(holder),
        "  producer container (create .. remove)": med(node_p),
        "  copy-out to the host (background _copy)": med(copy_out),
        "    get_archive until the response headers": med(archive),
        "    archive stream: waiting for the engine": med(wait),
        "    copy_tree: walk, sha256, write (host volumes)": med(copied),
        "    extract: tar, sha256, write (not waiting)": med(
            [e - w for e, w in zip(extract, wait, strict=True)]
        ),
        f"attempt {CONSUMER} (container create .. remove)": med(attempt_c),
        "close: remove holder + volume, sweep": med(close),
        "results: build + save": med(results),
        "run store (SQLite: open, events, finish)": med(run_store),
        "other (scheduler, events, glue)": med([t - n for t, n in zip(a, named, strict=True)]),
    }
    b_phases = {name: ms(v) for name, v in bench.phases_b.medians().items()}
    engine = {}
    for side, buckets in (("a", bench.engine_a), ("b", bench.engine_b)):
        counts = buckets.median_counts()
        engine[side] = {
            name: {"ms": ms(value), "calls": counts[name]}
            for name, value in buckets.medians().items()
        }
    # What A does that B does not, per pair (B's volume create/remove set against them).
    extra = {
        "preflight": med(preflight),
        "artifact volume create": med(volume),
        "holder create + start": med(holder),
        "copy-out to the host": med(copy_out),
        "close (holder + volume removal, sweep)": med(close),
        "results": med(results),
        "run store": med(run_store),
    }
    size_mb = args.size / MB
    ratio_median = median(ratios)
    return {
        "bench": "artifact_transfer",
        "pairs": len(pairs),
        "warmup": args.warmup,
        "size_bytes": args.size,
        "source": f"/dev/{args.source}",
        "read": args.read,
        "raw_volume": args.raw_volume,
        "volumes": args.volumes,
        "a_includes_host_copy": True,
        "volume_store": bench.store,
        "a_median_ms": med(a),
        "a_min_ms": ms(min(a)),
        "a_max_ms": ms(max(a)),
        "b_median_ms": med(b),
        "b_min_ms": ms(min(b)),
        "b_max_ms": ms(max(b)),
        "ratios": [round(r, 3) for r in ratios],
        "ratio_median_of_pairs": round(ratio_median, 3),
        "ratio_of_medians": round(median(a) / median(b), 3),
        "overhead_median_ms": med([x - y for x, y in pairs]),
        "a_phases_median_ms": a_phases,
        "b_phases_median_ms": b_phases,
        "a_extra_work_median_ms": extra,
        "copy_out_mb_per_s": round(size_mb / median(copy_out), 1),
        "archive_chunks": len(bench.chunks),
        "archive_chunk_mean_bytes": round(sum(bench.chunks) / max(1, len(bench.chunks))),
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
    size = f["size_bytes"] / MB
    print(
        f"artifact transfer: {size:g} MB from {f['source']} ({PRODUCER}) to {CONSUMER}"
        f" (reads with {f['read']}; B's volume: {f['raw_volume']});"
        f" {f['pairs']} pairs after {f['warmup']} warm-up, interleaved"
    )
    how = "copy_tree" if f["volume_store"] == "host" else "archive API -> extract: tar"
    print(f"  A's volumes: {f['volume_store']} (--volumes {f['volumes']}).")
    print(f"  NOTE: A also copies the artifact to the host ({how},")
    print("        sha256, write under the run's directory): part of its work and of its time.")
    print(f"  A sandbox-orch run_plan   median {f['a_median_ms']:8.1f} ms"
          f"   min {f['a_min_ms']:8.1f}   max {f['a_max_ms']:8.1f}")  # fmt: skip
    print(f"  B raw docker SDK          median {f['b_median_ms']:8.1f} ms"
          f"   min {f['b_min_ms']:8.1f}   max {f['b_max_ms']:8.1f}")  # fmt: skip
    print(f"  ratio A/B: median of per-pair ratios {f['ratio_median_of_pairs']:.3f}"
          f", ratio of medians {f['ratio_of_medians']:.3f}; per pair {f['ratios']}")  # fmt: skip
    print(f"  target: at most {f['target']:.2f} (median of per-pair ratios) ->"
          f" {verdict(f['passed'])}")  # fmt: skip
    print(f"  peak RSS of this process: {f['peak_rss_mb']} MB")
    print("  A phases (median ms per run):")
    for name, value in f["a_phases_median_ms"].items():
        print(f"    {name:50s} {value:8.1f}")
    print(
        f"    copy-out: {f['copy_out_mb_per_s']} MB/s; the archive arrived in"
        f" {f['archive_chunks']} chunks of {f['archive_chunk_mean_bytes']} bytes on average"
    )
    print("  B phases (median ms per run):")
    for name, value in f["b_phases_median_ms"].items():
        print(f"    {name:50s} {value:8.1f}")
    print(f"  A's work that B does not do (median ms; A-B overhead {f['overhead_median_ms']} ms):")
    for name, value in f["a_extra_work_median_ms"].items():
        print(f"    {name:50s} {value:8.1f}")
    print("  engine calls (median ms per run, calls per run):      A              B")
    a, b = f["engine_calls_median"]["a"], f["engine_calls_median"]["b"]
    for name in dict.fromkeys([*a, *b]):
        left = f"{a[name]['ms']:8.1f} x{a[name]['calls']:g}" if name in a else " " * 10
        right = f"{b[name]['ms']:8.1f} x{b[name]['calls']:g}" if name in b else ""
        print(f"    {name:40s} {left:>14s} {right:>14s}")
    print(json.dumps(figures, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="measured pairs (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured pairs first (1)")
    parser.add_argument("--size", type=int, default=SIZE, help="artifact bytes (100 MiB)")
    parser.add_argument("--source", choices=("zero", "urandom"), default="zero")
    parser.add_argument("--read", choices=("cat", "sha256sum"), default="cat")
    parser.add_argument(
        "--raw-volume",
        choices=("disk", "shm"),
        default="disk",
        help="B's volume: a plain local one (disk), or one bound to /dev/shm (memory)",
    )
    parser.add_argument(
        "--volumes",
        choices=get_args(VolumeSetting),
        default="auto",
        help="where A keeps artifact volumes (DockerBackend's setting; default auto)",
    )
    parser.add_argument("--policy", type=Path, default=REPO / "policies" / "default.yaml")
    parser.add_argument("--strict", action="store_true", help="exit 1 if the target is missed")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile extract over 2 extra A runs, and time it with no engine",
    )
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.warmup < 0 or args.size < 1:
        parser.error("--pairs and --size must be at least 1 and --warmup at least 0")

    with tempfile.TemporaryDirectory(prefix="bench-artifact-transfer-") as tmp:
        os.environ[store.HOME_ENV] = tmp  # results.json (and the host copies) land here
        bench = Bench(Path(tmp), args)
        leaked: tuple[list, list] = ([], [])
        profile, offline = None, {}
        try:
            with asyncio.Runner() as runner:
                bench.pairs(runner, args.warmup, keep=False)
                pairs = bench.pairs(runner, args.pairs, keep=True)
                bench.store = runner.run(bench.backend.volume_store())
                leaked = bench.leftovers()  # before our sweep: did anything escape cleanup?
                figures = summarise(bench, pairs, args)
                if args.profile:
                    profile = bench.profile(runner, 2)
                    offline = offline_copy_out(args.size, Path(tmp))
        finally:
            swept = sweep_containers(bench.api, OWNER_LABEL, bench.owner)
            swept += sweep_volumes(bench.api, OWNER_LABEL, bench.owner)
            remaining = bench.leftovers()
            bench.close()
        figures["leaked_containers"], figures["leaked_volumes"] = map(len, leaked)
    report(figures)
    if profile:
        print("cProfile of extract (worker thread), 2 extra A runs, by own time:")
        print(profile)
        print(
            "copy-out's Python side with no engine (archive in memory, 32 KiB chunks; best of 3):"
        )
        for name, value in offline.items():
            print(f"  {name:40s} {value:8.1f} ms")
    assert not any(remaining), f"left after the sweep: {remaining}"
    if any(leaked) or swept:
        print(f"BROKEN: {sum(map(len, leaked)) or swept} resource(s) were left", file=sys.stderr)
        return 2
    if args.strict and not figures["passed"]:
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
