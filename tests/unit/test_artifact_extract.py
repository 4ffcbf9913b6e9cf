"""The artifact copy-out, on crafted archives: only files and directories are written,
everything else is refused, and nothing lands outside the destination."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import PurePosixPath

import pytest

from sandbox_orch.artifacts import Budget, extract
from sandbox_orch.artifacts import copy as artifact_copy

from .helpers import plan_of


def archive(*members: tuple[str, str, bytes | str]) -> io.BytesIO:
    """(kind, name, data or link target) -> a tar stream, as the engine would send."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}[kind]  # fmt: skip
            if kind in ("symlink", "hardlink"):
                info.linkname = str(data)
            tar.addfile(info)
    buffer.seek(0)
    return buffer


def test_files_and_directories_are_copied_with_sizes_and_digest(tmp_path):
    found = extract(
        archive(("dir", "dist", ""), ("dir", "dist/sub", ""), ("file", "dist/a.txt", b"hello\n"),
                ("file", "dist/sub/b.bin", bytes(range(256)))),
        tmp_path / "out",
    )  # fmt: skip
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"hello\n"
    assert (tmp_path / "out" / "sub" / "b.bin").read_bytes() == bytes(range(256))
    assert (found.files, found.bytes, found.refused) == (2, 262, [])
    pairs = sorted(
        [("a.txt", hashlib.sha256(b"hello\n").hexdigest()),
         ("sub/b.bin", hashlib.sha256(bytes(range(256))).hexdigest())]
    )  # fmt: skip
    listing = "".join(f"{p}\0{d}\n" for p, d in pairs)
    assert found.sha256 == hashlib.sha256(listing.encode()).hexdigest()


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (("symlink", "dist/pw", "/etc/passwd"), "a symlink to '/etc/passwd'"),
        (("symlink", "dist/root", "/"), "a symlink to '/'"),
        (("hardlink", "dist/h", "dist/a.txt"), "a hard link"),
        (("fifo", "dist/pipe", ""), "a FIFO"),
        (("chr", "dist/null", ""), "a device"),
        (("file", "/etc/evil", b"x"), "outside the artifact"),
        (("file", "dist/../../evil", b"x"), "outside the artifact"),
    ],
)
def test_anything_but_files_and_directories_is_refused(tmp_path, member, why):
    found = extract(archive(("file", "dist/a.txt", b"ok"), member), tmp_path / "out")
    assert len(found.refused) == 1 and why in found.refused[0]
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert written == ["out", "out/a.txt"]
    assert not (tmp_path / "evil").exists()


def test_a_symlinked_directory_cannot_redirect_later_files(tmp_path):
    """A link to /tmp first, then a file "through" it: the link is refused, and the file's
    parent does not exist in the copy, so it is refused too; nothing goes through."""
    outside = tmp_path / "outside"
    outside.mkdir()
    found = extract(
        archive(("symlink", "dist/d", str(outside)), ("file", "dist/d/x", b"payload")),
        tmp_path / "out",
    )
    assert len(found.refused) == 2 and list(outside.iterdir()) == []


def test_a_name_that_already_exists_is_not_overwritten(tmp_path):
    found = extract(
        archive(("file", "dist/a", b"first"), ("file", "dist/a", b"second")), tmp_path / "out"
    )
    assert (tmp_path / "out" / "a").read_bytes() == b"first" and len(found.refused) == 1


def test_inputs_must_come_from_an_ancestors_declared_artifact():
    from sandbox_orch.errors import InputRefused

    with pytest.raises(InputRefused) as caught:
        plan_of(
            """
            version: 1
            name: x
            nodes:
              build: {command: [x], outputs: {artifacts: [{name: dist, path: /out}]}}
              side: {command: [x], inputs: [{from: build/dist, path: /in}]}
              after:
                needs: [build]
                command: [x]
                inputs: [{from: build/nope, path: /in}, {from: ghost/dist, path: /in2}]
            """
        )
    lines = [str(p) for p in caught.value.problems]
    assert any(
        "side.inputs[0].from: 'build' is not a need or an ancestor of 'side'" in x for x in lines
    )
    assert any("node 'build' has no artifact 'nope'" in x for x in lines)
    assert any("unknown node 'ghost'" in x for x in lines)


# --- budgets: what reaches the host is bounded while streaming ----------------------------

MIB = 1024 * 1024


class Endless(io.RawIOBase):
    """A tar stream: one header claiming `size` bytes, then zeros for ever; counts reads."""

    def __init__(self, name: str, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size = size
        self.header = info.tobuf(format=tarfile.PAX_FORMAT)
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        start = self.read_bytes
        for index in range(len(buffer)):
            offset = start + index
            buffer[index] = self.header[offset] if offset < len(self.header) else 0
        self.read_bytes += len(buffer)
        return len(buffer)


@pytest.mark.parametrize("claimed", [64 * MIB, 1 << 40])
def test_a_header_claiming_more_than_the_budget_stops_before_its_data(tmp_path, claimed):
    stream = Endless("dist/sparse", claimed)
    found = extract(io.BufferedReader(stream), tmp_path / "out", Budget(1 * MIB, 100))
    assert stream.read_bytes < 1 * MIB  # the zeros were never read through
    assert not found.complete and found.files == 0
    assert (
        found.stopped.startswith("sparse: ") and "would pass the artifact's limit" in found.stopped
    )
    assert "1m, 100 files and directories" in found.stopped
    assert written_under(tmp_path / "out") == []


def written_under(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_the_copy_stops_at_the_first_file_past_the_budget_and_keeps_no_part_of_it(tmp_path):
    found = extract(
        archive(("file", "dist/a", b"a" * 600), ("file", "dist/b", b"b" * 600),
                ("file", "dist/c", b"c" * 10)),
        tmp_path / "out",
        Budget(1000, 100),
    )  # fmt: skip
    assert written_under(tmp_path / "out") == ["a"]
    assert (found.files, found.bytes, found.complete) == (1, 600, False)
    assert found.stopped.startswith("b: 600 bytes")
    assert "neither this nor anything after it was copied" in found.stopped
    assert found.problems()[-1] == found.stopped


def test_a_file_longer_than_it_declared_is_removed_when_it_passes_the_budget(tmp_path):
    """The bytes that come are counted, not the size announced before them."""
    from sandbox_orch.artifacts.copy import _Stopped, _Writer

    writer = _Writer(tmp_path, Budget(1 * MIB, 10))
    with pytest.raises(_Stopped):
        writer.write(io.BytesIO(bytes(3 * MIB)), PurePosixPath("liar"), declared=1)
    assert list(tmp_path.iterdir()) == []
    assert "liar: " in writer.result.stopped and writer.result.files == 0


def test_entries_past_the_budget_stop_the_copy(tmp_path):
    members = [("file", f"dist/e{i:03}", b"") for i in range(50)]
    found = extract(archive(*members), tmp_path / "out", Budget(1 * MIB, 10))
    assert written_under(tmp_path / "out") == [f"e{i:03}" for i in range(10)]
    assert found.stopped.startswith("e010: one entry more than the artifact may hold")


def test_refused_entries_count_too_and_are_listed_only_up_to_a_bound(tmp_path):
    links = [("symlink", f"dist/l{i:03}", "/etc/passwd") for i in range(150)]
    found = extract(archive(*links), tmp_path / "out", Budget(1 * MIB, 1000))
    assert len(found.refused) == 100 and found.unlisted == 50 and found.complete
    assert found.problems()[-1] == "... and 50 more refused"
    found = extract(archive(*links), tmp_path / "again", Budget(1 * MIB, 120))
    assert not found.complete and found.stopped.startswith("l120: ")


def test_data_read_through_for_a_refused_member_is_charged(tmp_path):
    """A regular file outside the artifact is not written, but tar reads its data to reach
    the next member: a huge one must stop the copy, not be read."""
    stream = Endless("/etc/evil", 1 << 40)
    found = extract(io.BufferedReader(stream), tmp_path / "out", Budget(1 * MIB, 100))
    assert stream.read_bytes < 1 * MIB and not found.complete
    assert "outside the artifact" in found.refused[0]


def test_members_deeper_than_the_limit_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(artifact_copy, "MAX_DEPTH", 3)
    found = extract(
        archive(("dir", "d", ""), ("dir", "d/1", ""), ("dir", "d/1/2", ""), ("dir", "d/1/2/3", ""),
                ("file", "d/1/2/f", b"ok"), ("file", "d/1/2/3/deep", b"no")),
        tmp_path / "out",
    )  # fmt: skip
    assert written_under(tmp_path / "out") == ["1", "1/2", "1/2/f"]
    assert found.refused == [
        "1/2/3: deeper than 3 directories, refused",
        "1/2/3/deep: deeper than 3 directories, refused",
    ]


def test_a_budget_follows_the_volume_cap():
    from sandbox_orch.backend import inode_limit

    assert Budget.for_cap(1 * MIB) == Budget(1 * MIB, 1023)  # at least 1024 inodes
    assert Budget.for_cap(1024 * MIB) == Budget(1024 * MIB, 262143)
    assert inode_limit(1024 * MIB) == 1024 * MIB // 4096
