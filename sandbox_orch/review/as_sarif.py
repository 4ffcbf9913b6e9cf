"""The report as `--format sarif`: a SARIF 2.1.0 log for code-scanning tools."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import __version__
from .model import Report
from .rules import RULES

INFORMATION_URI = "urn:sandbox-orch:policy-review"  # no public home page yet
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

_SARIF_LEVEL = {
    "critical": "error",
    "high": "error",
    "medium": "warning",
    "low": "note",
    "info": "note",
}
_SECURITY_SEVERITY = {
    "critical": "9.5",
    "high": "8.0",
    "medium": "5.5",
    "low": "3.0",
    "info": "0.0",
}


def artifact_uri(path: str) -> str:
    candidate = Path(path)
    if candidate.is_absolute():
        return candidate.as_uri()
    return quote(candidate.as_posix())


def to_sarif(report: Report) -> dict[str, Any]:
    """A SARIF 2.1.0 log: every rule in the driver, one result per finding."""
    rules = list(RULES.values())
    index = {rule.id: i for i, rule in enumerate(rules)}
    driver = {
        "name": "sandbox-orch",
        "version": __version__,
        "semanticVersion": __version__,
        "informationUri": INFORMATION_URI,
        "rules": [
            {
                "id": rule.id,
                "name": rule.name,
                "shortDescription": {"text": rule.summary},
                "fullDescription": {"text": rule.why},
                "help": {"text": rule.fix, "markdown": f"**Fix:** {rule.fix}"},
                "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
                "properties": {
                    "security-severity": _SECURITY_SEVERITY[rule.severity],
                    "severity": rule.severity,
                    "tags": ["security", "policy"],
                },
            }
            for rule in rules
        ],
    }
    results = [
        {
            "ruleId": f.id,
            "ruleIndex": index[f.id],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f"{f.title}. {f.why} Fix: {f.fix}"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": artifact_uri(f.file)},
                        "region": {"startLine": f.line or 1},
                    },
                    "logicalLocations": [{"fullyQualifiedName": f.field, "kind": "member"}]
                    if f.field
                    else [],
                }
            ],
            "properties": {"severity": f.severity, "field": f.field},
        }
        for f in report.findings
    ]
    run: dict[str, Any] = {"tool": {"driver": driver}, "results": results}
    extra = {
        key: value
        for key, value in (
            ("privileges", report.privileges),
            (
                "changes",
                [asdict(c) for c in report.changes] if report.changes is not None else None,
            ),
        )
        if value is not None
    }
    if extra:
        run["properties"] = extra
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
