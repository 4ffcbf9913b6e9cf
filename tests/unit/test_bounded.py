"""The evaluation worker and the bounds it enforces: time (a deadline, then the worker is
killed and replaced), memory (RLIMIT_AS), cancellation, its confinement, and that
ordinary outputs and conditions evaluate exactly as they do inline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox_orch.backend.memory import Outcome
from sandbox_orch.bounded.evaluator import Evaluator
from sandbox_orch.bounded.limits import MAX_JSON_DEPTH
from sandbox_orch.bounded.nesting import ConstantError, NestingError, check_depth, load_json
from sandbox_orch.bounded.patterns import PatternError, compile_pattern
from sandbox_orch.conditions import ConditionError, NeedsState, compile_condition, evaluate
from sandbox_orch.parsing import ParseError, parse_output
from sandbox_orch.status import NodeStatus
from sandbox_orch.workflow import ParseSpec

OK = NeedsState(success=True, failure=False, cancelled=False)
REPO = Path(__file__).resolve().parents[2]
# Quadratic in the list: 3000 elements are 9 million iterations, minutes of CEL, so any
# evaluation of it must be stopped by the deadline (it cannot finish by luck).
SLOW = compile_condition("nodes.a.outputs.xs.all(x, nodes.a.outputs.xs.all(y, y >= 0))", {"a"})
SLOW_CONTEXT = {"a": {"outputs": {"xs": list(range(3000))}}}


def gone(pid: int, within: float = 10.0) -> bool:
    """Bounded polling: the process no longer exists (or is a zombie of ours)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split()[2] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


# --- patterns (RE2) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [r"(?P<x>a)\1", r"(?=a)b", r"(?!a)b", r"(?<=a)b", r"(a{999}){999}", "x" * 5000],
)
def test_patterns_re2_cannot_run_are_refused(pattern):
    with pytest.raises(PatternError):
        compile_pattern(pattern)


def test_catastrophic_pattern_runs_in_linear_time():
    text = b"a" * (4 << 20) + b"!"
    began = time.monotonic()
    assert compile_pattern(r"(a+)+$").search(text) is None
    assert compile_pattern(r"(a|a)*b").search(text) is None
    assert time.monotonic() - began < 5  # Python's re would not finish this year


# --- JSON nesting -------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, MAX_JSON_DEPTH])
def test_json_up_to_the_limit_loads(depth):
    assert load_json("[" * depth + "]" * depth) is not None


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 900, 100_000])
def test_json_beyond_the_limit_is_refused_with_one_message(depth):
    with pytest.raises(NestingError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        load_json("[" * depth + "]" * depth)


def test_depth_counts_objects_and_arrays_and_empty_ones():
    check_depth({"a": {"b": [1, {}]}}, 4)
    with pytest.raises(NestingError):
        check_depth({"a": {"b": [1, {}]}}, 3)
    check_depth([[]], 2)
    with pytest.raises(NestingError):
        check_depth([[]], 1)
    check_depth("text", 0)


@pytest.mark.parametrize("name", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_python_reads_but_json_has_not_are_refused(name):
    with pytest.raises(ConstantError, match=f"^holds {name}, which is not a JSON value$"):
        load_json(f'{{"a": [1, {name}]}}')
    with pytest.raises(ParseError) as refused:
        parse_output(ParseSpec(format="json"), f'log\n{{"x": {name}}}\n'.encode())
    assert str(refused.value) == f"json parser: the value holds {name}, which is not a JSON value"


def test_a_float_past_the_double_range_is_refused_not_read_as_infinity():
    # json reads 1e999 as inf without calling parse_constant: it is refused all the same.
    with pytest.raises(ParseError) as refused:
        parse_output(ParseSpec(format="json"), b'{"x": -1e999}')
    assert str(refused.value) == "json parser: the value holds -1e999, beyond the range of a double"
    assert load_json("[1e308, -1.5, 2]") == [1e308, -1.5, 2]


def test_depth_check_is_fast_on_wide_values():
    wide = [{"k": [i]} for i in range(500_000)]
    began = time.monotonic()
    check_depth(wide)
    assert time.monotonic() - began < 5


# --- the worker: same answers as inline -----------------------------------------------------

ORDINARY_OUTPUTS = [
    (ParseSpec(format="json"), b'log\n{"coverage": 91, "files": ["a", "b"]}\n'),
    (ParseSpec(format="json"), b'{"big": 1e308, "deep": [[[[1]]]], "u": "\\u00e9"}'),
    (ParseSpec(format="regex", pattern=r"(?P<file>[^:\s]+):(?P<line>\d+)"), b"a.py:3\n"),
    (ParseSpec(format="regex", pattern=r"(?P<w>\w+)=(?P<v>é+)?", all=True), "x=éé y=".encode()),
    (ParseSpec(format="claude"), b'{"type": "result", "result": "ok", "num_turns": 2}\n'),
    (ParseSpec(format="codex"), b'{"type": "turn.completed", "usage": {"input_tokens": 5}}\n'),
]

ORDINARY_CONDITIONS = [
    ("nodes.a.outputs.coverage > 80", {"a": {"outputs": {"coverage": 91}}}),
    ("nodes.a.outputs.xs.exists(x, x == 'b')", {"a": {"outputs": {"xs": ["a", "b"]}}}),
    ("nodes.a.outputs.xs.map(x, x * 2).filter(y, y > 2) == [4, 6]",
     {"a": {"outputs": {"xs": [1, 2, 3]}}}),
    ("size(nodes) == 1 && nodes.a.status == 'succeeded'",
     {"a": {"status": "succeeded", "outputs": {}}}),
    ("has(nodes.a.outputs.x) || failure()", {"a": {"outputs": {}}}),
]  # fmt: skip


def test_worker_parses_exactly_as_inline():
    async def go():
        evaluator = Evaluator(seconds=30)
        try:
            for spec, out in ORDINARY_OUTPUTS:
                inline = parse_output(spec, out, True, 1 << 20)
                bounded = await evaluator.parse(spec, out, True, 1 << 20)
                assert json.dumps(bounded.outputs) == json.dumps(inline.outputs), spec
                assert bounded.usage == inline.usage
            with pytest.raises(ParseError, match="no match for"):
                await evaluator.parse(ParseSpec(format="regex", pattern="(?P<x>z)"), b"abc")
        finally:
            await evaluator.close()

    asyncio.run(go())


def test_worker_judges_conditions_exactly_as_inline():
    async def go():
        evaluator = Evaluator(seconds=30)
        try:
            for source, context in ORDINARY_CONDITIONS:
                condition = compile_condition(source, set(context))
                assert not condition.inline
                for state in (OK, NeedsState(False, True, False)):
                    inline = evaluate(condition, context, state)
                    assert await evaluator.condition(condition, context, state) is inline
            with pytest.raises(ConditionError, match="no such member"):
                missing = compile_condition("nodes.a.outputs.nope == 1", {"a"})
                await evaluator.condition(missing, {"a": {"outputs": {}}}, OK)
        finally:
            await evaluator.close()
        assert evaluator.started == 1  # one worker served them all

    asyncio.run(go())


# --- time, memory, cancellation -------------------------------------------------------------


def test_an_overrunning_evaluation_is_stopped_at_its_deadline_without_blocking_the_loop():
    async def go():
        evaluator = Evaluator(seconds=2)
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticker = asyncio.create_task(tick())
        began = time.monotonic()
        try:
            with pytest.raises(ConditionError, match=r"stopped after 2s"):
                await evaluator.condition(SLOW, SLOW_CONTEXT, OK)
            took = time.monotonic() - began
            first = evaluator.started
            # the next request gets a new worker, and the right answer
            fine = compile_condition("nodes.a.outputs.n == 1", {"a"})
            assert await evaluator.condition(fine, {"a": {"outputs": {"n": 1}}}, OK)
        finally:
            ticker.cancel()
            await evaluator.close()
        assert 2 <= took < 8
        assert ticks >= 0.5 * took / 0.05, f"the loop ticked {ticks} times in {took:.1f}s"
        assert evaluator.started == first + 1

    asyncio.run(go())


def test_a_slow_parse_fails_the_output_not_the_run():
    # A schema that passes every static check but doubles its work per level of the value.
    schema = {
        "$defs": {"n": {"properties": {"a": {"allOf": [{"$ref": "#/$defs/n"}] * 2}}}},
        "$ref": "#/$defs/n",
    }
    value = {}
    for _ in range(40):
        value = {"a": value}

    async def go():
        evaluator = Evaluator(seconds=2)
        try:
            with pytest.raises(ParseError, match=r"^json parser: evaluation stopped after 2s"):
                spec = ParseSpec(format="json", schema=schema)
                await evaluator.parse(spec, json.dumps(value).encode())
        finally:
            await evaluator.close()

    asyncio.run(go())


def test_memory_is_bounded():
    source = "[nodes.a.outputs.s]" + ".map(x, x + x + x + x + x + x + x + x)" * 6 + " == []"
    condition = compile_condition(source, {"a"})

    async def go():
        evaluator = Evaluator(output_limit=1 << 20, seconds=120)
        try:
            with pytest.raises(ConditionError, match="memory"):
                await evaluator.condition(condition, {"a": {"outputs": {"s": "x" * 65536}}}, OK)
        finally:
            await evaluator.close()

    asyncio.run(go())


def test_cancelling_an_evaluation_kills_its_worker():
    async def go():
        evaluator = Evaluator(seconds=60)
        task = asyncio.create_task(evaluator.condition(SLOW, SLOW_CONTEXT, OK))
        while evaluator.pid is None:  # started by the request itself
            await asyncio.sleep(0.01)
        pid = evaluator.pid  # set just before the request is written: no await between
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert evaluator.pid is None
        await evaluator.close()
        return pid

    assert gone(asyncio.run(go()))


def test_worker_is_confined_and_closed():
    async def go():
        evaluator = Evaluator(output_limit=1 << 20)
        evaluator.warm()
        assert await evaluator.parse(ParseSpec(format="json"), b"{}") is not None
        pid = evaluator.pid
        assert pid is not None
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        limits = Path(f"/proc/{pid}/limits").read_text()
        session = os.getsid(pid)
        await evaluator.close()
        await evaluator.close()  # twice is fine
        return pid, environ, limits, session, evaluator.memory

    pid, environ, limits, session, memory = asyncio.run(go())
    assert environ == b""  # the run's environment (and its secrets) stay with the run
    address_space = next(line for line in limits.splitlines() if "address space" in line)
    assert address_space.split()[3:5] == [str(memory), str(memory)]
    assert session == pid  # its own session: a terminal's Ctrl-C is not delivered to it
    assert gone(pid)


def test_worker_dies_with_the_run_even_when_the_run_is_killed():
    program = (
        "import asyncio, os, sys\n"
        "from sandbox_orch.bounded.evaluator import Evaluator\n"
        "from sandbox_orch.workflow import ParseSpec\n"
        "async def main():\n"
        "    e = Evaluator()\n"
        "    await e.parse(ParseSpec(format='json'), b'{}')\n"
        "    print(e.pid, flush=True)\n"
        "    os._exit(0)\n"  # no cleanup at all, as with SIGKILL
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert gone(int(proc.stdout))


def test_a_worker_that_dies_mid_evaluation_is_a_reason_and_is_replaced():
    async def go():
        evaluator = Evaluator(seconds=60)
        task = asyncio.create_task(evaluator.condition(SLOW, SLOW_CONTEXT, OK))
        while evaluator.pid is None:
            await asyncio.sleep(0.01)
        os.kill(evaluator.pid, signal.SIGKILL)  # as the kernel's OOM killer would
        # Killed by SIGKILL; asyncio's child watcher reports 255 when it lost the race
        # to reap it, so the reason names the worker's end, not always the signal.
        with pytest.raises(ConditionError, match=r"the evaluation worker (was killed|exited)"):
            await task
        fine = compile_condition("nodes.a.outputs.n == 1", {"a"})
        assert await evaluator.condition(fine, {"a": {"outputs": {"n": 1}}}, OK)
        await evaluator.close()
        return evaluator.started

    assert asyncio.run(go()) == 2


def test_a_worker_that_cannot_start_errors_the_node_not_the_output(monkeypatch):
    import sandbox_orch.bounded.evaluator as module

    from .test_scheduler import run

    monkeypatch.setattr(module, "_BOOT", "raise SystemExit(3)")
    text = "version: 1\nname: x\nnodes:\n  a: {command: [x], outputs: {parse: {format: json}}}\n"
    _, records, _, _ = run(text, {"a": Outcome(stdout=b"{}")})
    assert records["a"].status == NodeStatus.ERRORED
    assert records["a"].reason == "the evaluation worker did not start"
