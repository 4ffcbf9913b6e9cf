"""Commands in a pod over the exec API (podexec.py, and the backend's run_in/export)
against an *emulated* exec endpoint (k8s_exec_server.py: the API server's websocket
protocol on loopback, each command a real local subprocess): every test name says so.
The backend's tests add kmock's API emulator (k8s_emulator.py) for the Job's pod."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import sys
import tarfile
import threading
import time
import tracemalloc

import pytest
from kubernetes.aio import client as k8s
from kubernetes.aio.stream import WsApiClient

from sandbox_orch.artifacts.copy import Budget, extract
from sandbox_orch.backend.base import BackendError
from sandbox_orch.backend.kubernetes import podexec
from sandbox_orch.backend.kubernetes.backend import KubernetesBackend, archive_argv
from sandbox_orch.backend.kubernetes.podexec import STDERR_CAP, exit_code, pod_exec

from .k8s_emulator import NAMESPACE, PODS, SETTINGS, emulated
from .k8s_exec_server import V4, V5, ExecServer, internal_error, non_zero, success


def read_all(stream):
    return stream.read()


async def chunks(*parts: bytes):
    for part in parts:
        yield part


def run(server: ExecServer, argv, consume=read_all, stdin=None, pod="p1", container="node"):
    """pod_exec against the emulated endpoint, in its own event loop."""

    async def scenario():
        async with server.serving():
            api = server.ws_api()
            try:
                return await pod_exec(
                    api, NAMESPACE, pod, container, argv, consume=consume, stdin=stdin
                )
            finally:
                await api.close()

    return asyncio.run(scenario())


# --- the transport ------------------------------------------------------------------


def test_emulated_exec_endpoint_streams_stdout_and_sends_the_command_as_asked(tmp_path):
    server = ExecServer(tmp_path)
    argv = ["sh", "-c", 'printf "%s|" "$@"; pwd', "sh", "a b", "&c=d", "--x"]
    ran = run(server, argv)
    assert ran.code == 0 and ran.stderr == b""
    assert ran.value == f"a b|&c=d|--x|{tmp_path}\n".encode()
    (exchange,) = server.exchanges
    assert (exchange.namespace, exchange.pod, exchange.container) == (NAMESPACE, "p1", "node")
    assert exchange.command == argv  # the query's repeated `command`, in order
    assert exchange.flags == {"stdin": False, "stdout": True, "stderr": True, "tty": False}
    assert exchange.protocol == V5 and exchange.ended == "status"


@pytest.mark.parametrize("code", [1, 3, 255])
def test_emulated_exec_endpoint_non_zero_exit_code_and_stderr(tmp_path, code):
    ran = run(ExecServer(tmp_path), ["sh", "-c", f"echo out; echo err >&2; exit {code}"])
    assert (ran.code, ran.value, ran.stderr) == (code, b"out\n", b"err\n")


def test_emulated_exec_endpoint_delivers_stdin_and_closes_it(tmp_path):
    big = os.urandom(300_000)  # several messages
    ran = run(ExecServer(tmp_path), ["cat"], stdin=chunks(b"first ", b"", big))
    assert ran.code == 0 and ran.value == b"first " + big  # cat ended: its stdin was closed
    assert ran.stderr == b""


def test_emulated_exec_endpoint_tar_extracts_what_stdin_carries(tmp_path):
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        data = b"payload\n" * 1000
        info = tarfile.TarInfo("in/file.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / "pod").mkdir()
    ran = run(ExecServer(tmp_path / "pod"), ["tar", "-xf", "-"], stdin=chunks(archive.getvalue()))
    assert ran.code == 0
    assert (tmp_path / "pod" / "in" / "file.txt").read_bytes() == data


def test_emulated_exec_endpoint_v4_only_runs_a_command_without_stdin(tmp_path):
    server = ExecServer(tmp_path, protocols=(V4,))
    ran = run(server, ["sh", "-c", "echo v4; exit 2"])
    assert (ran.code, ran.value) == (2, b"v4\n") and server.exchanges[0].protocol == V4


def test_emulated_exec_endpoint_v4_only_with_stdin_is_refused_not_hung(tmp_path):
    server = ExecServer(tmp_path, protocols=(V4,))
    started = time.monotonic()
    with pytest.raises(BackendError, match=f"only {V4}.*cannot close.*{V5}"):
        run(server, ["cat"], stdin=chunks(b"never sent"))
    assert time.monotonic() - started < 10
    (exchange,) = server.exchanges
    assert exchange.ended == "client closed" and exchange.returncode is not None


def test_emulated_exec_endpoint_no_common_protocol_is_refused(tmp_path):
    with pytest.raises(BackendError, match="refused: 400"):
        run(ExecServer(tmp_path, protocols=("v3.channel.k8s.io",)), ["true"])


def test_emulated_exec_endpoint_unknown_pod_is_the_servers_refusal(tmp_path):
    with pytest.raises(BackendError, match=r"exec in pod gone \(container node\).*404"):
        run(ExecServer(tmp_path, pods=("p1",)), ["true"], pod="gone")


def test_emulated_exec_endpoint_large_output_passes_with_bounded_memory(tmp_path):
    """48 MB through a consumer slower than the command: the server is held back (the
    websocket is not read while the pipe is full), so neither side holds it all."""
    size, line = 48_000_000, b"0123456789abcdef\n"
    server = ExecServer(tmp_path)
    lag = []

    def consume(stream):
        digest, count = hashlib.sha256(), 0
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            count += len(chunk)
            lag.append(server.exchanges[0].sent - count)
            time.sleep(0.005)  # a slow consumer (load, not synchronisation)
        return count, digest.hexdigest()

    tracemalloc.start()
    try:
        ran = run(server, ["sh", "-c", f"yes 0123456789abcdef | head -c {size}"], consume)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = hashlib.sha256()
    for _ in range(size // len(line)):
        expected.update(line)
    expected.update(line[: size % len(line)])
    assert ran.code == 0 and ran.value == (size, expected.hexdigest())
    assert peak < 16 * 2**20, peak
    assert max(lag) < 16 * 2**20, max(lag)


def test_emulated_exec_endpoint_stderr_is_capped(tmp_path):
    script = "head -c 100000 /dev/zero | tr '\\0' e >&2; echo done; exit 4"
    ran = run(ExecServer(tmp_path), ["sh", "-c", script])
    assert ran.code == 4 and ran.value == b"done\n"
    assert ran.stderr == b"e" * STDERR_CAP


@pytest.mark.parametrize("cleanly", [False, True], ids=["tcp-cut", "websocket-close"])
def test_emulated_exec_endpoint_connection_dropped_mid_stream_is_an_error(tmp_path, cleanly):
    server = ExecServer(tmp_path, drop_after=1 << 20, drop_cleanly=cleanly)
    seen = []

    def consume(stream):
        try:
            while chunk := stream.read(1 << 16):
                seen.append(len(chunk))
        except BackendError as error:
            seen.append(str(error))
            raise
        return "a clean end"

    with pytest.raises(BackendError, match="ended before the command's status"):
        run(server, ["sh", "-c", "head -c 8000000 /dev/zero"], consume)
    assert server.exchanges[0].ended == "dropped"
    assert "output was cut" in seen[-1]  # the consumer never saw a clean end


def test_emulated_exec_endpoint_consumer_that_stops_early(tmp_path):
    """Its result stands. A little more output is read through for the status; endless
    output is not: the command is abandoned (code None), its connection closed."""
    server = ExecServer(tmp_path)
    short = run(server, ["sh", "-c", "echo hello world; exit 6"], lambda s: s.read(5))
    assert (short.code, short.value) == (6, b"hello")
    endless = run(server, ["yes"], lambda s: s.read(5))
    assert (endless.code, endless.value) == (None, b"y\ny\ny")
    assert server.exchanges[1].ended == "client closed"


def test_emulated_exec_endpoint_failing_consumer_or_stdin_ends_the_command(tmp_path):
    server = ExecServer(tmp_path)

    def consume(stream):
        stream.read(1)
        raise ValueError("the consumer's own failure")

    async def failing_stdin():
        yield b"some input"
        raise OSError("stdin's source failed")

    began = time.monotonic()
    with pytest.raises(ValueError, match="consumer's own"):
        run(server, ["sh", "-c", "echo x; exec sleep 60"], consume)
    with pytest.raises(OSError, match="stdin's source failed"):
        run(server, ["sh", "-c", "cat; exec sleep 60"], stdin=failing_stdin())
    assert time.monotonic() - began < 10  # neither waited for its command
    assert [e.ended for e in server.exchanges] == ["client closed", "client closed"]


def test_emulated_exec_endpoint_cancellation_closes_the_connection_and_the_worker(tmp_path):
    server = ExecServer(tmp_path)
    reading, consumer_ended = threading.Event(), threading.Event()

    def consume(stream):
        try:
            assert stream.read(8) == b"started\n"
            reading.set()
            return stream.read()  # blocks: the command sleeps
        finally:
            consumer_ended.set()

    async def scenario():
        async with server.serving():
            api = server.ws_api()
            try:
                call = asyncio.ensure_future(
                    pod_exec(api, NAMESPACE, "p1", "node", ["sh", "-c", "echo started; exec sleep 60"],
                             consume=consume)
                )  # fmt: skip
                await asyncio.to_thread(reading.wait, 10)
                began = time.monotonic()
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
                took = time.monotonic() - began
                async with asyncio.timeout(10):
                    await server.client_closed.wait()
                return took
            finally:
                await api.close()

    took = asyncio.run(scenario())
    assert took < podexec.CLOSE_GRACE * 2 + 1
    assert consumer_ended.is_set()  # its read failed: the thread is not left behind
    (exchange,) = server.exchanges
    assert exchange.ended == "client closed" and exchange.returncode is not None


def test_emulated_exec_endpoint_command_that_cannot_run_is_a_failure_not_an_exit(tmp_path):
    with pytest.raises(BackendError) as raised:
        run(ExecServer(tmp_path), ["no-such-command-so-unit"])
    message = str(raised.value)
    assert "the command failed: InternalError: Internal error occurred" in message
    assert "\n" not in message and len(message) < 500


def test_emulated_exec_endpoint_connect_timeout(monkeypatch):
    """A server that accepts the connection but never answers the upgrade."""
    monkeypatch.setattr(podexec, "CONNECT_TIMEOUT", 0.3)

    async def scenario():
        held = []

        async def silent(reader, writer):
            held.append(writer)  # kept open, never answered

        listener = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        api = WsApiClient(k8s.Configuration(host=f"http://127.0.0.1:{port}"))
        try:
            with pytest.raises(BackendError, match=r"no answer in 0\.3 s"):
                await pod_exec(api, NAMESPACE, "p1", "node", ["true"], consume=read_all)
        finally:
            await api.close()
            for writer in held:
                writer.close()
            listener.close()
            await listener.wait_closed()

    asyncio.run(scenario())


# --- the status, as the API server marshals it --------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(success(), 0), (non_zero(["sh"], 7), 7), (non_zero(["sh"], 255), 255)],
)
def test_status_exit_codes(status, code):
    assert exit_code(json.dumps(status).encode(), "exec") == code


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a Status"),
        (b'{"status": "Failure", "reason": "NonZeroExitCode"}', "NonZeroExitCode"),
        # an exit code out of range, or not a number, is not taken for one
        (b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":'
         b'[{"reason":"ExitCode","message":"256"}]}}', "NonZeroExitCode"),
        (b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":'
         b'[{"reason":"ExitCode","message":"-1"}]}}', "NonZeroExitCode"),
        # an ExitCode cause under another reason is not an exit
        (b'{"status":"Failure","reason":"InternalError","details":{"causes":'
         b'[{"reason":"ExitCode","message":"0"}]}}', "InternalError"),
        (b'{"status":"Unknown"}', "no reason"),
    ],
)  # fmt: skip
def test_status_that_is_not_an_exit_is_an_error(status, says):
    with pytest.raises(BackendError, match=says):
        exit_code(status, "exec")


def test_status_message_is_one_bounded_line():
    status = internal_error("line one\nline two\t" + "x" * 5000)
    with pytest.raises(BackendError) as raised:
        exit_code(json.dumps(status).encode(), "exec")
    message = str(raised.value)
    assert "line one line two" in message and "\n" not in message and len(message) < 700


# --- the backend: run_in and export on a Job's pod ----------------------------------

JOB = "so-r-k8s-1-node-a1"


@contextlib.asynccontextmanager
async def backend_on(server: ExecServer):
    """The backend on kmock's emulator (the Job's pod) and the emulated exec endpoint."""
    async with server.serving(), emulated(ws_api=server.ws_api()) as (emulator, cluster, _):
        emulator.objects[PODS, NAMESPACE, f"{JOB}-x1"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{JOB}-x1", "namespace": NAMESPACE,
                         "labels": {"job-name": JOB}},
            "status": {"phase": "Running"},
        }  # fmt: skip
        yield KubernetesBackend(cluster, SETTINGS), cluster


def test_emulated_exec_endpoint_backend_run_in_on_the_jobs_pod(tmp_path):
    server = ExecServer(tmp_path)

    async def scenario():
        async with backend_on(server) as (backend, cluster):
            done = await backend.run_in(JOB, ["sh", "-c", "echo hi; exit 5"])
            other = await backend.run_in(JOB, ["true"], container="node")
            with pytest.raises(BackendError, match="printed more than"):
                await backend.run_in(JOB, ["head", "-c", "3000000", "/dev/zero"])
            with pytest.raises(BackendError, match="no pod"):
                await backend.run_in("so-other-job", ["true"])
            ws_api = cluster.ws_api
        return done, other, ws_api

    done, other, ws_api = asyncio.run(scenario())
    assert done == (5, b"hi\n") and other == (0, b"")
    assert [(e.pod, e.container) for e in server.exchanges[:2]] == [
        (f"{JOB}-x1", "holder"),  # by default: ours, never beside the node's code
        (f"{JOB}-x1", "node"),
    ]
    assert ws_api.rest_client.pool_manager.closed  # the cluster's close closed it


def _export(server, path, target, budget=None):
    async def scenario():
        async with backend_on(server) as (backend, _):
            return await backend.export(JOB, str(path), lambda s: extract(s, target, budget))

    return asyncio.run(scenario())


def test_emulated_exec_endpoint_backend_export_through_the_safe_extract(tmp_path):
    source = tmp_path / "held" / "art"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_bytes(b"alpha\n")
    (source / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    (source / "link").symlink_to("/etc/passwd")  # the node's: refused by extract
    target = tmp_path / "host" / "art"
    server = ExecServer(tmp_path)
    found = _export(server, source, target)
    assert server.exchanges[0].command == ["tar", "-C", str(source.parent), "-cf", "-", "--", "art"]
    assert found.complete and found.files == 2
    assert (target / "a.txt").read_bytes() == b"alpha\n"
    assert (target / "sub" / "b.bin").read_bytes() == (source / "sub" / "b.bin").read_bytes()
    assert not (target / "link").exists() and not (target / "link").is_symlink()
    assert found.refused == [
        "link: a symlink to '/etc/passwd', refused (only files and directories)"
    ]


def test_emulated_exec_endpoint_backend_export_stops_at_the_budget(tmp_path):
    source = tmp_path / "held" / "art"
    source.mkdir(parents=True)
    (source / "big").write_bytes(b"\0" * 3_000_000)
    found = _export(ExecServer(tmp_path), source, tmp_path / "host", Budget(1_000_000, 10))
    assert not found.complete and "big" in found.stopped
    assert not (tmp_path / "host" / "big").exists()


HOSTILE_TAR = """\
import io, sys, tarfile
out = tarfile.open(fileobj=sys.stdout.buffer, mode="w|")
for name in ("../escape.txt", "/abs.txt", "art/../../up.txt", "art/ok.txt"):
    info = tarfile.TarInfo(name)
    info.size = 3
    out.addfile(info, io.BytesIO(b"bad"))
out.close()
"""


def test_emulated_exec_endpoint_backend_export_refuses_a_hostile_pods_archive(tmp_path):
    """The pod's own `tar` is the node's to replace: its archive goes through extract."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tar"
    fake.write_text(f"#!{sys.executable}\n{HOSTILE_TAR}")
    fake.chmod(0o755)
    server = ExecServer(tmp_path, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    target = tmp_path / "host" / "in" / "art"
    found = _export(server, "/held/art", target)
    assert [p.name for p in target.iterdir()] == ["ok.txt"]
    assert not (tmp_path / "host" / "in" / "escape.txt").exists()
    assert not (tmp_path / "host" / "up.txt").exists() and not (tmp_path / "abs.txt").exists()
    assert len(found.refused) == 3 and all("outside the artifact" in r for r in found.refused)


def test_emulated_exec_endpoint_backend_export_of_a_missing_path_is_an_error(tmp_path):
    with pytest.raises(BackendError, match=r"tar of .*/nothing-here in .* exited 2: .*No such"):
        _export(ExecServer(tmp_path), tmp_path / "nothing-here", tmp_path / "host")


@pytest.mark.parametrize("path", ["relative/art", "/held/../etc", "/", "/held/."])
def test_export_paths_that_are_not_plain_absolute_are_refused(path):
    with pytest.raises(BackendError, match="not a path to export"):
        archive_argv(path)
