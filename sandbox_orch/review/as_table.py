"""The report as `--format table`: rich renderables for a terminal or a CI log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .model import _RANK, Report

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
    "widens": "bold red",
    "narrows": "green",
    "changes": "yellow",
}


def _where(file: str, line: int | None) -> str:
    return f"{file}:{line}" if line else file


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_compact(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_compact(v) for v in value) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def to_table(report: Report) -> list[RenderableType]:
    """Rich renderables for `--format table`: readable in a terminal and in CI logs."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    out: list[RenderableType] = []
    counts = report.counts()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no findings"
    out.append(Text(f"policy {report.policy.name} ({report.policy.path}): {summary}", style="bold"))
    if report.findings:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 1, 0))
        table.add_column("severity", no_wrap=True)
        table.add_column("id", no_wrap=True)
        table.add_column("where", no_wrap=True)  # file:line stays whole: it is grepped
        table.add_column("finding", ratio=1)
        seen: set[tuple[str, str, str]] = set()
        for f in report.findings:
            text = Text()
            text.append(f.title, style="bold")
            if (f.id, f.why, f.fix) in seen:
                text.append(f"\nwhy and fix: as for {f.id} above", style="dim")
            else:
                seen.add((f.id, f.why, f.fix))
                text.append(f"\n{f.why}")
                text.append("\nfix: ", style="bold")
                text.append(f.fix)
            table.add_row(
                Text(f.severity, style=_STYLE[f.severity]), f.id, _where(f.file, f.line), text
            )
        out.append(table)
    if report.privileges is not None:
        out.append(Text(f"\nnode privileges (workflow {report.workflow})", style="bold"))
        out.append(_privileges_table(report.privileges))
    if report.changes is not None and report.against is not None:
        widened = sum(c.direction == "widens" for c in report.changes)
        narrowed = sum(c.direction == "narrows" for c in report.changes)
        out.append(
            Text(
                f"\nchanges from {report.against.path}: {widened} widen, {narrowed} narrow",
                style="bold",
            )
        )
        if report.changes:
            table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
            # The direction and area are single words a reader scans for (and greps):
            # only the description may wrap, however narrow the log.
            table.add_column("change", no_wrap=True)
            table.add_column("area", no_wrap=True)
            table.add_column("what", ratio=1, overflow="fold")
            table.add_column("where", no_wrap=True)
            for c in report.changes:
                table.add_row(
                    Text(c.direction, style=_STYLE[c.direction]),
                    c.area,
                    c.summary,
                    _where(c.file, c.line),
                )
            out.append(table)
        else:
            out.append(Text("no change in what the policy grants"))
    if report.fail_on is not None:
        at_or_above = sum(_RANK[f.severity] <= _RANK[report.fail_on] for f in report.findings)
        verdict = (
            f"FAIL: {at_or_above} finding(s) at or above {report.fail_on}"
            if report.failed
            else f"pass: nothing at or above {report.fail_on}"
        )
        out.append(Text(verdict, style="bold red" if report.failed else "bold green"))
    return out


def print_table(report: Report, console: Console) -> None:
    """Print `to_table`, each part at least as wide as its unbreakable columns need.

    A narrow terminal or CI log must never turn a severity, a rule id or a file:line
    into "…": such a line is wider than the window, and the window wraps it, losing
    nothing.
    """
    from rich.measure import Measurement

    window = console.width
    unbounded = console.options.update_width(100_000)
    for renderable in to_table(report):
        # `print(width=)` only narrows: widening takes the console's own width.
        console.width = max(window, Measurement.get(console, unbounded, renderable).minimum)
        console.print(renderable)
    console.width = window


def _privileges_table(nodes: dict[str, dict[str, Any]]) -> RenderableType:
    """One row per privilege, grouped by node: whatever `Sandbox.describe()` reports."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("node", no_wrap=True, style="bold")
    table.add_column("privilege", no_wrap=True)
    table.add_column("granted", overflow="fold")
    for number, (name, node) in enumerate(nodes.items()):
        if number:
            table.add_section()
        for row, (key, value) in enumerate(node.items()):
            table.add_row(name if row == 0 else "", key, _compact(value))
    return table
