"""Build the sandbox-orch container images (images/<name>/Dockerfile) with the Docker SDK.

Images are rebuilt only when their inputs change: each image carries a label with a
hash of its build context, its sandbox-orch parent's image id and the package version.
The root parent (sandbox-orch/bootstrap:bookworm) is made offline with mmdebstrap,
because no image registry may be reachable.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import docker
import docker.errors
from docker.models.images import Image

from sandbox_orch import __version__
from sandbox_orch.shipped import IMAGES_DIR, PACKAGE_DIR

REPOSITORY_PREFIX = "sandbox-orch/"
BOOTSTRAP_REF = "sandbox-orch/bootstrap:bookworm"

IMAGE_LABEL = "sandbox-orch.image"
VERSION_LABEL = "sandbox-orch.version"
HASH_LABEL = "sandbox-orch.context-sha256"
TITLE_LABEL = "org.opencontainers.image.title"

MMDEBSTRAP_CMD = [
    "mmdebstrap",
    "--variant=minbase",
    "--include=ca-certificates",
    "bookworm",
    "-",
]
# The registry fallback for the bootstrap, used only when mmdebstrap is unavailable/fails.
FALLBACK_REPOSITORY, FALLBACK_TAG = "debian", "bookworm-slim"

# `FROM [--platform=...] image [AS stage]`; only the image reference is captured.
_FROM_RE = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)", re.IGNORECASE | re.MULTILINE)
_LOG_TAIL_LINES = 25
_CHUNK_BYTES = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True)
class BuildOutcome:
    """What build_images did for one image; built=False means it was up to date."""

    name: str
    ref: str
    image_id: str
    built: bool


def image_ref(name: str) -> str:
    """The tag an image is built under (``latest`` implicit)."""
    return f"{REPOSITORY_PREFIX}{name}"


def available_images(images_dir: Path = IMAGES_DIR) -> list[str]:
    """Names of the image directories that hold a Dockerfile, sorted."""
    if not images_dir.is_dir():
        return []
    return sorted(p.parent.name for p in images_dir.glob("*/Dockerfile") if p.is_file())


def build_hint(image: str, images_dir: Path = IMAGES_DIR) -> str:
    """How to build a missing image: by its name when it is one of ours."""
    name = image.removeprefix(REPOSITORY_PREFIX).removesuffix(":latest")
    available = available_images(images_dir)
    if image.startswith(REPOSITORY_PREFIX) and name in available:
        return f"run `sandbox-orch images build {name}`"
    return (
        f"build it on this engine (`docker build -t {image} ...`); "
        f"`sandbox-orch images build` builds only its own images ({', '.join(available)})"
    )


def parent_refs(dockerfile: Path) -> list[str]:
    """The sandbox-orch images a Dockerfile builds FROM, as written (tag may be absent)."""
    refs = _FROM_RE.findall(dockerfile.read_text(encoding="utf-8"))
    return [ref for ref in refs if ref.startswith(REPOSITORY_PREFIX)]


def _ref_name(ref: str) -> str:
    """'sandbox-orch/base:latest' -> 'base'."""
    return ref.removeprefix(REPOSITORY_PREFIX).split("@", 1)[0].split(":", 1)[0]


def _dependencies(name: str, images_dir: Path, available: set[str]) -> list[str]:
    """In-tree images this one builds FROM; others (the bootstrap) are not built here."""
    names = (_ref_name(ref) for ref in parent_refs(images_dir / name / "Dockerfile"))
    return [dep for dep in names if dep in available and dep != name]


def build_order(names: list[str] | None, images_dir: Path = IMAGES_DIR) -> list[str]:
    """The requested images (all if None) plus their in-tree parents, parents first."""
    available = available_images(images_dir)
    requested = available if names is None else list(names)
    unknown = sorted(set(requested) - set(available))
    if unknown:
        raise ValueError(
            f"unknown image(s): {', '.join(unknown)}; "
            f"available: {', '.join(available) or '(none)'} in {images_dir}"
        )
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise ValueError(f"image dependency cycle: {cycle}")
        visiting.append(name)
        for dep in _dependencies(name, images_dir, set(available)):
            visit(dep)
        visiting.pop()
        order.append(name)

    for name in requested:
        visit(name)
    return order


CONTEXT_EXTRAS = "context.txt"  # an image's files from outside its directory (if any)


@contextlib.contextmanager
def build_context(image_dir: Path) -> Iterator[Path]:
    """The image's build context: its directory, or, when it has a context.txt, a copy
    of it with what that names (package modules, installed libraries) added, so the
    image is built, and its hash taken, from exactly those files."""
    extras = image_dir / CONTEXT_EXTRAS
    if not extras.is_file():
        yield image_dir
        return
    with tempfile.TemporaryDirectory(prefix="sandbox-orch-context-") as scratch:
        context = Path(scratch) / image_dir.name
        shutil.copytree(image_dir, context)
        for source, target in context_extras(extras.read_text(encoding="utf-8")):
            placed = context / target
            placed.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, placed, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, placed)
        yield context


def context_extras(text: str) -> list[tuple[Path, str]]:
    """(source, path in the context) for each line of a context.txt: `package PATH`
    (sandbox_orch/PATH) or `module NAME` (vendor/NAME, where it is installed)."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) == 2 and words[0] == "package" and ".." not in words[1].split("/"):
            found.append((PACKAGE_DIR / words[1], f"sandbox_orch/{words[1]}"))
        elif len(words) == 2 and words[0] == "module" and words[1].isidentifier():
            found.append((_installed(words[1]), f"vendor/{words[1]}"))
        else:
            raise ValueError(f"{CONTEXT_EXTRAS} line {number}: not `package PATH` or `module NAME`")
    return found


def _installed(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{CONTEXT_EXTRAS}: {name} is not an installed package here")
    return Path(next(iter(spec.submodule_search_locations)))


def context_hash(context_dir: Path, parent_ids: dict[str, str], version: str = __version__) -> str:
    """Deterministic sha256 of everything that decides an image's content.

    Covers every file in the context (relative path, executable bit, bytes), the ids
    of the sandbox-orch parents (a rebuilt parent must rebuild its children) and the
    package version. Fields are length-prefixed so no two inputs hash alike.
    """
    digest = hashlib.sha256()

    def field(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)

    field(b"sandbox-orch-image-v1")
    field(version.encode())
    for ref, image_id in sorted(parent_ids.items()):
        field(ref.encode())
        field(image_id.encode())
    files = sorted(
        (p for p in context_dir.rglob("*") if p.is_file()),
        key=lambda p: p.relative_to(context_dir).as_posix(),
    )
    for path in files:
        field(path.relative_to(context_dir).as_posix().encode())
        # Only the executable bit: umask differences between checkouts must not rebuild.
        field(b"x" if path.stat().st_mode & 0o111 else b"-")
        field(path.read_bytes())
    return digest.hexdigest()


def image_labels(name: str, digest: str) -> dict[str, str]:
    """Labels for an image. Never `sandbox-orch.run`: gc removes what carries that."""
    return {
        IMAGE_LABEL: name,
        VERSION_LABEL: __version__,
        TITLE_LABEL: image_ref(name),
        HASH_LABEL: digest,
    }


def build_levels(names: list[str] | None, images_dir: Path = IMAGES_DIR) -> list[list[str]]:
    """build_order in waves: each image after every wave holding one of its parents, so
    the images of one wave are independent of each other. Pure."""
    available = set(available_images(images_dir))
    level: dict[str, int] = {}
    for name in build_order(names, images_dir):  # parents first: their levels are known
        parents = _dependencies(name, images_dir, available)
        level[name] = 1 + max((level[p] for p in parents), default=-1)
    waves: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for name, at in level.items():
        waves[at].append(name)
    return waves


def build_images(
    client: docker.DockerClient,
    names: list[str] | None = None,
    *,
    images_dir: Path = IMAGES_DIR,
    log: Callable[[str], None] = print,
) -> list[BuildOutcome]:
    """Build the requested images (all if None) and their parents, skipping up-to-date ones.

    The images of a wave build at the same time (claude and codex spend a minute each
    fetching packages, mostly waiting); their output lines then name the image. A failed
    build lets the others of its wave finish, then raises."""
    outcomes: list[BuildOutcome] = []
    replaced: list[str] = []
    for wave in build_levels(names, images_dir):
        for outcome, old_id in _build_wave(client, wave, images_dir, log):
            outcomes.append(outcome)
            if old_id is not None:
                replaced.append(old_id)
    # Children are replaced after their parents; removing the newest first frees the
    # old parents of their old children, so the whole stale chain can go.
    for image_id in reversed(replaced):
        _remove_replaced(client, image_id, log)
    return outcomes


def _build_wave(
    client: docker.DockerClient, wave: list[str], images_dir: Path, log: Callable[[str], None]
) -> list[tuple[BuildOutcome, str | None]]:
    if len(wave) == 1:
        return [_build_one(client, wave[0], images_dir / wave[0], log)]

    def build(name: str) -> tuple[BuildOutcome, str | None]:
        def named(line: str) -> None:
            log(line if line.startswith(image_ref(name)) else f"{image_ref(name)}: {line}")

        return _build_one(client, name, images_dir / name, named)

    futures = [_in_background(build, name) for name in wave]
    wait(futures)
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error
    return [future.result() for future in futures]


def _in_background(fn: Callable[[str], T], arg: str) -> Future[T]:
    """`fn(arg)` in a daemon thread: a Ctrl-C while the command waits for it ends the
    command at once (the engine drops a build whose client has gone), where a pool's
    threads would be waited for, a minute of builds, before the command could exit."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(fn(arg))
        except BaseException as error:  # handed to the waiting thread, raised there
            future.set_exception(error)

    threading.Thread(target=run, name=f"build {arg}", daemon=True).start()
    return future


def _build_one(
    client: docker.DockerClient, name: str, context: Path, log: Callable[[str], None]
) -> tuple[BuildOutcome, str | None]:
    """Build one image unless up to date; also returns the id of the image it replaced."""
    with build_context(context) as assembled:
        return _build_from(client, name, assembled, log)


def _build_from(
    client: docker.DockerClient, name: str, context: Path, log: Callable[[str], None]
) -> tuple[BuildOutcome, str | None]:
    ref = image_ref(name)
    # Parents come earlier in build_order, so they exist (or are the bootstrap) by now.
    parent_ids = {
        parent: _ensure_parent(client, parent, log)
        for parent in parent_refs(context / "Dockerfile")
    }
    digest = context_hash(context, parent_ids)
    existing = _find_image(client, ref)
    if existing is not None and existing.labels.get(HASH_LABEL) == digest:
        log(f"{ref}: up to date ({existing.short_id})")
        return BuildOutcome(name=name, ref=ref, image_id=existing.id, built=False), None

    log(f"{ref}: building from {context}")
    image_id = _run_build(client, context, ref, image_labels(name, digest), log)
    log(f"{ref}: built {image_id[:19]}")
    old_id = existing.id if existing is not None and existing.id != image_id else None
    return BuildOutcome(name=name, ref=ref, image_id=image_id, built=True), old_id


def _find_image(client: docker.DockerClient, ref: str) -> Image | None:
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def _ensure_parent(client: docker.DockerClient, ref: str, log: Callable[[str], None]) -> str:
    """Image id of a sandbox-orch parent, creating the bootstrap if it is the one missing."""
    image = _find_image(client, ref)
    if image is not None:
        return image.id
    if ref == BOOTSTRAP_REF:
        return ensure_bootstrap(client, log)
    raise RuntimeError(f"parent image {ref} is missing and is not built from {IMAGES_DIR}")


def _run_build(
    client: docker.DockerClient,
    context: Path,
    ref: str,
    labels: dict[str, str],
    log: Callable[[str], None],
) -> str:
    """Run one classic-builder build, streaming its output; returns the new image id."""
    tail: collections.deque[str] = collections.deque(maxlen=_LOG_TAIL_LINES)
    image_id = None
    try:
        # pull=False: parents are local (there may be no registry); forcerm: no
        # intermediate containers left behind even when a step fails.
        chunks = client.api.build(
            path=str(context),
            tag=ref,
            labels=labels,
            pull=False,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in chunks:
            for line in chunk.get("stream", "").splitlines():
                if line.strip():
                    tail.append(line.strip())
                    log(line.strip())
            if "error" in chunk or "errorDetail" in chunk:
                error = chunk.get("error") or chunk["errorDetail"].get("message", "")
                raise _build_failed(ref, error.strip(), tail)
            image_id = chunk.get("aux", {}).get("ID", image_id)
    except docker.errors.APIError as exc:
        raise _build_failed(ref, str(exc), tail) from exc
    return image_id or client.images.get(ref).id


def _build_failed(ref: str, error: str, tail: collections.deque[str]) -> RuntimeError:
    return RuntimeError(f"building {ref} failed: {error}\nlast build output:\n" + "\n".join(tail))


def _remove_replaced(
    client: docker.DockerClient, image_id: str, log: Callable[[str], None]
) -> None:
    """Best effort: drop the image a rebuild replaced so rebuilds do not pile up.

    Only while it is dangling (someone may have tagged it to keep it); the engine also
    refuses while containers or child images still use it, which is fine.
    """
    try:
        if client.images.get(image_id).tags:
            return
        client.images.remove(image_id)
        log(f"removed replaced image {image_id[:19]}")
    except docker.errors.APIError:
        pass


def ensure_bootstrap(client: docker.DockerClient, log: Callable[[str], None] = print) -> str:
    """Id of sandbox-orch/bootstrap:bookworm, making it offline (mmdebstrap) if missing."""
    existing = _find_image(client, BOOTSTRAP_REF)
    if existing is not None:
        return existing.id
    failures = []
    if shutil.which(MMDEBSTRAP_CMD[0]):
        try:
            return _bootstrap_with_mmdebstrap(client, log)
        except (RuntimeError, OSError, docker.errors.APIError) as exc:
            failures.append(f"mmdebstrap failed: {exc}")
            log(failures[-1])
    else:
        failures.append("mmdebstrap is not installed")
    try:
        return _bootstrap_by_pull(client, log)
    except docker.errors.APIError as exc:
        failures.append(f"pulling {FALLBACK_REPOSITORY}:{FALLBACK_TAG} failed: {exc}")
    raise RuntimeError(
        f"cannot create {BOOTSTRAP_REF}: {'; '.join(failures)}. "
        "Install mmdebstrap (apt-get install mmdebstrap) or make an image registry reachable."
    )


def _bootstrap_with_mmdebstrap(client: docker.DockerClient, log: Callable[[str], None]) -> str:
    repository, tag = BOOTSTRAP_REF.rsplit(":", 1)
    log(f"{BOOTSTRAP_REF}: creating with {' '.join(MMDEBSTRAP_CMD)} (about half a minute)")
    # `docker import` keeps no config; these make the result self-describing.
    changes = [f"LABEL {IMAGE_LABEL}=bootstrap {VERSION_LABEL}={__version__}"]
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(MMDEBSTRAP_CMD, stdout=subprocess.PIPE, stderr=stderr)
        assert proc.stdout is not None
        try:
            # Streamed in chunks: the ~170 MB tarball never sits in memory.
            result = client.api.import_image_from_stream(
                _chunks(proc.stdout), repository=repository, tag=tag, changes=changes
            )
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        returncode = proc.wait()
        stderr.seek(0)
        stderr_tail = stderr.read().decode(errors="replace").strip().splitlines()[-10:]
    error = _stream_error(result)
    if returncode != 0 or error:
        # A truncated tarball may still have been imported: never leave it tagged.
        _remove_ref(client, BOOTSTRAP_REF)
        raise RuntimeError(
            f"mmdebstrap exit {returncode}, import error {error!r}: " + " | ".join(stderr_tail)
        )
    image = client.images.get(BOOTSTRAP_REF)
    log(f"{BOOTSTRAP_REF}: created {image.short_id}")
    return image.id


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(_CHUNK_BYTES):
        yield chunk


def _stream_error(result: object) -> str:
    """The error, if any, in the engine's JSON progress stream (HTTP 200 even on failure)."""
    for line in str(result or "").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("error"):
            return str(message["error"])
    return ""


def _remove_ref(client: docker.DockerClient, ref: str) -> None:
    with contextlib.suppress(docker.errors.APIError):
        client.images.remove(ref, force=True)


def _bootstrap_by_pull(client: docker.DockerClient, log: Callable[[str], None]) -> str:
    repository, tag = BOOTSTRAP_REF.rsplit(":", 1)
    log(f"{BOOTSTRAP_REF}: pulling {FALLBACK_REPOSITORY}:{FALLBACK_TAG}")
    image = client.images.pull(FALLBACK_REPOSITORY, FALLBACK_TAG)
    image.tag(repository, tag)
    return client.images.get(BOOTSTRAP_REF).id
