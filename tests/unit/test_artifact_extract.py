"""The artifact copy-out, on crafted archives: only files and directories are written,
everything else is refused, and nothing lands outside the destination."""

from __future__ import annotations

import hashlib
import io
import os
import stat
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


# --- what each refusal says, and the edges of the budget ----------------------------------


def member(name: str, kind: bytes, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, linkname
    return info


def raw_archive(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("info", "why"),
    [
        (member("d/l", tarfile.SYMTYPE, linkname="/etc"), "a symlink to '/etc'"),
        (member("d/h", tarfile.LNKTYPE, linkname="d/f"), "a hard link to 'd/f'"),
        (member("d/p", tarfile.FIFOTYPE), "a FIFO"),
        (member("d/c", tarfile.CHRTYPE), "a device"),
        (member("d/b", tarfile.BLKTYPE), "a device"),
        (member("d/u", b"Z"), "not a regular file"),  # a type tar does not know
    ],
)
def test_each_refused_kind_is_named(tmp_path, info, why):
    found = extract(raw_archive((info, b"")), tmp_path / "out")
    name = info.name.split("/", 1)[1]
    assert found.refused == [f"{name}: {why}, refused (only files and directories)"]
    assert found.problems() == found.refused and found.complete
    assert written_under(tmp_path / "out") == []


def test_the_archives_root_is_not_an_entry(tmp_path):
    """The engine's archive starts with the archived directory itself: it costs nothing."""
    found = extract(archive(("dir", "dist", ""), ("file", "dist/a", b"x")), tmp_path / "out",
                    Budget(1 * MIB, 1))  # fmt: skip
    assert found.complete and written_under(tmp_path / "out") == ["a"]


def test_a_path_outside_counts_as_an_entry_named_as_it_came(tmp_path):
    found = extract(archive(("file", "d/a", b"x"), ("file", "/etc/evil", b"y")), tmp_path / "out",
                    Budget(1 * MIB, 1))  # fmt: skip
    assert found.stopped.startswith("/etc/evil: one entry more than the artifact may hold")
    assert found.refused == []


def test_directories_and_files_get_fixed_modes(tmp_path):
    """0755 and 0644 whatever the archive says, and whatever our umask would allow."""
    dist = member("d/sub", tarfile.DIRTYPE)
    dist.mode = 0o777
    secret = member("d/sub/f", tarfile.REGTYPE, size=2)
    secret.mode = 0o4777
    old = os.umask(0)
    try:
        extract(raw_archive((dist, b""), (secret, b"ok")), tmp_path / "out")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out" / "sub").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "sub" / "f").stat().st_mode) == 0o644


def test_a_directory_whose_parent_never_came_is_refused(tmp_path):
    """Nothing is created implicitly: the copy makes only the directories the archive has."""
    found = extract(archive(("dir", "d/a/b", ""), ("file", "d/top", b"x")), tmp_path / "out")
    assert found.refused == ["a/b/: No such file or directory"]
    assert written_under(tmp_path / "out") == ["top"]


def test_a_directory_listed_twice_is_no_refusal(tmp_path):
    found = extract(archive(("dir", "d/a", ""), ("dir", "d/a", ""), ("file", "d/a/f", b"x")),
                    tmp_path / "out")  # fmt: skip
    assert found.refused == [] and written_under(tmp_path / "out") == ["a", "a/f"]


@pytest.mark.parametrize("exists", [True, False])
def test_the_destination_is_made_with_its_parents_or_reused(tmp_path, exists):
    destination = tmp_path / "runs" / "r1" / "node" / "dist"
    if exists:
        destination.mkdir(parents=True)
    found = extract(archive(("file", "d/a", b"x")), destination)
    assert found.files == 1 and (destination / "a").read_bytes() == b"x"


def test_a_file_of_several_chunks_is_counted_and_digested_whole(tmp_path):
    data = bytes(range(256)) * (5 * artifact_copy.CHUNK // 512)  # 2.5 chunks
    found = extract(archive(("file", "d/big", data)), tmp_path / "out", Budget(len(data), 10))
    assert found.complete and (found.files, found.bytes) == (1, len(data))
    assert found.digests == [("big", hashlib.sha256(data).hexdigest())]
    assert (tmp_path / "out" / "big").read_bytes() == data


class Recording(io.RawIOBase):
    """A file's data, recording how much each read asked for."""

    def __init__(self, size: int) -> None:
        self.left, self.asked = size, []

    def readable(self) -> bool:
        return True

    def read(self, size=-1):
        self.asked.append(size)
        count = self.left if size is None or size < 0 else min(size, self.left)
        self.left -= count
        return bytes(count)


def test_a_file_is_read_one_bounded_chunk_at_a_time(tmp_path):
    """Never all at once: a file that keeps growing must meet the budget, not our memory."""
    from sandbox_orch.artifacts.copy import _Writer

    writer = _Writer(tmp_path, Budget(4 * MIB, 10))
    source = Recording(3 * MIB)
    writer.write(source, PurePosixPath("f"), declared=3 * MIB)
    assert source.asked and set(source.asked) == {artifact_copy.CHUNK}
    assert writer.result.bytes == 3 * MIB


def test_a_file_exactly_at_the_budget_is_copied(tmp_path):
    found = extract(archive(("file", "d/a", b"a" * 600), ("file", "d/b", b"b" * 400)),
                    tmp_path / "out", Budget(1000, 2))  # fmt: skip
    assert found.complete and found.bytes == 1000 and written_under(tmp_path / "out") == ["a", "b"]


def test_bytes_that_come_past_the_budget_stop_even_at_one_byte(tmp_path):
    from sandbox_orch.artifacts.copy import _Stopped, _Writer

    writer = _Writer(tmp_path, Budget(1000, 10))
    writer.write(io.BytesIO(b"x" * 1000), PurePosixPath("exact"), declared=0)
    with pytest.raises(_Stopped):
        writer.write(io.BytesIO(b"y"), PurePosixPath("one"), declared=0)
    assert writer.result.stopped.startswith("one: 1 bytes read: past the artifact's limit")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exact"]


@pytest.mark.parametrize(("size", "said"), [(1023, "1023 bytes"), (1024, "1k"), (1025, "1025")])
def test_sizes_in_a_stop_are_spelled_exactly(tmp_path, size, said):
    found = extract(archive(("file", "d/a", b"x" * size)), tmp_path / "out", Budget(10, 5))
    assert found.stopped == (
        f"a: {said} (holes included) would pass the artifact's limit (10 bytes, 5 files and "
        "directories); the copy stopped here: neither this nor anything after it was copied"
    )


def test_a_refused_file_still_spends_the_data_read_through(tmp_path):
    """A second file of the same name is not written, but its data was read: it counts."""
    found = extract(
        archive(("file", "d/a", b"1" * 400), ("file", "d/a", b"2" * 400), ("file", "d/b", b"3" * 300)),
        tmp_path / "out",
        Budget(1000, 10),
    )  # fmt: skip
    assert found.refused == ["a: File exists"] and found.stopped.startswith("b: 300 bytes")
    assert written_under(tmp_path / "out") == ["a"]


def test_an_archive_cut_inside_a_file_stops_the_copy_and_leaves_no_part_of_it(tmp_path):
    """The engine's stream may end early: the file it cut is removed, the reason kept."""
    whole = archive(("file", "d/a", b"x" * 100), ("file", "d/b", b"y" * 2000)).getvalue()
    found = extract(io.BytesIO(whole[: 3 * 512 + 100]), tmp_path / "out")
    assert found.stopped == (
        "the engine's archive could not be read (unexpected end of data): copy stopped"
    )
    assert (found.files, found.bytes) == (1, 100) and not found.complete
    assert written_under(tmp_path / "out") == ["a"]


@pytest.mark.parametrize("cut", [2 * 512, 2 * 512 + 100, 2 * 512 + 511])
def test_an_archive_cut_between_files_is_not_taken_for_a_whole_one(tmp_path, cut):
    """Cut after a file's data, or inside the next header: what came is kept, but the copy
    is not complete (tarfile alone would end quietly, as if the archive were shorter)."""
    whole = archive(("file", "d/a", b"x" * 100), ("file", "d/b", b"y" * 2000)).getvalue()
    found = extract(io.BytesIO(whole[:cut]), tmp_path / "out")
    assert found.stopped is not None and found.stopped.startswith(
        "the engine's archive could not be read (it ends without its end-of-archive blocks: "
    )
    assert found.files == 1 and written_under(tmp_path / "out") == ["a"]


def test_an_empty_stream_is_not_an_empty_artifact(tmp_path):
    found = extract(io.BytesIO(b""), tmp_path / "out")
    assert not found.complete and "could not be read" in found.stopped


class Unseekable(io.RawIOBase):
    """A stream as the engine sends it: it can only be read forward."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_the_archive_is_read_as_a_stream(tmp_path):
    stream = io.BufferedReader(Unseekable(archive(("file", "d/a", b"x")).getvalue()))
    found = extract(stream, tmp_path / "out")
    assert found.complete and found.files == 1


def test_problems_list_refusals_then_the_count_past_the_bound_then_the_stop():
    from sandbox_orch.artifacts import Extracted

    found = Extracted(refused=["a: x"], unlisted=3, stopped="b: stop")
    assert found.problems() == ["a: x", "... and 3 more refused", "b: stop"]
    assert Extracted(refused=["a: x"]).problems() == ["a: x"]
    assert not found.complete and Extracted().complete


def test_data_read_through_for_refused_members_adds_up(tmp_path):
    """Outside or too deep, a member's data is read to reach the next: each one counts, and
    the stop names the member as it came."""
    found = extract(
        archive(("file", "/a", b"1" * 400), ("file", "../b", b"2" * 400), ("file", "d/c", b"3" * 300)),
        tmp_path / "out",
        Budget(1000, 10),
    )  # fmt: skip
    assert found.stopped.startswith("c: 300 bytes (holes included) would pass")
    found = extract(archive(("file", "/a", b"1" * 2000)), tmp_path / "again", Budget(1000, 10))
    assert found.stopped.startswith("/a: 2000 (holes included) would pass")


def test_a_member_too_deep_is_charged_under_its_own_name(tmp_path, monkeypatch):
    monkeypatch.setattr(artifact_copy, "MAX_DEPTH", 1)
    found = extract(archive(("file", "d/x/deep", b"1" * 2000)), tmp_path / "out", Budget(1000, 10))
    assert found.refused == ["x/deep: deeper than 1 directories, refused"]
    assert found.stopped.startswith("x/deep: 2000 (holes included) would pass")


def test_bytes_written_add_up_across_files(tmp_path):
    """Each file fits on its own, and in chunks; together they pass the budget."""
    chunk = artifact_copy.CHUNK
    found = extract(
        archive(("file", "d/a", b"a" * (chunk + chunk // 2)), ("file", "d/b", b"b" * chunk)),
        tmp_path / "out",
        Budget(2 * chunk, 10),
    )
    assert found.stopped.startswith("b: 1m (holes included) would pass")
    assert written_under(tmp_path / "out") == ["a"] and found.bytes == chunk + chunk // 2
