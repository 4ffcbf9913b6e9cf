"""The run's side of its evaluation worker: parse a node's output, judge a condition, or
render a prompt, off the event loop, each within EVALUATION_SECONDS, in a process with an
address-space limit. An evaluation that overruns kills the worker (a thread could not be
stopped, and pure-Python work in a thread would still hold the GIL the loop needs); the
next request starts a new one. The worker is started only when a run first needs it
(`warm()` starts it early, beside the first containers), and is one process per run:
requests take turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ..agents.prompts import PromptError, PromptTemplate
from ..conditions import Condition, ConditionError, NeedsState
from ..parsing import Parsed, ParseError
from ..workflow import ParseSpec
from .limits import EVALUATION_SECONDS, WORKER_START_SECONDS, worker_memory
from .protocol import PREFIX, ProtocolError, decode_header, encode

DEFAULT_OUTPUT_LIMIT = 16 * 1024**2  # the policy's default `output`
# The package's parent directory: the worker imports this very copy of sandbox_orch.
_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from sandbox_orch.bounded.worker import main; main(sys.argv[2:])"
)
_STREAM_LIMIT = 1024**2


class EvaluationUnavailable(Exception):
    """The worker could not be started: an infrastructure problem, not the input's."""


class _Failed(Exception):
    """An evaluation did not give an answer; `refused` if the input itself was refused
    (a ParseError or ConditionError in the worker), whose message is complete as is."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class Evaluator:
    def __init__(
        self, output_limit: int = DEFAULT_OUTPUT_LIMIT, seconds: float = EVALUATION_SECONDS
    ) -> None:
        self.seconds = seconds
        self.memory = worker_memory(output_limit)
        # A reply holds the outputs and usage: at most the output, escaped as JSON (a
        # control character is 1 byte of output and 6 of JSON, \u0001).
        self._max_reply = 6 * output_limit + _STREAM_LIMIT
        self._worker: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Task[asyncio.subprocess.Process] | None = None
        self._turn = asyncio.Lock()
        self._conditions = False  # start workers ready for conditions (cel-python loaded)
        self.started = 0  # workers started so far (tests, and the run's diagnostics)

    @property
    def pid(self) -> int | None:
        """The worker's process id, while one runs."""
        worker = self._worker
        return worker.pid if worker is not None and worker.returncode is None else None

    def warm(self, conditions: bool = False) -> None:
        """Start the worker now, in the background (call from within the event loop);
        `conditions`: ready to judge them, not only to parse."""
        self._conditions = self._conditions or conditions
        if self._worker is None and self._starting is None:
            self._starting = asyncio.ensure_future(self._start())

    async def parse(
        self, spec: ParseSpec, stdout: bytes, complete: bool = True, limit: int | None = None
    ) -> Parsed:
        """parse_output(), bounded; ParseError for output that fails or overruns."""
        header = {
            "job": "parse",
            "spec": spec.model_dump(mode="json", by_alias=True),
            "complete": complete,
            "limit": limit,
        }
        try:
            value = await self._evaluate(header, stdout)
        except _Failed as failure:
            message = str(failure) if failure.refused else f"{spec.format} parser: {failure}"
            raise ParseError(message) from None
        return Parsed(value["outputs"], value["usage"])

    async def condition(
        self, condition: Condition, nodes: dict[str, dict[str, Any]], state: NeedsState
    ) -> bool:
        """evaluate(), bounded; ConditionError if it fails or overruns."""
        header = {
            "job": "condition",
            "source": condition.source,
            "state": [state.success, state.failure, state.cancelled],
        }
        self._conditions = True
        try:
            value = await self._evaluate(header, json.dumps(nodes).encode())
        except _Failed as failure:
            raise ConditionError(str(failure)) from None
        return bool(value)

    async def prompt(
        self, template: PromptTemplate, nodes: dict[str, dict[str, Any]], limit: int
    ) -> str:
        """render(), bounded; PromptError if it fails, overruns, or is over `limit` bytes."""
        header = {"job": "prompt", "template": template.source, "limit": limit}
        self._conditions = True  # CEL, as conditions
        try:
            value = await self._evaluate(header, json.dumps(nodes).encode())
        except _Failed as failure:
            raise PromptError(str(failure)) from None
        return str(value)

    async def close(self) -> None:
        """Stop the worker (if any); the evaluator can still be used afterwards."""
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.cancel()
            with contextlib.suppress(BaseException):
                self._worker = await starting
        await self._discard()

    async def _evaluate(self, header: dict[str, Any], body: bytes) -> Any:
        async with self._turn:
            worker = await self._ready()
            try:
                async with asyncio.timeout(self.seconds):
                    reply = await self._call(worker, header, body)
            except TimeoutError:
                await self._discard()
                raise _Failed(
                    f"evaluation stopped after {self.seconds:g}s (the limit for one evaluation)"
                ) from None
            except (OSError, EOFError, ProtocolError, ValueError):
                raise _Failed(await self._died()) from None
            except BaseException:  # cancelled mid-request: its answer can never be read
                await asyncio.shield(self._discard())
                raise
        if "error" not in reply:
            return reply["ok"]
        if reply.get("kind") == "memory":
            raise _Failed(f"evaluation needed more than {self.memory // 1024**2} MiB of memory")
        return self._refused(reply)

    def _refused(self, reply: dict[str, Any]) -> Any:
        if reply.get("kind") == "refused":
            raise _Failed(str(reply["error"]), refused=True)
        raise _Failed(f"evaluation failed: {reply['error']}")

    async def _ready(self) -> asyncio.subprocess.Process:
        if self._worker is not None and self._worker.returncode is None:
            return self._worker
        await self._discard()
        self.warm()
        assert self._starting is not None
        try:
            self._worker = await asyncio.shield(self._starting)
        finally:
            if self._starting.done():
                self._starting = None
        return self._worker

    async def _start(self) -> asyncio.subprocess.Process:
        try:
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-c", _BOOT, _ROOT, str(self.memory), str(os.getpid()),
                *(["conditions"] if self._conditions else []),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,  # a terminal's Ctrl-C is for the run, not for it
                env={},  # it needs none, and the run's environment may hold secrets
                limit=_STREAM_LIMIT,
            )  # fmt: skip
        except OSError as error:
            raise EvaluationUnavailable(f"could not start the evaluation worker: {error}") from None
        self.started += 1
        try:
            async with asyncio.timeout(WORKER_START_SECONDS):
                ready = await self._read(worker)
        except (TimeoutError, OSError, EOFError, ProtocolError, ValueError):
            ready = {}
        except BaseException:
            _kill(worker)
            raise
        if ready.get("ready") is not True:
            _kill(worker)
            await worker.wait()
            raise EvaluationUnavailable("the evaluation worker did not start")
        return worker

    async def _call(
        self, worker: asyncio.subprocess.Process, header: dict[str, Any], body: bytes
    ) -> dict[str, Any]:
        assert worker.stdin is not None
        worker.stdin.writelines(encode(header, body))
        await worker.stdin.drain()
        return await self._read(worker)

    async def _read(self, worker: asyncio.subprocess.Process) -> dict[str, Any]:
        assert worker.stdout is not None
        try:
            prefix = await worker.stdout.readexactly(PREFIX.size)
            head_size, body_size = PREFIX.unpack(prefix)
            if head_size + body_size > self._max_reply:
                raise ProtocolError("the worker's reply is larger than any answer can be")
            head = await worker.stdout.readexactly(head_size)
            await worker.stdout.readexactly(body_size)
        except asyncio.IncompleteReadError:
            raise EOFError from None
        return decode_header(head)

    async def _died(self) -> str:
        worker = self._worker
        await self._discard()
        code = worker.returncode if worker is not None else None
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with code {code}"
        return (
            f"the evaluation worker {how} (it may have needed more than "
            f"{self.memory // 1024**2} MiB of memory)"
        )

    async def _discard(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        _kill(worker)
        if worker.stdin is not None:
            worker.stdin.close()
        await worker.wait()


def _kill(worker: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        if worker.returncode is None:
            worker.kill()
