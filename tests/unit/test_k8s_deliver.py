"""A consumer's inputs on Kubernetes (backend/kubernetes/deliver.py), without a cluster:
which copies go where, how the deliver container's state reads, and the archive streamed
into it (files, directories and symlinks as symlinks, nothing followed, anything else
refused, a mount's masks empty, modes without set-id bits, and a reader that stops early
stops its making)."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandbox_orch.backend.base import BackendError, VolumeMount
from sandbox_orch.backend.kubernetes.deliver import (
    CHUNK,
    Delivery,
    archive,
    deliver_state,
    deliveries,
)
from sandbox_orch.mounts import BindMount


def _node(*paths: str) -> SimpleNamespace:
    return SimpleNamespace(inputs=[SimpleNamespace(path=p) for p in paths])


def test_each_input_with_a_host_copy_is_delivered_and_own_artifacts_are_not():
    spec = SimpleNamespace(
        mounts=(),
        volumes=(
            VolumeMount("own", "/out", False),  # its own artifact: its pod's emptyDir
            VolumeMount("a-ro", "/in/a", False, BindMount("/store/p/a", "/in/a", True)),
            VolumeMount("b-ro", "/in/b", False, BindMount("/store/q/b", "/in/b", True)),
        ),
    )
    assert deliveries(spec, _node("/in/a", "/in/b")) == [
        Delivery(Path("/store/p/a"), "/in/a"),
        Delivery(Path("/store/q/b"), "/in/b"),
    ]


def test_a_read_only_mount_is_delivered_with_its_masks_relative():
    spec = SimpleNamespace(
        volumes=(),
        mounts=(BindMount("/home/u/ws", "/w/", True, masks=("/w/.store",)),),
        user="10001:10002",
    )
    assert deliveries(spec, _node()) == [
        Delivery(Path("/home/u/ws"), "/w/", (".store",), reader=(10001, 10002))
    ]


def test_a_read_write_mount_is_refused():
    spec = SimpleNamespace(volumes=(), mounts=(BindMount("/home/u/ws", "/w", False),))
    with pytest.raises(BackendError, match="mount at /w is read-write: not on a cluster"):
        deliveries(spec, _node())


def test_an_input_with_no_host_copy_is_refused():
    spec = SimpleNamespace(mounts=(), volumes=(VolumeMount("a-ro", "/in", False),))
    with pytest.raises(BackendError, match="input at /in has no copy on this host"):
        deliveries(spec, _node("/in"))


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (None, ("waiting", None)),
        ([{"name": "other", "state": {"running": {}}}], ("waiting", None)),
        ([{"name": "deliver", "state": {"waiting": {}}}], ("waiting", None)),
        ([{"name": "deliver", "state": {"running": {}}}], ("running", None)),
        ([{"name": "deliver", "state": {"terminated": {"exitCode": 0}}}], ("terminated", 0)),
        ([{"name": "deliver", "state": {"terminated": {"exitCode": 3}}}], ("terminated", 3)),
        ([{"name": "deliver", "state": {"terminated": {}}}], ("terminated", None)),
    ],
)
def test_the_deliver_container_s_state_is_read_from_the_pod(statuses, expected):
    assert deliver_state({"status": {"initContainerStatuses": statuses}}) == expected


def streamed(source: Path) -> bytes:
    async def gather() -> bytes:
        return b"".join([piece async for piece in archive(source)])

    return asyncio.run(gather())


def test_the_archive_holds_the_tree_with_plain_modes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(b"bee")
    (tmp_path / "a.bin").write_bytes(b"x" * (3 * CHUNK + 5))  # several pieces
    (tmp_path / "a.bin").chmod(0o4777)  # set-uid and world-writable: neither is sent
    with tarfile.open(fileobj=io.BytesIO(streamed(tmp_path))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["a.bin", "sub", "sub/b.txt"]
        assert members["a.bin"].mode == 0o755 and members["sub"].isdir()
        assert (members["a.bin"].uid, members["a.bin"].uname) == (0, "")
        assert tar.extractfile("a.bin").read() == b"x" * (3 * CHUNK + 5)
        assert tar.extractfile("sub/b.txt").read() == b"bee"


def test_a_symlink_goes_as_a_symlink_never_followed(tmp_path):
    outside = tmp_path.parent / "outside.txt"
    outside.write_bytes(b"not for the pod")
    (tmp_path / "link").symlink_to(outside)
    (tmp_path / "dirlink").symlink_to(tmp_path.parent)
    with tarfile.open(fileobj=io.BytesIO(streamed(tmp_path))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["dirlink", "link"]  # nothing from behind either
    assert members["link"].issym() and members["link"].linkname == str(outside)
    assert members["dirlink"].issym() and members["dirlink"].linkname == str(tmp_path.parent)


def test_a_fifo_is_refused(tmp_path):
    (tmp_path / "ok.txt").write_bytes(b"ok")
    os.mkfifo(tmp_path / "zz")
    with pytest.raises(BackendError, match="zz: not a regular file, directory or symlink"):
        streamed(tmp_path)


def test_hidden_directories_go_empty(tmp_path):
    (tmp_path / "store" / "runs").mkdir(parents=True)
    (tmp_path / "store" / "runs" / "results.json").write_text("{}")
    (tmp_path / "kept.txt").write_text("kept")

    async def gather() -> bytes:
        return b"".join([piece async for piece in archive(tmp_path, ("store",))])

    with tarfile.open(fileobj=io.BytesIO(asyncio.run(gather()))) as tar:
        assert sorted(tar.getnames()) == ["kept.txt", "store"]


def test_a_reader_that_stops_early_stops_the_archive_s_making(tmp_path):
    (tmp_path / "big.bin").write_bytes(os.urandom(64 * CHUNK))  # far past the queue

    async def first_piece() -> bytes:
        stream = archive(tmp_path)
        piece = await anext(stream)
        await stream.aclose()
        return piece

    assert len(asyncio.run(first_piece())) == CHUNK
    maker = [t for t in threading.enumerate() if t.name == f"archive {tmp_path}"]
    for thread in maker:
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_an_archive_abandoned_mid_read_leaves_no_thread_waiting(tmp_path, monkeypatch):
    """Cancelled while its reader waits on a file being read (Ctrl-C during a delivery):
    the maker stops, and so does the worker thread that waited for its next piece, else
    the event loop would wait for it forever as it closes."""
    from sandbox_orch.backend.kubernetes import deliver

    (tmp_path / "slow.txt").write_text("slow")
    entered, go = threading.Event(), threading.Event()
    entry = deliver._Walk._entry

    def slow_entry(self, *arguments):
        entered.set()
        go.wait()
        entry(self, *arguments)

    monkeypatch.setattr(deliver._Walk, "_entry", slow_entry)

    async def scenario() -> None:
        reading = asyncio.ensure_future(anext(archive(tmp_path)))
        await asyncio.to_thread(entered.wait)  # the reader now waits for a piece
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        go.set()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(scenario())
        loop.run_until_complete(_executor_shut_down())
    finally:
        loop.close()


async def _executor_shut_down() -> None:
    async with asyncio.timeout(10):  # its threads all ended (else TimeoutError)
        await asyncio.get_running_loop().shutdown_default_executor()


NODE = (10001, 10001)


def _names(source: Path, reader=NODE) -> list[str]:
    async def gather() -> bytes:
        return b"".join([piece async for piece in archive(source, (), reader)])

    with tarfile.open(fileobj=io.BytesIO(asyncio.run(gather()))) as tar:
        return sorted(tar.getnames())


@pytest.mark.skipif(os.geteuid() != 0, reason="owners are set with chown (root)")
def test_only_what_the_node_could_read_through_a_bind_mount_goes(tmp_path):
    """This host reads as root; in the pod the copy is the node's. What uid 10001 could
    not read on Docker (others' bits, its own or its group's) must not reach it."""
    files = {
        "public.txt": (0o644, 0, 0),
        "private.txt": (0o600, 0, 0),  # root's: not the node's to read
        "mine.txt": (0o600, 10001, 0),  # the node's own
        "group.txt": (0o640, 0, 10001),  # its group's
        "denied-owner.txt": (0o044, 10001, 0),  # the owner's bits decide, not the others'
    }
    for name, (mode, uid, gid) in files.items():
        (tmp_path / name).write_text(name)
        os.chown(tmp_path / name, uid, gid)
        (tmp_path / name).chmod(mode)
    (tmp_path / "closed").mkdir(mode=0o700)
    (tmp_path / "closed" / "inside.txt").write_text("x")
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "inside.txt").write_text("y")
    assert _names(tmp_path) == [
        "closed",  # listed, as the node sees it, but empty
        "group.txt",
        "mine.txt",
        "open",
        "open/inside.txt",
        "public.txt",
    ]
    assert len(_names(tmp_path, reader=None)) == 9  # our own copies: everything
