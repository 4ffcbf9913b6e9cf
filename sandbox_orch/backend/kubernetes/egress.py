"""Egress on a cluster: the run's proxy pod, as the runner's egress proxy.

The runner asks it what it asks the proxy on Docker (egress/proxy.py): `open` a node
(its grants, brokered secrets, setup grants), `settle` and read its violations and setup
phase once it has run, `close` at the end. Here each call is a request to the proxy in
the run's proxy pod (egress/remote.py) over one exec connection, started with the run's
first node with egress (proxypod.py has the pod):

- the proxy's TLS key and every node's client certificate come from the run's own CA
  (egress/identity.py), made in this process; the proxy's arrive on its stdin, a node's
  go into the node's own Secret (`secret_values`), mounted at /run/egress, from where
  sandbox-orch-egress connects to the proxy pod's address (`address`) over mutual TLS;
- brokered secrets' values go to the proxy on its stdin only (never in a manifest, a
  Secret, or a file);
- the proxy's refusals are counted in the pod; `settle` brings a node's back, with its
  setup phase, so the runner reads them as it does on Docker;
- unreachable upstreams come back as events as they happen (`on_unreachable`).

If the proxy cannot start, or stops, every node with egress errors, naming why: none
runs without its proxy. `close` ends the exec connection (the proxy stops) and deletes
the pod's Job; a run that dies leaves the Job for `gc`, with a proxy that stopped when
its connection did.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ...egress.broker import Brokered
from ...egress.core import Unreachable
from ...egress.identity import Credential, RunAuthority
from ...egress.phases import SetupPhase
from ..base import BackendError
from .job import EGRESS_KEYS
from .proxypod import PROXY_CONTAINER, proxy_argv, proxy_job

if TYPE_CHECKING:
    from .backend import KubernetesBackend

PROXY_START = 300.0  # seconds for the proxy's pod to run (scheduling, the image's pull)
REQUEST_TIMEOUT = 30.0  # seconds for the proxy to answer a request
CLOSE_TIMEOUT = 10.0  # seconds for the proxy to stop once its input ends
LINE_LIMIT = 1 << 20  # bytes of one line from the proxy
KEEPALIVE = 300.0  # seconds between pings on an idle control connection


@dataclass
class _Node:
    """What the runner reads of a node: the proxy's account, as of the last `settle`."""

    violations: list[dict[str, str]] = field(default_factory=list)
    setup: SetupPhase | None = None


class PodEgressProxy:
    """The run's proxy pod; the calls and attributes the runner uses of EgressProxy."""

    def __init__(
        self,
        backend: KubernetesBackend,
        run_id: str,
        owner: str,
        oci_runtime: str,
        private_names: Iterable[str] = (),
    ) -> None:
        self._backend = backend
        self._job = proxy_job(run_id, owner, oci_runtime, backend.settings)
        self._private_names = list(private_names)
        self.on_unreachable: Unreachable | None = None
        self.nodes: dict[str, _Node] = {}
        self.address: str | None = None  # `ip:port` of the proxy, once it listens
        self._authority = RunAuthority(run_id)
        self._credentials: dict[str, Credential] = {}
        self._starting: asyncio.Task[Control] | None = None
        self._created = False

    @property
    def job_name(self) -> str:
        return str(self._job["metadata"]["name"])

    async def open(
        self,
        node: str,
        grants: list[str],
        brokered: Sequence[Brokered] = (),
        setup: Sequence[str] | None = None,
    ) -> None:
        """Register the node with the proxy (its pod started first, once per run). Nothing
        to mount from this host: the node's Secret carries its way in (`secret_values`)."""
        control = await self._control()
        credential = self._credentials.get(node) or self._authority.node(node)
        await control.request(
            {
                "op": "open",
                "node": node,
                "fingerprint": credential.fingerprint,
                "grants": list(grants),
                "brokered": [_brokered(entry) for entry in brokered],
                "setup": None if setup is None else list(setup),
            }
        )
        self._credentials[node] = credential
        self.nodes.setdefault(node, _Node())

    def secret_values(self, node: str) -> dict[str, str]:
        """The keys of the node's Secret that job.py mounts at /run/egress."""
        credential = self._credentials[node]
        files = {
            "node.pem": (credential.cert_pem + credential.key_pem).decode(),
            "ca.pem": self._authority.ca_pem.decode(),
        }
        return {EGRESS_KEYS[path]: text for path, text in files.items()}

    async def settle(self, node: str) -> None:
        """The node's violations and setup phase as the proxy has them now."""
        if node in self.nodes and self._starting is not None:
            await self._settle(await self._control(), node)

    async def _settle(self, control: Control, node: str) -> None:
        state = await control.request({"op": "state", "node": node})
        self.nodes[node] = _Node(list(state.get("violations") or []), _phase(state.get("setup")))

    def violations(self, node: str) -> list[dict[str, str]]:
        mirrored = self.nodes.get(node)
        return list(mirrored.violations) if mirrored else []

    def setup_phase(self, node: str) -> SetupPhase | None:
        mirrored = self.nodes.get(node)
        return mirrored.setup if mirrored else None

    async def close(self) -> list[str]:
        """Settle every node, stop the proxy (its input ends), delete its Job; returns
        what could not be removed."""
        starting, self._starting = self._starting, None
        try:
            if starting is not None and not starting.done():
                starting.cancel()  # interrupted while it started
            if starting is not None:
                with contextlib.suppress(BaseException):
                    await starting
            if starting is not None and not starting.cancelled() and not starting.exception():
                await self._last_word(starting.result())
        finally:
            left = await self._delete()
        return left

    async def _delete(self) -> list[str]:
        if not self._created:
            return []
        try:
            await self._backend.cluster.delete("Job", self.job_name, foreground=True)
        except BackendError as error:
            return [f"egress proxy Job {self.job_name}: {error}"]
        self._created = False
        return []

    async def _last_word(self, control: Control) -> None:
        try:
            for node in list(self.nodes):
                with contextlib.suppress(BackendError):
                    await self._settle(control, node)
        finally:
            await control.close()

    async def _control(self) -> Control:
        """The connection to the started proxy: started by the first caller, shared by
        all (a failed start fails each of them, with its reason)."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        try:
            return await asyncio.shield(self._starting)
        except BackendError as error:
            raise BackendError(f"the run's egress proxy: {error}") from None

    async def _start(self) -> Control:
        backend = self._backend
        self._created = True  # from the create call on: `close` deletes, found or not
        pod = await backend.run_proxy(self._job, PROXY_START)
        server = self._authority.server()
        control = Control(backend, pod["metadata"]["name"], self._reported)
        try:
            started = await control.request(
                {
                    "op": "start",
                    "ca": self._authority.ca_pem.decode(),
                    "cert": server.cert_pem.decode(),
                    "key": server.key_pem.decode(),
                    "private_names": self._private_names,
                }
            )
            self.address = _address(pod, int(started["port"]))
        except BaseException:
            await control.close()
            raise
        return control

    def _reported(self, event: dict[str, Any]) -> None:
        if event.get("event") == "unreachable" and self.on_unreachable is not None:
            node, target, why = (str(event.get(k, ""))[:300] for k in ("node", "target", "why"))
            if node in self.nodes:  # the proxy's word about a node it was told of
                self.on_unreachable(node, target, why)


class Control:
    """One exec connection to the proxy: requests as JSON lines on its stdin, each
    answered on its stdout (by `id`), with events in between."""

    def __init__(
        self, backend: KubernetesBackend, pod: str, on_event: Callable[[dict[str, Any]], None]
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._input: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = 0
        self._on_event = on_event
        argv = proxy_argv(backend.settings.proxy_port)
        self._task = asyncio.ensure_future(
            backend.exec_in(pod, PROXY_CONTAINER, argv, self._read, self._stdin())
        )
        self._task.add_done_callback(self._ended)
        self._keepalive = asyncio.ensure_future(self._pinging())

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """The proxy's answer; BackendError if it refuses, or is gone."""
        if self._task.done():
            raise BackendError(self._why_gone())
        self._ids += 1
        ident, answer = self._ids, self._loop.create_future()  # requests may overlap
        self._pending[ident] = answer
        self._input.put_nowait(json.dumps({**message, "id": ident}).encode() + b"\n")
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                reply = await answer
        except TimeoutError:
            raise BackendError(f"no answer to {message['op']} in {REQUEST_TIMEOUT:g} s") from None
        finally:
            self._pending.pop(ident, None)
        if reply.get("ok") is not True:
            raise BackendError(f"{message['op']} refused: {str(reply.get('error'))[:300]}")
        return reply

    async def _pinging(self) -> None:
        """A request now and then: the kubelet cuts an exec connection idle for its
        streamingConnectionIdleTimeout (4 h by default), which would stop the proxy."""
        while not self._task.done():
            await asyncio.sleep(KEEPALIVE)
            with contextlib.suppress(BackendError):
                await self.request({"op": "ping"})

    async def close(self) -> None:
        """End its input: the proxy stops, and the exec ends (else it is cut)."""
        self._keepalive.cancel()
        self._input.put_nowait(None)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(self._task)
        except BaseException:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _stdin(self) -> AsyncIterator[bytes]:
        while (line := await self._input.get()) is not None:
            yield line

    def _read(self, stream: BinaryIO) -> None:
        """In pod_exec's worker thread: each line to the event loop."""
        while line := stream.readline(LINE_LIMIT):
            self._loop.call_soon_threadsafe(self._received, line)

    def _received(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return  # not the proxy's protocol: nothing in it is taken
        if not isinstance(message, dict):
            return
        if "event" in message:
            self._on_event(message)
            return
        answer = self._pending.get(message.get("id"))  # type: ignore[arg-type]
        if answer is not None and not answer.done():
            answer.set_result(message)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._keepalive.cancel()
        why = BackendError(self._why_gone())
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(why)

    def _why_gone(self) -> str:
        if not self._task.done() or self._task.cancelled():
            return "the proxy's connection was closed"
        error = self._task.exception()
        if error is not None:
            return f"the proxy's connection failed: {error}"
        ran = self._task.result()
        said = " ".join(ran.stderr.decode("utf-8", "replace").split())[-300:]
        return f"the proxy stopped (exit {ran.code}){': ' + said if said else ''}"


def _brokered(entry: Brokered) -> dict[str, Any]:
    """As the proxy takes it: a CA bundle's text, not a path on this host."""
    data = asdict(entry)
    if entry.ca_bundle is not None:
        try:
            data["ca_bundle"] = Path(entry.ca_bundle).read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise BackendError(f"secret {entry.name}: cannot read its CA bundle: {error}") from None
    return data


def _phase(data: dict[str, Any] | None) -> SetupPhase | None:
    """A setup phase as the proxy reported it, its end on this host's clock."""
    if data is None:
        return None
    ago = data.get("ended_ago")
    return SetupPhase(
        grants=frozenset(),  # the proxy's to apply, not the runner's
        mark=0,
        ended=bool(data.get("ended")),
        exit_code=data.get("exit_code"),
        ended_at=None if ago is None else time.monotonic() - float(ago),
        violations=list(data.get("violations") or []),
        flipped_again=bool(data.get("flipped_again")),
    )


def _address(pod: dict[str, Any], port: int) -> str:
    ip = ipaddress.ip_address((pod.get("status") or {})["podIP"])
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
