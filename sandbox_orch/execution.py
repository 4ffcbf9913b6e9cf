"""One attempt of one node on a backend: create, start, wait (bounded), kill, remove.

The runner keeps a ledger of every container it created and has not yet removed. The
ledger is written *before* anything else can interrupt the attempt (a create is awaited
to completion even when the task is cancelled), so an interrupted run knows exactly what
it started, and `close()` removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .agents.live import LiveStream
from .agents.spending import Spending
from .agents.streams import reader_for
from .artifacts import ArtifactsRefused, ArtifactVolumes
from .backend import Backend, BackendError, ContainerSpec, OutputSink
from .bounded.evaluator import EvaluationUnavailable, Evaluator
from .capture import NodeOutput
from .egress import CONTAINER_DIR, PROXY_URL
from .egress.broker import Brokered
from .mounts import BindMount, moved
from .parsing import ParseError, agent_parsed, check_size
from .planning import PlannedNode
from .sandbox import Sandbox
from .secrets import SecretStore, SecretUnavailable
from .status import NodeStatus
from .terminal import HostTerminal
from .text import one_line

if TYPE_CHECKING:
    from .egress.core import RunEgress

RUN_LABEL = "sandbox-orch.run"
NODE_LABEL = "sandbox-orch.node"
OWNER_LABEL = "sandbox-orch.owner"
ATTEMPT_LABEL = "sandbox-orch.attempt"
KILL_GRACE = 10.0  # seconds to wait for a killed container to be reported stopped
# Seconds an interrupted node's output in flight may take to arrive once it is killed:
# short, so that Ctrl-C stays prompt with an engine that does not answer.
STOP_GRACE = 3.0
GATE = "sandbox-orch-gate"  # holds a prepared container's command (images/base)
DURING_SETUP = " (during setup)"  # a reason's end: the node was stopped in its setup phase


@dataclass
class Attempt:
    number: int
    status: NodeStatus
    started_at: datetime
    finished_at: datetime
    duration_s: float
    exit_code: int | None = None
    oom_killed: bool = False
    reason: str | None = None
    memory: int | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    # Only tails and counts outlive the attempt: a run of many chatty nodes must not
    # hold every node's captured output until the end.
    stdout_tail: str = ""
    stderr_tail: str = ""
    output_bytes: dict[str, int] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, str]] = field(default_factory=list)
    setup: dict[str, Any] | None = None  # a node with `setup:`: exit_code, duration_s, violations

    @property
    def retry_reason(self) -> str:
        """The category `retries.on` names: oom, or the status."""
        return "oom" if self.oom_killed else self.status.value


class DueStarts:
    """The containers of due nodes being created and started. They are on the critical
    path, and the engine serves them sooner alone: a preparation ahead of time waits
    until none is."""

    def __init__(self) -> None:
        self._count = 0
        self.none = asyncio.Event()
        self.none.set()

    def begin(self) -> Callable[[], None]:
        """One more; call what it returns (once or more) when its container started."""
        self._count += 1
        self.none.clear()
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self._count -= 1
                if not self._count:
                    self.none.set()

        return end


@dataclass
class Prepared:
    """A node's first container, created and started ahead of time: its gate holds the
    command until the attempt releases it. Its output is read from its start on."""

    container_id: str
    output: NodeOutput
    live: LiveStream | None


class AttemptCancelled(asyncio.CancelledError):
    """A cancellation that carries the attempt it interrupted."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__()
        self.attempt = attempt


async def _parse_into(
    attempt: Attempt, node: PlannedNode, output: NodeOutput, limit: int, evaluator: Evaluator
) -> None:
    """Outputs (and usage) from stdout, parsed in the run's evaluation worker (bounded in
    time and memory); output that fails its parser fails the node, and so does an agent
    that reports an error while exiting 0."""
    try:
        stdout = output.stdout
        parsed = await evaluator.parse(node.parse, stdout.getvalue(), stdout.complete, limit)
    except ParseError as error:
        if attempt.status == NodeStatus.SUCCEEDED:
            attempt.status, attempt.reason = NodeStatus.FAILED, str(error)
        return
    except EvaluationUnavailable as error:  # ours, not the output's: errored
        if attempt.status == NodeStatus.SUCCEEDED:
            attempt.status, attempt.reason = NodeStatus.ERRORED, str(error)
        return
    attempt.outputs, attempt.usage = parsed.outputs, parsed.usage
    if attempt.status == NodeStatus.SUCCEEDED and parsed.outputs.get("is_error") is True:
        attempt.status, attempt.reason = NodeStatus.FAILED, "the agent reported an error"


def _agent_outcome(attempt: Attempt, live: LiveStream, limit: int) -> None:
    """An agent's outputs and usage from its stream, read live (so exact, whatever the
    capture dropped), and its own words for a failure rather than an exit code."""
    reader = live.reader
    attempt.usage = reader.usage_json()
    if attempt.status not in (NodeStatus.SUCCEEDED, NodeStatus.FAILED):
        return
    try:
        outputs = agent_parsed(reader).outputs
        check_size(outputs, limit)
    except ParseError as error:
        if attempt.status == NodeStatus.SUCCEEDED:
            attempt.status, attempt.reason = NodeStatus.FAILED, str(error)
        elif (attempt.reason or "").startswith("exited with code"):
            attempt.reason = _with_agent_words(attempt, reader.error or reader.said)
        return
    attempt.outputs = outputs
    if reader.error and (attempt.status == NodeStatus.SUCCEEDED or attempt.exit_code):
        attempt.status, attempt.reason = NodeStatus.FAILED, f"the agent reported: {reader.error}"


def _with_agent_words(attempt: Attempt, said: str | None) -> str:
    """`exited with code N`, and the agent's own error text, else the last line it
    printed on stderr."""
    lines = [line for line in attempt.stderr_tail.splitlines() if line.strip()]
    last = said or (one_line(lines[-1].strip())[:300] if lines else "")
    return f"{attempt.reason}: {last}" if last else str(attempt.reason)


def _phased(sandbox: Sandbox) -> tuple[str, ...]:
    """With `setup:`, sandbox-orch-phases runs it before the command (images/base)."""
    if not sandbox.setup_argv:
        return ()
    limit = "-" if sandbox.setup_timeout is None else f"{sandbox.setup_timeout:.3f}"
    return ("sandbox-orch-phases", limit, str(len(sandbox.setup_argv)), *sandbox.setup_argv)


def _nothing() -> None:
    pass


def _retrieved(task: asyncio.Future[None]) -> None:
    """A background removal's failure is not lost: the container stays in the ledger
    and close() reports it. Retrieved here so asyncio does not log it meanwhile."""
    if not task.cancelled():
        task.exception()


def _byte_counts(output: NodeOutput) -> dict[str, int]:
    out, err = output.stdout, output.stderr
    return {
        "stdout": out.total,
        "stderr": err.total,
        "stdout_dropped": out.dropped,
        "stderr_dropped": err.dropped,
    }


class NodeRunner:
    def __init__(
        self,
        backend: Backend,
        run_id: str,
        owner: str,
        egress: RunEgress | None = None,
        secrets: SecretStore | None = None,
        artifacts: ArtifactVolumes | None = None,
        images: dict[str, str] | None = None,
        evaluator: Evaluator | None = None,
        spending: Spending | None = None,
    ) -> None:
        self.backend = backend
        self.spending = spending  # live usage and budgets; None: nothing is followed
        self.run_id = run_id
        self.owner = owner
        self.egress = egress
        self.secrets = secrets
        self.artifacts = artifacts
        # Image name -> the id preflight resolved. Given, every container of the run is
        # created from that id, so re-tagging an image mid-run changes nothing; None
        # (tests, benchmarks) creates from the name as written.
        self.images = images
        # Without one given (tests, benchmarks), its own, started only if a node parses.
        self.evaluator = evaluator or Evaluator()
        self._owns_evaluator = evaluator is None
        self.ledger: set[str] = set()
        self._creating: set[asyncio.Future[str]] = set()
        self._kills: set[asyncio.Future[None]] = set()  # budget stops under way
        # Containers prepared ahead of time (by node, until claimed or discarded).
        self._prepared: dict[str, asyncio.Future[Prepared]] = {}
        self._removals: set[asyncio.Future[None]] = set()  # see _remove_after
        self._due_starts = DueStarts()
        # `single` with no prompt: the host terminal its one node's container is attached
        # to (created with a TTY; its output is the user's screen, not captured).
        self.terminal: HostTerminal | None = None

    def spec(self, node: PlannedNode, sandbox: Sandbox, attempt: int) -> ContainerSpec:
        return ContainerSpec(
            name=f"sandbox-orch-{self.run_id}-{node.name}-{attempt}",
            image=sandbox.image,
            argv=node.argv,
            user=sandbox.user,
            labels={
                RUN_LABEL: self.run_id,
                NODE_LABEL: node.name,
                OWNER_LABEL: self.owner,
                ATTEMPT_LABEL: str(attempt),
            },
            cpus=sandbox.cpus,
            memory=sandbox.memory,
            pids=sandbox.pids,
            pids_mechanism=sandbox.pids_mechanism,  # type: ignore[arg-type]
            tmpfs=sandbox.tmpfs,
            # A writable HOME: the root file system is read-only.
            env={"HOME": "/tmp", **sandbox.env},
            workdir=sandbox.workdir,
            oci_runtime=sandbox.oci_runtime,
            mounts=sandbox.mounts,
            tty=self.terminal is not None,
            origin=(node, sandbox),
        )

    async def attempt(self, node: PlannedNode, sandbox: Sandbox, number: int) -> Attempt:
        prepared = await self._claim(node.name) if number == 1 else None
        output = prepared.output if prepared else NodeOutput(sandbox.output_limit)
        redactor = self.secrets.redactor if self.secrets is not None else None
        started_at, clock = datetime.now(UTC), time.monotonic()
        container_id = prepared.container_id if prepared else None
        held = False  # volumes of its own were made for this attempt
        full: list[str] = []  # why they are over the policy's limits
        live = prepared.live if prepared else self._follow(node, number, output)
        stopped: list[str] = []  # why a budget stopped it, if one did
        setup_from: float | None = None  # when its container started (setup's clock)
        running = False  # its container was started (so its output may be in flight)

        def finished(
            status: NodeStatus, exit_code: int | None, oom: bool, reason: str | None
        ) -> Attempt:
            return Attempt(
                number=number,
                status=status,
                started_at=started_at,
                finished_at=datetime.now(UTC),
                duration_s=round(time.monotonic() - clock, 3),
                exit_code=exit_code,
                oom_killed=oom,
                reason=reason,
                memory=sandbox.memory,
                stdout_tail=output.stdout.tail(redactor=redactor),
                stderr_tail=output.stderr.tail(redactor=redactor),
                output_bytes=_byte_counts(output),
                usage=live.snapshot()[0] if live else None,
            )

        started = self._due_starts.begin() if prepared is None else _nothing
        try:
            if container_id is None:
                spec = await self._node_spec(node, sandbox, number)
                held = bool(node.artifacts) and self.artifacts is not None
                container_id = await self._create(spec)
                self._holds_artifacts(node, container_id)
                _still_as_admitted(node, sandbox)
            self._attach_spending(node, live, container_id, stopped)
            setup_from = time.monotonic()
            async with self._started(container_id, live or output, prepared is not None):
                started()
                running = True
                status, exit_code, oom, reason = await self._wait(container_id, sandbox.timeout)
            if live is not None:  # its last words count against budgets before it is judged
                live.finish()
                self._report(node, number, live)
            if stopped:  # our kill, for a budget: that is the reason, not its exit code
                status, reason = NodeStatus.FAILED, stopped[0]
            full = await self._artifacts_full(node, sandbox)
        except (BackendError, SecretUnavailable) as error:
            status, exit_code, oom, reason = NodeStatus.ERRORED, None, False, str(error)
        except ArtifactsRefused as error:  # refused before its container was created
            status, exit_code, oom, reason = NodeStatus.FAILED, None, False, str(error)
        except asyncio.CancelledError:
            # Stopped from outside: what it did so far still belongs in the results,
            # its setup phase included (and that it was still in it), and so does the
            # output it printed that is still on its way from the engine.
            if running and container_id is not None:
                await _despite_cancellation(self._stopped(container_id))
            cancelled = finished(NodeStatus.CANCELLED, None, False, "cancelled")
            if setup_from is not None and sandbox.setup_argv:
                self._judge_setup(cancelled, node, setup_from)
            raise AttemptCancelled(cancelled) from None
        finally:
            started()
            if container_id is not None:
                await self._remove_after(node, container_id)
        attempt = finished(status, exit_code, oom, reason)
        if setup_from is not None and sandbox.setup_argv:
            await self._settle_egress(node)
            self._judge_setup(attempt, node, setup_from)
        if live is not None:
            _agent_outcome(attempt, live, sandbox.output_limit)
        if held and status != NodeStatus.ERRORED and self.artifacts is not None:
            if full and attempt.status == NodeStatus.SUCCEEDED:
                attempt.status, attempt.reason = NodeStatus.FAILED, "; ".join(full)
            self.artifacts.copy_in_background(node, attempt)
        parses = live is None and node.parse.format != "none"
        if parses and status in (NodeStatus.SUCCEEDED, NodeStatus.FAILED):
            try:
                await _parse_into(attempt, node, output, sandbox.output_limit, self.evaluator)
            except asyncio.CancelledError:
                attempt.status, attempt.reason = NodeStatus.CANCELLED, "cancelled"
                raise AttemptCancelled(attempt) from None
        return attempt

    async def _node_spec(self, node: PlannedNode, sandbox: Sandbox, number: int) -> ContainerSpec:
        spec = self.spec(node, sandbox, number)
        spec = await self._with_egress_and_secrets(spec, node, sandbox)
        return await self._with_artifacts(spec, node, sandbox, number)

    def _attach_spending(
        self, node: PlannedNode, live: LiveStream | None, container_id: str, stopped: list[str]
    ) -> None:
        if live is not None and self.spending is not None:
            self.spending.attach(node.name, self._stopper(container_id, stopped))

    @contextlib.asynccontextmanager
    async def _started(
        self, container_id: str, sink: OutputSink, prepared: bool = False
    ) -> AsyncIterator[None]:
        """Started with its output into `sink` (a prepared one was, and is released
        now), or, in an interactive session, attached to the host terminal until it exits
        (the terminal is restored on leaving)."""
        if prepared:
            await self.backend.release(container_id)
            yield
        elif self.terminal is None:
            await self.backend.start(container_id, sink)
            yield
        else:
            async with self.terminal.attached(self.backend, container_id):
                yield

    # --- ahead of time: a node's first container, prepared while its needs run ----------

    def prepare(self, node: PlannedNode, sandbox: Sandbox) -> None:
        """Create and start the node's first container now, held by its gate, as the
        plan admitted it (the scheduler chose a node whose inputs are final, see
        timing/ahead.py); its attempt releases it, or `discard` removes it unrun."""
        if not self.backend.holds_containers or self.terminal is not None:
            return
        if node.name not in self._prepared:
            self._prepared[node.name] = asyncio.ensure_future(self._prepare(node, sandbox))

    async def _prepare(self, node: PlannedNode, sandbox: Sandbox) -> Prepared:
        await self._due_starts.none.wait()  # due nodes first
        output = NodeOutput(sandbox.output_limit)
        live = self._follow(node, 1, output)
        spec = await self._node_spec(node, sandbox, 1)
        spec = dataclasses.replace(spec, argv=(GATE, *spec.argv), gated=True)
        container_id = await self._create(spec)
        try:
            _still_as_admitted(node, sandbox)
            await self.backend.start(container_id, live or output)
        except BaseException:
            await asyncio.shield(self._dispose(container_id))
            raise
        return Prepared(container_id, output, live)

    async def _claim(self, name: str) -> Prepared | None:
        """The node's prepared container, if one was and it is ready; None: create one
        (a preparation that failed leaves nothing: the attempt meets the failure again)."""
        task = self._prepared.pop(name, None)
        if task is None:
            return None
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._discard(task)
            raise
        except Exception:
            return None

    def discard(self, name: str) -> None:
        """The node will not run: remove its prepared container, if any, unrun."""
        task = self._prepared.pop(name, None)
        if task is not None:
            self._discard(task)

    def _discard(self, task: asyncio.Future[Prepared]) -> None:
        task.cancel()  # a create under way still lands in the ledger (see _create)
        self._in_background(self._remove_prepared(task))

    async def _remove_prepared(self, task: asyncio.Future[Prepared]) -> None:
        await asyncio.gather(task, return_exceptions=True)
        if not task.cancelled() and task.exception() is None:
            await self._dispose(task.result().container_id)

    def _follow(self, node: PlannedNode, number: int, output: NodeOutput) -> LiveStream | None:
        """A live reader for an agent's stream (its parse format says it is one)."""
        model = node.request.agent.model if node.request.agent else None
        reader = reader_for(node.parse.format, model)
        if reader is None:
            return None
        live = LiveStream(output, reader, asyncio.get_running_loop())
        if self.spending is not None:
            spending, name = self.spending, node.name
            live.on_change(lambda usage, activity: spending.live(name, number, usage, activity))
        return live

    def _report(self, node: PlannedNode, number: int, live: LiveStream) -> None:
        if self.spending is not None:
            self.spending.live(node.name, number, *live.snapshot())

    def _stopper(self, container_id: str, stopped: list[str]) -> Callable[[str], None]:
        """What a crossed block budget calls: kill the container now (the attempt's wait
        then ends), and remember why."""

        def stop(reason: str) -> None:
            stopped.append(reason)
            task = asyncio.ensure_future(self.backend.kill(container_id))
            self._kills.add(task)
            task.add_done_callback(self._kills.discard)

        return stop

    async def _settle_egress(self, node: PlannedNode) -> None:
        """The proxy's account of the node, up to date (a proxy pod's is fetched); without
        it (the proxy is gone), the node is judged on what was last known."""
        if self.egress is not None:
            with contextlib.suppress(BackendError):
                await self.egress.settle(node.name)

    def _judge_setup(self, attempt: Attempt, node: PlannedNode, started: float) -> None:
        """Its setup phase as the proxy saw it; a setup that failed, never ended, or was
        ended by setup code itself fails the node (its command never ran)."""
        phase = self.egress.setup_phase(node.name) if self.egress is not None else None
        if phase is None:
            return
        ended = phase.ended_at
        attempt.setup = {
            "exit_code": phase.exit_code,
            "duration_s": round(ended - started, 3) if ended is not None else None,
            "violations": list(phase.violations),
        }
        if attempt.status not in (NodeStatus.SUCCEEDED, NodeStatus.FAILED):
            if not phase.ended:  # timed out or cancelled: say it was still in setup
                attempt.reason = f"{attempt.reason}{DURING_SETUP}"
            return
        if not phase.ended:
            why = "setup did not finish"
        elif phase.flipped_again:
            why = "the setup phase was ended twice (by setup code): the command did not run"
        elif phase.exit_code:
            why = f"setup failed (exit {phase.exit_code})"
        else:
            return
        attempt.status, attempt.reason = NodeStatus.FAILED, why

    async def _with_egress_and_secrets(
        self, spec: ContainerSpec, node: PlannedNode, sandbox: Sandbox
    ) -> ContainerSpec:
        """The node's way out (its own proxy socket) and its secrets, read now: a brokered
        one goes to the proxy only, the node gets its placeholder."""
        env, mounts, argv = dict(spec.env), spec.mounts, spec.argv
        brokered = [self._brokered(name) for name in sandbox.brokered]
        setup = list(sandbox.setup_egress) if sandbox.setup_argv else None
        if sandbox.egress or brokered or setup is not None:
            assert self.egress is not None, "a run with egress has an egress proxy"
            directory = await self.egress.open(node.name, list(sandbox.egress), brokered, setup)
            if directory is not None:  # else the backend gives the node its way to the proxy
                mounts = (*mounts, BindMount(str(directory), CONTAINER_DIR, read_only=True))
            argv = ("sandbox-orch-egress", *_phased(sandbox), *argv)
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                env[name] = PROXY_URL
            env["NO_PROXY"] = env["no_proxy"] = ""
        for name in sandbox.secrets:
            assert self.secrets is not None, "a run with secrets has a secret store"
            if name in sandbox.brokered:
                env[name] = self.secrets.placeholder(name)
            else:
                env[name] = self.secrets.value(name)
        return dataclasses.replace(
            spec, env=env, mounts=mounts, argv=argv, engine_log=not sandbox.secrets
        )

    def _brokered(self, name: str) -> Brokered:
        """What the proxy needs to add secret `name` to the node's requests (read now)."""
        assert self.secrets is not None, "a run with secrets has a secret store"
        broker = self.secrets.broker(name)
        assert broker is not None, "admission brokers only secrets with a broker"
        return Brokered(
            name=name,
            upstream=broker.upstream,
            header=broker.header,
            scheme=broker.scheme,
            placeholder=self.secrets.placeholder(name),
            value=self.secrets.value(name),
            paths=broker.paths,
            methods=broker.methods,
            ca_bundle=str(broker.ca_bundle) if broker.ca_bundle else None,
        )

    async def _with_artifacts(
        self, spec: ContainerSpec, node: PlannedNode, sandbox: Sandbox, attempt: int
    ) -> ContainerSpec:
        """Its own fresh artifact volumes (read-write), its inputs (read-only)."""
        if self.artifacts is None or not (node.artifacts or node.inputs):
            return spec
        own = await self.artifacts.for_producer(
            node, sandbox, attempt, self._start_holder, self._dispose
        )
        return dataclasses.replace(spec, volumes=own + await self.artifacts.for_consumer(node))

    def _holds_artifacts(self, node: PlannedNode, container_id: str) -> None:
        """Where the producer's own pod keeps its volumes ("pod" store), its container is
        their holder, which they remove once copied (not `_remove_after`)."""
        if self.artifacts is not None and node.artifacts:
            self.artifacts.held_by(node.name, container_id)

    async def _start_holder(self, spec: ContainerSpec) -> str:
        """Start a holder; it stays (in the ledger) until its volumes are released."""
        holder = await self._create(spec)
        await self.backend.start(holder, None)  # it prints nothing: no output stream
        return holder

    async def _artifacts_full(self, node: PlannedNode, sandbox: Sandbox) -> list[str]:
        if self.artifacts is None or not node.artifacts:
            return []
        return await self.artifacts.over_limits(node, sandbox.artifact_limit)

    async def _create(self, spec: ContainerSpec) -> str:
        """Create (from the image's pinned id), recording the id in the ledger the moment
        the engine answers.

        If this task is cancelled while the engine is creating, the create still runs to
        completion in its own task and lands in the ledger; close() waits for it.
        """
        spec = self._pinned(spec)
        task = asyncio.ensure_future(self.backend.create(spec))
        self._creating.add(task)
        task.add_done_callback(self._created)
        return await asyncio.shield(task)

    def _pinned(self, spec: ContainerSpec) -> ContainerSpec:
        if self.images is None:
            return spec
        image_id = self.images.get(spec.image)
        if image_id is None:  # never by name: it could name another image by now
            raise BackendError(f"image {spec.image} was not resolved before the run started")
        return dataclasses.replace(spec, image=image_id)

    def _created(self, task: asyncio.Future[str]) -> None:
        self._creating.discard(task)
        if not task.cancelled() and task.exception() is None:
            self.ledger.add(task.result())

    async def _wait(
        self, container_id: str, timeout: float
    ) -> tuple[NodeStatus, int | None, bool, str | None]:
        # asyncio.timeout, never wait_for: Python 3.11's wait_for can swallow a
        # cancellation (Ctrl-C, fail_fast) that comes as the awaited call ends, and the
        # node would then go on as if never cancelled (gh-86296).
        try:
            async with asyncio.timeout(timeout):
                exit_status = await self.backend.wait(container_id)
        except TimeoutError:
            await self.backend.kill(container_id)
            async with asyncio.timeout(KILL_GRACE):
                killed = await self.backend.wait(container_id)
            return NodeStatus.TIMED_OUT, killed.exit_code, False, f"killed after {timeout:g}s"
        if exit_status.oom_killed:
            return NodeStatus.FAILED, exit_status.exit_code, True, "killed: out of memory"
        if exit_status.exit_code != 0:
            reason = f"exited with code {exit_status.exit_code}"
            return NodeStatus.FAILED, exit_status.exit_code, False, reason
        return NodeStatus.SUCCEEDED, 0, False, None

    async def _stopped(self, container_id: str) -> None:
        """Kill an interrupted node's container and let what it printed reach its sink
        (`wait` returns once it has), for at most STOP_GRACE seconds."""
        with contextlib.suppress(TimeoutError, BackendError):
            async with asyncio.timeout(STOP_GRACE):
                await self.backend.kill(container_id)
                await self.backend.wait(container_id)

    async def _remove_after(self, node: PlannedNode, container_id: str) -> None:
        """An attempt's container goes in the background: its result (and the nodes it
        lets start) does not wait the ~100 ms of its removal. It stays in the ledger until
        removed; close() waits for every removal, and retries a failed one. One that
        mounts artifact volumes goes at once: they are released (removed) right after
        it, which a volume still in use refuses. One that is its volumes' holder is
        theirs to remove."""
        if self.artifacts is not None and self.artifacts.holds(container_id):
            return
        if node.artifacts or node.inputs:
            await asyncio.shield(self._dispose(container_id))
        else:
            self._in_background(self._dispose(container_id))

    def _in_background(self, removal: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(removal)
        self._removals.add(task)
        task.add_done_callback(_retrieved)
        task.add_done_callback(self._removals.discard)

    async def _dispose(self, container_id: str) -> None:
        """Remove (a forced remove kills it first); the ledger forgets it only once removed."""
        await self.backend.remove(container_id)
        self.ledger.discard(container_id)

    async def close(self) -> list[str]:
        """Remove whatever is left: every container in the ledger (complete: a create
        lands there even when cancelled midway), then the run's labelled volumes, which
        are created outside it. Returns what could not be removed."""
        failures: list[str] = []
        if self._owns_evaluator:
            await self.evaluator.close()
        for name in list(self._prepared):
            self.discard(name)
        await asyncio.gather(*self._removals, return_exceptions=True)
        await asyncio.gather(*self._creating, return_exceptions=True)
        if self.artifacts is not None:
            await self.artifacts.finish()  # copies may read holders: before removing them
        ledger = list(self.ledger)
        # Removed concurrently: each is one engine call, and a run may leave several
        # (holders, nodes interrupted together).
        outcomes = await asyncio.gather(*(self._dispose(c) for c in ledger), return_exceptions=True)
        for container_id, outcome in zip(ledger, outcomes, strict=True):
            if isinstance(outcome, BackendError):
                failures.append(f"container {container_id[:12]}: {outcome}")
            elif isinstance(outcome, BaseException):
                raise outcome
        if self.artifacts is None:
            return failures
        try:
            # after the containers: a volume cannot go while a holder uses it
            for resource in await self.backend.labelled(RUN_LABEL, self.run_id, ("volume",)):
                await self.backend.remove_resource(resource)
        except BackendError as error:
            failures.append(str(error))
        return failures


async def _despite_cancellation(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to its end in a task of its own, which a further cancellation of this
    one (it is already being cancelled) does not stop short."""
    task = asyncio.ensure_future(work)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    task.result()


def _still_as_admitted(node: PlannedNode, sandbox: Sandbox) -> None:
    """BackendError (the node errors, its container is removed) if a mount's host source,
    or the way to a target below a mount, has changed into a path through a symlink since
    admission: the last moment before the engine mounts it at start."""
    targets = [m.target for m in sandbox.mounts]
    targets += [a.path for a in node.artifacts] + [i.path for i in node.inputs]
    if why := moved(sandbox.mounts, targets):
        raise BackendError(why)
