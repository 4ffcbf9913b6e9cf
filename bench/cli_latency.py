"""How fast the command line answers, as whole processes, beside the docker CLI.

    .venv/bin/python bench/cli_latency.py [--rounds N] [--warmup W] [--via script|module]
                                          [--no-bytecode-cache] [--strict]

Each round runs every command once, in turn (so drift on a shared machine hits all of
them alike), as a new process with stdout and stderr to /dev/null; the figure is the
median wall time over the rounds, after unmeasured warm-up rounds (the minimum, p90 and
median CPU time are printed beside it: on a busy machine the minimum is the steadiest).
The commands:
`sandbox-orch --help`, `--version`, `validate configs/examples/hello.yaml` and
`plan configs/examples/hello.yaml`, against `docker --help` and `docker version` (which
asks the engine), and `python -c pass` (the interpreter's own start, the floor).

Targets: `--help` and `--version` under 150 ms, `validate` under 300 ms (the median).

sandbox-orch runs as users type it: the virtual environment's `sandbox-orch` console
script (it runs the installed copy: this checkout, for the editable install of `make
venv`); `--via module` runs `python -m sandbox_orch` from this checkout (PYTHONPATH) with
the interpreter running this benchmark instead (for a worktree whose code the venv does
not install). `-m` costs more than it seems: 50-80 ms here (runpy, the package imported
as a package first). The warm-up writes Python's bytecode
caches, as an installed package has them (PYTHONDONTWRITEBYTECODE is cleared for the
children); `--no-bytecode-cache` measures without any (the children read and write caches
only in an empty temporary PYTHONPYCACHEPREFIX, and write none: every module, the
libraries' too, is compiled in every process; the worst case).

Exit status: 0, or 1 when --strict is given and a target is missed, or 2 when the
benchmark itself broke (a command did not exit 0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import installed_env, median, ms, p90, run_main, verdict

REPO = Path(__file__).resolve().parent.parent
HELLO = "configs/examples/hello.yaml"
HELP_TARGET = 0.150  # seconds: --help and --version
VALIDATE_TARGET = 0.300


@dataclass
class Command:
    label: str
    argv: list[str]
    target: float | None = None
    wall: list[float] | None = None
    cpu: list[float] | None = None


def commands(sandbox_orch: list[str], with_docker: bool) -> list[Command]:
    found = [
        Command("sandbox-orch --help", [*sandbox_orch, "--help"], HELP_TARGET),
        Command("sandbox-orch --version", [*sandbox_orch, "--version"], HELP_TARGET),
        Command(f"sandbox-orch validate {HELLO}", [*sandbox_orch, "validate", HELLO],
                VALIDATE_TARGET),
        Command(f"sandbox-orch plan {HELLO}", [*sandbox_orch, "plan", HELLO]),
        Command("python -c pass", [sys.executable, "-c", "pass"]),
    ]  # fmt: skip
    if with_docker:
        found += [
            Command("docker --help", ["docker", "--help"]),
            Command("docker version", ["docker", "version"]),
        ]
    return found


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall and CPU (user + system) seconds of one process, and its exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    code = subprocess.call(
        argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, code


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "version"], capture_output=True, timeout=30)
    return done.returncode == 0


def measure(args: argparse.Namespace) -> dict:
    env = installed_env(dict(os.environ))
    if args.no_bytecode_cache:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = args.empty_cache_dir
    if args.via == "module":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        sandbox_orch = [sys.executable, "-m", "sandbox_orch"]
    else:
        sandbox_orch = [str(Path(sys.executable).parent / "sandbox-orch")]
    with_docker = docker_answers()
    table = commands(sandbox_orch, with_docker)
    for command in table:
        command.wall, command.cpu = [], []
    for round_ in range(args.warmup + args.rounds):
        # Each round in a different order: no command always follows the same one.
        shift = round_ % len(table)
        for command in table[shift:] + table[:shift]:
            wall, cpu, code = timed(command.argv, env)
            if code != 0:
                raise RuntimeError(f"`{' '.join(command.argv)}` exited {code}")
            if round_ >= args.warmup:
                command.wall.append(wall)
                command.cpu.append(cpu)
    return summarise(table, args, with_docker)


def summarise(table: list[Command], args: argparse.Namespace, with_docker: bool) -> dict:
    medians = {c.label: median(c.wall) for c in table}
    rows = {}
    for c in table:
        row = {
            "median_ms": ms(medians[c.label]),
            "min_ms": ms(min(c.wall)),
            "p90_ms": ms(p90(c.wall)),
            "cpu_median_ms": ms(median(c.cpu)),
        }
        if with_docker:
            row["x_docker_help"] = round(medians[c.label] / medians["docker --help"], 1)
            row["x_docker_version"] = round(medians[c.label] / medians["docker version"], 2)
        if c.target is not None:
            row["target_ms"] = ms(c.target)
            row["passed"] = medians[c.label] < c.target
        rows[c.label] = row
    return {
        "bench": "cli_latency",
        "rounds": args.rounds,
        "warmup": args.warmup,
        "via": args.via,
        "bytecode_cache": not args.no_bytecode_cache,
        "docker": with_docker,
        "commands": rows,
        "passed": all(r["passed"] for r in rows.values() if "passed" in r),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def report(f: dict) -> None:
    how = "python -m sandbox_orch" if f["via"] == "module" else "the sandbox-orch script"
    cache = "with" if f["bytecode_cache"] else "WITHOUT"
    print(f"cli latency: {f['rounds']} rounds (after {f['warmup']} warm-up), whole processes,"
          f" sandbox-orch as {how}, {cache} bytecode caches")  # fmt: skip
    docker = "   x docker --help   x docker version" if f["docker"] else ""
    print(f"  {'command':50s} {'median':>9s} {'min':>9s} {'p90':>9s} {'cpu':>9s}{docker}   target")
    for label, row in f["commands"].items():
        ratios = (
            f" {row['x_docker_help']:16.1f}x {row['x_docker_version']:16.2f}x"
            if f["docker"]
            else ""
        )
        target = ""
        if "target_ms" in row:
            target = f"   < {row['target_ms']:.0f} ms -> {verdict(row['passed'])}"
        times = f"{row['median_ms']:7.1f}ms {row['min_ms']:7.1f}ms {row['p90_ms']:7.1f}ms"
        print(f"  {label:50s} {times} {row['cpu_median_ms']:7.1f}ms{ratios}{target}")
    if not f["docker"]:
        print("  (docker: no CLI or no engine answering; its rows are left out)")
    print(f"  targets: --help and --version < {ms(HELP_TARGET):.0f} ms, validate"
          f" < {ms(VALIDATE_TARGET):.0f} ms (medians) -> {verdict(f['passed'])}")  # fmt: skip
    print(f"  load average at the end: {f['load_average']} on {f['cpus']} CPUs")
    print(json.dumps(f, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (2)")
    parser.add_argument(
        "--via",
        choices=["module", "script"],
        default="script",
        help="the venv's sandbox-orch script (default), or python -m sandbox_orch from here",
    )
    parser.add_argument(
        "--no-bytecode-cache", action="store_true", help="children compile every module"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")
    with tempfile.TemporaryDirectory(prefix="bench-cli-latency-") as empty:
        args.empty_cache_dir = empty
        figures = measure(args)
    report(figures)
    return 1 if args.strict and not figures["passed"] else 0


if __name__ == "__main__":
    run_main(main)
