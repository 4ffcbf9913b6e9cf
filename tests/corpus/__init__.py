"""Test data shared by several tests.

refused/{workflow,policy}/*.yaml: documents the loaders refuse, one small file each. Its
comment lines say what the loader must report, `# refused: LINE | FIELD | MESSAGE` (LINE
and FIELD may be `-`: any; MESSAGE is a part of the message), and, where JSON Schema
cannot say what is wrong, `# schema accepts: WHY`. test_refused_corpus.py holds the
loaders to the first; test_editor_schema.py holds the editors' schemas to the second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REFUSED = Path(__file__).resolve().parent / "refused"
_EXPECT = re.compile(r"^# refused: (\d+|-) \| (.*?) \| (.*)$")
_ACCEPTS = re.compile(r"^# schema accepts: (.+)$")


@dataclass(frozen=True)
class Expected:
    line: int | None
    field: str | None
    message: str

    def found_in(self, problem) -> bool:  # an errors.Problem
        return (
            (self.line is None or problem.line == self.line)
            and (self.field is None or problem.field == self.field)
            and self.message in problem.message
        )


@dataclass(frozen=True)
class Refused:
    path: Path
    expected: tuple[Expected, ...]
    schema_accepts: str | None  # why JSON Schema cannot tell; None: the schema refuses it

    @property
    def id(self) -> str:
        return self.path.stem


def refused(kind: str) -> list[Refused]:
    """The refused documents of `kind` (workflow or policy), by name."""
    return [_read(path) for path in sorted((REFUSED / kind).glob("*.yaml"))]


def _read(path: Path) -> Refused:
    expected, accepts = [], None
    for line in path.read_text().splitlines():
        if match := _EXPECT.match(line):
            where, field, message = match.groups()
            expected.append(
                Expected(
                    None if where == "-" else int(where), None if field == "-" else field, message
                )
            )
        elif match := _ACCEPTS.match(line):
            accepts = match.group(1)
    assert expected, f"{path}: no `# refused:` line"
    return Refused(path, tuple(expected), accepts)
