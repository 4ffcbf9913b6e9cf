"""A consumer's inputs on Kubernetes (backend/kubernetes/deliver.py), without a cluster:
which copies go where, how the deliver container's state reads, and the archive streamed
into it (regular files and directories only, nothing followed, modes without set-id
bits, and a reader that stops early stops its making)."""

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
        volumes=(
            VolumeMount("own", "/out", False),  # its own artifact: its pod's emptyDir
            VolumeMount("a-ro", "/in/a", False, BindMount("/store/p/a", "/in/a", True)),
            VolumeMount("b-ro", "/in/b", False, BindMount("/store/q/b", "/in/b", True)),
        )
    )
    assert deliveries(spec, _node("/in/a", "/in/b")) == [
        Delivery(Path("/store/p/a"), "/in/a"),
        Delivery(Path("/store/q/b"), "/in/b"),
    ]


def test_an_input_with_no_host_copy_is_refused():
    spec = SimpleNamespace(volumes=(VolumeMount("a-ro", "/in", False),))
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


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_anything_but_files_and_directories_is_refused(tmp_path, kind):
    (tmp_path / "ok.txt").write_bytes(b"ok")
    outside = tmp_path.parent / "outside.txt"
    outside.write_bytes(b"not for the pod")
    if kind == "symlink":
        (tmp_path / "zz").symlink_to(outside)
    else:
        os.mkfifo(tmp_path / "zz")
    with pytest.raises(BackendError, match="zz: not a regular file or directory"):
        streamed(tmp_path)


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
