"""The artifact copy-out, on crafted archives: only files and directories are written,
everything else is refused, and nothing lands outside the destination."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from sandbox_orch.artifacts import extract

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
