"""Which mutated modules CI must mutate again: those whose verdicts could differ from the
last full run that passed (the baseline, `baseline.json`), as PIT's history files and
cargo-mutants' `--in-diff` do. A full run mutates everything; CI mutates only:

- a module whose source changed;
- a module one of whose covering test files changed or went (the files that ran its
  mutants in the baseline's run, with the test support modules they import and the
  data files they name). A new test file only adds killers, so it changes nothing;
- a module whose entries in equivalent.txt or pending.txt changed;
- everything, when what every test depends on changed (pyproject.toml, conftest.py), or
  when there is no baseline.

What a diff cannot see is a change elsewhere in the package that makes a mutant of an
unchanged module survive; the full run (`make mutation`) does. A run of the changed
modules that passes renews their part of the baseline.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

UNIT = Path("tests/unit")
# What every unit test depends on: a change here may change any verdict.
EVERYWHERE = ("pyproject.toml", "tests/unit/conftest.py")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def module_of(function: str) -> str:
    """'sandbox_orch.artifacts.volumes' of a mutant's or mangled function's name, e.g.
    'sandbox_orch.artifacts.volumes.xǁArtifactVolumesǁholds__mutmut_3' (an __init__
    module's functions are named after its package)."""
    parts = function.split(".")
    for index in range(len(parts) - 1, -1, -1):
        if parts[index].startswith(("x_", "xǁ")):
            return ".".join(parts[:index])
    raise ValueError(f"not a mangled function name: {function}")


def module_path(module: str, root: Path) -> str:
    """The mutated source file of a module name, relative to the repository."""
    base = Path(*module.split("."))
    plain = base.with_suffix(".py")
    return str(plain if (root / plain).exists() else base / "__init__.py")


def patterns_for(module: str) -> list[str]:
    """mutmut name patterns for exactly the functions and methods of `module`."""
    return [f"{module}.x_*", f"{module}.xǁ*"]


def test_file(test_id: str) -> str:
    """The file of a pytest node id ('tests/unit/test_a.py::test_b[x]')."""
    return test_id.split("::", 1)[0]


def tracked(path: Path) -> bool:
    """A file of the tree (not Python's byte-code cache)."""
    return path.is_file() and "__pycache__" not in path.parts


def local_dependencies(path: Path, root: Path) -> set[str]:
    """The files a test file depends on besides itself, transitively: the support modules
    of tests/unit it imports, and the data files under tests/unit it names."""
    seen: set[str] = set()
    pending = [path]
    data = [p for p in (root / UNIT).rglob("*") if tracked(p) and p.suffix != ".py"]
    while pending:
        source = pending.pop().read_text(encoding="utf-8")
        for name in _imported_locals(source):
            found = root / UNIT / f"{name}.py"
            if found.exists() and str(found.relative_to(root)) not in seen:
                seen.add(str(found.relative_to(root)))
                pending.append(found)
        for file in data:
            if file.name in source:
                seen.add(str(file.relative_to(root)))
    return seen


def _imported_locals(source: str) -> set[str]:
    """Names of sibling modules imported relatively ('from .helpers import x',
    'from . import helpers')."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(alias.name for alias in node.names)
    return names


@dataclass(frozen=True)
class Baseline:
    """What the last full, passing run mutated, as content digests."""

    modules: dict[str, str]  # module -> digest of its source
    # module -> the test files that ran its mutants, with the files those depend on
    covered_by: dict[str, list[str]]
    files: dict[str, str]  # each of those files, and EVERYWHERE's -> digest
    entries: dict[str, str]  # module -> digest of its listed mutants

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Baseline:
        return cls(**json.loads(text))

    def renewed(self, part: Baseline) -> Baseline:
        """This baseline with the modules of `part` (a run of those alone, which passed)
        as it recorded them. Every module whose covering files changed was in that run
        (see `changed`), so the files' new digests hold for the rest too."""
        return Baseline(
            modules={**self.modules, **part.modules},
            covered_by={**self.covered_by, **part.covered_by},
            files={**self.files, **part.files},
            entries={**self.entries, **part.entries},
        )


def record(
    root: Path,
    modules: Iterable[str],
    tests_by_function: Mapping[str, Iterable[str]],
    entries: Mapping[str, str],
    skipped: Mapping[str, Iterable[str]] | None = None,
) -> Baseline:
    """The baseline of a full run over `modules` whose stats (mutmut's
    tests_by_mangled_function_name) are `tests_by_function`. `skipped`: test files (by
    name) that never run for mutants named with a prefix (tests/unit/conftest.py's
    SKIPPED_FOR), so none of theirs covers such a module."""
    tests: dict[str, set[str]] = {m: set() for m in modules}
    for function, ids in tests_by_function.items():
        if (module := module_of(function)) in tests:
            tests[module].update(test_file(i) for i in ids)
    for prefix, names in (skipped or {}).items():
        for module in tests:
            if f"{module}.".startswith(prefix):
                tests[module] = {f for f in tests[module] if Path(f).name not in set(names)}
    covered = {
        m: sorted(files | {d for f in files for d in local_dependencies(root / f, root)})
        for m, files in tests.items()
    }
    files = {f for paths in covered.values() for f in paths}
    files |= {f for f in EVERYWHERE if (root / f).exists()}
    return Baseline(
        modules={m: _digest_file(root / module_path(m, root)) for m in sorted(tests)},
        covered_by=dict(sorted(covered.items())),
        files={f: _digest_file(root / f) for f in sorted(files)},
        entries={m: entries.get(m, "") for m in sorted(tests)},
    )


def changed(
    baseline: Baseline | None, root: Path, modules: Iterable[str], entries: Mapping[str, str]
) -> tuple[list[str], str]:
    """The modules to mutate again, and why, when it is all of them."""
    modules = sorted(modules)
    if baseline is None:
        return modules, "there is no baseline"
    if any(_digest_or_none(root / f) != baseline.files.get(f) for f in EVERYWHERE):
        return modules, f"{' or '.join(EVERYWHERE)} changed"
    moved = {f for f, value in baseline.files.items() if _digest_or_none(root / f) != value}
    return [
        m
        for m in modules
        if m not in baseline.modules
        or _digest_or_none(root / module_path(m, root)) != baseline.modules[m]
        or entries.get(m, "") != baseline.entries.get(m, "")
        or moved.intersection(baseline.covered_by.get(m, ()))
    ], ""


def _digest_file(path: Path) -> str:
    return digest(path.read_bytes())


def _digest_or_none(path: Path) -> str | None:
    return _digest_file(path) if path.exists() else None
