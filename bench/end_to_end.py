"""`sandbox-orch run configs/examples/hello.yaml` as a whole process, against the shell
script a careful user would write instead: the same three containers with `docker run --rm`
and identical hardening.

    .venv/bin/python bench/end_to_end.py [--pairs N] [--warmup W] [--cli CMD] [--strict]

A  the command line, as a user runs it: the virtual environment's `sandbox-orch` console
   script, `run hello.yaml` (`--cli` gives another command, e.g. `--cli "$PWD/.venv/bin/python
   -m sandbox_orch"` for a worktree, with this checkout first on PYTHONPATH), stdout and
   stderr to pipes (not a terminal), SANDBOX_ORCH_HOME in a temporary directory, the
   default policy, PYTHONDONTWRITEBYTECODE cleared (the warm-up pair writes the bytecode
   caches an installed tool has).
B  `sh script.sh`: greet first, then whoami and python in parallel (as the workflow's needs
   say), each `docker run --rm` with the flags derived from
   `sandbox_orch.backend.settings.container_kwargs` for the spec the plan admitted
   (`NodeRunner.spec`): the same image, command, user, environment, labels, hostname,
   read-only root, cap-drop ALL, no-new-privileges, network none, private ipc and cgroupns,
   pids/memory/swap/cpus limits, tmpfs, ulimits, init, log driver and runtime. A setting the
   converter does not know stops the benchmark (exit 2), so the two sides cannot drift
   apart silently, and before measuring, each node's flags are given to `docker create`
   and the container is read back with sandbox-orch's own check (`readback.differences`,
   what the backend does after every create): any setting that differs stops the
   benchmark, except NetworkDisabled, which the docker CLI cannot set (both sides have
   network none). The script is written afresh per run (new run id, unique names).

One warm-up pair, then `--pairs` pairs interleaved A, B, A, B, ... Per run: the wall time
(spawn to exit) and the CPU time of the child and everything it waited for (user + system
from `os.wait4`: for B the shell and its docker CLIs). The engine's own CPU (dockerd,
containerd, the shims) is not counted on either side. Both must exit 0 and print every
node's output (checked).

Target: A / B wall time at most 1.0 (median of the per-pair ratios; the issue measured 2.1
before the command line was made lazy and containers were prepared ahead).

Exit status: 0, or 1 when --strict is given and the target is missed, or 2 when the
benchmark itself broke (a run failed, an output was missing, or containers were left).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `sandbox_orch` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    containers_labelled,
    installed_env,
    median,
    run_main,
    sweep_containers,
    timed_child,
    verdict,
)
from sandbox_orch import orchestrator, store
from sandbox_orch.backend import readback
from sandbox_orch.backend.docker import DockerBackend, connect
from sandbox_orch.backend.settings import container_kwargs
from sandbox_orch.execution import OWNER_LABEL, NodeRunner
from sandbox_orch.policy import DEFAULT_POLICY, POLICY_ENV

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / "configs" / "examples" / "hello.yaml"
TARGET = 1.0
# The docker CLI has no flag for Config.NetworkDisabled; `--network=none` (which both sides
# set) already leaves the container nothing but loopback, so the two are equivalent.
CLI_CANNOT = frozenset({"NetworkDisabled"})
# What each side must print (hello.yaml's three nodes).
EXPECTED = ("hello from a sandbox", "uid=10001 gid=10001", "python 3.")


# --- container_kwargs -> docker run flags ---------------------------------------------------


def run_flags(kwargs: dict[str, Any]) -> list[str]:
    """`docker run` arguments equal to `create_container(**kwargs)`. Unknown or unsupported
    settings raise: the script must never run a container hardened differently."""
    kw = dict(kwargs)
    host = dict(kw.pop("host_config"))
    flags = ["--rm", "--name", kw.pop("name"), "--hostname", kw.pop("hostname")]
    flags += ["--user", kw.pop("user")]
    for key, value in kw.pop("environment").items():
        flags += ["--env", f"{key}={value}"]
    for key, value in kw.pop("labels").items():
        flags += ["--label", f"{key}={value}"]
    workdir = kw.pop("working_dir")
    if workdir:
        flags += ["--workdir", workdir]
    if not kw.pop("network_disabled"):  # network none (below) is what disables it
        raise ValueError("network_disabled is False")
    if kw.pop("stdin_open") or kw.pop("tty"):
        raise ValueError("a node with stdin or a terminal has no `docker run` equivalent here")
    image, command = kw.pop("image"), kw.pop("command")
    # `docker run --entrypoint` takes the program only; its arguments lead the command.
    program, *leading = kw.pop("entrypoint")
    flags += ["--entrypoint", program]
    command = [*leading, *command]
    if kw:
        raise ValueError(f"settings the converter does not know: {sorted(kw)}")
    flags += _host_flags(host)
    return [*flags, image, *command]


def _host_flags(host: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    take = host.pop
    flags += [f"--cap-drop={cap}" for cap in take("CapDrop")]
    flags += [f"--security-opt={opt}" for opt in take("SecurityOpt")]
    if take("ReadonlyRootfs"):
        flags.append("--read-only")
    flags += [f"--tmpfs={path}:{options}" for path, options in take("Tmpfs").items()]
    flags += [f"--network={take('NetworkMode')}", f"--ipc={take('IpcMode')}"]
    flags.append(f"--cgroupns={take('CgroupnsMode')}")
    if take("Privileged", False):
        raise ValueError("privileged")
    flags += [f"--pids-limit={take('PidsLimit')}", f"--memory={take('Memory')}b"]
    flags += [f"--memory-swap={take('MemorySwap')}b", f"--cpus={take('NanoCpus') / 1e9:g}"]
    flags += [f"--ulimit={u['Name']}={u['Soft']}:{u['Hard']}" for u in take("Ulimits")]
    if take("Init", False):
        raise ValueError("the engine's init (the images bring their own, as the entrypoint)")
    log = take("LogConfig")
    flags.append(f"--log-driver={log['Type']}")
    flags += [f"--log-opt={k}={v}" for k, v in (log.get("Config") or {}).items()]
    if take("RestartPolicy") != {"Name": "no"}:
        raise ValueError("a restart policy other than no")
    flags.append(f"--runtime={take('Runtime')}")
    if take("Mounts"):
        raise ValueError("mounts: hello.yaml's sandboxes have none; convert them first")
    if host:
        raise ValueError(f"host settings the converter does not know: {sorted(host)}")
    return flags


class Script:
    """The equivalent script, from the plan the CLI would run (same policy)."""

    def __init__(self, workflow: Path, policy: Path, owner: str) -> None:
        self.prepared = orchestrator.prepare(workflow, policy)
        self.owner = owner
        self.backend = DockerBackend(connect())  # create_host_config only: no engine call
        levels: dict[str, int] = {}
        for name, node in self.prepared.plan.nodes.items():  # the plan is in needs order
            levels[name] = 1 + max((levels[e.source] for e in node.needs), default=-1)
        self.levels = [
            [n for n, level in levels.items() if level == depth]
            for depth in range(max(levels.values()) + 1)
        ]

    def specs(self) -> list[list[dict[str, Any]]]:
        """create_container's arguments per node, level by level, under a new run id (so
        every container's name is unique)."""
        runner = NodeRunner(self.backend, store.new_run_id(), self.owner)
        plan, sandboxes = self.prepared.plan, self.prepared.sandboxes
        return [
            [container_kwargs(runner.spec(plan.nodes[n], sandboxes[n], 1), self.api) for n in level]
            for level in self.levels
        ]

    def check(self) -> None:
        """`docker create` with each node's flags (without --rm, which the engine records as
        AutoRemove), read back with sandbox-orch's own check (readback.differences):
        the script's containers have the settings sandbox-orch's would."""
        for kwargs in (kw for level in self.specs() for kw in level):
            flags = [f for f in run_flags(kwargs) if f != "--rm"]
            made = subprocess.run(["docker", "create", *flags], capture_output=True, text=True)
            if made.returncode != 0:
                raise RuntimeError(f"docker create failed: {made.stderr.strip()}")
            container_id = made.stdout.strip()
            try:
                attrs = self.api.inspect_container(container_id)
                image = self.api.inspect_image(kwargs["image"])
                env = readback.environment_of((image.get("Config") or {}).get("Env"))
                differ = readback.differences(kwargs, attrs, env)
            finally:
                self.api.remove_container(container_id, force=True, v=True)
            if set(differ) - CLI_CANNOT:
                raise RuntimeError(f"the script's {kwargs['name']} differs in: {differ}")

    def text(self) -> str:
        """A fresh script: a new run id, so every container's name is unique."""
        lines = ["set -e"]
        for level in self.specs():
            for index, kwargs in enumerate(level):
                run = shlex.join(["docker", "run", *run_flags(kwargs)])
                lines.append(run if len(level) == 1 else f"{run} & p{index}=$!")
            if len(level) > 1:  # set -e: a failed wait fails the script
                lines += [f"wait $p{index}" for index in range(len(level))]
        return "\n".join(lines) + "\n"

    @property
    def api(self) -> Any:
        return self.backend.client.api

    def close(self) -> None:
        asyncio.run(self.backend.close())


# --- the benchmark --------------------------------------------------------------------------


def results_of(out: str) -> dict[str, Any]:
    """The run's results.json (the CLI prints where it is); {} when it printed none."""
    lines = [line for line in out.splitlines() if line.startswith("results: ")]
    return json.loads(Path(lines[-1].removeprefix("results: ")).read_text()) if lines else {}


def printed(results: dict[str, Any]) -> str:
    """What the run's nodes printed: the CLI shows events, the results keep the output."""
    return "".join(node["stdout_tail"] for node in (results.get("nodes") or {}).values())


def measure(args: argparse.Namespace, script: Script, home: Path) -> dict[str, list[float]]:
    # The default policy; the warm-up pair writes bytecode caches, as an installed tool has.
    env = installed_env({k: v for k, v in os.environ.items() if k != POLICY_ENV})
    env[store.HOME_ENV] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cli = [*shlex.split(args.cli), "run", str(WORKFLOW)]
    path = home / "hello.sh"
    runs: dict[str, list[float]] = {
        "a_wall": [],
        "a_cpu": [],
        "a_run": [],
        "b_wall": [],
        "b_cpu": [],
    }
    for pair in range(args.warmup + args.pairs):
        path.write_text(script.text())
        for side, argv in (("a", cli), ("b", ["sh", str(path)])):
            out, code, wall, cpu = timed_child(argv, env)
            results = results_of(out) if side == "a" else {}
            missing = [e for e in EXPECTED if e not in (printed(results) if side == "a" else out)]
            if code != 0 or missing:
                raise RuntimeError(f"{side}: {shlex.join(argv)} exited {code}, missing {missing}")
            if pair >= args.warmup:
                runs[f"{side}_wall"].append(wall)
                runs[f"{side}_cpu"].append(cpu)
                if side == "a":  # the run itself, from run_started to run_finished
                    runs["a_run"].append(results["duration_s"])
        if pair >= args.warmup:
            print(
                f"  pair {pair - args.warmup + 1}: A {runs['a_wall'][-1]:.3f} s"
                f" (cpu {runs['a_cpu'][-1]:.3f}), B {runs['b_wall'][-1]:.3f} s"
                f" (cpu {runs['b_cpu'][-1]:.3f})",
                flush=True,
            )
    return runs


def summarise(args: argparse.Namespace, runs: dict[str, list[float]]) -> dict[str, Any]:
    ratios = [a / b for a, b in zip(runs["a_wall"], runs["b_wall"], strict=True)]
    cpu_ratios = [a / b for a, b in zip(runs["a_cpu"], runs["b_cpu"], strict=True)]
    return {
        "bench": "end_to_end",
        "pairs": args.pairs,
        "cli": args.cli,
        "a_wall_s": round(median(runs["a_wall"]), 3),
        "b_wall_s": round(median(runs["b_wall"]), 3),
        "a_cpu_s": round(median(runs["a_cpu"]), 3),
        "a_run_s": round(median(runs["a_run"]), 3),
        "a_outside_run_s": round(
            median([w - r for w, r in zip(runs["a_wall"], runs["a_run"], strict=True)]), 3
        ),
        "b_cpu_s": round(median(runs["b_cpu"]), 3),
        "wall_ratio": round(median(ratios), 3),
        "wall_ratio_of_medians": round(median(runs["a_wall"]) / median(runs["b_wall"]), 3),
        "cpu_ratio": round(median(cpu_ratios), 3),
        "runs": {k: [round(v, 3) for v in values] for k, values in runs.items()},
        "target": TARGET,
        "passed": median(ratios) <= TARGET,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def report(f: dict[str, Any]) -> None:
    print(f"end to end: `{f['cli']} run hello.yaml` (A) against `docker run --rm` x3 in sh (B)")
    print(f"  {f['pairs']} interleaved pairs after warm-up; medians; CPU = the child's and its")
    print("  children's user+system (os.wait4), the engine's own CPU not counted")
    print(f"  A sandbox-orch   wall {f['a_wall_s']:.3f} s   cpu {f['a_cpu_s']:.3f} s")
    print(
        f"    of which the run (results duration_s) {f['a_run_s']:.3f} s; outside it (start-up,"
        f" imports, validation, preflight, exit) {f['a_outside_run_s']:.3f} s"
    )
    print(f"  B docker run sh  wall {f['b_wall_s']:.3f} s   cpu {f['b_cpu_s']:.3f} s")
    print(
        f"  wall A/B: median of per-pair ratios {f['wall_ratio']:.3f}, ratio of medians"
        f" {f['wall_ratio_of_medians']:.3f}; cpu A/B {f['cpu_ratio']:.2f}"
    )
    print(f"  target: wall A/B at most {f['target']:g} -> {verdict(f['passed'])}")
    print(json.dumps(f, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=7, help="measured pairs (7)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured pairs first (1)")
    parser.add_argument(
        "--cli",
        default=shlex.quote(str(Path(sys.executable).parent / "sandbox-orch")),
        help="the command line to measure (default: the venv's sandbox-orch script)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.warmup < 0:
        parser.error("--pairs >= 1 and --warmup >= 0")

    owner = orchestrator.owner_token()
    with tempfile.TemporaryDirectory(prefix="bench-end-to-end-") as tmp:
        script = Script(WORKFLOW, DEFAULT_POLICY, owner)
        try:
            script.check()
            figures = summarise(args, measure(args, script, Path(tmp)))
            leaked = containers_labelled(script.api, OWNER_LABEL, owner)  # the script's, --rm
        finally:
            sweep_containers(script.api, OWNER_LABEL, owner)
            script.close()
    report(figures)
    if leaked:
        print(f"BROKEN: {len(leaked)} container(s) were left behind", file=sys.stderr)
        return 2
    if args.strict and not figures["passed"]:
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
