"""Small helpers shared by the benchmarks: statistics, memory (peak, current, sampled, and a
child process's peak), engine call timing, run-time wrapping of coroutine methods, profiles
and label-based sweeps of containers and volumes. Nothing here imports sandbox_orch, so any
benchmark can use it."""

from __future__ import annotations

import cProfile
import functools
import inspect
import io
import math
import os
import pstats
import resource
import statistics
import subprocess
import sys
import threading
import time
import types
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# The APIClient methods a node's life touches (run, preflight and cleanup sweep).
ENGINE_CALLS = (
    "create_container",
    "attach",
    "start",
    "wait",
    "inspect_container",
    "kill",
    "remove_container",
    "inspect_image",
    "info",
    "containers",
    "networks",
    "volumes",
)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def p90(values: Sequence[float]) -> float:
    """Nearest-rank 90th percentile: the smallest value at or above 90% of the samples."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Buckets:
    """Named durations accumulated per iteration, from any thread.

    `start()` opens an iteration; `add(name, seconds)` adds to it; `finish()` closes it.
    The per-iteration totals (and call counts) stay available for medians afterwards.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[str, float] | None = None
        self._counts: dict[str, int] | None = None
        self.iterations: list[dict[str, float]] = []
        self.counts: list[dict[str, int]] = []

    def start(self) -> None:
        with self._lock:
            self._current, self._counts = defaultdict(float), defaultdict(int)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            if self._current is not None and self._counts is not None:
                self._current[name] += seconds
                self._counts[name] += 1

    def finish(self, keep: bool = True) -> dict[str, float]:
        with self._lock:
            current, counts = dict(self._current or {}), dict(self._counts or {})
            self._current = self._counts = None
        if keep:
            self.iterations.append(current)
            self.counts.append(counts)
        return current

    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for iteration in self.iterations:
            seen.update(dict.fromkeys(iteration))
        return list(seen)

    def medians(self) -> dict[str, float]:
        """Median seconds per name (an iteration without the name counts as 0)."""
        return {n: median([i.get(n, 0.0) for i in self.iterations]) for n in self.names()}

    def median_counts(self) -> dict[str, float]:
        return {n: median([c.get(n, 0) for c in self.counts]) for n in self.names()}


def time_api_calls(
    api: Any,
    buckets: Buckets,
    names: Iterable[str] = ENGINE_CALLS,
    key: Callable[[str, tuple[Any, ...], dict[str, Any]], str] | None = None,
) -> None:
    """Wrap `api`'s methods (on this instance only) so each call's wall time, success or
    not, lands in `buckets`, under the method's name or under `key(name, args, kwargs)`
    (e.g. to tell apart the containers a call is about). A wrapper costs about a
    microsecond.

    Only outermost calls are recorded: the SDK's `attach` calls `inspect_container`
    itself (to learn whether the container has a TTY), and that time is part of attach.
    """
    depth = threading.local()
    for name in names:
        original = getattr(api, name)
        setattr(api, name, _timed(name, original, buckets, depth, key))


def _timed(
    name: str,
    fn: Callable[..., Any],
    buckets: Buckets,
    depth: threading.local,
    key: Callable[[str, tuple[Any, ...], dict[str, Any]], str] | None = None,
) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        level = getattr(depth, "level", 0)
        depth.level = level + 1
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            depth.level = level
            if level == 0:
                label = name if key is None else key(name, args, kwargs)
                buckets.add(label, time.perf_counter() - began)

    return timed


def containers_labelled(api: Any, label: str, value: str) -> list[dict[str, Any]]:
    return api.containers(all=True, filters={"label": f"{label}={value}"})


def sweep_containers(api: Any, label: str, value: str) -> int:
    """Force-remove every container carrying label=value; return how many there were."""
    found = containers_labelled(api, label, value)
    for container in found:
        try:
            api.remove_container(container["Id"], force=True, v=True)
        except Exception as error:  # gone meanwhile is fine; anything else is re-checked
            if "No such container" not in str(error):
                raise
    return len(found)


class Patches:
    """Callables wrapped at run time and put back by `undo()`: the benchmarks observe
    sandbox_orch without editing it. A wrapper costs about a microsecond."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def around(
        self,
        owner: Any,
        attr: str,
        record: Callable[[tuple[Any, ...], dict[str, Any], float, float, Any], None],
    ) -> None:
        """Replace `owner.attr` (a method or coroutine method of a class or an instance,
        or a module global) so that, once each call ends, `record(args, kwargs, began,
        ended, result)` is called with perf_counter times (result is None when the call
        raised; the error propagates)."""
        original = getattr(owner, attr)
        # On an instance whose class provides the method, undo drops our attribute.
        shadows_class = not isinstance(owner, type | types.ModuleType) and attr not in vars(owner)
        wrapper: Callable[..., Any]
        if inspect.iscoroutinefunction(original):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                began, result = time.perf_counter(), None
                try:
                    result = await original(*args, **kwargs)
                    return result
                finally:
                    record(args, kwargs, began, time.perf_counter(), result)

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                began, result = time.perf_counter(), None
                try:
                    result = original(*args, **kwargs)
                    return result
                finally:
                    record(args, kwargs, began, time.perf_counter(), result)

        if not isinstance(original, type):  # a class keeps its own name and docs
            functools.update_wrapper(wrapper, original)
        setattr(owner, attr, wrapper)
        if shadows_class:
            self._undo.append(lambda: delattr(owner, attr))
        else:
            self._undo.append(lambda: setattr(owner, attr, original))

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


def profile_text(profiler: cProfile.Profile, sort: str = "tottime", limit: int = 20) -> str:
    """The top `limit` functions of a finished profile, as printable text."""
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats(sort).print_stats(limit)
    return stream.getvalue()


def volumes_labelled(api: Any, label: str, value: str) -> list[dict[str, Any]]:
    return api.volumes(filters={"label": f"{label}={value}"}).get("Volumes") or []


def sweep_volumes(api: Any, label: str, value: str) -> int:
    """Remove every volume carrying label=value (sweep containers first: a volume in use
    cannot go); return how many there were."""
    found = volumes_labelled(api, label, value)
    for volume in found:
        try:
            api.remove_volume(volume["Name"], force=True)
        except Exception as error:  # gone meanwhile is fine; anything else is re-checked
            if "no such volume" not in str(error).lower():
                raise
    return len(found)


def rss_mb() -> float:
    """This process's resident set size now (from /proc/self/statm, Linux)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 1024**2


class RssSampler:
    """A daemon thread that samples this process's RSS every `interval` seconds and keeps
    the peak. Sampling can miss a short spike; `os.wait4`'s ru_maxrss (see `run_child`)
    cannot, so use both."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = rss_mb()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_mb())
            self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def run_child(
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> tuple[str, int, float]:
    """Run a child process to its end: (its stdout, its exit code, its peak RSS in MB).

    The peak is the child's own ru_maxrss from `os.wait4` (the kernel's high-water mark of
    its resident set over its whole life, not a sample). stderr passes through.
    `on_start(pid)` is called while the child runs (e.g. to learn its start time).
    """
    child = subprocess.Popen(list(argv), stdout=subprocess.PIPE, env=env, text=True)
    if on_start is not None:
        try:
            on_start(child.pid)
        except BaseException:
            child.kill()
            raise
    out, usage = _read_and_reap(child)
    return out, child.returncode, round(usage.ru_maxrss / 1024, 1)


def _read_and_reap(child: subprocess.Popen[str]) -> tuple[str, resource.struct_rusage]:
    """A child's whole stdout, then the child reaped here (not by Popen), its return code
    set, and its resource usage (os.wait4: its own and its waited-for descendants')."""
    assert child.stdout is not None
    try:
        out = child.stdout.read()
    except BaseException:
        child.kill()
        raise
    finally:
        child.stdout.close()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return out, usage


def run_main(main: Callable[[], int]) -> None:
    """Exit with main's code (0, or 1 for a missed target under --strict); 2 when the
    benchmark itself broke, which is never to be read as a missed target."""
    try:
        sys.exit(main())
    except Exception:
        import traceback

        traceback.print_exc()
        sys.exit(2)


@dataclass(frozen=True)
class RawRun:
    exit_code: int
    oom_killed: bool
    received: int  # bytes of stdout and stderr together
    stdout: bytes = b""  # only when asked to keep it


def raw_container_run(api: Any, spec: Any, keep_stdout: bool = False) -> RawRun:
    """One container through the raw docker SDK with sandbox-orch's exact settings
    (`container_kwargs`): create, attach before start, drain on a thread, wait, inspect,
    remove. The baseline the benchmarks compare sandbox-orch with."""
    from sandbox_orch.backend.docker import container_kwargs

    container_id = api.create_container(**container_kwargs(spec, api))["Id"]
    received, kept = [0], []
    try:
        frames = api.attach(container_id, stdout=True, stderr=True, stream=True, demux=True)

        def drain() -> None:
            for out, err in frames:
                received[0] += len(out or b"") + len(err or b"")
                if keep_stdout and out:
                    kept.append(out)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        api.start(container_id)
        exit_code = api.wait(container_id)["StatusCode"]
        reader.join()
        oom = bool(api.inspect_container(container_id)["State"]["OOMKilled"])
    finally:
        api.remove_container(container_id, force=True, v=True)
    return RawRun(exit_code, oom, received[0], b"".join(kept))


def policy_with_runtime(policy: Any, runtime: str, directory: Any) -> Any:
    """A copy of `policy` (a policy file) in `directory` whose `oci_runtime` is `runtime`
    (as tests/integration/conftest.py makes them): the same policy under runc or gVisor."""
    from pathlib import Path

    text = Path(policy).read_text()
    for known in ("runc", "runsc"):
        text = text.replace(f"oci_runtime: {known}", f"oci_runtime: {runtime}")
    if f"oci_runtime: {runtime}" not in text:
        raise ValueError(f"{policy} names no oci_runtime to replace")
    path = Path(directory) / f"{Path(policy).stem}-{runtime}.yaml"
    path.write_text(text)
    return path


def installed_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for a child that runs Python as an installed tool does: allowed to write its
    bytecode caches (this machine's environment sets PYTHONDONTWRITEBYTECODE, so an edited
    checkout would otherwise compile its changed modules in every measured process)."""
    return {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed_child(
    argv: Sequence[str], env: dict[str, str] | None = None
) -> tuple[str, int, float, float]:
    """Run a child process to its end: (its stdout and stderr, its exit code, its wall time
    from spawn to exit, and its CPU time in seconds). The CPU time is user + system from
    `os.wait4`, which includes every descendant the child waited for (a shell's commands)."""
    began = time.perf_counter()
    child = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    out, usage = _read_and_reap(child)
    wall = time.perf_counter() - began
    return out, child.returncode, wall, usage.ru_utime + usage.ru_stime
